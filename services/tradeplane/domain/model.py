"""Commands into the matching engine and events out of it: immutable, versioned, one codec.

Prices are integer ticks, quantities integer lots, notionals integer quote units (see
``PairRules``). Structs are encoded as MessagePack arrays only at the edge (``codec``).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

import msgspec

SCHEMA_VERSION: Final = 1


class Side(IntEnum):
    BUY = 1
    SELL = 2


class OrderType(IntEnum):
    """Binance spot order types. The four stop types wait off the book, without priority,
    until the last trade price reaches ``stop_price`` (see ``STOP_TRIGGERS_ABOVE``), then
    work as MARKET (``STOP_LOSS``, ``TAKE_PROFIT``) or as LIMIT (the ``*_LIMIT`` ones)."""

    LIMIT = 1
    MARKET = 2
    LIMIT_MAKER = 3
    STOP_LOSS = 4
    STOP_LOSS_LIMIT = 5
    TAKE_PROFIT = 6
    TAKE_PROFIT_LIMIT = 7


STOP_TYPES: Final = frozenset(
    {OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT,
     OrderType.TAKE_PROFIT_LIMIT}
)
MARKET_LIKE: Final = frozenset({OrderType.MARKET, OrderType.STOP_LOSS, OrderType.TAKE_PROFIT})


def stop_triggers_above(otype: OrderType, side: Side) -> bool:
    """Whether a stop order triggers when the last price rises to ``stop_price`` (True) or
    falls to it (False): a BUY stop-loss and a SELL take-profit trigger at or above it, a
    SELL stop-loss and a BUY take-profit at or below it."""
    loss = otype in (OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT)
    return loss == (side == Side.BUY)


class TimeInForce(IntEnum):
    GTC = 1
    IOC = 2
    FOK = 3
    GTD = 4  # good till ``good_till`` (ms): expired by the engine's ``Tick`` commands


class StpMode(IntEnum):
    """Self-trade prevention: what happens when a taker would trade with a resting order of
    the same account. The taker's mode decides (Binance semantics); expired orders end
    ``EXPIRED_IN_MATCH`` with reason ``SELF_TRADE``."""

    NONE = 0
    EXPIRE_TAKER = 1
    EXPIRE_MAKER = 2
    EXPIRE_BOTH = 3


class Status(IntEnum):
    """Binance order statuses; ``PENDING_NEW`` is ours until the engine has seen the order."""

    PENDING_NEW = 0
    NEW = 1
    PARTIALLY_FILLED = 2
    FILLED = 3
    CANCELED = 4
    REJECTED = 5
    EXPIRED = 6
    EXPIRED_IN_MATCH = 7  # expired by self-trade prevention


TERMINAL: Final = frozenset(
    {Status.FILLED, Status.CANCELED, Status.REJECTED, Status.EXPIRED, Status.EXPIRED_IN_MATCH}
)


class Reason(IntEnum):
    """Why an order ended or a request was refused."""

    NONE = 0
    WOULD_TAKE = 1  # LIMIT_MAKER would immediately match
    NO_LIQUIDITY = 2  # MARKET/IOC/FOK found nothing (enough) to match
    UNKNOWN_ORDER = 3
    DUPLICATE_ORDER = 4
    HALTED = 5
    CAP_REACHED = 6  # a market order hit its funds cap before its quantity
    WOULD_TRIGGER = 7  # a stop order whose condition already holds at placement
    SELF_TRADE = 8  # self-trade prevention expired it
    GTD_EXPIRED = 9  # its good-till date passed (engine clock)
    LIST_DONE = 10  # the other order of its OCO list executed, triggered or ended
    NOT_AMENDABLE = 11  # amend: not a resting limit order, or new quantity not smaller
    BAD_LIST = 12  # an order list that is malformed or one of whose legs was refused


class TradingState(IntEnum):
    ENABLED = 1
    HALTED = 2  # nothing accepted, cancels included
    CANCEL_ONLY = 3


_STRUCT = {"array_like": True, "frozen": True, "gc": False, "tag_field": "k"}


# --------------------------------------------------------------------------- commands
# Fields added after version 1 go last with a default, so older encoded commands in a
# stream still decode (MessagePack arrays may be shorter than the struct).
class NewOrder(msgspec.Struct, tag="N", **_STRUCT):  # type: ignore[call-arg]
    """Place an order.

    ``qty`` caps the executed lots (0 = no cap, only for a market order by quote);
    ``quote_qty`` caps the executed notional in quote units (0 = no cap). A market BUY by
    quantity carries its funds hold in ``quote_qty``; ``by_quote`` marks ``quoteOrderQty``
    orders, which end FILLED when the next lot would exceed ``quote_qty``.

    Order controls: ``stop_price`` (ticks) for the stop types; ``iceberg_qty`` the visible
    lots of an iceberg (0 = all visible; GTC limit orders only); ``stp`` the self-trade
    prevention mode; ``good_till`` the expiry (ms) of a ``GTD`` order; ``list_id`` the
    order list (OCO) the order belongs to, 0 for none.
    """

    order_id: int
    account: int
    side: Side
    type: OrderType
    tif: TimeInForce
    price: int
    qty: int
    quote_qty: int
    by_quote: bool
    ts: int
    stop_price: int = 0
    iceberg_qty: int = 0
    stp: StpMode = StpMode.NONE
    good_till: int = 0
    list_id: int = 0


class NewOrderList(msgspec.Struct, tag="L", **_STRUCT):  # type: ignore[call-arg]
    """An OCO list: two orders of one account and side, placed together, of which at most
    one executes. When either leg trades, triggers or ends, the other ends (EXPIRED,
    LIST_DONE; CANCELED when the first was canceled). A leg that is refused refuses the
    list: both end REJECTED (BAD_LIST for the leg that was fine)."""

    list_id: int
    account: int
    legs: list[NewOrder]
    ts: int


class Amend(msgspec.Struct, tag="M", **_STRUCT):  # type: ignore[call-arg]
    """Reduce an order's quantity (``new_qty`` lots, as its new original quantity) and keep
    its priority. At or below what has executed, the order ends FILLED."""

    order_id: int
    account: int
    new_qty: int
    ts: int


class Tick(msgspec.Struct, tag="K", **_STRUCT):  # type: ignore[call-arg]
    """The engine's clock, appended to the symbol's own log by the engine: GTD orders with
    ``good_till <= ts`` expire. Time enters the book only through the log, so replay is
    exact."""

    ts: int


class Cancel(msgspec.Struct, tag="C", **_STRUCT):  # type: ignore[call-arg]
    order_id: int
    account: int
    ts: int


class CancelAll(msgspec.Struct, tag="A", **_STRUCT):  # type: ignore[call-arg]
    account: int
    ts: int


class SetTrading(msgspec.Struct, tag="T", **_STRUCT):  # type: ignore[call-arg]
    state: TradingState
    ts: int


Command = NewOrder | Cancel | CancelAll | SetTrading | NewOrderList | Amend | Tick


# --------------------------------------------------------------------------- events
class Trade(msgspec.Struct, tag="t", **_STRUCT):  # type: ignore[call-arg]
    trade_id: int
    price: int
    qty: int
    taker_order: int
    taker_account: int
    taker_side: Side
    maker_order: int
    maker_account: int
    ts: int


class Rested(msgspec.Struct, tag="r", **_STRUCT):  # type: ignore[call-arg]
    """The order (or its remainder after matching) now rests on the book."""

    order_id: int
    account: int
    side: Side
    price: int
    remaining: int
    ts: int


class Done(msgspec.Struct, tag="d", **_STRUCT):  # type: ignore[call-arg]
    """The order reached a terminal status; nothing of it remains on the book."""

    order_id: int
    account: int
    status: Status
    reason: Reason
    ts: int


class CancelRejected(msgspec.Struct, tag="x", **_STRUCT):  # type: ignore[call-arg]
    order_id: int
    account: int
    reason: Reason
    ts: int


class TradingChanged(msgspec.Struct, tag="s", **_STRUCT):  # type: ignore[call-arg]
    state: TradingState
    ts: int


class Accepted(msgspec.Struct, tag="a", **_STRUCT):  # type: ignore[call-arg]
    """A stop order now waits for its trigger (off the book, holding its funds)."""

    order_id: int
    account: int
    ts: int


class Triggered(msgspec.Struct, tag="g", **_STRUCT):  # type: ignore[call-arg]
    """A stop order's condition was met at ``last_price``; it now works as a MARKET or
    LIMIT order (its trades, ``Rested`` and ``Done`` follow)."""

    order_id: int
    account: int
    last_price: int
    ts: int


class Amended(msgspec.Struct, tag="m", **_STRUCT):  # type: ignore[call-arg]
    """The order's original quantity is now ``new_qty`` lots; ``reduced`` lots of its
    remainder were removed (their hold is released); its priority is unchanged."""

    order_id: int
    account: int
    new_qty: int
    reduced: int
    ts: int


class AmendRejected(msgspec.Struct, tag="y", **_STRUCT):  # type: ignore[call-arg]
    order_id: int
    account: int
    reason: Reason
    ts: int


Event = (
    Trade | Rested | Done | CancelRejected | TradingChanged | Accepted | Triggered | Amended
    | AmendRejected
)


class EventBatch(msgspec.Struct, frozen=True, gc=False):
    """Everything one engine batch produced for command sequences ``first_seq..last_seq``.

    ``levels`` holds the new total quantity of every price level the batch changed, as
    ``(side, price, qty)`` (qty 0 = level removed): the depth diff for market data.
    """

    v: int
    symbol: str
    first_seq: int
    last_seq: int
    ts: int
    events: list[Event]
    levels: list[tuple[int, int, int]]
