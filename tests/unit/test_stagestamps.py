"""The benchmark's stage stamps: off costs nothing and records nothing; on, each order's
stamps land in its own slot, whatever the interleaving of the tasks serving orders."""

from __future__ import annotations

import asyncio
from array import array

from tradeplane import stagestamps


def _rows(data: bytes) -> list[tuple[int, ...]]:
    a = array("q")
    a.frombytes(data)
    n = len(stagestamps.STAGES)
    return [tuple(a[i:i + n]) for i in range(0, len(a), n)]


def test_off_records_nothing() -> None:
    stagestamps.enable(0)
    stagestamps.received()
    stagestamps.stamp(stagestamps.ACKED)
    assert not stagestamps.enabled()
    assert stagestamps.drain() == b""


def test_interleaved_orders_keep_their_own_stamps() -> None:
    stagestamps.enable(8)

    async def order(delay: float) -> None:
        stagestamps.received()
        await asyncio.sleep(delay)
        for stage in range(1, len(stagestamps.STAGES)):
            stagestamps.stamp(stage)

    async def main() -> None:
        await asyncio.gather(order(0.02), order(0.0))

    try:
        asyncio.run(main())
        rows = _rows(stagestamps.drain())
        assert len(rows) == 2
        for row in rows:
            assert all(row) and list(row) == sorted(row)
        slow, fast = rows  # started first, finished last
        assert slow[-1] - slow[0] > fast[-1] - fast[0]
        assert stagestamps.drain() == b""  # drained: the ring starts over
    finally:
        stagestamps.enable(0)


def test_the_ring_keeps_the_latest_orders() -> None:
    stagestamps.enable(2)
    try:
        for _ in range(5):
            stagestamps.received()
        assert len(_rows(stagestamps.drain())) == 2
    finally:
        stagestamps.enable(0)
