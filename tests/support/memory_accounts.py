"""The accounts use case's ports in memory: :class:`MemoryAccountStore`
(``usecases.accounts.AccountStore``), :class:`PlainCipher` (``Cipher``) and
:class:`RecordingEvents` (``KeyEvents``), for unit tests of ``usecases.accounts.Accounts``
without PostgreSQL or NATS (the real adapters stay in the integration suite:
test_admin_rbac.py, test_users.py, test_audit_parity.py).

A transaction works on a copy of the state and keeps it only when the use case completes,
as PostgreSQL's does: a refused change leaves nothing, its audit record included.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from tradeplane.usecases.accounts import AccountStore, Cipher, KeyEvents, KeyRecord, KeyRow
from tradeplane.usecases.audit import AuditRecord
from tradeplane.usecases.errors import Conflict, NotFound, SecretUnreadable


@dataclass
class AccountRow:
    name: str
    kind: str = "user"
    frozen_reason: str | None = None


@dataclass
class State:
    accounts: dict[int, AccountRow] = field(default_factory=dict)
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    admins: dict[bytes, tuple[str, str]] = field(default_factory=dict)
    credits: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    audit: list[AuditRecord] = field(default_factory=list)
    clock_ms: int = 1_700_000_000_000


class MemoryAccountsTx:
    def __init__(self, state: State) -> None:
        self.s = state

    async def audit(self, record: AuditRecord) -> None:
        self.s.audit.append(record)

    async def account_id(self, name: str) -> int | None:
        return next((i for i, a in self.s.accounts.items() if a.name == name), None)

    async def create_account(self, name: str) -> int:
        found = await self.account_id(name)
        if found is not None:
            return found
        account = max(self.s.accounts, default=1000) + 1
        self.s.accounts[account] = AccountRow(name)
        return account

    async def create_key(self, account: int, api_key: str, *, key_type: str,
                         secret_enc: bytes | None, public_key: bytes | None,
                         perms: Sequence[str], ip_allow: Sequence[str], expires_ms: int,
                         label: str) -> KeyRow:
        row = self.s.accounts.get(account)
        if row is None:
            raise NotFound(f"Unknown account {account}.")
        rec = KeyRecord(api_key, account, key_type, secret_enc, public_key, frozenset(perms),
                        tuple(ip_allow), expires_ms, row.frozen_reason is not None, label,
                        self.s.clock_ms, 0)
        self.s.keys[api_key] = rec
        return rec

    async def revoke_key(self, api_key: str, account: int | None = None) -> KeyRow | None:
        rec = self.s.keys.get(api_key)
        if rec is None or rec.revoked_ms or (account is not None and rec.account != account):
            return None
        self.s.keys[api_key] = replace(rec, revoked_ms=self.s.clock_ms)
        return rec

    async def create_admin(self, name: str, role: str, token_hash: bytes) -> None:
        if any(n == name for n, _ in self.s.admins.values()):
            raise Conflict("An admin of that name exists.")
        self.s.admins[token_hash] = (name, role)

    async def credit(self, account: int, asset: str, units: int, ref: str) -> bool:
        if account not in self.s.accounts:
            raise NotFound(f"Unknown account {account}.")
        if ref in self.s.credits:
            return False
        self.s.credits[ref] = (account, asset, units)
        return True

    async def account_doc(self, account: int) -> dict[str, Any] | None:
        row = self.s.accounts.get(account)
        if row is None:
            return None
        return {"account": account, "name": row.name, "kind": row.kind,
                "frozen": row.frozen_reason is not None, "frozenReason": row.frozen_reason}

    async def set_frozen(self, account: int, reason: str | None) -> bool:
        row = self.s.accounts.get(account)
        if row is None or row.kind != "user":
            return False
        row.frozen_reason = reason
        return True


class MemoryAccountStore:
    """``usecases.accounts.AccountStore`` in memory."""

    def __init__(self) -> None:
        self.state = State()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryAccountsTx]:
        work = copy.deepcopy(self.state)
        yield MemoryAccountsTx(work)
        self.state = work  # only when the use case completed

    async def account(self, account: int) -> dict[str, Any] | None:
        return await MemoryAccountsTx(self.state).account_doc(account)

    async def account_of_email(self, email: str) -> int | None:
        return await MemoryAccountsTx(self.state).account_id(email.lower())

    async def keys(self, account: int) -> list[KeyRecord]:
        return [k for k in self.state.keys.values() if k.account == account]

    async def live_key(self, api_key: str) -> KeyRecord | None:
        rec = self.state.keys.get(api_key)
        return None if rec is None or rec.revoked_ms else rec

    async def admin_of_token(self, token_hash: bytes) -> tuple[str, str] | None:
        return self.state.admins.get(token_hash)

    async def audit_entries(self, *, from_id: int, limit: int, action: str | None,
                            actor: str | None, target: str | None) -> list[dict[str, Any]]:
        out = []
        for i, r in enumerate(self.state.audit, start=1):
            if i < from_id or (action and r.action != action) or (actor and r.actor != actor) \
                    or (target and r.target != target):
                continue
            out.append({"id": i, "actor": r.actor, "role": r.role, "action": r.action,
                        "target": r.target, "before": r.before, "after": r.after, "ip": r.ip})
        return out[:limit]


class PlainCipher:
    """Reversible and obviously not secret: ``enc:`` + the text."""

    def encrypt(self, plaintext: str) -> bytes:
        return b"enc:" + plaintext.encode()

    def decrypt(self, token: bytes) -> str:
        if not token.startswith(b"enc:"):
            raise SecretUnreadable("not ours")
        return token[4:].decode()


@dataclass
class RecordingEvents:
    """What the gateways were told."""

    told: list[tuple[str, Any]] = field(default_factory=list)

    async def key_revoked(self, api_key: str) -> None:
        self.told.append(("key", api_key))

    async def account_changed(self, account: int) -> None:
        self.told.append(("account", account))


def _fits(store: MemoryAccountStore, cipher: PlainCipher, events: RecordingEvents) -> None:
    """mypy checks here that the stand-ins implement the ports."""
    _: tuple[AccountStore, Cipher, KeyEvents] = (store, cipher, events)
