"""Hostile values at the edge (issue 10): every integer and decimal a client sends is
parsed once (ASCII digits, whole-string match, the column's range), answered with a
Binance-style 4xx, harms no other request and locks nothing. Against real NATS,
PostgreSQL and Redis over real HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from tests.support.harness import Platform, Trader, eventually

from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus
from tradeplane.adapters.orderpath import OrderPath
from tradeplane.domain.model import OrderType, Side, Status, TimeInForce
from tradeplane.domain.money import to_units
from tradeplane.domain.signing import sign

pytestmark = pytest.mark.integration

#: Values no integer or decimal parameter may take: superscript, fullwidth and
#: Arabic-Indic digits, past 2^63, 20 digits, NUL, a trailing newline, signs, exponents,
#: spaces, and a long string.
HOSTILE = ("\u00b2", "\uff11\uff12", "\u0661\u0662", "9223372036854775808",
           "99999999999999999999", "1\x00", "1\n", "-1", "1e3", " 1", "NaN", "9" * 4000)
#: Values no identifier or text filter may take.
HOSTILE_TEXT = ("a\x00b", "abc\n", "\u00e9t\u00e9", "x" * 4000)
#: Parameters that are text (ids, filters) rather than numbers.
TEXT_PARAMS = frozenset({"origClientOrderId", "listClientOrderId", "coin", "txId",
                         "withdrawOrderId"})

LIMIT_BUY = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
             "quantity": "0.001", "price": "50000"}


def _assert_refused(r: httpx.Response, what: str) -> None:
    assert 400 <= r.status_code < 500, f"{what}: {r.status_code} {r.text[:300]}"
    doc = r.json()
    assert isinstance(doc.get("code"), int) and doc["code"] < 0, f"{what}: {doc}"
    assert isinstance(doc.get("msg"), str), f"{what}: {doc}"
    assert len(r.content) < 1000, f"{what}: the answer echoes the input ({len(r.content)} B)"


async def _nothing_held(plat: Platform, t: Trader) -> None:
    """Every balance of ``t`` free, no order or list of its stored, the ledger sound."""
    assert all(locked == 0 for _, locked in (await plat.balances(t.account)).values())
    assert await plat.pool.fetchval(
        "SELECT count(*) FROM orders WHERE account_id = $1", t.account) == 0
    _, problems = await db.check_invariants(plat.pool)
    assert problems == []


# ----------------------------------------------------------------- batch poisoning
async def test_poisoned_orders_are_refused_alone_and_every_valid_order_of_another_account_succeeds(
    plat: Platform,
) -> None:
    mallory = await plat.trader("mallory-batch", {"USDT": "100000", "BTC": "10"})
    victim = await plat.trader("victim-batch", {"USDT": "100000"})
    poisons: list[dict[str, str]] = [
        {**LIMIT_BUY, "timeInForce": "GTD", "goodTillDate": "9223372036854775808"},
        {**LIMIT_BUY, "timeInForce": "GTD", "goodTillDate": "9223372036854775807"},
        {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
         "quoteOrderQty": "99999999999999999999"},
        {"symbol": "BTCUSDT", "side": "BUY", "type": "STOP_LOSS", "quantity": "0.001",
         "stopPrice": "99999999999999999999"},
        {"symbol": "BTCUSDT", "side": "BUY", "type": "STOP_LOSS", "quantity": "0.001",
         "stopPrice": "90000000000"},  # fits a bigint, but far past maxPrice
        {**LIMIT_BUY, "price": "92233720368"},
    ]

    async def poison(i: int) -> httpx.Response:
        return await mallory.api.signed("POST", "/api/v3/order", **poisons[i % len(poisons)])

    async def valid(i: int) -> httpx.Response:
        return await victim.api.signed("POST", "/api/v3/order", **LIMIT_BUY,
                                       newClientOrderId=f"v{i}", newOrderRespType="ACK")

    jobs = [valid(i) for i in range(300)] + [poison(i) for i in range(100)]
    answers = await asyncio.gather(*jobs)
    good, bad = answers[:300], answers[300:]
    assert [r.status_code for r in good] == [200] * 300, {r.text for r in good}
    for r in bad:
        _assert_refused(r, "poisoned order")
        assert r.json()["code"] in (-1100, -1013), r.text
    await _nothing_held(plat, mallory)
    rows = await plat.pool.fetchval(
        "SELECT count(*) FROM orders WHERE account_id = $1", victim.account)
    assert rows == 300


async def test_a_request_that_fails_the_batch_statement_fails_alone(plat: Platform) -> None:
    """Below the parser, too: an element that makes PostgreSQL refuse the whole batch
    statement (here a bigint overflow no parser would let through) is retried alone, and
    only its caller gets the error."""
    victim = await plat.trader("victim-isolation", {"USDT": "100000"})
    mallory = await plat.trader("mallory-isolation", {"USDT": "100000"})
    bus = await Bus.connect(plat.settings.nats_url, name="isolation-test")
    path = OrderPath(plat.pool, bus)
    now = int(time.time() * 1000)

    def request(account: int, cid: str, good_till: int) -> db.OrderRequest:
        return db.OrderRequest(
            account, "BTCUSDT", cid, Side.BUY, OrderType.LIMIT, TimeInForce.GTC,
            5_000_000, 100, 0, False, "USDT", to_units("50"), now, good_till=good_till)

    reqs = [request(victim.account, f"iso{i}", 0) for i in range(40)]
    reqs.insert(20, request(mallory.account, "poison", 2**63))
    try:
        results = await asyncio.gather(*(path.place(r) for r in reqs), return_exceptions=True)
    finally:
        await path.close()
        await bus.close()
    poisoned = results.pop(20)
    assert isinstance(poisoned, Exception)
    assert all(isinstance(r, tuple) and r[1] == db.PlaceResult.PLACED for r in results), results
    await _nothing_held(plat, mallory)


# ----------------------------------------------------------------- one parser everywhere
PUBLIC: list[tuple[str, dict[str, str], tuple[str, ...]]] = [
    ("/api/v3/depth", {"symbol": "BTCUSDT"}, ("limit",)),
    ("/api/v3/trades", {"symbol": "BTCUSDT"}, ("limit",)),
    ("/api/v3/aggTrades", {"symbol": "BTCUSDT"}, ("limit", "fromId", "startTime", "endTime")),
    ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m"},
     ("limit", "startTime", "endTime")),
]

SIGNED: list[tuple[str, str, dict[str, str], tuple[str, ...]]] = [
    ("POST", "/api/v3/order", LIMIT_BUY,
     ("quantity", "price", "recvWindow", "timestamp")),
    ("POST", "/api/v3/order", {**LIMIT_BUY, "timeInForce": "GTD"}, ("goodTillDate",)),
    ("POST", "/api/v3/order", {**LIMIT_BUY, "quantity": "0.01"}, ("icebergQty",)),
    ("POST", "/api/v3/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET"},
     ("quoteOrderQty",)),
    ("POST", "/api/v3/order", {"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_LOSS",
                               "quantity": "0.001"}, ("stopPrice",)),
    ("GET", "/api/v3/order", {"symbol": "BTCUSDT"}, ("orderId", "origClientOrderId")),
    ("DELETE", "/api/v3/order", {"symbol": "BTCUSDT"}, ("orderId", "origClientOrderId")),
    ("PUT", "/api/v3/order/amend/keepPriority", {"symbol": "BTCUSDT", "newQty": "0.001"},
     ("orderId",)),
    ("PUT", "/api/v3/order/amend/keepPriority", {"symbol": "BTCUSDT", "orderId": "1"},
     ("newQty",)),
    ("GET", "/api/v3/allOrders", {"symbol": "BTCUSDT"},
     ("orderId", "startTime", "endTime", "limit")),
    ("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT"},
     ("orderId", "fromId", "startTime", "endTime", "limit")),
    ("GET", "/api/v3/orderList", {}, ("orderListId", "origClientOrderId")),
    ("DELETE", "/api/v3/orderList", {"symbol": "BTCUSDT"},
     ("orderListId", "listClientOrderId")),
    ("POST", "/api/v3/orderList/oco",
     {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.001", "aboveType": "LIMIT_MAKER",
      "abovePrice": "60000", "belowType": "STOP_LOSS", "belowStopPrice": "40000"},
     ("quantity", "abovePrice", "belowStopPrice")),
    ("GET", "/sapi/v1/capital/deposit/hisrec", {},
     ("startTime", "endTime", "offset", "limit", "status", "coin", "txId")),
    ("GET", "/sapi/v1/capital/withdraw/history", {},
     ("startTime", "endTime", "offset", "limit", "status", "idList", "withdrawOrderId")),
]


@pytest.mark.parametrize("symbols", ["5", "[1]", "[]", '"BTCUSDT"', "[" * 5000, "{}",
                                     '["BTCUSDT", null]', '["NOPE"]'])
@pytest.mark.parametrize("path", ["/api/v3/exchangeInfo", "/api/v3/ticker/24hr",
                                  "/api/v3/ticker/price"])
async def test_a_symbols_list_that_is_not_a_json_array_of_known_names_is_a_4xx(
    plat: Platform, path: str, symbols: str
) -> None:
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        r = await http.get(path, params={"symbols": symbols})
    _assert_refused(r, f"{path} symbols={symbols[:20]!r}")


async def test_hostile_numbers_on_public_endpoints_get_a_4xx_and_are_counted(
    plat: Platform,
) -> None:
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        for path, base, names in PUBLIC:
            for name in names:
                for value in HOSTILE:
                    r = await http.get(path, params={**base, name: value})
                    _assert_refused(r, f"{path} {name}={value[:20]!r}")
                    # Refused requests are still weighed by the rate limiter.
                    assert "x-mbx-used-weight-1m" in r.headers, (path, name, value)


async def test_hostile_values_on_signed_endpoints_get_a_4xx_and_lock_nothing(
    plat: Platform,
) -> None:
    t = await plat.trader("hostile-signed", {"USDT": "100000", "BTC": "10"})
    for method, path, base, names in SIGNED:
        for name in names:
            for value in HOSTILE_TEXT if name in TEXT_PARAMS else HOSTILE:
                params: dict[str, Any] = {**base, name: value}
                if name == "timestamp":
                    r = await _raw_signed(plat, t, method, path, params)
                else:
                    r = await t.api.signed(method, path, **params)
                _assert_refused(r, f"{method} {path} {name}={value[:20]!r}")
    await _nothing_held(plat, t)


async def _raw_signed(plat: Platform, t: Trader, method: str, path: str,
                      params: dict[str, Any]) -> httpx.Response:
    """A request signed as sent, ``timestamp`` included as the caller set it."""
    q = urlencode(params)
    q = f"{q}&signature={sign(t.secret, q)}"
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        return await http.request(method, f"{path}?{q}", headers={"X-MBX-APIKEY": t.api_key})


@pytest.mark.parametrize("path", [
    "/admin/users/9223372036854775808", "/admin/users/%C2%B2", "/admin/users/-5",
    "/admin/audit?fromId=9223372036854775808", "/admin/audit?fromId=%EF%BC%91",
    "/admin/api-keys?account=99999999999999999999",
    "/admin/escrow/deals/9223372036854775808", "/admin/escrow/deals/%C2%B2",
    "/admin/escrow/deals?fromId=%EF%BC%91", "/admin/escrow/deals?limit=1001",
    "/admin/escrow/deals?state=%00", "/admin/escrow/deals?state=NOPE",
])
async def test_admin_path_and_query_integers_are_bounded(plat: Platform, path: str) -> None:
    admin = plat.settings.admin_token.get_secret_value()
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        r = await http.get(path, headers={"Authorization": f"Bearer {admin}"})
    _assert_refused(r, path)


@pytest.mark.parametrize("body", [
    {"account": 9223372036854775808, "asset": "USDT", "amount": "1", "ref": "big-account"},
    {"account": 1, "asset": "USDT", "amount": "99999999999999999999", "ref": "big-amount"},
    {"account": 1, "asset": "USDT", "amount": "1\n", "ref": "newline"},
    {"account": 1, "asset": "USDT", "amount": "1", "ref": "nul\x00"},
])
async def test_admin_credit_refuses_what_a_bigint_cannot_hold(
    plat: Platform, body: dict[str, Any]
) -> None:
    admin = plat.settings.admin_token.get_secret_value()
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        r = await http.post("/admin/credit", json=body,
                            headers={"Authorization": f"Bearer {admin}"})
    _assert_refused(r, str(body))


@pytest.mark.parametrize("path", ["/admin/withdrawals/9223372036854775808/approve",
                                  "/admin/withdrawals/%C2%B2/reject"])
async def test_admin_withdrawal_ids_are_bounded(plat: Platform, path: str) -> None:
    admin = plat.settings.admin_token.get_secret_value()
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        r = await http.post(path, headers={"Authorization": f"Bearer {admin}"})
    _assert_refused(r, path)


# ----------------------------------------------------------------- signatures and text
async def test_a_non_ascii_signature_is_an_invalid_signature(plat: Platform) -> None:
    t = await plat.trader("sig-non-ascii", {"USDT": "1000"})
    signed = urlencode({**LIMIT_BUY, "timestamp": int(time.time() * 1000)})
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        for method, path, body in (
            ("POST", "/api/v3/order", f"{signed}&signature=\u00e9\u00e9".encode()),  # raw
            ("POST", "/api/v3/order", f"{signed}&signature=%C3%A9%C3%A9".encode()),
            ("GET", "/api/v3/account", f"{signed}&signature=%C3%A9%C3%A9".encode()),
        ):
            if method == "POST":
                r = await http.post(path, content=body, headers={
                    "X-MBX-APIKEY": t.api_key,
                    "Content-Type": "application/x-www-form-urlencoded"})
            else:
                r = await http.get(f"{path}?{body.decode()}",
                                   headers={"X-MBX-APIKEY": t.api_key})
            assert r.status_code == 400, r.text
            assert r.json()["code"] == -1022


async def test_nul_in_a_client_order_id_is_refused_before_the_database(plat: Platform) -> None:
    t = await plat.trader("nul-cid", {"USDT": "1000"})
    for method, path, extra in (
        ("GET", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "a\x00b"}),
        ("DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "a\x00b"}),
        ("GET", "/api/v3/orderList", {"origClientOrderId": "a\x00b"}),
        ("DELETE", "/api/v3/orderList", {"symbol": "BTCUSDT", "listClientOrderId": "a\x00"}),
        ("DELETE", "/api/v3/order",
         {"symbol": "BTCUSDT", "orderId": "1", "newClientOrderId": "x\x00"}),
    ):
        r = await t.api.signed(method, path, **extra)
        _assert_refused(r, f"{method} {path}")
        assert r.json()["code"] == -1100


async def test_a_trailing_newline_fails_validation(plat: Platform) -> None:
    t = await plat.trader("newline", {"USDT": "1000"})
    for name, value in (("newClientOrderId", "abc\n"), ("quantity", "0.001\n"),
                        ("price", "50000\n")):
        r = await t.api.signed("POST", "/api/v3/order", **{**LIMIT_BUY, name: value})
        _assert_refused(r, name)
        assert r.json()["code"] == -1100
    await _nothing_held(plat, t)


# ----------------------------------------------------------------- Binance's parameter rules
async def test_a_parameter_in_both_query_and_body_takes_the_query_value(
    plat: Platform,
) -> None:
    t = await plat.trader("query-wins", {"USDT": "1000"})
    query = urlencode({"symbol": "BTCUSDT", "newClientOrderId": "fromQuery",
                       "timestamp": int(time.time() * 1000)})
    body = urlencode({**LIMIT_BUY, "newClientOrderId": "fromBody",
                      "newOrderRespType": "ACK"})
    sig = sign(t.secret, query + body)
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        r = await http.post(f"/api/v3/order?{query}&signature={sig}", content=body,
                            headers={"X-MBX-APIKEY": t.api_key,
                                     "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    assert r.json()["clientOrderId"] == "fromQuery"


@pytest.mark.parametrize("path", ["/api/v3/order", "/api/v3/order/amend/keepPriority"])
async def test_an_empty_body_declared_as_json_is_read_from_the_query(
    plat: Platform, path: str
) -> None:
    t = await plat.trader(f"json-empty-{path.count('/')}", {"USDT": "1000"})
    r = await t.api.signed("POST", "/api/v3/order", **LIMIT_BUY, newOrderRespType="ACK")
    order_id = r.json()["orderId"]
    params: dict[str, Any] = (
        {**LIMIT_BUY, "newOrderRespType": "ACK"} if path == "/api/v3/order"
        else {"symbol": "BTCUSDT", "orderId": order_id, "newQty": "0.0005"})
    q = urlencode({**params, "timestamp": int(time.time() * 1000)})
    method = "POST" if path == "/api/v3/order" else "PUT"
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        r = await http.request(method, f"{path}?{q}&signature={sign(t.secret, q)}",
                               headers={"X-MBX-APIKEY": t.api_key,
                                        "Content-Type": "application/json;charset=utf-8"})
    assert r.status_code == 200, r.text


async def test_a_json_body_is_still_refused(plat: Platform) -> None:
    t = await plat.trader("json-body", {"USDT": "1000"})
    q = urlencode({"timestamp": int(time.time() * 1000)})
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        r = await http.post(f"/api/v3/order?{q}&signature={sign(t.secret, q)}",
                            content=b'{"symbol": "BTCUSDT"}',
                            headers={"X-MBX-APIKEY": t.api_key,
                                     "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == -1104


async def test_an_unknown_response_type_is_refused_and_places_nothing(plat: Platform) -> None:
    t = await plat.trader("resp-type", {"USDT": "1000"})
    r = await t.api.signed("POST", "/api/v3/order", **LIMIT_BUY, newOrderRespType="FAST")
    assert r.status_code == 400 and r.json()["code"] == -1100, r.text
    r = await t.api.signed("POST", "/api/v3/orderList/oco", symbol="BTCUSDT", side="BUY",
                           quantity="0.001", aboveType="STOP_LOSS", aboveStopPrice="70000",
                           belowType="LIMIT_MAKER", belowPrice="40000",
                           newOrderRespType="FAST")
    assert r.status_code == 400 and r.json()["code"] == -1100, r.text
    await _nothing_held(plat, t)


async def test_a_client_order_id_is_free_again_once_its_order_is_closed(
    plat: Platform,
) -> None:
    t = await plat.trader("cid-reuse", {"USDT": "1000"})
    first = await t.api.signed("POST", "/api/v3/order", **LIMIT_BUY,
                               newClientOrderId="again", newOrderRespType="RESULT")
    assert first.status_code == 200, first.text
    dup = await t.api.signed("POST", "/api/v3/order", **LIMIT_BUY,
                             newClientOrderId="again")
    assert dup.status_code == 400 and dup.json()["msg"] == "Duplicate order sent."
    r = await t.api.signed("DELETE", "/api/v3/order", symbol="BTCUSDT",
                           origClientOrderId="again")
    assert r.status_code == 200 and r.json()["status"] == "CANCELED", r.text

    second = await t.api.signed("POST", "/api/v3/order", **LIMIT_BUY,
                                newClientOrderId="again", newOrderRespType="RESULT")
    assert second.status_code == 200, second.text
    assert second.json()["orderId"] != first.json()["orderId"]
    # By client order id, the newest order (the open one) answers.
    r = await t.api.signed("GET", "/api/v3/order", symbol="BTCUSDT",
                           origClientOrderId="again")
    assert r.json()["orderId"] == second.json()["orderId"]
    assert r.json()["status"] == Status.NEW.name
    r = await t.api.signed("DELETE", "/api/v3/order", symbol="BTCUSDT",
                           origClientOrderId="again")
    assert r.json()["orderId"] == second.json()["orderId"]

    async def all_free() -> bool:
        return (await plat.balances(t.account))["USDT"] == (to_units("1000"), 0)

    await eventually(all_free)
