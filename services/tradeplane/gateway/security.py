"""The gateway's guard: what every HTTP request passes before any route (the order fast
path included) and every answer gets on its way out.

In: the client's address (the peer, or ``X-Forwarded-For`` from a trusted proxy), the
body size limit (HTTP 413), CORS when configured (off by default), the rate-limit meter
(unsigned requests are charged here, signed ones in authentication). Out: security
headers (HSTS on HTTPS, nosniff, DENY framing, no referrer, a CSP for a JSON API or, on
the API reference's page and files and the trading UI's pages, one allowing the gateway's
own scripts and styles, no
caching of session and admin answers) and Binance's usage headers
(``X-MBX-USED-WEIGHT-1M``, ``X-MBX-ORDER-COUNT-10S``/``-1D``, ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tradeplane.adapters import db
from tradeplane.adapters.admin_store import PgAccountStore, PgPairStore, PgUserStore
from tradeplane.adapters.control import (
    BusCommandLog,
    BusControlChannel,
    LocalPairControl,
    now_ms,
)
from tradeplane.adapters.mailer import mailer_for
from tradeplane.adapters.ratelimits import RedisRateLimitStore
from tradeplane.config import Settings
from tradeplane.domain.access import client_ip, ip_allowed, parse_networks
from tradeplane.gateway import ui
from tradeplane.gateway.auth import KeyCache
from tradeplane.gateway.context import GatewayContext, GatewayWiringError, gateway
from tradeplane.gateway.control import Controls, PairControl
from tradeplane.gateway.errors import ApiError, backend_down
from tradeplane.gateway.ratelimit import (
    METER,
    UNMETERED,
    Limiter,
    Meter,
    NoRateLimits,
    RateLimits,
    RateLimitStore,
    route_cost,
)
from tradeplane.gateway.users import Credentials, LoginLimits
from tradeplane.supervision import BackgroundTasks
from tradeplane.usecases.accounts import Accounts, KeyEvents
from tradeplane.usecases.pairs import Gateways, Pairs
from tradeplane.usecases.users import Users

Closer = Callable[[], Awaitable[None]]

_json = msgspec.json.Encoder()

_BASE_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
# A JSON API loads nothing and is framed by nobody. The API reference (/docs and its
# vendored Swagger UI under /static) loads from the gateway only: its scripts are files, not
# inline; Swagger UI sets inline styles and draws data: images.
_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_DOCS_CSP = (b"content-security-policy",
             b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
             b"img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'; "
             b"frame-ancestors 'none'")
_DOCS_PAGE, _DOCS_FILES = "/docs", "/static/"
# The trading UI's pages (ui.py): the gateway's own modules, styles and streams only.
_UI_CSP = (b"content-security-policy", ui.CSP)
_NO_STORE = (b"cache-control", b"no-store")
_PRIVATE_PREFIXES = ("/api/v1/", "/admin", "/sapi/")
_CORS_HEADERS = ["X-MBX-APIKEY", "Content-Type", "Authorization"]
_EXPOSED = ["X-MBX-USED-WEIGHT-1M", "X-MBX-ORDER-COUNT-10S", "X-MBX-ORDER-COUNT-1D",
            "Retry-After"]


#: The answer before the gateway's services are wired (its lifespan has not run).
_NOT_STARTED = (503, backend_down().doc())


def body_too_large(limit: int) -> tuple[int, dict[str, Any]]:
    return 413, {"code": -1101, "msg": f"Request body too large; the limit is {limit} bytes."}


class Guard:
    """ASGI guard around ``downstream`` (an HTTP-only ASGI callable)."""

    def __init__(self, app: Starlette, downstream: ASGIApp, settings: Settings) -> None:
        self.app = app  # its gateway (context.gateway) holds the limiter once started
        self.max_body = settings.max_body_bytes
        self.trusted = parse_networks(settings.trusted_proxies)
        self.hsts = (b"strict-transport-security",
                     f"max-age={settings.hsts_max_age_s}; includeSubDomains".encode())
        # The security headers for (page's CSP, private answer, HTTPS), built once.
        self._extra = {
            (csp, private, https): (*_BASE_HEADERS, csp, *([_NO_STORE] if private else []),
                                    *([self.hsts] if https else []))
            for csp in (_CSP, _DOCS_CSP, _UI_CSP) for private in (False, True)
            for https in (False, True)
        }
        inner = downstream
        if settings.cors_origins:
            inner = CORSMiddleware(
                inner, allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "PUT", "DELETE"], allow_headers=_CORS_HEADERS,
                expose_headers=_EXPOSED, allow_credentials=False, max_age=600,
            )
        self.inner = inner

    def _client(self, scope: Scope) -> tuple[str, bool]:
        """The client's address and whether it reached us over HTTPS."""
        peer = scope["client"][0] if scope.get("client") else ""
        https = scope.get("scheme") == "https"
        if not self.trusted or not ip_allowed(peer, self.trusted):
            return peer, https
        xff = proto = ""
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                xff = f"{xff},{value.decode('latin-1')}" if xff else value.decode("latin-1")
            elif name == b"x-forwarded-proto":
                proto = value.decode("latin-1").split(",")[-1].strip().lower()
        return client_ip(peer, xff, self.trusted), https or proto == "https"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        ip, https = self._client(scope)
        weight, orders, signed = route_cost(method, path,
                                            scope.get("query_string", b"").decode("latin-1"))
        meter = Meter(ip, weight, orders, signed)
        scope[METER] = meter
        csp = (_UI_CSP if ui.is_page(path) else
               _DOCS_CSP if path == _DOCS_PAGE or path.startswith(_DOCS_FILES) else _CSP)
        extra = self._extra[(csp, path.startswith(_PRIVATE_PREFIXES), https)]
        try:
            limiter = gateway(self.app).limiter
        except GatewayWiringError:  # not started: nothing is served unguarded
            await _reply(send, *_NOT_STARTED, extra)
            return
        metered = limiter.enforced and path not in UNMETERED

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                if metered and not meter.charged:
                    await limiter.charge_after(meter)
                status = message["status"]
                headers = [*message.get("headers", ()), *extra]  # routes set none of these
                if metered:
                    headers.append((b"x-mbx-used-weight-1m", str(meter.used_weight).encode()))
                    if meter.order_counts is not None:
                        headers += [
                            (b"x-mbx-order-count-10s", str(meter.order_counts[0]).encode()),
                            (b"x-mbx-order-count-1d", str(meter.order_counts[1]).encode()),
                        ]
                if status in (418, 429) and meter.retry_after:
                    headers.append((b"retry-after", str(meter.retry_after).encode()))
                message = {**message, "headers": headers}
            await send(message)

        body = await self._read_body(scope, receive)
        if body is None:
            await _reply(guarded_send, *body_too_large(self.max_body))
            return
        if metered:
            try:
                if signed:
                    limiter.check_blocked(meter)  # the key's limits come in authentication
                else:
                    await limiter.charge(meter)
            except ApiError as exc:
                refused = exc
                if exc.status == 429 and not meter.used_weight:  # refused from memory
                    refused = await limiter.note_refusal(meter) or exc
                await _reply(guarded_send, refused.status,
                             {"code": refused.code, "msg": refused.msg})
                return
        await self.inner(scope, _replay(body, receive), guarded_send)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole request body (b"" when there is none); None when over the limit."""
        declared = -1
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = int(value) if value.isdigit() else self.max_body + 1
            elif name == b"transfer-encoding":
                chunked = True
        if declared > self.max_body:
            return None
        if declared <= 0 and not chunked:
            return b""
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                break
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _reply(send: Send, status: int, doc: Any,
                 extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = _json.encode(doc)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True, slots=True)
class Security:
    """What the guard and the account/admin endpoints use (see :func:`start_security`)."""

    limiter: RateLimits
    credentials: Credentials
    controls: Controls
    users: Users
    close: Closer


async def start_security(settings: Settings, c: GatewayContext, keys: KeyCache,
                         background: BackgroundTasks) -> Security:
    """Build rate limits (Redis, or :class:`NoRateLimits` when ``rate_limits`` is off),
    credentials (password hashing, JWT), the platform controls (kill switch, pair
    control, cross-replica invalidation) with the pairs and accounts use cases over
    PostgreSQL and NATS, and the users use case (its store, the mailer, the failed-login
    counters), started; ``close`` stops them. Their loops (the rate-limit syncer
    ``rate-limit-sync``, the kill-switch poll) run as tasks of ``background``, which
    stops them.

    The syncer does not retry at its level: a Redis that does not answer is the store's
    to ride out (``RateLimitStore.sync`` returns None; the counts stay in-process and are
    added at the next sync), so any error that ends it is a defect, and it stops the
    gateway (``gateway.app.serve``) rather than let limits silently stop being shared."""
    store: RateLimitStore | None = (RedisRateLimitStore(settings.redis_url)
                                    if settings.rate_limits else None)
    limiter: RateLimits = Limiter(store, settings) if store is not None else NoRateLimits()
    credentials = await asyncio.to_thread(Credentials, settings)
    pairs: PairControl
    if settings.pair_control == "kubernetes":
        from tradeplane.adapters.kube_pairs import KubePairs

        pairs = await asyncio.to_thread(KubePairs, settings.kube_namespace)
    else:
        pairs = LocalPairControl(c.bus)

    def pair_cases(gateways: Gateways) -> Pairs:
        return Pairs(PgPairStore(c.pool), pairs, BusCommandLog(c.bus), gateways, now_ms)

    def account_cases(events: KeyEvents) -> Accounts:
        return Accounts(PgAccountStore(c.pool), keys.cipher, now_ms, events)

    controls = Controls(c, keys, BusControlChannel(c.bus), lambda: db.load_pairs(c.pool),
                        pair_cases, account_cases)
    await controls.start(background)
    background.start("rate-limit-sync", limiter.run())

    async def close() -> None:
        await controls.stop()
        if store is not None:
            await store.close()

    mailer = mailer_for(settings.mail_outbox)
    users = Users(PgUserStore(c.pool), mailer, keys.cipher, credentials, credentials,
                  LoginLimits(store, settings), controls.account_cases, time.time)
    return Security(limiter, credentials, controls, users, close)
