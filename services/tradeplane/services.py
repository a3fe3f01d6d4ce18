"""Wiring of each long-running process: adapters built from settings, then the service."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus
from tradeplane.adapters.cache import MarketCache
from tradeplane.adapters.convert_db import (
    BusConvertNotifier,
    CacheBooks,
    CacheRates,
    CacheReference,
    PgConvertStore,
    PgHedgeStore,
)
from tradeplane.adapters.escrow_db import BusEscrowNotifier, PgEscrowStore
from tradeplane.adapters.hedge_queue import HedgeJobs
from tradeplane.adapters.marketdata import RedisMarketStore
from tradeplane.adapters.orderpath import OrderPath
from tradeplane.adapters.portfolio_db import PgSnapshotStore
from tradeplane.adapters.settlement import NatsSettlementBus, PgSettlementStore
from tradeplane.config import Settings
from tradeplane.domain.errors import ConfigurationError, Unavailable
from tradeplane.domain.pairs import PairRules, normalize_symbol, rules_from_spec
from tradeplane.engine.service import Engine
from tradeplane.marketdata.service import MarketDataService
from tradeplane.rates.service import RatesService
from tradeplane.settlement.service import RELAY_AGE_MS, RELAY_INTERVAL_S, Settler
from tradeplane.supervision import loop_watchdog
from tradeplane.usecases.convert import Convert
from tradeplane.usecases.escrow import Escrow, EscrowTimer
from tradeplane.usecases.hedge import HedgePlacement, Hedger, HedgeSettings, PlaceThroughOrders
from tradeplane.usecases.orders import Orders
from tradeplane.usecases.portfolio import Portfolio, SnapshotWorker

if TYPE_CHECKING:
    from tradeplane.hedger.service import HedgeWorker


class ConfigError(ConfigurationError):
    """The process cannot start with this configuration."""


async def _bus(settings: Settings, name: str) -> Bus:
    return await Bus.connect(settings.nats_url, name=name, replicas=settings.stream_replicas,
                             dedup_window_s=settings.dedup_window_s)


async def run_gateway(settings: Settings, stop: asyncio.Event) -> None:
    # Imported here, not at the top: the engines, settlement and market data need not
    # load the web stack, which took most of an engine's restart after a kill (tradeplane
    # bench recovery).
    from tradeplane.gateway.app import serve

    await serve(settings, stop)


async def run_matching(
    settings: Settings, symbol: str, stop: asyncio.Event, rules_file: str | None = None,
    *, standby: bool = False,
) -> None:
    """Run one symbol's engine. With ``rules_file`` (a TradingPair spec as JSON, as the
    operator mounts it) the pair is registered or updated from it first. With ``standby``
    it is one of several replicas that write only while holding the symbol's lease
    (docs/architecture.md, "Engine clock and hot standby").

    Raises:
        ConfigError: the symbol is not a configured pair, or the rules file is invalid.
    """
    symbol = normalize_symbol(symbol)
    rules: PairRules | None = None
    if rules_file:
        try:
            text = await asyncio.to_thread(Path(rules_file).read_text)
            rules = rules_from_spec(json.loads(text))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"pair rules {rules_file}: {exc}") from exc
        if rules.symbol != symbol:
            raise ConfigError(f"rules file is for {rules.symbol}, not {symbol}")
    pool = await db.create_pool(settings.database_url, 2)
    try:
        if rules is not None:
            await db.upsert_pair(pool, rules)
        pairs = await db.load_pairs(pool)
    finally:
        await pool.close()
    if symbol not in pairs:
        raise ConfigError(f"unknown symbol {symbol}; configured: {', '.join(sorted(pairs))}")
    bus = await _bus(settings, f"engine-{symbol}")
    try:
        engine = Engine(bus, rules or pairs[symbol], settings.snapshot_every,
                        enforce_trading=rules is not None, lease=standby,
                        book=settings.book)
        async with loop_watchdog(f"engine {symbol}"):
            await engine.run(stop)
    finally:
        await bus.close()


def settler(bus: Bus, pool: db.Pool, *, invariant_check_s: float = 60.0,
            relay_age_ms: int = RELAY_AGE_MS,
            relay_interval_s: float = RELAY_INTERVAL_S) -> Settler:
    """The settler over NATS and PostgreSQL: its ports' adapters built here, where mypy
    checks that they fit the Protocols (``settlement.ports``) the settler declares."""
    return Settler(NatsSettlementBus(bus), PgSettlementStore(pool),
                   invariant_check_s=invariant_check_s, relay_age_ms=relay_age_ms,
                   relay_interval_s=relay_interval_s)


def snapshot_worker(pool: db.Pool, settings: Settings) -> SnapshotWorker:
    """The account snapshot worker over PostgreSQL (the portfolio, ``accountSnapshot``)."""
    portfolio = Portfolio(PgSnapshotStore(pool), quote=settings.portfolio_quote,
                          interval_ms=settings.snapshot_interval_s * 1000)
    return SnapshotWorker(portfolio, lambda: int(time.time() * 1000))


def escrow_timer(pool: db.Pool, bus: Bus, settings: Settings) -> EscrowTimer:
    """The escrow timer over PostgreSQL (deals) and NATS (the parties' user streams)."""
    return EscrowTimer(Escrow(PgEscrowStore(pool), BusEscrowNotifier(bus)),
                       lambda: int(time.time() * 1000), every_s=settings.escrow_timer_s)


async def settle_and_snapshot(settings: Settings, bus: Bus, pool: db.Pool,
                              stop: asyncio.Event) -> None:
    """The settlement process's work: the settler, and beside it the account snapshot
    worker and the escrow timer. All read the ledger settlement owns, and only
    PostgreSQL; the workers need no process, deployment or restart policy of their own.
    A defect in any ends all (the process exits and is restarted); the workers retry
    database outages themselves.

    Raises:
        ExceptionGroup: the settler or a worker died.
    """
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(settler(bus, pool, invariant_check_s=settings.invariant_check_s,
                                  relay_age_ms=settings.relay_age_ms).run(stop),
                          name="settler")
        tasks.create_task(snapshot_worker(pool, settings).run(stop),
                          name="account-snapshots")
        tasks.create_task(escrow_timer(pool, bus, settings).run(stop), name="escrow-timer")


async def run_settlement(settings: Settings, stop: asyncio.Event) -> None:
    pool = await db.create_pool(settings.database_url, settings.db_pool_size)
    bus = await _bus(settings, "settlement")
    try:
        await settle_and_snapshot(settings, bus, pool, stop)
    finally:
        await bus.close()
        await pool.close()


async def run_marketdata(settings: Settings, stop: asyncio.Event) -> None:
    pool = await db.create_pool(settings.database_url, 4)
    bus = await _bus(settings, "marketdata")
    cache = await MarketCache.connect(settings.redis_url)
    try:
        await MarketDataService(bus, RedisMarketStore(pool, cache)).run(stop)
    finally:
        await cache.close()
        await bus.close()
        await pool.close()


def rates_service(pool: db.Pool, cache: MarketCache, settings: Settings) -> RatesService:
    """The rates service over PostgreSQL (pairs, the desk) and Redis (books, rates)."""
    from tradeplane.gateway.app import convert_settings  # see run_gateway

    holder: dict[str, Mapping[str, PairRules]] = {"pairs": {}}
    store = PgConvertStore(pool)
    convert = Convert(CacheBooks(cache), store, lambda: holder["pairs"],
                      convert_settings(settings))
    return RatesService(convert, CacheRates(cache), lambda: db.load_pairs(pool), holder,
                        settings.convert_rates_every_s, purge=store)


async def run_rates(settings: Settings, stop: asyncio.Event) -> None:
    pool = await db.create_pool(settings.database_url, 2)
    cache = await MarketCache.connect(settings.redis_url)
    try:
        await rates_service(pool, cache, settings).run(stop)
    finally:
        await cache.close()
        await pool.close()


def hedge_settings(settings: Settings) -> HedgeSettings:
    """The hedge use case's settings from the process's."""
    return HedgeSettings(slippage_bps=settings.hedge_slippage_bps,
                         max_deliveries=settings.hedge_max_deliveries,
                         backoff_s=settings.hedge_backoff_s,
                         backoff_max_s=settings.hedge_backoff_max_s)


@contextlib.asynccontextmanager
async def hedger_parts(
    settings: Settings, pool: db.Pool, bus: Bus, cache: MarketCache,
    wrap: Callable[[HedgePlacement], HedgePlacement] | None = None,
) -> AsyncIterator[HedgeWorker]:
    """The hedger over PostgreSQL, NATS and Redis: the desk's orders go through the order
    use cases on an order path of its own, answered once settlement's watermark passes
    them (as the gateway's). ``wrap`` decorates the placement (tests inject failures
    there)."""
    from tradeplane.gateway.watermarks import Watermarks  # see run_gateway
    from tradeplane.hedger.service import HedgeWorker

    orderpath = OrderPath(pool, bus)
    marks = Watermarks(lambda: db.settlement_cursors(pool))
    unsubscribe = await bus.subscribe("settled.*", marks.on_settled)
    try:
        for sym in await db.load_pairs(pool):
            await bus.ensure_symbol(sym)
        orders = Orders(orderpath, orderpath, marks, settings.response_timeout_s)
        placement: HedgePlacement = PlaceThroughOrders(orders, CacheReference(cache))
        if wrap is not None:
            placement = wrap(placement)
        jobs = HedgeJobs(bus, max_deliveries=settings.hedge_max_deliveries,
                         ack_wait_s=settings.hedge_ack_wait_s)
        pairs: dict[str, Mapping[str, PairRules]] = {"now": await db.load_pairs(pool)}

        async def load_pairs() -> Mapping[str, PairRules]:
            pairs["now"] = await db.load_pairs(pool)
            return pairs["now"]

        venue = None
        if settings.convert_venue:  # ccxt only then: it is the optional extra ``venues``
            from tradeplane.adapters.venues import venue_from_setting

            venue = venue_from_setting(settings.convert_venue,
                                       settings.convert_venue_api_key,
                                       settings.convert_venue_secret.get_secret_value(),
                                       lambda: pairs["now"])
        hedger = Hedger(PgHedgeStore(pool), placement, load_pairs,
                        BusConvertNotifier(bus), hedge_settings(settings),
                        venues={venue.name: venue} if venue else None)
        try:
            yield HedgeWorker(hedger, jobs, ack_wait_s=settings.hedge_ack_wait_s)
        finally:
            await jobs.close()
            if venue is not None:
                await venue.close()
    finally:
        with contextlib.suppress(Unavailable):
            await unsubscribe()
        await orderpath.close()


async def run_hedger(settings: Settings, stop: asyncio.Event) -> None:
    pool = await db.create_pool(settings.database_url, 4)
    bus = await _bus(settings, "hedger")
    cache = await MarketCache.connect(settings.redis_url)
    try:
        async with hedger_parts(settings, pool, bus, cache) as worker:
            await worker.run(stop)
    finally:
        await cache.close()
        await bus.close()
        await pool.close()
