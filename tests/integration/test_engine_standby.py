"""Hot standby against real NATS: two engine replicas of one symbol, one writer through a
lease; when the writer dies the standby takes over within seconds, and EVENTS holds every
batch exactly once, in order, each written by the replica that held the lease."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import msgspec
import pytest
from tests.support.harness import eventually

from tradeplane.adapters.bus import (
    EVENTS_STREAM,
    LEASE_BUCKET,
    Bus,
    command_stream,
    event_subject,
)
from tradeplane.domain import codec
from tradeplane.domain.book import OrderBook
from tradeplane.domain.model import EventBatch, NewOrder, OrderType, Rested, Side, TimeInForce
from tradeplane.domain.pairs import DEMO_PAIRS, PairRules
from tradeplane.engine.service import (
    LEASE_RENEW_S,
    LEASE_TTL_S,
    WRITER_HEADER,
    Engine,
    LeaseRecord,
    NotWriter,
)

pytestmark = pytest.mark.integration


def _rules(base: str) -> PairRules:
    """A pair of its own per test: streams and leases outlive tests within a session."""
    return dataclasses.replace(DEMO_PAIRS[0], base=base)


@dataclass
class Replica:
    engine: Engine
    stop: asyncio.Event
    task: asyncio.Task[None]


@dataclass
class Stored:
    batch: EventBatch
    writer: str
    stored_at: float  # unix seconds, the server's clock


class Cluster:
    """Engine replicas of one symbol in this event loop, each with its own connection."""

    def __init__(self, nats_url: str, rules: PairRules) -> None:
        self.nats_url = nats_url
        self.rules = rules
        self.symbol = rules.symbol
        self.replicas: dict[str, Replica] = {}
        self.buses: list[Bus] = []
        self.next_order = 1

    async def start(self, holder: str, *, lease: bool = True) -> Engine:
        bus = await Bus.connect(self.nats_url, name=f"test-{holder}")
        self.buses.append(bus)
        engine = Engine(bus, self.rules, lease=lease, holder=holder)
        stop = asyncio.Event()
        self.replicas[holder] = Replica(engine, stop, asyncio.create_task(engine.run(stop)))
        return engine

    def kill(self, holder: str) -> None:
        """Cancel a replica mid-flight: the in-process stand-in for ``kill -9`` (its lease
        is not released; the standby must wait for it to expire)."""
        self.replicas[holder].task.cancel()

    async def send_orders(self, messages: int) -> int:
        """Append ``messages`` command messages of two resting orders each; returns the
        last command sequence."""
        bus = self.buses[0]
        await bus.ensure_symbol(self.symbol)
        last = 0
        for _ in range(messages):
            cmds = []
            for side, price in ((Side.BUY, 90), (Side.SELL, 110)):
                oid = self.next_order
                self.next_order += 1
                cmds.append(NewOrder(oid, 1 + oid % 3, side, OrderType.LIMIT, TimeInForce.GTC,
                                     price + oid % 5, 1, 0, False, int(time.time() * 1000)))
            last = await bus.publish_command(self.symbol, codec.encode(cmds),
                                             f"o{cmds[0].order_id}")
        return last

    async def stored_batches(self) -> list[Stored]:
        bus = self.buses[0]
        info = await bus.js.stream_info(EVENTS_STREAM)
        out = []
        for seq in range(max(1, int(info.state.first_seq)), int(info.state.last_seq) + 1):
            msg = await bus.js.get_msg(EVENTS_STREAM, seq)
            if msg.subject != event_subject(self.symbol):
                continue
            stored_at = msg.time.timestamp() if isinstance(msg.time, datetime) else 0.0
            out.append(Stored(codec.decode_batch(msg.data or b""),
                              (msg.headers or {}).get(WRITER_HEADER, ""), stored_at))
        return out

    async def replayed_hash(self) -> str:
        bus = self.buses[0]
        book = OrderBook(self.symbol, self.rules.notional_per_tick_lot)
        for seq in range(1, await bus.last_command_seq(self.symbol) + 1):
            msg = await bus.js.get_msg(command_stream(self.symbol), seq)
            for cmd in codec.decode_commands(msg.data or b""):
                book.process(cmd)
        return book.state_hash()

    async def lease_holder(self) -> str:
        kv = await self.buses[0].js.key_value(LEASE_BUCKET)
        entry = await kv.get(self.symbol)
        return msgspec.json.decode(entry.value or b"{}", type=LeaseRecord).holder

    async def close(self) -> None:
        for replica in self.replicas.values():
            replica.stop.set()
        for replica in self.replicas.values():
            with contextlib.suppress(asyncio.CancelledError, NotWriter):
                await asyncio.wait_for(replica.task, 15)
        for bus in self.buses:
            await bus.close()


@contextlib.asynccontextmanager
async def cluster(nats_url: str, rules: PairRules) -> AsyncIterator[Cluster]:
    c = Cluster(nats_url, rules)
    try:
        yield c
    finally:
        await c.close()


def _assert_exactly_once_in_order(stored: list[Stored], last_seq: int, orders: int) -> None:
    seqs = [(s.batch.first_seq, s.batch.last_seq) for s in stored]
    assert seqs[0][0] == 1 and seqs[-1][1] == last_seq, seqs
    for (_, prev_last), (first, _) in itertools.pairwise(seqs):
        assert first == prev_last + 1, seqs  # no gap, no overlap
    rested = [ev.order_id for s in stored for ev in s.batch.events if type(ev) is Rested]
    assert sorted(rested) == list(range(1, orders + 1))  # every order's event, once


async def test_standby_takes_over_after_the_writer_dies_without_gap_or_duplicate(
    nats_url: str,
) -> None:
    async with cluster(nats_url, _rules("SBYA")) as c:
        leader = await c.start("leader")
        await eventually(lambda: _holds(c, "leader"))
        standby = await c.start("standby")
        before = await c.send_orders(20)

        async def standby_current() -> bool:
            return leader.published_seq == before and standby.seq == before

        await eventually(standby_current)  # the standby keeps its book current, read-only
        assert standby.book.state_hash() == leader.book.state_hash()
        assert await c.lease_holder() == "leader"

        c.kill("leader")
        killed_at = time.time()
        after = await c.send_orders(20)

        async def taken_over() -> bool:
            return standby.published_seq == after

        await eventually(taken_over, timeout=LEASE_TTL_S + 10)
        took = time.time() - killed_at
        assert took < LEASE_TTL_S + 5, f"takeover took {took:.1f}s"
        assert await c.lease_holder() == "standby"

        stored = await c.stored_batches()
        _assert_exactly_once_in_order(stored, after, c.next_order - 1)
        writers = [s.writer for s in stored]
        switch = writers.index("standby")
        assert set(writers[:switch]) == {"leader"} and set(writers[switch:]) == {"standby"}
        # Nothing from the standby while the leader held the lease: its first batch was
        # stored after the leader died, and not before the leader's last renewal (at most
        # a renewal interval before the kill) could expire.
        assert stored[switch].stored_at >= killed_at + LEASE_TTL_S - LEASE_RENEW_S - 0.5
        assert standby.book.state_hash() == await c.replayed_hash()


async def test_a_graceful_stop_hands_the_lease_over_at_once(nats_url: str) -> None:
    async with cluster(nats_url, _rules("SBYD")) as c:
        leader = await c.start("leader")
        await eventually(lambda: _holds(c, "leader"))
        standby = await c.start("standby")
        before = await c.send_orders(5)
        await eventually(lambda: _true(standby.seq == before))

        stopped_at = time.monotonic()
        c.replicas["leader"].stop.set()
        await asyncio.wait_for(c.replicas["leader"].task, 15)
        after = await c.send_orders(5)
        await eventually(lambda: _true(standby.published_seq == after))
        # Released, not expired: well within the lease's TTL.
        assert time.monotonic() - stopped_at < LEASE_TTL_S - 1.0
        assert leader.published_seq == before
        _assert_exactly_once_in_order(await c.stored_batches(), after, c.next_order - 1)


async def test_a_writer_whose_lease_renewal_is_refused_stops_and_exits(nats_url: str) -> None:
    async with cluster(nats_url, _rules("SBYB")) as c:
        leader = await c.start("leader")
        await eventually(lambda: _holds(c, "leader"))
        first = await c.send_orders(3)
        await eventually(lambda: _true(leader.published_seq == first))
        # Someone else now owns the key: the writer's next compare-and-set fails.
        kv = await c.buses[0].js.key_value(LEASE_BUCKET)
        await kv.put(c.symbol, msgspec.json.encode(LeaseRecord("intruder", 0)))

        task = c.replicas["leader"].task
        with pytest.raises(NotWriter):
            await asyncio.wait_for(task, 10)
        later = await c.send_orders(3)
        stored = await c.stored_batches()
        assert stored[-1].batch.last_seq == first < later  # it published nothing more
        assert {s.writer for s in stored} == {"leader"}


async def test_a_second_writer_is_refused_by_the_event_stream(nats_url: str) -> None:
    async with cluster(nats_url, _rules("SBYC")) as c:
        # Two engines without leases (a misconfiguration): the stream's expected-last-
        # sequence check lets exactly one of them append each batch.
        a = await c.start("a", lease=False)
        b = await c.start("b", lease=False)
        last = 0
        for _ in range(5):
            last = await c.send_orders(4)

        async def one_writer_left_and_done() -> bool:
            tasks = [r.task for r in c.replicas.values()]
            return sum(t.done() for t in tasks) == 1 and max(a.published_seq,
                                                              b.published_seq) == last

        await eventually(one_writer_left_and_done)
        failed = next(r.task for r in c.replicas.values() if r.task.done())
        assert isinstance(failed.exception(), NotWriter)
        _assert_exactly_once_in_order(await c.stored_batches(), last, c.next_order - 1)


async def _holds(c: Cluster, holder: str) -> bool:
    try:
        return await c.lease_holder() == holder
    except Exception:  # bucket or key not there yet
        return False


async def _true(value: bool) -> bool:
    return value
