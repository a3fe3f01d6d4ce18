"""A real ``tradeplane gateway`` process whose background task dies: it logs one CRITICAL
line naming the task and exits non-zero, for ``tradeplane up`` or Kubernetes to restart
it (the in-process cases: tests/integration/test_gateway_supervision.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from tests.support.harness import eventually, free_port, fresh_database, reset_bus_and_cache
from tests.support.procs import Processes

from tradeplane.adapters import db
from tradeplane.config import Settings
from tradeplane.domain.pairs import DEMO_PAIRS

pytestmark = pytest.mark.e2e


@pytest.fixture
async def gateway(nats_url: str, pg_url: str, redis_url: str,
                  tmp_path: Path) -> AsyncIterator[tuple[Settings, Processes]]:
    await reset_bus_and_cache(nats_url, redis_url)
    dsn = await fresh_database(pg_url)
    pool = await db.create_pool(dsn, 2)
    try:
        await db.migrate(pool)
        for p in DEMO_PAIRS:
            await db.upsert_pair(pool, p)
    finally:
        await pool.close()
    settings = Settings(dev_mode=True, nats_url=nats_url, database_url=dsn,
                        redis_url=redis_url, http_port=free_port())
    procs = Processes(settings, tmp_path)
    procs.start("gateway", "gateway")
    try:
        yield settings, procs
    finally:
        procs.stop_all()


async def test_a_gateway_whose_pair_refresh_dies_exits_non_zero_with_a_critical_line(
    gateway: tuple[Settings, Processes],
) -> None:
    settings, procs = gateway
    process = procs.procs["gateway"]

    async def answers() -> bool:
        assert process.poll() is None, procs.log("gateway")
        try:
            async with httpx.AsyncClient() as http:
                r = await http.get(f"http://127.0.0.1:{settings.http_port}/api/v3/ping")
            return r.status_code == 200
        except httpx.TransportError:
            return False

    await eventually(answers, timeout=60)
    con = await asyncpg.connect(settings.database_url)
    try:  # a pair row no gateway can read: a defect in the data, not PostgreSQL failing
        await con.execute("UPDATE pairs SET min_qty = 0 WHERE symbol = 'BTCUSDT'")
    finally:
        await con.close()

    async def exited() -> bool:
        return process.poll() is not None

    await eventually(exited, timeout=30)  # the refresh runs every 5 s
    assert process.returncode != 0
    log = procs.log("gateway")
    critical = [json.loads(line)["msg"] for line in log.splitlines()
                if line.startswith("{") and json.loads(line).get("level") == "critical"]
    assert len(critical) == 1, log
    assert critical[0].startswith("gateway stopping: a background task failed: "
                                  "PairConfigError: BTCUSDT:"), critical
    assert critical[0].endswith("(background task: pair-refresh)"), critical
