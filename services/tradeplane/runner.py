"""Process plumbing shared by every service: signals to a stop event, then a clean exit;
a service whose supervised task died exits non-zero after one CRITICAL line per cause."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from tradeplane.config import Settings
from tradeplane.observability import setup
from tradeplane.supervision import BackgroundTasks, alongside

if TYPE_CHECKING:
    from tradeplane.adapters.vault import VaultSession

log = logging.getLogger("tradeplane.runner")

#: Seconds a service has, once asked to stop, to finish cleanly (a last snapshot, a drain of
#: its connections). Past them the work left is cancelled and the process exits anyway: a
#: stop must not wait on a server that is down (NATS gone, PostgreSQL restarting), or every
#: rollout waits for Kubernetes' kill after ``terminationGracePeriodSeconds`` (30 s), and
#: ``tradeplane up`` for its own (15 s). The services are crash-only: what a clean stop
#: skips, the next start recovers.
STOP_GRACE_S = 10.0
_CANCEL_AGAIN_S = 0.5
#: Past the grace and this, the process ends without the event loop (a thread blocked in
#: a library, a task that swallows its cancellation): within Kubernetes' 30 s, always.
_LAST_RESORT_S = 4.0


def _last_resort(name: str, after_s: float) -> None:
    """End the process in ``after_s`` seconds unless it has ended by then."""

    def end() -> None:
        log.critical("%s still running %g s after the stop signal; exiting now", name,
                     after_s)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(after_s, end)
    timer.daemon = True
    timer.start()


async def supervised(name: str, body: Awaitable[None]) -> None:
    """Await ``body``; when a task group inside it failed, log each cause on one CRITICAL
    line (with its traceback; the task's name when :class:`BackgroundTasks` ran it) and
    raise the first, so the CLI reports it and the process exits non-zero (the platform's
    supervisor or Kubernetes restarts it).

    Raises:
        BaseException: whatever ``body`` raised, a task group's first cause unwrapped.
    """
    try:
        await body
    except BaseExceptionGroup as group:
        causes = _leaves(group)
        for exc in causes:
            where = "".join(f" ({note})" for note in getattr(exc, "__notes__", ())
                            if note.startswith("background task: "))
            log.critical("%s stopping: a background task failed: %s: %s%s", name,
                         type(exc).__name__, exc, where, exc_info=exc)
        raise causes[0] from group


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


class TokenRenewal(Protocol):
    """What keeps a secret source's token alive (``adapters.vault.VaultSession``)."""

    async def keep_alive(self, stop: asyncio.Event) -> None: ...


async def run_with_renewal(name: str, body: Callable[[asyncio.Event], Awaitable[None]],
                           stop: asyncio.Event, renewal: TokenRenewal | None) -> None:
    """``body(stop)`` under :func:`supervised`, with ``renewal.keep_alive(stop)`` beside
    it as the background task ``vault-token-renewal``: if that dies, ``stop`` is set, and
    once ``body`` has stopped its error is logged (CRITICAL) and raised.

    Raises:
        BaseException: whatever ``body`` raised, or the renewal's error.
    """
    background = BackgroundTasks()
    if renewal is not None:
        background.start("vault-token-renewal", renewal.keep_alive(stop))
    background.on_failure(lambda _exc: stop.set())
    try:
        await supervised(name, alongside(body(stop), background))
    finally:
        await background.close()


def run_service(
    name: str, settings: Settings, body: Callable[[asyncio.Event], Awaitable[None]],
    *, metrics: bool = True, vault: VaultSession | None = None,
    grace_s: float = STOP_GRACE_S,
) -> int:
    """Run ``body(stop)`` until it returns; SIGINT/SIGTERM set ``stop``. With ``vault``
    (where the secrets came from), its token is kept alive meanwhile by the background task
    ``vault-token-renewal``, supervised: it retries Vault's failures itself, and if it
    dies of anything else ``stop`` is set, the service stops and the process exits
    non-zero with a CRITICAL line, rather than run on until its token expires.

    ``settings`` are checked first against what the process ``name`` uses (the gateway's
    secrets for the gateway only: :meth:`Settings.for_process`).

    A stop signal gives ``body`` ``grace_s`` seconds to return; then it is cancelled
    wherever it waits (a WARNING says so) and the process exits 0 all the same.

    Raises:
        pydantic.ValidationError: the settings do not suit this process (nothing started).
        BaseException: whatever ``body`` raised (see :func:`supervised`).
    """
    settings.for_process(name)
    setup(name, settings.log_level, settings.otlp_endpoint,
          settings.metrics_port if metrics else 0, settings.metrics_host)

    async def main() -> None:
        # Long-lived objects (app, routes, pools, books) leave the collector's view, and
        # young-generation collections run less often: fewer pauses on the hot path.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        this = asyncio.current_task()
        overdue: list[bool] = []

        def cut_short() -> None:
            if this is None or this.done():
                return
            if not overdue:
                log.warning("%s did not stop within %g s of the stop signal; abandoning "
                            "what is left of its clean stop", name, grace_s)
            overdue.append(True)
            this.cancel()
            # Again while it runs on: a ``finally`` may wait on the same dead server
            # (a drain of the NATS connection), or a library turn the first cancellation
            # into an error of its own.
            loop.call_later(_CANCEL_AGAIN_S, cut_short)

        def stop_requested() -> None:
            if not stop.is_set():
                stop.set()
                loop.call_later(grace_s, cut_short)
                _last_resort(name, grace_s + _LAST_RESORT_S)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_requested)
        try:
            await run_with_renewal(name, body, stop, vault)
        except asyncio.CancelledError:
            if not overdue:
                raise

    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        pass
    asyncio.run(main())
    return 0
