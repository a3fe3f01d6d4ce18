"""Binance JSON shapes for orders, fills, trades and balances (amounts as decimal strings)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from tradeplane.domain.model import STOP_TYPES, OrderType, Side, Status, StpMode, TimeInForce
from tradeplane.domain.money import fmt_units
from tradeplane.domain.pairs import (
    ICEBERG_PARTS,
    MAX_NOTIONAL,
    MAX_PRICE_TICKS,
    STP_MODES,
    PairRules,
)
from tradeplane.usecases.orders import ListRow, OrderRow, TradeRow


class PendingLeg(Protocol):
    """What an order list's ``orders`` shows of a leg (also known before it settles)."""

    @property
    def symbol(self) -> str: ...
    @property
    def id(self) -> int: ...
    @property
    def client_order_id(self) -> str: ...


STATUS = {s: s.name for s in Status}
TYPES = {t: t.name for t in OrderType}
SIDES = {s: s.name for s in Side}
TIFS = {t: t.name for t in TimeInForce}
STP_NAMES = {m: m.name for m in StpMode}
ZERO = "0.00000000"


def working_time(r: OrderRow) -> int:
    """Binance's workingTime: when the order went on the book; a stop order works only
    once triggered (-1 until then)."""
    if r.type in STOP_TYPES:
        return int(r.working_ms) or -1
    return int(r.created_ms)


def order_json(r: OrderRow, rules: PairRules) -> dict[str, Any]:
    """GET /api/v3/order and the order lists' shape of an order."""
    otype = r.type
    status = r.status
    doc = {
        "symbol": r.symbol,
        "orderId": r.id,
        "orderListId": r.order_list_id or -1,
        "clientOrderId": r.client_order_id,
        "price": fmt_units(rules.price_units(r.price)),
        "origQty": fmt_units(rules.qty_units(r.qty)) if not r.by_quote else ZERO,
        "executedQty": fmt_units(rules.qty_units(r.executed)),
        "cummulativeQuoteQty": fmt_units(r.cum_quote),
        "status": STATUS[status],
        "timeInForce": TIFS[r.tif],
        "type": TYPES[otype],
        "side": SIDES[r.side],
        "stopPrice": fmt_units(rules.price_units(r.stop_price)),
        "icebergQty": fmt_units(rules.qty_units(r.iceberg_qty)),
        "time": r.created_ms,
        "updateTime": r.updated_ms,
        "isWorking": status in (Status.NEW, Status.PARTIALLY_FILLED) and working_time(r) > 0,
        "workingTime": working_time(r),
        "origQuoteOrderQty": fmt_units(r.quote_qty) if r.by_quote else ZERO,
        "selfTradePreventionMode": STP_NAMES[r.stp],
    }
    _conditional(doc, r, rules)
    return doc


def _conditional(doc: dict[str, Any], r: OrderRow, rules: PairRules) -> None:
    """Binance's conditional fields: ``goodTillDate`` of a GTD order, the quantity that
    self-trade prevention expired."""
    if r.tif == TimeInForce.GTD:
        doc["goodTillDate"] = r.good_till
    if r.status == Status.EXPIRED_IN_MATCH:
        doc["preventedQuantity"] = fmt_units(rules.qty_units(r.qty - r.executed))


def order_report(r: OrderRow, rules: PairRules) -> dict[str, Any]:
    """An order as POST /api/v3/order (RESULT), cancels and order lists report it:
    ``stopPrice`` only for stop orders, ``icebergQty`` only for icebergs."""
    doc = order_json(r, rules)
    for k in ("time", "updateTime", "isWorking"):
        doc.pop(k)
    if r.type not in STOP_TYPES:
        doc.pop("stopPrice")
    if not r.iceberg_qty:
        doc.pop("icebergQty")
    doc["transactTime"] = r.updated_ms
    return doc


def amended_order_json(r: OrderRow, rules: PairRules, orig_client_id: str) -> dict[str, Any]:
    """The ``amendedOrder`` of PUT /api/v3/order/amend/keepPriority (Binance's shape:
    ``qty``, ``cumulativeQuoteQty``)."""
    doc: dict[str, Any] = {
        "symbol": r.symbol,
        "orderId": r.id,
        "orderListId": r.order_list_id or -1,
        "origClientOrderId": orig_client_id,
        "clientOrderId": r.client_order_id,
        "price": fmt_units(rules.price_units(r.price)),
        "qty": fmt_units(rules.qty_units(r.qty)),
        "executedQty": fmt_units(rules.qty_units(r.executed)),
        "preventedQty": ZERO,
        "quoteOrderQty": ZERO,
        "cumulativeQuoteQty": fmt_units(r.cum_quote),
        "status": STATUS[r.status],
        "timeInForce": TIFS[r.tif],
        "type": TYPES[r.type],
        "side": SIDES[r.side],
        "workingTime": working_time(r),
        "selfTradePreventionMode": STP_NAMES[r.stp],
    }
    if r.iceberg_qty:
        doc["icebergQty"] = fmt_units(rules.qty_units(r.iceberg_qty))
    if r.type in STOP_TYPES:
        doc["stopPrice"] = fmt_units(rules.price_units(r.stop_price))
    return doc


def fill_json(t: TradeRow, order_id: int, rules: PairRules) -> dict[str, Any]:
    buyer = t.buyer_order == order_id
    return {
        "price": fmt_units(rules.price_units(t.price)),
        "qty": fmt_units(rules.qty_units(t.qty)),
        "commission": fmt_units(t.buyer_fee if buyer else t.seller_fee),
        "commissionAsset": rules.base if buyer else rules.quote,
        "tradeId": t.trade_id,
    }


def order_result(r: OrderRow, rules: PairRules, fills: Sequence[TradeRow] | None) -> dict[str, Any]:
    """POST /api/v3/order answer for RESULT (fills None) and FULL."""
    doc = order_report(r, rules)
    if fills is not None:
        doc["fills"] = [fill_json(t, r.id, rules) for t in fills]
    return doc


LIST_STATUS_TYPE = {"EXECUTING": "EXEC_STARTED", "ALL_DONE": "ALL_DONE", "REJECT": "RESPONSE"}


def order_list_json(lst: ListRow, legs: Sequence[PendingLeg], *,
                    time_ms: int | None = None) -> dict[str, Any]:
    """An order list as GET /api/v3/orderList answers it."""
    return {
        "orderListId": lst.id,
        "contingencyType": lst.contingency,
        "listStatusType": LIST_STATUS_TYPE[lst.status],
        "listOrderStatus": lst.status,
        "listClientOrderId": lst.list_client_order_id,
        "transactionTime": lst.created_ms if time_ms is None else time_ms,
        "symbol": lst.symbol,
        "orders": [{"symbol": o.symbol, "orderId": o.id,
                    "clientOrderId": o.client_order_id} for o in legs],
    }


def my_trade_json(t: TradeRow, account: int, rules: PairRules) -> list[dict[str, Any]]:
    """A trade as the account saw it: two rows when the account was on both sides."""
    out = []
    for is_buyer in (True, False):
        if (t.buyer_account if is_buyer else t.seller_account) != account:
            continue
        out.append({
            "symbol": t.symbol,
            "id": t.trade_id,
            "orderId": t.buyer_order if is_buyer else t.seller_order,
            "orderListId": -1,
            "price": fmt_units(rules.price_units(t.price)),
            "qty": fmt_units(rules.qty_units(t.qty)),
            "quoteQty": fmt_units(t.quote_qty),
            "commission": fmt_units(t.buyer_fee if is_buyer else t.seller_fee),
            "commissionAsset": rules.base if is_buyer else rules.quote,
            "time": t.ts,
            "isBuyer": is_buyer,
            "isMaker": t.buyer_is_maker == is_buyer,
            "isBestMatch": True,
        })
    return out


def exchange_symbol(rules: PairRules) -> dict[str, Any]:
    status = {"enabled": "TRADING", "halted": "HALT", "cancel-only": "BREAK"}[rules.trading]
    band_up = f"{(10_000 + rules.price_band_bps) / 10_000:.4f}"
    band_down = f"{(10_000 - rules.price_band_bps) / 10_000:.4f}"
    return {
        "symbol": rules.symbol,
        "status": status,
        "baseAsset": rules.base,
        "baseAssetPrecision": 8,
        "quoteAsset": rules.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT",
                       "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "amendAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": fmt_units(rules.tick),
                "maxPrice": fmt_units(rules.tick * MAX_PRICE_TICKS),
                "tickSize": fmt_units(rules.tick),
            },
            {"filterType": "ICEBERG_PARTS", "limit": ICEBERG_PARTS},
            {
                "filterType": "LOT_SIZE",
                "minQty": fmt_units(rules.min_qty),
                "maxQty": fmt_units(rules.max_qty),
                "stepSize": fmt_units(rules.lot),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": fmt_units(rules.min_qty),
                "maxQty": fmt_units(rules.max_qty),
                "stepSize": fmt_units(rules.lot),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": fmt_units(rules.min_notional),
                "applyMinToMarket": True,
                "maxNotional": fmt_units(MAX_NOTIONAL),
                "applyMaxToMarket": True,
                "avgPriceMins": 0,  # market orders are checked at the last price
            },
            {
                # The band we enforce: one for both sides, around the last price (Binance's
                # avgPriceMins 0), and refusals name it ("Filter failure: PERCENT_PRICE").
                "filterType": "PERCENT_PRICE",
                "multiplierUp": band_up,
                "multiplierDown": band_down,
                "avgPriceMins": 0,
            },
        ],
        "permissions": ["SPOT"],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": rules.default_stp,
        "allowedSelfTradePreventionModes": list(STP_MODES),
    }
