"""Convert: the pure arithmetic of swapping one asset for another through the books.

A *route* is one or two *legs*, each a walk of one pair's book by a taker: a leg that
gives the pair's base sells into its bids, one that gives the quote buys from its asks.
Every level is costed as the trade it would be (``ledger.trade_amounts``: the same fee
split and rounding the ledger applies to a real fill), so a route's output is what the
desk's hedge on our own books would get, to the unit. Integers only: units (10**-8),
ticks, lots, parts per million.

The conversion itself is a deal between the user and the house convert desk
(:data:`DESK_ACCOUNT`): :func:`convert_postings` is its one balanced ledger transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from tradeplane.domain.ledger import PPM, Posting, trade_amounts
from tradeplane.domain.model import Side, Trade
from tradeplane.domain.money import MAX_UNITS, UNITS_PER_COIN
from tradeplane.domain.pairs import MAX_NOTIONAL, PairRules

#: The house account that takes the other side of every conversion (migration 007).
DESK_ACCOUNT = 2
BPS = 10_000
#: The most legs a route has: direct, or through one bridge asset.
MAX_LEGS = 2

Level = tuple[int, int]  # (price ticks, qty lots)


@dataclass(frozen=True, slots=True)
class Leg:
    """One pair's book walked by a taker: ``sell_base`` sells the base into the bids
    (``levels`` = bids, best first), else buys the base from the asks."""

    rules: PairRules
    sell_base: bool
    levels: tuple[Level, ...]
    #: Where the book is: "" for ours, else an external venue's name (its levels already
    #: in this pair's ticks and lots).
    venue: str = ""

    @property
    def from_asset(self) -> str:
        return self.rules.base if self.sell_base else self.rules.quote

    @property
    def to_asset(self) -> str:
        return self.rules.quote if self.sell_base else self.rules.base

    @property
    def side(self) -> Side:
        """The side of the taker order that hedges this leg."""
        return Side.SELL if self.sell_base else Side.BUY


@dataclass(frozen=True, slots=True)
class LegFill:
    """What walking one leg with ``amount_in`` gives: ``used`` of the input (the rest is
    dust below one lot or one level's price), ``out`` after the taker fee ``fee`` (in the
    leg's to-asset), ``gross`` before it, ``lots`` taken and the worst price reached."""

    leg: Leg
    used: int
    out: int
    gross: int
    fee: int
    lots: int
    worst_price: int  # ticks; 0 when nothing filled


def _trade(price: int, lots: int, side: Side) -> Trade:
    return Trade(0, price, lots, 0, 0, side, 0, 0, 0)


def fill_leg(leg: Leg, amount_in: int) -> LegFill:
    """Walk ``leg``'s levels with ``amount_in`` units of its from-asset, as one taker.

    Selling the base takes whole lots of it; buying takes, level by level, as many lots as
    the remaining quote pays for. Each level's amounts and fee are those of the trade it
    would be (:func:`tradeplane.domain.ledger.trade_amounts`)."""
    rules = leg.rules
    used = out = gross = fee = lots_total = worst = 0
    if leg.sell_base:
        remaining = amount_in // rules.lot
        for price, qty in leg.levels:
            if remaining <= 0:
                break
            take = min(qty, remaining)
            a = trade_amounts(rules, _trade(price, take, Side.SELL))
            used += a.base
            gross += a.quote
            fee += a.seller_fee
            out += a.quote - a.seller_fee
            remaining -= take
            lots_total += take
            worst = price
    else:
        remaining = amount_in
        for price, qty in leg.levels:
            per_lot = rules.notional(price, 1)
            take = min(qty, remaining // per_lot) if per_lot > 0 else 0
            if take <= 0:
                break
            a = trade_amounts(rules, _trade(price, take, Side.BUY))
            used += a.quote
            gross += a.base
            fee += a.buyer_fee
            out += a.base - a.buyer_fee
            remaining -= a.quote
            lots_total += take
            worst = price
    return LegFill(leg, used, out, gross, fee, lots_total, worst)


@dataclass(frozen=True, slots=True)
class RouteFill:
    """A route walked with ``amount_in``: each leg's fill, the route's output after the
    taker fees (``out``) and without any fee (``out_no_fee``, for the price impact)."""

    fills: tuple[LegFill, ...]
    amount_in: int
    out: int
    out_no_fee: int


def route_out(legs: Sequence[Leg], amount_in: int) -> int:
    """The route's output after the taker fees alone (what :func:`fill_route` gives as
    ``out``, without the rest: the bisection's probe)."""
    x = amount_in
    for leg in legs:
        x = fill_leg(leg, x).out
    return x


def _no_fee(leg: Leg) -> Leg:
    return replace(leg, rules=replace(leg.rules, maker_fee_ppm=0, taker_fee_ppm=0))


def fill_route(legs: Sequence[Leg], amount_in: int) -> RouteFill:
    """Walk the legs in turn, each taking the previous one's output."""
    fills: list[LegFill] = []
    x = amount_in
    for leg in legs:
        f = fill_leg(leg, x)
        fills.append(f)
        x = f.out
    y = amount_in
    for leg in legs:
        y = fill_leg(_no_fee(leg), y).out
    return RouteFill(tuple(fills), amount_in, x, y)


def ideal_out(legs: Sequence[Leg], amount_in: int) -> int:
    """The output at each leg's best price for the whole amount, without fees: the
    reference of the price impact (0 when a leg's side is empty)."""
    x = amount_in
    for leg in legs:
        if not leg.levels:
            return 0
        price_units = leg.rules.price_units(leg.levels[0][0])
        x = x * price_units // UNITS_PER_COIN if leg.sell_base else (
            x * UNITS_PER_COIN // price_units)
    return x


def impact_ppm(legs: Sequence[Leg], fill: RouteFill) -> int:
    """How much worse than the best prices the depth makes the route, in ppm (fees
    excluded)."""
    ideal = ideal_out(legs, fill.amount_in)
    if ideal <= 0:
        return 0
    return max(0, (ideal - fill.out_no_fee) * PPM // ideal)


def priced_impact_ppm(priced: Priced) -> int:
    """:func:`impact_ppm` of a quote, split or not: against the best prices of the route
    that would give most at them for the whole amount."""
    if not priced.others:
        return impact_ppm(priced.legs, priced.fill)
    ideal = max(ideal_out(legs, priced.from_amount) for legs, _ in priced.parts)
    if ideal <= 0:
        return 0
    got = sum(f.out_no_fee for _, f in priced.parts)
    return max(0, (ideal - got) * PPM // ideal)


def apply_spread(amount: int, spread_bps: int) -> int:
    """The desk's spread taken from an output, rounded down (in the desk's favour)."""
    return amount * (BPS - spread_bps) // BPS


# --------------------------------------------------------------------------- paths
def candidate_paths(
    pairs: Iterable[PairRules], from_asset: str, to_asset: str, bridges: Sequence[str]
) -> list[tuple[tuple[PairRules, bool], ...]]:
    """Every route shape from ``from_asset`` to ``to_asset``: the direct pair (either
    orientation) and two legs through each bridge asset. Each leg is ``(pair, sell_base)``.
    Only pairs open for trading count."""
    by_assets: dict[tuple[str, str], tuple[PairRules, bool]] = {}
    for p in pairs:
        if p.trading != "enabled":
            continue
        by_assets[(p.base, p.quote)] = (p, True)
        by_assets[(p.quote, p.base)] = (p, False)
    out: list[tuple[tuple[PairRules, bool], ...]] = []
    if from_asset == to_asset:
        return out
    direct = by_assets.get((from_asset, to_asset))
    if direct is not None:
        out.append((direct,))
    for bridge in bridges:
        if bridge in (from_asset, to_asset):
            continue
        first = by_assets.get((from_asset, bridge))
        second = by_assets.get((bridge, to_asset))
        if first is not None and second is not None:
            out.append((first, second))
    return out


def build_legs(
    shape: Sequence[tuple[PairRules, bool]],
    books: Mapping[str, tuple[Sequence[Level], Sequence[Level]]],
    venue: str = "",
) -> tuple[Leg, ...] | None:
    """The legs of a route shape over ``books`` (symbol -> (bids, asks)) of one venue
    (``""``: ours); None when a book of it is missing (stale or never written)."""
    legs: list[Leg] = []
    for rules, sell_base in shape:
        book = books.get(rules.symbol)
        if book is None:
            return None
        bids, asks = book
        legs.append(Leg(rules, sell_base, tuple(bids if sell_base else asks), venue))
    return tuple(legs)


@dataclass(frozen=True, slots=True)
class Priced:
    """The best route for a request: its legs and fill, what the user gives
    (``from_amount``) and gets (``to_amount``, after fees and the spread). A split
    quote has ``others``: further routes over other books, each with its share of the
    input; ``legs``/``fill`` is then the part with the largest input."""

    legs: tuple[Leg, ...]
    fill: RouteFill
    from_amount: int
    to_amount: int
    others: tuple[tuple[tuple[Leg, ...], RouteFill], ...] = ()

    @property
    def parts(self) -> tuple[tuple[tuple[Leg, ...], RouteFill], ...]:
        return ((self.legs, self.fill), *self.others)

    @property
    def fee(self) -> int:
        """Taker fees and spread, in the to-asset: what fee-free execution at the same
        depth would have given more."""
        return max(0, sum(f.out_no_fee for _, f in self.parts) - self.to_amount)


def price_from(routes: Sequence[tuple[Leg, ...]], from_amount: int,
               spread_bps: int) -> Priced | None:
    """The route giving the most for ``from_amount``; None when none gives anything."""
    best: Priced | None = None
    for legs in routes:
        f = fill_route(legs, from_amount)
        if f.fills[-1].out <= 0 or f.fills[0].used <= 0:
            continue
        to_amount = apply_spread(f.out, spread_bps)
        if to_amount > 0 and (best is None or to_amount > best.to_amount):
            best = Priced(legs, f, from_amount, to_amount)
    return best


def _at_best(legs: Sequence[Leg]) -> tuple[Leg, ...]:
    """The legs with their best level as deep as any amount (the route's best rate)."""
    return tuple(replace(leg, levels=leg.levels[:1] and ((leg.levels[0][0], MAX_UNITS),))
                 for leg in legs)


def _level_ends(leg: Leg) -> list[int]:
    """The inputs at which a taker walking ``leg`` has just cleared each level."""
    out: list[int] = []
    spent = 0
    for price, qty in leg.levels:
        spent += qty * leg.rules.lot if leg.sell_base else leg.rules.notional(price, qty)
        out.append(spent)
    return out


def _books(legs: Sequence[Leg]) -> frozenset[tuple[str, str]]:
    return frozenset((leg.venue, leg.rules.symbol) for leg in legs)


#: The best route is tried in a split with at most this many others (each costs a
#: ternary search over how the input is shared: the output of two routes over separate
#: books is concave in the share, but for lot and tick rounding).
SPLIT_CANDIDATES = 3


def split_from(routes: Sequence[tuple[Leg, ...]], from_amount: int, spread_bps: int,
               min_in: Callable[[Leg], int]) -> Priced | None:
    """The best of :func:`price_from` and of sharing ``from_amount`` between the best
    route and another that walks different books (a book walked by both would be counted
    twice): a split is chosen only when it gives the user more. Each part takes at least
    ``min_in(first leg)`` (a hedge below a pair's minimum could not be placed)."""
    single = price_from(routes, from_amount, spread_bps)
    if single is None:
        return None
    # A route can take a share with profit only if its best prices, with its fees, give
    # more for the whole amount than the best route gives: else no split beats it.
    rivals = [legs for legs in routes if legs is not single.legs
              and route_out(_at_best(legs), from_amount) > single.fill.out]
    if not rivals:
        return single
    ranked = sorted(rivals, key=lambda legs: -route_out(legs, from_amount))
    best = single
    a = single.legs
    for b in ranked[:SPLIT_CANDIDATES]:
        if _books(a) & _books(b):
            continue
        lo_a, lo_b = min_in(a[0]), min_in(b[0])
        if lo_a + lo_b > from_amount:
            continue

        def total(x: int, b: tuple[Leg, ...] = b) -> int:
            return route_out(a, x) + route_out(b, from_amount - x)

        lo, hi = lo_a, from_amount - lo_b
        while hi - lo >= 3:  # a third less each round: ~100 rounds for any amount
            m1, m2 = lo + (hi - lo) // 3, hi - (hi - lo) // 3
            if total(m1) < total(m2):
                lo = m1
            else:
                hi = m2
        # Lots and ticks make the output flat in places, where a ternary search stops
        # short of an optimum that sits exactly where a first leg clears a level: those
        # points are candidates too.
        first, last = lo_a, from_amount - lo_b
        candidates = {*range(lo, hi + 1)} | {
            y for y in (*_level_ends(a[0]), *(from_amount - e for e in _level_ends(b[0])))
            if first <= y <= last}
        x = max(sorted(candidates), key=total)
        fa, fb = fill_route(a, x), fill_route(b, from_amount - x)
        if fa.out <= 0 or fb.out <= 0:
            continue
        to_amount = apply_spread(fa.out + fb.out, spread_bps)
        if to_amount > best.to_amount:
            (big, fbig), (small, fsmall) = sorted(((a, fa), (b, fb)),
                                                  key=lambda p: -p[1].amount_in)
            best = Priced(big, fbig, from_amount, to_amount, ((small, fsmall),))
    return best


def price_to(routes: Sequence[tuple[Leg, ...]], to_amount: int,
             spread_bps: int) -> Priced | None:
    """The route needing the least input to give at least ``to_amount`` (the user gets
    exactly ``to_amount``); None when no route's depth reaches it.

    The output of a route never falls when its input grows, so the least input is found
    by doubling, then bisection."""
    best: Priced | None = None
    for legs in routes:
        def gives(x: int, legs: tuple[Leg, ...] = legs) -> bool:
            return apply_spread(route_out(legs, x), spread_bps) >= to_amount

        hi = 1
        while not gives(hi):
            hi *= 2
            if hi > MAX_UNITS:
                break
        if hi > MAX_UNITS:
            continue
        lo = hi // 2  # gives(lo) is False (or lo == 0)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if gives(mid):
                hi = mid
            else:
                lo = mid
        if best is None or hi < best.from_amount:
            best = Priced(legs, fill_route(legs, hi), hi, to_amount)
    return best


def indicative_ratio(legs: Sequence[Leg]) -> tuple[int, int] | None:
    """The route's ratio at the best prices as ``(to units, per from units)`` for one
    whole from-coin, fees excluded; None when a side is empty."""
    out = ideal_out(legs, UNITS_PER_COIN)
    return None if out <= 0 else (out, UNITS_PER_COIN)


# --------------------------------------------------------------------------- limits
def from_limits(rules: PairRules, sell_base: bool) -> tuple[int, int]:
    """The smallest and largest from-amount a first leg takes: the pair's quantity limits
    for its base, its notional limits for its quote."""
    if sell_base:
        return rules.min_qty, rules.max_qty
    return rules.min_notional, MAX_NOTIONAL


def to_minimum(rules: PairRules, sell_base: bool) -> int:
    """The smallest to-amount a last leg gives: its minimum notional in the quote, its
    minimum quantity in the base."""
    return rules.min_notional if sell_base else rules.min_qty


# --------------------------------------------------------------------------- ledger
def convert_postings(
    order_id: int, account: int, from_asset: str, from_amount: int, to_asset: str,
    to_amount: int, desk: int = DESK_ACCOUNT,
) -> list[Posting]:
    """The conversion's one ledger transaction: the user gives ``from_amount`` of
    ``from_asset`` to the desk and gets ``to_amount`` of ``to_asset`` from it; balanced
    per asset (available buckets only: nothing is held in between)."""
    ref = f"convert:{order_id}"
    return [
        (ref, account, from_asset, "a", -from_amount),
        (ref, desk, from_asset, "a", from_amount),
        (ref, desk, to_asset, "a", -to_amount),
        (ref, account, to_asset, "a", to_amount),
    ]
