"""Properties of the router's arithmetic over random books and amounts (hypothesis): a
route never gives more than its input is worth at the best prices, never less for more
input, never uses more than it is given; a to-amount quote is the least input that gives
it; every conversion's postings balance."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tradeplane.domain.convert import (
    Leg,
    apply_spread,
    convert_postings,
    fill_route,
    ideal_out,
    price_to,
    route_out,
)
from tradeplane.domain.ledger import check_balanced
from tradeplane.domain.pairs import DEMO_PAIRS

BTCUSDT, ETHUSDT, ETHBTC = DEMO_PAIRS


def levels(top: int, down: bool) -> st.SearchStrategy[tuple[tuple[int, int], ...]]:
    """Up to 8 levels from ``top`` ticks, worse each (down for bids, up for asks)."""
    return st.lists(st.tuples(st.integers(1, 500), st.integers(1, 50_000)),
                    min_size=1, max_size=8).map(
        lambda steps: tuple(
            (top - sum(s for s, _ in steps[:i + 1]) if down
             else top + sum(s for s, _ in steps[:i + 1]), q)
            for i, (_s, q) in enumerate(steps)))


routes = st.one_of(
    levels(5_000_000, True).map(lambda b: (Leg(BTCUSDT, True, b),)),
    levels(5_000_000, False).map(lambda a: (Leg(BTCUSDT, False, a),)),
    st.tuples(levels(4_000, True), levels(5_000_000, True)).map(
        lambda bb: (Leg(ETHBTC, True, bb[0]), Leg(BTCUSDT, True, bb[1]))),
    st.tuples(levels(200_000, False), levels(4_000, True)).map(
        lambda ab: (Leg(ETHUSDT, False, ab[0]), Leg(ETHBTC, True, ab[1]))),
)
amounts = st.integers(1, 10**12)


@settings(max_examples=200, deadline=None)
@given(routes, amounts, amounts)
def test_more_input_never_gives_less_and_never_more_than_the_best_prices(
    legs: tuple[Leg, ...], a: int, b: int
) -> None:
    lo, hi = sorted((a, b))
    small, big = fill_route(legs, lo), fill_route(legs, hi)
    assert small.out <= big.out
    assert big.out <= big.out_no_fee <= ideal_out(legs, hi)
    assert big.fills[0].used <= hi
    for first, second in zip(big.fills, big.fills[1:], strict=False):
        assert second.used <= first.out


@settings(max_examples=100, deadline=None)
@given(routes, st.integers(1, 10**10), st.integers(0, 100))
def test_a_to_amount_quote_is_the_least_input_that_gives_it(
    legs: tuple[Leg, ...], want: int, spread_bps: int
) -> None:
    p = price_to([legs], want, spread_bps)
    if p is None:
        return
    assert apply_spread(route_out(legs, p.from_amount), spread_bps) >= want
    assert apply_spread(route_out(legs, p.from_amount - 1), spread_bps) < want


@given(st.integers(1, 2**62), st.integers(1, 2**62), st.integers(1000, 2**40))
def test_every_conversion_balances(give: int, get: int, account: int) -> None:
    check_balanced(convert_postings(1, account, "ETH", give, "BTC", get))
