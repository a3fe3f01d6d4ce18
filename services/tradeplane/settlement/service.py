"""Consumes engine event batches and settles them in PostgreSQL, one transaction per pull.

Idempotent under redelivery: a batch whose ``last_seq`` is at or below the symbol's
settlement cursor was applied before and is skipped; the cursor moves in the same
transaction as the postings. After each commit it publishes ``settled.<SYMBOL>`` so the
gateway can answer with the ledger's (not the engine's) view of an order, and each touched
account's user data stream updates on ``user.<account>`` (built by ``reports``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opentelemetry import trace
from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from tradeplane import msgtrace
from tradeplane.domain import codec
from tradeplane.domain.errors import Unavailable
from tradeplane.domain.ledger import OrderState, Settlement, settle_batch
from tradeplane.domain.model import (
    Accepted,
    Amended,
    AmendRejected,
    CancelRejected,
    Command,
    Done,
    EventBatch,
    Rested,
    Trade,
    Triggered,
)
from tradeplane.domain.pairs import TRADING_STATES, PairRules
from tradeplane.settlement import reports
from tradeplane.settlement.ports import (
    EventMessage,
    SettlementBus,
    SettlementStore,
    SettlementWrite,
)

log = logging.getLogger("tradeplane.settlement")
tracer = trace.get_tracer("tradeplane.settlement")

TRADING_NAMES = {v: k for k, v in TRADING_STATES.items()}

SETTLED_BATCHES = Counter("tradeplane_settlement_batches_total", "Engine batches settled")
SKIPPED_BATCHES = Counter(
    "tradeplane_settlement_duplicates_total", "Redelivered engine batches skipped"
)
SETTLED_TRADES = Counter("tradeplane_settlement_trades_total", "Trades settled")
TX_SECONDS = Histogram(
    "tradeplane_settlement_tx_seconds", "Time of one settlement transaction",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0),
)
CURSOR = Gauge("tradeplane_settlement_last_sequence", "Last settled command seq", ["symbol"])
#: Registered by the settler when it runs (:func:`_export_verdict`), not at import: every
#: process imports this module (services.py), and an unset gauge reads 0, "violated" — on a
#: real Prometheus each gateway, market-data and engine pod fired TradeplaneLedgerImbalance.
INVARIANT_OK = Gauge(
    "tradeplane_ledger_invariant_ok",
    "1 when every ledger invariant holds, 0 when one is violated, NaN while unknown "
    "(not checked yet, or the last check failed)",
    registry=None,
)
INVARIANT_CHECK_FAILURES = Counter(
    "tradeplane_ledger_invariant_check_failures_total",
    "Ledger invariant checks that could not run (database error or timeout)",
)
RELAYED = Counter(
    "tradeplane_outbox_relayed_total", "Pending orders re-sent by the outbox relay", ["symbol"]
)
RELAY_FAILURES = Counter(
    "tradeplane_outbox_relay_failures_total", "Outbox relay rounds that failed (retried)"
)
IMBALANCE = Gauge(
    "tradeplane_ledger_imbalance_units",
    "Per asset: sum of balances minus external net credits (0 when sound)", ["asset"],
)
HELD = Gauge("tradeplane_ledger_locked_units", "Funds held for open orders", ["asset"])


def _export_verdict() -> None:
    """Put the ledger verdict on this process's /metrics: only the process that checks."""
    with contextlib.suppress(ValueError):  # an earlier settler in this process did
        REGISTRY.register(INVARIANT_OK)


CONSUMER = "settlement"
#: Least time between two settlement transactions: fewer, larger commits at moderate
#: rates for at most 5 ms more before RESULT/FULL responses.
LINGER_S = 0.005
#: The outbox relay looks at a PENDING_NEW order only once it is this old: longer than a
#: gateway's command publish may take (``Bus.publish_command`` gives up after 5 s), so
#: the order's original message, if it is ever stored, is in the command stream by then.
#: The default of the ``relay_age_ms`` setting (``config.Settings``).
RELAY_AGE_MS = 10_000
RELAY_INTERVAL_S = 2.0
#: Retry delays of a background task whose database or bus failed: doubling, capped.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0


@dataclass(frozen=True, slots=True)
class _Settled:
    """One committed pull, kept for its user data stream updates."""

    batches: list[EventBatch]
    rules: dict[str, PairRules]
    rows: Mapping[int, reports.Row]  # the touched orders as they were before the pull
    settlement: Settlement


class Settler:
    """Settles EVENTS into the ledger; beside it, the outbox relay and the invariant
    watcher (see :meth:`run`).

    ``bus`` and ``store`` are its ports (:mod:`tradeplane.settlement.ports`): NATS and
    PostgreSQL in production, in memory in the unit tests. ``relay_age_ms``: how old a
    PENDING_NEW order must be before the relay looks at it (longer than a gateway's
    publish may take); ``relay_interval_s``: time between relay rounds.
    """

    def __init__(self, bus: SettlementBus, store: SettlementStore, *,
                 invariant_check_s: float = 60.0, relay_age_ms: int = RELAY_AGE_MS,
                 relay_interval_s: float = RELAY_INTERVAL_S) -> None:
        self.bus = bus
        self.store = store
        self.invariant_check_s = invariant_check_s
        self.relay_age_ms = relay_age_ms
        self.relay_interval_s = relay_interval_s
        self.pairs: dict[str, PairRules] = {}
        self.cursors: dict[str, int] = {}
        # A transaction failed: its COMMIT may have happened all the same (the connection
        # went while it was in flight), so the cursors are read again before the retry.
        self._cursors_stale = False
        # The outbox relay's fences, per relay message id of a pending order (or list):
        # a command stream sequence that the original message, if it was ever stored, is
        # at or below (see _relay_round).
        self._fences: dict[str, int] = {}

    async def start(self) -> None:
        await self.bus.ensure_events()
        self.pairs = await self.store.load_pairs()
        self.cursors = await self.store.cursors()

    async def rules(self, symbol: str) -> PairRules:
        if symbol not in self.pairs:
            self.pairs = await self.store.load_pairs()
        return self.pairs[symbol]

    async def _pairs_changed(self) -> None:
        """A pair's rules changed (an admin's fee change): trades settled from now on pay
        the new fees."""
        try:
            self.pairs = await self.store.load_pairs()
        except (Unavailable, OSError) as exc:
            log.warning("pair reload failed: %s", exc)

    async def handle(self, msgs: Sequence[EventMessage]) -> None:
        """Settle one pull in one transaction, then publish the marks and user updates.
        Traced batches make it a span: child of the first, linked to the others."""
        parent, links = msgtrace.incoming(m.headers for m in msgs)
        if parent is None:
            await self._handle(msgs)
            return
        with tracer.start_as_current_span(
            "settlement.apply", context=parent, links=links, kind=trace.SpanKind.CONSUMER,
            attributes={"messaging.system": "nats", "messaging.batch.message_count": len(msgs),
                        "messaging.message.sequence": msgs[-1].seq},
        ):
            await self._handle(msgs)

    async def _handle(self, msgs: Sequence[EventMessage]) -> None:
        batches = [codec.decode_batch(m.data) for m in msgs]
        if self._cursors_stale:
            # What PostgreSQL holds decides what is left to apply, not what we last saw
            # committed: a batch applied twice would spend its orders' holds twice.
            self.cursors = await self.store.cursors()
            self._cursors_stale = False
        todo = [b for b in batches if b.last_seq > self.cursors.get(b.symbol, 0)]
        SKIPPED_BATCHES.inc(len(batches) - len(todo))
        try:
            settled = await self._apply(todo, msgs[-1].seq) if todo else None
        except BaseException:
            self._cursors_stale = True
            raise
        marks: dict[str, int] = {}
        for b in batches:
            marks[b.symbol] = max(marks.get(b.symbol, 0), b.last_seq)
        for sym, seq in marks.items():
            await self.bus.publish_settled(sym, seq)
        # After the marks: gateway answers waiting for them never wait for the reports.
        if settled is not None:
            await self._publish_user_updates(settled)

    async def _apply(self, todo: list[EventBatch], stream_seq: int) -> _Settled:
        ids: set[int] = set()
        for b in todo:
            for ev in b.events:
                if isinstance(ev, Trade):
                    ids.add(ev.taker_order)
                    ids.add(ev.maker_order)
                elif isinstance(ev, Rested | Done | CancelRejected | Accepted | Triggered
                                | Amended | AmendRejected):
                    ids.add(ev.order_id)
        rules = {b.symbol: await self.rules(b.symbol) for b in todo}
        written: list[SettlementWrite] = []  # what the store committed, for after it

        def settle(orders: dict[int, OrderState]) -> SettlementWrite:
            total = Settlement()
            cursors: dict[str, int] = {}
            trading: dict[str, str] = {}  # the engine's trading state becomes the pair's
            for b in todo:
                prev = cursors.get(b.symbol, self.cursors.get(b.symbol))
                expected = (prev or 0) + 1
                if prev is not None and b.first_seq > expected:
                    log.warning("gap in %s events: expected %d, got %d",
                                b.symbol, expected, b.first_seq)
                s = settle_batch(rules[b.symbol], b.events, orders)
                total.postings += s.postings
                total.trades += s.trades
                cursors[b.symbol] = b.last_seq
                for change in s.trading:
                    trading[b.symbol] = TRADING_NAMES[change.state]
            written.append(SettlementWrite(total, cursors, (CONSUMER, stream_seq), trading))
            return written[-1]

        started = time.perf_counter()
        rows = await self.store.settle(ids, settle)
        TX_SECONDS.observe(time.perf_counter() - started)
        total, cursors = written[-1].settlement, written[-1].cursors
        self.cursors.update(cursors)
        SETTLED_BATCHES.inc(len(todo))
        SETTLED_TRADES.inc(len(total.trades))
        log.debug("settled", extra={"fields": {"batches": len(todo),
                                               "trades": len(total.trades),
                                               "stream_seq": stream_seq}})
        for sym, seq in cursors.items():
            CURSOR.labels(sym).set(seq)
        return _Settled(todo, rules, rows, total)

    async def _publish_user_updates(self, s: _Settled) -> None:
        """After a commit: each account's executionReports, then its outboundAccountPosition
        (the balances it has now), on ``user.<account>``.

        Best effort, like the core NATS subject it goes to: a failure is logged and never
        raised, because the transaction is committed and must not be redone for it.
        """
        try:
            now = int(time.time() * 1000)
            updates = reports.user_updates(s.batches, s.rules, s.rows, now)
            touched = s.settlement.balance_deltas().keys() | updates.entered
            balances = await self.store.balances_of(touched)
            out: list[tuple[int, bytes]] = []
            for account in updates.reports.keys() | balances.keys():
                for doc in updates.reports.get(account, ()):
                    out.append((account, reports.encode(doc)))
                held = balances.get(account)
                if held:
                    position = reports.account_position(
                        now, updates.updated_ms.get(account, now), held
                    )
                    out.append((account, reports.encode(position)))
            await self.bus.publish_users(out)
        except Unavailable as exc:
            log.warning("user data stream publish failed: %s", exc)
        except Exception:  # a defect, said loudly; never raised: the ledger is committed
            log.exception("user data stream publish failed")

    async def run(self, stop: asyncio.Event) -> None:
        """Settle until ``stop``, with the outbox relay and the invariant watcher beside
        the event consumer, all three in one task group. The relay and the watcher retry
        failures of the database and the bus with backoff; any other error in any of the
        three ends them all and ``run`` raises it (the process exits non-zero and is
        restarted; settlement resumes exactly where its last transaction left it).

        Raises:
            ExceptionGroup: a task died (the runner logs each cause, re-raises the first).
            Unavailable: at start (the database or the bus did not answer).
        """
        _export_verdict()
        INVARIANT_OK.set(math.nan)  # unknown until the first check has run
        await self.start()
        unsubscribe = await self.bus.watch_pairs(self._pairs_changed)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._consume(stop), name="settlement-consumer")
                tasks.create_task(self._relay_outbox(stop), name="outbox-relay")
                tasks.create_task(self._watch_invariants(stop), name="invariant-watcher")
        finally:
            with contextlib.suppress(Unavailable):
                await unsubscribe()

    async def _consume(self, stop: asyncio.Event) -> None:
        start = await self.store.consumer_position(CONSUMER) + 1
        await self.bus.consume_events(CONSUMER, self.handle, start_seq=start, stop=stop,
                                      linger=LINGER_S)

    async def _relay_outbox(self, stop: asyncio.Event) -> None:
        """Run :meth:`relay_round` every ``relay_interval_s`` until ``stop``; a failed
        round (database, bus) is logged and retried with backoff."""
        delay = RETRY_FIRST_S
        while not stop.is_set():
            try:
                await self.relay_round()
            except (Unavailable, OSError) as exc:
                RELAY_FAILURES.inc()
                log.warning("outbox relay failed; retrying in %.0fs: %s", delay, exc)
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = RETRY_FIRST_S
            await _sleep_or_stop(stop, self.relay_interval_s)

    async def relay_round(self) -> int:
        """Re-send the command of each order still PENDING_NEW whose original message
        provably never reached the engine (the gateway died, or failed, between its
        database commit and the bus ack); returns how many commands it sent.

        The gateway's message batches several orders under one content-hash id, which a
        re-send of one order cannot reproduce, so de-duplication on the bus cannot make a
        re-send safe. Evidence does: an order is looked at only once it is
        ``relay_age_ms`` old, longer than a gateway's publish may take, so its original
        message, if ever stored, is at or below the command stream's last sequence read
        then (the order's *fence*). The order is re-sent only once settlement has applied
        the engine's events up to the fence and the order is still PENDING_NEW: had the
        original been in the log, the engine would have processed it and the order would
        have left PENDING_NEW in the same transaction that moved the cursor. The re-send's
        own sequence becomes the new fence, so it is sent again only if the engine
        processed it and the order is still pending (never, short of a lost event). A
        re-send the bus did not acknowledge leaves the order without a fence: the next
        round reads a new one, at or above the re-send if it was stored after all. While
        the engine is down nothing is re-sent, and the engine's memory of finished order
        ids is not what stops a double order (docs/architecture.md, "The order path",
        names the one case it still covers). Re-sends carry ``o<id>`` / ``l<list id>``,
        so two of them within the bus's window are one message.

        Raises:
            Unavailable: the store did not answer (the round did nothing; the next one
                redoes it), or some orders' symbols were unreachable on the bus (the others
                were handled).
        """
        # Read before the query: a cursor this far has committed the order states the
        # query then sees.
        settled = dict(self.cursors)
        pending = await self.store.pending_commands(int(time.time() * 1000) - self.relay_age_ms)
        fences: dict[str, int] = {}
        sent = 0
        failed: list[str] = []
        due = [msg_id for symbol, msg_id, _ in pending
               if msg_id in self._fences and settled.get(symbol, 0) >= self._fences[msg_id]]
        traces = await self.store.stored_traces(due) if due else {}
        for symbol, msg_id, cmd in pending:
            fence = self._fences.get(msg_id)
            try:
                if fence is None:
                    fence = await self.bus.last_command_seq(symbol)
                elif settled.get(symbol, 0) >= fence:
                    fence = await self._resend(symbol, msg_id, cmd, traces.get(msg_id))
                    RELAYED.labels(symbol).inc()
                    sent += 1
            except Unavailable as exc:
                failed.append(f"{msg_id}: {exc}")
                continue  # one symbol's stream must not hold up the others' orders
            fences[msg_id] = fence
        self._fences = fences  # orders no longer pending are forgotten
        if sent:
            log.info("outbox relayed", extra={"fields": {"commands": sent}})
        if failed:
            raise Unavailable(f"{len(failed)} pending order(s) not handled: "
                              + "; ".join(failed[:5]))
        return sent

    async def _resend(self, symbol: str, msg_id: str, cmd: Command,
                      traceparent: str | None) -> int:
        """Publish ``cmd`` again. An order stored with a trace context is re-sent in a span
        of that trace (``settlement.outbox_resend``, a child of the order's request), and
        the message carries the span on, so the engine's and settlement's spans of the
        re-sent command join the order's trace."""
        data = codec.encode([cmd])
        if traceparent is None:
            return await self.bus.publish_command(symbol, data, msg_id)
        parent, _ = msgtrace.incoming([{msgtrace.TRACEPARENT: traceparent}])
        with tracer.start_as_current_span(
            "settlement.outbox_resend", context=parent, kind=trace.SpanKind.PRODUCER,
            attributes={"messaging.system": "nats", "messaging.message.id": msg_id,
                        "messaging.destination.name": symbol},
        ) as span:
            headers = msgtrace.outgoing([span.get_span_context()])
            return await self.bus.publish_command(symbol, data, msg_id, headers)

    async def _watch_invariants(self, stop: asyncio.Event) -> None:
        """Check the ledger every ``invariant_check_s`` until ``stop``. A check that cannot
        run (database down, timeout) makes the verdict unknown — ``INVARIANT_OK`` NaN, the
        per-asset gauges dropped — never its last value, and is retried sooner, with
        backoff."""
        delay = RETRY_FIRST_S
        while not stop.is_set():
            try:
                await self.export_invariants()
            except (Unavailable, OSError, TimeoutError) as exc:
                _invariants_unknown()
                INVARIANT_CHECK_FAILURES.inc()
                wait = min(delay, self.invariant_check_s)
                log.warning("ledger invariant check failed; verdict unknown, retrying in "
                            "%.0fs: %s", wait, exc)
                await _sleep_or_stop(stop, wait)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            except BaseException:
                _invariants_unknown()  # the process goes down: no verdict outlives it
                raise
            delay = RETRY_FIRST_S
            await _sleep_or_stop(stop, self.invariant_check_s)

    async def export_invariants(self) -> list[str]:
        imbalances, problems = await self.store.check_invariants()
        for asset, imbalance in imbalances.items():
            IMBALANCE.labels(asset).set(imbalance)
        for asset, held in (await self.store.locked_totals()).items():
            HELD.labels(asset).set(held)
        INVARIANT_OK.set(0 if problems else 1)
        for p in problems:
            log.error("ledger invariant violated: %s", p)
        return problems


def _invariants_unknown() -> None:
    INVARIANT_OK.set(math.nan)
    IMBALANCE.clear()
    HELD.clear()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
