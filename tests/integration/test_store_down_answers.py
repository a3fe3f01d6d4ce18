"""A request whose store does not answer gets 503 and Binance's -1001 (retry), never a
500: found by ``tradeplane chaos`` (kill-redis, stop-postgres), where orders met
Redis or PostgreSQL restarting and the gateway answered 500 with a traceback."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.harness import running_platform

from tradeplane.platform.servers import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    folder = Path(tempfile.mkdtemp(prefix="tp-redis-"))
    server = RedisServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def test_requests_that_need_redis_while_it_is_down_are_answered_503_minus_1001(
    nats_url: str, pg_url: str, own_redis: RedisServer,
) -> None:
    async with running_platform(nats_url, pg_url, own_redis.url) as plat:
        t = await plat.trader("redis-down", {"USDT": "100000"})
        order = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                 "price": "50000", "quantity": "0.001"}
        first = await t.api.signed("POST", "/api/v3/order", **order)
        assert first.status_code == 200, first.text
        pid = own_redis.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

        # A market order reads the top of the book from Redis (the order fast path); the
        # depth is Redis' (a route).
        r = await t.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY",
                               type="MARKET", quantity="0.001")
        depth = await t.api.http.get("/api/v3/depth", params={"symbol": "BTCUSDT"})

        assert r.status_code == 503, r.text
        assert r.json()["code"] == -1001
        assert depth.status_code == 503, depth.text
        assert depth.json()["code"] == -1001
