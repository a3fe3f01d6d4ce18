"""Supervision of background work without servers: a background task that dies is the
process's failure (never silent), one that returns or is closed is not, a failing
dependency is retried with doubling delays, and the runner stops a service whose token
renewal died, logs it on one CRITICAL line and raises it."""

from __future__ import annotations

import asyncio
import logging

import pytest
from tests.support.harness import eventually

from tradeplane.runner import run_with_renewal
from tradeplane.supervision import BackgroundTasks, Backoff


async def _true(value: bool) -> bool:
    return value


def test_backoff_doubles_after_each_failure_up_to_its_cap_and_restarts_after_a_success(
) -> None:
    b = Backoff(1.0, 5.0)
    assert [b.failed() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    b.succeeded()
    assert b.failed() == 1.0


async def test_the_first_task_that_dies_is_the_failure_and_its_watcher_is_told() -> None:
    tasks = BackgroundTasks()
    told: list[BaseException] = []
    tasks.on_failure(told.append)

    async def dies() -> None:
        await asyncio.sleep(0)
        raise KeyError("pairs")

    tasks.start("pair-refresh", dies())
    tasks.start("idle", asyncio.Event().wait())
    await eventually(lambda: _true(bool(told)))
    assert isinstance(tasks.failure, KeyError) and told == [tasks.failure]
    assert "background task: pair-refresh" in (tasks.failure.__notes__ or [])
    await tasks.close()


async def test_a_watcher_that_comes_after_the_failure_is_told_at_once() -> None:
    tasks = BackgroundTasks()
    tasks.fail("order-holds", ValueError("3 results for a batch of 4"))
    told: list[BaseException] = []
    tasks.on_failure(told.append)
    assert [str(e) for e in told] == ["3 results for a batch of 4"]


async def test_a_task_that_returns_or_is_closed_is_no_failure() -> None:
    tasks = BackgroundTasks()
    done = tasks.start("nothing-to-sync", asyncio.sleep(0))
    tasks.start("loop", asyncio.Event().wait())
    await done
    await tasks.close()
    assert tasks.failure is None


async def test_a_task_cancelled_by_someone_else_is_a_failure() -> None:
    tasks = BackgroundTasks()
    task = tasks.start("loop", asyncio.Event().wait())
    await asyncio.sleep(0)
    task.cancel()
    await eventually(lambda: _true(tasks.failure is not None))
    assert isinstance(tasks.failure, asyncio.CancelledError)


class BrokenRenewal:
    """A token renewal that dies of a defect (Vault's own failures it retries)."""

    async def keep_alive(self, stop: asyncio.Event) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("renew() returned nonsense")


async def test_a_service_whose_token_renewal_dies_stops_with_one_critical_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The renewal's death sets ``stop``: the service's body ends as on SIGTERM, then the
    runner logs the failure and raises it (the process exits non-zero)."""
    stopped_cleanly = False

    async def body(stop: asyncio.Event) -> None:
        nonlocal stopped_cleanly
        await stop.wait()
        stopped_cleanly = True

    with pytest.raises(RuntimeError, match="nonsense"):
        await asyncio.wait_for(
            run_with_renewal("settlement", body, asyncio.Event(), BrokenRenewal()), 5)
    assert stopped_cleanly
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert lines == ["settlement stopping: a background task failed: RuntimeError: "
                     "renew() returned nonsense (background task: vault-token-renewal)"]


async def test_a_service_that_stops_ends_its_token_renewal_without_a_failure() -> None:
    renewing = asyncio.Event()
    ended: list[str] = []

    class Renewal:
        async def keep_alive(self, stop: asyncio.Event) -> None:
            renewing.set()
            try:
                await asyncio.Event().wait()  # renews forever, stop or not
            except asyncio.CancelledError:
                ended.append("cancelled")
                raise

    async def body(stop: asyncio.Event) -> None:
        await renewing.wait()

    await asyncio.wait_for(run_with_renewal("settlement", body, asyncio.Event(), Renewal()), 5)
    assert ended == ["cancelled"]
