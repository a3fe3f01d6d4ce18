"""The gateway ASGI application and its process entry point."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from tradeplane import stagestamps
from tradeplane.adapters import db
from tradeplane.adapters.accountstatus import PgAccountStatus
from tradeplane.adapters.admin_store import PgAccountStore
from tradeplane.adapters.bus import Bus, BusError
from tradeplane.adapters.cache import MarketCache
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.adapters.convert_db import (
    BusConvertNotifier,
    CacheBooks,
    CacheRates,
    PgConvertStore,
    PgHedgeStore,
)
from tradeplane.adapters.custody import BusWatchers, PgCustodyStore
from tradeplane.adapters.escrow_db import BusEscrowNotifier, PgEscrowStore
from tradeplane.adapters.health import PlatformHealthReads
from tradeplane.adapters.hedge_queue import HedgeJobs
from tradeplane.adapters.listenkeys import ListenKeyStore
from tradeplane.adapters.marketdata import RedisMarketReads
from tradeplane.adapters.orderpath import OrderPath
from tradeplane.adapters.portfolio_db import PgSnapshotStore
from tradeplane.config import Settings
from tradeplane.gateway import (
    admin,
    apidoc,
    convert,
    escrow,
    market,
    portfolio,
    public,
    sapi,
    streams,
    trading,
    ui,
    users,
    userstream,
    wallet,
    wsapi,
)
from tradeplane.gateway.auth import KeyCache
from tradeplane.gateway.context import Gateway, GatewayContext, install
from tradeplane.gateway.errors import install_handlers
from tradeplane.gateway.fastpath import OrderFastPath
from tradeplane.gateway.references import ReferencePrices
from tradeplane.gateway.security import start_security
from tradeplane.gateway.watermarks import Watermarks
from tradeplane.supervision import BackgroundTasks, Backoff, OnFailure
from tradeplane.usecases.convert import BookSource, Convert, ConvertSettings
from tradeplane.usecases.custody import CustodyCases
from tradeplane.usecases.escrow import Escrow
from tradeplane.usecases.health import Health
from tradeplane.usecases.portfolio import Portfolio

log = logging.getLogger("tradeplane.gateway")


#: The answer to a body that is not a JSON object at all (form-encoded, empty, broken).
NOT_JSON_BODY = ("The request body must be a JSON object (Content-Type: application/json); "
                 "this endpoint takes no form or query parameters.")


async def _validation_error(_r: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    loc = tuple(first.get("loc", ()))
    where = ".".join(str(x) for x in loc if x != "body")
    if loc[:1] == ("body",) and (not where or first.get("type") == "json_invalid"):
        # The body as a whole is wrong (a form, nothing, broken JSON): no parameter to name.
        return JSONResponse({"code": -1102, "msg": NOT_JSON_BODY}, status_code=400)
    return JSONResponse(
        {"code": -1102, "msg": f"Mandatory parameter '{where}' was not sent or was malformed: "
                               f"{first.get('msg', 'invalid')}"},
        status_code=400,
    )


async def _http_error(_r: Request, exc: Exception) -> JSONResponse:
    """Routing refusals (no such path, method not allowed) in Binance's format too: clients
    read ``{"code", "msg"}``, and ccxt takes FastAPI's ``{"detail"}`` for an outage."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in (404, 405):
        code, msg = -1020, "This operation is not supported."
    else:
        code, msg = -1000, str(exc.detail)
    return JSONResponse({"code": code, "msg": msg}, status_code=exc.status_code,
                        headers=exc.headers)


def verdict_stale_ms(settings: Settings) -> int:
    """How old the last ledger verdict may be before the health view calls it unknown:
    three checks' worth (settlement checks every ``invariant_check_s``), at least 3 min."""
    return int(max(3 * settings.invariant_check_s, 180.0) * 1000)


#: Composes the gateway's services from its settings, and tears them down on exit.
Wiring = Callable[[Settings], AbstractAsyncContextManager[Gateway]]


@asynccontextmanager
async def compose(settings: Settings) -> AsyncIterator[Gateway]:
    """The gateway's composition root: connect the adapters, build every service the
    routes use, start the background work (supervised: ``Gateway.background``, see
    :func:`serve`); close it all on exit.

    Raises:
        GatewayWiringError: a service is missing (see :class:`Gateway`).
    """
    async with contextlib.AsyncExitStack() as stack:  # a start-up error closes what opened
        background = BackgroundTasks()
        stack.push_async_callback(background.close)  # a start-up error stops what started
        pool = await db.create_pool(settings.database_url, settings.db_pool_size)
        stack.push_async_callback(pool.close)
        bus = await Bus.connect(settings.nats_url, name="gateway",
                                replicas=settings.stream_replicas,
                                dedup_window_s=settings.dedup_window_s)
        stack.push_async_callback(bus.close)
        cache = await MarketCache.connect(settings.redis_url)
        stack.push_async_callback(cache.close)
        custody = CustodyCases(PgCustodyStore(pool),
                               BusWatchers(bus, wallet.WATCHER_TIMEOUT_S))
        c = GatewayContext(
            settings, pool, bus, ReferencePrices(cache), await db.load_pairs(pool),
            custody=custody,
            portfolio=Portfolio(PgSnapshotStore(pool), quote=settings.portfolio_quote,
                                interval_ms=settings.snapshot_interval_s * 1000),
            health=Health(PlatformHealthReads(bus, pool, cache),
                          verdict_stale_ms=verdict_stale_ms(settings)))
        for sym in c.pairs:
            await bus.ensure_symbol(sym)
        hedge_jobs = HedgeJobs(bus)
        await hedge_jobs.ensure()
        marks = Watermarks(lambda: db.settlement_cursors(pool))
        stack.push_async_callback(await bus.subscribe("settled.*", marks.on_settled))
        keys = KeyCache(SecretCipher(settings.secret_key.get_secret_value()),
                        PgAccountStore(pool))
        listen_keys = await ListenKeyStore.connect(settings.redis_url)
        stack.push_async_callback(listen_keys.close)
        hub = streams.StreamHub(bus)
        stack.push_async_callback(hub.close)
        orderpath = OrderPath(pool, bus, on_failure=background.fail)
        stack.push_async_callback(orderpath.close)
        security = await start_security(settings, c, keys, background)
        stack.push_async_callback(security.close)
        user_streams = userstream.UserStreams(listen_keys, keys, pool,
                                              ttl_s=settings.listen_key_ttl_s,
                                              accounts=PgAccountStatus(pool))
        security.controls.user_streams = user_streams
        background.start("pair-refresh", _refresh_pairs(c, PAIR_REFRESH_S))
        await c.references.refresh(list(c.pairs))
        background.start("reference-prices", c.references.run(lambda: c.pairs))
        # First on exit: the tasks stop before what they use closes (a task's error then
        # is not a failure).
        stack.push_async_callback(background.close)
        yield Gateway(ctx=c, keys=keys, limiter=security.limiter, controls=security.controls,
                      credentials=security.credentials, users=security.users,
                      user_streams=user_streams, watermarks=marks, orderpath=orderpath,
                      stream_hub=hub, market=RedisMarketReads(pool, cache),
                      background=background,
                      convert=Convert(CacheBooks(cache), PgConvertStore(pool),
                                      lambda: c.pairs, convert_settings(settings),
                                      published=CacheRates(cache),
                                      notifier=BusConvertNotifier(bus),
                                      venues=await _convert_venues(settings, c, stack),
                                      hedges=hedge_jobs, outbox=PgHedgeStore(pool)),
                      escrow=Escrow(PgEscrowStore(pool), BusEscrowNotifier(bus)))


async def _convert_venues(settings: Settings, c: GatewayContext,
                          stack: contextlib.AsyncExitStack) -> dict[str, BookSource]:
    """The external venue the Convert router quotes through too (none by default)."""
    if not settings.convert_venue:
        return {}
    # ccxt only where a venue is configured: it is the optional extra ``venues``.
    from tradeplane.adapters.venues import venue_from_setting

    venue = venue_from_setting(settings.convert_venue, settings.convert_venue_api_key,
                               settings.convert_venue_secret.get_secret_value(),
                               lambda: c.pairs)
    if venue is None:
        return {}
    stack.push_async_callback(venue.close)
    return {venue.name: venue}


def convert_settings(settings: Settings) -> ConvertSettings:
    """The Convert router's settings from the process's."""
    bridges = tuple(b.strip().upper() for b in settings.convert_bridges.split(",")
                    if b.strip())
    return ConvertSettings(bridges=bridges, spread_bps=settings.convert_spread_bps,
                           max_book_age_ms=int(settings.convert_max_book_age_s * 1000))


def create_app(settings: Settings, *, wiring: Wiring = compose,
               on_background_failure: OnFailure | None = None) -> FastAPI:
    """The gateway's ASGI app; its lifespan composes the services with ``wiring`` and
    refuses to start (raises) when one is missing. ``on_background_failure`` is told of
    the first background task that dies (:func:`serve` stops the server)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with wiring(settings) as gw:
            install(app, gw)
            if on_background_failure is not None:
                gw.background.on_failure(on_background_failure)
            yield

    app = FastAPI(
        title="tradeplane API",
        version="0.1.0",
        description="Binance-spot-compatible REST API of tradeplane.",
        lifespan=lifespan,
        # The reference is ours (apidoc.py): Swagger UI from vendored files, never a CDN.
        docs_url=None, redoc_url=None,
        # FastAPI's built-in telemetry costs ~half the CPU of an order request: request
        # spans only when traces are exported; metrics are ours (/metrics), logs are JSON.
        telemetry={"tracing": bool(settings.otlp_endpoint), "metrics": False, "logs": False,
                   "operation_spans": False},
    )
    install_handlers(app)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # convert.ws_router before streams.router: /ws/convert/<orderId> is not a market stream.
    for r in (public.router, market.router, trading.router, userstream.router, admin.router,
              convert.ws_router, streams.router, wallet.router, sapi.router, portfolio.router,
              wsapi.router, convert.router, escrow.router, escrow.admin_router):
        app.include_router(r)
    app.include_router(users.router)
    app.include_router(ui.router)  # the trading UI's pages and browser sessions
    apidoc.install(app)  # /openapi.json completed, /docs, /static

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


#: Seconds between two reloads of the pairs; the most a failing reload waits to retry.
PAIR_REFRESH_S = 5.0
PAIR_REFRESH_MAX_S = 30.0


async def _refresh_pairs(c: GatewayContext, every: float) -> None:
    """New pairs and trading-state changes reach the gateway within seconds.

    Retries with backoff: while PostgreSQL or NATS fails (``DatabaseError``,
    ``BusError``) the gateway keeps serving with the pairs it has, logging each failure
    once and trying again after ``every`` seconds, then twice as long each time, at most
    ``PAIR_REFRESH_MAX_S``. Any other error is a defect and ends the task, which stops the
    gateway (:func:`serve`): stale pairs served forever would be silent.
    """
    backoff = Backoff(every, max(every, PAIR_REFRESH_MAX_S))
    delay = every
    while True:
        await asyncio.sleep(delay)
        try:
            pairs = await db.load_pairs(c.pool)
            for sym in set(pairs) - set(c.pairs):
                await c.bus.ensure_symbol(sym)
        except (db.DatabaseError, BusError) as exc:  # keep serving with the pairs we have
            delay = backoff.failed()
            log.warning("pair refresh failed; retrying in %.1fs: %s", delay, exc)
            continue
        c.pairs = pairs
        backoff.succeeded()
        delay = every


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Serve the gateway until ``stop`` (or SIGINT/SIGTERM, which uvicorn handles).

    Its background tasks (pair refresh, reference prices, the rate-limit syncer, the
    kill-switch poll, the order path's batch workers) run supervised for the app's
    lifetime: the first that dies makes the server shut down as on SIGTERM, and ``serve``
    then raises its error.

    Raises:
        ExceptionGroup: a background task died (``runner.supervised`` logs it on one
            CRITICAL line; the process exits non-zero and is restarted).
    """
    failures: list[BaseException] = []

    def background_failed(exc: BaseException) -> None:
        failures.append(exc)
        server.should_exit = True

    config = uvicorn.Config(
        OrderFastPath(create_app(settings, on_background_failure=background_failed),
                      settings),
        host=settings.http_host, port=settings.http_port,
        log_config=None, access_log=False, lifespan="on", ws_ping_interval=20,
        # A larger client frame is refused (1009) before it is read (wslimits.py).
        ws_max_size=settings.ws_max_message_bytes,
        # Idle connections stay open for minutes, as clients pool them (config.py says why).
        timeout_keep_alive=settings.http_keep_alive_s,
        # X-Forwarded-* is the guard's to read, from configured proxies only (security.py);
        # uvicorn would believe it from 127.0.0.1.
        proxy_headers=False,
    )
    stagestamps.enable(settings.stage_stamps)
    server = uvicorn.Server(config)
    # uvicorn handles SIGINT/SIGTERM itself (graceful drain); ``stop`` covers the rest.
    task = asyncio.create_task(server.serve())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopper.cancel()
    await task
    if failures:
        raise BaseExceptionGroup("a gateway background task failed", failures)
