"""Order controls over signed HTTP against real NATS, PostgreSQL and Redis: stop orders,
icebergs, self-trade prevention, good-till-date, amend and OCO lists, with Binance's
shapes and errors. After every test each balance is exact to the unit and the ledger's
invariants hold.

The module's platform is shared, and stop orders trigger on any trade of their symbol:
each test cancels what it leaves resting. BTCUSDT trades around 60000, ETHUSDT around
3000, ETHBTC around 0.05 (prices stay inside the +-20% band of the last trade).
"""

from __future__ import annotations

import dataclasses
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from tests.support.harness import Platform, Trader, eventually

from tradeplane.adapters import db
from tradeplane.domain.model import OrderType, Side, StpMode, TimeInForce
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import DEMO_PAIRS, price_to_ticks, qty_to_lots, stop_market_cap

pytestmark = pytest.mark.integration

BTCUSDT = DEMO_PAIRS[0]
U = to_units


def _ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def _err(r: httpx.Response) -> tuple[int, str]:
    assert r.status_code >= 400, r.text
    return r.json()["code"], r.json()["msg"]


async def _order(t: Trader, **params: Any) -> httpx.Response:
    return await t.api.signed("POST", "/api/v3/order", **params)


async def _get(t: Trader, symbol: str, order_id: int) -> dict[str, Any]:
    return _ok(await t.api.signed("GET", "/api/v3/order", symbol=symbol, orderId=order_id))


async def _sound(plat: Platform) -> None:
    _, problems = await db.check_invariants(plat.pool)
    assert problems == []


async def _trade_at(plat: Platform, symbol: str, price: str, qty: str, name: str) -> None:
    """Two fresh accounts trade ``qty`` at ``price``: the symbol's last price is then
    ``price`` (and any stop it crosses triggers)."""
    base, quote = (symbol[:3], symbol[3:])
    notional = str(Decimal(price) * Decimal(qty) * 2)
    maker = await plat.trader(f"{name}-maker", {base: str(Decimal(qty) * 2)})
    taker = await plat.trader(f"{name}-taker", {quote: notional})
    _ok(await _order(maker, symbol=symbol, side="SELL", type="LIMIT", timeInForce="GTC",
                     price=price, quantity=qty))
    doc = _ok(await _order(taker, symbol=symbol, side="BUY", type="LIMIT", timeInForce="IOC",
                           price=price, quantity=qty))
    assert doc["status"] == "FILLED", doc


async def _cancel_all(t: Trader, symbol: str) -> None:
    r = await t.api.signed("DELETE", "/api/v3/openOrders", symbol=symbol)
    assert r.status_code == 200 or r.json()["code"] == -2011, r.text


# --------------------------------------------------------------------------- stop orders
async def test_a_stop_loss_limit_triggers_on_another_accounts_trade_and_then_fills(
    plat: Platform,
) -> None:
    await _trade_at(plat, "BTCUSDT", "60000", "0.01", "sl-open")
    bidder = await plat.trader("sl-bidder", {"USDT": "3000"})
    stopper = await plat.trader("sl-stopper", {"BTC": "0.02"})
    seller = await plat.trader("sl-seller", {"BTC": "0.01"})
    _ok(await _order(bidder, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                     price="59000", quantity="0.03"))

    placed = _ok(await _order(stopper, symbol="BTCUSDT", side="SELL", type="STOP_LOSS_LIMIT",
                              timeInForce="GTC", price="59000", stopPrice="59500",
                              quantity="0.02", newOrderRespType="RESULT"))
    assert (placed["status"], placed["stopPrice"], placed["workingTime"]) == (
        "NEW", "59500.00000000", -1)
    assert await plat.balances(stopper.account) == {"BTC": (0, U("0.02"))}
    doc = await _get(stopper, "BTCUSDT", placed["orderId"])
    assert (doc["isWorking"], doc["type"], doc["orderListId"]) == (False, "STOP_LOSS_LIMIT", -1)

    # Another account's trade at 59000 crosses the stop: the order works as a LIMIT at
    # 59000 and takes the rest of the bid.
    _ok(await _order(seller, symbol="BTCUSDT", side="SELL", type="LIMIT", timeInForce="GTC",
                     price="59000", quantity="0.01"))
    doc = await _get(stopper, "BTCUSDT", placed["orderId"])
    assert (doc["status"], doc["executedQty"], doc["cummulativeQuoteQty"]) == (
        "FILLED", "0.02000000", "1180.00000000")
    assert doc["workingTime"] >= placed["transactTime"]
    assert await plat.balances(stopper.account) == {
        "BTC": (0, 0), "USDT": (U("1180") - U("1.18"), 0)}  # taker fee 0.1%
    assert await plat.balances(bidder.account) == {
        "BTC": (U("0.03") - U("0.00003"), 0), "USDT": (U("3000") - U("1770"), 0)}
    await _sound(plat)


async def test_a_stop_loss_market_buy_holds_its_cap_and_releases_what_it_did_not_spend(
    plat: Platform,
) -> None:
    await _trade_at(plat, "ETHUSDT", "3000", "0.1", "slm-open")
    asker = await plat.trader("slm-asker", {"ETH": "2"})
    buyer = await plat.trader("slm-buyer", {"USDT": "5000"})
    _ok(await _order(asker, symbol="ETHUSDT", side="SELL", type="LIMIT", timeInForce="GTC",
                     price="3050", quantity="1"))
    placed = _ok(await _order(buyer, symbol="ETHUSDT", side="BUY", type="STOP_LOSS",
                              stopPrice="3040", quantity="1", newOrderRespType="RESULT"))
    assert placed["status"] == "NEW" and placed["price"] == "0.00000000"
    # The hold: 1 ETH at the stop price plus the 20% band, rounded up to a unit.
    cap = U("3648")
    rules = next(p for p in DEMO_PAIRS if p.symbol == "ETHUSDT")
    assert cap == stop_market_cap(rules, price_to_ticks(rules, Decimal("3040")), 10_000)
    assert await plat.balances(buyer.account) == {"USDT": (U("5000") - cap, cap)}

    await _trade_at(plat, "ETHUSDT", "3040", "0.1", "slm-cross")
    doc = await _get(buyer, "ETHUSDT", placed["orderId"])
    assert (doc["status"], doc["executedQty"], doc["cummulativeQuoteQty"]) == (
        "FILLED", "1.00000000", "3050.00000000")
    assert await plat.balances(buyer.account) == {
        "ETH": (U("1") - U("0.001"), 0), "USDT": (U("5000") - U("3050"), 0)}
    await _sound(plat)


async def test_a_take_profit_sells_at_market_when_the_price_rises_to_it(
    plat: Platform,
) -> None:
    await _trade_at(plat, "ETHUSDT", "3000", "0.1", "tp-open")
    bidder = await plat.trader("tp-bidder", {"USDT": "4000"})
    holder = await plat.trader("tp-holder", {"ETH": "1"})
    placed = _ok(await _order(holder, symbol="ETHUSDT", side="SELL", type="TAKE_PROFIT",
                              stopPrice="3100", quantity="0.5", newOrderRespType="RESULT"))
    assert placed["status"] == "NEW"
    assert await plat.balances(holder.account) == {"ETH": (U("0.5"), U("0.5"))}
    _ok(await _order(bidder, symbol="ETHUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                     price="3090", quantity="1"))
    await _trade_at(plat, "ETHUSDT", "3100", "0.1", "tp-cross")
    doc = await _get(holder, "ETHUSDT", placed["orderId"])
    assert (doc["status"], doc["cummulativeQuoteQty"]) == ("FILLED", "1545.00000000")
    assert await plat.balances(holder.account) == {
        "ETH": (U("0.5"), 0), "USDT": (U("1545") - U("1.545"), 0)}
    await _cancel_all(bidder, "ETHUSDT")
    assert await plat.balances(bidder.account) == {
        "ETH": (U("0.5") - U("0.0005"), 0), "USDT": (U("4000") - U("1545"), 0)}
    await _sound(plat)


async def test_a_stop_whose_condition_already_holds_is_rejected_and_locks_nothing(
    plat: Platform,
) -> None:
    await _trade_at(plat, "BTCUSDT", "60000", "0.001", "wt-open")
    t = await plat.trader("would-trigger", {"BTC": "0.1", "USDT": "10000"})
    # A SELL stop-loss triggers at or below its stop: 61000 is already above the last price.
    r = await _order(t, symbol="BTCUSDT", side="SELL", type="STOP_LOSS_LIMIT",
                     timeInForce="GTC", price="60500", stopPrice="61000", quantity="0.01",
                     newOrderRespType="RESULT")
    assert _err(r) == (-2010, "Order would trigger immediately.")
    r = await _order(t, symbol="BTCUSDT", side="BUY", type="TAKE_PROFIT", stopPrice="61000",
                     quantity="0.01", newOrderRespType="FULL")
    assert _err(r) == (-2010, "Order would trigger immediately.")
    assert await plat.balances(t.account) == {"BTC": (U("0.1"), 0), "USDT": (U("10000"), 0)}
    assert (await t.api.signed("GET", "/api/v3/openOrders")).json() == []
    await _sound(plat)


# --------------------------------------------------------------------------- icebergs
async def _depth_asks(plat: Platform, symbol: str) -> list[list[str]]:
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        asks: list[list[str]] = (await http.get("/api/v3/depth",
                                                params={"symbol": symbol})).json()["asks"]
        return asks


async def test_an_iceberg_shows_its_visible_part_and_a_refill_queues_behind_later_orders(
    plat: Platform,
) -> None:
    await _trade_at(plat, "ETHUSDT", "3000", "0.1", "ice-open")
    iceberg = await plat.trader("iceberg", {"ETH": "1"})
    later = await plat.trader("ice-later", {"ETH": "1"})
    taker = await plat.trader("ice-taker", {"USDT": "5000"})
    placed = _ok(await _order(iceberg, symbol="ETHUSDT", side="SELL", type="LIMIT",
                              timeInForce="GTC", price="3200", quantity="1",
                              icebergQty="0.2"))
    assert (placed["status"], placed["icebergQty"]) == ("NEW", "0.20000000")
    behind = _ok(await _order(later, symbol="ETHUSDT", side="SELL", type="LIMIT",
                              timeInForce="GTC", price="3200", quantity="0.3"))
    assert await plat.balances(iceberg.account) == {"ETH": (0, U("1"))}  # all of it held

    async def shows(qty: str) -> bool:
        return ["3200.00000000", qty] in await _depth_asks(plat, "ETHUSDT")

    await eventually(lambda: shows("0.50000000"))  # 0.2 visible + 0.3

    # The visible 0.2 had priority; its refill goes behind the later 0.3.
    first = _ok(await _order(taker, symbol="ETHUSDT", side="BUY", type="LIMIT",
                             timeInForce="IOC", price="3200", quantity="0.2"))
    assert first["status"] == "FILLED"
    second = _ok(await _order(taker, symbol="ETHUSDT", side="BUY", type="LIMIT",
                              timeInForce="IOC", price="3200", quantity="0.3"))
    assert second["status"] == "FILLED"
    assert (await _get(later, "ETHUSDT", behind["orderId"]))["status"] == "FILLED"
    doc = await _get(iceberg, "ETHUSDT", placed["orderId"])
    assert (doc["status"], doc["executedQty"], doc["icebergQty"]) == (
        "PARTIALLY_FILLED", "0.20000000", "0.20000000")
    await eventually(lambda: shows("0.20000000"))  # only the refilled visible part
    await _cancel_all(iceberg, "ETHUSDT")
    assert await plat.balances(iceberg.account) == {
        "ETH": (U("0.8"), 0), "USDT": (U("640") - U("0.64"), 0)}
    await _sound(plat)


# --------------------------------------------------------------------------- self-trade
@pytest.mark.parametrize(
    ("mode", "maker_status", "taker_status"),
    [("EXPIRE_TAKER", "NEW", "EXPIRED_IN_MATCH"),
     ("EXPIRE_MAKER", "EXPIRED_IN_MATCH", "NEW"),
     ("EXPIRE_BOTH", "EXPIRED_IN_MATCH", "EXPIRED_IN_MATCH")],
)
async def test_self_trade_prevention_expires_the_orders_its_mode_names(
    plat: Platform, mode: str, maker_status: str, taker_status: str,
) -> None:
    t = await plat.trader(f"stp-{mode}", {"ETH": "10", "BTC": "1"})
    maker = _ok(await _order(t, symbol="ETHBTC", side="SELL", type="LIMIT",
                             timeInForce="GTC", price="0.05100", quantity="2.000"))
    taker = _ok(await _order(t, symbol="ETHBTC", side="BUY", type="LIMIT", timeInForce="GTC",
                             price="0.05100", quantity="2.000",
                             selfTradePreventionMode=mode))
    assert (taker["status"], taker["selfTradePreventionMode"]) == (taker_status, mode)
    if taker_status == "EXPIRED_IN_MATCH":
        assert taker["preventedQuantity"] == "2.00000000"
    assert (await _get(t, "ETHBTC", maker["orderId"]))["status"] == maker_status
    assert (await _get(t, "ETHBTC", maker["orderId"]))["selfTradePreventionMode"] == "NONE"
    await _cancel_all(t, "ETHBTC")
    assert await plat.balances(t.account) == {"ETH": (U("10"), 0), "BTC": (U("1"), 0)}
    await _sound(plat)


async def test_without_prevention_an_account_trades_with_itself_and_pays_both_fees(
    plat: Platform,
) -> None:
    t = await plat.trader("stp-none", {"ETH": "10", "BTC": "1"})
    _ok(await _order(t, symbol="ETHBTC", side="SELL", type="LIMIT", timeInForce="GTC",
                     price="0.05000", quantity="2.000"))
    doc = _ok(await _order(t, symbol="ETHBTC", side="BUY", type="LIMIT", timeInForce="GTC",
                           price="0.05000", quantity="2.000"))
    assert doc["status"] == "FILLED" and doc["selfTradePreventionMode"] == "NONE"
    assert await plat.balances(t.account) == {
        "ETH": (U("10") - U("0.002"), 0), "BTC": (U("1") - U("0.0001"), 0)}
    await _sound(plat)


async def test_the_pairs_default_mode_applies_to_orders_that_name_none(
    plat: Platform,
) -> None:
    rules = next(p for p in DEMO_PAIRS if p.symbol == "ETHBTC")
    await db.upsert_pair(plat.pool, dataclasses.replace(rules, default_stp="EXPIRE_TAKER"))

    async def advertised(mode: str) -> bool:
        async with httpx.AsyncClient(base_url=plat.base_url) as http:
            info = (await http.get("/api/v3/exchangeInfo",
                                   params={"symbol": "ETHBTC"})).json()
        return bool(info["symbols"][0]["defaultSelfTradePreventionMode"] == mode)

    try:
        await eventually(lambda: advertised("EXPIRE_TAKER"), timeout=20)
        t = await plat.trader("stp-default", {"ETH": "10", "BTC": "1"})
        _ok(await _order(t, symbol="ETHBTC", side="SELL", type="LIMIT", timeInForce="GTC",
                         price="0.05000", quantity="1.000"))
        doc = _ok(await _order(t, symbol="ETHBTC", side="BUY", type="LIMIT",
                               timeInForce="GTC", price="0.05000", quantity="1.000"))
        assert (doc["status"], doc["selfTradePreventionMode"]) == (
            "EXPIRED_IN_MATCH", "EXPIRE_TAKER")
        await _cancel_all(t, "ETHBTC")
        assert await plat.balances(t.account) == {"ETH": (U("10"), 0), "BTC": (U("1"), 0)}
    finally:
        await db.upsert_pair(plat.pool, rules)
        await eventually(lambda: advertised("NONE"), timeout=20)
    await _sound(plat)


# --------------------------------------------------------------------------- GTD
async def test_a_good_till_date_order_expires_on_the_engines_clock_and_frees_its_hold(
    plat: Platform,
) -> None:
    t = await plat.trader("gtd", {"USDT": "1000"})
    good_till = int(time.time() * 1000) + 1500
    doc = _ok(await _order(t, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTD",
                           goodTillDate=good_till, price="55000", quantity="0.01",
                           newOrderRespType="RESULT"))
    assert (doc["status"], doc["timeInForce"], doc["goodTillDate"]) == ("NEW", "GTD",
                                                                        good_till)
    assert await plat.balances(t.account) == {"USDT": (U("450"), U("550"))}

    async def expired() -> bool:
        return bool((await _get(t, "BTCUSDT", doc["orderId"]))["status"] == "EXPIRED")

    # The engine appends a Tick to the symbol's log when the good-till is due.
    await eventually(expired, timeout=15)
    assert await plat.balances(t.account) == {"USDT": (U("1000"), 0)}
    await _sound(plat)


@pytest.mark.parametrize(
    ("params", "error"),
    [({"timeInForce": "GTD"}, (-1102, "Mandatory parameter 'goodTillDate' was not sent, "
                                      "was empty/null, or malformed.")),
     ({"timeInForce": "GTD", "goodTillDate": "1000"},
      (-1130, "Data sent for parameter 'goodTillDate' is not valid.")),
     ({"timeInForce": "GTC", "goodTillDate": "99999999999999"},
      (-1106, "Parameter 'goodTillDate' sent when not required.")),
     ({"timeInForce": "GTD", "goodTillDate": "99999999999999", "icebergQty": "0.005"},
      (-1014, "Unsupported order combination."))],
    ids=["missing", "in-the-past", "not-gtd", "iceberg"],
)
async def test_bad_good_till_dates_get_binance_errors(
    plat: Platform, params: dict[str, str], error: tuple[int, str],
) -> None:
    t = await plat.trader(f"gtd-bad-{abs(hash(str(params))) % 10**6}", {"USDT": "1000"})
    r = await _order(t, symbol="BTCUSDT", side="BUY", type="LIMIT", price="55000",
                     quantity="0.01", **params)
    assert _err(r) == error
    assert await plat.balances(t.account) == {"USDT": (U("1000"), 0)}


# --------------------------------------------------------------------------- amend
async def test_amend_keeps_priority_and_releases_exactly_the_removed_lots(
    plat: Platform,
) -> None:
    first = await plat.trader("amend-first", {"USDT": "5000"})
    second = await plat.trader("amend-second", {"USDT": "5000"})
    seller = await plat.trader("amend-seller", {"BTC": "1"})
    placed = _ok(await _order(first, symbol="BTCUSDT", side="BUY", type="LIMIT",
                              timeInForce="GTC", price="58000", quantity="0.05",
                              newClientOrderId="amend-me"))
    behind = _ok(await _order(second, symbol="BTCUSDT", side="BUY", type="LIMIT",
                              timeInForce="GTC", price="58000", quantity="0.02"))
    assert await plat.balances(first.account) == {"USDT": (U("2100"), U("2900"))}

    r = await first.api.signed("PUT", "/api/v3/order/amend/keepPriority", symbol="BTCUSDT",
                               orderId=placed["orderId"], newQty="0.03",
                               newClientOrderId="amended")
    doc = _ok(r)
    amended = doc["amendedOrder"]
    assert {k: amended[k] for k in ("orderId", "origClientOrderId", "clientOrderId", "qty",
                                    "executedQty", "status", "type", "orderListId")} == {
        "orderId": placed["orderId"], "origClientOrderId": "amend-me",
        "clientOrderId": "amended", "qty": "0.03000000", "executedQty": "0.00000000",
        "status": "NEW", "type": "LIMIT", "orderListId": -1}
    assert doc["transactTime"] > 0 and doc["executionId"] > 0 and "listStatus" not in doc
    assert await plat.balances(first.account) == {"USDT": (U("3260"), U("1740"))}
    doc = await _get(first, "BTCUSDT", placed["orderId"])
    assert (doc["origQty"], doc["clientOrderId"]) == ("0.03000000", "amended")

    # It kept its place ahead of the later order at the same price.
    sold = _ok(await _order(seller, symbol="BTCUSDT", side="SELL", type="LIMIT",
                            timeInForce="IOC", price="58000", quantity="0.03"))
    assert sold["status"] == "FILLED"
    assert (await _get(first, "BTCUSDT", placed["orderId"]))["status"] == "FILLED"
    assert (await _get(second, "BTCUSDT", behind["orderId"]))["executedQty"] == "0.00000000"
    assert await plat.balances(first.account) == {
        "BTC": (U("0.03") - U("0.00003"), 0), "USDT": (U("3260"), 0)}
    await _cancel_all(second, "BTCUSDT")
    await _sound(plat)


async def test_amend_down_to_the_executed_quantity_fills_the_order_and_answers_it(
    plat: Platform,
) -> None:
    buyer = await plat.trader("amend-filled", {"USDT": "5000"})
    seller = await plat.trader("amend-filled-seller", {"BTC": "1"})
    placed = _ok(await _order(buyer, symbol="BTCUSDT", side="BUY", type="LIMIT",
                              timeInForce="GTC", price="58100", quantity="0.05"))
    _ok(await _order(seller, symbol="BTCUSDT", side="SELL", type="LIMIT",
                     timeInForce="IOC", price="58100", quantity="0.02"))
    r = await buyer.api.signed("PUT", "/api/v3/order/amend/keepPriority", symbol="BTCUSDT",
                               orderId=placed["orderId"], newQty="0.01",
                               newClientOrderId="amended-filled")
    amended = _ok(r)["amendedOrder"]
    # Only 0.02 ever executed, so that is all the order now is: FILLED, rest released.
    assert {k: amended[k] for k in ("qty", "executedQty", "status", "clientOrderId")} == {
        "qty": "0.02000000", "executedQty": "0.02000000", "status": "FILLED",
        "clientOrderId": "amended-filled"}
    assert await plat.balances(buyer.account) == {
        "BTC": (U("0.02") - U("0.00002"), 0), "USDT": (U("5000") - U("1162"), 0)}
    await _sound(plat)


async def test_amends_that_are_not_reductions_get_binance_errors_and_change_nothing(
    plat: Platform,
) -> None:
    t = await plat.trader("amend-bad", {"USDT": "5000"})
    placed = _ok(await _order(t, symbol="BTCUSDT", side="BUY", type="LIMIT",
                              timeInForce="GTC", price="57000", quantity="0.02"))

    async def amend(**params: Any) -> tuple[int, str]:
        return _err(await t.api.signed("PUT", "/api/v3/order/amend/keepPriority",
                                       symbol="BTCUSDT", **params))

    oid = placed["orderId"]
    assert await amend(orderId=oid, newQty="0.03") == (
        -2038, "Order amend (quantity increase) is not supported.")
    assert await amend(orderId=oid, newQty="0.02") == (
        -2038, "The requested action would change no state; rejecting")
    assert await amend(orderId=oid, newQty="0.000001") == (-1013, "Filter failure: LOT_SIZE")
    assert await amend(orderId=999_999_999, newQty="0.01") == (-2013, "Order does not exist.")
    assert await amend(origClientOrderId="nope", newQty="0.01") == (
        -2013, "Order does not exist.")
    assert (await amend(orderId=oid))[0] == -1102
    doc = await _get(t, "BTCUSDT", oid)
    assert (doc["origQty"], doc["clientOrderId"]) == ("0.02000000", placed["clientOrderId"])
    await _cancel_all(t, "BTCUSDT")
    assert await plat.balances(t.account) == {"USDT": (U("5000"), 0)}
    await _sound(plat)


# --------------------------------------------------------------------------- OCO
async def test_when_one_oco_leg_fills_the_other_expires_and_the_hold_is_released(
    plat: Platform,
) -> None:
    await _trade_at(plat, "BTCUSDT", "60000", "0.001", "oco-open")
    t = await plat.trader("oco-fill", {"BTC": "0.05"})
    buyer = await plat.trader("oco-buyer", {"USDT": "2000"})
    doc = _ok(await t.api.signed(
        "POST", "/api/v3/orderList/oco", symbol="BTCUSDT", side="SELL", quantity="0.01",
        listClientOrderId="my-oco", aboveType="LIMIT_MAKER", abovePrice="61000",
        aboveClientOrderId="take", belowType="STOP_LOSS_LIMIT", belowStopPrice="59000",
        belowPrice="58900", belowTimeInForce="GTC", belowClientOrderId="stop"))
    assert {k: doc[k] for k in ("contingencyType", "listStatusType", "listOrderStatus",
                                "listClientOrderId", "symbol")} == {
        "contingencyType": "OCO", "listStatusType": "EXEC_STARTED",
        "listOrderStatus": "EXECUTING", "listClientOrderId": "my-oco", "symbol": "BTCUSDT"}
    list_id = doc["orderListId"]
    take, stop = doc["orderReports"]
    assert [o["clientOrderId"] for o in doc["orders"]] == ["take", "stop"]
    assert (take["type"], take["status"], take["orderListId"], take["price"]) == (
        "LIMIT_MAKER", "NEW", list_id, "61000.00000000")
    assert (stop["type"], stop["status"], stop["stopPrice"], stop["workingTime"]) == (
        "STOP_LOSS_LIMIT", "NEW", "59000.00000000", -1)
    # ONE hold for the list: the quantity, once.
    assert await plat.balances(t.account) == {"BTC": (U("0.04"), U("0.01"))}
    opened = _ok(await t.api.signed("GET", "/api/v3/openOrderList"))
    assert [o["orderListId"] for o in opened] == [list_id]

    bought = _ok(await _order(buyer, symbol="BTCUSDT", side="BUY", type="LIMIT",
                              timeInForce="IOC", price="61000", quantity="0.01"))
    assert bought["status"] == "FILLED"
    assert (await _get(t, "BTCUSDT", take["orderId"]))["status"] == "FILLED"
    assert (await _get(t, "BTCUSDT", stop["orderId"]))["status"] == "EXPIRED"
    lst = _ok(await t.api.signed("GET", "/api/v3/orderList", orderListId=list_id))
    assert (lst["listStatusType"], lst["listOrderStatus"]) == ("ALL_DONE", "ALL_DONE")
    lst = _ok(await t.api.signed("GET", "/api/v3/orderList", origClientOrderId="my-oco"))
    assert lst["orderListId"] == list_id
    assert _ok(await t.api.signed("GET", "/api/v3/openOrderList")) == []
    assert await plat.balances(t.account) == {
        "BTC": (U("0.04"), 0), "USDT": (U("610") - U("0.61"), 0)}
    await _sound(plat)


async def test_canceling_one_oco_leg_cancels_both_and_releases_the_one_hold(
    plat: Platform,
) -> None:
    await _trade_at(plat, "BTCUSDT", "60000", "0.001", "oco-cancel-open")
    t = await plat.trader("oco-cancel", {"USDT": "2000"})

    async def place(cid: str, resp_type: str) -> dict[str, Any]:
        # BUY: the stop-loss above, the limit maker below.
        return _ok(await t.api.signed(
            "POST", "/api/v3/orderList/oco", symbol="BTCUSDT", side="BUY", quantity="0.01",
            listClientOrderId=cid, aboveType="STOP_LOSS", aboveStopPrice="61000",
            belowType="LIMIT_MAKER", belowPrice="59000", newOrderRespType=resp_type))

    doc = await place("buy-oco-1", "FULL")
    stop, maker = doc["orderReports"]
    assert (stop["type"], maker["type"], maker["fills"]) == ("STOP_LOSS", "LIMIT_MAKER", [])
    # The dearer leg is held: 0.01 BTC at 61000 plus the 20% band.
    assert await plat.balances(t.account) == {"USDT": (U("2000") - U("732"), U("732"))}
    r = await t.api.signed("DELETE", "/api/v3/order", symbol="BTCUSDT",
                           orderId=maker["orderId"])
    assert _ok(r)["status"] == "CANCELED"
    assert (await _get(t, "BTCUSDT", stop["orderId"]))["status"] == "CANCELED"
    assert await plat.balances(t.account) == {"USDT": (U("2000"), 0)}

    doc = await place("buy-oco-2", "ACK")
    assert [set(o) for o in doc["orderReports"]] == [
        {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}] * 2
    r = await t.api.signed("DELETE", "/api/v3/orderList", symbol="BTCUSDT",
                           listClientOrderId="buy-oco-2")
    canceled = _ok(r)
    assert (canceled["orderListId"], canceled["listOrderStatus"]) == (doc["orderListId"],
                                                                      "ALL_DONE")
    assert [o["status"] for o in canceled["orderReports"]] == ["CANCELED", "CANCELED"]
    assert _err(await t.api.signed("DELETE", "/api/v3/orderList", symbol="BTCUSDT",
                                   orderListId=doc["orderListId"]))[0] == -2011
    assert await plat.balances(t.account) == {"USDT": (U("2000"), 0)}
    assert _ok(await t.api.signed("GET", "/api/v3/openOrderList")) == []
    await _sound(plat)


async def test_amending_an_oco_leg_frees_only_what_neither_leg_needs(plat: Platform) -> None:
    await _trade_at(plat, "BTCUSDT", "60000", "0.001", "oco-amend-open")
    t = await plat.trader("oco-amend", {"BTC": "0.05"})
    doc = _ok(await t.api.signed(
        "POST", "/api/v3/orderList/oco", symbol="BTCUSDT", side="SELL", quantity="0.02",
        aboveType="LIMIT_MAKER", abovePrice="61000", belowType="STOP_LOSS_LIMIT",
        belowStopPrice="59000", belowPrice="58900", belowTimeInForce="GTC"))
    take, stop = (o["orderId"] for o in doc["orders"])
    assert await plat.balances(t.account) == {"BTC": (U("0.03"), U("0.02"))}

    async def amend(order_id: int, qty: str) -> dict[str, Any]:
        return _ok(await t.api.signed("PUT", "/api/v3/order/amend/keepPriority",
                                      symbol="BTCUSDT", orderId=order_id, newQty=qty))

    amended = await amend(take, "0.01")
    assert amended["amendedOrder"]["orderListId"] == doc["orderListId"]
    assert {k: amended["listStatus"][k] for k in ("orderListId", "contingencyType",
                                                  "listOrderStatus")} == {
        "orderListId": doc["orderListId"], "contingencyType": "OCO",
        "listOrderStatus": "EXECUTING"}
    # The stop leg may still sell 0.02: nothing is freed yet.
    assert await plat.balances(t.account) == {"BTC": (U("0.03"), U("0.02"))}
    await amend(stop, "0.015")
    # Now neither leg can sell more than 0.015.
    assert await plat.balances(t.account) == {"BTC": (U("0.035"), U("0.015"))}
    assert [(await _get(t, "BTCUSDT", oid))["origQty"] for oid in (take, stop)] == [
        "0.01000000", "0.01500000"]
    r = await t.api.signed("DELETE", "/api/v3/orderList", symbol="BTCUSDT",
                           orderListId=doc["orderListId"])
    assert [o["status"] for o in _ok(r)["orderReports"]] == ["CANCELED", "CANCELED"]
    assert await plat.balances(t.account) == {"BTC": (U("0.05"), 0)}
    await _sound(plat)


async def test_an_oco_whose_stop_would_trigger_is_rejected_whole(plat: Platform) -> None:
    await _trade_at(plat, "BTCUSDT", "60000", "0.001", "oco-wt-open")
    t = await plat.trader("oco-would-trigger", {"BTC": "0.05"})
    r = await t.api.signed(
        "POST", "/api/v3/orderList/oco", symbol="BTCUSDT", side="SELL", quantity="0.01",
        aboveType="LIMIT_MAKER", abovePrice="62000", belowType="STOP_LOSS",
        belowStopPrice="61000")
    assert _err(r) == (-2010, "Order would trigger immediately.")
    assert await plat.balances(t.account) == {"BTC": (U("0.05"), 0)}
    assert (await t.api.signed("GET", "/api/v3/openOrders")).json() == []
    await _sound(plat)


OCO_SELL = {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.01",
            "aboveType": "LIMIT_MAKER", "abovePrice": "61000",
            "belowType": "STOP_LOSS", "belowStopPrice": "59000"}


@pytest.mark.parametrize(
    ("change", "error"),
    [({"belowType": "LIMIT_MAKER", "belowPrice": "59000"},
      (-1168, "At least one OCO order must be contingent.")),
     ({"aboveType": "STOP_LOSS", "aboveStopPrice": "61000", "belowType": "LIMIT_MAKER",
       "belowPrice": "59000"}, (-1166, "A limit order in a sell OCO must be above.")),
     ({"side": "BUY"}, (-1165, "A limit order in a buy OCO must be below.")),
     ({"aboveType": "LIMIT"}, (-1158, "Order type not supported in OCO.")),
     ({"belowStopPrice": None}, (-1102, "Mandatory parameter 'belowStopPrice' was not "
                                        "sent, was empty/null, or malformed.")),
     ({"belowStopPrice": "61500"},
      (-2010, "The relationship of the prices for the orders is not correct.")),
     ({"belowType": "STOP_LOSS_LIMIT", "belowPrice": "58900"},
      (-1102, "Mandatory parameter 'belowTimeInForce' was not sent, was empty/null, or "
              "malformed.")),
     ({"quantity": "1"}, (-2010, "Account has insufficient balance for requested action.")),
     ({"belowStopPrice": "59000.001"}, (-1013, "Filter failure: PRICE_FILTER"))],
    ids=["both-limit", "sell-limit-below", "buy-limit-above", "bad-type", "no-stop",
         "prices-crossed", "no-tif", "insufficient", "stop-off-tick"],
)
async def test_bad_oco_lists_get_binance_errors_and_lock_nothing(
    plat: Platform, change: dict[str, str | None], error: tuple[int, str],
) -> None:
    t = await plat.trader(f"oco-bad-{abs(hash(str(change))) % 10**6}", {"BTC": "0.05"})
    params = {k: v for k, v in (OCO_SELL | change).items() if v is not None}
    r = await t.api.signed("POST", "/api/v3/orderList/oco", **params)
    assert _err(r) == error
    assert await plat.balances(t.account) == {"BTC": (U("0.05"), 0)}
    assert _ok(await t.api.signed("GET", "/api/v3/openOrderList")) == []


async def test_the_outbox_relay_sends_an_order_list_whose_gateway_died(
    plat: Platform,
) -> None:
    """Stored with its hold but never published: settlement's relay sends the list once,
    as one NewOrderList."""
    await _trade_at(plat, "BTCUSDT", "60000", "0.001", "oco-relay-open")
    t = await plat.trader("oco-orphan", {"BTC": "0.05"})
    qty = qty_to_lots(BTCUSDT, Decimal("0.01"))
    ts = int(time.time() * 1000) - 10_000
    legs = (
        db.OrderRequest(t.account, "BTCUSDT", "orphan-take", Side.SELL, OrderType.LIMIT_MAKER,
                        TimeInForce.GTC, price_to_ticks(BTCUSDT, Decimal("61000")), qty, 0,
                        False, "BTC", U("0.01"), ts, stp=StpMode.NONE),
        db.OrderRequest(t.account, "BTCUSDT", "orphan-stop", Side.SELL, OrderType.STOP_LOSS,
                        TimeInForce.GTC, 0, qty, 0, False, "BTC", U("0.01"), ts,
                        price_to_ticks(BTCUSDT, Decimal("59000"))),
    )
    list_id, order_ids, result = await db.place_order_list(
        plat.pool, db.ListRequest(t.account, "BTCUSDT", "orphan-list", legs, "BTC",
                                  U("0.01"), ts))
    assert result == db.PlaceResult.PLACED and list_id is not None

    async def working() -> bool:
        return [(await _get(t, "BTCUSDT", oid))["status"] for oid in order_ids] == [
            "NEW", "NEW"]

    await eventually(working, timeout=20)
    assert await plat.balances(t.account) == {"BTC": (U("0.04"), U("0.01"))}
    r = await t.api.signed("DELETE", "/api/v3/orderList", symbol="BTCUSDT",
                           orderListId=list_id)
    assert [o["status"] for o in _ok(r)["orderReports"]] == ["CANCELED", "CANCELED"]
    assert await plat.balances(t.account) == {"BTC": (U("0.05"), 0)}
    await _sound(plat)


# --------------------------------------------------------------------------- entry errors
@pytest.mark.parametrize(
    ("params", "error"),
    [({"type": "STOP_LOSS", "quantity": "0.01"},
      (-1102, "Mandatory parameter 'stopPrice' was not sent, was empty/null, or malformed.")),
     ({"type": "LIMIT", "timeInForce": "GTC", "price": "55000", "quantity": "0.01",
       "stopPrice": "56000"}, (-1106, "Parameter 'stopPrice' sent when not required.")),
     ({"type": "STOP_LOSS", "quantity": "0.01", "stopPrice": "56000", "price": "55000"},
      (-1106, "Parameter 'price' sent when not required.")),
     ({"type": "STOP_LOSS", "quantity": "0.01", "stopPrice": "56000.001"},
      (-1013, "Filter failure: PRICE_FILTER")),
     ({"type": "STOP_LOSS_LIMIT", "quantity": "0.01", "stopPrice": "56000",
       "price": "55000"}, (-1102, "Mandatory parameter 'timeInForce' was not sent, was "
                                  "empty/null, or malformed.")),
     ({"type": "LIMIT", "timeInForce": "IOC", "price": "55000", "quantity": "0.01",
       "icebergQty": "0.005"}, (-1014, "Unsupported order combination.")),
     ({"type": "LIMIT", "timeInForce": "GTC", "price": "55000", "quantity": "0.01",
       "icebergQty": "0.01"}, (-2010, "IcebergQty exceeds QTY.")),
     ({"type": "LIMIT", "timeInForce": "GTC", "price": "55000", "quantity": "0.01",
       "icebergQty": "0.0001"}, (-1013, "Filter failure: ICEBERG_PARTS")),
     ({"type": "STOP_LOSS", "quantity": "0.01", "stopPrice": "56000",
       "icebergQty": "0.005"}, (-1106, "Parameter 'icebergQty' sent when not required.")),
     ({"type": "MARKET", "quantity": "0.01", "stopPrice": "56000"},
      (-1106, "Parameter 'stopPrice' sent when not required.")),
     ({"type": "LIMIT", "timeInForce": "GTC", "price": "55000", "quantity": "0.01",
       "selfTradePreventionMode": "EXPIRE_NOBODY"},
      (-1130, "Data sent for parameter 'selfTradePreventionMode' is not valid."))],
    ids=["stop-missing", "stop-on-limit", "price-on-stop-market", "stop-off-tick",
         "stop-limit-no-tif", "iceberg-ioc", "iceberg-whole", "iceberg-parts",
         "iceberg-on-stop-market", "stop-on-market", "bad-stp"],
)
async def test_bad_order_controls_get_binance_errors_and_lock_nothing(
    plat: Platform, params: dict[str, str], error: tuple[int, str],
) -> None:
    t = await plat.trader(f"ctl-bad-{abs(hash(str(params))) % 10**6}", {"USDT": "10000"})
    r = await _order(t, symbol="BTCUSDT", side="BUY", **params)
    assert _err(r) == error
    assert await plat.balances(t.account) == {"USDT": (U("10000"), 0)}


async def test_exchange_info_advertises_every_order_control(plat: Platform) -> None:
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        info = (await http.get("/api/v3/exchangeInfo", params={"symbol": "BTCUSDT"})).json()
    sym = info["symbols"][0]
    assert sym["orderTypes"] == ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS",
                                 "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"]
    assert {k: sym[k] for k in ("icebergAllowed", "ocoAllowed", "otoAllowed", "amendAllowed",
                                "cancelReplaceAllowed", "defaultSelfTradePreventionMode")} == {
        "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": False,
        "amendAllowed": True, "cancelReplaceAllowed": False,
        "defaultSelfTradePreventionMode": "NONE"}
    assert sym["allowedSelfTradePreventionModes"] == [m.name for m in StpMode]
    assert {"filterType": "ICEBERG_PARTS", "limit": 10} in sym["filters"]
