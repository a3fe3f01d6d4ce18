"""The Helm chart, proven without a cluster: ``helm lint --strict`` and ``helm template`` for
every ci/ scenario with the real helm binary; every rendered manifest valid for every
Kubernetes version kubernetes-validate ships from 1.30 on; hardened pods; the values schema
refusing bad values; dashboards that are Grafana JSON querying only metrics the running
services export; alert rules that promtool accepts and that fire when they should."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils
from prometheus_client.parser import text_string_to_metric_families
from tests.support.harness import Platform, eventually, running_platform
from tests.support.helm import ROOT, HelmUnavailable, helm, helm_binary

from tradeplane.adapters.bus import Bus
from tradeplane.config import Settings
from tradeplane.domain.access import client_ip, parse_networks
from tradeplane.services import settler

CHART = ROOT / "charts" / "tradeplane"
SCENARIOS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
ALERTS = CHART / "rules" / "alerts.yaml"
RELEASE, NAMESPACE = "tp", "trading"
FULLNAME = f"{RELEASE}-tradeplane"

#: Kinds defined by CRDs (ours, the Prometheus Operator's): no OpenAPI schema in
#: kubernetes-validate; checked by their own tests below.
CRD_GROUPS = ("trading.tradeplane.io/", "monitoring.coreos.com/", "kopf.dev/")

#: Series Prometheus makes itself (not on any /metrics page).
PROMETHEUS_SERIES = {"up"}
#: Series an alert may name although the test platform does not export them: the wallet
#: watcher's (it needs a chain node; tests/integration/test_wallets.py runs it).
AWAITED_SERIES: set[str] = {"tradeplane_wallet_reconciliation_ok",
                            "tradeplane_wallet_reorg_after_credit_total"}
#: The wallet watcher's series, as its modules define them: the custody panels query them.
WALLET_SERIES = {
    name for path in (ROOT / "services" / "tradeplane" / "wallets").glob("*.py")
    for name in re.findall(r'"(tradeplane_wallet_[a-z0-9_]+)"', path.read_text())
}

#: The convert desk's series, as the rates service and the hedger define them: labelled
#: gauges (the desk's inventory per asset) have no sample until those processes run.
CONVERT_SERIES = {
    name for path in (ROOT / "services" / "tradeplane" / "rates" / "service.py",
                      ROOT / "services" / "tradeplane" / "hedger" / "service.py")
    for name in re.findall(r'"(tradeplane_convert_[a-z0-9_]+)"', path.read_text())
}

#: The one pod allowed to run as root: Promtail reads the node's /var/log/pods.
ROOT_PODS = {f"{FULLNAME}-promtail"}

PROMTOOL_MISSING = (
    "promtool is not installed; CI installs it with "
    "`apt-get install -y --no-install-recommends prometheus` (Debian's package ships it)"
)


# ------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module", autouse=True)
def _helm_available() -> None:
    try:
        helm_binary()
    except HelmUnavailable as exc:
        pytest.skip(str(exc))


@functools.cache
def render(scenario: str, *extra: str) -> tuple[dict[str, Any], ...]:
    done = helm("template", RELEASE, str(CHART), "-n", NAMESPACE,
                "-f", str(CHART / "ci" / scenario), *extra)
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def by_kind(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: tuple[dict[str, Any], ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        if d["kind"] == "Pod":
            yield d["metadata"]["name"], d["spec"]
        elif d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def kubernetes_versions() -> list[str]:
    """Every version kubernetes-validate ships, from 1.30 to its newest."""
    versions = {v for v in kv_utils.all_versions()
                if tuple(int(x) for x in v.split(".")[:2]) >= (1, 30)}
    return sorted(versions, key=lambda v: tuple(int(x) for x in v.split(".")))


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(PROMTOOL_MISSING)
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120,
                          check=False)


def metric_names(expr: str) -> set[str]:
    """Our series named in a PromQL expression (plus ``up``)."""
    names = set(re.findall(r"\btradeplane_[a-z0-9_]+\b", expr))
    if re.search(r"\bup\s*\{", expr):
        names.add("up")
    return names


def dashboard_exprs() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                exprs.append(var["definition"])
        out[path.name] = exprs
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


# ------------------------------------------------------------------------------ helm
def test_every_scenario_is_there() -> None:
    assert {"default-values.yaml", "external-stack-values.yaml", "minimal-values.yaml",
            "production-values.yaml"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict(scenario: str) -> None:
    done = helm("lint", "--strict", str(CHART), "-f", str(CHART / "ci" / scenario))
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_manifests_are_valid_for_every_kubernetes_version(scenario: str) -> None:
    docs = render(scenario)
    versions = kubernetes_versions()
    assert versions[0].startswith("1.30") and len(versions) >= 2
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_GROUPS):
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{scenario}: {doc['kind']}/{doc['metadata']['name']} "
                            f"invalid for {version}: {exc.message} at {list(exc.path)}")
        checked += 1
    assert checked > 10


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_is_hardened(scenario: str) -> None:
    for name, spec in pod_specs(render(scenario)):
        pod = spec.get("securityContext", {})
        assert pod.get("seccompProfile") == {"type": "RuntimeDefault"}, name
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert "resources" in c and c["resources"]["requests"], (name, c["name"])
            if name not in ROOT_PODS:
                assert pod.get("runAsNonRoot") or sc.get("runAsNonRoot"), (name, c["name"])
                assert pod.get("runAsUser", 1) != 0, name


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_resource_has_the_standard_labels(scenario: str) -> None:
    for doc in render(scenario):
        labels = doc["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                    "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert key in labels, (doc["kind"], doc["metadata"]["name"], key)


def test_default_install_has_every_part() -> None:
    docs = render("default-values.yaml")
    deployments = by_kind(docs, "Deployment")
    for part in ("operator", "gateway", "settlement", "marketdata", "rates", "hedger",
                 "prometheus", "grafana", "loki", "jaeger"):
        assert f"{FULLNAME}-{part}" in deployments, part
    assert set(by_kind(docs, "StatefulSet")) == {
        f"{FULLNAME}-nats", f"{FULLNAME}-postgresql", f"{FULLNAME}-redis"}
    assert f"{FULLNAME}-gateway" in by_kind(docs, "HorizontalPodAutoscaler")
    assert {"TradingPair", "Wallet"} <= {
        d["spec"]["names"]["kind"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    ping = by_kind(docs, "Pod")[f"{FULLNAME}-test-ping"]
    assert ping["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert ping["spec"]["containers"][0]["args"][-1] == (
        f"http://{FULLNAME}-gateway:80/api/v3/ping")
    # Settlement is the ledger's single writer: one replica, stopped before replaced.
    settlement = deployments[f"{FULLNAME}-settlement"]["spec"]
    assert settlement["replicas"] == 1 and settlement["strategy"]["type"] == "Recreate"
    # ... and takes the account snapshots too (the worker beside the settler).
    settler = settlement["template"]["spec"]["containers"][0]
    assert env_of(settler)["TRADEPLANE_SNAPSHOT_INTERVAL_S"] == "3600"


def test_processes_get_the_env_secret_and_the_operator_points_at_it() -> None:
    docs = render("default-values.yaml")
    secret = by_kind(docs, "Secret")[f"{FULLNAME}-env"]["stringData"]
    assert {"TRADEPLANE_NATS_URL", "TRADEPLANE_DATABASE_URL", "TRADEPLANE_REDIS_URL",
            "TRADEPLANE_ADMIN_TOKEN", "TRADEPLANE_SECRET_KEY"} <= set(secret)
    assert secret["TRADEPLANE_DATABASE_URL"].startswith("postgresql://tradeplane:")
    assert len(secret["TRADEPLANE_SECRET_KEY"]) >= 32
    deployments = by_kind(docs, "Deployment")
    for part, command in (("gateway", ["tradeplane", "gateway"]),
                          ("settlement", ["tradeplane", "settlement"]),
                          ("marketdata", ["tradeplane", "marketdata"]),
                          ("rates", ["tradeplane", "rates"]),
                          ("hedger", ["tradeplane", "hedger"]),
                          ("operator", ["tradeplane-operator"])):
        c = deployments[f"{FULLNAME}-{part}"]["spec"]["template"]["spec"]["containers"][0]
        assert c["command"] == command
        assert c["envFrom"] == [{"secretRef": {"name": f"{FULLNAME}-env"}}]
    operator = deployments[f"{FULLNAME}-operator"]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(operator)["TRADEPLANE_OPERATOR_SECRET"] == f"{FULLNAME}-env"
    gateway = deployments[f"{FULLNAME}-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(gateway)["TRADEPLANE_HTTP_HOST"] == "0.0.0.0"
    assert env_of(gateway)["TRADEPLANE_OTLP_ENDPOINT"] == (
        f"http://{FULLNAME}-jaeger:4318/v1/traces")
    # An existing Secret replaces the chart's, everywhere.
    prod = by_kind(render("production-values.yaml"), "Deployment")
    assert "Secret" not in {d["kind"] for d in render("production-values.yaml")
                            if d["metadata"]["name"].endswith("-env")}
    op = prod[f"{FULLNAME}-operator"]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(op)["TRADEPLANE_OPERATOR_SECRET"] == "tradeplane-production-env"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_env_names_are_settings_the_processes_read(scenario: str) -> None:
    """A renamed setting would be silently ignored: every TRADEPLANE_* variable the chart
    sets is a field of the platform's or the operator's settings."""
    platform = {f"TRADEPLANE_{n.upper()}" for n in Settings.model_fields}
    try:
        from tradeplane_operator.settings import PREFIX, OperatorSettings
    except ImportError:  # pragma: no cover - the operator's settings are being written
        operator: set[str] | None = None
    else:
        operator = {f"{PREFIX}{n.upper()}" for n in OperatorSettings.model_fields}
    for name, spec in pod_specs(render(scenario)):
        for c in spec["containers"]:
            for var in env_of(c):
                if not var.startswith("TRADEPLANE_"):
                    continue
                if var.startswith("TRADEPLANE_OPERATOR_"):
                    if operator is not None:
                        assert var in operator, (name, var)
                else:
                    assert var in platform, (name, var)


def test_migrations_run_before_the_processes() -> None:
    docs = render("default-values.yaml")
    job = by_kind(docs, "Job")[f"{FULLNAME}-migrate"]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "tradeplane", "migrate"]
    # Bundled PostgreSQL and a chart-made Secret only exist once installed: the first
    # install migrates in init containers, upgrades in the hook.
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-upgrade"
    for part in ("gateway", "settlement", "marketdata"):
        spec = by_kind(docs, "Deployment")[f"{FULLNAME}-{part}"]["spec"]["template"]["spec"]
        assert [c["command"] for c in spec["initContainers"]] == [["tradeplane", "migrate"]]
    prod = render("production-values.yaml")
    hook = by_kind(prod, "Job")[f"{FULLNAME}-migrate"]["metadata"]["annotations"]
    assert hook["helm.sh/hook"] == "pre-install,pre-upgrade"
    gateway = by_kind(prod, "Deployment")[f"{FULLNAME}-gateway"]["spec"]["template"]["spec"]
    assert "initContainers" not in gateway


def test_gateway_ingress_routes_rest_and_websockets() -> None:
    ingress = by_kind(render("production-values.yaml"), "Ingress")[f"{FULLNAME}-gateway"]
    paths = {p["path"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
    assert {"/api", "/sapi", "/fapi", "/dapi", "/ws", "/stream"} <= paths  # ccxt reads all
    assert {"/docs", "/openapi.json", "/static"} <= paths  # the API reference and its files
    assert {"/", "/trade", "/wallet", "/account", "/admin"} <= paths  # the web UI
    home = [p for r in ingress["spec"]["rules"] for p in r["http"]["paths"] if p["path"] == "/"]
    assert [p["pathType"] for p in home] == ["Exact"]  # not /metrics nor /healthz
    assert ingress["spec"]["tls"][0]["secretName"] == "api-exchange-tls"


def gateway_settings(monkeypatch: pytest.MonkeyPatch, scenario: str, *extra: str) -> Settings:
    """The settings the gateway of a rendering runs with (its env, as the process reads
    it)."""
    deployment = by_kind(render(scenario, *extra), "Deployment")[f"{FULLNAME}-gateway"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for name, value in env_of(container).items():
        if name.startswith("TRADEPLANE_") and isinstance(value, str):
            monkeypatch.setenv(name, value)
    return Settings(dev_mode=True)


def test_the_gateway_trusts_the_ingress_controller_and_enforces_binances_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Behind the Ingress every connection comes from the ingress controller: the chart
    trusts the in-cluster private ranges by default, so the client is the address the
    controller put in X-Forwarded-For (not the controller, and not what the client wrote
    in front of it); and the rate limits are Binance's unless raised."""
    s = gateway_settings(monkeypatch, "default-values.yaml")
    assert s.trusted_proxies == ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]
    trusted = parse_networks(s.trusted_proxies)
    controller = "10.42.3.7"  # an ingress-nginx pod
    assert client_ip(controller, "203.0.113.9", trusted) == "203.0.113.9"
    assert client_ip(controller, "198.51.100.1, 203.0.113.9", trusted) == "203.0.113.9"
    assert client_ip("203.0.113.50", "198.51.100.1", trusted) == "203.0.113.50"
    assert (s.ip_weight_per_minute, s.key_weight_per_minute, s.orders_per_10s,
            s.orders_per_day) == (6000, 6000, 100, 200_000)
    assert (s.ban_after_429s, s.ban_window_s, s.ban_base_s, s.ban_max_s) == (
        5, 60, 120, 3 * 86400)
    # Raising a limit and narrowing the proxies are values.
    s = gateway_settings(monkeypatch, "default-values.yaml",
                         "--set", "gateway.rateLimits.ordersPer10s=1000",
                         "--set", "gateway.rateLimits.ipWeightPerMinute=120000")
    assert (s.orders_per_10s, s.ip_weight_per_minute) == (1000, 120_000)
    s = gateway_settings(monkeypatch, "production-values.yaml")
    assert s.trusted_proxies == ["10.42.0.0/16"]


def rule_triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule.get("apiGroups", [])
            for r in rule.get("resources", []) for v in rule.get("verbs", [])}


def operator_grants(docs: tuple[dict[str, Any], ...]) -> set[tuple[str, str, str]]:
    return rule_triples([rule for d in docs if d["kind"] in ("Role", "ClusterRole")
                         and d["metadata"]["name"].startswith(f"{FULLNAME}-operator")
                         for rule in d["rules"]])


def test_operator_rbac_is_least_privilege() -> None:
    docs = render("default-values.yaml")
    granted = operator_grants(docs)
    assert not any("*" in t for t in granted)
    assert ("", "secrets", "get") not in granted  # engines read it through envFrom
    role = by_kind(docs, "Role")[f"{FULLNAME}-operator"]  # namespaced by default
    assert ("apps", "deployments", "create") in rule_triples(role["rules"])
    assert not any("kopf" in g for g, _, _ in granted)  # standalone: no peering objects
    peering = render("all-bundled-values.yaml")
    assert "KopfPeering" in {d["kind"] for d in peering}
    assert ("kopf.dev", "kopfpeerings", "patch") in operator_grants(peering)
    production = render("production-values.yaml")
    assert f"{FULLNAME}-operator" in by_kind(production, "ClusterRole")  # clusterWide
    assert "tradeplane-production" in by_kind(production, "ClusterKopfPeering")
    assert not [d for d in docs if d["kind"].endswith("KopfPeering")]


@pytest.mark.parametrize("scenario", ["default-values.yaml", "all-bundled-values.yaml",
                                      "production-values.yaml"])
def test_chart_rbac_is_the_operators_own(scenario: str) -> None:
    """The operator declares what it needs (tradeplane_operator.rbac, rendered into
    operator/rbac.yaml): the chart grants exactly that, no more, no less."""
    from tradeplane_operator import rbac

    values = yaml.safe_load((CHART / "ci" / scenario).read_text()) or {}
    peering = bool(values.get("operator", {}).get("peering", {}).get("enabled"))
    cluster_wide = bool(values.get("operator", {}).get("clusterWide"))
    assert operator_grants(render(scenario)) == rule_triples(
        rbac.cluster_rules(peering=peering, cluster_wide=cluster_wide))


def test_observability_switches() -> None:
    default = render("default-values.yaml")
    sidecar = [c for c in by_kind(default, "ConfigMap").values()
               if c["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert sidecar == []
    grafana = by_kind(default, "ConfigMap")[f"{FULLNAME}-grafana-dashboards"]
    assert set(grafana["data"]) == {p.name for p in DASHBOARDS}
    datasources = yaml.safe_load(
        by_kind(default, "ConfigMap")[f"{FULLNAME}-grafana-provisioning"]["data"][
            "datasources.yaml"])
    assert {d["type"] for d in datasources["datasources"]} == {"prometheus", "loki", "jaeger"}
    prom = by_kind(default, "ConfigMap")[f"{FULLNAME}-prometheus"]["data"]
    assert yaml.safe_load(prom["alerts.yaml"]) == yaml.safe_load(ALERTS.read_text())

    minimal = render("minimal-values.yaml")
    names = set(by_kind(minimal, "Deployment")) | set(by_kind(minimal, "DaemonSet"))
    for part in ("prometheus", "grafana", "loki", "promtail", "jaeger"):
        assert f"{FULLNAME}-{part}" not in names, part
    assert not [d for d in minimal if d["kind"] == "CustomResourceDefinition"]
    sidecar = [c for c in by_kind(minimal, "ConfigMap").values()
               if c["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(sidecar) == len(DASHBOARDS)
    for cm in sidecar:
        for text in cm["data"].values():
            assert json.loads(text)["uid"].startswith("tradeplane-")

    external = render("external-stack-values.yaml")
    # gateway, settlement, marketdata, rates, hedger
    assert len(by_kind(external, "ServiceMonitor")) == 5
    rule = by_kind(external, "PrometheusRule")[FULLNAME]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    assert not by_kind(external, "StatefulSet")
    secret = by_kind(external, "Secret")[f"{FULLNAME}-env"]["stringData"]
    assert secret["TRADEPLANE_NATS_URL"] == "nats://nats.messaging.svc:4222"


def test_service_monitors_select_services_that_exist() -> None:
    docs = render("external-stack-values.yaml")
    services = by_kind(docs, "Service")
    for name, sm in by_kind(docs, "ServiceMonitor").items():
        selector = sm["spec"]["selector"]["matchLabels"]
        matches = [s for s in services.values()
                   if selector.items() <= s["metadata"]["labels"].items()]
        assert len(matches) == 1, name
        ports = {p["name"] for p in matches[0]["spec"]["ports"]}
        assert {e["port"] for e in sm["spec"]["endpoints"]} <= ports, name


def test_every_value_is_documented_where_declared() -> None:
    """Each key of values.yaml has a comment right above it (inside Kubernetes objects
    such as resources or a security context, the object's comment covers its fields)."""
    opaque = {"containerSecurityContext", "resources", "seccompProfile", "capabilities"}
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parents = [k for _, k in stack]
        stack.append((indent, key))
        if not opaque & set(parents) and not lines[i - 1].lstrip().startswith("#"):
            undocumented.append(".".join([*parents, key]))
    assert undocumented == []
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) == set(schema["properties"])


# ------------------------------------------------------------------------------ schema
@pytest.mark.parametrize(("setting", "complaint"), [
    ("gateway.replicas=0", "gateway.replicas"),
    ("config.logLevel=LOUD", "config.logLevel"),
    ("postgresql.url=mysql://db/x", "postgresql.url"),
    ("settlement.replicas=3", "settlement"),
    ("settlement.snapshotIntervalSeconds=0", "settlement.snapshotIntervalSeconds"),
    ("operator.serviceMonitor=maybe", "operator.serviceMonitor"),
    ("gateway.rateLimits.ordersPer10s=0", "gateway.rateLimits.ordersPer10s"),
    ("gateway.rateLimits.perHour=5", "gateway.rateLimits"),
    ("gateway.trustedProxies={everyone}", "gateway.trustedProxies"),
])
def test_values_schema_rejects_bad_values(setting: str, complaint: str) -> None:
    done = helm("template", RELEASE, str(CHART), "--set", setting, check=False)
    assert done.returncode != 0
    assert complaint in done.stderr


def test_external_servers_need_urls() -> None:
    done = helm("template", RELEASE, str(CHART), "--set", "nats.bundled.enabled=false",
                check=False)
    assert done.returncode != 0 and "nats.url" in done.stderr


# ------------------------------------------------------------------------------ dashboards
def test_dashboards_are_grafana_dashboards() -> None:
    assert {p.stem for p in DASHBOARDS} >= {
        "exchange-overview", "matching-engine", "api-red", "ledger-wallets"}
    uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert isinstance(board["title"], str) and board["title"]
        assert 0 < len(board["uid"]) <= 40 and board["uid"] not in uids
        uids.add(board["uid"])
        assert isinstance(board["schemaVersion"], int)
        assert "id" not in board or board["id"] is None  # importable anywhere
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in board["panels"]:
            assert panel["type"] and panel["title"], path.name
            assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            if panel["type"] == "row":
                continue
            assert panel["targets"], (path.name, panel["title"])
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs))
            for t in panel["targets"]:
                assert metric_names(t["expr"]), (path.name, t["expr"])
    engine = json.loads((CHART / "dashboards" / "matching-engine.json").read_text())
    symbol = {v["name"]: v for v in engine["templating"]["list"]}["symbol"]
    assert symbol["type"] == "query" and "symbol" in symbol["definition"]
    assert all('symbol=~"$symbol"' in t["expr"] for p in engine["panels"]
               for t in p.get("targets", []))


@pytest.fixture(scope="module")
async def busy_platform(nats_url: str, pg_url: str, redis_url: str) -> AsyncIterator[Platform]:
    """The services after a trade, with the ledger invariants exported once more."""
    async with running_platform(nats_url, pg_url, redis_url) as plat:
        alice = await plat.trader("alice", {"BTC": "1"})
        bob = await plat.trader("bob", {"USDT": "100000"})
        r = await alice.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="SELL",
                                   type="LIMIT", timeInForce="GTC", price="60000.00",
                                   quantity="0.5")
        assert r.status_code == 200, r.text
        r = await bob.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY",
                                 type="LIMIT", timeInForce="GTC", price="60100.00",
                                 quantity="0.2", newOrderRespType="FULL")
        assert r.status_code == 200 and r.json()["status"] == "FILLED", r.text
        r = await bob.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY",
                                 type="LIMIT", timeInForce="GTC", price="1.00",
                                 quantity="999999")
        assert r.status_code == 400  # a refused order: an error outcome exists
        # Settlement exports the invariants every 30 s; do it now rather than wait.
        bus = await Bus.connect(plat.settings.nats_url, name="chart-test")
        try:
            assert await settler(bus, plat.pool).export_invariants() == []
        finally:
            await bus.close()
        yield plat


async def live_series(plat: Platform) -> set[str]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{plat.base_url}/metrics")).text
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.mark.integration
async def test_dashboard_queries_use_only_exported_metrics(busy_platform: Platform) -> None:
    wanted = {n for exprs in dashboard_exprs().values() for e in exprs
              for n in metric_names(e)} - PROMETHEUS_SERIES
    # The custody panels' series come from the wallet watcher (it needs a chain node:
    # tests/integration/test_wallets.py): each must be one its modules define.
    custody = {n for n in wanted if n.startswith("tradeplane_wallet_")}
    assert custody <= WALLET_SERIES, sorted(custody - WALLET_SERIES)
    wanted -= custody
    # The convert desk's panels: series of the rates service and the hedger (their own
    # tests run them: tests/integration/test_convert*.py).
    convert = {n for n in wanted if n.startswith("tradeplane_convert_")}
    assert {n.removesuffix("_bucket") for n in convert} <= CONVERT_SERIES, sorted(convert)
    wanted -= convert

    async def all_there() -> bool:
        missing = wanted - await live_series(busy_platform)
        assert not missing, f"dashboards query series no service exports: {sorted(missing)}"
        return True

    await eventually(all_there, timeout=30)


@pytest.mark.integration
async def test_alert_rules_use_only_exported_metrics(busy_platform: Platform) -> None:
    wanted = {n for r in alert_rules() for n in metric_names(r["expr"])}
    wanted -= PROMETHEUS_SERIES | AWAITED_SERIES

    async def all_there() -> bool:
        missing = wanted - await live_series(busy_platform)
        assert not missing, f"alerts query series no service exports: {sorted(missing)}"
        return True

    await eventually(all_there, timeout=30)


# ------------------------------------------------------------------------------ alerts
def test_alert_rules_cover_the_failures_that_matter() -> None:
    rules = {r["alert"]: r for r in alert_rules()}
    assert {"TradeplaneEngineDown", "TradeplaneSettlementLag", "TradeplaneMarketDataLag",
            "TradeplaneLedgerImbalance", "TradeplanePairHalted",
            "TradeplaneOrderErrorRate", "TradeplaneConvertHedgeDeadLettered"} <= set(rules)
    assert rules["TradeplaneLedgerImbalance"]["expr"].strip() == (
        "tradeplane_ledger_invariant_ok == 0")
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_promtool_accepts_the_alert_rules() -> None:
    done = run_promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_the_rendered_rules(tmp_path: Path) -> None:
    """Both deliveries of rules/alerts.yaml: the PrometheusRule's spec and the bundled
    Prometheus's rule file. (Debian's promtool is built without Kubernetes service
    discovery, so `promtool check config` cannot read the bundled scrape config.)"""
    rule = by_kind(render("external-stack-values.yaml"), "PrometheusRule")[FULLNAME]
    data = by_kind(render("default-values.yaml"), "ConfigMap")[f"{FULLNAME}-prometheus"]["data"]
    (tmp_path / "rule.yaml").write_text(yaml.safe_dump(rule["spec"]))
    (tmp_path / "alerts.yaml").write_text(data["alerts.yaml"])
    done = run_promtool("check", "rules", str(tmp_path / "rule.yaml"),
                        str(tmp_path / "alerts.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load(data["prometheus.yml"])
    assert config["rule_files"] == ["/etc/prometheus/alerts.yaml"]
    assert {j["job_name"] for j in config["scrape_configs"]} == {
        "tradeplane", "tradeplane-operands"}


def test_alerts_fire_when_they_should(tmp_path: Path) -> None:
    """promtool's rule unit tests: the ledger, engine and lag alerts fire on bad series and
    stay quiet on good ones."""
    tests = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": "tradeplane_ledger_invariant_ok", "values": "1 1 0 0"},
                {"series": 'up{component="matching-engine", pod="engine-btc"}',
                 "values": "1 0 0 0 0"},
                {"series": 'up{component="matching-engine", pod="engine-eth"}',
                 "values": "1 1 1 1 1"},
                {"series": 'tradeplane_engine_last_sequence{symbol="BTCUSDT"}',
                 "values": "5000+0x10"},
                {"series": 'tradeplane_settlement_last_sequence{symbol="BTCUSDT"}',
                 "values": "100+0x10"},
                {"series": 'tradeplane_engine_trading_state{symbol="ETHBTC"}',
                 "values": "1 2 2 2"},
                {"series": 'tradeplane_wallet_reconciliation_ok{wallet="ltc", asset="LTC"}',
                 "values": "1 0 0 0 0 0 0 0"},
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "TradeplaneLedgerImbalance", "exp_alerts": []},
                {"eval_time": "3m", "alertname": "TradeplaneLedgerImbalance", "exp_alerts": [
                    {"exp_labels": {"severity": "critical"},
                     "exp_annotations": _annotations("TradeplaneLedgerImbalance", {})}]},
                {"eval_time": "4m", "alertname": "TradeplaneEngineDown", "exp_alerts": [
                    {"exp_labels": {"severity": "critical", "component": "matching-engine",
                                    "pod": "engine-btc"},
                     "exp_annotations": _annotations(
                         "TradeplaneEngineDown", {"pod": "engine-btc"})}]},
                {"eval_time": "5m", "alertname": "TradeplaneSettlementLag", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "symbol": "BTCUSDT"},
                     "exp_annotations": _annotations(
                         "TradeplaneSettlementLag", {"symbol": "BTCUSDT"}, "4900")}]},
                {"eval_time": "5m", "alertname": "TradeplaneWalletLiabilitiesExceedHoldings",
                 "exp_alerts": []},
                {"eval_time": "7m", "alertname": "TradeplaneWalletLiabilitiesExceedHoldings",
                 "exp_alerts": [
                     {"exp_labels": {"severity": "critical", "wallet": "ltc", "asset": "LTC"},
                      "exp_annotations": _annotations(
                          "TradeplaneWalletLiabilitiesExceedHoldings", {"wallet": "ltc"})}]},
                {"eval_time": "3m", "alertname": "TradeplanePairHalted", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "symbol": "ETHBTC"},
                     "exp_annotations": _annotations(
                         "TradeplanePairHalted", {"symbol": "ETHBTC"}, "2")}]},
            ],
        }],
    }
    path = tmp_path / "alerts-test.yaml"
    path.write_text(yaml.safe_dump(tests))
    done = run_promtool("test", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def _annotations(alert: str, labels: dict[str, str], value: str = "0") -> dict[str, str]:
    """The rule's annotations with its simple templates filled in, as promtool expects."""
    rule = next(r for r in alert_rules() if r.get("alert") == alert)
    out = {}
    for key, text in rule["annotations"].items():
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""),
                      text)
        out[key] = text.replace("{{ $value }}", value)
    return out


# ------------------------------------------------------------------------------ build/deploy
def test_skaffold_builds_the_image_and_deploys_this_chart() -> None:
    skaffold = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    artifact = skaffold["build"]["artifacts"][0]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert artifact["image"] == values["image"]["repository"]
    assert (ROOT / artifact.get("docker", {}).get("dockerfile", "Dockerfile")).exists()
    release = skaffold["deploy"]["helm"]["releases"][0]
    assert (ROOT / release["chartPath"]).resolve() == CHART.resolve()
    dockerfile = (ROOT / "Dockerfile").read_text()
    # Base chosen by a build argument, the install offline from the pinned wheelhouse
    # (tests/e2e/test_image.py builds it for real).
    assert re.search(r"^ARG BASE=python:3\.11-slim$", dockerfile, re.M)
    assert "--no-index" in dockerfile and "-c /src/constraints.txt" in dockerfile
    hooks = artifact.get("hooks", {}).get("before", [])
    assert ["make", "wheelhouse"] in [h["command"] for h in hooks]
    assert re.search(r"^USER\s+10001", dockerfile, re.M)  # podSecurityContext.runAsUser
