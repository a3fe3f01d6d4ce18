"""Signed trading endpoints: order entry (funds locked first), cancel, queries, account.

The order path: validate against the pair's filters -> one PostgreSQL statement locks the
funds and creates the order -> the command is appended to the symbol's JetStream stream
(message id = order id) and acknowledged once stored -> for RESULT/FULL responses, wait
until settlement has applied the command, then answer from the ledger.
"""

from __future__ import annotations

import re
import secrets as _stdlib_secrets
import time
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Request
from opentelemetry import trace
from prometheus_client import Counter, Histogram

from tradeplane.adapters import db
from tradeplane.adapters.bus import BusError
from tradeplane.domain.model import (
    Cancel,
    CancelAll,
    OrderType,
    Side,
    Status,
    TimeInForce,
)
from tradeplane.domain.money import (
    PLAIN_DECIMAL,
    AmountError,
    fmt_units,
    parse_decimal,
    to_units,
)
from tradeplane.domain.pairs import (
    FilterError,
    PairRules,
    check_notional,
    check_price_band,
    price_to_ticks,
    qty_to_lots,
)
from tradeplane.gateway import errors, views
from tradeplane.gateway.auth import Caller, signed_read, signed_trade
from tradeplane.gateway.context import GatewayContext, ctx
from tradeplane.gateway.orderpath import OrderPath

router = APIRouter(prefix="/api/v3", tags=["trading"])
tracer = trace.get_tracer("tradeplane.gateway")

ORDERS = Counter("tradeplane_orders_total", "Order requests by outcome", ["symbol", "outcome"])
ACK_SECONDS = Histogram(
    "tradeplane_order_ack_seconds", "Order entry: request to durable ack",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)

CLIENT_ID = re.compile(r"^[a-zA-Z0-9\-_]{1,36}$")
MAX_LIMIT = 1000


def _now_ms() -> int:
    return int(time.time() * 1000)


def _decimal(params: dict[str, str], name: str) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not PLAIN_DECIMAL.match(raw):
        raise errors.ApiError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is "
            "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
        )
    try:
        return parse_decimal(raw)
    except AmountError:
        raise errors.illegal_chars(name) from None


def _int(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise errors.illegal_chars(name)
    return int(raw)


def _limit(params: dict[str, str], default: int = 500, maximum: int = MAX_LIMIT) -> int:
    v = _int(params, "limit")
    if v is None:
        return default
    if not 1 <= v <= maximum:
        raise errors.ApiError(
            -1100,
            f"Illegal characters found in parameter 'limit'; legal range is '1-{maximum}'.",
        )
    return v


def _enum(params: dict[str, str], name: str, enum: Any, code: int, text: str) -> Any:
    raw = params.get(name)
    if not raw:
        raise errors.mandatory(name)
    try:
        return enum[raw.upper()]
    except KeyError:
        raise errors.ApiError(code, text) from None


async def _wait_settled(state: Any, symbol: str, seq: int) -> None:
    """Wait until the ledger has applied command message ``seq`` (read-your-writes).

    Raises:
        ApiError: -1007 when it has not within the response timeout.
    """
    timeout = state.ctx.settings.response_timeout_s
    if not await state.watermarks.wait(symbol, seq, timeout):
        raise errors.status_unknown()


# --------------------------------------------------------------------------- new order
@router.post("/order")
async def new_order(request: Request, caller: Caller = Depends(signed_trade)) -> dict[str, Any]:
    """Place an order (Binance ``POST /api/v3/order``).

    In a running gateway this path is served by :mod:`tradeplane.gateway.fastpath`, which
    calls the same :func:`place_new_order` without FastAPI's routing and injection.
    """
    return await place_new_order(request.app.state, caller)


async def place_new_order(state: Any, caller: Caller) -> dict[str, Any]:
    """Validate, lock funds, append the command; answer per ``newOrderRespType``.

    Raises:
        ApiError: every refusal, in Binance's codes.
    """
    started = time.perf_counter()
    c: GatewayContext = state.ctx
    p = caller.params
    rules = c.pair(p.get("symbol"))
    with tracer.start_as_current_span("order.new", attributes={"symbol": rules.symbol}) as span:
        req = await _validate(c, rules, caller.account, p)
        path: OrderPath = state.orderpath
        order_id, result = await path.place(req)
        if order_id is not None:
            span.set_attribute("order_id", order_id)
        if result == db.PlaceResult.DUPLICATE:
            ORDERS.labels(rules.symbol, "duplicate").inc()
            raise errors.duplicate_order()
        if order_id is None:
            ORDERS.labels(rules.symbol, "insufficient").inc()
            raise errors.insufficient_balance()
        try:
            seq = await path.send(rules.symbol, req.command(order_id))
        except BusError:
            # Stored in the ledger but not (provably) on the bus: the outbox relay re-sends
            # it with the same message id, so it is neither lost nor doubled.
            ORDERS.labels(rules.symbol, "unknown").inc()
            raise errors.status_unknown() from None
        ACK_SECONDS.observe(time.perf_counter() - started)
        ORDERS.labels(rules.symbol, "accepted").inc()
        resp_type = (p.get("newOrderRespType") or (
            "FULL" if req.type in (OrderType.LIMIT, OrderType.MARKET) else "ACK")).upper()
        if resp_type not in ("ACK", "RESULT", "FULL"):
            resp_type = "ACK"
        if resp_type == "ACK":
            return {
                "symbol": rules.symbol, "orderId": order_id, "orderListId": -1,
                "clientOrderId": req.client_order_id, "transactTime": req.ts,
            }
        await _wait_settled(state, rules.symbol, seq)
        row = await db.get_order(c.pool, caller.account, rules.symbol, order_id, None)
        assert row is not None
        if row["status"] == Status.REJECTED:
            raise errors.ApiError(-2010, "Order would immediately match and take.")
        fills = None
        if resp_type == "FULL":
            fills = list(await db.order_trades(c.pool, rules.symbol, order_id))
        return views.order_result(row, rules, fills)


async def _validate(
    c: GatewayContext, rules: PairRules, account: int, p: dict[str, str]
) -> db.OrderRequest:
    """Turn request parameters into an order request with its hold, or raise ApiError."""
    side = _enum(p, "side", Side, -1117, "Invalid side.")
    otype = _enum(p, "type", OrderType, -1116, "Invalid orderType.")
    if rules.trading != "enabled":
        raise errors.ApiError(-1013, "Market is closed.")
    client_id = p.get("newClientOrderId") or f"tp{_stdlib_secrets.token_hex(10)}"
    if not CLIENT_ID.match(client_id):
        raise errors.ApiError(
            -1100, "Illegal characters found in parameter 'newClientOrderId'; "
            "legal range is '^[a-zA-Z0-9-_]{1,36}$'."
        )
    price_d = _decimal(p, "price")
    qty_d = _decimal(p, "quantity")
    quote_d = _decimal(p, "quoteOrderQty")
    ts = _now_ms()
    try:
        if otype in (OrderType.LIMIT, OrderType.LIMIT_MAKER):
            tif = TimeInForce.GTC
            if otype == OrderType.LIMIT:
                tif = _enum(p, "timeInForce", TimeInForce, -1115, "Invalid timeInForce.")
            elif p.get("timeInForce"):
                raise errors.ApiError(-1106, "Parameter 'timeInForce' sent when not required.")
            if price_d is None:
                raise errors.mandatory("price")
            if qty_d is None:
                raise errors.mandatory("quantity")
            if quote_d is not None:
                raise errors.ApiError(-1106, "Parameter 'quoteOrderQty' sent when not required.")
            price = price_to_ticks(rules, price_d)
            qty = qty_to_lots(rules, qty_d)
            notional = rules.notional(price, qty)
            check_notional(rules, notional)
            check_price_band(rules, price, c.references.band_reference(rules.symbol))
            hold_asset, hold = (
                (rules.quote, notional) if side == Side.BUY else (rules.base, rules.qty_units(qty))
            )
            return db.OrderRequest(account, rules.symbol, client_id, side, otype, tif, price,
                                   qty, 0, False, hold_asset, hold, ts)
        # MARKET
        if price_d is not None:
            raise errors.ApiError(-1106, "Parameter 'price' sent when not required.")
        if (qty_d is None) == (quote_d is None):
            raise errors.ApiError(
                -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!"
                if qty_d is None else
                "Param 'quantity' and 'quoteOrderQty' cannot be sent at the same time."
            )
        ref = await c.references.market_reference(rules.symbol, side)
        band_up = 10_000 + rules.price_band_bps
        band_down = 10_000 - rules.price_band_bps
        if qty_d is not None:
            qty = qty_to_lots(rules, qty_d)
            if side == Side.SELL:
                return db.OrderRequest(account, rules.symbol, client_id, side, otype,
                                       TimeInForce.GTC, 0, qty, 0, False, rules.base,
                                       rules.qty_units(qty), ts)
            if ref:
                check_notional(rules, rules.notional(ref, qty))
            # Hold what the quantity could cost at the top of the price band; the engine
            # stops before spending more, and settlement releases what is left.
            cap = rules.notional(ref * band_up // 10_000 + 1, qty) if ref else 1
            return db.OrderRequest(account, rules.symbol, client_id, side, otype,
                                   TimeInForce.GTC, 0, qty, cap, False, rules.quote, cap, ts)
        assert quote_d is not None
        quote_units = _units(quote_d, "quoteOrderQty")
        check_notional(rules, quote_units)
        if side == Side.BUY:
            return db.OrderRequest(account, rules.symbol, client_id, side, otype,
                                   TimeInForce.GTC, 0, 0, quote_units, True, rules.quote,
                                   quote_units, ts)
        # SELL for a quote amount: hold enough base to get it at the bottom of the band.
        low = max(1, (ref or 1) * band_down // 10_000)
        lots = min(-(-quote_units // rules.notional(low, 1)), rules.max_qty // rules.lot)
        return db.OrderRequest(account, rules.symbol, client_id, side, otype, TimeInForce.GTC,
                               0, lots, quote_units, True, rules.base, rules.qty_units(lots), ts)
    except FilterError as exc:
        ORDERS.labels(rules.symbol, "filter").inc()
        raise errors.filter_failure(exc.msg) from None


def _units(d: Decimal, name: str) -> int:
    try:
        v = to_units(d)
    except AmountError:
        raise errors.illegal_chars(name) from None
    if v <= 0:
        raise errors.ApiError(-1013, "Filter failure: NOTIONAL")
    return v


# --------------------------------------------------------------------------- cancel / query
async def _find_order(c: GatewayContext, caller: Caller, rules: PairRules) -> Any:
    p = caller.params
    oid = _int(p, "orderId")
    cid = p.get("origClientOrderId")
    if oid is None and not cid:
        raise errors.ApiError(
            -1102,
            "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
        )
    return await db.get_order(c.pool, caller.account, rules.symbol, oid, cid)


@router.delete("/order")
async def cancel_order(request: Request, caller: Caller = Depends(signed_trade)) -> dict[str, Any]:
    c = ctx(request)
    rules = c.pair(caller.params.get("symbol"))
    row = await _find_order(c, caller, rules)
    if row is None or Status(row["status"]) not in (
        Status.PENDING_NEW, Status.NEW, Status.PARTIALLY_FILLED
    ):
        raise errors.unknown_order_cancel()
    cmd = Cancel(row["id"], caller.account, _now_ms())
    try:
        seq = await request.app.state.orderpath.send(rules.symbol, cmd)
    except BusError:
        raise errors.status_unknown() from None
    await _wait_settled(request.app.state, rules.symbol, seq)
    row = await db.get_order(c.pool, caller.account, rules.symbol, row["id"], None)
    assert row is not None
    if row["status"] != Status.CANCELED:
        raise errors.unknown_order_cancel()
    return _cancel_json(row, rules, caller.params.get("newClientOrderId"))


def _cancel_json(row: Any, rules: PairRules, new_client_id: str | None) -> dict[str, Any]:
    doc = views.order_json(row, rules)
    for k in ("time", "updateTime", "isWorking", "stopPrice", "icebergQty", "workingTime",
              "origQuoteOrderQty"):
        doc.pop(k)
    doc["origClientOrderId"] = row["client_order_id"]
    doc["clientOrderId"] = new_client_id or f"tpc{_stdlib_secrets.token_hex(8)}"
    doc["transactTime"] = row["updated_ms"]
    return doc


@router.delete("/openOrders")
async def cancel_open_orders(
    request: Request, caller: Caller = Depends(signed_trade)
) -> list[dict[str, Any]]:
    c = ctx(request)
    rules = c.pair(caller.params.get("symbol"))
    before = await db.open_orders(c.pool, caller.account, rules.symbol)
    if not before:
        raise errors.unknown_order_cancel()
    cmd = CancelAll(caller.account, _now_ms())
    try:
        seq = await request.app.state.orderpath.send(rules.symbol, cmd)
    except BusError:
        raise errors.status_unknown() from None
    await _wait_settled(request.app.state, rules.symbol, seq)
    out = []
    for r in before:
        row = await db.get_order(c.pool, caller.account, rules.symbol, r["id"], None)
        if row is not None and row["status"] == Status.CANCELED:
            out.append(_cancel_json(row, rules, None))
    return out


@router.get("/order")
async def query_order(request: Request, caller: Caller = Depends(signed_read)) -> dict[str, Any]:
    c = ctx(request)
    rules = c.pair(caller.params.get("symbol"))
    row = await _find_order(c, caller, rules)
    if row is None:
        raise errors.no_such_order()
    return views.order_json(row, rules)


@router.get("/openOrders")
async def query_open_orders(
    request: Request, caller: Caller = Depends(signed_read)
) -> list[dict[str, Any]]:
    c = ctx(request)
    sym = caller.params.get("symbol")
    rules = c.pair(sym) if sym else None
    rows = await db.open_orders(c.pool, caller.account, rules.symbol if rules else None)
    return [views.order_json(r, c.pairs[r["symbol"]]) for r in rows]


@router.get("/allOrders")
async def query_all_orders(
    request: Request, caller: Caller = Depends(signed_read)
) -> list[dict[str, Any]]:
    c = ctx(request)
    p = caller.params
    rules = c.pair(p.get("symbol"))
    rows = await db.all_orders(c.pool, caller.account, rules.symbol, _int(p, "orderId"),
                               _int(p, "startTime"), _int(p, "endTime"), _limit(p))
    return [views.order_json(r, rules) for r in rows]


@router.get("/myTrades")
async def query_my_trades(
    request: Request, caller: Caller = Depends(signed_read)
) -> list[dict[str, Any]]:
    c = ctx(request)
    p = caller.params
    rules = c.pair(p.get("symbol"))
    rows = await db.my_trades(c.pool, caller.account, rules.symbol, _int(p, "orderId"),
                              _int(p, "fromId"), _int(p, "startTime"), _int(p, "endTime"),
                              _limit(p))
    out: list[dict[str, Any]] = []
    for t in rows:
        out.extend(views.my_trade_json(t, caller.account, rules))
    return out


@router.get("/account")
async def account(request: Request, caller: Caller = Depends(signed_read)) -> dict[str, Any]:
    c = ctx(request)
    rows = await db.balances(c.pool, caller.account)
    bal = [
        {"asset": a, "free": fmt_units(free), "locked": fmt_units(locked)}
        for a, free, locked in rows
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
