"""PostgreSQL behind the application layer's pair and account stores
(:mod:`tradeplane.usecases.pairs`, :mod:`tradeplane.usecases.accounts`): one transaction
per use case, the audit record written inside it. The SQL itself is in ``accounts_db``
and ``db``; this module turns their results into the use cases' typed rows and errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import cast

from tradeplane.adapters import accounts_db, db
from tradeplane.usecases.accounts import KeyRow
from tradeplane.usecases.audit import AuditRecord
from tradeplane.usecases.errors import Conflict, NotFound
from tradeplane.usecases.pairs import KILL_SWITCH, KillSwitch, PairRow


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
        await accounts_db.set_pair_trading(self.con, symbol, state)

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
        async with self.pool.acquire() as con, con.transaction():
            yield PgPairsTx(con)


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

    async def revoke_key(self, api_key: str) -> KeyRow | None:
        return await accounts_db.revoke_key(self.con, api_key)

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
    def __init__(self, pool: db.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgAccountsTx]:
        async with self.pool.acquire() as con, con.transaction():
            yield PgAccountsTx(con)
