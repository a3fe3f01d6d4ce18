"""The operator's RBAC as the chart renders it (the real helm), and the question an API
server's authorizer answers: is this request allowed, and which rules did nothing use.

Rules are matched as Kubernetes' RBAC authorizer matches them: a Role's rules apply in its
namespace, a ClusterRole's (bound by a ClusterRoleBinding) everywhere; a rule allows a
request when its apiGroups, resources (``plural`` or ``plural/subresource``) and verbs all
name the request's. The chart grants no wildcard (tests/integration/test_chart.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from tests.support.helm import helm
from tests.support.k8s_emulator import Access

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tradeplane"
RELEASE = "rbac"
NAMESPACE = "tradeplane"


@dataclass(frozen=True)
class Grant:
    """One rule of a Role (``namespace`` set) or ClusterRole (``namespace`` "")."""

    role: str
    namespace: str
    groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]

    def allows(self, access: Access) -> bool:
        resource = access.resource + (f"/{access.subresource}" if access.subresource else "")
        in_scope = not self.namespace or self.namespace == access.namespace
        return (in_scope and access.group in self.groups and resource in self.resources
                and access.verb in self.verbs)

    def describe(self) -> str:
        return (f"{self.role}: {sorted(self.groups)} {sorted(self.resources)} "
                f"{sorted(self.verbs)}")


def operator_grants(*, cluster_wide: bool, peering: bool) -> list[Grant]:
    """The operator's rules as ``helm template`` renders them with these switches."""
    done = helm("template", RELEASE, str(CHART), "-n", NAMESPACE,
                "--set", f"operator.clusterWide={str(cluster_wide).lower()}",
                "--set", f"operator.peering.enabled={str(peering).lower()}")
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    account = next(d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"
                   and d["metadata"]["name"].endswith("-operator"))
    bound: set[tuple[str, str, str]] = set()  # (kind, name, namespace) bound to the operator
    for d in docs:
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding") and any(
            s["kind"] == "ServiceAccount" and s["name"] == account for s in d["subjects"]
        ):
            ref = d["roleRef"]
            scope = d["metadata"].get("namespace", "") if d["kind"] == "RoleBinding" else ""
            bound.add((ref["kind"], ref["name"], scope))
    grants: list[Grant] = []
    for d in docs:
        if d["kind"] not in ("Role", "ClusterRole"):
            continue
        for kind, name, scope in bound:
            if kind == d["kind"] and name == d["metadata"]["name"]:
                for rule in d.get("rules", []):
                    grants.append(Grant(f"{kind}/{name}", scope, frozenset(rule["apiGroups"]),
                                        frozenset(rule["resources"]),
                                        frozenset(rule["verbs"])))
    return grants


def in_release_namespace(accesses: set[Access]) -> set[Access]:
    """The accesses as they would be in the release namespace: each operator run serves one
    namespace (the chart sets it to the release's), so every namespaced request lands there."""
    return {Access(a.verb, a.group, a.resource, a.subresource,
                   NAMESPACE if a.namespace else "") for a in accesses}


def denied(grants: list[Grant], accesses: set[Access]) -> list[Access]:
    return sorted(a for a in accesses if not any(g.allows(a) for g in grants))


def unused(grants: list[Grant], accesses: set[Access]) -> list[str]:
    """Each (rule, group, resource, verb) the rules grant that no access used."""
    out = []
    for grant in grants:
        for group in grant.groups:
            for resource in grant.resources:
                plural, _, sub = resource.partition("/")
                for verb in grant.verbs:
                    if not any(
                        a.group == group and a.resource == plural and a.subresource == sub
                        and a.verb == verb and grant.allows(a) for a in accesses
                    ):
                        out.append(f"{grant.role}: {group or 'core'} {resource} {verb}")
    return sorted(out)
