"""Users and their sessions, written once over ports: sign-up with email verification,
login (password, then the second factor once enabled, failed attempts throttled), refresh
tokens rotated once each, logout, TOTP 2FA with recovery codes. The gateway's user
endpoints (``gateway/users.py``) parse, call :class:`Users` and answer.

The tables are PostgreSQL's (``adapters/admin_store.PgUserStore`` implements
:class:`UserStore`), the mail transport is ``adapters/mailer.py``; password hashing and
token signing (:class:`Passwords`, :class:`Tokens`) and the failed-login counters
(:class:`LoginThrottle`) are the gateway's. Tokens, codes and recovery codes reach the
store hashed (:func:`digest`); what a user changes on their own account that the audit log
records (API keys, 2FA) goes through ``usecases.accounts.Accounts`` as
:func:`~tradeplane.usecases.audit.user_actor`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as _stdlib_secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Protocol

import pyotp

from tradeplane.usecases.accounts import Accounts, Cipher
from tradeplane.usecases.audit import Actor
from tradeplane.usecases.errors import Conflict, Invalid, UseCaseError

ISSUER = "tradeplane"
TOTP_STEP_S = 30
RECOVERY_CODES = 10


class EmailTaken(Conflict):
    """A user (or an account) of that email exists."""


class Unauthenticated(UseCaseError):
    """Credentials, a token or a second factor were refused (the message says which, as
    the client is told)."""


class TooManyAttempts(UseCaseError):
    """Too many failed logins on this account (from this address, or from anywhere)."""


# --------------------------------------------------------------------------- typed rows
@dataclass(frozen=True, slots=True)
class UserRow:
    id: int
    email: str
    password_hash: str
    account: int
    email_verified: bool
    totp_secret_enc: bytes | None
    totp_enabled: bool
    totp_last_step: int


class Refresh(StrEnum):
    OK = "ok"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"  # the session was ended (logout, reuse, admin)
    REUSED = "reused"  # a used token again: the session is revoked now


@dataclass(frozen=True, slots=True)
class RefreshResult:
    outcome: Refresh
    user_id: int = 0
    session_id: str = ""


@dataclass(frozen=True, slots=True)
class Mail:
    to: str
    subject: str
    body: str


# --------------------------------------------------------------------------- ports
class Mailer(Protocol):
    async def send(self, mail: Mail) -> None:
        """Raises Unavailable: the transport did not take the message."""
        ...


class UserStore(Protocol):
    """Users, email tokens, sessions and refresh tokens, TOTP and recovery codes, the
    login history. Every method raises ``Unavailable`` when the store does not answer."""

    async def create_user(self, email: str, password_hash: str) -> UserRow:
        """A user and the trading account it owns, together.

        Raises:
            EmailTaken: a user (or an account) of that email exists.
        """
        ...

    async def user_by_email(self, email: str) -> UserRow | None: ...

    async def user_by_id(self, user_id: int) -> UserRow | None: ...

    async def user_of_account(self, account: int) -> UserRow | None: ...

    async def add_email_token(self, user_id: int, token_hash: bytes, expires_ms: int) -> None:
        ...

    async def verify_email(self, token_hash: bytes) -> int | None:
        """Use a live verification token once; its user, now verified."""
        ...

    async def start_session(self, user_id: int, session_id: str, token_hash: bytes,
                            expires_ms: int) -> None: ...

    async def rotate_refresh(self, token_hash: bytes, new_hash: bytes,
                             expires_ms: int) -> RefreshResult:
        """Trade a refresh token for a new one of the same session, once; a used one
        revokes the session."""
        ...

    async def revoke_sessions(self, *, user_id: int, session_id: str | None,
                              reason: str) -> int:
        """End one session of the user (or all, ``session_id`` None); how many."""
        ...

    async def session_live(self, session_id: str, user_id: int) -> bool: ...

    async def set_totp_pending(self, user_id: int, secret_enc: bytes) -> bool:
        """False when 2FA is already on."""
        ...

    async def accept_totp_step(self, user_id: int, step: int) -> bool:
        """Mark the time step used; False when it (or a later one) already was."""
        ...

    async def enable_totp(self, user_id: int, step: int,
                          code_hashes: Sequence[bytes]) -> bool: ...

    async def disable_totp(self, user_id: int) -> None: ...

    async def use_recovery_code(self, user_id: int, code_hash: bytes) -> bool: ...

    async def record_login(self, user_id: int | None, email: str, ip: str, user_agent: str,
                           success: bool, reason: str) -> None: ...

    async def login_history(self, user_id: int, limit: int) -> list[dict[str, Any]]: ...


class Passwords(Protocol):
    """Password hashing (argon2id, slow on purpose: off the event loop)."""

    async def hash_password(self, password: str) -> str: ...

    async def check_password(self, stored: str | None, password: str) -> bool:
        """Constant work whether or not the user exists (``stored`` None)."""
        ...


class Tokens(Protocol):
    """Signed access tokens, and how long tokens live (seconds)."""

    access_ttl_s: int
    refresh_ttl_s: int
    email_ttl_s: int

    def access_token(self, user: UserRow, session_id: str, now: int) -> str: ...


class LoginThrottle(Protocol):
    """The failed-login counters of one account from one address and from anywhere
    (never per address alone: behind one NAT, someone else's failures must not lock out
    another account)."""

    async def throttled(self, email: str, ip: str) -> bool: ...

    async def failed(self, email: str, ip: str) -> None: ...


# --------------------------------------------------------------------------- helpers
def digest(token: str) -> bytes:
    """Tokens and codes are random: SHA-256 is how they are stored and looked up."""
    return hashlib.sha256(token.encode()).digest()


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


@dataclass(frozen=True, slots=True)
class Issued:
    """A session's tokens, as a login or a refresh hands them out."""

    access_token: str
    access_ttl_s: int
    refresh_token: str
    refresh_ttl_s: int


@dataclass(frozen=True, slots=True)
class TotpSetup:
    secret: str
    uri: str


# --------------------------------------------------------------------------- use cases
class Users:
    """``clock`` gives seconds since the epoch."""

    def __init__(self, store: UserStore, mailer: Mailer, cipher: Cipher,
                 passwords: Passwords, tokens: Tokens, throttle: LoginThrottle,
                 accounts: Accounts, clock: Callable[[], float]) -> None:
        self.store = store
        self.mailer = mailer
        self.cipher = cipher
        self.passwords = passwords
        self.tokens = tokens
        self.throttle = throttle
        self.accounts = accounts
        self.clock = clock

    # ------------------------------------------------------------------ sign-up
    async def signup(self, email: str, password: str) -> None:
        """Create a user and its trading account; a verification token goes by mail.
        When the email already has an account, its owner is mailed instead (a notice, or
        a new token if still unverified) and nothing changes: the caller answers the
        same either way.

        Raises:
            Unavailable: the mail was not taken.
        """
        # Hashed in either case: the answer takes as long for a taken email.
        password_hash = await self.passwords.hash_password(password)
        try:
            user = await self.store.create_user(email, password_hash)
        except EmailTaken:
            owner = await self.store.user_by_email(email)
            if owner is not None and not owner.email_verified:
                await self._send_verification(owner)
            elif owner is not None:
                await self.mailer.send(Mail(
                    to=owner.email, subject="Sign-up attempt with your tradeplane email",
                    body="Someone (you?) tried to sign up with this email, which already "
                         "has an account. Nothing was changed. If it was you, log in "
                         "instead.",
                ))
        else:
            await self._send_verification(user)

    async def _send_verification(self, user: UserRow) -> None:
        token = _stdlib_secrets.token_urlsafe(32)
        ttl = self.tokens.email_ttl_s
        await self.store.add_email_token(user.id, digest(token),
                                         int((self.clock() + ttl) * 1000))
        await self.mailer.send(Mail(
            to=user.email, subject="Verify your tradeplane email",
            body=f"Your verification token: {token}\n"
                 f"POST /api/v1/auth/verify-email with {{\"token\": \"{token}\"}}\n"
                 f"It expires in {ttl // 3600} hours.",
        ))

    async def verify_email(self, token: str) -> None:
        """Raises Invalid: the token is unknown, used or expired."""
        if await self.store.verify_email(digest(token)) is None:
            raise Invalid("Verification token invalid, used or expired.")

    async def resend_verification(self, email: str) -> None:
        """A new token to an unverified user; nothing otherwise (nobody learns which
        emails have accounts)."""
        user = await self.store.user_by_email(email)
        if user is not None and not user.email_verified:
            await self._send_verification(user)

    # ------------------------------------------------------------------ sessions
    async def login(self, email: str, password: str, code: str | None, ip: str,
                    agent: str) -> Issued:
        """Password (and the second factor once enabled) for a new session. Every
        attempt is in the login history; a failed one counts towards the throttle.

        Raises:
            TooManyAttempts: throttled. Unauthenticated: wrong credentials, email not
                verified, second factor missing or refused.
        """
        if await self.throttle.throttled(email, ip):
            raise TooManyAttempts("Too many failed logins; try again later.")
        user = await self.store.user_by_email(email)

        async def fail(reason: str, msg: str) -> Unauthenticated:
            await self.store.record_login(user.id if user else None, email, ip, agent,
                                          False, reason)
            await self.throttle.failed(email, ip)
            return Unauthenticated(msg)

        if not await self.passwords.check_password(user.password_hash if user else None,
                                                   password) or user is None:
            raise await fail("bad credentials", "Email or password is wrong.")
        if not user.email_verified:
            raise await fail("email not verified", "Email not verified.")
        if user.totp_enabled:
            if not code:
                raise await fail("2fa missing", "Two-factor code required.")
            outcome = await self.check_second_factor(user, code)
            if outcome is not SecondFactor.OK:
                raise await fail("2fa invalid", CODE_REFUSED[outcome])
        await self.store.record_login(user.id, email, ip, agent, True, "ok")
        return await self._new_session(user)

    async def _new_session(self, user: UserRow) -> Issued:
        now = int(self.clock())
        refresh = _stdlib_secrets.token_urlsafe(32)
        session_id = _stdlib_secrets.token_urlsafe(16)
        await self.store.start_session(user.id, session_id, digest(refresh),
                                       (now + self.tokens.refresh_ttl_s) * 1000)
        return Issued(self.tokens.access_token(user, session_id, now),
                      self.tokens.access_ttl_s, refresh, self.tokens.refresh_ttl_s)

    async def refresh(self, refresh_token: str) -> Issued:
        """New tokens of the same session for a refresh token, once; a token presented a
        second time ends its session (both copies stop working).

        Raises:
            Unauthenticated: reused, unknown, expired or of an ended session.
        """
        new = _stdlib_secrets.token_urlsafe(32)
        expires_ms = (int(self.clock()) + self.tokens.refresh_ttl_s) * 1000
        res = await self.store.rotate_refresh(digest(refresh_token), digest(new),
                                              expires_ms)
        if res.outcome is Refresh.REUSED:
            raise Unauthenticated("Refresh token reused; the session has been revoked.")
        if res.outcome is not Refresh.OK:
            raise Unauthenticated("Refresh token invalid or expired.")
        user = await self.store.user_by_id(res.user_id)
        if user is None:
            raise Unauthenticated("Refresh token invalid or expired.")
        now = int(self.clock())
        return Issued(self.tokens.access_token(user, res.session_id, now),
                      self.tokens.access_ttl_s, new, self.tokens.refresh_ttl_s)

    async def session_user(self, session_id: str, user_id: int) -> UserRow:
        """The user of a live session.

        Raises:
            Unauthenticated: the session ended (or its user is gone).
        """
        if not await self.store.session_live(session_id, user_id):
            raise Unauthenticated("Session ended.")
        user = await self.store.user_by_id(user_id)
        if user is None:
            raise Unauthenticated("Session ended.")
        return user

    async def logout(self, user: UserRow, session_id: str | None) -> int:
        """End one session (or every one, ``session_id`` None); how many ended."""
        return await self.store.revoke_sessions(
            user_id=user.id, session_id=session_id,
            reason="logout" if session_id is not None else "logout everywhere")

    async def login_history(self, user: UserRow, limit: int) -> list[dict[str, Any]]:
        return await self.store.login_history(user.id, limit)

    # ------------------------------------------------------------------ 2FA
    async def check_second_factor(self, user: UserRow, code: str) -> SecondFactor:
        """A TOTP code not used before, or an unused recovery code (used up now)."""
        if user.totp_secret_enc is None:
            return SecondFactor.INVALID
        secret = self.cipher.decrypt(user.totp_secret_enc)
        step = totp_step(secret, code.strip(), self.clock())
        if step is not None:
            fresh = await self.store.accept_totp_step(user.id, step)
            return SecondFactor.OK if fresh else SecondFactor.USED
        normal = _normal_recovery(code)
        if len(normal) == 10 and await self.store.use_recovery_code(user.id, digest(normal)):
            return SecondFactor.OK
        return SecondFactor.INVALID

    async def require_2fa(self, user: UserRow, code: str | None) -> None:
        """For sensitive actions (API-key creation, withdrawals): nothing when the user
        has no 2FA; otherwise a valid TOTP or recovery code.

        Raises:
            Unauthenticated: the code is missing, wrong or already used.
        """
        if not user.totp_enabled:
            return
        if not code:
            raise Unauthenticated("Two-factor code required.")
        outcome = await self.check_second_factor(user, code)
        if outcome is not SecondFactor.OK:
            raise Unauthenticated(CODE_REFUSED[outcome])

    async def require_2fa_for_account(self, account: int, code: str | None) -> None:
        """:meth:`require_2fa` for the user owning ``account`` (accounts without a user,
        made by an admin, have no 2FA)."""
        user = await self.store.user_of_account(account)
        if user is not None:
            await self.require_2fa(user, code)

    async def totp_setup(self, user: UserRow) -> TotpSetup:
        """A new TOTP secret for the authenticator app, pending until enabled.

        Raises:
            Invalid: 2FA is already enabled.
        """
        secret = pyotp.random_base32()
        if not await self.store.set_totp_pending(user.id, self.cipher.encrypt(secret)):
            raise Invalid("Two-factor authentication is already enabled.")
        uri = pyotp.TOTP(secret, interval=TOTP_STEP_S).provisioning_uri(
            name=user.email, issuer_name=ISSUER)
        return TotpSetup(secret, uri)

    async def totp_enable(self, actor: Actor, user: UserRow, code: str) -> list[str]:
        """Enable 2FA with a first code; the recovery codes, shown this once. Recorded.

        Raises:
            Invalid: not set up, or already enabled. Unauthenticated: the code is wrong.
        """
        if user.totp_enabled or user.totp_secret_enc is None:
            raise Invalid("Set up two-factor authentication first.")
        secret = self.cipher.decrypt(user.totp_secret_enc)
        step = totp_step(secret, code.strip(), self.clock())
        codes = new_recovery_codes()
        if step is None or not await self.store.enable_totp(
            user.id, step, [digest(_normal_recovery(c)) for c in codes]
        ):
            raise Unauthenticated("Two-factor code is not valid.")
        await self.accounts.record(actor, "user.2fa.enable", f"user:{user.id}", None,
                                   {"twoFactor": True})
        return codes

    async def totp_disable(self, actor: Actor, user: UserRow, code: str) -> None:
        """Turn 2FA off with a valid code. Recorded.

        Raises:
            Invalid: 2FA is not enabled. Unauthenticated: the code is refused.
        """
        if not user.totp_enabled:
            raise Invalid("Two-factor authentication is not enabled.")
        await self.require_2fa(user, code)
        await self.store.disable_totp(user.id)
        await self.accounts.record(actor, "user.2fa.disable", f"user:{user.id}",
                                   {"twoFactor": True}, {"twoFactor": False})
