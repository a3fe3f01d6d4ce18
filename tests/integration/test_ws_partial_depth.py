"""Binance's partial book depth streams (``<symbol>@depth5``/``10``/``20``, ``@100ms``)
and the all-market ``!ticker@arr`` / ``!miniTicker@arr`` on the market stream endpoints,
from the real marketdata service: raw sockets for the payloads, and ccxt.pro's
``watch_tickers()`` (which subscribes ``!miniTicker@arr``, or ``!ticker@arr`` with
``name: ticker``) unchanged."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import ccxt.pro as ccxtpro
import pytest
import websockets
from tests.integration.test_ccxt import point_at
from tests.support.harness import Platform, Trader

pytestmark = pytest.mark.integration


def _ws(plat: Platform, path: str) -> str:
    return f"ws://127.0.0.1:{plat.settings.http_port}{path}"


async def _until(ws: Any, accept: Any) -> Any:
    """The first message ``accept`` takes (each within 10 s)."""
    while True:
        doc = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if accept(doc):
            return doc


async def test_partial_depth_streams_send_the_best_levels(plat: Platform) -> None:
    maker = await plat.trader("depth-maker", {"BTC": "10", "ETH": "100"})
    async with websockets.connect(_ws(plat, "/ws/ethbtc@depth5")) as slow, \
            websockets.connect(_ws(plat, "/stream?streams=ethbtc@depth10@100ms/"
                                         "ethbtc@depth20@1000ms")) as combined:
        for side, price in (("BUY", "0.05000"), ("BUY", "0.04999"), ("SELL", "0.05010")):
            r = await maker.api.signed("POST", "/api/v3/order", symbol="ETHBTC", side=side,
                                       type="LIMIT", timeInForce="GTC", quantity="1",
                                       price=price)
            assert r.status_code == 200, r.text
        book = {"bids": [["0.05000000", "1.00000000"], ["0.04999000", "1.00000000"]],
                "asks": [["0.05010000", "1.00000000"]]}

        def levels(d: dict[str, Any]) -> dict[str, Any]:
            return {"bids": d["bids"], "asks": d["asks"]}

        doc = await _until(slow, lambda d: levels(d) == book)
        assert set(doc) == {"lastUpdateId", "bids", "asks"} and doc["lastUpdateId"] > 0
        await _until(combined, lambda d: d["stream"] == "ethbtc@depth10@100ms"
                     and levels(d["data"]) == book)
        await _until(combined, lambda d: d["stream"] == "ethbtc@depth20@1000ms"
                     and levels(d["data"]) == book)
        await slow.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
        assert await _until(slow, lambda d: "id" in d) == {"result": ["ethbtc@depth5"],
                                                           "id": 1}
    await maker.api.signed("DELETE", "/api/v3/openOrders", symbol="ETHBTC")


async def test_ccxt_pro_watch_tickers_reads_the_all_market_ticker_array(
    plat: Platform,
) -> None:
    maker = await plat.trader("arr-maker", {"ETH": "10"})
    taker = await plat.trader("arr-taker", {"BTC": "10"})

    async def order(t: Trader, side: str, price: str) -> None:
        r = await t.api.signed("POST", "/api/v3/order", symbol="ETHBTC", side=side,
                               type="LIMIT", timeInForce="GTC", quantity="2", price=price)
        assert r.status_code == 200, r.text

    ex = ccxtpro.binance({})
    point_at(ex, plat.base_url)
    try:
        await ex.load_markets()
        async with websockets.connect(_ws(plat, "/ws/!ticker@arr")) as raw:
            await asyncio.sleep(0.5)  # subscribed (a push before would be missed)
            await order(maker, "SELL", "0.05100")
            await order(taker, "BUY", "0.05100")
            arr = await _until(raw, lambda d: any(x["s"] == "ETHBTC" and x["c"] ==
                                                  "0.05100000" for x in d))
            assert all(x["e"] == "24hrTicker" for x in arr)
        mini = asyncio.create_task(ex.watch_tickers())  # !miniTicker@arr
        full = asyncio.create_task(ex.watch_tickers(params={"name": "ticker"}))
        await asyncio.sleep(0.5)
        await order(maker, "SELL", "0.05200")  # the top moves: a push, with the last trade
        for task in (mini, full):
            tickers = await asyncio.wait_for(task, 15)
            assert tickers["ETH/BTC"]["last"] == 0.051
    finally:
        await ex.close()
