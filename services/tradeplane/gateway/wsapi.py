"""The Binance WebSocket API at ``/ws-api/v3``: requests and answers over one socket, in
Binance's envelope, so that ccxt.pro's ``*_ws`` methods and ``watch_orders`` /
``watch_balance`` / ``watch_my_trades`` work unchanged.

A request is ``{"id": <int|string|null>, "method": "order.place", "params": {...}}``; its
answer ``{"id", "status": 200, "result": ..., "rateLimits": [...]}`` or ``{"id", "status":
4xx/5xx, "error": {"code", "msg"[, "data"]}, "rateLimits": [...]}`` with the REST API's
codes and texts (``rateLimits`` unless ``returnRateLimits`` is false, per request or for
the connection: ``/ws-api/v3?returnRateLimits=false``). Answers carry the request's id and
may come in another order than the requests (they run concurrently, at most
:data:`MAX_IN_FLIGHT` per socket; beyond, the socket is not read until one finishes).

Security is Binance's: a SIGNED method carries ``apiKey``, ``timestamp`` (``recvWindow``)
and ``signature`` in its params, signed over the other params sorted by name
(``k=v&...``), HMAC-SHA256 hex or Ed25519 base64; or the connection logs on once with an
Ed25519 key (``session.logon``) and later requests omit ``apiKey`` and ``signature``. Each
request is then what its REST endpoint is: the same route function (called with the
socket's app and the request's params), weight, order count, key checks, kill switch and
refusals (:mod:`tradeplane.gateway.trading`, :mod:`tradeplane.gateway.auth`); every
request, a refused one too, is charged to the address (and key) in the same counters as
REST (:mod:`tradeplane.gateway.ratelimit`).

The user data stream comes on the same socket: ``userDataStream.subscribe`` (logged on)
or ``userDataStream.subscribe.signature`` (signed) answers ``{"subscriptionId": N}``, then
every account update arrives as ``{"subscriptionId": N, "event": {...}}``; revoking the
key, freezing the account or the key's expiry ends it with an ``eventStreamTerminated``
event (as Binance), on every replica (the same control messages as listen keys,
:class:`tradeplane.gateway.userstream.UserStreams`).

Every frame is read once and bounded: its size (``ws_max_message_bytes``, 1009 above), its
JSON (nesting, a flat object of at most :data:`MAX_PARAMS` scalar params, bounded ids and
names), and it is answered in the envelope whatever it holds; a request never takes the
socket down, nor another user's. A client that reads too slowly (:data:`QUEUE_LIMIT`
answers waiting) or gets its address banned (418) is disconnected with a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets as _stdlib_secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlencode

import msgspec
from fastapi import APIRouter, WebSocket
from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.websockets import WebSocketDisconnect

from tradeplane import stagestamps
from tradeplane.domain.access import KeyType
from tradeplane.domain.errors import Unavailable
from tradeplane.gateway import errors, public, trading, wslimits
from tradeplane.gateway.auth import Caller, authenticate_payload
from tradeplane.gateway.context import Gateway, gateway
from tradeplane.gateway.errors import ApiError, defect, shown
from tradeplane.gateway.inputs import parse_int
from tradeplane.gateway.ratelimit import Meter
from tradeplane.gateway.streams import WS_CLIENTS
from tradeplane.gateway.userstream import RECHECK_S, UserSession, account_updates, usable
from tradeplane.gateway.wslimits import MESSAGE_TOO_BIG, POLICY_VIOLATION

log = logging.getLogger("tradeplane.gateway.wsapi")

router = APIRouter(tags=["websocket api"])

PATH: Final = "/ws-api/v3"
#: Requests of one socket running at once; the socket is not read beyond.
MAX_IN_FLIGHT: Final = 64
#: Answers and events waiting to be sent; a client this far behind is disconnected.
QUEUE_LIMIT: Final = 10_000
#: A request's params: at most this many, with names this long, lists this long.
MAX_PARAMS: Final = 64
MAX_NAME: Final = 64
MAX_LIST: Final = 100
#: A string id's length (Binance: 36, a UUID; a little more is harmless).
MAX_ID: Final = 64
#: User data stream subscriptions per socket.
MAX_SUBSCRIPTIONS: Final = 16

WS_API_REQUESTS = Counter(
    "tradeplane_ws_api_requests_total", "WebSocket API requests by method and status",
    ["method", "status"],
)
WS_API_SECONDS = Histogram(
    "tradeplane_ws_api_request_seconds", "WebSocket API request, frame in to answer queued",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)

_json = msgspec.json.Encoder()


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Number(str):
    """A JSON number with a fraction, kept as the client wrote it: it is signed as text."""

    __slots__ = ()


# --------------------------------------------------------------------------- parsing
@dataclass(frozen=True, slots=True)
class WsRequest:
    """One frame, parsed: its id (echoed), method and params as Binance's text values."""

    id: int | str | None
    method: str
    params: dict[str, str]


class BadFrame(ApiError):
    """A frame that is not a request; ``rid`` is its id when one could be read."""

    def __init__(self, code: int, msg: str, rid: int | str | None = None) -> None:
        super().__init__(code, msg, 400)
        self.rid = rid


def _text(name: str, value: Any) -> str:
    """A param's value as Binance signs and reads it: strings as sent, numbers as written,
    booleans ``true``/``false``, a list of strings as its compact JSON (``symbols``).

    Raises:
        ApiError: -1100 anything else (null, an object, a nested list).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return str(value)
    if (isinstance(value, list) and len(value) <= MAX_LIST
            and all(isinstance(v, str) and not isinstance(v, _Number) for v in value)):
        return json.dumps(value, separators=(",", ":"))
    raise errors.ApiError(-1100, f"Illegal characters found in parameter '{shown(name)}'; "
                                 "expected a string, a number or a boolean.")


def parse_frame(text: str) -> WsRequest:
    """A frame's request, every value bounded and typed once.

    Raises:
        BadFrame: -1000 not JSON (or nested too deep), -1102 not a request object or no
            method, -1135 params not an object, -1101 too many params, -1100 a malformed
            id, param name or value.
    """
    try:
        doc = json.loads(text, parse_float=_Number)
    except (ValueError, RecursionError):
        raise BadFrame(-1000, "Malformed request: not valid JSON.") from None
    if not isinstance(doc, dict):
        raise BadFrame(-1102, "Malformed request: a request is a JSON object.")
    rid = doc.get("id")
    if isinstance(rid, bool | _Number) or not (
            rid is None or isinstance(rid, int) or (isinstance(rid, str) and len(rid) <= MAX_ID)):
        raise BadFrame(-1100, "Illegal characters found in parameter 'id'; legal range is "
                              f"an integer or a string of at most {MAX_ID} characters.")
    if isinstance(rid, int) and not -(2**63) <= rid < 2**63:
        raise BadFrame(-1100, "Illegal characters found in parameter 'id'; legal range is "
                              "a 64-bit integer.")
    method = doc.get("method")
    if not isinstance(method, str) or not method or isinstance(method, _Number):
        raise BadFrame(-1102, "Mandatory parameter 'method' was not sent, was empty/null, "
                              "or malformed.", rid)
    raw = doc.get("params", {})
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BadFrame(-1135, "Invalid 'params' in JSON request; expected an object.", rid)
    if len(raw) > MAX_PARAMS:
        raise BadFrame(-1101, f"Too many parameters; expected at most {MAX_PARAMS}.", rid)
    params: dict[str, str] = {}
    for name, value in raw.items():
        if len(name) > MAX_NAME:
            raise BadFrame(-1100, f"Illegal characters found in parameter '{shown(name)}'; "
                                  f"a name has at most {MAX_NAME} characters.", rid)
        try:
            params[name] = _text(name, value)
        except ApiError as exc:
            raise BadFrame(exc.code, exc.msg, rid) from None
    return WsRequest(rid, method, params)


def signature_payload(params: dict[str, str]) -> str:
    """What a WebSocket API request signs: every param but ``signature``, sorted by name,
    as ``name=value`` joined by ``&`` (Binance's rule; ccxt's ``sign_params``)."""
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "signature")


# --------------------------------------------------------------------------- methods
Handler = Callable[["Connection", WsRequest, Caller | None], Awaitable[Any]]
Route = Callable[[Request, Caller], Awaitable[Any]]

#: How a method is authenticated: not at all, SIGNED (a signature or a logged-on
#: session), or by session.logon itself.
NONE, SIGNED, LOGON = "none", "signed", "logon"


@dataclass(frozen=True, slots=True)
class Method:
    handler: Handler
    weight: int
    security: str = NONE
    permission: str = "read"
    orders: int = 0
    #: The weight without ``symbol`` (``openOrders.status``: every pair), when it differs.
    weight_all: int | None = None

    def cost(self, params: dict[str, str]) -> int:
        if self.weight_all is not None and not params.get("symbol"):
            return self.weight_all
        return self.weight


def _rest(route: Route, path: str) -> Handler:
    """A method that is the REST route ``route`` (the same function: parse, use case,
    render), called with this socket's app and the request's params."""

    async def run(conn: Connection, req: WsRequest, caller: Caller | None) -> Any:
        assert caller is not None
        return await route(conn.http_request(path, req.params), caller)

    return run


async def _place(conn: Connection, req: WsRequest, caller: Caller | None) -> Any:
    assert caller is not None
    return await trading.place_new_order(conn.gw, caller)


async def _ping(conn: Connection, req: WsRequest, caller: Caller | None) -> Any:
    return await public.ping()


async def _time(conn: Connection, req: WsRequest, caller: Caller | None) -> Any:
    return await public.server_time()


async def _exchange_info(conn: Connection, req: WsRequest, caller: Caller | None) -> Any:
    return await public.exchange_info(conn.http_request("/api/v3/exchangeInfo", req.params))


async def _logon(conn: Connection, req: WsRequest, caller: Caller | None) -> Any:
    assert caller is not None
    entry = await conn.gw.keys.lookup(conn.gw.ctx.pool, caller.api_key)
    if entry is None or entry.key_type is not KeyType.ED25519:
        raise ApiError(-4056, "HMAC_SHA256 API key is not supported.")
    conn.api_key = caller.api_key
    conn.authorized_since = _now_ms()
    return conn.status()


async def _status(conn: Connection, req: WsRequest, caller: Caller | None) -> Any:
    return conn.status()


async def _logout(conn: Connection, req: WsRequest, caller: Caller | None) -> Any:
    conn.api_key = None
    conn.authorized_since = None
    return conn.status()


async def _subscribe(conn: Connection, req: WsRequest, caller: Caller | None) -> Any:
    assert caller is not None
    return {"subscriptionId": await conn.subscribe(caller)}


async def _unsubscribe(conn: Connection, req: WsRequest, caller: Caller | None) -> Any:
    raw = req.params.get("subscriptionId")
    if raw is None or raw == "":
        await conn.unsubscribe(None)
        return {}
    sub_id = parse_int(raw, "subscriptionId", hi=2**31)
    if not await conn.unsubscribe(sub_id):
        raise ApiError(-2035, "User Data Stream subscription not active.")
    return {}


#: Binance's method names, with the REST endpoint each one is (and its weight).
METHODS: Final[dict[str, Method]] = {
    "ping": Method(_ping, 1),
    "time": Method(_time, 1),
    "exchangeInfo": Method(_exchange_info, 20),
    "session.logon": Method(_logon, 2, LOGON),
    "session.status": Method(_status, 2),
    "session.logout": Method(_logout, 2),
    "order.place": Method(_place, 1, SIGNED, "trade", orders=1),
    "order.test": Method(_rest(trading.test_order, "/api/v3/order/test"), 1, SIGNED,
                         "trade"),
    "order.status": Method(_rest(trading.query_order, "/api/v3/order"), 4, SIGNED),
    "order.cancel": Method(_rest(trading.cancel_order, "/api/v3/order"), 1, SIGNED,
                           "trade"),
    "order.cancelReplace": Method(
        _rest(trading.cancel_replace, "/api/v3/order/cancelReplace"), 1, SIGNED, "trade",
        orders=1),
    "order.amend.keepPriority": Method(
        _rest(trading.amend_keep_priority, "/api/v3/order/amend/keepPriority"), 4, SIGNED,
        "trade"),
    "openOrders.status": Method(_rest(trading.query_open_orders, "/api/v3/openOrders"), 6,
                                SIGNED, weight_all=80),
    "openOrders.cancelAll": Method(_rest(trading.cancel_open_orders, "/api/v3/openOrders"),
                                   1, SIGNED, "trade"),
    "allOrders": Method(_rest(trading.query_all_orders, "/api/v3/allOrders"), 20, SIGNED),
    "orderList.place.oco": Method(_rest(trading.new_oco, "/api/v3/orderList/oco"), 1,
                                  SIGNED, "trade", orders=2),
    "orderList.status": Method(_rest(trading.query_order_list, "/api/v3/orderList"), 4,
                               SIGNED),
    "orderList.cancel": Method(_rest(trading.cancel_order_list, "/api/v3/orderList"), 1,
                               SIGNED, "trade"),
    "openOrderLists.status": Method(
        _rest(trading.query_open_order_lists, "/api/v3/openOrderList"), 6, SIGNED),
    "account.status": Method(_rest(trading.account, "/api/v3/account"), 20, SIGNED),
    "myTrades": Method(_rest(trading.query_my_trades, "/api/v3/myTrades"), 20, SIGNED),
    "userDataStream.subscribe": Method(_subscribe, 2, SIGNED),
    "userDataStream.subscribe.signature": Method(_subscribe, 2, SIGNED),
    "userDataStream.unsubscribe": Method(_unsubscribe, 2),
}


# --------------------------------------------------------------------------- connection
@dataclass(eq=False)
class _Subscription:
    session: UserSession
    unsubscribe: Callable[[], Awaitable[None]]
    watcher: asyncio.Task[None] | None = None


@dataclass(eq=False)
class Connection:
    """One ``/ws-api/v3`` socket: its session (the logged-on key), its user data stream
    subscriptions and its outgoing queue (one sender: answers and events keep their
    order)."""

    websocket: WebSocket
    gw: Gateway
    ip: str
    return_rate_limits: bool = True
    connected_since: int = field(default_factory=_now_ms)
    api_key: str | None = None
    authorized_since: int | None = None
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    #: Set to close the socket: (close code, reason).
    closing: tuple[int, str] | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    subscriptions: dict[int, _Subscription] = field(default_factory=dict)
    next_subscription: int = 0
    _token: str = field(default_factory=lambda: _stdlib_secrets.token_hex(8))

    # ------------------------------------------------------------------ output
    def send(self, doc: Any) -> None:
        self.send_text(_json.encode(doc).decode())

    def send_text(self, text: str) -> None:
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.close(POLICY_VIOLATION, "Too slow a reader.")

    def close(self, code: int, reason: str) -> None:
        if self.closing is None:
            self.closing = (code, reason)
        self.closed.set()

    # ------------------------------------------------------------------ helpers
    def http_request(self, path: str, params: dict[str, str]) -> Request:
        """The HTTP request a REST route reads (its app; its params as the query string),
        for a method that is that route."""
        return Request({
            "type": "http", "app": self.websocket.app, "method": "POST", "path": path,
            "headers": [], "query_string": urlencode(params).encode(),
            "client": self.websocket.scope.get("client"),
        })

    def status(self) -> dict[str, Any]:
        """``session.status``'s (and logon's, logout's) answer."""
        return {"apiKey": self.api_key, "authorizedSince": self.authorized_since,
                "connectedSince": self.connected_since,
                "returnRateLimits": self.return_rate_limits, "serverTime": _now_ms(),
                "userDataStream": bool(self.subscriptions)}

    def rate_limits(self, meter: Meter) -> list[dict[str, Any]]:
        s = self.gw.ctx.settings
        out = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                "limit": s.ip_weight_per_minute, "count": meter.used_weight}]
        if meter.order_counts is not None:
            out += [
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                 "limit": s.orders_per_10s, "count": meter.order_counts[0]},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1,
                 "limit": s.orders_per_day, "count": meter.order_counts[1]},
            ]
        return out

    # ------------------------------------------------------------------ requests
    async def handle(self, text: str) -> None:
        """Answer one frame (never raises: every failure is an answer)."""
        started = time.perf_counter()
        meter = Meter(self.ip, 1, 0, False)
        rid: int | str | None = None
        label = "invalid"
        returns = self.return_rate_limits
        try:
            try:
                req = parse_frame(text)
            except BadFrame as exc:
                rid = exc.rid
                raise
            rid = req.id
            flag = req.params.get("returnRateLimits")
            if flag in ("true", "false"):
                returns = flag == "true"
            method = METHODS.get(req.method)
            if method is None:
                raise ApiError(-1020, f"Unknown method '{shown(req.method)}': this operation "
                                      "is not supported.")
            label = req.method
            if method.handler is _place:
                stagestamps.received()
            meter = Meter(self.ip, method.cost(req.params), method.orders,
                          method.security != NONE)
            caller = await self._authorize(req, method, meter)
            result = await method.handler(self, req, caller)
            doc: dict[str, Any] = {"id": rid, "status": 200, "result": result}
        except ApiError as exc:
            refused = exc
            if exc.status == 429 and not meter.used_weight:
                # refused from memory, uncounted: still an offence towards a ban, as REST's
                refused = await self.gw.limiter.note_refusal(meter) or exc
            doc = {"id": rid, "status": refused.status, "error": refused.doc()}
        except Unavailable as exc:  # as REST: a dependency outage is a 503
            log.warning("WebSocket API %s: %s", label, exc)
            # only a known method gets this far; a change's outcome is unknown
            changes = label in METHODS and METHODS[label].permission != "read"
            down = errors.outage("POST" if changes else "GET")
            doc = {"id": rid, "status": down.status, "error": down.doc()}
        except Exception:  # a defect: said loudly, answered, and the socket lives on
            log.exception("WebSocket API request failed")
            doc = {"id": rid, "status": 500, "error": defect().doc()}
        finally:
            if not meter.charged:  # refused before its key was proven: the address pays
                await self.gw.limiter.charge_after(meter)
        if returns and self.gw.limiter.enforced:
            doc["rateLimits"] = self.rate_limits(meter)
        stagestamps.stamp(stagestamps.ACKED)
        self.send(doc)
        status = doc["status"]
        WS_API_REQUESTS.labels(label, str(status)).inc()
        WS_API_SECONDS.labels(label).observe(time.perf_counter() - started)
        if status == 418:  # banned: it is told why, then let go
            self.close(POLICY_VIOLATION, "Banned for too many requests; see the last error.")

    async def _authorize(self, req: WsRequest, method: Method, meter: Meter) -> Caller | None:
        """The caller of a SIGNED method (charged to its key), after charging an unsigned
        one to the address.

        Raises:
            ApiError: as REST authentication; -1002 a session method without a session.
        """
        if method.security == NONE:
            await self.gw.limiter.charge(meter)
            return None
        params = dict(req.params)
        key = params.get("apiKey", "")
        signature = params.get("signature")
        proven = False
        if method.security == SIGNED and not signature and self.api_key is not None:
            # The logged-on key signs for the session: apiKey may be left out.
            proven = not key or key == self.api_key
            key = key or self.api_key
        if req.method == "userDataStream.subscribe" and not proven and not signature:
            await self.gw.limiter.charge(meter)
            raise ApiError(-1002, "You are not authorized to execute this request: "
                                  "log on first (session.logon).", 401)
        return await authenticate_payload(self.gw, key, params, signature_payload(params),
                                          signature, method.permission, meter=meter,
                                          proven=proven)

    # ------------------------------------------------------------------ user data stream
    async def subscribe(self, caller: Caller) -> int:
        """Relay the caller's account updates on this socket; the subscription's id.

        Raises:
            ApiError: -2015 the key may not hold a stream (frozen, expired); -1003 too
                many subscriptions on this socket.
        """
        gw = self.gw
        entry = await gw.keys.lookup(gw.ctx.pool, caller.api_key)
        if not usable(entry, _now_ms()):
            raise errors.bad_api_key()
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise ApiError(-1003, f"Too many User Data Stream subscriptions; the limit is "
                                  f"{MAX_SUBSCRIPTIONS} per connection.")
        sub_id = self.next_subscription
        self.next_subscription += 1
        session = gw.user_streams.attach(f"ws-api:{self._token}:{sub_id}", caller.account,
                                         caller.api_key)
        prefix = f'{{"subscriptionId":{sub_id},"event":'

        async def on_msg(_subject: str, data: bytes) -> None:
            if sub_id in self.subscriptions:
                self.send_text(prefix + data.decode() + "}")

        unsub = await account_updates(gw.ctx.bus, caller.account, on_msg)
        sub = _Subscription(session, unsub)
        self.subscriptions[sub_id] = sub
        if self.closed.is_set():  # the socket went meanwhile: nothing may outlive it
            await self._drop(sub_id)
            raise ApiError(-1001, "Internal error; unable to process your request. Please "
                                  "try again.", 503)
        sub.watcher = asyncio.create_task(self._watch(sub_id, sub))
        return sub_id

    async def _watch(self, sub_id: int, sub: _Subscription) -> None:
        """End the subscription when its key is revoked or expires or its account is
        frozen (told at once by the control messages; asked again at least every
        ``RECHECK_S``, as listen-key streams are)."""
        gw, session = self.gw, sub.session
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.ended.wait(), RECHECK_S)
            if not session.ended.is_set():
                try:
                    entry = await gw.keys.lookup(gw.ctx.pool, session.api_key)
                except Unavailable as exc:  # keep the subscription; ask again later
                    log.warning("API key check failed: %s", exc)
                    continue
                if usable(entry, _now_ms()):
                    continue
            if await self._drop(sub_id):
                self.send({"subscriptionId": sub_id,
                           "event": {"e": "eventStreamTerminated", "E": _now_ms()}})
            return

    async def unsubscribe(self, sub_id: int | None) -> bool:
        """End one subscription (or every one: None); False when there was no such one."""
        if sub_id is not None:
            return await self._drop(sub_id)
        for i in list(self.subscriptions):
            await self._drop(i)
        return True

    async def _drop(self, sub_id: int) -> bool:
        sub = self.subscriptions.pop(sub_id, None)
        if sub is None:
            return False
        self.gw.user_streams.release(sub.session)
        if sub.watcher is not None and sub.watcher is not asyncio.current_task():
            sub.watcher.cancel()
        await sub.unsubscribe()
        return True


# --------------------------------------------------------------------------- endpoint
@router.websocket(PATH)
async def ws_api(websocket: WebSocket) -> None:
    if not await wslimits.admit(websocket):
        return
    gw = gateway(websocket.app)
    await websocket.accept()
    WS_CLIENTS.inc()
    conn = Connection(websocket, gw, wslimits.client_address(websocket),
                      websocket.query_params.get("returnRateLimits") != "false")
    try:
        await _serve(conn)
    finally:
        await conn.unsubscribe(None)
        WS_CLIENTS.dec()


async def _serve(conn: Connection) -> None:
    ws = conn.websocket
    tasks = [asyncio.create_task(_pump(conn)), asyncio.create_task(_read(conn))]
    try:
        await conn.closed.wait()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.suppress(Exception):  # the peer may be gone already
        if conn.closing is not None:
            await ws.close(code=conn.closing[0], reason=conn.closing[1])


async def _pump(conn: Connection) -> None:
    """The only task that sends on the socket."""
    try:
        while True:
            await conn.websocket.send_text(await conn.queue.get())
    except (WebSocketDisconnect, RuntimeError, OSError):
        conn.closed.set()


async def _read(conn: Connection) -> None:
    """Read frames and run each as a task, at most ``MAX_IN_FLIGHT`` at once. Requests
    still running when the client goes finish (an order being placed is placed and its
    answer dropped), never cancelled halfway."""
    ws = conn.websocket
    most = conn.gw.ctx.settings.ws_max_message_bytes
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    running: set[asyncio.Task[None]] = set()

    async def run(text: str) -> None:
        try:
            await conn.handle(text)
        finally:
            slots.release()

    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
            text: str | None = msg.get("text")
            if text is None:
                data: bytes | None = msg.get("bytes")
                if data is None:
                    continue
                text = data.decode("utf-8", errors="replace")
            if len(text) > most or len(text.encode()) > most:
                conn.close(MESSAGE_TOO_BIG, f"Message too big; the limit is {most} bytes.")
                break
            await slots.acquire()
            task = asyncio.create_task(run(text))
            running.add(task)
            task.add_done_callback(running.discard)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        conn.closed.set()
        if running:  # let them finish (not cancelled: see above); their answers go nowhere
            await asyncio.shield(asyncio.gather(*running, return_exceptions=True))
