"""Debian's Prometheus and Alertmanager, run against the release in containers
(tests/support/cluster.py) with the chart's own scrape configuration and alert rules.

The chart's Prometheus discovers pods through the Kubernetes API (``kubernetes_sd_configs``,
role ``pod``), which is not here. :func:`pod_targets` writes what that discovery would
return for the running pods — one target per container port, with the pod's labels,
annotations, phase and port as ``__meta_kubernetes_*`` labels — to a file that
``file_sd_configs`` reads, and the chart's ``relabel_configs`` stay as rendered: the same
relabelling decides what is scraped and how it is labelled. The one change to a label value
is the port: in a pod ``prometheus.io/port`` names the container's port, here the port the
process listens on (the containers share the host's network).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml
from tests.support.cluster import FULLNAME, NAMESPACE, Cluster, find
from tests.support.containers import free_port

PROMETHEUS_MISSING = ("prometheus is not installed (Debian's prometheus package; .ci/run "
                      "installs it)")
ALERTMANAGER_MISSING = ("prometheus-alertmanager is not installed (Debian's package of that "
                        "name; .ci/run installs it)")


def _meta_name(name: str) -> str:
    """A label or annotation name as Prometheus' Kubernetes discovery spells it."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def pod_targets(cluster: Cluster) -> list[dict[str, Any]]:
    """What Kubernetes pod discovery would find for the running pods of ``cluster``."""
    groups = []
    for name, pod in cluster.pods.items():
        template = cluster.templates[name]
        metadata = template.get("metadata", {})
        for started in pod.containers.values():
            host_port = {p["containerPort"]: started.ports[p["name"]]
                         for p in started.spec.get("ports", [])}
            common = {
                "__meta_kubernetes_namespace": NAMESPACE,
                "__meta_kubernetes_pod_name": f"{FULLNAME}-{name}-0",
                "__meta_kubernetes_pod_phase": "Running",
                "__meta_kubernetes_pod_ready": "true",
                "__meta_kubernetes_pod_ip": "127.0.0.1",
                "__meta_kubernetes_pod_container_name": started.spec["name"],
            }
            for key, value in metadata.get("labels", {}).items():
                common[f"__meta_kubernetes_pod_label_{_meta_name(key)}"] = str(value)
                common[f"__meta_kubernetes_pod_labelpresent_{_meta_name(key)}"] = "true"
            for key, value in metadata.get("annotations", {}).items():
                value = str(value)
                if key == "prometheus.io/port" and value.isdigit():
                    value = str(host_port.get(int(value), value))
                common[f"__meta_kubernetes_pod_annotation_{_meta_name(key)}"] = value
            for port in started.spec.get("ports", []):
                groups.append({
                    "targets": [f"127.0.0.1:{started.ports[port['name']]}"],
                    "labels": common | {
                        "__meta_kubernetes_pod_container_port_name": port["name"],
                        "__meta_kubernetes_pod_container_port_number":
                            str(started.ports[port["name"]]),
                        "__meta_kubernetes_pod_container_port_protocol":
                            port.get("protocol", "TCP"),
                    },
                })
    return groups


def prometheus_config(cluster: Cluster, folder: Path, alertmanager: str,
                      rule_for: str = "2s") -> Path:
    """The chart's prometheus.yml and alerts.yaml, adapted: discovery from a file of
    :func:`pod_targets`, alerts sent to ``alertmanager`` (host:port; the chart bundles
    none), and each rule's ``for`` shortened to ``rule_for`` so a test waits seconds, not
    minutes (promtool's rule unit tests pin the real durations:
    tests/integration/test_chart.py)."""
    data = find(cluster.docs, "ConfigMap", f"{FULLNAME}-prometheus")["data"]
    config = yaml.safe_load(data["prometheus.yml"])
    targets = folder / "targets.json"
    targets.write_text(json.dumps(pod_targets(cluster)))
    for job in config["scrape_configs"]:
        assert [sd["role"] for sd in job.pop("kubernetes_sd_configs")] == ["pod"]
        job["file_sd_configs"] = [{"files": [str(targets)], "refresh_interval": "1s"}]
    rules = yaml.safe_load(data["alerts.yaml"])
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = rule_for
    (folder / "alerts.yaml").write_text(yaml.safe_dump(rules))
    config["rule_files"] = [str(folder / "alerts.yaml")]
    config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def _server(argv: list[str], url: str, log: Path, timeout: float = 30) -> Iterator[str]:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_alertmanager(folder: Path) -> Iterator[str]:
    """Alertmanager on a free port with one receiver that keeps what it is sent (its API
    lists it); no clustering. Yields its URL."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary is not None, ALERTMANAGER_MISSING
    config = folder / "alertmanager.yml"
    config.write_text(yaml.safe_dump({
        "route": {"receiver": "test", "group_wait": "0s", "group_interval": "1s",
                  "repeat_interval": "1h"},
        "receivers": [{"name": "test"}],
    }))
    port = free_port()
    with _server([binary, f"--config.file={config}", f"--storage.path={folder / 'am'}",
                  f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                 f"http://127.0.0.1:{port}", folder / "alertmanager.log") as url:
        yield url


@contextlib.contextmanager
def running_prometheus(config: Path) -> Iterator[str]:
    """Prometheus with ``config`` on a free port, its data next to the config. Yields its
    URL."""
    binary = shutil.which("prometheus")
    assert binary is not None, PROMETHEUS_MISSING
    port = free_port()
    folder = config.parent
    with _server([binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'tsdb'}",
                  f"--web.listen-address=127.0.0.1:{port}"],
                 f"http://127.0.0.1:{port}", folder / "prometheus.log") as url:
        yield url


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    """An instant query's result (a vector's samples; a scalar as one sample)."""
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", (expr, body)
    data = body["data"]
    if data["resultType"] in ("scalar", "string"):
        return [{"metric": {}, "value": data["result"]}]
    result: list[dict[str, Any]] = data["result"]
    return result


def alerts(alertmanager: str) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds."""
    listed: list[dict[str, Any]] = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=10).json()
    return listed


def rules(prometheus: str) -> list[dict[str, Any]]:
    """Every rule Prometheus loaded, with its health and last error."""
    body = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()
    return [r for g in body["data"]["groups"] for r in g["rules"]]


def panel_queries(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, rows' panels included."""
    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    for panel in walk(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel.get("title", "?"), target["expr"]
