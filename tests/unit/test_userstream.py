"""The user data stream relay with hand-written stubs: messages of ``user.<account>`` go to
the socket in order, and a reader too slow for them is disconnected, never silently
skipped."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from tests.support.harness import eventually

from tradeplane.gateway.userstream import (
    listen_key,
    resolve_listen_key,
    serve_user_stream,
)

Handler = Callable[[str, bytes], Awaitable[None]]


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
    """A client socket; ``stuck`` makes every send after the first block (it never reads)."""

    def __init__(self, bus: StubBus, *, stuck: bool = False) -> None:
        self.app = SimpleNamespace(state=SimpleNamespace(ctx=SimpleNamespace(bus=bus)))
        self.stuck = stuck
        self.sent: list[str] = []
        self.closed: int | None = None
        self.gone = asyncio.Event()
        self._never = asyncio.Event()

    async def send_text(self, text: str) -> None:
        self.sent.append(text)
        if self.stuck:
            await self._never.wait()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "websocket.disconnect"}

    async def close(self, code: int = 1000) -> None:
        self.closed = code


async def _subscribed(bus: StubBus) -> bool:
    return bus.handler is not None


async def test_messages_are_relayed_in_order_until_the_client_leaves() -> None:
    bus = StubBus()
    ws = StubSocket(bus)
    task = asyncio.create_task(serve_user_stream(ws, 1234))  # type: ignore[arg-type]
    await eventually(lambda: _subscribed(bus))
    assert bus.subject == "user.1234"
    for n in range(3):
        await bus.deliver(b'{"n":%d}' % n)

    async def all_sent() -> bool:
        return ws.sent == ['{"n":0}', '{"n":1}', '{"n":2}']

    await eventually(all_sent)
    ws.gone.set()
    await asyncio.wait_for(task, 5)
    assert bus.unsubscribed and ws.closed is None


async def test_a_reader_too_slow_for_its_updates_is_disconnected() -> None:
    bus = StubBus()
    ws = StubSocket(bus, stuck=True)
    task = asyncio.create_task(serve_user_stream(ws, 7))  # type: ignore[arg-type]
    await eventually(lambda: _subscribed(bus))
    for n in range(10_005):  # the queue holds 10 000, the blocked send one more
        await bus.deliver(b"%d" % n)
    await asyncio.wait_for(task, 5)
    assert ws.closed == 1008 and bus.unsubscribed


def test_a_listen_key_names_its_account_only_with_the_servers_secret() -> None:
    key = listen_key("s3cret", 0x4D2)
    assert key.startswith("4d2x") and resolve_listen_key("s3cret", key) == 0x4D2
    assert resolve_listen_key("other", key) is None
    assert resolve_listen_key("s3cret", "4d3" + key[3:]) is None
    assert resolve_listen_key("s3cret", "not-a-key") is None
    assert resolve_listen_key("s3cret", "zzx" + key[4:]) is None
