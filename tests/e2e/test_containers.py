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
import contextlib
import random
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from tests.support.containers import Pod, docker, write_files
from tests.support.harness import Trader, eventually, fresh_database, reset_bus_and_cache
from tests.support.helm import ROOT, HelmUnavailable, helm

from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.demo.client import ApiClient
from tradeplane.domain.money import to_units
from tradeplane_operator import children
from tradeplane_operator.settings import OperatorSettings

pytestmark = pytest.mark.e2e

CHART = ROOT / "charts" / "tradeplane"
RELEASE, NAMESPACE = "tp", "trading"
FULLNAME = f"{RELEASE}-tradeplane"
PAIR_MANIFEST = ROOT / "manifests" / "tradingpair-btc-usdt.yaml"
SYMBOL = "BTCUSDT"
#: The chart's rate limits are Binance's (100 orders per 10 s per key); the load below is
#: faster than that on purpose, so the release raises them, as an operator would in values.
RAISED_LIMITS = (
    "gateway.rateLimits.ipWeightPerMinute=10000000",
    "gateway.rateLimits.keyWeightPerMinute=10000000",
    "gateway.rateLimits.ordersPer10s=1000000",
    "gateway.rateLimits.ordersPerDay=100000000",
)
#: The Secret's addresses of the bundled servers, replaced by the test's servers.
SERVER_KEYS = ("TRADEPLANE_NATS_URL", "TRADEPLANE_DATABASE_URL", "TRADEPLANE_REDIS_URL")


def _render() -> list[dict[str, Any]]:
    try:
        done = helm("template", RELEASE, str(CHART), "-n", NAMESPACE,
                    "-f", str(CHART / "ci" / "default-values.yaml"),
                    *(a for s in RAISED_LIMITS for a in ("--set", s)))
    except HelmUnavailable as exc:
        pytest.skip(str(exc))
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _object(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _operator_settings(docs: list[dict[str, Any]]) -> OperatorSettings:
    """The operator's settings exactly as the chart's operator Deployment gives them."""
    operator = _pod_spec(_object(docs, "Deployment", f"{FULLNAME}-operator"))["containers"][0]
    values = {e["name"]: e["value"] for e in operator["env"] if "value" in e}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in values.items():
            mp.setenv(name, value)
        return OperatorSettings()


@dataclass
class Cluster:
    pods: dict[str, Pod]
    pool: db.Pool
    nats_url: str
    secret_key: str

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.pods['gateway'].containers['gateway'].ports['http']}"

    async def trader(self, name: str) -> Trader:
        account = await db.create_account(self.pool, name)
        secret = secrets.token_hex(32)
        key = await db.create_api_key(self.pool, account,
                                      SecretCipher(self.secret_key).encrypt(secret),
                                      ["read", "trade"])
        for asset, amount in (("BTC", "1000"), ("USDT", "100000000")):
            await db.credit(self.pool, account, asset, to_units(amount), f"{name}-{asset}")
        return Trader(account, key, secret, ApiClient(self.gateway_url, key, secret))


@pytest.fixture(scope="module")
async def cluster(
    tradeplane_image: str, nats_url: str, pg_url: str, redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Cluster]:
    docs = _render()
    await reset_bus_and_cache(nats_url, redis_url)
    dsn = await fresh_database(pg_url)
    secret = _object(docs, "Secret", f"{FULLNAME}-env")
    env = dict(secret["stringData"]) | dict(zip(SERVER_KEYS, (nats_url, dsn, redis_url),
                                                strict=True))
    sources = {secret["metadata"]["name"]: env}
    no_tracing = {"TRADEPLANE_OTLP_ENDPOINT": ""}
    migrate = _pod_spec(_object(docs, "Job", f"{FULLNAME}-migrate"))
    # Every container names the image by the chart's reference: the one just built is it.
    docker("tag", tradeplane_image, migrate["containers"][0]["image"])

    settings = _operator_settings(docs)
    assert settings.secret == secret["metadata"]["name"]  # the engines read the same Secret
    manifest = yaml.safe_load(PAIR_MANIFEST.read_text())
    objects = children.desired_children(manifest["metadata"]["name"], NAMESPACE,
                                        manifest["spec"], settings, uid="uid-btc-usdt")
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    engine = next(o for o in objects if o["kind"] == "Deployment")
    folder = tmp_path_factory.mktemp("engine")
    files = {"rules": write_files(folder / "rules", config["data"]),
             "vault-token": write_files(folder / "vault-token", {})}

    pods = {
        "migrate": Pod("migrate", migrate, sources, env_override=no_tracing),
        "engine": Pod("engine", _pod_spec(engine), sources, files, no_tracing),
        **{name: Pod(name, _pod_spec(_object(docs, "Deployment", f"{FULLNAME}-{name}")),
                     sources, env_override=no_tracing)
           for name in ("settlement", "marketdata", "gateway")},
    }
    pool = await db.create_pool(dsn, 4)
    try:
        await asyncio.to_thread(pods["migrate"].run_to_completion)
        # The engine registers its pair from the mounted rules, so it goes first: the
        # gateway loads the pairs when it starts.
        for name in ("engine", "settlement", "marketdata", "gateway"):
            await asyncio.to_thread(pods[name].run_init_containers)
            await asyncio.to_thread(pods[name].start)
            await asyncio.to_thread(pods[name].wait_ready)
        yield Cluster(pods, pool, nats_url, env["TRADEPLANE_SECRET_KEY"])
    finally:
        for pod in pods.values():
            with contextlib.suppress(Exception):
                for started in pod.containers.values():
                    print(f"--- {started.name}\n{pod.log(started.name)[-2000:]}")
            pod.remove()
        await pool.close()


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

