"""Ledger rules: how engine events turn into order states, trades and balanced postings.

Pure functions over plain data; the settlement adapter loads the orders a batch touches,
calls :func:`settle_batch`, and writes what it returns in one database transaction.

Buckets: ``a`` available, ``l`` locked (held for open orders), ``x`` the external world
(account 0), whose balance is minus everything ever credited from outside.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from tradeplane.domain.errors import InvariantViolation
from tradeplane.domain.model import (
    TERMINAL,
    Accepted,
    Amended,
    Done,
    Event,
    OrderType,
    Reason,
    Rested,
    Side,
    Status,
    Trade,
    TradingChanged,
    Triggered,
)
from tradeplane.domain.pairs import PairRules, order_cost

EXTERNAL_ACCOUNT = 0
FEE_ACCOUNT = 1
PPM = 1_000_000

Posting = tuple[str, int, str, str, int]  # (tx_ref, account, asset, bucket, amount)


class LedgerError(InvariantViolation):
    """An event contradicts the ledger (a bug upstream): the batch must not be applied."""


@dataclass(slots=True)
class OrderState:
    """Settlement's view of one order, loaded from and written back to the orders table."""

    order_id: int
    account: int
    side: Side
    status: Status
    executed: int  # lots
    cum_quote: int  # quote units
    hold_asset: str
    hold_remaining: int
    updated_ms: int
    dirty: bool = False
    # What the order-control rules need (amend releases, OCO holds, stop triggers):
    type: OrderType = OrderType.LIMIT
    price: int = 0  # ticks
    qty: int = 0  # lots, the original quantity (an amend lowers it)
    quote_qty: int = 0  # quote units: the funds cap of a market-like BUY
    working_ms: int = 0  # when a stop order triggered; 0 = not (yet)
    reason: Reason = Reason.NONE  # why it ended
    #: The other order of its OCO list (0 = none). The list's one hold sits on one leg at a
    #: time: a leg that ends while the partner lives hands its hold to the partner.
    partner: int = 0
    list_id: int = 0  # its order list, 0 = none


@dataclass(slots=True)
class TradeRow:
    symbol: str
    trade_id: int
    price: int  # ticks
    qty: int  # lots
    quote_qty: int  # quote units
    buyer_order: int
    seller_order: int
    buyer_account: int
    seller_account: int
    buyer_is_maker: bool
    buyer_fee: int  # base units
    seller_fee: int  # quote units
    ts: int


@dataclass(slots=True)
class Settlement:
    postings: list[Posting] = field(default_factory=list)
    trades: list[TradeRow] = field(default_factory=list)
    trading: list[TradingChanged] = field(default_factory=list)

    def balance_deltas(self) -> dict[tuple[int, str], tuple[int, int]]:
        """(account, asset) -> (delta available, delta locked), external account excluded."""
        acc: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
        for _ref, account, asset, bucket, amount in self.postings:
            if account == EXTERNAL_ACCOUNT:
                continue
            acc[(account, asset)][0 if bucket == "a" else 1] += amount
        return {k: (v[0], v[1]) for k, v in acc.items() if v[0] or v[1]}


def fee(amount: int, rate_ppm: int) -> int:
    """Fees round down to the unit: the user is never charged above the published rate."""
    return amount * rate_ppm // PPM


@dataclass(frozen=True, slots=True)
class TradeAmounts:
    """What one trade moves: the buyer receives ``base - buyer_fee`` (base units), the
    seller ``quote - seller_fee`` (quote units); the maker pays the maker rate."""

    base: int
    quote: int
    buyer_fee: int
    seller_fee: int
    buyer_is_maker: bool


def trade_amounts(rules: PairRules, ev: Trade) -> TradeAmounts:
    """The one computation of a trade's amounts and fees (the ledger and the reports)."""
    base = rules.qty_units(ev.qty)
    quote = rules.notional(ev.price, ev.qty)
    buyer_is_maker = ev.taker_side == Side.SELL
    maker, taker = rules.maker_fee_ppm, rules.taker_fee_ppm
    return TradeAmounts(base, quote, fee(base, maker if buyer_is_maker else taker),
                        fee(quote, taker if buyer_is_maker else maker), buyer_is_maker)


def settle_batch(
    rules: PairRules, events: list[Event], orders: dict[int, OrderState]
) -> Settlement:
    """Apply one symbol's events to ``orders`` (mutated, marked dirty) and return postings.

    Refusals (``CancelRejected``, ``AmendRejected``) change nothing in the ledger: the
    gateway reads the unchanged order. Order lists: ``orders`` must hold both legs of every
    list an event names (see ``OrderState.partner``).

    Raises:
        LedgerError: an event names an unknown order, spends or releases more than its
            hold, or ends or amends an order that has ended.
    """
    out = Settlement()
    sym = rules.symbol
    for ev in events:
        if isinstance(ev, Trade):
            _trade(rules, sym, ev, orders, out)
        elif isinstance(ev, Rested):
            o = _get(orders, ev.order_id)
            if o.status == Status.PENDING_NEW:
                o.status = Status.PARTIALLY_FILLED if o.executed else Status.NEW
            o.updated_ms = ev.ts
            o.dirty = True
        elif isinstance(ev, Done):
            o = _get(orders, ev.order_id)
            if o.status in TERMINAL:
                raise LedgerError(f"order {o.order_id} finished twice")
            o.status = Status(ev.status)
            o.reason = Reason(ev.reason)
            o.updated_ms = ev.ts
            o.dirty = True
            if o.hold_remaining:
                partner = _live_partner(o, orders)
                if partner is not None:
                    # One hold for the list, in one locked bucket: it changes hands with
                    # no posting and is released when the last leg ends.
                    partner.hold_remaining += o.hold_remaining
                    partner.dirty = True
                    o.hold_remaining = 0
                else:
                    _release(o, o.hold_remaining, out)
        elif isinstance(ev, Accepted):
            o = _get(orders, ev.order_id)
            if o.status == Status.PENDING_NEW:
                o.status = Status.NEW
            o.updated_ms = ev.ts
            o.dirty = True
        elif isinstance(ev, Triggered):
            o = _get(orders, ev.order_id)
            o.working_ms = ev.ts
            o.updated_ms = ev.ts
            o.dirty = True
        elif isinstance(ev, Amended):
            _amend(rules, ev, orders, out)
        elif isinstance(ev, TradingChanged):
            out.trading.append(ev)
    return out


def _release(o: OrderState, amount: int, out: Settlement, kind: str = "release") -> None:
    """Move ``amount`` of the order's hold from locked back to available."""
    if amount > o.hold_remaining:
        raise LedgerError(
            f"order {o.order_id} releases {amount} {o.hold_asset} but holds {o.hold_remaining}"
        )
    if amount:
        ref = f"{kind}:{o.order_id}"
        out.postings.append((ref, o.account, o.hold_asset, "l", -amount))
        out.postings.append((ref, o.account, o.hold_asset, "a", amount))
        o.hold_remaining -= amount


def _live_partner(o: OrderState, orders: dict[int, OrderState]) -> OrderState | None:
    """The order's OCO partner when that one has not ended (its hold may go there)."""
    if not o.partner:
        return None
    p = _get(orders, o.partner)
    return None if p.status in TERMINAL else p


def list_leg_cost(rules: PairRules, o: OrderState) -> int:
    """What an unexecuted leg of a list can cost at most, in its hold asset: the quantity
    for a SELL, the limit notional for a limit-priced BUY, the funds cap of a market-like
    BUY (a STOP_LOSS / TAKE_PROFIT). A list holds the larger cost of its two legs."""
    return order_cost(rules, o.side, o.type, o.price, o.qty, o.quote_qty)


def _amend(
    rules: PairRules, ev: Amended, orders: dict[int, OrderState], out: Settlement
) -> None:
    """The order's quantity is now ``new_qty``: release the hold of the ``reduced`` lots
    (their limit notional for a BUY, their base units for a SELL). In a live OCO list the
    list still holds the larger cost of its two legs, so only what exceeds it is freed."""
    o = _get(orders, ev.order_id)
    if o.status in TERMINAL:
        raise LedgerError(f"order {o.order_id} amended after it ended")
    o.qty = ev.new_qty
    o.updated_ms = ev.ts
    o.dirty = True
    partner = _live_partner(o, orders)
    if partner is not None:
        holder = o if o.hold_remaining else partner
        total = o.hold_remaining + partner.hold_remaining
        need = max(list_leg_cost(rules, o), list_leg_cost(rules, partner))
        _release(holder, max(0, total - need), out, "amend")
        holder.dirty = True
        return
    if o.side == Side.SELL:
        _release(o, rules.qty_units(ev.reduced), out, "amend")
    else:
        _release(o, rules.notional(o.price, ev.reduced), out, "amend")


def _get(orders: dict[int, OrderState], order_id: int) -> OrderState:
    try:
        return orders[order_id]
    except KeyError:
        raise LedgerError(f"event for unknown order {order_id}") from None


def _trade(
    rules: PairRules, sym: str, ev: Trade, orders: dict[int, OrderState], out: Settlement
) -> None:
    taker = _get(orders, ev.taker_order)
    maker = _get(orders, ev.maker_order)
    amounts = trade_amounts(rules, ev)
    buyer_is_maker = amounts.buyer_is_maker
    buyer, seller = (maker, taker) if buyer_is_maker else (taker, maker)
    base_amt, quote_amt = amounts.base, amounts.quote
    buyer_fee, seller_fee = amounts.buyer_fee, amounts.seller_fee
    _spend(buyer, quote_amt)
    _spend(seller, base_amt)
    ref = f"trade:{sym}:{ev.trade_id}"
    p = out.postings
    p.append((ref, seller.account, rules.base, "l", -base_amt))
    p.append((ref, buyer.account, rules.base, "a", base_amt - buyer_fee))
    p.append((ref, buyer.account, rules.quote, "l", -quote_amt))
    p.append((ref, seller.account, rules.quote, "a", quote_amt - seller_fee))
    if buyer_fee:
        p.append((ref, FEE_ACCOUNT, rules.base, "a", buyer_fee))
    if seller_fee:
        p.append((ref, FEE_ACCOUNT, rules.quote, "a", seller_fee))
    for o in (taker, maker):
        o.executed += ev.qty
        o.cum_quote += quote_amt
        o.updated_ms = ev.ts
        o.dirty = True
        if o.status in (Status.PENDING_NEW, Status.NEW):
            o.status = Status.PARTIALLY_FILLED
    out.trades.append(
        TradeRow(
            sym, ev.trade_id, ev.price, ev.qty, quote_amt, buyer.order_id, seller.order_id,
            buyer.account, seller.account, buyer_is_maker, buyer_fee, seller_fee, ev.ts,
        )
    )


def _spend(o: OrderState, amount: int) -> None:
    if amount > o.hold_remaining:
        raise LedgerError(
            f"order {o.order_id} spends {amount} {o.hold_asset} but holds {o.hold_remaining}"
        )
    o.hold_remaining -= amount


def check_balanced(postings: list[Posting]) -> None:
    """Every ledger transaction sums to zero per asset.

    Raises:
        LedgerError: an unbalanced transaction.
    """
    sums: dict[tuple[str, str], int] = defaultdict(int)
    for ref, _account, asset, _bucket, amount in postings:
        sums[(ref, asset)] += amount
    bad = {k: v for k, v in sums.items() if v}
    if bad:
        raise LedgerError(f"unbalanced postings: {bad}")
