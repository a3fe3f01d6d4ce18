"""Admin endpoints: accounts and users (lookup, freeze), API keys, test-fund credits, pair
trading states and fees, the global kill switch, admin identities and the audit log.

Every endpoint is guarded by one action of the permission matrix
(:data:`tradeplane.domain.access.PERMISSION_MATRIX`, checked in
:mod:`tradeplane.gateway.rbac`), and every change it makes is recorded once in the
append-only audit log, in the same transaction as the change where the change is a
database write. Reads are not recorded. Users, freezes, keys, admins, credits, the audit
log, pair states, fees and the kill switch are the application layer's use cases
(``usecases/accounts.py``, ``usecases/pairs.py``, the same the CLI calls): these routes
parse, call and answer.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as FPath
from pydantic import BaseModel, Field

from tradeplane.domain.access import AdminAction as A
from tradeplane.domain.access import Role
from tradeplane.domain.money import AmountError, fmt_units, plain_to_units
from tradeplane.gateway import apikeys, errors
from tradeplane.gateway.apikeys import KeySpec
from tradeplane.gateway.context import ctx, gateway
from tradeplane.gateway.control import Controls
from tradeplane.gateway.inputs import (
    INT64_MAX,
    KEY_ID,
    PLAIN_TEXT,
    SYMBOL,
    BodyId,
    PathId,
    QueryId,
)
from tradeplane.gateway.rbac import AdminIdentity, admin_action
from tradeplane.usecases.accounts import Accounts
from tradeplane.usecases.errors import Conflict, Invalid, NotFound, Unavailable

router = APIRouter(prefix="/admin", tags=["admin"])

def _controls(request: Request) -> Controls:
    return gateway(request.app).controls


def _accounts(request: Request) -> Accounts:
    return gateway(request.app).controls.account_cases


# --------------------------------------------------------------------------- accounts
class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@\-]+$")


@router.post("/users")
async def create_user(
    request: Request, body: NewUser, who: AdminIdentity = Depends(admin_action(A.ACCOUNT_CREATE))
) -> dict[str, Any]:
    account = await _controls(request).account_cases.create_user(who.actor, body.name)
    return {"account": account, "name": body.name}


async def _account(request: Request, account: int) -> dict[str, Any]:
    try:
        return await _accounts(request).account(account)
    except NotFound:
        raise errors.ApiError(-1100, f"Unknown account {account}.", 404) from None


@router.get("/users")
async def find_user(
    request: Request, email: str = Query(min_length=3, max_length=320, pattern=PLAIN_TEXT),
    who: AdminIdentity = Depends(admin_action(A.USER_READ)),
) -> dict[str, Any]:
    try:
        account = await _accounts(request).account_of_email(email)
    except NotFound:
        raise errors.ApiError(-1100, "No user with that email.", 404) from None
    return await _account(request, account)


@router.get("/users/{account}")
async def get_user(
    request: Request, account: PathId, who: AdminIdentity = Depends(admin_action(A.USER_READ))
) -> dict[str, Any]:
    doc = await _account(request, account)
    keys = await _accounts(request).keys(account)
    return {**doc, "apiKeys": [apikeys.key_json(k) for k in keys]}


class FreezeReq(BaseModel):
    reason: str = Field(min_length=1, max_length=256, pattern=PLAIN_TEXT)


async def _set_frozen(request: Request, who: AdminIdentity, account: int,
                      reason: str | None) -> dict[str, Any]:
    try:
        return await _accounts(request).set_frozen(who.actor, account, reason)
    except NotFound:
        raise errors.ApiError(-1100, f"Unknown user account {account}.", 404) from None


@router.post("/users/{account}/freeze")
async def freeze(
    request: Request, account: PathId, body: FreezeReq,
    who: AdminIdentity = Depends(admin_action(A.USER_FREEZE)),
) -> dict[str, Any]:
    """A frozen account's keys may still read, but neither trade nor withdraw."""
    return await _set_frozen(request, who, account, body.reason)


@router.post("/users/{account}/unfreeze")
async def unfreeze(
    request: Request, account: PathId, who: AdminIdentity = Depends(admin_action(A.USER_UNFREEZE))
) -> dict[str, Any]:
    return await _set_frozen(request, who, account, None)


# --------------------------------------------------------------------------- API keys
class NewKey(KeySpec):
    account: BodyId


@router.post("/api-keys")
async def create_key(
    request: Request, body: NewKey, who: AdminIdentity = Depends(admin_action(A.APIKEY_CREATE))
) -> dict[str, Any]:
    """A key for any account; the secret is in this answer only."""
    try:
        rec, secret = await _controls(request).account_cases.create_key(
            who.actor, body.account, apikeys.key_request(body))
    except (Invalid, NotFound) as exc:
        raise apikeys.refusal(exc) from None
    return apikeys.created_json(rec, secret)


@router.get("/api-keys")
async def list_keys(
    request: Request, account: QueryId, who: AdminIdentity = Depends(admin_action(A.APIKEY_READ))
) -> list[dict[str, Any]]:
    return [apikeys.key_json(k) for k in await _accounts(request).keys(account)]


@router.delete("/api-keys/{api_key}")
async def revoke_key(
    request: Request, api_key: str = FPath(pattern=KEY_ID),
    who: AdminIdentity = Depends(admin_action(A.APIKEY_REVOKE)),
) -> dict[str, Any]:
    try:
        return await _controls(request).account_cases.revoke_key(who.actor, api_key)
    except NotFound:
        raise errors.ApiError(-2015, "No such live API key.", 404) from None


# --------------------------------------------------------------------------- funds
class CreditReq(BaseModel):
    account: BodyId
    asset: str = Field(pattern=r"^[A-Z0-9]{2,10}$")
    amount: str = Field(max_length=64)
    ref: str = Field(min_length=1, max_length=128, pattern=PLAIN_TEXT)


@router.post("/credit")
async def credit(
    request: Request, body: CreditReq, who: AdminIdentity = Depends(admin_action(A.ACCOUNT_CREDIT))
) -> dict[str, Any]:
    """Credit funds from the outside world; idempotent by ``ref`` (recorded once)."""
    try:
        units = plain_to_units(body.amount)
    except AmountError:
        raise errors.illegal_chars("amount") from None
    try:
        applied = await _controls(request).account_cases.credit(
            who.actor, body.account, body.asset, units, body.ref)
    except (Invalid, NotFound) as exc:
        raise errors.ApiError(-1100, str(exc)) from None
    return {"applied": applied, "account": body.account, "asset": body.asset,
            "amount": fmt_units(units)}


# --------------------------------------------------------------------------- pairs
class TradingReq(BaseModel):
    trading: Literal["enabled", "halted", "cancel-only"]


class FeesReq(BaseModel):
    makerFeePpm: int = Field(ge=0, lt=1_000_000)
    takerFeePpm: int = Field(ge=0, lt=1_000_000)


@router.put("/pairs/{symbol}/trading")
async def set_trading(
    request: Request, body: TradingReq, symbol: str = FPath(pattern=SYMBOL),
    who: AdminIdentity = Depends(admin_action(A.PAIR_TRADING)),
) -> dict[str, Any]:
    """Halt, resume or set cancel-only, live. While the kill switch is on, this sets the
    state the pair returns to when it is lifted."""
    try:
        return await _controls(request).pair_cases.set_trading(who.actor, symbol,
                                                               body.trading)
    except NotFound:
        raise errors.bad_symbol() from None
    except Unavailable as exc:
        raise errors.ApiError(-1000, f"Could not reach the engine: {exc}", 503) from None


@router.put("/pairs/{symbol}/fees")
async def set_fees(
    request: Request, body: FeesReq, symbol: str = FPath(pattern=SYMBOL),
    who: AdminIdentity = Depends(admin_action(A.PAIR_FEES)),
) -> dict[str, Any]:
    """New maker/taker fees (parts per million of the traded amount). Settlement reloads
    the pair on ``control.pairs``: trades it settles after that pay the new fees."""
    try:
        return await _controls(request).pair_cases.set_fees(
            who.actor, symbol, body.makerFeePpm, body.takerFeePpm)
    except NotFound:
        raise errors.bad_symbol() from None
    except Unavailable as exc:
        raise errors.ApiError(-1000, f"Could not update the TradingPair: {exc}", 503) \
            from None


# --------------------------------------------------------------------------- kill switch
class KillReq(BaseModel):
    reason: str = Field(default="", max_length=256, pattern=PLAIN_TEXT)


@router.get("/kill-switch")
async def kill_switch_state(
    request: Request, who: AdminIdentity = Depends(admin_action(A.KILL_SWITCH_READ))
) -> dict[str, Any]:
    return await _controls(request).pair_cases.kill_switch_state()


@router.post("/kill-switch")
async def kill_switch_on(
    request: Request, body: KillReq, who: AdminIdentity = Depends(admin_action(A.KILL_SWITCH))
) -> dict[str, Any]:
    """Halt every symbol at once: gateways refuse trading (-1013) from now on, and every
    engine gets SetTrading(HALTED). Each pair's state is kept in the flag, to be restored
    when the switch is lifted. Calling it again re-sends the halts (nothing recorded)."""
    try:
        return await _controls(request).pair_cases.kill_switch_on(who.actor, body.reason)
    except Unavailable as exc:
        raise errors.ApiError(-1000, f"Gateways stopped trading; some engines were not "
                                     f"reached ({exc}); call again.", 503) from None


@router.delete("/kill-switch")
async def kill_switch_off(
    request: Request, who: AdminIdentity = Depends(admin_action(A.KILL_SWITCH))
) -> dict[str, Any]:
    """Resume: every engine back to the state its pair had when the switch was thrown (or
    was given since), then the gateways."""
    try:
        return await _controls(request).pair_cases.kill_switch_off(who.actor)
    except Unavailable as exc:
        raise errors.ApiError(-1000, f"Some engines were not reached ({exc}); call again.",
                              503) from None


# --------------------------------------------------------------------------- admins, audit
class NewAdmin(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@\-]+$")
    role: Role


@router.post("/admins")
async def create_admin(
    request: Request, body: NewAdmin, who: AdminIdentity = Depends(admin_action(A.ADMIN_CREATE))
) -> dict[str, Any]:
    """A new admin identity; its token is in this answer only (stored hashed)."""
    try:
        token = await _controls(request).account_cases.create_admin(who.actor, body.name,
                                                                    body.role)
    except (Invalid, Conflict) as exc:
        raise errors.ApiError(-1100, str(exc)) from None
    return {"name": body.name, "role": str(body.role), "token": token}


@router.get("/audit")
async def audit_log(
    request: Request, fromId: int = Query(default=1, ge=1, le=INT64_MAX),
    limit: int = Query(default=100, ge=1, le=1000),
    action: str | None = Query(default=None, max_length=64, pattern=PLAIN_TEXT),
    actor: str | None = Query(default=None, max_length=128, pattern=PLAIN_TEXT),
    target: str | None = Query(default=None, max_length=256, pattern=PLAIN_TEXT),
    who: AdminIdentity = Depends(admin_action(A.AUDIT_READ)),
) -> list[dict[str, Any]]:
    """The audit log, oldest first from ``fromId``. Read-only: no API changes it, and the
    database refuses UPDATE/DELETE/TRUNCATE on it."""
    return await _accounts(request).audit_log(from_id=fromId, limit=limit, action=action,
                                              actor=actor, target=target)


# --------------------------------------------------------------------------- health
@router.get("/health")
async def health(
    request: Request, who: AdminIdentity = Depends(admin_action(A.HEALTH_READ))
) -> dict[str, Any]:
    """What the system is doing: per symbol the command stream's last sequence, the
    engine's (its last event batch) and the ledger's (the last one settled), and the lags
    between them; market
    data's position in the EVENTS stream and its lag; the last ledger invariant verdict
    (``unknown`` when none is recent); every JetStream stream's depth. A source that does
    not answer leaves its fields null and is named in ``errors``: this view never fails
    because what it watches is down."""
    c = ctx(request)
    return await c.health.report(list(c.pairs), int(time.time() * 1000))
