"""Market data over Redis and PostgreSQL: the market-data service's storage port
(:class:`RedisMarketStore`, ``marketdata.ports.MarketStore``) and the gateway's read port
(:class:`RedisMarketReads`, ``gateway.market.MarketReads``).

The adapters sit below the services, so the classes satisfy the Protocols structurally,
without importing them; the records are the domain's (``domain/market.py``), stored as
they are. mypy checks the fit where ``services.py`` and the gateway's ``app.compose``
build them. Errors are the adapters' own (``CacheError``, ``DatabaseUnavailable``), both
``Unavailable``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tradeplane.adapters import db
from tradeplane.adapters.cache import MarketCache, SymbolUpdate
from tradeplane.adapters.marketstore import fetch_klines, upsert_klines
from tradeplane.domain.market import Candle, DepthSnapshot, SymbolWrite, TopOfBook
from tradeplane.domain.pairs import PairRules


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

    async def write(self, writes: Sequence[SymbolWrite], *, position: int | None) -> None:
        rows: list[tuple[str, str, Candle]] = []
        updates: list[SymbolUpdate] = []
        for w in writes:
            current: dict[str, Candle] = {}
            for interval, candle in w.candles:  # oldest first: the last one is current
                rows.append((w.symbol, interval, candle))
                current[interval] = candle
            updates.append(SymbolUpdate(
                w.symbol, trades=w.trades, agg_trades=w.agg_trades, ticker=w.ticker,
                avg_price=w.avg_price, klines=current, state=w.state, book=w.book, top=w.top,
            ))
        await upsert_klines(self.pool, rows)
        await self.cache.write(updates, position=position)


class RedisMarketReads:
    """What the gateway's market-data endpoints and reference prices read: the documents
    and the current candles in Redis, the closed candles in PostgreSQL."""

    def __init__(self, pool: db.Pool, cache: MarketCache) -> None:
        self.pool = pool
        self.cache = cache

    async def depth(self, symbol: str) -> DepthSnapshot | None:
        return await self.cache.depth(symbol)

    async def recent_trades(self, symbol: str, limit: int) -> list[bytes]:
        return await self.cache.recent_trades(symbol, limit)

    async def agg_trades(self, symbol: str) -> list[bytes]:
        return await self.cache.agg_trades(symbol)

    async def tickers(self, symbols: Sequence[str]) -> list[bytes | None]:
        return await self.cache.tickers(symbols)

    async def avg_price(self, symbol: str) -> bytes | None:
        return await self.cache.avg_price(symbol)

    async def tops(self, symbols: Sequence[str]) -> list[TopOfBook | None]:
        return await self.cache.tops(symbols)

    async def top(self, symbol: str) -> TopOfBook | None:
        return await self.cache.top(symbol)

    async def current_kline(self, symbol: str, interval: str) -> Candle | None:
        return await self.cache.current_kline(symbol, interval)

    async def klines(self, symbol: str, interval: str, start_ms: int | None,
                     end_ms: int | None, limit: int) -> list[Candle]:
        return await fetch_klines(self.pool, symbol, interval, start_ms, end_ms, limit)
