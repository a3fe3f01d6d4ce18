"""Reference prices for order entry (price bands, market-order holds), kept in memory.

Refreshed from the market-data cache every ``period`` seconds with one Redis round trip
for all symbols, so validating an order costs no I/O. A reference at most ``period``
old is fine for a band of several percent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from tradeplane.domain.errors import Unavailable
from tradeplane.domain.market import TopOfBook
from tradeplane.domain.model import Side

log = logging.getLogger("tradeplane.gateway")


class Tops(Protocol):
    """Where the market-data service keeps each market's top of book (the Redis cache:
    ``adapters.cache.MarketCache``). Both raise Unavailable when it cannot be read."""

    def tops(self, symbols: Sequence[str]) -> Awaitable[list[TopOfBook | None]]:
        """One per symbol, None where nothing is written yet (one round trip)."""
        ...

    def top(self, symbol: str) -> Awaitable[TopOfBook | None]: ...


class ReferencePrices:
    def __init__(self, cache: Tops, period: float = 0.1) -> None:
        self.cache = cache
        self.period = period
        self._tops: dict[str, TopOfBook] = {}

    async def refresh(self, symbols: list[str]) -> None:
        tops = await self.cache.tops(symbols)
        self._tops = {s: t for s, t in zip(symbols, tops, strict=True) if t is not None}

    async def run(self, symbols: Callable[[], Iterable[str]]) -> None:
        while True:
            try:
                await self.refresh(list(symbols()))
            except Unavailable as exc:
                log.warning("reference prices not refreshed: %s", exc)
            await asyncio.sleep(self.period)

    def band_reference(self, symbol: str) -> int | None:
        """Last trade price (or mid), in ticks."""
        t = self._tops.get(symbol)
        return t.reference_price() if t is not None else None

    async def market_reference(self, symbol: str, side: Side) -> int | None:
        """What a market order is sized against: the band reference, else the best price
        on the side it takes from. Asks the cache when memory has no usable price."""
        ref = self._market_reference(symbol, side)
        if ref is None:
            top = await self.cache.top(symbol)
            if top is not None:
                self._tops[symbol] = top
                ref = self._market_reference(symbol, side)
        return ref

    def _market_reference(self, symbol: str, side: Side) -> int | None:
        t = self._tops.get(symbol)
        if t is None:
            return None
        return t.reference_price() or (t.ask if side == Side.BUY else t.bid) or None
