"""Local observability for ``tradeplane up --observability``: Debian's Prometheus and
Alertmanager scraping every local process, with the chart's alert rules.

The chart's Prometheus finds pods through the Kubernetes API and relabels them to
``component`` / ``pod`` / ``namespace`` (charts/tradeplane/templates/prometheus.yaml); here
the same labels are written directly on file-discovered targets, one per process, so the
chart's rules (charts/tradeplane/rules/alerts.yaml, read from the source tree) and
dashboards select them unchanged. A process gets a new metrics port when the supervisor
restarts it: :meth:`LocalMonitoring.update` rewrites the targets file, which Prometheus
re-reads every second.

Nothing here is required: without the binaries, :func:`start_monitoring` says what to
install and the platform runs without them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tradeplane.domain.errors import TradeplaneError
from tradeplane.platform.ports import HOST, free_port

NAMESPACE = "local"
PROMETHEUS_BINARIES = ("prometheus",)
ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")
#: The chart's alert rules, when running from a source checkout.
CHART_RULES = Path(__file__).resolve().parents[3] / "charts/tradeplane/rules/alerts.yaml"


class MonitoringStartError(TradeplaneError):
    """Prometheus or Alertmanager did not become ready (its log is named)."""


def component_of(process: str) -> str | None:
    """The chart's ``component`` label of a local process (None: not scraped)."""
    if process.startswith("matching-"):
        return "matching-engine"
    if process.startswith("wallet-"):
        return "wallet-watcher"
    if process in ("gateway", "settlement", "marketdata"):
        return process
    return None


def scrape_targets(ports: Mapping[str, int]) -> list[dict[str, Any]]:
    """``file_sd_configs`` groups: one target per process with a metrics port, labelled as
    the chart's relabelling labels a pod (``component``, ``pod``, ``namespace``)."""
    groups = []
    for process, port in sorted(ports.items()):
        component = component_of(process)
        if component is None:
            continue
        groups.append({"targets": [f"{HOST}:{port}"],
                       "labels": {"component": component, "pod": process,
                                  "namespace": NAMESPACE}})
    return groups


def prometheus_config(targets_file: Path, rules_file: Path | None,
                      alertmanager: str | None) -> dict[str, Any]:
    """prometheus.yml: every target of ``targets_file``, the rules, the Alertmanager."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "scrape_configs": [{
            "job_name": "tradeplane",
            "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
        }],
    }
    if rules_file is not None:
        config["rule_files"] = [str(rules_file)]
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [
            {"targets": [alertmanager]}]}]}
    return config


def find_binary(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists()
                                       else None)
        if found:
            return found
    return None


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class LocalMonitoring:
    """Running Prometheus (and Alertmanager, when installed) of a local platform."""

    folder: Path
    prometheus_url: str = ""
    alertmanager_url: str | None = None
    rules: Path | None = None
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _ports: dict[str, int] = field(default_factory=dict)

    @property
    def targets_file(self) -> Path:
        return self.folder / "targets.json"

    def update(self, ports: Mapping[str, int]) -> None:
        """Scrape ``ports`` (process name -> metrics port) from now on."""
        if dict(ports) != self._ports:
            self._ports = dict(ports)
            _write_atomically(self.targets_file, json.dumps(scrape_targets(ports)))

    def stop(self) -> None:
        for proc in reversed(self._procs):
            proc.terminate()
        for proc in reversed(self._procs):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()

    def _start(self, argv: list[str], url: str, log: Path, timeout: float) -> None:
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        self._procs.append(proc)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise MonitoringStartError(f"{Path(argv[0]).name} did not start; see {log}")
            time.sleep(0.2)


def start_monitoring(folder: Path, ports: Mapping[str, int], *,
                     rules: Path | None = CHART_RULES, timeout: float = 60,
                     ) -> tuple[LocalMonitoring | None, list[str]]:
    """Start Alertmanager (if installed) and Prometheus (if installed) in ``folder``,
    scraping ``ports``. Returns the running pair (None without Prometheus) and messages for
    the user (what is missing and how to install it).

    Raises:
        MonitoringStartError: a binary is installed but did not become ready (the servers
            already started are stopped).
    """
    notes: list[str] = []
    prometheus = find_binary(PROMETHEUS_BINARIES)
    if prometheus is None:
        return None, ["Prometheus is not installed (`apt-get install prometheus`): "
                      "running without observability"]
    folder.mkdir(parents=True, exist_ok=True)
    mon = LocalMonitoring(folder)
    if rules is not None and not rules.exists():
        notes.append(f"the chart's alert rules are not at {rules} (not a source checkout): "
                     "Prometheus runs without them")
        rules = None
    mon.rules = rules
    mon.update(ports)
    try:
        alertmanager = find_binary(ALERTMANAGER_BINARIES)
        if alertmanager is None:
            notes.append("Alertmanager is not installed (`apt-get install "
                         "prometheus-alertmanager`): alerts fire in Prometheus only")
        else:
            port = free_port()
            config = folder / "alertmanager.yml"
            config.write_text(yaml.safe_dump({
                "route": {"receiver": "local", "group_wait": "10s"},
                "receivers": [{"name": "local"}],
            }))
            mon.alertmanager_url = f"http://{HOST}:{port}"
            mon._start([alertmanager, f"--config.file={config}",
                        f"--storage.path={folder / 'alertmanager'}",
                        f"--web.listen-address={HOST}:{port}", "--cluster.listen-address="],
                       mon.alertmanager_url, folder / "alertmanager.log", timeout)
        port = free_port()
        config = folder / "prometheus.yml"
        am = mon.alertmanager_url.removeprefix("http://") if mon.alertmanager_url else None
        config.write_text(yaml.safe_dump(prometheus_config(mon.targets_file, rules, am)))
        mon.prometheus_url = f"http://{HOST}:{port}"
        mon._start([prometheus, f"--config.file={config}",
                    f"--storage.tsdb.path={folder / 'prometheus'}",
                    f"--web.listen-address={HOST}:{port}"],
                   mon.prometheus_url, folder / "prometheus.log", timeout)
    except BaseException:
        mon.stop()
        raise
    return mon, notes
