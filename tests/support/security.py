"""Helpers for the account and security tests: signed requests with either key type, the
admin API, users signing up through the mail outbox."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tradeplane.demo.client import ed25519_sign
from tradeplane.domain.signing import sign

# Cheap argon2 for tests (the defaults cost ~0.3 s a hash on 2 cores); dev mode allows it.
FAST_HASHING: dict[str, Any] = {"argon2_time_cost": 1, "argon2_memory_kib": 8192,
                                "argon2_parallelism": 1}


def pem(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def signed_payload(params: dict[str, Any], *, secret: str | None = None,
                   private_key: Ed25519PrivateKey | None = None,
                   timestamp: int | None = None) -> str:
    """``params`` plus timestamp, URL-encoded, with the signature appended."""
    params = {**params, "timestamp": timestamp if timestamp is not None
              else int(time.time() * 1000)}
    q = urlencode(params)
    if private_key is not None:
        return f"{q}&{urlencode({'signature': ed25519_sign(private_key, q)})}"
    assert secret is not None
    return f"{q}&signature={sign(secret, q)}"


async def send_signed(http: httpx.AsyncClient, method: str, path: str, key: str,
                      payload: str, headers: dict[str, str] | None = None) -> httpx.Response:
    h = {"X-MBX-APIKEY": key, **(headers or {})}
    if method in ("POST", "PUT"):
        h["Content-Type"] = "application/x-www-form-urlencoded"
        return await http.request(method, path, content=payload, headers=h)
    return await http.request(method, f"{path}?{payload}", headers=h)


def admin_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Mailbox:
    folder: Path

    def messages_to(self, email: str) -> list[dict[str, str]]:
        if not self.folder.exists():
            return []
        docs = [json.loads(p.read_text()) for p in sorted(self.folder.glob("*.json"))]
        return [d for d in docs if d["to"] == email]

    def token_for(self, email: str) -> str:
        body = self.messages_to(email)[-1]["body"]
        return body.split("Your verification token: ", 1)[1].split("\n", 1)[0].strip()


async def verified_user(http: httpx.AsyncClient, mail: Mailbox, email: str,
                        password: str = "correct horse battery") -> dict[str, Any]:
    """Sign up, verify the email from the outbox, log in: the login answer."""
    r = await http.post("/api/v1/auth/signup", json={"email": email, "password": password})
    assert r.status_code == 201, r.text
    r = await http.post("/api/v1/auth/verify-email", json={"token": mail.token_for(email)})
    assert r.status_code == 200, r.text
    r = await http.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['accessToken']}"}
