"""The demo market maker replaces its quotes without a gap: a depth snapshot taken at any
moment while it requotes shows both sides."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from tests.support.harness import Platform, eventually, running_platform

from tradeplane.demo.marketmaker import ladder, placement_order, run_market_maker

pytestmark = pytest.mark.integration

SYMBOL = "BTCUSDT"


@pytest.fixture
async def plat(nats_url: str, pg_url: str, redis_url: str) -> AsyncIterator[Platform]:
    async with running_platform(nats_url, pg_url, redis_url) as p:
        yield p


async def test_depth_is_never_empty_or_one_sided_while_the_market_maker_requotes(
    plat: Platform,
) -> None:
    mm = await plat.trader("market-maker", {"BTC": "1000", "USDT": "100000000"})
    http = httpx.AsyncClient(base_url=plat.base_url)

    async def depth() -> tuple[int, int, str]:
        """Bid levels, ask levels, best bid."""
        doc = (await http.get("/api/v3/depth", params={"symbol": SYMBOL, "limit": 20})).json()
        return len(doc["bids"]), len(doc["asks"]), doc["bids"][0][0] if doc["bids"] else ""

    async def quoted() -> bool:
        bids, asks, _ = await depth()
        return bids > 0 and asks > 0

    # Requote continuously (no pause between rounds), as many rounds as it takes.
    maker = asyncio.create_task(run_market_maker(plat.base_url, mm.api_key, mm.secret,
                                                 [SYMBOL], interval=0.0))
    try:
        await eventually(quoted, timeout=30)
        samples = []
        for _ in range(400):
            samples.append(await depth())
            assert not maker.done()
    finally:
        maker.cancel()
        await asyncio.gather(maker, return_exceptions=True)
        await http.aclose()
    bad = [s for s in samples if 0 in s[:2]]
    assert not bad, f"{len(bad)} of {len(samples)} snapshots empty or one-sided: {bad[:5]}"
    assert len({best for _, _, best in samples}) > 3  # it did requote meanwhile


@pytest.mark.parametrize(("mid", "previous", "first"), [
    (Decimal("101"), Decimal("100"), "SELL"), (Decimal("99"), Decimal("100"), "BUY"),
    (Decimal("100"), None, "SELL"),
])
def test_new_quotes_start_with_the_side_that_crosses_no_old_quote(
    mid: Decimal, previous: Decimal | None, first: str
) -> None:
    quotes = placement_order(ladder(mid, Decimal("0.01"), Decimal("0.0001"), Decimal("200")),
                             mid, previous)
    sides = [q[0] for q in quotes]
    assert sides == [first] * 5 + [{"BUY": "SELL", "SELL": "BUY"}[first]] * 5
