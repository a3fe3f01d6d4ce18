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
    LIMIT = 1
    MARKET = 2
    LIMIT_MAKER = 3


class TimeInForce(IntEnum):
    GTC = 1
    IOC = 2
    FOK = 3


class Status(IntEnum):
    """Binance order statuses; ``PENDING_NEW`` is ours until the engine has seen the order."""

    PENDING_NEW = 0
    NEW = 1
    PARTIALLY_FILLED = 2
    FILLED = 3
    CANCELED = 4
    REJECTED = 5
    EXPIRED = 6


TERMINAL: Final = frozenset({Status.FILLED, Status.CANCELED, Status.REJECTED, Status.EXPIRED})


class Reason(IntEnum):
    """Why an order ended or a request was refused."""

    NONE = 0
    WOULD_TAKE = 1  # LIMIT_MAKER would immediately match
    NO_LIQUIDITY = 2  # MARKET/IOC/FOK found nothing (enough) to match
    UNKNOWN_ORDER = 3
    DUPLICATE_ORDER = 4
    HALTED = 5
    CAP_REACHED = 6  # a market order hit its funds cap before its quantity


class TradingState(IntEnum):
    ENABLED = 1
    HALTED = 2  # nothing accepted, cancels included
    CANCEL_ONLY = 3


_STRUCT = {"array_like": True, "frozen": True, "gc": False, "tag_field": "k"}


# --------------------------------------------------------------------------- commands
class NewOrder(msgspec.Struct, tag="N", **_STRUCT):  # type: ignore[call-arg]
    """Place an order.

    ``qty`` caps the executed lots (0 = no cap, only for a market order by quote);
    ``quote_qty`` caps the executed notional in quote units (0 = no cap). A market BUY by
    quantity carries its funds hold in ``quote_qty``; ``by_quote`` marks ``quoteOrderQty``
    orders, which end FILLED when the next lot would exceed ``quote_qty``.
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


Command = NewOrder | Cancel | CancelAll | SetTrading


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


Event = Trade | Rested | Done | CancelRejected | TradingChanged


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
