"""Binance request signing: HMAC-SHA256, hex, over the query string plus the form body.

The server side only; a client signs with :mod:`tradeplane.demo.client`."""

from __future__ import annotations

import hashlib
import hmac


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def verify(secret: str, payload: str, signature: str) -> bool:
    """Constant-time comparison of the expected and the given signature (any text: a
    signature that is not ASCII hex simply does not match)."""
    return hmac.compare_digest(sign(secret, payload).encode(),
                               signature.lower().encode("utf-8", "replace"))


def strip_signature(raw: str) -> tuple[str, str | None]:
    """Split ``a=1&b=2&signature=abc`` into the signed payload and the signature.

    The payload is the raw text exactly as sent, minus the ``signature`` parameter.
    """
    if not raw:
        return "", None
    kept: list[str] = []
    signature: str | None = None
    for part in raw.split("&"):
        if part.startswith("signature="):
            signature = part[len("signature="):]
        else:
            kept.append(part)
    return "&".join(kept), signature

