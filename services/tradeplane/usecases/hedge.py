"""The convert desk's hedge: after a conversion the desk holds the user's from-asset and is
short the to-asset; the hedger closes that position on our own books, leg by leg of the
quoted route, with IOC orders for the desk account placed through the order use case the
API uses (:func:`tradeplane.usecases.orders.admit`, then :class:`Orders`: funds held first,
the command log, settlement).

Idempotent by conversion: each leg's orders carry the client order id
:func:`hedge_client_id` (conversion id and leg), and how much of a leg is hedged is read
from the ledger (the executed lots of the desk's orders with that id), never remembered.
A redelivered job therefore places only what is still missing, and waits (retries) while
an earlier delivery's order is still open. Two workers never work one conversion at once
(:meth:`HedgeStore.claim`, a PostgreSQL advisory lock): one whose delivery outlived the
queue's ``ack_wait`` (paused, partitioned) cannot read "nothing hedged" while the next
worker's order is in flight. A job that cannot finish now raises
:class:`HedgeIncomplete`; the worker (``tradeplane.hedger``) redelivers it with exponential
backoff (:func:`backoff_delay`) and, after ``max_deliveries``, dead-letters it
(:meth:`Hedger.give_up`: routing state FAILED).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Final, Protocol

from tradeplane.domain.convert import DESK_ACCOUNT
from tradeplane.domain.model import TERMINAL, OrderType, Side, Status, TimeInForce
from tradeplane.domain.money import UNIT_DECIMALS
from tradeplane.domain.pairs import PairRules
from tradeplane.usecases.convert import (
    FINAL_ROUTING,
    ConvertOrder,
    HedgeQueue,
    RouteLeg,
    RoutingStatus,
)
from tradeplane.usecases.errors import Unavailable, UseCaseError
from tradeplane.usecases.orders import (
    OrderRefused,
    OrderRow,
    Orders,
    OrderSpec,
    PlaceOrder,
    Refusal,
    admit,
)

BPS: Final = 10_000


class HedgeIncomplete(UseCaseError):
    """The hedge is not done yet (an order refused or partly filled, a leg's order still
    open, a dependency down): redeliver the job later."""


class HedgeOutcome(StrEnum):
    HEDGED = "hedged"  # this delivery finished it
    ALREADY_FINAL = "already_final"  # an earlier delivery did (or it was given up)
    UNKNOWN = "unknown"  # no such conversion (nothing to do)


@dataclass(frozen=True, slots=True)
class HedgeSettings:
    #: How far past the quote's worst price a hedge order may trade, in basis points.
    slippage_bps: int = 50
    #: Deliveries of one job before it goes to the dead-letter stream.
    max_deliveries: int = 10
    #: Redelivery delay after the first failed delivery; doubled after each, at most cap.
    backoff_s: float = 1.0
    backoff_max_s: float = 120.0


@dataclass(frozen=True, slots=True)
class HedgePlan:
    """A conversion with the route it was quoted on (the legs to hedge, in order)."""

    order: ConvertOrder
    legs: tuple[RouteLeg, ...]


# --------------------------------------------------------------------------- ports
class HedgeStore(Protocol):
    """Conversions' hedge rows and the desk's orders (PostgreSQL). Every method raises
    Unavailable when the store cannot be asked."""

    async def plan(self, order_id: int) -> HedgePlan | None: ...

    def claim(self, order_id: int) -> AbstractAsyncContextManager[bool]:
        """Hold the conversion for this worker while inside; True when it got it, False
        when another worker holds it (released on exit, or when this process dies)."""
        ...

    async def advance(self, order_id: int, to: RoutingStatus,
                      allowed_from: frozenset[RoutingStatus], now_ms: int,
                      error: str = "") -> ConvertOrder | None:
        """Move the conversion to ``to`` if it is in ``allowed_from``; the order as it now
        is, or None when it was not moved."""
        ...

    async def leg_orders(self, account: int, symbol: str, client_order_id: str
                         ) -> Sequence[tuple[Status, int]]:
        """``(status, executed lots)`` of every order of the account with that id."""
        ...

    async def unsent(self, created_before_ms: int, limit: int) -> Sequence[int]:
        """Conversions whose hedge job the queue has not taken (oldest first)."""
        ...

    async def mark_enqueued(self, order_id: int) -> None: ...

    async def oldest_open(self) -> int | None:
        """``created_ms`` of the oldest conversion whose hedge has not ended."""
        ...


class HedgePlacement(Protocol):
    """Places one order and answers it once settled (the normal order path)."""

    async def place(self, rules: PairRules, request: PlaceOrder, now_ms: int) -> OrderRow:
        """Raises OrderRefused (Binance's refusal) or Unavailable."""
        ...


class VenueFilled(Protocol):
    @property
    def filled_lots(self) -> int:
        """Lots filled so far over all the hedge's orders on the venue."""
        ...


class VenueHedge(Protocol):
    """An external venue the desk hedges a leg on (``adapters/venues.CcxtVenue``)."""

    async def hedge(self, symbol: str, side: Side, lots: int, worst_price_ticks: int,
                    client_id: str) -> VenueFilled:
        """Fill up to ``lots`` under ``client_id``, idempotently. Raises Unavailable."""
        ...


class ReferencePrice(Protocol):
    async def reference(self, symbol: str) -> int | None:
        """The pair's band reference in ticks (None: none yet). Raises Unavailable."""
        ...


class RoutingNotifier(Protocol):
    async def routed(self, order: ConvertOrder, now_ms: int) -> None:
        """Tell the account's user data stream. Raises Unavailable."""
        ...


class PlaceThroughOrders:
    """:class:`HedgePlacement` over the order use cases, as ``POST /api/v3/order`` with
    ``newOrderRespType=RESULT``: admission against the pair's rules and band reference,
    the hold, the command log, the settled result."""

    def __init__(self, orders: Orders, references: ReferencePrice) -> None:
        self._orders = orders
        self._references = references

    async def place(self, rules: PairRules, request: PlaceOrder, now_ms: int) -> OrderRow:
        req = admit(rules, request, await self._references.reference(rules.symbol), now_ms)
        if isinstance(req, Refusal):
            raise OrderRefused(req)
        placed = await self._orders.place(req)
        return await self._orders.result(req.account, rules.symbol, placed)


# --------------------------------------------------------------------------- pure parts
def hedge_client_id(order_id: int, leg: int) -> str:
    """The client order id of every hedge order of a conversion's leg."""
    return f"cvh-{order_id}-{leg}"


def backoff_delay(delivered: int, first_s: float, cap_s: float) -> float:
    """The redelivery delay after delivery number ``delivered`` (1-based) failed."""
    return float(min(cap_s, first_s * 2 ** max(0, min(delivered - 1, 30))))


def leg_lots(rules: PairRules, leg: RouteLeg) -> int:
    """The base lots the leg's hedge trades: what the quote sold (a SELL leg) or bought
    before the fee (a BUY leg)."""
    base = leg.from_amount if leg.side == Side.SELL.name else leg.to_amount + leg.fee
    return base // rules.lot


def limit_ticks(rules: PairRules, leg: RouteLeg, slippage_bps: int) -> int:
    """The worst acceptable price: the quote's worst price on the leg, less the slippage
    for a sale (rounded down to the tick), plus it for a purchase (rounded up)."""
    if leg.side == Side.SELL.name:
        return max(1, leg.worst_price * (BPS - slippage_bps) // (BPS * rules.tick))
    num = leg.worst_price * (BPS + slippage_bps)
    return -(-num // (BPS * rules.tick))


def _coins(units: int) -> Decimal:
    return Decimal(units).scaleb(-UNIT_DECIMALS)


# --------------------------------------------------------------------------- use case
class Hedger:
    """Hedges conversions, one job at a time (any number of hedgers may run: a job is
    delivered to one, and a leg has at most one open order)."""

    def __init__(self, store: HedgeStore, placement: HedgePlacement,
                 pairs: Callable[[], Awaitable[Mapping[str, PairRules]]],
                 notifier: RoutingNotifier | None = None,
                 settings: HedgeSettings | None = None,
                 venues: Mapping[str, VenueHedge] | None = None) -> None:
        self.store = store
        self.placement = placement
        self.pairs = pairs
        self.notifier = notifier
        self.settings = settings or HedgeSettings()
        self.venues: Mapping[str, VenueHedge] = venues or {}

    async def _advance(self, order_id: int, to: RoutingStatus,
                       allowed_from: frozenset[RoutingStatus], now_ms: int,
                       error: str = "") -> ConvertOrder | None:
        order = await self.store.advance(order_id, to, allowed_from, now_ms, error)
        if order is not None and self.notifier is not None:
            # The state is stored: a lost stream message is re-read on orderStatus.
            with contextlib.suppress(Unavailable):
                await self.notifier.routed(order, now_ms)
        return order

    async def hedge(self, order_id: int, now_ms: int) -> tuple[HedgeOutcome, ConvertOrder | None]:
        """Hedge the conversion's legs in order, each up to its quoted lots.

        Raises:
            HedgeIncomplete: not done now (retry later); what was filled stays filled.
            Unavailable: the store or the bus failed (retry later).
        """
        async with self.store.claim(order_id) as mine:
            if not mine:
                raise HedgeIncomplete(f"conversion {order_id}: another worker holds it")
            return await self._hedge(order_id, now_ms)

    async def _hedge(self, order_id: int, now_ms: int
                     ) -> tuple[HedgeOutcome, ConvertOrder | None]:
        plan = await self.store.plan(order_id)
        if plan is None:
            return HedgeOutcome.UNKNOWN, None
        if plan.order.routing in FINAL_ROUTING:
            return HedgeOutcome.ALREADY_FINAL, plan.order
        await self._advance(order_id, RoutingStatus.ROUTING,
                            frozenset({RoutingStatus.PENDING}), now_ms)
        pairs = await self.pairs()
        for index, leg in enumerate(plan.legs):
            rules = pairs.get(leg.symbol)
            if rules is None:
                raise HedgeIncomplete(f"leg {index}: no pair {leg.symbol}")
            await self._hedge_leg(order_id, index, rules, leg, now_ms)
        await self._advance(order_id, RoutingStatus.ROUTING_COMPLETE,
                            frozenset({RoutingStatus.PENDING, RoutingStatus.ROUTING}), now_ms)
        done = await self._advance(order_id, RoutingStatus.CONFIRMED,
                                   frozenset({RoutingStatus.ROUTING_COMPLETE}), now_ms)
        return HedgeOutcome.HEDGED, done

    async def _hedge_leg(self, order_id: int, index: int, rules: PairRules, leg: RouteLeg,
                         now_ms: int) -> None:
        cid = hedge_client_id(order_id, index)
        target = leg_lots(rules, leg)
        if leg.venue:
            await self._hedge_on_venue(index, rules, leg, cid, target)
            return
        rows = await self.store.leg_orders(DESK_ACCOUNT, rules.symbol, cid)
        if any(status not in TERMINAL for status, _ in rows):
            raise HedgeIncomplete(f"leg {index} ({rules.symbol}): an order is still open")
        done = sum(executed for _, executed in rows)
        if done >= target:
            return
        side = Side[leg.side]
        price = limit_ticks(rules, leg, self.settings.slippage_bps)
        request = PlaceOrder(
            DESK_ACCOUNT, rules.symbol, side,
            OrderSpec(OrderType.LIMIT, cid, TimeInForce.IOC,
                      price=_coins(rules.price_units(price))),
            quantity=_coins(rules.qty_units(target - done)))
        try:
            row = await self.placement.place(rules, request, now_ms)
        except OrderRefused as exc:
            raise HedgeIncomplete(f"leg {index} ({rules.symbol}): refused "
                                  f"{exc.refusal.code} {exc.refusal.msg}") from None
        if done + row.executed < target:
            raise HedgeIncomplete(f"leg {index} ({rules.symbol}): {done + row.executed} of "
                                  f"{target} lots filled")

    async def _hedge_on_venue(self, index: int, rules: PairRules, leg: RouteLeg, cid: str,
                              target: int) -> None:
        """A leg quoted on an external venue is hedged there (the venue's own orders under
        ``cid``; the venue adapter makes a retry idempotent)."""
        venue = self.venues.get(leg.venue)
        if venue is None:
            raise HedgeIncomplete(f"leg {index} ({rules.symbol}): venue {leg.venue} is "
                                  "not configured here")
        fill = await venue.hedge(rules.symbol, Side[leg.side], target,
                                 limit_ticks(rules, leg, self.settings.slippage_bps), cid)
        if fill.filled_lots < target:
            raise HedgeIncomplete(f"leg {index} ({rules.symbol} on {leg.venue}): "
                                  f"{fill.filled_lots} of {target} lots filled")

    async def give_up(self, order_id: int, reason: str, now_ms: int) -> ConvertOrder | None:
        """The job went to the dead-letter stream: the conversion's routing is FAILED (the
        user's side stands; the desk carries what is unhedged). Raises Unavailable."""
        return await self._advance(
            order_id, RoutingStatus.FAILED,
            frozenset({RoutingStatus.PENDING, RoutingStatus.ROUTING,
                       RoutingStatus.ROUTING_COMPLETE}), now_ms, reason[:500])

    async def lag_ms(self, now_ms: int) -> int:
        """How long the oldest conversion not yet hedged (nor given up) has waited; 0 when
        none. Raises Unavailable."""
        oldest = await self.store.oldest_open()
        return 0 if oldest is None else max(0, now_ms - oldest)

    async def relay(self, queue: HedgeQueue, created_before_ms: int, limit: int = 100) -> int:
        """Enqueue the jobs whose post-commit enqueue did not happen (the outbox); how
        many. Raises Unavailable (what was sent stays sent)."""
        sent = 0
        for order_id in await self.store.unsent(created_before_ms, limit):
            await queue.enqueue(order_id)
            await self.store.mark_enqueued(order_id)
            sent += 1
        return sent
