"""A demo market maker: quotes a few levels around a random-walking mid, through the API."""

from __future__ import annotations

import asyncio
import logging
import random
from decimal import ROUND_DOWN, Decimal

from tradeplane.demo.client import ApiClient

log = logging.getLogger("tradeplane.marketmaker")

START_MIDS = {"BTCUSDT": Decimal("60000"), "ETHUSDT": Decimal("3000"), "ETHBTC": Decimal("0.05")}


def _snap(x: Decimal, step: Decimal) -> Decimal:
    """Round down to a whole multiple of ``step`` (tick or lot)."""
    return (x / step).to_integral_value(rounding=ROUND_DOWN) * step


def _grid(filters: list[dict[str, str]]) -> tuple[Decimal, Decimal]:
    f = {x["filterType"]: x for x in filters}
    return Decimal(f["PRICE_FILTER"]["tickSize"]), Decimal(f["LOT_SIZE"]["stepSize"])


async def run_market_maker(
    url: str, api_key: str, api_secret: str, symbols: list[str], interval: float,
    rounds: int | None = None,
) -> int:
    api = ApiClient(url, api_key, api_secret)
    rng = random.Random(7)
    try:
        info = await api.public("/api/v3/exchangeInfo")
        grids = {s["symbol"]: _grid(s["filters"]) for s in info["symbols"]}
        mids = {s: START_MIDS.get(s, Decimal("100")) for s in symbols if s in grids}
        n = 0
        while rounds is None or n < rounds:
            n += 1
            for sym, mid in list(mids.items()):
                tick, step = grids[sym]
                mid = _snap(mid * Decimal(str(1 + rng.uniform(-0.001, 0.001))), tick)
                mids[sym] = mid
                await api.signed("DELETE", "/api/v3/openOrders", symbol=sym)
                notional = Decimal("200") if sym.endswith("USDT") else Decimal("0.01")
                for i in range(1, 6):
                    off = tick * i * 10
                    qty = _snap(notional / mid, step) or step
                    for side, price in (("BUY", mid - off), ("SELL", mid + off)):
                        r = await api.signed(
                            "POST", "/api/v3/order", symbol=sym, side=side, type="LIMIT",
                            timeInForce="GTC", price=str(price), quantity=str(qty),
                            newOrderRespType="ACK",
                        )
                        if r.status_code != 200:
                            log.warning("quote refused: %s", r.text)
                # Take a little liquidity now and then so trades and candles appear.
                if rng.random() < 0.5:
                    await api.signed(
                        "POST", "/api/v3/order", symbol=sym,
                        side=rng.choice(["BUY", "SELL"]), type="MARKET",
                        quantity=str(_snap(notional / mid / 4, step) or step),
                        newOrderRespType="ACK",
                    )
            await asyncio.sleep(interval)
    finally:
        await api.close()
    return 0
