"""Escrowed deals over REST: ``/sapi/v1/escrow/*`` (signed like Binance's private
endpoints) and ``/admin/escrow/*`` (the admin console: list deals, resolve disputes).

Parse -> :mod:`tradeplane.usecases.escrow` -> render. Changes need a key with the
permission ``escrow``; reads one that reads. Refusals are our own codes
(``usecases.escrow.CODES``, -24001..-24006) in Binance's ``{"code", "msg"}``; every
parameter is bounded here, before the use case sees it.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from tradeplane.domain.access import AdminAction as A
from tradeplane.domain.escrow import FINAL_STATES, Action, DealState, Terms
from tradeplane.domain.money import AmountError, fmt_units, to_units
from tradeplane.gateway import errors
from tradeplane.gateway.auth import Caller, signed, signed_read
from tradeplane.gateway.context import gateway
from tradeplane.gateway.inputs import (
    CLIENT_ID_RE,
    INT64_MAX,
    PLAIN_TEXT,
    PathId,
    optional_amount,
    optional_asset,
    optional_client_id,
    optional_int,
)
from tradeplane.gateway.rbac import AdminIdentity, admin_action
from tradeplane.usecases.audit import Actor
from tradeplane.usecases.escrow import (
    MAX_LIST,
    Deal,
    Escrow,
    EscrowCode,
    EscrowRefused,
    Transition,
)

router = APIRouter(tags=["escrow"])
admin_router = APIRouter(prefix="/admin/escrow", tags=["admin"])

#: ``fundTimeout`` / ``payTimeout``: seconds, defaults and the most (30 days).
FUND_TIMEOUT_S: Final = 900
PAY_TIMEOUT_S: Final = 1800
MAX_TIMEOUT_S: Final = 30 * 86_400
#: ``reason`` of a dispute or a resolution: at most this many characters.
MAX_REASON: Final = 256
_REASON_RE: Final = re.compile(r"[^\x00-\x1f\x7f]{0,256}")
#: ``state`` filter: a state, or OPEN (every state that is not final).
OPEN: Final = "OPEN"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _escrow(request: Request) -> Escrow:
    return gateway(request.app).escrow


async def signed_escrow(request: Request) -> Caller:
    """SIGNED, with the key permission ``escrow``."""
    return await signed(request, "escrow")


def _user(caller: Caller) -> Actor:
    """The caller as the audit log names it (``user:<account>``)."""
    return Actor("user", str(caller.account), "User", caller.ip)


@contextmanager
def _answered(unknown_status: int = 400) -> Iterator[None]:
    """Refusals as our codes: HTTP 400 (as Binance answers an unknown order), or
    ``unknown_status`` for an unknown deal (the admin API's 404)."""
    try:
        yield
    except EscrowRefused as exc:
        status = unknown_status if exc.code == EscrowCode.UNKNOWN_DEAL else 400
        raise errors.ApiError(exc.code, exc.msg, status) from None


def deal_json(d: Deal, account: int | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "dealId": d.deal_id, "clientDealId": d.client_deal_id, "seller": d.seller,
        "buyer": d.buyer, "asset": d.asset, "amount": fmt_units(d.amount),
        "priceAsset": d.price_asset, "price": fmt_units(d.price), "state": d.state.value,
        "deadline": d.deadline_ms, "fundTimeout": d.fund_window_ms // 1000,
        "payTimeout": d.pay_window_ms // 1000, "createTime": d.created_ms,
        "updateTime": d.updated_ms}
    if account is not None:
        side = d.party(account)
        doc["side"] = None if side is None else side.value.upper()
    return doc


def transition_json(t: Transition) -> dict[str, Any]:
    return {"seq": t.seq, "action": t.action, "party": t.party, "actor": t.actor,
            "fromState": t.from_state, "state": t.to_state.value,
            "requestId": t.request_id, "note": t.note, "time": t.at_ms}


def _units(params: dict[str, str], name: str) -> int:
    """A positive amount in units.

    Raises:
        ApiError: -1102 absent, -1100 malformed, zero or finer than 10**-8.
    """
    dec = optional_amount(params, name)
    if dec is None:
        raise errors.mandatory(name)
    try:
        units = to_units(dec)
    except AmountError:
        raise errors.ApiError(-1100, f"Illegal characters found in parameter '{name}'; "
                                     "at most 8 decimals.") from None
    if units <= 0:
        raise errors.ApiError(-1100, f"Illegal characters found in parameter '{name}'; "
                                     "it must be positive.")
    return units


def _required_int(params: dict[str, str], name: str, lo: int = 1, hi: int = INT64_MAX) -> int:
    value = optional_int(params, name, lo=lo, hi=hi)
    if value is None:
        raise errors.mandatory(name)
    return value


def _required_asset(params: dict[str, str], name: str) -> str:
    value = optional_asset(params, name)
    if value is None:
        raise errors.mandatory(name)
    return value


def _reason(params: dict[str, str]) -> str:
    raw = params.get("reason", "")
    if not _REASON_RE.fullmatch(raw):
        raise errors.ApiError(-1100, "Illegal characters found in parameter 'reason'; at "
                                     f"most {MAX_REASON} characters, no control "
                                     "characters.")
    return raw


def _states(raw: str | None) -> list[DealState] | None:
    if not raw:
        return None
    if raw.upper() == OPEN:
        return [s for s in DealState if s not in FINAL_STATES]
    try:
        return [DealState(raw.upper())]
    except ValueError:
        raise errors.bad_param("state", raw) from None


# --------------------------------------------------------------------------- user API
@router.post("/sapi/v1/escrow/deal")
async def open_deal(request: Request, caller: Caller = Depends(signed_escrow)
                    ) -> dict[str, Any]:
    """Open a deal as its buyer: ``amount`` of ``asset`` from account ``seller`` for
    ``price`` of ``priceAsset``, paid off the platform. CREATED: nothing is locked until
    the seller funds it. The same ``clientDealId`` again answers the same deal.

    Raises:
        ApiError: -1102 a parameter missing, -1100 malformed or out of range, -24005.
    """
    p = caller.params
    seller = _required_int(p, "seller")
    asset = _required_asset(p, "asset")
    amount = _units(p, "amount")
    price_asset = _required_asset(p, "priceAsset")
    price = _units(p, "price")
    fund_s = optional_int(p, "fundTimeout", lo=1, hi=MAX_TIMEOUT_S) or FUND_TIMEOUT_S
    pay_s = optional_int(p, "payTimeout", lo=1, hi=MAX_TIMEOUT_S) or PAY_TIMEOUT_S
    client_deal_id = (optional_client_id(p, "clientDealId")
                      or secrets.token_urlsafe(16).replace("_", "-")[:22])
    terms = Terms(seller, caller.account, asset, amount, price_asset, price,
                  fund_s * 1000, pay_s * 1000)
    with _answered():
        deal = await _escrow(request).create(_user(caller), caller.account, terms,
                                             client_deal_id, _now_ms())
    return deal_json(deal, caller.account)


async def _act(request: Request, caller: Caller, action: Action) -> dict[str, Any]:
    p = caller.params
    deal_id = _required_int(p, "dealId")
    request_id = optional_client_id(p, "requestId")
    note = _reason(p) if action is Action.DISPUTE else ""
    with _answered():
        moved = await _escrow(request).act(_user(caller), caller.account, deal_id, action,
                                           _now_ms(), request_id=request_id, note=note)
    return deal_json(moved.deal, caller.account)


def _action_route(action: Action, doc: str
                  ) -> Callable[[Request, Caller], Awaitable[dict[str, Any]]]:
    async def route(request: Request, caller: Caller = Depends(signed_escrow)
                    ) -> dict[str, Any]:
        return await _act(request, caller, action)

    route.__name__ = f"escrow_{action.value.replace('-', '_')}"
    route.__doc__ = doc
    return route


_ACTIONS: Final = {
    Action.FUND: "The seller accepts the deal: `amount` of `asset` moves from the "
                 "seller's available balance into escrow (FUNDED), or -24004 and nothing "
                 "is locked.",
    Action.PAID: "The buyer says the price was paid off the platform (PAID): the deal no "
                 "longer expires.",
    Action.RELEASE: "The seller releases the escrowed asset to the buyer (RELEASED). "
                    "Only the seller; not while disputed.",
    Action.CANCEL: "Cancel: either side before funding; once funded only the buyer, and "
                   "the asset goes back to the seller (CANCELLED).",
    Action.DISPUTE: "Either side disputes a PAID deal (DISPUTED, with `reason`): the "
                    "asset stays in escrow until an admin resolves it.",
}
for _action, _doc in _ACTIONS.items():
    router.add_api_route(f"/sapi/v1/escrow/deal/{_action.value}",
                         _action_route(_action, _doc), methods=["POST"])


@router.get("/sapi/v1/escrow/deal")
async def get_deal(request: Request, caller: Caller = Depends(signed_read)
                   ) -> dict[str, Any]:
    """One of your deals (as seller or buyer) with its history.

    Raises:
        ApiError: -1102 no dealId, -1100 malformed, -24001 not yours or none.
    """
    deal_id = _required_int(caller.params, "dealId")
    with _answered():
        deal, history = await _escrow(request).deal(caller.account, deal_id)
    return {**deal_json(deal, caller.account),
            "history": [transition_json(t) for t in history]}


@router.get("/sapi/v1/escrow/deals")
async def list_deals(request: Request, caller: Caller = Depends(signed_read)
                     ) -> list[dict[str, Any]]:
    """Your deals (as seller or buyer), oldest first, from ``fromId``; ``state`` one
    state or OPEN.

    Raises:
        ApiError: -1100 malformed or out of range.
    """
    p = caller.params
    states = _states(p.get("state"))
    from_id = optional_int(p, "fromId", lo=1) or 1
    limit = optional_int(p, "limit", lo=1, hi=MAX_LIST) or 100
    rows = await _escrow(request).deals(caller.account, states, from_id, limit)
    return [deal_json(d, caller.account) for d in rows]


# --------------------------------------------------------------------------- admin API
@admin_router.get("/deals", dependencies=[Depends(admin_action(A.ESCROW_READ))])
async def admin_deals(
    request: Request,
    state: str | None = Query(default=None, max_length=20, pattern=r"^[A-Za-z_]*$"),
    from_id: int = Query(default=1, alias="fromId", ge=1, le=INT64_MAX),
    limit: int = Query(default=100, ge=1, le=MAX_LIST),
) -> list[dict[str, Any]]:
    """Every deal, oldest first; ``state`` one state or OPEN (DISPUTED: the open
    disputes)."""
    rows = await _escrow(request).deals(None, _states(state), from_id, limit)
    return [deal_json(d) for d in rows]


@admin_router.get("/deals/{deal_id}", dependencies=[Depends(admin_action(A.ESCROW_READ))])
async def admin_deal(request: Request, deal_id: PathId) -> dict[str, Any]:
    """A deal with its history."""
    with _answered(404):
        deal, history = await _escrow(request).deal(None, deal_id)
    return {**deal_json(deal), "history": [transition_json(t) for t in history]}


class Resolution(BaseModel):
    outcome: Literal["release", "refund"]
    reason: str = Field(min_length=1, max_length=MAX_REASON, pattern=PLAIN_TEXT)
    requestId: str | None = Field(default=None, pattern=f"^{CLIENT_ID_RE.pattern}$")


@admin_router.post("/deals/{deal_id}/resolve")
async def resolve_deal(
    request: Request, deal_id: PathId, body: Resolution,
    who: AdminIdentity = Depends(admin_action(A.ESCROW_RESOLVE)),
) -> dict[str, Any]:
    """Resolve a dispute: ``release`` gives the escrowed asset to the buyer
    (RESOLVED_RELEASE), ``refund`` returns it to the seller (RESOLVED_REFUND)."""
    action = Action.RESOLVE_RELEASE if body.outcome == "release" else Action.RESOLVE_REFUND
    with _answered(404):
        moved = await _escrow(request).act(who.actor, None, deal_id, action, _now_ms(),
                                           request_id=body.requestId, note=body.reason)
    return deal_json(moved.deal)
