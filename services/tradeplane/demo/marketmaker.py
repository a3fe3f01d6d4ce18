"""A demo market maker: quotes a few levels around a random-walking mid, through the API."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

from tradeplane.demo.client import ApiClient

log = logging.getLogger("tradeplane.marketmaker")

#: Where the market maker finds its API secret (or in the file named by ``<this>_FILE``):
#: never on its command line, which every user of the machine can read.
API_SECRET_ENV = "TRADEPLANE_MARKETMAKER_API_SECRET"

START_MIDS = {"BTCUSDT": Decimal("60000"), "ETHUSDT": Decimal("3000"), "ETHBTC": Decimal("0.05")}


class MissingSecretError(RuntimeError):
    """The API secret is in neither the variable nor the file it names."""


def api_secret(env: Mapping[str, str]) -> str:
    """The API secret from ``API_SECRET_ENV``, else from the file ``API_SECRET_ENV_FILE``.

    Raises:
        MissingSecretError: neither is set, or the file cannot be read (the message names
            the variable and the file, never a secret).
    """
    given = env.get(API_SECRET_ENV, "")
    if given:
        return given
    path = env.get(f"{API_SECRET_ENV}_FILE", "")
    if not path:
        raise MissingSecretError(f"set {API_SECRET_ENV} or {API_SECRET_ENV}_FILE")
    try:
        secret = Path(path).read_text().strip()
    except OSError as exc:
        raise MissingSecretError(f"cannot read {API_SECRET_ENV}_FILE ({path}): "
                                 f"{exc.strerror}") from exc
    if not secret:
        raise MissingSecretError(f"{API_SECRET_ENV}_FILE ({path}) is empty")
    return secret


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
