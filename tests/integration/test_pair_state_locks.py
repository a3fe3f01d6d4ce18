"""Pairs rows are locked in one order, symbol order, by every transaction that writes
several of them: settlement applying a batch's trading-state changes and the kill
switch's release restoring every pair's state. In a batch's order (ETHUSDT's halt
settled before BTCUSDT's) settlement deadlocked with a release holding BTCUSDT and
going on to ETHUSDT: PostgreSQL aborted one of them, and ``DELETE /admin/kill-switch``
answered 503 -1007 (schemathesis found it under CI's load)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
from tests.support.harness import Platform, eventually

from tradeplane.adapters.settlement import PgSettlementStore
from tradeplane.domain.ledger import OrderState, Settlement

pytestmark = pytest.mark.integration


@dataclass
class _Write:
    """A settled batch with no postings, only trading-state changes."""

    trading: Mapping[str, str]
    settlement: Settlement = field(default_factory=Settlement)
    cursors: Mapping[str, int] = field(default_factory=dict)
    position: tuple[str, int] = ("test-pair-locks", 1)


async def _waiting_on_a_lock(plat: Platform) -> bool:
    waiting = await plat.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND query LIKE 'UPDATE pairs%'")
    return bool(waiting)


async def test_settlement_locks_pairs_in_symbol_order_so_a_kill_switch_release_never_deadlocks(
    plat: Platform,
) -> None:
    store = PgSettlementStore(plat.pool)
    states = {r["symbol"]: r["trading"]
              for r in await plat.pool.fetch("SELECT symbol, trading FROM pairs")}
    assert {"BTCUSDT", "ETHUSDT"} <= states.keys()
    # The batch's order: ETHUSDT's change first.
    batch = {"ETHUSDT": states["ETHUSDT"], "BTCUSDT": states["BTCUSDT"]}

    def settle(_orders: dict[int, OrderState]) -> _Write:
        return _Write(batch)

    async with plat.pool.acquire() as con, con.transaction():
        # The release, as kill_switch_off runs it: BTCUSDT's row, then ETHUSDT's.
        await con.execute("UPDATE pairs SET trading = trading WHERE symbol = 'BTCUSDT'")
        settling = asyncio.create_task(store.settle([], settle))
        await eventually(lambda: _waiting_on_a_lock(plat), timeout=10)
        # Settlement waits for BTCUSDT holding nothing: this update does not wait on it.
        await asyncio.wait_for(
            con.execute("UPDATE pairs SET trading = trading WHERE symbol = 'ETHUSDT'"), 5)
    assert await asyncio.wait_for(settling, 10) == {}
    after = {r["symbol"]: r["trading"]
             for r in await plat.pool.fetch("SELECT symbol, trading FROM pairs")}
    assert after == states
