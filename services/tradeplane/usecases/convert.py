"""Convert (Binance's ``/sapi/v1/convert/*``): quote a swap of any asset for any other at
the best route through our books, and accept it atomically against the house desk.

- **Rates** (:meth:`Convert.rates`): from the books in the market-data cache, the
  convertible pairs (direct and through the configured bridge assets) with their
  indicative ratios, and an index price per asset. A book older than
  ``ConvertSettings.max_book_age_ms`` (or absent) is stale: its routes are not quoted.
- **Router** (:meth:`Convert.quote`): for the requested size, every candidate route's depth
  is walked with the taker fees (``domain.convert``); the best output wins, the desk's
  spread is taken, and the quote is stored firm until its ``validTime``.
- **Acceptance** (:meth:`Convert.accept`): one ledger transaction (``ConvertStore.accept``)
  gives the user's from-amount to the desk and the desk's to-amount to the user, or
  nothing at all; a quote is accepted once, and accepting it again answers the same order.
  The same transaction records the desk's hedge job (routing state PENDING, an outbox
  row); after the commit it is put on the hedge queue (:class:`HedgeQueue`), which the
  hedger works off (``usecases.hedge``).

Refusals are :class:`ConvertRefused` with our own codes (:data:`CODES`), answered by the
gateway in Binance's ``{"code", "msg"}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

from tradeplane.domain.convert import (
    DESK_ACCOUNT,
    Leg,
    Level,
    Priced,
    build_legs,
    candidate_paths,
    from_limits,
    indicative_ratio,
    price_to,
    priced_impact_ppm,
    split_from,
    to_minimum,
)
from tradeplane.domain.errors import Unavailable
from tradeplane.domain.market import DepthSnapshot
from tradeplane.domain.money import UNIT_DECIMALS, UNITS_PER_COIN, fmt_units
from tradeplane.domain.pairs import PairRules
from tradeplane.usecases.errors import UseCaseError

log = logging.getLogger("tradeplane.convert")

#: Binance's ``validTime`` values and their length in ms.
VALID_TIMES: Final[dict[str, int]] = {"10s": 10_000, "30s": 30_000, "1m": 60_000,
                                      "2m": 120_000}
#: ``tradeFlow``: the widest window and the most rows.
MAX_WINDOW_MS: Final = 30 * 86_400_000
MAX_FLOW_LIMIT: Final = 1000


class ConvertCode:
    """Our own error codes of the Convert API (documented in the API reference)."""

    NO_ROUTE = -23001
    AMOUNT_RANGE = -23002
    INSUFFICIENT = -23003
    INVENTORY = -23004
    EXPIRED = -23005
    UNKNOWN_QUOTE = -23006
    STALE = -23007
    UNKNOWN_ORDER = -23008


#: Every code, with what it means (the API reference's table).
CODES: Final[dict[int, str]] = {
    ConvertCode.NO_ROUTE: "Convert: this pair of assets cannot be converted (no route "
                          "through an open market).",
    ConvertCode.AMOUNT_RANGE: "Convert: the amount is outside the convertible range "
                              "(`exchangeInfo`), or the books' depth cannot fill it.",
    ConvertCode.INSUFFICIENT: "Convert: insufficient balance for the from-amount.",
    ConvertCode.INVENTORY: "Convert: the convert desk cannot cover this amount now "
                           "(inventory limit).",
    ConvertCode.EXPIRED: "Convert: the quote expired (past its `validTimestamp`).",
    ConvertCode.UNKNOWN_QUOTE: "Convert: no such quote for this account.",
    ConvertCode.STALE: "Convert: no fresh price for this conversion (a book on every "
                       "route is stale).",
    ConvertCode.UNKNOWN_ORDER: "Convert: no such convert order for this account.",
}


class ConvertRefused(UseCaseError):
    """A Convert request refused; ``code`` is one of :class:`ConvertCode`."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _refuse(code: int, msg: str) -> ConvertRefused:
    return ConvertRefused(code, msg)


class OrderStatus(StrEnum):
    """Binance's ``orderStatus`` of a convert order. Acceptance is one transaction, so an
    order is SUCCESS at once (PROCESS / ACCEPT_SUCCESS are never seen), or FAIL."""

    PROCESS = "PROCESS"
    ACCEPT_SUCCESS = "ACCEPT_SUCCESS"
    SUCCESS = "SUCCESS"
    FAIL = "FAIL"


class RoutingStatus(StrEnum):
    """Where the desk's side of a conversion is (the status stream's ``status``). The
    user's side is final at acceptance whatever this says: ``orderStatus`` is SUCCESS in
    every routing state, FAILED included (the desk then carries the position itself)."""

    PENDING = "PENDING"  # accepted: the user's side settled, the hedge job recorded
    ROUTING = "ROUTING"  # the hedger took the job: IOC orders on our books
    ROUTING_COMPLETE = "ROUTING_COMPLETE"  # every leg's hedge filled and settled
    CONFIRMED = "CONFIRMED"  # final: settled for the user and the desk's hedge done
    FAILED = "FAILED"  # final: the hedge gave up (dead-letter stream, alert)


#: The routing states after which nothing changes.
FINAL_ROUTING: Final = frozenset({RoutingStatus.CONFIRMED, RoutingStatus.FAILED})


# --------------------------------------------------------------------------- records
@dataclass(frozen=True, slots=True)
class RouteLeg:
    """One leg of a quoted route, as shown to the client and kept with the quote."""

    symbol: str
    side: str  # BUY | SELL: the taker order that hedges it
    from_asset: str
    to_asset: str
    from_amount: int  # units used
    to_amount: int  # units out, after the fee
    fee: int  # units of to_asset
    best_price: int  # units of quote per base coin
    worst_price: int  # units
    venue: str = ""  # where the leg is hedged: "" for our books, else a venue's name
    path: int = 0  # which part of a split quote the leg belongs to (legs of one chain)


@dataclass(frozen=True, slots=True)
class Quote:
    """A firm quote: ``from_amount`` of ``from_asset`` for ``to_amount`` of ``to_asset``
    until ``valid_until_ms``."""

    quote_id: int
    account: int
    from_asset: str
    to_asset: str
    from_amount: int
    to_amount: int
    created_ms: int
    valid_until_ms: int
    route: tuple[RouteLeg, ...]
    impact_ppm: int
    fee: int  # units of to_asset: taker fees and spread


@dataclass(frozen=True, slots=True)
class NewQuote:
    """A quote to store (its id comes from the store)."""

    account: int
    from_asset: str
    to_asset: str
    from_amount: int
    to_amount: int
    created_ms: int
    valid_until_ms: int
    route: tuple[RouteLeg, ...]
    impact_ppm: int
    fee: int


@dataclass(frozen=True, slots=True)
class ConvertOrder:
    order_id: int
    quote_id: int
    account: int
    status: OrderStatus
    from_asset: str
    to_asset: str
    from_amount: int
    to_amount: int
    created_ms: int
    #: The desk's side (a conversion from before hedging existed reads CONFIRMED).
    routing: RoutingStatus = RoutingStatus.CONFIRMED


def order_update(order: ConvertOrder, now_ms: int) -> dict[str, Any]:
    """The user-stream event of a convert order in its routing state (``convertOrderUpdate``:
    ``status`` the routing state, ``orderStatus`` Binance's), as the bus and the per-order
    WebSocket send it."""
    return {"e": "convertOrderUpdate", "E": now_ms, "orderId": order.order_id,
            "quoteId": str(order.quote_id), "status": order.routing.value,
            "orderStatus": order.status.value, "fromAsset": order.from_asset,
            "fromAmount": fmt_units(order.from_amount), "toAsset": order.to_asset,
            "toAmount": fmt_units(order.to_amount), "createTime": order.created_ms}


class AcceptResult(StrEnum):
    ACCEPTED = "accepted"  # done now, or earlier (the same order)
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    INSUFFICIENT = "insufficient"
    INVENTORY = "inventory"


# --------------------------------------------------------------------------- ports
class BookSource(Protocol):
    """The books as the market-data service last wrote them."""

    async def books(self, symbols: Sequence[str]) -> dict[str, DepthSnapshot | None]:
        """Raises Unavailable when the cache cannot be read."""
        ...


class ConvertStore(Protocol):
    """Quotes, convert orders and the desk's ledger side (PostgreSQL)."""

    async def available(self, account: int, asset: str) -> int:
        """The account's available units of ``asset`` (0 when it has none)."""
        ...

    async def save_quote(self, quote: NewQuote) -> int:
        """Store a quote; returns its id."""
        ...

    async def accept(self, account: int, quote_id: int, now_ms: int
                     ) -> tuple[AcceptResult, ConvertOrder | None]:
        """In ONE transaction: take the account's quote (unused, valid at ``now_ms``),
        check the user's and the desk's available balances, write the balanced postings,
        the order and its hedge job (routing PENDING, not yet enqueued). A quote already
        accepted answers its order (ACCEPTED). Anything but ACCEPTED changes nothing."""
        ...

    async def order(self, account: int, *, order_id: int | None = None,
                    quote_id: int | None = None) -> ConvertOrder | None:
        ...

    async def history(self, account: int, start_ms: int, end_ms: int, limit: int
                      ) -> list[ConvertOrder]:
        """Orders created in ``start_ms..end_ms``, oldest first, at most ``limit``."""
        ...

    async def balances(self, account: int, assets: Sequence[str]
                       ) -> list[tuple[str, int, int]]:
        """``(asset, available, locked)`` of the account for ``assets``."""
        ...


class QuotePurge(Protocol):
    """Forgets quotes nobody accepted (the store's housekeeping)."""

    async def purge_quotes(self, expired_before_ms: int) -> int:
        """Delete unaccepted quotes that expired before ``expired_before_ms``; how many."""
        ...


class ConvertNotifier(Protocol):
    """The user data stream: what an accepted conversion tells its account."""

    async def converted(self, order: ConvertOrder, balances: Sequence[tuple[str, int, int]],
                        now_ms: int) -> None:
        """Raises Unavailable when the message could not be sent."""
        ...


class HedgeQueue(Protocol):
    """The desk's hedge jobs (a JetStream work queue): one job per conversion."""

    async def enqueue(self, order_id: int) -> None:
        """Store the job; a second enqueue of one conversion within the de-duplication
        window is stored once. Raises Unavailable when it was not (provably) stored."""
        ...


class HedgeOutbox(Protocol):
    """The store's record of which hedge jobs the queue has taken."""

    async def mark_enqueued(self, order_id: int) -> None:
        """Raises Unavailable."""
        ...


class RatesSink(Protocol):
    """Where the rates service publishes the rates."""

    async def publish(self, rates: Rates, now_ms: int) -> None:
        """Raises Unavailable when the store cannot be written."""
        ...


class RatesFeed(Protocol):
    """The rates last published, with when."""

    async def latest(self) -> tuple[int, Rates] | None:
        """Raises Unavailable when the store cannot be read."""
        ...


#: Published rates older than this are not served; the gateway computes its own.
RATES_FRESH_MS: Final = 5_000
#: Unaccepted quotes are kept this long after they expire (then acceptQuote says -23006
#: rather than -23005), so the quotes table stays bounded.
QUOTE_RETENTION_MS: Final = 3_600_000


# --------------------------------------------------------------------------- requests
@dataclass(frozen=True, slots=True)
class QuoteRequest:
    """``POST /sapi/v1/convert/getQuote`` parsed: exactly one of the amounts (units)."""

    account: int
    from_asset: str
    to_asset: str
    from_amount: int | None
    to_amount: int | None
    valid_ms: int


@dataclass(frozen=True, slots=True)
class PairInfo:
    """One row of ``exchangeInfo``."""

    from_asset: str
    to_asset: str
    from_min: int
    from_max: int
    to_min: int
    to_max: int
    from_is_base: bool


@dataclass(frozen=True, slots=True)
class Rate:
    """An indicative ratio: ``ratio`` units of ``to_asset`` per whole ``from_asset``,
    through ``via`` (empty = direct)."""

    from_asset: str
    to_asset: str
    ratio: int
    via: str


@dataclass(frozen=True, slots=True)
class Rates:
    pairs: tuple[Rate, ...]
    #: asset -> units of the index asset per whole coin.
    index: dict[str, int]
    index_asset: str
    stale: tuple[str, ...]  # symbols excluded


@dataclass(frozen=True, slots=True)
class ConvertSettings:
    #: Assets a two-leg route may go through, in order of preference.
    bridges: tuple[str, ...] = ("USDT", "BTC", "ETH")
    #: The desk's spread on every quote, in basis points of the output.
    spread_bps: int = 10
    #: A book not written for this long is stale and not quoted.
    max_book_age_ms: int = 300_000


@dataclass
class Convert:
    """The Convert use cases over the books, the store and the pairs."""

    books: BookSource
    store: ConvertStore
    pairs: Callable[[], Mapping[str, PairRules]]
    settings: ConvertSettings = field(default_factory=ConvertSettings)
    #: The rates service's publications (None: always computed here).
    published: RatesFeed | None = None
    #: Where acceptances are told to the account's user data stream (None: nowhere).
    notifier: ConvertNotifier | None = None
    #: Other venues whose books are routed through too (name -> their books, in our
    #: pairs' ticks and lots); our own books are always a venue, named "".
    venues: Mapping[str, BookSource] = field(default_factory=dict)
    #: Where the desk's hedge jobs go after the commit (None: the hedger's relay sends them).
    hedges: HedgeQueue | None = None
    outbox: HedgeOutbox | None = None

    # ------------------------------------------------------------------ routing
    async def _fresh_books(
        self, symbols: Sequence[str], now_ms: int, source: BookSource | None = None,
    ) -> tuple[dict[str, tuple[Sequence[Level], Sequence[Level]]], list[str]]:
        raw = await (source or self.books).books(symbols)
        fresh: dict[str, tuple[Sequence[Level], Sequence[Level]]] = {}
        stale: list[str] = []
        for sym in symbols:
            b = raw.get(sym)
            if b is None or now_ms - b.ts > self.settings.max_book_age_ms:
                stale.append(sym)
            else:
                fresh[sym] = (b.bids, b.asks)
        return fresh, stale

    def _shapes(self, from_asset: str, to_asset: str
                ) -> list[tuple[tuple[PairRules, bool], ...]]:
        return candidate_paths(self.pairs().values(), from_asset, to_asset,
                               self.settings.bridges)

    async def routes(self, from_asset: str, to_asset: str, now_ms: int
                     ) -> list[tuple[Leg, ...]]:
        """Every candidate route over fresh books.

        Raises:
            ConvertRefused: NO_ROUTE when no open market links the assets, STALE when
                every route has a stale book.
        """
        shapes = self._shapes(from_asset, to_asset)
        if not shapes:
            raise _refuse(ConvertCode.NO_ROUTE, f"Cannot convert {from_asset} to {to_asset}.")
        symbols = sorted({r.symbol for s in shapes for r, _ in s})
        fresh, _stale = await self._fresh_books(symbols, now_ms)
        routes = [legs for s in shapes if (legs := build_legs(s, fresh)) is not None]
        for name, source in self.venues.items():
            try:
                theirs, _ = await self._fresh_books(symbols, now_ms, source)
            except Unavailable as exc:  # a venue down: quote without it, not refuse
                log.warning("convert venue %s not read: %s", name, exc)
                continue
            routes += [legs for s in shapes
                       if (legs := build_legs(s, theirs, name)) is not None]
        if not routes:
            raise _refuse(ConvertCode.STALE,
                          f"No fresh price to convert {from_asset} to {to_asset} now.")
        return routes

    # ------------------------------------------------------------------ reads
    def assets(self) -> list[str]:
        """Every asset some open market trades, sorted."""
        return sorted({a for p in self.pairs().values() if p.trading == "enabled"
                       for a in (p.base, p.quote)})

    @staticmethod
    def fraction() -> int:
        """Every amount is in units of 10**-8."""
        return UNIT_DECIMALS

    async def pair_infos(self, from_asset: str | None, to_asset: str | None
                         ) -> list[PairInfo]:
        """``exchangeInfo``: every convertible (from, to) matching the filters, with the
        amounts' range; the to-maximum is the desk's inventory of the to-asset."""
        assets = self.assets()
        froms = [from_asset] if from_asset else assets
        tos = [to_asset] if to_asset else assets
        out: list[PairInfo] = []
        inventory: dict[str, int] = {}
        for f in froms:
            for t in tos:
                shapes = self._shapes(f, t)
                if not shapes:
                    continue
                first, last = shapes[0][0], shapes[0][-1]
                lo, hi = from_limits(*first)
                if t not in inventory:
                    inventory[t] = await self.store.available(DESK_ACCOUNT, t)
                out.append(PairInfo(f, t, lo, hi, to_minimum(*last), inventory[t],
                                    first[1]))
        return out

    async def rates(self, now_ms: int) -> Rates:
        """Indicative ratios of every convertible pair and an index price per asset (in
        the first bridge asset), from the fresh books only."""
        pairs = self.pairs()
        symbols = sorted(p.symbol for p in pairs.values() if p.trading == "enabled")
        fresh, stale = await self._fresh_books(symbols, now_ms)
        assets = self.assets()
        out: list[Rate] = []
        index_asset = self.settings.bridges[0] if self.settings.bridges else "USDT"
        index: dict[str, int] = {index_asset: UNITS_PER_COIN}
        for f in assets:
            for t in assets:
                best: Rate | None = None
                for shape in self._shapes(f, t):
                    legs = build_legs(shape, fresh)
                    if legs is None:
                        continue
                    r = indicative_ratio(legs)
                    if r is None:
                        continue
                    ratio = r[0]
                    via = legs[0].to_asset if len(legs) > 1 else ""
                    if best is None or ratio > best.ratio:
                        best = Rate(f, t, ratio, via)
                if best is not None:
                    out.append(best)
                    if t == index_asset:
                        index[f] = best.ratio
        return Rates(tuple(out), index, index_asset, tuple(stale))

    async def desk_inventory(self) -> list[tuple[str, int, int]]:
        """The desk's ``(asset, available, locked)`` for every convertible asset."""
        return await self.store.balances(DESK_ACCOUNT, self.assets())

    async def current_rates(self, now_ms: int) -> tuple[int, Rates]:
        """The rates the rates service published, while fresh (``RATES_FRESH_MS``; one
        from a clock ahead of ours is not); else computed now. Returns them with when
        they were computed."""
        if self.published is not None:
            got = await self.published.latest()
            if got is not None and 0 <= now_ms - got[0] <= RATES_FRESH_MS:
                return got
        return now_ms, await self.rates(now_ms)

    # ------------------------------------------------------------------ quote
    async def quote(self, req: QuoteRequest, now_ms: int) -> Quote:
        """Route, price and store a firm quote.

        Raises:
            ConvertRefused: NO_ROUTE, STALE, AMOUNT_RANGE (outside the pair's range or
                beyond the books' depth), INSUFFICIENT (the balance does not cover the
                from-amount), INVENTORY (the desk does not hold the to-amount).
        """
        if req.from_asset == req.to_asset:
            raise _refuse(ConvertCode.NO_ROUTE, "fromAsset and toAsset must differ.")
        routes = await self.routes(req.from_asset, req.to_asset, now_ms)
        spread = self.settings.spread_bps
        priced: Priced | None
        if req.from_amount is not None:
            priced = split_from(routes, req.from_amount, spread,
                                lambda leg: from_limits(leg.rules, leg.sell_base)[0])
        else:
            assert req.to_amount is not None
            priced = price_to(routes, req.to_amount, spread)
        if priced is None:
            raise _refuse(ConvertCode.AMOUNT_RANGE,
                          "The books cannot fill this amount now.")
        for legs, fill in priced.parts:  # each part of a split is hedged on its own
            first, last = legs[0], legs[-1]
            lo, hi = from_limits(first.rules, first.sell_base)
            if not lo <= fill.amount_in <= hi:
                raise _refuse(ConvertCode.AMOUNT_RANGE,
                              f"fromAmount must be within {lo}..{hi} units.")
            if fill.out < to_minimum(last.rules, last.sell_base):
                raise _refuse(ConvertCode.AMOUNT_RANGE, "toAmount is below the minimum.")
        if await self.store.available(req.account, req.from_asset) < priced.from_amount:
            raise _refuse(ConvertCode.INSUFFICIENT, "Insufficient balance.")
        if await self.store.available(DESK_ACCOUNT, req.to_asset) < priced.to_amount:
            raise _refuse(ConvertCode.INVENTORY,
                          "The convert desk cannot cover this amount now.")
        route = tuple(
            RouteLeg(f.leg.rules.symbol, f.leg.side.name, f.leg.from_asset, f.leg.to_asset,
                     f.used, f.out, f.fee,
                     f.leg.rules.price_units(f.leg.levels[0][0]) if f.leg.levels else 0,
                     f.leg.rules.price_units(f.worst_price), f.leg.venue, path)
            for path, (_, fill) in enumerate(priced.parts) for f in fill.fills)
        new = NewQuote(req.account, req.from_asset, req.to_asset, priced.from_amount,
                       priced.to_amount, now_ms, now_ms + req.valid_ms, route,
                       priced_impact_ppm(priced), priced.fee)
        quote_id = await self.store.save_quote(new)
        return Quote(quote_id, new.account, new.from_asset, new.to_asset, new.from_amount,
                     new.to_amount, new.created_ms, new.valid_until_ms, new.route,
                     new.impact_ppm, new.fee)

    # ------------------------------------------------------------------ accept
    async def accept(self, account: int, quote_id: int, now_ms: int) -> ConvertOrder:
        """Accept the account's quote: one ledger transaction, or nothing.

        Raises:
            ConvertRefused: UNKNOWN_QUOTE, EXPIRED, INSUFFICIENT, INVENTORY (nothing
                changed; the quote stays acceptable until it expires).
        """
        result, order = await self.store.accept(account, quote_id, now_ms)
        if result is AcceptResult.ACCEPTED:
            assert order is not None
            await self._enqueue(order)
            await self._notify(order, now_ms)
            return order
        code, msg = {
            AcceptResult.UNKNOWN: (ConvertCode.UNKNOWN_QUOTE, "Quote does not exist."),
            AcceptResult.EXPIRED: (ConvertCode.EXPIRED, "Quote expired."),
            AcceptResult.INSUFFICIENT: (ConvertCode.INSUFFICIENT, "Insufficient balance."),
            AcceptResult.INVENTORY: (ConvertCode.INVENTORY,
                                     "The convert desk cannot cover this amount now."),
        }[result]
        raise _refuse(code, msg)

    async def _enqueue(self, order: ConvertOrder) -> None:
        """Put the hedge job on the queue now. The job's outbox row was committed with the
        conversion, so a queue that cannot be reached delays the hedge (the hedger's relay
        sends it), never loses it; a retried acceptance enqueues again, which the queue
        de-duplicates and the hedger would find already done."""
        if self.hedges is None or order.routing in FINAL_ROUTING:
            return
        try:
            await self.hedges.enqueue(order.order_id)
            if self.outbox is not None:
                await self.outbox.mark_enqueued(order.order_id)
        except Unavailable:
            return

    async def _notify(self, order: ConvertOrder, now_ms: int) -> None:
        """Tell the account's user data stream; the conversion is committed whatever
        happens here, so a stream that cannot be reached loses the message, not the
        answer (the balances are right on the next ``account`` read)."""
        if self.notifier is None:
            return
        try:
            balances = await self.store.balances(order.account,
                                                 (order.from_asset, order.to_asset))
            await self.notifier.converted(order, balances, now_ms)
        except Unavailable:
            return

    async def status(self, account: int, *, order_id: int | None = None,
                     quote_id: int | None = None) -> ConvertOrder:
        """Raises ConvertRefused UNKNOWN_ORDER."""
        order = await self.store.order(account, order_id=order_id, quote_id=quote_id)
        if order is None:
            raise _refuse(ConvertCode.UNKNOWN_ORDER, "Order does not exist.")
        return order

    async def history(self, account: int, start_ms: int, end_ms: int, limit: int
                      ) -> tuple[list[ConvertOrder], bool]:
        """Orders in the window, oldest first, and whether more exist beyond ``limit``."""
        rows = await self.store.history(account, start_ms, end_ms, limit + 1)
        return rows[:limit], len(rows) > limit


def ratio_units(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` in units (10**-8), rounded down; 0 for a 0 divisor."""
    return numerator * UNITS_PER_COIN // denominator if denominator else 0
