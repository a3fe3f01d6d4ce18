"""``kill -9`` of the gateway during order flow over the WebSocket API: every order the
API acknowledged (``status`` 200) reaches the engine and the ledger exactly once, no
request makes two orders, and the ledger's invariants hold. The clients reconnect to the
restarted gateway and go on, as ccxt.pro does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import websockets
from tests.e2e.test_crash_recovery import SYMBOL, _trader
from tests.integration.test_ws_api import hmac_params
from tests.support.harness import (
    RAISED_LIMITS,
    Trader,
    eventually,
    free_port,
    fresh_database,
    reset_bus_and_cache,
)
from tests.support.procs import Processes

from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus
from tradeplane.config import Settings
from tradeplane.domain.pairs import DEMO_PAIRS

pytestmark = pytest.mark.e2e


@pytest.fixture
async def env(
    nats_url: str, pg_url: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Settings, db.Pool, Processes]]:
    await reset_bus_and_cache(nats_url, redis_url)
    dsn = await fresh_database(pg_url)
    settings = Settings(dev_mode=True, nats_url=nats_url, database_url=dsn,
                        redis_url=redis_url, http_port=free_port(), snapshot_every=500,
                        response_timeout_s=3.0, **RAISED_LIMITS)
    pool = await db.create_pool(dsn, 4)
    await db.migrate(pool)
    await db.upsert_pair(pool, DEMO_PAIRS[0])
    procs = Processes(settings, tmp_path)
    try:
        yield settings, pool, procs
    finally:
        procs.stop_all()
        await pool.close()


async def _ws_flow(url: str, traders: list[Trader], seconds: float, acked: list[int],
                   sent: list[str], seed: int) -> None:
    """Place (ACK) and cancel orders over one connection at a time, reconnecting whenever
    the gateway goes away, until ``seconds`` have passed."""
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    mine: dict[int, list[int]] = {t.account: [] for t in traders}
    n = 0
    while time.monotonic() < deadline:
        try:
            async with websockets.connect(url, open_timeout=2) as ws:
                while time.monotonic() < deadline:
                    t = rng.choice(traders)
                    if mine[t.account] and rng.random() < 0.25:
                        oid = mine[t.account].pop(rng.randrange(len(mine[t.account])))
                        await ws.send(json.dumps({"id": "c", "method": "order.cancel",
                                                  "params": hmac_params(t, symbol=SYMBOL,
                                                                        orderId=oid)}))
                        doc = json.loads(await asyncio.wait_for(ws.recv(), 10))
                        assert doc["status"] in (200, 400, 503), doc
                        continue
                    n += 1
                    cid = f"s{seed}n{n}"
                    price = 60000 + rng.randint(-20, 20) * 0.5
                    params = hmac_params(
                        t, symbol=SYMBOL, side=rng.choice(["BUY", "SELL"]), type="LIMIT",
                        timeInForce="GTC", price=f"{price:.2f}",
                        quantity=f"{rng.randint(1, 50) / 1000:.3f}", newOrderRespType="ACK",
                        newClientOrderId=cid)
                    sent.append(cid)
                    await ws.send(json.dumps({"id": cid, "method": "order.place",
                                              "params": params}))
                    doc = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    assert doc["id"] == cid
                    if doc["status"] == 200:
                        acked.append(doc["result"]["orderId"])
                        mine[t.account].append(doc["result"]["orderId"])
                    else:  # -1007 while a component restarts: not acknowledged
                        assert doc["status"] == 503, doc
        except (websockets.ConnectionClosed, OSError, TimeoutError):
            await asyncio.sleep(0.2)


async def test_kill_9_of_the_gateway_during_ws_api_order_flow_loses_and_doubles_nothing(
    env: tuple[Settings, db.Pool, Processes],
) -> None:
    settings, pool, procs = env
    procs.start("matching", "matching", "--symbol", "BTC-USDT")
    procs.start("settlement", "settlement")
    procs.start("gateway", "gateway")
    alice = await _trader(settings, pool, "alice")
    bob = await _trader(settings, pool, "bob")

    async def gateway_up() -> bool:
        try:
            return (await alice.api.http.get("/api/v3/ping")).status_code == 200
        except Exception:
            return False

    await eventually(gateway_up, timeout=30)
    url = f"ws://127.0.0.1:{settings.http_port}/ws-api/v3?returnRateLimits=false"
    acked: list[int] = []
    sent: list[str] = []
    flows = [asyncio.create_task(_ws_flow(url, [alice, bob], 9.0, acked, sent, seed))
             for seed in range(6)]
    await asyncio.sleep(2.5)
    before = len(acked)
    procs.kill9("gateway")
    await asyncio.sleep(0.5)
    procs.restart("gateway")
    await asyncio.gather(*flows)
    assert before > 50 and len(acked) > before + 50, "the flow did not run on both sides"

    bus = await Bus.connect(settings.nats_url, name="test")
    try:
        async def settled_everything() -> bool:
            # Orders stored but not on the bus when the gateway died are re-sent by
            # settlement's outbox relay (after RELAY_AGE_MS): the log grows meanwhile.
            last_cmd = await bus.last_command_seq(SYMBOL)
            cursors = await db.settlement_cursors(pool)
            pending = await pool.fetchval("SELECT count(*) FROM orders WHERE status = 0")
            return cursors.get(SYMBOL) == last_cmd and pending == 0

        await eventually(settled_everything, timeout=60)
        rows = await pool.fetch("SELECT id, status FROM orders WHERE id = ANY($1::bigint[])",
                                acked)
        assert len(rows) == len(set(acked)) == len(acked)  # every ack, once
        assert all(r["status"] != 0 for r in rows)
        doubles = await pool.fetch(
            "SELECT client_order_id FROM orders GROUP BY client_order_id HAVING count(*) > 1")
        assert doubles == []  # no request made two orders
        made = await pool.fetchval(
            "SELECT count(*) FROM orders WHERE client_order_id = ANY($1::text[])", sent)
        assert len(acked) <= made <= len(sent)
        _, problems = await db.check_invariants(pool)
        assert problems == []
    finally:
        await bus.close()
        await alice.api.close()
        await bob.api.close()
        with contextlib.suppress(Exception):
            procs.stop("gateway")
