"""Accounts: users, API keys, admin identities and credits — each change audited in the
same transaction as the change, whoever asks (the admin API or the CLI)."""

from __future__ import annotations

import hashlib
import secrets as _stdlib_secrets
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from tradeplane.domain.access import AdminAction, KeyType, Role, check_permissions, parse_networks
from tradeplane.domain.money import fmt_units
from tradeplane.domain.signatures import KeyFormatError, ed25519_public_key
from tradeplane.usecases.audit import Actor, AuditLog, AuditRecord
from tradeplane.usecases.errors import Conflict, Invalid, NotFound, NotRequired

#: The break-glass identity of ``TRADEPLANE_ADMIN_TOKEN``: no admin may take its name.
BOOTSTRAP = "bootstrap"
ADMIN_TOKEN_PREFIX = "tpa_"
#: The audit actions of a user's changes to their own keys.
USER_KEY_CREATE = "user.apikey.create"
USER_KEY_REVOKE = "user.apikey.revoke"


# --------------------------------------------------------------------------- typed rows
class KeyRow(Protocol):
    """An API key as listed and audited."""

    @property
    def api_key(self) -> str: ...
    @property
    def account(self) -> int: ...
    @property
    def key_type(self) -> str: ...
    @property
    def perms(self) -> frozenset[str]: ...
    @property
    def ip_allow(self) -> tuple[str, ...]: ...
    @property
    def expires_ms(self) -> int: ...
    @property
    def label(self) -> str: ...
    @property
    def created_ms(self) -> int: ...
    @property
    def revoked_ms(self) -> int: ...


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An API key as the store keeps it: its secret encrypted (HMAC) or its owner's
    public key (ED25519), with its account's frozen flag."""

    api_key: str
    account: int
    key_type: str
    secret_enc: bytes | None
    public_key: bytes | None
    perms: frozenset[str]
    ip_allow: tuple[str, ...]
    expires_ms: int
    frozen: bool
    label: str
    created_ms: int
    revoked_ms: int


def key_doc(rec: KeyRow) -> dict[str, Any]:
    """A key as listed and audited (never its secret)."""
    return {
        "apiKey": rec.api_key, "account": rec.account, "keyType": rec.key_type,
        "permissions": sorted(rec.perms), "ipAllowList": list(rec.ip_allow),
        "expiresAt": rec.expires_ms or None, "label": rec.label,
        "createdAt": rec.created_ms, "revoked": bool(rec.revoked_ms),
    }


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """What a new key may do and from where (already bounded by the entry point)."""

    permissions: Sequence[str] = ("read", "trade")
    key_type: str = "HMAC_SHA256"
    public_key: str = ""
    ip_allow: Sequence[str] = field(default_factory=tuple)
    expires_in_days: int | None = None
    label: str = ""


# --------------------------------------------------------------------------- ports
class AccountsTx(AuditLog, Protocol):
    """One transaction on accounts, keys, admins, balances and the audit log."""

    async def account_id(self, name: str) -> int | None: ...

    async def create_account(self, name: str) -> int:
        """The user account of that name, created if new."""
        ...

    async def create_key(self, account: int, api_key: str, *, key_type: str,
                         secret_enc: bytes | None, public_key: bytes | None,
                         perms: Sequence[str], ip_allow: Sequence[str], expires_ms: int,
                         label: str) -> KeyRow:
        """Raises NotFound: no such account."""
        ...

    async def revoke_key(self, api_key: str, account: int | None = None) -> KeyRow | None:
        """The live key (of ``account`` when given), now revoked, as it was before; None
        if there is no such live key."""
        ...

    async def account_doc(self, account: int) -> dict[str, Any] | None:
        """The account as the admin API shows it and the audit log records it."""
        ...

    async def set_frozen(self, account: int, reason: str | None) -> bool:
        """Freeze (``reason`` given) or unfreeze a user account; False: no such one."""
        ...

    async def create_admin(self, name: str, role: str, token_hash: bytes) -> None:
        """Raises Conflict: the name is taken."""
        ...

    async def credit(self, account: int, asset: str, units: int, ref: str) -> bool:
        """False when ``ref`` was applied before. Raises NotFound: no such account."""
        ...


class AccountStore(Protocol):
    """Transactions for changes; reads outside any."""

    def transaction(self) -> AbstractAsyncContextManager[AccountsTx]: ...

    async def account(self, account: int) -> dict[str, Any] | None:
        """As :meth:`AccountsTx.account_doc`."""
        ...

    async def account_of_email(self, email: str) -> int | None: ...

    async def keys(self, account: int) -> list[KeyRecord]:
        """Every key of the account, revoked ones included, oldest first."""
        ...

    async def live_key(self, api_key: str) -> KeyRecord | None:
        """The key unless revoked (its expiry is the caller's to check)."""
        ...

    async def admin_of_token(self, token_hash: bytes) -> tuple[str, str] | None:
        """``(name, role)`` of the live admin identity holding this token."""
        ...

    async def audit_entries(self, *, from_id: int, limit: int, action: str | None,
                            actor: str | None, target: str | None) -> list[dict[str, Any]]:
        """The audit log from ``from_id``, oldest first, filtered."""
        ...


class Cipher(Protocol):
    """Secrets at rest (API secrets, TOTP secrets)."""

    def encrypt(self, plaintext: str) -> bytes: ...

    def decrypt(self, token: bytes) -> str:
        """Raises SecretUnreadable: not encrypted under this key (or tampered)."""
        ...


class KeyEvents(Protocol):
    """What the gateways must learn at once (the CLI, without them, leaves it to their
    key cache's expiry)."""

    async def key_revoked(self, api_key: str) -> None: ...

    async def account_changed(self, account: int) -> None:
        """The account was frozen or unfrozen."""
        ...


# --------------------------------------------------------------------------- helpers
def admin_token_hash(token: str) -> bytes:
    """Admin tokens carry 256 random bits: a plain SHA-256 is a safe way to store them."""
    return hashlib.sha256(token.encode()).digest()


def new_admin_token() -> str:
    return ADMIN_TOKEN_PREFIX + _stdlib_secrets.token_urlsafe(32)


def new_key_id() -> str:
    return _stdlib_secrets.token_urlsafe(48)[:64]


async def issue_key(tx: AccountsTx, cipher: Cipher, account: int, spec: KeyRequest,
                    now_ms: int) -> tuple[KeyRow, str | None]:
    """Create a key (not audited: users make their own keys too); its secret, None for
    ED25519 (the user registered the public key; there is no secret).

    Raises:
        Invalid: bad permissions, addresses or public key. NotRequired: a public key for
            an HMAC key. NotFound: no such account.
    """
    try:
        perms = check_permissions(list(spec.permissions))
        networks = [str(n) for n in parse_networks(list(spec.ip_allow))]
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    key_type = KeyType(spec.key_type)
    secret: str | None = None
    public: bytes | None = None
    if key_type is KeyType.ED25519:
        try:
            public = ed25519_public_key(spec.public_key)
        except KeyFormatError as exc:
            raise Invalid(f"publicKey: {exc}") from None
    else:
        if spec.public_key:
            raise NotRequired("publicKey")
        secret = _stdlib_secrets.token_hex(32)
    expires_ms = 0
    if spec.expires_in_days is not None:
        expires_ms = now_ms + spec.expires_in_days * 86_400_000
    rec = await tx.create_key(
        account, new_key_id(), key_type=str(key_type),
        secret_enc=None if secret is None else cipher.encrypt(secret), public_key=public,
        perms=perms, ip_allow=networks, expires_ms=expires_ms, label=spec.label,
    )
    return rec, secret


# --------------------------------------------------------------------------- use cases
class Accounts:
    """``clock`` gives milliseconds since the epoch."""

    def __init__(self, store: AccountStore, cipher: Cipher, clock: Callable[[], int],
                 events: KeyEvents | None = None) -> None:
        self.store = store
        self.cipher = cipher
        self.clock = clock
        self.events = events

    async def create_user(self, actor: Actor, name: str) -> int:
        """The user account of that name; recorded when it is new."""
        async with self.store.transaction() as tx:
            existing = await tx.account_id(name)
            account = await tx.create_account(name)
            if existing is None:
                await tx.audit(actor.record(AdminAction.ACCOUNT_CREATE, f"account:{account}",
                                            None, {"account": account, "name": name}))
        return account

    async def account_of(self, name: str) -> int:
        """Raises NotFound: no account of that name."""
        async with self.store.transaction() as tx:
            account = await tx.account_id(name)
        if account is None:
            raise NotFound(f"no such user: {name}")
        return account

    async def create_key(self, actor: Actor, account: int,
                         spec: KeyRequest) -> tuple[KeyRow, str | None]:
        """A key for any account; its secret is returned this once.

        Raises: as :func:`issue_key`."""
        async with self.store.transaction() as tx:
            rec, secret = await issue_key(tx, self.cipher, account, spec, self.clock())
            await tx.audit(actor.record(AdminAction.APIKEY_CREATE, f"apikey:{rec.api_key}",
                                        None, key_doc(rec)))
        return rec, secret

    async def revoke_key(self, actor: Actor, api_key: str) -> dict[str, Any]:
        """Returns the key as it now is.

        Raises:
            NotFound: no such live key.
        """
        async with self.store.transaction() as tx:
            rec = await tx.revoke_key(api_key)
            if rec is None:
                raise NotFound("No such live API key.")
            before = key_doc(rec)
            after = {**before, "revoked": True}
            await tx.audit(actor.record(AdminAction.APIKEY_REVOKE, f"apikey:{api_key}",
                                        before, after))
        if self.events is not None:
            await self.events.key_revoked(api_key)
        return after

    async def create_admin(self, actor: Actor, name: str, role: Role) -> str:
        """A new admin identity; returns its token (stored hashed, shown this once).

        Raises:
            Invalid: the bootstrap identity's name. Conflict: an admin of that name exists.
        """
        if name == BOOTSTRAP:
            raise Invalid("That name is reserved.")
        token = new_admin_token()
        async with self.store.transaction() as tx:
            await tx.create_admin(name, str(role), admin_token_hash(token))
            await tx.audit(actor.record(AdminAction.ADMIN_CREATE, f"admin:{name}", None,
                                        {"name": name, "role": str(role)}))
        return token

    # ------------------------------------------------------------------ freezing
    async def set_frozen(self, actor: Actor, account: int,
                         reason: str | None) -> dict[str, Any]:
        """Freeze (``reason`` given) or unfreeze a user account: its keys may still read,
        but neither trade nor withdraw. Returns the account as it now is; recorded only
        when it changed.

        Raises:
            NotFound: no such user account.
        """
        action = AdminAction.USER_FREEZE if reason is not None else AdminAction.USER_UNFREEZE
        async with self.store.transaction() as tx:
            before = await tx.account_doc(account)
            if before is None or before["kind"] != "user":
                raise NotFound(f"Unknown user account {account}.")
            if before["frozen"] == (reason is not None):
                return before  # nothing changes: nothing to record
            await tx.set_frozen(account, reason)
            after = await tx.account_doc(account)
            assert after is not None
            await tx.audit(actor.record(action, f"account:{account}", before, after))
        if self.events is not None:
            await self.events.account_changed(account)
        return after

    # ------------------------------------------------------------------ a user's own keys
    async def create_own_key(self, actor: Actor, account: int,
                             spec: KeyRequest) -> tuple[KeyRow, str | None]:
        """A user's new key for their own account (``actor`` the user); its secret is
        returned this once.

        Raises: as :func:`issue_key`."""
        async with self.store.transaction() as tx:
            rec, secret = await issue_key(tx, self.cipher, account, spec, self.clock())
            await tx.audit(actor.record(USER_KEY_CREATE, f"apikey:{rec.api_key}", None,
                                        key_doc(rec)))
        return rec, secret

    async def revoke_own_key(self, actor: Actor, account: int,
                             api_key: str) -> dict[str, Any]:
        """Revoke one of the user's own live keys; returns it as it now is.

        Raises:
            NotFound: no such live key of that account.
        """
        async with self.store.transaction() as tx:
            rec = await tx.revoke_key(api_key, account)
            if rec is None:
                raise NotFound("No such live API key.")
            before = key_doc(rec)
            after = {**before, "revoked": True}
            await tx.audit(actor.record(USER_KEY_REVOKE, f"apikey:{api_key}", before, after))
        if self.events is not None:
            await self.events.key_revoked(api_key)
        return after

    # ------------------------------------------------------------------ reads
    async def account(self, account: int) -> dict[str, Any]:
        """Raises NotFound: no such account."""
        doc = await self.store.account(account)
        if doc is None:
            raise NotFound(f"Unknown account {account}.")
        return doc

    async def account_of_email(self, email: str) -> int:
        """The account of the user with that email (any case).

        Raises:
            NotFound: no user with that email.
        """
        account = await self.store.account_of_email(email)
        if account is None:
            raise NotFound("No user with that email.")
        return account

    async def keys(self, account: int) -> list[KeyRecord]:
        """Every key of the account, revoked ones included, oldest first."""
        return await self.store.keys(account)

    async def admin_of_token(self, token: str) -> tuple[str, Role] | None:
        """The admin identity (name, role) holding this token, if live."""
        found = await self.store.admin_of_token(admin_token_hash(token))
        return None if found is None else (found[0], Role(found[1]))

    async def audit_log(self, *, from_id: int, limit: int, action: str | None = None,
                        actor: str | None = None,
                        target: str | None = None) -> list[dict[str, Any]]:
        """The audit log, oldest first from ``from_id`` (never changed by anyone)."""
        return await self.store.audit_entries(from_id=from_id, limit=limit, action=action,
                                              actor=actor, target=target)

    # ------------------------------------------------------------------ the audit path
    async def record(self, actor: Actor, action: str, target: str, before: Any,
                     after: Any) -> AuditRecord:
        """Record a change made in another module's own transaction (a withdrawal's
        approval, a whitelist entry, a user's 2FA), right after it: the one way such a
        change reaches the audit log."""
        rec = actor.record(action, target, before, after)
        async with self.store.transaction() as tx:
            await tx.audit(rec)
        return rec

    async def credit(self, actor: Actor, account: int, asset: str, units: int,
                     ref: str) -> bool:
        """Credit funds from the outside world; idempotent by ``ref`` (recorded once).
        False when ``ref`` was applied before.

        Raises:
            Invalid: a non-positive amount. NotFound: no such account.
        """
        if units <= 0:
            raise Invalid("amount must be positive")
        doc = {"account": account, "asset": asset, "amount": fmt_units(units), "ref": ref}
        async with self.store.transaction() as tx:
            applied = await tx.credit(account, asset, units, ref)
            if applied:
                await tx.audit(actor.record(AdminAction.ACCOUNT_CREDIT, f"account:{account}",
                                            None, doc))
        return applied


__all__ = ["Accounts", "Conflict", "KeyRecord", "KeyRequest", "KeyRow", "issue_key", "key_doc"]
