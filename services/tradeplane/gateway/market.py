"""Binance public market-data endpoints, served from the Redis cache (and PostgreSQL for
history): depth, trades, historicalTrades, aggTrades, klines, tickers, avgPrice.

The marketdata service keeps the cache; documents it stores ready-made (trades, tickers)
are passed through as bytes, the rest (book, top of book, candles) is formatted here from
integers. An empty market answers valid zero documents.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, Final, Protocol

import msgspec
from fastapi import APIRouter, Request, Response

from tradeplane.domain.market import EMPTY_TOP, Candle, DepthSnapshot, TopOfBook
from tradeplane.domain.money import fmt_units
from tradeplane.domain.pairs import PairRules
from tradeplane.gateway import errors
from tradeplane.gateway.context import ctx, gateway
from tradeplane.gateway.inputs import optional_int, symbol_list
from tradeplane.usecases.orders import OrderQueries, TradeRow

router = APIRouter(prefix="/api/v3", tags=["market data"])


class MarketReads(Protocol):
    """What these endpoints read of the market data (``adapters.marketdata.RedisMarketReads``
    over Redis and the klines table). Every method raises Unavailable when its store
    cannot be read."""

    async def depth(self, symbol: str) -> DepthSnapshot | None: ...

    async def recent_trades(self, symbol: str, limit: int) -> list[bytes]:
        """Up to ``limit`` latest ``/api/v3/trades`` JSON documents, oldest first."""
        ...

    async def agg_trades(self, symbol: str) -> list[bytes]:
        """Every recent ``/api/v3/aggTrades`` JSON document, oldest first."""
        ...

    async def tickers(self, symbols: Sequence[str]) -> list[bytes | None]:
        """The ``/api/v3/ticker/24hr`` JSON documents, None where not written yet."""
        ...

    async def avg_price(self, symbol: str) -> bytes | None: ...

    async def tops(self, symbols: Sequence[str]) -> list[TopOfBook | None]: ...

    async def current_kline(self, symbol: str, interval: str) -> Candle | None:
        """The candle of ``interval`` still open (not yet in :meth:`klines` for good)."""
        ...

    async def klines(self, symbol: str, interval: str, start_ms: int | None,
                     end_ms: int | None, limit: int) -> list[Candle]:
        """Stored candles by open time, oldest first: from ``start_ms`` on when given,
        else the latest ``limit`` (up to ``end_ms`` when given)."""
        ...

#: The kline intervals served, with their length in ms. The gateway may not import the
#: marketdata package; a unit test pins this to ``marketdata.state.INTERVALS``.
KLINE_INTERVALS: Final[dict[str, int]] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}

ZERO: Final = "0.00000000"
_MINI_FIELDS: Final = (
    "symbol", "openPrice", "highPrice", "lowPrice", "lastPrice", "volume", "quoteVolume",
    "openTime", "closeTime", "firstId", "lastId", "count",
)
_enc = msgspec.json.Encoder()


class _AggKey(msgspec.Struct):
    agg_id: int = msgspec.field(name="a")
    time: int = msgspec.field(name="T")


_agg_key = msgspec.json.Decoder(_AggKey)


def _json(doc: Any) -> Response:
    return Response(_enc.encode(doc), media_type="application/json")


def _raw_list(items: Sequence[bytes]) -> Response:
    return Response(b"[" + b",".join(items) + b"]", media_type="application/json")


def _now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- parameters
def _int(request: Request, name: str) -> int | None:
    """An optional non-negative integer parameter; raises ApiError -1100 when malformed."""
    return optional_int(dict(request.query_params), name)


def _limit(request: Request, default: int, most: int, *, clamp: bool = False) -> int:
    """Raises ApiError -1100 for a malformed or out-of-range limit (above ``most`` is
    truncated instead when ``clamp``, as Binance does for depth)."""
    value = _int(request, "limit")
    if value is None:
        return default
    if value > most and clamp:
        return most
    if not 1 <= value <= most:
        raise errors.ApiError(
            -1100, f"Illegal characters found in parameter 'limit'; legal range is '1-{most}'."
        )
    return value


def _reads(request: Request) -> MarketReads:
    return gateway(request.app).market


def _pair(request: Request) -> tuple[MarketReads, PairRules]:
    """Raises ApiError -1102 without ``symbol``, -1121 for an unknown one."""
    c = ctx(request)
    symbol = request.query_params.get("symbol")
    if not symbol:
        raise errors.mandatory("symbol")
    return _reads(request), c.pair(symbol)


def _pairs(request: Request) -> tuple[MarketReads, list[PairRules], bool]:
    """``symbol`` (one document), ``symbols`` (a JSON array) or neither (every pair).

    Returns the market data, the pairs and whether the answer is a single document.

    Raises:
        ApiError: -1128 for both parameters, -1100 for a malformed array, -1121 for an
            unknown symbol.
    """
    c = ctx(request)
    one = request.query_params.get("symbol")
    many = request.query_params.get("symbols")
    if one and many:
        raise errors.ApiError(-1128, "Combination of optional parameters invalid.")
    reads = _reads(request)
    if one:
        return reads, [c.pair(one)], True
    if many:
        return reads, [c.pair(n) for n in symbol_list(many)], False
    return reads, [c.pairs[s] for s in sorted(c.pairs)], False


def _price(rules: PairRules, ticks: int) -> str:
    return fmt_units(rules.price_units(ticks))


def _qty(rules: PairRules, lots: int) -> str:
    return fmt_units(rules.qty_units(lots))


# --------------------------------------------------------------------------- depth
@router.get("/depth")
async def depth(request: Request) -> Response:
    """The book with its ``lastUpdateId`` (the last command sequence it includes)."""
    c, rules = _pair(request)
    limit = _limit(request, 100, 5000, clamp=True)
    snap = await c.depth(rules.symbol)
    if snap is None:
        return _json({"lastUpdateId": 0, "bids": [], "asks": []})
    tick, lot = rules.tick, rules.lot
    return _json({
        "lastUpdateId": snap.last_update_id,
        "bids": [[fmt_units(p * tick), fmt_units(q * lot)] for p, q in snap.bids[:limit]],
        "asks": [[fmt_units(p * tick), fmt_units(q * lot)] for p, q in snap.asks[:limit]],
    })


# --------------------------------------------------------------------------- trades
def _trade_doc(r: TradeRow, rules: PairRules) -> dict[str, Any]:
    return {
        "id": r.trade_id,
        "price": _price(rules, r.price),
        "qty": _qty(rules, r.qty),
        "quoteQty": fmt_units(r.quote_qty),
        "time": r.ts,
        "isBuyerMaker": r.buyer_is_maker,
        "isBestMatch": True,
    }


def _ledger(request: Request) -> OrderQueries:
    """The ledger's settled trades, read over the gateway's order path."""
    return OrderQueries(gateway(request.app).orderpath)


@router.get("/trades")
async def trades(request: Request) -> Response:
    c, rules = _pair(request)
    limit = _limit(request, 500, 1000)
    cached = await c.recent_trades(rules.symbol, limit)
    if cached:
        return _raw_list(cached)
    # an emptied cache: the ledger has the settled trades
    rows = await _ledger(request).public_trades(rules.symbol, None, limit)
    return _json([_trade_doc(r, rules) for r in rows])


@router.get("/historicalTrades")
async def historical_trades(request: Request) -> Response:
    """Settled trades from the ledger, from ``fromId`` on (else the latest ``limit``)."""
    _, rules = _pair(request)
    limit = _limit(request, 500, 1000)
    rows = await _ledger(request).public_trades(rules.symbol, _int(request, "fromId"), limit)
    return _json([_trade_doc(r, rules) for r in rows])


@router.get("/aggTrades")
async def agg_trades(request: Request) -> Response:
    """Aggregate trades from the cache's recent window: from ``fromId``, or within
    ``startTime``..``endTime``, else the latest ``limit``; always oldest first."""
    c, rules = _pair(request)
    limit = _limit(request, 500, 1000)
    from_id = _int(request, "fromId")
    start = _int(request, "startTime")
    end = _int(request, "endTime")
    items = await c.agg_trades(rules.symbol)
    if from_id is None and start is None and end is None:
        return _raw_list(items[-limit:])
    picked: list[bytes] = []
    for raw in items:
        k = _agg_key.decode(raw)
        if from_id is not None and k.agg_id < from_id:
            continue
        if start is not None and k.time < start:
            continue
        if end is not None and k.time > end:
            continue
        picked.append(raw)
        if len(picked) == limit:
            break
    return _raw_list(picked)


# --------------------------------------------------------------------------- klines
def _kline_json(row: Candle, length: int) -> list[Any]:
    return [
        row.open_time, fmt_units(row.open), fmt_units(row.high), fmt_units(row.low),
        fmt_units(row.close), fmt_units(row.volume), row.open_time + length - 1,
        fmt_units(row.quote_volume), row.trades, fmt_units(row.taker_buy_volume),
        fmt_units(row.taker_buy_quote_volume), "0",
    ]


@router.get("/klines")
@router.get("/uiKlines")
async def klines(request: Request) -> Response:
    """Candles by open time (UTC-aligned), oldest first; only intervals with trades exist.

    Raises ApiError -1120 for an interval we do not build.
    """
    c, rules = _pair(request)
    interval = request.query_params.get("interval")
    if not interval:
        raise errors.mandatory("interval")
    length = KLINE_INTERVALS.get(interval)
    if length is None:
        raise errors.ApiError(-1120, "Invalid interval.")
    limit = _limit(request, 500, 1000)
    start, end = _int(request, "startTime"), _int(request, "endTime")
    rows = await c.klines(rules.symbol, interval, start, end, limit)
    current = await c.current_kline(rules.symbol, interval)
    if current is not None and (start is None or current.open_time >= start) and (
        end is None or current.open_time <= end
    ):
        if rows and rows[-1].open_time == current.open_time:
            rows[-1] = current
        elif not rows or rows[-1].open_time < current.open_time:
            rows.append(current)
        rows = rows[:limit] if start is not None else rows[-limit:]
    return _json([_kline_json(r, length) for r in rows])


# --------------------------------------------------------------------------- tickers
def _empty_ticker(symbol: str, now: int) -> dict[str, Any]:
    """The 24hr document of a market the marketdata service has not written yet."""
    return {
        "symbol": symbol, "priceChange": ZERO, "priceChangePercent": "0.000",
        "weightedAvgPrice": ZERO, "prevClosePrice": ZERO, "lastPrice": ZERO, "lastQty": ZERO,
        "bidPrice": ZERO, "bidQty": ZERO, "askPrice": ZERO, "askQty": ZERO, "openPrice": ZERO,
        "highPrice": ZERO, "lowPrice": ZERO, "volume": ZERO, "quoteVolume": ZERO,
        "openTime": now - 86_400_000, "closeTime": now, "firstId": -1, "lastId": -1,
        "count": 0,
    }


@router.get("/ticker/24hr")
async def ticker_24hr(request: Request) -> Response:
    """Rolling 24h statistics; ``type=MINI`` drops the book and change fields."""
    c, pairs, single = _pairs(request)
    kind = request.query_params.get("type", "FULL")
    if kind not in ("FULL", "MINI"):
        raise errors.bad_param("type", kind)
    docs = await c.tickers([p.symbol for p in pairs])
    if kind == "FULL" and all(d is not None for d in docs):
        items = [d for d in docs if d is not None]
        return Response(items[0], media_type="application/json") if single else _raw_list(items)
    now = _now_ms()
    out: list[dict[str, Any]] = [
        json.loads(d) if d is not None else _empty_ticker(p.symbol, now)
        for p, d in zip(pairs, docs, strict=True)
    ]
    if kind == "MINI":
        out = [{k: d[k] for k in _MINI_FIELDS} for d in out]
    return _json(out[0] if single else out)


def _top_or_empty(top: TopOfBook | None) -> TopOfBook:
    return top if top is not None else EMPTY_TOP


@router.get("/ticker/price")
async def ticker_price(request: Request) -> Response:
    c, pairs, single = _pairs(request)
    tops = await c.tops([p.symbol for p in pairs])
    out = [
        {"symbol": p.symbol, "price": _price(p, _top_or_empty(t).last_price)}
        for p, t in zip(pairs, tops, strict=True)
    ]
    return _json(out[0] if single else out)


@router.get("/ticker/bookTicker")
async def book_ticker(request: Request) -> Response:
    c, pairs, single = _pairs(request)
    tops = await c.tops([p.symbol for p in pairs])
    out = []
    for p, t in zip(pairs, tops, strict=True):
        top = _top_or_empty(t)
        out.append({
            "symbol": p.symbol, "bidPrice": _price(p, top.bid), "bidQty": _qty(p, top.bid_qty),
            "askPrice": _price(p, top.ask), "askQty": _qty(p, top.ask_qty),
        })
    return _json(out[0] if single else out)


@router.get("/avgPrice")
async def avg_price(request: Request) -> Response:
    """Volume-weighted price of the last 5 minutes (the last price when none traded)."""
    c, rules = _pair(request)
    doc = await c.avg_price(rules.symbol)
    if doc is None:
        return _json({"mins": 5, "price": ZERO, "closeTime": _now_ms()})
    return Response(doc, media_type="application/json")
