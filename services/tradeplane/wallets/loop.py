"""The custody loops' rhythm: a pass every interval while passes succeed, fewer and
quieter while they fail.

A node that is down or refusing is an expected condition, not a bug: each failed pass is
ONE warning line naming the wallet and the node's answer, and the wait before the next
pass doubles (up to ``MAX_BACKOFF_S``, or the loop's own interval if longer) until a pass
succeeds again. Anything else that fails a pass is unexpected and logged with its
traceback, at the same backed-off pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from tradeplane.domain.errors import Unavailable
from tradeplane.wallets.chain import ChainError

#: Longest wait between two failing passes (unless the loop's interval is longer).
MAX_BACKOFF_S = 60.0


class Backoff:
    """The wait before the next pass: ``interval_s`` after a success, doubling after
    each failure in a row up to ``max(MAX_BACKOFF_S, interval_s)``."""

    def __init__(self, interval_s: float, max_s: float = MAX_BACKOFF_S) -> None:
        self.interval_s = interval_s
        self.max_s = max(max_s, interval_s)
        self.failures = 0

    def succeeded(self) -> float:
        self.failures = 0
        return self.interval_s

    def failed(self) -> float:
        self.failures += 1
        return min(self.interval_s * float(2 ** min(self.failures, 30)), self.max_s)


async def run_passes(what: str, step: Callable[[], Awaitable[None]], stop: asyncio.Event,
                     interval_s: float, log: logging.Logger,
                     on_failure: Callable[[], None] | None = None) -> None:
    """Call ``step`` until ``stop``: every ``interval_s`` while it succeeds, backing off
    while it fails (see the module docstring). ``what`` names the pass in log lines,
    e.g. ``"deposit scan of ltc-regtest"``."""
    backoff = Backoff(interval_s)
    while not stop.is_set():
        try:
            await step()
        except (ChainError, Unavailable) as exc:
            delay = backoff.failed()
            if on_failure is not None:
                on_failure()
            log.warning("%s failed: %s; retrying in %.0f s", what, exc, delay)
        except Exception:
            delay = backoff.failed()
            if on_failure is not None:
                on_failure()
            log.exception("%s failed; retrying in %.0f s", what, delay)
        else:
            if backoff.failures:
                log.info("%s works again", what)
            delay = backoff.succeeded()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
