"""The gateway's kill-switch poll under supervision, without servers: a database that
fails is retried with doubling delays (the last known state stays, the gateway serves
on); any other error ends the poll as the gateway's background failure, which stops the
gateway (``gateway.app.serve``; a real process: tests/e2e/test_gateway_exit.py)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from tests.support.harness import eventually

from tradeplane.adapters.cipher import SecretCipher
from tradeplane.domain.errors import Unavailable
from tradeplane.gateway.auth import KeyCache
from tradeplane.gateway.control import Controls
from tradeplane.supervision import BackgroundTasks


class FlagStore:
    """The pairs use case's kill-switch read: ``answers`` in turn (an exception is
    raised), then the last one for ever."""

    def __init__(self, *answers: bool | BaseException) -> None:
        self.answers = list(answers)
        self.reads = 0

    async def kill_switch_state(self) -> dict[str, Any]:
        self.reads += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return {"on": answer}


class QuietChannel:
    async def on_gateway(self, _handler: Any) -> Callable[[], Awaitable[None]]:
        return self._unsubscribe

    async def on_pairs(self, _handler: Any) -> Callable[[], Awaitable[None]]:
        return self._unsubscribe

    async def _unsubscribe(self) -> None:
        return None


def controls(flags: FlagStore) -> Controls:
    """Controls whose pairs use case is ``flags`` (the rest is never reached)."""
    unused: Any = None
    ctx: Any = SimpleNamespace()
    pair_cases: Any = flags
    channel: Any = QuietChannel()
    return Controls(ctx, KeyCache(SecretCipher("k"), unused), channel, unused,
                    lambda _gateways: pair_cases, lambda _events: unused)


async def _true(value: bool) -> bool:
    return value


async def test_a_kill_switch_poll_whose_database_fails_retries_with_doubling_delays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tradeplane.gateway")
    down = Unavailable("PostgreSQL: connection refused")
    flags = FlagStore(False, down, down, down, True)
    c = controls(flags)
    background = BackgroundTasks()
    await c.start(background, poll_s=0.1)
    try:
        await eventually(lambda: _true(c.halted))  # followed the flag once it could
        retries = [r.getMessage() for r in caplog.records
                   if r.getMessage().startswith("kill-switch poll failed")]
        assert [m.split(";")[1].split(":")[0] for m in retries] == [
            " retrying in 0.1s", " retrying in 0.2s", " retrying in 0.4s"]
        assert background.failure is None
    finally:
        await background.close()
        await c.stop()


async def test_a_kill_switch_poll_that_fails_unexpectedly_is_the_gateways_failure() -> None:
    flags = FlagStore(False, KeyError("on"))
    c = controls(flags)
    background = BackgroundTasks()
    told: list[BaseException] = []
    background.on_failure(told.append)
    await c.start(background, poll_s=0.01)
    try:
        await eventually(lambda: _true(bool(told)))
        assert isinstance(background.failure, KeyError)
        assert "background task: kill-switch-poll" in (background.failure.__notes__ or [])
    finally:
        await background.close()
        await c.stop()
