"""Order parameters, parsed once: Binance's raw query/form values of the order endpoints
become the typed requests of :mod:`tradeplane.usecases.orders` (enums, decimals, bounded
integers, client ids), with Binance's -1100/-1102/-1106/-1116/-1117/-1115/-1130 refusals.
Nothing below this module sees a raw parameter; every rule that needs the pair, a price
or the time is the use cases' (:func:`tradeplane.usecases.orders.admit`).
"""

from __future__ import annotations

import secrets as _stdlib_secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tradeplane.domain.model import STOP_TYPES, OrderType, Side, StpMode, TimeInForce
from tradeplane.gateway import errors
from tradeplane.gateway.inputs import MAX_TIME_MS, optional_amount, optional_client_id, optional_int
from tradeplane.usecases.orders import (
    LIMIT_PRICED,
    OCO_TYPES,
    TIF_TYPES,
    UNSUPPORTED_COMBINATION,
    OrderSpec,
    PlaceOco,
    PlaceOrder,
    oco_placement,
)

RESPONSE_TYPES = ("ACK", "RESULT", "FULL")


def enum_param(params: dict[str, str], name: str, enum: Any, code: int, text: str) -> Any:
    """A mandatory enum parameter, case-insensitive.

    Raises:
        ApiError: -1102 absent, ``code``/``text`` not a member.
    """
    raw = params.get(name)
    if not raw:
        raise errors.mandatory(name)
    try:
        return enum[raw.upper()]
    except KeyError:
        raise errors.ApiError(code, text) from None


def response_type(p: dict[str, str], default: str) -> str:
    """``newOrderRespType``: ACK, RESULT or FULL.

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


def client_id_or_random(p: dict[str, str], name: str, prefix: str = "tp") -> str:
    """The client's id for a new order (list), or a random one.

    Raises:
        ApiError: -1100 outside Binance's alphabet and length.
    """
    return optional_client_id(p, name) or f"{prefix}{_stdlib_secrets.token_hex(10)}"


def stp_mode(p: dict[str, str]) -> StpMode | None:
    """``selfTradePreventionMode``; None when absent (the pair's default applies).

    Raises:
        ApiError: -1130 an unknown mode.
    """
    raw = p.get("selfTradePreventionMode")
    if not raw:
        return None
    try:
        return StpMode[raw.upper()]
    except KeyError:
        raise errors.ApiError(
            -1130, "Data sent for parameter 'selfTradePreventionMode' is not valid."
        ) from None


@dataclass(frozen=True, slots=True)
class LegParams:
    """The parameter names of one order's controls: plain for POST /api/v3/order, with
    the leg's prefix (``abovePrice``, ``belowStopPrice``...) for an OCO list."""

    price: str = "price"
    stop_price: str = "stopPrice"
    tif: str = "timeInForce"
    iceberg: str = "icebergQty"
    good_till: str = "goodTillDate"
    prefix: str = ""

    @classmethod
    def prefixed(cls, prefix: str) -> LegParams:
        return cls(f"{prefix}Price", f"{prefix}StopPrice", f"{prefix}TimeInForce",
                   f"{prefix}IcebergQty", f"{prefix}GoodTillDate", prefix)


PLAIN = LegParams()


def order_spec(p: dict[str, str], names: LegParams, otype: OrderType,
               client_order_id: str) -> OrderSpec:
    """A LIMIT, LIMIT_MAKER or stop order's controls, as Binance checks their presence.

    Raises:
        ApiError: a parameter missing, malformed or not allowed with the type.
    """
    limit_priced = otype in LIMIT_PRICED
    price = optional_amount(p, names.price)
    stop = optional_amount(p, names.stop_price)
    if limit_priced and price is None:
        raise errors.mandatory(names.price)
    if not limit_priced and price is not None:
        raise errors.not_required(names.price)
    if otype in STOP_TYPES and stop is None:
        raise errors.mandatory(names.stop_price)
    if otype not in STOP_TYPES and stop is not None:
        raise errors.not_required(names.stop_price)
    tif = TimeInForce.GTC
    if otype in TIF_TYPES:
        tif = enum_param(p, names.tif, TimeInForce, -1115, "Invalid timeInForce.")
    elif p.get(names.tif):
        raise errors.not_required(names.tif)
    good_till = optional_int(p, names.good_till, hi=MAX_TIME_MS)
    if tif == TimeInForce.GTD:
        if good_till is None:
            raise errors.mandatory(names.good_till)
    elif good_till is not None:
        raise errors.not_required(names.good_till)
    iceberg: Decimal | None = optional_amount(p, names.iceberg)
    if iceberg is not None and iceberg != 0:
        if not limit_priced:
            raise errors.not_required(names.iceberg)
        if tif != TimeInForce.GTC:
            raise errors.ApiError(UNSUPPORTED_COMBINATION.code, UNSUPPORTED_COMBINATION.msg)
    else:
        iceberg = None
    return OrderSpec(otype, client_order_id, tif, price, stop, iceberg, good_till,
                     names.prefix)


def place_order(p: dict[str, str], account: int, symbol: str) -> tuple[PlaceOrder, str]:
    """``POST /api/v3/order``'s parameters: the request and its ``newOrderRespType``.

    Raises:
        ApiError: every malformed, missing or superfluous parameter, in Binance's codes.
    """
    side: Side = enum_param(p, "side", Side, -1117, "Invalid side.")
    otype: OrderType = enum_param(p, "type", OrderType, -1116, "Invalid orderType.")
    cid = client_id_or_random(p, "newClientOrderId")
    stp = stp_mode(p)
    if otype != OrderType.MARKET:
        qty = optional_amount(p, "quantity")
        if qty is None:
            raise errors.mandatory("quantity")
        if p.get("quoteOrderQty"):
            raise errors.not_required("quoteOrderQty")
        spec = order_spec(p, PLAIN, otype, cid)
        req = PlaceOrder(account, symbol, side, spec, qty, None, stp)
        return req, response_type(p, "FULL" if otype == OrderType.LIMIT else "ACK")
    for name in ("stopPrice", "icebergQty", "goodTillDate", "price"):
        if p.get(name):
            raise errors.not_required(name)
    qty = optional_amount(p, "quantity")
    quote = optional_amount(p, "quoteOrderQty")
    if (qty is None) == (quote is None):
        raise errors.ApiError(
            -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!"
            if qty is None else
            "Param 'quantity' and 'quoteOrderQty' cannot be sent at the same time."
        )
    req = PlaceOrder(account, symbol, side, OrderSpec(otype, cid), qty, quote, stp)
    return req, response_type(p, "FULL")


def oco_type(p: dict[str, str], name: str) -> OrderType:
    otype: OrderType = enum_param(p, name, OrderType, -1116, "Invalid orderType.")
    if otype not in OCO_TYPES:
        raise errors.ApiError(-1158, "Order type not supported in OCO.")
    return otype


def place_oco(p: dict[str, str], account: int, symbol: str) -> tuple[PlaceOco, str]:
    """``POST /api/v3/orderList/oco``'s parameters: the request and its response type.
    The legs' placement is checked first, as Binance does.

    Raises:
        ApiError: every malformed, missing or superfluous parameter, a misplaced leg.
    """
    side: Side = enum_param(p, "side", Side, -1117, "Invalid side.")
    above_t = oco_type(p, "aboveType")
    below_t = oco_type(p, "belowType")
    misplaced = oco_placement(side, above_t, below_t)
    if misplaced is not None:
        raise errors.ApiError(misplaced.code, misplaced.msg)
    list_cid = client_id_or_random(p, "listClientOrderId", "tpl")
    above_cid = client_id_or_random(p, "aboveClientOrderId")
    below_cid = client_id_or_random(p, "belowClientOrderId")
    stp = stp_mode(p)
    qty = optional_amount(p, "quantity")
    if qty is None:
        raise errors.mandatory("quantity")
    resp_type = response_type(p, "RESULT")
    above = order_spec(p, LegParams.prefixed("above"), above_t, above_cid)
    below = order_spec(p, LegParams.prefixed("below"), below_t, below_cid)
    return PlaceOco(account, symbol, side, list_cid, above, below, qty, stp), resp_type


def order_key(p: dict[str, str], id_param: str = "orderId",
              client_param: str = "origClientOrderId") -> tuple[int | None, str | None]:
    """``orderId`` or ``origClientOrderId`` (a cancel-replace's ``cancelOrderId`` or
    ``cancelOrigClientOrderId``), at least one.

    Raises:
        ApiError: -1102 neither sent, -1100 malformed.
    """
    oid = optional_int(p, id_param)
    cid = optional_client_id(p, client_param)
    if oid is None and not cid:
        raise errors.ApiError(
            -1102,
            f"Param '{client_param}' or '{id_param}' must be sent, but both were empty/null!",
        )
    return oid, cid


#: ``cancelReplaceMode``: whether a refused cancel still places the new order.
CANCEL_REPLACE_MODES = ("STOP_ON_FAILURE", "ALLOW_FAILURE")


def cancel_replace_mode(p: dict[str, str]) -> bool:
    """``cancelReplaceMode``: True for ALLOW_FAILURE, False for STOP_ON_FAILURE.

    Raises:
        ApiError: -1102 absent, -1100 any other value.
    """
    raw = p.get("cancelReplaceMode")
    if not raw:
        raise errors.mandatory("cancelReplaceMode")
    if raw not in CANCEL_REPLACE_MODES:
        raise errors.ApiError(
            -1100, "Illegal characters found in parameter 'cancelReplaceMode'; legal range "
                   "is 'STOP_ON_FAILURE, ALLOW_FAILURE'.")
    return raw == "ALLOW_FAILURE"


def list_key(p: dict[str, str], client_param: str) -> tuple[int | None, str | None]:
    """``orderListId`` or the list's client id (``client_param``), at least one.

    Raises:
        ApiError: -1102 neither sent, -1100 malformed.
    """
    list_id = optional_int(p, "orderListId")
    list_cid = optional_client_id(p, client_param)
    if list_id is None and not list_cid:
        raise errors.ApiError(
            -1102,
            f"Param '{client_param}' or 'orderListId' must be sent, but both were empty/null!",
        )
    return list_id, list_cid
