"""A minimal signed Binance-style REST client (httpx) used by the demo tools and benchmarks."""

from __future__ import annotations

import base64
import time
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tradeplane.domain.signing import sign


# The client side of request signing (tests, demo tools, benchmarks). The domain holds only
# what the server verifies; a client also reads the clock (``timestamp``), which the domain
# never does.
def signed_query(secret: str, params: dict[str, str | int]) -> str:
    """HMAC_SHA256 keys: ``params`` encoded, then their hex signature appended."""
    q = urlencode(params)
    return f"{q}&signature={sign(secret, q)}"


def ed25519_sign(private_key: Ed25519PrivateKey, payload: str) -> str:
    """ED25519 keys: the base64 signature of ``payload`` (URL-encode it when sending)."""
    return base64.b64encode(private_key.sign(payload.encode())).decode()


class ApiClient:
    def __init__(self, base_url: str, api_key: str, api_secret: str,
                 client: httpx.AsyncClient | None = None) -> None:
        self.key = api_key
        self.secret = api_secret
        self.http = client or httpx.AsyncClient(base_url=base_url, timeout=30.0)

    async def close(self) -> None:
        await self.http.aclose()

    async def public(self, path: str, **params: Any) -> Any:
        r = await self.http.get(path, params=params)
        return r.json()

    async def signed(self, method: str, path: str, **params: Any) -> httpx.Response:
        params["timestamp"] = int(time.time() * 1000)
        body = signed_query(self.secret, {k: v for k, v in params.items() if v is not None})
        headers = {"X-MBX-APIKEY": self.key}
        if method in ("POST", "PUT"):
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            return await self.http.request(method, path, content=body, headers=headers)
        return await self.http.request(method, f"{path}?{body}", headers=headers)
