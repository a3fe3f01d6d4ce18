"""What a TradingPair or a Wallet should run: pure functions from a spec to manifests.

No I/O and no Kubernetes client here: the handlers read the spec, call these functions and
hand the manifests to the API adapter (``kube.py``). Everything the operator creates is
defined in this one module, so a reviewer sees the whole footprint of a pair at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tradeplane.domain.errors import InvalidInput
from tradeplane.domain.pairs import PairConfigError, rules_from_spec
from tradeplane_operator.settings import OperatorSettings

GROUP = "trading.tradeplane.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
PREFIX = GROUP  # our annotation/label prefix (never kopf.zalando.org)
CONFIG_HASH = f"{PREFIX}/config-hash"
RULES_DIR = "/etc/tradeplane/pair"
RULES_FILE = f"{RULES_DIR}/pair.json"
WALLET_DIR = "/etc/tradeplane/wallet"
WALLET_FILE = f"{WALLET_DIR}/wallet.json"
VAULT_TOKEN_DIR = "/var/run/secrets/tradeplane/vault"
VAULT_JWT_FILE = f"{VAULT_TOKEN_DIR}/token"
RUN_AS = 10001  # the image's unprivileged user

# Fields of a TradingPair spec that do not go into pair.json: engine placement is the
# Deployment's business, not the engine's rules.
_NOT_RULES = ("engine",)
# Changing these must not restart the engine: the kill switch is applied live (SetTrading on
# the symbol's log) and the ConfigMap is updated only so that a later restart agrees.
_LIVE_FIELDS = ("trading",)

DEFAULT_ENGINE_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "500m", "memory": "256Mi"},
    "limits": {"memory": "1Gi"},
}
DEFAULT_WATCHER_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "50m", "memory": "96Mi"},
    "limits": {"memory": "256Mi"},
}

Manifest = dict[str, Any]


class InvalidSpec(InvalidInput, ValueError):
    """The spec cannot be turned into manifests; retrying will not help (PermanentError)."""


# ---------------------------------------------------------------------------- naming
def engine_name(pair: str) -> str:
    return f"{pair}-engine"


def engine_config_name(pair: str) -> str:
    return f"{pair}-engine-rules"


def metrics_service_name(pair: str) -> str:
    return f"{pair}-engine-metrics"


def watcher_name(wallet: str) -> str:
    return f"{wallet}-wallet-watcher"


def watcher_config_name(wallet: str) -> str:
    return f"{wallet}-wallet-watcher-config"


def pair_symbol(spec: Mapping[str, Any]) -> tuple[str, str]:
    """``("BTCUSDT", "BTC-USDT")`` for a spec.

    Raises:
        InvalidSpec: the spec is not a valid set of pair rules.
    """
    try:
        rules = rules_from_spec(dict(spec))
    except PairConfigError as exc:
        raise InvalidSpec(str(exc)) from exc
    return rules.symbol, rules.name


# ---------------------------------------------------------------------------- building blocks
def labels(name: str, component: str, app: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": app,
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "tradeplane",
        "app.kubernetes.io/managed-by": "tradeplane-operator",
    }


def selector(name: str, app: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": app, "app.kubernetes.io/instance": name}


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    # blockOwnerDeletion: a foreground delete of the owner waits for the children.
    return {"apiVersion": API_VERSION, "kind": kind, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def _meta(name: str, namespace: str, lbls: dict[str, str], owner: dict[str, Any],
          annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(lbls),
                            "ownerReferences": [dict(owner)]}
    if annotations:
        meta["annotations"] = annotations
    return meta


def rules_document(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The pair.json the engine reads: the spec without what only the Deployment uses."""
    return {k: v for k, v in spec.items() if k not in _NOT_RULES}


def canonical_json(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def config_hash(spec: Mapping[str, Any]) -> str:
    """Hash of the rules that need a restart: everything in pair.json except ``trading``."""
    rolled = {k: v for k, v in rules_document(spec).items() if k not in _LIVE_FIELDS}
    return hashlib.sha256(canonical_json(rolled).encode()).hexdigest()[:16]


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _vault_token_volume(settings: OperatorSettings) -> dict[str, Any]:
    # A projected, expiring service-account token only for Vault's Kubernetes auth: the pods
    # get no API token mount (automountServiceAccountToken: false), and the accounts have no
    # RBAC anyway.
    token: dict[str, Any] = {"path": "token", "expirationSeconds": 3600}
    if settings.vault_audience:
        token["audience"] = settings.vault_audience
    return {"name": "vault-token", "projected": {"sources": [{"serviceAccountToken": token}]}}


def _engine_section(spec: Mapping[str, Any], key: str) -> dict[str, Any]:
    section = spec.get(key) or {}
    if not isinstance(section, Mapping):
        raise InvalidSpec(f"spec.{key} must be an object")
    return dict(section)


# ---------------------------------------------------------------------------- TradingPair
def desired_children(
    name: str, namespace: str, spec: Mapping[str, Any], settings: OperatorSettings, *,
    uid: str, service_monitor: bool = False,
) -> list[Manifest]:
    """Every object a TradingPair owns, in creation order (ConfigMap before Deployment).

    Raises:
        InvalidSpec: the spec is not a valid pair (bad decimals, tick x lot not exact...).
    """
    symbol, pair_name = pair_symbol(spec)
    app = "tradeplane-engine"
    lbls = labels(name, "matching-engine", app) | {f"{PREFIX}/symbol": symbol}
    owner = owner_reference("TradingPair", name, uid)
    engine = _engine_section(spec, "engine")
    port = settings.metrics_port

    config: Manifest = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _meta(engine_config_name(name), namespace, lbls, owner),
        "data": {"pair.json": canonical_json(rules_document(spec))},
    }
    pod_labels = dict(lbls)
    standby = engine.get("standby") is True
    args = ["matching", "--symbol", pair_name, "--rules", RULES_FILE]
    if standby:
        # Two replicas behind a lease (ENGINE_LEASES): whichever holds it writes, the other
        # follows read-only; the event stream refuses a second writer anyway. A new pod
        # starts as a standby, so rolling one pod at a time is safe.
        replicas = 2
        strategy: dict[str, Any] = {"type": "RollingUpdate",
                                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
        args.append("--standby")
    else:
        # One writer per symbol: a single replica, and Recreate so a rollout stops the old
        # engine before the new one starts (RollingUpdate would overlap them).
        replicas = 1
        strategy = {"type": "Recreate"}
    deployment: Manifest = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(engine_name(name), namespace, lbls, owner),
        "spec": {
            "replicas": replicas,
            "strategy": strategy,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector(name, app)},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {CONFIG_HASH: config_hash(spec)},
                },
                "spec": {
                    "serviceAccountName": settings.service_account,
                    "automountServiceAccountToken": False,  # the engine never calls the API
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": _pod_security(),
                    "containers": [{
                        "name": "engine",
                        "image": str(engine.get("image") or settings.engine_image),
                        "imagePullPolicy": settings.image_pull_policy,
                        "command": ["tradeplane"],
                        "args": args,
                        "env": [
                            {"name": "TRADEPLANE_METRICS_PORT", "value": str(port)},
                            # Prometheus scrapes the pod's address (the
                            # services' default is loopback).
                            {"name": "TRADEPLANE_METRICS_HOST", "value": "0.0.0.0"},
                            # Vault's Kubernetes auth (when the Secret sets
                            # TRADEPLANE_VAULT_ADDR) reads this token, not the default one.
                            {"name": "TRADEPLANE_VAULT_JWT_FILE", "value": VAULT_JWT_FILE},
                        ],
                        "envFrom": [{"secretRef": {"name": settings.secret}}],
                        "ports": [{"name": "metrics", "containerPort": port,
                                   "protocol": "TCP"}],
                        # Recovery (snapshot + replay) can take a while: the startup probe
                        # gives it 5 minutes before liveness may kill it.
                        "startupProbe": _http_probe(period=5, failures=60),
                        "livenessProbe": _http_probe(period=10, failures=3),
                        "readinessProbe": _http_probe(period=5, failures=2),
                        "resources": dict(engine.get("resources") or DEFAULT_ENGINE_RESOURCES),
                        "securityContext": _container_security(),
                        "volumeMounts": [
                            {"name": "rules", "mountPath": RULES_DIR, "readOnly": True},
                            {"name": "vault-token", "mountPath": VAULT_TOKEN_DIR,
                             "readOnly": True},
                            {"name": "tmp", "mountPath": "/tmp"},
                        ],
                    }],
                    "volumes": [
                        {"name": "rules", "configMap": {"name": engine_config_name(name)}},
                        _vault_token_volume(settings),
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }
    service: Manifest = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(metrics_service_name(name), namespace, lbls, owner),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(name, app),
            "ports": [{"name": "metrics", "port": port, "targetPort": "metrics",
                       "protocol": "TCP"}],
        },
    }
    # maxUnavailable 0: Recreate only protects rollouts. An eviction (node drain) deletes the
    # pod and the ReplicaSet starts its replacement while the old engine is still in its
    # grace period: two writers on one symbol. So voluntary evictions are refused; to move an
    # engine, halt the pair and delete the pod deliberately (see operator/README.md).
    # With a standby the lease, not the pod count, keeps one writer: one pod may go.
    pdb: Manifest = {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": _meta(engine_name(name), namespace, lbls, owner),
        "spec": {"maxUnavailable": 1 if standby else 0,
                 "selector": {"matchLabels": selector(name, app)}},
    }
    if standby:
        # Writer and standby on different nodes when the cluster has them.
        pod_spec = deployment["spec"]["template"]["spec"]
        pod_spec["affinity"] = {"podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": 100,
                "podAffinityTerm": {"labelSelector": {"matchLabels": selector(name, app)},
                                    "topologyKey": "kubernetes.io/hostname"},
            }],
        }}
    out = [config, deployment, service, pdb]
    if service_monitor:
        out.append({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": _meta(engine_name(name), namespace, lbls, owner),
            "spec": {
                "selector": {"matchLabels": selector(name, app)},
                "namespaceSelector": {"matchNames": [namespace]},
                "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
            },
        })
    return out


def _http_probe(*, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": "/metrics", "port": "metrics"}, "periodSeconds": period,
            "timeoutSeconds": 3, "failureThreshold": failures}


def pair_child_refs(name: str, namespace: str, *, service_monitor: bool) -> list[Manifest]:
    """Kind, apiVersion and name of every child, without needing a valid spec (deletion)."""
    def ref(api_version: str, kind: str, child: str) -> Manifest:
        return {"apiVersion": api_version, "kind": kind,
                "metadata": {"name": child, "namespace": namespace}}

    refs = [ref("v1", "ConfigMap", engine_config_name(name)),
            ref("apps/v1", "Deployment", engine_name(name)),
            ref("v1", "Service", metrics_service_name(name)),
            ref("policy/v1", "PodDisruptionBudget", engine_name(name))]
    if service_monitor:
        refs.append(ref("monitoring.coreos.com/v1", "ServiceMonitor", engine_name(name)))
    return refs


# ---------------------------------------------------------------------------- Wallet
def wallet_children(
    name: str, namespace: str, spec: Mapping[str, Any], settings: OperatorSettings, *,
    uid: str,
) -> list[Manifest]:
    """A Wallet's watcher Deployment and its ConfigMap.

    The watcher process is ``tradeplane wallet-watcher`` (``tradeplane.wallets``): it
    reads the spec from the mounted ConfigMap. Its node credentials come from Vault (path
    ``spec.rpc.vaultPath``, Kubernetes auth with the annotated role and a projected
    service-account token), never from the ConfigMap.

    Raises:
        InvalidSpec: the spec misses the fields the watcher needs.
    """
    for key in ("chain", "network", "asset"):
        if not spec.get(key):
            raise InvalidSpec(f"spec.{key} is required")
    rpc = _engine_section(spec, "rpc")
    if not rpc.get("url") or not rpc.get("vaultPath"):
        raise InvalidSpec("spec.rpc.url and spec.rpc.vaultPath are required")
    watcher = _engine_section(spec, "watcher")
    app = "tradeplane-wallet-watcher"
    lbls = labels(name, "wallet-watcher", app) | {
        f"{PREFIX}/chain": str(spec["chain"]), f"{PREFIX}/asset": str(spec["asset"])}
    owner = owner_reference("Wallet", name, uid)
    doc = {k: v for k, v in spec.items() if k != "watcher"}
    config: Manifest = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _meta(watcher_config_name(name), namespace, lbls, owner),
        "data": {"wallet.json": canonical_json(doc)},
    }
    digest = hashlib.sha256(canonical_json(doc).encode()).hexdigest()[:16]
    deployment: Manifest = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(watcher_name(name), namespace, lbls, owner),
        "spec": {
            # One scanner per wallet: two would double-report deposits.
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector(name, app)},
            "template": {
                "metadata": {
                    "labels": dict(lbls),
                    "annotations": {
                        CONFIG_HASH: digest,
                        "vault.hashicorp.com/role": settings.vault_role,
                        f"{PREFIX}/vault-path": str(rpc["vaultPath"]),
                    },
                },
                "spec": {
                    "serviceAccountName": settings.watcher_service_account,
                    # Only the audience-bound token below is mounted (for Vault's
                    # Kubernetes auth), not the default API token.
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": _pod_security(),
                    "containers": [{
                        "name": "watcher",
                        "image": str(watcher.get("image") or settings.watcher_image),
                        "imagePullPolicy": settings.image_pull_policy,
                        "command": ["tradeplane"],
                        "args": ["wallet-watcher", "--wallet", name],
                        "env": [
                            {"name": "TRADEPLANE_METRICS_PORT",
                             "value": str(settings.metrics_port)},
                            {"name": "TRADEPLANE_METRICS_HOST", "value": "0.0.0.0"},
                            {"name": "TRADEPLANE_WALLET_CONFIG", "value": WALLET_FILE},
                            {"name": "TRADEPLANE_VAULT_AUTH", "value": "kubernetes"},
                            {"name": "TRADEPLANE_VAULT_ROLE", "value": settings.vault_role},
                            {"name": "TRADEPLANE_VAULT_JWT_FILE", "value": VAULT_JWT_FILE},
                        ],
                        "envFrom": [{"secretRef": {"name": settings.secret}}],
                        "ports": [{"name": "metrics", "containerPort": settings.metrics_port,
                                   "protocol": "TCP"}],
                        "resources": dict(watcher.get("resources")
                                          or DEFAULT_WATCHER_RESOURCES),
                        "securityContext": _container_security(),
                        "volumeMounts": [
                            {"name": "config", "mountPath": WALLET_DIR, "readOnly": True},
                            {"name": "vault-token", "mountPath": VAULT_TOKEN_DIR,
                             "readOnly": True},
                            {"name": "tmp", "mountPath": "/tmp"},
                        ],
                    }],
                    "volumes": [
                        {"name": "config", "configMap": {"name": watcher_config_name(name)}},
                        _vault_token_volume(settings),
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }
    return [config, deployment]


# ---------------------------------------------------------------------------- drift
def drifted(desired: Any, actual: Any) -> bool:
    """True when ``actual`` no longer contains ``desired``.

    The API server adds defaults (extra keys in dicts) but never extra list items, so:
    dicts are compared on the desired keys only, lists item by item with equal lengths,
    scalars by equality. A hand edit of anything we set is drift; extra labels are not.
    """
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return True
        return any(k not in actual or drifted(v, actual[k]) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return True
        return any(drifted(d, a) for d, a in zip(desired, actual, strict=True))
    return bool(desired != actual)


def managed_part(manifest: Manifest) -> Manifest:
    """The part of a manifest we reconcile (kind/apiVersion are in the URL; status is not ours)."""
    return {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind", "status")}
