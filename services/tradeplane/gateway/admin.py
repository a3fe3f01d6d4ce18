"""Admin endpoints (bearer admin token): users, API keys, test-fund credits."""

from __future__ import annotations

import hmac
import secrets as _stdlib_secrets
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from tradeplane.adapters import db
from tradeplane.domain.money import AmountError, fmt_units, plain_to_units
from tradeplane.gateway import errors
from tradeplane.gateway.context import ctx

router = APIRouter(prefix="/admin", tags=["admin"])

PERMISSIONS = frozenset({"read", "trade", "withdraw"})


async def require_admin(request: Request) -> None:
    expected = ctx(request).settings.admin_token.get_secret_value()
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise errors.ApiError(-2015, "Invalid admin token.", 401)


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@\-]+$")


class NewKey(BaseModel):
    account: int
    permissions: list[str] = Field(default_factory=lambda: ["read", "trade"])


class CreditReq(BaseModel):
    account: int
    asset: str = Field(pattern=r"^[A-Z0-9]{2,10}$")
    amount: str
    ref: str = Field(min_length=1, max_length=128)


@router.post("/users", dependencies=[Depends(require_admin)])
async def create_user(request: Request, body: NewUser) -> dict[str, Any]:
    account = await db.create_account(ctx(request).pool, body.name)
    return {"account": account, "name": body.name}


@router.post("/api-keys", dependencies=[Depends(require_admin)])
async def create_key(request: Request, body: NewKey) -> dict[str, Any]:
    bad = set(body.permissions) - PERMISSIONS
    if bad or not body.permissions:
        raise errors.ApiError(-1100, f"Unknown permissions: {sorted(bad)}")
    key, secret = await issue_api_key(request, body.account, body.permissions)
    return {"apiKey": key, "secretKey": secret, "permissions": sorted(body.permissions)}


async def issue_api_key(request: Request, account: int, perms: list[str]) -> tuple[str, str]:
    secret = _stdlib_secrets.token_hex(32)
    try:
        key = await db.create_api_key(
            ctx(request).pool, account, request.app.state.keys.cipher.encrypt(secret), perms
        )
    except db.UnknownAccount:
        raise errors.ApiError(-1100, f"Unknown account {account}.") from None
    return key, secret


@router.post("/credit", dependencies=[Depends(require_admin)])
async def credit(request: Request, body: CreditReq) -> dict[str, Any]:
    try:
        units = plain_to_units(body.amount)
    except AmountError:
        raise errors.illegal_chars("amount") from None
    if units <= 0:
        raise errors.ApiError(-1100, "amount must be positive")
    try:
        applied = await db.credit(ctx(request).pool, body.account, body.asset, units, body.ref)
    except db.UnknownAccount:
        raise errors.ApiError(-1100, f"Unknown account {body.account}.") from None
    return {"applied": applied, "account": body.account, "asset": body.asset,
            "amount": fmt_units(units)}
