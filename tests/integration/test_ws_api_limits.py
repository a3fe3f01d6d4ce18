"""The WebSocket API's requests count in the REST API's rate limits (here 30 request
weight a minute per address, 3 new orders per 10 s per key): over a limit a request is
answered 429 (-1015, -1003) in the envelope, a client that keeps going is banned (418)
and its socket closed with a reason. A platform of its own: these limits would stop every
other test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import websockets
from tests.integration.test_ws_api import call, closed_with, hmac_params, ws_url
from tests.support.harness import Platform, running_platform

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def plat(nats_url: str, pg_url: str, redis_url: str) -> AsyncIterator[Platform]:
    async with running_platform(nats_url, pg_url, redis_url, ip_weight_per_minute=30,
                                orders_per_10s=3, rate_limit_sync_ms=0,
                                ban_after_429s=3) as p:
        yield p


async def test_a_fourth_order_within_10_s_is_refused_1015_and_counted_in_rate_limits(
    plat: Platform,
) -> None:  # first: the weight test below bans this address
    t = await plat.trader("ws-orders-limit", {"USDT": "1000"})
    async with websockets.connect(ws_url(plat)) as ws:
        answers = [await call(ws, "order.place", hmac_params(
            t, symbol="ETHUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
            quantity="0.01", price="2000", newOrderRespType="ACK"), rid=i) for i in range(4)]
        assert [a["status"] for a in answers] == [200, 200, 200, 429]
        assert answers[3]["error"] == {
            "code": -1015, "msg": "Too many new orders; current limit is 3 orders per "
                                  "10 SECOND."}
        counts = {(x["rateLimitType"], x["interval"]): (x["count"], x["limit"])
                  for x in answers[2]["rateLimits"]}
        assert counts[("ORDERS", "SECOND")] == (3, 3)
        cancel = await call(ws, "openOrders.cancelAll", hmac_params(t, symbol="ETHUSDT"))
        assert len(cancel["result"]) == 3  # other requests of the key still pass


async def test_the_request_weight_limit_refuses_with_429_then_bans_and_closes(
    plat: Platform,
) -> None:
    async with websockets.connect(ws_url(plat)) as ws:
        answers = []
        for i in range(40):
            doc = await call(ws, "exchangeInfo", rid=i)  # weight 20
            answers.append(doc)
            if doc["status"] == 418:
                break
        statuses = [a["status"] for a in answers]
        assert statuses[0] == 200 and 429 in statuses and statuses[-1] == 418
        over = answers[statuses.index(429)]
        assert over["id"] == statuses.index(429) and over["error"]["code"] == -1003
        assert answers[0]["rateLimits"][0]["count"] >= 20  # the start-up probe counts too
        code, reason = await closed_with(ws)
        assert code == 1008 and "Banned" in reason
