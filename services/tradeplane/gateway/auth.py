"""Signed-endpoint security exactly as Binance spot: ``X-MBX-APIKEY`` + HMAC-SHA256 signature
of the query string concatenated with the form body, ``timestamp`` and ``recvWindow``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request

from tradeplane.adapters import db
from tradeplane.adapters.cipher import CipherError, SecretCipher
from tradeplane.domain.signing import strip_signature, verify
from tradeplane.gateway import errors
from tradeplane.gateway.context import ctx

MAX_RECV_WINDOW = 60_000
KEY_CACHE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Caller:
    account: int
    api_key: str
    perms: frozenset[str]
    params: dict[str, str]


class KeyCache:
    """API keys with their decrypted secrets, for a short time (revocation takes <= TTL)."""

    def __init__(self, cipher: SecretCipher) -> None:
        self.cipher = cipher
        self._entries: dict[str, tuple[float, db.ApiKeyRow, str]] = {}

    async def get(self, pool: db.Pool, api_key: str) -> tuple[db.ApiKeyRow, str] | None:
        now = time.monotonic()
        hit = self._entries.get(api_key)
        if hit and hit[0] > now:
            return hit[1], hit[2]
        row = await db.get_api_key(pool, api_key)
        if row is None:
            self._entries.pop(api_key, None)
            return None
        try:
            secret = self.cipher.decrypt(row.secret_enc)
        except CipherError:
            return None
        self._entries[api_key] = (now + KEY_CACHE_SECONDS, row, secret)
        return row, secret


async def request_params(request: Request) -> tuple[dict[str, str], str, str]:
    """All parameters (query + form body), and the raw query and body texts."""
    raw_query = request.url.query
    body = ""
    if request.method in ("POST", "PUT", "DELETE"):
        body = (await request.body()).decode("utf-8", errors="replace")
        ctype = request.headers.get("content-type", "")
        if body and "json" in ctype:
            raise errors.ApiError(-1104, "Not all sent parameters were read; expected form.")
    params: dict[str, str] = {}
    for raw in (raw_query, body):
        for k, v in parse_qsl(raw, keep_blank_values=True):
            params[k] = v
    return params, raw_query, body


async def api_key_only(request: Request) -> Caller:
    """USER_STREAM security: a valid API key, no signature."""
    c = ctx(request)
    key = request.headers.get("X-MBX-APIKEY", "")
    if not key:
        raise errors.ApiError(-2014, "API-key format invalid.", 401)
    found = await request.app.state.keys.get(c.pool, key)
    if found is None:
        raise errors.bad_api_key()
    params, _, _ = await request_params(request)
    row, _secret = found
    return Caller(row.account, key, row.perms, params)


async def signed(request: Request, permission: str = "read") -> Caller:
    """FastAPI dependency for SIGNED endpoints (see :func:`authenticate`)."""
    params, raw_query, body = await request_params(request)
    return await authenticate(
        request.app.state, request.headers.get("X-MBX-APIKEY", ""), params, raw_query, body,
        permission,
    )


async def authenticate(
    state: Any, key: str, params: dict[str, str], raw_query: str, body: str, permission: str
) -> Caller:
    """Authenticate a SIGNED request from its parts.

    Raises:
        ApiError: -2014/-2015 key missing/invalid, -1102 missing timestamp/signature,
            -1021 timestamp outside recvWindow, -1022 bad signature, -2015 no permission.
    """
    if not key:
        raise errors.ApiError(-2014, "API-key format invalid.", 401)
    found = await state.keys.get(state.ctx.pool, key)
    if found is None:
        raise errors.bad_api_key()
    row, secret = found
    q_payload, q_sig = strip_signature(raw_query)
    b_payload, b_sig = strip_signature(body)
    signature = q_sig or b_sig
    if not signature:
        raise errors.mandatory("signature")
    ts_text = params.get("timestamp")
    if not ts_text:
        raise errors.mandatory("timestamp")
    if not ts_text.isdigit():
        raise errors.illegal_chars("timestamp")
    window_text = params.get("recvWindow", "5000")
    try:
        window = int(window_text)
    except ValueError:
        raise errors.illegal_chars("recvWindow") from None
    if not 0 < window <= MAX_RECV_WINDOW:
        raise errors.ApiError(-1131, "recvWindow must be less than 60000")
    now = int(time.time() * 1000)
    ts = int(ts_text)
    if ts > now + 1000 or now - ts > window:
        raise errors.timestamp_outside()
    if not verify(secret, q_payload + b_payload, signature):
        raise errors.bad_signature()
    if permission not in row.perms:
        raise errors.bad_api_key()
    params.pop("signature", None)
    return Caller(row.account, key, row.perms, params)


async def signed_read(request: Request) -> Caller:
    return await signed(request, "read")


async def signed_trade(request: Request) -> Caller:
    return await signed(request, "trade")
