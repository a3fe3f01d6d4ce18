"""Runs one symbol's book against its JetStream command log.

Crash-only: the engine's position is (latest snapshot, last published event batch). On
start it restores the snapshot, re-processes commands the previous run already published
events for *without publishing*, and continues from there, so the event stream never holds
a batch twice and replay after any crash gives the same book.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram

from tradeplane import msgtrace
from tradeplane.adapters.bus import Bus, Headers
from tradeplane.domain import codec
from tradeplane.domain.book import BookSnapshot, OrderBook
from tradeplane.domain.model import SCHEMA_VERSION, Event, EventBatch, SetTrading, TradingState
from tradeplane.domain.pairs import TRADING_STATES, PairRules

log = logging.getLogger("tradeplane.engine")
tracer = trace.get_tracer("tradeplane.engine")

COMMANDS = Counter("tradeplane_engine_commands_total", "Commands processed", ["symbol"])
BATCHES = Counter("tradeplane_engine_batches_total", "Event batches published", ["symbol"])
BATCH_SECONDS = Histogram(
    "tradeplane_engine_batch_seconds", "Match + publish time of one batch", ["symbol"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
LAST_SEQ = Gauge("tradeplane_engine_last_sequence", "Last command sequence applied", ["symbol"])
OPEN_ORDERS = Gauge("tradeplane_engine_open_orders", "Orders resting on the book", ["symbol"])
TRADING_STATE = Gauge(
    "tradeplane_engine_trading_state",
    "Trading state of the book: 1 enabled, 2 halted, 3 cancel-only", ["symbol"],
)

MAX_BATCH = 2000
MAX_COMMANDS = 20_000
LINGER_S = 0.001
LINGER_BELOW = 64


class EngineSnapshot(msgspec.Struct, frozen=True):
    v: int
    symbol: str
    seq: int
    book: BookSnapshot


class Engine:
    def __init__(self, bus: Bus, rules: PairRules, snapshot_every: int = 50_000,
                 *, enforce_trading: bool = False) -> None:
        self.bus = bus
        self.rules = rules
        self.symbol = rules.symbol
        self.snapshot_every = snapshot_every
        self.book = OrderBook(self.symbol, rules.notional_per_tick_lot)
        self.seq = 0  # last command sequence applied to the book
        self.published_seq = 0  # last command sequence covered by a published batch
        self._pending: list[tuple[int, bytes, Headers]] = []
        self._wake = asyncio.Event()
        self._since_snapshot = 0
        # With a rules file (the operator's ConfigMap) the rules' trading state is the
        # desired one: after recovery the engine appends a SetTrading to its own log when
        # the book disagrees, so the change is replayed like any other command.
        self.enforce_trading = enforce_trading

    async def recover(self) -> None:
        """Restore the latest snapshot and learn how far the event stream already goes."""
        await self.bus.ensure_symbol(self.symbol)
        await self.bus.ensure_events()
        raw = await self.bus.load_snapshot(self.symbol)
        if raw:
            snap = codec.decode_as(raw, EngineSnapshot)
            self.book = OrderBook.restore(snap.book)
            self.seq = snap.seq
        last = await self.bus.last_event_batch(self.symbol)
        if last:
            self.published_seq = codec.decode_batch(last).last_seq
        log.info(
            "engine recovered",
            extra={"fields": {"symbol": self.symbol, "snapshot_seq": self.seq,
                              "published_seq": self.published_seq}},
        )

    def _on_msg(self, seq: int, data: bytes, headers: Headers = None) -> None:
        self._pending.append((seq, data, headers))
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        await self.recover()
        unsubscribe = await self.bus.follow_commands(
            self.symbol, self.seq + 1, self._on_msg
        )
        if self.enforce_trading:
            await self._enforce_trading_state()
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                if not self._pending:
                    self._wake.clear()
                    waiter = asyncio.ensure_future(self._wake.wait())
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    continue
                if len(self._pending) < LINGER_BELOW:
                    # Let a few more commands arrive: one event batch (one fsynced publish,
                    # one pull downstream) then covers them all.
                    await asyncio.sleep(LINGER_S)
                await self.step()
        finally:
            stopper.cancel()
            await unsubscribe()
        # A graceful stop leaves a fresh snapshot: the next start replays nothing.
        await self.snapshot()

    async def _enforce_trading_state(self) -> None:
        desired = TradingState(TRADING_STATES[self.rules.trading])
        last = await self.bus.last_command_seq(self.symbol)
        # Decide on the state the whole log leads to, not on a half-replayed book.
        while self.seq < last:
            if self._pending:
                await self.step()
            else:
                await asyncio.sleep(0.01)
        if self.book.trading != desired:
            cmd = SetTrading(desired, int(time.time() * 1000))
            await self.bus.publish_command(
                self.symbol, codec.encode([cmd]), f"t{self.symbol}:{last}:{int(desired)}"
            )
            log.info("trading state set", extra={"fields": {"symbol": self.symbol,
                                                             "state": self.rules.trading}})

    async def step(self) -> None:
        """Process pending command messages (up to MAX_BATCH messages or MAX_COMMANDS
        commands, whichever comes first) and publish their events as one batch."""
        batch = self._pending[:MAX_BATCH]
        taken = 0
        started = time.perf_counter()
        events: list[Event] = []
        first = 0
        ts = 0
        process = self.book.process
        ncmds = 0
        # One span per traced command message (see msgtrace); untraced ones cost a lookup.
        spans: list[trace.Span] = []
        traceparent = msgtrace.TRACEPARENT
        for seq, data, headers in batch:
            if ncmds >= MAX_COMMANDS:
                break  # keeps the event batch well under the bus's message size limit
            taken += 1
            if seq <= self.seq:
                continue  # the ordered consumer restarted and redelivered
            replay = seq <= self.published_seq  # the previous run already published these
            token = None
            if headers and traceparent in headers and not replay:
                span = self._span(seq, headers)
                spans.append(span)
                # Current while the message is processed: its log lines carry its trace id.
                token = otel_context.attach(trace.set_span_in_context(span))
            try:
                try:
                    cmds = codec.decode_commands(data)
                except codec.DecodeError:
                    log.error("undecodable command message skipped",
                              extra={"fields": {"seq": seq}})
                    self.seq = seq
                    continue
                if not replay and not first:
                    first = seq
                ncmds += len(cmds)
                for cmd in cmds:
                    out = process(cmd)
                    ts = cmd.ts
                    if not replay:
                        events.extend(out)
                self.seq = seq
            finally:
                if token is not None:
                    otel_context.detach(token)
        del self._pending[:taken]
        levels = self.book.take_dirty_levels()
        self._since_snapshot += ncmds
        COMMANDS.labels(self.symbol).inc(ncmds)
        try:
            if first:
                eb = EventBatch(SCHEMA_VERSION, self.symbol, first, self.seq, ts, events,
                                levels)
                headers_out = (msgtrace.outgoing([sp.get_span_context() for sp in spans])
                               if spans else None)
                await self.bus.publish_events(
                    self.symbol, codec.encode(eb), f"{self.symbol}:{first}", headers_out
                )
                self.published_seq = self.seq
                BATCHES.labels(self.symbol).inc()
        except Exception as exc:
            for sp in spans:
                sp.record_exception(exc)
                sp.set_status(trace.StatusCode.ERROR)
            raise
        finally:
            # The spans cover matching and the durable publish of the message's events.
            for sp in spans:
                sp.end()
        LAST_SEQ.labels(self.symbol).set(self.seq)
        OPEN_ORDERS.labels(self.symbol).set(self.book.open_orders_count)
        TRADING_STATE.labels(self.symbol).set(int(self.book.trading))
        BATCH_SECONDS.labels(self.symbol).observe(time.perf_counter() - started)
        if self._since_snapshot >= self.snapshot_every:
            await self.snapshot()

    def _span(self, seq: int, headers: Headers) -> trace.Span:
        parent, links = msgtrace.incoming((headers,))
        return tracer.start_span(
            "engine.process", context=parent, links=links, kind=trace.SpanKind.CONSUMER,
            attributes={"symbol": self.symbol, "messaging.system": "nats",
                        "messaging.message.sequence": seq},
        )

    async def snapshot(self) -> None:
        snap = EngineSnapshot(SCHEMA_VERSION, self.symbol, self.seq, self.book.snapshot())
        await self.bus.save_snapshot(self.symbol, codec.encode(snap))
        self._since_snapshot = 0
        log.info("snapshot saved", extra={"fields": {"symbol": self.symbol, "seq": self.seq}})
