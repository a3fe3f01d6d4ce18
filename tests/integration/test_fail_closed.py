"""The gateway fails closed: a service left out of its wiring (the rate limiter, the kill
switch's controls) stops it from starting, an app that has not started answers nothing
unguarded, and rate limits turned off by settings are an explicit "off" limiter."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from tests.support.harness import fresh_database, reset_bus_and_cache
from tests.support.security import FAST_HASHING, send_signed, signed_payload

from tradeplane.adapters import db
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.config import Settings
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.gateway.app import Wiring, compose, create_app
from tradeplane.gateway.context import Gateway, GatewayWiringError, gateway
from tradeplane.gateway.fastpath import OrderFastPath
from tradeplane.gateway.ratelimit import Limiter, NoRateLimits

pytestmark = pytest.mark.integration


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
                    **FAST_HASHING)


def without(service: str) -> Wiring:
    """The real composition, with one service left out: a wiring mistake."""

    @asynccontextmanager
    async def wiring(s: Settings) -> AsyncIterator[Gateway]:
        async with compose(s) as gw:
            yield dataclasses.replace(gw, **{service: None})

    return wiring


@asynccontextmanager
async def started(s: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    """The gateway as uvicorn serves it, its lifespan run."""
    app = create_app(s)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(OrderFastPath(app, s)), base_url="http://gw",
    ) as http:
        yield http, gateway(app)


async def signed_account(s: Settings, http: httpx.AsyncClient) -> httpx.Response:
    pool = await db.create_pool(s.database_url, 1)
    try:
        account = await db.create_account(pool, "fail-closed")
        secret = secrets.token_hex(32)
        cipher = SecretCipher(s.secret_key.get_secret_value())
        key = await db.create_api_key(pool, account, cipher.encrypt(secret), ["read", "trade"])
    finally:
        await pool.close()
    return await send_signed(http, "GET", "/api/v3/account", key,
                             signed_payload({}, secret=secret))


@pytest.mark.parametrize("service", ["limiter", "controls"])
async def test_a_gateway_wired_without_its_limiter_or_kill_switch_refuses_to_start(
    settings: Settings, service: str,
) -> None:
    app = create_app(settings, wiring=without(service))
    with pytest.raises(GatewayWiringError, match=service):
        async with app.router.lifespan_context(app):
            pytest.fail("the gateway started without its " + service)


async def test_a_gateway_that_has_not_started_serves_nothing() -> None:
    s = Settings(dev_mode=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(OrderFastPath(create_app(s), s)),
                                 base_url="http://gw") as http:
        for method, path in (("GET", "/api/v3/ping"), ("POST", "/api/v3/order")):
            r = await http.request(method, path)
            assert r.status_code == 503 and r.json()["code"] == -1001, (method, path)
            assert r.headers["X-Content-Type-Options"] == "nosniff"


async def test_with_rate_limits_on_a_signed_request_is_charged_to_its_key(
    settings: Settings,
) -> None:
    async with started(settings) as (http, gw):
        assert isinstance(gw.limiter, Limiter)
        r = await signed_account(settings, http)
    assert r.status_code == 200, r.text
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "20"  # /api/v3/account weighs 20


async def test_with_rate_limits_off_by_setting_the_off_limiter_admits_and_counts_nothing(
    settings: Settings,
) -> None:
    off: dict[str, Any] = {"rate_limits": False}
    async with started(settings.model_copy(update=off)) as (http, gw):
        assert isinstance(gw.limiter, NoRateLimits)
        r = await signed_account(settings, http)
        ping = await http.get("/api/v3/ping")
    assert r.status_code == 200, r.text
    assert "X-MBX-USED-WEIGHT-1M" not in r.headers
    assert ping.status_code == 200 and "X-MBX-USED-WEIGHT-1M" not in ping.headers
