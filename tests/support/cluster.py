"""The release as a cluster would run it, in containers of the image (see
tests/support/containers.py for how a pod spec becomes containers): the chart rendered by
the real helm, its migration Job run to completion, then the engine Deployment the operator
generates for ``manifests/tradingpair-btc-usdt.yaml`` and the chart's settlement, market
data and gateway Deployments, each with its init containers and probes, against the test's
NATS, PostgreSQL (a fresh database) and Redis.

What differs from a cluster: the containers share the host's network (each named port gets
a free port and the variable that sets it follows); the Secret's server addresses are the
test's; the engine's Vault token volume is an empty folder (no Vault here)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.containers import Pod, docker, write_files
from tests.support.harness import Trader, fresh_database, reset_bus_and_cache
from tests.support.helm import ROOT, HelmUnavailable, helm

from tradeplane.adapters import db
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.demo.client import ApiClient
from tradeplane.domain.money import to_units
from tradeplane_operator import children
from tradeplane_operator.settings import OperatorSettings

CHART = ROOT / "charts" / "tradeplane"
RELEASE, NAMESPACE = "tp", "trading"
FULLNAME = f"{RELEASE}-tradeplane"
PAIR_MANIFEST = ROOT / "manifests" / "tradingpair-btc-usdt.yaml"
SYMBOL = "BTCUSDT"
#: The chart's rate limits are Binance's (100 orders per 10 s per key); test load is faster
#: than that on purpose, so the release raises them, as an operator would in its values.
RAISED_LIMITS = (
    "gateway.rateLimits.ipWeightPerMinute=10000000",
    "gateway.rateLimits.keyWeightPerMinute=10000000",
    "gateway.rateLimits.ordersPer10s=1000000",
    "gateway.rateLimits.ordersPerDay=100000000",
)
#: The Secret's addresses of the bundled servers, replaced by the test's servers.
SERVER_KEYS = ("TRADEPLANE_NATS_URL", "TRADEPLANE_DATABASE_URL", "TRADEPLANE_REDIS_URL")
#: Start order: the engine registers its pair from the mounted rules, and the gateway
#: loads the pairs when it starts.
SERVICES = ("engine", "settlement", "marketdata", "gateway")


def render(*values: str) -> list[dict[str, Any]]:
    """The default scenario with ``values`` (``--set``s), by the real helm; skips the test
    when helm cannot be had."""
    try:
        done = helm("template", RELEASE, str(CHART), "-n", NAMESPACE,
                    "-f", str(CHART / "ci" / "default-values.yaml"),
                    *(a for s in (*RAISED_LIMITS, *values) for a in ("--set", s)))
    except HelmUnavailable as exc:
        pytest.skip(str(exc))
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def pod_template(workload: Mapping[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = workload["spec"]["template"]
    return template


def operator_settings(docs: list[dict[str, Any]]) -> OperatorSettings:
    """The operator's settings exactly as the chart's operator Deployment gives them."""
    operator = pod_template(find(docs, "Deployment", f"{FULLNAME}-operator"))
    values = {e["name"]: e["value"] for e in operator["spec"]["containers"][0]["env"]
              if "value" in e}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in values.items():
            mp.setenv(name, value)
        return OperatorSettings()


@dataclass
class Cluster:
    docs: list[dict[str, Any]]
    #: Pod templates (labels, annotations, spec) by service name, as rendered/generated.
    templates: dict[str, dict[str, Any]]
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


@contextlib.asynccontextmanager
async def running_cluster(
    image: str, nats_url: str, pg_url: str, redis_url: str, folder: Path, *,
    values: tuple[str, ...] = (), env: Mapping[str, dict[str, str]] | None = None,
) -> AsyncIterator[Cluster]:
    """The release running in containers of ``image``. ``env``: what the test sets on top
    of a pod's spec, by service name (``"*"`` for every pod), e.g. the trace collector."""
    docs = render(*values)
    await reset_bus_and_cache(nats_url, redis_url)
    dsn = await fresh_database(pg_url)
    secret = find(docs, "Secret", f"{FULLNAME}-env")
    secret_env = dict(secret["stringData"]) | dict(
        zip(SERVER_KEYS, (nats_url, dsn, redis_url), strict=True))
    sources = {secret["metadata"]["name"]: secret_env}
    env = env or {}
    migrate = pod_template(find(docs, "Job", f"{FULLNAME}-migrate"))
    # Every container names the image by the chart's reference: the one just built is it.
    docker("tag", image, migrate["spec"]["containers"][0]["image"])

    settings = operator_settings(docs)
    assert settings.secret == secret["metadata"]["name"]  # the engines read the same Secret
    manifest = yaml.safe_load(PAIR_MANIFEST.read_text())
    objects = children.desired_children(manifest["metadata"]["name"], NAMESPACE,
                                        manifest["spec"], settings, uid="uid-btc-usdt")
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    templates = {
        "migrate": migrate,
        "engine": pod_template(next(o for o in objects if o["kind"] == "Deployment")),
        **{name: pod_template(find(docs, "Deployment", f"{FULLNAME}-{name}"))
           for name in ("settlement", "marketdata", "gateway")},
    }
    files = {"rules": write_files(folder / "rules", config["data"]),
             "vault-token": write_files(folder / "vault-token", {})}
    pods = {name: Pod(name, t["spec"], sources, files if name == "engine" else {},
                      env.get("*", {}) | env.get(name, {}))
            for name, t in templates.items()}
    pool = await db.create_pool(dsn, 4)
    try:
        await asyncio.to_thread(pods["migrate"].run_to_completion)
        for name in SERVICES:
            await asyncio.to_thread(pods[name].run_init_containers)
            await asyncio.to_thread(pods[name].start)
            await asyncio.to_thread(pods[name].wait_ready)
        yield Cluster(docs, templates, pods, pool, nats_url, secret_env["TRADEPLANE_SECRET_KEY"])
    finally:
        for pod in pods.values():
            for started in pod.containers.values():
                print(f"--- {started.name}\n{pod.log(started.name)[-2000:]}")
            pod.remove()
        await pool.close()
