"""What every WebSocket (market streams and user data streams) passes: Binance's limits.

* connection attempts per client address (``ws_connections_per_window`` per
  ``ws_connection_window_s``, 300 per 5 minutes), counted in Redis through the rate-limit
  store so the limit holds across replicas (one round trip per connection, which is rare
  next to requests); over it the handshake is answered HTTP 429 -1003 with Retry-After;
* the size of one incoming message (``ws_max_message_bytes``): uvicorn refuses a larger
  frame before reading it (``ws_max_size``, close 1009); :class:`Inbound` checks again so
  the limit holds under any server;
* incoming messages per second per socket (``ws_messages_per_second``, 5): one more
  closes the socket with 1008;
* streams per socket (``ws_max_streams``, 1024), applied by ``streams``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import WebSocket
from fastapi.responses import JSONResponse
from limits import RateLimitItemPerSecond

from tradeplane.config import Settings
from tradeplane.domain.access import client_ip, parse_networks
from tradeplane.domain.errors import TradeplaneError
from tradeplane.gateway.context import ctx, gateway
from tradeplane.gateway.ratelimit import Hit, NoRateLimits

#: WebSocket close codes (RFC 6455).
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009


@dataclass(frozen=True, slots=True)
class WsLimits:
    max_message_bytes: int = 4096
    messages_per_second: int = 5
    max_streams: int = 1024

    @classmethod
    def of(cls, s: Settings) -> WsLimits:
        return cls(s.ws_max_message_bytes, s.ws_messages_per_second, s.ws_max_streams)


class Violation(TradeplaneError):
    """The client broke a limit: its socket is closed with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason  # short: a close reason holds at most 123 bytes


class MessageRate:
    """At most ``per_second`` messages within any one second (a sliding window)."""

    def __init__(self, per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._times: deque[float] = deque(maxlen=per_second)
        self._clock = clock

    def allow(self) -> bool:
        now = self._clock()
        times = self._times
        if len(times) == times.maxlen and now - times[0] < 1.0:
            return False
        times.append(now)
        return True


class Inbound:
    """A socket's incoming messages, within the size and rate limits."""

    def __init__(self, websocket: WebSocket, limits: WsLimits,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ws = websocket
        self._limits = limits
        self._rate = MessageRate(limits.messages_per_second, clock)

    async def next(self) -> str | None:
        """The next message's text; None once the client has gone.

        Raises:
            Violation: the message is too big (1009) or one too many this second (1008).
        """
        limits = self._limits
        while True:
            msg = await self._ws.receive()
            if msg["type"] == "websocket.disconnect":
                return None
            text: str | None = msg.get("text")
            data: bytes | None = msg.get("bytes")
            if text is None and data is None:
                continue
            size = len(data) if data is not None else len(text.encode()) if text else 0
            if size > limits.max_message_bytes:
                raise Violation(MESSAGE_TOO_BIG, f"Message too big; the limit is "
                                                 f"{limits.max_message_bytes} bytes.")
            if not self._rate.allow():
                raise Violation(POLICY_VIOLATION, f"Too many messages; the limit is "
                                                  f"{limits.messages_per_second} per second.")
            return text if text is not None else (data or b"").decode(errors="replace")


def _settings(websocket: WebSocket) -> Settings:
    return ctx(websocket).settings


def client_address(websocket: WebSocket) -> str:
    """The client's address as the HTTP guard resolves it: the peer, or the right-most
    ``X-Forwarded-For`` hop that is not a trusted proxy when the peer is one."""
    scope = websocket.scope
    peer = scope["client"][0] if scope.get("client") else ""
    trusted = parse_networks(_settings(websocket).trusted_proxies)
    if not trusted:
        return peer
    xff = ",".join(v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for")
    return client_ip(peer, xff, trusted)


async def admit(websocket: WebSocket) -> bool:
    """Count this connection attempt against its address; refuse it (HTTP 429, or a
    close before the handshake where the server cannot answer HTTP) when over the limit.
    True: go on. Rate limits off (``NoRateLimits``): always True."""
    limiter = gateway(websocket.app).limiter
    if isinstance(limiter, NoRateLimits):
        return True
    s = _settings(websocket)
    item = RateLimitItemPerSecond(s.ws_connections_per_window, s.ws_connection_window_s,
                                  namespace="wsconn")
    ip = client_address(websocket)
    if await limiter.store.test_hit(item, "ip", ip):
        return True
    retry = await limiter.store.retry_after_s(Hit(item, ("ip", ip), 1))
    if "websocket.http.response" not in websocket.scope.get("extensions", {}):
        await websocket.close(code=POLICY_VIOLATION)
        return False
    await websocket.send_denial_response(JSONResponse(
        {"code": -1003, "msg": f"Too many connection attempts; the limit is "
                               f"{s.ws_connections_per_window} per "
                               f"{s.ws_connection_window_s} seconds."},
        status_code=429, headers={"Retry-After": str(retry)}))
    return False
