"""Kubernetes API adapter for the children we manage: the only module importing
``kubernetes``. kopf itself talks to the API for the custom resources it watches.

The (synchronous) official client runs in a worker thread; its errors are translated into
the few kinds the handlers decide on.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from typing import Any

import kubernetes
import urllib3

from tradeplane.domain import errors
from tradeplane.domain.errors import TradeplaneError

PLURALS = {
    "ConfigMap": "configmaps",
    "Service": "services",
    "Deployment": "deployments",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "ServiceMonitor": "servicemonitors",
    "TradingPair": "tradingpairs",
    "Wallet": "wallets",
}


class KubeError(TradeplaneError):
    """The API refused a request; ``status`` is the HTTP status (0 = not reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status

    @property
    def retryable(self) -> bool:
        """Unreachable, overloaded, conflicting or (fixable by an admin) forbidden."""
        return self.status in (0, 403, 409, 429) or self.status >= 500


class NotFound(KubeError, errors.NotFound):
    pass


def object_path(api_version: str, kind: str, namespace: str, name: str | None = None,
                subresource: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{PLURALS[kind]}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


def manifest_path(manifest: Mapping[str, Any], *, named: bool = True) -> str:
    meta = manifest["metadata"]
    return object_path(manifest["apiVersion"], manifest["kind"], meta["namespace"],
                       meta["name"] if named else None)


class Kube:
    """A thin async facade over the official client's raw request method."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self._api = api

    @classmethod
    def connect(cls) -> Kube:
        """In-cluster service account, else ``$KUBECONFIG`` / ``~/.kube/config``.

        Raises:
            KubeError: neither configuration is available.
        """
        config = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=config)
        except kubernetes.config.ConfigException:
            try:
                # The client reads $KUBECONFIG when it is imported; read it now instead.
                kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=os.environ.get("KUBECONFIG"), client_configuration=config)
            except (kubernetes.config.ConfigException, OSError) as exc:
                raise KubeError(0, f"no Kubernetes configuration: {exc}") from exc
        return cls(kubernetes.client.ApiClient(config))

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------ raw
    def _request(self, method: str, path: str, body: Any = None,
                 content_type: str = "application/json") -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            req = self._api.param_serialize(method, path, header_params=headers, body=body,
                                            auth_settings=["BearerToken"])
            resp = self._api.call_api(*req, _request_timeout=(5, 30))
            raw = resp.read()  # type: ignore[no-untyped-call]
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeError(0, f"{method} {path}: {exc}") from exc
        except kubernetes.client.ApiException as exc:
            raise _error(int(exc.status or 0), f"{method} {path}: {exc.reason}") from exc
        status = int(resp.status)
        if status == 404:
            raise NotFound(404, f"{method} {path}")
        if status >= 300:
            raise _error(status, f"{method} {path}: {_message(raw)}")
        return json.loads(raw) if raw else None

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json") -> Any:
        """Raises: KubeError (NotFound for 404)."""
        return await asyncio.to_thread(self._request, method, path, body, content_type)

    # ------------------------------------------------------------------ objects
    async def get(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        """The live object for ``manifest`` (by kind/namespace/name), or None."""
        try:
            obj: dict[str, Any] = await self.request("GET", manifest_path(manifest))
        except NotFound:
            return None
        return obj

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = await self.request(
            "POST", manifest_path(manifest, named=False), dict(manifest))
        return obj

    async def merge_patch(self, manifest: Mapping[str, Any], patch: Mapping[str, Any]) -> Any:
        # JSON merge patch: lists are replaced as a whole, which is what restoring a hand-edited
        # container list needs (a strategic merge would keep foreign items).
        return await self.request("PATCH", manifest_path(manifest), dict(patch),
                                  "application/merge-patch+json")

    async def delete(self, manifest: Mapping[str, Any]) -> bool:
        """Delete (background propagation); False when it was already gone."""
        try:
            await self.request("DELETE", manifest_path(manifest),
                               {"kind": "DeleteOptions", "apiVersion": "v1",
                                "propagationPolicy": "Background"})
        except NotFound:
            return False
        return True

    async def has_api_group(self, group: str) -> bool:
        """Whether the server serves ``group`` (e.g. monitoring.coreos.com)."""
        try:
            await self.request("GET", f"/apis/{group}")
        except NotFound:
            return False
        return True


def _error(status: int, message: str) -> KubeError:
    return NotFound(status, message) if status == 404 else KubeError(status, message)


def _message(raw: bytes | None) -> str:
    try:
        return str(json.loads(raw or b"{}").get("message", ""))[:300]
    except (ValueError, AttributeError):
        return (raw or b"")[:300].decode(errors="replace")
