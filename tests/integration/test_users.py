"""Users: sign-up with email verification, login, rotating refresh tokens with reuse
detection, logout, TOTP 2FA with one-time recovery codes, login history, API keys from a
session (2FA once enabled), failed-login throttling."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pyotp
import pytest
from tests.support.harness import Platform, running_platform
from tests.support.security import (
    FAST_HASHING,
    Mailbox,
    bearer,
    send_signed,
    signed_payload,
    verified_user,
)

pytestmark = pytest.mark.integration

JWT_SECRET = "test-jwt-secret-0123456789abcdef"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def outbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mail")


@pytest.fixture(scope="module")
async def plat(nats_url: str, pg_url: str, redis_url: str,
               outbox: Path) -> AsyncIterator[Platform]:
    async with running_platform(nats_url, pg_url, redis_url, mail_outbox=str(outbox),
                                jwt_secret=JWT_SECRET, login_max_failures=4,
                                login_max_account_failures=6, **FAST_HASHING) as p:
        yield p


@pytest.fixture(scope="module")
def mail(outbox: Path) -> Mailbox:
    return Mailbox(outbox)


_next_ip = iter(range(20, 250))


@pytest.fixture
async def http(plat: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """A client from its own loopback address (failed-login limits are per address)."""
    transport = httpx.AsyncHTTPTransport(local_address=f"127.0.1.{next(_next_ip)}")
    async with httpx.AsyncClient(base_url=plat.base_url, transport=transport,
                                 headers={"User-Agent": "pytest-agent/1"}) as c:
        yield c


def err(r: httpx.Response) -> tuple[int, int, str]:
    doc = r.json()
    return r.status_code, doc.get("code", 0), doc.get("msg", "")


async def test_signup_needs_a_verified_email_before_login(
    plat: Platform, http: httpx.AsyncClient, mail: Mailbox
) -> None:
    r = await http.post("/api/v1/auth/signup", json={"email": "Ann@Example.com",
                                                     "password": PASSWORD})
    assert r.status_code == 201, r.text
    assert r.json() == {"email": "Ann@Example.com", "sent": True}
    doc = dict(await plat.pool.fetchrow(
        "SELECT id AS \"userId\", account_id AS account FROM users"
        " WHERE email = 'Ann@Example.com'"))
    assert doc["account"] >= 1000
    assert await plat.pool.fetchval("SELECT kind FROM accounts WHERE id = $1",
                                    doc["account"]) == "user"
    stored = await plat.pool.fetchval("SELECT password_hash FROM users WHERE id = $1",
                                      doc["userId"])
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    login = {"email": "ann@example.com", "password": PASSWORD}
    assert err(await http.post("/api/v1/auth/login", json=login)) == (
        401, -1002, "Email not verified.")
    token = mail.token_for("Ann@Example.com")
    r = await http.post("/api/v1/auth/verify-email", json={"token": token})
    assert r.json() == {"emailVerified": True}
    assert err(await http.post("/api/v1/auth/verify-email", json={"token": token}))[:2] == (
        400, -1100)  # once
    r = await http.post("/api/v1/auth/login", json=login)
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert tokens["tokenType"] == "Bearer" and tokens["expiresIn"] == 900
    me = (await http.get("/api/v1/user/me", headers=bearer(tokens))).json()
    assert me == {"userId": doc["userId"], "email": "Ann@Example.com",
                  "account": doc["account"], "emailVerified": True, "twoFactor": False,
                  "frozen": False}


@pytest.mark.parametrize(
    ("body", "code"),
    [({"email": "not-an-email", "password": PASSWORD}, -1100),
     ({"email": "bob@example.com", "password": "short"}, -1102)],
    ids=["bad-email", "short-password"],
)
async def test_bad_signups_are_refused(
    plat: Platform, http: httpx.AsyncClient, body: dict[str, str], code: int
) -> None:
    r = await http.post("/api/v1/auth/signup", json=body)
    assert err(r)[:2] == (400, code)
    assert await plat.pool.fetchval("SELECT count(*) FROM users WHERE lower(email) = $1",
                                    "bob@example.com") == 0


async def test_signing_up_with_a_taken_email_answers_as_for_a_new_one_and_mails_the_owner(
    plat: Platform, http: httpx.AsyncClient, mail: Mailbox
) -> None:
    """Nobody learns from sign-up which emails have accounts (as from resend-verification):
    the same answer, and the owner is mailed a notice (still unverified: a new token);
    the account is left as it was."""
    await verified_user(http, mail, "taken@example.com", PASSWORD)
    fresh = await http.post("/api/v1/auth/signup", json={"email": "fresh@example.com",
                                                         "password": "another password"})
    again = await http.post("/api/v1/auth/signup", json={"email": "Taken@Example.com",
                                                         "password": "another password"})
    assert (again.status_code, again.json()) == (201, {"email": "Taken@Example.com",
                                                        "sent": True})
    assert (fresh.status_code, fresh.json()) == (201, {"email": "fresh@example.com",
                                                        "sent": True})
    assert await plat.pool.fetchval("SELECT count(*) FROM users WHERE lower(email) = $1",
                                    "taken@example.com") == 1
    notice = mail.messages_to("taken@example.com")[-1]
    assert "already has an account" in notice["body"]
    assert (await login(http, "taken@example.com", PASSWORD)).status_code == 200
    assert (await login(http, "taken@example.com", "another password")).status_code == 401

    await http.post("/api/v1/auth/signup", json={"email": "pending@example.com",
                                                  "password": PASSWORD})
    first = mail.token_for("pending@example.com")
    await http.post("/api/v1/auth/signup", json={"email": "pending@example.com",
                                                  "password": "another password"})
    second = mail.token_for("pending@example.com")
    assert second != first
    r = await http.post("/api/v1/auth/verify-email", json={"token": second})
    assert r.json() == {"emailVerified": True}
    assert (await login(http, "pending@example.com", PASSWORD)).status_code == 200


async def test_wrong_credentials_are_refused_alike_and_every_attempt_is_in_the_history(
    plat: Platform, http: httpx.AsyncClient, mail: Mailbox
) -> None:
    tokens = await verified_user(http, mail, "hist@example.com", PASSWORD)
    wrong = await http.post("/api/v1/auth/login", json={"email": "hist@example.com",
                                                        "password": "wrong password!"})
    nobody = await http.post("/api/v1/auth/login", json={"email": "nobody@example.com",
                                                         "password": "wrong password!"})
    assert err(wrong) == err(nobody) == (401, -1002, "Email or password is wrong.")
    hist = (await http.get("/api/v1/user/login-history", headers=bearer(tokens))).json()
    assert [(h["success"], h["reason"]) for h in hist] == [
        (False, "bad credentials"), (True, "ok")]
    assert {h["userAgent"] for h in hist} == {"pytest-agent/1"}
    assert all(h["ip"].startswith("127.0.1.") and h["time"] > 0 for h in hist)


def from_new_address(plat: Platform) -> httpx.AsyncClient:
    """Another client, from an address of its own."""
    transport = httpx.AsyncHTTPTransport(local_address=f"127.0.1.{next(_next_ip)}")
    return httpx.AsyncClient(base_url=plat.base_url, transport=transport)


async def login(http: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await http.post("/api/v1/auth/login", json={"email": email, "password": password})


async def test_failed_logins_are_throttled_per_account_and_address(
    plat: Platform, http: httpx.AsyncClient, mail: Mailbox
) -> None:
    """Failures on one account from one address throttle that address on that account
    (login_max_failures: 4 here), never a correct login to another account from the same
    address (behind one NAT or Ingress everybody shares it); failures on one account from
    everywhere (login_max_account_failures: 6 here) throttle that account."""
    await verified_user(http, mail, "throttle@example.com", PASSWORD)
    await verified_user(http, mail, "neighbour@example.com", PASSWORD)
    for _ in range(4):
        assert (await login(http, "throttle@example.com", "guess guess guess")).status_code \
            == 401
    r = await login(http, "Throttle@Example.com", PASSWORD)
    assert err(r) == (429, -1003, "Too many failed logins; try again later.")  # even so
    # Someone else behind the same address logs in to their own account.
    assert (await login(http, "neighbour@example.com", PASSWORD)).status_code == 200
    async with from_new_address(plat) as elsewhere, from_new_address(plat) as third:
        # The account's owner, from another address, too.
        assert (await login(elsewhere, "throttle@example.com", PASSWORD)).status_code == 200
        for _ in range(2):  # the account's 5th and 6th failure, from another address
            assert (await login(elsewhere, "throttle@example.com", "guess again!")
                    ).status_code == 401
        assert err(await login(third, "throttle@example.com", PASSWORD))[:2] == (429, -1003)
        assert (await login(third, "neighbour@example.com", PASSWORD)).status_code == 200


async def test_the_bearer_scheme_is_case_insensitive_and_required(
    plat: Platform, http: httpx.AsyncClient, mail: Mailbox
) -> None:
    token = (await verified_user(http, mail, "scheme@example.com", PASSWORD))["accessToken"]
    for header in (f"Bearer {token}", f"bearer {token}", f"BEARER  {token}"):
        r = await http.get("/api/v1/user/me", headers={"Authorization": header})
        assert r.status_code == 200, (header, r.text)
    for header in (token, f"Basic {token}", "Bearer", f"Bearer{token}", f"Bearer {token} x"):
        r = await http.get("/api/v1/user/me", headers={"Authorization": header})
        assert err(r) == (401, -1002, "Access token required."), header


async def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_session(
    plat: Platform, http: httpx.AsyncClient, mail: Mailbox
) -> None:
    first = await verified_user(http, mail, "rotate@example.com", PASSWORD)
    r = await http.post("/api/v1/auth/refresh", json={"refreshToken": first["refreshToken"]})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refreshToken"] != first["refreshToken"]
    assert (await http.get("/api/v1/user/me", headers=bearer(second))).status_code == 200
    # Someone replays the first refresh token: the whole session ends, for both holders.
    r = await http.post("/api/v1/auth/refresh", json={"refreshToken": first["refreshToken"]})
    assert err(r) == (401, -1002, "Refresh token reused; the session has been revoked.")
    r = await http.post("/api/v1/auth/refresh", json={"refreshToken": second["refreshToken"]})
    assert err(r)[:2] == (401, -1002)
    for tokens in (first, second):
        assert err(await http.get("/api/v1/user/me", headers=bearer(tokens))) == (
            401, -1002, "Session ended.")
    reason = await plat.pool.fetchval(
        "SELECT revoked_reason FROM sessions s JOIN users u ON u.id = s.user_id"
        " WHERE u.email = 'rotate@example.com'")
    assert reason == "refresh token reuse"


async def test_logout_ends_one_session_and_logout_all_every_session(
    plat: Platform, http: httpx.AsyncClient, mail: Mailbox
) -> None:
    a = await verified_user(http, mail, "logout@example.com", PASSWORD)
    b = (await http.post("/api/v1/auth/login", json={"email": "logout@example.com",
                                                     "password": PASSWORD})).json()
    assert (await http.post("/api/v1/auth/logout", headers=bearer(a))).status_code == 200
    assert err(await http.get("/api/v1/user/me", headers=bearer(a)))[:2] == (401, -1002)
    r = await http.post("/api/v1/auth/refresh", json={"refreshToken": a["refreshToken"]})
    assert err(r)[:2] == (401, -1002)
    assert (await http.get("/api/v1/user/me", headers=bearer(b))).status_code == 200
    r = await http.post("/api/v1/auth/logout-all", headers=bearer(b))
    assert r.json() == {"loggedOut": True, "sessions": 1}
    assert err(await http.get("/api/v1/user/me", headers=bearer(b)))[:2] == (401, -1002)


async def test_only_genuine_unexpired_access_tokens_are_accepted(
    plat: Platform, http: httpx.AsyncClient, mail: Mailbox
) -> None:
    tokens = await verified_user(http, mail, "jwt@example.com", PASSWORD)
    claims = jwt.decode(tokens["accessToken"], JWT_SECRET, algorithms=["HS256"],
                        issuer="tradeplane")
    now = int(time.time())
    forged = jwt.encode({**claims, "exp": now + 60}, "another-secret-entirely-32-bytes",
                        algorithm="HS256")
    expired = jwt.encode({**claims, "iat": now - 120, "exp": now - 60}, JWT_SECRET,
                         algorithm="HS256")
    unsigned = jwt.encode({**claims}, None, algorithm="none")
    for token in (forged, expired, unsigned, tokens["refreshToken"], "garbage"):
        r = await http.get("/api/v1/user/me", headers={"Authorization": f"Bearer {token}"})
        assert err(r)[:2] == (401, -1002), token
    assert err(await http.get("/api/v1/user/me")) == (401, -1002, "Access token required.")


async def _enable_2fa(http: httpx.AsyncClient, tokens: dict[str, Any]
                      ) -> tuple[pyotp.TOTP, list[str]]:
    setup = (await http.post("/api/v1/user/2fa/setup", headers=bearer(tokens))).json()
    totp = pyotp.TOTP(setup["secret"])
    assert setup["otpauthUri"].startswith("otpauth://totp/tradeplane:")
    r = await http.post("/api/v1/user/2fa/enable", json={"code": "000000"},
                        headers=bearer(tokens))
    if totp.now() != "000000":
        assert err(r)[:2] == (401, -1002)
    r = await http.post("/api/v1/user/2fa/enable", json={"code": totp.now()},
                        headers=bearer(tokens))
    assert r.status_code == 200, r.text
    codes = r.json()["recoveryCodes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    return totp, codes


async def test_2fa_is_asked_at_login_once_enabled_and_each_code_works_once(
    plat: Platform, http: httpx.AsyncClient, mail: Mailbox
) -> None:
    tokens = await verified_user(http, mail, "totp@example.com", PASSWORD)
    totp, codes = await _enable_2fa(http, tokens)
    stored = await plat.pool.fetch(
        "SELECT code_hash FROM recovery_codes r JOIN users u ON u.id = r.user_id"
        " WHERE u.email = 'totp@example.com'")
    assert len(stored) == 10 and all(c.encode() not in bytes(s["code_hash"])
                                     for c in codes for s in stored)
    login = {"email": "totp@example.com", "password": PASSWORD}
    assert err(await http.post("/api/v1/auth/login", json=login)) == (
        401, -1002, "Two-factor code required.")
    wrong = "123456" if totp.now() != "123456" else "654321"
    assert err(await http.post("/api/v1/auth/login", json={**login, "totpCode": wrong})) == (
        401, -1002, "Two-factor code is not valid.")
    # The code that enabled 2FA is used up: said so, not "not valid".
    enabling = await plat.pool.fetchval(
        "SELECT totp_last_step FROM users WHERE email = 'totp@example.com'")
    async with from_new_address(plat) as other:  # failures here are per address too
        assert err(await other.post("/api/v1/auth/login", json={
            **login, "totpCode": totp.generate_otp(enabling)})) == (
            401, -1002, "Two-factor code already used; wait for the next one.")
    # The step after the one that enabled 2FA (one step of clock skew is accepted).
    code = totp.at(time.time() + 30)
    assert (await http.post("/api/v1/auth/login", json={**login, "totpCode": code})
            ).status_code == 200
    assert err(await http.post("/api/v1/auth/login", json={**login, "totpCode": code})) \
        == (401, -1002, "Two-factor code already used; wait for the next one.")  # once
    r = await http.post("/api/v1/auth/login", json={**login, "totpCode": codes[0]})
    assert r.status_code == 200, r.text
    assert err(await http.post("/api/v1/auth/login",
                               json={**login, "totpCode": codes[0]}))[:2] == (401, -1002)
    hist = (await http.get("/api/v1/user/login-history", headers=bearer(r.json()))).json()
    assert [h["reason"] for h in hist] == [  # newest first
        "2fa invalid", "ok", "2fa invalid", "ok", "2fa invalid", "2fa invalid",
        "2fa missing", "ok"]


async def test_api_keys_from_a_session_need_the_2fa_code_once_enabled(
    plat: Platform, http: httpx.AsyncClient, mail: Mailbox
) -> None:
    tokens = await verified_user(http, mail, "keys@example.com", PASSWORD)
    r = await http.post("/api/v1/user/api-keys", headers=bearer(tokens),
                        json={"permissions": ["read"], "label": "bot"})
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["label"] == "bot" and "secretKey" in first
    ok = await send_signed(http, "GET", "/api/v3/account", first["apiKey"],
                           signed_payload({}, secret=first["secretKey"]))
    assert ok.status_code == 200, ok.text

    _totp, codes = await _enable_2fa(http, tokens)
    spec = {"permissions": ["read", "trade"]}
    assert err(await http.post("/api/v1/user/api-keys", headers=bearer(tokens), json=spec)) \
        == (401, -1002, "Two-factor code required.")
    assert err(await http.post("/api/v1/user/api-keys", headers=bearer(tokens),
                               json={**spec, "totpCode": "999999x"}))[:2] == (401, -1002)
    r = await http.post("/api/v1/user/api-keys", headers=bearer(tokens),
                        json={**spec, "totpCode": codes[1]})
    assert r.status_code == 200, r.text
    second = r.json()
    listed = (await http.get("/api/v1/user/api-keys", headers=bearer(tokens))).json()
    assert {k["apiKey"] for k in listed} == {first["apiKey"], second["apiKey"]}
    assert all("secretKey" not in k for k in listed)

    r = await http.delete(f"/api/v1/user/api-keys/{first['apiKey']}", headers=bearer(tokens))
    assert r.json()["revoked"] is True
    gone = await send_signed(http, "GET", "/api/v3/account", first["apiKey"],
                             signed_payload({}, secret=first["secretKey"]))
    assert err(gone)[:2] == (401, -2015)
    # Nobody revokes a key of another account.
    other = await verified_user(http, mail, "other@example.com", PASSWORD)
    r = await http.delete(f"/api/v1/user/api-keys/{second['apiKey']}", headers=bearer(other))
    assert r.status_code == 404
    actions = [r["action"] for r in await plat.pool.fetch(
        "SELECT action FROM audit_log WHERE actor = $1 ORDER BY id",
        f"user:{(await http.get('/api/v1/user/me', headers=bearer(tokens))).json()['userId']}")]
    assert actions == ["user.apikey.create", "user.2fa.enable", "user.apikey.create",
                       "user.apikey.revoke"]


async def test_an_unverified_user_cannot_create_api_keys(
    plat: Platform, http: httpx.AsyncClient, mail: Mailbox
) -> None:
    tokens = await verified_user(http, mail, "unverified@example.com", PASSWORD)
    await plat.pool.execute("UPDATE users SET email_verified_at = NULL"
                            " WHERE email = 'unverified@example.com'")
    r = await http.post("/api/v1/user/api-keys", headers=bearer(tokens), json={})
    assert err(r) == (401, -1002, "Email not verified.")
    r = await http.post("/api/v1/auth/resend-verification",
                        json={"email": "unverified@example.com"})
    assert r.json() == {"sent": True}
    assert len(mail.messages_to("unverified@example.com")) == 2
    r = await http.post("/api/v1/auth/resend-verification", json={"email": "no@example.com"})
    assert r.json() == {"sent": True}  # the same answer: nobody learns who has an account


async def test_withdrawals_need_the_2fa_code_once_enabled(
    plat: Platform, http: httpx.AsyncClient, mail: Mailbox
) -> None:
    tokens = await verified_user(http, mail, "withdraw@example.com", PASSWORD)
    _totp, codes = await _enable_2fa(http, tokens)
    r = await http.post("/api/v1/user/api-keys", headers=bearer(tokens),
                        json={"permissions": ["read", "withdraw"], "totpCode": codes[0]})
    key = r.json()
    params = {"coin": "NOPE", "address": "x", "amount": "1"}

    async def apply(extra: dict[str, str]) -> httpx.Response:
        return await send_signed(http, "POST", "/sapi/v1/capital/withdraw/apply",
                                 key["apiKey"], signed_payload({**params, **extra},
                                                               secret=key["secretKey"]))

    assert err(await apply({})) == (401, -1002, "Two-factor code required.")
    assert err(await apply({"totpCode": "000000x"}))[:2] == (401, -1002)
    passed = await apply({"totpCode": codes[1]})
    assert passed.status_code == 400 and passed.json()["code"] != -1002  # on to the coin



@pytest.mark.parametrize(("content", "ctype"), [
    (b"email=form%40example.com&password=correct+horse+battery",
     "application/x-www-form-urlencoded"),
    (b"", "application/json"),
    (b'{"email": "broken@example.com", ', "application/json"),
], ids=["form", "empty", "broken-json"])
async def test_a_body_that_is_not_a_json_object_is_told_to_be_json(
    http: httpx.AsyncClient, content: bytes, ctype: str
) -> None:
    r = await http.post("/api/v1/auth/signup", content=content,
                        headers={"Content-Type": ctype})
    assert err(r) == (400, -1102, "The request body must be a JSON object (Content-Type: "
                                  "application/json); this endpoint takes no form or query "
                                  "parameters.")
