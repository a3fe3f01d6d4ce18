"""The matching order book, behaviour by behaviour. Every book runs with ``debug=True``."""

from __future__ import annotations

import random

import msgspec
import pytest
from book_impls import book_impl  # noqa: F401 - runs every test on both books

from tradeplane.domain import codec
from tradeplane.domain.book import BookSnapshot, OrderBook, RestingOrder
from tradeplane.domain.book import OrderBook as PurePythonBook
from tradeplane.domain.model import (
    SCHEMA_VERSION,
    Cancel,
    CancelAll,
    CancelRejected,
    Command,
    Done,
    Event,
    NewOrder,
    OrderType,
    Reason,
    Rested,
    SetTrading,
    Side,
    Status,
    TimeInForce,
    Trade,
    TradingChanged,
    TradingState,
)

BUY, SELL = Side.BUY, Side.SELL
GTC, IOC, FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK
TS = 1_700_000_000_000  # every command in this file carries the same ts unless a test says so
NPL = 10  # quote units per tick x lot


def book(**kwargs: int) -> OrderBook:
    return OrderBook("BTCUSDT", NPL, debug=True, **kwargs)  # type: ignore[arg-type]


def limit(oid: int, side: Side, price: int, qty: int, account: int = 1, tif: TimeInForce = GTC,
          ts: int = TS) -> NewOrder:
    return NewOrder(oid, account, side, OrderType.LIMIT, tif, price, qty, 0, False, ts)


def maker_only(oid: int, side: Side, price: int, qty: int, account: int = 1) -> NewOrder:
    return NewOrder(oid, account, side, OrderType.LIMIT_MAKER, GTC, price, qty, 0, False, TS)


def market(oid: int, side: Side, qty: int, quote: int = 0, account: int = 1,
           by_quote: bool = False) -> NewOrder:
    return NewOrder(oid, account, side, OrderType.MARKET, GTC, 0, qty, quote, by_quote, TS)


def trade(tid: int, price: int, qty: int, taker: NewOrder, maker_order: int,
          maker_account: int = 1) -> Trade:
    return Trade(tid, price, qty, taker.order_id, taker.account, taker.side, maker_order,
                 maker_account, taker.ts)


def done(oid: int, status: Status, reason: Reason = Reason.NONE, account: int = 1,
         ts: int = TS) -> Done:
    return Done(oid, account, status, reason, ts)


def rested(cmd: NewOrder, remaining: int | None = None) -> Rested:
    qty = cmd.qty if remaining is None else remaining
    return Rested(cmd.order_id, cmd.account, cmd.side, cmd.price, qty, cmd.ts)


def run(b: OrderBook, *cmds: Command) -> list[Event]:
    out: list[Event] = []
    for cmd in cmds:
        out.extend(b.process(cmd))
    return out


# --------------------------------------------------------------------------- resting, priority
def test_non_crossing_limit_order_rests_and_sets_the_best_price() -> None:
    b = book()
    bid = limit(1, BUY, 99, 5)
    ask = limit(2, SELL, 101, 3, account=2)
    assert b.process(bid) == [rested(bid)]
    assert b.process(ask) == [rested(ask)]
    assert (b.best_bid(), b.best_ask()) == (99, 101)
    assert b.open_orders_count == 2
    assert b.order(1) == RestingOrder(1, 1, BUY, 99, 5, qty=5)
    assert b.order(3) is None


def test_empty_book_has_no_best_prices_and_no_depth() -> None:
    b = book()
    assert (b.best_bid(), b.best_ask()) == (None, None)
    assert b.depth(10) == ([], [])
    assert b.open_orders_count == 0


def test_better_price_fills_first_whatever_the_arrival_order() -> None:
    b = book()
    run(b, limit(1, SELL, 102, 1), limit(2, SELL, 101, 1), limit(3, SELL, 103, 1))
    taker = limit(4, BUY, 103, 3, account=2)
    assert b.process(taker) == [
        trade(1, 101, 1, taker, 2), done(2, Status.FILLED),
        trade(2, 102, 1, taker, 1), done(1, Status.FILLED),
        trade(3, 103, 1, taker, 3), done(3, Status.FILLED),
        done(4, Status.FILLED, account=2),
    ]
    assert b.open_orders_count == 0


def test_orders_at_one_price_fill_in_arrival_order() -> None:
    b = book()
    run(b, limit(1, BUY, 100, 2, account=1), limit(2, BUY, 100, 2, account=2),
        limit(3, BUY, 100, 2, account=3))
    taker = limit(4, SELL, 100, 5, account=9)
    assert b.process(taker) == [
        trade(1, 100, 2, taker, 1, 1), done(1, Status.FILLED, account=1),
        trade(2, 100, 2, taker, 2, 2), done(2, Status.FILLED, account=2),
        trade(3, 100, 1, taker, 3, 3),
        done(4, Status.FILLED, account=9),
    ]
    assert b.order(3) == RestingOrder(3, 3, BUY, 100, 1, qty=2)


def test_partially_filled_maker_keeps_its_place_in_the_queue() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 5), limit(2, SELL, 100, 5))
    first = limit(3, BUY, 100, 2, account=2)
    second = limit(4, BUY, 100, 4, account=2)
    run(b, first)
    assert b.process(second) == [
        trade(2, 100, 3, second, 1), done(1, Status.FILLED),
        trade(3, 100, 1, second, 2),
        done(4, Status.FILLED, account=2),
    ]
    assert b.depth(5) == ([], [(100, 4)])


def test_taker_remainder_rests_at_its_limit_after_partial_fill() -> None:
    b = book()
    b.process(limit(1, SELL, 100, 2))
    taker = limit(2, BUY, 101, 5, account=2)
    assert b.process(taker) == [
        trade(1, 100, 2, taker, 1), done(1, Status.FILLED), rested(taker, 3),
    ]
    assert b.depth(5) == ([(101, 3)], [])
    assert b.order(2) == RestingOrder(2, 2, BUY, 101, 3, qty=5)


def test_trade_price_is_the_makers_price_not_the_takers_limit() -> None:
    b = book()
    b.process(limit(1, BUY, 105, 1))
    taker = limit(2, SELL, 90, 1, account=2)
    events = b.process(taker)
    assert isinstance(events[0], Trade) and events[0].price == 105


def test_taker_stops_at_its_limit_price() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 1), limit(2, SELL, 102, 1))
    taker = limit(3, BUY, 101, 3, account=2)
    assert b.process(taker) == [trade(1, 100, 1, taker, 1), done(1, Status.FILLED),
                                rested(taker, 2)]
    assert (b.best_bid(), b.best_ask()) == (101, 102)


def test_trade_ids_count_from_one_per_book() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 3))
    ids = [e.trade_id for i in range(3) for e in b.process(limit(10 + i, BUY, 100, 1))
           if isinstance(e, Trade)]
    assert ids == [1, 2, 3]
    assert [e for e in book().process(limit(1, BUY, 1, 1)) if isinstance(e, Trade)] == []


def test_every_event_carries_the_commands_ts() -> None:
    b = book()
    b.process(limit(1, SELL, 100, 1, ts=5))
    events = b.process(limit(2, BUY, 100, 2, ts=9))
    assert events and all(e.ts == 9 for e in events)


def test_self_trade_is_allowed() -> None:
    b = book()
    b.process(limit(1, SELL, 100, 1, account=7))
    taker = limit(2, BUY, 100, 1, account=7)
    assert b.process(taker) == [trade(1, 100, 1, taker, 1, 7), done(1, Status.FILLED, account=7),
                                done(2, Status.FILLED, account=7)]


# --------------------------------------------------------------------------- time in force
def test_ioc_fills_what_it_can_and_expires_the_rest() -> None:
    b = book()
    b.process(limit(1, SELL, 100, 2))
    taker = limit(2, BUY, 100, 5, account=2, tif=IOC)
    assert b.process(taker) == [trade(1, 100, 2, taker, 1), done(1, Status.FILLED),
                                done(2, Status.EXPIRED, Reason.NO_LIQUIDITY, account=2)]
    assert b.open_orders_count == 0


def test_ioc_fully_filled_is_filled() -> None:
    b = book()
    b.process(limit(1, SELL, 100, 5))
    taker = limit(2, BUY, 100, 5, account=2, tif=IOC)
    assert b.process(taker)[-1] == done(2, Status.FILLED, account=2)


def test_ioc_that_does_not_cross_expires_without_trading() -> None:
    b = book()
    b.process(limit(1, SELL, 101, 5))
    assert b.process(limit(2, BUY, 100, 5, tif=IOC)) == [
        done(2, Status.EXPIRED, Reason.NO_LIQUIDITY)]
    assert b.depth(5) == ([], [(101, 5)])


def test_fok_without_enough_liquidity_expires_without_any_trade() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 2), limit(2, SELL, 101, 2))
    before = b.state_hash()
    assert b.process(limit(3, BUY, 101, 5, tif=FOK)) == [
        done(3, Status.EXPIRED, Reason.NO_LIQUIDITY)]
    assert b.depth(5) == ([], [(100, 2), (101, 2)])
    assert b.take_dirty_levels() == [(SELL, 100, 2), (SELL, 101, 2)]  # only from the resting
    b.process(Cancel(3, 1, TS))  # nothing of the FOK order is left to cancel
    assert b.state_hash() != before  # the FOK id is now remembered as finished


def test_fok_ignores_liquidity_beyond_its_limit() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 2), limit(2, SELL, 102, 10))
    assert b.process(limit(3, BUY, 101, 3, tif=FOK)) == [
        done(3, Status.EXPIRED, Reason.NO_LIQUIDITY)]


def test_fok_with_enough_liquidity_fills_across_levels() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 2), limit(2, SELL, 101, 2))
    taker = limit(3, BUY, 101, 3, account=2, tif=FOK)
    assert b.process(taker) == [trade(1, 100, 2, taker, 1), done(1, Status.FILLED),
                                trade(2, 101, 1, taker, 2), done(3, Status.FILLED, account=2)]


def test_limit_maker_that_would_take_is_rejected() -> None:
    b = book()
    b.process(limit(1, SELL, 100, 1))
    assert b.process(maker_only(2, BUY, 100, 1)) == [
        done(2, Status.REJECTED, Reason.WOULD_TAKE)]
    assert b.depth(5) == ([], [(100, 1)])


def test_limit_maker_that_does_not_cross_rests() -> None:
    b = book()
    b.process(limit(1, SELL, 100, 1))
    cmd = maker_only(2, BUY, 99, 4)
    assert b.process(cmd) == [rested(cmd)]


# --------------------------------------------------------------------------- market orders
def test_market_by_quantity_sweeps_levels_until_filled() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 2), limit(2, SELL, 101, 2))
    taker = market(3, BUY, 3, quote=10**9, account=2)
    assert b.process(taker) == [trade(1, 100, 2, taker, 1), done(1, Status.FILLED),
                                trade(2, 101, 1, taker, 2), done(3, Status.FILLED, account=2)]


def test_market_sell_by_quantity_without_funds_cap() -> None:
    b = book()
    run(b, limit(1, BUY, 100, 2), limit(2, BUY, 99, 2))
    taker = market(3, SELL, 4, account=2)
    assert b.process(taker)[-1] == done(3, Status.FILLED, account=2)
    assert b.depth(5) == ([], [])


def test_market_by_quantity_expires_when_the_book_runs_out() -> None:
    b = book()
    b.process(limit(1, SELL, 100, 2))
    taker = market(2, BUY, 5, quote=10**9, account=2)
    assert b.process(taker) == [trade(1, 100, 2, taker, 1), done(1, Status.FILLED),
                                done(2, Status.EXPIRED, Reason.NO_LIQUIDITY, account=2)]


def test_market_order_on_an_empty_side_expires_without_trading() -> None:
    b = book()
    b.process(limit(1, BUY, 100, 2))
    assert b.process(market(2, BUY, 1, quote=10**9)) == [
        done(2, Status.EXPIRED, Reason.NO_LIQUIDITY)]


def test_market_buy_stops_at_its_funds_cap_with_cap_reached() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 2), limit(2, SELL, 200, 5))
    # 2 lots at 100 cost 2000; 2500 left buys 1 lot at 200 (2000), not a second.
    taker = market(3, BUY, 5, quote=4500, account=2)
    assert b.process(taker) == [trade(1, 100, 2, taker, 1), done(1, Status.FILLED),
                                trade(2, 200, 1, taker, 2),
                                done(3, Status.EXPIRED, Reason.CAP_REACHED, account=2)]
    assert b.order(2) == RestingOrder(2, 1, SELL, 200, 4, qty=5)


def test_market_by_quantity_whose_cap_is_spent_exactly_reports_cap_reached() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 5))
    taker = market(2, BUY, 3, quote=2 * 100 * NPL, account=2)
    assert b.process(taker) == [trade(1, 100, 2, taker, 1),
                                done(2, Status.EXPIRED, Reason.CAP_REACHED, account=2)]


def test_market_by_quantity_filled_exactly_at_its_cap_is_filled() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 5))
    taker = market(2, BUY, 2, quote=2 * 100 * NPL, account=2)
    assert b.process(taker)[-1] == done(2, Status.FILLED, account=2)


def test_market_by_quote_is_filled_when_the_next_lot_does_not_fit() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 2), limit(2, SELL, 101, 9))
    # 2000 + 1010 = 3010 spent; 3500 - 3010 = 490 does not buy a lot at 101 (1010).
    taker = market(3, BUY, 0, quote=3500, account=2, by_quote=True)
    assert b.process(taker) == [trade(1, 100, 2, taker, 1), done(1, Status.FILLED),
                                trade(2, 101, 1, taker, 2), done(3, Status.FILLED, account=2)]


def test_market_by_quote_spending_everything_exactly_is_filled_even_if_the_book_empties() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 2))
    taker = market(2, BUY, 0, quote=2000, account=2, by_quote=True)
    assert b.process(taker) == [trade(1, 100, 2, taker, 1), done(1, Status.FILLED),
                                done(2, Status.FILLED, account=2)]


def test_market_by_quote_expires_when_the_book_runs_out_first() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 2))
    taker = market(2, BUY, 0, quote=5000, account=2, by_quote=True)
    assert b.process(taker)[-1] == done(2, Status.EXPIRED, Reason.NO_LIQUIDITY, account=2)


def test_market_by_quote_too_small_for_one_lot_expires_without_trading() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 2))
    assert b.process(market(2, BUY, 0, quote=999, by_quote=True)) == [
        done(2, Status.EXPIRED, Reason.NO_LIQUIDITY)]
    assert b.depth(5) == ([], [(100, 2)])


def test_market_by_quote_reaching_its_lot_cap_first_expires() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 9))
    taker = market(2, BUY, 3, quote=5000, account=2, by_quote=True)
    assert b.process(taker) == [trade(1, 100, 3, taker, 1),
                                done(2, Status.EXPIRED, Reason.NO_LIQUIDITY, account=2)]


def test_market_sell_by_quote_sells_lots_worth_the_quote_amount() -> None:
    b = book()
    run(b, limit(1, BUY, 100, 9))
    taker = market(2, SELL, 0, quote=3500, account=2, by_quote=True)
    assert b.process(taker) == [trade(1, 100, 3, taker, 1), done(2, Status.FILLED, account=2)]


@pytest.mark.parametrize(
    "cmd",
    [
        pytest.param(limit(1, BUY, 0, 1), id="limit-price-zero"),
        pytest.param(limit(1, BUY, 100, 0), id="limit-qty-zero"),
        pytest.param(limit(1, BUY, -5, 1), id="limit-price-negative"),
        pytest.param(maker_only(1, BUY, 100, 0), id="maker-qty-zero"),
        pytest.param(market(1, BUY, 0), id="market-without-any-cap"),
        pytest.param(market(1, BUY, 0, quote=500), id="market-qty-zero-not-by-quote"),
        pytest.param(market(1, BUY, 1, quote=0, by_quote=True), id="by-quote-without-quote"),
        pytest.param(market(1, BUY, -1, quote=500), id="market-qty-negative"),
        pytest.param(NewOrder(1, 1, BUY, OrderType.MARKET, GTC, 100, 1, 0, False, TS),
                     id="market-with-price"),
    ],
)
def test_malformed_order_is_rejected_without_touching_the_book(cmd: NewOrder) -> None:
    b = book()
    b.process(limit(9, SELL, 100, 1, account=2))
    assert b.process(cmd) == [done(1, Status.REJECTED, Reason.NONE)]
    assert b.depth(5) == ([], [(100, 1)])


# --------------------------------------------------------------------------- cancels
def test_cancel_of_own_live_order_removes_it() -> None:
    b = book()
    run(b, limit(1, BUY, 100, 2), limit(2, BUY, 100, 3))
    assert b.process(Cancel(1, 1, TS)) == [done(1, Status.CANCELED)]
    assert b.depth(5) == ([(100, 3)], [])
    assert b.order(1) is None


def test_canceled_order_is_never_matched() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 2), limit(2, SELL, 100, 3), Cancel(1, 1, TS))
    taker = limit(3, BUY, 100, 5, account=2)
    assert b.process(taker) == [trade(1, 100, 3, taker, 2), done(2, Status.FILLED),
                                rested(taker, 2)]


def test_cancel_of_unknown_order_is_rejected() -> None:
    b = book()
    assert b.process(Cancel(42, 1, TS)) == [CancelRejected(42, 1, Reason.UNKNOWN_ORDER, TS)]


def test_cancel_of_another_accounts_order_is_rejected_as_unknown() -> None:
    b = book()
    b.process(limit(1, BUY, 100, 2, account=1))
    assert b.process(Cancel(1, 2, TS)) == [CancelRejected(1, 2, Reason.UNKNOWN_ORDER, TS)]
    assert b.order(1) is not None


def test_cancel_of_a_filled_or_already_canceled_order_is_rejected_as_unknown() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 1), limit(2, BUY, 100, 1), limit(3, BUY, 90, 1), Cancel(3, 1, TS))
    assert b.process(Cancel(1, 1, TS)) == [CancelRejected(1, 1, Reason.UNKNOWN_ORDER, TS)]
    assert b.process(Cancel(3, 1, TS)) == [CancelRejected(3, 1, Reason.UNKNOWN_ORDER, TS)]


def test_cancel_all_cancels_the_accounts_orders_in_order_id_order() -> None:
    b = book()
    run(b, limit(5, BUY, 99, 1), limit(2, SELL, 105, 1), limit(3, BUY, 98, 1, account=2),
        limit(4, BUY, 99, 1))
    assert b.process(CancelAll(1, TS)) == [done(2, Status.CANCELED), done(4, Status.CANCELED),
                                           done(5, Status.CANCELED)]
    assert b.depth(5) == ([(98, 1)], [])
    assert b.open_orders_count == 1


def test_cancel_all_without_open_orders_emits_nothing() -> None:
    b = book()
    b.process(limit(1, BUY, 99, 1, account=2))
    assert b.process(CancelAll(1, TS)) == []


def test_many_cancels_in_one_level_keep_its_queue_bounded() -> None:
    b = book()
    for oid in range(1, 1001):
        b.process(limit(oid, BUY, 100, 1))
    for oid in range(2, 1000):  # leave the head and the tail
        b.process(Cancel(oid, 1, TS))
    if isinstance(b, PurePythonBook):
        assert len(b._bids.levels[100].queue) < 100  # lazily deleted entries were compacted
    else:  # the compiled book unlinks a canceled order at once; the checker walks the queue
        b.check_invariants()
        assert b.depth(1) == ([(100, 2)], [])
    taker = limit(2000, SELL, 100, 2, account=2)
    assert b.process(taker) == [trade(1, 100, 1, taker, 1), done(1, Status.FILLED),
                                trade(2, 100, 1, taker, 1000), done(1000, Status.FILLED),
                                done(2000, Status.FILLED, account=2)]


# --------------------------------------------------------------------------- trading state
def test_set_trading_emits_trading_changed() -> None:
    b = book()
    assert b.process(SetTrading(TradingState.HALTED, TS)) == [
        TradingChanged(TradingState.HALTED, TS)]
    assert b.trading == TradingState.HALTED


def test_cancel_only_rejects_new_orders_but_processes_cancels() -> None:
    b = book()
    run(b, limit(1, BUY, 100, 1), SetTrading(TradingState.CANCEL_ONLY, TS))
    assert b.process(limit(2, SELL, 100, 1)) == [done(2, Status.REJECTED, Reason.HALTED)]
    assert b.process(Cancel(1, 1, TS)) == [done(1, Status.CANCELED)]
    run(b, limit(3, BUY, 100, 1, account=2))
    assert b.process(CancelAll(2, TS)) == []


def test_halted_rejects_new_orders_and_cancels() -> None:
    b = book()
    run(b, limit(1, BUY, 100, 1), SetTrading(TradingState.HALTED, TS))
    assert b.process(market(2, SELL, 1)) == [done(2, Status.REJECTED, Reason.HALTED)]
    assert b.process(Cancel(1, 1, TS)) == [CancelRejected(1, 1, Reason.HALTED, TS)]
    assert b.process(CancelAll(1, TS)) == [CancelRejected(0, 1, Reason.HALTED, TS)]
    assert b.depth(5) == ([(100, 1)], [])


def test_reenabled_book_accepts_orders_again() -> None:
    b = book()
    run(b, SetTrading(TradingState.HALTED, TS), SetTrading(TradingState.ENABLED, TS))
    cmd = limit(1, BUY, 100, 1)
    assert b.process(cmd) == [rested(cmd)]


# --------------------------------------------------------------------------- duplicates
def test_redelivered_live_order_emits_nothing_and_changes_nothing() -> None:
    b = book()
    cmd = limit(1, BUY, 100, 2)
    b.process(cmd)
    before = b.state_hash()
    b.take_dirty_levels()
    assert b.process(cmd) == []
    assert b.process(limit(1, SELL, 100, 9)) == []  # same id, different content: still a replay
    assert b.state_hash() == before
    assert b.take_dirty_levels() == []


def test_redelivered_finished_order_emits_nothing() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 1), limit(2, BUY, 100, 1), limit(3, BUY, 90, 1),
        Cancel(3, 1, TS))
    for oid in (1, 2, 3):
        assert b.process(limit(oid, BUY, 100, 1)) == []


def test_redelivered_rejected_order_emits_nothing() -> None:
    b = book()
    run(b, SetTrading(TradingState.HALTED, TS), limit(1, BUY, 100, 1),
        SetTrading(TradingState.ENABLED, TS))
    assert b.process(limit(1, BUY, 100, 1)) == []


def test_finished_ids_are_forgotten_beyond_the_recent_limit() -> None:
    b = book(recent_limit=2)
    run(b, limit(1, BUY, 90, 1), Cancel(1, 1, TS), limit(2, BUY, 90, 1), Cancel(2, 1, TS))
    assert b.process(limit(1, BUY, 90, 1)) == []
    b.process(limit(3, BUY, 90, 1, account=2))
    b.process(Cancel(3, 2, TS))  # evicts id 1
    cmd = limit(1, BUY, 90, 1)
    assert b.process(cmd) == [rested(cmd)]


# --------------------------------------------------------------------------- market data
def test_depth_lists_bids_descending_and_asks_ascending_up_to_the_limit() -> None:
    b = book()
    run(b, limit(1, BUY, 98, 1), limit(2, BUY, 99, 2), limit(3, BUY, 97, 3), limit(4, BUY, 99, 1),
        limit(5, SELL, 102, 1), limit(6, SELL, 101, 2), limit(7, SELL, 103, 3))
    assert b.depth(2) == ([(99, 3), (98, 1)], [(101, 2), (102, 1)])
    assert b.depth(0) == ([], [])


def test_dirty_levels_report_each_changed_level_once_sorted_and_reset() -> None:
    b = book()
    run(b, limit(1, SELL, 102, 1), limit(2, SELL, 101, 2), limit(3, BUY, 99, 1),
        limit(4, BUY, 98, 1), limit(5, BUY, 99, 4))
    assert b.take_dirty_levels() == [(BUY, 98, 1), (BUY, 99, 5), (SELL, 101, 2), (SELL, 102, 1)]
    assert b.take_dirty_levels() == []
    run(b, limit(6, BUY, 101, 3, account=2))  # takes 101 and rests 1 at 101
    assert b.take_dirty_levels() == [(BUY, 101, 1), (SELL, 101, 0)]
    run(b, Cancel(4, 1, TS), limit(7, BUY, 97, 1), Cancel(7, 1, TS))
    assert b.take_dirty_levels() == [(BUY, 97, 0), (BUY, 98, 0)]


def test_dirty_levels_are_plain_ints() -> None:
    b = book()
    b.process(limit(1, SELL, 102, 1))
    ((side, price, qty),) = b.take_dirty_levels()
    assert (side, price, qty) == (SELL, 102, 1)
    assert type(side) is int


# --------------------------------------------------------------------------- state
def _seeded_commands(n: int, seed: int) -> list[Command]:
    rng = random.Random(seed)
    cmds: list[Command] = []
    for i in range(1, n + 1):
        u = rng.random()
        side = rng.choice([BUY, SELL])
        account = rng.randint(1, 4)
        if u < 0.55:
            tif = rng.choice([GTC, GTC, GTC, IOC, FOK])
            cmds.append(limit(i, side, rng.randint(95, 105), rng.randint(1, 5), account, tif, ts=i))
        elif u < 0.65:
            by_quote = rng.random() < 0.5
            cmds.append(NewOrder(i, account, side, OrderType.MARKET, GTC, 0,
                                 0 if by_quote else rng.randint(1, 8),
                                 rng.randint(1, 8000), by_quote, i))
        elif u < 0.9:
            cmds.append(Cancel(rng.randint(max(1, i - 20), i), account, i))
        elif u < 0.93:
            cmds.append(CancelAll(account, i))
        elif u < 0.95:
            state = rng.choice([TradingState.CANCEL_ONLY, TradingState.ENABLED])
            cmds.append(SetTrading(state, i))
        else:
            cmds.append(cmds[rng.randrange(len(cmds))] if cmds else CancelAll(account, i))
    return cmds


def test_snapshot_restore_then_continue_equals_an_uninterrupted_run() -> None:
    cmds = _seeded_commands(3000, seed=7)
    straight = OrderBook("BTCUSDT", NPL, recent_limit=50)
    straight_events = [straight.process(c) for c in cmds]
    for cut in (0, 1, 500, 1777, 3000):
        first = OrderBook("BTCUSDT", NPL, recent_limit=50)
        head = [first.process(c) for c in cmds[:cut]]
        raw = codec.encode(first.snapshot())
        second = OrderBook.restore(codec.decode_as(raw, BookSnapshot), debug=True)
        tail = [second.process(c) for c in cmds[cut:]]
        assert head + tail == straight_events
        assert second.state_hash() == straight.state_hash()
    assert sum(isinstance(e, Trade) for events in straight_events for e in events) > 100


def test_state_hash_is_the_same_for_the_same_command_log() -> None:
    cmds = _seeded_commands(500, seed=3)
    one, two = book(), book()
    run(one, *cmds)
    run(two, *cmds)
    assert one.state_hash() == two.state_hash()
    assert len(one.state_hash()) == 64


def test_state_hash_changes_with_the_state() -> None:
    b = book()
    hashes = {b.state_hash()}
    for cmd in (limit(1, BUY, 100, 1), limit(2, BUY, 100, 1), Cancel(1, 1, TS),
                SetTrading(TradingState.CANCEL_ONLY, TS)):
        b.process(cmd)
        hashes.add(b.state_hash())
    assert len(hashes) == 5


def test_state_hash_ignores_lazily_deleted_queue_entries() -> None:
    b = book()
    run(b, limit(1, BUY, 100, 1), limit(2, BUY, 100, 1), limit(3, BUY, 100, 1), Cancel(2, 1, TS))
    if isinstance(b, PurePythonBook):  # (the compiled book unlinks it at once)
        assert len(b._bids.levels[100].queue) == 3  # id 2 is still queued, dead
    assert OrderBook.restore(b.snapshot()).state_hash() == b.state_hash()


def test_snapshot_lists_orders_in_priority_order() -> None:
    b = book()
    run(b, limit(1, BUY, 99, 1), limit(2, BUY, 100, 2), limit(3, BUY, 99, 3),
        limit(4, SELL, 102, 4), limit(5, SELL, 101, 5), Cancel(9, 1, TS), Cancel(3, 1, TS))
    snap = b.snapshot()
    assert [o.order_id for o in snap.bids] == [2, 1]
    assert [o.order_id for o in snap.asks] == [5, 4]
    assert snap.recent == [3]
    assert snap.v == SCHEMA_VERSION and snap.trading == TradingState.ENABLED


def test_restore_refuses_an_unknown_snapshot_version() -> None:
    snap = msgspec.structs.replace(book().snapshot(), v=SCHEMA_VERSION + 1)
    with pytest.raises(ValueError, match="version"):
        OrderBook.restore(snap)


def test_restore_refuses_a_crossed_snapshot() -> None:
    snap = msgspec.structs.replace(
        book().snapshot(),
        bids=[RestingOrder(1, 1, BUY, 101, 1)], asks=[RestingOrder(2, 1, SELL, 100, 1)],
    )
    with pytest.raises(ValueError, match="crossed"):
        OrderBook.restore(snap)


def test_restore_refuses_an_order_both_open_and_finished() -> None:
    snap = msgspec.structs.replace(book().snapshot(), bids=[RestingOrder(1, 1, BUY, 99, 1)],
                                   recent=[1])
    with pytest.raises(ValueError, match="open and finished"):
        OrderBook.restore(snap)


# --------------------------------------------------------------------------- guards
def test_debug_mode_catches_a_corrupted_level_total() -> None:
    b = book()
    b.process(limit(1, BUY, 100, 2))
    if isinstance(b, PurePythonBook):
        b._bids.levels[100].total = 3
    else:
        b._set_level_total(BUY, 100, 3)  # type: ignore[attr-defined]
    with pytest.raises(AssertionError, match="total"):
        b.process(limit(2, BUY, 90, 1))


def test_process_refuses_what_is_not_a_command() -> None:
    with pytest.raises(TypeError):
        book().process(TradingChanged(TradingState.HALTED, TS))  # type: ignore[arg-type]


def test_book_refuses_a_non_positive_notional_per_tick_lot() -> None:
    with pytest.raises(ValueError):
        OrderBook("BTCUSDT", 0)


def test_book_bench_reports_its_figures_for_a_small_mix() -> None:
    from tradeplane.bench.book import run_book_bench

    figures = run_book_bench(ops=3000, seed=1)
    assert figures["ops"] == 3000
    assert figures["trades"] > 0
    assert figures["ops_per_sec"] > 0 and 0 <= figures["p50_us"] <= figures["p99_us"]
