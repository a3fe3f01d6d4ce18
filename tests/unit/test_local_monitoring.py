"""``tradeplane up --observability``'s configuration (tradeplane/platform/monitoring.py):
every local process is a target labelled as the chart's relabelling labels its pod, and a
machine without Prometheus runs on with a message. The real Prometheus and Alertmanager
scraping a real ``up``: tests/e2e/test_local_platform.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tradeplane.platform import monitoring


def test_every_process_with_metrics_is_a_target_with_the_charts_labels() -> None:
    ports = {"matching-BTC-USDT": 4001, "settlement": 4002, "marketdata": 4003,
             "wallet-litecoin-regtest": 4004, "gateway": 8080, "marketmaker": 4005}
    groups = monitoring.scrape_targets(ports)
    assert groups == [
        {"targets": [f"127.0.0.1:{port}"],
         "labels": {"component": component, "pod": name, "namespace": "local"}}
        for name, port, component in [
            ("gateway", 8080, "gateway"), ("marketdata", 4003, "marketdata"),
            ("matching-BTC-USDT", 4001, "matching-engine"), ("settlement", 4002, "settlement"),
            ("wallet-litecoin-regtest", 4004, "wallet-watcher"),
        ]
    ]


def test_the_charts_rules_select_the_components_the_targets_carry() -> None:
    rules = yaml.safe_load(monitoring.CHART_RULES.read_text())
    exprs = " ".join(rule["expr"] for group in rules["groups"] for rule in group["rules"])
    for component in ("matching-engine", "gateway", "settlement", "marketdata"):
        assert component in exprs


def test_config_reads_the_targets_file_the_rules_and_sends_to_alertmanager(
    tmp_path: Path,
) -> None:
    config = monitoring.prometheus_config(tmp_path / "t.json", monitoring.CHART_RULES,
                                          "127.0.0.1:9093")
    assert config["scrape_configs"] == [{
        "job_name": "tradeplane",
        "file_sd_configs": [{"files": [str(tmp_path / "t.json")], "refresh_interval": "1s"}],
    }]
    assert config["rule_files"] == [str(monitoring.CHART_RULES)]
    assert config["alerting"]["alertmanagers"][0]["static_configs"] == [
        {"targets": ["127.0.0.1:9093"]}]
    bare = monitoring.prometheus_config(tmp_path / "t.json", None, None)
    assert "rule_files" not in bare and "alerting" not in bare


def test_a_restarted_process_moves_its_target(tmp_path: Path) -> None:
    mon = monitoring.LocalMonitoring(tmp_path)
    mon.update({"settlement": 4002})
    mon.update({"settlement": 5002})
    # JSON: Prometheus reads a file_sd file by its extension
    assert json.loads(mon.targets_file.read_text())[0]["targets"] == ["127.0.0.1:5002"]


def test_without_prometheus_up_runs_on_and_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(monitoring, "PROMETHEUS_BINARIES", ("no-such-prometheus",))
    running, notes = monitoring.start_monitoring(tmp_path, {"settlement": 4002})
    assert running is None
    assert notes == ["Prometheus is not installed (`apt-get install prometheus`): running "
                     "without observability"]
