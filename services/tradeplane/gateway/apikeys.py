"""API keys at the HTTP edge: the body that asks for one, how a key is shown, and
:func:`issue` for a user's own keys. Issuing itself is ``usecases.accounts.issue_key``
(the admin API and the CLI go through ``Accounts.create_key``, audited).

An HMAC_SHA256 key gets a random secret, returned once and kept encrypted; an ED25519
key carries the public key its owner registered (Binance's model: the private key never
leaves the owner), so there is no secret to return.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from tradeplane.adapters import accounts_db, db
from tradeplane.adapters.admin_store import PgAccountsTx
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.gateway import errors
from tradeplane.gateway.inputs import PLAIN_TEXT
from tradeplane.usecases.accounts import KeyRequest, KeyRow, issue_key, key_doc
from tradeplane.usecases.errors import Invalid, NotFound, NotRequired, UseCaseError

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


def key_request(spec: KeySpec) -> KeyRequest:
    """The use case's request from the parsed body."""
    return KeyRequest(permissions=tuple(spec.permissions), key_type=spec.keyType,
                      public_key=spec.publicKey, ip_allow=tuple(spec.ipAllowList),
                      expires_in_days=spec.expiresInDays, label=spec.label)


def refusal(exc: UseCaseError) -> errors.ApiError:
    """A refused key as the API answers it."""
    if isinstance(exc, NotRequired):
        return errors.not_required(exc.field)
    return errors.ApiError(-1100, str(exc))


async def issue(
    con: db.Conn, cipher: SecretCipher, account: int, spec: KeySpec
) -> tuple[accounts_db.KeyRecord, str | None]:
    """Create a key inside the caller's transaction (a user's own key: not audited);
    returns it and its secret (None for ED25519).

    Raises:
        ApiError: -1100 for bad permissions, addresses or public key, or no such account.
    """
    try:
        rec, secret = await issue_key(PgAccountsTx(con), cipher, account, key_request(spec),
                                      int(time.time() * 1000))
    except (Invalid, NotFound) as exc:
        raise refusal(exc) from None
    assert isinstance(rec, accounts_db.KeyRecord)
    return rec, secret


def key_json(rec: KeyRow) -> dict[str, Any]:
    """A key as listed (never its secret)."""
    return key_doc(rec)


def created_json(rec: KeyRow, secret: str | None) -> dict[str, Any]:
    doc = key_json(rec)
    if secret is not None:
        doc["secretKey"] = secret  # shown this once; stored only encrypted
    return doc
