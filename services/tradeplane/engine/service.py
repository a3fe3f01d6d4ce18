"""Runs one symbol's book against its JetStream command log.

Crash-only: the engine's position is (latest snapshot, last published event batch). On
start it restores the snapshot, re-processes commands the previous run already published
events for *without publishing*, and continues from there, so the event stream never holds
a batch twice and replay after any crash gives the same book.

Every event batch is appended with the EVENTS sequence of the symbol's previous batch as
the expected last one (``Bus.publish_events_fenced``): a second writer for the symbol,
however it came about, is refused by the stream instead of duplicating batches.

The clock: GTD orders expire only through ``Tick`` commands, which the engine appends to
its own command log when the book's earliest good-till comes (wall clock), so a replay of
the log expires exactly the same orders at the same place.

Hot standby (``lease=True``): several replicas may run; the one holding the symbol's lease
(``ENGINE_LEASES`` bucket, renewed every second, gone 3 s after the last renewal) writes,
the others follow the log read-only, applying only what the writer has already published,
and take the lease over when it expires. A writer that cannot renew stops publishing at
once and exits (``NotWriter``) to restart as a standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram

from tradeplane import msgtrace
from tradeplane.domain import books, codec
from tradeplane.domain.book import DEFAULT_RECENT_LIMIT, BookSnapshot, OrderBook
from tradeplane.domain.errors import Conflict, Unavailable
from tradeplane.domain.model import (
    SCHEMA_VERSION,
    Event,
    EventBatch,
    Tick,
    TradingState,
)
from tradeplane.domain.pairs import TRADING_STATES, PairRules
from tradeplane.usecases.pairs import trading_message

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
TICKS = Counter(
    "tradeplane_engine_ticks_total", "Clock ticks (Tick commands) appended to the command log",
    ["symbol"],
)
WRITER = Gauge(
    "tradeplane_engine_writer",
    "1 while this engine writes the symbol's events, 0 while it is a standby", ["symbol"],
)
TRADING_STATE = Gauge(
    "tradeplane_engine_trading_state",
    "Trading state of the book: 1 enabled, 2 halted, 3 cancel-only", ["symbol"],
)

#: Event batch header naming the engine that wrote it (with ``lease``).
WRITER_HEADER = "Tp-Writer"
MAX_BATCH = 2000
MAX_COMMANDS = 20_000
LINGER_S = 0.001
LINGER_BELOW = 64
#: Least time between two clock ticks: a burst of expiries costs one Tick per interval.
TICK_MIN_INTERVAL_MS = 50
#: The lease bucket's TTL: a lease not renewed for this long is gone (server clock).
LEASE_TTL_S = 3.0
LEASE_RENEW_S = 1.0
#: Seconds a graceful stop gives the bus for the last snapshot and the lease's release.
STOP_SAVE_S = 3.0
#: A writer trusts its lease until this long after it *sent* its last successful renewal:
#: strictly before the server can expire it (LEASE_TTL_S after it stored that renewal).
LEASE_TRUST_S = LEASE_TTL_S - LEASE_RENEW_S
#: How often a standby tries the lease and catches up with what the writer published.
STANDBY_POLL_S = 0.25


#: Message headers as the bus gives them (None when a message has none).
Headers = Mapping[str, str] | None


class StoredMsg(Protocol):
    """One stored message read back from the bus: its stream sequence and payload."""

    @property
    def seq(self) -> int: ...

    @property
    def data(self) -> bytes: ...


class EngineBus(Protocol):
    """What the engine needs of the bus (``tradeplane.adapters.bus.Bus`` is the real one,
    fitting structurally; ``tests/support/memory_bus.py`` an in-memory one for unit tests).

    The symbol's command log (append with de-duplication by message id, follow in order
    from a sequence, its last sequence), its event batches in EVENTS (appended fenced on
    the symbol's previous batch, the last one read back), one snapshot per symbol, and the
    hot-standby lease (compare-and-set, expiring). Errors are the domain's causes (the
    bus's own classes under them): ``Unavailable`` when the bus did not answer or store;
    ``Conflict`` from ``publish_events_fenced`` when another writer appended first (the
    bus's ``Fenced``) and from ``lease_renew`` when the lease moved on (``LeaseTaken``).
    """

    async def ensure_symbol(self, symbol: str) -> None: ...

    async def ensure_events(self) -> None: ...

    async def publish_command(
        self, symbol: str, data: bytes, msg_id: str, headers: Headers = None
    ) -> int: ...

    async def follow_commands(
        self, symbol: str, start_seq: int, on_msg: Callable[[int, bytes, Headers], None]
    ) -> Callable[[], Awaitable[None]]: ...

    async def last_command_seq(self, symbol: str) -> int: ...

    async def publish_events_fenced(
        self, symbol: str, data: bytes, msg_id: str, expect_last: int, headers: Headers = None
    ) -> int: ...

    async def last_event(self, symbol: str) -> StoredMsg | None: ...

    async def save_snapshot(self, symbol: str, data: bytes) -> None: ...

    async def load_snapshot(self, symbol: str) -> bytes | None: ...

    async def ensure_leases(self, ttl_s: float) -> None: ...

    async def lease_acquire(self, symbol: str, value: bytes) -> int | None: ...

    async def lease_renew(self, symbol: str, value: bytes, revision: int) -> int: ...

    async def lease_release(self, symbol: str, revision: int) -> None: ...


class NotWriter(Conflict):
    """This engine is not, or no longer surely, the symbol's only writer: its lease renewal
    was refused or unanswered, or another engine's batch is in EVENTS. Its book may be
    ahead of the events, so it must not go on: the process exits (status 1), and restarts
    (as a standby, with a lease) from the snapshot and the log."""


class LeaseRecord(msgspec.Struct, frozen=True):
    """The value of a lease (JSON, for people reading the bucket): the bucket's TTL, not
    ``expires_ms``, is what ends it."""

    holder: str
    expires_ms: int


class _BatchHead(msgspec.Struct):
    """The part of an encoded ``EventBatch`` a standby needs (the events are skipped)."""

    first_seq: int
    last_seq: int


def _check_helpers(helpers: list[asyncio.Future[None]]) -> None:
    """Raise the error of a helper task that died. The lease renewal ends normally once
    the lease is lost (the loop then raises NotWriter); the clock never ends by itself.

    Raises:
        Exception: the helper's own error.
    """
    for helper in helpers:
        if helper.done() and not helper.cancelled():
            helper.result()


class EngineSnapshot(msgspec.Struct, frozen=True):
    v: int
    symbol: str
    seq: int
    book: BookSnapshot


class Engine:
    """One symbol's matching engine.

    ``lease=True`` makes it one of several replicas (hot standby, see the module
    docstring); ``holder`` names it in the lease (default: host, pid and a random tag).
    ``recent_limit``: how many finished order ids a new book remembers (a book restored
    from a snapshot keeps the snapshot's). ``book`` chooses the order book implementation
    (``domain.books.select``): the compiled one when built, unless "python"; which one
    runs, and why when it is the fallback, is logged here.

    Raises:
        RuntimeError: ``book`` is "compiled" and the compiled book is not built.
    """

    def __init__(self, bus: EngineBus, rules: PairRules, snapshot_every: int = 50_000,
                 *, enforce_trading: bool = False, lease: bool = False,
                 holder: str = "", recent_limit: int = DEFAULT_RECENT_LIMIT,
                 book: books.BookChoice = "auto") -> None:
        self.bus = bus
        self.rules = rules
        self.symbol = rules.symbol
        self.snapshot_every = snapshot_every
        self.book_class = books.select(book)
        impl = books.implementation(self.book_class)
        if impl == "compiled":
            log.info("order book: compiled", extra={"fields": {"symbol": self.symbol}})
        elif book == "python":
            log.info("order book: pure Python (TRADEPLANE_BOOK=python)",
                     extra={"fields": {"symbol": self.symbol}})
        else:
            log.warning("order book: pure Python, the fallback: %s", books.UNAVAILABLE,
                        extra={"fields": {"symbol": self.symbol}})
        self.book: OrderBook = self.book_class(self.symbol, rules.notional_per_tick_lot,
                                               recent_limit=recent_limit)
        self.seq = 0  # last command sequence applied to the book
        self.published_seq = 0  # last command sequence covered by a published batch
        self._pending: list[tuple[int, bytes, Headers]] = []
        self._wake = asyncio.Event()
        self._since_snapshot = 0
        # With a rules file (the operator's ConfigMap) the rules' trading state is the
        # desired one: after recovery the engine appends a SetTrading to its own log when
        # the book disagrees, so the change is replayed like any other command.
        self.enforce_trading = enforce_trading
        # The clock (GTD expiry): a Tick is appended to the log when the book's earliest
        # good-till is due. Only once caught up (``_live_from``): a replaying engine must
        # not add to the log what the previous run may already have added.
        self._live_from = 0
        self._tick_due: int | None = None  # wall-clock ms of the next Tick to append
        self._tick_seq = 0  # stream sequence of the last Tick appended
        self._tick_inflight = False
        self._last_tick_ms = 0
        self._clock_wake = asyncio.Event()
        self._evt_seq = 0  # EVENTS stream sequence of the symbol's last batch
        self.lease = lease
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._lease_rev = 0  # revision of the lease this engine holds (0: none)
        self._lease_until: float | None = None  # monotonic; None: no lease in use
        self._lease_lost: BaseException | None = None

    async def recover(self) -> None:
        """Restore the latest snapshot and learn how far the event stream already goes."""
        await self.bus.ensure_symbol(self.symbol)
        await self.bus.ensure_events()
        raw = await self.bus.load_snapshot(self.symbol)
        if raw:
            snap = codec.decode_as(raw, EngineSnapshot)
            self.book = self.book_class.restore(snap.book)
            self.seq = snap.seq
        await self._learn_published()
        self._live_from = max(self.published_seq, await self.bus.last_command_seq(self.symbol))
        log.info(
            "engine recovered",
            extra={"fields": {"symbol": self.symbol, "snapshot_seq": self.seq,
                              "published_seq": self.published_seq}},
        )

    async def _learn_published(self) -> None:
        """Read the symbol's last event batch: how far the published events go, and the
        EVENTS sequence the next batch must follow."""
        last = await self.bus.last_event(self.symbol)
        if last is not None:
            self.published_seq = codec.decode_as(last.data, _BatchHead).last_seq
            self._evt_seq = last.seq

    def _on_msg(self, seq: int, data: bytes, headers: Headers = None) -> None:
        self._pending.append((seq, data, headers))
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Recover, then (with ``lease``, once holding it) process the log until ``stop``.

        Its helper tasks (the clock, the lease renewal) are supervised: one that dies of
        an error it does not handle itself ends the run with that error.

        Raises:
            NotWriter: with ``lease``, this engine stopped being the writer.
            Unavailable: the bus failed (crash-only: restart and recover).
        """
        await self.recover()
        unsubscribe = await self.bus.follow_commands(
            self.symbol, self.seq + 1, self._on_msg
        )
        stopper = asyncio.ensure_future(stop.wait())
        helpers: list[asyncio.Future[None]] = []
        try:
            if self.lease:
                if not await self._standby(stop):
                    return  # stopped while standby: the writer owns snapshots
                helpers.append(asyncio.ensure_future(self._renew_lease()))
            WRITER.labels(self.symbol).set(1)
            if self.enforce_trading:
                await self._enforce_trading_state()
            helpers.append(asyncio.ensure_future(self._clock()))
            self._arm_clock()
            while not stop.is_set():
                _check_helpers(helpers)
                if self._lease_lost is not None:
                    raise NotWriter(f"{self.symbol}: lease lost ({self._lease_lost})")
                if not self._pending:
                    self._wake.clear()
                    waiter = asyncio.ensure_future(self._wake.wait())
                    watched: set[asyncio.Future[Any]] = {waiter, stopper, *helpers}
                    await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    continue
                if len(self._pending) < LINGER_BELOW:
                    # Let a few more commands arrive: one event batch (one fsynced publish,
                    # one pull downstream) then covers them all.
                    await asyncio.sleep(LINGER_S)
                await self.step()
        finally:
            stopper.cancel()
            for helper in helpers:
                helper.cancel()
            WRITER.labels(self.symbol).set(0)
            await unsubscribe()
        if self._lease_lost is not None:  # stopped just as the lease went: not ours to save
            raise NotWriter(f"{self.symbol}: lease lost ({self._lease_lost})")
        # A graceful stop leaves a fresh snapshot (the next start replays nothing) and hands
        # the lease over now rather than after its TTL; both are a courtesy, so a bus that
        # does not take them soon is not waited for (a stop must not wait on NATS).
        try:
            await asyncio.wait_for(self._leave_cleanly(), STOP_SAVE_S)
        except (TimeoutError, Unavailable) as exc:
            log.warning("stopped without a last snapshot (%s); the next start replays from "
                        "the previous one", exc or f"no answer within {STOP_SAVE_S:g} s",
                        extra={"fields": {"symbol": self.symbol, "seq": self.seq}})

    async def _leave_cleanly(self) -> None:
        await self.snapshot()
        if self._lease_rev:
            await self.bus.lease_release(self.symbol, self._lease_rev)
            self._lease_rev = 0

    # ------------------------------------------------------------------ hot standby
    async def _standby(self, stop: asyncio.Event) -> bool:
        """Follow the log read-only until this engine holds the symbol's lease; False
        when stopped first.

        Raises:
            Unavailable: the bus failed.
        """
        await self.bus.ensure_leases(LEASE_TTL_S)
        WRITER.labels(self.symbol).set(0)
        log.info("engine standing by", extra={"fields": {"symbol": self.symbol,
                                                          "holder": self.holder}})
        while True:
            sent = time.monotonic()
            rev = await self.bus.lease_acquire(self.symbol, self._lease_record())
            if rev is not None:
                break
            await self._follow_published()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STANDBY_POLL_S)
            if stop.is_set():
                return False
        self._lease_rev = rev
        self._lease_until = sent + LEASE_TRUST_S
        # Read after taking the lease: the previous writer's last batch. Everything up to
        # it is replayed without publishing (step), and the first batch follows it.
        await self._learn_published()
        self._live_from = max(self.published_seq, await self.bus.last_command_seq(self.symbol))
        log.info("engine took the lease", extra={"fields": {
            "symbol": self.symbol, "holder": self.holder, "published_seq": self.published_seq,
            "seq": self.seq}})
        return True

    async def _follow_published(self) -> None:
        """Standby: apply the pending commands the writer has published events for."""
        await self._learn_published()
        while self._pending and self._pending[0][0] <= self.published_seq:
            self._replay_published()
            await asyncio.sleep(0)  # a long backlog must not starve the loop
        LAST_SEQ.labels(self.symbol).set(self.seq)
        OPEN_ORDERS.labels(self.symbol).set(self.book.open_orders_count)
        TRADING_STATE.labels(self.symbol).set(int(self.book.trading))

    def _replay_published(self) -> None:
        taken = 0
        process = self.book.process
        for seq, data, _ in self._pending[:MAX_BATCH]:
            if seq > self.published_seq:
                break
            taken += 1
            if seq <= self.seq:
                continue
            try:
                cmds = codec.decode_commands(data)
            except codec.DecodeError:
                cmds = []  # the writer skipped it too
            for cmd in cmds:
                process(cmd)
            self.seq = seq
        del self._pending[:taken]
        # The writer published these levels already; the set must not grow meanwhile.
        self.book.take_dirty_levels()

    async def _renew_lease(self) -> None:
        while True:
            await asyncio.sleep(LEASE_RENEW_S)
            sent = time.monotonic()
            try:
                self._lease_rev = await self.bus.lease_renew(
                    self.symbol, self._lease_record(), self._lease_rev
                )
            except (Conflict, Unavailable) as exc:
                # Refused (expired, taken) or unanswered: either way this engine can no
                # longer be sure it is the only writer.
                self._lease_until = 0.0
                self._lease_rev = 0
                self._lease_lost = exc
                self._wake.set()
                log.error("lease renewal failed; no longer writing",
                          extra={"fields": {"symbol": self.symbol, "error": str(exc)}})
                return
            self._lease_until = sent + LEASE_TRUST_S

    def _lease_record(self) -> bytes:
        expires = int((time.time() + LEASE_TTL_S) * 1000)
        return msgspec.json.encode(LeaseRecord(self.holder, expires))

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
            # One builder and message-id scheme for every SetTrading (usecases/pairs.py);
            # the cause is the log position decided on, so replicas deciding alike
            # de-duplicate.
            data, msg_id = trading_message(self.symbol, self.rules.trading, f"seq{last}",
                                           int(time.time() * 1000))
            await self.bus.publish_command(self.symbol, data, msg_id)
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
                if self._lease_until is not None and time.monotonic() >= self._lease_until:
                    raise NotWriter(f"{self.symbol}: lease not renewed in time")
                eb = EventBatch(SCHEMA_VERSION, self.symbol, first, self.seq, ts, events,
                                levels)
                headers_out = (msgtrace.outgoing([sp.get_span_context() for sp in spans])
                               if spans else None)
                if self.lease:
                    headers_out = {**(headers_out or {}), WRITER_HEADER: self.holder}
                try:
                    self._evt_seq = await self.bus.publish_events_fenced(
                        self.symbol, codec.encode(eb), f"{self.symbol}:{first}",
                        self._evt_seq, headers_out,
                    )
                except Conflict as exc:  # fenced: another writer appended first
                    raise NotWriter(f"{self.symbol}: another engine wrote events") from exc
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
        self._arm_clock()
        if self._since_snapshot >= self.snapshot_every:
            await self.snapshot()

    # ------------------------------------------------------------------ clock
    def _arm_clock(self) -> None:
        """Point the clock at the book's earliest pending expiry (after every step)."""
        if self.seq < self._live_from or self._tick_inflight or self.seq < self._tick_seq:
            return  # replaying, or our last Tick is not applied yet: it may change the answer
        expiry = self.book.next_expiry()
        due = (None if expiry is None
               else max(expiry, self._last_tick_ms + TICK_MIN_INTERVAL_MS))
        if due != self._tick_due:
            self._tick_due = due
            self._clock_wake.set()

    async def _clock(self) -> None:
        """Append ``Tick(ts)`` to the command log when ``_tick_due`` (wall-clock ms) comes.

        The book only ever sees time through the log, so a replay expires exactly the
        same orders at the same place in the command sequence. A Tick the bus did not
        store is retried; any other error ends the clock, and with it the engine's run.

        Raises:
            Exception: anything but Unavailable from appending a Tick.
        """
        while True:
            due = self._tick_due
            if due is None:
                self._clock_wake.clear()
                await self._clock_wake.wait()
                continue
            wait_s = due / 1000 - time.time()
            if wait_s > 0:
                self._clock_wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._clock_wake.wait(), wait_s)
                continue
            self._tick_due = None
            now = int(time.time() * 1000)
            ts = max(now, due)
            self._tick_inflight = True
            try:
                self._tick_seq = await self.bus.publish_command(
                    self.symbol, codec.encode([Tick(ts)]), f"k{self.symbol}:{ts}"
                )
                TICKS.labels(self.symbol).inc()
            except Unavailable as exc:
                log.warning("clock tick not appended; retrying",
                            extra={"fields": {"symbol": self.symbol, "error": str(exc)}})
                await asyncio.sleep(1.0)
            finally:
                self._tick_inflight = False
                self._last_tick_ms = now
            # The Tick may already have been applied while its ack was on the way.
            self._arm_clock()

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
