"""Market data as the services exchange it: the records the market-data service writes and
the gateway reads (the book, the top of book, candles, one write per symbol), and the
names of the core subjects that carry the stream payloads and the user data.

One definition each, in the innermost layer: the market-data service builds them, the
adapters store them as they are (MessagePack, ``array_like``: the field order is the
stored format, never reorder), the gateway reads them back over its own port.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec


class DepthSnapshot(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """The book at command sequence ``last_update_id``: bids best (highest) first, asks
    best (lowest) first, as ``(price ticks, qty lots)``."""

    last_update_id: int
    ts: int
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]


class TopOfBook(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Last trade and best levels in ticks and lots; 0 where there is none."""

    seq: int
    last_price: int
    last_qty: int
    bid: int
    bid_qty: int
    ask: int
    ask_qty: int

    def reference_price(self) -> int | None:
        """The last trade price, else the mid of the best bid and ask, else None."""
        if self.last_price:
            return self.last_price
        if self.bid and self.ask:
            return (self.bid + self.ask) // 2
        return None


#: The top of an empty (or not yet written) market.
EMPTY_TOP = TopOfBook(0, 0, 0, 0, 0, 0, 0)


class Candle(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One candle in units (prices in quote units per whole base coin, volumes in base
    units, quote volumes in quote units), as the klines table and the cache hold it, so it
    stays readable if a pair's tick or lot changes; ``close_time`` is derived."""

    open_time: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    trades: int
    taker_buy_volume: int
    taker_buy_quote_volume: int


@dataclass(slots=True)
class SymbolWrite:
    """What one write changes for one symbol; None / empty = leave as is. ``candles`` are
    ``(interval, candle)`` oldest first: the last one per interval is the current one."""

    symbol: str
    candles: list[tuple[str, Candle]] = field(default_factory=list)
    trades: Sequence[bytes] = ()
    agg_trades: Sequence[bytes] = ()
    ticker: bytes | None = None
    avg_price: bytes | None = None
    book: DepthSnapshot | None = None
    state: bytes | None = None
    top: TopOfBook | None = None


def market_subject(symbol: str, stream: str) -> str:
    """The core subject of one symbol's stream payloads (``md.<SYMBOL>.<stream>``): the
    market-data service publishes there, the gateway's stream relay subscribes."""
    return f"md.{symbol}.{stream}"


def user_subject(account: int) -> str:
    """The core subject of one account's user-data updates (``user.<account>``):
    settlement publishes there, the gateway's user streams subscribe."""
    return f"user.{account}"
