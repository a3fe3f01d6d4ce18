"""Signed-endpoint security as Binance spot: ``X-MBX-APIKEY`` plus a signature of the query
string concatenated with the form body (HMAC-SHA256 hex, or Ed25519 base64 for keys whose
owner registered an Ed25519 public key), ``timestamp`` and ``recvWindow``; then the key's
restrictions (permissions, IP allow-list, expiry, frozen account), the rate limits of
the key, and the global kill switch for trading."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl

from fastapi import Request

from tradeplane.domain.access import KeyPolicy, KeyRefusal, KeyType, key_refusal, parse_networks
from tradeplane.domain.signatures import verify
from tradeplane.domain.signing import strip_signature
from tradeplane.gateway import errors
from tradeplane.gateway.context import Gateway, gateway
from tradeplane.gateway.inputs import KEY_ID_RE, optional_int
from tradeplane.gateway.ratelimit import METER, Meter
from tradeplane.usecases.accounts import Cipher, KeyRecord
from tradeplane.usecases.errors import SecretUnreadable

MAX_RECV_WINDOW = 60_000
#: How long a key's row is trusted without asking PostgreSQL again. Revocation, freezing
#: and expiry reach every gateway at once over ``control.gateway`` (and the expiry is
#: checked on every request); the TTL bounds what a lost control message can delay.
KEY_CACHE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Caller:
    account: int
    api_key: str
    perms: frozenset[str]
    params: dict[str, str]
    ip: str = ""


class KeySource(Protocol):
    """Where API keys are kept (``usecases.accounts.AccountStore`` has this read)."""

    async def live_key(self, api_key: str) -> KeyRecord | None:
        """The key unless revoked, with its account's frozen flag."""
        ...


@dataclass(frozen=True, slots=True)
class KeyEntry:
    record: KeyRecord
    key_type: KeyType
    material: str | bytes  # the HMAC secret, or the Ed25519 public key
    policy: KeyPolicy


class KeyCache:
    """API keys ready to verify (decrypted secret, parsed allow-list), for a short time."""

    def __init__(self, cipher: Cipher, source: KeySource) -> None:
        self.cipher = cipher
        self.source = source
        self._entries: dict[str, tuple[float, KeyEntry]] = {}

    async def lookup(self, _pool: object, api_key: str) -> KeyEntry | None:
        """The live key, or None (unknown, revoked or undecryptable). ``_pool`` is not
        used (the keys come from the cache's source): it is what the user streams still
        pass."""
        now = time.monotonic()
        hit = self._entries.get(api_key)
        if hit and hit[0] > now:
            return hit[1]
        if not KEY_ID_RE.fullmatch(api_key):
            return None
        rec = await self.source.live_key(api_key)
        if rec is None:
            self._entries.pop(api_key, None)
            return None
        try:
            entry = self._entry(rec)
        except (SecretUnreadable, ValueError):
            return None
        self._entries[api_key] = (now + KEY_CACHE_SECONDS, entry)
        return entry

    def _entry(self, rec: KeyRecord) -> KeyEntry:
        key_type = KeyType(rec.key_type)
        material: str | bytes
        if key_type is KeyType.ED25519:
            assert rec.public_key is not None
            material = rec.public_key
        else:
            assert rec.secret_enc is not None
            material = self.cipher.decrypt(rec.secret_enc)
        policy = KeyPolicy(rec.perms, parse_networks(rec.ip_allow), rec.expires_ms, rec.frozen)
        return KeyEntry(rec, key_type, material, policy)

    def invalidate(self, *, api_key: str | None = None, account: int | None = None) -> None:
        """Forget a key, or every key of an account (revoked, frozen, unfrozen)."""
        if api_key is not None:
            self._entries.pop(api_key, None)
        if account is not None:
            for k, (_, e) in list(self._entries.items()):
                if e.record.account == account:
                    self._entries.pop(k, None)


def parse_params(raw_query: str, body: str, content_type: str) -> dict[str, str]:
    """Binance's parameters: the query string, the form body, or both; a name sent in
    both takes the query string's value. An empty body is fine whatever its declared
    content type (Binance's own connector sends JSON's with every request).

    Raises:
        ApiError: -1104 for a non-empty JSON body.
    """
    if body and "json" in content_type:
        raise errors.ApiError(-1104, "Not all sent parameters were read; expected form.")
    params: dict[str, str] = {}
    for raw in (body, raw_query):
        if "%" in raw or "+" in raw:
            params.update(parse_qsl(raw, keep_blank_values=True))
            continue
        # Nothing to decode (a signed order's usual text): what parse_qsl gives, without
        # its per-field unquoting (a third of a new order's parsing time, measured).
        for field in raw.split("&"):
            if field:
                name, _, value = field.partition("=")
                params[name] = value
    return params


async def request_params(request: Request) -> tuple[dict[str, str], str, str]:
    """All parameters (see :func:`parse_params`), and the raw query and body texts."""
    raw_query = request.url.query
    body = ""
    if request.method in ("POST", "PUT", "DELETE"):
        body = (await request.body()).decode("utf-8", errors="replace")
    params = parse_params(raw_query, body, request.headers.get("content-type", ""))
    return params, raw_query, body


def request_meter(request: Request) -> Meter | None:
    meter = request.scope.get(METER)
    return meter if isinstance(meter, Meter) else None


def request_ip(request: Request) -> str:
    """The client's address as the gateway's guard resolved it (trusted proxies)."""
    meter = request_meter(request)
    if meter is not None:
        return meter.ip
    return request.client.host if request.client else ""


async def api_key_only(request: Request) -> Caller:
    """USER_STREAM security: a valid API key (not expired, from an allowed address), no
    signature."""
    key = request.headers.get("X-MBX-APIKEY", "")
    if not key:
        raise errors.ApiError(-2014, "API-key format invalid.", 401)
    entry = await gateway(request.app).keys.lookup(None, key)
    if entry is None:
        raise errors.bad_api_key()
    ip = request_ip(request)
    some_perm = min(entry.policy.perms)
    if key_refusal(entry.policy, some_perm, ip, int(time.time() * 1000)) not in (
        None, KeyRefusal.FROZEN
    ):
        raise errors.bad_api_key()
    params, _, _ = await request_params(request)
    return Caller(entry.record.account, key, entry.policy.perms, params, ip)


async def signed(request: Request, permission: str = "read") -> Caller:
    """FastAPI dependency for SIGNED endpoints (see :func:`authenticate`)."""
    params, raw_query, body = await request_params(request)
    return await authenticate(
        gateway(request.app), request.headers.get("X-MBX-APIKEY", ""), params, raw_query, body,
        permission, meter=request_meter(request),
    )


async def authenticate(
    gw: Gateway, key: str, params: dict[str, str], raw_query: str, body: str, permission: str,
    *, meter: Meter | None = None,
) -> Caller:
    """Authenticate a SIGNED request from its parts, charge it to its key's rate limits
    (``meter``: its address and weight; None = not metered, address unknown) and apply the
    key's restrictions.

    Raises:
        ApiError: -2014/-2015 key missing/invalid, -1102 missing timestamp/signature,
            -1021 timestamp outside recvWindow, -1022 bad signature, -2015 no permission,
            address not allowed, key expired or account frozen, -1003/-1015 (429/418) over
            a rate limit, -1013 trading stopped by the kill switch.
    """
    q_payload, q_sig = strip_signature(raw_query)
    b_payload, b_sig = strip_signature(body)
    return await authenticate_payload(gw, key, params, q_payload + b_payload, q_sig or b_sig,
                                      permission, meter=meter)


async def authenticate_payload(
    gw: Gateway, key: str, params: dict[str, str], payload: str, signature: str | None,
    permission: str, *, meter: Meter | None = None, proven: bool = False,
) -> Caller:
    """:func:`authenticate` once the signed payload and the signature are known (the
    WebSocket API builds them from a request's parameters). ``proven``: the key was proven
    for this connection (``session.logon``), so a request without a signature is the key's;
    its timestamp, limits and restrictions are checked all the same.

    Raises:
        ApiError: as :func:`authenticate`.
    """
    if not key:
        raise errors.ApiError(-2014, "API-key format invalid.", 401)
    entry = await gw.keys.lookup(None, key)
    if entry is None:
        raise errors.bad_api_key()
    if not signature and not proven:
        raise errors.mandatory("signature")
    ts = optional_int(params, "timestamp")
    if ts is None:
        raise errors.mandatory("timestamp")
    window = optional_int(params, "recvWindow")
    if window is None:
        window = 5000
    if not 0 < window <= MAX_RECV_WINDOW:
        raise errors.ApiError(-1131, "recvWindow must be less than 60000")
    now = int(time.time() * 1000)
    if ts > now + 1000 or now - ts > window:
        raise errors.timestamp_outside()
    if signature and not verify(entry.key_type, entry.material, payload, signature):
        raise errors.bad_signature()
    if meter is not None:
        await gw.limiter.charge(meter, key)
    ip = meter.ip if meter is not None else ""
    if key_refusal(entry.policy, permission, ip, now) is not None:
        raise errors.bad_api_key()
    if permission in ("trade", "convert") and gw.controls.halted:
        raise errors.ApiError(-1013, "Market is closed.")
    params.pop("signature", None)
    return Caller(entry.record.account, key, entry.policy.perms, params, ip)


async def signed_read(request: Request) -> Caller:
    return await signed(request, "read")


async def signed_trade(request: Request) -> Caller:
    return await signed(request, "trade")


async def signed_withdraw(request: Request) -> Caller:
    return await signed(request, "withdraw")
