"""The ``slow-consumer`` fault: settlement or market data throttled under load — stopped
(SIGSTOP) most of each cycle and let run (SIGCONT) for the rest, for some seconds, so that
it applies the EVENTS stream far slower than the engines append to it. Meanwhile the
gateway must keep acknowledging orders (it needs neither), and afterwards the backlog must
drain; how long that takes is reported."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable

from tradeplane.chaos import compose
from tradeplane.chaos.report import say
from tradeplane.domain.errors import Unavailable

#: How long the consumer is throttled.
THROTTLE_S = 8.0
#: One cycle: this long stopped, then ``RUN_S`` running (2% of the time: both consumers
#: apply a batch far faster than the load makes one, so a gentler throttle leaves no
#: backlog worth the name).
STOPPED_S = 1.0
RUN_S = 0.02
#: Longest acceptable drain once the throttle ends.
DRAIN_TIMEOUT_S = 60.0


def _signal(pid: int | None, sig: signal.Signals) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
            os.kill(pid, sig)


def throttle(pid: Callable[[], int | None], idle: Callable[[float], None],
             seconds: float = THROTTLE_S) -> int:
    """Stop and continue the process ``pid()`` names in a duty cycle for ``seconds``;
    it is left running whatever happens. Returns the cycles done."""
    cycles = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        target = pid()  # anew each cycle: the supervisor may have restarted it
        try:
            _signal(target, signal.SIGSTOP)
            idle(STOPPED_S)
        finally:
            _signal(target, signal.SIGCONT)
        idle(RUN_S)
        cycles += target is not None
    return cycles


def slow_consumer(consumer: str, pid: Callable[[], int | None],
                  idle: Callable[[float], None], ask: Callable[[], tuple[int, str]],
                  stores: compose.Stores) -> tuple[list[str], str]:
    """The fault: throttle ``consumer`` (one of compose.CONSUMERS) under load, place an
    order meanwhile (``ask``: the gateway must acknowledge it), then, at the end of one
    more stopped spell, read its backlog, let it go and time the backlog's drain. Returns
    the problems found, and the figures in one line."""
    problems: list[str] = []
    cycles = throttle(pid, idle, THROTTLE_S / 2)
    status, body = ask()
    if status != 200:
        problems.append(f"slow {consumer}: an order was answered {status} {body[:160]} "
                        "while it was throttled (the gateway needs neither consumer)")
    cycles += throttle(pid, idle, THROTTLE_S / 2)
    target = pid()
    try:
        _signal(target, signal.SIGSTOP)
        try:
            idle(STOPPED_S)  # a last stopped spell: the backlog is read at its end
            last, backlog = asyncio.run(compose.backlog(stores, consumer))
        finally:
            _signal(target, signal.SIGCONT)
        since = time.monotonic()
        drained = asyncio.run(compose.drained(stores, consumer, last, since,
                                              DRAIN_TIMEOUT_S))
    except Unavailable as exc:
        return ([*problems, f"slow {consumer}: the backlog could not be read: {exc}"],
                f"slow-consumer {consumer}: backlog unknown")
    figures = (f"slow-consumer {consumer}: throttled {THROTTLE_S:g} s ({cycles} "
               f"stop/continue cycles, {RUN_S / (RUN_S + STOPPED_S):.0%} running), an "
               f"order meanwhile answered {status}, backlog {backlog} events, drained in "
               + ("-" if drained is None else f"{drained:.2f} s"))
    say(f"  {figures}")
    if drained is None:
        problems.append(f"slow {consumer}: a backlog of {backlog} events not drained "
                        f"within {DRAIN_TIMEOUT_S:g} s")
    return problems, figures
