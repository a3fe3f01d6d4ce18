"""The Binance user data stream over a real WebSocket: a listenKey from REST, then the
executionReports and outboundAccountPositions settlement publishes after each commit, with
exact values; a bad listenKey gets nothing."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from tests.support.harness import Platform, Trader, eventually

from tradeplane.adapters.bus import Bus, user_subject

pytestmark = pytest.mark.integration

ZERO = "0.00000000"
_probes = itertools.count(1)



class UserStream:
    """One ``/ws/<listenKey>`` socket; every text frame it receives, decoded, in order."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
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


@contextlib.asynccontextmanager
async def user_stream(plat: Platform, trader: Trader) -> AsyncIterator[UserStream]:
    r = await trader.api.http.post("/api/v3/userDataStream",
                                   headers={"X-MBX-APIKEY": trader.api_key})
    assert r.status_code == 200, r.text
    key = r.json()["listenKey"]
    url = f"ws://127.0.0.1:{plat.settings.http_port}/ws/{key}"
    async with websockets.connect(url) as ws:
        stream = UserStream(ws)
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
