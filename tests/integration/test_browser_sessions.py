"""Browser sessions (gateway/ui.py) over HTTP against the in-process platform: the login
registers the page's Ed25519 public key as the session's API key and signs nothing
secret back; the refresh token is only an HttpOnly, SameSite=Strict cookie; the cookie
refreshes (rotated, a reused one ends the session); logout revokes the key."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tests.support.harness import Platform, running_platform
from tests.support.security import FAST_HASHING, Mailbox, verified_user

from tradeplane.demo.client import ed25519_sign

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def outbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mail")


@pytest.fixture(scope="module")
async def plat(nats_url: str, pg_url: str, redis_url: str,
               outbox: Path) -> AsyncIterator[Platform]:
    async with running_platform(nats_url, pg_url, redis_url, mail_outbox=str(outbox),
                                **FAST_HASHING) as p:
        yield p


@pytest.fixture
async def http(plat: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=plat.base_url) as c:
        yield c


def new_key() -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return key, base64.b64encode(raw).decode()


async def signed_get(http: httpx.AsyncClient, key: Ed25519PrivateKey, api_key: str,
                     path: str) -> httpx.Response:
    payload = urlencode({"timestamp": int(time.time() * 1000)})
    sig = quote(ed25519_sign(key, payload), safe="")
    return await http.get(f"{path}?{payload}&signature={sig}",
                          headers={"X-MBX-APIKEY": api_key})


async def test_a_browser_session_signs_with_its_own_key_and_keeps_no_secret(
    plat: Platform, http: httpx.AsyncClient, outbox: Path
) -> None:
    await verified_user(http, Mailbox(outbox), "ann@example.com", PASSWORD)
    key, public = new_key()
    r = await http.post("/api/v1/auth/browser-session", json={
        "email": "ann@example.com", "password": PASSWORD, "publicKey": public})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert set(doc) == {"accessToken", "tokenType", "expiresIn", "apiKey", "expiresAt"}
    # The key lives a day at most (it is revoked at sign-out).
    assert 0 < doc["expiresAt"] - time.time() * 1000 <= 86_400_000
    assert "no-store" in r.headers["cache-control"]
    cookie = r.headers["set-cookie"].lower()
    for part in ("tp_refresh=", "httponly", "samesite=strict", "path=/api/v1/auth/"):
        assert part in cookie, cookie
    account = await signed_get(http, key, doc["apiKey"], "/api/v3/account")
    assert account.status_code == 200, account.text
    assert "TRADE" in account.json()["permissions"] or account.json()["canTrade"]
    # Another key's signature is refused.
    other, _ = new_key()
    assert (await signed_get(http, other, doc["apiKey"], "/api/v3/account")).status_code == 400

    # The cookie gives a new access token (and is rotated); the old one then ends it all.
    old = http.cookies["tp_refresh"]
    again = await http.post("/api/v1/auth/browser-refresh")
    assert again.status_code == 200, again.text
    assert set(again.json()) == {"accessToken", "tokenType", "expiresIn"}
    assert http.cookies["tp_refresh"] != old
    token = again.json()["accessToken"]
    me = await http.get("/api/v1/user/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["email"] == "ann@example.com"

    # Logout revokes the session's key and clears the cookie.
    out = await http.post("/api/v1/auth/browser-logout", json={"apiKey": doc["apiKey"]},
                          headers={"Authorization": f"Bearer {token}"})
    assert out.status_code == 200, out.text
    assert "tp_refresh" not in http.cookies
    refused = await signed_get(http, key, doc["apiKey"], "/api/v3/account")
    assert refused.status_code in (400, 401) and refused.json()["code"] == -2015
    replay = await http.post("/api/v1/auth/browser-refresh", cookies={"tp_refresh": old})
    assert replay.status_code == 401


async def test_refusals_leave_no_session_and_no_key(
    plat: Platform, http: httpx.AsyncClient, outbox: Path
) -> None:
    await verified_user(http, Mailbox(outbox), "tom@example.com", PASSWORD)
    keys_before = await plat.pool.fetchval("SELECT count(*) FROM api_keys")
    sessions_before = await plat.pool.fetchval("SELECT count(*) FROM sessions")
    _, public = new_key()
    bad_key = await http.post("/api/v1/auth/browser-session", json={
        "email": "tom@example.com", "password": PASSWORD, "publicKey": "bm90IGEga2V5"})
    assert (bad_key.status_code, bad_key.json()["code"]) == (400, -1100)
    wrong = await http.post("/api/v1/auth/browser-session", json={
        "email": "tom@example.com", "password": "not the password", "publicKey": public})
    assert (wrong.status_code, wrong.json()["code"]) == (401, -1002)
    assert (await http.post("/api/v1/auth/browser-refresh")).status_code == 401
    assert await plat.pool.fetchval("SELECT count(*) FROM api_keys") == keys_before
    assert await plat.pool.fetchval("SELECT count(*) FROM sessions") == sessions_before


async def test_with_2fa_the_code_is_asked_for(
    plat: Platform, http: httpx.AsyncClient, outbox: Path
) -> None:
    login = await verified_user(http, Mailbox(outbox), "eve@example.com", PASSWORD)
    auth = {"Authorization": f"Bearer {login['accessToken']}"}
    secret = (await http.post("/api/v1/user/2fa/setup", headers=auth)).json()["secret"]
    enabled = await http.post("/api/v1/user/2fa/enable", headers=auth,
                              json={"code": pyotp.TOTP(secret).now()})
    recovery = enabled.json()["recoveryCodes"][0]
    _, public = new_key()
    asked = await http.post("/api/v1/auth/browser-session", json={
        "email": "eve@example.com", "password": PASSWORD, "publicKey": public})
    assert asked.status_code == 401 and asked.json()["msg"] == "Two-factor code required."
    ok = await http.post("/api/v1/auth/browser-session", json={
        "email": "eve@example.com", "password": PASSWORD, "publicKey": public,
        "totpCode": recovery})
    assert ok.status_code == 200, ok.text
