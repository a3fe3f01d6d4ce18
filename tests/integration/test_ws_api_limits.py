"""The WebSocket API's requests count in the REST API's rate limits (request weight per
address, here 30 a minute): over the limit a request is answered 429 -1003 in the
envelope, a client that keeps going is banned (418) and its socket closed with a reason.
A platform of its own: these limits would stop every other test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import websockets
from tests.integration.test_ws_api import call, closed_with, ws_url
from tests.support.harness import Platform, running_platform

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def plat(nats_url: str, pg_url: str, redis_url: str) -> AsyncIterator[Platform]:
    async with running_platform(nats_url, pg_url, redis_url, ip_weight_per_minute=30,
                                rate_limit_sync_ms=0, ban_after_429s=3) as p:
        yield p


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
