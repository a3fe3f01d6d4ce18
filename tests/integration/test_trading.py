"""Two accounts trade over signed HTTP against real NATS, PostgreSQL and Redis; balances,
fees and order states are exact to the last unit, and bad input locks nothing."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import pytest
from tests.support.harness import Platform, eventually

from tradeplane.adapters import db
from tradeplane.adapters.cache import MarketCache
from tradeplane.demo.client import ApiClient
from tradeplane.domain.model import OrderType, Side, TimeInForce
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import DEMO_PAIRS, price_to_ticks, qty_to_lots

pytestmark = pytest.mark.integration



async def test_two_accounts_trade_and_balances_and_fees_are_exact(plat: Platform) -> None:
    alice = await plat.trader("alice", {"BTC": "1"})
    bob = await plat.trader("bob", {"USDT": "100000"})

    r = await alice.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="SELL",
                               type="LIMIT", timeInForce="GTC", price="60000.00",
                               quantity="0.50000")
    assert r.status_code == 200, r.text
    sell = r.json()
    assert sell["status"] == "NEW" and sell["executedQty"] == "0.00000000"
    assert await plat.balances(alice.account) == {"BTC": (to_units("0.5"), to_units("0.5"))}

    r = await bob.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY",
                             type="LIMIT", timeInForce="GTC", price="60100.00",
                             quantity="0.2", newOrderRespType="FULL")
    assert r.status_code == 200, r.text
    buy = r.json()
    assert buy["status"] == "FILLED"
    assert buy["executedQty"] == "0.20000000"
    assert buy["cummulativeQuoteQty"] == "12000.00000000"
    assert buy["fills"] == [{"price": "60000.00000000", "qty": "0.20000000",
                             "commission": "0.00020000", "commissionAsset": "BTC",
                             "tradeId": 1}]

    # Bob paid 12000 at the maker's price; the 20 USDT of price improvement came back.
    assert await plat.balances(bob.account) == {
        "BTC": (to_units("0.2") - to_units("0.0002"), 0),
        "USDT": (to_units("88000"), 0),
    }
    assert await plat.balances(alice.account) == {
        "BTC": (to_units("0.5"), to_units("0.3")),
        "USDT": (to_units("12000") - to_units("12"), 0),
    }
    assert await plat.balances(1) == {"BTC": (to_units("0.0002"), 0),
                                      "USDT": (to_units("12"), 0)}

    r = await alice.api.signed("GET", "/api/v3/order", symbol="BTCUSDT",
                               orderId=sell["orderId"])
    assert r.json()["status"] == "PARTIALLY_FILLED"
    assert r.json()["executedQty"] == "0.20000000"

    r = await alice.api.signed("DELETE", "/api/v3/order", symbol="BTCUSDT",
                               orderId=sell["orderId"])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "CANCELED"
    assert await plat.balances(alice.account) == {
        "BTC": (to_units("0.8"), 0),
        "USDT": (to_units("11988"), 0),
    }

    trades = (await bob.api.signed("GET", "/api/v3/myTrades", symbol="BTCUSDT")).json()
    assert [(t["isBuyer"], t["isMaker"], t["qty"]) for t in trades] == [
        (True, False, "0.20000000")
    ]
    _, problems = await db.check_invariants(plat.pool)
    assert problems == []


async def test_market_orders_by_quantity_and_by_quote_release_unused_holds(
    plat: Platform,
) -> None:
    maker = await plat.trader("mm-market", {"ETH": "10", "USDT": "100000"})
    taker = await plat.trader("taker-market", {"USDT": "10000", "ETH": "5"})
    for price, qty in (("3000.00", "1"), ("3001.00", "1")):
        r = await maker.api.signed("POST", "/api/v3/order", symbol="ETHUSDT", side="SELL",
                                   type="LIMIT", timeInForce="GTC", price=price, quantity=qty)
        assert r.status_code == 200, r.text
    await eventually(lambda: best_ask_published(plat, "ETHUSDT"))

    r = await taker.api.signed("POST", "/api/v3/order", symbol="ETHUSDT", side="BUY",
                               type="MARKET", quantity="1.5")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "FILLED"
    assert doc["cummulativeQuoteQty"] == "4500.50000000"
    assert [f["price"] for f in doc["fills"]] == ["3000.00000000", "3001.00000000"]

    r = await taker.api.signed("POST", "/api/v3/order", symbol="ETHUSDT", side="BUY",
                               type="MARKET", quoteOrderQty="300.10")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "FILLED"
    assert doc["executedQty"] == "0.10000000"
    assert doc["cummulativeQuoteQty"] == "300.10000000"
    bal = await plat.balances(taker.account)
    assert bal["USDT"] == (to_units("10000") - to_units("4500.5") - to_units("300.1"), 0)
    assert bal["ETH"] == (to_units("5") + to_units("1.6") - to_units("0.0016"), 0)

    # A market order on an empty side expires and keeps nothing locked.
    r = await taker.api.signed("POST", "/api/v3/order", symbol="ETHUSDT", side="SELL",
                               type="MARKET", quantity="0.5")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "EXPIRED"
    assert (await plat.balances(taker.account))["ETH"][1] == 0
    _, problems = await db.check_invariants(plat.pool)
    assert problems == []


async def best_ask_published(plat: Platform, symbol: str) -> bool:
    cache = await MarketCache.connect(plat.settings.redis_url)
    try:
        top = await cache.best_bid_ask(symbol)
        return top is not None and top[2] > 0
    finally:
        await cache.close()


async def test_ioc_fok_and_post_only_follow_binance_semantics(plat: Platform) -> None:
    maker = await plat.trader("mm-tif", {"BTC": "1"})
    taker = await plat.trader("taker-tif", {"BTC": "1", "ETH": "100"})
    r = await maker.api.signed("POST", "/api/v3/order", symbol="ETHBTC", side="BUY",
                               type="LIMIT", timeInForce="GTC", price="0.05000",
                               quantity="2.000")
    assert r.json()["status"] == "NEW"

    r = await taker.api.signed("POST", "/api/v3/order", symbol="ETHBTC", side="SELL",
                               type="LIMIT", timeInForce="FOK", price="0.05000",
                               quantity="3.000")
    assert r.json()["status"] == "EXPIRED" and r.json()["executedQty"] == "0.00000000"

    r = await taker.api.signed("POST", "/api/v3/order", symbol="ETHBTC", side="SELL",
                               type="LIMIT", timeInForce="IOC", price="0.05000",
                               quantity="3.000")
    assert r.json()["status"] == "EXPIRED" and r.json()["executedQty"] == "2.00000000"

    r = await taker.api.signed("POST", "/api/v3/order", symbol="ETHBTC", side="SELL",
                               type="LIMIT_MAKER", price="0.06000", quantity="1.000",
                               newOrderRespType="RESULT")
    assert r.json()["status"] == "NEW"
    r = await taker.api.signed("POST", "/api/v3/order", symbol="ETHBTC", side="BUY",
                               type="LIMIT_MAKER", price="0.06000", quantity="1.000",
                               newOrderRespType="RESULT")
    assert r.status_code == 400
    assert r.json() == {"code": -2010, "msg": "Order would immediately match and take."}
    assert (await plat.balances(taker.account))["BTC"][1] == 0
    _, problems = await db.check_invariants(plat.pool)
    assert problems == []


@pytest.mark.parametrize(
    ("params", "code", "msg"),
    [
        ({"symbol": "NOPE", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
          "price": "1", "quantity": "1"}, -1121, "Invalid symbol."),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
          "price": "60000.001", "quantity": "0.001"}, -1013, "Filter failure: PRICE_FILTER"),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
          "price": "60000", "quantity": "0.000001"}, -1013, "Filter failure: LOT_SIZE"),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
          "price": "1", "quantity": "0.001"}, -1013, "Filter failure: NOTIONAL"),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
          "price": "60000", "quantity": "100"}, -2010,
         "Account has insufficient balance for requested action."),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
          "quantity": "0.001"}, -1102,
         "Mandatory parameter 'price' was not sent, was empty/null, or malformed."),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
          "price": "abc", "quantity": "0.001"}, -1100, None),
        ({"symbol": "BTCUSDT", "side": "UP", "type": "LIMIT", "timeInForce": "GTC",
          "price": "1", "quantity": "1"}, -1117, "Invalid side."),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "STOP", "price": "1",
          "quantity": "1"}, -1116, "Invalid orderType."),
    ],
    ids=["unknown-symbol", "price-off-tick", "qty-off-lot", "below-min-notional",
         "insufficient-funds", "missing-price", "malformed-price", "bad-side", "bad-type"],
)
async def test_bad_orders_get_binance_errors_and_lock_nothing(
    plat: Platform, params: dict[str, str], code: int, msg: str | None
) -> None:
    t = await plat.trader(f"bad-{code}-{abs(hash(str(params))) % 10**6}", {"USDT": "1000"})
    r = await t.api.signed("POST", "/api/v3/order", **params)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == code
    if msg:
        assert r.json()["msg"] == msg
    assert await plat.balances(t.account) == {"USDT": (to_units("1000"), 0)}
    assert (await t.api.signed("GET", "/api/v3/openOrders")).json() == []


async def test_duplicate_client_order_id_never_makes_two_orders(plat: Platform) -> None:
    t = await plat.trader("dup", {"USDT": "1000"})
    args = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
            "price": "50000", "quantity": "0.002", "newClientOrderId": "my-order-1"}
    first = await t.api.signed("POST", "/api/v3/order", **args)
    assert first.status_code == 200
    again = await t.api.signed("POST", "/api/v3/order", **args)
    assert again.status_code == 400
    assert again.json() == {"code": -2010, "msg": "Duplicate order sent."}
    opened = (await t.api.signed("GET", "/api/v3/openOrders", symbol="BTCUSDT")).json()
    assert [o["clientOrderId"] for o in opened] == ["my-order-1"]
    assert await plat.balances(t.account) == {"USDT": (to_units("900"), to_units("100"))}


async def test_signature_timestamp_and_key_errors(plat: Platform) -> None:
    t = await plat.trader("auth", {"USDT": "10"})
    http = t.api.http
    r = await http.get("/api/v3/account", params={"timestamp": 1, "signature": "00"},
                       headers={"X-MBX-APIKEY": t.api_key})
    assert r.json()["code"] == -1021
    import time

    ts = int(time.time() * 1000)
    r = await http.get("/api/v3/account", params={"timestamp": ts, "signature": "00" * 32},
                       headers={"X-MBX-APIKEY": t.api_key})
    assert (r.status_code, r.json()["code"]) == (400, -1022)
    r = await http.get("/api/v3/account", params={"timestamp": ts, "signature": "00"},
                       headers={"X-MBX-APIKEY": "nope"})
    assert (r.status_code, r.json()["code"]) == (401, -2015)
    r = await t.api.signed("GET", "/api/v3/account")
    assert r.status_code == 200
    assert {b["asset"]: b["free"] for b in r.json()["balances"]} == {"USDT": "10.00000000"}


async def test_unknown_orders_answer_2011_and_2013(plat: Platform) -> None:
    t = await plat.trader("unknown", {"USDT": "10"})
    r = await t.api.signed("DELETE", "/api/v3/order", symbol="BTCUSDT", orderId=999999)
    assert r.json() == {"code": -2011, "msg": "Unknown order sent."}
    r = await t.api.signed("GET", "/api/v3/order", symbol="BTCUSDT", orderId=999999)
    assert r.json() == {"code": -2013, "msg": "Order does not exist."}
    r = await t.api.signed("DELETE", "/api/v3/openOrders", symbol="BTCUSDT")
    assert r.json()["code"] == -2011


async def test_price_band_refuses_limit_prices_far_from_the_last_trade(plat: Platform) -> None:
    t = await plat.trader("band", {"USDT": "100000", "BTC": "1"})
    # BTCUSDT last traded at 60000 (first test); the band is +-20%.
    r = await t.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY",
                           type="LIMIT", timeInForce="GTC", price="40000", quantity="0.01")
    assert r.json() == {"code": -1013, "msg": "Filter failure: PERCENT_PRICE"}
    r = await t.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="SELL",
                           type="LIMIT", timeInForce="GTC", price="80000", quantity="0.01")
    assert r.json() == {"code": -1013, "msg": "Filter failure: PERCENT_PRICE"}
    assert await plat.balances(t.account) == {"USDT": (to_units("100000"), 0),
                                              "BTC": (to_units("1"), 0)}


async def test_cancel_all_open_orders_releases_every_hold(plat: Platform) -> None:
    t = await plat.trader("cancel-all", {"USDT": "10000"})
    for price in ("55000", "55001", "55002"):
        r = await t.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY",
                               type="LIMIT", timeInForce="GTC", price=price,
                               quantity="0.01", newOrderRespType="RESULT")
        assert r.json()["status"] == "NEW"
    r = await t.api.signed("DELETE", "/api/v3/openOrders", symbol="BTCUSDT")
    assert r.status_code == 200, r.text
    assert sorted(o["price"] for o in r.json()) == [
        "55000.00000000", "55001.00000000", "55002.00000000"]
    assert all(o["status"] == "CANCELED" for o in r.json())
    assert await plat.balances(t.account) == {"USDT": (to_units("10000"), 0)}
    _, problems = await db.check_invariants(plat.pool)
    assert problems == []


async def test_admin_api_creates_users_keys_and_credits_behind_the_admin_token(
    plat: Platform,
) -> None:
    token = plat.settings.admin_token.get_secret_value()
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        r = await http.post("/admin/users", json={"name": "carol"})
        assert (r.status_code, r.json()["code"]) == (401, -2015)
        auth = {"Authorization": f"Bearer {token}"}
        account = (await http.post("/admin/users", json={"name": "carol"},
                                   headers=auth)).json()["account"]
        r = await http.post("/admin/api-keys", headers=auth,
                            json={"account": account, "permissions": ["read"]})
        key = r.json()
        assert key["permissions"] == ["read"]
        r = await http.post("/admin/credit", headers=auth,
                            json={"account": account, "asset": "USDT", "amount": "12.5",
                                  "ref": "carol-1"})
        assert r.json()["applied"] is True
        again = await http.post("/admin/credit", headers=auth,
                                json={"account": account, "asset": "USDT", "amount": "12.5",
                                      "ref": "carol-1"})
        assert again.json()["applied"] is False  # idempotent by ref
        bad = await http.post("/admin/credit", headers=auth,
                              json={"account": account, "asset": "USDT", "amount": "1e3",
                                    "ref": "carol-2"})
        assert bad.status_code == 400
    reader = ApiClient(plat.base_url, key["apiKey"], key["secretKey"])
    try:
        r = await reader.signed("GET", "/api/v3/account")
        assert {b["asset"]: b["free"] for b in r.json()["balances"]} == {"USDT": "12.50000000"}
        # A read-only key cannot trade.
        r = await reader.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY",
                                type="LIMIT", timeInForce="GTC", price="55000",
                                quantity="0.0001")
        assert (r.status_code, r.json()["code"]) == (401, -2015)
    finally:
        await reader.close()
    assert await plat.balances(account) == {"USDT": (to_units("12.5"), 0)}


async def test_outbox_relay_sends_an_order_whose_gateway_died_before_publishing(
    plat: Platform,
) -> None:
    """The funds were locked and the order stored, but the command never reached the bus
    (gateway killed in between): settlement's relay sends it, exactly once."""
    t = await plat.trader("orphan", {"USDT": "1000"})
    rules = next(p for p in DEMO_PAIRS if p.symbol == "BTCUSDT")
    price, qty = price_to_ticks(rules, Decimal("55000")), qty_to_lots(rules, Decimal("0.01"))
    req = db.OrderRequest(t.account, "BTCUSDT", "orphan-1", Side.BUY, OrderType.LIMIT,
                          TimeInForce.GTC, price, qty, 0, False, "USDT",
                          rules.notional(price, qty), int(time.time() * 1000) - 10_000)
    [(order_id, result)] = await db.place_orders(plat.pool, [req])
    assert result == db.PlaceResult.PLACED and order_id is not None

    async def is_open() -> bool:
        r = await t.api.signed("GET", "/api/v3/order", symbol="BTCUSDT", orderId=order_id)
        return bool(r.json()["status"] == "NEW")

    await eventually(is_open, timeout=20)
    opened = (await t.api.signed("GET", "/api/v3/openOrders", symbol="BTCUSDT")).json()
    assert [o["orderId"] for o in opened] == [order_id]
    assert await plat.balances(t.account) == {"USDT": (to_units("450"), to_units("550"))}
