"""The command follower (``Bus.follow_commands``) and the event consumer deliver their
stream exactly once, in order, whatever happens to their consumer: the engine trusts the
follower to see every command, settlement and market data the consumer every batch.

Real NATS throughout. A chaos run once found an engine whose ordered consumer never
resumed after NATS was killed: 59 acknowledged orders sat in its stream, unprocessed,
until the engine was restarted (tests/e2e/test_chaos.py, kill-nats).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tradeplane.adapters.bus import Bus, BusError, StoredMsg, command_stream
from tradeplane.platform.servers import NatsServer

pytestmark = pytest.mark.asyncio


class Delivered:
    """What a follower handed over, in order."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.data: list[bytes] = []

    def __call__(self, seq: int, data: bytes, _headers: object) -> None:
        self.seqs.append(seq)
        self.data.append(data)

    async def reach(self, last: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while (self.seqs[-1] if self.seqs else 0) < last:
            if time.monotonic() > deadline:
                raise AssertionError(f"delivered up to {self.seqs[-1:]} of {last}")
            await asyncio.sleep(0.05)


async def publish(bus: Bus, symbol: str, first: int, last: int) -> None:
    for n in range(first, last + 1):
        await bus.publish_command(symbol, b"cmd %d" % n, f"{symbol}-{n}")


@pytest.fixture
async def own_nats(data_dir: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(data_dir=data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def kill_hard(server: NatsServer) -> None:
    """kill -9, and wait until the process is gone."""
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while server.returncode() is None:
        time.sleep(0.05)


async def connected(url: str, name: str) -> Bus:
    bus = await Bus.connect(url, name=name)
    return bus


async def test_a_follower_whose_consumer_vanished_resumes_at_the_next_sequence(
    nats_url: str,
) -> None:
    symbol = "FOLLOWGONEUSDT"
    bus = await connected(nats_url, "follower-gone")
    try:
        await bus.ensure_symbol(symbol)
        await publish(bus, symbol, 1, 5)
        got = Delivered()
        # The library's own recovery (two missed heartbeats) is pushed out of the test's
        # reach: only the follower's check can bring the delivery back.
        stop: Callable[[], Awaitable[None]] = await bus.follow_commands(
            symbol, 1, got, stall_s=1.0, heartbeat_s=30.0)
        await got.reach(5)
        for info in await bus.js.consumers_info(command_stream(symbol)):
            await bus.js.delete_consumer(command_stream(symbol), info.name)
        await publish(bus, symbol, 6, 10)

        await got.reach(10, timeout=15.0)
        await asyncio.sleep(0.5)
        assert got.seqs == list(range(1, 11))
        assert got.data == [b"cmd %d" % n for n in range(1, 11)]
        await stop()
    finally:
        await bus.close()


async def test_a_follower_resumes_after_nats_is_killed_and_restarted_mid_backlog(
    own_nats: NatsServer,
) -> None:
    symbol = "FOLLOWKILLUSDT"
    writer = await connected(own_nats.url, "follower-writer")
    reader = await connected(own_nats.url, "follower-reader")
    try:
        await writer.ensure_symbol(symbol)
        await publish(writer, symbol, 1, 300)
        got = Delivered()
        stop = await reader.follow_commands(symbol, 1, got)
        for _ in range(3):
            await asyncio.to_thread(kill_hard, own_nats)
            own_nats.start()
            last = got.seqs[-1] if got.seqs else 0
            while True:  # the writer's first publishes may meet a server still starting
                try:
                    await publish(writer, symbol, 301 + last, 350 + last)
                    break
                except BusError:
                    await asyncio.sleep(0.2)
            end = await writer.last_command_seq(symbol)
            await got.reach(end, timeout=30.0)
        await asyncio.sleep(0.5)
        assert got.seqs == list(range(1, len(got.seqs) + 1))
        assert len(set(got.data)) == len(got.data)
        await stop()
    finally:
        await reader.close()
        await writer.close()


async def test_commands_purged_from_the_stream_are_skipped_with_an_error_not_awaited(
    nats_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    symbol = "FOLLOWPURGEUSDT"
    bus = await connected(nats_url, "follower-purge")
    try:
        await bus.ensure_symbol(symbol)
        await publish(bus, symbol, 1, 10)
        await bus.js.purge_stream(command_stream(symbol), seq=8)  # removes 1..7
        got = Delivered()
        stop = await bus.follow_commands(symbol, 6, got, stall_s=1.0)

        await got.reach(10, timeout=15.0)
        assert got.seqs == [8, 9, 10]
        assert any("removed from the stream" in r.getMessage() for r in caplog.records)
        await stop()
    finally:
        await bus.close()


async def test_events_purged_before_a_consumer_read_them_are_skipped_with_an_error(
    own_nats: NatsServer, caplog: pytest.LogCaptureFixture,
) -> None:
    bus = await connected(own_nats.url, "events-purge")
    try:
        await bus.ensure_events()
        last = 0
        for n in range(1, 11):
            last = await bus.publish_events_fenced("PURGEUSDT", b"batch %d" % n, f"p{n}", last)
        await bus.js.purge_stream("EVENTS", seq=8)  # removes 1..7
        got: list[int] = []
        stop = asyncio.Event()

        async def handler(msgs: list[StoredMsg]) -> None:
            got.extend(m.seq for m in msgs)
            if got[-1] >= 10:
                stop.set()

        await asyncio.wait_for(bus.consume_events("purge-test", handler, start_seq=6,
                                                  stop=stop), 15.0)
        assert got == [8, 9, 10]
        assert any("removed from the stream" in r.getMessage() for r in caplog.records)
    finally:
        await bus.close()

