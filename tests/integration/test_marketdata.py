"""MarketDataService against real NATS, PostgreSQL and Redis: hand-built engine batches in,
Redis documents, REST answers and WebSocket streams out; restart and cache-loss recovery."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import ccxt
import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
import websockets
from fastapi import FastAPI
from prometheus_client import REGISTRY
from tests.support.harness import eventually, free_port, fresh_database, reset_bus_and_cache

from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus
from tradeplane.adapters.cache import CacheError, MarketCache
from tradeplane.adapters.marketdata import RedisMarketStore
from tradeplane.config import Settings
from tradeplane.domain import codec
from tradeplane.domain.model import SCHEMA_VERSION, Event, EventBatch, Side, Trade
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.gateway import market, public, streams
from tradeplane.gateway.app import compose
from tradeplane.gateway.context import gateway, install
from tradeplane.gateway.errors import ApiError, api_error_handler
from tradeplane.marketdata.service import MarketDataService

pytestmark = pytest.mark.integration

BTC = next(p for p in DEMO_PAIRS if p.symbol == "BTCUSDT")  # tick 0.01, lot 0.00001
BUY, SELL = int(Side.BUY), int(Side.SELL)


@dataclass
class Env:
    bus: Bus
    pool: db.Pool
    cache: MarketCache
    app: FastAPI
    http: httpx.AsyncClient
    nats_url: str
    redis_url: str


@pytest.fixture
async def env(nats_url: str, pg_url: str, redis_url: str) -> AsyncIterator[Env]:
    await reset_bus_and_cache(nats_url, redis_url)
    dsn = await fresh_database(pg_url)
    pool = await db.create_pool(dsn, 4)
    await db.migrate(pool)
    for p in DEMO_PAIRS:
        await db.upsert_pair(pool, p)
    bus = await Bus.connect(nats_url, name="md-test")
    await bus.ensure_events()
    cache = await MarketCache.connect(redis_url)
    settings = Settings(dev_mode=True, nats_url=nats_url, database_url=dsn, redis_url=redis_url,
                        rate_limits=False)
    app = FastAPI()
    app.add_exception_handler(ApiError, api_error_handler)
    for r in (public.router, market.router, streams.router):
        app.include_router(r)
    try:
        async with compose(settings) as gw:
            install(app, gw)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                         base_url="http://test") as http:
                yield Env(bus, pool, cache, app, http, nats_url, redis_url)
    finally:
        await cache.close()
        await bus.close()
        await pool.close()


@contextlib.asynccontextmanager
async def running(e: Env, cache: MarketCache | None = None) -> AsyncIterator[MarketDataService]:
    bus = await Bus.connect(e.nats_url, name="marketdata")
    svc = MarketDataService(bus, RedisMarketStore(e.pool, cache or e.cache), fast_ms=20,
                            slow_ms=100)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    try:
        yield svc
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await bus.close()


def now_ms() -> int:
    return int(time.time() * 1000)


def trade(tid: int, price: int, qty: int, ts: int, *, taker: int = 500,
          side: Side = Side.BUY) -> Trade:
    return Trade(tid, price, qty, taker, 1000, side, 100 + tid, 1001, ts)


async def publish(
    e: Env, first: int, last: int, *, events: list[Event] | None = None,
    levels: list[tuple[int, int, int]] | None = None, symbol: str = "BTCUSDT",
) -> None:
    b = EventBatch(SCHEMA_VERSION, symbol, first, last, now_ms(), events or [], levels or [])
    await e.bus.publish_events(symbol, codec.encode(b), f"{symbol}:{first}")


async def get(e: Env, path: str, **params: Any) -> Any:
    r = await e.http.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def depth_at(e: Env, seq: int, **params: Any) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        doc: dict[str, Any] = await get(e, "/api/v3/depth", symbol="BTCUSDT", **params)
        assert doc["lastUpdateId"] == seq, doc
        return doc

    return await eventually(probe)


async def _market_with_two_trades(e: Env, ts: int) -> None:
    # A resting book, then one taker buy filling two sells at 60000.00 and one at 60000.50.
    await publish(e, 1, 2, levels=[(BUY, 5_999_000, 30_000), (SELL, 6_000_000, 20_000),
                                   (SELL, 6_000_050, 10_000)])
    await publish(e, 3, 3, events=[trade(1, 6_000_000, 5_000, ts), trade(2, 6_000_000, 15_000, ts),
                                   trade(3, 6_000_050, 4_000, ts)],
                  levels=[(SELL, 6_000_000, 0), (SELL, 6_000_050, 6_000)])


# --------------------------------------------------------------------------- REST
async def test_batches_become_the_depth_trades_tickers_and_klines_served_by_rest(
    env: Env,
) -> None:
    ts = now_ms()
    async with running(env):
        await _market_with_two_trades(env, ts)
        book = await depth_at(env, 3)
        assert book["bids"] == [["59990.00000000", "0.30000000"]]
        assert book["asks"] == [["60000.50000000", "0.06000000"]]

        trades = await get(env, "/api/v3/trades", symbol="BTCUSDT")
        assert [(t["id"], t["price"], t["qty"], t["isBuyerMaker"]) for t in trades] == [
            (1, "60000.00000000", "0.05000000", False),
            (2, "60000.00000000", "0.15000000", False),
            (3, "60000.50000000", "0.04000000", False),
        ]
        assert trades[0]["quoteQty"] == "3000.00000000"
        assert len(await get(env, "/api/v3/trades", symbol="BTCUSDT", limit=2)) == 2

        aggs = await get(env, "/api/v3/aggTrades", symbol="BTCUSDT")
        assert [(a["a"], a["f"], a["l"], a["q"]) for a in aggs] == [
            (1, 1, 2, "0.20000000"), (2, 3, 3, "0.04000000")]
        assert [a["a"] for a in await get(env, "/api/v3/aggTrades", symbol="BTCUSDT",
                                           fromId=2)] == [2]
        assert await get(env, "/api/v3/aggTrades", symbol="BTCUSDT", startTime=ts + 1) == []

        ticker = await get(env, "/api/v3/ticker/24hr", symbol="BTCUSDT")
        assert ticker["lastPrice"] == "60000.50000000" and ticker["count"] == 3
        assert ticker["volume"] == "0.24000000" and ticker["quoteVolume"] == "14400.02000000"
        assert ticker["bidPrice"] == "59990.00000000" and ticker["askQty"] == "0.06000000"
        assert (ticker["firstId"], ticker["lastId"]) == (1, 3)
        assert await get(env, "/api/v3/ticker/price", symbol="BTCUSDT") == {
            "symbol": "BTCUSDT", "price": "60000.50000000"}
        assert await get(env, "/api/v3/ticker/bookTicker", symbol="BTCUSDT") == {
            "symbol": "BTCUSDT", "bidPrice": "59990.00000000", "bidQty": "0.30000000",
            "askPrice": "60000.50000000", "askQty": "0.06000000"}
        assert await env.cache.reference_price("BTCUSDT") == 6_000_050

        open_1m = ts - ts % 60_000

        async def kline_stored() -> list[Any]:
            rows: list[Any] = await get(env, "/api/v3/klines", symbol="BTCUSDT", interval="1m")
            return rows

        rows = await eventually(kline_stored)
        assert rows == [[open_1m, "60000.00000000", "60000.50000000", "60000.00000000",
                         "60000.50000000", "0.24000000", open_1m + 59_999,
                         "14400.02000000", 3, "0.24000000", "14400.02000000", "0"]]
        stored = await env.pool.fetchval(
            "SELECT trades FROM klines WHERE symbol='BTCUSDT' AND interval='1d'")
        assert stored == 3


async def test_many_symbols_are_answered_as_lists_and_an_empty_market_as_zeros(
    env: Env,
) -> None:
    # Before marketdata ever ran: nothing in Redis, still valid documents.
    eth = await get(env, "/api/v3/ticker/24hr", symbol="ETHUSDT")
    assert eth["lastPrice"] == "0.00000000" and eth["count"] == 0
    assert await get(env, "/api/v3/depth", symbol="ETHUSDT") == {
        "lastUpdateId": 0, "bids": [], "asks": []}
    async with running(env):
        await _market_with_two_trades(env, now_ms())
        await depth_at(env, 3)
        tickers = await get(env, "/api/v3/ticker/24hr", symbols='["BTCUSDT","ETHUSDT"]')
        assert [t["symbol"] for t in tickers] == ["BTCUSDT", "ETHUSDT"]
        assert list(tickers[1]) == list(eth)  # the gateway's stand-in has the same shape
        assert tickers[1]["firstId"] == -1 and tickers[1]["priceChangePercent"] == "0.000"
        prices = await get(env, "/api/v3/ticker/price")
        assert {p["symbol"] for p in prices} == {p.symbol for p in DEMO_PAIRS}
        mini = await get(env, "/api/v3/ticker/24hr", symbol="BTCUSDT", type="MINI")
        assert "bidPrice" not in mini and mini["count"] == 3
        avg = await get(env, "/api/v3/avgPrice", symbol="BTCUSDT")
        assert avg["mins"] == 5 and avg["price"] == "60000.08333333"

        # ccxt parses every empty document.
        ex = ccxt.binance()
        empty_eth = await get(env, "/api/v3/ticker/24hr", symbol="ETHUSDT")
        assert ex.parse_ticker(empty_eth)["symbol"] == "ETHUSDT"
        ob = ex.parse_order_book(await get(env, "/api/v3/depth", symbol="ETHUSDT"), "ETH/USDT")
        assert ob["bids"] == [] and ob["asks"] == []
        assert await get(env, "/api/v3/klines", symbol="ETHUSDT", interval="1h") == []
        assert await get(env, "/api/v3/trades", symbol="ETHUSDT") == []
        assert await get(env, "/api/v3/aggTrades", symbol="ETHUSDT") == []


@pytest.mark.parametrize(("path", "params", "code"), [
    ("/api/v3/depth", {"symbol": "NOPE"}, -1121),
    ("/api/v3/depth", {}, -1102),
    ("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "abc"}, -1100),
    ("/api/v3/trades", {"symbol": "BTCUSDT", "limit": "1001"}, -1100),
    ("/api/v3/trades", {"symbol": "BTCUSDT", "limit": "0"}, -1100),
    ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "7m"}, -1120),
    ("/api/v3/klines", {"symbol": "BTCUSDT"}, -1102),
    ("/api/v3/ticker/24hr", {"symbols": '["BTCUSDT","NOPE"]'}, -1121),
    ("/api/v3/ticker/price", {"symbols": "not json"}, -1100),
    ("/api/v3/ticker/bookTicker", {"symbol": "BTCUSDT", "symbols": '["BTCUSDT"]'}, -1128),
])
async def test_bad_parameters_are_refused_with_binance_codes(
    env: Env, path: str, params: dict[str, str], code: int,
) -> None:
    r = await env.http.get(path, params=params)
    assert r.status_code == 400
    assert r.json()["code"] == code


async def test_depth_limit_above_5000_is_truncated_not_refused(env: Env) -> None:
    async with running(env):
        await publish(env, 1, 1, levels=[(BUY, 100 + i, 1) for i in range(10)])
        book = await depth_at(env, 1, limit=9999)
        assert len(book["bids"]) == 10 and book["bids"][0][0] == "1.09000000"
        assert len((await depth_at(env, 1, limit=3))["bids"]) == 3


async def test_reference_price_is_the_mid_before_the_first_trade_then_the_last_trade(
    env: Env,
) -> None:
    assert await env.cache.reference_price("BTCUSDT") is None
    async with running(env):
        await publish(env, 1, 1, levels=[(BUY, 100, 1), (SELL, 104, 1)])
        await depth_at(env, 1)
        assert await env.cache.reference_price("BTCUSDT") == 102
        await publish(env, 2, 2, events=[trade(1, 104, 1, now_ms())], levels=[(SELL, 104, 0)])
        await depth_at(env, 2)
        assert await env.cache.reference_price("BTCUSDT") == 104
        assert await env.cache.best_bid_ask("BTCUSDT") == (100, 1, 0, 0)


# --------------------------------------------------------------------------- recovery
async def test_a_restart_resumes_from_the_snapshot_and_skips_redelivered_batches(
    env: Env,
) -> None:
    ts = now_ms()
    async with running(env):
        await _market_with_two_trades(env, ts)
        await depth_at(env, 3)
    await publish(env, 4, 5, events=[trade(4, 6_000_050, 6_000, ts, taker=501)],
                  levels=[(SELL, 6_000_050, 0)])
    async with running(env):
        book = await depth_at(env, 5)
        assert book["asks"] == []
    trades = await get(env, "/api/v3/trades", symbol="BTCUSDT")
    assert [t["id"] for t in trades] == [1, 2, 3, 4]
    aggs = await get(env, "/api/v3/aggTrades", symbol="BTCUSDT")
    assert [a["a"] for a in aggs] == [1, 2, 3]  # the counter came back from the snapshot
    assert (await get(env, "/api/v3/ticker/24hr", symbol="BTCUSDT"))["count"] == 4


def duplicates_skipped() -> float:
    return REGISTRY.get_sample_value("tradeplane_marketdata_duplicates_total") or 0.0


async def test_a_restart_consumes_after_the_stored_stream_position(env: Env) -> None:
    async with running(env):
        await _market_with_two_trades(env, now_ms())
        await depth_at(env, 3)
    assert await env.cache.position() == 2  # two messages in the stream
    await publish(env, 4, 4, levels=[(BUY, 5_999_000, 0)])
    skipped = duplicates_skipped()
    async with running(env) as svc:
        assert (await depth_at(env, 4))["bids"] == []
        assert svc.position == 3
    assert duplicates_skipped() == skipped  # nothing was read twice


class FailingWrites(MarketCache):
    """Refuses the first ``failures`` writes of consumed groups, then works."""

    failures = 1

    async def write(self, updates: Any, *, position: int | None = None) -> None:
        if position and self.failures:
            self.failures -= 1
            raise CacheError("injected failure")
        await super().write(updates, position=position)


async def test_a_group_whose_writes_fail_is_applied_again_not_skipped(env: Env) -> None:
    flaky = await FailingWrites.connect(env.redis_url)
    try:
        async with running(env, flaky):
            await _market_with_two_trades(env, now_ms())
            book = await depth_at(env, 3)
            assert book["asks"] == [["60000.50000000", "0.06000000"]]
            trades = await get(env, "/api/v3/trades", symbol="BTCUSDT")
            assert [t["id"] for t in trades] == [1, 2, 3]
            aggs = await get(env, "/api/v3/aggTrades", symbol="BTCUSDT")
            assert [a["a"] for a in aggs] == [1, 2]
        assert flaky.failures == 0
    finally:
        await flaky.close()


async def test_a_cache_flushed_under_the_running_service_gets_every_state_back(
    env: Env,
) -> None:
    async with running(env):
        await _market_with_two_trades(env, now_ms())
        await depth_at(env, 3)
        r = aioredis.from_url(env.redis_url)
        await r.flushall()
        await r.aclose()

        async def written_back() -> bool:
            return await env.cache.position() == 2 and (
                await env.cache.load_state("ETHUSDT") is not None)

        await eventually(written_back)
        assert (await depth_at(env, 3))["bids"] == [["59990.00000000", "0.30000000"]]


async def test_a_flushed_cache_is_rebuilt_from_the_event_stream(env: Env) -> None:
    ts = now_ms()
    async with running(env):
        await _market_with_two_trades(env, ts)
        await depth_at(env, 3)
    r = aioredis.from_url(env.redis_url)
    await r.flushall()
    await r.aclose()
    async with running(env):
        book = await depth_at(env, 3)
        assert book["asks"] == [["60000.50000000", "0.06000000"]]
        trades = await get(env, "/api/v3/trades", symbol="BTCUSDT")
        assert [t["id"] for t in trades] == [1, 2, 3]  # replayed once, not twice


# --------------------------------------------------------------------------- streams
@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                                           log_config=None, access_log=False))
    task = asyncio.create_task(server.serve())
    await eventually(lambda: _true(server.started))
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def _true(value: bool) -> bool:
    return value


async def recv_json(ws: Any, pred: Any = None) -> Any:
    """The next message (matching ``pred``), within a deadline."""
    async def next_match() -> Any:
        while True:
            msg = json.loads(await ws.recv())
            if pred is None or pred(msg):
                return msg

    return await asyncio.wait_for(next_match(), 10)


async def test_depth_diffs_over_websocket_continue_the_rest_snapshot(env: Env) -> None:
    async with running(env), serving(env.app) as host:
        await publish(env, 1, 1, levels=[(BUY, 100, 5)])
        async with websockets.connect(f"ws://{host}/ws/0") as ws:  # ccxt's URL shape
            await ws.send(json.dumps({"method": "SUBSCRIBE",
                                      "params": ["btcusdt@depth@100ms"], "id": 7}))
            assert await recv_json(ws) == {"result": None, "id": 7}
            snap = await depth_at(env, 1)
            await publish(env, 2, 4, levels=[(BUY, 100, 8), (SELL, 120, 2)])
            await publish(env, 5, 5, levels=[(BUY, 99, 1)])
            diffs: list[dict[str, Any]] = []
            while not diffs or diffs[-1]["u"] < 5:
                diffs.append(await recv_json(ws, lambda m: m.get("e") == "depthUpdate"))
            live = [d for d in diffs if d["u"] > snap["lastUpdateId"]]
            assert live[0]["U"] <= snap["lastUpdateId"] + 1 <= live[0]["u"]
            for prev, nxt in itertools.pairwise(live):
                assert nxt["U"] == prev["u"] + 1
            book = {p: q for p, q in snap["bids"]}
            for d in live:
                book.update({p: q for p, q in d["b"]})
            assert book == {"1.00000000": "0.00008000", "0.99000000": "0.00001000"}
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
            assert await recv_json(ws, lambda m: m.get("id") == 8) == {
                "result": ["btcusdt@depth@100ms"], "id": 8}
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["nope@trade"],
                                      "id": 9}))
            err = await recv_json(ws, lambda m: m.get("id") == 9)
            assert err["error"]["code"] == 2


async def test_combined_streams_wrap_payloads_and_share_one_nats_subscription(
    env: Env,
) -> None:
    ts = now_ms()
    async with running(env), serving(env.app) as host:
        url = f"ws://{host}/stream?streams=btcusdt@trade/btcusdt@bookTicker"
        async with websockets.connect(url) as a, websockets.connect(
            f"ws://{host}/ws/btcusdt@trade"
        ) as b:
            hub: streams.StreamHub = gateway(env.app).stream_hub

            async def both_joined() -> bool:
                return hub.listeners("md.BTCUSDT.trade") == 2

            await eventually(both_joined)
            assert hub.subjects == ["md.BTCUSDT.bookTicker", "md.BTCUSDT.trade"]
            await _market_with_two_trades(env, ts)
            wrapped = await recv_json(a, lambda m: m["stream"] == "btcusdt@trade")
            assert wrapped["data"]["e"] == "trade" and wrapped["data"]["t"] == 1
            raw = await recv_json(b, lambda m: m.get("e") == "trade")
            assert raw["t"] == 1 and raw["p"] == "60000.00000000"
        await eventually(lambda: _true(hub.subjects == []))


async def test_ccxt_pro_watches_the_order_book_through_snapshot_and_diffs(env: Env) -> None:
    import ccxt.pro as ccxtpro

    async with running(env), serving(env.app) as host:
        await publish(env, 1, 2, levels=[(BUY, 5_999_000, 30_000), (SELL, 6_000_000, 20_000)])
        await depth_at(env, 2)
        ex = ccxtpro.binance({"options": {"fetchMarkets": {"types": ["spot"]}}})
        ex.urls["api"]["public"] = f"http://{host}/api/v3"
        ex.urls["api"]["ws"]["spot"] = f"ws://{host}/ws"
        try:
            await ex.load_markets()
            first = await asyncio.wait_for(ex.watch_order_book("BTC/USDT"), 10)
            assert first["bids"][0] == [59990.0, 0.3]
            await publish(env, 3, 4, levels=[(BUY, 5_999_500, 1_000)])

            async def best_bid_moved() -> bool:
                # ccxt applies each diff in the background once it has checked U/u
                return bool(ex.orderbooks["BTC/USDT"]["bids"][0][0] == 59995.0)

            await eventually(best_bid_moved)
            assert ex.orderbooks["BTC/USDT"]["nonce"] == 4

            watching = asyncio.create_task(ex.watch_trades("BTC/USDT"))
            hub: streams.StreamHub = gateway(env.app).stream_hub
            await eventually(lambda: _true(hub.listeners("md.BTCUSDT.trade") == 1))
            await publish(env, 5, 5, events=[trade(1, 6_000_000, 2_000, now_ms())],
                          levels=[(SELL, 6_000_000, 18_000)])
            seen = await asyncio.wait_for(watching, 10)
            assert [(t["id"], t["price"], t["amount"], t["side"]) for t in seen] == [
                ("1", 60000.0, 0.02, "buy")]

            # ccxt's REST side reads the same cache.
            async def ticker_has_the_trade() -> bool:
                t = await ex.fetch_ticker("BTC/USDT")
                return bool(t["last"] == 60000.0 and t["baseVolume"] == 0.02)

            await eventually(ticker_has_the_trade)
            fetched = await ex.fetch_trades("BTC/USDT")
            assert [(t["price"], t["amount"]) for t in fetched] == [(60000.0, 0.02)]
            candles = await ex.fetch_ohlcv("BTC/USDT", "1m")
            assert [c[1:] for c in candles] == [[60000.0, 60000.0, 60000.0, 60000.0, 0.02]]
        finally:
            await ex.close()
