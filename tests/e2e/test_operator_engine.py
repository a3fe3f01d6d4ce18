"""Both worlds joined: the operator (against the Kubernetes emulator) reconciles a
TradingPair; the test plays kubelet and starts the engine process exactly as the generated
Deployment says (command, args, env, envFrom a Secret built like the chart's, the
ConfigMap mounted as files) against the embedded NATS/PostgreSQL/Redis, trades through the
gateway, sees the engine's figures in the pair's status, and halts it live."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.harness import Platform, eventually, free_port
from tests.support.k8s_emulator import RunningEmulator, running_operator

from tradeplane.platform.local import service_env
from tradeplane_operator import children
from tradeplane_operator.settings import OperatorSettings

pytestmark = pytest.mark.e2e

NS = "default"
PAIR = "sol-usdt"
SPEC = {
    "base": "SOL", "quote": "USDT", "tickSize": "0.01", "lotSize": "0.001",
    "minQuantity": "0.001", "maxQuantity": "100000", "minNotional": "1",
    "priceBandPercent": 50, "makerFee": "0.001", "takerFee": "0.001", "trading": "enabled",
}
SECRET_KEYS = ("TRADEPLANE_NATS_URL", "TRADEPLANE_DATABASE_URL", "TRADEPLANE_REDIS_URL",
               "TRADEPLANE_SECRET_KEY", "TRADEPLANE_ADMIN_TOKEN", "TRADEPLANE_DEV_MODE")


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def operator(k8s: RunningEmulator, plat: Platform, metrics_port: int) -> Iterator[Any]:
    settings = OperatorSettings(
        nats_url=plat.settings.nats_url, database_url=plat.settings.database_url,
        resync_s=0.5, retry_delay_s=0.5, metrics_port=metrics_port,
        metrics_url="http://127.0.0.1:{port}/metrics", secret="exchange-env",
    )
    with running_operator(k8s.kubeconfig, settings) as runner:
        yield runner


def kubectl(k8s: RunningEmulator, *args: str, stdin: str | None = None) -> str:
    env = dict(os.environ, KUBECONFIG=str(k8s.kubeconfig))
    done = subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True,
                          timeout=60, input=stdin)
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def start_like_kubelet(deployment: dict[str, Any], configmaps: dict[str, dict[str, Any]],
                       secrets: dict[str, dict[str, str]], root: Path,
                       log: Path) -> subprocess.Popen[bytes]:
    """Run the Deployment's container as a local process: volumes become folders under
    ``root`` (mount paths are rewritten in the args), env = envFrom Secrets + env."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        local = root / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        source = volumes[mount["name"]]
        if "configMap" in source:
            for key, text in configmaps[source["configMap"]["name"]]["data"].items():
                (local / key).write_text(text)
        mounts[mount["mountPath"]] = local

    def local_path(arg: str) -> str:
        for path in sorted(mounts, key=len, reverse=True):
            if arg == path or arg.startswith(path + "/"):
                return str(mounts[path]) + arg[len(path):]
        return arg

    args = [local_path(a) for a in container["args"]]
    env = {"PATH": os.environ["PATH"], "HOME": str(root)}
    for ref in container.get("envFrom", []):
        env.update(secrets[ref["secretRef"]["name"]])
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    command = shutil.which(container["command"][0], path=str(Path(sys.executable).parent))
    assert command, container["command"]
    return subprocess.Popen([command, *container["command"][1:], *args], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def pair_status(k8s: RunningEmulator) -> dict[str, Any]:
    obj = k8s.get("trading.tradeplane.io/v1alpha1/tradingpairs", NS, PAIR) or {}
    return dict(obj.get("status") or {})


async def test_operator_made_engine_trades_and_halts_live(
    k8s: RunningEmulator, operator: Any, plat: Platform, tmp_path: Path,
) -> None:
    doc = {"apiVersion": "trading.tradeplane.io/v1alpha1", "kind": "TradingPair",
           "metadata": {"name": PAIR, "namespace": NS}, "spec": SPEC}
    kubectl(k8s, "apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(doc))

    async def deployment() -> dict[str, Any] | None:
        return k8s.get("apps/v1/deployments", NS, children.engine_name(PAIR))

    dep = await eventually(deployment, timeout=30)
    cm = k8s.get("v1/configmaps", NS, children.engine_config_name(PAIR))
    assert cm is not None
    # The Secret as the chart would create it (every key the platform reads).
    env = service_env(plat.settings)
    secret = {k: env[k] for k in SECRET_KEYS}
    log = tmp_path / "engine.log"
    engine = start_like_kubelet(dep, {cm["metadata"]["name"]: cm}, {"exchange-env": secret},
                                tmp_path / "pod", log)
    try:
        # What the Deployment controller would report once the pod is ready.
        kubectl(k8s, "patch", "deployment", children.engine_name(PAIR), "--subresource=status",
                "--type", "merge", "-p", json.dumps({"status": {
                    "observedGeneration": dep["metadata"]["generation"], "replicas": 1,
                    "readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1}}))

        seller = await plat.trader("sol-seller", {"SOL": "10"})
        buyer = await plat.trader("sol-buyer", {"USDT": "10000"})
        sell = {"symbol": "SOLUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC",
                "price": "100", "quantity": "2"}

        async def resting() -> dict[str, Any] | None:  # the gateway learns new pairs in ~5 s
            r = await seller.api.signed("POST", "/api/v3/order", **sell)
            body: dict[str, Any] = r.json()
            return body if r.status_code == 200 else None

        placed = await eventually(resting, timeout=40, interval=0.5)
        assert placed["status"] == "NEW", placed
        buy = dict(sell, side="BUY", quantity="1", newOrderRespType="FULL")
        filled = (await buyer.api.signed("POST", "/api/v3/order", **buy)).json()
        assert filled["status"] == "FILLED", filled
        assert filled["fills"][0]["price"] == "100.00000000"

        async def figures_in_status() -> bool:
            st = pair_status(k8s)
            eng = st.get("engine") or {}
            ready = {c["type"]: c["status"] for c in st.get("conditions", [])}
            return eng.get("ready") is True and eng.get("lastSequence", 0) >= 2 and \
                eng.get("openOrders") == 1 and ready.get("Ready") == "True"

        await eventually(figures_in_status, timeout=30)

        kubectl(k8s, "patch", "tradingpair", PAIR, "--type", "merge",
                "-p", '{"spec": {"trading": "halted"}}')

        async def refused() -> bool:
            r = await buyer.api.signed("POST", "/api/v3/order", **buy)
            return bool(r.json() == {"code": -1013, "msg": "Market is closed."})

        await eventually(refused, timeout=30, interval=0.5)
        assert engine.poll() is None, "the halt must not restart the engine"

        async def status_says_halted() -> bool:
            conditions = {c["type"]: c for c in pair_status(k8s).get("conditions", [])}
            return conditions.get("Halted", {}).get("status") == "True"

        await eventually(status_says_halted, timeout=20)
    finally:
        engine.send_signal(signal.SIGTERM)
        try:
            engine.wait(20)
        except subprocess.TimeoutExpired:
            engine.kill()
            engine.wait()
    assert "Traceback" not in log.read_text(errors="replace")
