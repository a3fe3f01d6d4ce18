"""Background work is supervised, against real NATS and PostgreSQL: when a background
task's dependency breaks, the task retries loudly or its health gauge says "unknown"; a
task that dies of anything else takes its service down with a CRITICAL log line."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from tests.support.harness import eventually, fresh_database, reset_bus_and_cache

from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus, Headers
from tradeplane.adapters.settlement import NatsSettlementBus, PgSettlementStore
from tradeplane.domain import codec
from tradeplane.domain.model import NewOrder, OrderType, Side, TimeInForce
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.engine.service import Engine
from tradeplane.runner import supervised
from tradeplane.settlement.service import INVARIANT_OK, Settler

pytestmark = pytest.mark.integration

ALERTS = Path(__file__).parents[2] / "charts" / "tradeplane" / "rules" / "alerts.yaml"


@dataclass
class Running:
    settler: Settler
    pool: db.Pool
    stop: asyncio.Event
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def running_settlement(nats_url: str, pg_url: str, redis_url: str,
                             **kwargs: float) -> AsyncIterator[Running]:
    """A settlement service on an empty ledger and empty streams."""
    await reset_bus_and_cache(nats_url, redis_url)
    pool = await db.create_pool(await fresh_database(pg_url), 4)
    await db.migrate(pool)
    bus = await Bus.connect(nats_url, name="test-settlement")
    settler = Settler(NatsSettlementBus(bus), PgSettlementStore(pool), **kwargs)
    INVARIANT_OK.set(math.nan)  # not another settlement's verdict: a 1 is this one's
    stop = asyncio.Event()
    task = asyncio.create_task(supervised("settlement", settler.run(stop)))
    try:
        yield Running(settler, pool, stop, task)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)
        await bus.close()
        await pool.close()


def _verdict() -> float | None:
    return REGISTRY.get_sample_value("tradeplane_ledger_invariant_ok")


async def _true(value: bool) -> bool:
    return value


async def test_a_failing_invariant_check_makes_the_verdict_unknown_not_ok(
    nats_url: str, pg_url: str, redis_url: str,
) -> None:
    async with running_settlement(nats_url, pg_url, redis_url, invariant_check_s=0.05) as s:
        await eventually(lambda: _true(_verdict() == 1.0))
        await s.pool.close()  # the watcher's database goes away

        async def unknown() -> bool:
            value = _verdict()
            return value is not None and math.isnan(value)

        await eventually(unknown)
        failures = REGISTRY.get_sample_value("tradeplane_ledger_invariant_check_failures_total")
        assert (failures or 0) > 0
        assert not s.task.done(), "the watcher retries; settlement keeps running"


async def test_the_outbox_relay_retries_a_broken_database_with_growing_delays(
    nats_url: str, pg_url: str, redis_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tradeplane.settlement")
    async with running_settlement(nats_url, pg_url, redis_url, relay_interval_s=0.05) as s:
        await eventually(lambda: _true(_verdict() == 1.0))  # up, its tasks running
        await s.pool.close()  # the relay's database goes away

        def retries() -> list[str]:
            return [r.getMessage() for r in caplog.records
                    if r.getMessage().startswith("outbox relay failed")]

        await eventually(lambda: _true(len(retries()) >= 2), timeout=10)
        first, second = retries()[:2]
        assert "retrying in 1s" in first and "retrying in 2s" in second
        assert not s.task.done(), "the relay retries; settlement keeps running"


async def test_a_background_task_that_dies_takes_settlement_down_with_a_critical_line(
    nats_url: str, pg_url: str, redis_url: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(_rows: object) -> object:
        raise KeyError("order_list_id")  # not a database or bus failure: a defect

    monkeypatch.setattr(db, "relay_commands", broken)
    async with running_settlement(nats_url, pg_url, redis_url, relay_interval_s=0.05) as s:
        with pytest.raises(KeyError):
            await asyncio.wait_for(s.task, 15)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert lines == ["settlement stopping: a background task failed: KeyError: 'order_list_id'"]


async def test_an_engine_whose_clock_dies_stops_instead_of_running_without_it(
    nats_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    rules = dataclasses.replace(DEMO_PAIRS[0], base="SUPV")
    bus = await Bus.connect(nats_url, name="test-engine-supervision")
    client = await Bus.connect(nats_url, name="test-client-supervision")
    try:
        appended = bus.publish_command

        async def publish(symbol: str, data: bytes, msg_id: str,
                          headers: Headers = None) -> int:
            if msg_id.startswith("k"):  # the clock's Tick
                raise ValueError("tick not encodable")
            return await appended(symbol, data, msg_id, headers)

        monkeypatch.setattr(bus, "publish_command", publish)
        engine = Engine(bus, rules)
        run = asyncio.create_task(engine.run(asyncio.Event()))
        now = int(time.time() * 1000)
        await client.ensure_symbol(rules.symbol)
        order = NewOrder(1, 7, Side.BUY, OrderType.LIMIT, TimeInForce.GTD, 100, 1, 0, False,
                         now, good_till=now + 200)
        await client.publish_command(rules.symbol, codec.encode([order]), "supv-1")
        with pytest.raises(ValueError, match="tick not encodable"):
            await asyncio.wait_for(run, 10)
    finally:
        await client.close()
        await bus.close()


def test_an_unknown_ledger_verdict_alerts_after_ten_minutes(tmp_path: Path) -> None:
    """promtool: NaN (unknown) for ten minutes fires the warning; a violation (0) still
    fires only the critical imbalance alert, and 1 fires nothing."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package ships it)")
    rules = {r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"]
             for r in g["rules"]}

    def fires(alert: str, severity: str) -> list[dict[str, object]]:
        return [{"exp_labels": {"severity": severity},
                 "exp_annotations": rules[alert]["annotations"]}]

    tests = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": "tradeplane_ledger_invariant_ok",
                              "values": "1 NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN "
                                        "0 0 1 1"}],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "TradeplaneLedgerInvariantUnknown",
                 "exp_alerts": []},
                {"eval_time": "5m", "alertname": "TradeplaneLedgerImbalance",
                 "exp_alerts": []},
                {"eval_time": "12m", "alertname": "TradeplaneLedgerInvariantUnknown",
                 "exp_alerts": fires("TradeplaneLedgerInvariantUnknown", "warning")},
                {"eval_time": "14m", "alertname": "TradeplaneLedgerInvariantUnknown",
                 "exp_alerts": []},
                {"eval_time": "14m", "alertname": "TradeplaneLedgerImbalance",
                 "exp_alerts": fires("TradeplaneLedgerImbalance", "critical")},
                {"eval_time": "16m", "alertname": "TradeplaneLedgerImbalance",
                 "exp_alerts": []},
            ],
        }],
    }
    path = tmp_path / "unknown-test.yaml"
    path.write_text(yaml.safe_dump(tests))
    done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
