"""Runs the market-data states against the EVENTS stream; writes Redis and the klines table;
publishes the Binance stream payloads on core NATS (``md.<SYMBOL>.<stream>``).

Crash-only: after each pulled group the states' snapshots are written to Redis in the same
transaction as everything the group changed there, and only then is the group acked, so
a restart resumes from the snapshot and the redelivered tail is skipped by sequence. When
Redis lost the state (flushed, new instance) the durable consumer is deleted and the whole
event stream is replayed into fresh states.

Depth diffs leave on timers (100ms and 1000ms). They are taken under the same lock as the
group writes, so a diff is never published before the Redis book it leads to: a client
whose REST snapshot is older than its first diff can always catch up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Gauge, Histogram

from tradeplane.adapters import db
from tradeplane.adapters.bus import EVENTS_STREAM, Bus, StoredMsg, market_subject
from tradeplane.adapters.cache import DepthSnapshot, MarketCache, SymbolUpdate, TopOfBook
from tradeplane.adapters.marketstore import KlineRow, upsert_klines
from tradeplane.domain import codec
from tradeplane.domain.pairs import PairRules
from tradeplane.marketdata.state import (
    DEPTH_FAST,
    DEPTH_SLOW,
    Kline,
    MarketState,
    Speed,
    StateError,
    Updates,
)

log = logging.getLogger("tradeplane.marketdata")

DURABLE = "marketdata"

BATCHES = Counter("tradeplane_marketdata_batches_total", "Engine batches applied", ["symbol"])
DUPLICATES = Counter(
    "tradeplane_marketdata_duplicates_total", "Redelivered engine batches skipped"
)
TRADES = Counter("tradeplane_marketdata_trades_total", "Trades applied", ["symbol"])
MESSAGES = Counter("tradeplane_marketdata_messages_total", "Stream payloads published")
LAST_SEQ = Gauge(
    "tradeplane_marketdata_last_sequence", "Last command sequence applied", ["symbol"]
)
LAG = Gauge(
    "tradeplane_marketdata_lag_seconds",
    "Wall time minus engine time of the last applied batch", ["symbol"],
)
GROUP_SECONDS = Histogram(
    "tradeplane_marketdata_group_seconds", "Apply + store + publish time of one pulled group",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0),
)


def _wall_ms() -> int:
    return int(time.time() * 1000)


class MarketDataService:
    """One process for all symbols. ``run(stop)`` until ``stop`` is set; the public steps
    (``start``, ``handle``, ``flush_depth``, ``tick``) are what ``run`` drives."""

    def __init__(
        self, bus: Bus, pool: db.Pool, cache: MarketCache, *, durable: str = DURABLE,
        fast_ms: int = 100, slow_ms: int = 1000, now_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        self.bus = bus
        self.pool = pool
        self.cache = cache
        self.durable = durable
        self.fast_s = fast_ms / 1000
        self.slow_s = slow_ms / 1000
        self.now_ms = now_ms
        self.states: dict[str, MarketState] = {}
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle
    async def run(self, stop: asyncio.Event) -> None:
        await self.bus.ensure_events()
        await self.start()
        tasks = [
            asyncio.create_task(self.bus.consume_events(self.durable, self.handle, stop=stop)),
            asyncio.create_task(self._every(self.fast_s, self._fast, stop)),
            asyncio.create_task(self._every(self.slow_s, self._slow, stop)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()  # crash-only: a failed part stops the whole service
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def start(self) -> None:
        """Load the pairs and resume every state from the cache (or rebuild them all)."""
        pairs = await db.load_pairs(self.pool)
        rebuild = not await self.cache.primed()
        states: dict[str, MarketState] = {}
        if not rebuild:
            for sym, rules in pairs.items():
                try:
                    st = await self._restore(rules)
                except StateError as exc:
                    log.warning("market-data snapshot refused, rebuilding: %s", exc)
                    rebuild = True
                    break
                if st is not None:
                    states[sym] = st
        if rebuild:
            log.info("market-data cache empty or unusable: replaying the event stream")
            states = {}
            await self.cache.reset(list(pairs))
            await self._rewind_consumer()
        fresh = [MarketState(rules) for sym, rules in pairs.items() if sym not in states]
        states.update({st.symbol: st for st in fresh})
        self.states = states
        now = self.now_ms()
        await self._commit([(st, st.take_updates(now)) for st in fresh], snapshot=True)
        log.info("marketdata started", extra={"fields": {
            "symbols": len(states), "resumed": len(states) - len(fresh), "rebuild": rebuild}})

    async def _restore(self, rules: PairRules) -> MarketState | None:
        """Raises StateError when the stored snapshot cannot be used."""
        loaded = await self.cache.load_state(rules.symbol)
        if loaded is None:
            return None
        data, book = loaded
        st = MarketState.restore(rules, data, book.bids, book.asks)
        if book.last_update_id != st.seq:
            raise StateError(
                f"{rules.symbol}: book at {book.last_update_id} but state at {st.seq}"
            )
        return st

    async def _rewind_consumer(self) -> None:
        # The bus adapter has no "reset consumer" yet; deleting the durable makes the
        # next consume_events() create it again from the first message of the stream.
        try:
            await self.bus.js.delete_consumer(EVENTS_STREAM, self.durable)
        except Exception as exc:  # not found (first start) is the usual case
            log.debug("no consumer to rewind: %s", exc)

    async def _every(
        self, period_s: float, step: Callable[[], Awaitable[None]], stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=period_s)
            except TimeoutError:
                await step()

    async def _fast(self) -> None:
        await self.flush_depth("100ms")

    async def _slow(self) -> None:
        await self.flush_depth("1000ms")
        await self.tick()

    # ------------------------------------------------------------------ steps
    async def handle(self, msgs: list[StoredMsg]) -> None:
        """Apply one pulled group; idempotent (batches at or below a state's sequence are
        skipped). Raises when the cache or the database refuses: the group stays unacked."""
        started = time.perf_counter()
        async with self._lock:
            touched: dict[str, MarketState] = {}
            wall = time.time()
            for m in msgs:
                batch = codec.decode_batch(m.data)
                st = self.states.get(batch.symbol) or await self._new_symbol(batch.symbol)
                if st is None:
                    log.error("event batch for unknown symbol %s skipped", batch.symbol)
                    continue
                if not st.apply(batch):
                    DUPLICATES.inc()
                    continue
                touched[st.symbol] = st
                BATCHES.labels(st.symbol).inc()
                LAG.labels(st.symbol).set(wall - batch.ts / 1000)
            if not touched:
                return
            now = self.now_ms()
            changes = [(st, st.take_updates(now)) for st in touched.values()]
            await self._commit(changes, snapshot=True)
            for st, u in changes:
                LAST_SEQ.labels(st.symbol).set(st.seq)
                TRADES.labels(st.symbol).inc(len(u.trades))
        GROUP_SECONDS.observe(time.perf_counter() - started)

    async def _new_symbol(self, symbol: str) -> MarketState | None:
        pairs = await db.load_pairs(self.pool)
        if symbol not in pairs:
            return None
        st = MarketState(pairs[symbol])
        self.states[symbol] = st
        return st

    async def flush_depth(self, speed: Speed) -> None:
        """Publish each symbol's pending ``depthUpdate`` of one cadence."""
        stream = DEPTH_FAST if speed == "100ms" else DEPTH_SLOW
        async with self._lock:
            now = self.now_ms()
            n = 0
            for st in self.states.values():
                payload = st.take_depth(speed, now)
                if payload is not None:
                    await self.bus.publish(market_subject(st.symbol, stream), payload)
                    n += 1
            MESSAGES.inc(n)

    async def tick(self) -> None:
        """Once a second: candles closed by time, the 24h window, ``@ticker`` pushes.

        Also notices a cache flushed under a running service and writes every state back,
        so a restart never mistakes a symbol whose snapshot vanished for a new one.
        """
        async with self._lock:
            now = self.now_ms()
            reprime = not await self.cache.primed()
            if reprime:
                log.warning("market-data cache was flushed: writing every state back")
                for st in self.states.values():
                    st.refresh_documents()
            changes = [(st, st.tick(now)) for st in self.states.values()]
            await self._commit(
                [(st, u) for st, u in changes if reprime or u], snapshot=reprime
            )

    # ------------------------------------------------------------------ storing
    async def _commit(
        self, changes: list[tuple[MarketState, Updates]], *, snapshot: bool
    ) -> None:
        """Klines to PostgreSQL, then everything else to Redis in one transaction, then the
        stream payloads. With ``snapshot`` the states' resume snapshots go along."""
        if not changes:
            return
        rows: list[tuple[str, str, KlineRow]] = []
        writes: list[SymbolUpdate] = []
        for st, u in changes:
            rules = st.rules
            current: dict[str, KlineRow] = {}
            for k in u.klines:  # oldest first: the last per interval is the current one
                row = _kline_row(rules, k)
                rows.append((st.symbol, k.interval, row))
                current[k.interval] = row
            w = SymbolUpdate(
                st.symbol, trades=u.trades, agg_trades=u.agg_trades, ticker=u.ticker,
                avg_price=u.avg_price, klines=current,
            )
            if snapshot:
                bids, asks = st.book_levels()
                w.book = DepthSnapshot(st.seq, st.ts, bids, asks)
                w.state = st.snapshot()
                top = st.top()
                w.top = TopOfBook(st.seq, top.last_price, top.last_qty, top.bid, top.bid_qty,
                                  top.ask, top.ask_qty)
            writes.append(w)
        await upsert_klines(self.pool, rows)
        await self.cache.write(writes)
        n = 0
        publish = self.bus.publish
        for st, u in changes:
            sym = st.symbol
            for stream, payload in u.messages:
                await publish(market_subject(sym, stream), payload)
            n += len(u.messages)
        MESSAGES.inc(n)


def _kline_row(rules: PairRules, k: Kline) -> KlineRow:
    """A candle in units, as stored in PostgreSQL and Redis."""
    tick, lot = rules.tick, rules.lot
    return KlineRow(
        k.open_time, k.open * tick, k.high * tick, k.low * tick, k.close * tick,
        k.volume * lot, k.quote_volume, k.trades, k.taker_buy_volume * lot,
        k.taker_buy_quote_volume,
    )
