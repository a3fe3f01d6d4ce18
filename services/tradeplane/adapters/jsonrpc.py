"""One JSON-RPC call over HTTP, as the chain adapters (bitcoind-style nodes, Monero's
wallet-rpc and monerod) all make it: transport and HTTP failures mapped to the chain
port's errors, JSON numbers as Decimal (amounts stay exact)."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx

from tradeplane.wallets.chain import ChainError, ChainUnavailable


class RpcError(ChainError):
    """The node answered a call with a JSON-RPC error."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method}: RPC error {code}: {message}")
        self.method = method
        self.code = code
        self.message = message


async def call(
    http: httpx.AsyncClient, url: httpx.URL | str, where: str, method: str, params: Any, *,
    version: str, request_id: int, unavailable: Callable[[int], bool],
) -> Any:
    """POST one JSON-RPC request and return its ``result`` (which must be present).

    ``unavailable(status)`` says which HTTP statuses mean "retry later" (bitcoind answers
    RPC errors with HTTP 500, so that differs per node).

    Raises:
        ChainUnavailable: no connection, timeout, or an ``unavailable`` HTTP status.
        RpcError: the node answered with a JSON-RPC error.
        ChainError: credentials refused, or an answer that is not JSON-RPC.
    """
    body = json.dumps({"jsonrpc": version, "id": request_id, "method": method,
                       "params": params})
    try:
        resp = await http.post(url, content=body, headers={"content-type": "application/json"})
    except httpx.HTTPError as e:  # transport errors, timeouts, redirects, bad encodings
        raise ChainUnavailable(f"{where}: {method}: {type(e).__name__}: {e}") from e
    if resp.status_code in (401, 403):
        raise ChainError(f"{where}: {method}: credentials refused (HTTP {resp.status_code})")
    if unavailable(resp.status_code):
        raise ChainUnavailable(f"{where}: {method}: HTTP {resp.status_code}")
    try:
        doc = json.loads(resp.content, parse_float=Decimal)
    except ValueError as e:
        raise ChainError(f"{where}: {method}: HTTP {resp.status_code}, "
                         "answer is not JSON") from e
    err = doc.get("error") if isinstance(doc, dict) else None
    if err:
        raise RpcError(method, int(err.get("code", 0)), str(err.get("message", "")))
    if not isinstance(doc, dict) or "result" not in doc:
        raise ChainError(f"{where}: {method}: HTTP {resp.status_code}, not a JSON-RPC answer")
    return doc["result"]
