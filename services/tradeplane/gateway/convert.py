"""Binance's Convert API (``/sapi/v1/convert/*``): parse -> :mod:`tradeplane.usecases.convert`
-> render, with Binance's field names.

``exchangeInfo`` is public; ``assetInfo``, ``orderStatus`` and ``tradeFlow`` need a key
that reads; ``getQuote`` and ``acceptQuote`` a key with the permission ``convert``. Our
own rates endpoint (``/api/v1/convert/rates``) shows the indicative ratios and the index
price per asset. Refusals are our own codes (``usecases.convert.CODES``) in Binance's
``{"code", "msg"}``; every parameter is bounded here, before the use case sees it.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any, NoReturn

from fastapi import APIRouter, Depends, Request
from prometheus_client import Counter

from tradeplane.domain.money import AmountError, fmt_units, to_units
from tradeplane.gateway import errors
from tradeplane.gateway.auth import Caller, signed, signed_read
from tradeplane.gateway.context import gateway
from tradeplane.gateway.inputs import (
    MAX_TIME_MS,
    optional_amount,
    optional_asset,
    optional_int,
)
from tradeplane.usecases.convert import (
    MAX_FLOW_LIMIT,
    MAX_WINDOW_MS,
    VALID_TIMES,
    Convert,
    ConvertOrder,
    ConvertRefused,
    Quote,
    QuoteRequest,
    ratio_units,
)

router = APIRouter(tags=["convert"])

CONVERSIONS = Counter("tradeplane_convert_total", "Convert requests by step and outcome",
                      ["step", "outcome"])


def _now_ms() -> int:
    return int(time.time() * 1000)


def _convert(request: Request) -> Convert:
    return gateway(request.app).convert


async def signed_convert(request: Request) -> Caller:
    """SIGNED, with the key permission ``convert``."""
    return await signed(request, "convert")


def _refused(step: str, exc: ConvertRefused) -> NoReturn:
    CONVERSIONS.labels(step, str(exc.code)).inc()
    raise errors.ApiError(exc.code, exc.msg) from None


def _required_asset(params: dict[str, str], name: str) -> str:
    value = optional_asset(params, name)
    if value is None:
        raise errors.mandatory(name)
    return value


def _units(params: dict[str, str], name: str) -> int | None:
    """A positive amount in units, None when absent.

    Raises:
        ApiError: -1100 malformed, zero or finer than 10**-8.
    """
    dec = optional_amount(params, name)
    if dec is None:
        return None
    try:
        units = to_units(dec)
    except AmountError:
        raise errors.ApiError(-1100, f"Illegal characters found in parameter '{name}'; "
                                     "at most 8 decimals.") from None
    if units <= 0:
        raise errors.ApiError(-1100, f"Illegal characters found in parameter '{name}'; "
                                     "it must be positive.")
    return units


def _ratio(num: int, den: int) -> str:
    return fmt_units(ratio_units(num, den))


def quote_json(q: Quote) -> dict[str, Any]:
    """``getQuote``'s answer: Binance's fields, then ours (route, price impact, fee)."""
    return {
        "quoteId": str(q.quote_id),
        "ratio": _ratio(q.to_amount, q.from_amount),
        "inverseRatio": _ratio(q.from_amount, q.to_amount),
        "validTimestamp": q.valid_until_ms,
        "toAmount": fmt_units(q.to_amount),
        "fromAmount": fmt_units(q.from_amount),
        "route": [
            {"symbol": leg.symbol, "side": leg.side, "fromAsset": leg.from_asset,
             "toAsset": leg.to_asset, "fromAmount": fmt_units(leg.from_amount),
             "toAmount": fmt_units(leg.to_amount), "fee": fmt_units(leg.fee),
             "feeAsset": leg.to_asset, "bestPrice": fmt_units(leg.best_price),
             "worstPrice": fmt_units(leg.worst_price), "venue": leg.venue or "local",
             "path": leg.path}
            for leg in q.route],
        "priceImpact": format(Decimal(q.impact_ppm).scaleb(-6), "f"),
        "fee": fmt_units(q.fee),
        "feeAsset": q.to_asset,
    }


def order_json(o: ConvertOrder) -> dict[str, Any]:
    """``orderStatus`` / a ``tradeFlow`` row."""
    return {
        "quoteId": str(o.quote_id),
        "orderId": o.order_id,
        "orderStatus": o.status.value,
        "fromAsset": o.from_asset,
        "fromAmount": fmt_units(o.from_amount),
        "toAsset": o.to_asset,
        "toAmount": fmt_units(o.to_amount),
        "ratio": _ratio(o.to_amount, o.from_amount),
        "inverseRatio": _ratio(o.from_amount, o.to_amount),
        "createTime": o.created_ms,
    }


# --------------------------------------------------------------------------- reads
@router.get("/sapi/v1/convert/exchangeInfo")
async def exchange_info(request: Request) -> list[dict[str, Any]]:
    """Every convertible pair matching ``fromAsset`` / ``toAsset`` (both optional) with
    the amounts' range.

    Raises:
        ApiError: -1100 for a malformed asset.
    """
    params = dict(request.query_params)
    f = optional_asset(params, "fromAsset")
    t = optional_asset(params, "toAsset")
    rows = await _convert(request).pair_infos(f, t)
    return [{"fromAsset": r.from_asset, "toAsset": r.to_asset,
             "fromAssetMinAmount": fmt_units(r.from_min),
             "fromAssetMaxAmount": fmt_units(r.from_max),
             "toAssetMinAmount": fmt_units(r.to_min),
             "toAssetMaxAmount": fmt_units(r.to_max),
             "fromIsBase": r.from_is_base} for r in rows]


@router.get("/sapi/v1/convert/assetInfo")
async def asset_info(request: Request, _caller: Caller = Depends(signed_read)
                     ) -> list[dict[str, Any]]:
    """Every convertible asset and its precision (``fraction``: decimals)."""
    c = _convert(request)
    return [{"asset": a, "fraction": c.fraction()} for a in c.assets()]


@router.get("/api/v1/convert/rates", include_in_schema=True)
async def rates(request: Request) -> dict[str, Any]:
    """Indicative ratios of every convertible pair (best of direct and bridged routes at
    the best prices, fees excluded), the index price of each asset in the index asset,
    and the books left out as stale, as the rates service last published them (computed
    here when it has not for 5 s); ``time`` says when. Not Binance's: ours."""
    at, r = await _convert(request).current_rates(_now_ms())
    return {"time": at, "indexAsset": r.index_asset,
            "index": {a: fmt_units(v) for a, v in sorted(r.index.items())},
            "pairs": [{"fromAsset": p.from_asset, "toAsset": p.to_asset,
                       "ratio": fmt_units(p.ratio), "via": p.via} for p in r.pairs],
            "staleBooks": list(r.stale)}


# --------------------------------------------------------------------------- quote
@router.post("/sapi/v1/convert/getQuote")
async def get_quote(request: Request, caller: Caller = Depends(signed_convert)
                    ) -> dict[str, Any]:
    """A firm quote for ``fromAmount`` (or ``toAmount``) until ``validTime``.

    Raises:
        ApiError: -1102 missing asset or amount, -1128 both amounts, -1100 malformed,
            -1130 unknown ``validTime``, our -2300x codes.
    """
    p = caller.params
    from_asset = _required_asset(p, "fromAsset")
    to_asset = _required_asset(p, "toAsset")
    from_amount, to_amount = _units(p, "fromAmount"), _units(p, "toAmount")
    if from_amount is None and to_amount is None:
        raise errors.mandatory("fromAmount")
    if from_amount is not None and to_amount is not None:
        raise errors.ApiError(-1128, "Combination of optional parameters invalid: send "
                                     "fromAmount or toAmount, not both.")
    wallet = p.get("walletType", "SPOT") or "SPOT"
    if wallet not in ("SPOT", "FUNDING", "SPOT_FUNDING"):
        raise errors.ApiError(-1130, "Data sent for parameter 'walletType' is not valid.")
    valid = p.get("validTime") or "10s"
    if valid not in VALID_TIMES:
        raise errors.ApiError(-1130, "Data sent for parameter 'validTime' is not valid.")
    req = QuoteRequest(caller.account, from_asset, to_asset, from_amount, to_amount,
                       VALID_TIMES[valid])
    try:
        q = await _convert(request).quote(req, _now_ms())
    except ConvertRefused as exc:
        _refused("quote", exc)
    CONVERSIONS.labels("quote", "ok").inc()
    return quote_json(q)


@router.post("/sapi/v1/convert/acceptQuote")
async def accept_quote(request: Request, caller: Caller = Depends(signed_convert)
                       ) -> dict[str, Any]:
    """Accept a quote: one ledger transaction (SUCCESS) or nothing. Accepting the same
    quote again answers the same order.

    Raises:
        ApiError: -1102 no quoteId, -1100 malformed, our -2300x codes.
    """
    quote_id = optional_int(caller.params, "quoteId", lo=1)
    if quote_id is None:
        raise errors.mandatory("quoteId")
    try:
        o = await _convert(request).accept(caller.account, quote_id, _now_ms())
    except ConvertRefused as exc:
        _refused("accept", exc)
    CONVERSIONS.labels("accept", "ok").inc()
    return {"orderId": str(o.order_id), "createTime": o.created_ms,
            "orderStatus": o.status.value}


@router.get("/sapi/v1/convert/orderStatus")
async def order_status(request: Request, caller: Caller = Depends(signed_read)
                       ) -> dict[str, Any]:
    """One convert order by ``orderId`` or ``quoteId``.

    Raises:
        ApiError: -1102 neither sent, -1100 malformed, -23008 no such order.
    """
    order_id = optional_int(caller.params, "orderId", lo=1)
    quote_id = optional_int(caller.params, "quoteId", lo=1)
    if order_id is None and quote_id is None:
        raise errors.mandatory("orderId")
    try:
        o = await _convert(request).status(caller.account, order_id=order_id,
                                           quote_id=quote_id)
    except ConvertRefused as exc:
        _refused("status", exc)
    return order_json(o)


@router.get("/sapi/v1/convert/tradeFlow")
async def trade_flow(request: Request, caller: Caller = Depends(signed_read)
                     ) -> dict[str, Any]:
    """Your convert orders created between ``startTime`` and ``endTime`` (at most 30
    days apart), oldest first, at most ``limit`` (default 100, at most 1000).

    Raises:
        ApiError: -1102 a time missing, -1100 malformed or out of range, -1127 a window
            over 30 days or reversed.
    """
    p = caller.params
    start = optional_int(p, "startTime", hi=MAX_TIME_MS)
    end = optional_int(p, "endTime", hi=MAX_TIME_MS)
    if start is None:
        raise errors.mandatory("startTime")
    if end is None:
        raise errors.mandatory("endTime")
    if end < start or end - start > MAX_WINDOW_MS:
        raise errors.ApiError(-1127, "More than 30 days between startTime and endTime.")
    limit = optional_int(p, "limit", lo=1, hi=MAX_FLOW_LIMIT) or 100
    rows, more = await _convert(request).history(caller.account, start, end, limit)
    return {"list": [order_json(o) for o in rows], "startTime": start, "endTime": end,
            "limit": limit, "moreData": more}
