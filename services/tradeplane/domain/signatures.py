"""Signed-request verification for both key types Binance accepts.

HMAC_SHA256: hex HMAC of the payload under the key's secret (:mod:`tradeplane.domain.signing`).
ED25519: the user registers an Ed25519 public key; the signature is the base64 of the
Ed25519 signature of the same payload (query string + form body, minus ``signature``),
URL-encoded in the request.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tradeplane.domain import signing
from tradeplane.domain.access import KeyType
from tradeplane.domain.errors import InvalidInput

MAX_SIGNATURE_LEN = 512


class KeyFormatError(InvalidInput, ValueError):
    """A registered public key is not an Ed25519 public key."""


def ed25519_public_key(text: str) -> bytes:
    """The 32 raw bytes of an Ed25519 public key given as PEM (``-----BEGIN PUBLIC KEY``,
    as Binance asks for) or as base64 of the raw 32 bytes.

    Raises:
        KeyFormatError: anything else (an RSA key, a private key, garbage).
    """
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except (ValueError, TypeError) as exc:
            raise KeyFormatError("not a PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFormatError("the public key must be an Ed25519 key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFormatError("not PEM and not base64") from exc
    if len(raw) != 32:
        raise KeyFormatError("an Ed25519 public key has 32 bytes")
    return raw


def verify(key_type: KeyType, material: str | bytes, payload: str, signature: str) -> bool:
    """Whether ``signature`` (as sent: hex, or URL-encoded base64) signs ``payload``.
    ``material`` is the HMAC secret or the raw Ed25519 public key. Constant time for
    HMAC (``hmac.compare_digest``); Ed25519 verification has no secret to leak."""
    if len(signature) > MAX_SIGNATURE_LEN:
        return False
    if key_type is KeyType.HMAC_SHA256:
        assert isinstance(material, str)
        return signing.verify(material, payload, signature)
    assert isinstance(material, bytes)
    try:
        sig = base64.b64decode(unquote(signature), validate=True)
        Ed25519PublicKey.from_public_bytes(material).verify(sig, payload.encode())
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True

