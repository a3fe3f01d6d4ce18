"""Orders: admission (every pre-trade rule, pure) and the order use cases over ports.

An order's path: the entry point parses the request once into a typed :class:`PlaceOrder`
(or :class:`PlaceOco`); :func:`admit` checks it against the pair's rules, the reference
price and the time, and either refuses it (a :class:`Refusal` in Binance's code and words)
or returns the :class:`OrderRequest` with its hold; :class:`Orders` locks the hold and
creates the order (:class:`OrderStore`), appends the command to the symbol's log
(:class:`CommandLog`) and, for a result, waits until settlement has applied it
(:class:`Settled`). Use cases refuse by raising :class:`OrderRefused`; entry points
translate it (the gateway into Binance's ``{"code", "msg"}``). The read-only queries (an
order, open orders, history, trades, order lists, balances) are :class:`OrderQueries`,
over the ledger's read side (:class:`OrderHistory`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import IntEnum
from typing import Protocol

from tradeplane import stagestamps
from tradeplane.domain.model import (
    STOP_TYPES,
    TERMINAL,
    Amend,
    Cancel,
    CancelAll,
    Command,
    NewOrder,
    NewOrderList,
    OrderType,
    Reason,
    Side,
    Status,
    StpMode,
    TimeInForce,
)
from tradeplane.domain.money import AmountError, to_units
from tradeplane.domain.pairs import (
    FilterError,
    PairRules,
    check_iceberg,
    check_notional,
    check_price_band,
    order_cost,
    price_to_ticks,
    qty_to_lots,
    stop_market_cap,
)
from tradeplane.usecases.errors import Unavailable, UseCaseError


# --------------------------------------------------------------------------- requests
@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An admitted order: integer ticks, lots and units, with its hold."""

    account: int
    symbol: str
    client_order_id: str
    side: Side
    type: OrderType
    tif: TimeInForce
    price: int
    qty: int
    quote_qty: int
    by_quote: bool
    hold_asset: str
    hold: int
    ts: int
    stop_price: int = 0  # ticks
    iceberg_qty: int = 0  # visible lots
    stp: StpMode = StpMode.NONE
    good_till: int = 0  # ms
    list_id: int = 0  # its order list, once it has one

    def command(self, order_id: int) -> NewOrder:
        """The engine command for this order once it has its id (the only mapping: the
        gateway and the outbox relay send exactly the same command)."""
        return NewOrder(order_id, self.account, self.side, self.type, self.tif, self.price,
                        self.qty, self.quote_qty, self.by_quote, self.ts, self.stop_price,
                        self.iceberg_qty, self.stp, self.good_till, self.list_id)


@dataclass(frozen=True, slots=True)
class ListRequest:
    """An OCO list: two legs (same account, symbol, side) and ONE hold for both, taken on
    the first leg (``hold`` = the larger cost of the two legs, in ``hold_asset``)."""

    account: int
    symbol: str
    list_client_order_id: str
    legs: tuple[OrderRequest, OrderRequest]
    hold_asset: str
    hold: int
    ts: int

    def command(self, list_id: int, order_ids: Sequence[int]) -> NewOrderList:
        """The engine command for the list (gateway and outbox relay alike)."""
        return NewOrderList(
            list_id, self.account,
            [replace(leg, list_id=list_id).command(oid)
             for leg, oid in zip(self.legs, order_ids, strict=True)],
            self.ts,
        )


class PlaceResult(IntEnum):
    PLACED = 0
    INSUFFICIENT = 1
    DUPLICATE = 2


#: Order types with a limit price (an iceberg, GTD and a time in force apply to these).
LIMIT_PRICED = frozenset({OrderType.LIMIT, OrderType.LIMIT_MAKER, OrderType.STOP_LOSS_LIMIT,
                          OrderType.TAKE_PROFIT_LIMIT})
#: Order types a time in force applies to.
TIF_TYPES = frozenset({OrderType.LIMIT, OrderType.STOP_LOSS_LIMIT,
                       OrderType.TAKE_PROFIT_LIMIT})
AMENDABLE = LIMIT_PRICED
OCO_TYPES = frozenset({OrderType.LIMIT_MAKER, OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT,
                       OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_LIMIT})
_LOSS = frozenset({OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT})
_PROFIT = frozenset({OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_LIMIT})


@dataclass(frozen=True, slots=True)
class OrderSpec:
    """One order's controls as the entry point parsed them: types, presence and the
    combinations that need no rules are already checked; amounts are still decimals.

    ``prefix`` is the leg's parameter prefix in an OCO list ("above", "below"), "" for a
    plain order: refusals name the parameter as the client sent it."""

    type: OrderType
    client_order_id: str
    tif: TimeInForce = TimeInForce.GTC
    price: Decimal | None = None
    stop_price: Decimal | None = None
    iceberg_qty: Decimal | None = None  # None or positive
    good_till: int | None = None
    prefix: str = ""

    def param(self, name: str) -> str:
        """The client's name of a parameter of this order (``goodTillDate``,
        ``aboveGoodTillDate``...)."""
        return f"{self.prefix}{name[0].upper()}{name[1:]}" if self.prefix else name


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """``POST /api/v3/order`` parsed. A MARKET order has exactly one of ``quantity`` and
    ``quote_qty``; every other type a ``quantity`` and no ``quote_qty``."""

    account: int
    symbol: str
    side: Side
    order: OrderSpec
    quantity: Decimal | None
    quote_qty: Decimal | None = None
    stp: StpMode | None = None  # None: the pair's default


@dataclass(frozen=True, slots=True)
class PlaceOco:
    """``POST /api/v3/orderList/oco`` parsed: legs of one side and quantity."""

    account: int
    symbol: str
    side: Side
    list_client_order_id: str
    above: OrderSpec
    below: OrderSpec
    quantity: Decimal
    stp: StpMode | None = None


# --------------------------------------------------------------------------- refusals
@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an order was not taken, in Binance's code and words; ``outcome`` labels it for
    metrics ("filter", "insufficient", "duplicate", "unknown", "refused")."""

    code: int
    msg: str
    status: int = 400
    outcome: str = "refused"


class OrderRefused(UseCaseError):
    """An order use case refused; ``refusal`` says why in Binance's terms."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.msg)
        self.refusal = refusal


MARKET_CLOSED = Refusal(-1013, "Market is closed.")
INSUFFICIENT = Refusal(-2010, "Account has insufficient balance for requested action.",
                       outcome="insufficient")
DUPLICATE = Refusal(-2010, "Duplicate order sent.", outcome="duplicate")
STATUS_UNKNOWN = Refusal(
    -1007, "Timeout waiting for response from backend server. Send status unknown;"
           " execution status unknown.", 503, "unknown")
UNKNOWN_ORDER_CANCEL = Refusal(-2011, "Unknown order sent.")
UNKNOWN_LIST = Refusal(-2011, "Unknown order list sent.")
NO_SUCH_ORDER = Refusal(-2013, "Order does not exist.")
NO_SUCH_LIST = Refusal(-2013, "Order list does not exist.")
UNSUPPORTED_COMBINATION = Refusal(-1014, "Unsupported order combination.")
PRICES_CROSSED = Refusal(-2010, "The relationship of the prices for the orders is not correct.")

#: Why the engine refused an order, in Binance's -2010 wording.
_ENGINE_REJECTIONS = {
    Reason.WOULD_TAKE: "Order would immediately match and take.",
    Reason.WOULD_TRIGGER: "Order would trigger immediately.",
    Reason.HALTED: "Market is closed.",
    Reason.BAD_LIST: PRICES_CROSSED.msg,
}


def engine_rejection(reason: Reason) -> Refusal:
    """-2010 for an order the engine refused, naming why."""
    return Refusal(-2010, _ENGINE_REJECTIONS.get(reason, "NEW_ORDER_REJECTED"))


def _filter(exc: FilterError) -> Refusal:
    return Refusal(-1013, exc.msg, outcome="filter")


class _Refused(Exception):
    """Admission's internal short cut: a refusal found deep in a leg's checks."""

    def __init__(self, refusal: Refusal) -> None:
        self.refusal = refusal


def oco_placement(side: Side, above: OrderType, below: OrderType) -> Refusal | None:
    """Binance's OCO leg rules: a SELL takes profit (or rests a LIMIT_MAKER) above and
    stops the loss below; a BUY the mirror image. None when the legs are placed right."""
    if above not in OCO_TYPES or below not in OCO_TYPES:
        return Refusal(-1158, "Order type not supported in OCO.")
    if above == below == OrderType.LIMIT_MAKER:
        return Refusal(-1168, "At least one OCO order must be contingent.")
    if side == Side.SELL:
        if below == OrderType.LIMIT_MAKER:
            return Refusal(-1166, "A limit order in a sell OCO must be above.")
        if above in _LOSS:
            return Refusal(-1197, "A stop loss order in a sell OCO must be below.")
        if below in _PROFIT:
            return Refusal(-1199, "A take profit order in a sell OCO must be above.")
    else:
        if above == OrderType.LIMIT_MAKER:
            return Refusal(-1165, "A limit order in a buy OCO must be below.")
        if below in _LOSS:
            return Refusal(-1196, "A stop loss order in a buy OCO must be above.")
        if above in _PROFIT:
            return Refusal(-1198, "A take profit order in a buy OCO must be below.")
    return None


# --------------------------------------------------------------------------- admission
def admit(rules: PairRules, request: PlaceOrder, reference: int | None,
          now: int) -> OrderRequest | Refusal:
    """Every pre-trade rule of one order: the market's state, the filters (LOT_SIZE,
    PRICE_FILTER, NOTIONAL, PERCENT_PRICE, ICEBERG_PARTS), GTD in the future, and the hold.

    ``reference`` is the pair's reference price in ticks (for a MARKET order: what it is
    sized against, see ``ReferencePrices.market_reference``), ``now`` in ms."""
    if rules.trading != "enabled":
        return MARKET_CLOSED
    stp = request.stp if request.stp is not None else StpMode[rules.default_stp]
    spec = request.order
    try:
        if spec.type == OrderType.MARKET:
            return _market(rules, request, stp, reference, now)
        assert request.quantity is not None
        qty = qty_to_lots(rules, request.quantity)
        return _controlled(rules, request.account, spec, request.side, qty, stp, reference,
                           now)
    except FilterError as exc:
        return _filter(exc)
    except _Refused as exc:
        return exc.refusal


def admit_oco(rules: PairRules, request: PlaceOco, reference: int | None,
              now: int) -> ListRequest | Refusal:
    """:func:`admit` for an OCO list: its legs' placement, each leg's rules, the order of
    their prices, and ONE hold for both (the quantity for a SELL, the dearer leg for a
    BUY)."""
    above_t, below_t = request.above.type, request.below.type
    placement = oco_placement(request.side, above_t, below_t)
    if placement is not None:
        return placement
    if rules.trading != "enabled":
        return MARKET_CLOSED
    stp = request.stp if request.stp is not None else StpMode[rules.default_stp]
    try:
        qty = qty_to_lots(rules, request.quantity)
        above = _controlled(rules, request.account, request.above, request.side, qty, stp,
                            reference, now)
        below = _controlled(rules, request.account, request.below, request.side, qty, stp,
                            reference, now)
    except FilterError as exc:
        return _filter(exc)
    except _Refused as exc:
        return exc.refusal
    if TimeInForce.GTD in (above.tif, below.tif):
        return UNSUPPORTED_COMBINATION
    if _level(above) <= _level(below):
        return PRICES_CROSSED
    return ListRequest(request.account, rules.symbol, request.list_client_order_id,
                       (above, below),
                       above.hold_asset, max(above.hold, below.hold), now)


def _level(leg: OrderRequest) -> int:
    """Where a leg sits on the price axis: a stop's trigger, a LIMIT_MAKER's price."""
    return leg.stop_price if leg.type in STOP_TYPES else leg.price


def _market(rules: PairRules, request: PlaceOrder, stp: StpMode, ref: int | None,
            ts: int) -> OrderRequest:
    side = request.side
    account, symbol, cid = request.account, rules.symbol, request.order.client_order_id
    otype, gtc = OrderType.MARKET, TimeInForce.GTC
    band_up = 10_000 + rules.price_band_bps
    band_down = 10_000 - rules.price_band_bps
    if request.quantity is not None:
        qty = qty_to_lots(rules, request.quantity)
        if side == Side.SELL:
            return OrderRequest(account, symbol, cid, side, otype, gtc, 0, qty, 0, False,
                                rules.base, rules.qty_units(qty), ts, stp=stp)
        if ref:
            check_notional(rules, rules.notional(ref, qty))
        # Hold what the quantity could cost at the top of the price band; the engine
        # stops before spending more, and settlement releases what is left.
        cap = rules.notional(ref * band_up // 10_000 + 1, qty) if ref else 1
        return OrderRequest(account, symbol, cid, side, otype, gtc, 0, qty, cap, False,
                            rules.quote, cap, ts, stp=stp)
    assert request.quote_qty is not None
    try:
        quote_units = to_units(request.quote_qty)
    except AmountError:
        raise _Refused(Refusal(
            -1100, "Illegal characters found in parameter 'quoteOrderQty'; legal range is "
                   "'^[0-9]{1,20}$'.")) from None
    if quote_units <= 0:
        raise FilterError("Filter failure: NOTIONAL")
    check_notional(rules, quote_units)
    if side == Side.BUY:
        return OrderRequest(account, symbol, cid, side, otype, gtc, 0, 0, quote_units, True,
                            rules.quote, quote_units, ts, stp=stp)
    # SELL for a quote amount: hold enough base to get it at the bottom of the band.
    low = max(1, (ref or 1) * band_down // 10_000)
    lots = min(-(-quote_units // rules.notional(low, 1)), rules.max_qty // rules.lot)
    return OrderRequest(account, symbol, cid, side, otype, gtc, 0, lots, quote_units, True,
                        rules.base, rules.qty_units(lots), ts, stp=stp)


def _controlled(rules: PairRules, account: int, spec: OrderSpec, side: Side, qty: int,
                stp: StpMode, reference: int | None, ts: int) -> OrderRequest:
    """A LIMIT, LIMIT_MAKER or stop order's controls and hold, checked as Binance does.

    Raises:
        FilterError: a filter refuses the price, stop price or iceberg quantity.
        _Refused: any other refusal.
    """
    otype = spec.type
    limit_priced = otype in LIMIT_PRICED
    if spec.tif == TimeInForce.GTD:
        assert spec.good_till is not None
        if spec.good_till <= ts:
            name = spec.param("goodTillDate")
            raise _Refused(Refusal(-1130, f"Data sent for parameter '{name}' is not valid."))
    iceberg = 0
    if spec.iceberg_qty is not None:
        iceberg = qty_to_lots(rules, spec.iceberg_qty)
        if iceberg >= qty:
            raise _Refused(Refusal(-2010, "IcebergQty exceeds QTY."))
        check_iceberg(qty, iceberg)
    price = price_to_ticks(rules, spec.price) if spec.price is not None else 0
    stop = price_to_ticks(rules, spec.stop_price) if spec.stop_price is not None else 0
    if limit_priced:
        check_notional(rules, rules.notional(price, qty))
        check_price_band(rules, price, reference)
        quote_qty = 0
    else:  # STOP_LOSS / TAKE_PROFIT: a market order by quantity once triggered
        check_notional(rules, rules.notional(stop, qty))
        quote_qty = stop_market_cap(rules, stop, qty) if side == Side.BUY else 0
    hold = order_cost(rules, side, otype, price, qty, quote_qty)
    hold_asset = rules.quote if side == Side.BUY else rules.base
    return OrderRequest(account, rules.symbol, spec.client_order_id, side, otype, spec.tif,
                        price, qty, quote_qty, False, hold_asset, hold, ts, stop, iceberg,
                        stp, spec.good_till or 0)


# --------------------------------------------------------------------------- typed rows
@dataclass(frozen=True, slots=True)
class OrderRow:
    """An order as the ledger holds it (the store's columns, in their order)."""

    id: int
    account_id: int
    symbol: str
    client_order_id: str
    side: Side
    type: OrderType
    tif: TimeInForce
    price: int  # ticks
    qty: int  # lots
    quote_qty: int  # units
    by_quote: bool
    status: Status
    executed: int  # lots
    cum_quote: int  # units
    hold_asset: str
    hold_amount: int
    hold_remaining: int
    created_ms: int
    updated_ms: int
    stop_price: int  # ticks
    iceberg_qty: int  # lots
    stp: StpMode
    good_till: int  # ms
    working_ms: int
    order_list_id: int  # 0: none
    reason: Reason


@dataclass(frozen=True, slots=True)
class ListRow:
    """An order list (OCO)."""

    id: int
    account_id: int
    symbol: str
    list_client_order_id: str
    contingency: str
    status: str  # EXECUTING | ALL_DONE | REJECT
    created_ms: int
    updated_ms: int


@dataclass(frozen=True, slots=True)
class TradeRow:
    """A trade between two orders."""

    symbol: str
    trade_id: int
    price: int  # ticks
    qty: int  # lots
    quote_qty: int  # units
    buyer_order: int
    seller_order: int
    buyer_account: int
    seller_account: int
    buyer_is_maker: bool
    buyer_fee: int  # units of the asset the buyer received
    seller_fee: int
    ts: int


@dataclass(frozen=True, slots=True)
class BalanceRow:
    """An account's balance of one asset: what is free and what open orders hold."""

    asset: str
    free: int  # units
    locked: int  # units


@dataclass(frozen=True, slots=True)
class Window:
    """Which rows of a history to read (Binance's ``fromId``/``orderId``, ``startTime``,
    ``endTime``, ``limit``): from an id on, within a time range, else the latest
    ``limit``; oldest first."""

    from_id: int | None
    start_ms: int | None
    end_ms: int | None
    limit: int


# --------------------------------------------------------------------------- ports
class OrderStore(Protocol):
    """Orders with their holds, order lists and their trades."""

    async def place(self, req: OrderRequest) -> tuple[int | None, PlaceResult]:
        """Lock the hold and create the order: ``(order id, PLACED)`` or ``(None,
        INSUFFICIENT | DUPLICATE)`` with nothing left behind."""
        ...

    async def place_list(self, req: ListRequest) -> tuple[int | None, list[int], PlaceResult]:
        """Lock the list's one hold and create it with its legs, all or nothing."""
        ...

    async def order(self, account: int, symbol: str, order_id: int | None,
                    client_order_id: str | None) -> OrderRow | None: ...

    async def open_orders(self, account: int, symbol: str) -> Sequence[OrderRow]: ...

    async def rename(self, order_id: int, old_client_id: str, new_client_id: str) -> bool:
        """False when the new id is taken or the order no longer has the old one."""
        ...

    async def order_list(self, account: int, list_id: int | None,
                         list_client_id: str | None, symbol: str | None = None) -> ListRow | None:
        ...

    async def list_orders(self, list_ids: Sequence[int]) -> Mapping[int, Sequence[OrderRow]]:
        """Each list's orders in leg order."""
        ...

    async def trades(self, symbol: str, order_id: int) -> Sequence[TradeRow]: ...


class OrderHistory(Protocol):
    """The read side of the ledger: an account's orders, order lists, trades and
    balances, as the queries answer them."""

    async def order(self, account: int, symbol: str, order_id: int | None,
                    client_order_id: str | None) -> OrderRow | None:
        """By id, else the newest with the client order id."""
        ...

    async def open_orders(self, account: int, symbol: str | None) -> Sequence[OrderRow]:
        """Open orders (of every symbol when ``symbol`` is None), by id."""
        ...

    async def all_orders(self, account: int, symbol: str,
                         window: Window) -> Sequence[OrderRow]: ...

    async def my_trades(self, account: int, symbol: str, order_id: int | None,
                        window: Window) -> Sequence[TradeRow]:
        """The account's trades (of one of its orders when ``order_id``)."""
        ...

    async def order_list(self, account: int, list_id: int | None,
                         list_client_id: str | None, symbol: str | None = None) -> ListRow | None:
        ...

    async def open_order_lists(self, account: int) -> Sequence[ListRow]:
        """Lists still executing, by id."""
        ...

    async def list_orders(self, list_ids: Sequence[int]) -> Mapping[int, Sequence[OrderRow]]:
        """Each list's orders in leg order."""
        ...

    async def balances(self, account: int) -> Sequence[BalanceRow]:
        """Every balance of the account, by asset."""
        ...

    async def public_trades(self, symbol: str, from_id: int | None,
                            limit: int) -> Sequence[TradeRow]:
        """The symbol's settled trades: ``limit`` from ``from_id`` on, else the latest
        ``limit``; oldest first."""
        ...


class CommandLog(Protocol):
    async def send(self, symbol: str, cmd: Command) -> int:
        """Append ``cmd`` to the symbol's command log; the stored message's sequence.

        Raises:
            Unavailable: not (provably) stored.
        """
        ...


class Settled(Protocol):
    async def wait(self, symbol: str, seq: int, timeout: float) -> bool:
        """True once settlement has applied the symbol's log up to ``seq``; False when
        it has not within ``timeout`` seconds."""
        ...


# --------------------------------------------------------------------------- use cases
@dataclass(frozen=True, slots=True)
class Placed:
    """An order stored with its hold and acknowledged by the command log."""

    order_id: int
    seq: int


@dataclass(frozen=True, slots=True)
class ListPlaced:
    list_id: int
    order_ids: list[int]
    seq: int


@dataclass(frozen=True, slots=True)
class Amended:
    before: OrderRow
    after: OrderRow
    seq: int
    list_legs: Sequence[OrderRow] | None  # the list it belongs to, with its legs
    order_list: ListRow | None


@dataclass(frozen=True, slots=True)
class Replaced:
    """A cancel-replace's two outcomes: the order as canceled or why the cancel was
    refused, and the new order as placed, why it was refused, or None when it was not
    attempted (the cancel failed and failures stop the replace)."""

    canceled: OrderRow | Refusal
    placed: Placed | Refusal | None

    @property
    def complete(self) -> bool:
        """Both halves succeeded."""
        return isinstance(self.canceled, OrderRow) and isinstance(self.placed, Placed)


class Orders:
    """Place, cancel, amend, OCO lists and cancel-all. Every method raises
    :class:`OrderRefused` (Binance's code and words) for each refusal, including
    -1007 when the command log did not take a command or settlement did not apply it
    within ``timeout`` seconds."""

    __slots__ = ("log", "settled", "store", "timeout")

    def __init__(self, store: OrderStore, log: CommandLog, settled: Settled,
                 timeout: float) -> None:
        self.store = store
        self.log = log
        self.settled = settled
        self.timeout = timeout

    async def _send(self, symbol: str, cmd: Command) -> int:
        try:
            return await self.log.send(symbol, cmd)
        except Unavailable:
            # Stored in the ledger but not (provably) on the bus: the outbox relay
            # re-sends it once the engine has provably processed the log past it (and the
            # order is still pending), so it is neither lost nor doubled.
            raise OrderRefused(STATUS_UNKNOWN) from None

    async def _wait(self, symbol: str, seq: int) -> None:
        if not await self.settled.wait(symbol, seq, self.timeout):
            raise OrderRefused(STATUS_UNKNOWN)

    async def place(self, req: OrderRequest) -> Placed:
        """Lock the admitted order's hold, create it, append its command."""
        order_id, result = await self.store.place(req)
        stagestamps.stamp(stagestamps.HELD)
        if result == PlaceResult.DUPLICATE:
            raise OrderRefused(DUPLICATE)
        if order_id is None:
            raise OrderRefused(INSUFFICIENT)
        seq = await self._send(req.symbol, req.command(order_id))
        stagestamps.stamp(stagestamps.PUBLISHED)
        return Placed(order_id, seq)

    async def result(self, account: int, symbol: str, placed: Placed) -> OrderRow:
        """The order once settlement has applied its command; refused when the engine
        rejected it."""
        await self._wait(symbol, placed.seq)
        row = await self.store.order(account, symbol, placed.order_id, None)
        assert row is not None
        if row.status == Status.REJECTED:
            raise OrderRefused(engine_rejection(Reason(row.reason)))
        return row

    async def place_oco(self, req: ListRequest) -> ListPlaced:
        """Lock the list's one hold, create it and its legs, append its command."""
        list_id, order_ids, result = await self.store.place_list(req)
        if result == PlaceResult.DUPLICATE:
            raise OrderRefused(DUPLICATE)
        if list_id is None:
            raise OrderRefused(INSUFFICIENT)
        seq = await self._send(req.symbol, req.command(list_id, order_ids))
        return ListPlaced(list_id, order_ids, seq)

    async def oco_result(self, account: int, symbol: str,
                         placed: ListPlaced) -> tuple[ListRow, Sequence[OrderRow]]:
        """The list and its legs once settled; refused when the engine rejected it."""
        await self._wait(symbol, placed.seq)
        lst = await self.store.order_list(account, placed.list_id, None)
        assert lst is not None
        rows = (await self.store.list_orders([placed.list_id]))[placed.list_id]
        if lst.status == "REJECT":
            refused = [r for r in rows if r.reason != Reason.BAD_LIST] or rows
            raise OrderRefused(engine_rejection(Reason(refused[0].reason)))
        return lst, rows

    async def cancel(self, account: int, symbol: str, order_id: int | None,
                     client_order_id: str | None, now: int) -> OrderRow:
        """Cancel an open order; the order as canceled."""
        row = await self.store.order(account, symbol, order_id, client_order_id)
        if row is None or Status(row.status) not in (
            Status.PENDING_NEW, Status.NEW, Status.PARTIALLY_FILLED
        ):
            raise OrderRefused(UNKNOWN_ORDER_CANCEL)
        await self._wait(symbol, await self._send(symbol, Cancel(row.id, account, now)))
        after = await self.store.order(account, symbol, row.id, None)
        assert after is not None
        if after.status != Status.CANCELED:
            raise OrderRefused(UNKNOWN_ORDER_CANCEL)
        return after

    async def cancel_all(self, account: int, symbol: str, now: int) -> list[OrderRow]:
        """Cancel every open order of the account on the symbol; those canceled."""
        before = await self.store.open_orders(account, symbol)
        if not before:
            raise OrderRefused(UNKNOWN_ORDER_CANCEL)
        await self._wait(symbol, await self._send(symbol, CancelAll(account, now)))
        out = []
        for r in before:
            row = await self.store.order(account, symbol, r.id, None)
            if row is not None and row.status == Status.CANCELED:
                out.append(row)
        return out

    async def cancel_list(
        self, account: int, symbol: str, list_id: int | None, list_client_id: str | None,
        now: int,
    ) -> tuple[ListRow, Sequence[OrderRow]]:
        """Cancel an OCO list (the engine cancels both legs when either is canceled);
        the list and its legs afterwards."""
        lst = await self.store.order_list(account, list_id, list_client_id, symbol)
        if lst is None or lst.status != "EXECUTING":
            raise OrderRefused(UNKNOWN_LIST)
        legs = (await self.store.list_orders([lst.id]))[lst.id]
        live = [r for r in legs if Status(r.status) not in TERMINAL]
        if not live:
            raise OrderRefused(UNKNOWN_LIST)
        await self._wait(symbol, await self._send(symbol, Cancel(live[0].id, account,
                                                                 now)))
        after = await self.store.order_list(account, lst.id, None)
        assert after is not None
        legs = (await self.store.list_orders([after.id]))[after.id]
        if not any(r.status == Status.CANCELED for r in legs):
            raise OrderRefused(UNKNOWN_LIST)
        return after, legs

    async def amend(self, rules: PairRules, account: int, order_id: int | None,
                    client_order_id: str | None, new_qty: Decimal, new_client_id: str,
                    now: int) -> Amended:
        """Reduce an open order's quantity, keeping its priority; it takes
        ``new_client_id`` (Binance semantics), given back if the engine refuses."""
        symbol = rules.symbol
        row = await self.store.order(account, symbol, order_id, client_order_id)
        if row is None or Status(row.status) in TERMINAL:
            raise OrderRefused(NO_SUCH_ORDER)
        try:
            qty = qty_to_lots(rules, new_qty)
        except FilterError as exc:
            raise OrderRefused(_filter(exc)) from None
        if qty > row.qty:
            raise OrderRefused(Refusal(-2038, "Order amend (quantity increase) is not "
                                              "supported."))
        if qty == row.qty:
            raise OrderRefused(Refusal(-2038, "The requested action would change no state; "
                                              "rejecting"))
        if OrderType(row.type) not in AMENDABLE:
            raise OrderRefused(Refusal(-2038, "Unsupported order combination"))
        if rules.trading == "halted":
            raise OrderRefused(Refusal(-2038, "Market is closed."))
        old_cid = row.client_order_id
        renamed = new_client_id != old_cid
        if renamed and not await self.store.rename(row.id, old_cid, new_client_id):
            raise OrderRefused(Refusal(-2038, "Duplicate order sent."))
        seq = await self._send(symbol, Amend(row.id, account, qty, now))
        await self._wait(symbol, seq)
        after = await self.store.order(account, symbol, row.id, None)
        assert after is not None
        # An Amended event always lowers the order's quantity (to newQty, or to what had
        # executed when that was more: then the order is FILLED); AmendRejected changes
        # nothing.
        if after.qty == row.qty:  # the engine refused it
            if renamed:
                await self.store.rename(row.id, new_client_id, old_cid)
            if Status(after.status) in TERMINAL:
                raise OrderRefused(NO_SUCH_ORDER)
            raise OrderRefused(Refusal(
                -2038, "Order amend is not supported for this symbol."
                if rules.trading != "halted" else "Market is closed."))
        lst = legs = None
        if after.order_list_id:
            lst = await self.store.order_list(account, after.order_list_id, None)
            assert lst is not None
            legs = (await self.store.list_orders([lst.id]))[lst.id]
        return Amended(row, after, seq, legs, lst)


    async def cancel_replace(
        self, account: int, symbol: str, order_id: int | None, client_order_id: str | None,
        new: OrderRequest | Refusal, now: int, *, allow_failure: bool,
    ) -> Replaced:
        """Cancel an open order, then place ``new`` (admitted by the caller; a
        :class:`Refusal` when admission refused it) in its place (Binance's
        ``cancelReplace``). The cancel is settled before the new order is placed, so the
        new order may use the funds the old one held. When the cancel is refused, the new
        order is placed only with ``allow_failure`` (``ALLOW_FAILURE``; else
        ``STOP_ON_FAILURE``: not attempted). A refusal of either half is an outcome, not an
        error.

        Raises:
            OrderRefused: -1007 when a command's fate is unknown (the log or settlement did
                not answer): what happened cannot be reported as an outcome.
        """
        canceled: OrderRow | Refusal
        try:
            canceled = await self.cancel(account, symbol, order_id, client_order_id, now)
        except OrderRefused as exc:
            if exc.refusal is STATUS_UNKNOWN:
                raise
            canceled = exc.refusal
            if not allow_failure:
                return Replaced(canceled, None)
        if isinstance(new, Refusal):
            return Replaced(canceled, new)
        try:
            placed: Placed | Refusal = await self.place(new)
        except OrderRefused as exc:
            if exc.refusal is STATUS_UNKNOWN:
                raise
            placed = exc.refusal
        return Replaced(canceled, placed)


class OrderQueries:
    """The read-only order queries: an order, open orders, order history, trades, order
    lists and balances of an account. An unknown order or list is refused
    (:class:`OrderRefused`, -2013); the rest answer what there is, possibly nothing."""

    __slots__ = ("history",)

    def __init__(self, history: OrderHistory) -> None:
        self.history = history

    async def order(self, account: int, symbol: str, order_id: int | None,
                    client_order_id: str | None) -> OrderRow:
        row = await self.history.order(account, symbol, order_id, client_order_id)
        if row is None:
            raise OrderRefused(NO_SUCH_ORDER)
        return row

    async def open_orders(self, account: int, symbol: str | None) -> Sequence[OrderRow]:
        return await self.history.open_orders(account, symbol)

    async def all_orders(self, account: int, symbol: str,
                         window: Window) -> Sequence[OrderRow]:
        return await self.history.all_orders(account, symbol, window)

    async def my_trades(self, account: int, symbol: str, order_id: int | None,
                        window: Window) -> Sequence[TradeRow]:
        return await self.history.my_trades(account, symbol, order_id, window)

    async def order_list(self, account: int, list_id: int | None,
                         list_client_id: str | None) -> tuple[ListRow, Sequence[OrderRow]]:
        """The list and its legs."""
        lst = await self.history.order_list(account, list_id, list_client_id)
        if lst is None:
            raise OrderRefused(NO_SUCH_LIST)
        return lst, (await self.history.list_orders([lst.id]))[lst.id]

    async def open_order_lists(self, account: int) -> list[tuple[ListRow, Sequence[OrderRow]]]:
        """Each executing list with its legs (one read of the legs for all)."""
        lists = await self.history.open_order_lists(account)
        legs = await self.history.list_orders([lst.id for lst in lists])
        return [(lst, legs[lst.id]) for lst in lists]

    async def balances(self, account: int) -> Sequence[BalanceRow]:
        return await self.history.balances(account)

    async def public_trades(self, symbol: str, from_id: int | None,
                            limit: int) -> Sequence[TradeRow]:
        """A market's settled trades (public: no account)."""
        return await self.history.public_trades(symbol, from_id, limit)
