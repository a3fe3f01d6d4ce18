"""The users use case's ports in memory: :class:`MemoryUserStore` (``UserStore``),
:class:`RecordingMailer` (``Mailer``), :class:`PlainPasswords` (``Passwords``),
:class:`PlainTokens` (``Tokens``) and :class:`CountingThrottle` (``LoginThrottle``), for
unit tests of ``usecases.users.Users`` without PostgreSQL, Redis or argon2 (the real
adapters stay in tests/integration/test_users.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tradeplane.usecases.users import (
    EmailTaken,
    LoginThrottle,
    Mail,
    Mailer,
    Passwords,
    Refresh,
    RefreshResult,
    Tokens,
    UserRow,
    UserStore,
)


@dataclass
class _Refresh:
    session_id: str
    expires_ms: int
    used: bool = False


@dataclass
class MemoryUserStore:
    """``clock_ms`` is the store's own "now" (a database's ``now()``)."""

    clock_ms: int = 1_700_000_000_000
    users: dict[int, UserRow] = field(default_factory=dict)
    email_tokens: dict[bytes, tuple[int, int, bool]] = field(default_factory=dict)
    sessions: dict[str, tuple[int, bool]] = field(default_factory=dict)  # id -> user, live
    refresh_tokens: dict[bytes, _Refresh] = field(default_factory=dict)
    recovery: dict[tuple[int, bytes], bool] = field(default_factory=dict)  # -> used
    logins: list[tuple[int | None, str, str, bool, str]] = field(default_factory=list)

    async def create_user(self, email: str, password_hash: str) -> UserRow:
        if any(u.email.lower() == email.lower() for u in self.users.values()):
            raise EmailTaken(email)
        uid = len(self.users) + 1
        self.users[uid] = UserRow(uid, email, password_hash, 1000 + uid, False, None, False,
                                  0)
        return self.users[uid]

    async def user_by_email(self, email: str) -> UserRow | None:
        return next((u for u in self.users.values() if u.email.lower() == email.lower()),
                    None)

    async def user_by_id(self, user_id: int) -> UserRow | None:
        return self.users.get(user_id)

    async def user_of_account(self, account: int) -> UserRow | None:
        return next((u for u in self.users.values() if u.account == account), None)

    async def add_email_token(self, user_id: int, token_hash: bytes, expires_ms: int) -> None:
        self.email_tokens[token_hash] = (user_id, expires_ms, False)

    async def verify_email(self, token_hash: bytes) -> int | None:
        found = self.email_tokens.get(token_hash)
        if found is None or found[2] or found[1] <= self.clock_ms:
            return None
        self.email_tokens[token_hash] = (found[0], found[1], True)
        self.users[found[0]] = replace(self.users[found[0]], email_verified=True)
        return found[0]

    async def start_session(self, user_id: int, session_id: str, token_hash: bytes,
                            expires_ms: int) -> None:
        self.sessions[session_id] = (user_id, True)
        self.refresh_tokens[token_hash] = _Refresh(session_id, expires_ms)

    async def rotate_refresh(self, token_hash: bytes, new_hash: bytes,
                             expires_ms: int) -> RefreshResult:
        token = self.refresh_tokens.get(token_hash)
        if token is None:
            return RefreshResult(Refresh.UNKNOWN)
        uid, live = self.sessions[token.session_id]
        if not live:
            return RefreshResult(Refresh.REVOKED, uid, token.session_id)
        if token.used:
            self.sessions[token.session_id] = (uid, False)
            return RefreshResult(Refresh.REUSED, uid, token.session_id)
        if token.expires_ms <= self.clock_ms:
            return RefreshResult(Refresh.EXPIRED, uid, token.session_id)
        token.used = True
        self.refresh_tokens[new_hash] = _Refresh(token.session_id, expires_ms)
        return RefreshResult(Refresh.OK, uid, token.session_id)

    async def revoke_sessions(self, *, user_id: int, session_id: str | None,
                              reason: str) -> int:
        ended = [sid for sid, (uid, live) in self.sessions.items()
                 if uid == user_id and live and session_id in (None, sid)]
        for sid in ended:
            self.sessions[sid] = (user_id, False)
        return len(ended)

    async def session_live(self, session_id: str, user_id: int) -> bool:
        return self.sessions.get(session_id) == (user_id, True)

    async def set_totp_pending(self, user_id: int, secret_enc: bytes) -> bool:
        user = self.users[user_id]
        if user.totp_enabled:
            return False
        self.users[user_id] = replace(user, totp_secret_enc=secret_enc, totp_last_step=0)
        return True

    async def accept_totp_step(self, user_id: int, step: int) -> bool:
        user = self.users[user_id]
        if user.totp_last_step >= step:
            return False
        self.users[user_id] = replace(user, totp_last_step=step)
        return True

    async def enable_totp(self, user_id: int, step: int,
                          code_hashes: Sequence[bytes]) -> bool:
        user = self.users[user_id]
        if user.totp_enabled or user.totp_secret_enc is None or user.totp_last_step >= step:
            return False
        self.users[user_id] = replace(user, totp_enabled=True, totp_last_step=step)
        self.recovery = {k: v for k, v in self.recovery.items() if k[0] != user_id}
        self.recovery.update({(user_id, h): False for h in code_hashes})
        return True

    async def disable_totp(self, user_id: int) -> None:
        self.users[user_id] = replace(self.users[user_id], totp_enabled=False,
                                      totp_secret_enc=None)
        self.recovery = {k: v for k, v in self.recovery.items() if k[0] != user_id}

    async def use_recovery_code(self, user_id: int, code_hash: bytes) -> bool:
        if self.recovery.get((user_id, code_hash)) is not False:
            return False
        self.recovery[(user_id, code_hash)] = True
        return True

    async def record_login(self, user_id: int | None, email: str, ip: str, user_agent: str,
                           success: bool, reason: str) -> None:
        self.logins.append((user_id, email, ip, success, reason))

    async def login_history(self, user_id: int, limit: int) -> list[dict[str, Any]]:
        mine = [e for e in reversed(self.logins) if e[0] == user_id]
        return [{"ip": ip, "success": ok, "reason": why} for _, _, ip, ok, why in mine][:limit]


@dataclass
class RecordingMailer:
    sent: list[Mail] = field(default_factory=list)

    async def send(self, mail: Mail) -> None:
        self.sent.append(mail)


class PlainPasswords:
    """Not a hash at all: enough to tell a right password from a wrong one."""

    async def hash_password(self, password: str) -> str:
        return "plain:" + password

    async def check_password(self, stored: str | None, password: str) -> bool:
        return stored is not None and stored == "plain:" + password


@dataclass
class PlainTokens:
    access_ttl_s: int = 900
    refresh_ttl_s: int = 86_400
    email_ttl_s: int = 86_400

    def access_token(self, user: UserRow, session_id: str, now: int) -> str:
        return f"access:{user.id}:{session_id}:{now}"


@dataclass
class CountingThrottle:
    """Throttles an (email, address) after ``limit`` failures."""

    limit: int = 3
    failures: dict[tuple[str, str], int] = field(default_factory=dict)

    async def throttled(self, email: str, ip: str) -> bool:
        return self.failures.get((email.lower(), ip), 0) >= self.limit

    async def failed(self, email: str, ip: str) -> None:
        key = (email.lower(), ip)
        self.failures[key] = self.failures.get(key, 0) + 1


def _fits(store: MemoryUserStore, mailer: RecordingMailer, passwords: PlainPasswords,
          tokens: PlainTokens, throttle: CountingThrottle) -> None:
    """Where mypy, run over this file, checks that the stand-ins implement the ports."""
    _: tuple[UserStore, Mailer, Passwords, Tokens, LoginThrottle] = (
        store, mailer, passwords, tokens, throttle)
