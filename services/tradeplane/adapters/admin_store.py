"""PostgreSQL behind the application layer's pair, account and user stores
(:mod:`tradeplane.usecases.pairs`, :mod:`tradeplane.usecases.accounts`,
:mod:`tradeplane.usecases.users`): one transaction
per use case, the audit record written inside it. The SQL itself is in ``accounts_db``
and ``db``; this module turns their results into the use cases' typed rows and errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

from tradeplane.adapters import accounts_db, db
from tradeplane.usecases.accounts import KeyRecord, KeyRow
from tradeplane.usecases.audit import AuditRecord
from tradeplane.usecases.errors import Conflict, NotFound
from tradeplane.usecases.pairs import KILL_SWITCH, KillSwitch, PairRow
from tradeplane.usecases.users import RefreshResult, UserRow


async def _audit(con: db.Conn, r: AuditRecord) -> None:
    await accounts_db.append_audit(con, accounts_db.AuditEntry(
        r.actor, r.role, r.action, r.target, r.before, r.after, r.ip))


class PgPairsTx:
    def __init__(self, con: db.Conn) -> None:
        self.con = con

    async def audit(self, record: AuditRecord) -> None:
        await _audit(self.con, record)

    async def pair(self, symbol: str) -> PairRow | None:
        doc = await accounts_db.pair_doc(self.con, symbol, lock=True)
        if doc is None:
            return None
        return PairRow(doc["symbol"], doc["trading"], doc["makerFeePpm"], doc["takerFeePpm"])

    async def set_trading(self, symbol: str, state: str) -> None:
        await db.set_pair_trading(self.con, symbol, state)

    async def set_fees(self, symbol: str, maker_ppm: int, taker_ppm: int) -> None:
        await accounts_db.set_pair_fees(self.con, symbol, maker_ppm, taker_ppm)

    async def trading_states(self) -> dict[str, str]:
        return await accounts_db.pair_states(self.con)

    async def kill_switch(self) -> KillSwitch | None:
        flag = await accounts_db.get_flag(self.con, KILL_SWITCH)
        if not flag or not flag.get("on"):
            return None
        return KillSwitch(str(flag.get("by", "")), str(flag.get("reason", "")),
                          {str(k): str(v) for k, v in dict(flag.get("pairs") or {}).items()})

    async def set_kill_switch(self, value: KillSwitch | None) -> None:
        await accounts_db.set_flag(self.con, KILL_SWITCH, None if value is None else value.doc())


class PgPairStore:
    def __init__(self, pool: db.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgPairsTx]:
        """Raises DatabaseUnavailable: no connection, or the commit failed."""
        try:
            async with self.pool.acquire() as con, con.transaction():
                yield PgPairsTx(con)
        except db.DRIVER_ERRORS as exc:
            raise db.DatabaseUnavailable(f"PostgreSQL: {exc}") from exc


class PgAccountsTx:
    def __init__(self, con: db.Conn) -> None:
        self.con = con

    async def audit(self, record: AuditRecord) -> None:
        await _audit(self.con, record)

    async def account_id(self, name: str) -> int | None:
        return await db.account_id(cast(db.Pool, self.con), name)

    async def create_account(self, name: str) -> int:
        return await db.create_account(cast(db.Pool, self.con), name)

    async def create_key(self, account: int, api_key: str, *, key_type: str,
                         secret_enc: bytes | None, public_key: bytes | None,
                         perms: Sequence[str], ip_allow: Sequence[str], expires_ms: int,
                         label: str) -> KeyRow:
        try:
            return await accounts_db.create_key(
                self.con, account, api_key, key_type=key_type, secret_enc=secret_enc,
                public_key=public_key, perms=perms, ip_allow=ip_allow, expires_ms=expires_ms,
                label=label)
        except db.UnknownAccount:
            raise NotFound(f"Unknown account {account}.") from None

    async def revoke_key(self, api_key: str, account: int | None = None) -> KeyRow | None:
        return await accounts_db.revoke_key(self.con, api_key, account)

    async def account_doc(self, account: int) -> dict[str, Any] | None:
        return await accounts_db.account_doc(self.con, account)

    async def set_frozen(self, account: int, reason: str | None) -> bool:
        return await accounts_db.set_frozen(self.con, account, reason)

    async def create_admin(self, name: str, role: str, token_hash: bytes) -> None:
        try:
            await accounts_db.create_admin(self.con, name, role, token_hash)
        except accounts_db.NameTaken:
            raise Conflict("An admin of that name exists.") from None

    async def credit(self, account: int, asset: str, units: int, ref: str) -> bool:
        try:
            return await db.credit_in(self.con, account, asset, units, ref)
        except db.UnknownAccount:
            raise NotFound(f"Unknown account {account}.") from None


class PgAccountStore:
    """``usecases.accounts.AccountStore``: transactions, and reads outside any."""

    def __init__(self, pool: db.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgAccountsTx]:
        """Raises DatabaseUnavailable: no connection, or the commit failed."""
        try:
            async with self.pool.acquire() as con, con.transaction():
                yield PgAccountsTx(con)
        except db.DRIVER_ERRORS as exc:
            raise db.DatabaseUnavailable(f"PostgreSQL: {exc}") from exc

    async def account(self, account: int) -> dict[str, Any] | None:
        return await accounts_db.account_doc(self.pool, account)

    async def account_of_email(self, email: str) -> int | None:
        return await accounts_db.account_of_email(self.pool, email)

    async def keys(self, account: int) -> list[KeyRecord]:
        return await accounts_db.list_keys(self.pool, account)

    async def live_key(self, api_key: str) -> KeyRecord | None:
        return await accounts_db.get_key(self.pool, api_key)

    async def admin_of_token(self, token_hash: bytes) -> tuple[str, str] | None:
        return await accounts_db.admin_by_token(self.pool, token_hash)

    async def audit_entries(self, *, from_id: int, limit: int, action: str | None,
                            actor: str | None, target: str | None) -> list[dict[str, Any]]:
        return await accounts_db.audit_entries(self.pool, from_id=from_id, limit=limit,
                                               action=action, actor=actor, target=target)



class PgUserStore:
    """``usecases.users.UserStore``."""

    def __init__(self, pool: db.Pool) -> None:
        self.pool = pool

    async def create_user(self, email: str, password_hash: str) -> UserRow:
        return await accounts_db.create_user(self.pool, email, password_hash)

    async def user_by_email(self, email: str) -> UserRow | None:
        return await accounts_db.user_by_email(self.pool, email)

    async def user_by_id(self, user_id: int) -> UserRow | None:
        return await accounts_db.user_by_id(self.pool, user_id)

    async def user_of_account(self, account: int) -> UserRow | None:
        return await accounts_db.user_of_account(self.pool, account)

    async def add_email_token(self, user_id: int, token_hash: bytes, expires_ms: int) -> None:
        await accounts_db.add_email_token(self.pool, user_id, token_hash, expires_ms)

    async def verify_email(self, token_hash: bytes) -> int | None:
        return await accounts_db.verify_email(self.pool, token_hash)

    async def start_session(self, user_id: int, session_id: str, token_hash: bytes,
                            expires_ms: int) -> None:
        await accounts_db.start_session(self.pool, user_id, session_id, token_hash,
                                        expires_ms)

    async def rotate_refresh(self, token_hash: bytes, new_hash: bytes,
                             expires_ms: int) -> RefreshResult:
        return await accounts_db.rotate_refresh(self.pool, token_hash, new_hash, expires_ms)

    async def revoke_sessions(self, *, user_id: int, session_id: str | None,
                              reason: str) -> int:
        return await accounts_db.revoke_sessions(self.pool, user_id=user_id,
                                                 session_id=session_id, reason=reason)

    async def session_live(self, session_id: str, user_id: int) -> bool:
        return await accounts_db.session_live(self.pool, session_id, user_id)

    async def set_totp_pending(self, user_id: int, secret_enc: bytes) -> bool:
        return await accounts_db.set_totp_pending(self.pool, user_id, secret_enc)

    async def accept_totp_step(self, user_id: int, step: int) -> bool:
        return await accounts_db.accept_totp_step(self.pool, user_id, step)

    async def enable_totp(self, user_id: int, step: int,
                          code_hashes: Sequence[bytes]) -> bool:
        return await accounts_db.enable_totp(self.pool, user_id, step, code_hashes)

    async def disable_totp(self, user_id: int) -> None:
        await accounts_db.disable_totp(self.pool, user_id)

    async def use_recovery_code(self, user_id: int, code_hash: bytes) -> bool:
        return await accounts_db.use_recovery_code(self.pool, user_id, code_hash)

    async def record_login(self, user_id: int | None, email: str, ip: str, user_agent: str,
                           success: bool, reason: str) -> None:
        await accounts_db.record_login(self.pool, user_id, email, ip, user_agent, success,
                                       reason)

    async def login_history(self, user_id: int, limit: int) -> list[dict[str, Any]]:
        return await accounts_db.login_history(self.pool, user_id, limit)
