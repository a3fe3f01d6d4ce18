"""PostgreSQL adapter for accounts and security (migration 004): API keys with their
restrictions, users and sessions, 2FA, login history, frozen accounts, admin identities,
the append-only audit log and platform flags.

Tokens, codes and admin credentials arrive here already hashed: nothing in these tables
can be replayed if it leaks.

Every function raises DatabaseUnavailable on a failed round trip (``db._translated``),
besides the refusals it names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from tradeplane.adapters.db import Conn, DatabaseError, Pool, UnknownAccount, _translated
from tradeplane.domain.errors import Conflict
from tradeplane.usecases import users
from tradeplane.usecases.accounts import KeyRecord
from tradeplane.usecases.users import Refresh, RefreshResult, UserRow

# The application layer's typed rows, built here.
__all__ = ["KeyRecord", "Refresh", "RefreshResult", "UserRow"]


class EmailTaken(DatabaseError, users.EmailTaken):
    pass


class NameTaken(DatabaseError, Conflict):
    pass


def _ms(ts: datetime | None) -> int:
    return 0 if ts is None else int(ts.timestamp() * 1000)


def _ts(ms: int) -> datetime | None:
    return None if not ms else datetime.fromtimestamp(ms / 1000, UTC)


# --------------------------------------------------------------------------- API keys
_KEY_COLUMNS = (
    "k.api_key, k.account_id, k.key_type, k.secret_enc, k.public_key, k.perms, k.ip_allow,"
    " k.expires_at, a.frozen_at, k.label, k.created_at, k.revoked_at"
)


def _key(r: asyncpg.Record) -> KeyRecord:
    return KeyRecord(
        r["api_key"], r["account_id"], r["key_type"],
        None if r["secret_enc"] is None else bytes(r["secret_enc"]),
        None if r["public_key"] is None else bytes(r["public_key"]),
        frozenset(r["perms"]), tuple(r["ip_allow"]), _ms(r["expires_at"]),
        r["frozen_at"] is not None, r["label"], _ms(r["created_at"]), _ms(r["revoked_at"]),
    )


@_translated
async def get_key(pool: Pool, api_key: str) -> KeyRecord | None:
    """The key unless revoked, with its account's frozen flag (expiry is the caller's)."""
    r = await pool.fetchrow(
        f"SELECT {_KEY_COLUMNS} FROM api_keys k JOIN accounts a ON a.id = k.account_id"
        " WHERE k.api_key = $1 AND k.revoked_at IS NULL",
        api_key,
    )
    return None if r is None else _key(r)


@_translated
async def create_key(
    con: Conn | Pool, account: int, api_key: str, *, key_type: str, secret_enc: bytes | None,
    public_key: bytes | None, perms: Sequence[str], ip_allow: Sequence[str], expires_ms: int,
    label: str,
) -> KeyRecord:
    """Raises UnknownAccount."""
    try:
        await con.execute(
            """INSERT INTO api_keys (api_key, account_id, secret_enc, perms, key_type,
                   public_key, ip_allow, expires_at, label)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            api_key, account, secret_enc, list(perms), key_type, public_key, list(ip_allow),
            _ts(expires_ms), label,
        )
    except asyncpg.ForeignKeyViolationError as exc:
        raise UnknownAccount(f"no account {account}") from exc
    r = await con.fetchrow(
        f"SELECT {_KEY_COLUMNS} FROM api_keys k JOIN accounts a ON a.id = k.account_id"
        " WHERE k.api_key = $1", api_key,
    )
    assert r is not None
    return _key(r)


@_translated
async def list_keys(pool: Pool, account: int) -> list[KeyRecord]:
    rows = await pool.fetch(
        f"SELECT {_KEY_COLUMNS} FROM api_keys k JOIN accounts a ON a.id = k.account_id"
        " WHERE k.account_id = $1 ORDER BY k.created_at, k.api_key",
        account,
    )
    return [_key(r) for r in rows]


@_translated
async def revoke_key(con: Conn, api_key: str, account: int | None = None) -> KeyRecord | None:
    """Revoke a live key (of ``account`` when given). Returns the key as it was, or None
    when there is no such live key."""
    r = await con.fetchrow(
        f"""WITH k AS (SELECT * FROM api_keys WHERE api_key = $1 AND revoked_at IS NULL
                         AND ($2::bigint IS NULL OR account_id = $2) FOR UPDATE),
                 u AS (UPDATE api_keys SET revoked_at = now() FROM k
                       WHERE api_keys.api_key = k.api_key RETURNING 1)
            SELECT {_KEY_COLUMNS} FROM k JOIN accounts a ON a.id = k.account_id""",
        api_key, account,
    )
    return None if r is None else _key(r)


# --------------------------------------------------------------------------- accounts
@_translated
async def account_doc(con: Conn | Pool, account: int) -> dict[str, Any] | None:
    """An account as the admin API shows it (and the audit log records it)."""
    r = await con.fetchrow(
        """SELECT a.id, a.name, a.kind, a.frozen_at, a.frozen_reason, u.id AS user_id,
                  u.email, u.email_verified_at, u.totp_enabled_at
           FROM accounts a LEFT JOIN users u ON u.account_id = a.id WHERE a.id = $1""",
        account,
    )
    if r is None:
        return None
    return {
        "account": r["id"], "name": r["name"], "kind": r["kind"],
        "frozen": r["frozen_at"] is not None, "frozenReason": r["frozen_reason"],
        "userId": r["user_id"], "email": r["email"],
        "emailVerified": r["email_verified_at"] is not None,
        "twoFactor": r["totp_enabled_at"] is not None,
    }


@_translated
async def account_of_email(pool: Pool, email: str) -> int | None:
    v = await pool.fetchval("SELECT account_id FROM users WHERE lower(email) = lower($1)", email)
    return None if v is None else int(v)


@_translated
async def set_frozen(con: Conn, account: int, reason: str | None) -> bool:
    """Freeze (``reason`` given) or unfreeze (None) a user account; the caller holds the
    transaction. Returns False for no such user account."""
    done = await con.fetchval(
        """UPDATE accounts SET frozen_at = CASE WHEN $2::text IS NULL THEN NULL ELSE now() END,
               frozen_reason = $2 WHERE id = $1 AND kind = 'user' RETURNING 1""",
        account, reason,
    )
    return bool(done)


# --------------------------------------------------------------------------- users
_USER_COLUMNS = (
    "id, email, password_hash, account_id, email_verified_at, totp_secret_enc,"
    " totp_enabled_at, totp_last_step"
)


def _user(r: asyncpg.Record) -> UserRow:
    return UserRow(
        r["id"], r["email"], r["password_hash"], r["account_id"],
        r["email_verified_at"] is not None,
        None if r["totp_secret_enc"] is None else bytes(r["totp_secret_enc"]),
        r["totp_enabled_at"] is not None, r["totp_last_step"],
    )


@_translated
async def create_user(pool: Pool, email: str, password_hash: str) -> UserRow:
    """A user and the trading account it owns (named after the email), together.

    Raises:
        EmailTaken: a user (or an account) of that email exists.
    """
    async with pool.acquire() as con, con.transaction():
        try:
            account = await con.fetchval(
                "INSERT INTO accounts (id, name, kind)"
                " VALUES (nextval('account_ids'), lower($1), 'user') RETURNING id",
                email,
            )
            r = await con.fetchrow(
                f"INSERT INTO users (email, password_hash, account_id) VALUES ($1, $2, $3)"
                f" RETURNING {_USER_COLUMNS}",
                email, password_hash, account,
            )
        except asyncpg.UniqueViolationError as exc:
            raise EmailTaken(email) from exc
    assert r is not None
    return _user(r)


@_translated
async def user_by_email(pool: Pool, email: str) -> UserRow | None:
    r = await pool.fetchrow(
        f"SELECT {_USER_COLUMNS} FROM users WHERE lower(email) = lower($1)", email
    )
    return None if r is None else _user(r)


@_translated
async def user_by_id(pool: Pool, user_id: int) -> UserRow | None:
    r = await pool.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", user_id)
    return None if r is None else _user(r)


@_translated
async def user_of_account(pool: Pool, account: int) -> UserRow | None:
    r = await pool.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE account_id = $1", account)
    return None if r is None else _user(r)


@_translated
async def add_email_token(
    pool: Pool, user_id: int, token_hash: bytes, expires_ms: int, purpose: str = "verify_email"
) -> None:
    await pool.execute(
        "INSERT INTO email_tokens (token_hash, user_id, purpose, expires_at)"
        " VALUES ($1, $2, $3, $4)",
        token_hash, user_id, purpose, _ts(expires_ms),
    )


@_translated
async def verify_email(pool: Pool, token_hash: bytes) -> int | None:
    """Use a live verification token once; returns its user, now verified."""
    async with pool.acquire() as con, con.transaction():
        user_id = await con.fetchval(
            """UPDATE email_tokens SET used_at = now()
               WHERE token_hash = $1 AND purpose = 'verify_email' AND used_at IS NULL
                 AND expires_at > now() RETURNING user_id""",
            token_hash,
        )
        if user_id is None:
            return None
        await con.execute(
            "UPDATE users SET email_verified_at = coalesce(email_verified_at, now())"
            " WHERE id = $1", user_id,
        )
    return int(user_id)


# --------------------------------------------------------------------------- sessions
@_translated
async def start_session(
    pool: Pool, user_id: int, session_id: str, token_hash: bytes, expires_ms: int
) -> None:
    async with pool.acquire() as con, con.transaction():
        await con.execute("INSERT INTO sessions (id, user_id) VALUES ($1, $2)",
                          session_id, user_id)
        await con.execute(
            "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1,$2,$3)",
            token_hash, session_id, _ts(expires_ms),
        )


@_translated
async def rotate_refresh(
    pool: Pool, token_hash: bytes, new_hash: bytes, expires_ms: int
) -> RefreshResult:
    """Trade a refresh token for a new one of the same session, once. A token that was
    already used revokes the session (someone holds a copy)."""
    async with pool.acquire() as con, con.transaction():
        r = await con.fetchrow(
            """SELECT t.session_id, t.used_at, t.expires_at, s.user_id, s.revoked_at
               FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
               WHERE t.token_hash = $1 FOR UPDATE OF t, s""",
            token_hash,
        )
        if r is None:
            return RefreshResult(Refresh.UNKNOWN)
        sid, uid = r["session_id"], r["user_id"]
        if r["revoked_at"] is not None:
            return RefreshResult(Refresh.REVOKED, uid, sid)
        if r["used_at"] is not None:
            await con.execute(
                "UPDATE sessions SET revoked_at = now(), revoked_reason = 'refresh token reuse'"
                " WHERE id = $1", sid,
            )
            return RefreshResult(Refresh.REUSED, uid, sid)
        if r["expires_at"] <= datetime.now(UTC):
            return RefreshResult(Refresh.EXPIRED, uid, sid)
        await con.execute("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1",
                          token_hash)
        await con.execute(
            "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1,$2,$3)",
            new_hash, sid, _ts(expires_ms),
        )
    return RefreshResult(Refresh.OK, uid, sid)


@_translated
async def revoke_sessions(
    con: Conn | Pool, *, user_id: int, session_id: str | None, reason: str
) -> int:
    """End one session of the user (or all, ``session_id`` None). Returns how many."""
    rows = await con.fetch(
        """UPDATE sessions SET revoked_at = now(), revoked_reason = $3
           WHERE user_id = $1 AND ($2::text IS NULL OR id = $2) AND revoked_at IS NULL
           RETURNING 1""",
        user_id, session_id, reason,
    )
    return len(rows)


@_translated
async def session_live(pool: Pool, session_id: str, user_id: int) -> bool:
    v = await pool.fetchval(
        "SELECT 1 FROM sessions WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
        session_id, user_id,
    )
    return v is not None


# --------------------------------------------------------------------------- 2FA
@_translated
async def set_totp_pending(pool: Pool, user_id: int, secret_enc: bytes) -> bool:
    """Store a new, not yet enabled TOTP secret. False when 2FA is already on."""
    done = await pool.fetchval(
        "UPDATE users SET totp_secret_enc = $2, totp_last_step = 0"
        " WHERE id = $1 AND totp_enabled_at IS NULL RETURNING 1",
        user_id, secret_enc,
    )
    return bool(done)


@_translated
async def accept_totp_step(con: Conn | Pool, user_id: int, step: int) -> bool:
    """Mark TOTP time step ``step`` used; False when it (or a later one) already was."""
    done = await con.fetchval(
        "UPDATE users SET totp_last_step = $2 WHERE id = $1 AND totp_last_step < $2"
        " RETURNING 1",
        user_id, step,
    )
    return bool(done)


@_translated
async def enable_totp(pool: Pool, user_id: int, step: int, code_hashes: Sequence[bytes]) -> bool:
    """Enable the pending secret (its first code, ``step``, is consumed) with fresh
    recovery codes. False when already enabled, not set up, or the step was used."""
    async with pool.acquire() as con, con.transaction():
        done = await con.fetchval(
            """UPDATE users SET totp_enabled_at = now(), totp_last_step = $2
               WHERE id = $1 AND totp_enabled_at IS NULL AND totp_secret_enc IS NOT NULL
                 AND totp_last_step < $2 RETURNING 1""",
            user_id, step,
        )
        if not done:
            return False
        await con.execute("DELETE FROM recovery_codes WHERE user_id = $1", user_id)
        await con.executemany(
            "INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)",
            [(user_id, h) for h in code_hashes],
        )
    return True


@_translated
async def disable_totp(pool: Pool, user_id: int) -> None:
    async with pool.acquire() as con, con.transaction():
        await con.execute(
            "UPDATE users SET totp_enabled_at = NULL, totp_secret_enc = NULL WHERE id = $1",
            user_id,
        )
        await con.execute("DELETE FROM recovery_codes WHERE user_id = $1", user_id)


@_translated
async def use_recovery_code(pool: Pool, user_id: int, code_hash: bytes) -> bool:
    done = await pool.fetchval(
        "UPDATE recovery_codes SET used_at = now()"
        " WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL RETURNING 1",
        user_id, code_hash,
    )
    return bool(done)


# --------------------------------------------------------------------------- logins
@_translated
async def record_login(
    pool: Pool, user_id: int | None, email: str, ip: str, user_agent: str, success: bool,
    reason: str,
) -> None:
    await pool.execute(
        "INSERT INTO login_history (user_id, email, ip, user_agent, success, reason)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        user_id, email[:320], ip, user_agent[:512], success, reason,
    )


@_translated
async def login_history(pool: Pool, user_id: int, limit: int) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT ip, user_agent, success, reason, at FROM login_history WHERE user_id = $1"
        " ORDER BY id DESC LIMIT $2",
        user_id, limit,
    )
    return [{"ip": r["ip"], "userAgent": r["user_agent"], "success": r["success"],
             "reason": r["reason"], "time": _ms(r["at"])} for r in rows]


# --------------------------------------------------------------------------- admins
@_translated
async def create_admin(con: Conn | Pool, name: str, role: str, token_hash: bytes) -> int:
    """Raises NameTaken."""
    try:
        v = await con.fetchval(
            "INSERT INTO admin_users (name, role, token_hash) VALUES ($1, $2, $3) RETURNING id",
            name, role, token_hash,
        )
    except asyncpg.UniqueViolationError as exc:
        raise NameTaken(name) from exc
    return int(v)


@_translated
async def admin_by_token(pool: Pool, token_hash: bytes) -> tuple[str, str] | None:
    """``(name, role)`` of the live admin identity holding this token."""
    r = await pool.fetchrow(
        "SELECT name, role FROM admin_users WHERE token_hash = $1 AND disabled_at IS NULL",
        token_hash,
    )
    return None if r is None else (r["name"], r["role"])


# --------------------------------------------------------------------------- audit log
@dataclass(frozen=True, slots=True)
class AuditEntry:
    actor: str
    role: str
    action: str
    target: str
    before: Any
    after: Any
    ip: str


@_translated
async def append_audit(con: Conn | Pool, e: AuditEntry) -> int:
    v = await con.fetchval(
        """INSERT INTO audit_log (actor, role, action, target, before, after, ip)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7) RETURNING id""",
        e.actor, e.role, e.action, e.target,
        None if e.before is None else json.dumps(e.before, sort_keys=True),
        None if e.after is None else json.dumps(e.after, sort_keys=True), e.ip,
    )
    return int(v)


@_translated
async def audit_entries(
    pool: Pool, *, from_id: int, limit: int, action: str | None, actor: str | None,
    target: str | None,
) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """SELECT id, at, actor, role, action, target, before, after, ip FROM audit_log
           WHERE id >= $1 AND ($2::text IS NULL OR action = $2)
             AND ($3::text IS NULL OR actor = $3) AND ($4::text IS NULL OR target = $4)
           ORDER BY id LIMIT $5""",
        from_id, action, actor, target, limit,
    )
    return [{
        "id": r["id"], "time": _ms(r["at"]), "actor": r["actor"], "role": r["role"],
        "action": r["action"], "target": r["target"],
        "before": None if r["before"] is None else json.loads(r["before"]),
        "after": None if r["after"] is None else json.loads(r["after"]), "ip": r["ip"],
    } for r in rows]


# --------------------------------------------------------------------------- flags, pairs
@_translated
async def get_flag(con: Conn | Pool, name: str) -> dict[str, Any] | None:
    v = await con.fetchval("SELECT value FROM platform_flags WHERE name = $1", name)
    return None if v is None else dict(json.loads(v))


@_translated
async def set_flag(con: Conn | Pool, name: str, value: dict[str, Any] | None) -> None:
    """Set (or with None, clear) a platform flag."""
    if value is None:
        await con.execute("DELETE FROM platform_flags WHERE name = $1", name)
        return
    await con.execute(
        """INSERT INTO platform_flags (name, value) VALUES ($1, $2::jsonb)
           ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()""",
        name, json.dumps(value, sort_keys=True),
    )


@_translated
async def pair_doc(con: Conn | Pool, symbol: str, *, lock: bool = False) -> dict[str, Any] | None:
    r = await con.fetchrow(
        "SELECT symbol, trading, maker_fee_ppm, taker_fee_ppm FROM pairs WHERE symbol = $1"
        + (" FOR UPDATE" if lock else ""),
        symbol,
    )
    if r is None:
        return None
    return {"symbol": r["symbol"], "trading": r["trading"],
            "makerFeePpm": r["maker_fee_ppm"], "takerFeePpm": r["taker_fee_ppm"]}


@_translated
async def set_pair_fees(con: Conn, symbol: str, maker_ppm: int, taker_ppm: int) -> None:
    await con.execute(
        "UPDATE pairs SET maker_fee_ppm = $2, taker_fee_ppm = $3 WHERE symbol = $1",
        symbol, maker_ppm, taker_ppm,
    )


@_translated
async def pair_states(con: Conn | Pool) -> dict[str, str]:
    rows = await con.fetch("SELECT symbol, trading FROM pairs ORDER BY symbol")
    return {r["symbol"]: r["trading"] for r in rows}
