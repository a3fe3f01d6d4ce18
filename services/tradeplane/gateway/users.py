"""Users and their browser sessions (``/api/v1/auth/...``, ``/api/v1/user/...``; Binance
has no public equivalent, so these are our own JSON endpoints with Binance-style errors).

* Sign-up: argon2id password hash, one trading account per user, an email verification
  token (sent through the :class:`~tradeplane.usecases.users.Mailer`); login needs a
  verified email.
* Sessions: a short-lived JWT access token (HS256, ``jwt_secret``) plus an opaque refresh
  token (stored hashed). Each refresh rotates it; presenting a used one again revokes the
  whole session (someone copied it). Logout ends the session at once: every access token
  names its session, which must still be live.
* 2FA: TOTP (``pyotp``, 30 s steps, one step of clock skew; each code is good once) with
  ten one-time recovery codes (stored hashed). Once enabled it is asked for at login, for
  API-key creation and, through :func:`require_2fa`, for withdrawals.
* Login history: every attempt with address, user agent, time and outcome.

The tables are behind the :class:`~tradeplane.usecases.users.UserStore` port the gateway
composed (``Gateway.users``); a user's audited changes (API keys, 2FA) go through the
accounts use case (``usecases/accounts.py``) as ``user:<id>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets as _stdlib_secrets
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

import jwt
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as FPath
from limits import RateLimitItemPerSecond
from pydantic import BaseModel, Field

from tradeplane.config import Settings
from tradeplane.gateway import apikeys, errors
from tradeplane.gateway.apikeys import KeySpec
from tradeplane.gateway.auth import request_ip
from tradeplane.gateway.context import ctx, gateway
from tradeplane.gateway.inputs import EMAIL_RE, KEY_ID, PLAIN_TEXT
from tradeplane.gateway.ratelimit import NoRateLimits, RateLimitStore
from tradeplane.usecases.accounts import Accounts
from tradeplane.usecases.audit import Actor, user_actor
from tradeplane.usecases.errors import Invalid, NotFound
from tradeplane.usecases.users import EmailTaken, Mail, Refresh, UserRow, UserStore

router = APIRouter(prefix="/api/v1", tags=["users"])

ISSUER = "tradeplane"
TOTP_STEP_S = 30
RECOVERY_CODES = 10
_ALGORITHM = "HS256"


# --------------------------------------------------------------------------- secrets
class Credentials:
    """Password hashing and token signing, built once from the settings."""

    def __init__(self, s: Settings) -> None:
        self.hasher = PasswordHasher(time_cost=s.argon2_time_cost,
                                     memory_cost=s.argon2_memory_kib,
                                     parallelism=s.argon2_parallelism)
        self._dummy = self.hasher.hash(_stdlib_secrets.token_hex(16))
        given = s.jwt_secret.get_secret_value()
        self.jwt_key = given.encode() if given else HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"tradeplane-jwt", info=b"v1",
        ).derive(s.secret_key.get_secret_value().encode())
        self.access_ttl_s = s.access_token_ttl_s
        self.refresh_ttl_s = s.refresh_token_ttl_s
        self.email_ttl_s = s.email_token_ttl_s

    async def hash_password(self, password: str) -> str:
        # argon2 is meant to be slow (~0.1-0.3 s): never on the event loop.
        return await asyncio.to_thread(self.hasher.hash, password)

    async def check_password(self, stored: str | None, password: str) -> bool:
        """Constant work whether or not the user exists (``stored`` None)."""
        try:
            return await asyncio.to_thread(self.hasher.verify, stored or self._dummy, password) \
                and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    def access_token(self, user: UserRow, session_id: str, now: int) -> str:
        claims = {"iss": ISSUER, "sub": str(user.id), "acc": user.account, "sid": session_id,
                  "iat": now, "exp": now + self.access_ttl_s, "typ": "access"}
        return jwt.encode(claims, self.jwt_key, algorithm=_ALGORITHM)

    def read_access(self, token: str) -> dict[str, Any]:
        """Raises ApiError -1002 (401) for anything but a valid, unexpired access token."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self.jwt_key, algorithms=[_ALGORITHM], issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "sid"]},
            )
        except jwt.PyJWTError:
            raise _unauthorized("Access token invalid or expired.") from None
        if claims.get("typ") != "access":
            raise _unauthorized("Access token invalid or expired.")
        return claims


def digest(token: str) -> bytes:
    """Tokens and codes are random: SHA-256 is how they are stored and looked up."""
    return hashlib.sha256(token.encode()).digest()


def _unauthorized(msg: str) -> errors.ApiError:
    return errors.ApiError(-1002, msg, 401)


def _creds(request: Request) -> Credentials:
    return gateway(request.app).credentials


def _store(request: Request) -> UserStore:
    return gateway(request.app).users


def _accounts(request: Request) -> Accounts:
    return gateway(request.app).controls.account_cases


# --------------------------------------------------------------------------- 2FA
def totp_step(secret: str, code: str, now: float) -> int | None:
    """The time step whose code ``code`` is (now, or one step either side), or None."""
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, interval=TOTP_STEP_S)
    step = int(now // TOTP_STEP_S)
    for s in (step - 1, step, step + 1):
        if hmac.compare_digest(totp.generate_otp(s), code):
            return s
    return None


def _normal_recovery(code: str) -> str:
    return code.strip().lower().replace("-", "").replace(" ", "")


def new_recovery_codes() -> list[str]:
    out = []
    for _ in range(RECOVERY_CODES):
        raw = _stdlib_secrets.token_hex(5)
        out.append(f"{raw[:5]}-{raw[5:]}")
    return out


class SecondFactor(Enum):
    """What a presented 2FA code turned out to be."""

    OK = "ok"
    USED = "used"
    """A correct TOTP code whose time step was already used (to enable 2FA, to log in):
    each is good once, so the next one is needed."""
    INVALID = "invalid"


#: The answers to a refused code; a used one says so (the user typed the right code).
CODE_REFUSED = {SecondFactor.USED: "Two-factor code already used; wait for the next one.",
                SecondFactor.INVALID: "Two-factor code is not valid."}


async def check_second_factor(request: Request, user: UserRow, code: str) -> SecondFactor:
    """A TOTP code not used before, or an unused recovery code (used up now)."""
    if user.totp_secret_enc is None:
        return SecondFactor.INVALID
    store = _store(request)
    secret = gateway(request.app).keys.cipher.decrypt(user.totp_secret_enc)
    step = totp_step(secret, code.strip(), time.time())
    if step is not None:
        fresh = await store.accept_totp_step(user.id, step)
        return SecondFactor.OK if fresh else SecondFactor.USED
    normal = _normal_recovery(code)
    if len(normal) == 10 and await store.use_recovery_code(user.id, digest(normal)):
        return SecondFactor.OK
    return SecondFactor.INVALID


async def second_factor_ok(request: Request, user: UserRow, code: str) -> bool:
    """:func:`check_second_factor` is OK."""
    return await check_second_factor(request, user, code) is SecondFactor.OK


async def require_2fa(request: Request, user: UserRow, code: str | None) -> None:
    """For sensitive actions (API-key creation, withdrawals): nothing when the user has
    no 2FA; otherwise a valid TOTP or recovery code.

    Raises:
        ApiError: -1002 (401) code missing, wrong or already used.
    """
    if not user.totp_enabled:
        return
    if not code:
        raise _unauthorized("Two-factor code required.")
    outcome = await check_second_factor(request, user, code)
    if outcome is not SecondFactor.OK:
        raise _unauthorized(CODE_REFUSED[outcome])


async def require_2fa_for_account(request: Request, account: int, code: str | None) -> None:
    """:func:`require_2fa` for the user owning ``account`` (accounts without a user, made
    by an admin, have no 2FA)."""
    user = await _store(request).user_of_account(account)
    if user is not None:
        await require_2fa(request, user, code)


# --------------------------------------------------------------------------- sessions
@dataclass(frozen=True, slots=True)
class Session:
    user: UserRow
    session_id: str


def bearer_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None without that header, with
    another scheme or with no scheme at all. The scheme is case-insensitive (RFC 7235:
    ``bearer`` is ``Bearer``); a bare token is not taken for one."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


async def current_session(request: Request) -> Session:
    """FastAPI dependency: the user of a valid access token whose session is live.

    Raises:
        ApiError: -1002 (401).
    """
    token = bearer_token(request)
    if token is None:
        raise _unauthorized("Access token required.")
    claims = _creds(request).read_access(token)
    store = _store(request)
    try:
        uid = int(claims["sub"])
    except (TypeError, ValueError):
        raise _unauthorized("Access token invalid or expired.") from None
    sid = str(claims["sid"])
    if not await store.session_live(sid, uid):
        raise _unauthorized("Session ended.")
    user = await store.user_by_id(uid)
    if user is None:
        raise _unauthorized("Session ended.")
    return Session(user, sid)


async def _new_session(request: Request, user: UserRow) -> dict[str, Any]:
    creds = _creds(request)
    now = int(time.time())
    refresh = _stdlib_secrets.token_urlsafe(32)
    session_id = _stdlib_secrets.token_urlsafe(16)
    await _store(request).start_session(user.id, session_id, digest(refresh),
                                        (now + creds.refresh_ttl_s) * 1000)
    return {
        "accessToken": creds.access_token(user, session_id, now), "tokenType": "Bearer",
        "expiresIn": creds.access_ttl_s, "refreshToken": refresh,
        "refreshExpiresIn": creds.refresh_ttl_s,
    }


# --------------------------------------------------------------------------- auth routes
class SignupReq(BaseModel):
    email: str = Field(min_length=3, max_length=254, pattern=PLAIN_TEXT)
    password: str = Field(min_length=10, max_length=128)


class EmailReq(BaseModel):
    email: str = Field(min_length=3, max_length=254, pattern=PLAIN_TEXT)


class TokenReq(BaseModel):
    token: str = Field(min_length=1, max_length=256)


class LoginReq(BaseModel):
    email: str = Field(min_length=3, max_length=254, pattern=PLAIN_TEXT)
    password: str = Field(min_length=1, max_length=128)
    totpCode: str | None = Field(default=None, max_length=32,
                                 description="TOTP or recovery code, once 2FA is on.")


class RefreshReq(BaseModel):
    refreshToken: str = Field(min_length=1, max_length=256)


async def _send_verification(request: Request, user: UserRow) -> None:
    creds = _creds(request)
    token = _stdlib_secrets.token_urlsafe(32)
    expires_ms = int((time.time() + creds.email_ttl_s) * 1000)
    await _store(request).add_email_token(user.id, digest(token), expires_ms)
    await gateway(request.app).mailer.send(Mail(
        to=user.email, subject="Verify your tradeplane email",
        body=f"Your verification token: {token}\n"
             f"POST /api/v1/auth/verify-email with {{\"token\": \"{token}\"}}\n"
             f"It expires in {creds.email_ttl_s // 3600} hours.",
    ))


@router.post("/auth/signup", status_code=201)
async def signup(request: Request, body: SignupReq) -> dict[str, Any]:
    """Create a user and its trading account; a verification token goes by mail.

    The answer is the same whether or not the email already has an account (nobody
    learns which emails do, as with resend-verification): that account's owner is mailed
    instead, a notice or, if still unverified, a new verification token, and nothing
    about the account changes.
    """
    if not EMAIL_RE.fullmatch(body.email):
        raise errors.bad_param("email", body.email[:64])
    # Hashed in either case: the answer takes as long for a taken email.
    password_hash = await _creds(request).hash_password(body.password)
    store = _store(request)
    try:
        user = await store.create_user(body.email, password_hash)
    except EmailTaken:
        owner = await store.user_by_email(body.email)
        if owner is not None and not owner.email_verified:
            await _send_verification(request, owner)
        elif owner is not None:
            await gateway(request.app).mailer.send(Mail(
                to=owner.email, subject="Sign-up attempt with your tradeplane email",
                body="Someone (you?) tried to sign up with this email, which already has "
                     "an account. Nothing was changed. If it was you, log in instead.",
            ))
    else:
        await _send_verification(request, user)
    return {"email": body.email, "sent": True}


@router.post("/auth/verify-email")
async def verify_email(request: Request, body: TokenReq) -> dict[str, Any]:
    user_id = await _store(request).verify_email(digest(body.token))
    if user_id is None:
        raise errors.ApiError(-1100, "Verification token invalid, used or expired.")
    return {"emailVerified": True}


@router.post("/auth/resend-verification")
async def resend_verification(request: Request, body: EmailReq) -> dict[str, Any]:
    """Always the same answer (nobody learns which emails have accounts)."""
    user = await _store(request).user_by_email(body.email)
    if user is not None and not user.email_verified:
        await _send_verification(request, user)
    return {"sent": True}


def _login_limits(
    request: Request, email: str, ip: str
) -> tuple[RateLimitStore, list[tuple[RateLimitItemPerSecond, tuple[str, ...]]]] | None:
    """The rate-limit store and the failed-login counters of one attempt (None: rate
    limits are off): this account from this address, and this account from anywhere.
    Deliberately none per address alone: behind one NAT or proxy, someone else's
    failures must never lock out a correct login to another account."""
    limiter = gateway(request.app).limiter
    if isinstance(limiter, NoRateLimits):
        return None
    s = ctx(request).settings
    account = email.lower()
    pair = RateLimitItemPerSecond(s.login_max_failures, s.login_failure_window_s,
                                  namespace="loginfail")
    anywhere = RateLimitItemPerSecond(s.login_max_account_failures,
                                      s.login_failure_window_s, namespace="loginfail")
    return limiter.store, [(pair, ("pair", account, ip)), (anywhere, ("email", account))]


async def _login_throttled(request: Request, email: str, ip: str) -> bool:
    found = _login_limits(request, email, ip)
    if found is None:
        return False
    store, counters = found
    for item, ids in counters:
        if not await store.within(item, *ids):
            return True
    return False


async def _login_failed(request: Request, email: str, ip: str) -> None:
    found = _login_limits(request, email, ip)
    if found is not None:
        store, counters = found
        for item, ids in counters:
            await store.test_hit(item, *ids)


@router.post("/auth/login")
async def login(request: Request, body: LoginReq) -> dict[str, Any]:
    """Password (and 2FA code once enabled) for an access and a refresh token.

    Raises:
        ApiError: -1002 (401) wrong credentials, email not verified, 2FA code missing or
            wrong; -1003 (429) too many failed attempts on this account from this
            address (``login_max_failures``) or from anywhere
            (``login_max_account_failures``).
    """
    store = _store(request)
    ip = request_ip(request)
    agent = request.headers.get("user-agent", "")[:512]
    if await _login_throttled(request, body.email, ip):
        raise errors.ApiError(-1003, "Too many failed logins; try again later.", 429)
    user = await store.user_by_email(body.email)

    async def fail(reason: str, msg: str) -> errors.ApiError:
        await store.record_login(user.id if user else None, body.email, ip, agent, False,
                                 reason)
        await _login_failed(request, body.email, ip)
        return _unauthorized(msg)

    if not await _creds(request).check_password(user.password_hash if user else None,
                                                 body.password) or user is None:
        raise await fail("bad credentials", "Email or password is wrong.")
    if not user.email_verified:
        raise await fail("email not verified", "Email not verified.")
    if user.totp_enabled:
        if not body.totpCode:
            raise await fail("2fa missing", "Two-factor code required.")
        outcome = await check_second_factor(request, user, body.totpCode)
        if outcome is not SecondFactor.OK:
            raise await fail("2fa invalid", CODE_REFUSED[outcome])
    await store.record_login(user.id, body.email, ip, agent, True, "ok")
    return await _new_session(request, user)


@router.post("/auth/refresh")
async def refresh(request: Request, body: RefreshReq) -> dict[str, Any]:
    """A new access token and a new refresh token for a refresh token, once. A refresh
    token presented a second time ends its session (both copies stop working).

    Raises:
        ApiError: -1002 (401).
    """
    creds = _creds(request)
    store = _store(request)
    new = _stdlib_secrets.token_urlsafe(32)
    expires_ms = (int(time.time()) + creds.refresh_ttl_s) * 1000
    res = await store.rotate_refresh(digest(body.refreshToken), digest(new), expires_ms)
    if res.outcome is Refresh.REUSED:
        raise _unauthorized("Refresh token reused; the session has been revoked.")
    if res.outcome is not Refresh.OK:
        raise _unauthorized("Refresh token invalid or expired.")
    user = await store.user_by_id(res.user_id)
    assert user is not None
    now = int(time.time())
    return {"accessToken": creds.access_token(user, res.session_id, now),
            "tokenType": "Bearer", "expiresIn": creds.access_ttl_s, "refreshToken": new,
            "refreshExpiresIn": creds.refresh_ttl_s}


@router.post("/auth/logout")
async def logout(request: Request, s: Session = Depends(current_session)) -> dict[str, Any]:
    """End this session: its access and refresh tokens stop working now."""
    await _store(request).revoke_sessions(user_id=s.user.id, session_id=s.session_id,
                                          reason="logout")
    return {"loggedOut": True}


@router.post("/auth/logout-all")
async def logout_all(request: Request, s: Session = Depends(current_session)) -> dict[str, Any]:
    n = await _store(request).revoke_sessions(user_id=s.user.id, session_id=None,
                                              reason="logout everywhere")
    return {"loggedOut": True, "sessions": n}


# --------------------------------------------------------------------------- user routes
@router.get("/user/me")
async def me(request: Request, s: Session = Depends(current_session)) -> dict[str, Any]:
    doc = await _accounts(request).account(s.user.account)
    return {"userId": s.user.id, "email": s.user.email, "account": s.user.account,
            "emailVerified": s.user.email_verified, "twoFactor": s.user.totp_enabled,
            "frozen": doc["frozen"]}


@router.get("/user/login-history")
async def history(request: Request, limit: int = Query(default=50, ge=1, le=500),
                  s: Session = Depends(current_session)) -> list[dict[str, Any]]:
    return await _store(request).login_history(s.user.id, limit)


class CodeReq(BaseModel):
    code: str = Field(min_length=6, max_length=32)


@router.post("/user/2fa/setup")
async def totp_setup(request: Request, s: Session = Depends(current_session)) -> dict[str, Any]:
    """A new TOTP secret for the authenticator app (pending until enabled with a code)."""
    secret = pyotp.random_base32()
    enc = gateway(request.app).keys.cipher.encrypt(secret)
    if not await _store(request).set_totp_pending(s.user.id, enc):
        raise errors.ApiError(-1100, "Two-factor authentication is already enabled.")
    uri = pyotp.TOTP(secret, interval=TOTP_STEP_S).provisioning_uri(
        name=s.user.email, issuer_name=ISSUER)
    return {"secret": secret, "otpauthUri": uri}


@router.post("/user/2fa/enable")
async def totp_enable(request: Request, body: CodeReq,
                      s: Session = Depends(current_session)) -> dict[str, Any]:
    """Enable 2FA with a first code; answers the recovery codes, this once."""
    if s.user.totp_enabled or s.user.totp_secret_enc is None:
        raise errors.ApiError(-1100, "Set up two-factor authentication first.")
    secret = gateway(request.app).keys.cipher.decrypt(s.user.totp_secret_enc)
    step = totp_step(secret, body.code.strip(), time.time())
    codes = new_recovery_codes()
    if step is None or not await _store(request).enable_totp(
        s.user.id, step, [digest(_normal_recovery(c)) for c in codes]
    ):
        raise _unauthorized("Two-factor code is not valid.")
    await _user_audit(request, s.user, "user.2fa.enable", None, {"twoFactor": True})
    return {"twoFactor": True, "recoveryCodes": codes}


@router.post("/user/2fa/disable")
async def totp_disable(request: Request, body: CodeReq,
                       s: Session = Depends(current_session)) -> dict[str, Any]:
    if not s.user.totp_enabled:
        raise errors.ApiError(-1100, "Two-factor authentication is not enabled.")
    await require_2fa(request, s.user, body.code)
    await _store(request).disable_totp(s.user.id)
    await _user_audit(request, s.user, "user.2fa.disable", {"twoFactor": True},
                      {"twoFactor": False})
    return {"twoFactor": False}


class UserKeyReq(KeySpec):
    totpCode: str | None = Field(default=None, max_length=32)


@router.get("/user/api-keys")
async def my_keys(request: Request, s: Session = Depends(current_session)
                  ) -> list[dict[str, Any]]:
    keys = await _accounts(request).keys(s.user.account)
    return [apikeys.key_json(k) for k in keys if not k.revoked_ms]


@router.post("/user/api-keys")
async def create_my_key(request: Request, body: UserKeyReq,
                        s: Session = Depends(current_session)) -> dict[str, Any]:
    """A new API key for the user's account (verified email; the 2FA code once enabled).
    The HMAC secret is in this answer only."""
    if not s.user.email_verified:
        raise errors.ApiError(-1002, "Email not verified.", 401)
    await require_2fa(request, s.user, body.totpCode)
    try:
        rec, secret = await _accounts(request).create_own_key(
            _actor(request, s.user), s.user.account, apikeys.key_request(body))
    except (Invalid, NotFound) as exc:
        raise apikeys.refusal(exc) from None
    return apikeys.created_json(rec, secret)


@router.delete("/user/api-keys/{api_key}")
async def revoke_my_key(request: Request, api_key: str = FPath(pattern=KEY_ID),
                        s: Session = Depends(current_session)) -> dict[str, Any]:
    try:
        return await _accounts(request).revoke_own_key(_actor(request, s.user),
                                                       s.user.account, api_key)
    except NotFound:
        raise errors.ApiError(-2015, "No such live API key.", 404) from None


def _actor(request: Request, user: UserRow) -> Actor:
    return user_actor(user.id, request_ip(request))


async def _user_audit(request: Request, user: UserRow, action: str, before: Any,
                      after: Any) -> None:
    await _accounts(request).record(_actor(request, user), action, f"user:{user.id}",
                                    before, after)
