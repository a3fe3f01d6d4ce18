"""The pods' commands, run as the cluster would run them: the container specs the chart
renders (the migration Job; gateway, settlement and market data with their migrate init
containers) and the engine Deployment the operator generates for a TradingPair, each in a
container of the image built from the Dockerfile — its command, args, env and envFrom
(the chart's Secret, with the test's NATS, PostgreSQL and Redis in it), user and group,
read-only root, dropped capabilities, memory limit, emptyDir and ConfigMap volumes, probes
— against real servers. Orders go through the containerised gateway; the engine's
container is ``docker kill``-ed under load and started again: no acknowledged order is
lost and the ledger's invariants hold.

What differs from a cluster (tests/support/containers.py): the containers share the host's
network, so each named port gets a free port and the variable that sets it follows; the
Services' DNS names are replaced by the servers' addresses in the Secret; tracing is off
(no collector here); the engine's Vault token volume is an empty folder (no Vault)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest
from tests.support.cluster import SYMBOL, Cluster, running_cluster
from tests.support.containers import docker
from tests.support.harness import Trader, eventually

from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus

#: The first test to ask for the image may build it: debootstrap (first run on a machine),
#: the wheelhouse and the build take up to three minutes on two busy cores.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
async def cluster(
    tradeplane_image: str, nats_url: str, pg_url: str, redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Cluster]:
    # No trace collector in this test: tracing off.
    async with running_cluster(tradeplane_image, nats_url, pg_url, redis_url,
                               tmp_path_factory.mktemp("pods"),
                               env={"*": {"TRADEPLANE_OTLP_ENDPOINT": ""}}) as c:
        yield c


def test_every_pod_starts_from_its_spec_in_the_image_and_passes_its_probes(
    cluster: Cluster,
) -> None:
    for name, pod in cluster.pods.items():
        for started in pod.containers.values():
            print(f"\n{name}/{started.name}: ready in {started.ready_s:.1f} s")
            # The process itself, not only the container's configuration: PID 1's ids.
            status = docker("exec", started.name, "cat", "/proc/1/status").stdout
            uid = next(line.split() for line in status.splitlines() if line.startswith("Uid:"))
            assert uid[1:] == ["10001"] * 4, (started.name, uid)
            cap_eff = next(line.split()[1] for line in status.splitlines()
                           if line.startswith("CapEff:"))
            assert int(cap_eff, 16) == 0, (started.name, cap_eff)
            writable = docker("exec", started.name, "sh", "-c",
                              "touch /probe 2>/dev/null && echo root; touch /tmp/probe && "
                              "echo tmp").stdout.split()
            assert writable == ["tmp"], (started.name, writable)
    assert cluster.pods["migrate"].containers == {}  # the Job ran to completion


async def _flow(traders: list[Trader], seconds: float, acked: list[int], seed: int) -> None:
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    mine: dict[int, list[int]] = {t.account: [] for t in traders}
    while time.monotonic() < deadline:
        t = rng.choice(traders)
        if mine[t.account] and rng.random() < 0.25:
            oid = mine[t.account].pop(rng.randrange(len(mine[t.account])))
            r = await t.api.signed("DELETE", "/api/v3/order", symbol=SYMBOL, orderId=oid)
            assert r.status_code in (200, 400, 503), r.text
            continue
        price = 60000 + rng.randint(-20, 20) * 0.5
        r = await t.api.signed(
            "POST", "/api/v3/order", symbol=SYMBOL, side=rng.choice(["BUY", "SELL"]),
            type="LIMIT", timeInForce="GTC", price=f"{price:.2f}",
            quantity=f"{rng.randint(1, 50) / 1000:.3f}", newOrderRespType="ACK",
        )
        assert r.status_code == 200, r.text
        acked.append(r.json()["orderId"])
        mine[t.account].append(r.json()["orderId"])


async def test_orders_through_the_containerised_gateway_survive_docker_kill_of_the_engine(
    cluster: Cluster,
) -> None:
    alice, bob = await cluster.trader("alice"), await cluster.trader("bob")
    engine = cluster.pods["engine"]
    acked: list[int] = []
    try:
        flows = [asyncio.create_task(_flow([alice, bob], 8.0, acked, seed))
                 for seed in range(4)]
        await asyncio.sleep(2.5)
        before = len(acked)
        await asyncio.to_thread(engine.kill, "engine")
        await asyncio.sleep(0.5)
        await asyncio.to_thread(engine.restart, "engine")
        await asyncio.to_thread(engine.wait_ready)
        await asyncio.gather(*flows)
    finally:
        await alice.api.close()
        await bob.api.close()
    print(f"\n{len(acked)} orders acknowledged ({before} before the kill); the engine's "
          f"container was ready again {engine.containers['engine'].ready_s:.1f} s after "
          "its start")
    assert before > 20 and len(acked) > before + 20, "the flow did not run on both sides"

    bus = await Bus.connect(cluster.nats_url, name="test")
    try:
        last = await bus.last_command_seq(SYMBOL)
    finally:
        await bus.close()
    pool = cluster.pool

    async def settled() -> bool:
        cursors = await db.settlement_cursors(pool)
        pending = await pool.fetchval("SELECT count(*) FROM orders WHERE status = 0")
        return cursors.get(SYMBOL) == last and pending == 0

    await eventually(settled, timeout=60)
    rows = await pool.fetch("SELECT id, status FROM orders WHERE id = ANY($1::bigint[])", acked)
    assert len(rows) == len(set(acked)) == len(acked)  # every acknowledged order exists
    assert all(r["status"] != 0 for r in rows)  # ... and reached the engine and the ledger
    executed = await pool.fetchval(
        "SELECT coalesce(sum(executed), 0) FROM orders WHERE symbol = $1", SYMBOL)
    traded = await pool.fetchval("SELECT coalesce(sum(qty), 0) FROM trades WHERE symbol = $1",
                                 SYMBOL)
    assert traded > 0 and executed == 2 * traded  # each trade once on each side
    _, problems = await db.check_invariants(pool)
    assert problems == []


def test_every_container_stops_cleanly_on_sigterm_as_pid_1(cluster: Cluster) -> None:
    # No init process in a pod: PID 1 is tradeplane itself and must act on SIGTERM, or
    # every rollout waits out the grace period and ends in SIGKILL.
    for name in ("gateway", "marketdata", "settlement", "engine"):
        pod = cluster.pods[name]
        for container in list(pod.containers):
            started = time.monotonic()
            assert pod.stop(container) == 0, pod.log(pod.containers[container].name)
            assert time.monotonic() - started < 10, f"{name} took the whole grace period"

