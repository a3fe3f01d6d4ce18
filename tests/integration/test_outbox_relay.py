"""The outbox relay against real NATS and PostgreSQL: it re-sends an order only on
evidence that the engine has processed the command log past the order's message, so an
engine outage longer than the relay's age doubles nothing, even when the engine remembers
almost no finished order ids."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from tests.support.harness import Platform, eventually

from tradeplane.adapters import db
from tradeplane.adapters.bus import EVENTS_STREAM, Bus, event_subject
from tradeplane.adapters.settlement import NatsSettlementBus, PgSettlementStore
from tradeplane.domain import codec
from tradeplane.domain.model import OrderType, Rested, Side, Status, TimeInForce, Trade
from tradeplane.domain.pairs import DEMO_PAIRS, price_to_ticks, qty_to_lots
from tradeplane.engine.service import Engine
from tradeplane.settlement.service import Settler

pytestmark = pytest.mark.integration

SYMBOL = "BTCUSDT"
RULES = next(p for p in DEMO_PAIRS if p.symbol == SYMBOL)
RELAY_AGE_MS = 500


class CountingSettler(Settler):
    """Counts relay rounds, so the test waits on rounds instead of sleeping."""

    rounds = 0

    async def relay_round(self) -> int:
        sent = await super().relay_round()
        self.rounds += 1
        return sent


async def _bus(plat: Platform, name: str) -> Bus:
    return await Bus.connect(plat.settings.nats_url, name=name,
                             dedup_window_s=plat.settings.dedup_window_s)


async def _start_settlement(plat: Platform) -> CountingSettler:
    bus = await _bus(plat, "settlement")
    settler = CountingSettler(NatsSettlementBus(bus), PgSettlementStore(plat.pool),
                              relay_age_ms=RELAY_AGE_MS, relay_interval_s=0.1)

    async def body(stop: asyncio.Event) -> None:
        try:
            await settler.run(stop)
        finally:
            await bus.close()

    plat.start_service("settlement", body)
    return settler


def _start_engine(plat: Platform, recent_limit: int) -> None:
    async def body(stop: asyncio.Event) -> None:
        bus = await _bus(plat, f"engine-{SYMBOL}")
        try:
            await Engine(bus, RULES, plat.settings.snapshot_every,
                         recent_limit=recent_limit).run(stop)
        finally:
            await bus.close()

    plat.start_service(f"engine-{SYMBOL}", body)


async def _events(plat: Platform) -> list[object]:
    bus = await _bus(plat, "test-reader")
    try:
        info = await bus.js.stream_info(EVENTS_STREAM)
        out: list[object] = []
        for seq in range(max(1, int(info.state.first_seq)), int(info.state.last_seq) + 1):
            msg = await bus.js.get_msg(EVENTS_STREAM, seq)
            if msg.subject == event_subject(SYMBOL):
                out.extend(codec.decode_batch(msg.data or b"").events)
        return out
    finally:
        await bus.close()


async def test_an_engine_outage_longer_than_the_relay_age_doubles_no_order(
    plat: Platform,
) -> None:
    await plat.stop_service("settlement")
    settler = await _start_settlement(plat)
    seller = await plat.trader("relay-seller", {"BTC": "1"})
    buyer = await plat.trader("relay-buyer", {"USDT": "100000"})
    # The engine goes down (no snapshot): its restart replays the whole log into a book
    # that remembers one finished order id.
    plat.kill_service(f"engine-{SYMBOL}")

    placed: list[int] = []
    for i in range(3):
        for trader, side in ((seller, "SELL"), (buyer, "BUY")):
            r = await trader.api.signed(
                "POST", "/api/v3/order", symbol=SYMBOL, side=side, type="LIMIT",
                timeInForce="GTC", price="60000", quantity="0.001",
                newClientOrderId=f"relay-{side}-{i}", newOrderRespType="ACK")
            assert r.status_code == 200, r.text
            placed.append(r.json()["orderId"])
    # And one order whose gateway died between its hold and its publish.
    price, qty = price_to_ticks(RULES, Decimal("50000")), qty_to_lots(RULES, Decimal("0.001"))
    req = db.OrderRequest(buyer.account, SYMBOL, "relay-orphan", Side.BUY, OrderType.LIMIT,
                          TimeInForce.GTC, price, qty, 0, False, "USDT",
                          RULES.notional(price, qty), int(time.time() * 1000))
    [(orphan, result)] = await db.place_orders(plat.pool, [req])
    assert result == db.PlaceResult.PLACED and orphan is not None
    ours = {*placed, orphan}

    # Down for longer than the relay age: every order is old enough for the relay, and
    # it has gone round several times since.
    async def old_enough() -> bool:
        rows = await db.pending_orders(plat.pool, int(time.time() * 1000) - RELAY_AGE_MS)
        return {r["id"] for r in rows} >= ours

    await eventually(old_enough, timeout=20)
    rounds = settler.rounds
    await eventually(lambda: _true(settler.rounds >= rounds + 3), timeout=10)
    _start_engine(plat, recent_limit=1)

    async def all_settled() -> bool:
        rows = await plat.pool.fetch("SELECT id, status FROM orders WHERE id = ANY($1)",
                                     list(ours))
        status = {r["id"]: Status(r["status"]) for r in rows}
        return status == {**dict.fromkeys(placed, Status.FILLED), orphan: Status.NEW}

    await eventually(all_settled, timeout=30)
    # Give a late re-send every chance to show up before counting.
    rounds = settler.rounds
    await eventually(lambda: _true(settler.rounds >= rounds + 5), timeout=10)

    events = await _events(plat)
    trades = Counter(o for e in events if isinstance(e, Trade)
                     for o in (e.taker_order, e.maker_order) if o in ours)
    assert trades == Counter(placed), "each order trades once, with its counterpart"
    rested = Counter(e.order_id for e in events if isinstance(e, Rested) and e.order_id in ours)
    assert rested == Counter({orphan: 1, **{o: 1 for o in placed[::2]}})
    n = await plat.pool.fetchval(
        "SELECT count(*) FROM trades WHERE buyer_order = ANY($1) OR seller_order = ANY($1)",
        list(ours))
    assert n == 3
    assert await settler.export_invariants() == []


async def _true(value: bool) -> bool:
    return value


class _WhileOn(SpanProcessor):
    """Passes finished spans to ``inner`` until switched off (the global tracer provider
    outlives this test's collector)."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner
        self.on = True

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            self.inner.on_end(span)


async def test_a_resent_order_continues_its_trace_on_a_real_collector(
    plat: Platform, tmp_path: Path,
) -> None:
    """An order whose gateway died between storing it (with its trace context) and
    publishing it: the relay's re-send is a span of the order's trace, child of the
    request's span, and the engine's and settlement's spans of the re-sent command follow
    in the same trace, as rotel (a real OTLP receiver) receives them."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from tests.support.otlp import running_rotel
    from tests.support.tracing import install_test_tracing

    from tradeplane.adapters.orderpath import OrderPath

    await plat.stop_service("settlement")
    await _start_settlement(plat)
    buyer = await plat.trader("relay-traced", {"USDT": "1000"})
    capture = install_test_tracing()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    with running_rotel(tmp_path) as collector:
        export = _WhileOn(SimpleSpanProcessor(OTLPSpanExporter(endpoint=collector.endpoint)))
        provider.add_span_processor(export)
        capture.switch.on = True
        try:
            price = price_to_ticks(RULES, Decimal("30000"))
            qty = qty_to_lots(RULES, Decimal("0.001"))
            req = db.OrderRequest(buyer.account, SYMBOL, "relay-traced", Side.BUY,
                                  OrderType.LIMIT, TimeInForce.GTC, price, qty, 0, False,
                                  "USDT", RULES.notional(price, qty), int(time.time() * 1000))
            bus = await _bus(plat, "dying-gateway")
            path = OrderPath(plat.pool, bus)
            try:
                # The gateway's request span; the gateway dies before it publishes.
                with trace.get_tracer("test").start_as_current_span("POST /api/v3/order") as rq:
                    order_id, result = await path.place(req)
            finally:
                await path.close()
                await bus.close()
            assert result == db.PlaceResult.PLACED and order_id is not None
            request = rq.get_span_context()

            async def resent_and_settled() -> bool:
                status = await plat.pool.fetchval("SELECT status FROM orders WHERE id = $1",
                                                  order_id)
                return bool(status == Status.NEW)

            await eventually(resent_and_settled, timeout=30)

            async def received() -> list[Any]:
                spans = [s for s in collector.spans()
                         if s.trace_id == f"{request.trace_id:032x}"]
                names = {s.name for s in spans}
                assert {"POST /api/v3/order", "settlement.outbox_resend", "engine.process",
                        "settlement.apply"} <= names, names
                return spans

            spans = await eventually(received, timeout=20)
        finally:
            capture.switch.on = False
            export.on = False
    by_name = {s.name: s for s in spans}
    resend = by_name["settlement.outbox_resend"]
    assert resend.parent_id == f"{request.span_id:016x}"
    assert by_name["engine.process"].parent_id == resend.span_id


async def test_an_unreachable_command_stream_holds_up_only_its_own_orders(
    plat: Platform, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tradeplane.settlement")
    await plat.stop_service("settlement")
    await _start_settlement(plat)
    buyer = await plat.trader("relay-stranded", {"USDT": "1000"})
    lost = dataclasses.replace(RULES, base="NOSTREAM")  # a pair whose stream is gone
    await db.upsert_pair(plat.pool, lost)
    price, qty = price_to_ticks(RULES, Decimal("40000")), qty_to_lots(RULES, Decimal("0.001"))
    now = int(time.time() * 1000)
    orders = []
    for rules in (lost, RULES):
        req = db.OrderRequest(buyer.account, rules.symbol, f"stranded-{rules.symbol}",
                              Side.BUY, OrderType.LIMIT, TimeInForce.GTC, price, qty, 0,
                              False, "USDT", rules.notional(price, qty), now)
        [(order_id, result)] = await db.place_orders(plat.pool, [req])
        assert result == db.PlaceResult.PLACED and order_id is not None
        orders.append(order_id)
    stranded, reachable = orders

    async def relayed() -> bool:
        status = await plat.pool.fetchval("SELECT status FROM orders WHERE id = $1",
                                          reachable)
        return bool(status == Status.NEW)

    await eventually(relayed, timeout=20)
    assert await plat.pool.fetchval(
        "SELECT status FROM orders WHERE id = $1", stranded) == Status.PENDING_NEW

    async def reported() -> bool:
        return any(r.getMessage().startswith("outbox relay failed") and f"o{stranded}:"
                   in r.getMessage() for r in caplog.records)

    await eventually(reported, timeout=20)
