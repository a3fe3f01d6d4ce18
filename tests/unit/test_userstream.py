"""The user data stream and the WebSocket limits with hand-written stubs: messages of
``user.<account>`` go to the socket in order; a reader too slow for them is disconnected,
never silently skipped; a socket closes the moment its listen key or API key expires, is
revoked or DELETEd; a client over the message size or rate is closed; an error reply never
quotes a client's input whole."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from tests.support.harness import eventually

from tradeplane.adapters.accounts_db import KeyRecord
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.adapters.listenkeys import ListenKeyGrant, new_listen_key
from tradeplane.domain.access import KeyPolicy, KeyType
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.gateway import streams
from tradeplane.gateway.auth import KeyCache, KeyEntry
from tradeplane.gateway.control import Controls
from tradeplane.gateway.userstream import UserSession, UserStreams, is_listen_key, serve_user_stream
from tradeplane.gateway.wslimits import MessageRate, WsLimits

Handler = Callable[[str, bytes], Awaitable[None]]
LIMITS = WsLimits()


class StubBus:
    def __init__(self) -> None:
        self.subject: str | None = None
        self.handler: Handler | None = None
        self.unsubscribed = False

    async def subscribe(self, subject: str, handler: Handler) -> Callable[[], Awaitable[None]]:
        self.subject, self.handler = subject, handler
        return self._unsubscribe

    async def _unsubscribe(self) -> None:
        self.unsubscribed = True

    async def deliver(self, data: bytes) -> None:
        assert self.handler is not None and self.subject is not None
        await self.handler(self.subject, data)


class StubSocket:
    """A client socket; ``stuck`` makes every send after the first block (it never reads);
    ``incoming`` is what the client sends."""

    def __init__(self, bus: StubBus, *, stuck: bool = False) -> None:
        self.stuck = stuck
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._never = asyncio.Event()

    def leave(self) -> None:
        self.incoming.put_nowait({"type": "websocket.disconnect"})

    def say(self, text: str) -> None:
        self.incoming.put_nowait({"type": "websocket.receive", "text": text})

    async def send_text(self, text: str) -> None:
        self.sent.append(text)
        if self.stuck:
            await self._never.wait()

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = (code, reason or "")


class StubStore:
    """Listen keys in a dict: listen key -> (account, API key, expires at monotonic)."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[int, str, float]] = {}

    def add(self, account: int, api_key: str, ttl_s: float) -> str:
        lk = new_listen_key()
        self.keys[lk] = (account, api_key, time.monotonic() + ttl_s)
        return lk

    async def issue(self, api_key: str, account: int, ttl_ms: int) -> str:
        return self.add(account, api_key, ttl_ms / 1000)

    async def extend(self, listen_key: str, api_key: str, ttl_ms: int) -> bool:
        raise NotImplementedError

    async def remove(self, listen_key: str, api_key: str = "") -> bool:
        return self.keys.pop(listen_key, None) is not None

    async def remove_api_key(self, api_key: str) -> str | None:
        for lk, (_, key, _) in list(self.keys.items()):
            if key == api_key:
                del self.keys[lk]
                return lk
        return None

    async def remove_account(self, account: int) -> list[str]:
        gone = [lk for lk, (acct, _, _) in self.keys.items() if acct == account]
        for lk in gone:
            del self.keys[lk]
        return gone

    async def lookup(self, listen_key: str) -> ListenKeyGrant | None:
        hit = self.keys.get(listen_key)
        if hit is None or hit[2] <= time.monotonic():
            return None
        return ListenKeyGrant(listen_key, hit[0], hit[1], int((hit[2] - time.monotonic()) * 1000))


class StubKeys:
    """API keys: key -> expiry in epoch ms (0 = never); absent = revoked."""

    def __init__(self) -> None:
        self.expiry: dict[str, int] = {}

    async def lookup(self, _pool: Any, api_key: str) -> KeyEntry | None:
        if api_key not in self.expiry:
            return None
        rec = KeyRecord(api_key, 1, "HMAC_SHA256", b"", None, frozenset({"read"}), (),
                        self.expiry[api_key], False, "", 0, 0)
        policy = KeyPolicy(frozenset({"read"}), (), self.expiry[api_key], False)
        return KeyEntry(rec, KeyType.HMAC_SHA256, "secret", policy)


class StubAccounts:
    """Accounts: the frozen ones."""

    def __init__(self) -> None:
        self.frozen_accounts: set[int] = set()

    async def frozen(self, account: int) -> bool:
        return account in self.frozen_accounts


class Env:
    def __init__(self, *, ttl_s: float = 3600, key_expires_ms: int = 0) -> None:
        self.bus = StubBus()
        self.store = StubStore()
        self.keys = StubKeys()
        self.keys.expiry["K"] = key_expires_ms
        self.accounts = StubAccounts()
        self.users = UserStreams(self.store, self.keys, None, ttl_s=3600,
                                 accounts=self.accounts)
        self.listen_key = self.store.add(1234, "K", ttl_s)

    async def serve(self, ws: StubSocket, limits: WsLimits = LIMITS) -> asyncio.Task[None]:
        session = await self.users.open(self.listen_key)
        assert session is not None
        task = asyncio.create_task(serve_user_stream(  # type: ignore[arg-type]
            ws, session, self.users, limits, self.bus))
        await eventually(lambda: _subscribed(self.bus))
        return task


async def _subscribed(bus: StubBus) -> bool:
    return bus.handler is not None


def _expired_event(ws: StubSocket, listen_key: str) -> None:
    doc = json.loads(ws.sent[-1])
    assert doc["e"] == "listenKeyExpired" and doc["listenKey"] == listen_key
    assert abs(doc["E"] - time.time() * 1000) < 10_000


async def test_messages_are_relayed_in_order_until_the_client_leaves() -> None:
    env = Env()
    ws = StubSocket(env.bus)
    task = await env.serve(ws)
    assert env.bus.subject == "user.1234"
    for n in range(3):
        await env.bus.deliver(b'{"n":%d}' % n)

    async def all_sent() -> bool:
        return ws.sent == ['{"n":0}', '{"n":1}', '{"n":2}']

    await eventually(all_sent)
    ws.leave()
    await asyncio.wait_for(task, 5)
    assert env.bus.unsubscribed and ws.closed is None and env.users.sessions() == []


async def test_a_reader_too_slow_for_its_updates_is_disconnected() -> None:
    env = Env()
    ws = StubSocket(env.bus, stuck=True)
    task = await env.serve(ws)
    for n in range(10_005):  # the queue holds 10 000, the blocked send one more
        await env.bus.deliver(b"%d" % n)
    await asyncio.wait_for(task, 5)
    assert ws.closed is not None and ws.closed[0] == 1008 and env.bus.unsubscribed


async def test_a_socket_gets_listen_key_expired_and_closes_when_its_listen_key_expires() -> None:
    env = Env(ttl_s=0.3)
    ws = StubSocket(env.bus)
    task = await env.serve(ws)
    await asyncio.wait_for(task, 5)
    _expired_event(ws, env.listen_key)
    assert ws.closed == (1000, "") and env.users.sessions() == []


async def test_a_socket_closes_when_its_api_key_expires() -> None:
    env = Env(key_expires_ms=int(time.time() * 1000) + 300)
    ws = StubSocket(env.bus)
    task = await env.serve(ws)
    await asyncio.wait_for(task, 5)
    _expired_event(ws, env.listen_key)
    assert ws.closed == (1000, "")


async def test_revoking_the_api_key_closes_its_sockets_and_drops_its_listen_key() -> None:
    env = Env()
    ws = StubSocket(env.bus)
    task = await env.serve(ws)
    del env.keys.expiry["K"]
    await env.users.key_revoked("K")
    await asyncio.wait_for(task, 5)
    _expired_event(ws, env.listen_key)
    assert env.store.keys == {} and await env.users.open(env.listen_key) is None


async def test_freezing_the_account_closes_its_sockets_and_drops_its_listen_keys() -> None:
    env = Env()
    ws = StubSocket(env.bus)
    task = await env.serve(ws)
    env.accounts.frozen_accounts.add(1234)
    await env.users.account_changed(1234)
    await asyncio.wait_for(task, 5)
    _expired_event(ws, env.listen_key)
    assert env.store.keys == {} and env.users.sessions() == []


async def test_an_account_change_that_is_not_a_freeze_keeps_its_sockets() -> None:
    env = Env()
    ws = StubSocket(env.bus)
    task = await env.serve(ws)
    await env.users.account_changed(1234)  # unfrozen, say
    await asyncio.sleep(0.05)
    assert not task.done() and env.listen_key in env.store.keys
    ws.leave()
    await asyncio.wait_for(task, 5)
    assert ws.closed is None


async def test_a_deleted_listen_key_closes_its_socket_without_listen_key_expired() -> None:
    env = Env()
    ws = StubSocket(env.bus)
    task = await env.serve(ws)
    assert await env.users.delete(env.listen_key, "K")
    await asyncio.wait_for(task, 5)
    assert ws.sent == [] and ws.closed == (1000, "")
    assert not await env.users.delete(env.listen_key, "K")


async def test_a_listen_key_of_a_revoked_or_expired_api_key_opens_no_stream() -> None:
    env = Env(key_expires_ms=int(time.time() * 1000) - 1)
    assert await env.users.open(env.listen_key) is None
    del env.keys.expiry["K"]
    assert await env.users.open(env.listen_key) is None
    assert await env.users.open("short") is None


async def test_a_user_stream_client_sending_too_much_is_closed() -> None:
    env = Env()
    ws = StubSocket(env.bus)
    task = await env.serve(ws, WsLimits(max_message_bytes=100, messages_per_second=5))
    ws.say("x" * 101)
    await asyncio.wait_for(task, 5)
    assert ws.closed == (1009, "Message too big; the limit is 100 bytes.")

    ws = StubSocket(env.bus)
    task = await env.serve(ws)
    for _ in range(6):
        ws.say("{}")
    await asyncio.wait_for(task, 5)
    assert ws.closed == (1008, "Too many messages; the limit is 5 per second.")


def test_at_most_n_messages_are_allowed_within_any_second() -> None:
    now = [100.0]
    rate = MessageRate(5, lambda: now[0])
    allowed = []
    for _ in range(5):
        allowed.append(rate.allow())
        now[0] += 0.1
    assert allowed == [True] * 5
    now[0] = 100.99
    assert not rate.allow()  # a sixth within a second of the first
    now[0] = 101.0  # the first is a second old
    assert rate.allow() and not rate.allow()  # the second is not yet


def test_listen_keys_are_60_random_letters_and_digits() -> None:
    keys = {new_listen_key() for _ in range(100)}
    assert len(keys) == 100 and all(is_listen_key(k) for k in keys)
    assert not is_listen_key("4d2x" + "a" * 56 + "-") and not is_listen_key("a" * 61)
    assert not is_listen_key("0")


def test_a_session_ends_once() -> None:
    s = UserSession(ListenKeyGrant("L", 1, "K", 1000))
    s.end(expired=False)
    s.end(expired=True)
    assert s.ended.is_set() and not s.expired


async def test_subscribe_beyond_the_stream_limit_is_refused() -> None:
    pairs = {p.symbol: p for p in DEMO_PAIRS}
    ctx: Any = SimpleNamespace(pairs=pairs)
    hub = streams.StreamHub(StubBus())  # type: ignore[arg-type]
    client = streams._Client(combined=False)
    limits = WsLimits(max_streams=2)
    req = {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "ethusdt@trade"], "id": 1}
    assert await streams._handle_request(json.dumps(req), client, hub, ctx, limits) == {
        "result": None, "id": 1}
    req = {"method": "SUBSCRIBE", "params": ["btcusdt@depth"], "id": 2}
    assert await streams._handle_request(json.dumps(req), client, hub, ctx, limits) == {
        "error": {"code": 2, "msg": "Invalid request: Too many streams; the limit is 2 per "
                                    "connection."}, "id": 2}
    assert len(client.subs) == 2
    await hub.close()


async def test_error_replies_never_quote_a_long_name_or_method_whole() -> None:
    ctx: Any = SimpleNamespace(pairs={})
    hub = streams.StreamHub(StubBus())  # type: ignore[arg-type]
    client = streams._Client(combined=False)
    for req in ({"method": "SUBSCRIBE", "params": ["a" * 100_000], "id": 1},
                {"method": "SUBSCRIBE", "params": [["b"] * 100_000], "id": 1},
                {"method": "X" * 100_000, "id": 1}):
        reply = await streams._handle_request(json.dumps(req), client, hub, ctx)
        assert reply["error"]["code"] == 2 and len(reply["error"]["msg"]) < 150, reply


class RecordingStreams:
    """What the user streams of one replica were told."""

    def __init__(self) -> None:
        self.told: list[tuple[str, Any]] = []

    def close_listen_key(self, listen_key: str) -> None:
        self.told.append(("listenKey", listen_key))

    async def key_revoked(self, api_key: str) -> None:
        self.told.append(("key", api_key))

    async def account_changed(self, account: int) -> None:
        self.told.append(("account", account))


async def test_control_messages_from_other_replicas_reach_the_user_streams_here() -> None:
    ctx: Any = SimpleNamespace()
    unused: Any = None  # neither the channel, the pairs nor the use cases are reached
    controls = Controls(ctx, KeyCache(SecretCipher("k"), unused), unused, unused,
                        lambda _gateways: unused, lambda _events: unused)
    await controls._on_gateway({"kind": "listenKey", "listenKey": "L"})  # none yet: ignored
    recorder = RecordingStreams()
    controls.user_streams = recorder
    for doc in ({"kind": "listenKey", "listenKey": "L"}, {"kind": "key", "apiKey": "K"},
                {"kind": "account", "account": 7}, {"kind": "listenKey", "listenKey": 5},
                {"kind": "account", "account": "7"}):
        await controls._on_gateway(doc)
    assert recorder.told == [("listenKey", "L"), ("key", "K"), ("account", 7)]
