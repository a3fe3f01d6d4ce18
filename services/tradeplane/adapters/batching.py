"""Micro-batching for the order path: concurrent requests share one database round trip
and one JetStream message, with no added wait when the system is idle.

Each of ``workers`` tasks takes the first waiting item, then everything else already
waiting (up to ``max_batch``), runs ``flush`` on the lot and hands each caller its result.
Under load, batches grow by themselves; at low load a batch is a single request.

One request must never fail another's. Where ``flush`` is all or nothing for the batch
and each item could fail on its own (a statement over arrays: one bad element aborts the
whole statement, and nothing of it is kept), the batcher is made with ``isolate=True``:
a failed batch is flushed again one item at a time, so only the offending item's caller
gets the error. Where a failure is the batch's as a whole (the bus is down), isolation
would only repeat it, and is off.

A worker that dies (an error outside a flush's own failure: ``flush`` returned the wrong
number of results, or raised a BaseException) must not leave callers waiting forever: the
batcher is then broken. The batch in hand and every waiting request fail with
:class:`BatcherFailed`, so does every later ``submit`` at once, and ``on_failure`` is told
(the gateway stops and is restarted: ``gateway.app.serve``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from tradeplane.domain.errors import Unavailable

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("tradeplane.batching")


class BatcherFailed(Unavailable):
    """The batcher's worker died: the request was not (or not provably) done, and the
    process is stopping."""


class Batcher(Generic[T, R]):
    """``name`` says which batcher in a failure; ``on_failure(exc)`` is told when a
    worker dies (without it, the death is logged as an error)."""

    def __init__(
        self, flush: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_batch: int = 256,
        workers: int = 2, isolate: bool = False, name: str = "batcher",
        on_failure: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self._flush = flush
        self._max = max_batch
        self._isolate = isolate
        self.name = name
        self._on_failure = on_failure
        self._broken: BaseException | None = None  # why a worker died
        self._closing = False
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._work(), name=f"{name}-worker")
                       for _ in range(workers)]

    async def submit(self, item: T) -> R:
        """Raises whatever ``flush`` raised for the batch this item was in (with
        ``isolate``: for this item alone), or :class:`BatcherFailed` when a worker died."""
        if self._broken is not None:
            raise BatcherFailed(f"{self.name} stopped: {self._broken!r}")
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, fut))
        return await fut

    async def close(self) -> None:
        self._closing = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _work(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            await self._serve(batch)
        except BaseException as exc:
            if self._closing:
                raise
            self._die(exc, batch)
            if not isinstance(exc, Exception | asyncio.CancelledError):
                raise  # KeyboardInterrupt, SystemExit: the loop's to handle

    def _die(self, exc: BaseException, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        """Fail the batch in hand and every waiting request; refuse the next ones."""
        first = self._broken is None
        if first:
            self._broken = exc
        failed = BatcherFailed(f"{self.name} stopped: {exc!r}")
        waiting = list(batch)
        while not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for _, fut in waiting:
            if not fut.done():
                fut.set_exception(failed)
        if not first:
            return
        if self._on_failure is not None:
            self._on_failure(self.name, exc)
        else:
            log.error("%s: a worker died: %s: %s", self.name, type(exc).__name__, exc,
                      exc_info=exc)

    async def _serve(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        """Take and flush batches forever; ``batch`` is the one in hand."""
        while True:
            batch.clear()
            batch.append(await self._queue.get())
            while len(batch) < self._max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await self._flush([item for item, _ in batch])
            except Exception as exc:
                if self._isolate and len(batch) > 1:
                    for item, fut in batch:
                        await self._flush_alone(item, fut)
                    continue
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            if len(results) != len(batch):  # which result is whose is unknown: a defect
                raise ValueError(f"{self.name}: {len(results)} results for a batch of "
                                 f"{len(batch)}")
            for (_, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)

    async def _flush_alone(self, item: T, fut: asyncio.Future[R]) -> None:
        try:
            (res,) = await self._flush([item])
        except Exception as exc:
            if not fut.done():
                fut.set_exception(exc)
            return
        if not fut.done():
            fut.set_result(res)
