"""What Binance clients ask beyond spot trading, typically while they start.

ccxt's ``load_markets`` with its default options also reads the margin listings
(``/sapi/v1/margin/allPairs``, ``.../isolated/allPairs``) and the USDⓈ-M and COIN-M futures
listings (``/fapi/v1/exchangeInfo``, ``/dapi/v1/exchangeInfo``); anything but a Binance
answer there makes it give up. This exchange has spot markets only, so those listings are
answered, empty. The rest is real: system status (the kill switch is maintenance), each
pair's maker/taker fee (``asset/tradeFee``) and the delisting schedule (none is ever
planned: a pair goes when its TradingPair is deleted).

The coins and their networks (``capital/config/getall``) are wallet data:
``gateway/wallet.py``.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Request

from tradeplane.domain.pairs import PairRules
from tradeplane.gateway.auth import Caller, signed_read
from tradeplane.gateway.context import ctx, gateway

sapi = APIRouter(prefix="/sapi/v1", tags=["wallet"])
futures = APIRouter(tags=["general"])
#: Both, for the app to include.
router = APIRouter()


def fee_text(ppm: int) -> str:
    """A fee in parts per million as Binance writes a rate: 1000 -> ``"0.001"``."""
    return format(Decimal(ppm).scaleb(-6).normalize(), "f")


def trade_fee_json(rules: PairRules) -> dict[str, str]:
    return {"symbol": rules.symbol, "makerCommission": fee_text(rules.maker_fee_ppm),
            "takerCommission": fee_text(rules.taker_fee_ppm)}


@sapi.get("/system/status")
async def system_status(request: Request) -> dict[str, Any]:
    """``0 normal``, or ``1 system maintenance`` while the kill switch halts all trading."""
    if gateway(request.app).controls.halted:
        return {"status": 1, "msg": "system maintenance"}
    return {"status": 0, "msg": "normal"}


@sapi.get("/asset/tradeFee")
async def trade_fee(request: Request, caller: Caller = Depends(signed_read)
                    ) -> list[dict[str, str]]:
    """Maker and taker fee of one pair (``symbol``) or of every pair.

    Raises:
        ApiError: -1121 for an unknown symbol.
    """
    c = ctx(request)
    symbol = caller.params.get("symbol")
    pairs = [c.pair(symbol)] if symbol is not None else list(c.pairs.values())
    return [trade_fee_json(p) for p in sorted(pairs, key=lambda p: p.symbol)]


@sapi.get("/spot/delist-schedule")
async def delist_schedule(_caller: Caller = Depends(signed_read)) -> list[dict[str, Any]]:
    """``[{delistTime, symbols}]``: nothing is scheduled, ever (see the module's doc)."""
    return []


@sapi.get("/margin/allPairs")
async def margin_pairs() -> list[dict[str, Any]]:
    """No margin trading: no cross-margin pairs."""
    return []


@sapi.get("/margin/isolated/allPairs")
async def isolated_margin_pairs(_caller: Caller = Depends(signed_read)
                                ) -> list[dict[str, Any]]:
    """No margin trading: no isolated-margin pairs."""
    return []


def _no_futures() -> dict[str, Any]:
    return {"timezone": "UTC", "serverTime": int(time.time() * 1000),
            "rateLimits": [], "exchangeFilters": [], "assets": [], "symbols": []}


@futures.get("/fapi/v1/exchangeInfo")
async def usds_futures_info() -> dict[str, Any]:
    """No USDⓈ-M futures: an exchangeInfo without symbols."""
    return _no_futures()


@futures.get("/dapi/v1/exchangeInfo")
async def coin_futures_info() -> dict[str, Any]:
    """No COIN-M futures: an exchangeInfo without symbols."""
    return _no_futures()


router.include_router(sapi)
router.include_router(futures)
