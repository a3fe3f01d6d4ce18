"""A stop request during a fault: every service process stops within its grace period
whatever is down. An engine, settlement and market data whose NATS was killed under them
each exit within the runner's grace (plus the last-resort margin) of SIGTERM, where an
engine used to wait on its last snapshot and the drain of its connection for 14 s and more.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.harness import RAISED_LIMITS, free_port, fresh_database
from tests.support.procs import Processes

from tradeplane.adapters import db
from tradeplane.config import Settings
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.platform.servers import NatsServer
from tradeplane.runner import STOP_GRACE_S

pytestmark = pytest.mark.e2e

#: The grace, a margin for the interpreter's exit; well under the local supervisor's 15 s
#: and Kubernetes' 30 s.
DEADLINE_S = STOP_GRACE_S + 3.0


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _wait_for_log(procs: Processes, name: str, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in procs.log(name):
        assert time.monotonic() < deadline, f"{name} never logged {text!r}:\n{procs.log(name)}"
        assert procs.procs[name].poll() is None, f"{name} exited:\n{procs.log(name)}"
        time.sleep(0.1)


async def test_services_whose_nats_was_killed_stop_within_their_grace_period_on_sigterm(
    own_nats: NatsServer, pg_url: str, redis_url: str, tmp_path: Path,
) -> None:
    dsn = await fresh_database(pg_url)
    pool = await db.create_pool(dsn, 2)
    try:
        await db.migrate(pool)
        await db.upsert_pair(pool, DEMO_PAIRS[0])
    finally:
        await pool.close()
    settings = Settings(dev_mode=True, nats_url=own_nats.url, database_url=dsn,
                        redis_url=redis_url, http_port=free_port(), **RAISED_LIMITS)
    procs = Processes(settings, tmp_path)
    try:
        procs.start("matching", "matching", "--symbol", DEMO_PAIRS[0].name)
        procs.start("settlement", "settlement")
        procs.start("marketdata", "marketdata")
        _wait_for_log(procs, "matching", "engine recovered", 60)
        _wait_for_log(procs, "marketdata", "market-data state loaded", 60)
        pid = own_nats.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        for name in procs.procs:  # each was connected, and has noticed
            _wait_for_log(procs, name, "nats: encountered error", 30)
        started = time.monotonic()
        for p in procs.procs.values():
            p.send_signal(signal.SIGTERM)
        took: dict[str, float] = {}
        for name, p in list(procs.procs.items()):
            try:
                p.wait(max(0.1, DEADLINE_S - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                took[name] = float("inf")
                continue
            took[name] = time.monotonic() - started
            procs.procs.pop(name)
        assert all(t <= DEADLINE_S for t in took.values()), (took, {
            n: procs.log(n)[-2000:] for n in took})
    finally:
        for p in procs.procs.values():
            p.kill()
            p.wait()
