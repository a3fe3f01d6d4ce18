"""Binance's Convert API (``/sapi/v1/convert/*``): parse -> :mod:`tradeplane.usecases.convert`
-> render, with Binance's field names.

``exchangeInfo`` is public; ``assetInfo``, ``orderStatus`` and ``tradeFlow`` need a key
that reads; ``getQuote`` and ``acceptQuote`` a key with the permission ``convert``. Our
own rates endpoint (``/api/v1/convert/rates``) shows the indicative ratios and the index
price per asset. Refusals are our own codes (``usecases.convert.CODES``) in Binance's
``{"code", "msg"}``; every parameter is bounded here, before the use case sees it.

``orderStatus`` and ``tradeFlow`` rows carry, besides Binance's fields, ``routingStatus``:
the desk's side (PENDING, ROUTING, ROUTING_COMPLETE, CONFIRMED, FAILED). The same states
are pushed as ``convertOrderUpdate`` on the user data stream and on the per-order socket
``/ws/convert/<orderId>?listenKey=<key>`` (:func:`order_status_stream`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from decimal import Decimal
from typing import Any, Final, NoReturn

from fastapi import APIRouter, Depends, Request, WebSocket
from prometheus_client import Counter
from starlette.websockets import WebSocketDisconnect

from tradeplane.domain.errors import Unavailable
from tradeplane.domain.market import user_subject
from tradeplane.domain.money import AmountError, fmt_units, to_units
from tradeplane.gateway import errors, wslimits
from tradeplane.gateway.auth import Caller, signed, signed_read
from tradeplane.gateway.context import gateway
from tradeplane.gateway.inputs import (
    MAX_TIME_MS,
    optional_amount,
    optional_asset,
    optional_int,
)
from tradeplane.gateway.userstream import Subscriber
from tradeplane.usecases.convert import (
    MAX_FLOW_LIMIT,
    MAX_WINDOW_MS,
    VALID_TIMES,
    Convert,
    ConvertOrder,
    ConvertRefused,
    Quote,
    QuoteRequest,
    RoutingStatus,
    order_update,
    ratio_units,
)

log = logging.getLogger("tradeplane.gateway.convert")

router = APIRouter(tags=["convert"])
#: The per-order status socket (registered before the market streams' ``/ws/<path>``).
ws_router = APIRouter()

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
        "routingStatus": o.routing.value,
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


# --------------------------------------------------------------------------- status socket
#: The longest a per-order status socket stays open (a hedge ends well before; a job
#: being retried with backoff may not, and the client reconnects or polls orderStatus).
ORDER_WS_MAX_S: Final = 600.0
#: Messages of the account's stream waiting to be looked at; more and the socket closes.
ORDER_WS_QUEUE: Final = 256
_ORDER_ID = re.compile(r"[1-9][0-9]{0,18}")
_RANK: Final = {s.value: i for i, s in enumerate(RoutingStatus)}
_FINAL: Final = {RoutingStatus.CONFIRMED.value, RoutingStatus.FAILED.value}


async def _ws_refuse(websocket: WebSocket, code: int, msg: str, close: int = 1008) -> None:
    """Answer in the API's ``{"code", "msg"}`` and close the socket."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.send_text(json.dumps({"code": code, "msg": msg}))
        await websocket.close(code=close, reason=msg[:120])


@ws_router.websocket("/ws/convert/{order_id}")
async def order_status_stream(websocket: WebSocket, order_id: str) -> None:
    """One convert order's routing states, ``/ws/convert/<orderId>?listenKey=<key>``: the
    order as it is now, then each ``convertOrderUpdate`` it goes through, closed (1000)
    once it is CONFIRMED or FAILED, or after ``ORDER_WS_MAX_S``. Authenticated as the user
    data stream is (a live listen key; the socket closes when its key is revoked or its
    account frozen). Refusals are sent as ``{"code", "msg"}``, then the socket closes
    (1008): -1100 a malformed orderId, -1125 no such listen key, -23008 no such order of
    this account."""
    if not await wslimits.admit(websocket):
        return
    await websocket.accept()
    if not _ORDER_ID.fullmatch(order_id) or int(order_id) >= 2**63:
        await _ws_refuse(websocket, -1100, "Illegal characters found in parameter "
                                           "'orderId'; legal range is '^[0-9]{1,19}$'.")
        return
    gw = gateway(websocket.app)
    users = gw.user_streams
    try:
        session = await users.open(websocket.query_params.get("listenKey", ""))
    except Unavailable as exc:
        log.warning("listen key store: %s", exc)
        await websocket.close(code=1013)
        return
    if session is None:
        await _ws_refuse(websocket, -1125, "This listenKey does not exist.")
        return
    try:
        await _serve_order(websocket, gw.convert, gw.ctx.bus, session.account, int(order_id),
                           session.ended, wslimits.WsLimits.of(gw.ctx.settings))
    finally:
        users.release(session)


async def _serve_order(websocket: WebSocket, convert: Convert, bus: Subscriber, account: int,
                       order_id: int, ended: asyncio.Event, limits: wslimits.WsLimits) -> None:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=ORDER_WS_QUEUE)
    overflow = asyncio.Event()

    async def on_msg(_subject: str, data: bytes) -> None:
        if b'"convertOrderUpdate"' not in data:
            return
        try:
            doc = json.loads(data)
        except ValueError:
            return
        if doc.get("orderId") != order_id:
            return
        try:
            queue.put_nowait(doc)
        except asyncio.QueueFull:
            overflow.set()

    try:
        # Subscribed before the order is read: no transition falls between the two.
        unsub = await bus.subscribe(user_subject(account), on_msg)
    except Unavailable:
        await websocket.close(code=1013)
        return
    try:
        try:
            order = await convert.status(account, order_id=order_id)
        except ConvertRefused as exc:
            await _ws_refuse(websocket, exc.code, exc.msg)
            return
        except Unavailable:
            await websocket.close(code=1011)
            return
        sent = order.routing.value
        await websocket.send_text(json.dumps(order_update(order, _now_ms()),
                                             separators=(",", ":")))
        if sent in _FINAL:
            await websocket.close(code=1000)
            return
        await _relay(websocket, queue, sent, ended, overflow, limits)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client went away
    finally:
        with contextlib.suppress(Unavailable):
            await unsub()


async def _relay(websocket: WebSocket, queue: asyncio.Queue[dict[str, Any]], sent: str,
                 ended: asyncio.Event, overflow: asyncio.Event,
                 limits: wslimits.WsLimits) -> None:
    """Forward the order's later states (never one it is already past) until final."""

    async def forward() -> None:
        rank = _RANK[sent]
        while True:
            doc = await queue.get()
            status = str(doc.get("status", ""))
            if _RANK.get(status, -1) <= rank:
                continue
            rank = _RANK[status]
            await websocket.send_text(json.dumps(doc, separators=(",", ":")))
            if status in _FINAL:
                return

    async def drain() -> None:
        inbound = wslimits.Inbound(websocket, limits)
        with contextlib.suppress(wslimits.Violation):
            while await inbound.next() is not None:
                pass  # this socket takes no requests

    done_forward = asyncio.create_task(forward())
    others = [asyncio.create_task(drain()), asyncio.create_task(ended.wait()),
              asyncio.create_task(overflow.wait())]
    try:
        await asyncio.wait([done_forward, *others], timeout=ORDER_WS_MAX_S,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (done_forward, *others):
            t.cancel()
        await asyncio.gather(done_forward, *others, return_exceptions=True)
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        if overflow.is_set():
            await websocket.close(code=wslimits.POLICY_VIOLATION, reason="Too slow a reader.")
        else:
            await websocket.close(code=1000)
