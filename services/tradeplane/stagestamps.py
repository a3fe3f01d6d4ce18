"""Per-order stage stamps for the end-to-end benchmark: where an order's time goes
between the request arriving and its acknowledgement (``tradeplane bench e2e``).

Off unless the gateway runs with ``TRADEPLANE_STAGE_STAMPS=<orders>`` (dev mode only):
then each order entered (REST or WebSocket API) takes a slot of a preallocated ring and
writes ``time.monotonic_ns()`` at each of :data:`STAGES`. Off, each stamp is one global
read and a comparison. The ring is read (and emptied) by the benchmark through the
gateway's debug path ``GET /debug/stages`` (served only when the stamps are on).

The slot follows the request's own task (a context variable), so the stamps stay right
while requests interleave; a slot is reused after ``size`` later orders.
"""

from __future__ import annotations

import contextvars
import time
from array import array
from typing import Final

#: In order: the request read (REST: before the guard; WebSocket API: its frame parsed and
#: found to be ``order.place``), admitted (authenticated, charged to the
#: rate limits, parsed and checked against the pair's rules), its hold committed in
#: PostgreSQL, its command stored in JetStream, the answer handed to the server (WebSocket
#: API: queued for the socket's sender).
STAGES: Final = ("received", "admitted", "held", "published", "acked")
RECEIVED, ADMITTED, HELD, PUBLISHED, ACKED = range(len(STAGES))
_N: Final = len(STAGES)


class StageRing:
    """``size`` orders' stamps, ``len(STAGES)`` signed 64-bit nanoseconds each (0 = that
    stage was not reached)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.stamps = array("q", bytes(8 * _N * size))
        self.next = 0  # orders started since the last drain

    def start(self) -> int:
        slot = self.next % self.size
        self.next += 1
        base = slot * _N
        self.stamps[base] = time.monotonic_ns()
        for i in range(1, _N):
            self.stamps[base + i] = 0
        return slot

    def drain(self) -> bytes:
        """The stamps of the orders started since the last drain (the latest ``size``
        of them), as native int64s, ``len(STAGES)`` per order; the ring starts over."""
        used = min(self.next, self.size)
        out = self.stamps[: used * _N].tobytes()
        self.next = 0
        return out


_ring: StageRing | None = None
_slot: contextvars.ContextVar[int] = contextvars.ContextVar("stage_slot", default=-1)


def enable(size: int) -> None:
    """Stamp the next orders, ``size`` of them kept (0: off)."""
    global _ring
    _ring = StageRing(size) if size > 0 else None


def enabled() -> bool:
    return _ring is not None


def received() -> None:
    """An order request begins (in the task that will serve it)."""
    if _ring is not None:
        _slot.set(_ring.start())


def stamp(stage: int) -> None:
    """This task's order reached ``stage``."""
    if _ring is not None:
        slot = _slot.get()
        if slot >= 0:
            _ring.stamps[slot * _N + stage] = time.monotonic_ns()


def drain() -> bytes:
    """See :meth:`StageRing.drain`; empty when off."""
    return _ring.drain() if _ring is not None else b""
