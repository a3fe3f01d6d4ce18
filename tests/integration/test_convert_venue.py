"""Convert through an external venue: a second tradeplane instance, on servers of its own,
reached over real HTTP by ccxt's unchanged ``binance`` class (``adapters/venues.py``).

The home instance is started with ``convert_venue=binance=<the venue's URL>``; its users
quote and convert through its gateway with ccxt as on any day. Books:

- home BTCUSDT: bid 0.01 @ 50000, ask 0.01 @ 50010;
- venue BTCUSDT: bid 0.01 @ 49000, ask 0.03 @ 49900 (cheaper BTC than at home).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt_async
import pytest
from pydantic import SecretStr
from tests.conftest import data_folder
from tests.integration.test_ccxt import point_at
from tests.integration.test_convert import converter
from tests.support.harness import Platform, Trader, eventually, running_platform

from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus
from tradeplane.adapters.cache import MarketCache
from tradeplane.adapters.venues import CcxtVenue, VenueUnavailable, ccxt_exchange, levels
from tradeplane.domain.convert import DESK_ACCOUNT
from tradeplane.domain.model import Side
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.platform.ports import free_port
from tradeplane.platform.servers import LocalServers
from tradeplane.services import hedger_parts
from tradeplane.usecases.convert import RoutingStatus
from tradeplane.usecases.hedge import HedgeOutcome

pytestmark = pytest.mark.integration

HOME_BOOK = (("BUY", "50000", "0.01"), ("SELL", "50010", "0.01"))
VENUE_BOOK = (("BUY", "49000", "0.01"), ("SELL", "49900", "0.03"))
BTCUSDT = next(p for p in DEMO_PAIRS if p.symbol == "BTCUSDT")


def ticks(price: str) -> int:
    return to_units(price) // BTCUSDT.tick


@pytest.fixture(scope="module")
def venue_servers() -> Iterator[LocalServers]:
    with data_folder("tp-venue-") as folder, LocalServers(Path(folder)) as servers:
        yield servers


async def _book(plat: Platform, name: str, orders: tuple[tuple[str, str, str], ...]) -> None:
    maker = await plat.trader(name, {"BTC": "10", "USDT": "1000000"})
    for side, price, qty in orders:
        r = await maker.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side=side,
                                   type="LIMIT", timeInForce="GTC", price=price, quantity=qty)
        assert r.status_code == 200, r.text

    async def published() -> bool:
        depth = await maker.api.public("/api/v3/depth", symbol="BTCUSDT")
        return len(depth["bids"]) + len(depth["asks"]) == len(orders)

    await eventually(published)


@pytest.fixture(scope="module")
async def venue(venue_servers: LocalServers) -> AsyncIterator[Platform]:
    """The second instance: the external venue."""
    async with running_platform(venue_servers.nats_url, venue_servers.pg_url,
                                venue_servers.redis_url) as plat:
        await _book(plat, "venue-maker", VENUE_BOOK)
        yield plat


@pytest.fixture(scope="module")
async def home(nats_url: str, pg_url: str, redis_url: str,
               venue: Platform) -> AsyncIterator[Platform]:
    """The instance our users trade on, quoting through the venue too."""
    async with running_platform(nats_url, pg_url, redis_url,
                                convert_venue=f"binance={venue.base_url}") as plat:
        await _book(plat, "home-maker", HOME_BOOK)
        for asset, amount in (("BTC", "5"), ("USDT", "100000")):
            await db.credit(plat.pool, DESK_ACCOUNT, asset, to_units(amount), f"desk:{asset}")
        yield plat


@pytest.fixture(autouse=True)
async def ledgers_sound(home: Platform, venue: Platform) -> AsyncIterator[None]:
    yield
    for plat in (home, venue):
        _, problems = await db.check_invariants(plat.pool)
        assert problems == []


async def _ccxt(plat: Platform, t: Trader) -> Any:
    ex = ccxt_async.binance({"apiKey": t.api_key, "secret": t.secret})
    point_at(ex, plat.base_url)
    await ex.load_markets()
    return ex


async def test_the_venue_with_the_better_book_takes_the_quote_and_the_route_names_it(
    home: Platform,
) -> None:
    t = await converter(home, {"USDT": "499"})
    ex = await _ccxt(home, t)
    try:
        q = await ex.fetch_convert_quote("USDT", "BTC", 499)
        # 499 USDT buys 0.01 BTC at the venue's 49900 (home's 50010 gives less); less the
        # taker fee (0.1%: 0.00001) and the desk's spread (10 bps of 0.00999)
        assert q["info"]["toAmount"] == "0.00998001"
        [leg] = q["info"]["route"]
        assert (leg["venue"], leg["symbol"], leg["side"], leg["bestPrice"]) == (
            "binance", "BTCUSDT", "BUY", "49900.00000000")

        done = await ex.create_convert_trade(q["id"], "USDT", "BTC")
        assert done["info"]["orderStatus"] == "SUCCESS"
        assert await home.balances(t.account) == {"BTC": (998001, 0), "USDT": (0, 0)}
    finally:
        await ex.close()


async def test_our_book_keeps_the_quote_when_it_is_better_than_the_venues(
    home: Platform,
) -> None:
    t = await converter(home, {"BTC": "0.01"})
    ex = await _ccxt(home, t)
    try:
        q = await ex.fetch_convert_quote("BTC", "USDT", 0.01)
        # selling: home's bid 50000 beats the venue's 49000
        [leg] = q["info"]["route"]
        assert (leg["venue"], leg["bestPrice"]) == ("local", "50000.00000000")
    finally:
        await ex.close()


async def test_a_venue_that_does_not_answer_leaves_quotes_to_our_books(
    home: Platform,
) -> None:
    gone = CcxtVenue("gone", ccxt_exchange("binance", base_url=f"http://127.0.0.1:{free_port()}",
                                           timeout_ms=1_000), lambda: {"BTCUSDT": BTCUSDT})
    try:
        with pytest.raises(VenueUnavailable):
            await gone.books(["BTCUSDT"])
    finally:
        await gone.close()


async def test_the_hedger_hedges_a_venue_leg_on_the_venue_and_confirms(
    home: Platform, venue: Platform,
) -> None:
    desk = await venue.trader(f"desk-{secrets.token_hex(3)}", {"USDT": "1000"})
    t = await converter(home, {"USDT": "499"})
    r = await t.api.signed("POST", "/sapi/v1/convert/getQuote", fromAsset="USDT",
                           toAsset="BTC", fromAmount="499")
    assert r.status_code == 200, r.text
    assert [leg["venue"] for leg in r.json()["route"]] == ["binance"]
    r = await t.api.signed("POST", "/sapi/v1/convert/acceptQuote", quoteId=r.json()["quoteId"])
    order_id = int(r.json()["orderId"])
    settings = home.settings.model_copy(update={
        "convert_venue_api_key": desk.api_key, "convert_venue_secret": SecretStr(desk.secret)})
    bus = await Bus.connect(settings.nats_url, name="venue-hedger")
    cache = await MarketCache.connect(settings.redis_url)
    try:
        async with hedger_parts(settings, home.pool, bus, cache) as worker:
            outcome, order = await worker.hedger.hedge(order_id, int(time.time() * 1000))
    finally:
        await cache.close()
        await bus.close()
    assert outcome is HedgeOutcome.HEDGED
    assert order is not None and order.routing is RoutingStatus.CONFIRMED

    async def bought() -> bool:
        return (await venue.balances(desk.account)).get("BTC", (0, 0))[0] > 0

    await eventually(bought)  # the desk bought the BTC it paid out, there: 0.01 at 49900
    assert (await venue.balances(desk.account))["BTC"] == (to_units("0.01") - 1000, 0)


async def test_a_hedge_on_the_venue_is_an_ioc_order_filled_up_to_its_worst_price_once(
    venue: Platform,
) -> None:
    desk = await venue.trader(f"desk-{secrets.token_hex(3)}", {"USDT": "2000"})
    hedger = CcxtVenue("binance", ccxt_exchange("binance", base_url=venue.base_url,
                                               api_key=desk.api_key, secret=desk.secret),
                       lambda: {"BTCUSDT": BTCUSDT})
    try:
        books = await hedger.books(["BTCUSDT"])
        book = books["BTCUSDT"]
        assert book is not None
        price, offered = book.asks[0]
        assert price == ticks("49900") and offered >= 1000
        # more than is offered at 49950 at worst: what is offered fills, the rest expires
        fill = await hedger.hedge("BTCUSDT", Side.BUY, offered + 1000, ticks("49950"),
                                  "hedge-1")
        assert (fill.filled_lots, fill.status) == (offered, "expired")

        async def settled() -> bool:
            return (await venue.balances(desk.account)).get("BTC", (0, 0))[0] > 0

        await eventually(settled)
        balances = await venue.balances(desk.account)
        bought = offered * BTCUSDT.lot
        assert balances["BTC"] == (bought - bought // 1000, 0)  # less the taker fee
        assert balances["USDT"] == (to_units("2000") - bought * 49900, 0)
        # a retry (the same client id) finds the first order, fills nothing more (the book
        # has nothing left at that price) and places one order for the rest, which expires
        again = await hedger.hedge("BTCUSDT", Side.BUY, offered + 1000, ticks("49950"),
                                   "hedge-1")
        assert again.filled_lots == offered
        assert await venue.balances(desk.account) == balances
        # done already: nothing placed at all
        assert (await hedger.hedge("BTCUSDT", Side.BUY, offered, ticks("49950"), "hedge-1")
                ).filled_lots == offered
        orders = await hedger.exchange.fetch_orders("BTC/USDT")
        assert sorted(o["clientOrderId"] for o in orders) == ["hedge-1-0", "hedge-1-1"]
    finally:
        await hedger.close()


def test_a_venues_levels_are_rounded_against_the_desk_and_merged_per_tick() -> None:
    bids = levels(BTCUSDT, [["50000.009", "0.000019"], ["50000.001", "0.5"],
                            ["0", "1"], ["49999.99", "0.000001"]], bids=True)
    asks = levels(BTCUSDT, [["50000.001", "1"], ["50000.01", "0.1"]], bids=False)
    tick = ticks("50000")
    assert bids == [(tick, 1 + 50_000)]  # both floor to 50000.00; 0.000019 -> 1 lot
    assert asks == [(tick + 1, 100_000 + 10_000)]  # both ceil to 50000.01
