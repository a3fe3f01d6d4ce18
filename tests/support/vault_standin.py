"""A stand-in for HashiCorp Vault's HTTP API, for tests only: no Vault binary exists here.

It serves exactly the endpoints tradeplane's Vault adapter uses, with Vault's paths,
payload shapes and error bodies (``{"errors": [...]}``):

* ``POST /v1/auth/<mount>/login`` (Kubernetes auth: ``{"role", "jwt"}``)
* ``GET  /v1/auth/token/lookup-self`` and ``POST /v1/auth/token/renew-self``
* ``GET  /v1/<kv mount>/data/<path>`` (KV v2 read)

Tokens expire after their TTL (renewal extends it); a wrong role answers 400
``invalid role name``, a wrong JWT or token 403 ``permission denied``, as Vault does. It
is not Vault: no policies, no max TTL, no other engines.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class _Token:
    ttl: float
    expires: float
    renewable: bool = True


@dataclass
class VaultStandIn:
    """State of the stand-in; ``url`` once started with :func:`vault_standin`."""

    jwt: str = ""
    role: str = "tradeplane"
    auth_mount: str = "kubernetes"
    token_ttl: float = 3600.0
    kv: dict[str, dict[str, Any]] = field(default_factory=dict)  # "mount/path" -> data
    tokens: dict[str, _Token] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def issue_token(self, ttl: float | None = None, renewable: bool = True) -> str:
        """A valid token (``ttl`` 0 = never expires, like a root token)."""
        tok = f"hvs.{secrets.token_urlsafe(18)}"
        ttl = self.token_ttl if ttl is None else ttl
        with self.lock:
            self.tokens[tok] = _Token(ttl, time.monotonic() + ttl if ttl else float("inf"),
                                      renewable)
        return tok

    def renewals(self) -> int:
        with self.lock:
            return sum(1 for m, p in self.requests if p == "/v1/auth/token/renew-self")

    # ------------------------------------------------------------------ handling
    def handle(self, method: str, path: str, token: str | None,
               body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append((method, path))
        if method == "POST" and path == f"/v1/auth/{self.auth_mount}/login":
            if body.get("role") != self.role:
                return 400, {"errors": [f'invalid role name "{body.get("role")}"']}
            if not self.jwt or body.get("jwt") != self.jwt:
                return 403, {"errors": ["permission denied"]}
            tok = self.issue_token()
            return 200, {"auth": {"client_token": tok, "lease_duration": int(self.token_ttl),
                                  "renewable": True, "policies": ["tradeplane"]}}
        entry = self._valid(token)
        if entry is None:
            return 403, {"errors": ["permission denied"]}
        assert token is not None
        if method == "GET" and path == "/v1/auth/token/lookup-self":
            left = 0 if entry.ttl == 0 else int(entry.expires - time.monotonic())
            return 200, {"data": {"ttl": left, "renewable": entry.renewable,
                                  "policies": ["tradeplane"]}}
        if method == "POST" and path == "/v1/auth/token/renew-self":
            if not entry.renewable:
                return 400, {"errors": ["lease is not renewable"]}
            with self.lock:
                entry.expires = time.monotonic() + entry.ttl
            return 200, {"auth": {"client_token": token, "lease_duration": int(entry.ttl),
                                  "renewable": True}}
        if method == "GET" and "/data/" in path:
            key = path.removeprefix("/v1/").replace("/data/", "/", 1)
            if key not in self.kv:
                return 404, {"errors": []}
            return 200, {"data": {"data": self.kv[key],
                                  "metadata": {"version": 1, "deletion_time": "",
                                               "destroyed": False}}}
        return 404, {"errors": [f"no handler for route {path!r}"]}

    def _valid(self, token: str | None) -> _Token | None:
        with self.lock:
            entry = self.tokens.get(token or "")
            if entry is None or entry.expires <= time.monotonic():
                return None
            return entry


class _Handler(BaseHTTPRequestHandler):
    state: VaultStandIn

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else {}
        status, doc = self.state.handle(method, self.path.split("?")[0],
                                        self.headers.get("X-Vault-Token"), body)
        out = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@contextmanager
def vault_standin(state: VaultStandIn | None = None) -> Iterator[VaultStandIn]:
    """Serve a :class:`VaultStandIn` on a free local port for the duration of the block."""
    st = state or VaultStandIn()
    handler = type("Handler", (_Handler,), {"state": st})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    st.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield st
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
