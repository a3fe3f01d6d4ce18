"""The Binance user data stream over a real WebSocket: a listenKey from REST, then the
executionReports and outboundAccountPositions settlement publishes after each commit, with
exact values; a bad listenKey gets nothing. Listen keys are random per API key, live 60
minutes in Redis, and their sockets close when the key is DELETEd, the API key revoked
or expired, or the account frozen."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import websockets
from tests.support.harness import Platform, Trader, eventually
from tests.support.security import admin_headers

from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus, user_subject
from tradeplane.adapters.cipher import SecretCipher

pytestmark = pytest.mark.integration

ZERO = "0.00000000"
_probes = itertools.count(1)



class UserStream:
    """One ``/ws/<listenKey>`` socket; every text frame it receives, decoded, in order."""

    def __init__(self, ws: Any, listen_key: str = "") -> None:
        self.ws = ws
        self.listen_key = listen_key
        self.received: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in self.ws:
                self.received.append(json.loads(frame))

    @property
    def events(self) -> list[dict[str, Any]]:
        """Everything but the readiness probes."""
        return [m for m in self.received if m.get("e") != "probe"]

    async def wait_for(self, n: int) -> list[dict[str, Any]]:
        """Poll until ``n`` events arrived; return exactly those."""
        async def enough() -> bool:
            return len(self.events) >= n

        await eventually(enough)
        events = self.events
        assert len(events) == n, events
        return events

    async def close(self) -> None:
        await self.ws.close()
        await self._reader

    async def closed_by_server(self) -> int:
        """Wait until the gateway closed the socket; its close code."""
        await asyncio.wait_for(asyncio.shield(self._reader), 15)
        code: int = self.ws.close_code
        return code


@contextlib.asynccontextmanager
async def user_stream(plat: Platform, trader: Trader) -> AsyncIterator[UserStream]:
    r = await trader.api.http.post("/api/v3/userDataStream",
                                   headers={"X-MBX-APIKEY": trader.api_key})
    assert r.status_code == 200, r.text
    key = r.json()["listenKey"]
    url = f"ws://127.0.0.1:{plat.settings.http_port}/ws/{key}"
    async with websockets.connect(url) as ws:
        stream = UserStream(ws, key)
        await _until_subscribed(plat, trader.account, stream)
        try:
            yield stream
        finally:
            await stream.close()


async def _until_subscribed(plat: Platform, account: int, stream: UserStream) -> None:
    """The gateway subscribes to ``user.<account>`` after the handshake: publish probes on
    that subject until one comes through, so no report of the test can be missed."""
    bus = await Bus.connect(plat.settings.nats_url, name="probe")
    try:
        async def through() -> bool:
            await bus.publish(user_subject(account), b'{"e":"probe","n":%d}' % next(_probes))
            await bus.nc.flush()
            return any(m.get("e") == "probe" for m in stream.received)

        await eventually(through, interval=0.02)
    finally:
        await bus.close()


def _pick(doc: dict[str, Any], keys: str) -> dict[str, Any]:
    return {k: doc[k] for k in keys.split()}


#: Every executionReport key but the clock-dependent ones (E, T, O, W, I) and ``w``.
REPORT_KEYS = ["e", "s", "c", "S", "o", "f", "q", "p", "P", "F", "g", "C", "x", "X", "r",
               "i", "l", "z", "L", "n", "N", "t", "m", "M", "Z", "Y", "Q", "V"]


def report(**fields: Any) -> dict[str, Any]:
    """An executionReport's deterministic fields: the defaults of a non-trade report."""
    base = {"e": "executionReport", "s": "BTCUSDT", "S": "BUY", "o": "LIMIT", "f": "GTC",
            "P": ZERO, "F": ZERO, "g": -1, "C": "", "r": "NONE", "l": ZERO, "z": ZERO,
            "L": ZERO, "n": "0", "N": None, "t": -1, "m": False, "M": False, "Z": ZERO,
            "Y": ZERO, "Q": ZERO, "V": "NONE"}
    base.update(fields)
    return base


def deterministic(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["e"] == "executionReport":
        return {k: doc[k] for k in REPORT_KEYS}
    return {k: doc[k] for k in ("e", "B")}


def position(*balances: tuple[str, str, str]) -> dict[str, Any]:
    return {"e": "outboundAccountPosition",
            "B": [{"a": a, "f": f, "l": lk} for a, f, lk in balances]}


async def test_orders_trades_and_cancels_stream_binance_reports_and_positions(
    plat: Platform,
) -> None:
    alice = await plat.trader("us-alice", {"BTC": "1"})
    bob = await plat.trader("us-bob", {"USDT": "100000"})
    async with user_stream(plat, alice) as a_ws, user_stream(plat, bob) as b_ws:
        r = await alice.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="SELL",
                                   type="LIMIT", timeInForce="GTC", price="60000.00",
                                   quantity="0.50000", newClientOrderId="a-sell",
                                   newOrderRespType="RESULT")
        assert r.status_code == 200, r.text
        sell = r.json()
        got = await a_ws.wait_for(2)
        assert [deterministic(m) for m in got] == [
            report(c="a-sell", S="SELL", q="0.50000000", p="60000.00000000", x="NEW",
                   X="NEW", i=sell["orderId"]),
            position(("BTC", "0.50000000", "0.50000000")),
        ]
        new = got[0]
        assert new["w"] is True and new["O"] == new["W"] == new["T"] == sell["workingTime"]
        assert new["E"] >= new["T"] and got[1]["u"] == new["T"]

        r = await bob.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY",
                                 type="LIMIT", timeInForce="GTC", price="60100.00",
                                 quantity="0.2", newClientOrderId="b-buy",
                                 newOrderRespType="FULL")
        assert r.status_code == 200, r.text
        buy = r.json()
        assert buy["status"] == "FILLED"
        got = await b_ws.wait_for(3)
        assert [deterministic(m) for m in got] == [
            # Accepted orders are reported NEW first, even when they fill at once.
            report(c="b-buy", q="0.20000000", p="60100.00000000", x="NEW", X="NEW",
                   i=buy["orderId"]),
            report(c="b-buy", q="0.20000000", p="60100.00000000", x="TRADE", X="FILLED",
                   i=buy["orderId"], l="0.20000000", z="0.20000000", L="60000.00000000",
                   n="0.00020000", N="BTC", t=1, Z="12000.00000000", Y="12000.00000000"),
            # Paid 12000 at the maker's price; the 20 USDT of price improvement came back.
            position(("BTC", "0.19980000", ZERO), ("USDT", "88000.00000000", ZERO)),
        ]
        fill = got[1]
        assert fill["w"] is False and "W" not in fill and fill["T"] == buy["transactTime"]
        assert got[0]["I"] != fill["I"]

        got = await a_ws.wait_for(4)
        assert [deterministic(m) for m in got[2:]] == [
            report(c="a-sell", S="SELL", q="0.50000000", p="60000.00000000", x="TRADE",
                   X="PARTIALLY_FILLED", i=sell["orderId"], l="0.20000000", z="0.20000000",
                   L="60000.00000000", n="12.00000000", N="USDT", t=1, m=True,
                   Z="12000.00000000", Y="12000.00000000"),
            position(("BTC", "0.50000000", "0.30000000"), ("USDT", "11988.00000000", ZERO)),
        ]
        assert got[2]["w"] is True and got[2]["W"] == new["W"]
        assert got[2]["T"] == fill["T"] and got[3]["u"] == fill["T"]

        # A post-only order that would take is rejected, and says why.
        r = await bob.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY",
                                 type="LIMIT_MAKER", price="60000.00", quantity="0.1",
                                 newClientOrderId="b-maker", newOrderRespType="RESULT")
        assert r.json() == {"code": -2010, "msg": "Order would immediately match and take."}
        got = await b_ws.wait_for(5)
        assert [deterministic(m) for m in got[3:]] == [
            report(c="b-maker", o="LIMIT_MAKER", q="0.10000000", p="60000.00000000",
                   x="REJECTED", X="REJECTED", r="WOULD_MATCH_IMMEDIATELY", i=got[3]["i"]),
            position(("USDT", "88000.00000000", ZERO)),
        ]
        assert got[3]["i"] > buy["orderId"] and got[3]["w"] is False

        r = await alice.api.signed("DELETE", "/api/v3/order", symbol="BTCUSDT",
                                   orderId=sell["orderId"])
        assert r.status_code == 200, r.text
        got = await a_ws.wait_for(6)
        assert [deterministic(m) for m in got[4:]] == [
            report(c="a-sell", S="SELL", q="0.50000000", p="60000.00000000", C="a-sell",
                   x="CANCELED", X="CANCELED", i=sell["orderId"], z="0.20000000",
                   Z="12000.00000000"),
            position(("BTC", "0.80000000", ZERO)),
        ]
        assert got[4]["w"] is False and got[4]["W"] == new["W"]

        # The stream agrees with the ledger.
        assert await plat.balances(alice.account) == {"BTC": (80_000_000, 0),
                                                      "USDT": (1_198_800_000_000, 0)}
        assert len(a_ws.events) == 6 and len(b_ws.events) == 5


async def test_market_order_by_quote_reports_each_fill_and_ends_filled(plat: Platform) -> None:
    maker = await plat.trader("us-mm", {"ETH": "10"})
    taker = await plat.trader("us-taker", {"USDT": "10000"})
    async with user_stream(plat, taker) as t_ws:
        for price in ("3000.00", "3001.00"):
            r = await maker.api.signed("POST", "/api/v3/order", symbol="ETHUSDT", side="SELL",
                                       type="LIMIT", timeInForce="GTC", price=price,
                                       quantity="0.1", newOrderRespType="RESULT")
            assert r.status_code == 200, r.text
        r = await taker.api.signed("POST", "/api/v3/order", symbol="ETHUSDT", side="BUY",
                                   type="MARKET", quoteOrderQty="450.10",
                                   newClientOrderId="t-mkt", newOrderRespType="FULL")
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["status"] == "FILLED" and doc["executedQty"] == "0.15000000"
        got = await t_ws.wait_for(4)
        assert _pick(got[0], "c o x X z w") == {"c": "t-mkt", "o": "MARKET", "x": "NEW",
                                                 "X": "NEW", "z": ZERO, "w": False}
        got = got[1:]
        keys = "c o q p x X l L z Z Y n N m w Q"
        assert [_pick(m, keys) for m in got[:2]] == [
            {"c": "t-mkt", "o": "MARKET", "q": ZERO, "p": ZERO, "x": "TRADE",
             "X": "PARTIALLY_FILLED", "l": "0.10000000", "L": "3000.00000000",
             "z": "0.10000000", "Z": "300.00000000", "Y": "300.00000000",
             "n": "0.00010000", "N": "ETH", "m": False, "w": False, "Q": "450.10000000"},
            {"c": "t-mkt", "o": "MARKET", "q": ZERO, "p": ZERO, "x": "TRADE", "X": "FILLED",
             "l": "0.05000000", "L": "3001.00000000", "z": "0.15000000",
             "Z": "450.05000000", "Y": "150.05000000", "n": "0.00005000", "N": "ETH",
             "m": False, "w": False, "Q": "450.10000000"},
        ]
        assert [m["t"] for m in got[:2]] == [f["tradeId"] for f in doc["fills"]]
        assert deterministic(got[2]) == position(("ETH", "0.14985000", ZERO),
                                                 ("USDT", "9549.95000000", ZERO))


async def test_a_bad_listen_key_is_refused_and_streams_nothing(plat: Platform) -> None:
    t = await plat.trader("us-bad", {"USDT": "1000"})
    r = await t.api.http.post("/api/v3/userDataStream", headers={"X-MBX-APIKEY": t.api_key})
    key = r.json()["listenKey"]
    forged = key[:-1] + ("0" if key[-1] != "0" else "1")

    r = await t.api.http.put("/api/v3/userDataStream", params={"listenKey": forged},
                             headers={"X-MBX-APIKEY": t.api_key})
    assert (r.status_code, r.json()) == (
        400, {"code": -1125, "msg": "This listenKey does not exist."})
    r = await t.api.http.put("/api/v3/userDataStream", params={"listenKey": key},
                             headers={"X-MBX-APIKEY": t.api_key})
    assert (r.status_code, r.json()) == (200, {})
    r = await t.api.http.post("/api/v3/userDataStream", headers={"X-MBX-APIKEY": "nope"})
    assert r.json()["code"] == -2015

    url = f"ws://127.0.0.1:{plat.settings.http_port}/ws/{forged}"
    async with user_stream(plat, t) as good, websockets.connect(url) as bad:
        r = await t.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY",
                               type="LIMIT", timeInForce="GTC", price="50000",
                               quantity="0.001", newOrderRespType="RESULT")
        assert r.status_code == 200, r.text
        got = await good.wait_for(2)
        assert [m["e"] for m in got] == ["executionReport", "outboundAccountPosition"]
        # The forged key is no user stream: the socket is a market-stream socket with no
        # subscriptions. Its reply to a request comes after anything queued before it.
        await bad.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
        assert json.loads(await asyncio.wait_for(bad.recv(), 10)) == {"result": [], "id": 1}


# --------------------------------------------------------------------------- listen keys
async def _listen_key(plat: Platform, api_key: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        return await http.post("/api/v3/userDataStream", headers={"X-MBX-APIKEY": api_key})


async def _listen_key_call(plat: Platform, method: str, api_key: str,
                           listen_key: str) -> tuple[int, Any]:
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        r = await http.request(method, "/api/v3/userDataStream",
                               params={"listenKey": listen_key},
                               headers={"X-MBX-APIKEY": api_key})
        return r.status_code, r.json()


async def _admin(plat: Platform, method: str, path: str, **kw: Any) -> httpx.Response:
    token = plat.settings.admin_token.get_secret_value()
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        return await http.request(method, path, headers=admin_headers(token), **kw)


async def _second_key(plat: Platform, t: Trader) -> str:
    cipher = SecretCipher(plat.settings.secret_key.get_secret_value())
    return await db.create_api_key(plat.pool, t.account, cipher.encrypt(t.secret), ["read"])


async def _is_market_socket(plat: Platform, listen_key: str) -> bool:
    """A socket on ``listen_key`` is a market-stream socket (it answers requests; a user
    stream does not): the listen key opens no user stream."""
    url = f"ws://127.0.0.1:{plat.settings.http_port}/ws/{listen_key}"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
        return bool(json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"result": [],
                                                                           "id": 1})


NO_SUCH_KEY = (400, {"code": -1125, "msg": "This listenKey does not exist."})


async def test_listen_keys_are_random_per_api_key_and_live_60_minutes_from_each_keepalive(
    plat: Platform,
) -> None:
    t = await plat.trader("lk-random", {"USDT": "1"})
    other = await _second_key(plat, t)
    first = (await _listen_key(plat, t.api_key)).json()["listenKey"]
    again = (await _listen_key(plat, t.api_key)).json()["listenKey"]
    second = (await _listen_key(plat, other)).json()["listenKey"]
    # One live listen key per API key (asking again gives it back), two keys of one
    # account get two different random ones.
    assert first == again and first != second
    assert all(len(k) == 60 and k.isalnum() and str(t.account) not in k[:8]
               for k in (first, second))

    r = aioredis.from_url(plat.settings.redis_url)
    try:
        assert 3_590_000 < await r.pttl(f"lk:{first}") <= 3_600_000
        await r.pexpire(f"lk:{first}", 10_000)
        assert await _listen_key_call(plat, "PUT", t.api_key, first) == (200, {})
        assert 3_590_000 < await r.pttl(f"lk:{first}") <= 3_600_000  # renewed for 60 min
        # Another API key (even of the same account) cannot renew or close it.
        assert await _listen_key_call(plat, "PUT", other, first) == NO_SUCH_KEY
        assert await _listen_key_call(plat, "DELETE", other, first) == NO_SUCH_KEY
        await r.delete(f"lk:{first}")  # expired
        assert await _listen_key_call(plat, "PUT", t.api_key, first) == NO_SUCH_KEY
        fresh = (await _listen_key(plat, t.api_key)).json()["listenKey"]
        assert fresh not in (first, second)
    finally:
        await r.aclose()


async def test_deleting_a_listen_key_closes_its_stream_and_the_key(plat: Platform) -> None:
    t = await plat.trader("lk-delete", {"USDT": "1000"})
    async with user_stream(plat, t) as s:
        assert await _listen_key_call(plat, "DELETE", t.api_key, s.listen_key) == (200, {})
        assert await s.closed_by_server() == 1000
        assert s.events == []  # closed normally: no listenKeyExpired (as Binance)
    assert await _listen_key_call(plat, "PUT", t.api_key, s.listen_key) == NO_SUCH_KEY
    assert await _listen_key_call(plat, "DELETE", t.api_key, s.listen_key) == NO_SUCH_KEY
    assert await _is_market_socket(plat, s.listen_key)


async def test_revoking_the_api_key_closes_its_stream_at_once(plat: Platform) -> None:
    t = await plat.trader("lk-revoke", {"USDT": "1000"})
    async with user_stream(plat, t) as s:
        r = await _admin(plat, "DELETE", f"/admin/api-keys/{t.api_key}")
        assert r.status_code == 200, r.text
        assert await s.closed_by_server() == 1000
        assert [m["e"] for m in s.events] == ["listenKeyExpired"]
        assert s.events[0]["listenKey"] == s.listen_key
    assert await _is_market_socket(plat, s.listen_key)


async def test_freezing_the_account_closes_its_streams_and_refuses_new_ones(
    plat: Platform,
) -> None:
    t = await plat.trader("lk-freeze", {"USDT": "1000"})
    async with user_stream(plat, t) as s:
        r = await _admin(plat, "POST", f"/admin/users/{t.account}/freeze",
                         json={"reason": "fraud check"})
        assert r.status_code == 200, r.text
        assert await s.closed_by_server() == 1000
        assert [m["e"] for m in s.events] == ["listenKeyExpired"]
    assert await _is_market_socket(plat, s.listen_key)
    r = await _listen_key(plat, t.api_key)
    assert (r.status_code, r.json()["code"]) == (401, -2015)
    await _admin(plat, "POST", f"/admin/users/{t.account}/unfreeze")
    assert (await _listen_key(plat, t.api_key)).status_code == 200


async def test_a_stream_closes_when_its_api_key_expires(plat: Platform) -> None:
    t = await plat.trader("lk-expiring", {"USDT": "1000"})
    # Before the gateway first sees the key: it expires in a few seconds.
    await plat.pool.execute(
        "UPDATE api_keys SET expires_at = now() + interval '4 seconds' WHERE api_key = $1",
        t.api_key)
    async with user_stream(plat, t) as s:
        assert await s.closed_by_server() == 1000
        assert [m["e"] for m in s.events] == ["listenKeyExpired"]
        expires = await plat.pool.fetchval(
            "SELECT (extract(epoch FROM expires_at) * 1000)::bigint FROM api_keys"
            " WHERE api_key = $1", t.api_key)
        assert expires <= s.events[0]["E"] < expires + 5_000
