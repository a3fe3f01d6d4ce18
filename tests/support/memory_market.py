"""In memory, what the gateway reads of the market data: the public endpoints' port
(``gateway.market.MarketReads``) and the reference prices' (``gateway.references.Tops``).
``down`` makes every read fail as a store that does not answer does (Unavailable)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tradeplane.domain.errors import Unavailable
from tradeplane.domain.market import Candle, DepthSnapshot, TopOfBook


class MarketDown(Unavailable):
    """What the stand-in raises while ``down``."""


@dataclass
class MemoryMarketReads:
    books: dict[str, DepthSnapshot] = field(default_factory=dict)
    trades: dict[str, list[bytes]] = field(default_factory=dict)
    aggs: dict[str, list[bytes]] = field(default_factory=dict)
    ticker_docs: dict[str, bytes] = field(default_factory=dict)
    avg_prices: dict[str, bytes] = field(default_factory=dict)
    top_of_book: dict[str, TopOfBook] = field(default_factory=dict)
    #: (symbol, interval) -> closed candles by open time (the klines table).
    stored: dict[tuple[str, str], list[Candle]] = field(default_factory=dict)
    #: (symbol, interval) -> the candle still open (the cache).
    current: dict[tuple[str, str], Candle] = field(default_factory=dict)
    down: bool = False
    top_reads: int = 0

    def _up(self) -> None:
        if self.down:
            raise MarketDown("market data store down")

    async def depth(self, symbol: str) -> DepthSnapshot | None:
        self._up()
        return self.books.get(symbol)

    async def recent_trades(self, symbol: str, limit: int) -> list[bytes]:
        self._up()
        return self.trades.get(symbol, [])[-limit:] if limit > 0 else []

    async def agg_trades(self, symbol: str) -> list[bytes]:
        self._up()
        return list(self.aggs.get(symbol, []))

    async def tickers(self, symbols: Sequence[str]) -> list[bytes | None]:
        self._up()
        return [self.ticker_docs.get(s) for s in symbols]

    async def avg_price(self, symbol: str) -> bytes | None:
        self._up()
        return self.avg_prices.get(symbol)

    async def tops(self, symbols: Sequence[str]) -> list[TopOfBook | None]:
        self._up()
        return [self.top_of_book.get(s) for s in symbols]

    async def top(self, symbol: str) -> TopOfBook | None:
        self._up()
        self.top_reads += 1
        return self.top_of_book.get(symbol)

    async def current_kline(self, symbol: str, interval: str) -> Candle | None:
        self._up()
        return self.current.get((symbol, interval))

    async def klines(self, symbol: str, interval: str, start_ms: int | None,
                     end_ms: int | None, limit: int) -> list[Candle]:
        """As the klines table answers: from ``start_ms`` on when given, else the latest
        ``limit`` (up to ``end_ms`` when given); oldest first."""
        self._up()
        rows = [c for c in self.stored.get((symbol, interval), [])
                if (start_ms is None or c.open_time >= start_ms)
                and (end_ms is None or c.open_time <= end_ms)]
        return rows[:limit] if start_ms is not None else rows[-limit:]
