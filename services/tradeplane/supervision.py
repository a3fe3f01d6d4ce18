"""Supervision of background work: loops that run beside a process's main work for its
lifetime, and the backoff of a loop that retries a dependency that is down.

A background task either retries what it is built to retry (its dependency unavailable:
logged once per :class:`Backoff` step, and it goes on) or dies, and a task that dies takes
its process down: :class:`BackgroundTasks` hands the first failure to the process's main
work, which stops and raises it, and :func:`tradeplane.runner.supervised` logs it on one
CRITICAL line before the process exits non-zero (docs/architecture.md, "Supervision").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("tradeplane.supervision")


class Backoff:
    """Delays between the tries of a loop whose dependency is unavailable: ``first``,
    doubled after each failure in a row, at most ``cap``; back to ``first`` after a
    success."""

    __slots__ = ("_next", "cap", "first")

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def failed(self) -> float:
        """The delay to wait before the next try (the next failure waits twice as long)."""
        delay = self._next
        self._next = min(delay * 2, self.cap)
        return delay

    def succeeded(self) -> None:
        self._next = self.first


#: How long :meth:`BackgroundTasks.close` waits before it cancels a task again.
CANCEL_AGAIN_S = 0.5

#: Told of the first background task that died (its error carries the task's name in a
#: note).
OnFailure = Callable[[BaseException], None]


class BackgroundTasks:
    """Tasks that run for a process's lifetime beside its main work (the gateway's HTTP
    server). Each is started by the component that owns its loop; the first one that ends
    with an error (or a failure reported with :meth:`fail`) is :attr:`failure`, and the
    process's main work learns of it through :meth:`on_failure`, stops and raises it.
    A task that returns has finished its work (nothing to do): that is not a failure.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._watchers: list[OnFailure] = []
        self._closing = False
        #: The first failure, None while every task is alive (or has finished cleanly).
        self.failure: BaseException | None = None

    def start(self, name: str, loop: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``loop`` as the task ``name`` until it ends or :meth:`close`."""
        task = asyncio.create_task(loop, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def on_failure(self, watcher: OnFailure) -> None:
        """Call ``watcher`` with the first failure: at once if there was one already."""
        self._watchers.append(watcher)
        if self.failure is not None:
            watcher(self.failure)

    def fail(self, name: str, exc: BaseException) -> None:
        """Report that ``name``, a background worker not started here, died of ``exc``."""
        if self._closing:
            return
        exc.add_note(f"background task: {name}")
        if self.failure is None:
            self.failure = exc
            for watcher in self._watchers:
                watcher(exc)
        else:  # said, although the first failure is the one the process stops with
            log.error("background task %s failed too: %s: %s", name, type(exc).__name__,
                      exc, exc_info=exc)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            if not self._closing:  # cancelled by someone else: it no longer runs
                self.fail(task.get_name(), asyncio.CancelledError(
                    f"background task {task.get_name()} was cancelled"))
            return
        exc = task.exception()
        if exc is not None:
            self.fail(task.get_name(), exc)

    async def close(self) -> None:
        """Cancel every task and wait for them to end (their errors are not failures
        any more)."""
        self._closing = True
        pending = set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            # Again while one runs on: a client library may turn the cancellation into
            # its own error (redis-py: a connection error) that the loop retries.
            _, pending = await asyncio.wait(pending, timeout=CANCEL_AGAIN_S)


async def alongside(work: Awaitable[None], background: BackgroundTasks) -> None:
    """Await ``work`` (which the failure of a ``background`` task is expected to stop, by
    a watcher the caller set); then raise that failure, if there was one.

    Raises:
        BaseExceptionGroup: a background task died (with ``work``'s own error, if any).
        BaseException: whatever ``work`` raised, when no background task died.
    """
    try:
        await work
    except BaseException as exc:
        if background.failure is None:
            raise
        raise BaseExceptionGroup("a background task failed",
                                 [background.failure, exc]) from None
    if background.failure is not None:
        raise BaseExceptionGroup("a background task failed", [background.failure])


#: How long a process's event loop may go without running a beat of :func:`loop_watchdog`
#: before the process is ended (a loop that blocked: nothing it owns can make progress).
LOOP_STALL_S = 30.0


@contextlib.asynccontextmanager
async def loop_watchdog(name: str, stall_s: float = LOOP_STALL_S,
                        exit_code: int = 70) -> AsyncIterator[None]:
    """While inside: a task beats every second on the running loop, and a thread ends the
    process (CRITICAL line with every thread's stack, then ``os._exit(exit_code)``) when no
    beat came for ``stall_s``. For crash-only processes (an engine recovers from its
    snapshot and log): a loop blocked for that long is dead to its work, and a restart is
    the way back. A soak once saw an engine give no sign of life for 95 s after NATS
    restarted, its orders unprocessed, then exit on a bus timeout; the stacks this logs say
    where such a loop is stuck.
    """
    last = [time.monotonic()]
    done = threading.Event()

    async def beat() -> None:
        while True:
            last[0] = time.monotonic()
            await asyncio.sleep(1.0)

    def watch() -> None:
        while not done.wait(1.0):
            quiet = time.monotonic() - last[0]
            if quiet >= stall_s:
                frames = sys._current_frames()
                stacks = "\n".join(
                    f"thread {ident}:\n" + "".join(traceback.format_stack(frame))
                    for ident, frame in frames.items())
                log.critical("%s: event loop blocked for %.0f s; exiting to be restarted\n%s",
                             name, quiet, stacks)
                logging.shutdown()
                os._exit(exit_code)

    task = asyncio.create_task(beat(), name=f"{name}-loop-beat")
    thread = threading.Thread(target=watch, name=f"{name}-loop-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
