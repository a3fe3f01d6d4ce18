"""Users and their sessions: the typed rows and the ports the gateway's user endpoints
(``gateway/users.py``) work over. The tables are PostgreSQL's (``adapters/accounts_db.py``
implements :class:`UserStore`); the mail transport is ``adapters/mailer.py``.

Tokens, codes and recovery codes reach the store already hashed; what a user changes on
their own account that the audit log records (API keys, 2FA) goes through
``usecases.accounts.Accounts`` with :func:`~tradeplane.usecases.audit.user_actor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from tradeplane.domain.errors import Conflict


class EmailTaken(Conflict):
    """A user (or an account) of that email exists."""


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
