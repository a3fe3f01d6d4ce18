"""The hedge use case and the hedger's delivery handling, over in-memory ports: the worst
acceptable price and lots of a leg, the backoff, idempotency by what the ledger shows,
the routing states, and the worker's retry / dead-letter decisions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace

import pytest

from tradeplane.domain.model import OrderType, Reason, Side, Status, StpMode, TimeInForce
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import DEMO_PAIRS, PairRules
from tradeplane.hedger.service import HedgeWorker
from tradeplane.usecases.convert import (
    ConvertOrder,
    OrderStatus,
    RouteLeg,
    RoutingStatus,
)
from tradeplane.usecases.hedge import (
    HedgeIncomplete,
    HedgeOutcome,
    HedgePlan,
    Hedger,
    HedgeSettings,
    backoff_delay,
    hedge_client_id,
    leg_lots,
    limit_ticks,
)
from tradeplane.usecases.orders import OrderRefused, OrderRow, PlaceOrder, Refusal

BTCUSDT = next(p for p in DEMO_PAIRS if p.symbol == "BTCUSDT")
SELL_LEG = RouteLeg("BTCUSDT", "SELL", "BTC", "USDT", to_units("0.01"), to_units("499.5"),
                    to_units("0.5"), to_units("50000"), to_units("49990"))
BUY_LEG = RouteLeg("BTCUSDT", "BUY", "USDT", "BTC", to_units("500.1"), to_units("0.00999"),
                   to_units("0.00001"), to_units("50010"), to_units("50010"))


def test_a_sale_is_limited_below_the_quotes_worst_price_by_the_slippage() -> None:
    # 49990 * (1 - 0.5%) = 49740.05, on the 0.01 grid: 4974005 ticks.
    assert limit_ticks(BTCUSDT, SELL_LEG, 50) == 4_974_005
    assert limit_ticks(BTCUSDT, SELL_LEG, 0) == 4_999_000


def test_a_purchase_is_limited_above_it_rounded_up_to_the_tick() -> None:
    # 50010 * 1.0033 = 50175.033 -> 50175.04
    assert limit_ticks(BTCUSDT, BUY_LEG, 33) == 5_017_504


def test_a_leg_hedges_what_the_quote_sold_or_bought_before_its_fee() -> None:
    assert leg_lots(BTCUSDT, SELL_LEG) == 1000  # 0.01 BTC in lots of 0.00001
    assert leg_lots(BTCUSDT, BUY_LEG) == 1000  # 0.00999 + 0.00001 fee


def test_the_backoff_doubles_per_delivery_up_to_its_cap() -> None:
    assert [backoff_delay(n, 1.0, 10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert backoff_delay(10_000, 1.0, 60.0) == 60.0


# --------------------------------------------------------------------------- memory ports
ORDER = ConvertOrder(7, 3, 1001, OrderStatus.SUCCESS, "BTC", "USDT", to_units("0.01"),
                     to_units("499"), 1_000, RoutingStatus.PENDING)


class MemoryHedgeStore:
    """In-memory ``HedgeStore``: one conversion, the desk's orders by client order id."""

    def __init__(self, order: ConvertOrder, legs: tuple[RouteLeg, ...]) -> None:
        self.order = order
        self.legs = legs
        self.orders: dict[str, list[tuple[Status, int]]] = {}
        self.enqueued = False
        self.claimed: set[int] = set()

    @contextlib.asynccontextmanager
    async def claim(self, order_id: int) -> AsyncIterator[bool]:
        if order_id in self.claimed:
            yield False
            return
        self.claimed.add(order_id)
        try:
            yield True
        finally:
            self.claimed.discard(order_id)

    async def plan(self, order_id: int) -> HedgePlan | None:
        return HedgePlan(self.order, self.legs) if order_id == self.order.order_id else None

    async def advance(self, order_id: int, to: RoutingStatus,
                      allowed_from: frozenset[RoutingStatus], now_ms: int,
                      error: str = "") -> ConvertOrder | None:
        if self.order.routing not in allowed_from:
            return None
        self.order = replace(self.order, routing=to)
        return self.order

    async def leg_orders(self, account: int, symbol: str, client_order_id: str
                         ) -> Sequence[tuple[Status, int]]:
        return self.orders.get(client_order_id, [])

    async def unsent(self, created_before_ms: int, limit: int) -> Sequence[int]:
        return [] if self.enqueued else [self.order.order_id]

    async def mark_enqueued(self, order_id: int) -> None:
        self.enqueued = True

    async def oldest_open(self) -> int | None:
        final = (RoutingStatus.CONFIRMED, RoutingStatus.FAILED)
        return None if self.order.routing in final else self.order.created_ms


class MemoryPlacement:
    """In-memory ``HedgePlacement``: fills ``fill`` lots of each order (all by default)
    and records it in the store, as settlement would."""

    def __init__(self, store: MemoryHedgeStore, fill: int | None = None) -> None:
        self.store = store
        self.fill = fill
        self.requests: list[PlaceOrder] = []

    async def place(self, rules: PairRules, request: PlaceOrder, now_ms: int) -> OrderRow:
        self.requests.append(request)
        assert request.quantity is not None
        lots = int(to_units(request.quantity) // rules.lot)
        filled = lots if self.fill is None else min(lots, self.fill)
        status = Status.FILLED if filled == lots else Status.EXPIRED
        self.store.orders.setdefault(request.order.client_order_id, []).append(
            (status, filled))
        return _row(status, filled)


def _row(status: Status, executed: int) -> OrderRow:
    return OrderRow(1, 2, "BTCUSDT", "x", Side.SELL, OrderType.LIMIT, TimeInForce.IOC, 1, 1,
                    0, False, status, executed, 0, "BTC", 0, 0, 0, 0, 0, 0, StpMode.NONE, 0,
                    0, 0, Reason(0))


class MemoryNotifier:
    def __init__(self) -> None:
        self.states: list[str] = []

    async def routed(self, order: ConvertOrder, now_ms: int) -> None:
        self.states.append(order.routing.value)


async def _pairs() -> Mapping[str, PairRules]:
    return {BTCUSDT.symbol: BTCUSDT}


def hedger(store: MemoryHedgeStore, placement: MemoryPlacement,
           notifier: MemoryNotifier | None = None) -> Hedger:
    return Hedger(store, placement, _pairs, notifier, HedgeSettings(max_deliveries=3))


async def test_a_hedge_places_one_ioc_order_per_leg_and_walks_the_states() -> None:
    store = MemoryHedgeStore(ORDER, (SELL_LEG,))
    placement, notifier = MemoryPlacement(store), MemoryNotifier()
    outcome, order = await hedger(store, placement, notifier).hedge(7, 2_000)
    assert outcome is HedgeOutcome.HEDGED and order is not None
    assert order.routing is RoutingStatus.CONFIRMED
    assert notifier.states == ["ROUTING", "ROUTING_COMPLETE", "CONFIRMED"]
    [req] = placement.requests
    assert req.order.client_order_id == hedge_client_id(7, 0) == "cvh-7-0"
    assert req.order.tif.name == "IOC" and req.account == 2
    assert str(req.quantity) == "0.01000000" and str(req.order.price) == "49740.05000000"


async def test_a_partial_fill_is_incomplete_and_the_retry_places_only_the_rest() -> None:
    store = MemoryHedgeStore(ORDER, (SELL_LEG,))
    placement = MemoryPlacement(store, fill=400)
    with pytest.raises(HedgeIncomplete, match="400 of 1000 lots"):
        await hedger(store, placement).hedge(7, 2_000)
    assert store.order.routing is RoutingStatus.ROUTING
    placement.fill = None
    outcome, _ = await hedger(store, placement).hedge(7, 3_000)
    assert outcome is HedgeOutcome.HEDGED
    assert [str(r.quantity) for r in placement.requests] == ["0.01000000", "0.00600000"]


async def test_a_leg_already_hedged_in_the_ledger_is_not_placed_again() -> None:
    store = MemoryHedgeStore(replace(ORDER, routing=RoutingStatus.ROUTING), (SELL_LEG,))
    store.orders["cvh-7-0"] = [(Status.FILLED, 1000)]
    placement = MemoryPlacement(store)
    outcome, _ = await hedger(store, placement).hedge(7, 2_000)
    assert outcome is HedgeOutcome.HEDGED and placement.requests == []


async def test_a_leg_with_an_open_order_waits_rather_than_place_beside_it() -> None:
    store = MemoryHedgeStore(ORDER, (SELL_LEG,))
    store.orders["cvh-7-0"] = [(Status.PENDING_NEW, 0)]
    placement = MemoryPlacement(store)
    with pytest.raises(HedgeIncomplete, match="still open"):
        await hedger(store, placement).hedge(7, 2_000)
    assert placement.requests == []


async def test_a_final_conversion_is_not_hedged_again() -> None:
    for final in (RoutingStatus.CONFIRMED, RoutingStatus.FAILED):
        store = MemoryHedgeStore(replace(ORDER, routing=final), (SELL_LEG,))
        placement = MemoryPlacement(store)
        outcome, _ = await hedger(store, placement).hedge(7, 2_000)
        assert outcome is HedgeOutcome.ALREADY_FINAL and placement.requests == []


async def test_a_second_leg_waits_for_the_first() -> None:
    bridge = RouteLeg("BTCUSDT", "BUY", "USDT", "BTC", to_units("500.1"), to_units("0.00999"),
                      to_units("0.00001"), to_units("50010"), to_units("50010"))
    store = MemoryHedgeStore(ORDER, (SELL_LEG, bridge))
    placement = MemoryPlacement(store, fill=0)
    with pytest.raises(HedgeIncomplete, match="leg 0"):
        await hedger(store, placement).hedge(7, 2_000)
    assert len(placement.requests) == 1


# --------------------------------------------------------------------------- the worker
class MemoryDelivery:
    def __init__(self, order_id: int, delivered: int) -> None:
        self.order_id = order_id
        self.delivered = delivered
        self.acked = False
        self.retried: float | None = None

    async def ack(self) -> None:
        self.acked = True

    async def retry(self, delay_s: float) -> None:
        self.retried = delay_s

    async def working(self) -> None:
        return None


class MemoryJobs:
    """In-memory work queue: what was enqueued and dead-lettered."""

    def __init__(self) -> None:
        self.enqueued: list[int] = []
        self.dead: list[tuple[int, int, str]] = []

    async def ensure(self) -> None:
        return None

    async def enqueue(self, order_id: int) -> None:
        self.enqueued.append(order_id)

    async def next(self, timeout: float) -> MemoryDelivery | None:
        await asyncio.sleep(0)
        return None

    async def dead_letter(self, order_id: int, deliveries: int, reason: str) -> None:
        self.dead.append((order_id, deliveries, reason))


class RefusingMemoryPlacement(MemoryPlacement):
    """Refuses every order (-2010), as the order path does without funds."""

    async def place(self, rules: PairRules, request: PlaceOrder, now_ms: int) -> OrderRow:
        self.requests.append(request)
        raise OrderRefused(Refusal(-2010, "Account has insufficient balance for requested "
                                          "action.", outcome="insufficient"))


async def test_a_failed_delivery_is_retried_with_backoff_until_the_last_then_dead_lettered(
) -> None:
    store = MemoryHedgeStore(ORDER, (SELL_LEG,))
    jobs = MemoryJobs()
    worker = HedgeWorker(hedger(store, RefusingMemoryPlacement(store)), jobs)
    first, second, last = (MemoryDelivery(7, n) for n in (1, 2, 3))
    assert await worker.handle(first) == "retried" and first.retried == 1.0
    assert await worker.handle(second) == "retried" and second.retried == 2.0
    assert not first.acked and not second.acked
    assert await worker.handle(last) == "dead_lettered" and last.acked
    assert jobs.dead == [(7, 3, "3 deliveries: leg 0 (BTCUSDT): refused -2010 Account has "
                                "insufficient balance for requested action.")]
    assert store.order.routing is RoutingStatus.FAILED


async def test_a_delivery_past_the_limit_is_dead_lettered_without_another_try() -> None:
    store = MemoryHedgeStore(ORDER, (SELL_LEG,))
    jobs, placement = MemoryJobs(), MemoryPlacement(store)
    worker = HedgeWorker(hedger(store, placement), jobs)
    d = MemoryDelivery(7, 4)
    assert await worker.handle(d) == "dead_lettered" and d.acked
    assert placement.requests == [] and store.order.routing is RoutingStatus.FAILED


async def test_an_unreadable_job_is_dead_lettered() -> None:
    store = MemoryHedgeStore(ORDER, (SELL_LEG,))
    jobs = MemoryJobs()
    d = MemoryDelivery(0, 1)
    assert await HedgeWorker(hedger(store, MemoryPlacement(store)), jobs).handle(d) == (
        "dead_lettered")
    assert jobs.dead == [(0, 1, "unreadable job")] and d.acked


async def test_the_relay_enqueues_what_the_outbox_holds_once() -> None:
    store = MemoryHedgeStore(ORDER, (SELL_LEG,))
    jobs = MemoryJobs()
    worker = HedgeWorker(hedger(store, MemoryPlacement(store)), jobs)
    assert await worker.relay() == 1 and await worker.relay() == 0
    assert jobs.enqueued == [7] and store.enqueued


async def test_a_conversion_another_worker_holds_is_left_to_it() -> None:
    store = MemoryHedgeStore(ORDER, (SELL_LEG,))
    placement = MemoryPlacement(store)
    async with store.claim(7):
        with pytest.raises(HedgeIncomplete, match="another worker holds it"):
            await hedger(store, placement).hedge(7, 2_000)
    assert placement.requests == [] and store.order.routing is RoutingStatus.PENDING


async def test_the_hedge_lag_is_the_age_of_the_oldest_conversion_not_yet_hedged() -> None:
    store = MemoryHedgeStore(ORDER, (SELL_LEG,))  # accepted at 1_000 ms
    h = hedger(store, MemoryPlacement(store))
    assert await h.lag_ms(3_500) == 2_500
    await h.hedge(7, 4_000)
    assert await h.lag_ms(5_000) == 0
