"""The market-data service's event handling without servers: ``handle``, ``flush_depth``,
``tick`` and ``start`` over in-memory implementations of its ports (``MarketBus``,
``MarketStore``). The same behaviour against real NATS, PostgreSQL
and Redis stays in tests/integration/test_marketdata.py."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from tradeplane.adapters import bus as bus_adapter
from tradeplane.domain import codec
from tradeplane.domain.errors import Unavailable
from tradeplane.domain.model import SCHEMA_VERSION, EventBatch, Side, Trade
from tradeplane.domain.pairs import DEMO_PAIRS, PairRules
from tradeplane.marketdata.ports import (
    Candle,
    DepthSnapshot,
    EventHandler,
    EventMsg,
    MarketBus,
    MarketStore,
    SymbolWrite,
    market_subject,
)
from tradeplane.marketdata.service import MarketDataService
from tradeplane.marketdata.state import DEPTH_FAST, TRADE
from tradeplane.runner import supervised

RULES = DEMO_PAIRS[0]
SYMBOL = RULES.symbol
TS = 1_700_000_000_000


class Down(Unavailable):
    """What a stand-in raises while ``down`` (the adapters raise their Unavailable kinds)."""


@dataclass(frozen=True)
class Msg:
    seq: int
    data: bytes
    headers: Mapping[str, str] | None = None


@dataclass
class MemoryMarketBus:
    """EVENTS as a list (stream sequences from 1) and the core publishes it received."""

    events: list[Msg] = field(default_factory=list)
    published: list[tuple[str, bytes]] = field(default_factory=list)
    down: bool = False

    def append(self, batch: EventBatch) -> Msg:
        msg = Msg(len(self.events) + 1, codec.encode(batch))
        self.events.append(msg)
        return msg

    async def ensure_events(self) -> None:
        pass

    async def consume_events(
        self, name: str, handler: EventHandler, *, start_seq: int = 1, batch: int = 500,
        stop: asyncio.Event, on_idle: Any = None, linger: float = 0.0,
    ) -> None:
        """Delivers the stored backlog from ``start_seq`` in groups of ``batch``, then
        returns (a unit test drives the steps itself)."""
        backlog = self.events[max(1, start_seq) - 1:]
        for i in range(0, len(backlog), batch):
            await handler(backlog[i:i + batch])

    async def publish(self, subject: str, data: bytes) -> None:
        if self.down:
            raise Down(f"publish on {subject}: memory bus down")
        self.published.append((subject, data))

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        for subject, data in messages:
            await self.publish(subject, data)

    def subjects(self) -> list[str]:
        return [s for s, _ in self.published]


@dataclass
class MemoryStore:
    """The MarketStore port in memory: the pairs, per-symbol resume snapshot and book, the
    stream position, the candles and every write it was given."""

    pairs: dict[str, PairRules] = field(default_factory=lambda: {SYMBOL: RULES})
    stored_position: int | None = None
    states: dict[str, tuple[bytes, DepthSnapshot]] = field(default_factory=dict)
    writes: list[SymbolWrite] = field(default_factory=list)
    candles: dict[tuple[str, str, int], Candle] = field(default_factory=dict)
    resets: int = 0
    down: bool = False

    async def load_pairs(self) -> dict[str, PairRules]:
        return dict(self.pairs)

    async def write(self, writes: Sequence[SymbolWrite], *, position: int | None) -> None:
        if self.down:
            raise Down("redis: memory store down")
        for w in writes:
            for interval, c in w.candles:
                self.candles[(w.symbol, interval, c.open_time)] = c
            if w.state is not None and w.book is not None:
                self.states[w.symbol] = (w.state, w.book)
            self.writes.append(w)
        if position is not None:
            self.stored_position = position

    async def reset(self, symbols: Sequence[str]) -> None:
        self.resets += 1
        self.stored_position = None
        for s in symbols:
            self.states.pop(s, None)

    async def position(self) -> int | None:
        return self.stored_position

    async def load_state(self, symbol: str) -> tuple[bytes, DepthSnapshot] | None:
        return self.states.get(symbol)


def batch(first: int, last: int | None = None, *, trades: Sequence[Trade] = (),
          levels: Sequence[tuple[int, int, int]] = (), ts: int = TS) -> EventBatch:
    return EventBatch(SCHEMA_VERSION, SYMBOL, first, first if last is None else last, ts,
                      list(trades), list(levels))


def trade(tid: int, price: int, qty: int, ts: int = TS) -> Trade:
    return Trade(tid, price, qty, 100 + tid, 1, Side.BUY, 200 + tid, 2, ts)


def service(bus: MemoryMarketBus, cache: MemoryStore) -> MarketDataService:
    return MarketDataService(bus, cache, now_ms=lambda: TS)


def payloads(bus: MemoryMarketBus, stream: str) -> list[dict[str, Any]]:
    subject = market_subject(SYMBOL, stream)
    return [json.loads(d) for s, d in bus.published if s == subject]


async def started(bus: MemoryMarketBus, cache: MemoryStore) -> MarketDataService:
    svc = service(bus, cache)
    await svc.start()
    return svc


# --------------------------------------------------------------------------- tests
def test_stream_payloads_go_to_md_symbol_stream_the_subject_the_gateway_relays() -> None:
    assert market_subject(SYMBOL, DEPTH_FAST) == f"md.{SYMBOL}.{DEPTH_FAST}"
    assert bus_adapter.market_subject is market_subject


async def test_a_cold_start_resets_the_cache_and_starts_from_the_first_event() -> None:
    bus, cache = MemoryMarketBus(), MemoryStore()
    svc = await started(bus, cache)
    assert cache.resets == 1
    assert svc.position == 0 and cache.stored_position == 0
    assert list(svc.states) == [SYMBOL] and SYMBOL in cache.states  # snapshot of the empty state


async def test_a_group_is_applied_stored_with_its_position_and_published() -> None:
    bus, cache = MemoryMarketBus(), MemoryStore()
    svc = service(bus, cache)
    await svc.start()
    m1 = bus.append(batch(1, levels=[(Side.SELL, 100, 5)]))
    m2 = bus.append(batch(2, trades=[trade(1, 100, 2)], levels=[(Side.SELL, 100, 3)]))
    await svc.handle([m1, m2])
    assert svc.position == 2 and cache.stored_position == 2
    assert svc.states[SYMBOL].seq == 2
    assert [p["t"] for p in payloads(bus, TRADE)] == [1]
    assert cache.candles  # the candle the trade opened
    _state, book = cache.states[SYMBOL]
    assert book.last_update_id == 2 and book.asks == [(100, 3)]


async def test_messages_at_or_below_the_position_are_not_applied_twice() -> None:
    bus, cache = MemoryMarketBus(), MemoryStore()
    svc = await started(bus, cache)
    m1 = bus.append(batch(1, trades=[trade(1, 100, 2)]))
    await svc.handle([m1])
    await svc.handle([m1])  # the bus delivers a group again
    assert len(payloads(bus, TRADE)) == 1 and svc.position == 1


async def test_a_restart_resumes_from_the_cache_and_the_stored_position() -> None:
    bus, cache = MemoryMarketBus(), MemoryStore()
    svc = await started(bus, cache)
    await svc.handle([bus.append(batch(1, levels=[(Side.BUY, 90, 4)]))])
    again = await started(bus, cache)
    assert cache.resets == 1  # only the cold start
    assert again.position == 1 and again.states[SYMBOL].seq == 1
    assert again.states[SYMBOL].book_levels() == svc.states[SYMBOL].book_levels()
    # run() consumes from position + 1: nothing is handed to it twice
    handled: list[int] = []

    async def record(msgs: Sequence[EventMsg]) -> None:
        handled.extend(m.seq for m in msgs)

    bus.append(batch(2))
    await bus.consume_events("md", record, start_seq=again.position + 1, stop=asyncio.Event())
    assert handled == [2]


async def test_a_failed_write_is_retried_from_the_cache_and_no_diff_leaves_meanwhile() -> None:
    bus, cache = MemoryMarketBus(), MemoryStore()
    svc = await started(bus, cache)
    await svc.handle([bus.append(batch(1, levels=[(Side.BUY, 90, 4)]))])
    await svc.flush_depth("100ms")
    before = len(bus.published)
    m2 = bus.append(batch(2, trades=[trade(1, 90, 1)], levels=[(Side.BUY, 90, 3)]))
    cache.down = True
    with pytest.raises(Unavailable):
        await svc.handle([m2])
    await svc.flush_depth("100ms")  # memory is ahead of the cache: nothing announced
    assert len(bus.published) == before
    cache.down = False
    await svc.handle([m2])  # the bus retries the same group
    assert svc.position == 2 and cache.stored_position == 2
    assert [p["t"] for p in payloads(bus, TRADE)] == [1]  # applied once, published once
    await svc.flush_depth("100ms")
    diffs = payloads(bus, DEPTH_FAST)
    assert (diffs[-1]["U"], diffs[-1]["u"]) == (2, 2)


async def test_tick_writes_every_state_back_when_the_cache_was_flushed() -> None:
    bus, cache = MemoryMarketBus(), MemoryStore()
    svc = await started(bus, cache)
    await svc.handle([bus.append(batch(1, levels=[(Side.BUY, 90, 4)]))])
    cache.stored_position, cache.states = None, {}  # FLUSHALL under a running service
    await svc.tick()
    assert cache.stored_position == 1
    assert cache.states[SYMBOL][1].last_update_id == 1


async def test_a_timer_step_that_meets_an_unavailable_bus_is_logged_and_run_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus, cache = MemoryMarketBus(), MemoryStore()
    svc = await started(bus, cache)
    await svc.handle([bus.append(batch(1, levels=[(Side.BUY, 90, 4)]))])
    bus.down = True
    stop = asyncio.Event()
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            stop.set()
        await svc.flush_depth("100ms")

    await asyncio.wait_for(svc._every(0.001, step, stop), 5)  # Unavailable does not escape
    assert calls == 3
    assert "market-data timer step failed" in caplog.text


async def test_a_depth_diff_whose_publish_failed_is_carried_by_the_next_flush() -> None:
    bus, cache = MemoryMarketBus(), MemoryStore()
    svc = await started(bus, cache)
    await svc.handle([bus.append(batch(1, levels=[(Side.BUY, 90, 4)]))])
    bus.down = True
    with pytest.raises(Unavailable):
        await svc.flush_depth("100ms")
    bus.down = False
    await svc.handle([bus.append(batch(2, levels=[(Side.SELL, 95, 1)]))])
    await svc.flush_depth("100ms")
    diffs = payloads(bus, DEPTH_FAST)
    assert [(d["U"], d["u"]) for d in diffs] == [(1, 2)]  # no gap: 1 was not lost
    assert diffs[0]["b"] and diffs[0]["a"]


def test_the_stand_ins_implement_the_ports() -> None:
    bus: MarketBus = MemoryMarketBus()
    store: MarketStore = MemoryStore()
    assert bus and store


async def test_a_timer_step_that_fails_unexpectedly_takes_the_service_down_with_a_critical_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    bus, cache = MemoryMarketBus(), MemoryStore()
    svc = MarketDataService(bus, cache, now_ms=lambda: TS, fast_ms=1, slow_ms=1)

    async def broken_tick() -> None:
        raise KeyError("kline interval")  # not Redis or NATS failing: a defect

    monkeypatch.setattr(svc, "tick", broken_tick)
    stop = asyncio.Event()
    with pytest.raises(KeyError, match="kline interval"):
        await asyncio.wait_for(supervised("marketdata", svc.run(stop)), 5)
    assert not stop.is_set(), "it stopped by itself"
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert lines == ["marketdata stopping: a background task failed: KeyError: "
                     "'kline interval'"]
