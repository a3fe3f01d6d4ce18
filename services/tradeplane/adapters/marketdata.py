"""The market-data service's storage port over Redis and PostgreSQL:
:class:`RedisMarketStore` (``marketdata.ports.MarketStore``).

The adapters sit below the services, so the class satisfies the Protocol structurally,
without importing it, and reads the service's records through the Protocols below; mypy
checks the fit where ``services.py`` composes the service. Errors are the adapters' own
(``CacheError``, ``DatabaseUnavailable``), both ``Unavailable``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tradeplane.adapters import db
from tradeplane.adapters.cache import DepthSnapshot, MarketCache, SymbolUpdate, TopOfBook
from tradeplane.adapters.marketstore import KlineRow, upsert_klines
from tradeplane.domain.pairs import PairRules


class _Book(Protocol):
    """``marketdata.ports.Book``, as far as this adapter reads it."""

    @property
    def last_update_id(self) -> int: ...
    @property
    def ts(self) -> int: ...
    @property
    def bids(self) -> list[tuple[int, int]]: ...
    @property
    def asks(self) -> list[tuple[int, int]]: ...


class _Top(Protocol):
    """``marketdata.ports.Top``."""

    @property
    def seq(self) -> int: ...
    @property
    def last_price(self) -> int: ...
    @property
    def last_qty(self) -> int: ...
    @property
    def bid(self) -> int: ...
    @property
    def bid_qty(self) -> int: ...
    @property
    def ask(self) -> int: ...
    @property
    def ask_qty(self) -> int: ...


class _Candle(Protocol):
    """``marketdata.ports.Candle``."""

    @property
    def open_time(self) -> int: ...
    @property
    def open(self) -> int: ...
    @property
    def high(self) -> int: ...
    @property
    def low(self) -> int: ...
    @property
    def close(self) -> int: ...
    @property
    def volume(self) -> int: ...
    @property
    def quote_volume(self) -> int: ...
    @property
    def trades(self) -> int: ...
    @property
    def taker_buy_volume(self) -> int: ...
    @property
    def taker_buy_quote_volume(self) -> int: ...


class _Write(Protocol):
    """``marketdata.ports.SymbolWrite``."""

    @property
    def symbol(self) -> str: ...
    @property
    def candles(self) -> Sequence[tuple[str, _Candle]]: ...
    @property
    def trades(self) -> Sequence[bytes]: ...
    @property
    def agg_trades(self) -> Sequence[bytes]: ...
    @property
    def ticker(self) -> bytes | None: ...
    @property
    def avg_price(self) -> bytes | None: ...
    @property
    def book(self) -> _Book | None: ...
    @property
    def state(self) -> bytes | None: ...
    @property
    def top(self) -> _Top | None: ...


def _row(c: _Candle) -> KlineRow:
    return KlineRow(c.open_time, c.open, c.high, c.low, c.close, c.volume, c.quote_volume,
                    c.trades, c.taker_buy_volume, c.taker_buy_quote_volume)


class RedisMarketStore:
    """The pairs and the klines table in PostgreSQL, the documents in Redis."""

    def __init__(self, pool: db.Pool, cache: MarketCache) -> None:
        self.pool = pool
        self.cache = cache

    async def load_pairs(self) -> dict[str, PairRules]:
        return await db.load_pairs(self.pool)

    async def position(self) -> int | None:
        return await self.cache.position()

    async def reset(self, symbols: Sequence[str]) -> None:
        await self.cache.reset(symbols)

    async def load_state(self, symbol: str) -> tuple[bytes, DepthSnapshot] | None:
        return await self.cache.load_state(symbol)

    async def write(self, writes: Sequence[_Write], *, position: int | None) -> None:
        rows: list[tuple[str, str, KlineRow]] = []
        updates: list[SymbolUpdate] = []
        for w in writes:
            current: dict[str, KlineRow] = {}
            for interval, candle in w.candles:  # oldest first: the last one is current
                row = _row(candle)
                rows.append((w.symbol, interval, row))
                current[interval] = row
            b, t = w.book, w.top
            updates.append(SymbolUpdate(
                w.symbol, trades=w.trades, agg_trades=w.agg_trades, ticker=w.ticker,
                avg_price=w.avg_price, klines=current, state=w.state,
                book=None if b is None else DepthSnapshot(b.last_update_id, b.ts, b.bids,
                                                          b.asks),
                top=None if t is None else TopOfBook(t.seq, t.last_price, t.last_qty, t.bid,
                                                     t.bid_qty, t.ask, t.ask_qty),
            ))
        await upsert_klines(self.pool, rows)
        await self.cache.write(updates, position=position)
