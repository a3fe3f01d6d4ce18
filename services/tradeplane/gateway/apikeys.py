"""API keys at the HTTP edge: the body that asks for one and how a key is shown. Issuing
is the accounts use case's (``usecases/accounts.py``): ``Accounts.create_key`` for the
admin API and the CLI, ``Accounts.create_own_key`` for a user's own keys, both audited.

An HMAC_SHA256 key gets a random secret, returned once and kept encrypted; an ED25519
key carries the public key its owner registered (Binance's model: the private key never
leaves the owner), so there is no secret to return.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from tradeplane.gateway import errors
from tradeplane.gateway.inputs import PLAIN_TEXT
from tradeplane.usecases.accounts import KeyRequest, KeyRow, key_doc
from tradeplane.usecases.errors import NotRequired, UseCaseError

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


def key_json(rec: KeyRow) -> dict[str, Any]:
    """A key as listed (never its secret)."""
    return key_doc(rec)


def created_json(rec: KeyRow, secret: str | None) -> dict[str, Any]:
    doc = key_json(rec)
    if secret is not None:
        doc["secretKey"] = secret  # shown this once; stored only encrypted
    return doc
