"""The rates service over in-memory ports: it publishes the rates of the fresh books and
the desk's inventory as metrics; while a port fails it retries and its stale-books gauge
says unknown (-1), never a last good value."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from tests.support.harness import eventually

from tradeplane.domain.market import DepthSnapshot
from tradeplane.domain.pairs import DEMO_PAIRS, PairRules
from tradeplane.rates.service import DESK_INVENTORY, INDEX_PRICE, STALE_BOOKS, RatesService
from tradeplane.usecases.convert import Convert, Rates
from tradeplane.usecases.errors import Unavailable

NOW = 1_700_000_000_000


class Books:
    def __init__(self) -> None:
        self.failing = False

    async def books(self, symbols: Sequence[str]) -> dict[str, DepthSnapshot | None]:
        if self.failing:
            raise Unavailable("redis down")
        tops = {"BTCUSDT": (5_000_000, 5_000_100), "ETHUSDT": (200_000, 200_100),
                "ETHBTC": (4_000, 4_010)}
        return {s: DepthSnapshot(1, NOW - (10**9 if s == "ETHBTC" else 0),
                                 [(tops[s][0], 10)], [(tops[s][1], 10)]) for s in symbols}


class Store:
    async def balances(self, account: int, assets: Sequence[str]
                       ) -> list[tuple[str, int, int]]:
        return [(a, 7 * 10**8, 0) for a in assets]


class Sink:
    def __init__(self) -> None:
        self.published: list[tuple[int, Rates]] = []

    async def publish(self, rates: Rates, now_ms: int) -> None:
        self.published.append((now_ms, rates))


def service(books: Books, sink: Sink) -> RatesService:
    holder: dict[str, Mapping[str, PairRules]] = {"pairs": {}}
    convert = Convert(books, Store(), lambda: holder["pairs"])  # type: ignore[arg-type]

    async def load() -> Mapping[str, PairRules]:
        return {p.symbol: p for p in DEMO_PAIRS}

    return RatesService(convert, sink, load, holder, every_s=0.01)


async def test_a_round_publishes_the_fresh_books_rates_and_the_desks_inventory() -> None:
    sink = Sink()
    await service(Books(), sink).round(NOW)
    (at, rates), = sink.published
    assert at == NOW and rates.stale == ("ETHBTC",)
    assert rates.index == {"USDT": 10**8, "BTC": 50_000 * 10**8, "ETH": 2_000 * 10**8}
    assert STALE_BOOKS._value.get() == 1
    assert INDEX_PRICE.labels("ETH", "USDT")._value.get() == 2000.0
    assert DESK_INVENTORY.labels("BTC")._value.get() == 7.0


async def test_while_the_books_cannot_be_read_it_retries_and_says_unknown() -> None:
    books, sink = Books(), Sink()
    books.failing = True
    stop = asyncio.Event()
    task = asyncio.create_task(service(books, sink).run(stop))

    async def unknown() -> bool:
        return bool(STALE_BOOKS._value.get() == -1)

    async def published() -> bool:
        return bool(sink.published)

    await eventually(unknown, timeout=5)
    assert sink.published == []
    books.failing = False
    await eventually(published, timeout=5)  # it came back by itself (backoff: 1 s)
    stop.set()
    await asyncio.wait_for(task, 5)
    # run() reads the real clock: against it all three books (written at NOW) are stale
    assert STALE_BOOKS._value.get() == 3
