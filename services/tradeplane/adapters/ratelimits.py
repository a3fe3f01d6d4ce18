"""Rate-limit counters in Redis through the ``limits`` library (fixed windows).

One request is charged against several limits at once (IP weight, key weight, order
counts) and its bans are checked in the same breath: :meth:`RedisRateLimitStore.charge` sends
all of it as ONE pipelined round trip, each counter through the library's own atomic Lua
operation (``incr_expire``: INCRBY, and EXPIRE on the window's first hit), so the keys and
windows are exactly those of ``limits.aio.strategies.FixedWindowRateLimiter`` (its
``get_window_stats``/``clear`` work on them). The pipeline reaches into the library's
redis-py bridge (its connection and registered script); ``limits`` is pinned in
constraints.txt and the store refuses to start should a release move them.

Redis being unreachable fails open (requests are served, the error is logged and
counted): rate limits protect capacity, they are not an authorisation.

The store implements the gateway's port (``gateway.ratelimit.RateLimitStore``, checked by
mypy where ``gateway.security`` composes it); a hit is anything with the gateway's
``Hit`` shape (:class:`Counted`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from limits import RateLimitItem
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from prometheus_client import Counter
from redis.exceptions import NoScriptError, RedisError

from tradeplane.domain.errors import ConfigurationError

log = logging.getLogger("tradeplane.ratelimits")

STORE_ERRORS = Counter(
    "tradeplane_ratelimit_store_errors_total",
    "Rate-limit checks that could not reach Redis (the request was let through)",
)


class Counted(Protocol):
    """Charge ``cost`` against ``item`` for ``identifiers`` (e.g. ("ip", "203.0.113.7")):
    the gateway's ``ratelimit.Hit``."""

    @property
    def item(self) -> RateLimitItem: ...
    @property
    def identifiers(self) -> tuple[str, ...]: ...
    @property
    def cost(self) -> int: ...


def _hit_key(hit: Counted) -> str:
    return hit.item.key_for(*hit.identifiers)


@dataclass(frozen=True, slots=True)
class Charged:
    #: Each hit's count in its current window after this charge (0 when unknown).
    counts: tuple[int, ...]
    #: Milliseconds left on the longest ban among the checked subjects (0 = none).
    banned_ms: int
    ok: bool = True  # False: Redis could not be asked


class RedisRateLimitStore:
    PREFIX = "LIMITS"

    def __init__(self, redis_url: str) -> None:
        self.storage = RedisStorage(f"async+{redis_url}", implementation="redispy",
                                    key_prefix=self.PREFIX)
        self.fixed = FixedWindowRateLimiter(self.storage)
        bridge: Any = self.storage.bridge
        if not (hasattr(bridge, "get_connection") and hasattr(bridge, "lua_incr_expire")):
            raise ConfigurationError(
                "this limits release has no redis-py bridge with incr_expire")
        self._conn: Any = bridge.get_connection()
        self._script: Any = bridge.lua_incr_expire

    async def close(self) -> None:
        await self._conn.aclose()

    def _key(self, key: str) -> str:
        return f"{self.PREFIX}:{key}"

    @staticmethod
    def ban_key(subject: str) -> str:
        return f"tp:ban:{subject}"

    async def charge(self, hits: Sequence[Counted], ban_subjects: Sequence[str]) -> Charged:
        """Count ``hits`` and read the bans of ``ban_subjects``, in one round trip."""
        try:
            return await self._charge_pipelined(hits, ban_subjects)
        except (RedisError, OSError) as exc:
            STORE_ERRORS.inc()
            log.warning("rate-limit store unavailable: %s", type(exc).__name__)
            return Charged(tuple(0 for _ in hits), 0, ok=False)

    async def _charge_pipelined(self, hits: Sequence[Counted], bans: Sequence[str]) -> Charged:
        for attempt in (0, 1):
            pipe = self._conn.pipeline(transaction=False)
            for subject in bans:
                pipe.pttl(self.ban_key(subject))
            for h in hits:
                pipe.evalsha(self._script.sha, 1, self._key(_hit_key(h)), h.item.get_expiry(),
                             h.cost)
            try:
                res = await pipe.execute()
            except NoScriptError:
                if attempt:
                    raise
                # First use on this Redis: load the library's script, then charge.
                self._script.sha = await self._conn.script_load(self._script.script)
                continue
            ttl = max((int(x) for x in res[:len(bans)]), default=0)
            return Charged(tuple(int(x) for x in res[len(bans):]), max(ttl, 0))
        raise AssertionError("unreachable")

    async def sync(
        self, hits: Sequence[Counted], ban_subjects: Sequence[str]
    ) -> tuple[list[tuple[int, int]], list[int]] | None:
        """Add batched ``hits`` to their counters in one round trip. Returns each
        counter's ``(count, milliseconds to its window's end)`` and each subject's ban
        milliseconds left (0 = none); None when Redis could not be reached."""
        try:
            for attempt in (0, 1):
                pipe = self._conn.pipeline(transaction=False)
                for h in hits:
                    key = self._key(_hit_key(h))
                    pipe.evalsha(self._script.sha, 1, key, h.item.get_expiry(), h.cost)
                    pipe.pttl(key)
                for subject in ban_subjects:
                    pipe.pttl(self.ban_key(subject))
                try:
                    res = await pipe.execute()
                except NoScriptError:
                    if attempt:
                        raise
                    self._script.sha = await self._conn.script_load(self._script.script)
                    continue
                n = 2 * len(hits)
                counts = [(int(res[i]), max(int(res[i + 1]), 0)) for i in range(0, n, 2)]
                return counts, [max(int(x), 0) for x in res[n:]]
        except (RedisError, OSError) as exc:
            STORE_ERRORS.inc()
            log.warning("rate-limit store unavailable: %s", type(exc).__name__)
        return None

    async def retry_after_s(self, hit: Counted) -> int:
        """Seconds until ``hit``'s window resets (at least 1)."""
        try:
            reset = await self.storage.get_expiry(_hit_key(hit))
        except (RedisError, OSError):
            return int(hit.item.get_expiry())
        return max(1, int(reset - time.time() + 0.999))

    async def test_hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        """``FixedWindowRateLimiter.hit``: count one, True while within the limit. Fails
        open."""
        try:
            return await self.fixed.hit(item, *identifiers)
        except (RedisError, OSError) as exc:
            STORE_ERRORS.inc()
            log.warning("rate-limit store unavailable: %s", type(exc).__name__)
            return True

    async def within(self, item: RateLimitItem, *identifiers: str) -> bool:
        """``FixedWindowRateLimiter.test``: True while one more would be within the limit.
        Fails open."""
        try:
            return await self.fixed.test(item, *identifiers)
        except (RedisError, OSError):
            STORE_ERRORS.inc()
            return True

    async def count(self, item: RateLimitItem, *identifiers: str) -> int:
        """Count one more against ``item`` and return the window's count (0 = unknown)."""
        try:
            return await self.storage.incr(item.key_for(*identifiers), item.get_expiry())
        except (RedisError, OSError):
            STORE_ERRORS.inc()
            return 0

    async def ban_once(
        self, subject: str, levels: RateLimitItem, length_s: Callable[[int], int]
    ) -> int:
        """Ban ``subject`` unless it is banned already; returns the milliseconds left on
        its ban (0: Redis could not be asked).

        A new ban is the ``n``-th within ``levels``' window and lasts ``length_s(n)``
        seconds; its level is counted only when the ban is actually set (``SET NX``), so
        refusals racing each other, in one gateway or in several, make one ban of one
        level, however many of them arrive while it lasts."""
        level_key = levels.key_for(subject)
        try:
            level = await self.storage.get(level_key) + 1
            seconds = length_s(level)
            if await self._conn.set(self.ban_key(subject), b"1", px=seconds * 1000, nx=True):
                await self.storage.incr(level_key, levels.get_expiry())
                return seconds * 1000
            return max(int(await self._conn.pttl(self.ban_key(subject))), 1)
        except (RedisError, OSError):
            STORE_ERRORS.inc()
            return 0
