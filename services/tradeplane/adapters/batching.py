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
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(
        self, flush: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_batch: int = 256,
        workers: int = 2, isolate: bool = False,
    ) -> None:
        self._flush = flush
        self._max = max_batch
        self._isolate = isolate
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._work()) for _ in range(workers)]

    async def submit(self, item: T) -> R:
        """Raises whatever ``flush`` raised for the batch this item was in (with
        ``isolate``: for this item alone)."""
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, fut))
        return await fut

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await self._flush([item for item, _ in batch])
            except Exception as exc:
                if self._isolate and len(batch) > 1:
                    for one in batch:
                        await self._flush_alone(*one)
                    continue
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
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
