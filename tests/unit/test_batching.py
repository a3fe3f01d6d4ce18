"""The order path's micro-batcher and the settlement watermarks."""

from __future__ import annotations

import asyncio

import pytest

from tradeplane.adapters.batching import Batcher, BatcherFailed
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


async def test_a_worker_that_dies_fails_its_batch_and_the_waiting_requests_and_reports_it(
) -> None:
    """flush returning too few results is a defect outside a flush's own failure: nobody
    may wait forever, later requests are refused at once, and the owner is told once."""
    gate = asyncio.Event()
    told: list[tuple[str, BaseException]] = []

    async def flush(items: list[int]) -> list[int]:
        await gate.wait()
        return items[:-1]  # one result short

    b: Batcher[int, int] = Batcher(flush, workers=1, name="holds",
                                   on_failure=lambda name, exc: told.append((name, exc)))
    in_flush = asyncio.create_task(b.submit(1))
    await asyncio.sleep(0)  # the worker holds [1] in its flush
    queued = [asyncio.create_task(b.submit(i)) for i in (2, 3)]
    await asyncio.sleep(0)
    gate.set()
    for t in (in_flush, *queued):
        with pytest.raises(BatcherFailed, match="holds stopped"):
            await asyncio.wait_for(t, 5)
    with pytest.raises(BatcherFailed, match="holds stopped"):
        await asyncio.wait_for(b.submit(4), 5)
    assert [(name, type(exc)) for name, exc in told] == [("holds", ValueError)]
    await b.close()


async def test_a_worker_cancelled_by_someone_else_does_not_leave_its_batch_waiting() -> None:
    entered = asyncio.Event()
    told: list[str] = []

    async def flush(items: list[int]) -> list[int]:
        entered.set()
        raise asyncio.CancelledError  # a library's cancellation leaking out of a flush

    b: Batcher[int, int] = Batcher(flush, workers=1,
                                   on_failure=lambda name, _exc: told.append(name))
    with pytest.raises(BatcherFailed):
        await asyncio.wait_for(b.submit(1), 5)
    assert entered.is_set() and told == ["batcher"]
    await b.close()


async def test_closing_a_batcher_is_not_a_failure() -> None:
    told: list[str] = []

    async def flush(items: list[int]) -> list[int]:
        return items

    b: Batcher[int, int] = Batcher(flush, workers=2,
                                   on_failure=lambda name, _exc: told.append(name))
    assert await b.submit(5) == 5
    await b.close()
    assert told == []


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
