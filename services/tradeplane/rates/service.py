"""The rates service: every ``every_s`` it computes, from the books the market-data
service keeps in Redis, the convertible pairs with their indicative ratios (direct and
through the bridge assets) and an index price per asset (``usecases.convert``), publishes
them (``RatesSink``: the gateway's ``/api/v1/convert/rates`` reads them) and shows them as
metrics, with the desk's inventory. A stale book is left out and counted. It also keeps
the quotes table bounded: unaccepted quotes go an hour after they expired.

While the cache or the database fails it keeps trying with backoff (1 s doubling to
30 s) and its health gauge says unknown (-1), never a last good value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import Counter, Gauge

from tradeplane.domain.errors import Unavailable
from tradeplane.domain.money import UNITS_PER_COIN
from tradeplane.domain.pairs import PairRules
from tradeplane.supervision import Backoff
from tradeplane.usecases.convert import QUOTE_RETENTION_MS, Convert, QuotePurge, RatesSink

log = logging.getLogger("tradeplane.rates")

INDEX_PRICE = Gauge("tradeplane_convert_index_price",
                    "Index price of an asset in the index asset (Convert's rates)",
                    ["asset", "index"])
STALE_BOOKS = Gauge("tradeplane_convert_stale_books",
                    "Books left out of the rates as stale; -1 = unknown (not computed)")
DESK_INVENTORY = Gauge("tradeplane_convert_desk_inventory",
                       "The convert desk's available balance of an asset (its inventory)",
                       ["asset"])
PURGED = Counter("tradeplane_convert_quotes_purged_total",
                 "Unaccepted quotes deleted an hour after they expired")
PUBLISHED = Counter("tradeplane_convert_rates_published_total",
                    "Rates snapshots published")

#: Loads the pairs (the database's table): the rates follow new and halted pairs.
PairLoader = Callable[[], Awaitable[Mapping[str, PairRules]]]


class RatesService:
    """Computes and publishes the rates every ``every_s`` until stopped."""

    def __init__(self, convert: Convert, sink: RatesSink, load_pairs: PairLoader,
                 holder: dict[str, Mapping[str, PairRules]], every_s: float = 1.0,
                 purge: QuotePurge | None = None) -> None:
        self._purge = purge
        self._convert = convert
        self._sink = sink
        self._load_pairs = load_pairs
        self._holder = holder  # what ``convert.pairs`` reads
        self._every = every_s
        self._backoff = Backoff(1.0, 30.0)

    async def round(self, now_ms: int) -> None:
        """One computation and publication.

        Raises:
            Unavailable: the cache or the database failed (nothing published).
        """
        self._holder["pairs"] = await self._load_pairs()
        rates = await self._convert.rates(now_ms)
        await self._sink.publish(rates, now_ms)
        PUBLISHED.inc()
        STALE_BOOKS.set(len(rates.stale))
        for asset, units in rates.index.items():
            INDEX_PRICE.labels(asset, rates.index_asset).set(units / UNITS_PER_COIN)
        for asset, available, _locked in await self._convert.desk_inventory():
            DESK_INVENTORY.labels(asset).set(available / UNITS_PER_COIN)
        if self._purge is not None:
            PURGED.inc(await self._purge.purge_quotes(now_ms - QUOTE_RETENTION_MS))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            delay = self._every
            try:
                await self.round(int(time.time() * 1000))
                self._backoff.succeeded()
            except Unavailable as exc:
                STALE_BOOKS.set(-1)
                delay = self._backoff.failed()
                log.warning("rates not published; retrying in %.1fs: %s", delay, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
