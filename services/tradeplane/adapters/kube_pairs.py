"""TradingPair resources on Kubernetes: the pair control (``usecases.pairs.PairControl``)
of halts, resumes and fee changes when the platform runs under the operator: the gateway
patches the resource's spec and the operator applies it (SetTrading on the symbol's log,
the engine's rules).

The official client is synchronous: calls run in a worker thread. Errors become
:class:`KubePairError`.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

from tradeplane.usecases.errors import Unavailable

GROUP = "trading.tradeplane.io"
VERSION = "v1alpha1"
PLURAL = "tradingpairs"
_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class KubePairError(Unavailable):
    """The Kubernetes API refused or could not be reached; or no TradingPair has the
    symbol."""


class KubePairs:
    def __init__(self, namespace: str = "", api_client: Any = None) -> None:
        import kubernetes
        import urllib3

        if api_client is None:
            try:
                kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
            except kubernetes.config.ConfigException:
                kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
            api_client = kubernetes.client.ApiClient()
        self._api = kubernetes.client.CustomObjectsApi(api_client)
        self._errors: tuple[type[Exception], ...] = (
            kubernetes.client.exceptions.ApiException, urllib3.exceptions.HTTPError, OSError)
        self.namespace = namespace or (
            _NAMESPACE_FILE.read_text().strip() if _NAMESPACE_FILE.exists() else "default")

    async def set_trading(self, symbol: str, state: str) -> None:
        await self._patch(symbol, {"spec": {"trading": state}})

    async def set_fees(self, symbol: str, maker_ppm: int, taker_ppm: int) -> None:
        def frac(ppm: int) -> str:
            return str(Decimal(ppm) / 1_000_000)

        await self._patch(symbol, {"spec": {"makerFee": frac(maker_ppm),
                                            "takerFee": frac(taker_ppm)}})

    async def _patch(self, symbol: str, patch: dict[str, Any]) -> None:
        await asyncio.to_thread(self._patch_sync, symbol, patch)

    def _patch_sync(self, symbol: str, patch: dict[str, Any]) -> None:
        try:
            listed: Any = self._api.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL)
            name = next((
                item["metadata"]["name"] for item in listed.get("items", ())
                if f"{item['spec'].get('base', '')}{item['spec'].get('quote', '')}".upper()
                == symbol), None)
            if name is None:
                raise KubePairError(f"no TradingPair for {symbol} in {self.namespace}")
            self._api.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, patch)
        except self._errors as exc:
            raise KubePairError(f"TradingPair {symbol}: {type(exc).__name__}") from exc
