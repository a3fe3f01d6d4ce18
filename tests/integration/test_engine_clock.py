"""The engine's clock against real NATS: GTD orders expire through ``Tick`` commands the
engine appends to its own command log, soon after their good-till, and replaying that log
gives the same book."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from prometheus_client import REGISTRY
from tests.support.harness import eventually

from tradeplane.adapters.bus import EVENTS_STREAM, Bus, command_stream, event_subject
from tradeplane.domain import codec
from tradeplane.domain.book import OrderBook
from tradeplane.domain.model import (
    Cancel,
    Command,
    Done,
    EventBatch,
    NewOrder,
    OrderType,
    Reason,
    Side,
    Status,
    Tick,
    TimeInForce,
)
from tradeplane.domain.pairs import DEMO_PAIRS, PairRules
from tradeplane.engine.service import Engine

pytestmark = pytest.mark.integration


def _rules(base: str) -> PairRules:
    """A pair of its own per test: streams outlive tests within a session."""
    return dataclasses.replace(DEMO_PAIRS[0], base=base)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _gtd(order_id: int, good_till: int, ts: int, price: int = 100) -> NewOrder:
    return NewOrder(order_id, 7, Side.BUY, OrderType.LIMIT, TimeInForce.GTD, price, 1, 0,
                    False, ts, good_till=good_till)


def _gtc(order_id: int, ts: int, price: int = 99) -> NewOrder:
    return NewOrder(order_id, 8, Side.BUY, OrderType.LIMIT, TimeInForce.GTC, price, 1, 0,
                    False, ts)


@dataclass
class Running:
    bus: Bus
    engine: Engine
    stop: asyncio.Event
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def running_engine(nats_url: str, rules: PairRules) -> AsyncIterator[Running]:
    bus = await Bus.connect(nats_url, name=f"test-engine-{rules.symbol}")
    engine = Engine(bus, rules)
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    try:
        yield Running(bus, engine, stop, task)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await bus.close()


async def _send(bus: Bus, symbol: str, cmds: list[Command], msg_id: str) -> int:
    await bus.ensure_symbol(symbol)
    await bus.ensure_events()
    return await bus.publish_command(symbol, codec.encode(cmds), msg_id)


async def _command_log(bus: Bus, symbol: str) -> list[tuple[int, list[Command]]]:
    last = await bus.last_command_seq(symbol)
    out = []
    for seq in range(1, last + 1):
        msg = await bus.js.get_msg(command_stream(symbol), seq)
        out.append((seq, codec.decode_commands(msg.data or b"")))
    return out


async def _batches(bus: Bus, symbol: str) -> list[EventBatch]:
    info = await bus.js.stream_info(EVENTS_STREAM)
    out = []
    for seq in range(max(1, int(info.state.first_seq)), int(info.state.last_seq) + 1):
        msg = await bus.js.get_msg(EVENTS_STREAM, seq)
        if msg.subject == event_subject(symbol):
            out.append(codec.decode_batch(msg.data or b""))
    return out


def _ticks_published(symbol: str) -> float:
    value = REGISTRY.get_sample_value("tradeplane_engine_ticks_total", {"symbol": symbol})
    return value or 0.0


async def test_gtd_order_expires_within_a_second_of_its_good_till(nats_url: str) -> None:
    rules = _rules("CLKA")
    async with running_engine(nats_url, rules) as r:
        now = _now_ms()
        good_till = now + 600
        await _send(r.bus, rules.symbol, [_gtd(1, good_till, now), _gtc(2, now)], "o1")
        expired_at: list[int] = []

        async def expired() -> bool:
            for batch in await _batches(r.bus, rules.symbol):
                for ev in batch.events:
                    if type(ev) is Done and ev.order_id == 1:
                        expired_at.append(_now_ms())
                        assert (ev.status, ev.reason) == (Status.EXPIRED, Reason.GTD_EXPIRED)
                        return True
            return False

        await eventually(expired, timeout=10, interval=0.02)
        assert expired_at[0] <= good_till + 1000
        ticks = [cmd for _, cmds in await _command_log(r.bus, rules.symbol) for cmd in cmds
                 if type(cmd) is Tick]
        assert ticks and all(t.ts >= good_till for t in ticks)
        assert _ticks_published(rules.symbol) == len(ticks)
        assert r.engine.book.order(2) is not None  # the GTC order is untouched
        assert r.engine.book.order(1) is None


async def test_replaying_the_command_log_with_its_ticks_gives_the_same_state_hash(
    nats_url: str,
) -> None:
    rules = _rules("CLKB")
    async with running_engine(nats_url, rules) as r:
        now = _now_ms()
        # Several expiries close together, some orders that outlive the test and one
        # GTD order canceled before its time: the log interleaves them with Ticks.
        cmds: list[Command] = [_gtd(i, now + 300 + 40 * i, now, price=90 + i)
                               for i in range(1, 8)]
        cmds += [_gtd(20, now + 3_600_000, now), _gtc(21, now)]
        await _send(r.bus, rules.symbol, cmds, "o-many")
        await _send(r.bus, rules.symbol, [Cancel(7, 7, now + 1)], "c7")

        async def all_expired() -> bool:
            book = r.engine.book
            return book.order(21) is not None and all(book.order(i) is None for i in range(1, 8))

        await eventually(all_expired, timeout=10, interval=0.02)
        log_ = await _command_log(r.bus, rules.symbol)
        assert any(type(c) is Tick for _, cmds_ in log_ for c in cmds_)

        async def caught_up() -> bool:
            return r.engine.seq == await r.bus.last_command_seq(rules.symbol)

        await eventually(caught_up)
        replayed = OrderBook(rules.symbol, rules.notional_per_tick_lot)
        for _, msg_cmds in await _command_log(r.bus, rules.symbol):
            for cmd in msg_cmds:
                replayed.process(cmd)
        assert replayed.state_hash() == r.engine.book.state_hash()
        assert replayed.order(20) is not None and replayed.order(21) is not None


async def test_an_engine_appends_ticks_only_after_catching_up_with_the_log(
    nats_url: str,
) -> None:
    rules = _rules("CLKC")
    bus = await Bus.connect(nats_url, name="test-writer")
    try:
        # A log written while no engine ran: a GTD order whose time has long passed,
        # followed by more commands. Ticks must come after all of them, not in between.
        long_ago = _now_ms() - 60_000
        await _send(bus, rules.symbol, [_gtd(1, long_ago + 1000, long_ago)], "o1")
        backlog = 0
        for i in range(2, 40):
            backlog = await _send(bus, rules.symbol, [_gtc(i, long_ago + i)], f"o{i}")
    finally:
        await bus.close()
    async with running_engine(nats_url, rules) as r:
        async def expired() -> bool:
            return r.engine.seq > backlog and r.engine.book.order(1) is None

        await eventually(expired, timeout=10, interval=0.02)
        tick_seqs = [seq for seq, cmds in await _command_log(r.bus, rules.symbol)
                     if any(type(c) is Tick for c in cmds)]
        assert tick_seqs and min(tick_seqs) > backlog
        assert r.engine.book.open_orders_count == 38
