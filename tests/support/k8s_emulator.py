"""A Kubernetes API for tests: kmock's ``KubernetesEmulator`` with the fixes kopf and kubectl
need, served on a real port in its own thread, plus a kubeconfig pointing at it.

kmock 0.8 keeps objects as plain JSON and merges patches, which is most of an API server.
What it lacks, and this module adds:

* ``metadata.uid``, ``resourceVersion``, ``generation``, ``creationTimestamp`` on create;
  ``resourceVersion`` bumped on every write (kopf JSON-patches with a ``test`` on it) and
  ``generation`` bumped when the spec changes; a failed JSON patch is HTTP 422, as kopf
  expects for a conflict;
* the ``status`` subresource: a status write touches only ``status``, a main write never;
* ``kind``/``apiVersion``/``resourceVersion`` on lists (kubectl needs them);
* the resources we use declared for discovery (core ``/api/v1`` included): ours from the CRD
  files in ``crds/``, plus ConfigMaps, Services, Events, Deployments, PDBs, ServiceMonitors,
  and the CustomResourceDefinitions themselves (ours stored as objects).

Not emulated: garbage collection by ownerReferences, admission, field selectors, server-side
apply, strategic merge (a strategic patch is applied as a JSON merge patch).

Every request is kept (kmock records them); ``RunningEmulator.accesses`` gives them as RBAC
sees them (verb, group, resource, subresource, namespace), for the test that the chart's
RBAC allows exactly what the operator does (tests/integration/test_operator.py).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import kmock
import yaml
from kmock._internal import apps, dicts, enums, k8s, parsing

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"

CORE_RESOURCES: dict[str, kmock.ResourceInfo] = {
    "v1/configmaps": kmock.ResourceInfo(kind="ConfigMap", singular="configmap",
                                        namespaced=True, shortnames={"cm"}),
    "v1/services": kmock.ResourceInfo(kind="Service", singular="service", namespaced=True,
                                      shortnames={"svc"}),
    "v1/secrets": kmock.ResourceInfo(kind="Secret", singular="secret", namespaced=True),
    "v1/events": kmock.ResourceInfo(kind="Event", singular="event", namespaced=True,
                                    shortnames={"ev"}),
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", singular="namespace",
                                        namespaced=False, shortnames={"ns"}),
    "apps/v1/deployments": kmock.ResourceInfo(kind="Deployment", singular="deployment",
                                              namespaced=True, shortnames={"deploy"},
                                              subresources={"status"}),
    "policy/v1/poddisruptionbudgets": kmock.ResourceInfo(
        kind="PodDisruptionBudget", singular="poddisruptionbudget", namespaced=True,
        shortnames={"pdb"}, subresources={"status"}),
    "events.k8s.io/v1/events": kmock.ResourceInfo(kind="Event", singular="event",
                                                  namespaced=True),
    # As on a cluster: kopf watches the CRDs (ours are stored as objects), and the
    # prometheus-operator's ServiceMonitor is installed (the operator's "auto" finds it).
    "apiextensions.k8s.io/v1/customresourcedefinitions": kmock.ResourceInfo(
        kind="CustomResourceDefinition", singular="customresourcedefinition",
        namespaced=False, shortnames={"crd"}),
    "monitoring.coreos.com/v1/servicemonitors": kmock.ResourceInfo(
        kind="ServiceMonitor", singular="servicemonitor", namespaced=True),
}
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


def crd_resources(folder: Path = CRD_DIR) -> dict[str, kmock.ResourceInfo]:
    """Discovery entries for every CustomResourceDefinition in ``folder``."""
    out: dict[str, kmock.ResourceInfo] = {}
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            names = spec["names"]
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                out[f"{spec['group']}/{version['name']}/{names['plural']}"] = kmock.ResourceInfo(
                    kind=names["kind"], singular=names.get("singular"),
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    shortnames=set(names.get("shortNames", [])),
                    categories=set(names.get("categories", [])),
                    subresources=set((version.get("subresources") or {}).keys()),
                    verbs=VERBS,
                )
    return out


_kmock_parse_path = parsing.parse_path


def parse_path(path: str) -> parsing.ParsedPath:
    """kmock's path parser, plus the Namespace objects themselves: ``/api/v1/namespaces``
    and ``/api/v1/namespaces/<name>`` (kmock fails on the first and takes the second for a
    namespaced list without a resource)."""
    parts = path.strip("/").split("/")
    if parts[:2] == ["api", "v1"] and parts[2:3] == ["namespaces"] and len(parts) <= 4:
        return parsing.ParsedPath(group="", version="v1", plural="namespaces",
                                  name=parts[3] if len(parts) == 4 else None)
    return _kmock_parse_path(path)


# Requests are parsed by a module-level function in kmock; swap it for the fixed one (this
# helper module is imported only by tests that run the emulator).
parsing.parse_path = parse_path


class FixedEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with object metadata, subresources and list kinds (see module doc)."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._rv = itertools.count(1)
        self._gc: dict[int, tuple[Any, Any]] = {}

    # ------------------------------------------------------------------ declaring
    def declare(self, resources: dict[str, kmock.ResourceInfo]) -> None:
        for key, info in resources.items():
            if not info.verbs:
                info.verbs = set(VERBS)
            self.resources[key] = info

    def info(self, resource: Any) -> kmock.ResourceInfo | None:
        for res in self.resources:
            if res == resource:
                return self.resources[res]  # type: ignore[return-value]
        return None

    # ------------------------------------------------------------------ writes
    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and request.action in (
            enums.action.CREATE, enums.action.UPDATE, enums.action.DELETE,
        ):
            async with self._lock:
                self._prepare(request)
        return await super()._handle(request)

    def _prepare(self, request: Any) -> None:
        """Turn the request into what kmock's plain store should record, or refuse it."""
        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if request.namespace and not meta.get("namespace"):
                meta["namespace"] = request.namespace
            key = (request.resource, meta.get("namespace"), meta.get("name"))
            if key in self.objects and not self.objects[key].deleted:
                return  # kmock answers 409
            meta["uid"] = str(uuid.uuid4())
            meta["resourceVersion"] = str(next(self._rv))
            meta["generation"] = 1
            meta["creationTimestamp"] = _now()
            meta.pop("deletionTimestamp", None)
            info = self.info(request.resource)
            if info is not None and "status" in info.subresources:
                request.data.pop("status", None)
            if info is not None and info.kind:
                request.data.setdefault("kind", info.kind)
                group = request.resource.group
                request.data.setdefault(
                    "apiVersion", f"{group}/{request.resource.version}" if group else "v1")
            return
        key = (request.resource, request.namespace, request.name)
        if request.name is None or key not in self.objects or self.objects[key].deleted:
            return  # kmock answers 404
        obj = self.objects[key]
        if request.action == enums.action.DELETE:
            meta = copy.deepcopy(obj.raw.get("metadata") or {})  # plain dicts, not kmock views
            if meta.get("finalizers") and not meta.get("deletionTimestamp"):
                # kmock sets deletionTimestamp itself; bump the version with it.
                obj["metadata"] = dict(meta, resourceVersion=str(next(self._rv)))
            return
        # UPDATE (PATCH): compute the new object ourselves, then hand kmock a merge patch
        # that turns the old object into exactly that (kmock applies dict patches by merging).
        before = copy.deepcopy(obj.raw)
        try:
            after = dict(dicts.patch_dict(copy.deepcopy(before), request.data))
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, ValueError,
                TypeError) as exc:
            raise k8s.KubernetesError(status=422, reason="Invalid", message=str(exc)) from exc
        info = self.info(request.resource)
        if info is not None and "status" in info.subresources:
            if request.subresource == "status":
                after = dict(before, status=after.get("status"))
            else:
                after["status"] = before.get("status")
                if after["status"] is None:
                    after.pop("status")
        meta = dict(after.get("metadata") or {})
        for fixed in ("uid", "creationTimestamp", "name", "namespace", "generation",
                      "deletionTimestamp"):
            if fixed in (before.get("metadata") or {}):
                meta[fixed] = before["metadata"][fixed]
        if after.get("spec") != before.get("spec"):
            meta["generation"] = int(meta.get("generation") or 1) + 1
        if after != before or meta != before.get("metadata"):
            meta["resourceVersion"] = str(next(self._rv))
        after["metadata"] = meta
        object.__setattr__(request, "data", _merge_patch(before, after))

    # ------------------------------------------------------------------ discovery
    async def _serve_version(self, request: Any) -> Any:
        # kmock answers core discovery with groupVersion "/v1" and repeats short names on
        # subresources; kubectl then finds no core types and warns about ambiguous names.
        wanted = request.resource
        group_version = f"{wanted.group}/{wanted.version}" if wanted.group else wanted.version
        items: list[dict[str, Any]] = []
        for res in self.resources:
            if res.group != wanted.group or res.version != wanted.version:
                continue
            info = self.resources[res]
            assert isinstance(info, kmock.ResourceInfo)
            kind = info.kind or str(res.plural).capitalize()
            common = {"kind": kind, "singularName": info.singular or "",
                      "namespaced": bool(info.namespaced),
                      "verbs": sorted(info.verbs or VERBS)}
            items.append({"name": res.plural, **common,
                          "shortNames": sorted(info.shortnames),
                          "categories": sorted(info.categories)})
            for sub in sorted(info.subresources):
                items.append({"name": f"{res.plural}/{sub}", **common,
                              "verbs": ["get", "patch", "update"]})
        if not items:
            raise k8s.KubernetesResourceNotFoundError()
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                "resources": items}

    # ------------------------------------------------------------------ lists
    async def _serve_list(self, request: Any) -> Any:
        payload = await super()._serve_list(request)
        info = self.info(request.resource)
        group = request.resource.group
        payload["apiVersion"] = f"{group}/{request.resource.version}" if group else "v1"
        payload["kind"] = f"{info.kind}List" if info and info.kind else "List"
        payload["metadata"] = {"resourceVersion": str(next(self._rv))}
        return payload


def _merge_patch(before: Any, after: Any) -> Any:
    """A JSON merge patch (RFC 7386) turning ``before`` into ``after``."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return after
    patch: dict[str, Any] = {}
    for key in before:
        if key not in after:
            patch[key] = None
    for key, value in after.items():
        if key not in before:
            patch[key] = value
        elif before[key] != value:
            if isinstance(before[key], dict) and isinstance(value, dict):
                patch[key] = _merge_patch(before[key], value)
            else:
                patch[key] = value
    return patch


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------- requests as RBAC sees them
@dataclass(frozen=True, order=True)
class Access:
    """One request as an RBAC authorizer sees it; ``namespace`` is "" for a cluster-scoped
    object or a request across all namespaces."""

    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str


_KIND_PLURALS = {"TradingPair": ("trading.tradeplane.io", "tradingpairs"),
                 "Wallet": ("trading.tradeplane.io", "wallets")}


def accesses_of(request: Any) -> list[Access]:
    """The authorization checks an API server makes for ``request``: its own, plus, for a
    write setting ``blockOwnerDeletion`` on an owner reference, ``update`` on the owner's
    ``finalizers`` subresource (the OwnerReferencesPermissionEnforcement admission plugin,
    on by default). Discovery (no resource) needs no rule."""
    if request.resource is None or request.resource.plural is None:
        return []
    method = str(request.method.value if hasattr(request.method, "value") else request.method)
    method = method.upper()
    if method == "GET":
        watching = str(request.params.get("watch", "")).lower() in ("true", "1")
        verb = "watch" if watching else ("get" if request.name else "list")
    else:
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update"}.get(method, "")
        if method == "DELETE":
            verb = "delete" if request.name else "deletecollection"
    namespace = request.namespace or ""
    found = [Access(verb, request.resource.group or "", request.resource.plural,
                    request.subresource or "", namespace)]
    if verb in ("create", "update", "patch") and isinstance(request.data, dict):
        for ref in (request.data.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("blockOwnerDeletion") and ref.get("kind") in _KIND_PLURALS:
                group, plural = _KIND_PLURALS[ref["kind"]]
                found.append(Access("update", group, plural, "finalizers", namespace))
    return found


def peering_resources(emulator: FixedEmulator, name: str, namespace: str) -> None:
    """kopf's peering resources (the chart's CRDs) and the peering object ``name`` of both
    scopes, as the chart's post-install hook creates it."""
    emulator.declare({
        "kopf.dev/v1/kopfpeerings": kmock.ResourceInfo(
            kind="KopfPeering", singular="kopfpeering", namespaced=True),
        "kopf.dev/v1/clusterkopfpeerings": kmock.ResourceInfo(
            kind="ClusterKopfPeering", singular="clusterkopfpeering", namespaced=False),
    })
    for plural, kind, scope in (("kopfpeerings", "KopfPeering", namespace),
                                ("clusterkopfpeerings", "ClusterKopfPeering", None)):
        meta = {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": "1"}
        if scope:
            meta["namespace"] = scope
        emulator.objects[kmock.resource(f"kopf.dev/v1/{plural}"), scope, name] = {
            "apiVersion": "kopf.dev/v1", "kind": kind, "metadata": meta}


# ---------------------------------------------------------------------- running it
@dataclass
class RunningEmulator:
    emulator: FixedEmulator
    url: str
    kubeconfig: Path
    loop: asyncio.AbstractEventLoop

    def call(self, fn: Any) -> Any:
        """Run ``fn()`` in the emulator's loop (its state is not thread-safe)."""
        async def go() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(10)

    def accesses(self, *, exclude_agents: tuple[str, ...] = ("kubectl/",)) -> set[Access]:
        """Every request served so far as RBAC sees it, except those whose User-Agent
        starts with one of ``exclude_agents`` (the tests' own kubectl)."""
        def read() -> set[Access]:
            return {
                access for request in self.emulator
                if not str(request.headers.get("User-Agent", "")).startswith(exclude_agents)
                for access in accesses_of(request)
            }
        result: set[Access] = self.call(read)
        return result

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            key = (kmock.resource(resource), namespace, name)
            for k, obj in self.emulator.objects.items():
                if k == key and not obj.deleted:
                    return copy.deepcopy(obj.raw)
            return None
        result: dict[str, Any] | None = self.call(read)
        return result


def write_kubeconfig(path: Path, url: str, namespace: str = "default") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": "emulated"}}],
        "contexts": [{"name": "emulator", "context": {
            "cluster": "emulator", "user": "tester", "namespace": namespace}}],
    }))
    return path


@contextmanager
def running_emulator(folder: Path) -> Iterator[RunningEmulator]:
    """The emulator on a free port in a thread of its own, with a kubeconfig for it."""
    ready: dict[str, Any] = {}
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        emulator = FixedEmulator()
        emulator.declare(CORE_RESOURCES)
        emulator.declare(crd_resources())
        for path in sorted(CRD_DIR.glob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            crd["metadata"].update(uid=str(uuid.uuid4()), resourceVersion="1")
            emulator.objects[kmock.resource("apiextensions.k8s.io/v1/customresourcedefinitions"),
                             None, crd["metadata"]["name"]] = crd
        for ns in ("default", "kube-system"):
            emulator.objects[kmock.resource("v1/namespaces"), None, ns] = {
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "uid": str(uuid.uuid4()), "resourceVersion": "1"},
            }
        async with emulator, apps.Server(emulator) as server:
            ready["emulator"] = emulator
            ready["url"] = str(server.url).rstrip("/")
            started.set()
            await stop.wait()

    def target() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:  # surfaced by the waiting thread below
            ready["error"] = exc
            started.set()
        finally:
            loop.close()

    thread = threading.Thread(target=target, name="k8s-emulator", daemon=True)
    thread.start()
    started.wait(15)
    if "error" in ready:
        raise RuntimeError("the Kubernetes emulator did not start") from ready["error"]
    kubeconfig = write_kubeconfig(folder / "kubeconfig", ready["url"])
    try:
        yield RunningEmulator(ready["emulator"], ready["url"], kubeconfig, loop)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)


@contextmanager
def running_operator(kubeconfig: Path, settings: Any, *, namespace: str = "default",
                     timeout: float = 30.0, scope: tuple[str, ...] = ("--standalone",),
                     ) -> Iterator[Any]:
    """The real operator (``build_registry``) in kopf's ``KopfRunner`` thread, standalone,
    watching ``namespace`` (every namespace when "") of the API at ``kubeconfig``;
    ``scope`` is ``--standalone`` or ``--peering NAME``.

    ``KUBECONFIG`` is set for the process while it runs: kopf's login and our API adapter
    both read it.
    """
    import os

    from kopf.testing import KopfRunner

    from tradeplane_operator.handlers import build_registry

    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(kubeconfig)
    try:
        where = ["--all-namespaces"] if namespace == "" else ["--namespace", namespace]
        with KopfRunner(["run", *scope, *where, "--verbose"],
                        registry=build_registry(settings), timeout=timeout) as runner:
            yield runner
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
