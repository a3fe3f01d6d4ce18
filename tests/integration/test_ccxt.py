"""ccxt's ``binance`` class, unchanged and with its default options, against our gateway:
only its URLs point at the platform. Every unified call a spot trading bot uses parses our
answers into exact values.

Market-data tests (and the price-band test) read one BTC/USDT market seeded once per
module; order tests trade ETH/USDT between fresh accounts and cancel what they leave
resting; the WebSocket tests use ETH/BTC. Every REST URL keeps its path and gets the
gateway's address (``https://api.binance.com/sapi/v1`` -> ``<gateway>/sapi/v1``, the
futures ones likewise): ``load_markets`` also reads the coins (``sapi capital/config/
getall``, with keys), the margin listings and the futures listings, which we answer (spot
only: empty); anything we do not serve answers a Binance-style 404 rather than going to
binance.com. Streams: ``urls['api']['ws']['spot']`` (pro) is ours, and so is the spot
WebSocket API (``['ws-api']['spot']``); every other stream URL points at a path we do not
serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt_async
import ccxt.pro as ccxtpro
import httpx
import pytest
from tests.support.harness import Platform, Trader, eventually

from tradeplane.adapters import wallets_db
from tradeplane.domain.custody import wallet_from_spec
from tradeplane.domain.money import to_units

pytestmark = pytest.mark.integration

SPOT_WS = frozenset({"spot"})
ORIGIN = re.compile(r"^https?://[^/]+")


def point_at(ex: Any, base_url: str) -> None:
    """Send ccxt's REST URLs to the platform (same paths), its spot streams too and every
    other stream nowhere."""
    api = ex.urls["api"]
    for key, value in list(api.items()):
        if isinstance(value, str):
            api[key] = ORIGIN.sub(base_url, value)
    ws = api.get("ws")
    if isinstance(ws, dict):
        ws_base = base_url.replace("http://", "ws://", 1)
        for key, value in list(ws.items()):
            if isinstance(value, str):
                ws[key] = f"{ws_base}/ws" if key in SPOT_WS else f"{ws_base}/unused/{key}"
            elif isinstance(value, dict):  # ws-api: ours for spot (test_ws_api.py)
                ws[key] = {k: f"{ws_base}/ws-api/v3" if k == "spot"
                           else f"{ws_base}/unused/ws-api/{k}" for k in value}


class ObservedBinance(ccxtpro.binance):  # type: ignore[misc]
    """ccxt.pro's binance unchanged, but remembering which SUBSCRIBE requests the server
    acknowledged, so a test knows a stream is live before it makes the market move."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.acked: set[str] = set()

    def handle_subscription_status(self, client: Any, message: dict[str, Any]) -> Any:
        self.acked.add(str(message.get("id")))
        return super().handle_subscription_status(client, message)


def rest_client(base_url: str, trader: Trader | None = None) -> Any:
    config: dict[str, Any] = {}
    if trader is not None:
        config |= {"apiKey": trader.api_key, "secret": trader.secret}
    ex = ccxt_async.binance(config)
    point_at(ex, base_url)
    return ex


def stream_client(base_url: str) -> ObservedBinance:
    ex = ObservedBinance({})
    point_at(ex, base_url)
    return ex


@dataclass
class Desk:
    """Traders with ccxt clients for one test; closes them and cancels what they left."""

    plat: Platform
    clients: list[tuple[Trader, Any]] = field(default_factory=list)

    async def trader(self, name: str, funds: dict[str, str]) -> tuple[Trader, Any]:
        t = await self.plat.trader(name, funds)
        ex = rest_client(self.plat.base_url, t)
        await ex.load_markets()
        self.clients.append((t, ex))
        return t, ex

    async def close(self) -> None:
        for t, ex in self.clients:
            try:
                for symbol in ("ETHUSDT", "ETHBTC", "BTCUSDT"):
                    # -2011 when nothing rests: fine
                    await t.api.signed("DELETE", "/api/v3/openOrders", symbol=symbol)
            finally:
                await ex.close()



@pytest.fixture
async def desk(plat: Platform) -> AsyncIterator[Desk]:
    d = Desk(plat)
    try:
        yield d
    finally:
        await d.close()


@pytest.fixture
async def public(plat: Platform) -> AsyncIterator[Any]:
    ex = rest_client(plat.base_url)
    try:
        yield ex
    finally:
        await ex.close()


async def rest(plat: Platform, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        r = await http.get(path, params=params)
        assert r.status_code == 200, r.text
        return r.json()


async def placed(t: Trader, **params: Any) -> dict[str, Any]:
    r = await t.api.signed("POST", "/api/v3/order", newOrderRespType="FULL", **params)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


# --------------------------------------------------------------------------- BTC/USDT
# Resting: asks 60010.00 x 0.4 (after 0.1 traded), 60020.00 x 0.3; bids 59990.00 x 0.35
# (after 0.05 traded), 59980.00 x 0.2. Trades: 0.1 @ 60010 (taker bought), then
# 0.05 @ 59990 (taker sold).
@dataclass(frozen=True)
class Seeded:
    maker: Trader
    taker: Trader


@pytest.fixture(scope="module")
async def btc_market(plat: Platform) -> Seeded:
    maker = await plat.trader("btc-maker", {"BTC": "2", "USDT": "100000"})
    taker = await plat.trader("btc-taker", {"BTC": "1", "USDT": "100000"})
    for side, price, qty in (("SELL", "60010.00", "0.5"), ("SELL", "60020.00", "0.3"),
                             ("BUY", "59990.00", "0.4"), ("BUY", "59980.00", "0.2")):
        doc = await placed(maker, symbol="BTCUSDT", side=side, type="LIMIT", timeInForce="GTC",
                           price=price, quantity=qty)
        assert doc["status"] == "NEW"
    bought = await placed(taker, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="IOC",
                          price="60010.00", quantity="0.1")
    assert bought["status"] == "FILLED"
    sold = await placed(taker, symbol="BTCUSDT", side="SELL", type="LIMIT", timeInForce="IOC",
                        price="59990.00", quantity="0.05")
    assert sold["status"] == "FILLED"

    async def published() -> bool:
        depth = await rest(plat, "/api/v3/depth", symbol="BTCUSDT")
        ticker = await rest(plat, "/api/v3/ticker/24hr", symbol="BTCUSDT")
        return bool(depth["bids"] and depth["bids"][0] == ["59990.00000000", "0.35000000"]
                    and ticker["count"] == 2)

    await eventually(published)
    return Seeded(maker, taker)


class RecordingBinance(ccxt_async.binance):  # type: ignore[misc]
    """ccxt's binance unchanged, remembering the path of every request it makes."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.requested: list[tuple[str, str]] = []

    async def fetch(self, url: str, method: str = "GET", headers: Any = None,
                    body: Any = None) -> Any:
        self.requested.append((method, urlsplit(url).path))
        return await super().fetch(url, method, headers, body)


async def test_load_markets_with_default_options_reads_what_binance_serves(
    plat: Platform,
) -> None:
    t = await plat.trader("defaults", {"USDT": "1000"})
    ex = RecordingBinance({"apiKey": t.api_key, "secret": t.secret})
    point_at(ex, plat.base_url)
    try:
        markets = await ex.load_markets()
        assert set(markets) == {"BTC/USDT", "ETH/USDT", "ETH/BTC"}
        assert {("GET", "/api/v3/exchangeInfo"), ("GET", "/sapi/v1/capital/config/getall"),
                ("GET", "/sapi/v1/margin/allPairs"), ("GET", "/sapi/v1/margin/isolated/allPairs"),
                ("GET", "/fapi/v1/exchangeInfo"), ("GET", "/dapi/v1/exchangeInfo"),
                } <= set(ex.requested)
        assert {"BTC", "ETH", "USDT"} <= set(ex.currencies)
        assert ex.markets["BTC/USDT"]["margin"] is False  # no margin pairs
        assert (await ex.fetch_balance())["USDT"]["free"] == 1000.0
        order = await ex.create_order("ETH/USDT", "limit", "buy", 0.1, 2500.0)
        assert order["status"] == "open"
        await ex.cancel_order(order["id"], "ETH/USDT")
        assert await ex.fetch_status() == {"status": "ok", "updated": None, "eta": None,
                                           "url": None, "info": {"status": 0, "msg": "normal"}}
        # Something we do not serve is refused as such (-1020), not taken for an outage.
        with pytest.raises(ccxt_async.BadRequest, match='"code":-1020'):
            await ex.sapi_get_account_info()
    finally:
        await ex.close()


async def test_fetch_currencies_lists_coins_with_their_networks_and_balances(
    plat: Platform,
) -> None:
    spec = wallet_from_spec("ltc-ccxt", {
        "chain": "litecoin", "network": "regtest", "asset": "LTC",
        "rpc": {"url": "http://127.0.0.1:9/wallet/hot"}, "confirmations": 3,
        "withdrawals": {"fee": "0.001", "min": "0.01", "approvalThreshold": "0.5"},
    })
    await wallets_db.upsert_wallet(plat.pool, spec)
    t = await plat.trader("coins", {"LTC": "2", "USDT": "10"})
    # a withdrawal in flight (waiting for approval: above the threshold) holds 1.001 LTC
    result, _ = await wallets_db.request_withdrawal(plat.pool, spec, t.account, "rltc1qabc",
                                                     to_units("1"), None, 0)
    assert result == wallets_db.RequestResult.CREATED
    ex = rest_client(plat.base_url, t)
    try:
        currencies = await ex.fetch_currencies()
        assert set(currencies) == {"BTC", "ETH", "USDT", "LTC"}
        ltc = currencies["LTC"]
        assert (ltc["id"], ltc["active"], ltc["fee"], ltc["deposit"], ltc["withdraw"]) == (
            "LTC", False, 0.001, True, True)  # not traded here: no LTC pair
        net = ltc["networks"]["LTC"]
        assert (net["id"], net["fee"], net["deposit"], net["withdraw"], net["precision"],
                net["limits"]["withdraw"]["min"]) == ("LTC", 0.001, True, True, 1e-08, 0.01)
        info = ltc["info"]
        assert (info["free"], info["locked"], info["withdrawing"]) == (
            "0.99900000", "0.00000000", "1.00100000")
        [raw] = info["networkList"]
        assert (raw["isDefault"], raw["minConfirm"], raw["name"]) == (
            True, 3, "Litecoin (regtest)")
        usdt = currencies["USDT"]
        assert (usdt["active"], usdt["networks"], usdt["info"]["free"]) == (
            True, {}, "10.00000000")  # traded; no wallet: no network to deposit on
        assert usdt["info"]["depositAllEnable"] is False
    finally:
        await ex.close()


async def test_fetch_trading_fees_reads_each_pairs_maker_and_taker_fee(desk: Desk) -> None:
    _, ex = await desk.trader("fees", {})
    fees = await ex.fetch_trading_fees()
    assert set(fees) == {"BTC/USDT", "ETH/USDT", "ETH/BTC"}
    assert (fees["BTC/USDT"]["maker"], fees["BTC/USDT"]["taker"]) == (0.001, 0.001)
    one = await ex.fetch_trading_fee("ETH/BTC")
    assert (one["symbol"], one["info"]) == (
        "ETH/BTC", {"symbol": "ETHBTC", "makerCommission": "0.001", "takerCommission": "0.001"})


async def test_load_markets_parses_precision_and_limits_from_our_filters(public: Any) -> None:
    markets = await public.load_markets()
    assert set(markets) == {"BTC/USDT", "ETH/USDT", "ETH/BTC"}
    m = markets["BTC/USDT"]
    assert (m["id"], m["base"], m["quote"], m["type"], m["spot"], m["active"]) == (
        "BTCUSDT", "BTC", "USDT", "spot", True, True)
    assert m["precision"]["price"] == 0.01
    assert m["precision"]["amount"] == 0.00001
    assert m["limits"]["amount"] == {"min": 0.00001, "max": 9000.0}
    assert m["limits"]["price"]["min"] == 0.01
    assert m["limits"]["cost"]["min"] == 5.0
    assert (m["maker"], m["taker"]) == (0.001, 0.001)
    eth_btc = markets["ETH/BTC"]
    assert eth_btc["precision"]["price"] == 0.00001
    assert eth_btc["precision"]["amount"] == 0.001
    assert eth_btc["limits"]["cost"]["min"] == 0.0001
    # ccxt rounds with these, so what it sends always passes our filters
    assert public.price_to_precision("BTC/USDT", 60000.123) == "60000.12"
    assert public.amount_to_precision("BTC/USDT", 0.123456789) == "0.12345"


async def test_fetch_order_book_returns_the_resting_levels(
    plat: Platform, public: Any, btc_market: Seeded
) -> None:
    book = await public.fetch_order_book("BTC/USDT")
    assert book["symbol"] == "BTC/USDT"
    assert book["bids"] == [[59990.0, 0.35], [59980.0, 0.2]]
    assert book["asks"] == [[60010.0, 0.4], [60020.0, 0.3]]
    depth = await rest(plat, "/api/v3/depth", symbol="BTCUSDT")
    assert book["nonce"] == depth["lastUpdateId"] > 0
    top = await public.fetch_order_book("BTC/USDT", limit=1)
    assert (top["bids"], top["asks"]) == ([[59990.0, 0.35]], [[60010.0, 0.4]])


async def test_fetch_ticker_and_fetch_tickers_report_the_24h_statistics(
    public: Any, btc_market: Seeded
) -> None:
    t = await public.fetch_ticker("BTC/USDT")
    assert t["symbol"] == "BTC/USDT"
    assert (t["last"], t["close"], t["open"], t["high"], t["low"]) == (
        59990.0, 59990.0, 60010.0, 60010.0, 59990.0)
    assert (t["bid"], t["bidVolume"], t["ask"], t["askVolume"]) == (59990.0, 0.35, 60010.0, 0.4)
    assert (t["baseVolume"], t["quoteVolume"]) == (0.15, 9000.5)
    assert (t["change"], t["percentage"]) == (-20.0, -0.033)
    assert t["vwap"] == pytest.approx(60003.33333333)
    assert t["timestamp"] is not None

    tickers = await public.fetch_tickers()
    assert set(tickers) == {"BTC/USDT", "ETH/USDT", "ETH/BTC"}
    assert tickers["BTC/USDT"]["last"] == 59990.0
    assert tickers["BTC/USDT"]["baseVolume"] == 0.15
    some = await public.fetch_tickers(["BTC/USDT", "ETH/BTC"])
    assert set(some) == {"BTC/USDT", "ETH/BTC"}


async def test_fetch_trades_returns_public_trades_with_taker_side(
    public: Any, btc_market: Seeded
) -> None:
    trades = await public.fetch_trades("BTC/USDT")
    assert [(t["price"], t["amount"], t["cost"], t["side"]) for t in trades] == [
        (60010.0, 0.1, 6001.0, "buy"),
        (59990.0, 0.05, 2999.5, "sell"),
    ]
    assert all(t["symbol"] == "BTC/USDT" and t["timestamp"] for t in trades)
    assert trades[0]["timestamp"] <= trades[1]["timestamp"]
    since = await public.fetch_trades("BTC/USDT", since=trades[0]["timestamp"])
    assert [t["id"] for t in since] == [t["id"] for t in trades]
    assert await public.fetch_trades("BTC/USDT", since=trades[-1]["timestamp"] + 1) == []


async def test_fetch_ohlcv_returns_candles_built_from_the_trades(
    public: Any, btc_market: Seeded
) -> None:
    candles = await public.fetch_ohlcv("BTC/USDT", "1m")
    # the two trades may straddle a minute boundary: check what the candles add up to
    assert 1 <= len(candles) <= 2
    assert all(c[0] % 60_000 == 0 for c in candles)
    assert candles[0][1] == 60010.0  # open
    assert candles[-1][4] == 59990.0  # close
    assert max(c[2] for c in candles) == 60010.0
    assert min(c[3] for c in candles) == 59990.0
    assert sum(c[5] for c in candles) == pytest.approx(0.15)
    hourly = await public.fetch_ohlcv("BTC/USDT", "1h", limit=5)
    assert len(hourly) in (1, 2) and hourly[-1][4] == 59990.0


# --------------------------------------------------------------------------- account
async def test_fetch_balance_reports_exact_free_used_and_total(desk: Desk) -> None:
    t, ex = await desk.trader("balance", {"USDT": "1234.56789012", "ETH": "0.5"})
    bal = await ex.fetch_balance()
    assert bal["USDT"] == {"free": 1234.56789012, "used": 0.0, "total": 1234.56789012}
    assert bal["ETH"] == {"free": 0.5, "used": 0.0, "total": 0.5}
    assert set(bal["total"]) == {"USDT", "ETH"}

    await placed(t, symbol="ETHUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                 price="2500.00", quantity="0.1")
    bal = await ex.fetch_balance()
    assert bal["USDT"] == {"free": 984.56789012, "used": 250.0, "total": 1234.56789012}

    with pytest.raises(ccxt_async.InsufficientFunds):
        await ex.create_order("ETH/USDT", "limit", "buy", 1.0, 2500.0)
    assert (await ex.fetch_balance())["USDT"]["used"] == 250.0


# --------------------------------------------------------------------------- orders
async def test_create_limit_order_rests_then_a_crossing_limit_fills_at_the_maker_price(
    desk: Desk,
) -> None:
    _, maker = await desk.trader("limit-maker", {"ETH": "1"})
    _, taker = await desk.trader("limit-taker", {"USDT": "10000"})
    sell = await maker.create_order("ETH/USDT", "limit", "sell", 0.5, 3000.0)
    assert (sell["status"], sell["type"], sell["side"], sell["timeInForce"]) == (
        "open", "limit", "sell", "GTC")
    assert (sell["price"], sell["amount"], sell["filled"], sell["remaining"]) == (
        3000.0, 0.5, 0.0, 0.5)
    assert sell["id"] and sell["clientOrderId"]
    assert sell["symbol"] == "ETH/USDT" and sell["trades"] == []

    buy = await taker.create_order("ETH/USDT", "limit", "buy", 0.2, 3010.0)
    assert (buy["status"], buy["price"], buy["amount"], buy["filled"], buy["remaining"]) == (
        "closed", 3010.0, 0.2, 0.2, 0.0)
    assert (buy["cost"], buy["average"]) == (600.0, 3000.0)
    assert buy["fee"] == {"currency": "ETH", "cost": 0.0002}
    assert [(f["price"], f["amount"], f["fee"]["cost"], f["fee"]["currency"])
            for f in buy["trades"]] == [(3000.0, 0.2, 0.0002, "ETH")]
    assert (await taker.fetch_balance())["ETH"]["free"] == 0.1998


async def test_create_market_order_by_amount_and_by_cost_fills_against_the_book(
    desk: Desk,
) -> None:
    _, maker = await desk.trader("market-maker", {"ETH": "3"})
    _, taker = await desk.trader("market-taker", {"USDT": "10000"})
    await maker.create_order("ETH/USDT", "limit", "sell", 1.0, 3000.0)
    await maker.create_order("ETH/USDT", "limit", "sell", 1.0, 3001.0)

    async def ask_published() -> bool:
        book = await maker.fetch_order_book("ETH/USDT")
        return bool(book["asks"] and book["asks"][0] == [3000.0, 1.0])

    await eventually(ask_published)
    order = await taker.create_order("ETH/USDT", "market", "buy", 1.5)
    assert (order["status"], order["type"], order["filled"], order["cost"]) == (
        "closed", "market", 1.5, 4500.5)
    assert order["average"] == pytest.approx(3000.333333333)
    assert [(f["price"], f["amount"]) for f in order["trades"]] == [(3000.0, 1.0), (3001.0, 0.5)]
    assert order["fee"] == {"currency": "ETH", "cost": 0.0015}

    by_cost = await taker.create_market_buy_order_with_cost("ETH/USDT", 300.1)
    assert (by_cost["status"], by_cost["filled"], by_cost["cost"]) == ("closed", 0.1, 300.1)
    bal = await taker.fetch_balance()
    assert bal["USDT"] == {"free": 5199.4, "used": 0.0, "total": 5199.4}  # 10000 - 4500.5 - 300.1
    assert bal["ETH"] == {"free": 1.5984, "used": 0.0, "total": 1.5984}  # 1.6 less 0.1% fee


async def test_post_only_becomes_limit_maker_and_is_refused_when_it_would_take(
    desk: Desk,
) -> None:
    _, maker = await desk.trader("po-maker", {"ETH": "1"})
    _, po = await desk.trader("po", {"USDT": "10000"})
    await maker.create_order("ETH/USDT", "limit", "sell", 0.5, 3100.0)
    rests = await po.create_order("ETH/USDT", "limit", "buy", 0.5, 2900.0, {"postOnly": True})
    assert (rests["status"], rests["postOnly"], rests["type"]) == ("open", True, "limit")
    also = await po.create_order("ETH/USDT", "limit", "buy", 0.5, 2901.0,
                                 {"timeInForce": "PO"})
    assert also["status"] == "open" and also["postOnly"] is True
    raw = await po.fetch_order(also["id"], "ETH/USDT")
    assert raw["info"]["type"] == "LIMIT_MAKER"
    with pytest.raises(ccxt_async.OrderImmediatelyFillable):
        await po.create_order("ETH/USDT", "limit", "buy", 0.5, 3100.0, {"postOnly": True})
    bal = await po.fetch_balance()
    assert bal["USDT"]["used"] == 0.5 * 2900 + 0.5 * 2901


async def test_an_order_outside_the_price_band_is_refused_naming_an_advertised_filter(
    desk: Desk, btc_market: Seeded
) -> None:
    _, ex = await desk.trader("band", {"USDT": "10000"})
    filters = {f["filterType"]: f for f in ex.market("BTC/USDT")["info"]["filters"]}
    band = filters["PERCENT_PRICE"]
    assert (band["multiplierUp"], band["multiplierDown"], band["avgPriceMins"]) == (
        "1.2000", "0.8000", 0)

    async def refused() -> str:
        # BTC/USDT last traded at 59990: 0.8 x 59990 = 47992 is the floor
        try:
            order = await ex.create_order("BTC/USDT", "limit", "buy", 0.01, 47000.0)
        except ccxt_async.BadRequest as exc:
            return str(exc)
        await ex.cancel_order(order["id"], "BTC/USDT")
        raise AssertionError("accepted: the gateway has not seen the last price yet")

    message = await eventually(refused)
    assert '"code":-1013' in message and "Filter failure: PERCENT_PRICE" in message
    failed = message.rsplit("Filter failure: ", 1)[1].split('"')[0]
    assert failed in filters
    assert (await ex.fetch_balance())["USDT"] == {"free": 10000.0, "used": 0.0, "total": 10000.0}


async def test_cancel_order_cancels_and_releases_the_hold(desk: Desk) -> None:
    _, ex = await desk.trader("cancel", {"USDT": "1000"})
    order = await ex.create_order("ETH/USDT", "limit", "buy", 0.1, 2500.0)
    assert (await ex.fetch_balance())["USDT"]["used"] == 250.0
    canceled = await ex.cancel_order(order["id"], "ETH/USDT")
    assert (canceled["id"], canceled["status"], canceled["filled"], canceled["remaining"]) == (
        order["id"], "canceled", 0.0, 0.1)
    assert (await ex.fetch_balance())["USDT"] == {"free": 1000.0, "used": 0.0, "total": 1000.0}
    with pytest.raises(ccxt_async.OrderNotFound):
        await ex.cancel_order(order["id"], "ETH/USDT")


async def test_fetch_order_reports_a_partial_fill(desk: Desk) -> None:
    _, maker = await desk.trader("fetch-maker", {"ETH": "1"})
    _, taker = await desk.trader("fetch-taker", {"USDT": "10000"})
    sell = await maker.create_order("ETH/USDT", "limit", "sell", 0.5, 3050.0)
    await taker.create_order("ETH/USDT", "limit", "buy", 0.2, 3050.0)
    got = await maker.fetch_order(sell["id"], "ETH/USDT")
    assert (got["id"], got["status"], got["price"], got["amount"], got["filled"],
            got["remaining"], got["cost"]) == (sell["id"], "open", 3050.0, 0.5, 0.2, 0.3, 610.0)
    assert got["clientOrderId"] == sell["clientOrderId"]
    assert got["timestamp"] == sell["timestamp"]
    with pytest.raises(ccxt_async.OrderNotFound):
        await maker.fetch_order("999999999", "ETH/USDT")


async def test_fetch_open_orders_lists_only_resting_orders(desk: Desk) -> None:
    _, ex = await desk.trader("open", {"USDT": "10000", "ETH": "1"})
    a = await ex.create_order("ETH/USDT", "limit", "buy", 0.1, 2600.0)
    b = await ex.create_order("ETH/USDT", "limit", "sell", 0.2, 3400.0)
    c = await ex.create_order("ETH/USDT", "limit", "buy", 0.3, 2700.0)
    await ex.cancel_order(c["id"], "ETH/USDT")
    opened = await ex.fetch_open_orders("ETH/USDT")
    assert sorted((o["id"], o["side"], o["price"], o["amount"], o["status"]) for o in opened) == (
        sorted([(a["id"], "buy", 2600.0, 0.1, "open"), (b["id"], "sell", 3400.0, 0.2, "open")]))
    assert await ex.fetch_open_orders("ETH/BTC") == []


async def test_fetch_orders_includes_filled_and_canceled_orders(desk: Desk) -> None:
    _, maker = await desk.trader("orders-maker", {"ETH": "1"})
    _, ex = await desk.trader("orders", {"USDT": "10000"})
    await maker.create_order("ETH/USDT", "limit", "sell", 0.1, 3020.0)
    filled = await ex.create_order("ETH/USDT", "limit", "buy", 0.1, 3020.0)
    canceled = await ex.create_order("ETH/USDT", "limit", "buy", 0.1, 2800.0)
    await ex.cancel_order(canceled["id"], "ETH/USDT")
    resting = await ex.create_order("ETH/USDT", "limit", "buy", 0.1, 2810.0)
    orders = await ex.fetch_orders("ETH/USDT")
    assert [(o["id"], o["status"], o["filled"]) for o in orders] == [
        (filled["id"], "closed", 0.1),
        (canceled["id"], "canceled", 0.0),
        (resting["id"], "open", 0.0),
    ]
    since = await ex.fetch_orders("ETH/USDT", since=resting["timestamp"])
    assert [o["id"] for o in since] == [resting["id"]]
    assert [o["id"] for o in await ex.fetch_closed_orders("ETH/USDT")] == [filled["id"]]
    assert [o["id"] for o in await ex.fetch_canceled_orders("ETH/USDT")] == [canceled["id"]]


async def test_fetch_my_trades_reports_side_role_price_and_fee(desk: Desk) -> None:
    _, maker = await desk.trader("mine-maker", {"ETH": "1"})
    _, taker = await desk.trader("mine-taker", {"USDT": "10000"})
    sell = await maker.create_order("ETH/USDT", "limit", "sell", 0.3, 3030.0)
    buy = await taker.create_order("ETH/USDT", "limit", "buy", 0.3, 3030.0)
    [mine] = await taker.fetch_my_trades("ETH/USDT")
    assert (mine["order"], mine["side"], mine["takerOrMaker"], mine["price"], mine["amount"],
            mine["cost"]) == (buy["id"], "buy", "taker", 3030.0, 0.3, 909.0)
    assert mine["fee"] == {"currency": "ETH", "cost": 0.0003}
    [theirs] = await maker.fetch_my_trades("ETH/USDT")
    assert (theirs["id"], theirs["order"], theirs["side"], theirs["takerOrMaker"]) == (
        mine["id"], sell["id"], "sell", "maker")
    assert theirs["fee"] == {"currency": "USDT", "cost": 0.909}
    assert await maker.fetch_my_trades("ETH/BTC") == []


async def test_a_stop_loss_limit_from_a_stop_price_param_triggers_and_fills(
    desk: Desk,
) -> None:
    _, stopper = await desk.trader("ccxt-stop", {"ETH": "1"})
    _, bidder = await desk.trader("ccxt-stop-bid", {"USDT": "10000"})
    _, seller = await desk.trader("ccxt-stop-sell", {"ETH": "1"})
    # ccxt turns a limit order with a stopPrice into Binance's STOP_LOSS_LIMIT.
    stop = await stopper.create_order("ETH/USDT", "limit", "sell", 0.5, 2800.0,
                                      {"stopPrice": 2850.0})
    assert (stop["status"], stop["triggerPrice"], stop["price"]) == ("open", 2850.0, 2800.0)
    assert stop["info"]["type"] == "STOP_LOSS_LIMIT"
    assert (await stopper.fetch_balance())["ETH"]["used"] == 0.5
    await bidder.create_order("ETH/USDT", "limit", "buy", 0.6, 2840.0)
    await seller.create_order("ETH/USDT", "limit", "sell", 0.1, 2840.0)  # trades at 2840
    got = await stopper.fetch_order(stop["id"], "ETH/USDT")
    assert (got["status"], got["filled"], got["average"], got["triggerPrice"]) == (
        "closed", 0.5, 2840.0, 2850.0)
    bal = await stopper.fetch_balance()
    assert (bal["ETH"]["total"], bal["USDT"]["free"]) == (0.5, 1420.0 - 1.42)


async def test_a_good_till_date_limit_order_expires_at_its_date(desk: Desk) -> None:
    _, ex = await desk.trader("ccxt-gtd", {"USDT": "1000"})
    good_till = ex.milliseconds() + 1500
    order = await ex.create_order("ETH/USDT", "limit", "buy", 0.1, 2500.0,
                                  {"timeInForce": "GTD", "goodTillDate": good_till})
    assert (order["status"], order["timeInForce"]) == ("open", "GTD")
    assert order["info"]["goodTillDate"] == good_till
    assert (await ex.fetch_balance())["USDT"]["used"] == 250.0

    async def expired() -> bool:
        got = await ex.fetch_order(order["id"], "ETH/USDT")
        return bool(got["status"] == "expired")

    await eventually(expired)
    assert (await ex.fetch_balance())["USDT"] == {"free": 1000.0, "used": 0.0, "total": 1000.0}


async def near_last_price(ex: Any, factor: float) -> float:
    """A price ``factor`` times ETH/USDT's last trade (3000 before any), on the tick grid:
    inside the PERCENT_PRICE band whatever the other tests traded at."""
    last = (await ex.fetch_ticker("ETH/USDT"))["last"] or 3000.0
    return round(last * factor, 2)


async def test_iceberg_and_self_trade_prevention_pass_through_create_order_params(
    desk: Desk,
) -> None:
    _, ex = await desk.trader("ccxt-ice", {"ETH": "2", "USDT": "10000"})
    price = await near_last_price(ex, 1.05)
    ice = await ex.create_order("ETH/USDT", "limit", "sell", 1.0, price,
                                {"icebergQty": 0.25})
    assert (ice["status"], ice["info"]["icebergQty"]) == ("open", "0.25000000")

    async def peak_published() -> bool:  # market data trails settlement by a moment
        return [price, 0.25] in (await ex.fetch_order_book("ETH/USDT"))["asks"]

    await eventually(peak_published)  # only the visible part shows
    assert [price, 1.0] not in (await ex.fetch_order_book("ETH/USDT"))["asks"]
    # The same account buying into its own iceberg with EXPIRE_TAKER trades nothing.
    taker = await ex.create_order("ETH/USDT", "limit", "buy", 0.1, price,
                                  {"selfTradePreventionMode": "EXPIRE_TAKER"})
    got = await ex.fetch_order(taker["id"], "ETH/USDT")
    assert (got["status"], got["filled"], got["info"]["status"]) == (
        "expired", 0.0, "EXPIRED_IN_MATCH")
    assert (await ex.fetch_balance())["USDT"] == {"free": 10000.0, "used": 0.0,
                                                  "total": 10000.0}


async def test_an_oco_through_ccxts_binance_api_places_two_legs_and_cancels_as_one(
    desk: Desk,
) -> None:
    _, ex = await desk.trader("ccxt-oco", {"ETH": "1"})
    market = ex.market("ETH/USDT")
    above, stop, below = [await near_last_price(ex, f) for f in (1.1, 0.9, 0.89)]
    placed = await ex.private_post_orderlist_oco({
        "symbol": market["id"], "side": "SELL", "quantity": "0.5",
        "aboveType": "LIMIT_MAKER", "abovePrice": f"{above:.2f}",
        "belowType": "STOP_LOSS_LIMIT", "belowStopPrice": f"{stop:.2f}",
        "belowPrice": f"{below:.2f}", "belowTimeInForce": "GTC",
    })
    assert placed["contingencyType"] == "OCO" and len(placed["orders"]) == 2
    opened = await ex.fetch_open_orders("ETH/USDT")
    assert sorted(o["info"]["type"] for o in opened) == ["LIMIT_MAKER", "STOP_LOSS_LIMIT"]
    assert (await ex.fetch_balance())["ETH"]["used"] == 0.5  # one hold for the list
    await ex.cancel_order(opened[0]["id"], "ETH/USDT")
    assert await ex.fetch_open_orders("ETH/USDT") == []
    assert (await ex.fetch_balance())["ETH"] == {"free": 1.0, "used": 0.0, "total": 1.0}


# --------------------------------------------------------------------------- streams
@contextlib.asynccontextmanager
async def streaming(plat: Platform) -> AsyncIterator[ObservedBinance]:
    ex = stream_client(plat.base_url)
    try:
        await ex.load_markets()
        yield ex
    finally:
        await ex.close()


async def test_watch_order_book_stays_consistent_with_rest_through_trades(
    plat: Platform, desk: Desk
) -> None:
    _, maker = await desk.trader("ws-book-maker", {"ETH": "10", "BTC": "1"})
    _, taker = await desk.trader("ws-book-taker", {"ETH": "10", "BTC": "1"})
    await maker.create_order("ETH/BTC", "limit", "buy", 2.0, 0.05)

    async def published() -> bool:  # market data trails settlement by a moment
        return [0.05, 2.0] in (await maker.fetch_order_book("ETH/BTC"))["bids"]

    await eventually(published)
    async with streaming(plat) as ws:
        first = await asyncio.wait_for(ws.watch_order_book("ETH/BTC"), 10)
        assert [0.05, 2.0] in first["bids"]

        await maker.create_order("ETH/BTC", "limit", "sell", 1.5, 0.051)
        # commands that change no level advance the sequence without a diff of their own;
        # ccxt then demands the next diff's U == previous u + 1 (else ChecksumError)
        missed = await taker.create_order("ETH/BTC", "limit", "buy", 0.1, 0.045,
                                          {"timeInForce": "IOC"})
        assert missed["status"] == "expired"
        with pytest.raises(ccxt_async.OrderImmediatelyFillable):
            await taker.create_order("ETH/BTC", "limit", "buy", 0.1, 0.051, {"postOnly": True})
        await maker.create_order("ETH/BTC", "limit", "buy", 1.0, 0.049)
        await taker.create_order("ETH/BTC", "limit", "sell", 0.5, 0.05)  # trades
        await taker.create_order("ETH/BTC", "limit", "buy", 0.25, 0.051)  # trades

        bids, asks = [[0.05, 1.5], [0.049, 1.0]], [[0.051, 1.25]]

        async def same_as_rest() -> bool:
            live = ws.orderbooks.get("ETH/BTC")
            assert live is not None, "ccxt dropped the book: a gap between diffs' U and u"
            snapshot = await maker.fetch_order_book("ETH/BTC")
            assert (snapshot["bids"], snapshot["asks"]) == (bids, asks)  # REST caught up
            assert (live["bids"][:], live["asks"][:]) == (bids, asks)
            assert live["nonce"] == snapshot["nonce"]
            return True

        await eventually(same_as_rest)


async def test_watch_trades_receives_a_trade_made_after_subscribing(
    plat: Platform, desk: Desk
) -> None:
    _, maker = await desk.trader("ws-trades-maker", {"ETH": "10"})
    _, taker = await desk.trader("ws-trades-taker", {"BTC": "1"})
    async with streaming(plat) as ws:
        watching = asyncio.create_task(ws.watch_trades("ETH/BTC"))

        async def subscribed() -> bool:
            return bool(ws.acked) or watching.done()

        await eventually(subscribed)
        assert not watching.done()
        await maker.create_order("ETH/BTC", "limit", "sell", 0.7, 0.0502)
        bought = await taker.create_order("ETH/BTC", "limit", "buy", 0.7, 0.0502)
        seen = await asyncio.wait_for(watching, 10)
        [trade] = [t for t in seen if t["price"] == 0.0502]
        assert (trade["symbol"], trade["amount"], trade["cost"], trade["side"]) == (
            "ETH/BTC", 0.7, 0.03514, "buy")
        [mine] = await taker.fetch_my_trades("ETH/BTC")
        assert trade["id"] == mine["id"] and mine["order"] == bought["id"]
