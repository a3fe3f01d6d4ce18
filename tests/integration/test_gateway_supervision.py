"""The gateway's background tasks are supervised, against real NATS, PostgreSQL and Redis:
a task whose dependency is unavailable retries with growing delays while the gateway
keeps serving; a task that dies of anything else shuts the HTTP server down and the
gateway ends with one CRITICAL line naming the task (the process exits non-zero); an order
batch worker that dies fails its request at once rather than leave it waiting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from tests.support.harness import eventually, free_port, fresh_database, reset_bus_and_cache
from tests.support.security import FAST_HASHING, send_signed, signed_payload

from tradeplane.adapters import db
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.config import Settings
from tradeplane.domain.pairs import DEMO_PAIRS, PairConfigError
from tradeplane.gateway import app
from tradeplane.runner import supervised

pytestmark = pytest.mark.integration


@dataclass
class Serving:
    settings: Settings
    url: str
    stop: asyncio.Event
    task: asyncio.Task[None]


@pytest.fixture
async def settings(nats_url: str, pg_url: str, redis_url: str) -> Settings:
    await reset_bus_and_cache(nats_url, redis_url)
    dsn = await fresh_database(pg_url)
    pool = await db.create_pool(dsn, 2)
    try:
        await db.migrate(pool)
        for p in DEMO_PAIRS:
            await db.upsert_pair(pool, p)
    finally:
        await pool.close()
    return Settings(dev_mode=True, nats_url=nats_url, database_url=dsn, redis_url=redis_url,
                    http_port=free_port(), **FAST_HASHING)


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Serving]:
    """The gateway as ``tradeplane gateway`` runs it (``supervised(serve)``), answering."""
    stop = asyncio.Event()
    task = asyncio.create_task(supervised("gateway", app.serve(settings, stop)))
    url = f"http://127.0.0.1:{settings.http_port}"

    async def answers() -> bool:
        assert not task.done(), "the gateway ended while starting"
        try:
            async with httpx.AsyncClient() as http:
                return (await http.get(f"{url}/api/v3/ping")).status_code == 200
        except httpx.TransportError:
            return False

    try:
        await eventually(answers, timeout=30)
        yield Serving(settings, url, stop, task)
    finally:
        stop.set()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 15)


async def _sql(settings: Settings, statement: str) -> None:
    con = await asyncpg.connect(settings.database_url)
    try:
        await con.execute(statement)
    finally:
        await con.close()


async def _true(value: bool) -> bool:
    return value


async def test_a_pair_refresh_that_dies_shuts_the_gateway_down_with_a_critical_line(
    settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app, "PAIR_REFRESH_S", 0.05)
    async with serving(settings) as gw:
        # A row the gateway cannot make a pair of: not PostgreSQL failing, a defect in
        # the data; serving stale pairs forever would be silent.
        await _sql(settings, "UPDATE pairs SET min_qty = 0 WHERE symbol = 'BTCUSDT'")
        with pytest.raises(PairConfigError):
            await asyncio.wait_for(gw.task, 20)
        async with httpx.AsyncClient() as http:
            with pytest.raises(httpx.ConnectError):  # the HTTP server is shut down
                await http.get(f"{gw.url}/api/v3/ping")
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(lines) == 1, lines
    assert lines[0].startswith("gateway stopping: a background task failed: PairConfigError:")
    assert lines[0].endswith("(background task: pair-refresh)")


async def test_a_pair_refresh_whose_database_fails_retries_with_growing_delays_and_serves_on(
    settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.WARNING, logger="tradeplane.gateway")
    monkeypatch.setattr(app, "PAIR_REFRESH_S", 0.1)
    async with serving(settings) as gw:
        await _sql(settings, "ALTER TABLE pairs RENAME TO pairs_away")

        def retries() -> list[str]:
            return [r.getMessage() for r in caplog.records
                    if r.getMessage().startswith("pair refresh failed")]

        await eventually(lambda: _true(len(retries()) >= 3))
        first, second, third = retries()[:3]
        assert "retrying in 0.1s" in first and "retrying in 0.2s" in second
        assert "retrying in 0.4s" in third
        async with httpx.AsyncClient() as http:  # still serving, with the pairs it has
            r = await http.get(f"{gw.url}/api/v3/depth", params={"symbol": "BTCUSDT"})
        assert r.status_code == 200, r.text
        await _sql(settings, "ALTER TABLE pairs_away RENAME TO pairs")
        assert not gw.task.done()
    await asyncio.wait_for(gw.task, 15)  # stopped cleanly: no failure to raise
    assert not [r for r in caplog.records if r.levelno == logging.CRITICAL]


async def test_an_order_batch_worker_that_dies_fails_its_request_and_stops_the_gateway(
    settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = await db.create_pool(settings.database_url, 1)
    try:
        account = await db.create_account(pool, "batcher")
        secret = "s" * 64
        key = await db.create_api_key(
            pool, account, SecretCipher(settings.secret_key.get_secret_value()).encrypt(secret),
            ["read", "trade"])
    finally:
        await pool.close()

    async def one_result_short(_pool: db.Pool, reqs: list[object],
                               _traceparents: object = None) -> list[object]:
        return []  # a defect: which result is whose is unknown

    async with serving(settings) as gw:
        monkeypatch.setattr(db, "place_orders", one_result_short)
        order = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                 "quantity": "0.01", "price": "50000"}
        async with httpx.AsyncClient(base_url=gw.url) as http:
            r = await asyncio.wait_for(send_signed(
                http, "POST", "/api/v3/order", key, signed_payload(order, secret=secret)), 10)
        # Not left waiting; and since the batch's fate is unknown, neither is the order's.
        assert r.status_code == 503 and r.json()["code"] == -1007, r.text
        with pytest.raises(ValueError, match="0 results for a batch of 1"):
            await asyncio.wait_for(gw.task, 20)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(lines) == 1, lines
    assert lines[0].endswith("(background task: order-holds)")
