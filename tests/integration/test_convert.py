"""Convert against the real platform (NATS, PostgreSQL, Redis, the gateway over HTTP):
ccxt's own convert methods unchanged, direct and two-leg conversions exact to the unit
with the taker fees and the desk's spread, quote expiry and reuse, insufficient balance,
the desk's inventory limit, a stale book, bad inputs refused with nothing stored or
locked; the ledger's invariants hold after every test.

The books are set once for the module by a maker's resting orders (nothing trades: a
conversion is a deal with the desk, not an order on the books):

- BTCUSDT bids 0.01 @ 50000 and 0.01 @ 49990, asks 0.01 @ 50010 and 0.05 @ 50020;
- ETHUSDT bids 0.5 @ 2000, asks 0.5 @ 2010;
- ETHBTC bids 1 @ 0.041, asks 1 @ 0.042 (so ETH -> BTC -> USDT, 2050 a coin, beats the
  direct 2000).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import ccxt.async_support as ccxt_async
import pytest
from tests.integration.test_ccxt import point_at
from tests.integration.test_user_stream import user_stream
from tests.support.harness import Platform, Trader, eventually

from tradeplane.adapters import db
from tradeplane.adapters.cache import MarketCache, SymbolUpdate
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.demo.client import ApiClient
from tradeplane.domain.convert import DESK_ACCOUNT
from tradeplane.domain.market import DepthSnapshot
from tradeplane.domain.money import to_units
from tradeplane.rates.service import INDEX_PRICE, STALE_BOOKS
from tradeplane.services import rates_service

pytestmark = pytest.mark.integration

SPREAD_BPS = 10  # the default setting
TAKER_PPM = 1000  # every demo pair


def fee(amount: int) -> int:
    return amount * TAKER_PPM // 1_000_000


def spread(amount: int) -> int:
    return amount * (10_000 - SPREAD_BPS) // 10_000


BOOKS = {
    "BTCUSDT": (("BUY", "50000", "0.01"), ("BUY", "49990", "0.01"),
                ("SELL", "50010", "0.01"), ("SELL", "50020", "0.05")),
    "ETHUSDT": (("BUY", "2000", "0.5"), ("SELL", "2010", "0.5")),
    "ETHBTC": (("BUY", "0.041", "1"), ("SELL", "0.042", "1")),
}


@pytest.fixture(scope="module")
async def books(plat: Platform) -> None:
    maker = await plat.trader("convert-maker", {"BTC": "10", "ETH": "100", "USDT": "1000000"})
    for symbol, orders in BOOKS.items():
        for side, price, qty in orders:
            r = await maker.api.signed("POST", "/api/v3/order", symbol=symbol, side=side,
                                       type="LIMIT", timeInForce="GTC", price=price,
                                       quantity=qty)
            assert r.status_code == 200, r.text

    async def published() -> bool:
        for symbol, orders in BOOKS.items():
            depth = await maker.api.public("/api/v3/depth", symbol=symbol)
            if len(depth["bids"]) + len(depth["asks"]) != len(orders):
                return False
        return True

    await eventually(published)
    for asset, amount in (("USDT", "100000"), ("BTC", "5"), ("ETH", "50")):
        await db.credit(plat.pool, DESK_ACCOUNT, asset, to_units(amount), f"desk:{asset}")


@pytest.fixture(autouse=True)
async def ledger_sound(plat: Platform, books: None) -> AsyncIterator[None]:
    yield
    _, problems = await db.check_invariants(plat.pool)
    assert problems == []


async def converter(plat: Platform, funds: dict[str, str],
                    perms: tuple[str, ...] = ("read", "convert")) -> Trader:
    name = f"conv-{secrets.token_hex(4)}"
    account = await db.create_account(plat.pool, name)
    secret = secrets.token_hex(32)
    cipher = SecretCipher(plat.settings.secret_key.get_secret_value())
    key = await db.create_api_key(plat.pool, account, cipher.encrypt(secret), list(perms))
    for asset, amount in funds.items():
        await db.credit(plat.pool, account, asset, to_units(amount), f"{name}:{asset}")
    api = ApiClient(plat.base_url, key, secret)
    plat.clients.append(api)
    return Trader(account, key, secret, api)


@pytest.fixture
async def ccxt_for(plat: Platform) -> AsyncIterator[Any]:
    opened: list[Any] = []

    async def make(t: Trader) -> Any:
        ex = ccxt_async.binance({"apiKey": t.api_key, "secret": t.secret})
        point_at(ex, plat.base_url)
        await ex.load_markets()
        opened.append(ex)
        return ex

    yield make
    for ex in opened:
        await ex.close()


async def quote(t: Trader, **params: Any) -> tuple[int, dict[str, Any]]:
    r = await t.api.signed("POST", "/sapi/v1/convert/getQuote", **params)
    return r.status_code, r.json()


async def accept(t: Trader, quote_id: str) -> tuple[int, dict[str, Any]]:
    r = await t.api.signed("POST", "/sapi/v1/convert/acceptQuote", quoteId=quote_id)
    return r.status_code, r.json()


async def desk_balances(plat: Platform) -> dict[str, tuple[int, int]]:
    return await plat.balances(DESK_ACCOUNT)


def units(text: str) -> int:
    return to_units(text)


# --------------------------------------------------------------------------- ccxt
async def test_ccxt_convert_methods_quote_convert_and_read_back_a_direct_conversion(
    plat: Platform, ccxt_for: Any
) -> None:
    t = await converter(plat, {"BTC": "0.015"})
    ex = await ccxt_for(t)
    currencies = await ex.fetch_convert_currencies()
    assert {"BTC", "ETH", "USDT"} <= set(currencies)
    assert currencies["BTC"]["precision"] == 1e-08

    q = await ex.fetch_convert_quote("BTC", "USDT", 0.015)
    # 0.01 @ 50000 and 0.005 @ 49990, each less its taker fee, then the desk's spread
    gross1, gross2 = units("500"), units("249.95")
    want = spread(gross1 - fee(gross1) + gross2 - fee(gross2))
    assert want == units("748.45084995")
    assert q["fromCurrency"] == "BTC" and q["toCurrency"] == "USDT"
    assert q["fromAmount"] == 0.015 and q["toAmount"] == 748.45084995
    info = q["info"]
    assert [leg["symbol"] for leg in info["route"]] == ["BTCUSDT"]
    assert info["route"][0]["worstPrice"] == "49990.00000000"
    assert info["priceImpact"] == "0.000066"  # 0.05 of 750 lost to depth

    done = await ex.create_convert_trade(q["id"], "BTC", "USDT")
    assert done["info"]["orderStatus"] == "SUCCESS"
    got = await ex.fetch_convert_trade(done["id"])
    assert got["fromAmount"] == 0.015 and got["toAmount"] == 748.45084995
    assert got["info"]["orderStatus"] == "SUCCESS"
    assert await plat.balances(t.account) == {"BTC": (0, 0), "USDT": (want, 0)}

    history = await ex.fetch_convert_trade_history()
    assert [h["id"] for h in history] == [done["id"]]
    assert history[0]["toAmount"] == 748.45084995


# --------------------------------------------------------------------------- routing
async def test_a_two_leg_conversion_through_btc_beats_the_direct_book_to_the_unit(
    plat: Platform,
) -> None:
    t = await converter(plat, {"ETH": "0.1"})
    desk_before = await desk_balances(plat)
    status, q = await quote(t, fromAsset="ETH", toAsset="USDT", fromAmount="0.1")
    assert status == 200, q
    btc = units("0.0041") - fee(units("0.0041"))  # 0.1 ETH @ 0.041, less the fee
    btc_sold = btc // units("0.00001") * units("0.00001")  # whole BTCUSDT lots
    usdt = btc_sold * 50000
    want = spread(usdt - fee(usdt))
    assert want == units("204.0912045")
    assert [(leg["symbol"], leg["side"]) for leg in q["route"]] == [
        ("ETHBTC", "SELL"), ("BTCUSDT", "SELL")]
    assert q["toAmount"] == "204.09120450" and q["fromAmount"] == "0.10000000"
    assert q["route"][0]["toAmount"] == "0.00409590"
    assert q["route"][1]["fromAmount"] == "0.00409000"
    assert q["ratio"] == "2040.91204500" and q["feeAsset"] == "USDT"

    status, order = await accept(t, q["quoteId"])
    assert status == 200 and order["orderStatus"] == "SUCCESS"
    assert await plat.balances(t.account) == {"ETH": (0, 0), "USDT": (want, 0)}
    desk = await desk_balances(plat)
    assert desk["ETH"][0] - desk_before["ETH"][0] == units("0.1")
    assert desk_before["USDT"][0] - desk["USDT"][0] == want


async def test_a_quote_by_to_amount_gives_exactly_that_amount_for_the_least_input(
    plat: Platform,
) -> None:
    t = await converter(plat, {"USDT": "1000"})
    status, q = await quote(t, fromAsset="USDT", toAsset="BTC", toAmount="0.01")
    assert status == 200, q
    assert q["toAmount"] == "0.01000000"
    paid = units(q["fromAmount"])
    # ETHUSDT's ask (2010) then ETHBTC's bid (0.041) buys BTC at ~49024: cheaper than
    # BTCUSDT's asks (50010), so the router goes through ETH
    assert [(leg["symbol"], leg["side"]) for leg in q["route"]] == [
        ("ETHUSDT", "BUY"), ("ETHBTC", "SELL")]
    for amount, enough in ((paid, True), (paid - 1, False)):
        _, by_from = await quote(t, fromAsset="USDT", toAsset="BTC",
                                 fromAmount=f"{amount / 10**8:.8f}")
        assert (units(by_from["toAmount"]) >= units("0.01")) is enough
    status, _ = await accept(t, q["quoteId"])
    assert status == 200
    assert await plat.balances(t.account) == {
        "USDT": (units("1000") - paid, 0), "BTC": (units("0.01"), 0)}


# --------------------------------------------------------------------------- refusals
async def test_an_expired_quote_is_refused_and_nothing_moves(plat: Platform) -> None:
    t = await converter(plat, {"BTC": "0.01"})
    _, q = await quote(t, fromAsset="BTC", toAsset="USDT", fromAmount="0.01",
                       validTime="10s")
    assert q["validTimestamp"] - 10_000 <= now_ms() <= q["validTimestamp"]
    await plat.pool.execute(  # ten seconds later, without waiting them
        "UPDATE convert_quotes SET valid_until_ms = created_ms - 1 WHERE id = $1",
        int(q["quoteId"]))
    status, err = await accept(t, q["quoteId"])
    assert (status, err["code"]) == (400, -23005)
    assert await plat.balances(t.account) == {"BTC": (units("0.01"), 0)}


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_accepting_a_quote_twice_converts_once_and_answers_the_same_order(
    plat: Platform,
) -> None:
    t = await converter(plat, {"BTC": "0.02"})
    _, q = await quote(t, fromAsset="BTC", toAsset="USDT", fromAmount="0.01")
    s1, first = await accept(t, q["quoteId"])
    s2, again = await accept(t, q["quoteId"])
    assert (s1, s2) == (200, 200) and first == again
    assert (await plat.balances(t.account))["BTC"] == (units("0.01"), 0)
    other = await converter(plat, {"BTC": "1"})
    status, err = await accept(other, q["quoteId"])  # another account's quote
    assert (status, err["code"]) == (400, -23006)
    r = await t.api.signed("GET", "/sapi/v1/convert/orderStatus", quoteId=q["quoteId"])
    assert r.json()["orderId"] == int(first["orderId"])


async def test_insufficient_balance_refuses_the_quote_and_the_acceptance(
    plat: Platform,
) -> None:
    t = await converter(plat, {"BTC": "0.01"})
    status, err = await quote(t, fromAsset="BTC", toAsset="USDT", fromAmount="0.02")
    assert (status, err["code"]) == (400, -23003)
    _, q = await quote(t, fromAsset="BTC", toAsset="USDT", fromAmount="0.01")
    # the balance is spent by another conversion between the quote and its acceptance
    _, q2 = await quote(t, fromAsset="BTC", toAsset="ETH", fromAmount="0.01")
    assert (await accept(t, q2["quoteId"]))[0] == 200
    eth = (await plat.balances(t.account))["ETH"]
    status, err = await accept(t, q["quoteId"])
    assert (status, err["code"]) == (400, -23003)
    assert await plat.balances(t.account) == {"BTC": (0, 0), "ETH": eth}


async def test_the_desks_inventory_limits_quotes_and_acceptances_and_exchange_info_says_so(
    plat: Platform,
) -> None:
    t = await converter(plat, {"USDT": "2000"})
    _, early = await quote(t, fromAsset="USDT", toAsset="BTC", toAmount="0.01")
    treasury = await db.create_account(plat.pool, "desk-treasury")
    held = (await desk_balances(plat))["BTC"][0]
    kept = units("0.005")
    await transfer(plat, DESK_ACCOUNT, treasury, "BTC", held - kept)
    try:
        info = await t.api.public("/sapi/v1/convert/exchangeInfo", fromAsset="USDT",
                                  toAsset="BTC")
        assert info == [{"fromAsset": "USDT", "toAsset": "BTC",
                         "fromAssetMinAmount": "5.00000000",
                         "fromAssetMaxAmount": "9000000000.00000000",
                         "toAssetMinAmount": "0.00001000",
                         "toAssetMaxAmount": "0.00500000", "fromIsBase": False}]
        status, err = await quote(t, fromAsset="USDT", toAsset="BTC", toAmount="0.01")
        assert (status, err["code"]) == (400, -23004)
        status, err = await accept(t, early["quoteId"])
        assert (status, err["code"]) == (400, -23004)
        assert await plat.balances(t.account) == {"USDT": (units("2000"), 0)}
        assert (await desk_balances(plat))["BTC"] == (kept, 0)
    finally:
        await transfer(plat, treasury, DESK_ACCOUNT, "BTC", held - kept)
    assert (await accept(t, early["quoteId"]))[0] == 200  # still firm, now coverable


async def transfer(plat: Platform, src: int, dst: int, asset: str, amount: int) -> None:
    """A balanced ledger transfer between two accounts (the desk's treasury moves)."""
    ref = f"test-transfer:{secrets.token_hex(4)}"
    async with plat.pool.acquire() as con, con.transaction():
        await db.apply_postings(con, [(ref, src, asset, "a", -amount),
                                      (ref, dst, asset, "a", amount)])


async def test_a_stale_book_is_excluded_and_a_route_with_only_stale_books_refused(
    plat: Platform,
) -> None:
    cache = await MarketCache.connect(plat.settings.redis_url)
    saved = {s: await cache.depth(s) for s in ("ETHBTC", "ETHUSDT")}

    async def age(symbol: str) -> None:
        b = saved[symbol]
        assert b is not None
        old = DepthSnapshot(b.last_update_id, b.ts - 10**7, b.bids, b.asks)
        await cache.write([SymbolUpdate(symbol, book=old)])

    try:
        t = await converter(plat, {"ETH": "1"})
        await age("ETHBTC")
        status, q = await quote(t, fromAsset="ETH", toAsset="BTC", fromAmount="0.1")
        assert status == 200 and [leg["symbol"] for leg in q["route"]] == [
            "ETHUSDT", "BTCUSDT"]
        rates = await t.api.public("/api/v1/convert/rates")
        assert rates["staleBooks"] == ["ETHBTC"]
        await age("ETHUSDT")
        status, err = await quote(t, fromAsset="ETH", toAsset="BTC", fromAmount="0.1")
        assert (status, err["code"]) == (400, -23007)
    finally:
        await cache.write([SymbolUpdate(s, book=b) for s, b in saved.items()])
        await cache.close()


async def test_rates_show_indicative_ratios_direct_and_bridged_and_an_index_price(
    plat: Platform,
) -> None:
    rates = await plat.clients[0].public("/api/v1/convert/rates")
    assert rates["indexAsset"] == "USDT"
    assert rates["index"]["BTC"] == "50000.00000000"
    assert rates["index"]["ETH"] == "2050.00000000"  # through BTC at the best bids
    eth_usdt = next(p for p in rates["pairs"]
                    if (p["fromAsset"], p["toAsset"]) == ("ETH", "USDT"))
    assert eth_usdt["via"] == "BTC"


async def test_a_key_without_the_convert_permission_cannot_quote(plat: Platform) -> None:
    t = await converter(plat, {"BTC": "1"}, ("read", "trade"))
    status, err = await quote(t, fromAsset="BTC", toAsset="USDT", fromAmount="0.01")
    assert (status, err["code"]) == (401, -2015)


@pytest.mark.parametrize(("params", "code"), [
    ({"toAsset": "USDT", "fromAmount": "1"}, -1102),
    ({"fromAsset": "BTC", "toAsset": "USDT"}, -1102),
    ({"fromAsset": "BTC", "toAsset": "USDT", "fromAmount": "1", "toAmount": "1"}, -1128),
    ({"fromAsset": "BTC", "toAsset": "USDT", "fromAmount": "-1"}, -1100),
    ({"fromAsset": "BTC", "toAsset": "USDT", "fromAmount": "0"}, -1100),
    ({"fromAsset": "BTC", "toAsset": "USDT", "fromAmount": "1e3"}, -1100),
    ({"fromAsset": "BTC", "toAsset": "USDT", "fromAmount": "0.000000001"}, -1100),
    ({"fromAsset": "BTC", "toAsset": "USDT", "fromAmount": "9" * 40}, -1100),
    ({"fromAsset": "B\x00TC", "toAsset": "USDT", "fromAmount": "1"}, -1100),
    ({"fromAsset": "\uff22TC", "toAsset": "USDT", "fromAmount": "1"}, -1100),  # fullwidth
    ({"fromAsset": "BTC", "toAsset": "USDT", "fromAmount": "1", "validTime": "5m"}, -1130),
    ({"fromAsset": "BTC", "toAsset": "BTC", "fromAmount": "1"}, -23001),
    ({"fromAsset": "BTC", "toAsset": "DOGE", "fromAmount": "1"}, -23001),
    ({"fromAsset": "BTC", "toAsset": "USDT", "fromAmount": "0.000001"}, -23002),
])
async def test_bad_quote_requests_are_refused_with_a_code_and_store_nothing(
    plat: Platform, params: dict[str, str], code: int
) -> None:
    t = await converter(plat, {"BTC": "1", "USDT": "100"})
    quotes = await plat.pool.fetchval("SELECT count(*) FROM convert_quotes")
    status, err = await quote(t, **params)
    assert (status, err["code"]) == (400, code), err
    assert await plat.pool.fetchval("SELECT count(*) FROM convert_quotes") == quotes
    assert await plat.balances(t.account) == {"BTC": (units("1"), 0),
                                              "USDT": (units("100"), 0)}


@pytest.mark.parametrize(("path", "params", "code"), [
    ("/sapi/v1/convert/acceptQuote", {}, -1102),
    ("/sapi/v1/convert/acceptQuote", {"quoteId": "abc"}, -1100),
    ("/sapi/v1/convert/acceptQuote", {"quoteId": "9" * 30}, -1100),
    ("/sapi/v1/convert/acceptQuote", {"quoteId": "123456"}, -23006),
])
async def test_bad_acceptances_are_refused_with_a_code(
    plat: Platform, path: str, params: dict[str, str], code: int
) -> None:
    t = await converter(plat, {})
    r = await t.api.signed("POST", path, **params)
    assert (r.status_code, r.json()["code"]) == (400, code)


@pytest.mark.parametrize(("params", "code"), [
    ({}, -1102),
    ({"orderId": "x"}, -1100),
    ({"orderId": "424242"}, -23008),
])
async def test_order_status_of_nothing_is_refused(
    plat: Platform, params: dict[str, str], code: int
) -> None:
    t = await converter(plat, {})
    r = await t.api.signed("GET", "/sapi/v1/convert/orderStatus", **params)
    assert (r.status_code, r.json()["code"]) == (400, code)


@pytest.mark.parametrize(("params", "code"), [
    ({"endTime": "1"}, -1102),
    ({"startTime": "0", "endTime": str(31 * 86_400_000)}, -1127),
    ({"startTime": "10", "endTime": "5"}, -1127),
    ({"startTime": "0", "endTime": "10", "limit": "1001"}, -1100),
    ({"startTime": "0", "endTime": "10", "limit": "0"}, -1100),
])
async def test_trade_flow_bounds_its_window_and_limit(
    plat: Platform, params: dict[str, str], code: int
) -> None:
    t = await converter(plat, {})
    r = await t.api.signed("GET", "/sapi/v1/convert/tradeFlow", **params)
    assert (r.status_code, r.json()["code"]) == (400, code)


async def test_trade_flow_pages_with_more_data(plat: Platform) -> None:
    t = await converter(plat, {"BTC": "0.03"})
    for _ in range(3):
        _, q = await quote(t, fromAsset="BTC", toAsset="USDT", fromAmount="0.01")
        assert (await accept(t, q["quoteId"]))[0] == 200
    now = now_ms()
    r = await t.api.signed("GET", "/sapi/v1/convert/tradeFlow", startTime=now - 60_000,
                           endTime=now, limit=2)
    doc = r.json()
    assert len(doc["list"]) == 2 and doc["moreData"] is True and doc["limit"] == 2
    assert set(doc["list"][0]) == {"quoteId", "orderId", "orderStatus", "fromAsset",
                                   "fromAmount", "toAsset", "toAmount", "ratio",
                                   "inverseRatio", "createTime", "routingStatus"}


async def test_the_rates_service_publishes_what_the_gateway_serves_and_its_metrics(
    plat: Platform,
) -> None:
    cache = await MarketCache.connect(plat.settings.redis_url)
    try:
        at = now_ms()
        await rates_service(plat.pool, cache, plat.settings).round(at)
    finally:
        await cache.close()
    rates = await plat.clients[0].public("/api/v1/convert/rates")
    assert rates["time"] == at  # the published snapshot, not one computed on request
    assert rates["index"]["BTC"] == "50000.00000000"
    assert INDEX_PRICE.labels("ETH", "USDT")._value.get() == 2050.0
    assert STALE_BOOKS._value.get() == 0


async def test_unaccepted_quotes_are_purged_an_hour_after_they_expire(plat: Platform) -> None:
    t = await converter(plat, {"BTC": "0.02"})
    _, old = await quote(t, fromAsset="BTC", toAsset="USDT", fromAmount="0.01")
    _, used = await quote(t, fromAsset="BTC", toAsset="USDT", fromAmount="0.01")
    assert (await accept(t, used["quoteId"]))[0] == 200
    _, fresh = await quote(t, fromAsset="BTC", toAsset="USDT", fromAmount="0.01")
    cache = await MarketCache.connect(plat.settings.redis_url)
    try:  # a round two hours later
        await rates_service(plat.pool, cache, plat.settings).round(now_ms() + 7_200_000)
    finally:
        await cache.close()
    kept = {r["id"] for r in await plat.pool.fetch("SELECT id FROM convert_quotes")}
    assert int(old["quoteId"]) not in kept and int(fresh["quoteId"]) not in kept
    assert int(used["quoteId"]) in kept  # its order refers to it
    status, err = await accept(t, old["quoteId"])
    assert (status, err["code"]) == (400, -23006)


async def test_concurrent_acceptances_of_one_quote_convert_once(plat: Platform) -> None:
    t = await converter(plat, {"BTC": "0.01"})
    _, q = await quote(t, fromAsset="BTC", toAsset="USDT", fromAmount="0.01")
    answers = await asyncio.gather(*(accept(t, q["quoteId"]) for _ in range(6)))
    assert {s for s, _ in answers} == {200}
    assert len({a["orderId"] for _, a in answers}) == 1
    assert await plat.balances(t.account) == {"BTC": (0, 0),
                                              "USDT": (units(q["toAmount"]), 0)}


async def test_concurrent_acceptances_never_take_the_desk_below_zero(plat: Platform) -> None:
    treasury = await db.create_account(plat.pool, "desk-treasury-2")
    held = (await desk_balances(plat))["BTC"][0]
    kept = units("0.015")  # covers one of the two quotes below, not both
    users = [await converter(plat, {"USDT": "1000"}) for _ in range(2)]
    quotes = [(await quote(u, fromAsset="USDT", toAsset="BTC", toAmount="0.01"))[1]
              for u in users]
    await transfer(plat, DESK_ACCOUNT, treasury, "BTC", held - kept)
    try:
        answers = await asyncio.gather(*(accept(u, q["quoteId"])
                                         for u, q in zip(users, quotes, strict=True)))
        assert sorted(s for s, _ in answers) == [200, 400]
        assert [a["code"] for s, a in answers if s == 400] == [-23004]
        assert (await desk_balances(plat))["BTC"] == (kept - units("0.01"), 0)
    finally:
        await transfer(plat, treasury, DESK_ACCOUNT, "BTC", held - kept)


async def test_an_acceptance_pushes_the_balances_and_the_order_on_the_user_data_stream(
    plat: Platform,
) -> None:
    t = await converter(plat, {"BTC": "0.01"})
    _, q = await quote(t, fromAsset="BTC", toAsset="USDT", fromAmount="0.01")
    async with user_stream(plat, t) as stream:
        status, order = await accept(t, q["quoteId"])
        assert status == 200
        position, update = await stream.wait_for(2)
    assert position["e"] == "outboundAccountPosition"
    assert position["B"] == [{"a": "BTC", "f": "0.00000000", "l": "0.00000000"},
                             {"a": "USDT", "f": q["toAmount"], "l": "0.00000000"}]
    assert update == {"e": "convertOrderUpdate", "E": update["E"],
                      "orderId": int(order["orderId"]), "quoteId": q["quoteId"],
                      "status": "PENDING", "orderStatus": "SUCCESS", "fromAsset": "BTC",
                      "fromAmount": "0.01000000", "toAsset": "USDT",
                      "toAmount": q["toAmount"], "createTime": order["createTime"]}
