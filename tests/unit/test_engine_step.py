"""The matching engine without servers: ``Engine.step`` and recovery over the in-memory bus
(tests/support/memory_bus.py). The same behaviour against real NATS, with leases, the clock
and crashes, stays in tests/integration (test_engine_clock, test_engine_standby)."""

from __future__ import annotations

import asyncio

import pytest
from tests.support.harness import eventually
from tests.support.memory_bus import MemoryBus

from tradeplane.domain import codec
from tradeplane.domain.book import OrderBook
from tradeplane.domain.model import (
    Command,
    Event,
    NewOrder,
    OrderType,
    Side,
    TimeInForce,
    Trade,
)
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.engine import service
from tradeplane.engine.service import WRITER_HEADER, Engine, NotWriter

RULES = DEMO_PAIRS[0]
SYMBOL = RULES.symbol
TS = 1_700_000_000_000


def _limit(order_id: int, account: int, side: Side, price: int, qty: int) -> NewOrder:
    return NewOrder(order_id, account, side, OrderType.LIMIT, TimeInForce.GTC, price, qty, 0,
                    False, TS + order_id)


#: Three command messages: two asks rest, a bid takes one and part of the other.
MESSAGES: list[list[Command]] = [
    [_limit(1, 7, Side.SELL, 100, 2)],
    [_limit(2, 7, Side.SELL, 101, 3)],
    [_limit(3, 8, Side.BUY, 101, 4)],
]


def _reference(messages: list[list[Command]]) -> tuple[list[Event], OrderBook]:
    """What the book alone gives for the same commands: the engine must add nothing."""
    book = OrderBook(SYMBOL, RULES.notional_per_tick_lot)
    events = [ev for cmds in messages for cmd in cmds for ev in book.process(cmd)]
    return events, book


async def _send(bus: MemoryBus, messages: list[list[Command]], first_id: int = 1) -> None:
    await bus.ensure_symbol(SYMBOL)
    for n, cmds in enumerate(messages, start=first_id):
        await bus.publish_command(SYMBOL, codec.encode(cmds), f"o{n}")


async def _started(bus: MemoryBus, snapshot_every: int = 50_000) -> Engine:
    """An engine recovered and following its log, as ``Engine.run`` starts one (without
    the loop around ``step``)."""
    engine = Engine(bus, RULES, snapshot_every)
    await engine.recover()
    await bus.follow_commands(SYMBOL, engine.seq + 1, engine._on_msg)
    return engine


async def test_pending_commands_are_published_as_one_batch_per_step() -> None:
    bus = MemoryBus()
    await _send(bus, MESSAGES)
    engine = await _started(bus)

    await engine.step()

    events, book = _reference(MESSAGES)
    [batch] = bus.batches(SYMBOL)
    assert (batch.symbol, batch.first_seq, batch.last_seq) == (SYMBOL, 1, 3)
    assert batch.events == events
    assert [(t.price, t.qty) for t in events if type(t) is Trade] == [(100, 2), (101, 2)]
    assert batch.ts == TS + 3  # the last command's time, not the wall clock
    assert engine.book.state_hash() == book.state_hash()
    assert (engine.seq, engine.published_seq) == (3, 3)
    # The batch's message id is the symbol and its first command sequence: a republished
    # batch is de-duplicated by the stream.
    assert bus.event_messages(SYMBOL)[0].headers == {"Nats-Msg-Id": f"{SYMBOL}:1"}

    await engine.step()  # nothing pending: nothing published
    assert len(bus.batches(SYMBOL)) == 1

    await _send(bus, [[_limit(4, 9, Side.BUY, 101, 1)]], first_id=4)
    await engine.step()
    second = bus.batches(SYMBOL)[1]
    assert (second.first_seq, second.last_seq) == (4, 4)
    assert [(t.price, t.qty, t.maker_order) for t in second.events if type(t) is Trade] == [
        (101, 1, 2)
    ]


async def test_a_second_writer_is_fenced_and_stores_nothing() -> None:
    bus = MemoryBus()
    await _send(bus, MESSAGES[:1])
    first = await _started(bus)
    second = await _started(bus)  # both learnt the same (empty) EVENTS position

    await first.step()
    await _send(bus, MESSAGES[1:2], first_id=2)
    # The second's batch (1..2) has the message id of the first's (1..1): the stream
    # checks ids before the fence (as JetStream does) and stores nothing.
    await second.step()
    assert [(b.first_seq, b.last_seq) for b in bus.batches(SYMBOL)] == [(1, 1)]
    await first.step()
    await _send(bus, MESSAGES[2:], first_id=3)

    with pytest.raises(NotWriter):
        await second.step()  # its batch 3..3 would follow batch 1..1: fenced

    await first.step()  # the writer goes on
    assert [(b.first_seq, b.last_seq) for b in bus.batches(SYMBOL)] == [(1, 1), (2, 2), (3, 3)]
    assert first.book.state_hash() == _reference(MESSAGES)[1].state_hash()


async def test_a_snapshot_restores_the_same_book() -> None:
    bus = MemoryBus()
    await _send(bus, MESSAGES)
    engine = await _started(bus)
    await engine.step()
    await engine.snapshot()

    restarted = Engine(bus, RULES)
    await restarted.recover()

    assert restarted.seq == 3
    assert restarted.book.state_hash() == engine.book.state_hash()
    assert restarted.book.order(2) is not None  # the partly filled ask rests on


async def test_a_restart_replays_published_commands_without_publishing_them_again() -> None:
    bus = MemoryBus()
    await _send(bus, MESSAGES)
    engine = await _started(bus, snapshot_every=10**9)
    await engine.step()
    assert bus.snapshots == {}  # crashed before any snapshot: the restart replays it all

    restarted = await _started(bus)
    assert (restarted.seq, restarted.published_seq) == (0, 3)
    await restarted.step()

    assert len(bus.batches(SYMBOL)) == 1
    assert restarted.book.state_hash() == engine.book.state_hash()

    # Then it goes on where the first run stopped, fenced on that run's last batch.
    await _send(bus, [[_limit(4, 9, Side.BUY, 101, 1)]], first_id=4)
    await restarted.step()
    assert [(b.first_seq, b.last_seq) for b in bus.batches(SYMBOL)] == [(1, 3), (4, 4)]


async def test_a_restart_from_a_snapshot_replays_only_what_follows_it() -> None:
    bus = MemoryBus()
    await _send(bus, MESSAGES[:2])
    engine = await _started(bus)
    await engine.step()
    await engine.snapshot()  # at sequence 2
    await _send(bus, MESSAGES[2:], first_id=3)
    await engine.step()  # sequence 3 published, not in the snapshot

    restarted = await _started(bus)
    assert (restarted.seq, restarted.published_seq) == (2, 3)
    await restarted.step()

    assert [(b.first_seq, b.last_seq) for b in bus.batches(SYMBOL)] == [(1, 2), (3, 3)]
    assert restarted.book.state_hash() == _reference(MESSAGES)[1].state_hash()


async def test_an_undecodable_command_message_is_skipped() -> None:
    bus = MemoryBus()
    await bus.ensure_symbol(SYMBOL)
    await bus.publish_command(SYMBOL, b"\xff not a command", "bad")
    await _send(bus, MESSAGES[:1], first_id=2)
    engine = await _started(bus)

    await engine.step()

    [batch] = bus.batches(SYMBOL)
    # The batch starts at the first command that decoded; the bad one is passed over.
    assert (batch.first_seq, batch.last_seq) == (2, 2)
    assert engine.seq == 2
    assert engine.book.order(1) is not None


async def test_run_until_stopped_publishes_and_leaves_a_snapshot() -> None:
    bus = MemoryBus()
    await _send(bus, MESSAGES)
    engine = Engine(bus, RULES)
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))

    async def published() -> bool:
        return bool(bus.batches(SYMBOL))

    await eventually(published, timeout=5, interval=0.001)
    stop.set()
    await asyncio.wait_for(task, 5)

    [batch] = bus.batches(SYMBOL)
    assert (batch.first_seq, batch.last_seq) == (1, 3)
    restarted = Engine(bus, RULES)
    await restarted.recover()
    assert restarted.seq == 3
    assert restarted.book.state_hash() == _reference(MESSAGES)[1].state_hash()


async def test_a_stop_while_the_bus_does_not_answer_ends_without_a_snapshot_soon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found by ``tradeplane chaos`` (sigterm-nats-down): an engine whose NATS was gone
    # waited on its last snapshot until the runner's grace cut it short (10 s).
    monkeypatch.setattr(service, "STOP_SAVE_S", 0.05)
    bus = MemoryBus()
    await _send(bus, MESSAGES)
    engine = Engine(bus, RULES)
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))

    async def published() -> bool:
        return bool(bus.batches(SYMBOL))

    await eventually(published, timeout=5, interval=0.001)
    never = asyncio.Event()

    async def unanswered(_symbol: str, _data: bytes) -> None:
        await never.wait()

    monkeypatch.setattr(bus, "save_snapshot", unanswered)
    stop.set()

    await asyncio.wait_for(task, 1.0)  # returned, not raised: the stop was graceful
    assert bus.snapshots == {}


@pytest.fixture
def fast_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    """Renewals and standby polls every few milliseconds instead of every second."""
    monkeypatch.setattr(service, "LEASE_RENEW_S", 0.005)
    monkeypatch.setattr(service, "STANDBY_POLL_S", 0.005)


async def test_a_standby_applies_only_published_commands_and_takes_over_an_expired_lease(
    fast_lease: None,
) -> None:
    bus = MemoryBus()
    await bus.ensure_leases(service.LEASE_TTL_S)
    assert await bus.lease_acquire(SYMBOL, b"other") is not None
    await _send(bus, MESSAGES[:2])
    writer = await _started(bus)  # the lease holder, driven by hand
    await writer.step()
    await _send(bus, MESSAGES[2:], first_id=3)  # in the log, not yet published

    standby = Engine(bus, RULES, lease=True, holder="standby")
    stop = asyncio.Event()
    task = asyncio.create_task(standby.run(stop))

    async def caught_up() -> bool:
        return standby.seq == 2

    await eventually(caught_up, timeout=5, interval=0.005)
    await asyncio.sleep(0.05)  # several standby polls: command 3 stays unapplied
    assert (standby.seq, len(bus.batches(SYMBOL))) == (2, 1)

    bus.expire_lease(SYMBOL)

    async def took_over() -> bool:
        return len(bus.batches(SYMBOL)) == 2

    await eventually(took_over, timeout=5, interval=0.005)
    stop.set()
    await asyncio.wait_for(task, 5)

    batch = bus.batches(SYMBOL)[1]
    assert (batch.first_seq, batch.last_seq) == (3, 3)
    assert bus.event_messages(SYMBOL)[1].headers == {
        WRITER_HEADER: "standby", "Nats-Msg-Id": f"{SYMBOL}:3"}
    assert standby.book.state_hash() == _reference(MESSAGES)[1].state_hash()
    assert bus.leases == {}  # released on a graceful stop, not left to expire
    assert SYMBOL in bus.snapshots


async def test_a_writer_whose_lease_is_taken_stops_with_not_writer(fast_lease: None) -> None:
    bus = MemoryBus()
    engine = Engine(bus, RULES, lease=True, holder="first")
    task = asyncio.create_task(engine.run(asyncio.Event()))

    async def holding() -> bool:
        return SYMBOL in bus.leases

    await eventually(holding, timeout=5, interval=0.005)
    bus.expire_lease(SYMBOL)
    assert await bus.lease_acquire(SYMBOL, b"second") is not None

    with pytest.raises(NotWriter):
        await asyncio.wait_for(task, 5)
    assert bus.snapshots == {}  # a writer that lost its lease saves nothing
    assert bus.leases[SYMBOL].value == b"second"  # ... and releases nothing


async def test_a_writer_whose_lease_renewal_goes_unanswered_stops_with_not_writer(
    fast_lease: None,
) -> None:
    bus = MemoryBus()
    engine = Engine(bus, RULES, lease=True, holder="first")
    task = asyncio.create_task(engine.run(asyncio.Event()))

    async def holding() -> bool:
        return SYMBOL in bus.leases

    await eventually(holding, timeout=5, interval=0.005)
    bus.down = True  # the renewal is Unavailable: it can no longer be sure it is the writer

    with pytest.raises(NotWriter):
        await asyncio.wait_for(task, 5)
    assert bus.snapshots == {}
