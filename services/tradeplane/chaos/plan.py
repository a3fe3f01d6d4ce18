"""The faults ``tradeplane chaos`` injects, its options parsed once, and the seeded
schedule: the same seed gives the same faults in the same order, so a failure replays."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from tradeplane.domain.errors import TradeplaneError

#: Every fault, in the order the table lists them.
FAULTS: tuple[str, ...] = (
    "kill-engine",          # kill -9 of one engine (its symbol chosen by the seed)
    "kill-settlement",      # kill -9 of settlement
    "kill-marketdata",      # kill -9 of market data
    "kill-gateway",         # kill -9 of the gateway
    "kill-nats",            # kill -9 of nats-server, restarted on the same store
    "stop-postgres",        # PostgreSQL stopped in "immediate" mode (SIGQUIT), restarted
    "kill-redis",           # kill -9 of Redis, its data deleted, restarted empty
    "sigterm-nats-down",    # NATS killed, then SIGTERM to the engines, settlement and
                            # market data: each must exit within its grace period
    "pause-engine",         # the writing engine of one symbol (two run, hot standby)
                            # stopped with SIGSTOP past its lease, then SIGCONT: the
                            # standby takes over, the woken one is fenced
    "disk-full",            # the JetStream store's own filesystem filled under load, then
                            # freed (chaos/disk.py; needs root to mount it)
    "slow-consumer",        # settlement or market data stopped and continued in a duty
                            # cycle under load; the backlog's drain measured (chaos/slow.py)
    "clock-skew",           # the gateway or an engine run with its clock 90 s off, then
                            # on the true time again (libfaketime; chaos/clock.py)
)
#: The faults of custody (a regtest litecoind, its wallet watcher, deposits and
#: withdrawals in the load: chaos/custody.py), in the order the table lists them after
#: FAULTS. Litecoin only: a Monero regtest chain takes minutes to start and its outputs
#: unlock after 10 blocks.
CHAIN_FAULTS: tuple[str, ...] = (
    "kill-watcher",         # kill -9 of the wallet watcher under deposits and withdrawals
    "chain-reorg",          # a block holding deposits invalidated, one of them spent
                            # again elsewhere (a double spend), a longer branch mined
    "chain-node-down",      # kill -9 of litecoind during withdrawals, restarted later
)
#: The faults of a clustered bus (``--nats-cluster``: three nodes, streams with three
#: replicas), in the order the table lists them after FAULTS.
CLUSTER_FAULTS: tuple[str, ...] = (
    "kill-nats-node",       # kill -9 of a node leading no command stream, restarted later
    "kill-stream-leader",   # kill -9 of the node leading one symbol's command stream
                            # (chosen by the seed), restarted later
)
#: The faults of a lone NATS server: a cluster has no such single point to kill.
SINGLE_NATS_FAULTS: tuple[str, ...] = ("kill-nats", "sigterm-nats-down")
ALL_FAULTS: tuple[str, ...] = FAULTS + CHAIN_FAULTS + CLUSTER_FAULTS

MIN_DURATION_S = 10.0
MAX_DURATION_S = 24 * 3600.0
MAX_SEED = 2**63 - 1
_DURATION = re.compile(r"([0-9]{1,6})(s|m|h)?")
_UNIT = {"s": 1, "m": 60, "h": 3600}


class OptionError(TradeplaneError, ValueError):
    """An option of ``tradeplane chaos`` out of its bounds (the CLI exits 2)."""


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"5m"`` or ``"1h"`` as seconds, between 10 s and 24 h.

    Raises:
        OptionError: not such a duration, or out of bounds.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise OptionError(f"not a duration (like 90s, 5m, 1h): {text[:40]!r}")
    seconds = float(int(match.group(1)) * _UNIT[match.group(2) or "s"])
    if not MIN_DURATION_S <= seconds <= MAX_DURATION_S:
        raise OptionError(f"duration must be between {MIN_DURATION_S:g} s and 24 h, "
                          f"got {text!r}")
    return seconds


def parse_faults(text: str) -> tuple[str, ...]:
    """``"all"`` (ALL_FAULTS; :func:`for_bus` keeps those the bus has) or a
    comma-separated list of fault names, each once, in ALL_FAULTS' order.

    Raises:
        OptionError: an unknown name, a repeated one, or none.
    """
    text = text.strip()
    if text == "all":
        return ALL_FAULTS
    names = [n.strip() for n in text[:1000].split(",")]
    unknown = [n for n in names if n not in ALL_FAULTS]
    if unknown:
        raise OptionError(f"unknown fault {unknown[0][:40]!r}; known: all, "
                          + ", ".join(ALL_FAULTS))
    if len(set(names)) != len(names):
        raise OptionError("a fault is named twice")
    return tuple(f for f in ALL_FAULTS if f in names)


def for_bus(faults: tuple[str, ...], nats_cluster: bool) -> tuple[str, ...]:
    """``faults`` checked against the bus: a lone server has no cluster faults, a cluster
    none of a lone server's. ALL_FAULTS (``all``) becomes every fault the bus has.

    Raises:
        OptionError: a fault the bus cannot have.
    """
    other = SINGLE_NATS_FAULTS if nats_cluster else CLUSTER_FAULTS
    if faults == ALL_FAULTS:
        return tuple(f for f in faults if f not in other)
    wrong = [f for f in faults if f in other]
    if wrong:
        where = "a NATS cluster" if nats_cluster else "one NATS server (see --nats-cluster)"
        raise OptionError(f"{wrong[0]} cannot be injected on {where}")
    return faults


def parse_period(text: str) -> float:
    """Seconds between injections, 5 to 600.

    Raises:
        OptionError: not such a number.
    """
    if not text.isascii() or not text.isdigit() or len(text) > 3 or not 5 <= int(text) <= 600:
        raise OptionError(f"period must be 5 to 600 seconds, got {text[:40]!r}")
    return float(text)


def parse_seed(text: str) -> int:
    """A seed, 0 to 2**63-1, in ASCII digits.

    Raises:
        OptionError: not such a number.
    """
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > MAX_SEED:
        raise OptionError(f"seed must be an integer 0..{MAX_SEED}, got {text[:40]!r}")
    return int(text)


@dataclass(frozen=True)
class Injection:
    """One fault of the schedule, ``at_s`` seconds after the load started."""

    fault: str
    at_s: float


def schedule(seed: int, duration_s: float, faults: tuple[str, ...],
             period_s: float) -> list[Injection]:
    """One injection every ``period_s`` (jittered by the seed) for ``duration_s``; each
    fault at least once (the duration is stretched if it is too short for them all),
    the faults shuffled anew each round of them.

    Raises:
        ValueError: no fault, or a period that is not positive.
    """
    if not faults or period_s <= 0:
        raise ValueError("a schedule needs faults and a positive period")
    rng = random.Random(seed)
    count = max(len(faults), int(duration_s // period_s))
    order: list[str] = []
    while len(order) < count:
        round_ = list(faults)
        rng.shuffle(round_)
        order.extend(round_)
    out: list[Injection] = []
    for i, fault in enumerate(order[:count]):
        jitter = rng.uniform(0.0, period_s / 4)
        out.append(Injection(fault, i * period_s + jitter))
    return out
