"""External venues for Convert: another exchange's books (and hedges) through ccxt.

The Convert router quotes through our own books and through every venue configured
(``Convert.venues``), and picks whichever gives the user most. A venue here is any
exchange ccxt speaks; its REST base URL can be pointed elsewhere (another tradeplane, a
testnet), as ``tests/integration/test_convert_venue.py`` does with a second local
instance.

Exactness: ccxt parses numbers with the exchange object's ``number`` class, ``float`` by
default. The venue sets it to ``Decimal`` on its own exchange object, so every price and
quantity is the decimal the exchange sent; each is then rounded to our pair's ticks and
lots *against* the desk (bids down, asks up, quantities down), so a venue's book is never
shown better than it is. No float is involved.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

import ccxt.async_support as ccxt_async

from tradeplane.domain.errors import Unavailable
from tradeplane.domain.market import DepthSnapshot
from tradeplane.domain.model import Side
from tradeplane.domain.money import UNITS_PER_COIN, fmt_units
from tradeplane.domain.pairs import PairRules

log = logging.getLogger("tradeplane.venues")

_ORIGIN = re.compile(r"^https?://[^/]+")
#: Levels read from a venue's book per side.
DEPTH = 50


class VenueUnavailable(Unavailable):
    """The venue did not answer, or answered with an error: nothing is known of it."""


@dataclass(frozen=True, slots=True)
class VenueFill:
    """Where a hedge on a venue stands: its last order's id and status there, and the
    lots filled over all its orders."""

    order_id: str
    filled_lots: int
    status: str


def ccxt_exchange(exchange_id: str, *, base_url: str | None = None,
                  api_key: str | None = None, secret: str | None = None,
                  timeout_ms: int = 5_000) -> Any:
    """A ccxt (asyncio) exchange object parsing numbers as ``Decimal``; with
    ``base_url`` its REST URLs keep their paths and get that origin (another instance of a
    Binance-compatible API).

    Raises:
        ValueError: ccxt has no such exchange.
    """
    cls = getattr(ccxt_async, exchange_id, None)
    if cls is None or not isinstance(cls, type):
        raise ValueError(f"ccxt has no exchange {exchange_id!r}")
    config: dict[str, Any] = {"timeout": timeout_ms, "enableRateLimit": True}
    if api_key:
        config |= {"apiKey": api_key, "secret": secret or ""}
    ex = cls(config)
    ex.number = Decimal
    if base_url:
        origin = base_url.rstrip("/")
        api = ex.urls["api"]
        for key, value in list(api.items()):
            if isinstance(value, str):
                api[key] = _ORIGIN.sub(origin, value)
    return ex


def venue_from_setting(spec: str, api_key: str, secret: str,
                       pairs: Callable[[], Mapping[str, PairRules]]) -> CcxtVenue | None:
    """The venue the ``convert_venue`` setting names (``<ccxt id>[=<origin>]``), or None
    when it is empty."""
    if not spec:
        return None
    exchange_id, _, origin = spec.partition("=")
    exchange = ccxt_exchange(exchange_id, base_url=origin or None, api_key=api_key or None,
                             secret=secret or None)
    return CcxtVenue(exchange_id, exchange, pairs)


def _ticks(rules: PairRules, price: Decimal, rounding: str) -> int:
    return int((price * UNITS_PER_COIN / rules.tick).to_integral_value(rounding))


def _lots(rules: PairRules, qty: Decimal) -> int:
    return int((qty * UNITS_PER_COIN / rules.lot).to_integral_value(ROUND_FLOOR))


def levels(rules: PairRules, raw: Sequence[Sequence[Any]], *, bids: bool) -> list[tuple[int, int]]:
    """A venue's side of a book in ``rules``' ticks and lots, best first; prices rounded
    against the desk (a bid down, an ask up), quantities down; levels that round to no
    lot, or to a price of 0, are dropped, and levels landing on one tick are merged."""
    out: list[tuple[int, int]] = []
    for entry in raw:
        try:
            price, qty = Decimal(str(entry[0])), Decimal(str(entry[1]))
        except (InvalidOperation, IndexError, TypeError, ValueError):
            continue
        if not price.is_finite() or not qty.is_finite() or price <= 0 or qty <= 0:
            continue
        tick = _ticks(rules, price, ROUND_FLOOR if bids else ROUND_CEILING)
        lots = _lots(rules, qty)
        if tick <= 0 or lots <= 0:
            continue
        if out and out[-1][0] == tick:
            out[-1] = (tick, out[-1][1] + lots)
        else:
            out.append((tick, lots))
    out.sort(key=lambda lv: -lv[0] if bids else lv[0])
    return out


class CcxtVenue:
    """One external exchange as a Convert venue: its books (``BookSource``) and hedge
    orders on it."""

    def __init__(self, name: str, exchange: Any,
                 pairs: Callable[[], Mapping[str, PairRules]], depth: int = DEPTH) -> None:
        self.name = name
        self.exchange = exchange
        self.pairs = pairs
        self.depth = depth

    def _market(self, rules: PairRules) -> str:
        return f"{rules.base}/{rules.quote}"

    async def books(self, symbols: Sequence[str]) -> dict[str, DepthSnapshot | None]:
        """The venue's books for our ``symbols`` (None: the venue does not list it).

        Raises:
            VenueUnavailable: the venue did not answer.
        """
        pairs = self.pairs()
        out: dict[str, DepthSnapshot | None] = {}
        for symbol in symbols:
            rules = pairs.get(symbol)
            if rules is None:
                out[symbol] = None
                continue
            try:
                book = await self.exchange.fetch_order_book(self._market(rules), self.depth)
            except ccxt_async.BadSymbol:
                out[symbol] = None  # not listed there
                continue
            except ccxt_async.BaseError as exc:
                raise VenueUnavailable(f"venue {self.name}: {type(exc).__name__} {exc}"
                                       ) from exc
            out[symbol] = DepthSnapshot(
                0, int(time.time() * 1000), levels(rules, book.get("bids") or [], bids=True),
                levels(rules, book.get("asks") or [], bids=False))
        return out

    async def hedge(self, symbol: str, side: Side, lots: int, worst_price_ticks: int,
                    client_id: str) -> VenueFill:
        """Bring the venue's fills under ``client_id`` up to ``lots`` of ``symbol``, with
        IOC limit orders at ``worst_price_ticks`` or better; returns the lots filled so
        far over all of them.

        Idempotent: the attempts are ``<client_id>-0``, ``-1``, ...; each call first asks
        the venue for them in turn (a retry whose order reached the venue finds it) and
        places the next one only for what they left unfilled. (A venue lets a closed
        order's client id be reused, so its refusal of a duplicate would not be enough.)

        Raises:
            VenueUnavailable: not placed, or not known whether it was; or an attempt is
                still open on the venue (an IOC order should not be).
            ValueError: ``symbol`` is not one of our pairs.
        """
        rules = self.pairs().get(symbol)
        if rules is None:
            raise ValueError(f"unknown symbol {symbol}")
        market = self._market(rules)
        done = attempt = 0
        last: dict[str, Any] | None = None
        try:
            while True:
                try:
                    found = await self.exchange.fetch_order(
                        None, market, {"origClientOrderId": f"{client_id}-{attempt}"})
                except ccxt_async.OrderNotFound:
                    break
                if found.get("status") == "open":
                    raise VenueUnavailable(f"venue {self.name}: hedge order "
                                           f"{client_id}-{attempt} is still open")
                done += _lots(rules, Decimal(str(found.get("filled") or 0)))
                last, attempt = found, attempt + 1
            if done < lots:
                last = await self.exchange.create_order(
                    market, "limit", "buy" if side is Side.BUY else "sell",
                    fmt_units(rules.lot * (lots - done)),
                    fmt_units(rules.tick * worst_price_ticks),
                    {"timeInForce": "IOC", "newClientOrderId": f"{client_id}-{attempt}"})
                done += _lots(rules, Decimal(str(last.get("filled") or 0)))
        except ccxt_async.BaseError as exc:
            raise VenueUnavailable(f"venue {self.name}: {type(exc).__name__} {exc}") from exc
        return VenueFill(str(last.get("id")) if last else "", done,
                         str(last.get("status") or "") if last else "")

    async def close(self) -> None:
        await self.exchange.close()
