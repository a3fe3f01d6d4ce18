"""The real operator (kopf, in KopfRunner's thread) against a Kubernetes API emulator,
driven by the real kubectl, with the real exchange behind it: NATS JetStream, PostgreSQL,
and an in-process platform (engines, settlement, gateway) so halts and the deletion drain
act on a running engine.

The flow is one story in order (apply, edit, halt, drift, delete); each test leaves the
pair as the next one expects.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import nats
import pytest
from nats.js.errors import NotFoundError
from tests.support import rbac
from tests.support.harness import Platform, eventually, free_port
from tests.support.helm import HelmUnavailable
from tests.support.k8s_emulator import (
    Access,
    RunningEmulator,
    peering_resources,
    running_emulator,
    running_operator,
)

from tradeplane.domain import codec
from tradeplane.domain.model import SetTrading, TradingState
from tradeplane_operator import children
from tradeplane_operator.settings import OperatorSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PAIR_MANIFEST = ROOT / "manifests" / "tradingpair-btc-usdt.yaml"
WALLET_MANIFEST = ROOT / "manifests" / "wallet-litecoin-regtest.yaml"
TP = "trading.tradeplane.io/v1alpha1/tradingpairs"
NS = "default"


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def operator(k8s: RunningEmulator, plat: Platform) -> Iterator[Any]:
    settings = OperatorSettings(
        nats_url=plat.settings.nats_url, database_url=plat.settings.database_url,
        resync_s=0.5, retry_delay_s=0.5, scrape_metrics=False, service_monitor="auto",
    )
    with running_operator(k8s.kubeconfig, settings) as runner:
        yield runner


def kubectl(k8s: RunningEmulator, *args: str, stdin: str | None = None) -> str:
    env = dict(os.environ, KUBECONFIG=str(k8s.kubeconfig))
    done = subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True,
                          timeout=60, input=stdin)
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def get(k8s: RunningEmulator, resource: str, name: str) -> dict[str, Any] | None:
    return k8s.get(resource, NS, name)


def engine(k8s: RunningEmulator) -> dict[str, Any] | None:
    return get(k8s, "apps/v1/deployments", children.engine_name("btc-usdt"))


def template_hash(dep: dict[str, Any]) -> str:
    return str(dep["spec"]["template"]["metadata"]["annotations"][children.CONFIG_HASH])


async def last_command(nats_url: str, symbol: str) -> Any:
    """The last command on the symbol's log (None while it is empty)."""
    nc = await nats.connect(nats_url)
    try:
        msg = await nc.jetstream().get_last_msg(f"CMD_{symbol}", f"cmd.{symbol}")
    except NotFoundError:
        return None
    finally:
        await nc.close()
    return codec.decode_commands(msg.data)[-1]


async def pair_trading(plat: Platform) -> str | None:
    row = await plat.pool.fetchval("SELECT trading FROM pairs WHERE symbol = 'BTCUSDT'")
    return None if row is None else str(row)


# ------------------------------------------------------------------ the story
async def test_apply_creates_valid_owned_children(k8s: RunningEmulator, operator: Any) -> None:
    kubectl(k8s, "apply", "--validate=false", "-f", str(PAIR_MANIFEST))

    async def all_children() -> list[dict[str, Any]] | None:
        found = [get(k8s, r, n) for r, n in [
            ("v1/configmaps", children.engine_config_name("btc-usdt")),
            ("apps/v1/deployments", children.engine_name("btc-usdt")),
            ("v1/services", children.metrics_service_name("btc-usdt")),
            ("policy/v1/poddisruptionbudgets", children.engine_name("btc-usdt")),
        ]]
        return None if None in found else [f for f in found if f]

    made = await eventually(all_children, timeout=30)
    pair = get(k8s, TP, "btc-usdt")
    assert pair is not None
    for child in made:
        assert child["metadata"]["ownerReferences"][0]["uid"] == pair["metadata"]["uid"]
        kubernetes_validate.validate(child, kubernetes_validate.latest_version(), strict=True)
    assert pair["metadata"]["finalizers"] == ["trading.tradeplane.io/finalizer"]
    assert not any("kopf.zalando.org" in k for k in pair["metadata"].get("annotations", {}))

    async def status_written() -> bool:
        st = (get(k8s, TP, "btc-usdt") or {}).get("status") or {}
        return st.get("symbol") == "BTCUSDT" and st.get("observedGeneration") == 1

    await eventually(status_written, timeout=20)
    out = kubectl(k8s, "get", "tradingpairs", "btc-usdt", "-o", "json")
    conditions = {c["type"] for c in json.loads(out)["status"]["conditions"]}
    assert conditions == {"Ready", "Halted", "Degraded"}


async def test_spec_edit_rolls_the_engine(k8s: RunningEmulator, operator: Any) -> None:
    before = engine(k8s)
    assert before is not None
    kubectl(k8s, "patch", "tradingpair", "btc-usdt", "--type", "merge",
            "-p", '{"spec": {"minNotional": "10"}}')

    async def rolled() -> bool:
        dep = engine(k8s)
        return dep is not None and template_hash(dep) != template_hash(before)

    await eventually(rolled, timeout=30)
    cm = get(k8s, "v1/configmaps", children.engine_config_name("btc-usdt"))
    assert cm is not None and '"minNotional":"10"' in cm["data"]["pair.json"]


async def test_halt_is_applied_live_without_a_roll(
    k8s: RunningEmulator, operator: Any, plat: Platform,
) -> None:
    before = engine(k8s)
    assert before is not None
    kubectl(k8s, "patch", "tradingpair", "btc-usdt", "--type", "merge",
            "-p", '{"spec": {"trading": "halted"}}')

    async def set_trading_published() -> bool:
        cmd = await last_command(plat.settings.nats_url, "BTCUSDT")
        return isinstance(cmd, SetTrading) and cmd.state == TradingState.HALTED

    await eventually(set_trading_published, timeout=30)

    async def running_engine_halted() -> bool:  # applied by the engine, recorded by settlement
        return await pair_trading(plat) == "halted"

    await eventually(running_engine_halted, timeout=20)

    async def configmap_agrees() -> bool:
        cm = get(k8s, "v1/configmaps", children.engine_config_name("btc-usdt")) or {}
        return '"trading":"halted"' in (cm.get("data") or {}).get("pair.json", "")

    await eventually(configmap_agrees, timeout=20)
    after = engine(k8s)
    assert after is not None and template_hash(after) == template_hash(before)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]


async def test_deleted_or_edited_children_are_restored(
    k8s: RunningEmulator, operator: Any,
) -> None:
    first = engine(k8s)
    assert first is not None
    kubectl(k8s, "delete", "deployment", children.engine_name("btc-usdt"), "--wait=false")

    async def recreated() -> bool:
        dep = engine(k8s)
        return dep is not None and dep["metadata"]["uid"] != first["metadata"]["uid"]

    await eventually(recreated, timeout=30)

    kubectl(k8s, "patch", "deployment", children.engine_name("btc-usdt"), "--type", "merge",
            "-p", '{"spec": {"replicas": 3}}')
    kubectl(k8s, "patch", "pdb", children.engine_name("btc-usdt"), "--type", "merge",
            "-p", '{"spec": {"maxUnavailable": 1}}')
    service = children.metrics_service_name("btc-usdt")
    selector = (get(k8s, "v1/services", service) or {})["spec"]["selector"]
    kubectl(k8s, "patch", "service", service, "--type", "json",
            "-p", '[{"op": "replace", "path": "/spec/selector", "value": {"edited": "x"}}]')
    kubectl(k8s, "patch", "servicemonitor", children.engine_name("btc-usdt"), "--type",
            "merge", "-p", '{"spec": {"endpoints": []}}')

    async def restored() -> bool:
        dep = engine(k8s) or {}
        pdb = get(k8s, "policy/v1/poddisruptionbudgets", children.engine_name("btc-usdt")) or {}
        svc = get(k8s, "v1/services", service) or {}
        monitor = get(k8s, "monitoring.coreos.com/v1/servicemonitors",
                      children.engine_name("btc-usdt")) or {}
        return dep.get("spec", {}).get("replicas") == 1 and \
            pdb.get("spec", {}).get("maxUnavailable") == 0 and \
            svc.get("spec", {}).get("selector", {}).items() >= selector.items() and \
            bool(monitor.get("spec", {}).get("endpoints"))

    await eventually(restored, timeout=30)


async def test_deleting_the_pair_drains_orders_then_removes_children(
    k8s: RunningEmulator, operator: Any, plat: Platform,
) -> None:
    kubectl(k8s, "patch", "tradingpair", "btc-usdt", "--type", "merge",
            "-p", '{"spec": {"trading": "enabled"}}')

    async def enabled() -> bool:
        return await pair_trading(plat) == "enabled"

    await eventually(enabled, timeout=30)
    t = await plat.trader("resting", {"USDT": "100000"})
    order = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
             "price": "20000", "quantity": "0.5"}

    async def placed() -> dict[str, Any]:
        # The gateway learns of the re-enabled pair a moment after the database does.
        answer: dict[str, Any] = (await t.api.signed("POST", "/api/v3/order", **order)).json()
        assert answer.get("status") == "NEW", answer
        return answer

    await eventually(placed, timeout=15)
    assert (await plat.balances(t.account))["USDT"][1] > 0  # funds locked

    kubectl(k8s, "delete", "tradingpair", "btc-usdt", "--wait=false")

    async def pair_gone() -> bool:
        return get(k8s, TP, "btc-usdt") is None

    await eventually(pair_gone, timeout=60)
    # The finalizer let go only after settlement showed no open order and no hold.
    open_orders = await plat.pool.fetchval(
        "SELECT count(*) FROM orders WHERE symbol = 'BTCUSDT' AND status IN (0, 1, 2)")
    assert open_orders == 0
    assert (await plat.balances(t.account))["USDT"] == (100000 * 10**8, 0)
    for resource, name in [
        ("v1/configmaps", children.engine_config_name("btc-usdt")),
        ("apps/v1/deployments", children.engine_name("btc-usdt")),
        ("v1/services", children.metrics_service_name("btc-usdt")),
        ("policy/v1/poddisruptionbudgets", children.engine_name("btc-usdt")),
    ]:
        assert get(k8s, resource, name) is None, name
    cmd = await last_command(plat.settings.nats_url, "BTCUSDT")
    assert type(cmd).__name__ == "CancelAll"


async def test_wallet_gets_a_watcher(k8s: RunningEmulator, operator: Any) -> None:
    kubectl(k8s, "apply", "--validate=false", "-f", str(WALLET_MANIFEST))

    async def watcher() -> dict[str, Any] | None:
        return get(k8s, "apps/v1/deployments", children.watcher_name("litecoin-regtest"))

    dep = await eventually(watcher, timeout=30)
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"] == \
        ["wallet-watcher", "--wallet", "litecoin-regtest"]
    assert get(k8s, "v1/configmaps", children.watcher_config_name("litecoin-regtest"))


async def test_invalid_rules_are_reported_not_run(k8s: RunningEmulator, operator: Any) -> None:
    # The CRD's schema would refuse most of this; the emulator has no admission, which lets
    # the operator's own check (the engine's rules_from_spec) be seen: no children, Degraded.
    doc = {"apiVersion": "trading.tradeplane.io/v1alpha1", "kind": "TradingPair",
           "metadata": {"name": "bad-pair", "namespace": NS},
           "spec": {"base": "BAD", "quote": "USDT", "tickSize": "0.000000001",
                    "lotSize": "0.001", "maxQuantity": "10", "minNotional": "1",
                    "trading": "enabled"}}
    kubectl(k8s, "apply", "--validate=false", "-f", "-", stdin=json.dumps(doc))

    async def degraded() -> bool:
        st = (get(k8s, TP, "bad-pair") or {}).get("status") or {}
        conditions = {c["type"]: c for c in st.get("conditions", [])}
        return conditions.get("Degraded", {}).get("reason") == "InvalidSpec"

    await eventually(degraded, timeout=30)
    assert get(k8s, "apps/v1/deployments", children.engine_name("bad-pair")) is None


async def test_entry_point_runs_with_liveness(k8s: RunningEmulator) -> None:
    """``tradeplane-operator`` itself: logs in from $KUBECONFIG, serves /healthz, stops
    cleanly on SIGTERM (what the chart's Deployment runs and probes)."""
    port = free_port()
    env = dict(os.environ, KUBECONFIG=str(k8s.kubeconfig),
               TRADEPLANE_OPERATOR_LIVENESS_PORT=str(port),
               TRADEPLANE_OPERATOR_NAMESPACES='["nowhere"]')
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "tradeplane-operator"), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async def healthy() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"http://127.0.0.1:{port}/healthz")).is_success
            except httpx.HTTPError:
                return False

        await eventually(healthy, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err[-2000:]


# ------------------------------------------------------------------ RBAC, from what it did
def peering_accesses(plat: Platform, folder: Path, *, cluster_wide: bool) -> set[Access]:
    """What the operator does with kopf peering on: a run against a fresh emulator holding
    the peering object the chart creates, until it has patched it (its keep-alive)."""
    settings = OperatorSettings(
        nats_url=plat.settings.nats_url, database_url=plat.settings.database_url,
        resync_s=0.5, retry_delay_s=0.5, scrape_metrics=False, service_monitor="auto",
        standalone=False, peering="tradeplane",
    )
    with running_emulator(folder) as emu:
        emu.call(lambda: peering_resources(emu.emulator, "tradeplane", NS))
        with running_operator(emu.kubeconfig, settings, scope=(),
                              namespace="" if cluster_wide else NS):
            async def patched_peering() -> bool:
                return any(a.group == "kopf.dev" and a.verb == "patch"
                           for a in emu.accesses())
            asyncio.run(eventually(patched_peering, timeout=30))
        return emu.accesses()


@pytest.fixture(scope="module")
def peering_runs(plat: Platform, tmp_path_factory: pytest.TempPathFactory,
                 ) -> dict[bool, set[Access]]:
    return {cluster_wide: peering_accesses(plat, tmp_path_factory.mktemp("peer"),
                                           cluster_wide=cluster_wide)
            for cluster_wide in (False, True)}


@pytest.mark.parametrize(("cluster_wide", "peering"),
                         [(False, False), (True, False), (False, True), (True, True)],
                         ids=["namespaced", "cluster-wide", "namespaced-peering",
                              "cluster-wide-peering"])
def test_chart_rbac_allows_every_request_the_operator_made_and_nothing_more(
    k8s: RunningEmulator, peering_runs: dict[bool, set[Access]], cluster_wide: bool,
    peering: bool,
) -> None:
    """Every request the real operator made in this module's story (apply, edit, halt,
    drift, delete, a wallet, an invalid pair, the entry point), and in a peering run of the
    same scope, is allowed by the Role/ClusterRole ``helm template`` renders; every rule the
    chart grants was used by one of them. So the first install on a real cluster meets no
    403, and the operator holds no permission it does not need."""
    try:
        grants = rbac.operator_grants(cluster_wide=cluster_wide, peering=peering)
    except HelmUnavailable as exc:
        pytest.skip(str(exc))
    story = k8s.accesses()
    assert any(a.resource == "deployments" and a.verb == "create" for a in story)
    # The story runs one namespace; across all namespaces kopf lists and watches our
    # resources cluster-wide (the peering run of that scope shows it) instead.
    if cluster_wide:
        story = {a for a in story if a.verb not in ("list", "watch") or not a.namespace}
    made = rbac.in_release_namespace(story | peering_runs[cluster_wide])
    if not peering:
        made = {a for a in made if a.group != "kopf.dev"}
    assert rbac.denied(grants, made) == []
    assert rbac.unused(grants, made) == []
