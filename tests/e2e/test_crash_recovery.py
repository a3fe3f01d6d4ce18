"""``kill -9`` of the matching engine and of settlement during continuous order flow:
no acknowledged order is lost, no trade is applied twice, the ledger invariants hold, and
the engine's book equals the book rebuilt by replaying the whole command stream."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js import api
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
from tradeplane.adapters.bus import Bus, command_stream
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.config import Settings
from tradeplane.demo.client import ApiClient
from tradeplane.domain import codec
from tradeplane.domain.book import OrderBook
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.engine.service import EngineSnapshot

pytestmark = pytest.mark.e2e

SYMBOL = "BTCUSDT"
RULES = DEMO_PAIRS[0]


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
    await db.upsert_pair(pool, RULES)
    procs = Processes(settings, tmp_path)
    try:
        yield settings, pool, procs
    finally:
        procs.stop_all()
        await pool.close()


async def _trader(settings: Settings, pool: db.Pool, name: str) -> Trader:
    import secrets

    account = await db.create_account(pool, name)
    secret = secrets.token_hex(32)
    key = await db.create_api_key(
        pool, account, SecretCipher(settings.secret_key.get_secret_value()).encrypt(secret),
        ["read", "trade"],
    )
    for asset, amount in (("BTC", "1000"), ("USDT", "100000000")):
        await db.credit(pool, account, asset, to_units(amount), f"{name}-{asset}")
    return Trader(account, key, secret,
                  ApiClient(f"http://127.0.0.1:{settings.http_port}", key, secret))


async def _flow(traders: list[Trader], seconds: float, acked: list[int], seed: int) -> None:
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    mine: dict[int, list[int]] = {t.account: [] for t in traders}
    while time.monotonic() < deadline:
        t = rng.choice(traders)
        if mine[t.account] and rng.random() < 0.25:
            oid = mine[t.account].pop(rng.randrange(len(mine[t.account])))
            r = await t.api.signed("DELETE", "/api/v3/order", symbol=SYMBOL, orderId=oid)
            assert r.status_code in (200, 400, 503), r.text
            continue
        side = rng.choice(["BUY", "SELL"])
        price = 60000 + rng.randint(-20, 20) * 0.5
        r = await t.api.signed(
            "POST", "/api/v3/order", symbol=SYMBOL, side=side, type="LIMIT",
            timeInForce="GTC", price=f"{price:.2f}", quantity=f"{rng.randint(1, 50) / 1000:.3f}",
            newOrderRespType="ACK",
        )
        assert r.status_code == 200, r.text
        oid = r.json()["orderId"]
        acked.append(oid)
        mine[t.account].append(oid)


async def _all_events_contiguous(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    info = await js.stream_info("EVENTS")
    expected_first = None
    count = 0
    try:
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg("EVENTS", seq)
            batch = codec.decode_batch(msg.data or b"")
            if expected_first is not None:
                assert batch.first_seq == expected_first, "an event batch repeats or skips"
            expected_first = batch.last_seq + 1
            count += 1
    finally:
        await nc.close()
    return count


async def test_kill_9_of_engine_and_settlement_loses_nothing_and_doubles_nothing(
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
    acked: list[int] = []
    flows = [asyncio.create_task(_flow([alice, bob], 9.0, acked, seed)) for seed in range(6)]

    await asyncio.sleep(2.0)
    procs.kill9("matching")
    await asyncio.sleep(0.5)
    procs.restart("matching")
    await asyncio.sleep(2.5)
    procs.kill9("settlement")
    await asyncio.sleep(0.5)
    procs.restart("settlement")
    await asyncio.gather(*flows)
    assert len(acked) > 200, "the flow did not run"

    bus = await Bus.connect(settings.nats_url, name="test")
    try:
        last_cmd = await bus.last_command_seq(SYMBOL)

        async def settled_everything() -> bool:
            cursors = await db.settlement_cursors(pool)
            pending = await pool.fetchval("SELECT count(*) FROM orders WHERE status = 0")
            return cursors.get(SYMBOL) == last_cmd and pending == 0

        await eventually(settled_everything, timeout=60)

        # Every acknowledged order reached the engine and the ledger, exactly once.
        rows = await pool.fetch("SELECT id, status FROM orders WHERE id = ANY($1::bigint[])",
                                acked)
        assert len(rows) == len(set(acked))
        assert all(r["status"] != 0 for r in rows)
        executed = await pool.fetchval(
            "SELECT coalesce(sum(executed), 0) FROM orders WHERE symbol = $1", SYMBOL)
        traded = await pool.fetchval(
            "SELECT coalesce(sum(qty), 0) FROM trades WHERE symbol = $1", SYMBOL)
        assert executed == 2 * traded  # each trade counted once on each side, never twice
        trade_ids = [r["trade_id"] for r in await pool.fetch(
            "SELECT trade_id FROM trades WHERE symbol = $1 ORDER BY trade_id", SYMBOL)]
        assert trade_ids == list(range(1, len(trade_ids) + 1))
        _, problems = await db.check_invariants(pool)
        assert problems == []
        assert await _all_events_contiguous(settings.nats_url) > 0

        # The live book (its snapshot on a clean stop) equals a replay of the whole log.
        assert procs.stop("matching") == 0
        live = codec.decode_as(await bus.load_snapshot(SYMBOL) or b"", EngineSnapshot)
        replayed = OrderBook(SYMBOL, RULES.notional_per_tick_lot)
        for seq in range(1, last_cmd + 1):
            msg = await bus.js.get_msg(command_stream(SYMBOL), seq)
            for cmd in codec.decode_commands(msg.data or b""):
                replayed.process(cmd)
        assert live.seq == last_cmd
        assert OrderBook.restore(live.book).state_hash() == replayed.state_hash()

        # ... and the ledger's open orders are exactly the replayed book's.
        open_rows = await pool.fetch(
            "SELECT id, qty - executed AS remaining FROM orders"
            " WHERE symbol = $1 AND status IN (1, 2) ORDER BY id", SYMBOL)
        book_orders = sorted(
            (o.order_id, o.remaining) for o in (*live.book.bids, *live.book.asks))
        assert [(r["id"], r["remaining"]) for r in open_rows] == book_orders
    finally:
        await bus.close()
        await alice.api.close()
        await bob.api.close()
        _ = api
