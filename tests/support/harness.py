"""An in-process tradeplane for integration tests: real NATS, PostgreSQL and Redis, every
service as an asyncio task in the test's loop, the gateway on a real port (uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import nats
import redis.asyncio as aioredis

from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus
from tradeplane.adapters.cache import MarketCache
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.adapters.marketdata import RedisMarketStore
from tradeplane.config import Settings
from tradeplane.demo.client import ApiClient
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.engine.service import Engine
from tradeplane.gateway.app import serve
from tradeplane.marketdata.service import MarketDataService
from tradeplane.services import settle_and_snapshot

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(
    probe: Callable[[], Awaitable[T]], *, timeout: float = 15.0, interval: float = 0.05
) -> T:
    """Poll ``probe`` until it returns a truthy value (or stops raising AssertionError)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = await probe()
            if value:
                return value
        except AssertionError as exc:
            last = exc
        await asyncio.sleep(interval)
    if last:
        raise last
    raise AssertionError(f"condition not met within {timeout}s")


async def fresh_database(pg_url: str) -> str:
    """Create an empty database on the server and return its DSN."""
    name = f"tp_{secrets.token_hex(6)}"
    parts = urlsplit(pg_url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    con = await asyncpg.connect(admin)
    try:
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    return urlunsplit(parts._replace(path=f"/{name}"))


async def reset_bus_and_cache(nats_url: str, redis_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    for s in await js.streams_info():
        await js.delete_stream(s.config.name)
    await nc.close()
    r = aioredis.from_url(redis_url)
    await r.flushall()
    await r.aclose()


@dataclass
class Trader:
    account: int
    api_key: str
    secret: str
    api: ApiClient


@dataclass
class Platform:
    settings: Settings
    pool: db.Pool
    stop: asyncio.Event
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    stops: dict[str, asyncio.Event] = field(default_factory=dict)
    clients: list[ApiClient] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    async def trader(self, name: str, funds: dict[str, str]) -> Trader:
        account = await db.create_account(self.pool, name)
        secret = secrets.token_hex(32)
        cipher = SecretCipher(self.settings.secret_key.get_secret_value())
        key = await db.create_api_key(self.pool, account, cipher.encrypt(secret),
                                      ["read", "trade"])
        for asset, amount in funds.items():
            await db.credit(self.pool, account, asset, to_units(amount), f"{name}:{asset}")
        api = ApiClient(self.base_url, key, secret)
        self.clients.append(api)
        return Trader(account, key, secret, api)

    async def balances(self, account: int) -> dict[str, tuple[int, int]]:
        return {a: (free, locked) for a, free, locked in await db.balances(self.pool, account)}

    # ---------------------------------------------------------------- services
    def start_service(self, name: str, body: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        stop = asyncio.Event()
        self.stops[name] = stop
        self.tasks[name] = asyncio.create_task(body(stop), name=name)

    async def stop_service(self, name: str) -> None:
        self.stops.pop(name).set()
        task = self.tasks.pop(name)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)

    def kill_service(self, name: str) -> None:
        """Cancel a service mid-flight: the in-process stand-in for ``kill -9``."""
        self.stops.pop(name)
        self.tasks.pop(name).cancel()

    def start_engine(self, symbol: str) -> None:
        rules = next(p for p in DEMO_PAIRS if p.symbol == symbol)

        async def body(stop: asyncio.Event) -> None:
            bus = await _bus(self.settings, f"engine-{symbol}")
            try:
                await Engine(bus, rules, self.settings.snapshot_every).run(stop)
            finally:
                await bus.close()

        self.start_service(f"engine-{symbol}", body)

    def start_settlement(self) -> None:
        async def body(stop: asyncio.Event) -> None:
            bus = await _bus(self.settings, "settlement")
            try:
                await settle_and_snapshot(self.settings, bus, self.pool, stop)
            finally:
                await bus.close()

        self.start_service("settlement", body)

    def start_marketdata(self) -> None:
        async def body(stop: asyncio.Event) -> None:
            bus = await _bus(self.settings, "marketdata")
            cache = await MarketCache.connect(self.settings.redis_url)
            try:
                await MarketDataService(bus, RedisMarketStore(self.pool, cache)).run(stop)
            finally:
                await cache.close()
                await bus.close()

        self.start_service("marketdata", body)

    async def start_gateway(self) -> None:
        self.start_service("gateway", lambda stop: serve(self.settings, stop))

        async def up() -> bool:
            try:
                async with httpx.AsyncClient() as c:
                    return (await c.get(f"{self.base_url}/api/v3/ping")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(up, timeout=20)


async def _bus(settings: Settings, name: str) -> Bus:
    return await Bus.connect(settings.nats_url, name=name, dedup_window_s=settings.dedup_window_s)


#: The rate limits default to Binance's (6000 weight a minute per address, 100 orders per
#: 10 s per key). Tests speak from one address and place orders as fast as they can, so
#: they raise them, explicitly: a test about the limits passes its own (these are keyword
#: arguments of :func:`running_platform` like any setting, and win over these).
RAISED_LIMITS: dict[str, int] = {
    "ip_weight_per_minute": 10_000_000, "key_weight_per_minute": 10_000_000,
    "orders_per_10s": 1_000_000, "orders_per_day": 100_000_000,
}


def limits_env(settings: Settings) -> dict[str, str]:
    """The rate limits of ``settings`` as the environment of a service process."""
    return {f"TRADEPLANE_{name.upper()}": str(getattr(settings, name)) for name in RAISED_LIMITS}


@contextlib.asynccontextmanager
async def running_platform(
    nats_url: str, pg_url: str, redis_url: str, *, snapshot_every: int = 50_000,
    **overrides: Any,
) -> AsyncIterator[Platform]:
    await reset_bus_and_cache(nats_url, redis_url)
    dsn = await fresh_database(pg_url)
    settings = Settings(
        dev_mode=True, nats_url=nats_url, database_url=dsn, redis_url=redis_url,
        http_port=free_port(), snapshot_every=snapshot_every, response_timeout_s=15.0,
        **{**RAISED_LIMITS, **overrides},
    )
    pool = await db.create_pool(dsn, 8)
    await db.migrate(pool)
    for p in DEMO_PAIRS:
        await db.upsert_pair(pool, p)
    plat = Platform(settings, pool, asyncio.Event())
    try:
        for p in DEMO_PAIRS:
            plat.start_engine(p.symbol)
        plat.start_settlement()
        plat.start_marketdata()
        await plat.start_gateway()
        yield plat
    finally:
        for c in plat.clients:
            await c.close()
        for name in list(plat.tasks):
            await plat.stop_service(name)
        await pool.close()
