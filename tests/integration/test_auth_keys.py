"""API keys: HMAC-SHA256 and Ed25519 signatures, recvWindow, permissions, IP allow-lists
behind trusted proxies, expiry, revocation and frozen accounts, each refused with
Binance's codes; secrets shown once; keys from the CLI."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.support.harness import Platform, eventually, running_platform
from tests.support.security import (
    FAST_HASHING,
    admin_headers,
    pem,
    send_signed,
    signed_payload,
)

from tradeplane import cli

pytestmark = pytest.mark.integration

PROXY = "127.0.0.2"  # connections from here are our reverse proxy (trusted_proxies)
ORDER = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
         "price": "50000", "quantity": "0.001"}


@pytest.fixture(scope="module")
async def plat(nats_url: str, pg_url: str, redis_url: str) -> AsyncIterator[Platform]:
    async with running_platform(nats_url, pg_url, redis_url, trusted_proxies=[f"{PROXY}/32"],
                                **FAST_HASHING) as p:
        yield p


@pytest.fixture
async def http(plat: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=plat.base_url) as c:
        yield c


@pytest.fixture
async def via_proxy(plat: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """Requests that come from the trusted proxy's address."""
    transport = httpx.AsyncHTTPTransport(local_address=PROXY)
    async with httpx.AsyncClient(base_url=plat.base_url, transport=transport) as c:
        yield c


async def new_key(plat: Platform, http: httpx.AsyncClient, account: int,
                  **spec: Any) -> dict[str, Any]:
    token = plat.settings.admin_token.get_secret_value()
    r = await http.post("/admin/api-keys", json={"account": account, **spec},
                        headers=admin_headers(token))
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def code(r: httpx.Response) -> tuple[int, int]:
    return r.status_code, r.json().get("code", 0)


async def test_a_signature_for_other_parameters_or_by_another_secret_gets_1022(
    plat: Platform, http: httpx.AsyncClient
) -> None:
    t = await plat.trader("sig", {"USDT": "1000"})
    ok = signed_payload({"recvWindow": 5000}, secret=t.secret)
    assert (await send_signed(http, "GET", "/api/v3/account", t.api_key, ok)).status_code == 200
    # The signature of one request replayed on other parameters.
    sig = ok.rpartition("signature=")[2]
    other = f"recvWindow=6000&timestamp={int(time.time() * 1000)}&signature={sig}"
    assert code(await send_signed(http, "GET", "/api/v3/account", t.api_key, other)) \
        == (400, -1022)
    # Right parameters, signed with someone else's secret.
    forged = signed_payload({}, secret="0" * 64)
    assert code(await send_signed(http, "GET", "/api/v3/account", t.api_key, forged)) \
        == (400, -1022)
    missing = f"timestamp={int(time.time() * 1000)}"
    assert code(await send_signed(http, "GET", "/api/v3/account", t.api_key, missing)) \
        == (400, -1102)


async def test_a_captured_request_replayed_after_its_recv_window_gets_1021(
    plat: Platform, http: httpx.AsyncClient
) -> None:
    t = await plat.trader("window", {"USDT": "1000"})
    now = int(time.time() * 1000)
    old = signed_payload({}, secret=t.secret, timestamp=now - 6000)  # default window 5 s
    assert code(await send_signed(http, "GET", "/api/v3/account", t.api_key, old)) \
        == (400, -1021)
    widened = signed_payload({"recvWindow": 10_000}, secret=t.secret, timestamp=now - 6000)
    assert (await send_signed(http, "GET", "/api/v3/account", t.api_key, widened)
            ).status_code == 200
    future = signed_payload({}, secret=t.secret, timestamp=now + 5000)
    assert code(await send_signed(http, "GET", "/api/v3/account", t.api_key, future)) \
        == (400, -1021)
    too_wide = signed_payload({"recvWindow": 70_000}, secret=t.secret)
    assert code(await send_signed(http, "GET", "/api/v3/account", t.api_key, too_wide)) \
        == (400, -1131)


async def test_an_order_request_replayed_within_its_window_places_nothing_twice(
    plat: Platform, http: httpx.AsyncClient
) -> None:
    t = await plat.trader("replay", {"USDT": "1000"})
    payload = signed_payload({**ORDER, "newClientOrderId": "once-only"}, secret=t.secret)
    first = await send_signed(http, "POST", "/api/v3/order", t.api_key, payload)
    assert first.status_code == 200, first.text
    again = await send_signed(http, "POST", "/api/v3/order", t.api_key, payload)
    assert again.json() == {"code": -2010, "msg": "Duplicate order sent."}
    opened = await t.api.signed("GET", "/api/v3/openOrders", symbol="BTCUSDT")
    assert [o["clientOrderId"] for o in opened.json()] == ["once-only"]


async def test_ed25519_keys_sign_requests_as_binance_and_have_no_secret(
    plat: Platform, http: httpx.AsyncClient
) -> None:
    t = await plat.trader("ed", {"USDT": "1000"})
    private = Ed25519PrivateKey.generate()
    key = await new_key(plat, http, t.account, keyType="ED25519", publicKey=pem(private),
                        permissions=["read", "trade"])
    assert key["keyType"] == "ED25519" and "secretKey" not in key
    k = key["apiKey"]
    read = signed_payload({}, private_key=private)
    r = await send_signed(http, "GET", "/api/v3/account", k, read)
    assert r.status_code == 200, r.text
    # Order entry (the fast path) with the signature in the form body.
    order = signed_payload({**ORDER, "newOrderRespType": "ACK"}, private_key=private)
    r = await send_signed(http, "POST", "/api/v3/order", k, order)
    assert r.status_code == 200, r.text
    stranger = signed_payload({}, private_key=Ed25519PrivateKey.generate())
    assert code(await send_signed(http, "GET", "/api/v3/account", k, stranger)) == (400, -1022)
    hmac_style = signed_payload({}, secret="anything")
    assert code(await send_signed(http, "GET", "/api/v3/account", k, hmac_style)) \
        == (400, -1022)


async def test_ed25519_registration_refuses_what_is_not_an_ed25519_public_key(
    plat: Platform, http: httpx.AsyncClient
) -> None:
    t = await plat.trader("ed-bad", {})
    token = plat.settings.admin_token.get_secret_value()
    for public in ("", "not a key", pem(Ed25519PrivateKey.generate())[:-30]):
        r = await http.post("/admin/api-keys", headers=admin_headers(token),
                            json={"account": t.account, "keyType": "ED25519",
                                  "publicKey": public})
        assert code(r) == (400, -1100), r.text


async def test_keys_do_only_what_their_permissions_allow(
    plat: Platform, http: httpx.AsyncClient
) -> None:
    t = await plat.trader("perms", {"USDT": "1000"})  # read + trade
    reader = await new_key(plat, http, t.account, permissions=["read"])
    order = signed_payload(ORDER, secret=reader["secretKey"])
    assert code(await send_signed(http, "POST", "/api/v3/order", reader["apiKey"], order)) \
        == (401, -2015)
    withdraw = signed_payload({"coin": "BTC", "address": "x", "amount": "1"}, secret=t.secret)
    assert code(await send_signed(http, "POST", "/sapi/v1/capital/withdraw/apply", t.api_key,
                                  withdraw)) == (401, -2015)
    bad = await http.post("/admin/api-keys",
                          headers=admin_headers(plat.settings.admin_token.get_secret_value()),
                          json={"account": t.account, "permissions": ["read", "admin"]})
    assert code(bad) == (400, -1100)


async def test_an_allow_listed_key_works_only_from_its_addresses(
    plat: Platform, http: httpx.AsyncClient, via_proxy: httpx.AsyncClient
) -> None:
    t = await plat.trader("allow", {"USDT": "1000"})
    key = await new_key(plat, http, t.account, ipAllowList=["203.0.113.7", "10.9.0.0/16"])
    k, s = key["apiKey"], key["secretKey"]
    assert key["ipAllowList"] == ["203.0.113.7/32", "10.9.0.0/16"]

    async def account(client: httpx.AsyncClient, forwarded: str | None) -> httpx.Response:
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        return await send_signed(client, "GET", "/api/v3/account", k,
                                 signed_payload({}, secret=s), headers)

    # Directly from 127.0.0.1: not on the list.
    assert code(await account(http, None)) == (401, -2015)
    # A direct client's X-Forwarded-For is not believed.
    assert code(await account(http, "203.0.113.7")) == (401, -2015)
    # Through the trusted proxy, the address it saw counts.
    assert (await account(via_proxy, "203.0.113.7")).status_code == 200
    assert (await account(via_proxy, "198.51.100.1, 10.9.4.4")).status_code == 200
    assert code(await account(via_proxy, "198.51.100.1")) == (401, -2015)
    # The client's own claim in front of the proxy's entry does not help.
    assert code(await account(via_proxy, "203.0.113.7, 198.51.100.1")) == (401, -2015)


async def test_an_expired_key_is_refused(plat: Platform, http: httpx.AsyncClient) -> None:
    t = await plat.trader("expiring", {"USDT": "1000"})
    key = await new_key(plat, http, t.account, expiresInDays=1)
    assert key["expiresAt"] > time.time() * 1000
    await plat.pool.execute(
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE api_key = $1",
        key["apiKey"])
    payload = signed_payload({}, secret=key["secretKey"])
    assert code(await send_signed(http, "GET", "/api/v3/account", key["apiKey"], payload)) \
        == (401, -2015)


async def test_a_revoked_key_is_refused_at_once_and_its_secret_was_shown_once(
    plat: Platform, http: httpx.AsyncClient
) -> None:
    t = await plat.trader("revoked", {"USDT": "1000"})
    key = await new_key(plat, http, t.account)
    k, s = key["apiKey"], key["secretKey"]
    assert (await send_signed(http, "GET", "/api/v3/account", k,
                              signed_payload({}, secret=s))).status_code == 200  # cached now
    admin = admin_headers(plat.settings.admin_token.get_secret_value())
    listed = (await http.get("/admin/api-keys", params={"account": t.account},
                             headers=admin)).json()
    assert k in {x["apiKey"] for x in listed}
    assert all("secretKey" not in x for x in listed)
    stored = await plat.pool.fetchval("SELECT secret_enc FROM api_keys WHERE api_key = $1", k)
    assert s.encode() not in bytes(stored)
    r = await http.delete(f"/admin/api-keys/{k}", headers=admin)
    assert r.status_code == 200 and r.json()["revoked"] is True
    assert code(await send_signed(http, "GET", "/api/v3/account", k,
                                  signed_payload({}, secret=s))) == (401, -2015)
    assert (await http.delete(f"/admin/api-keys/{k}", headers=admin)).status_code == 404


async def test_a_frozen_account_may_read_but_not_trade(
    plat: Platform, http: httpx.AsyncClient
) -> None:
    t = await plat.trader("frozen", {"USDT": "1000"})
    admin = admin_headers(plat.settings.admin_token.get_secret_value())
    assert (await t.api.signed("POST", "/api/v3/order", **ORDER)).status_code == 200  # cached
    r = await http.post(f"/admin/users/{t.account}/freeze", json={"reason": "fraud check"},
                        headers=admin)
    assert r.status_code == 200 and r.json()["frozen"] is True
    assert code(await t.api.signed("POST", "/api/v3/order", **ORDER)) == (401, -2015)
    assert code(await t.api.signed("DELETE", "/api/v3/openOrders", symbol="BTCUSDT")) \
        == (401, -2015)
    assert (await t.api.signed("GET", "/api/v3/account")).status_code == 200
    r = await http.post(f"/admin/users/{t.account}/unfreeze", headers=admin)
    assert r.json()["frozen"] is False
    assert (await t.api.signed("POST", "/api/v3/order", **ORDER)).status_code == 200


async def test_the_cli_issues_restricted_keys_and_revokes_them(
    plat: Platform, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await plat.trader("cli-user", {"USDT": "1000"})
    monkeypatch.setenv("TRADEPLANE_DATABASE_URL", plat.settings.database_url)
    monkeypatch.setenv("TRADEPLANE_SECRET_KEY", plat.settings.secret_key.get_secret_value())
    monkeypatch.setenv("TRADEPLANE_NATS_URL", plat.settings.nats_url)
    monkeypatch.setenv("TRADEPLANE_DEV_MODE", "1")
    rc = await asyncio.to_thread(cli.main, ["key-create", "cli-user", "--permissions", "read",
                                            "--ip-allow", "127.0.0.1", "--expires-days", "7"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["permissions"] == ["read"] and doc["ipAllowList"] == ["127.0.0.1/32"]
    r = await send_signed(http, "GET", "/api/v3/account", doc["apiKey"],
                          signed_payload({}, secret=doc["secretKey"]))
    assert r.status_code == 200, r.text
    assert code(await send_signed(http, "POST", "/api/v3/order", doc["apiKey"],
                                  signed_payload(ORDER, secret=doc["secretKey"]))) \
        == (401, -2015)
    assert await asyncio.to_thread(cli.main, ["key-revoke", doc["apiKey"]]) == 0

    # The key was cached by the read above; the CLI tells the gateways, so the revocation
    # holds well before the key cache's 30 s would have expired it.
    async def refused() -> bool:
        r = await send_signed(http, "GET", "/api/v3/account", doc["apiKey"],
                              signed_payload({}, secret=doc["secretKey"]))
        return code(r) == (401, -2015)

    await eventually(refused, timeout=5.0)
    assert await asyncio.to_thread(cli.main, ["key-create", "cli-user", "--permissions",
                                              "read,root"]) == 2
    rows = await plat.pool.fetch("SELECT action, actor FROM audit_log WHERE target = $1"
                                 " ORDER BY id", f"apikey:{doc['apiKey']}")
    assert [r["action"] for r in rows] == ["apikey.create", "apikey.revoke"]
    assert all(r["actor"].startswith("cli:") for r in rows)
