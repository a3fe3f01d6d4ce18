"""Issuing API keys (for users' sessions, admins and the CLI alike) and how a key is shown.

An HMAC_SHA256 key gets a random secret, returned once and kept encrypted; an ED25519
key carries the public key its owner registered (Binance's model: the private key never
leaves the owner), so there is no secret to return.
"""

from __future__ import annotations

import secrets as _stdlib_secrets
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from tradeplane.adapters import accounts_db, db
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.domain.access import KeyType, check_permissions, parse_networks
from tradeplane.domain.signatures import KeyFormatError, ed25519_public_key
from tradeplane.gateway import errors
from tradeplane.gateway.inputs import PLAIN_TEXT

MAX_KEY_DAYS = 3650


class KeySpec(BaseModel):
    """What a new key may do and from where."""

    permissions: list[str] = Field(default_factory=lambda: ["read", "trade"], max_length=3)
    keyType: Literal["HMAC_SHA256", "ED25519"] = "HMAC_SHA256"
    publicKey: str = Field(default="", max_length=4096,
                           description="ED25519 only: PEM, or base64 of the 32 raw bytes.")
    ipAllowList: list[str] = Field(default_factory=list, max_length=30,
                                   description="Addresses or CIDRs; empty = any address.")
    expiresInDays: int | None = Field(default=None, ge=1, le=MAX_KEY_DAYS,
                                      description="None = the key does not expire.")
    label: str = Field(default="", max_length=64, pattern=PLAIN_TEXT)


def new_key_id() -> str:
    return _stdlib_secrets.token_urlsafe(48)[:64]


async def issue(
    con: db.Conn | db.Pool, cipher: SecretCipher, account: int, spec: KeySpec
) -> tuple[accounts_db.KeyRecord, str | None]:
    """Create a key; returns it and its secret (None for ED25519).

    Raises:
        ApiError: -1100 for bad permissions, addresses or public key, or no such account.
    """
    try:
        perms = check_permissions(spec.permissions)
        networks = [str(n) for n in parse_networks(spec.ipAllowList)]
    except ValueError as exc:
        raise errors.ApiError(-1100, str(exc)) from None
    key_type = KeyType(spec.keyType)
    secret: str | None = None
    public: bytes | None = None
    if key_type is KeyType.ED25519:
        try:
            public = ed25519_public_key(spec.publicKey)
        except KeyFormatError as exc:
            raise errors.ApiError(-1100, f"publicKey: {exc}") from None
    else:
        if spec.publicKey:
            raise errors.not_required("publicKey")
        secret = _stdlib_secrets.token_hex(32)
    expires_ms = 0
    if spec.expiresInDays is not None:
        expires_ms = int(time.time() * 1000) + spec.expiresInDays * 86_400_000
    try:
        rec = await accounts_db.create_key(
            con, account, new_key_id(), key_type=str(key_type),
            secret_enc=None if secret is None else cipher.encrypt(secret), public_key=public,
            perms=perms, ip_allow=networks, expires_ms=expires_ms, label=spec.label,
        )
    except db.UnknownAccount:
        raise errors.ApiError(-1100, f"Unknown account {account}.") from None
    return rec, secret


def key_json(rec: accounts_db.KeyRecord) -> dict[str, Any]:
    """A key as listed (never its secret)."""
    return {
        "apiKey": rec.api_key, "account": rec.account, "keyType": rec.key_type,
        "permissions": sorted(rec.perms), "ipAllowList": list(rec.ip_allow),
        "expiresAt": rec.expires_ms or None, "label": rec.label,
        "createdAt": rec.created_ms, "revoked": bool(rec.revoked_ms),
    }


def created_json(rec: accounts_db.KeyRecord, secret: str | None) -> dict[str, Any]:
    doc = key_json(rec)
    if secret is not None:
        doc["secretKey"] = secret  # shown this once; stored only encrypted
    return doc
