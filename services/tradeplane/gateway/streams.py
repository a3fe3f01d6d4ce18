"""Binance WebSocket market streams: raw ``/ws`` and ``/ws/<stream>``, combined
``/stream?streams=a/b``, with live ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS``
(and the ``combined`` property).

The marketdata service publishes every stream's payloads on ``md.<SYMBOL>.<stream>``. One
``StreamHub`` per gateway holds ONE NATS subscription per subject, shared by all sockets
that want it (reference counted), and fans messages out to per-socket bounded queues; a
socket whose queue overflows is disconnected, as Binance does with slow readers.

``/ws/<listenKey>`` is a user data stream (``userstream``); ccxt also opens ``/ws/<n>``
(a connection index, not a stream): unknown names in the path are ignored.

Every socket passes Binance's limits (``wslimits``): connection attempts per address,
message size, messages per second, streams per connection. Error replies quote a client's
names only shortened (``errors.shown``), never whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from fastapi import APIRouter, WebSocket
from prometheus_client import Gauge
from starlette.websockets import WebSocketDisconnect

from tradeplane.domain.errors import Unavailable
from tradeplane.domain.market import market_subject
from tradeplane.domain.pairs import PairRules
from tradeplane.gateway import userstream, wslimits
from tradeplane.gateway.context import GatewayContext, ctx, gateway
from tradeplane.gateway.errors import shown
from tradeplane.gateway.userstream import Subscriber
from tradeplane.gateway.wslimits import POLICY_VIOLATION, Inbound, Violation, WsLimits

log = logging.getLogger("tradeplane.gateway.streams")

router = APIRouter(tags=["websocket streams"])

WS_CLIENTS = Gauge("tradeplane_ws_clients", "Open WebSocket connections (market and user)")

QUEUE_LIMIT: Final = 10_000  # frames buffered per connection before it is dropped

#: Stream kinds (after ``<symbol>@``) the marketdata service publishes. The gateway may not
#: import the marketdata package; a unit test pins this to ``marketdata.state.STREAMS``.
STREAM_KINDS: Final = frozenset({
    "trade", "aggTrade", "ticker", "miniTicker", "bookTicker", "depth", "depth@100ms",
    "kline_1m", "kline_5m", "kline_15m", "kline_1h", "kline_4h", "kline_1d",
    "depth5", "depth10", "depth20", "depth5@100ms", "depth10@100ms", "depth20@100ms",
})
_ALIASES: Final = {"depth@1000ms": "depth", "depth5@1000ms": "depth5",
                   "depth10@1000ms": "depth10", "depth20@1000ms": "depth20"}
#: All-market streams (no symbol), published under the pseudo-symbol ``ALL_MARKETS``;
#: pinned to ``marketdata.state`` by a unit test like ``STREAM_KINDS``.
ALL_MARKET_STREAMS: Final = frozenset({"!ticker@arr", "!miniTicker@arr"})
ALL_MARKETS: Final = "all"


def stream_subject(name: str, pairs: dict[str, PairRules]) -> str | None:
    """The NATS subject of a Binance stream name (``btcusdt@depth@100ms``,
    ``!ticker@arr``), None if unknown."""
    if name in ALL_MARKET_STREAMS:
        return market_subject(ALL_MARKETS, name)
    symbol, sep, kind = name.partition("@")
    kind = _ALIASES.get(kind, kind)
    if not sep or kind not in STREAM_KINDS or symbol.upper() not in pairs:
        return None
    return market_subject(symbol.upper(), kind)


class _Client:
    """One socket: its subscriptions (subject -> stream name) and its outgoing queue."""

    def __init__(self, combined: bool) -> None:
        self.combined = combined
        self.subs: dict[str, str] = {}
        self.queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_LIMIT)
        self.gone = asyncio.Event()  # overflowed, or the hub shut down

    def offer(self, subject: str, text: str) -> None:
        name = self.subs.get(subject)
        if name is None:
            return
        self.send(f'{{"stream":"{name}","data":{text}}}' if self.combined else text)

    def send(self, text: str) -> None:
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.gone.set()


@dataclass
class _Subscription:
    clients: set[_Client] = field(default_factory=set)
    unsubscribe: Any = None


class StreamHub:
    """One NATS subscription per market-data subject, shared by every socket."""

    def __init__(self, bus: Subscriber) -> None:
        self._bus = bus
        self._subs: dict[str, _Subscription] = {}
        self._clients: set[_Client] = set()
        self._lock = asyncio.Lock()

    @property
    def subjects(self) -> list[str]:
        """The subjects with a NATS subscription now, sorted."""
        return sorted(self._subs)

    def listeners(self, subject: str) -> int:
        """How many sockets share the subscription to ``subject``."""
        sub = self._subs.get(subject)
        return 0 if sub is None else len(sub.clients)

    def register(self, client: _Client) -> None:
        self._clients.add(client)

    async def join(self, subject: str, client: _Client) -> None:
        async with self._lock:
            sub = self._subs.get(subject)
            if sub is None:
                sub = self._subs[subject] = _Subscription()
                sub.unsubscribe = await self._bus.subscribe(subject, self._deliver)
            sub.clients.add(client)

    async def leave(self, subject: str, client: _Client) -> None:
        async with self._lock:
            sub = self._subs.get(subject)
            if sub is None:
                return
            sub.clients.discard(client)
            if not sub.clients:
                del self._subs[subject]
                await sub.unsubscribe()

    async def unregister(self, client: _Client) -> None:
        self._clients.discard(client)
        for subject in list(client.subs):
            await self.leave(subject, client)
        client.subs.clear()

    async def _deliver(self, subject: str, data: bytes) -> None:
        sub = self._subs.get(subject)
        if sub is None:
            return
        text = data.decode()
        for client in list(sub.clients):
            client.offer(subject, text)

    async def close(self) -> None:
        """Drop every NATS subscription and tell every socket to go away."""
        async with self._lock:
            subs, self._subs = self._subs, {}
            for sub in subs.values():
                with contextlib.suppress(Unavailable):  # the connection may be closing
                    await sub.unsubscribe()
        for client in self._clients:
            client.gone.set()


# --------------------------------------------------------------------------- endpoints
def _limits(websocket: WebSocket) -> WsLimits:
    return WsLimits.of(ctx(websocket).settings)


@router.websocket("/ws")
async def raw_root(websocket: WebSocket) -> None:
    if await wslimits.admit(websocket):
        await _serve(websocket, (), combined=False)


@router.websocket("/ws/{stream_path:path}")
async def raw_streams(websocket: WebSocket, stream_path: str) -> None:
    if not await wslimits.admit(websocket):
        return
    users = gateway(websocket.app).user_streams
    if userstream.is_listen_key(stream_path):
        try:
            session = await users.open(stream_path)
        except Unavailable as exc:  # cannot tell whose it is: refuse, the client retries
            log.warning("listen key store: %s", exc)
            await websocket.close(code=1013)
            return
        if session is not None:
            await websocket.accept()
            WS_CLIENTS.inc()
            try:
                await userstream.serve_user_stream(websocket, session, users,
                                                   _limits(websocket), ctx(websocket).bus)
            finally:
                WS_CLIENTS.dec()
            return
    await _serve(websocket, stream_path.split("/"), combined=False)


@router.websocket("/stream")
async def combined_streams(websocket: WebSocket) -> None:
    if not await wslimits.admit(websocket):
        return
    names = websocket.query_params.get("streams", "")
    await _serve(websocket, [n for n in names.split("/") if n], combined=True)


async def _serve(websocket: WebSocket, names: Iterable[str], *, combined: bool) -> None:
    c = ctx(websocket)
    limits = _limits(websocket)
    hub = gateway(websocket.app).stream_hub
    wanted: dict[str, str] = {}
    for name in names:
        subject = stream_subject(name, c.pairs)
        if subject is not None:
            wanted.setdefault(subject, name)
            if len(wanted) > limits.max_streams:
                break
    await websocket.accept()
    if len(wanted) > limits.max_streams:
        await websocket.close(code=POLICY_VIOLATION, reason=_too_many_streams(limits))
        return
    client = _Client(combined)
    hub.register(client)
    WS_CLIENTS.inc()
    tasks: list[asyncio.Task[Any]] = []
    try:
        for subject, name in wanted.items():
            client.subs[subject] = name
            await hub.join(subject, client)
        requests = asyncio.create_task(_requests(websocket, client, hub, c, limits))
        tasks = [
            asyncio.create_task(_pump(websocket, client)),
            requests,
            asyncio.create_task(_wait_gone(client)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        violation = (requests.result() if requests.done() and not requests.cancelled()
                     and requests.exception() is None else None)
        with contextlib.suppress(Exception):  # the peer may be gone already
            if violation is not None:
                await websocket.close(code=violation.code, reason=violation.reason)
            elif client.gone.is_set():
                await websocket.close(code=POLICY_VIOLATION)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await hub.unregister(client)
        WS_CLIENTS.dec()


def _too_many_streams(limits: WsLimits) -> str:
    return f"Too many streams; the limit is {limits.max_streams} per connection."


async def _wait_gone(client: _Client) -> None:
    await client.gone.wait()


async def _pump(websocket: WebSocket, client: _Client) -> None:
    """The only task that sends on the socket: data and replies keep their order."""
    queue = client.queue
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        while True:
            await websocket.send_text(await queue.get())


async def _requests(
    websocket: WebSocket, client: _Client, hub: StreamHub, c: GatewayContext, limits: WsLimits
) -> Violation | None:
    """Answer the client's requests until it goes (None) or breaks a limit."""
    inbound = Inbound(websocket, limits)
    while True:
        try:
            text = await inbound.next()
        except Violation as v:
            return v
        if text is None:
            return None
        reply = await _handle_request(text, client, hub, c, limits)
        client.send(json.dumps(reply))


def _error(code: int, msg: str, rid: Any) -> dict[str, Any]:
    return {"error": {"code": code, "msg": msg}, "id": rid}


def _quoted(value: Any) -> str:
    """A client's value as an error may quote it: shortened, never whole."""
    return shown(value if isinstance(value, str) else json.dumps(value)[:200])


async def _handle_request(
    text: str, client: _Client, hub: StreamHub, c: GatewayContext,
    limits: WsLimits = WsLimits(),
) -> dict[str, Any]:
    """One JSON request: ``{"method": ..., "params": [...], "id": N}`` -> Binance's reply."""
    try:
        req = json.loads(text)
    except ValueError as exc:
        return _error(3, f"Invalid JSON: {shown(str(exc))}", None)
    if not isinstance(req, dict):
        return _error(2, "Invalid request: request must be an object", None)
    rid = req.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, int | str)):
        return _error(1, "Invalid value type: expected an integer or a string id", None)
    method = req.get("method")
    params = req.get("params", [])
    if not isinstance(params, list):
        return _error(1, "Invalid value type: params must be an array", rid)
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        wanted: list[tuple[str, str]] = []
        for name in params:
            subject = stream_subject(name, c.pairs) if isinstance(name, str) else None
            if subject is None:
                return _error(2, f"Invalid request: unknown stream name '{_quoted(name)}'",
                              rid)
            wanted.append((subject, name))
        if method == "SUBSCRIBE":
            new = {s for s, _ in wanted if s not in client.subs}
            if len(client.subs) + len(new) > limits.max_streams:
                return _error(2, f"Invalid request: {_too_many_streams(limits)}", rid)
            for subject, name in wanted:
                if subject not in client.subs:
                    client.subs[subject] = name
                    await hub.join(subject, client)
        else:
            for subject, _ in wanted:
                if client.subs.pop(subject, None) is not None:
                    await hub.leave(subject, client)
        return {"result": None, "id": rid}
    if method == "LIST_SUBSCRIPTIONS":
        return {"result": list(client.subs.values()), "id": rid}
    if method == "SET_PROPERTY":
        if len(params) == 2 and params[0] == "combined" and isinstance(params[1], bool):
            client.combined = params[1]
            return {"result": None, "id": rid}
        return _error(0, "Unknown property", rid)
    if method == "GET_PROPERTY":
        if params == ["combined"]:
            return {"result": client.combined, "id": rid}
        return _error(0, "Unknown property", rid)
    return _error(2, f"Invalid request: unknown method '{_quoted(method)}'", rid)
