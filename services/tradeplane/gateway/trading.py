"""Signed trading endpoints: order entry (funds locked first) with Binance's order controls
(stop orders, icebergs, self-trade prevention, GTD), amend, OCO order lists, cancel,
queries, account.

The order path: validate against the pair's filters -> one PostgreSQL statement locks the
funds and creates the order -> the command is appended to the symbol's JetStream stream
(message id = order id) and acknowledged once stored -> for RESULT/FULL responses, wait
until settlement has applied the command, then answer from the ledger.
"""

from __future__ import annotations

import secrets as _stdlib_secrets
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Request
from opentelemetry import trace
from prometheus_client import Counter, Histogram

from tradeplane.adapters import db
from tradeplane.adapters.bus import BusError
from tradeplane.domain.model import (
    STOP_TYPES,
    TERMINAL,
    Amend,
    Cancel,
    CancelAll,
    OrderType,
    Reason,
    Side,
    Status,
    StpMode,
    TimeInForce,
)
from tradeplane.domain.money import AmountError, fmt_units, to_units
from tradeplane.domain.pairs import (
    FilterError,
    PairRules,
    check_iceberg,
    check_notional,
    check_price_band,
    order_cost,
    price_to_ticks,
    qty_to_lots,
    stop_market_cap,
)
from tradeplane.gateway import errors, views
from tradeplane.gateway.auth import Caller, signed_read, signed_trade
from tradeplane.gateway.context import Gateway, GatewayContext, ctx, gateway
from tradeplane.gateway.inputs import (
    MAX_TIME_MS,
    optional_amount,
    optional_client_id,
    optional_int,
)

router = APIRouter(prefix="/api/v3", tags=["trading"])
tracer = trace.get_tracer("tradeplane.gateway")

ORDERS = Counter("tradeplane_orders_total", "Order requests by outcome", ["symbol", "outcome"])
ACK_SECONDS = Histogram(
    "tradeplane_order_ack_seconds", "Order entry: request to durable ack",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)

MAX_LIMIT = 1000
RESPONSE_TYPES = ("ACK", "RESULT", "FULL")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _limit(params: dict[str, str], default: int = 500, maximum: int = MAX_LIMIT) -> int:
    v = optional_int(params, "limit")
    if v is None:
        return default
    if not 1 <= v <= maximum:
        raise errors.ApiError(
            -1100,
            f"Illegal characters found in parameter 'limit'; legal range is '1-{maximum}'.",
        )
    return v


def _response_type(p: dict[str, str], default: str) -> str:
    """``newOrderRespType``: ACK, RESULT or FULL (checked before anything is placed).

    Raises:
        ApiError: -1100 for any other value.
    """
    raw = p.get("newOrderRespType")
    if not raw:
        return default
    if raw.upper() not in RESPONSE_TYPES:
        raise errors.ApiError(
            -1100, "Illegal characters found in parameter 'newOrderRespType'; legal range "
                   "is 'ACK, RESULT, FULL'.")
    return raw.upper()


def _enum(params: dict[str, str], name: str, enum: Any, code: int, text: str) -> Any:
    raw = params.get(name)
    if not raw:
        raise errors.mandatory(name)
    try:
        return enum[raw.upper()]
    except KeyError:
        raise errors.ApiError(code, text) from None


async def _wait_settled(gw: Gateway, symbol: str, seq: int) -> None:
    """Wait until the ledger has applied command message ``seq`` (read-your-writes).

    Raises:
        ApiError: -1007 when it has not within the response timeout.
    """
    timeout = gw.ctx.settings.response_timeout_s
    if not await gw.watermarks.wait(symbol, seq, timeout):
        raise errors.status_unknown()


# --------------------------------------------------------------------------- new order
@router.post("/order")
async def new_order(request: Request, caller: Caller = Depends(signed_trade)) -> dict[str, Any]:
    """Place an order (Binance ``POST /api/v3/order``).

    In a running gateway this path is served by :mod:`tradeplane.gateway.fastpath`, which
    calls the same :func:`place_new_order` without FastAPI's routing and injection.
    """
    return await place_new_order(gateway(request.app), caller)


async def place_new_order(gw: Gateway, caller: Caller) -> dict[str, Any]:
    """Validate, lock funds, append the command; answer per ``newOrderRespType``.

    Raises:
        ApiError: every refusal, in Binance's codes.
    """
    started = time.perf_counter()
    c = gw.ctx
    p = caller.params
    rules = c.pair(p.get("symbol"))
    with tracer.start_as_current_span("order.new", attributes={"symbol": rules.symbol}) as span:
        req = await _validate(c, rules, caller.account, p)
        resp_type = _response_type(
            p, "FULL" if req.type in (OrderType.LIMIT, OrderType.MARKET) else "ACK")
        path = gw.orderpath
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
            # it once the engine has provably processed the log past it (and the order is
            # still pending), so it is neither lost nor doubled.
            ORDERS.labels(rules.symbol, "unknown").inc()
            raise errors.status_unknown() from None
        ACK_SECONDS.observe(time.perf_counter() - started)
        ORDERS.labels(rules.symbol, "accepted").inc()
        if resp_type == "ACK":
            return {
                "symbol": rules.symbol, "orderId": order_id, "orderListId": -1,
                "clientOrderId": req.client_order_id, "transactTime": req.ts,
            }
        await _wait_settled(gw, rules.symbol, seq)
        row = await db.get_order(c.pool, caller.account, rules.symbol, order_id, None)
        assert row is not None
        if row["status"] == Status.REJECTED:
            raise errors.engine_rejection(Reason(row["reason"]))
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
    client_id = _client_id(p, "newClientOrderId")
    stp = _stp(p, rules)
    ts = _now_ms()
    try:
        if otype != OrderType.MARKET:
            qty_d = optional_amount(p, "quantity")
            if qty_d is None:
                raise errors.mandatory("quantity")
            if p.get("quoteOrderQty"):
                raise errors.not_required("quoteOrderQty")
            leg = _controlled_order(c, rules, p, LegParams(), otype, side,
                                    qty_to_lots(rules, qty_d), ts)
            return db.OrderRequest(
                account, rules.symbol, client_id, side, otype, leg.tif, leg.price, leg.qty,
                leg.quote_qty, False, leg.hold_asset, leg.hold, ts, leg.stop_price,
                leg.iceberg_qty, stp, leg.good_till,
            )
        for name in ("stopPrice", "icebergQty", "goodTillDate"):
            if p.get(name):
                raise errors.not_required(name)
        return await _market_order(c, rules, account, p, side, client_id, stp, ts)
    except FilterError as exc:
        ORDERS.labels(rules.symbol, "filter").inc()
        raise errors.filter_failure(exc.msg) from None


async def _market_order(
    c: GatewayContext, rules: PairRules, account: int, p: dict[str, str], side: Side,
    client_id: str, stp: StpMode, ts: int,
) -> db.OrderRequest:
    otype = OrderType.MARKET
    if p.get("price"):
        raise errors.not_required("price")
    qty_d = optional_amount(p, "quantity")
    quote_d = optional_amount(p, "quoteOrderQty")
    if (qty_d is None) == (quote_d is None):
        raise errors.ApiError(
            -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!"
            if qty_d is None else
            "Param 'quantity' and 'quoteOrderQty' cannot be sent at the same time."
        )
    ref = await c.references.market_reference(rules.symbol, side)
    band_up = 10_000 + rules.price_band_bps
    band_down = 10_000 - rules.price_band_bps
    gtc = TimeInForce.GTC
    if qty_d is not None:
        qty = qty_to_lots(rules, qty_d)
        if side == Side.SELL:
            return db.OrderRequest(account, rules.symbol, client_id, side, otype, gtc, 0, qty,
                                   0, False, rules.base, rules.qty_units(qty), ts, stp=stp)
        if ref:
            check_notional(rules, rules.notional(ref, qty))
        # Hold what the quantity could cost at the top of the price band; the engine
        # stops before spending more, and settlement releases what is left.
        cap = rules.notional(ref * band_up // 10_000 + 1, qty) if ref else 1
        return db.OrderRequest(account, rules.symbol, client_id, side, otype, gtc, 0, qty,
                               cap, False, rules.quote, cap, ts, stp=stp)
    assert quote_d is not None
    quote_units = _units(quote_d, "quoteOrderQty")
    check_notional(rules, quote_units)
    if side == Side.BUY:
        return db.OrderRequest(account, rules.symbol, client_id, side, otype, gtc, 0, 0,
                               quote_units, True, rules.quote, quote_units, ts, stp=stp)
    # SELL for a quote amount: hold enough base to get it at the bottom of the band.
    low = max(1, (ref or 1) * band_down // 10_000)
    lots = min(-(-quote_units // rules.notional(low, 1)), rules.max_qty // rules.lot)
    return db.OrderRequest(account, rules.symbol, client_id, side, otype, gtc, 0, lots,
                           quote_units, True, rules.base, rules.qty_units(lots), ts, stp=stp)


@dataclass(frozen=True, slots=True)
class LegParams:
    """The parameter names of one order's controls: plain for POST /api/v3/order, with
    the leg's prefix (``abovePrice``, ``belowStopPrice``...) for an OCO list."""

    price: str = "price"
    stop_price: str = "stopPrice"
    tif: str = "timeInForce"
    iceberg: str = "icebergQty"
    good_till: str = "goodTillDate"

    @classmethod
    def prefixed(cls, prefix: str) -> LegParams:
        return cls(f"{prefix}Price", f"{prefix}StopPrice", f"{prefix}TimeInForce",
                   f"{prefix}IcebergQty", f"{prefix}GoodTillDate")


@dataclass(frozen=True, slots=True)
class _Leg:
    tif: TimeInForce
    price: int
    qty: int
    quote_qty: int
    stop_price: int
    iceberg_qty: int
    good_till: int
    hold_asset: str
    hold: int  # what the order can cost at most, in hold_asset


#: Order types with a limit price (an iceberg, GTD and a time in force apply to these).
LIMIT_PRICED = frozenset({OrderType.LIMIT, OrderType.LIMIT_MAKER, OrderType.STOP_LOSS_LIMIT,
                          OrderType.TAKE_PROFIT_LIMIT})


def _controlled_order(
    c: GatewayContext, rules: PairRules, p: dict[str, str], names: LegParams,
    otype: OrderType, side: Side, qty: int, ts: int,
) -> _Leg:
    """A LIMIT, LIMIT_MAKER or stop order's controls and hold, validated as Binance does.

    Raises:
        ApiError: a parameter missing, malformed or not allowed with the type.
        FilterError: a filter refuses the price, stop price or iceberg quantity.
    """
    limit_priced = otype in LIMIT_PRICED
    price_d = optional_amount(p, names.price)
    stop_d = optional_amount(p, names.stop_price)
    if limit_priced and price_d is None:
        raise errors.mandatory(names.price)
    if not limit_priced and price_d is not None:
        raise errors.not_required(names.price)
    if otype in STOP_TYPES and stop_d is None:
        raise errors.mandatory(names.stop_price)
    if otype not in STOP_TYPES and stop_d is not None:
        raise errors.not_required(names.stop_price)
    tif = TimeInForce.GTC
    if otype in (OrderType.LIMIT, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT):
        tif = _enum(p, names.tif, TimeInForce, -1115, "Invalid timeInForce.")
    elif p.get(names.tif):
        raise errors.not_required(names.tif)
    good_till = optional_int(p, names.good_till, hi=MAX_TIME_MS)
    if tif == TimeInForce.GTD:
        if good_till is None:
            raise errors.mandatory(names.good_till)
        if good_till <= ts:
            raise errors.ApiError(
                -1130, f"Data sent for parameter '{names.good_till}' is not valid.")
    elif good_till is not None:
        raise errors.not_required(names.good_till)
    iceberg_d = optional_amount(p, names.iceberg)
    iceberg = 0
    if iceberg_d is not None and iceberg_d != 0:
        if not limit_priced:
            raise errors.not_required(names.iceberg)
        if tif != TimeInForce.GTC:
            raise errors.ApiError(-1014, "Unsupported order combination.")
        iceberg = qty_to_lots(rules, iceberg_d)
        if iceberg >= qty:
            raise errors.ApiError(-2010, "IcebergQty exceeds QTY.")
        check_iceberg(qty, iceberg)
    price = price_to_ticks(rules, price_d) if price_d is not None else 0
    stop = price_to_ticks(rules, stop_d) if stop_d is not None else 0
    if limit_priced:
        notional = rules.notional(price, qty)
        check_notional(rules, notional)
        check_price_band(rules, price, c.references.band_reference(rules.symbol))
        quote_qty = 0
    else:  # STOP_LOSS / TAKE_PROFIT: a market order by quantity once triggered
        check_notional(rules, rules.notional(stop, qty))
        quote_qty = stop_market_cap(rules, stop, qty) if side == Side.BUY else 0
    hold = order_cost(rules, side, otype, price, qty, quote_qty)
    hold_asset = rules.quote if side == Side.BUY else rules.base
    return _Leg(tif, price, qty, quote_qty, stop, iceberg, good_till or 0, hold_asset, hold)


def _client_id(p: dict[str, str], name: str, prefix: str = "tp") -> str:
    """The client's id for a new order (list), or a random one."""
    return optional_client_id(p, name) or f"{prefix}{_stdlib_secrets.token_hex(10)}"


def _stp(p: dict[str, str], rules: PairRules) -> StpMode:
    raw = p.get("selfTradePreventionMode") or rules.default_stp
    try:
        return StpMode[raw.upper()]
    except KeyError:
        raise errors.ApiError(
            -1130, "Data sent for parameter 'selfTradePreventionMode' is not valid."
        ) from None


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
    oid = optional_int(p, "orderId")
    cid = optional_client_id(p, "origClientOrderId")
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
    new_cid = optional_client_id(caller.params, "newClientOrderId")
    row = await _find_order(c, caller, rules)
    if row is None or Status(row["status"]) not in (
        Status.PENDING_NEW, Status.NEW, Status.PARTIALLY_FILLED
    ):
        raise errors.unknown_order_cancel()
    cmd = Cancel(row["id"], caller.account, _now_ms())
    try:
        seq = await gateway(request.app).orderpath.send(rules.symbol, cmd)
    except BusError:
        raise errors.status_unknown() from None
    await _wait_settled(gateway(request.app), rules.symbol, seq)
    row = await db.get_order(c.pool, caller.account, rules.symbol, row["id"], None)
    assert row is not None
    if row["status"] != Status.CANCELED:
        raise errors.unknown_order_cancel()
    return _cancel_json(row, rules, new_cid)


def _cancel_json(row: Any, rules: PairRules, new_client_id: str | None) -> dict[str, Any]:
    doc = views.order_report(row, rules)
    for k in ("workingTime", "origQuoteOrderQty"):
        doc.pop(k)
    doc["origClientOrderId"] = row["client_order_id"]
    doc["clientOrderId"] = new_client_id or f"tpc{_stdlib_secrets.token_hex(8)}"
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
        seq = await gateway(request.app).orderpath.send(rules.symbol, cmd)
    except BusError:
        raise errors.status_unknown() from None
    await _wait_settled(gateway(request.app), rules.symbol, seq)
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
    rows = await db.all_orders(c.pool, caller.account, rules.symbol, optional_int(p, "orderId"),
                               optional_int(p, "startTime"), optional_int(p, "endTime"), _limit(p))
    return [views.order_json(r, rules) for r in rows]


@router.get("/myTrades")
async def query_my_trades(
    request: Request, caller: Caller = Depends(signed_read)
) -> list[dict[str, Any]]:
    c = ctx(request)
    p = caller.params
    rules = c.pair(p.get("symbol"))
    rows = await db.my_trades(c.pool, caller.account, rules.symbol,
                              optional_int(p, "orderId"), optional_int(p, "fromId"),
                              optional_int(p, "startTime"), optional_int(p, "endTime"),
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


# --------------------------------------------------------------------------- amend
AMENDABLE = frozenset({OrderType.LIMIT, OrderType.LIMIT_MAKER, OrderType.STOP_LOSS_LIMIT,
                       OrderType.TAKE_PROFIT_LIMIT})


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
    c = ctx(request)
    p = caller.params
    rules = c.pair(p.get("symbol"))
    new_qty_d = optional_amount(p, "newQty")
    if new_qty_d is None:
        raise errors.mandatory("newQty")
    row = await _find_order(c, caller, rules)
    if row is None or Status(row["status"]) in TERMINAL:
        raise errors.no_such_order()
    try:
        new_qty = qty_to_lots(rules, new_qty_d)
    except FilterError as exc:
        raise errors.filter_failure(exc.msg) from None
    if new_qty > row["qty"]:
        raise errors.ApiError(-2038, "Order amend (quantity increase) is not supported.")
    if new_qty == row["qty"]:
        raise errors.ApiError(-2038, "The requested action would change no state; rejecting")
    if OrderType(row["type"]) not in AMENDABLE:
        raise errors.ApiError(-2038, "Unsupported order combination")
    if rules.trading == "halted":
        raise errors.ApiError(-2038, "Market is closed.")
    old_cid = row["client_order_id"]
    new_cid = _client_id(p, "newClientOrderId")
    renamed = new_cid != old_cid
    if renamed and not await db.rename_order(c.pool, row["id"], old_cid, new_cid):
        raise errors.ApiError(-2038, "Duplicate order sent.")
    try:
        seq = await gateway(request.app).orderpath.send(
            rules.symbol, Amend(row["id"], caller.account, new_qty, _now_ms()))
    except BusError:
        raise errors.status_unknown() from None
    await _wait_settled(gateway(request.app), rules.symbol, seq)
    after = await db.get_order(c.pool, caller.account, rules.symbol, row["id"], None)
    assert after is not None
    # An Amended event always lowers the order's quantity (to newQty, or to what had
    # executed when that was more: then the order is FILLED); AmendRejected changes nothing.
    if after["qty"] == row["qty"]:  # the engine refused it
        if renamed:
            await db.rename_order(c.pool, row["id"], new_cid, old_cid)
        if Status(after["status"]) in TERMINAL:
            raise errors.no_such_order()
        raise errors.ApiError(-2038, "Order amend is not supported for this symbol."
                              if rules.trading != "halted" else "Market is closed.")
    doc: dict[str, Any] = {
        "transactTime": after["updated_ms"],
        # The command's position in the symbol's log: unique and increasing per symbol.
        "executionId": seq,
        "amendedOrder": views.amended_order_json(after, rules, old_cid),
    }
    if after["order_list_id"]:
        lst = await db.get_order_list(c.pool, caller.account, after["order_list_id"], None)
        assert lst is not None
        legs = (await db.list_orders(c.pool, [lst["id"]]))[lst["id"]]
        doc["listStatus"] = views.order_list_json(lst, legs)
        for k in ("listStatusType", "transactionTime"):
            doc["listStatus"].pop(k)
    return doc


# --------------------------------------------------------------------------- order lists
OCO_TYPES = frozenset({OrderType.LIMIT_MAKER, OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT,
                       OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_LIMIT})
_LOSS = frozenset({OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT})
_PROFIT = frozenset({OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_LIMIT})


def _oco_placement(side: Side, above: OrderType, below: OrderType) -> None:
    """Binance's OCO leg rules: a SELL takes profit (or rests a LIMIT_MAKER) above and
    stops the loss below; a BUY the mirror image.

    Raises:
        ApiError: -1168, -1165/-1166, -1196/-1197, -1198/-1199 in Binance's wording.
    """
    if above == below == OrderType.LIMIT_MAKER:
        raise errors.ApiError(-1168, "At least one OCO order must be contingent.")
    if side == Side.SELL:
        if below == OrderType.LIMIT_MAKER:
            raise errors.ApiError(-1166, "A limit order in a sell OCO must be above.")
        if above in _LOSS:
            raise errors.ApiError(-1197, "A stop loss order in a sell OCO must be below.")
        if below in _PROFIT:
            raise errors.ApiError(-1199, "A take profit order in a sell OCO must be above.")
    else:
        if above == OrderType.LIMIT_MAKER:
            raise errors.ApiError(-1165, "A limit order in a buy OCO must be below.")
        if below in _LOSS:
            raise errors.ApiError(-1196, "A stop loss order in a buy OCO must be above.")
        if above in _PROFIT:
            raise errors.ApiError(-1198, "A take profit order in a buy OCO must be below.")


def _oco_type(p: dict[str, str], name: str) -> OrderType:
    otype: OrderType = _enum(p, name, OrderType, -1116, "Invalid orderType.")
    if otype not in OCO_TYPES:
        raise errors.ApiError(-1158, "Order type not supported in OCO.")
    return otype


def _level(leg: _Leg, otype: OrderType) -> int:
    """Where a leg sits on the price axis: a stop's trigger, a LIMIT_MAKER's price."""
    return leg.stop_price if otype in STOP_TYPES else leg.price


@router.post("/orderList/oco")
async def new_oco(request: Request, caller: Caller = Depends(signed_trade)) -> dict[str, Any]:
    """Place an OCO pair (Binance ``POST /api/v3/orderList/oco``): an above and a below
    order of one side and quantity, of which at most one executes. One hold covers both:
    the quantity for a SELL, the dearer leg for a BUY.

    Raises:
        ApiError: every refusal, in Binance's codes.
    """
    c = ctx(request)
    p = caller.params
    rules = c.pair(p.get("symbol"))
    side: Side = _enum(p, "side", Side, -1117, "Invalid side.")
    above_t = _oco_type(p, "aboveType")
    below_t = _oco_type(p, "belowType")
    _oco_placement(side, above_t, below_t)
    if rules.trading != "enabled":
        raise errors.ApiError(-1013, "Market is closed.")
    list_cid = _client_id(p, "listClientOrderId", "tpl")
    above_cid = _client_id(p, "aboveClientOrderId")
    below_cid = _client_id(p, "belowClientOrderId")
    stp = _stp(p, rules)
    qty_d = optional_amount(p, "quantity")
    if qty_d is None:
        raise errors.mandatory("quantity")
    resp_type = _response_type(p, "RESULT")
    ts = _now_ms()
    try:
        qty = qty_to_lots(rules, qty_d)
        above = _controlled_order(c, rules, p, LegParams.prefixed("above"), above_t, side,
                                  qty, ts)
        below = _controlled_order(c, rules, p, LegParams.prefixed("below"), below_t, side,
                                  qty, ts)
    except FilterError as exc:
        ORDERS.labels(rules.symbol, "filter").inc()
        raise errors.filter_failure(exc.msg) from None
    if TimeInForce.GTD in (above.tif, below.tif):
        raise errors.ApiError(-1014, "Unsupported order combination.")
    if _level(above, above_t) <= _level(below, below_t):
        raise errors.ApiError(
            -2010, "The relationship of the prices for the orders is not correct.")
    legs = tuple(
        db.OrderRequest(caller.account, rules.symbol, cid, side, t, leg.tif, leg.price,
                        leg.qty, leg.quote_qty, False, leg.hold_asset, leg.hold, ts,
                        leg.stop_price, leg.iceberg_qty, stp)
        for cid, t, leg in ((above_cid, above_t, above), (below_cid, below_t, below))
    )
    req = db.ListRequest(caller.account, rules.symbol, list_cid, (legs[0], legs[1]),
                         above.hold_asset, max(above.hold, below.hold), ts)
    list_id, order_ids, result = await db.place_order_list(c.pool, req)
    if result == db.PlaceResult.DUPLICATE:
        raise errors.duplicate_order()
    if list_id is None:
        raise errors.insufficient_balance()
    try:
        seq = await gateway(request.app).orderpath.send(rules.symbol,
                                                     req.command(list_id, order_ids))
    except BusError:
        raise errors.status_unknown() from None  # the outbox relay sends it
    lst = await db.get_order_list(c.pool, caller.account, list_id, None)
    assert lst is not None
    if resp_type == "ACK":
        doc = views.order_list_json(lst, _pending_legs(req, order_ids))
        doc["orderReports"] = [
            {"symbol": rules.symbol, "orderId": oid, "orderListId": list_id,
             "clientOrderId": leg.client_order_id, "transactTime": ts}
            for leg, oid in zip(req.legs, order_ids, strict=True)
        ]
        return doc
    await _wait_settled(gateway(request.app), rules.symbol, seq)
    lst = await db.get_order_list(c.pool, caller.account, list_id, None)
    assert lst is not None
    rows = (await db.list_orders(c.pool, [list_id]))[list_id]
    if lst["status"] == "REJECT":
        refused = [r for r in rows if r["reason"] != Reason.BAD_LIST] or rows
        raise errors.engine_rejection(Reason(refused[0]["reason"]))
    doc = views.order_list_json(lst, rows)
    doc["orderReports"] = [views.order_report(r, rules) for r in rows]
    if resp_type == "FULL":
        for report, r in zip(doc["orderReports"], rows, strict=True):
            trades = await db.order_trades(c.pool, rules.symbol, r["id"])
            report["fills"] = [views.fill_json(t, r["id"], rules) for t in trades]
    return doc


def _pending_legs(req: db.ListRequest, order_ids: list[int]) -> list[dict[str, Any]]:
    return [{"symbol": req.symbol, "id": oid, "client_order_id": leg.client_order_id}
            for leg, oid in zip(req.legs, order_ids, strict=True)]


async def _find_list(c: GatewayContext, caller: Caller, client_param: str,
                     symbol: str | None = None) -> Any:
    p = caller.params
    list_id = optional_int(p, "orderListId")
    list_cid = optional_client_id(p, client_param)
    if list_id is None and not list_cid:
        raise errors.ApiError(
            -1102,
            f"Param '{client_param}' or 'orderListId' must be sent, but both were empty/null!",
        )
    return await db.get_order_list(c.pool, caller.account, list_id, list_cid, symbol)


@router.get("/orderList")
async def query_order_list(
    request: Request, caller: Caller = Depends(signed_read)
) -> dict[str, Any]:
    c = ctx(request)
    lst = await _find_list(c, caller, "origClientOrderId")
    if lst is None:
        raise errors.ApiError(-2013, "Order list does not exist.")
    legs = (await db.list_orders(c.pool, [lst["id"]]))[lst["id"]]
    return views.order_list_json(lst, legs)


@router.get("/openOrderList")
async def query_open_order_lists(
    request: Request, caller: Caller = Depends(signed_read)
) -> list[dict[str, Any]]:
    c = ctx(request)
    lists = await db.open_order_lists(c.pool, caller.account)
    legs = await db.list_orders(c.pool, [lst["id"] for lst in lists])
    return [views.order_list_json(lst, legs[lst["id"]]) for lst in lists]


@router.delete("/orderList")
async def cancel_order_list(
    request: Request, caller: Caller = Depends(signed_trade)
) -> dict[str, Any]:
    """Cancel an OCO list (Binance ``DELETE /api/v3/orderList``): the engine cancels both
    legs when either is canceled.

    Raises:
        ApiError: -2011 an unknown or finished list.
    """
    c = ctx(request)
    rules = c.pair(caller.params.get("symbol"))
    new_cid = optional_client_id(caller.params, "newClientOrderId")
    lst = await _find_list(c, caller, "listClientOrderId", rules.symbol)
    if lst is None or lst["status"] != "EXECUTING":
        raise errors.ApiError(-2011, "Unknown order list sent.")
    legs = (await db.list_orders(c.pool, [lst["id"]]))[lst["id"]]
    live = [r for r in legs if Status(r["status"]) not in TERMINAL]
    if not live:
        raise errors.ApiError(-2011, "Unknown order list sent.")
    try:
        seq = await gateway(request.app).orderpath.send(
            rules.symbol, Cancel(live[0]["id"], caller.account, _now_ms()))
    except BusError:
        raise errors.status_unknown() from None
    await _wait_settled(gateway(request.app), rules.symbol, seq)
    lst = await db.get_order_list(c.pool, caller.account, lst["id"], None)
    assert lst is not None
    legs = (await db.list_orders(c.pool, [lst["id"]]))[lst["id"]]
    if not any(r["status"] == Status.CANCELED for r in legs):
        raise errors.ApiError(-2011, "Unknown order list sent.")
    doc = views.order_list_json(lst, legs, time_ms=lst["updated_ms"])
    doc["orderReports"] = [_cancel_json(r, rules, new_cid) for r in legs]
    return doc
