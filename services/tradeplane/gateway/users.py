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

These routes parse, call the users use case (``usecases/users.py``, ``Gateway.users``)
and answer; a user's own API keys are the accounts use case's (``usecases/accounts.py``),
recorded as ``user:<id>``. This module keeps the edge: reading the bearer token, password
hashing and token signing (:class:`Credentials`, the use case's ``Passwords`` and
``Tokens``) and the failed-login counters over the rate-limit store (:class:`LoginLimits`).
"""

from __future__ import annotations

import asyncio
import secrets as _stdlib_secrets
from dataclasses import dataclass
from typing import Any

import jwt
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
from tradeplane.gateway.context import gateway
from tradeplane.gateway.inputs import EMAIL_RE, KEY_ID, PLAIN_TEXT
from tradeplane.gateway.ratelimit import RateLimitStore
from tradeplane.usecases.accounts import Accounts
from tradeplane.usecases.audit import Actor, user_actor
from tradeplane.usecases.errors import Invalid, NotFound, UseCaseError
from tradeplane.usecases.users import (
    ISSUER,
    Issued,
    TooManyAttempts,
    Unauthenticated,
    UserRow,
    Users,
)

router = APIRouter(prefix="/api/v1", tags=["users"])

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


class LoginLimits:
    """The users use case's ``LoginThrottle`` over the rate-limit store: failed logins
    of this account from this address (``login_max_failures``) and of this account from
    anywhere (``login_max_account_failures``) per ``login_failure_window_s``. Deliberately
    none per address alone: behind one NAT or proxy, someone else's failures must never
    lock out a correct login to another account. ``store`` None: rate limits are off, no
    login is throttled."""

    def __init__(self, store: RateLimitStore | None, s: Settings) -> None:
        self.store = store
        self.pair = RateLimitItemPerSecond(s.login_max_failures, s.login_failure_window_s,
                                           namespace="loginfail")
        self.anywhere = RateLimitItemPerSecond(s.login_max_account_failures,
                                               s.login_failure_window_s,
                                               namespace="loginfail")

    def _counters(self, email: str, ip: str
                  ) -> list[tuple[RateLimitItemPerSecond, tuple[str, ...]]]:
        account = email.lower()
        return [(self.pair, ("pair", account, ip)), (self.anywhere, ("email", account))]

    async def throttled(self, email: str, ip: str) -> bool:
        if self.store is None:
            return False
        for item, ids in self._counters(email, ip):
            if not await self.store.within(item, *ids):
                return True
        return False

    async def failed(self, email: str, ip: str) -> None:
        if self.store is not None:
            for item, ids in self._counters(email, ip):
                await self.store.test_hit(item, *ids)


def _unauthorized(msg: str) -> errors.ApiError:
    return errors.ApiError(-1002, msg, 401)


def refused(exc: UseCaseError) -> errors.ApiError:
    """A refusal of the users use case as the API answers it: -1002 (401) for refused
    credentials, tokens and codes, -1003 (429) throttled, -1100 otherwise."""
    if isinstance(exc, Unauthenticated):
        return _unauthorized(str(exc))
    if isinstance(exc, TooManyAttempts):
        return errors.ApiError(-1003, str(exc), 429)
    return errors.ApiError(-1100, str(exc))


def _creds(request: Request) -> Credentials:
    return gateway(request.app).credentials


def _users(request: Request) -> Users:
    return gateway(request.app).users


def _accounts(request: Request) -> Accounts:
    return gateway(request.app).controls.account_cases


def _actor(request: Request, user: UserRow) -> Actor:
    return user_actor(user.id, request_ip(request))


def _tokens(issued: Issued) -> dict[str, Any]:
    return {"accessToken": issued.access_token, "tokenType": "Bearer",
            "expiresIn": issued.access_ttl_s, "refreshToken": issued.refresh_token,
            "refreshExpiresIn": issued.refresh_ttl_s}


# --------------------------------------------------------------------------- 2FA
async def require_2fa(request: Request, user: UserRow, code: str | None) -> None:
    """For sensitive actions (API-key creation, withdrawals): nothing when the user has
    no 2FA; otherwise a valid TOTP or recovery code.

    Raises:
        ApiError: -1002 (401) code missing, wrong or already used.
    """
    try:
        await _users(request).require_2fa(user, code)
    except Unauthenticated as exc:
        raise refused(exc) from None


async def require_2fa_for_account(request: Request, account: int, code: str | None) -> None:
    """:func:`require_2fa` for the user owning ``account`` (accounts without a user, made
    by an admin, have no 2FA)."""
    try:
        await _users(request).require_2fa_for_account(account, code)
    except Unauthenticated as exc:
        raise refused(exc) from None


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
    try:
        uid = int(claims["sub"])
    except (TypeError, ValueError):
        raise _unauthorized("Access token invalid or expired.") from None
    sid = str(claims["sid"])
    try:
        user = await _users(request).session_user(sid, uid)
    except Unauthenticated as exc:
        raise refused(exc) from None
    return Session(user, sid)


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
    await _users(request).signup(body.email, body.password)
    return {"email": body.email, "sent": True}


@router.post("/auth/verify-email")
async def verify_email(request: Request, body: TokenReq) -> dict[str, Any]:
    try:
        await _users(request).verify_email(body.token)
    except Invalid as exc:
        raise refused(exc) from None
    return {"emailVerified": True}


@router.post("/auth/resend-verification")
async def resend_verification(request: Request, body: EmailReq) -> dict[str, Any]:
    """Always the same answer (nobody learns which emails have accounts)."""
    await _users(request).resend_verification(body.email)
    return {"sent": True}


@router.post("/auth/login")
async def login(request: Request, body: LoginReq) -> dict[str, Any]:
    """Password (and 2FA code once enabled) for an access and a refresh token.

    Raises:
        ApiError: -1002 (401) wrong credentials, email not verified, 2FA code missing or
            wrong; -1003 (429) too many failed attempts on this account from this
            address (``login_max_failures``) or from anywhere
            (``login_max_account_failures``).
    """
    agent = request.headers.get("user-agent", "")[:512]
    try:
        issued = await _users(request).login(body.email, body.password, body.totpCode,
                                             request_ip(request), agent)
    except (Unauthenticated, TooManyAttempts) as exc:
        raise refused(exc) from None
    return _tokens(issued)


@router.post("/auth/refresh")
async def refresh(request: Request, body: RefreshReq) -> dict[str, Any]:
    """A new access token and a new refresh token for a refresh token, once. A refresh
    token presented a second time ends its session (both copies stop working).

    Raises:
        ApiError: -1002 (401).
    """
    try:
        return _tokens(await _users(request).refresh(body.refreshToken))
    except Unauthenticated as exc:
        raise refused(exc) from None


@router.post("/auth/logout")
async def logout(request: Request, s: Session = Depends(current_session)) -> dict[str, Any]:
    """End this session: its access and refresh tokens stop working now."""
    await _users(request).logout(s.user, s.session_id)
    return {"loggedOut": True}


@router.post("/auth/logout-all")
async def logout_all(request: Request, s: Session = Depends(current_session)) -> dict[str, Any]:
    n = await _users(request).logout(s.user, None)
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
    return await _users(request).login_history(s.user, limit)


class CodeReq(BaseModel):
    code: str = Field(min_length=6, max_length=32)


@router.post("/user/2fa/setup")
async def totp_setup(request: Request, s: Session = Depends(current_session)) -> dict[str, Any]:
    """A new TOTP secret for the authenticator app (pending until enabled with a code)."""
    try:
        setup = await _users(request).totp_setup(s.user)
    except Invalid as exc:
        raise refused(exc) from None
    return {"secret": setup.secret, "otpauthUri": setup.uri}


@router.post("/user/2fa/enable")
async def totp_enable(request: Request, body: CodeReq,
                      s: Session = Depends(current_session)) -> dict[str, Any]:
    """Enable 2FA with a first code; answers the recovery codes, this once."""
    try:
        codes = await _users(request).totp_enable(_actor(request, s.user), s.user, body.code)
    except (Invalid, Unauthenticated) as exc:
        raise refused(exc) from None
    return {"twoFactor": True, "recoveryCodes": codes}


@router.post("/user/2fa/disable")
async def totp_disable(request: Request, body: CodeReq,
                       s: Session = Depends(current_session)) -> dict[str, Any]:
    try:
        await _users(request).totp_disable(_actor(request, s.user), s.user, body.code)
    except (Invalid, Unauthenticated) as exc:
        raise refused(exc) from None
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
