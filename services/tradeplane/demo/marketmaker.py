"""A demo market maker: quotes a few levels around a random-walking mid, through the API.

Each round places the new quotes before cancelling the old ones, so the book always shows
both sides (a depth snapshot taken at any instant is neither empty nor one-sided)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

from tradeplane.demo.client import ApiClient
from tradeplane.domain.errors import ConfigurationError

log = logging.getLogger("tradeplane.marketmaker")

#: Where the market maker finds its API secret (or in the file named by ``<this>_FILE``):
#: never on its command line, which every user of the machine can read.
API_SECRET_ENV = "TRADEPLANE_MARKETMAKER_API_SECRET"

#: Quote levels a side.
LEVELS = 5

START_MIDS = {"BTCUSDT": Decimal("60000"), "ETHUSDT": Decimal("3000"), "ETHBTC": Decimal("0.05"),
              "LTCUSDT": Decimal("80"), "LTCBTC": Decimal("0.0013"), "XMRUSDT": Decimal("160")}


class MissingSecretError(ConfigurationError):
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


def ladder(mid: Decimal, tick: Decimal, step: Decimal, notional: Decimal
           ) -> list[tuple[str, Decimal, Decimal]]:
    """The quotes around ``mid``: five levels a side, (side, price, quantity)."""
    qty = _snap(notional / mid, step) or step
    out: list[tuple[str, Decimal, Decimal]] = []
    for i in range(1, LEVELS + 1):
        off = tick * i * 10
        out += [("BUY", mid - off, qty), ("SELL", mid + off, qty)]
    return out


def placement_order(quotes: list[tuple[str, Decimal, Decimal]], mid: Decimal,
                    previous_mid: Decimal | None) -> list[tuple[str, Decimal, Decimal]]:
    """The new quotes in the order that never leaves a side empty while the old ones are
    still up: the side moving away from the other first (mid up: sells, which cross
    nothing), then the side that may cross old quotes (those old quotes expire, by
    self-trade prevention, once the new side is already there)."""
    first = "SELL" if previous_mid is None or mid >= previous_mid else "BUY"
    return sorted(quotes, key=lambda q: q[0] != first)


async def _open_order_ids(api: ApiClient, symbol: str) -> list[int]:
    r = await api.signed("GET", "/api/v3/openOrders", symbol=symbol)
    if r.status_code != 200:
        log.warning("open orders unreadable: %s", r.text)
        return []
    return [int(o["orderId"]) for o in r.json()]


async def replace_quotes(api: ApiClient, symbol: str, quotes: list[tuple[str, Decimal, Decimal]],
                         old: list[int]) -> list[int]:
    """Place ``quotes`` (in that order), then cancel the ``old`` orders: the book is never
    without quotes on either side. New quotes that cross old ones expire the old ones
    (``EXPIRE_MAKER``) instead of trading with them. Returns the new orders' ids."""
    placed: list[int] = []
    for side, price, qty in quotes:
        r = await api.signed(
            "POST", "/api/v3/order", symbol=symbol, side=side, type="LIMIT",
            timeInForce="GTC", price=str(price), quantity=str(qty),
            selfTradePreventionMode="EXPIRE_MAKER", newOrderRespType="ACK",
        )
        if r.status_code == 200:
            placed.append(int(r.json()["orderId"]))
        else:
            log.warning("quote refused: %s", r.text)
    for order_id in old:
        r = await api.signed("DELETE", "/api/v3/order", symbol=symbol, orderId=order_id)
        # -2011: already gone (filled, or expired by a new quote crossing it).
        if r.status_code != 200 and r.json().get("code") != -2011:
            log.warning("cancel refused: %s", r.text)
    return placed


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
        # Whatever an earlier run left is replaced in the first round.
        live = {s: await _open_order_ids(api, s) for s in mids}
        previous: dict[str, Decimal | None] = dict.fromkeys(mids)
        n = 0
        while rounds is None or n < rounds:
            n += 1
            for sym, mid in list(mids.items()):
                tick, step = grids[sym]
                mid = _snap(mid * Decimal(str(1 + rng.uniform(-0.001, 0.001))), tick)
                mids[sym] = mid
                notional = Decimal("200") if sym.endswith("USDT") else Decimal("0.01")
                quotes = placement_order(ladder(mid, tick, step, notional), mid,
                                         previous[sym])
                live[sym] = await replace_quotes(api, sym, quotes, live[sym])
                previous[sym] = mid
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
