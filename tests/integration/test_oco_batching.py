"""OCO lists take their holds batched, as single orders do (``OrderPath.place_list`` ->
``db.place_order_lists``: one round trip and one commit for concurrent lists), and each
list still stands alone: placed whole, or refused (insufficient funds, a duplicate client
id, a value PostgreSQL refuses) with nothing of it left behind, whatever its batch held."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from tests.support.harness import Platform

from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus
from tradeplane.adapters.orderpath import OrderPath
from tradeplane.domain.model import OrderType, Side, TimeInForce
from tradeplane.domain.money import to_units

pytestmark = pytest.mark.integration

HOLD = to_units("50")
Placed = tuple[int | None, list[int], db.PlaceResult]


def _list(account: int, cid: str, *, stop: int = 5_100_000) -> db.ListRequest:
    """A BUY OCO on BTCUSDT: a stop-loss-limit above, a LIMIT_MAKER below; one hold."""
    now = int(time.time() * 1000)
    above = db.OrderRequest(
        account, "BTCUSDT", f"{cid}-a", Side.BUY, OrderType.STOP_LOSS_LIMIT, TimeInForce.GTC,
        5_000_000, 100, 0, False, "USDT", HOLD, now, stop_price=stop)
    below = db.OrderRequest(
        account, "BTCUSDT", f"{cid}-b", Side.BUY, OrderType.LIMIT_MAKER, TimeInForce.GTC,
        4_900_000, 100, 0, False, "USDT", HOLD, now)
    return db.ListRequest(account, "BTCUSDT", cid, (above, below), "USDT", HOLD, now)


async def test_concurrent_oco_lists_are_placed_together_and_each_stands_alone(
    plat: Platform, monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches: list[int] = []
    place_order_lists = db.place_order_lists

    async def recorded(pool: db.Pool, reqs: Sequence[db.ListRequest]) -> list[Placed]:
        batches.append(len(reqs))
        return await place_order_lists(pool, reqs)

    monkeypatch.setattr(db, "place_order_lists", recorded)
    rich = await plat.trader("oco-batch-rich", {"USDT": "100000"})
    poor = await plat.trader("oco-batch-poor", {"USDT": "120"})  # two lists' worth
    bus = await Bus.connect(plat.settings.nats_url, name="oco-batch-test")
    path = OrderPath(plat.pool, bus, list_workers=1)
    reqs = [_list(rich.account, f"rich{i}") for i in range(30)]
    reqs += [_list(rich.account, "rich7")]  # a list client id already in this batch
    reqs += [_list(poor.account, f"poor{i}") for i in range(3)]  # the third cannot be held
    try:
        results = await asyncio.gather(*(path.place_list(r) for r in reqs))
        assert max(batches) > 1  # placed together, not one statement per list
        # A value PostgreSQL refuses fails the batch statement: it is retried list by
        # list, and only its own caller gets the error.
        again = [_list(rich.account, f"again{i}") for i in range(5)]
        again.insert(2, _list(rich.account, "poison", stop=2**63))
        later = await asyncio.gather(*(path.place_list(r) for r in again),
                                     return_exceptions=True)
    finally:
        await path.close()
        await bus.close()

    placed, duplicate, poor_results = results[:30], results[30], results[31:34]
    assert all(r[2] == db.PlaceResult.PLACED and r[0] is not None and len(r[1]) == 2
               for r in placed), placed
    assert len({r[0] for r in placed}) == 30  # one list id each
    assert duplicate == (None, [], db.PlaceResult.DUPLICATE)
    assert sorted(r[2] for r in poor_results) == [
        db.PlaceResult.PLACED, db.PlaceResult.PLACED, db.PlaceResult.INSUFFICIENT]
    poisoned = later.pop(2)
    assert isinstance(poisoned, Exception)
    assert all(isinstance(r, tuple) and r[2] == db.PlaceResult.PLACED for r in later), later

    # Exactly the placed lists hold funds: one hold per list, on its first leg.
    assert (await plat.balances(rich.account))["USDT"][1] == 35 * HOLD
    assert (await plat.balances(poor.account))["USDT"] == (to_units("120") - 2 * HOLD,
                                                            2 * HOLD)
    assert await plat.pool.fetchval(
        "SELECT count(*) FROM orders WHERE account_id = $1", rich.account) == 70
    assert await plat.pool.fetchval(
        "SELECT count(*) FROM order_lists WHERE account_id = $1", poor.account) == 2
    _, problems = await db.check_invariants(plat.pool)
    assert problems == []
