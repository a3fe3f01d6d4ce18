"""The public market-data endpoints and the reference prices over the gateway's own read
ports (``MarketReads``, ``Tops``), with the market data in memory."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from tests.support.gateway import guard_only
from tests.support.harness import eventually
from tests.support.memory_market import MemoryMarketReads

from tradeplane.domain.market import Candle, DepthSnapshot, TopOfBook
from tradeplane.domain.model import Side
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.gateway import market
from tradeplane.gateway.context import GatewayContext, install
from tradeplane.gateway.errors import install_handlers
from tradeplane.gateway.references import ReferencePrices

RULES = DEMO_PAIRS[0]  # BTCUSDT: tick 0.01 USDT, lot 0.00001 BTC
SYMBOL = RULES.symbol
UNIT = 100_000_000


def _app(reads: MemoryMarketReads) -> FastAPI:
    app = FastAPI()
    app.include_router(market.router)
    install_handlers(app)  # as the gateway's app
    ctx: Any = SimpleNamespace(pairs={p.symbol: p for p in DEMO_PAIRS})
    ctx.pair = functools.partial(GatewayContext.pair, ctx)
    install(app, dataclasses.replace(guard_only(), ctx=ctx, market=reads))
    return app


async def _get(reads: MemoryMarketReads, path: str, **params: str) -> Any:
    transport = httpx.ASGITransport(app=_app(reads))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        r = await client.get(f"/api/v3/{path}", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _candle(open_time: int, close: int, trades: int) -> Candle:
    return Candle(open_time, 100 * UNIT, 120 * UNIT, 90 * UNIT, close * UNIT, UNIT,
                  close * UNIT, trades, UNIT // 2, close * UNIT // 2)


async def test_klines_answer_the_stored_candles_with_the_open_one_in_place_of_its_row() -> None:
    reads = MemoryMarketReads()
    reads.stored[(SYMBOL, "1m")] = [_candle(0, 101, 3), _candle(60_000, 102, 4)]
    reads.current[(SYMBOL, "1m")] = _candle(60_000, 105, 9)  # the open one, newer
    rows = await _get(reads, "klines", symbol=SYMBOL, interval="1m")
    assert [r[0] for r in rows] == [0, 60_000]
    assert rows[1] == [60_000, "100.00000000", "120.00000000", "90.00000000",
                       "105.00000000", "1.00000000", 119_999, "105.00000000", 9,
                       "0.50000000", "52.50000000", "0"]


async def test_klines_append_a_newer_open_candle_and_keep_the_latest_limit() -> None:
    reads = MemoryMarketReads()
    reads.stored[(SYMBOL, "1m")] = [_candle(0, 101, 3), _candle(60_000, 102, 4)]
    reads.current[(SYMBOL, "1m")] = _candle(120_000, 103, 1)
    rows = await _get(reads, "klines", symbol=SYMBOL, interval="1m", limit="2")
    assert [(r[0], r[4]) for r in rows] == [(60_000, "102.00000000"),
                                           (120_000, "103.00000000")]
    rows = await _get(reads, "klines", symbol=SYMBOL, interval="1m", startTime="0",
                      limit="2")
    assert [r[0] for r in rows] == [0, 60_000]  # from startTime on: the oldest two


async def test_depth_of_a_market_never_written_is_empty_at_update_id_zero() -> None:
    assert await _get(MemoryMarketReads(), "depth", symbol=SYMBOL) == {
        "lastUpdateId": 0, "bids": [], "asks": []}


async def test_depth_is_formatted_from_ticks_and_lots_and_cut_to_the_limit() -> None:
    reads = MemoryMarketReads()
    reads.books[SYMBOL] = DepthSnapshot(42, 0, [(5_000_000, 200), (4_999_999, 100)],
                                        [(5_000_001, 300)])
    assert await _get(reads, "depth", symbol=SYMBOL, limit="1") == {
        "lastUpdateId": 42, "bids": [["50000.00000000", "0.00200000"]],
        "asks": [["50000.01000000", "0.00300000"]]}


async def test_prices_of_a_market_never_written_are_zero() -> None:
    assert await _get(MemoryMarketReads(), "ticker/price", symbol=SYMBOL) == {
        "symbol": SYMBOL, "price": "0.00000000"}
    reads = MemoryMarketReads()
    reads.top_of_book[SYMBOL] = TopOfBook(7, 5_000_000, 10, 4_999_000, 1, 5_001_000, 2)
    assert await _get(reads, "ticker/bookTicker", symbol=SYMBOL) == {
        "symbol": SYMBOL, "bidPrice": "49990.00000000", "bidQty": "0.00001000",
        "askPrice": "50010.00000000", "askQty": "0.00002000"}


async def test_a_market_order_without_a_price_in_memory_is_sized_on_the_store_top() -> None:
    reads = MemoryMarketReads()
    refs = ReferencePrices(reads)
    await refs.refresh([SYMBOL])
    assert refs.band_reference(SYMBOL) is None
    reads.top_of_book[SYMBOL] = TopOfBook(1, 0, 0, 4_999_000, 1, 5_001_000, 1)
    # not in memory: read from the store (no trade yet: the mid of the best bid and ask)
    assert await refs.market_reference(SYMBOL, Side.SELL) == 5_000_000
    assert reads.top_reads == 1
    assert refs.band_reference(SYMBOL) == 5_000_000  # kept in memory from then on


async def test_a_store_that_does_not_answer_is_a_503_in_binances_format_not_a_plain_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reads = MemoryMarketReads(down=True)
    transport = httpx.ASGITransport(app=_app(reads))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        r = await client.get("/api/v3/depth", params={"symbol": SYMBOL})
    assert r.status_code == 503
    assert r.json() == {"code": -1001, "msg": "Internal error; unable to process your "
                                              "request. Please try again."}
    assert "market data store down" in caplog.text  # one warning naming what was down


async def test_a_defect_in_a_route_is_a_500_in_binances_format() -> None:
    reads = MemoryMarketReads()
    reads.books = None  # type: ignore[assignment]  # a defect: the read itself breaks
    transport = httpx.ASGITransport(app=_app(reads), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        r = await client.get("/api/v3/depth", params={"symbol": SYMBOL})
    assert r.status_code == 500
    assert r.json() == {"code": -1000,
                        "msg": "An unknown error occurred while processing the request."}


async def test_a_store_that_does_not_answer_leaves_the_reference_prices_as_they_were(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reads = MemoryMarketReads()
    reads.top_of_book[SYMBOL] = TopOfBook(1, 5_000_000, 1, 0, 0, 0, 0)
    refs = ReferencePrices(reads, period=0.001)
    await refs.refresh([SYMBOL])
    reads.down = True
    reads.top_of_book[SYMBOL] = TopOfBook(2, 6_000_000, 1, 0, 0, 0, 0)
    task = asyncio.create_task(refs.run(lambda: [SYMBOL]))
    try:
        await eventually(lambda: _true(caplog.text.count("reference prices not refreshed") >= 3))
        assert not task.done(), "an unavailable cache is retried; the loop goes on"
        assert refs.band_reference(SYMBOL) == 5_000_000
        reads.down = False
        await eventually(lambda: _true(refs.band_reference(SYMBOL) == 6_000_000))
    finally:
        task.cancel()


async def test_a_reference_refresh_that_fails_unexpectedly_ends_its_task() -> None:
    """A defect is not retried: the task dies, and the gateway's supervision stops the
    gateway (tests/integration/test_gateway_supervision.py)."""
    reads = MemoryMarketReads()
    refs = ReferencePrices(reads, period=0.001)

    def broken() -> list[str]:
        raise KeyError("symbols")

    with pytest.raises(KeyError, match="symbols"):
        await asyncio.wait_for(refs.run(broken), 5)


async def _true(value: bool) -> bool:
    return value
