"""The order path's micro-batcher and the settlement watermarks."""

from __future__ import annotations

import asyncio

import pytest

from tradeplane.adapters.batching import Batcher
from tradeplane.gateway.watermarks import Watermarks


async def test_concurrent_submissions_share_a_flush_and_each_gets_its_own_result() -> None:
    flushed: list[list[int]] = []
    gate = asyncio.Event()

    async def flush(items: list[int]) -> list[int]:
        flushed.append(items)
        await gate.wait()
        return [i * 10 for i in items]

    b: Batcher[int, int] = Batcher(flush, workers=1)
    first = asyncio.create_task(b.submit(1))
    await asyncio.sleep(0)  # the worker takes 1 alone and waits in flush
    rest = [asyncio.create_task(b.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    gate.set()
    assert await first == 10
    assert [await t for t in rest] == [20, 30, 40]
    assert flushed == [[1], [2, 3, 4]]
    await b.close()


async def test_a_failed_flush_fails_every_request_of_that_batch_only() -> None:
    async def flush(items: list[int]) -> list[int]:
        if 13 in items:
            raise RuntimeError("database said no")
        return items

    b: Batcher[int, int] = Batcher(flush, workers=1, max_batch=1)
    bad = asyncio.create_task(b.submit(13))
    good = asyncio.create_task(b.submit(7))
    with pytest.raises(RuntimeError, match="database said no"):
        await bad
    assert await good == 7
    await b.close()


async def test_an_isolating_batcher_fails_only_the_item_that_fails_the_batch() -> None:
    flushed: list[list[int]] = []
    gate = asyncio.Event()

    async def flush(items: list[int]) -> list[int]:
        flushed.append(items)
        await gate.wait()
        if 13 in items:  # one element aborts the whole statement
            raise RuntimeError("value out of range")
        return [i * 10 for i in items]

    b: Batcher[int, int] = Batcher(flush, workers=1, isolate=True)
    first = asyncio.create_task(b.submit(1))
    await asyncio.sleep(0)
    rest = {i: asyncio.create_task(b.submit(i)) for i in (2, 13, 4)}
    await asyncio.sleep(0)
    gate.set()
    assert await first == 10
    assert await rest[2] == 20
    assert await rest[4] == 40
    with pytest.raises(RuntimeError, match="out of range"):
        await rest[13]
    assert flushed == [[1], [2, 13, 4], [2], [13], [4]]
    await b.close()


async def test_a_batcher_without_isolation_fails_the_whole_batch_once() -> None:
    calls = 0

    async def flush(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        raise RuntimeError("bus down")

    b: Batcher[int, int] = Batcher(flush, workers=1)
    tasks = [asyncio.create_task(b.submit(i)) for i in range(3)]
    for t in tasks:
        with pytest.raises(RuntimeError, match="bus down"):
            await t
    assert calls == 1
    await b.close()


async def test_watermark_wait_returns_once_the_sequence_is_settled() -> None:
    async def initial() -> dict[str, int]:
        return {"BTCUSDT": 5}

    marks = Watermarks(initial)
    assert await marks.wait("BTCUSDT", 5, timeout=0.1)  # already settled at start
    waiter = asyncio.create_task(marks.wait("BTCUSDT", 8, timeout=5))
    await asyncio.sleep(0)
    await marks.on_settled("settled.BTCUSDT", b"7")
    await asyncio.sleep(0)
    assert not waiter.done()
    await marks.on_settled("settled.BTCUSDT", b"9")
    assert await waiter is True
    assert await marks.wait("ETHBTC", 1, timeout=0.05) is False  # never settled: timeout
