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
import time
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram

from tradeplane import msgtrace
from tradeplane.adapters import control, db
from tradeplane.adapters.bus import Bus, BusError, StoredMsg, settled_subject, user_subject
from tradeplane.domain import codec
from tradeplane.domain.ledger import OrderState, Settlement, settle_batch
from tradeplane.domain.model import (
    Accepted,
    Amended,
    AmendRejected,
    CancelRejected,
    Done,
    EventBatch,
    Rested,
    Trade,
    Triggered,
)
from tradeplane.domain.pairs import TRADING_STATES, PairRules
from tradeplane.settlement import reports

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
INVARIANT_OK = Gauge(
    "tradeplane_ledger_invariant_ok", "1 when every ledger invariant holds, else 0"
)
IMBALANCE = Gauge(
    "tradeplane_ledger_imbalance_units",
    "Per asset: sum of balances minus external net credits (0 when sound)", ["asset"],
)
HELD = Gauge("tradeplane_ledger_locked_units", "Funds held for open orders", ["asset"])


CONSUMER = "settlement"
#: Least time between two settlement transactions: fewer, larger commits at moderate
#: rates for at most 5 ms more before RESULT/FULL responses.
LINGER_S = 0.005


@dataclass(frozen=True, slots=True)
class _Settled:
    """One committed pull, kept for its user data stream updates."""

    batches: list[EventBatch]
    rules: dict[str, PairRules]
    rows: Mapping[int, reports.Row]  # the touched orders as they were before the pull
    settlement: Settlement


class Settler:
    def __init__(self, bus: Bus, pool: db.Pool, *, invariant_check_s: float = 60.0) -> None:
        self.bus = bus
        self.pool = pool
        self.invariant_check_s = invariant_check_s
        self.pairs: dict[str, PairRules] = {}
        self.cursors: dict[str, int] = {}
        self.caught_up_ms = 0  # when settlement last had applied everything on the stream

    async def start(self) -> None:
        await self.bus.ensure_events()
        self.pairs = await db.load_pairs(self.pool)
        self.cursors = await db.settlement_cursors(self.pool)

    async def rules(self, symbol: str) -> PairRules:
        if symbol not in self.pairs:
            self.pairs = await db.load_pairs(self.pool)
        return self.pairs[symbol]

    async def _pairs_changed(self, _doc: dict[str, object]) -> None:
        """A pair's rules changed (an admin's fee change): trades settled from now on pay
        the new fees."""
        try:
            self.pairs = await db.load_pairs(self.pool)
        except (db.DatabaseError, OSError) as exc:
            log.warning("pair reload failed: %s", exc)

    async def handle(self, msgs: list[StoredMsg]) -> None:
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

    async def _handle(self, msgs: list[StoredMsg]) -> None:
        batches = [codec.decode_batch(m.data) for m in msgs]
        todo = [b for b in batches if b.last_seq > self.cursors.get(b.symbol, 0)]
        SKIPPED_BATCHES.inc(len(batches) - len(todo))
        settled = await self._apply(todo, msgs[-1].seq) if todo else None
        marks: dict[str, int] = {}
        for b in batches:
            marks[b.symbol] = max(marks.get(b.symbol, 0), b.last_seq)
        for sym, seq in marks.items():
            await self.bus.publish(settled_subject(sym), str(seq).encode())
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
        started = time.perf_counter()
        async with self.pool.acquire() as con, con.transaction():
            orders: dict[int, OrderState]
            orders, rows = await db.load_settlement_orders(con, ids)
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
            await db.write_settlement(con, total, orders.values(), cursors,
                                      (CONSUMER, stream_seq))
            for sym, state in trading.items():
                await db.set_pair_trading(con, sym, state)
        TX_SECONDS.observe(time.perf_counter() - started)
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
            balances = await db.balances_of(self.pool, touched)
            for account in updates.reports.keys() | balances.keys():
                subject = user_subject(account)
                for doc in updates.reports.get(account, ()):
                    await self.bus.publish(subject, reports.encode(doc))
                held = balances.get(account)
                if held:
                    position = reports.account_position(
                        now, updates.updated_ms.get(account, now), held
                    )
                    await self.bus.publish(subject, reports.encode(position))
        except Exception:  # anything: the ledger is already committed
            log.exception("user data stream publish failed")

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        unsubscribe = await control.subscribe(self.bus, control.PAIRS_CHANGED,
                                              self._pairs_changed)
        tasks = [
            asyncio.create_task(self._relay_outbox(stop)),
            asyncio.create_task(self._watch_invariants(stop)),
        ]
        try:
            start = await db.consumer_position(self.pool, CONSUMER) + 1
            await self.bus.consume_events(CONSUMER, self.handle, start_seq=start, stop=stop,
                                          on_idle=self._caught_up, linger=LINGER_S)
        finally:
            for t in tasks:
                t.cancel()
            with contextlib.suppress(Exception):
                await unsubscribe()

    def _caught_up(self) -> None:
        self.caught_up_ms = int(time.time() * 1000)

    async def _relay_outbox(self, stop: asyncio.Event, age_ms: int = 3000) -> None:
        """Re-send commands of orders that are still PENDING_NEW (the gateway may have died
        between its database commit and the bus ack). De-duplicated by message id on the
        bus and by order id in the engine, so a re-send never makes a second order.

        Only while settlement is caught up with the event stream, and only for orders older
        than ``age_ms`` at that moment: an order the engine already processed is then
        settled (no longer pending), so the engine's bounded memory of finished order ids
        never has to recognise a re-send from far back.
        """
        while not stop.is_set():
            if not self.caught_up_ms:
                await _sleep_or_stop(stop, 0.5)
                continue
            try:
                rows = await db.pending_orders(self.pool, self.caught_up_ms - age_ms)
                for symbol, msg_id, cmd in db.relay_commands(rows):
                    await self.bus.publish_command(symbol, codec.encode([cmd]), msg_id)
                if rows:
                    log.info("outbox relayed", extra={"fields": {"orders": len(rows)}})
            except (BusError, db.DatabaseError, OSError) as exc:
                log.warning("outbox relay failed: %s", exc)
            await _sleep_or_stop(stop, 2.0)

    async def _watch_invariants(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.export_invariants()
            await _sleep_or_stop(stop, self.invariant_check_s)

    async def export_invariants(self) -> list[str]:
        checks, problems = await db.check_invariants(self.pool)
        for c in checks:
            IMBALANCE.labels(c.asset).set(c.balances_total - c.external_net)
        for asset, held in (await db.locked_totals(self.pool)).items():
            HELD.labels(asset).set(held)
        INVARIANT_OK.set(0 if problems else 1)
        for p in problems:
            log.error("ledger invariant violated: %s", p)
        return problems


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
