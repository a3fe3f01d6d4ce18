"""Signed trading endpoints: order entry (funds locked first) with Binance's order controls
(stop orders, icebergs, self-trade prevention, GTD), amend, OCO order lists, cancel,
queries, account.

Each route is parse -> use case -> render: :mod:`tradeplane.gateway.orderinputs` turns the
parameters into typed requests, :mod:`tradeplane.usecases.orders` admits them (every
pre-trade rule) and places, cancels or amends them over the order path's ports, and
:mod:`tradeplane.gateway.views` renders Binance's JSON. Refusals come back as
``Refusal`` values (Binance's code and text) and are answered here as ``ApiError``.
"""

from __future__ import annotations

import secrets as _stdlib_secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from fastapi import APIRouter, Depends, Request
from opentelemetry import trace
from prometheus_client import Counter, Histogram

from tradeplane import msgtrace, stagestamps
from tradeplane.domain.errors import Unavailable
from tradeplane.domain.model import OrderType
from tradeplane.domain.money import fmt_units
from tradeplane.domain.pairs import PairRules
from tradeplane.gateway import errors, orderinputs, views
from tradeplane.gateway.auth import Caller, signed_read, signed_trade
from tradeplane.gateway.context import Gateway, gateway
from tradeplane.gateway.inputs import optional_amount, optional_client_id, optional_int
from tradeplane.usecases.orders import (
    ListRequest,
    OrderQueries,
    OrderRefused,
    OrderRequest,
    OrderRow,
    Orders,
    Placed,
    Refusal,
    Window,
    admit,
    admit_oco,
)

router = APIRouter(prefix="/api/v3", tags=["trading"])
tracer = trace.get_tracer("tradeplane.gateway")

ORDERS = Counter("tradeplane_orders_total", "Order requests by outcome", ["symbol", "outcome"])
ACK_SECONDS = Histogram(
    "tradeplane_order_ack_seconds", "Order entry: request to durable ack",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)

MAX_LIMIT = 1000


def _now_ms() -> int:
    return int(time.time() * 1000)


def _limit(params: dict[str, str], default: int = 500, maximum: int = MAX_LIMIT) -> int:
    v = optional_int(params, "limit", lo=1, hi=maximum)
    return default if v is None else v


def _refused(refusal: Refusal) -> NoReturn:
    """A use case's refusal as the API answers it."""
    raise errors.ApiError(refusal.code, refusal.msg, refusal.status)


def _orders(gw: Gateway) -> Orders:
    """The order use cases over this gateway's order path and settlement watermarks."""
    return Orders(gw.orderpath, gw.orderpath, gw.watermarks,
                  gw.ctx.settings.response_timeout_s)


def _queries(gw: Gateway) -> OrderQueries:
    """The read-only order queries over this gateway's order path."""
    return OrderQueries(gw.orderpath)


def _window(params: dict[str, str], from_id: str) -> Window:
    """A history's ``from_id`` parameter (``orderId``, ``fromId``), time range and limit."""
    return Window(optional_int(params, from_id), optional_int(params, "startTime"),
                  optional_int(params, "endTime"), _limit(params))


# --------------------------------------------------------------------------- new order
@router.post("/order")
async def new_order(request: Request, caller: Caller = Depends(signed_trade)) -> dict[str, Any]:
    """Place an order (Binance ``POST /api/v3/order``).

    In a running gateway this path is served by :mod:`tradeplane.gateway.fastpath`, which
    calls the same :func:`place_new_order` without FastAPI's routing and injection.
    """
    return await place_new_order(gateway(request.app), caller)


async def place_new_order(gw: Gateway, caller: Caller) -> dict[str, Any]:
    """Parse, admit, place (lock funds, append the command); answer per
    ``newOrderRespType``.

    Raises:
        ApiError: every refusal, in Binance's codes.
    """
    started = time.perf_counter()
    rules = gw.ctx.pair(caller.params.get("symbol"))
    if not msgtrace.tracing():
        return await _place_new_order(gw, caller, rules, started, None)
    with tracer.start_as_current_span("order.new", attributes={"symbol": rules.symbol}) as span:
        return await _place_new_order(gw, caller, rules, started, span)


async def _place_new_order(gw: Gateway, caller: Caller, rules: PairRules, started: float,
                           span: trace.Span | None) -> dict[str, Any]:
    symbol = rules.symbol
    req, resp_type = await admit_new_order(gw, rules, caller.params, caller.account)
    if isinstance(req, Refusal):
        _refused(req)
    stagestamps.stamp(stagestamps.ADMITTED)
    try:
        placed = await _orders(gw).place(req)
    except OrderRefused as exc:
        ORDERS.labels(symbol, exc.refusal.outcome).inc()
        _refused(exc.refusal)
    if span is not None:
        span.set_attribute("order_id", placed.order_id)
    ACK_SECONDS.observe(time.perf_counter() - started)
    ORDERS.labels(symbol, "accepted").inc()
    return await order_answer(gw, rules, req, placed, resp_type)


async def admit_new_order(
    gw: Gateway, rules: PairRules, params: dict[str, str], account: int
) -> tuple[OrderRequest | Refusal, str]:
    """A new order's parameters parsed and admitted against the pair's rules and
    reference price (a refusal counted as such); and its ``newOrderRespType``.

    Raises:
        ApiError: a malformed, missing or superfluous parameter; -1001 (503) when the
            market's reference price cannot be read.
    """
    symbol = rules.symbol
    spec, resp_type = orderinputs.place_order(params, account, symbol)
    refs = gw.ctx.references
    if spec.order.type == OrderType.MARKET:
        try:
            ref = await refs.market_reference(symbol, spec.side)
        except Unavailable:  # nothing is stored yet: the client may simply retry
            raise errors.backend_down() from None
    else:
        ref = refs.band_reference(symbol)
    req = admit(rules, spec, ref, _now_ms())
    if isinstance(req, Refusal) and req.outcome == "filter":
        ORDERS.labels(symbol, "filter").inc()
    return req, resp_type


async def order_answer(gw: Gateway, rules: PairRules, req: OrderRequest, placed: Placed,
                       resp_type: str) -> dict[str, Any]:
    """A placed order as ``newOrderRespType`` asks: ACK at once, RESULT and FULL once
    settlement has applied it.

    Raises:
        ApiError: the engine rejected it, or -1007 settlement did not answer in time.
    """
    symbol = rules.symbol
    if resp_type == "ACK":
        return {
            "symbol": symbol, "orderId": placed.order_id, "orderListId": -1,
            "clientOrderId": req.client_order_id, "transactTime": req.ts,
        }
    try:
        row = await _orders(gw).result(req.account, symbol, placed)
        fills = None
        if resp_type == "FULL":
            fills = list(await gw.orderpath.trades(symbol, placed.order_id))
    except OrderRefused as exc:
        _refused(exc.refusal)
    return views.order_result(row, rules, fills)


# --------------------------------------------------------------------------- cancel / query
@router.delete("/order")
async def cancel_order(request: Request, caller: Caller = Depends(signed_trade)) -> dict[str, Any]:
    gw = gateway(request.app)
    p = caller.params
    rules = gw.ctx.pair(p.get("symbol"))
    new_cid = optional_client_id(p, "newClientOrderId")
    oid, cid = orderinputs.order_key(p)
    try:
        row = await _orders(gw).cancel(caller.account, rules.symbol, oid, cid, _now_ms())
    except OrderRefused as exc:
        _refused(exc.refusal)
    return _cancel_json(row, rules, new_cid)


def _cancel_json(row: OrderRow, rules: PairRules, new_client_id: str | None) -> dict[str, Any]:
    doc = views.order_report(row, rules)
    for k in ("workingTime", "origQuoteOrderQty"):
        doc.pop(k)
    doc["origClientOrderId"] = row.client_order_id
    doc["clientOrderId"] = new_client_id or f"tpc{_stdlib_secrets.token_hex(8)}"
    return doc


@router.delete("/openOrders")
async def cancel_open_orders(
    request: Request, caller: Caller = Depends(signed_trade)
) -> list[dict[str, Any]]:
    gw = gateway(request.app)
    rules = gw.ctx.pair(caller.params.get("symbol"))
    try:
        rows = await _orders(gw).cancel_all(caller.account, rules.symbol, _now_ms())
    except OrderRefused as exc:
        _refused(exc.refusal)
    return [_cancel_json(row, rules, None) for row in rows]


@router.get("/order")
async def query_order(request: Request, caller: Caller = Depends(signed_read)) -> dict[str, Any]:
    gw = gateway(request.app)
    rules = gw.ctx.pair(caller.params.get("symbol"))
    oid, cid = orderinputs.order_key(caller.params)
    try:
        row = await _queries(gw).order(caller.account, rules.symbol, oid, cid)
    except OrderRefused as exc:
        _refused(exc.refusal)
    return views.order_json(row, rules)


@router.get("/openOrders")
async def query_open_orders(
    request: Request, caller: Caller = Depends(signed_read)
) -> list[dict[str, Any]]:
    gw = gateway(request.app)
    c = gw.ctx
    sym = caller.params.get("symbol")
    rules = c.pair(sym) if sym else None
    rows = await _queries(gw).open_orders(caller.account, rules.symbol if rules else None)
    return [views.order_json(r, c.pairs[r.symbol]) for r in rows]


@router.get("/allOrders")
async def query_all_orders(
    request: Request, caller: Caller = Depends(signed_read)
) -> list[dict[str, Any]]:
    gw = gateway(request.app)
    p = caller.params
    rules = gw.ctx.pair(p.get("symbol"))
    rows = await _queries(gw).all_orders(caller.account, rules.symbol, _window(p, "orderId"))
    return [views.order_json(r, rules) for r in rows]


@router.get("/myTrades")
async def query_my_trades(
    request: Request, caller: Caller = Depends(signed_read)
) -> list[dict[str, Any]]:
    gw = gateway(request.app)
    p = caller.params
    rules = gw.ctx.pair(p.get("symbol"))
    order_id = optional_int(p, "orderId")
    rows = await _queries(gw).my_trades(caller.account, rules.symbol, order_id,
                                        _window(p, "fromId"))
    out: list[dict[str, Any]] = []
    for t in rows:
        out.extend(views.my_trade_json(t, caller.account, rules))
    return out


@router.get("/account")
async def account(request: Request, caller: Caller = Depends(signed_read)) -> dict[str, Any]:
    rows = await _queries(gateway(request.app)).balances(caller.account)
    bal = [
        {"asset": b.asset, "free": fmt_units(b.free), "locked": fmt_units(b.locked)}
        for b in rows
    ]
    fee = "0.00100000"
    return {
        "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {"maker": fee, "taker": fee, "buyer": "0.00000000",
                            "seller": "0.00000000"},
        "canTrade": "trade" in caller.perms, "canWithdraw": "withdraw" in caller.perms,
        "canDeposit": True, "brokered": False, "requireSelfTradePrevention": False,
        "preventSor": False, "updateTime": _now_ms(), "accountType": "SPOT",
        "balances": bal, "permissions": ["SPOT"], "uid": caller.account,
    }


# --------------------------------------------------------------------------- amend
@router.put("/order/amend/keepPriority")
async def amend_keep_priority(
    request: Request, caller: Caller = Depends(signed_trade)
) -> dict[str, Any]:
    """Reduce an open order's quantity without losing its place in the queue (Binance
    ``PUT /api/v3/order/amend/keepPriority``). The order gets ``newClientOrderId`` (or a
    random one), as on Binance; settlement releases the hold of the removed lots.

    Raises:
        ApiError: -2013 unknown or finished order, -2038 an amend that is not a reduction
            or that the engine refused, -1013 a quantity off the lot grid.
    """
    gw = gateway(request.app)
    p = caller.params
    rules = gw.ctx.pair(p.get("symbol"))
    new_qty = optional_amount(p, "newQty")
    if new_qty is None:
        raise errors.mandatory("newQty")
    oid, cid = orderinputs.order_key(p)
    new_cid = orderinputs.client_id_or_random(p, "newClientOrderId")
    try:
        done = await _orders(gw).amend(rules, caller.account, oid, cid, new_qty, new_cid,
                                       _now_ms())
    except OrderRefused as exc:
        _refused(exc.refusal)
    after = done.after
    doc: dict[str, Any] = {
        "transactTime": after.updated_ms,
        # The command's position in the symbol's log: unique and increasing per symbol.
        "executionId": done.seq,
        "amendedOrder": views.amended_order_json(after, rules, done.before.client_order_id),
    }
    if done.order_list is not None and done.list_legs is not None:
        doc["listStatus"] = views.order_list_json(done.order_list, done.list_legs)
        for k in ("listStatusType", "transactionTime"):
            doc["listStatus"].pop(k)
    return doc


# --------------------------------------------------------------------------- order lists
@router.post("/orderList/oco")
async def new_oco(request: Request, caller: Caller = Depends(signed_trade)) -> dict[str, Any]:
    """Place an OCO pair (Binance ``POST /api/v3/orderList/oco``): an above and a below
    order of one side and quantity, of which at most one executes. One hold covers both:
    the quantity for a SELL, the dearer leg for a BUY.

    Raises:
        ApiError: every refusal, in Binance's codes.
    """
    gw = gateway(request.app)
    c = gw.ctx
    rules = c.pair(caller.params.get("symbol"))
    symbol = rules.symbol
    spec, resp_type = orderinputs.place_oco(caller.params, caller.account, symbol)
    req = admit_oco(rules, spec, c.references.band_reference(symbol), _now_ms())
    if isinstance(req, Refusal):
        if req.outcome == "filter":
            ORDERS.labels(symbol, "filter").inc()
        _refused(req)
    orders = _orders(gw)
    try:
        placed = await orders.place_oco(req)
    except OrderRefused as exc:
        _refused(exc.refusal)
    if resp_type == "ACK":
        lst = await gw.orderpath.order_list(caller.account, placed.list_id, None)
        assert lst is not None
        doc = views.order_list_json(lst, _pending_legs(req, placed.order_ids))
        doc["orderReports"] = [
            {"symbol": symbol, "orderId": oid, "orderListId": placed.list_id,
             "clientOrderId": leg.client_order_id, "transactTime": req.ts}
            for leg, oid in zip(req.legs, placed.order_ids, strict=True)
        ]
        return doc
    try:
        lst, rows = await orders.oco_result(caller.account, symbol, placed)
    except OrderRefused as exc:
        _refused(exc.refusal)
    doc = views.order_list_json(lst, rows)
    doc["orderReports"] = [views.order_report(r, rules) for r in rows]
    if resp_type == "FULL":
        for report, r in zip(doc["orderReports"], rows, strict=True):
            trades = await gw.orderpath.trades(symbol, r.id)
            report["fills"] = [views.fill_json(t, r.id, rules) for t in trades]
    return doc


@dataclass(frozen=True, slots=True)
class _PendingLeg:
    symbol: str
    id: int
    client_order_id: str


def _pending_legs(req: ListRequest, order_ids: Sequence[int]) -> list[_PendingLeg]:
    return [_PendingLeg(req.symbol, oid, leg.client_order_id)
            for leg, oid in zip(req.legs, order_ids, strict=True)]


@router.get("/orderList")
async def query_order_list(
    request: Request, caller: Caller = Depends(signed_read)
) -> dict[str, Any]:
    gw = gateway(request.app)
    list_id, list_cid = orderinputs.list_key(caller.params, "origClientOrderId")
    try:
        lst, legs = await _queries(gw).order_list(caller.account, list_id, list_cid)
    except OrderRefused as exc:
        _refused(exc.refusal)
    return views.order_list_json(lst, legs)


@router.get("/openOrderList")
async def query_open_order_lists(
    request: Request, caller: Caller = Depends(signed_read)
) -> list[dict[str, Any]]:
    lists = await _queries(gateway(request.app)).open_order_lists(caller.account)
    return [views.order_list_json(lst, legs) for lst, legs in lists]


@router.delete("/orderList")
async def cancel_order_list(
    request: Request, caller: Caller = Depends(signed_trade)
) -> dict[str, Any]:
    """Cancel an OCO list (Binance ``DELETE /api/v3/orderList``): the engine cancels both
    legs when either is canceled.

    Raises:
        ApiError: -2011 an unknown or finished list.
    """
    gw = gateway(request.app)
    p = caller.params
    rules = gw.ctx.pair(p.get("symbol"))
    new_cid = optional_client_id(p, "newClientOrderId")
    list_id, list_cid = orderinputs.list_key(p, "listClientOrderId")
    try:
        lst, legs = await _orders(gw).cancel_list(caller.account, rules.symbol, list_id,
                                                  list_cid, _now_ms())
    except OrderRefused as exc:
        _refused(exc.refusal)
    doc = views.order_list_json(lst, legs, time_ms=lst.updated_ms)
    doc["orderReports"] = [_cancel_json(r, rules, new_cid) for r in legs]
    return doc


# --------------------------------------------------------------------------- test, cancel-replace
@router.post("/order/test")
async def test_order(request: Request, caller: Caller = Depends(signed_trade)) -> dict[str, Any]:
    """Check a new order as ``POST /api/v3/order`` would (every parameter and pre-trade
    rule) without placing it (Binance ``POST /api/v3/order/test``): ``{}`` when it would
    be admitted.

    Raises:
        ApiError: what placing it would answer before funds are locked.
    """
    gw = gateway(request.app)
    rules = gw.ctx.pair(caller.params.get("symbol"))
    req, _ = await admit_new_order(gw, rules, caller.params, caller.account)
    if isinstance(req, Refusal):
        _refused(req)
    return {}


#: Binance's cancel-replace errors: one half failed (409), or the whole (400).
_PARTIAL = (-2021, "Order cancel-replace partially failed.", 409)
_FAILED = (-2022, "Order cancel-replace failed.", 400)


@router.post("/order/cancelReplace")
async def cancel_replace(
    request: Request, caller: Caller = Depends(signed_trade)
) -> dict[str, Any]:
    """Cancel an open order and place a new one in its place (Binance ``POST
    /api/v3/order/cancelReplace``): ``cancelOrderId`` or ``cancelOrigClientOrderId``, the
    canceled order's new client id ``cancelNewClientOrderId``, ``cancelReplaceMode``
    STOP_ON_FAILURE (a refused cancel places nothing) or ALLOW_FAILURE, and the new
    order's parameters as ``POST /api/v3/order``. The cancel is settled first: the new
    order may use the funds the old one held.

    Raises:
        ApiError: a malformed parameter (nothing done); -2022 (400) the cancel failed and
            the new order was not placed or failed too, -2021 (409) one of the two failed,
            each with ``data`` holding both outcomes as Binance does; -1007 when a
            command's fate is unknown.
    """
    gw = gateway(request.app)
    p = caller.params
    rules = gw.ctx.pair(p.get("symbol"))
    symbol = rules.symbol
    allow_failure = orderinputs.cancel_replace_mode(p)
    oid, cid = orderinputs.order_key(p, "cancelOrderId", "cancelOrigClientOrderId")
    cancel_cid = optional_client_id(p, "cancelNewClientOrderId")
    req, resp_type = await admit_new_order(gw, rules, p, caller.account)
    try:
        done = await _orders(gw).cancel_replace(caller.account, symbol, oid, cid, req,
                                                _now_ms(), allow_failure=allow_failure)
    except OrderRefused as exc:
        _refused(exc.refusal)
    cancel_ok = isinstance(done.canceled, OrderRow)
    cancel_doc = (_cancel_json(done.canceled, rules, cancel_cid)
                  if isinstance(done.canceled, OrderRow)
                  else {"code": done.canceled.code, "msg": done.canceled.msg})
    new_doc: dict[str, Any] | None = None
    new_ok = False
    if isinstance(done.placed, Refusal):
        ORDERS.labels(symbol, done.placed.outcome).inc()
        new_doc = {"code": done.placed.code, "msg": done.placed.msg}
    elif done.placed is not None:
        ORDERS.labels(symbol, "accepted").inc()
        assert isinstance(req, OrderRequest)
        try:
            new_doc = await order_answer(gw, rules, req, done.placed, resp_type)
            new_ok = True
        except errors.ApiError as exc:  # placed, then rejected by the engine
            new_doc = {"code": exc.code, "msg": exc.msg}
    doc = {
        "cancelResult": "SUCCESS" if cancel_ok else "FAILURE",
        "newOrderResult": ("NOT_ATTEMPTED" if done.placed is None
                           else "SUCCESS" if new_ok else "FAILURE"),
        "cancelResponse": cancel_doc,
        "newOrderResponse": new_doc,
    }
    if cancel_ok and new_ok:
        return doc
    code, msg, status = _PARTIAL if cancel_ok or new_ok else _FAILED
    raise errors.ApiError(code, msg, status, data=doc)
