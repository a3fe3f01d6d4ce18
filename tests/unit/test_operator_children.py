"""The operator's pure core: desired children of a TradingPair / Wallet, drift detection,
and the status computed from observed state. No cluster, no I/O."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tradeplane_operator import children, status
from tradeplane_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
UID = "0f4c3a52-5b0e-4d7e-9a3e-1c2b3d4e5f60"
SPEC: dict[str, Any] = {
    "base": "BTC", "quote": "USDT", "tickSize": "0.01", "lotSize": "0.00001",
    "minQuantity": "0.00001", "maxQuantity": "9000", "minNotional": "5",
    "priceBandPercent": 20, "makerFee": "0.001", "takerFee": "0.001", "trading": "enabled",
    "engine": {"resources": {"requests": {"cpu": "250m", "memory": "128Mi"},
                             "limits": {"memory": "512Mi"}}},
}
WALLET: dict[str, Any] = {
    "chain": "litecoin", "family": "bitcoin", "network": "regtest", "asset": "LTC",
    "rpc": {"url": "http://litecoind:19443", "vaultPath": "tradeplane/wallets/ltc"},
    "confirmations": 1, "hotWallet": {"maxBalance": "100"}, "sweep": {"enabled": False},
}
K8S_VERSIONS = ["1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0", "1.36.0",
                kubernetes_validate.latest_version()]


def settings(**overrides: Any) -> OperatorSettings:
    return OperatorSettings(**overrides)


def pair(spec: dict[str, Any] | None = None, *, monitor: bool = False,
         **overrides: Any) -> dict[str, dict[str, Any]]:
    out = children.desired_children("btc-usdt", "markets", spec or SPEC, settings(**overrides),
                                    uid=UID, service_monitor=monitor)
    return {m["kind"]: m for m in out}


def wallet(spec: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    out = children.wallet_children("ltc", "wallets", spec or WALLET, settings(), uid=UID)
    return {m["kind"]: m for m in out}


def template_hash(manifests: dict[str, dict[str, Any]]) -> str:
    tmpl = manifests["Deployment"]["spec"]["template"]
    return str(tmpl["metadata"]["annotations"][children.CONFIG_HASH])


# ------------------------------------------------------------------ what a pair runs
def test_pair_children_are_configmap_deployment_service_pdb() -> None:
    kinds = [m["kind"] for m in children.desired_children(
        "btc-usdt", "markets", SPEC, settings(), uid=UID)]
    assert kinds == ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"]


def test_service_monitor_only_when_asked() -> None:
    sm = pair(monitor=True)["ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert "ServiceMonitor" not in pair()


def test_engine_runs_the_matching_command_with_the_rules_file() -> None:
    dep = pair()["Deployment"]
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["tradeplane"]
    assert c["args"] == ["matching", "--symbol", "BTC-USDT", "--rules",
                         "/etc/tradeplane/pair/pair.json"]
    assert c["envFrom"] == [{"secretRef": {"name": "tradeplane-env"}}]
    assert {"name": "TRADEPLANE_METRICS_PORT", "value": "9100"} in c["env"]
    # Services bind /metrics to loopback unless told otherwise; Prometheus scrapes the pod.
    assert {"name": "TRADEPLANE_METRICS_HOST", "value": "0.0.0.0"} in c["env"]
    assert c["resources"] == SPEC["engine"]["resources"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["rules"]["mountPath"] == "/etc/tradeplane/pair"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["rules"]["configMap"]["name"] == "btc-usdt-engine-rules"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}


def test_secret_name_and_images_come_from_settings_or_spec() -> None:
    c = pair(secret="exchange-env", engine_image="registry/x:1")["Deployment"]
    container = c["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "exchange-env"}}]
    assert container["image"] == "registry/x:1"
    spec = copy.deepcopy(SPEC)
    spec["engine"]["image"] = "registry/engine:2"
    container = pair(spec)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry/engine:2"


def test_default_resources_when_the_spec_has_none() -> None:
    spec = {k: v for k, v in SPEC.items() if k != "engine"}
    container = pair(spec)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == children.DEFAULT_ENGINE_RESOURCES


def test_configmap_holds_the_rules_the_engine_parses() -> None:
    import json

    from tradeplane.domain.pairs import rules_from_spec

    doc = json.loads(pair()["ConfigMap"]["data"]["pair.json"])
    assert "engine" not in doc
    rules = rules_from_spec(doc)
    assert rules.symbol == "BTCUSDT"
    assert rules.trading == "enabled"


def test_pod_is_hardened() -> None:
    for manifests in (pair(), wallet()):
        pod = manifests["Deployment"]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_standby_runs_two_lease_holding_replicas_rolled_one_at_a_time() -> None:
    spec = copy.deepcopy(SPEC)
    spec["engine"]["standby"] = True
    m = pair(spec)
    dep = m["Deployment"]["spec"]
    assert dep["replicas"] == 2
    assert dep["strategy"] == {"type": "RollingUpdate",
                               "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    (c,) = dep["template"]["spec"]["containers"]
    assert c["args"][-1] == "--standby"
    anti = dep["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["labelSelector"]["matchLabels"] == dep["selector"]["matchLabels"]
    # The lease keeps one writer, so one of the two pods may be evicted.
    assert m["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    # standby is not a rule: the engine's pair.json and config hash ignore it.
    assert m["ConfigMap"]["data"] == pair()["ConfigMap"]["data"]
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(m["Deployment"], version, strict=True)


def test_pdb_refuses_voluntary_evictions() -> None:
    pdb = pair()["PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 0
    assert pdb["spec"]["selector"] == pair()["Deployment"]["spec"]["selector"]


def test_service_selects_the_engine_pod_on_the_metrics_port() -> None:
    m = pair()
    svc = m["Service"]["spec"]
    labels = m["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in svc["selector"].items())
    assert svc["ports"] == [{"name": "metrics", "port": 9100, "targetPort": "metrics",
                             "protocol": "TCP"}]


@pytest.mark.parametrize("build", [pair, wallet])
def test_every_child_is_owned_and_labelled(build: Any) -> None:
    for m in build().values():
        (owner,) = m["metadata"]["ownerReferences"]
        assert owner["uid"] == UID
        assert owner["apiVersion"] == "trading.tradeplane.io/v1alpha1"
        assert owner["controller"] is True
        labels = m["metadata"]["labels"]
        for key in ("name", "instance", "component", "part-of", "managed-by"):
            assert f"app.kubernetes.io/{key}" in labels
        assert labels["app.kubernetes.io/part-of"] == "tradeplane"


# ------------------------------------------------------------------ rolling
def test_spec_change_rolls_the_engine() -> None:
    changed = dict(SPEC, minNotional="10")
    assert template_hash(pair(changed)) != template_hash(pair())
    assert pair(changed)["ConfigMap"]["data"] != pair()["ConfigMap"]["data"]


@pytest.mark.parametrize("state", ["halted", "cancel-only"])
def test_trading_change_updates_the_configmap_but_does_not_roll(state: str) -> None:
    halted = pair(dict(SPEC, trading=state))
    assert halted["Deployment"] == pair()["Deployment"]
    assert f'"trading":"{state}"' in halted["ConfigMap"]["data"]["pair.json"]


def test_hash_ignores_key_order() -> None:
    reordered = dict(reversed(list(SPEC.items())))
    assert children.config_hash(reordered) == children.config_hash(SPEC)


def test_invalid_rules_are_refused() -> None:
    with pytest.raises(children.InvalidSpec):
        pair(dict(SPEC, tickSize="0.000000001"))
    with pytest.raises(children.InvalidSpec):
        pair(dict(SPEC, trading="paused"))


# ------------------------------------------------------------------ wallet
def test_wallet_watcher_runs_the_watcher_with_its_vault_role() -> None:
    m = wallet()
    tmpl = m["Deployment"]["spec"]["template"]
    c = tmpl["spec"]["containers"][0]
    assert c["args"] == ["wallet-watcher", "--wallet", "ltc"]
    assert tmpl["metadata"]["annotations"]["vault.hashicorp.com/role"] == \
        "tradeplane-wallet-watcher"
    assert tmpl["metadata"]["annotations"]["trading.tradeplane.io/vault-path"] == \
        "tradeplane/wallets/ltc"
    assert "vaultPath" in m["ConfigMap"]["data"]["wallet.json"]
    assert m["Deployment"]["spec"]["replicas"] == 1


def test_wallet_without_rpc_is_refused() -> None:
    with pytest.raises(children.InvalidSpec):
        wallet({k: v for k, v in WALLET.items() if k != "rpc"})


# ------------------------------------------------------------------ validity
def _all_builtin_manifests() -> list[dict[str, Any]]:
    out = list(pair(monitor=True).values()) + list(wallet().values())
    return [m for m in out if m["kind"] != "ServiceMonitor"]  # a CRD kind: no schema shipped


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_pass_strict_validation(version: str) -> None:
    for m in _all_builtin_manifests():
        kubernetes_validate.validate(m, version, strict=True)


def test_example_manifests_make_valid_children() -> None:
    for path in sorted((ROOT / "manifests").glob("tradingpair-*.yaml")):
        doc = yaml.safe_load(path.read_text())
        for m in children.desired_children(doc["metadata"]["name"], "default", doc["spec"],
                                           settings(), uid=UID):
            kubernetes_validate.validate(m, kubernetes_validate.latest_version(), strict=True)
    for path in sorted((ROOT / "manifests").glob("wallet-*.yaml")):
        doc = yaml.safe_load(path.read_text())
        for m in children.wallet_children(doc["metadata"]["name"], "default", doc["spec"],
                                          settings(), uid=UID):
            kubernetes_validate.validate(m, kubernetes_validate.latest_version(), strict=True)


# ------------------------------------------------------------------ drift
def test_defaults_added_by_the_server_are_not_drift() -> None:
    desired = children.managed_part(pair()["Deployment"])
    live = copy.deepcopy(desired)
    live["metadata"]["uid"] = "x"
    live["metadata"]["labels"]["extra"] = "y"
    live["spec"]["progressDeadlineSeconds"] = 600
    live["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = "/dev/x"
    live["status"] = {"readyReplicas": 1}
    assert not children.drifted(desired, live)


def test_hand_edits_are_drift() -> None:
    desired = children.managed_part(pair()["Deployment"])
    scaled = copy.deepcopy(desired)
    scaled["spec"]["replicas"] = 2
    assert children.drifted(desired, scaled)
    extra_env = copy.deepcopy(desired)
    extra_env["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "X", "value": "1"})
    assert children.drifted(desired, extra_env)
    no_owner = copy.deepcopy(desired)
    del no_owner["metadata"]["ownerReferences"]
    assert children.drifted(desired, no_owner)


def test_child_refs_name_every_child() -> None:
    refs = children.pair_child_refs("btc-usdt", "markets", service_monitor=True)
    built = children.desired_children("btc-usdt", "markets", SPEC, settings(), uid=UID,
                                      service_monitor=True)
    assert [(r["kind"], r["metadata"]["name"]) for r in refs] == \
        [(m["kind"], m["metadata"]["name"]) for m in built]


# ------------------------------------------------------------------ status
NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"
READY_DEPLOYMENT = {"metadata": {"generation": 2},
                    "status": {"observedGeneration": 2, "readyReplicas": 1,
                               "updatedReplicas": 1}}


def conditions(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in st["conditions"]}


def test_status_without_engine_is_not_ready() -> None:
    st = status.pair_status(generation=3, symbol="BTCUSDT", spec=SPEC, deployment=None,
                            figures=None, previous=None, now=NOW)
    c = conditions(st)
    assert st["observedGeneration"] == 3 and st["symbol"] == "BTCUSDT"
    assert c["Ready"]["status"] == "False" and c["Ready"]["reason"] == "EngineMissing"
    assert c["Halted"]["status"] == "False"
    assert st["engine"] == {"ready": False, "lastSequence": 0, "openOrders": 0}


def test_status_from_a_ready_engine_and_its_metrics() -> None:
    figures = status.parse_engine_metrics(
        '# TYPE tradeplane_engine_last_sequence gauge\n'
        'tradeplane_engine_last_sequence{symbol="BTCUSDT"} 42.0\n'
        'tradeplane_engine_last_sequence{symbol="ETHUSDT"} 7.0\n'
        '# TYPE tradeplane_engine_open_orders gauge\n'
        'tradeplane_engine_open_orders{symbol="BTCUSDT"} 5.0\n', "BTCUSDT")
    assert figures == status.EngineFigures(42, 5)
    st = status.pair_status(generation=1, symbol="BTCUSDT", spec=SPEC,
                            deployment=READY_DEPLOYMENT, figures=figures, previous=None, now=NOW)
    c = conditions(st)
    assert c["Ready"]["status"] == "True" and c["Degraded"]["status"] == "False"
    assert st["engine"] == {"ready": True, "lastSequence": 42, "openOrders": 5}


def test_status_keeps_figures_and_transition_times() -> None:
    first = status.pair_status(generation=1, symbol="BTCUSDT", spec=SPEC,
                               deployment=READY_DEPLOYMENT,
                               figures=status.EngineFigures(9, 1), previous=None, now=NOW)
    again = status.pair_status(generation=1, symbol="BTCUSDT", spec=dict(SPEC, trading="halted"),
                               deployment=READY_DEPLOYMENT, figures=None, previous=first,
                               now=LATER)
    c = conditions(again)
    assert again["engine"]["lastSequence"] == 9  # unreadable metrics keep the last figures
    assert c["Ready"]["lastTransitionTime"] == NOW  # unchanged status: time kept
    assert c["Halted"]["status"] == "True" and c["Halted"]["lastTransitionTime"] == LATER
    assert c["Halted"]["reason"] == "Halted"


def test_rollout_in_progress_is_not_ready() -> None:
    rolling = {"metadata": {"generation": 3},
               "status": {"observedGeneration": 2, "readyReplicas": 1}}
    assert not status.deployment_ready(rolling)
    assert status.deployment_ready(READY_DEPLOYMENT)


def test_invalid_spec_is_degraded() -> None:
    st = status.pair_status(generation=1, symbol=None, spec=SPEC, deployment=None,
                            figures=None, previous=None, now=NOW, invalid="bad tick")
    assert conditions(st)["Degraded"]["reason"] == "InvalidSpec"
    assert "symbol" not in st


def test_garbage_metrics_give_no_figures() -> None:
    assert status.parse_engine_metrics("not prometheus {{{", "BTCUSDT") is None
    assert status.parse_engine_metrics("", "BTCUSDT") is None


def test_wallet_status() -> None:
    st = status.wallet_status(generation=1, deployment=READY_DEPLOYMENT, previous=None, now=NOW)
    assert st["watcherReady"] is True
    assert status.same_status(dict(st, extra=1), st)


# ------------------------------------------------------------------ rbac
def test_rbac_yaml_is_generated_from_rbac_py() -> None:
    from tradeplane_operator import rbac

    assert (ROOT / "operator" / "rbac.yaml").read_text() == rbac.render()
    for doc in yaml.safe_load_all(rbac.render()):
        kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)


def test_rbac_never_reads_secrets_and_children_are_not_listed() -> None:
    from tradeplane_operator import rbac

    for rule in rbac.cluster_rules(peering=True):
        assert "secrets" not in rule["resources"]
        if "deployments" in rule["resources"] or "configmaps" in rule["resources"]:
            assert set(rule["verbs"]) == {"get", "create", "patch", "delete"}


@pytest.mark.parametrize("build", [pair, wallet])
def test_vault_login_token_is_projected_not_automounted(build: Any) -> None:
    pod = build()["Deployment"]["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["TRADEPLANE_VAULT_JWT_FILE"] == "/var/run/secrets/tradeplane/vault/token"
    volumes = {v["name"]: v for v in pod["volumes"]}
    (source,) = volumes["vault-token"]["projected"]["sources"]
    assert source["serviceAccountToken"]["path"] == "token"
    assert pod["automountServiceAccountToken"] is False
