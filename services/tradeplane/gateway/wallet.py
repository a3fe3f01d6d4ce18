"""Binance's wallet endpoints (``/sapi/v1/capital/...``) and the withdrawal admin endpoints.

The routes parse and render; the operations are the custody use cases
(:class:`~tradeplane.usecases.custody.CustodyCases`, ``ctx.custody``), which the wallet
watcher shares. The gateway never talks to a chain node: deposit addresses and address
validation come from the wallet's watcher by NATS request/reply (``wallet.<NAME>.address``,
``wallet.<NAME>.validate``; see ``wallets/service.py``); deposits and withdrawals are
read from PostgreSQL. A withdrawal request locks its amount plus the wallet's fee in the
same transaction that creates it; every refusal happens before, or rolls it back: nothing
stays locked.

Which wallet serves a coin: the ``wallets`` row whose asset is the coin (the API's
``network`` is the coin itself, as Binance names native networks; the chain name or the
wallet name are accepted too).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from tradeplane.domain.access import AdminAction as A
from tradeplane.domain.custody import (
    API_WITHDRAW_STATUSES,
    ASSET,
    DEPOSIT_API_STATUS,
    DepositRow,
    WalletSpec,
    WalletSpecError,
    WithdrawalStatus,
)
from tradeplane.domain.errors import NotFound
from tradeplane.domain.money import AmountError, fmt_units, to_units
from tradeplane.gateway import errors
from tradeplane.gateway.auth import Caller, signed_read, signed_withdraw
from tradeplane.gateway.context import GatewayContext, ctx
from tradeplane.gateway.inputs import (
    MAX_TIME_MS,
    PLAIN_TEXT,
    BodyId,
    PathId,
    optional_int,
    parse_amount,
    parse_int,
)
from tradeplane.gateway.rbac import AdminIdentity, admin_action
from tradeplane.gateway.users import require_2fa_for_account
from tradeplane.usecases.custody import (
    ADDRESS,
    CLIENT_ID,
    DepositQuery,
    Refusal,
    WatcherUnavailable,
    WithdrawalNotMovable,
    WithdrawalRow,
    WithdrawQuery,
    withdrawal_doc,
)

capital = APIRouter(prefix="/sapi/v1/capital", tags=["wallet"])
admin_router = APIRouter(prefix="/admin", tags=["admin"])
#: Both, for the app to include.
router = APIRouter()
log = logging.getLogger("tradeplane.gateway.wallet")

#: How long the gateway waits for a watcher's answer (address, validation).
WATCHER_TIMEOUT_S = 5.0
MAX_HISTORY = 1000
NINETY_DAYS_MS = 90 * 24 * 3600 * 1000
TXID = re.compile(r"[0-9A-Fa-f]{1,128}")


def _now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- helpers
def unknown_coin() -> errors.ApiError:
    return errors.ApiError(-4018, "We don't have this asset.")


def backend_unavailable() -> errors.ApiError:
    return errors.ApiError(-1001, "Internal error; unable to process your request. Please "
                                  "try again.", 503)


async def wallet_for(c: GatewayContext, coin: str | None, network: str | None) -> WalletSpec:
    """The wallet serving ``coin`` on ``network``.

    Raises:
        ApiError: -1102 no coin, -4018 unknown coin, -4019 not on that network.
    """
    if not coin:
        raise errors.mandatory("coin")
    if not ASSET.fullmatch(coin.upper()):
        raise unknown_coin()
    try:
        found = await c.custody.wallets(coin.upper())
    except WalletSpecError:
        raise backend_unavailable() from None
    if not found:
        raise unknown_coin()
    for spec in found:
        if spec.accepts_network(network):
            return spec
    raise errors.ApiError(-4019, "Current asset is not open for withdrawal.")


@contextmanager
def watcher_answers(spec: WalletSpec) -> Iterator[None]:
    """Around a use case that asks the wallet's watcher (NATS request/reply): whatever
    keeps it from answering is logged as one warning naming the wallet; the client only
    sees -1001.

    Raises:
        ApiError: -1001 (503) when the watcher does not answer or answers an error.
    """
    try:
        yield
    except WatcherUnavailable as exc:
        log.warning("wallet %s: %s", spec.name, exc)
        raise backend_unavailable() from None


def _coin_filter(params: dict[str, str]) -> str | None:
    """The optional ``coin`` of a history query (an unknown one matches nothing).

    Raises:
        ApiError: -1100 for a value that cannot be an asset.
    """
    coin = (params.get("coin") or "").upper()
    if coin and not ASSET.fullmatch(coin):
        raise errors.bad_param("coin", coin)
    return coin or None


def _txid_filter(params: dict[str, str]) -> str | None:
    """The optional ``txId`` of a deposit query: a transaction id is hex on every chain
    we serve.

    Raises:
        ApiError: -1100 for anything else.
    """
    txid = params.get("txId") or ""
    if txid and not TXID.fullmatch(txid):
        raise errors.bad_param("txId", txid)
    return txid or None


def _window(params: dict[str, str]) -> tuple[int, int]:
    """Binance's history window: at most 90 days, the last 90 by default."""
    start = optional_int(params, "startTime", hi=MAX_TIME_MS)
    end = optional_int(params, "endTime", hi=MAX_TIME_MS)
    if end is None:
        end = _now_ms() if start is None else start + NINETY_DAYS_MS
    if start is None:
        start = end - NINETY_DAYS_MS
    if not 0 <= end - start <= NINETY_DAYS_MS:
        raise errors.ApiError(-4047, "Time interval must be within 0-90 days")
    return start, end


def _paging(params: dict[str, str]) -> tuple[int, int]:
    offset = optional_int(params, "offset") or 0
    limit = optional_int(params, "limit", lo=1, hi=MAX_HISTORY)
    return offset, MAX_HISTORY if limit is None else limit


def _time_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


async def _specs(c: GatewayContext) -> dict[str, WalletSpec]:
    try:
        return {s.name: s for s in await c.custody.wallets()}
    except WalletSpecError:
        raise backend_unavailable() from None


def deposit_json(d: DepositRow, spec: WalletSpec | None) -> dict[str, Any]:
    required = spec.confirmations if spec else 0
    doc: dict[str, Any] = {
        "id": str(d.id), "amount": fmt_units(d.amount), "coin": d.asset,
        "network": spec.network_code if spec else d.asset,
        "status": DEPOSIT_API_STATUS.get(d.status, 0), "address": d.address,
        "addressTag": "", "txId": d.txid, "insertTime": d.created_ms, "transferType": 0,
        "confirmTimes": f"{d.confirmations}/{required}", "unlockConfirm": required,
        "walletType": 0,
    }
    if d.credited_ms is not None:
        doc["completeTime"] = d.credited_ms
    return doc


def withdrawal_json(w: WithdrawalRow, spec: WalletSpec | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": str(w.id), "amount": fmt_units(w.amount), "transactionFee": fmt_units(w.fee),
        "coin": w.asset, "status": _API_STATUS[w.status], "address": w.address,
        "addressTag": "", "txId": w.txid or "", "applyTime": _time_text(w.created_ms),
        "network": spec.network_code if spec else w.asset, "transferType": 0,
        "info": w.info, "confirmNo": w.confirmations, "walletType": 0, "txKey": "",
    }
    if w.client_id is not None:
        doc["withdrawOrderId"] = w.client_id
    if w.completed_ms is not None:
        doc["completeTime"] = _time_text(w.completed_ms)
    return doc


_API_STATUS = {s: code for code, states in API_WITHDRAW_STATUSES.items() for s in states}


# --------------------------------------------------------------------------- coins
#: Binance's way of writing "no maximum" (only the balance limits a withdrawal).
NO_WITHDRAW_MAX = "9999999999.99999999"


def network_json(spec: WalletSpec, *, default: bool) -> dict[str, Any]:
    """One ``networkList`` entry of ``capital/config/getall``: the wallet's chain."""
    return {
        "network": spec.network_code, "coin": spec.asset,
        "name": f"{spec.chain.capitalize()} ({spec.network})", "isDefault": default,
        "depositEnable": True, "withdrawEnable": True,
        "withdrawFee": fmt_units(spec.withdraw_fee), "withdrawMin": fmt_units(spec.withdraw_min),
        "withdrawMax": NO_WITHDRAW_MAX, "withdrawIntegerMultiple": fmt_units(1),
        "minConfirm": spec.confirmations, "unLockConfirm": spec.confirmations,
        # what the gateway checks before the watcher validates the address on its chain
        "addressRegex": f"^{ADDRESS.pattern.removeprefix('^').removesuffix('$')}$",
        "addressRule": "", "memoRegex": "",
        "sameAddress": False, "resetAddressStatus": False, "busy": False,
        "depositDesc": "", "withdrawDesc": "", "specialTips": "", "specialWithdrawTips": "",
        "depositDust": fmt_units(1),
    }


def coin_json(coin: str, networks: list[WalletSpec], *, trading: bool,
              balance: tuple[int, int], withdrawing: int) -> dict[str, Any]:
    """One coin of ``capital/config/getall``; ``balance`` is (available, locked), the locked
    part including what ``withdrawing`` holds."""
    available, locked = balance
    return {
        "coin": coin, "name": coin, "depositAllEnable": bool(networks),
        "withdrawAllEnable": bool(networks), "free": fmt_units(available),
        "locked": fmt_units(max(locked - withdrawing, 0)), "freeze": fmt_units(0),
        "withdrawing": fmt_units(withdrawing), "ipoing": fmt_units(0),
        "ipoable": fmt_units(0), "storage": fmt_units(0), "isLegalMoney": False,
        "trading": trading,
        "networkList": [network_json(s, default=i == 0) for i, s in enumerate(networks)],
    }


@capital.get("/config/getall")
async def all_coins(request: Request, caller: Caller = Depends(signed_read)
                    ) -> list[dict[str, Any]]:
    """Every coin the exchange knows (traded in a pair, served by a wallet, or held by the
    caller), with the caller's balance and the networks it can be deposited and withdrawn
    on: one per wallet of the coin (the first is the default, as ``network`` absent means
    in ``deposit/address`` and ``withdraw/apply``). A coin without a wallet has none."""
    c = ctx(request)
    specs = await _specs(c)
    networks: dict[str, list[WalletSpec]] = {}
    for spec in specs.values():  # by wallet name, as wallet_for chooses
        same = networks.setdefault(spec.asset, [])
        if all(s.network_code != spec.network_code for s in same):
            same.append(spec)
    traded = {a for p in c.pairs.values() if p.trading == "enabled" for a in (p.base, p.quote)}
    listed = {a for p in c.pairs.values() for a in (p.base, p.quote)}
    balances = {a: (free, locked)
                for a, free, locked in await c.custody.balances(caller.account)}
    held = await c.custody.withdrawing(caller.account)
    coins = sorted(listed | set(networks) | set(balances))
    return [coin_json(coin, networks.get(coin, []), trading=coin in traded,
                      balance=balances.get(coin, (0, 0)), withdrawing=held.get(coin, 0))
            for coin in coins]


# --------------------------------------------------------------------------- deposits
@capital.get("/deposit/address")
async def deposit_address(request: Request, caller: Caller = Depends(signed_read)
                          ) -> dict[str, Any]:
    """The caller's deposit address for ``coin`` (created by the watcher on first use)."""
    c = ctx(request)
    p = caller.params
    spec = await wallet_for(c, p.get("coin"), p.get("network"))
    with watcher_answers(spec):
        address = await c.custody.deposit_address(spec, caller.account)
    return {"address": address, "coin": spec.asset, "tag": "", "url": ""}


@capital.get("/deposit/hisrec")
async def deposit_history(request: Request, caller: Caller = Depends(signed_read)
                          ) -> list[dict[str, Any]]:
    c = ctx(request)
    p = caller.params
    status = optional_int(p, "status")
    statuses = None if status is None else [
        s.value for s, code in DEPOSIT_API_STATUS.items() if code == status]
    start, end = _window(p)
    offset, limit = _paging(p)
    rows = await c.custody.deposit_history(caller.account, DepositQuery(
        asset=_coin_filter(p), statuses=statuses, start_ms=start, end_ms=end, offset=offset,
        limit=limit, txid=_txid_filter(p)))
    specs = await _specs(c)
    return [deposit_json(d, specs.get(d.wallet)) for d in rows]


# --------------------------------------------------------------------------- withdrawals
@capital.post("/withdraw/apply")
async def withdraw_apply(request: Request, caller: Caller = Depends(signed_withdraw)
                         ) -> dict[str, str]:
    """Request a withdrawal: amount + fee locked now; sent by the wallet's watcher (after
    an admin's approval above the wallet's threshold)."""
    c = ctx(request)
    p = caller.params
    # Once the owner turned 2FA on, a withdrawal needs its code (``totpCode``; ours).
    await require_2fa_for_account(request, caller.account, p.get("totpCode"))
    spec = await wallet_for(c, p.get("coin"), p.get("network"))
    address = p.get("address") or ""
    if not address:
        raise errors.mandatory("address")
    raw_amount = p.get("amount") or ""
    if not raw_amount:
        raise errors.mandatory("amount")
    amount_d = parse_amount(raw_amount, "amount")
    try:
        amount = to_units(amount_d)
    except AmountError:
        raise errors.ApiError(-4021, f"Asset withdrawal must be an {fmt_units(1)} multiple "
                                     f"of {fmt_units(1)}.") from None
    client_id = p.get("withdrawOrderId") or None
    with watcher_answers(spec):
        done = await c.custody.request_withdrawal(spec, caller.account, address, amount,
                                                  client_id, _now_ms())
    if isinstance(done, Refusal):
        raise refused(done, spec, client_id)
    return {"id": str(done)}


def insufficient() -> errors.ApiError:
    return errors.ApiError(-4026, "You have insufficient balance.")


def illegal_address() -> errors.ApiError:
    return errors.ApiError(-4033, "Illegal address.")


def refused(why: Refusal, spec: WalletSpec, client_id: str | None) -> errors.ApiError:
    """A refused withdrawal (or whitelist entry) as Binance answers it."""
    if why is Refusal.BELOW_MINIMUM:
        return errors.ApiError(
            -4022, f"Not less than the minimum pick-up quantity {fmt_units(spec.withdraw_min)}.")
    if why is Refusal.BAD_CLIENT_ID:
        return errors.bad_param("withdrawOrderId", client_id or "")
    if why is Refusal.ILLEGAL_ADDRESS:
        return illegal_address()
    if why is Refusal.NOT_WHITELISTED:
        return errors.ApiError(-4035, "This address is not on the whitelist. Please join and "
                                      "try again.")
    if why is Refusal.INSUFFICIENT:
        return insufficient()
    return errors.ApiError(-4001, "Invalid operation: withdrawOrderId already used for "
                                  "another withdrawal.")


@capital.get("/withdraw/history")
async def withdraw_history(request: Request, caller: Caller = Depends(signed_read)
                           ) -> list[dict[str, Any]]:
    c = ctx(request)
    p = caller.params
    status = optional_int(p, "status")
    statuses = None if status is None else [s.value for s in
                                            API_WITHDRAW_STATUSES.get(status, [])]
    ids: list[int] | None = None
    if p.get("idList"):
        parts = p["idList"].split(",", MAX_HISTORY)
        if len(parts) > MAX_HISTORY:
            raise errors.ApiError(-1100, f"At most {MAX_HISTORY} ids in 'idList'.")
        ids = [parse_int(x, "idList") for x in parts]
    client_id = p.get("withdrawOrderId") or None
    if client_id is not None and not CLIENT_ID.fullmatch(client_id):
        raise errors.bad_param("withdrawOrderId", client_id)
    start, end = _window(p)
    offset, limit = _paging(p)
    rows = await c.custody.withdraw_history(caller.account, WithdrawQuery(
        asset=_coin_filter(p), statuses=statuses, client_id=client_id, ids=ids,
        start_ms=start, end_ms=end, offset=offset, limit=limit))
    specs = await _specs(c)
    return [withdrawal_json(w, specs.get(w.wallet)) for w in rows]


# --------------------------------------------------------------------------- admin
#: A withdrawal as the admin API lists it (and the audit log records it).
admin_json = withdrawal_doc


@contextmanager
def _movable(wid: int) -> Iterator[None]:
    """Around an admin's move of withdrawal ``wid``: its refusals as error codes.

    Raises:
        ApiError: -4029 (404) no such withdrawal, -4001 past the point of that move.
    """
    try:
        yield
    except NotFound:
        raise errors.ApiError(-4029, "The withdrawal record does not exist.", 404) from None
    except WithdrawalNotMovable as exc:
        raise errors.ApiError(
            -4001, f"Invalid operation: withdrawal {wid} is {exc.status.value}.") from None


@admin_router.get("/withdrawals", dependencies=[Depends(admin_action(A.WITHDRAWAL_READ))])
async def list_withdrawals(request: Request, status: str | None = None, limit: int = 100
                           ) -> list[dict[str, Any]]:
    try:
        wanted = None if not status else WithdrawalStatus(status.upper())
    except ValueError:
        raise errors.bad_param("status", status or "") from None
    rows = await ctx(request).custody.all_withdrawals(wanted, max(1, min(limit, 1000)))
    return [admin_json(w) for w in rows]


@admin_router.post("/withdrawals/{wid}/approve")
async def approve_withdrawal(
    request: Request, wid: PathId, who: AdminIdentity = Depends(admin_action(A.WITHDRAWAL_APPROVE))
) -> dict[str, Any]:
    with _movable(wid):
        w = await ctx(request).custody.approve(who.actor, wid, _now_ms())
    return admin_json(w)


class Rejection(BaseModel):
    reason: str = Field(default="rejected by an administrator", max_length=256,
                        pattern=PLAIN_TEXT)


@admin_router.post("/withdrawals/{wid}/reject")
async def reject_withdrawal(
    request: Request, wid: PathId, body: Rejection | None = None,
    who: AdminIdentity = Depends(admin_action(A.WITHDRAWAL_APPROVE)),
) -> dict[str, Any]:
    """Refuse a withdrawal not yet being sent (PENDING or APPROVED); its hold goes back."""
    with _movable(wid):
        w = await ctx(request).custody.reject(who.actor, wid, (body or Rejection()).reason,
                                              _now_ms())
    return admin_json(w)


class WhitelistEntry(BaseModel):
    account: BodyId
    asset: str = Field(pattern=r"^[A-Z0-9]{2,10}$")
    address: str = Field(pattern=f"^{ADDRESS.pattern}$")


@admin_router.post("/withdraw-whitelist")
async def whitelist_add(
    request: Request, body: WhitelistEntry,
    who: AdminIdentity = Depends(admin_action(A.WITHDRAWAL_WHITELIST)),
) -> dict[str, Any]:
    """Put an address on a user's whitelist; the asset's watcher checks it is payable on
    that chain first, as for a withdrawal (-4033 otherwise)."""
    c = ctx(request)
    spec = await wallet_for(c, body.asset, None)
    try:
        with watcher_answers(spec):
            added = await c.custody.whitelist_add(who.actor, spec, body.account, body.address,
                                                  body.model_dump())
    except NotFound:
        raise errors.ApiError(-1100, f"Unknown account {body.account}.") from None
    if isinstance(added, Refusal):
        raise illegal_address()
    return {"added": added, **body.model_dump()}


@admin_router.delete("/withdraw-whitelist")
async def whitelist_remove(
    request: Request, body: WhitelistEntry,
    who: AdminIdentity = Depends(admin_action(A.WITHDRAWAL_WHITELIST)),
) -> dict[str, Any]:
    removed = await ctx(request).custody.whitelist_remove(
        who.actor, body.account, body.asset, body.address, body.model_dump())
    return {"removed": removed, **body.model_dump()}


router.include_router(capital)
router.include_router(admin_router)
