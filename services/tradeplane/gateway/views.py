"""Binance JSON shapes for orders, fills, trades and balances (amounts as decimal strings)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from tradeplane.domain.model import OrderType, Side, Status, TimeInForce
from tradeplane.domain.money import fmt_units
from tradeplane.domain.pairs import PairRules


class Row(Protocol):
    """A database row (asyncpg Record) or any mapping with the same keys."""

    def __getitem__(self, key: str, /) -> Any: ...

STATUS = {s: s.name for s in Status}
TYPES = {t: t.name for t in OrderType}
SIDES = {s: s.name for s in Side}
TIFS = {t: t.name for t in TimeInForce}
ZERO = "0.00000000"


def order_json(r: Row, rules: PairRules) -> dict[str, Any]:
    otype = OrderType(r["type"])
    return {
        "symbol": r["symbol"],
        "orderId": r["id"],
        "orderListId": -1,
        "clientOrderId": r["client_order_id"],
        "price": fmt_units(rules.price_units(r["price"])),
        "origQty": fmt_units(rules.qty_units(r["qty"])) if not r["by_quote"] else ZERO,
        "executedQty": fmt_units(rules.qty_units(r["executed"])),
        "cummulativeQuoteQty": fmt_units(r["cum_quote"]),
        "status": STATUS[Status(r["status"])],
        "timeInForce": TIFS[TimeInForce(r["tif"])],
        "type": TYPES[otype],
        "side": SIDES[Side(r["side"])],
        "stopPrice": ZERO,
        "icebergQty": ZERO,
        "time": r["created_ms"],
        "updateTime": r["updated_ms"],
        "isWorking": Status(r["status"]) in (Status.NEW, Status.PARTIALLY_FILLED),
        "workingTime": r["created_ms"],
        "origQuoteOrderQty": fmt_units(r["quote_qty"]) if r["by_quote"] else ZERO,
        "selfTradePreventionMode": "NONE",
    }


def fill_json(t: Row, order_id: int, rules: PairRules) -> dict[str, Any]:
    buyer = t["buyer_order"] == order_id
    return {
        "price": fmt_units(rules.price_units(t["price"])),
        "qty": fmt_units(rules.qty_units(t["qty"])),
        "commission": fmt_units(t["buyer_fee"] if buyer else t["seller_fee"]),
        "commissionAsset": rules.base if buyer else rules.quote,
        "tradeId": t["trade_id"],
    }


def order_result(r: Row, rules: PairRules, fills: Sequence[Row] | None) -> dict[str, Any]:
    """POST /api/v3/order answer for RESULT (fills None) and FULL."""
    doc = order_json(r, rules)
    for k in ("time", "updateTime", "isWorking", "stopPrice", "icebergQty"):
        doc.pop(k)
    doc["transactTime"] = r["updated_ms"]
    if fills is not None:
        doc["fills"] = [fill_json(t, r["id"], rules) for t in fills]
    return doc


def my_trade_json(t: Row, account: int, rules: PairRules) -> list[dict[str, Any]]:
    """A trade as the account saw it: two rows when the account was on both sides."""
    out = []
    for is_buyer in (True, False):
        if (t["buyer_account"] if is_buyer else t["seller_account"]) != account:
            continue
        out.append({
            "symbol": t["symbol"],
            "id": t["trade_id"],
            "orderId": t["buyer_order"] if is_buyer else t["seller_order"],
            "orderListId": -1,
            "price": fmt_units(rules.price_units(t["price"])),
            "qty": fmt_units(rules.qty_units(t["qty"])),
            "quoteQty": fmt_units(t["quote_qty"]),
            "commission": fmt_units(t["buyer_fee"] if is_buyer else t["seller_fee"]),
            "commissionAsset": rules.base if is_buyer else rules.quote,
            "time": t["ts"],
            "isBuyer": is_buyer,
            "isMaker": t["buyer_is_maker"] == is_buyer,
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
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": fmt_units(rules.tick),
                "maxPrice": fmt_units(rules.tick * 10**10),
                "tickSize": fmt_units(rules.tick),
            },
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
                "maxNotional": "9000000000.00000000",
                "applyMaxToMarket": False,
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
        "defaultSelfTradePreventionMode": "NONE",
        "allowedSelfTradePreventionModes": ["NONE"],
    }
