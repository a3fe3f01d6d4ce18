"""Runs the market-data states against the EVENTS stream; writes Redis and the klines table;
publishes the Binance stream payloads on core NATS (``md.<SYMBOL>.<stream>``).

Position beside the writes: after each pulled group, the touched states' snapshots go to
Redis in one transaction with everything the group changed there and with the EVENTS
stream sequence they now include (``md:position``); a restart resumes every state from its
snapshot and consumes from that position + 1. Batches at or below a state's sequence are
skipped, so a replay never applies anything twice. When Redis holds no position (flushed,
new instance) every state starts empty and the stream is replayed from its first message.

A group whose writes fail is retried by the bus with the same messages; the states are
first reloaded from Redis, so the retry re-applies the group instead of skipping it.

Depth diffs leave on timers (100ms and 1000ms). They are taken under the same lock as the
group writes, so a diff is never published before the Redis book it leads to: a client
whose REST snapshot is older than its first diff can always catch up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram

from tradeplane import msgtrace
from tradeplane.domain import codec
from tradeplane.domain.errors import Unavailable
from tradeplane.domain.pairs import PairRules
from tradeplane.marketdata.ports import (
    Candle,
    DepthSnapshot,
    EventMsg,
    MarketBus,
    MarketStore,
    SymbolWrite,
    TopOfBook,
    market_subject,
)
from tradeplane.marketdata.state import (
    ALL_MARKET_STREAMS,
    ALL_MARKETS,
    DEPTH_FAST,
    DEPTH_SLOW,
    Kline,
    MarketState,
    Speed,
    StateError,
    Updates,
)
from tradeplane.supervision import Backoff

log = logging.getLogger("tradeplane.marketdata")
tracer = trace.get_tracer("tradeplane.marketdata")

#: Least time between two applied groups. Depth diffs leave every 100 ms anyway; 20 ms more
#: on trades and tickers buys several times fewer pulls, Redis writes and publishes.
LINGER_S = 0.02
#: The longest wait between two tries of a timer step while its store or bus is down.
TIMER_RETRY_MAX_S = 5.0

CONSUMER = "marketdata"

BATCHES = Counter("tradeplane_marketdata_batches_total", "Engine batches applied", ["symbol"])
DUPLICATES = Counter(
    "tradeplane_marketdata_duplicates_total", "Engine batches skipped as already applied"
)
TRADES = Counter("tradeplane_marketdata_trades_total", "Trades applied", ["symbol"])
MESSAGES = Counter("tradeplane_marketdata_messages_total", "Stream payloads published")
LAST_SEQ = Gauge(
    "tradeplane_marketdata_last_sequence", "Last command sequence applied", ["symbol"]
)
POSITION = Gauge(
    "tradeplane_marketdata_stream_position", "Last EVENTS stream sequence applied and stored"
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
        self, bus: MarketBus, store: MarketStore, *, consumer: str = CONSUMER,
        fast_ms: int = 100, slow_ms: int = 1000, now_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        self.bus = bus
        self.store = store
        self.consumer = consumer
        self.fast_s = fast_ms / 1000
        self.slow_s = slow_ms / 1000
        self.now_ms = now_ms
        self.states: dict[str, MarketState] = {}
        self.position = 0  # last EVENTS stream sequence applied and stored
        self._stale = False  # a group failed half-way: memory is ahead of Redis
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle
    async def run(self, stop: asyncio.Event) -> None:
        """Consume EVENTS and run the depth/ticker timers until ``stop``, all three in one
        task group. The timers retry an unavailable store or bus with backoff (see
        :meth:`_every`) and the consumer redelivers a group whose handler failed; any other
        error in any of them ends them all and ``run`` raises it (the process exits
        non-zero and is restarted; the states resume from the cache).

        Raises:
            ExceptionGroup: a task died (the runner logs each cause, re-raises the first).
            Unavailable: at start (the bus or the store did not answer).
        """
        await self.bus.ensure_events()
        await self.start()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.bus.consume_events(
                self.consumer, self.handle, start_seq=self.position + 1, stop=stop,
                linger=LINGER_S), name="marketdata-consumer")
            tasks.create_task(self._every(self.fast_s, self._fast, stop),
                              name="marketdata-fast-timer")
            tasks.create_task(self._every(self.slow_s, self._slow, stop),
                              name="marketdata-slow-timer")

    async def start(self) -> None:
        """Load the pairs and resume every state from the cache, or start them all empty
        (and from the first event) when the cache has no usable state."""
        async with self._lock:
            await self._load(rebuild_if_unusable=True)

    async def _load(self, *, rebuild_if_unusable: bool) -> None:
        pairs = await self.store.load_pairs()
        position = await self.store.position()
        states: dict[str, MarketState] = {}
        if position is not None:
            for sym, rules in pairs.items():
                try:
                    st = await self._restore(rules)
                except StateError as exc:
                    if not rebuild_if_unusable:
                        raise
                    log.warning("market-data snapshot refused, rebuilding: %s", exc)
                    position = None
                    break
                if st is not None:
                    states[sym] = st
        if position is None:
            if not rebuild_if_unusable:
                raise StateError("the market-data cache was emptied during a recovery")
            log.info("no market-data state in the cache: replaying the event stream")
            states = {}
            await self.store.reset(list(pairs))
            position = 0
        fresh = [MarketState(rules) for sym, rules in pairs.items() if sym not in states]
        states.update({st.symbol: st for st in fresh})
        self.states = states
        self.position = position
        now = self.now_ms()
        await self._commit([(st, st.take_updates(now)) for st in fresh], snapshot=True,
                           position=position)
        self._stale = False
        POSITION.set(position)
        log.info("market-data state loaded", extra={"fields": {
            "symbols": len(states), "resumed": len(states) - len(fresh),
            "position": position}})

    async def _recover(self) -> None:
        """After a failed group, bring memory back to what Redis holds (the retry then
        applies the group again). If Redis was flushed meanwhile, memory is all that is
        left: it is written back whole instead."""
        if await self.store.position() is None:
            await self._reprime()
        else:
            await self._load(rebuild_if_unusable=False)
        self._stale = False

    async def _reprime(self) -> None:
        log.warning("market-data cache was flushed: writing every state back")
        for st in self.states.values():
            st.refresh_documents()
        now = self.now_ms()
        await self._commit([(st, st.take_updates(now)) for st in self.states.values()],
                           snapshot=True, position=self.position)

    async def _restore(self, rules: PairRules) -> MarketState | None:
        """Raises StateError when the stored snapshot cannot be used."""
        loaded = await self.store.load_state(rules.symbol)
        if loaded is None:
            return None
        data, book = loaded
        st = MarketState.restore(rules, data, book.bids, book.asks)
        if book.last_update_id != st.seq:
            raise StateError(
                f"{rules.symbol}: book at {book.last_update_id} but state at {st.seq}"
            )
        return st

    async def _every(
        self, period_s: float, step: Callable[[], Awaitable[None]], stop: asyncio.Event
    ) -> None:
        """Run ``step`` every ``period_s`` seconds until ``stop``.

        Retries with backoff: when Redis, NATS or PostgreSQL did not answer
        (``Unavailable``; events are unaffected, a later flush carries what this one
        missed), the failure is logged once and the next try waits twice as long, at most
        ``TIMER_RETRY_MAX_S``. Any other error is a defect and ends the task (and the
        service: :meth:`run`).
        """
        backoff = Backoff(period_s, max(period_s, TIMER_RETRY_MAX_S))
        delay = period_s
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
                return
            except TimeoutError:
                pass
            try:
                await step()
            except Unavailable as exc:
                delay = backoff.failed()
                log.warning("market-data timer step failed; retrying in %.1fs: %s",
                            delay, exc)
                continue
            backoff.succeeded()
            delay = period_s

    async def _fast(self) -> None:
        await self.flush_depth("100ms")

    async def _slow(self) -> None:
        await self.flush_depth("1000ms")
        await self.tick()

    # ------------------------------------------------------------------ steps
    async def handle(self, msgs: Sequence[EventMsg]) -> None:
        """Apply one pulled group and store it with its stream position.

        Raises when the cache or the database refuses; the bus then retries the same
        messages, and the states are reloaded from the cache before they are applied again.
        """
        if not msgs:
            return
        parent, links = msgtrace.incoming(m.headers for m in msgs)
        if parent is None:
            await self._handle(msgs)
            return
        with tracer.start_as_current_span(
            "marketdata.apply", context=parent, links=links, kind=trace.SpanKind.CONSUMER,
            attributes={"messaging.system": "nats", "messaging.batch.message_count": len(msgs),
                        "messaging.message.sequence": msgs[-1].seq},
        ):
            await self._handle(msgs)

    async def _handle(self, msgs: Sequence[EventMsg]) -> None:
        started = time.perf_counter()
        async with self._lock:
            if self._stale:
                await self._recover()
            try:
                changes = await self._apply(msgs)
                await self._commit(changes, snapshot=True, position=msgs[-1].seq)
            except BaseException:
                self._stale = True
                raise
            self.position = msgs[-1].seq
            POSITION.set(self.position)
            for st, u in changes:
                LAST_SEQ.labels(st.symbol).set(st.seq)
                TRADES.labels(st.symbol).inc(len(u.trades))
        GROUP_SECONDS.observe(time.perf_counter() - started)

    async def _apply(self, msgs: Sequence[EventMsg]) -> list[tuple[MarketState, Updates]]:
        touched: dict[str, MarketState] = {}
        wall = time.time()
        for m in msgs:
            if m.seq <= self.position:
                continue
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
        now = self.now_ms()
        return [(st, st.take_updates(now)) for st in touched.values()]

    async def _new_symbol(self, symbol: str) -> MarketState | None:
        pairs = await self.store.load_pairs()
        if symbol not in pairs:
            return None
        st = MarketState(pairs[symbol])
        self.states[symbol] = st
        return st

    async def flush_depth(self, speed: Speed) -> None:
        """Publish each symbol's pending ``depthUpdate`` of one cadence."""
        stream = DEPTH_FAST if speed == "100ms" else DEPTH_SLOW
        async with self._lock:
            if self._stale:
                return  # memory holds changes Redis does not: never announce them
            now = self.now_ms()
            n = 0
            for st in self.states.values():
                payload = st.take_depth(speed, now)
                if payload is not None:
                    try:
                        await self.bus.publish(market_subject(st.symbol, stream), payload)
                    except BaseException:
                        st.untake_depth(speed)  # the next diff carries it: no gap
                        raise
                    n += 1
                partial = st.take_partial_depth(speed)
                try:
                    for name, doc in partial:
                        await self.bus.publish(market_subject(st.symbol, name), doc)
                except BaseException:
                    st.untake_partial_depth(speed)
                    raise
                n += len(partial)
            MESSAGES.inc(n)

    async def tick(self) -> None:
        """Once a second: candles closed by time, the 24h window, ``@ticker`` pushes.

        Also notices a cache flushed under a running service and writes every state back,
        so that a restart never mistakes a symbol whose snapshot vanished for a new one.
        """
        async with self._lock:
            if self._stale:
                return
            if await self.store.position() is None:
                await self._reprime()
            now = self.now_ms()
            changes = [(st, st.tick(now)) for st in self.states.values()]
            await self._commit([(st, u) for st, u in changes if u], snapshot=False,
                               position=None)
            for stream, everyone in ALL_MARKET_STREAMS.items():
                docs = [p for _, u in changes for name, p in u.messages if name == stream]
                if docs:
                    await self.bus.publish(market_subject(ALL_MARKETS, everyone),
                                           b"[" + b",".join(docs) + b"]")
                    MESSAGES.inc()

    # ------------------------------------------------------------------ storing
    async def _commit(
        self, changes: list[tuple[MarketState, Updates]], *, snapshot: bool,
        position: int | None,
    ) -> None:
        """Klines to PostgreSQL, then everything else to Redis in one transaction, then the
        stream payloads. With ``snapshot`` the states' resume snapshots go along."""
        if not changes and position is None:
            return
        writes: list[SymbolWrite] = []
        for st, u in changes:
            rules = st.rules
            w = SymbolWrite(
                st.symbol, [(k.interval, _candle(rules, k)) for k in u.klines],
                trades=u.trades, agg_trades=u.agg_trades, ticker=u.ticker,
                avg_price=u.avg_price,
            )
            if snapshot:
                bids, asks = st.book_levels()
                w.book = DepthSnapshot(st.seq, st.ts, bids, asks)
                w.state = st.snapshot()
                top = st.top()
                w.top = TopOfBook(st.seq, top.last_price, top.last_qty, top.bid, top.bid_qty,
                            top.ask, top.ask_qty)
            writes.append(w)
        await self.store.write(writes, position=position)
        out = [(market_subject(st.symbol, stream), payload)
               for st, u in changes for stream, payload in u.messages]
        await self.bus.publish_many(out)
        MESSAGES.inc(len(out))


def _candle(rules: PairRules, k: Kline) -> Candle:
    """A candle in units, as stored in PostgreSQL and Redis."""
    tick, lot = rules.tick, rules.lot
    return Candle(
        k.open_time, k.open * tick, k.high * tick, k.low * tick, k.close * tick,
        k.volume * lot, k.quote_volume, k.trades, k.taker_buy_volume * lot,
        k.taker_buy_quote_volume,
    )
