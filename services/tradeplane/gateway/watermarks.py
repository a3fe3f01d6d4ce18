"""Read-your-writes for order responses: wait until the ledger has settled a command.

Settlement publishes ``settled.<SYMBOL>`` with the last command sequence it committed; a
request that sent command ``seq`` waits until the symbol's watermark reaches it, then reads
the order from PostgreSQL, the source of truth.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable


class Watermarks:
    def __init__(self, initial: Callable[[], Awaitable[dict[str, int]]]) -> None:
        self._initial = initial
        self._marks: dict[str, int] = {}
        self._waiters: dict[str, list[tuple[int, int, asyncio.Future[None]]]] = {}
        self._ids = itertools.count()
        self._loaded = False

    async def on_settled(self, subject: str, data: bytes) -> None:
        symbol = subject.rsplit(".", 1)[-1]
        self.advance(symbol, int(data))

    def advance(self, symbol: str, seq: int) -> None:
        if seq <= self._marks.get(symbol, 0):
            return
        self._marks[symbol] = seq
        heap = self._waiters.get(symbol)
        while heap and heap[0][0] <= seq:
            _, _, fut = heapq.heappop(heap)
            if not fut.done():
                fut.set_result(None)

    async def wait(self, symbol: str, seq: int, timeout: float) -> bool:
        """True once ``seq`` is settled; False on timeout."""
        if not self._loaded:
            for sym, s in (await self._initial()).items():
                self.advance(sym, s)
            self._loaded = True
        if self._marks.get(symbol, 0) >= seq:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters.setdefault(symbol, []), (seq, next(self._ids), fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return False
        return True
