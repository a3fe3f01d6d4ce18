"""The hedger's loop: take a job from the work queue, hedge it (``usecases.hedge``), and
acknowledge it; a job that cannot finish now is redelivered after an exponentially growing
delay (``nak`` with a delay: 1 s, 2 s, 4 s ... at most ``backoff_max_s``), and after
``max_deliveries`` it goes to the dead-letter stream, its conversion's routing becomes
FAILED, and ``tradeplane_convert_hedge_jobs_total{outcome="dead_lettered"}`` counts it
(the alert ``TradeplaneConvertHedgeDeadLettered`` fires on it).

While a job is worked on, the delivery is kept alive (``in_progress`` every third of the
queue's ``ack_wait``); a worker killed mid-job leaves it unacknowledged, and the queue
gives it to the next worker once ``ack_wait`` has passed (the hedge's idempotency by
client order id makes that safe). The same loop relays, every ``relay_every_s``, the
jobs whose post-commit enqueue did not happen (the outbox rows older than
``relay_age_ms``), and measures the hedge lag (the oldest conversion not yet hedged).
While the queue or the database fails it retries with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram

from tradeplane.domain.errors import Unavailable
from tradeplane.supervision import Backoff
from tradeplane.usecases.convert import HedgeQueue
from tradeplane.usecases.hedge import HedgeIncomplete, HedgeOutcome, Hedger, backoff_delay

log = logging.getLogger("tradeplane.hedger")

JOBS = Counter("tradeplane_convert_hedge_jobs_total",
               "Hedge job deliveries by outcome: hedged, already_final, unknown, retried, "
               "dead_lettered", ["outcome"])
for _outcome in ("hedged", "already_final", "unknown", "retried", "dead_lettered"):
    JOBS.labels(_outcome)  # every outcome exported from the start (rate() and alerts)
DELIVERIES = Counter("tradeplane_convert_hedge_deliveries_total",
                     "Hedge job deliveries taken (first deliveries and redeliveries)")
REDELIVERIES = Counter("tradeplane_convert_hedge_redeliveries_total",
                       "Hedge job deliveries that were not a job's first")
LAG = Histogram("tradeplane_convert_hedge_lag_seconds",
                "From a conversion's acceptance to the end of its hedge (hedged or given up)",
                buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))
RELAYED = Counter("tradeplane_convert_hedge_relayed_total",
                  "Hedge jobs enqueued by the relay (their post-commit enqueue failed)")
OLDEST = Gauge("tradeplane_convert_hedge_oldest_open_seconds",
               "Age of the oldest conversion whose hedge has not ended (0: none); -1 = "
               "unknown (the database cannot be read)")
OLDEST.set(-1)
UP = Gauge("tradeplane_convert_hedger_up",
           "1 while the hedger reaches its queue and database, 0 while it retries")


class Delivery(Protocol):
    order_id: int  # 0: unreadable
    delivered: int

    async def ack(self) -> None: ...

    async def retry(self, delay_s: float) -> None: ...

    async def working(self) -> None: ...


class Jobs(HedgeQueue, Protocol):
    """The work queue (``adapters.hedge_queue.HedgeJobs``); every method raises
    Unavailable."""

    async def ensure(self) -> None: ...

    async def next(self, timeout: float) -> Delivery | None: ...

    async def dead_letter(self, order_id: int, deliveries: int, reason: str) -> None: ...


def _now_ms() -> int:
    return int(time.time() * 1000)


class HedgeWorker:
    def __init__(self, hedger: Hedger, jobs: Jobs, *, ack_wait_s: float = 30.0,
                 relay_every_s: float = 5.0, relay_age_ms: int = 5_000,
                 poll_s: float = 1.0) -> None:
        self.hedger = hedger
        self.jobs = jobs
        self.ack_wait_s = ack_wait_s
        self.relay_every_s = relay_every_s
        self.relay_age_ms = relay_age_ms
        self.poll_s = poll_s
        self._backoff = Backoff(0.5, 15.0)

    async def handle(self, d: Delivery) -> str:
        """One delivery, to its end (acked, redelivery asked, or dead-lettered); the
        outcome. Raises Unavailable when the queue could not be told (the job then comes
        back after ``ack_wait``)."""
        DELIVERIES.inc()
        if d.delivered > 1:
            REDELIVERIES.inc()
        settings = self.hedger.settings
        if d.order_id == 0:
            return await self._dead_letter(d, "unreadable job")
        if d.delivered > settings.max_deliveries:
            # Its last delivery died with its worker: give up without another try.
            return await self._dead_letter(d, f"{d.delivered - 1} deliveries, the last "
                                              "unfinished")
        keepalive = asyncio.create_task(self._keep_alive(d))
        try:
            outcome, order = await self.hedger.hedge(d.order_id, _now_ms())
        except (HedgeIncomplete, Unavailable) as exc:
            if d.delivered >= settings.max_deliveries:
                return await self._dead_letter(d, f"{d.delivered} deliveries: {exc}")
            delay = backoff_delay(d.delivered, settings.backoff_s, settings.backoff_max_s)
            log.warning("hedge of conversion %d not done (delivery %d); again in %.1fs: %s",
                        d.order_id, d.delivered, delay, exc)
            await d.retry(delay)
            JOBS.labels("retried").inc()
            return "retried"
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
        await d.ack()
        JOBS.labels(outcome.value).inc()
        if outcome is HedgeOutcome.HEDGED and order is not None:
            LAG.observe(max(0, _now_ms() - order.created_ms) / 1000)
        return outcome.value

    async def _dead_letter(self, d: Delivery, reason: str) -> str:
        log.error("hedge of conversion %d given up: %s", d.order_id, reason)
        await self.jobs.dead_letter(d.order_id, d.delivered, reason)
        if d.order_id:
            order = await self.hedger.give_up(d.order_id, reason, _now_ms())
            if order is not None:
                LAG.observe(max(0, _now_ms() - order.created_ms) / 1000)
        await d.ack()
        JOBS.labels("dead_lettered").inc()
        return "dead_lettered"

    async def _keep_alive(self, d: Delivery) -> None:
        while True:
            await asyncio.sleep(self.ack_wait_s / 3)
            with contextlib.suppress(Unavailable):
                await d.working()

    async def relay(self) -> int:
        """Enqueue the jobs left in the outbox, and measure the hedge lag. Raises
        Unavailable (the lag then reads unknown)."""
        try:
            sent = await self.hedger.relay(self.jobs, _now_ms() - self.relay_age_ms)
            RELAYED.inc(sent)
            OLDEST.set(await self.hedger.lag_ms(_now_ms()) / 1000)
        except Unavailable:
            OLDEST.set(-1)
            raise
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        """Work until stopped; an outage is retried with backoff (logged, ``UP`` 0)."""
        loop = asyncio.get_running_loop()
        next_relay = 0.0
        ready = False
        while not stop.is_set():
            try:
                if not ready:
                    await self.jobs.ensure()
                    ready = True
                if loop.time() >= next_relay:
                    await self.relay()
                    next_relay = loop.time() + self.relay_every_s
                d = await self.jobs.next(self.poll_s)
                if d is not None:
                    await self.handle(d)
                UP.set(1)
                self._backoff.succeeded()
            except Unavailable as exc:
                UP.set(0)
                ready = False  # the streams or the consumer may be gone: ensure again
                delay = self._backoff.failed()
                log.warning("hedger: %s; retrying in %.1fs", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
