"""The router's arithmetic (``domain/convert.py``): each level of a route is costed as the
trade it would be, with the pair's taker fee, to the unit; the best route wins; the
spread is the desk's; the postings of a conversion balance."""

from __future__ import annotations

from tradeplane.domain.convert import (
    DESK_ACCOUNT,
    Leg,
    apply_spread,
    candidate_paths,
    convert_postings,
    fill_leg,
    fill_route,
    impact_ppm,
    price_from,
    price_to,
    split_from,
)
from tradeplane.domain.ledger import check_balanced
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import DEMO_PAIRS

BTCUSDT, ETHUSDT, ETHBTC = DEMO_PAIRS


def test_selling_the_base_walks_the_bids_and_pays_the_taker_fee_per_level() -> None:
    # 0.01 BTC at 50000 and 0.01 BTC at 49990; sell 0.015 BTC
    leg = Leg(BTCUSDT, True, ((5_000_000, 1000), (4_999_000, 1000)))
    f = fill_leg(leg, to_units("0.015"))
    first = to_units("500")  # 0.01 x 50000
    second = to_units("249.95")  # 0.005 x 49990
    fees = first // 1000 + second // 1000  # 0.1% each, rounded down per trade
    assert f.used == to_units("0.015")
    assert f.gross == first + second
    assert f.fee == fees == to_units("0.74995")
    assert f.out == first + second - fees == to_units("749.20005")
    assert f.worst_price == 4_999_000


def test_buying_the_base_takes_as_many_lots_as_the_quote_pays_for() -> None:
    # asks 0.01 BTC at 50000, then plenty at 50010; spend 600 USDT
    leg = Leg(BTCUSDT, False, ((5_000_000, 1000), (5_001_000, 10**6)))
    f = fill_leg(leg, to_units("600"))
    # 500 USDT buys 0.01 BTC; the remaining 100 buy floor(100 / 0.50010) lots of 0.00001
    lots2 = to_units("100") // to_units("0.5001")
    base = to_units("0.01") + lots2 * 1000
    assert f.used == to_units("500") + lots2 * to_units("0.5001")
    assert f.fee == to_units("0.01") // 1000 + (lots2 * 1000) // 1000
    assert f.out == base - f.fee
    assert f.used <= to_units("600")


def test_two_legs_chain_the_first_legs_output_into_the_second() -> None:
    eth_btc = Leg(ETHBTC, True, ((5_000, 10**6),))  # 0.05 BTC per ETH
    btc_usdt = Leg(BTCUSDT, True, ((5_000_000, 10**6),))
    r = fill_route((eth_btc, btc_usdt), to_units("1"))
    btc = to_units("0.05") - to_units("0.05") // 1000  # after the ETHBTC taker fee
    lots = btc // BTCUSDT.lot  # the BTC leg sells whole lots: the dust stays with the desk
    usdt = lots * 5_000_000 * BTCUSDT.notional_per_tick_lot
    assert r.fills[0].out == btc
    assert r.fills[1].used == lots * BTCUSDT.lot
    assert r.out == usdt - usdt // 1000


def test_the_best_route_wins_and_the_spread_is_taken_from_its_output() -> None:
    direct = (Leg(ETHUSDT, True, ((200_000, 10**6),)),)  # 2000 USDT per ETH
    bridged = (Leg(ETHBTC, True, ((5_000, 10**6),)),  # 0.05 BTC, then 50000 -> 2500
               Leg(BTCUSDT, True, ((5_000_000, 10**6),)))
    p = price_from([direct, bridged], to_units("1"), spread_bps=10)
    assert p is not None and p.legs == bridged
    assert p.to_amount == apply_spread(fill_route(bridged, to_units("1")).out, 10)
    assert p.fee == p.fill.out_no_fee - p.to_amount > 0


def test_a_quote_by_to_amount_needs_the_least_input_that_gives_it() -> None:
    route = (Leg(BTCUSDT, False, ((5_000_000, 10**6),)),)
    want = to_units("0.01")
    p = price_to([route], want, spread_bps=10)
    assert p is not None and p.to_amount == want
    assert apply_spread(fill_route(route, p.from_amount).out, 10) >= want
    assert apply_spread(fill_route(route, p.from_amount - 1).out, 10) < want


def test_depth_beyond_the_book_is_no_quote_and_impact_grows_with_size() -> None:
    route = (Leg(BTCUSDT, True, ((5_000_000, 1000), (4_500_000, 1000))),)
    assert price_to([route], to_units("10000"), 0) is None
    small = fill_route(route, to_units("0.01"))
    big = fill_route(route, to_units("0.02"))
    assert impact_ppm(route, small) == 0
    assert impact_ppm(route, big) == 50_000  # half at 10% worse: 5%


def test_candidate_paths_are_direct_and_through_each_bridge_on_open_markets() -> None:
    paths = candidate_paths(DEMO_PAIRS, "ETH", "USDT", ("USDT", "BTC"))
    assert [[(p.symbol, s) for p, s in path] for path in paths] == [
        [("ETHUSDT", True)], [("ETHBTC", True), ("BTCUSDT", True)]]
    from dataclasses import replace
    halted = [replace(ETHUSDT, trading="halted"), BTCUSDT, ETHBTC]
    assert len(candidate_paths(halted, "ETH", "USDT", ("BTC",))) == 1


def test_a_conversion_is_one_balanced_transaction_with_the_desk() -> None:
    postings = convert_postings(7, 1000, "BTC", 5, "USDT", 9)
    check_balanced(postings)
    assert {(a, asset, amt) for _r, a, asset, _b, amt in postings} == {
        (1000, "BTC", -5), (DESK_ACCOUNT, "BTC", 5), (DESK_ACCOUNT, "USDT", -9),
        (1000, "USDT", 9)}


# --------------------------------------------------------------------------- splits
def _asks(*levels: tuple[str, str]) -> tuple[tuple[int, int], ...]:
    return tuple((to_units(p) // BTCUSDT.tick, to_units(q) // BTCUSDT.lot) for p, q in levels)


def _no_min(_leg: Leg) -> int:
    return 1


def test_a_split_across_two_books_gives_more_than_either_book_alone() -> None:
    # The same thin book at home and at a venue: 0.01 BTC at 50000, then 51000.
    thin = _asks(("50000", "0.01"), ("51000", "1"))
    home, venue = (Leg(BTCUSDT, False, thin),), (Leg(BTCUSDT, False, thin, "v"),)
    alone = price_from([home, venue], to_units("1000"), spread_bps=10)
    p = split_from([home, venue], to_units("1000"), 10, _no_min)
    assert alone is not None and p is not None
    # 500 USDT each buys 0.01 BTC at 50000; less 0.1% taker fee each; less 10 bps
    assert sorted(f.amount_in for _, f in p.parts) == [to_units("500")] * 2
    assert p.to_amount == apply_spread(2 * (to_units("0.01") - to_units("0.00001")), 10)
    assert p.to_amount == to_units("0.01996002") > alone.to_amount
    assert {legs[0].venue for legs, _ in p.parts} == {"", "v"}


def test_routes_over_one_book_are_never_split() -> None:
    thin = _asks(("50000", "0.01"), ("51000", "1"))
    once, again = (Leg(BTCUSDT, False, thin),), (Leg(BTCUSDT, False, thin),)
    p = split_from([once, again], to_units("1000"), 10, _no_min)
    assert p == price_from([once, again], to_units("1000"), spread_bps=10)
    assert p is not None and p.others == ()


def test_no_split_when_the_other_book_starts_worse_or_a_part_would_be_below_minimum() -> None:
    home = (Leg(BTCUSDT, False, _asks(("50000", "0.01"), ("51000", "1"))),)
    worse = (Leg(BTCUSDT, False, _asks(("52000", "1")), "v"),)
    p = split_from([home, worse], to_units("1000"), 10, _no_min)
    assert p is not None and p.others == ()
    thin = _asks(("50000", "0.01"), ("51000", "1"))
    venue = (Leg(BTCUSDT, False, thin, "v"),)
    p = split_from([home, venue], to_units("1000"), 10, lambda _leg: to_units("600"))
    assert p is not None and p.others == ()  # two parts of 600 do not fit in 1000
