"""The Binance WebSocket API (``/ws-api/v3``) against the real platform: ccxt.pro's own
``*_ws`` methods and user-data watchers, unchanged (only its URLs point at the gateway),
ccxt's REST ``edit_order`` (``POST /api/v3/order/cancelReplace``), and the envelope's
contract with a raw client: Ed25519 ``session.logon``, per-request signatures, Binance's
error codes, and a socket that misbehaves closed with a reason."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import ccxt.async_support as ccxt_async
import ccxt.pro as ccxtpro
import httpx
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.integration.test_ccxt import point_at
from tests.support.harness import Platform, Trader, eventually
from tests.support.security import admin_headers, pem

from tradeplane.domain.signing import sign

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def pro(plat: Platform, t: Trader) -> AsyncIterator[Any]:
    ex = ccxtpro.binance({"apiKey": t.api_key, "secret": t.secret})
    point_at(ex, plat.base_url)
    try:
        await ex.load_markets()
        yield ex
    finally:
        await ex.close()


def ws_url(plat: Platform, query: str = "") -> str:
    return f"ws://127.0.0.1:{plat.settings.http_port}/ws-api/v3{query}"


def payload(params: dict[str, Any]) -> str:
    """What Binance signs: the params sorted by name, ``k=v`` joined by ``&`` (booleans
    as JSON writes them)."""
    def text(v: Any) -> str:
        return json.dumps(v) if isinstance(v, bool) else str(v)

    return "&".join(f"{k}={text(v)}" for k, v in sorted(params.items()))


def hmac_params(t: Trader, **params: Any) -> dict[str, Any]:
    """``params`` with apiKey, timestamp and the HMAC signature, as Binance signs them."""
    p = {**params, "apiKey": t.api_key, "timestamp": int(time.time() * 1000)}
    return {**p, "signature": sign(t.secret, payload(p))}


def ed25519_params(private: Ed25519PrivateKey, **params: Any) -> dict[str, Any]:
    p = {**params, "timestamp": int(time.time() * 1000)}
    return {**p, "signature": base64.b64encode(private.sign(payload(p).encode())).decode()}


async def call(ws: Any, method: str, params: dict[str, Any] | None = None,
               rid: Any = "r", events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Send one request and read until its answer; user data events that come first go
    to ``events``."""
    req: dict[str, Any] = {"id": rid, "method": method}
    if params is not None:
        req["params"] = params
    await ws.send(json.dumps(req))
    while True:
        doc: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 15))
        if "subscriptionId" not in doc or "id" in doc:
            return doc
        if events is not None:
            events.append(doc)


async def ed25519_key(plat: Platform, account: int) -> tuple[str, Ed25519PrivateKey]:
    private = Ed25519PrivateKey.generate()
    token = plat.settings.admin_token.get_secret_value()
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        r = await http.post("/admin/api-keys", headers=admin_headers(token), json={
            "account": account, "keyType": "ED25519", "publicKey": pem(private),
            "permissions": ["read", "trade"]})
    assert r.status_code == 200, r.text
    return r.json()["apiKey"], private


async def closed_with(ws: Any) -> tuple[int, str]:
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason


# --------------------------------------------------------------------------- ccxt.pro
async def test_ccxt_pro_creates_fetches_edits_and_cancels_orders_over_the_ws_api(
    plat: Platform,
) -> None:
    t = await plat.trader("ws-orders", {"USDT": "10000"})
    async with pro(plat, t) as ex:
        order = await ex.create_order_ws("ETH/USDT", "limit", "buy", 0.5, 2500.0)
        assert (order["status"], order["amount"], order["price"]) == ("open", 0.5, 2500.0)
        assert (await plat.balances(t.account))["USDT"] == (8750 * 10**8, 1250 * 10**8)
        fetched = await ex.fetch_order_ws(order["id"], "ETH/USDT")
        assert (fetched["id"], fetched["status"], fetched["filled"]) == (order["id"], "open",
                                                                         0.0)
        # edit = cancel-replace: the old order goes, a new one takes its funds
        edited = await ex.edit_order_ws(order["id"], "ETH/USDT", "limit", "buy", 0.6, 2400.0)
        assert edited["id"] != order["id"]
        assert (edited["status"], edited["amount"], edited["price"]) == ("open", 0.6, 2400.0)
        old = await ex.fetch_order_ws(order["id"], "ETH/USDT")
        assert old["status"] == "canceled"
        assert (await plat.balances(t.account))["USDT"] == (8560 * 10**8, 1440 * 10**8)
        open_orders = await ex.fetch_open_orders_ws("ETH/USDT")
        assert [o["id"] for o in open_orders] == [edited["id"]]
        canceled = await ex.cancel_order_ws(edited["id"], "ETH/USDT")
        assert (canceled["id"], canceled["status"]) == (edited["id"], "canceled")
        assert (await plat.balances(t.account))["USDT"] == (10000 * 10**8, 0)
        # refusals are ccxt's exceptions, from Binance's codes
        with pytest.raises(ccxt_async.InsufficientFunds):
            await ex.create_order_ws("ETH/USDT", "limit", "buy", 10, 2500.0)
        with pytest.raises(ccxt_async.OrderNotFound):
            await ex.cancel_order_ws(edited["id"], "ETH/USDT")
        with pytest.raises(ccxt_async.OrderNotFound):
            await ex.fetch_order_ws("999999999", "ETH/USDT")
        # test orders are checked, never placed
        await ex.create_order_ws("ETH/USDT", "limit", "buy", 0.5, 2500.0, {"test": True})
        assert await ex.fetch_open_orders_ws("ETH/USDT") == []
        two = [await ex.create_order_ws("ETH/USDT", "limit", "buy", 0.1, p)
               for p in (2000.0, 2001.0)]
        gone = await ex.cancel_all_orders_ws("ETH/USDT")
        assert sorted(o["id"] for o in gone) == sorted(o["id"] for o in two)
        # (fetch_balance_ws is left out: ccxt reads a spot account.status answer as a
        # futures one, whose "assets" it lacks, on Binance too; account.status is tested
        # with a raw client below)


async def test_ccxt_pro_watches_orders_balance_and_trades_on_the_ws_api_socket(
    plat: Platform,
) -> None:
    maker = await plat.trader("ws-maker", {"ETH": "5"})
    taker = await plat.trader("ws-taker", {"USDT": "10000"})
    async with pro(plat, maker) as mex, pro(plat, taker) as tex:
        await tex.authenticate()  # userDataStream.subscribe.signature, acknowledged
        orders = asyncio.create_task(tex.watch_orders("ETH/USDT"))
        trades = asyncio.create_task(tex.watch_my_trades("ETH/USDT"))
        balance = asyncio.create_task(tex.watch_balance())
        client = tex.client(tex.urls["api"]["ws"]["ws-api"]["spot"])

        async def watching() -> bool:  # an update before a watcher waits is not its
            return {"orders:ETH/USDT", "myTrades:ETH/USDT", "spot:balance"} <= set(
                client.futures)

        await eventually(watching)
        ask = await mex.create_order_ws("ETH/USDT", "limit", "sell", 1, 2500.0)
        bought = await tex.create_order_ws("ETH/USDT", "limit", "buy", 0.4, 2500.0)
        assert bought["status"] == "closed" and bought["filled"] == 0.4
        got = await asyncio.wait_for(orders, 15)
        assert got[-1]["id"] == bought["id"] and got[-1]["symbol"] == "ETH/USDT"
        [trade] = await asyncio.wait_for(trades, 15)
        assert (trade["order"], trade["amount"], trade["price"], trade["side"]) == (
            bought["id"], 0.4, 2500.0, "buy")
        bal = await asyncio.wait_for(balance, 15)
        assert bal["ETH"]["free"] == 0.3996  # less the taker fee
        assert (bal["USDT"]["free"], bal["USDT"]["used"]) == (9000.0, 0.0)
        # the same over requests: myTrades and allOrders
        [mine] = await tex.fetch_my_trades_ws("ETH/USDT")
        assert (mine["order"], mine["amount"], mine["side"]) == (bought["id"], 0.4, "buy")
        history = await tex.fetch_orders_ws("ETH/USDT")
        assert [(o["id"], o["status"]) for o in history] == [(bought["id"], "closed")]
        await mex.cancel_order_ws(ask["id"], "ETH/USDT")


async def test_ccxt_rest_edit_order_is_binance_cancel_replace(plat: Platform) -> None:
    t = await plat.trader("rest-edit", {"USDT": "10000"})
    ex = ccxt_async.binance({"apiKey": t.api_key, "secret": t.secret})
    point_at(ex, plat.base_url)
    try:
        await ex.load_markets()
        order = await ex.create_order("ETH/USDT", "limit", "buy", 1, 2500.0)
        edited = await ex.edit_order(order["id"], "ETH/USDT", "limit", "buy", 3.9, 2500.0)
        # the new order uses the hold the old one released (3.9 * 2500 > 10000 - 2500)
        assert (edited["status"], edited["amount"]) == ("open", 3.9)
        assert (await ex.fetch_order(order["id"], "ETH/USDT"))["status"] == "canceled"
        with pytest.raises(ccxt_async.ExchangeError, match="-2022"):
            await ex.edit_order(order["id"], "ETH/USDT", "limit", "buy", 1, 2500.0)
        await ex.cancel_order(edited["id"], "ETH/USDT")
    finally:
        await ex.close()


async def test_cancel_replace_answers_both_outcomes_as_binance(plat: Platform) -> None:
    t = await plat.trader("replace", {"USDT": "10000"})
    base = {"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
            "quantity": "1", "price": "2500"}

    async def replace(**params: Any) -> httpx.Response:
        return await t.api.signed("POST", "/api/v3/order/cancelReplace", **{**base, **params})

    # STOP_ON_FAILURE and nothing to cancel: nothing placed (400, -2022)
    r = await replace(cancelReplaceMode="STOP_ON_FAILURE", cancelOrderId=987654321)
    assert r.status_code == 400
    assert r.json() == {"code": -2022, "msg": "Order cancel-replace failed.", "data": {
        "cancelResult": "FAILURE", "newOrderResult": "NOT_ATTEMPTED",
        "cancelResponse": {"code": -2011, "msg": "Unknown order sent."},
        "newOrderResponse": None}}
    # ALLOW_FAILURE: the new order is placed all the same (409, -2021)
    r = await replace(cancelReplaceMode="ALLOW_FAILURE", cancelOrderId=987654321,
                      newOrderRespType="ACK")
    assert r.status_code == 409
    doc = r.json()
    assert (doc["code"], doc["data"]["cancelResult"], doc["data"]["newOrderResult"]) == (
        -2021, "FAILURE", "SUCCESS")
    placed = doc["data"]["newOrderResponse"]["orderId"]
    # canceled, and the new order refused (insufficient funds): 409, -2021
    r = await replace(cancelReplaceMode="STOP_ON_FAILURE", cancelOrderId=placed,
                      quantity="5", cancelNewClientOrderId="gone-1")
    assert r.status_code == 409
    data = r.json()["data"]
    assert (data["cancelResult"], data["newOrderResult"]) == ("SUCCESS", "FAILURE")
    assert data["cancelResponse"]["status"] == "CANCELED"
    assert data["cancelResponse"]["clientOrderId"] == "gone-1"
    assert data["newOrderResponse"] == {
        "code": -2010, "msg": "Account has insufficient balance for requested action."}
    # a malformed parameter: refused before anything is done
    r = await replace(cancelReplaceMode="SOMETIMES", cancelOrderId=placed)
    assert r.json()["code"] == -1100
    assert (await plat.balances(t.account))["USDT"] == (10000 * 10**8, 0)


# --------------------------------------------------------------------------- envelope
async def test_answers_carry_the_id_status_result_and_rate_limits(plat: Platform) -> None:
    t = await plat.trader("envelope", {"USDT": "1000"})
    async with websockets.connect(ws_url(plat)) as ws:
        pong = await call(ws, "ping", rid=7)
        [weight] = pong.pop("rateLimits")
        assert pong == {"id": 7, "status": 200, "result": {}}
        used = weight.pop("count")
        assert weight == {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                          "intervalNum": 1, "limit": 10_000_000}
        assert used >= 1  # this address's weight this minute, REST's included
        now = await call(ws, "time", rid=None)
        assert now["id"] is None and abs(now["result"]["serverTime"] - time.time() * 1000) < 5000
        info = await call(ws, "exchangeInfo", {"symbols": ["ETHUSDT"]})
        assert [s["symbol"] for s in info["result"]["symbols"]] == ["ETHUSDT"]
        placed = await call(ws, "order.place", hmac_params(
            t, symbol="ETHUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
            quantity="0.01", price="2500", newOrderRespType="ACK"), rid="o1")
        assert placed["status"] == 200 and placed["id"] == "o1"
        limits = {(x["rateLimitType"], x["interval"]): x for x in placed["rateLimits"]}
        assert limits[("ORDERS", "SECOND")]["count"] >= 1
        assert limits[("ORDERS", "DAY")]["count"] >= 1
        account = await call(ws, "account.status", hmac_params(t))
        assert {"asset": "USDT", "free": "975.00000000", "locked": "25.00000000"} in (
            account["result"]["balances"])
        quiet = await call(ws, "order.cancel", hmac_params(
            t, symbol="ETHUSDT", orderId=placed["result"]["orderId"], returnRateLimits=False))
        assert quiet["result"]["status"] == "CANCELED" and "rateLimits" not in quiet
    async with websockets.connect(ws_url(plat, "?returnRateLimits=false")) as ws:
        assert await call(ws, "ping") == {"id": "r", "status": 200, "result": {}}


async def test_oco_lists_are_placed_queried_and_canceled_over_the_ws_api(
    plat: Platform,
) -> None:
    t = await plat.trader("ws-oco", {"ETH": "2"})
    async with websockets.connect(ws_url(plat, "?returnRateLimits=false")) as ws:
        placed = await call(ws, "orderList.place.oco", hmac_params(
            t, symbol="ETHUSDT", side="SELL", quantity="1", aboveType="LIMIT_MAKER",
            abovePrice="2800", belowType="STOP_LOSS_LIMIT", belowPrice="2300",
            belowStopPrice="2350", belowTimeInForce="GTC"))
        assert placed["status"] == 200, placed
        lst = placed["result"]
        assert (lst["contingencyType"], len(lst["orderReports"])) == ("OCO", 2)
        found = await call(ws, "orderList.status", hmac_params(
            t, orderListId=lst["orderListId"]))
        assert found["result"]["listOrderStatus"] == "EXECUTING"
        open_lists = await call(ws, "openOrderLists.status", hmac_params(t))
        assert [x["orderListId"] for x in open_lists["result"]] == [lst["orderListId"]]
        gone = await call(ws, "orderList.cancel", hmac_params(
            t, symbol="ETHUSDT", orderListId=lst["orderListId"]))
        assert gone["result"]["listOrderStatus"] == "ALL_DONE"
        assert {r["status"] for r in gone["result"]["orderReports"]} == {"CANCELED"}
    assert (await plat.balances(t.account))["ETH"] == (2 * 10**8, 0)


async def test_errors_are_binance_codes_in_the_envelope_and_the_socket_lives_on(
    plat: Platform,
) -> None:
    t = await plat.trader("errors", {"USDT": "1000"})
    async with websockets.connect(ws_url(plat, "?returnRateLimits=false")) as ws:
        params = hmac_params(t, symbol="ETHUSDT", orderId=1)
        bad = await call(ws, "order.status", {**params, "orderId": 2}, rid=1)
        assert bad == {"id": 1, "status": 400, "error": {
            "code": -1022, "msg": "Signature for this request is not valid."}}
        nosig = await call(ws, "order.status", {k: v for k, v in params.items()
                                                if k != "signature"}, rid=2)
        assert nosig["error"]["code"] == -1102
        unknown = await call(ws, "order.teleport", {}, rid=3)
        assert (unknown["status"], unknown["error"]["code"]) == (400, -1020)
        assert "order.teleport" in unknown["error"]["msg"]
        await ws.send("{not json")
        assert json.loads(await ws.recv()) == {"id": None, "status": 400, "error": {
            "code": -1000, "msg": "Malformed request: not valid JSON."}}
        await ws.send("[" * 2000 + "]" * 2000)  # nested too deep for any request
        assert json.loads(await ws.recv())["error"]["code"] in (-1000, -1102)
        nested = await call(ws, "order.status", {"symbol": {"x": [1]}}, rid=4)
        assert (nested["id"], nested["error"]["code"]) == (4, -1100)
        sym = await call(ws, "order.status", hmac_params(t, symbol="NOPE", orderId=1), rid=5)
        assert sym["error"] == {"code": -1121, "msg": "Invalid symbol."}
        logon = await call(ws, "session.logon", hmac_params(t), rid=6)  # HMAC: not for logon
        assert logon["status"] == 400 and logon["error"]["code"] == -4056
        ok = await call(ws, "ping", rid=8)  # still served
        assert ok["status"] == 200
    async with websockets.connect(ws_url(plat)) as ws:  # over the size limit: 1009
        await ws.send(json.dumps({"id": 1, "method": "ping", "params": {"x": "y" * 5000}}))
        assert (await closed_with(ws))[0] == 1009


async def test_ed25519_session_logon_signs_for_the_connection(plat: Platform) -> None:
    t = await plat.trader("logon", {"USDT": "1000"})
    api_key, private = await ed25519_key(plat, t.account)
    async with websockets.connect(ws_url(plat, "?returnRateLimits=false")) as ws:
        status = await call(ws, "session.status")
        assert status["result"]["apiKey"] is None
        unsigned = {"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                    "quantity": "0.01", "price": "2500", "newOrderRespType": "RESULT"}
        refused = await call(ws, "order.place",
                             {**unsigned, "timestamp": int(time.time() * 1000)})
        assert refused["error"]["code"] in (-2014, -1102)
        logon = await call(ws, "session.logon", ed25519_params(private, apiKey=api_key))
        assert logon["status"] == 200, logon
        assert logon["result"]["apiKey"] == api_key and logon["result"]["authorizedSince"]
        placed = await call(ws, "order.place", {**unsigned, "timestamp": int(time.time() * 1000)})
        assert placed["status"] == 200 and placed["result"]["status"] == "NEW"
        stale = await call(ws, "order.status", {"symbol": "ETHUSDT", "timestamp": 1,
                                                "orderId": placed["result"]["orderId"]})
        assert stale["error"]["code"] == -1021  # the timestamp still counts
        sub = await call(ws, "userDataStream.subscribe",
                         {"timestamp": int(time.time() * 1000)})
        assert sub["result"] == {"subscriptionId": 0}
        events: list[dict[str, Any]] = []
        await call(ws, "order.cancel", {"symbol": "ETHUSDT", "timestamp": int(time.time() * 1000),
                                        "orderId": placed["result"]["orderId"]}, events=events)
        while not any(e["event"].get("X") == "CANCELED" for e in events):
            events.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        assert {e["subscriptionId"] for e in events} == {0}
        assert (await call(ws, "userDataStream.unsubscribe"))["result"] == {}
        out = await call(ws, "session.logout")
        assert out["result"]["apiKey"] is None and out["result"]["userDataStream"] is False
        again = await call(ws, "order.place", {**unsigned, "timestamp": int(time.time() * 1000)})
        assert again["error"]["code"] in (-2014, -1102)


async def test_a_revoked_key_ends_its_subscription_at_once(plat: Platform) -> None:
    t = await plat.trader("revoked", {"USDT": "1000"})
    async with websockets.connect(ws_url(plat, "?returnRateLimits=false")) as ws:
        sub = await call(ws, "userDataStream.subscribe.signature", hmac_params(t))
        assert sub["result"] == {"subscriptionId": 0}
        token = plat.settings.admin_token.get_secret_value()
        async with httpx.AsyncClient(base_url=plat.base_url) as http:
            r = await http.delete(f"/admin/api-keys/{t.api_key}",
                                  headers=admin_headers(token))
            assert r.status_code == 200, r.text
        doc = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert doc["subscriptionId"] == 0 and doc["event"]["e"] == "eventStreamTerminated"
        refused = await call(ws, "order.status", hmac_params(t, symbol="ETHUSDT", orderId=1))
        assert refused["error"]["code"] == -2015
