"""Public general endpoints: ping, time, exchangeInfo."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from tradeplane.gateway import views
from tradeplane.gateway.context import ctx
from tradeplane.gateway.inputs import symbol_list

router = APIRouter(prefix="/api/v3", tags=["general"])


@router.get("/ping")
async def ping() -> dict[str, Any]:
    return {}


@router.get("/time")
async def server_time() -> dict[str, int]:
    return {"serverTime": int(time.time() * 1000)}


@router.get("/exchangeInfo")
async def exchange_info(request: Request) -> dict[str, Any]:
    c = ctx(request)
    wanted: list[str] | None = None
    if sym := request.query_params.get("symbol"):
        wanted = [sym]
    elif syms := request.query_params.get("symbols"):
        wanted = symbol_list(syms)
    pairs = [c.pair(s) for s in wanted] if wanted else list(c.pairs.values())
    return {
        "timezone": "UTC",
        "serverTime": int(time.time() * 1000),
        # The limits the gateway enforces (settings; tradeplane.gateway.ratelimit).
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
             "limit": c.settings.ip_weight_per_minute},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
             "limit": c.settings.orders_per_10s},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1,
             "limit": c.settings.orders_per_day},
        ],
        "exchangeFilters": [],
        "symbols": [views.exchange_symbol(p) for p in pairs],
    }
