"""Binance-style rate limits: request weight per minute per client address and per API
key, new orders per 10 seconds and per day per key, 429 over a limit and an escalating
418 ban for whoever keeps going.

Each request has a :class:`Meter` (weight and order count from :func:`route_cost`).
Unsigned requests are charged before they run; signed ones inside authentication, once
the key is proven (nobody can spend someone else's key budget by sending its key). A
signed request that fails before that is charged to its address when its answer starts.

The counters are shared in Redis (``limits``' fixed windows). By default each gateway
counts in-process and syncs with Redis every ``rate_limit_sync_ms`` (:class:`LocalCounts`:
a few microseconds per request; exact within a replica, replicas may overshoot a limit
by one sync interval's worth). With ``rate_limit_sync_ms = 0`` every request is charged
in Redis as it comes, address and key in one pipelined round trip
(:meth:`RateLimitStore.charge`): exact across replicas,
but ~0.15 ms of gateway CPU per request, measured, which halves order throughput.

Whoever is over a limit or banned is remembered in-process until the window resets or the
ban ends, so refused traffic costs no Redis round trip (other replicas learn it from Redis
on their next charge).

The counters' store is a port this module declares (:class:`RateLimitStore`, with the
:class:`Hit` it counts); ``adapters/ratelimits.py`` implements it over Redis and the
gateway's composition root (``security.start_security``) builds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol
from urllib.parse import parse_qsl

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute
from limits import RateLimitItemPerSecond as PerSecond

from tradeplane.config import Settings
from tradeplane.domain.access import ban_seconds
from tradeplane.gateway.errors import ApiError


@dataclass(frozen=True, slots=True)
class Hit:
    """Charge ``cost`` against ``item`` for ``identifiers`` (e.g. ("ip", "203.0.113.7"))."""

    item: RateLimitItem
    identifiers: tuple[str, ...]
    cost: int

    @property
    def key(self) -> str:
        """The counter's key in ``limits``' storage."""
        return self.item.key_for(*self.identifiers)


class Charge(Protocol):
    """What one charge found out."""

    @property
    def counts(self) -> tuple[int, ...]:
        """Each hit's count in its current window after this charge (0 when unknown)."""
        ...

    @property
    def banned_ms(self) -> int:
        """Milliseconds left on the longest ban among the checked subjects (0 = none)."""
        ...

    @property
    def ok(self) -> bool:
        """False: the store could not be asked (the request is let through)."""
        ...


class RateLimitStore(Protocol):
    """The shared counters and bans (``limits``' fixed windows). Every method fails open:
    when the store cannot be reached it answers as if within the limits."""

    async def charge(self, hits: Sequence[Hit], ban_subjects: Sequence[str]) -> Charge:
        """Count ``hits`` and read the bans of ``ban_subjects``, in one round trip."""
        ...

    async def sync(self, hits: Sequence[Hit], ban_subjects: Sequence[str]
                   ) -> tuple[list[tuple[int, int]], list[int]] | None:
        """Add batched hits; each counter's ``(count, ms to its window's end)`` and each
        subject's ban milliseconds left; None when the store could not be reached."""
        ...

    async def retry_after_s(self, hit: Hit) -> int:
        """Seconds until ``hit``'s window resets (at least 1)."""
        ...

    async def test_hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        """Count one; True while within the limit."""
        ...

    async def within(self, item: RateLimitItem, *identifiers: str) -> bool:
        """True while one more would be within the limit (counts nothing)."""
        ...

    async def count(self, item: RateLimitItem, *identifiers: str) -> int:
        """Count one more and return the window's count (0 = unknown)."""
        ...

    async def ban_once(self, subject: str, levels: RateLimitItem,
                       length_s: Callable[[int], int]) -> int:
        """Ban ``subject`` unless banned already; the milliseconds left on its ban (0: the
        store could not be asked)."""
        ...

    async def close(self) -> None: ...


#: The scope key under which a request's meter travels to authentication.
METER = "tradeplane.meter"

# (method, path) -> (weight, orders); Binance's weights for the same endpoints.
_FIXED: dict[tuple[str, str], tuple[int, int]] = {
    ("GET", "/api/v3/ping"): (1, 0),
    ("GET", "/api/v3/time"): (1, 0),
    ("GET", "/api/v3/exchangeInfo"): (20, 0),
    ("GET", "/api/v3/trades"): (25, 0),
    ("GET", "/api/v3/historicalTrades"): (25, 0),
    ("GET", "/api/v3/aggTrades"): (4, 0),
    ("GET", "/api/v3/klines"): (2, 0),
    ("GET", "/api/v3/uiKlines"): (2, 0),
    ("GET", "/api/v3/avgPrice"): (2, 0),
    ("POST", "/api/v3/order"): (1, 1),
    ("POST", "/api/v3/order/test"): (1, 0),
    ("POST", "/api/v3/order/cancelReplace"): (1, 1),
    ("DELETE", "/api/v3/order"): (1, 0),
    ("GET", "/api/v3/order"): (4, 0),
    ("DELETE", "/api/v3/openOrders"): (1, 0),
    ("GET", "/api/v3/allOrders"): (20, 0),
    ("GET", "/api/v3/myTrades"): (20, 0),
    ("GET", "/api/v3/account"): (20, 0),
    ("PUT", "/api/v3/order/amend/keepPriority"): (4, 0),
    ("POST", "/api/v3/orderList/oco"): (1, 2),
    ("GET", "/api/v3/orderList"): (4, 0),
    ("GET", "/api/v3/openOrderList"): (6, 0),
    ("DELETE", "/api/v3/orderList"): (1, 0),
    ("POST", "/api/v3/userDataStream"): (2, 0),
    ("PUT", "/api/v3/userDataStream"): (2, 0),
    ("DELETE", "/api/v3/userDataStream"): (2, 0),
    ("GET", "/sapi/v1/capital/config/getall"): (10, 0),
    ("GET", "/sapi/v1/accountSnapshot"): (2400, 0),
    ("GET", "/sapi/v1/margin/isolated/allPairs"): (10, 0),
    ("GET", "/sapi/v1/spot/delist-schedule"): (100, 0),
    ("POST", "/api/v1/auth/login"): (5, 0),
    ("POST", "/api/v1/auth/signup"): (5, 0),
}

#: Endpoints whose authentication charges the meter (SIGNED security).
SIGNED = frozenset({
    ("POST", "/api/v3/order"), ("DELETE", "/api/v3/order"), ("GET", "/api/v3/order"),
    ("POST", "/api/v3/order/test"), ("POST", "/api/v3/order/cancelReplace"),
    ("DELETE", "/api/v3/openOrders"), ("GET", "/api/v3/openOrders"),
    ("GET", "/api/v3/allOrders"), ("GET", "/api/v3/myTrades"), ("GET", "/api/v3/account"),
    ("PUT", "/api/v3/order/amend/keepPriority"), ("POST", "/api/v3/orderList/oco"),
    ("GET", "/api/v3/orderList"), ("GET", "/api/v3/openOrderList"),
    ("DELETE", "/api/v3/orderList"),
})
#: Not metered: probes and scrapes of the platform itself.
UNMETERED = frozenset({"/healthz", "/metrics"})


def _depth_weight(limit: int) -> int:
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


def route_cost(method: str, path: str, query: str) -> tuple[int, int, bool]:
    """``(weight, orders, signed)`` of a request, as Binance weighs the same endpoint."""
    signed = (method, path) in SIGNED or path.startswith("/sapi/")
    fixed = _FIXED.get((method, path))
    if fixed is not None:
        return fixed[0], fixed[1], signed
    if path == "/api/v3/depth":
        raw = dict(parse_qsl(query)).get("limit", "100")
        ok = raw.isascii() and raw.isdigit() and len(raw) < 7
        return _depth_weight(int(raw) if ok else 100), 0, False
    if path in ("/api/v3/ticker/24hr", "/api/v3/ticker/price", "/api/v3/ticker/bookTicker"):
        one = "symbol=" in query and "symbols=" not in query.replace("symbol=", "", 1)
        if path == "/api/v3/ticker/24hr":
            return (2 if one else 80), 0, False
        return (2 if one else 4), 0, False
    if method == "GET" and path == "/api/v3/openOrders":
        return (6 if "symbol=" in query else 80), 0, True
    return 1, 0, signed


@dataclass(slots=True)
class Meter:
    """One request's rate-limit accounting, and what its answer reports."""

    ip: str
    weight: int
    orders: int
    signed: bool
    charged: bool = False
    used_weight: int = 0
    order_counts: tuple[int, int] | None = None  # (10 s, day), once charged to a key
    retry_after: int = 0


@dataclass(slots=True)
class _Counter:
    hit: Hit  # its item and identifiers (cost unused)
    known: int = 0  # the shared count in Redis as of the last sync (this replica's included)
    inflight: int = 0  # sent in the running sync
    pending: int = 0  # counted here since
    resets_at: float = 0.0  # monotonic end of the shared window; 0 = not known yet
    synced_at: float = 0.0  # monotonic time of its last sync

    def count(self) -> int:
        return self.known + self.inflight + self.pending


class LocalCounts:
    """Counting in-process between syncs with Redis: a request costs a few dictionary
    operations; each sync adds what this replica counted to the shared counters
    (``limits``' ``incr_expire``, one pipelined round trip for all of them) and learns the
    shared totals, window ends and bans. Syncs run every ``sync_s`` (sooner once a
    counter has gathered a tenth of its limit) and carry the counters that are due (see
    :meth:`_due`). Within one replica the limits are exact;
    across replicas a limit may be overshot by what the others admitted since their last
    sync."""

    def __init__(self, store: RateLimitStore, sync_s: float) -> None:
        self.store = store
        self.sync_s = sync_s
        self.counters: dict[tuple[str, tuple[str, ...]], _Counter] = {}
        self.bans: dict[str, float] = {}  # subject -> monotonic end, learned from Redis
        self._subjects: set[str] = set()
        self._soon = asyncio.Event()

    def charge(self, hits: Sequence[Hit], subjects: Sequence[str]) -> tuple[list[int], int]:
        now = time.monotonic()
        counts = []
        for h in hits:
            ident = (h.item.namespace, h.identifiers)
            c = self.counters.get(ident)
            if c is None:
                c = self.counters[ident] = _Counter(h)
            elif c.resets_at and now >= c.resets_at:
                c.known, c.resets_at = 0, 0.0
            c.pending += h.cost
            if c.pending * 10 >= h.item.amount:
                self._soon.set()
            counts.append(c.count())
        self._subjects.update(subjects)
        if not self.bans:
            return counts, 0
        banned = max((self.bans.get(s, 0.0) - now for s in subjects), default=0.0)
        return counts, int(banned * 1000) if banned > 0 else 0

    def retry_after_s(self, h: Hit) -> int:
        c = self.counters.get((h.item.namespace, h.identifiers))
        if c is None or not c.resets_at:
            return int(h.item.get_expiry())
        return max(1, int(c.resets_at - time.monotonic() + 0.999))

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._soon.wait(), self.sync_s)
            self._soon.clear()
            await self.sync()

    #: Counters per Redis round trip: a sync never holds the event loop for long.
    CHUNK = 256

    def _due(self, c: _Counter, now: float) -> bool:
        """A counter is synced once it gathered a twentieth of its limit, else once a
        fifth of its window (at least one interval, at most a minute) has passed: a
        day's count need not travel every second."""
        if not c.pending:
            return False
        if c.pending * 20 >= c.hit.item.amount:
            return True
        every = max(self.sync_s, min(c.hit.item.get_expiry() / 5, 60.0))
        return now - c.synced_at >= every

    async def sync(self) -> None:
        now = time.monotonic()
        dirty = [c for c in self.counters.values() if self._due(c, now)]
        subjects, self._subjects = list(self._subjects), set()
        if not dirty and not subjects:
            return
        for i in range(0, max(len(dirty), 1), self.CHUNK):
            await self._sync_chunk(dirty[i:i + self.CHUNK], subjects if i == 0 else [])

    async def _sync_chunk(self, dirty: list[_Counter], subjects: list[str]) -> None:
        for c in dirty:
            c.inflight, c.pending = c.pending, 0
        started = time.monotonic()
        res = await self.store.sync(
            [Hit(c.hit.item, c.hit.identifiers, c.inflight) for c in dirty], subjects)
        if res is None:  # Redis unreachable: keep counting here, add it next time
            for c in dirty:
                c.pending += c.inflight
                c.inflight = 0
            return
        counts, bans = res
        for c, (count, ttl_ms) in zip(dirty, counts, strict=True):
            c.known, c.inflight, c.synced_at = count, 0, started
            c.resets_at = started + ttl_ms / 1000 if ttl_ms else 0.0
        for subject, ban_ms in zip(subjects, bans, strict=True):
            if ban_ms:
                self.bans[subject] = started + ban_ms / 1000
            else:
                self.bans.pop(subject, None)
        self._forget_idle(time.monotonic())

    def _forget_idle(self, now: float) -> None:
        if len(self.counters) < 10_000:
            return
        self.counters = {k: c for k, c in self.counters.items()
                         if c.pending or c.inflight or (c.resets_at and c.resets_at > now)}


class _Plan(NamedTuple):
    """One kind of request's charge (:meth:`Limiter._plan`); never mutated."""

    hits: tuple[Hit, ...]
    subjects: tuple[str, ...]
    over: tuple[str, ...]
    blocks: tuple[str, ...]


#: Charge plans a limiter keeps (one per address, key, weight and order count seen).
PLANS_KEPT = 10_000


class Limiter:
    #: Whether requests are counted (see :class:`NoRateLimits`).
    enforced: Final = True

    def __init__(self, store: RateLimitStore, s: Settings) -> None:
        self.store = store
        self.ip_weight = RateLimitItemPerMinute(s.ip_weight_per_minute, namespace="ipw")
        self.key_weight = RateLimitItemPerMinute(s.key_weight_per_minute, namespace="keyw")
        self.orders_10s = PerSecond(s.orders_per_10s, 10, namespace="ord10s")
        self.orders_day = RateLimitItemPerDay(s.orders_per_day, namespace="ord1d")
        self.offences = PerSecond(s.ban_after_429s, s.ban_window_s, namespace="off")
        self.ban_levels = RateLimitItemPerDay(1_000_000, namespace="banlvl")
        self.ban_base_s, self.ban_max_s = s.ban_base_s, s.ban_max_s
        #: None: every request is charged to Redis as it comes (exact across replicas).
        self.local = (LocalCounts(store, s.rate_limit_sync_ms / 1000)
                      if s.rate_limit_sync_ms > 0 else None)
        # subject -> monotonic deadline: refused without asking Redis.
        self._banned: dict[str, float] = {}  # 418
        self._limited: dict[str, float] = {}  # 429
        self._plans: dict[tuple[str, str | None, int, int], _Plan] = {}

    async def run(self) -> None:
        """Sync local counts with Redis (batched mode); runs until cancelled."""
        if self.local is not None:
            await self.local.run()

    # ------------------------------------------------------------------ charging
    def _plan(self, meter: Meter, key: str | None) -> _Plan:
        """What a request of this address, key, weight and order count is charged: its
        hits, the subjects that may be banned, whom each hit's excess refuses and who,
        if blocked, refuses it. The same for every request alike, so kept
        (``_plans``): a new order's charge is then a few dictionary operations."""
        ident = (meter.ip, key, meter.weight, meter.orders)
        plan = self._plans.get(ident)
        if plan is not None:
            return plan
        ip_s = f"ip:{meter.ip}"
        subjects = [ip_s] + ([f"key:{key}"] if key else [])  # may be banned
        hits = [Hit(self.ip_weight, ("ip", meter.ip), meter.weight)]
        over = [ip_s]  # whom each hit's excess refuses
        blocks = subjects
        if key:
            hits.append(Hit(self.key_weight, ("key", key), meter.weight))
            over.append(subjects[1])
            if meter.orders:
                # Too many orders refuses further orders, not the key's other requests.
                hits += [Hit(self.orders_10s, ("key", key), meter.orders),
                         Hit(self.orders_day, ("key", key), meter.orders)]
                over += [f"orders:{key}"] * 2
                blocks = [*subjects, over[-1]]
        if len(self._plans) >= PLANS_KEPT:  # bounded: start again
            self._plans.clear()
        plan = self._plans[ident] = _Plan(tuple(hits), tuple(subjects), tuple(over),
                                          tuple(blocks))
        return plan

    async def charge(self, meter: Meter, key: str | None = None) -> None:
        """Charge the request to its address (and key). Raises ApiError 429/418."""
        hits, subjects, over, blocks = self._plan(meter, key)
        self._refuse_if_blocked(meter, blocks)
        meter.charged = True
        if self.local is not None:
            counts, banned_ms = self.local.charge(hits, subjects)
        else:
            res = await self.store.charge(hits, subjects)
            if not res.ok:
                return
            counts, banned_ms = list(res.counts), res.banned_ms
        meter.used_weight = counts[0]
        if key and meter.orders:
            meter.order_counts = (counts[2], counts[3])
        if banned_ms > 0:
            seconds = max(1, (banned_ms + 999) // 1000)
            for s in subjects:
                self._block(s, seconds, 418)
            meter.retry_after = seconds
            raise _banned(seconds)
        for subject, h, count in zip(over, hits, counts, strict=True):
            if count > h.item.amount:
                # Weight violations count towards a ban (Binance's 418); too many orders
                # is answered -1015 only.
                offender = None if subject.startswith("orders:") else subject
                await self._over(meter, subject, h, offender)

    async def charge_after(self, meter: Meter) -> None:
        """Charge a request to its address after it ran (a signed request refused before
        its key was proven). Never raises: an over-limit address is refused from now on."""
        if meter.charged:
            return
        with contextlib.suppress(ApiError):
            await self.charge(meter)

    async def _over(self, meter: Meter, subject: str, h: Hit, offender: str | None) -> None:
        retry = (self.local.retry_after_s(h) if self.local is not None
                 else await self.store.retry_after_s(h))
        meter.retry_after = retry
        self._block(subject, retry, 429)
        if offender is not None:
            await self._offence(meter, offender)
        raise _too_many(h)

    async def _offence(self, meter: Meter, subject: str) -> None:
        """Count a 429; the ``ban_after_429s``-th within the window bans the subject, and
        so does each one after it once the ban is over (it did not back off). A ban is
        twice the last one that day: the level counts bans, not refusals, so the burst
        of refusals that earned a ban (in flight at once, or on other replicas) makes
        one ban of the next level and no more."""
        if await self.store.count(self.offences, subject) < self.offences.amount:
            return
        ms = await self.store.ban_once(
            subject, self.ban_levels,
            lambda level: ban_seconds(level, self.ban_base_s, self.ban_max_s))
        if ms <= 0:  # Redis is down: fail open, as the counters do
            return
        seconds = max(1, (ms + 999) // 1000)
        self._block(subject, seconds, 418)
        meter.retry_after = seconds
        raise _banned(seconds)

    # ------------------------------------------------------------------ local memory
    def _block(self, subject: str, seconds: int, status: int) -> None:
        """Refuse ``subject`` from memory: banned (418) or over a limit (429) until then.
        A ban and a limit are kept apart: a limit outlasting a ban still applies after."""
        table = self._banned if status == 418 else self._limited
        until = time.monotonic() + seconds
        if table.get(subject, 0.0) < until:
            table[subject] = until
        if len(table) > 100_000:  # bounded: forget the expired ones
            now = time.monotonic()
            for k in [k for k, v in table.items() if v <= now]:
                del table[k]

    def check_blocked(self, meter: Meter) -> None:
        """Refuse (ApiError 429/418) an address known to be over a limit or banned."""
        self._refuse_if_blocked(meter, [f"ip:{meter.ip}"])

    def _refuse_if_blocked(self, meter: Meter, subjects: Sequence[str]) -> None:
        if not (self._banned or self._limited):
            return
        now = time.monotonic()
        for table, refusal in ((self._banned, _banned), (self._limited, _refused)):
            for s in subjects:
                until = table.get(s)
                if until is None:
                    continue
                if until <= now:
                    del table[s]
                    continue
                meter.retry_after = max(1, int(until - now + 0.999))
                meter.charged = True
                raise refusal(meter.retry_after)

    async def note_refusal(self, meter: Meter) -> ApiError | None:
        """A request refused from local memory with 429 still counts as an offence;
        returns the ban (418) it earned, if it did."""
        try:
            await self._offence(meter, f"ip:{meter.ip}")
        except ApiError as banned:
            return banned
        return None


class NoRateLimits:
    """Rate limits turned off by the ``rate_limits`` setting: admits every request and
    counts nothing (no usage headers, no WebSocket connection limit, no failed-login
    throttle). An explicit object, so that "off" is a decision and never a service
    that was forgotten."""

    #: Whether requests are counted (the guard writes Binance's usage headers only then).
    enforced: Final = False

    async def run(self) -> None:
        """Nothing to sync."""

    async def charge(self, meter: Meter, key: str | None = None) -> None:
        """Admits every request."""

    async def charge_after(self, meter: Meter) -> None:
        """Admits every request."""

    def check_blocked(self, meter: Meter) -> None:
        """Nobody is blocked."""

    async def note_refusal(self, meter: Meter) -> ApiError | None:
        return None


#: What the gateway counts requests with: the limiter, or rate limits explicitly off.
RateLimits = Limiter | NoRateLimits


def _too_many(h: Hit) -> ApiError:
    item: RateLimitItem = h.item
    if item.namespace in ("ord10s", "ord1d"):
        per = "10 SECOND" if item.namespace == "ord10s" else "1 DAY"
        return ApiError(-1015, f"Too many new orders; current limit is {item.amount} orders "
                               f"per {per}.", 429)
    return ApiError(-1003, f"Too much request weight used; current limit is {item.amount} "
                           "request weight per 1 MINUTE. Please use WebSocket Streams for "
                           "live updates to avoid polling the API.", 429)


def _refused(seconds: int) -> ApiError:
    return ApiError(-1003, f"Too many requests; retry after {seconds} seconds.", 429)


def _banned(seconds: int) -> ApiError:
    until = int((time.time() + seconds) * 1000)
    return ApiError(-1003, f"Way too many requests; IP banned until {until}. Please use "
                           "WebSocket Streams for live updates to avoid bans.", 418)
