"""How tests/support/containers.py turns a pod spec into ``docker run``: the spec's
security settings all reach the container, secrets stay off the command line, ports move
only with the variable that sets them, and a field it cannot honour is refused, never
ignored. Runs without Docker (the e2e tests that use it skip without one)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from tests.support.containers import ContainerError, Pod, host_ports, parse_quantity

CONTAINER: dict[str, Any] = {
    "name": "engine", "image": "tradeplane:test", "command": ["tradeplane"],
    "args": ["matching", "--symbol", "BTC-USDT"],
    "env": [{"name": "TRADEPLANE_METRICS_PORT", "value": "9100"}],
    "envFrom": [{"secretRef": {"name": "env"}}],
    "ports": [{"name": "metrics", "containerPort": 9100}],
    "resources": {"limits": {"memory": "1Gi", "cpu": "500m"}},
    "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                        "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                     {"name": "rules", "mountPath": "/etc/pair", "readOnly": True}],
}
SPEC: dict[str, Any] = {
    "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                        "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "terminationGracePeriodSeconds": 30,
    "containers": [CONTAINER],
    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                {"name": "rules", "configMap": {"name": "pair"}}],
}


def pod(spec: dict[str, Any] = SPEC) -> Pod:
    return Pod("engine", spec, {"env": {"TRADEPLANE_SECRET_KEY": "s3cret"}},
               files={"rules": Path("/srv/rules")})


def test_the_specs_security_settings_all_reach_the_container() -> None:
    args, _ = pod().run_args(CONTAINER, "c", {})
    joined = " ".join(args)
    assert "--user 10001:10001" in joined and "--group-add 10001" in joined
    assert "--read-only" in args and "--cap-drop ALL" in joined
    assert "--security-opt no-new-privileges" in joined
    assert f"--memory {2**30}" in joined and "--cpus 0.5" in joined
    assert "--network host" in joined and "--stop-timeout 30" in joined
    assert f"/tmp:rw,exec,nosuid,nodev,size={64 * 2**20},mode=1777" in args
    assert "/srv/rules:/etc/pair:ro" in args
    # command replaces the image's entrypoint, args follow the image
    assert args[-6:] == ["--entrypoint", "tradeplane", "tradeplane:test", "matching",
                         "--symbol", "BTC-USDT"]


def test_secret_values_stay_off_dockers_command_line() -> None:
    args, env = pod().run_args(CONTAINER, "c", {})
    assert env["TRADEPLANE_SECRET_KEY"] == "s3cret"
    assert "TRADEPLANE_SECRET_KEY" in args and not any("s3cret" in a for a in args)


def test_a_port_moves_only_with_the_variable_that_sets_it() -> None:
    overrides, ports = host_ports(CONTAINER)
    assert overrides == {"TRADEPLANE_METRICS_PORT": str(ports["metrics"])}
    wrong = copy.deepcopy(CONTAINER)
    wrong["env"][0]["value"] = "9200"  # the process would listen where no probe looks
    with pytest.raises(ContainerError, match="set by nothing"):
        host_ports(wrong)


@pytest.mark.parametrize(("change", "why"), [
    (lambda c, s: c["securityContext"].update(privileged=True), "privileged"),
    (lambda c, s: s["securityContext"].update(runAsUser=0), "runAsNonRoot"),
    (lambda c, s: c["env"].append({"name": "X", "valueFrom": {}}), "valueFrom"),
    (lambda c, s: s["volumes"].append({"name": "data", "hostPath": {"path": "/"}})
     or c["volumeMounts"].append({"name": "data", "mountPath": "/data"}), "not implemented"),
])
def test_a_field_it_cannot_honour_is_refused_not_ignored(change: Any, why: str) -> None:
    spec = copy.deepcopy(SPEC)
    container = spec["containers"][0]
    change(container, spec)
    with pytest.raises(ContainerError, match=why):
        pod(spec).run_args(container, "c", {})


def test_quantities_are_read_as_kubernetes_writes_them() -> None:
    assert parse_quantity("64Mi") == 64 * 2**20
    assert parse_quantity("1G") == 10**9
    with pytest.raises(ContainerError):
        parse_quantity("1.5Gi")
