"""Security settings refuse what is unsafe outside dev mode, and in-process rate-limit
counting (between syncs with Redis) is exact and learns the shared totals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from limits import RateLimitItemPerMinute
from pydantic import ValidationError

from tradeplane.config import DEV_PLACEHOLDER, Settings
from tradeplane.gateway.ratelimit import Hit, LocalCounts

PROD = {"admin_token": "a" * 32, "secret_key": "s" * 32}


def test_the_jwt_secret_may_be_derived_but_never_the_placeholder_outside_dev_mode() -> None:
    gateway = Settings(**PROD).for_process("gateway")
    assert gateway.jwt_secret.get_secret_value() == ""  # derived from secret_key
    with pytest.raises(ValidationError, match="JWT_SECRET must not be the placeholder"):
        Settings(**PROD, jwt_secret=DEV_PLACEHOLDER).for_process("gateway")
    assert Settings(dev_mode=True, jwt_secret=DEV_PLACEHOLDER).for_process("gateway").dev_mode
    # Nothing but the gateway signs tokens: the others do not look at it.
    Settings(jwt_secret=DEV_PLACEHOLDER).for_process("matching")


def test_weak_password_hashing_is_for_dev_mode_only() -> None:
    with pytest.raises(ValidationError, match="ARGON2_MEMORY_KIB"):
        Settings(**PROD, argon2_memory_kib=8192).for_process("gateway")
    assert Settings(dev_mode=True, argon2_memory_kib=8192).for_process(
        "gateway").argon2_memory_kib == 8192


def test_the_jwt_secret_never_shows_in_repr() -> None:
    s = Settings(**PROD, jwt_secret="jwt-" + "x" * 28)
    assert "jwt-xxxx" not in repr(s) + str(s)


class StubStore:
    """Stands in for Redis: the shared count is what it was told plus ``others``."""

    def __init__(self, others: int = 0, ttl_ms: int = 30_000) -> None:
        self.shared: dict[str, int] = {}
        self.others, self.ttl_ms = others, ttl_ms
        self.synced: list[list[int]] = []

    async def sync(self, hits: Sequence[Hit], bans: Sequence[str]) -> Any:
        self.synced.append([h.cost for h in hits])
        out = []
        for h in hits:
            self.shared[h.key] = self.shared.get(h.key, self.others) + h.cost
            out.append((self.shared[h.key], self.ttl_ms))
        return out, [0 for _ in bans]


ITEM = RateLimitItemPerMinute(100, namespace="ipw")


def _hit(cost: int = 1) -> list[Hit]:
    return [Hit(ITEM, ("ip", "192.0.2.1"), cost)]


async def test_counts_between_syncs_are_exact_and_include_the_shared_total() -> None:
    store = StubStore(others=40)  # other replicas already spent 40
    counts = LocalCounts(store, 1.0)  # type: ignore[arg-type]
    assert [counts.charge(_hit(), ["ip:x"])[0][0] for _ in range(3)] == [1, 2, 3]
    await counts.sync()
    assert store.synced == [[3]]
    assert counts.charge(_hit(5), ["ip:x"])[0] == [48]  # 40 + 3 + 5
    await counts.sync()
    assert store.synced[-1] == [5]
    assert counts.retry_after_s(_hit()[0]) == 30


async def test_a_counter_gathering_a_tenth_of_its_limit_asks_for_an_early_sync() -> None:
    counts = LocalCounts(StubStore(), 60.0)  # type: ignore[arg-type]
    counts.charge(_hit(9), ["ip:x"])
    assert not counts._soon.is_set()
    counts.charge(_hit(1), ["ip:x"])
    assert counts._soon.is_set()


async def test_counts_survive_an_unreachable_redis() -> None:
    class Down(StubStore):
        async def sync(self, hits: Sequence[Hit], bans: Sequence[str]) -> Any:
            return None

    counts = LocalCounts(Down(), 1.0)  # type: ignore[arg-type]
    counts.charge(_hit(4), ["ip:x"])
    await counts.sync()
    assert counts.charge(_hit(1), ["ip:x"])[0] == [5]  # nothing lost, sent next time
