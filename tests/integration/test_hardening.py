"""Hardening: security headers on every answer (the order fast path included), HSTS on
HTTPS behind a trusted proxy, CORS only for configured origins, a request size limit
(413 with a Binance-style body), and no secret in any log line or error."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from tests.support.gateway import guard_only
from tests.support.harness import Platform, running_platform
from tests.support.security import (
    FAST_HASHING,
    Mailbox,
    admin_headers,
    bearer,
    send_signed,
    signed_payload,
    verified_user,
)

from tradeplane.config import Settings
from tradeplane.gateway.context import install
from tradeplane.gateway.security import Guard

pytestmark = pytest.mark.integration

ORIGIN = "https://app.example"
PROXY = "127.0.0.2"
JWT_SECRET = "hardening-jwt-secret-3f9a7c1e5b2d"


@pytest.fixture(scope="module")
def outbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mail")


@pytest.fixture(scope="module")
async def plat(nats_url: str, pg_url: str, redis_url: str,
               outbox: Path) -> AsyncIterator[Platform]:
    async with running_platform(nats_url, pg_url, redis_url, cors_origins=[ORIGIN],
                                trusted_proxies=[f"{PROXY}/32"], mail_outbox=str(outbox),
                                jwt_secret=JWT_SECRET, max_body_bytes=16_384,
                                **FAST_HASHING) as p:
        yield p


@pytest.fixture
async def http(plat: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=plat.base_url) as c:
        yield c


def assert_hardened(r: httpx.Response) -> None:
    h = r.headers
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["X-Frame-Options"] == "DENY"
    assert h["Referrer-Policy"] == "no-referrer"
    assert h["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


async def test_every_answer_carries_security_headers(
    plat: Platform, http: httpx.AsyncClient
) -> None:
    t = await plat.trader("headers", {"USDT": "100"})
    answers = [
        await http.get("/api/v3/ping"),
        await http.get("/api/v3/nope"),
        await t.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY",
                           type="LIMIT", timeInForce="GTC", price="50000", quantity="0.001"),
        await t.api.signed("POST", "/api/v3/order", symbol="NOPE"),  # an error, fast path
        await http.get("/api/v1/user/me"),
        await http.get("/admin/audit"),
    ]
    for r in answers:
        assert_hardened(r)
        assert "Strict-Transport-Security" not in r.headers  # plain HTTP
    assert answers[2].status_code == 200
    for r in answers[4:]:
        assert r.headers["Cache-Control"] == "no-store"
    assert "Cache-Control" not in answers[0].headers


async def test_hsts_on_https_as_told_by_a_trusted_proxy_only(plat: Platform) -> None:
    proxied = httpx.AsyncClient(base_url=plat.base_url,
                                transport=httpx.AsyncHTTPTransport(local_address=PROXY))
    async with proxied, httpx.AsyncClient(base_url=plat.base_url) as direct:
        r = await proxied.get("/api/v3/ping", headers={"X-Forwarded-Proto": "https"})
        assert r.headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"
        r = await direct.get("/api/v3/ping", headers={"X-Forwarded-Proto": "https"})
        assert "Strict-Transport-Security" not in r.headers


async def test_cors_answers_configured_origins_only(
    plat: Platform, http: httpx.AsyncClient
) -> None:
    r = await http.get("/api/v3/time", headers={"Origin": ORIGIN})
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-MBX-USED-WEIGHT-1M" in r.headers["Access-Control-Expose-Headers"]
    r = await http.get("/api/v3/time", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers
    pre = await http.options("/api/v3/order", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "X-MBX-APIKEY"})
    assert pre.status_code == 200
    assert "X-MBX-APIKEY" in pre.headers["Access-Control-Allow-Headers"]
    evil = await http.options("/api/v3/order", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert evil.status_code == 400


async def test_cors_is_off_by_default() -> None:
    async def downstream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    app = FastAPI()
    install(app, guard_only())
    guard = Guard(app, downstream, Settings(dev_mode=True))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard),
                                 base_url="http://gw") as c:
        r = await c.get("/api/v3/time", headers={"Origin": ORIGIN})
        assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
        assert_hardened(r)
        r = await c.request("OPTIONS", "/api/v3/order", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
        assert "Access-Control-Allow-Origin" not in r.headers


async def test_bodies_over_the_limit_get_413_and_change_nothing(
    plat: Platform, http: httpx.AsyncClient
) -> None:
    t = await plat.trader("big-body", {"USDT": "100"})
    big = signed_payload({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                          "timeInForce": "GTC", "price": "50000", "quantity": "0.001",
                          "padding": "x" * 20_000}, secret=t.secret)
    r = await send_signed(http, "POST", "/api/v3/order", t.api_key, big)
    assert r.status_code == 413
    assert r.json() == {"code": -1101,
                        "msg": "Request body too large; the limit is 16384 bytes."}
    assert_hardened(r)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(40):
            yield b"x" * 1000

    r = await http.post("/api/v1/auth/signup", content=chunks(),
                        headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert await plat.balances(t.account) == {"USDT": (10_000_000_000, 0)}
    r = await http.post("/api/v1/auth/signup", json={"email": "ok@example.com",
                                                     "password": "long enough!"})
    assert r.status_code == 201  # under the limit, bodies pass whole


async def test_no_secret_reaches_a_log_line_or_an_error(
    plat: Platform, http: httpx.AsyncClient, outbox: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "pw-7d41c9e0-never-logged"
    tokens = await verified_user(http, Mailbox(outbox), "secrets@example.com", password)
    t = await plat.trader("secrets", {"USDT": "100"})
    admin_token = plat.settings.admin_token.get_secret_value()
    errors = [
        await http.post("/api/v1/auth/login", json={"email": "secrets@example.com",
                                                    "password": password + "x"}),
        await http.post("/api/v1/auth/login", json={"email": "secrets@example.com",
                                                    "password": password * 20}),
        await http.post("/api/v1/auth/refresh", json={"refreshToken": tokens["refreshToken"]
                                                      + "x"}),
        await http.get("/admin/audit", headers=admin_headers(admin_token + "x")),
        await send_signed(http, "GET", "/api/v3/account", t.api_key,
                          signed_payload({}, secret=t.secret) + "0"),
        await http.post("/api/v1/user/api-keys", headers=bearer(tokens),
                        json={"permissions": ["nope"], "publicKey": password}),
    ]
    key = (await http.post("/api/v1/user/api-keys", headers=bearer(tokens), json={})).json()
    r = await send_signed(http, "GET", "/api/v3/account", key["apiKey"],
                          signed_payload({}, secret=key["secretKey"]))
    assert r.status_code == 200
    assert all(400 <= e.status_code < 500 for e in errors), [e.text for e in errors]
    secrets = [password, t.secret, key["secretKey"], admin_token, JWT_SECRET,
               tokens["refreshToken"], tokens["accessToken"],
               plat.settings.secret_key.get_secret_value()]
    texts = caplog.text + "".join(e.text for e in errors) + repr(plat.settings) + str(
        plat.settings)
    for secret in secrets:
        assert secret not in texts
