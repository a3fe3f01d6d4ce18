"""nats-server on a full disk, for real: a stream that failed a write stays broken after
the space is back (nats-server never clears it: every publish to it goes unanswered), its
health names it, and the supervisor's liveness check restarts the server, which mends it
with every message acknowledged before the disk filled still there. And a publish that the
broken server took, never to answer, is given up soon after NATS is back, not at the end
of its timeout.

The disk is a small tmpfs mounted over the server's data folder, so this needs root (as CI
runs); elsewhere it is skipped, saying so."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout

from tradeplane.adapters.bus import RECONNECT_GRACE_S, Bus, BusUnavailable
from tradeplane.chaos.disk import SmallFilesystem, can_mount
from tradeplane.platform.servers import NatsServer
from tradeplane.platform.supervisor import RestartPolicy, Supervisor

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not can_mount(), reason="mounts a tmpfs for the store: needs root"),
]


async def _publish(url: str, count: int, timeout: float = 2.0) -> list[int | None]:
    """Publish ``count`` messages of 2 KiB (pages the full disk has no room for); each
    one's stream sequence, or None when JetStream did not answer."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="DISK", subjects=["disk.>"])
        out: list[int | None] = []
        for _ in range(count):
            try:
                out.append((await js.publish("disk.x", b"x" * 2048, timeout=timeout)).seq)
            except (NatsTimeout, TimeoutError):
                out.append(None)
        return out
    finally:
        await nc.close()


async def _stored(url: str) -> int:
    nc = await nats.connect(url)
    try:
        return int((await nc.jetstream().stream_info("DISK")).state.messages)
    finally:
        await nc.close()


def test_a_stream_broken_by_a_full_disk_is_named_and_mended_by_the_liveness_restart(
    tmp_path: Path,
) -> None:
    disk = SmallFilesystem(tmp_path / "nats", size_mb=32)
    disk.mount()
    server = NatsServer(disk.path)
    supervisor = Supervisor(tmp_path / "logs", RestartPolicy(first_delay=0),
                            report=lambda _line: None)
    try:
        supervisor.adopt(server)
        supervisor.add_liveness(server.name, server.store_error, every=0.2)
        supervisor.running()
        before = asyncio.run(_publish(server.url, 5))
        assert None not in before
        assert server.store_error() is None

        disk.fill()
        during = asyncio.run(_publish(server.url, 3, timeout=1.0))
        assert during[-1] is None, "a write on a full disk was acknowledged"
        disk.free()
        assert asyncio.run(_publish(server.url, 1, timeout=1.0)) == [None], (
            "the stream mended itself: the liveness restart is no longer needed")
        broken = server.store_error()
        assert broken is not None and "DISK" in broken and "no space left" in broken

        first = server.pid
        deadline = time.monotonic() + 30
        while server.pid in (None, first):
            assert time.monotonic() < deadline, "the broken server was not restarted"
            supervisor.poll()
            time.sleep(0.05)
        assert server.store_error() is None
        after = asyncio.run(_publish(server.url, 2))
        assert None not in after
        acked = len(before) + sum(s is not None for s in during)
        assert asyncio.run(_stored(server.url)) == acked + 2
    finally:
        supervisor.stop()
        disk.unmount()


def test_an_event_publish_the_lost_server_took_is_given_up_soon_after_nats_is_back(
    tmp_path: Path,
) -> None:
    disk = SmallFilesystem(tmp_path / "nats", size_mb=32)
    disk.mount()
    server = NatsServer(disk.path)
    server.start()

    async def scenario() -> tuple[float, float]:
        bus = await Bus.connect(server.url, name="test-disk-full")
        try:
            await bus.ensure_events()
            await bus.publish_events("BTCUSDT", b"x" * 100, "before")
            disk.fill()
            started = time.monotonic()
            pending = asyncio.ensure_future(
                bus.publish_events("BTCUSDT", b"x" * 8192, "during"))
            await asyncio.sleep(1.0)
            assert not pending.done(), "a write on a full disk was answered"
            disk.free()
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)
            back = time.monotonic()
            with pytest.raises(BusUnavailable):
                await pending
            return back - started, time.monotonic() - back
        finally:
            await bus.close()

    try:
        before, after = asyncio.run(scenario())
    finally:
        server.stop()
        disk.unmount()
    # The reconnection (0.5 s apart) and the grace; not the rest of the 10 s timeout.
    assert after < RECONNECT_GRACE_S + 1.5, (before, after)
    assert before + after < 9.0, (before, after)
