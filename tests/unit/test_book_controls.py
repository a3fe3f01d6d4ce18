"""Order controls in the book, behaviour by behaviour: stops, icebergs, self-trade
prevention, good-till-date, amend keeping priority, OCO lists. Every book runs with
``debug=True`` (internal invariants checked after each command)."""

from __future__ import annotations

import msgspec
from book_impls import book_impl  # noqa: F401 - runs every test on both books
from test_book import NPL, TS, book, done, limit, market, rested, run, trade

from tradeplane.domain import codec
from tradeplane.domain.book import BookSnapshot, OrderBook
from tradeplane.domain.model import (
    Accepted,
    Amend,
    Amended,
    AmendRejected,
    Cancel,
    CancelAll,
    Done,
    NewOrder,
    NewOrderList,
    OrderType,
    Reason,
    Rested,
    SetTrading,
    Side,
    Status,
    StpMode,
    Tick,
    TimeInForce,
    TradingState,
    Triggered,
)

BUY, SELL = Side.BUY, Side.SELL
GTC, GTD, IOC, FOK = TimeInForce.GTC, TimeInForce.GTD, TimeInForce.IOC, TimeInForce.FOK
SL, SLL = OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT
TP, TPL = OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_LIMIT


def stop(oid: int, side: Side, typ: OrderType, stop_price: int, qty: int, price: int = 0,
         account: int = 1, quote: int = 0, list_id: int = 0, tif: TimeInForce = GTC,
         good_till: int = 0) -> NewOrder:
    return NewOrder(oid, account, side, typ, tif, price, qty, quote, False, TS,
                    stop_price=stop_price, list_id=list_id, good_till=good_till)


def set_last_price(b: OrderBook, price: int, first_id: int = 900) -> None:
    """Trade one lot at ``price`` between accounts 8 and 9, leaving the book as it was."""
    run(b, limit(first_id, SELL, price, 1, account=9), limit(first_id + 1, BUY, price, 1,
                                                               account=8))
    assert b.last_price == price


# --------------------------------------------------------------------------- stops
def test_stop_waits_off_the_book_until_a_trade_reaches_its_stop_price() -> None:
    b = book()
    set_last_price(b, 100)
    sl = stop(1, SELL, SLL, stop_price=95, price=94, qty=3)
    assert b.process(sl) == [Accepted(1, 1, TS)]
    assert b.depth(10) == ([], []) and b.open_orders_count == 1
    assert b.order(1) is None and b.stop_orders() == [sl]
    run(b, limit(2, BUY, 96, 5, account=2), limit(3, BUY, 94, 5, account=2))
    # A trade at 96 does not reach 95; one at 94 does.
    out = b.process(limit(4, SELL, 96, 5, account=3))
    assert not any(isinstance(e, Triggered) for e in out)
    out = b.process(limit(5, SELL, 94, 1, account=3))
    assert out[:2] == [trade(3, 94, 1, limit(5, SELL, 94, 1, account=3), 3, 2),
                       done(5, Status.FILLED, account=3)]
    assert out[2] == Triggered(1, 1, 94, TS)
    # Triggered, it works as a SELL LIMIT 94 for 3: takes the 4 lots left at 94.
    taker = msgspec.structs.replace(sl, type=OrderType.LIMIT)
    assert out[3:] == [trade(4, 94, 3, taker, 3, 2), done(1, Status.FILLED)]
    assert b.stop_orders() == []


def test_stop_whose_condition_already_holds_is_rejected_as_would_trigger() -> None:
    b = book()
    assert b.process(stop(1, BUY, SL, stop_price=100, qty=1, quote=10**9)) == [
        Accepted(1, 1, TS)]  # no last price yet: nothing can hold
    set_last_price(b, 100)
    assert b.process(stop(2, BUY, SL, stop_price=100, qty=1, quote=10**9)) == [
        done(2, Status.REJECTED, Reason.WOULD_TRIGGER)]
    assert b.process(stop(3, SELL, TP, stop_price=99, qty=1)) == [
        done(3, Status.REJECTED, Reason.WOULD_TRIGGER)]
    assert b.process(stop(4, BUY, TPL, stop_price=99, price=99, qty=1)) == [Accepted(4, 1, TS)]


def test_triggered_stop_market_stops_at_its_funds_cap() -> None:
    b = book()
    set_last_price(b, 100)
    cap = 2 * 101 * NPL  # two lots at 101
    run(b, stop(1, BUY, SL, stop_price=101, qty=5, quote=cap),
        limit(2, SELL, 101, 1, account=2), limit(3, SELL, 102, 9, account=2))
    out = b.process(limit(4, BUY, 101, 1, account=3))  # trades at 101: triggers the stop
    assert Triggered(1, 1, 101, TS) in out
    assert out[-1] == done(1, Status.EXPIRED, Reason.CAP_REACHED)
    # 101 is gone; the cap (2 x 101) pays floor(2020 / 1020) = 1 lot at 102, not 2.
    fills = [(e.price, e.qty) for e in out if getattr(e, "taker_order", None) == 1]
    assert fills == [(102, 1)]
    assert b.depth(1)[1] == [(102, 8)]


def test_triggered_stops_run_in_placement_order_and_cascade() -> None:
    b = book()
    set_last_price(b, 100)
    run(b, limit(10, BUY, 99, 1, account=2), limit(11, BUY, 98, 1, account=2),
        limit(12, BUY, 97, 5, account=2))
    # Two sell stops at 99, placed in the opposite order of their ids, and one at 97 that
    # only their trades reach.
    run(b, stop(2, SELL, SL, stop_price=99, qty=1), stop(1, SELL, SL, stop_price=99, qty=1),
        stop(3, SELL, SL, stop_price=97, qty=1))
    out = b.process(limit(4, SELL, 99, 1, account=3))
    triggered = [e.order_id for e in out if isinstance(e, Triggered)]
    assert triggered == [2, 1, 3]  # placement order, then the cascade
    # Each trigger reports the last price at that moment: stop 2 sold into the bid at 98.
    assert [e.last_price for e in out if isinstance(e, Triggered)] == [99, 98, 97]


def test_stop_orders_are_cancelable_and_covered_by_cancel_all() -> None:
    b = book()
    run(b, stop(1, SELL, SL, stop_price=90, qty=1), stop(2, BUY, TPL, stop_price=80, price=80,
                                                         qty=1))
    assert b.process(Cancel(1, 1, TS)) == [done(1, Status.CANCELED)]
    assert b.process(CancelAll(1, TS)) == [done(2, Status.CANCELED)]
    assert b.open_orders_count == 0


# --------------------------------------------------------------------------- icebergs
def iceberg(oid: int, side: Side, price: int, qty: int, peak: int, account: int = 1) -> NewOrder:
    return NewOrder(oid, account, side, OrderType.LIMIT, GTC, price, qty, 0, False, TS,
                    iceberg_qty=peak)


def test_iceberg_shows_only_its_peak_and_a_refill_loses_priority() -> None:
    b = book()
    ice = iceberg(1, SELL, 100, 10, peak=3)
    assert b.process(ice) == [rested(ice)]  # Rested names the full remainder
    assert b.depth(1) == ([], [(100, 3)])
    run(b, limit(2, SELL, 100, 2, account=2))  # arrives later at the same price
    assert b.depth(1) == ([], [(100, 5)])
    taker = limit(3, BUY, 100, 4, account=3)
    out = b.process(taker)
    # 3 from the iceberg's visible part, then the later order (the refill queued behind it).
    assert out == [trade(1, 100, 3, taker, 1), trade(2, 100, 1, taker, 2, 2),
                   done(3, Status.FILLED, account=3)]
    view = b.order(1)
    assert view is not None and (view.remaining, view.hidden, view.qty) == (3, 4, 10)
    assert b.depth(1) == ([], [(100, 4)])


def test_a_large_taker_consumes_an_iceberg_through_its_refills() -> None:
    b = book()
    run(b, iceberg(1, SELL, 100, 7, peak=2))
    taker = limit(2, BUY, 100, 7, account=2)
    out = b.process(taker)
    assert out == [trade(1, 100, 2, taker, 1), trade(2, 100, 2, taker, 1),
                   trade(3, 100, 2, taker, 1), trade(4, 100, 1, taker, 1),
                   done(1, Status.FILLED), done(2, Status.FILLED, account=2)]


def test_fill_or_kill_counts_hidden_iceberg_lots() -> None:
    b = book()
    run(b, iceberg(1, SELL, 100, 8, peak=2))
    assert b.process(limit(2, BUY, 100, 8, account=2, tif=FOK))[-1] == done(
        2, Status.FILLED, account=2)


# --------------------------------------------------------------------------- self-trade
def stp_limit(oid: int, side: Side, price: int, qty: int, mode: StpMode,
              account: int = 1) -> NewOrder:
    return NewOrder(oid, account, side, OrderType.LIMIT, GTC, price, qty, 0, False, TS, stp=mode)


def test_self_trade_prevention_none_lets_an_account_trade_with_itself() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 1))
    out = b.process(stp_limit(2, BUY, 100, 1, StpMode.NONE))
    assert [type(e).__name__ for e in out] == ["Trade", "Done", "Done"]


def test_expire_taker_ends_the_taker_before_its_own_maker() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 1, account=2), limit(2, SELL, 100, 5))
    taker = stp_limit(3, BUY, 100, 4, StpMode.EXPIRE_TAKER)
    assert b.process(taker) == [trade(1, 100, 1, taker, 1, 2), done(1, Status.FILLED, account=2),
                                done(3, Status.EXPIRED_IN_MATCH, Reason.SELF_TRADE)]
    assert b.depth(1) == ([], [(100, 5)])  # the own maker stays


def test_expire_maker_ends_own_makers_and_keeps_matching() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 5), limit(2, SELL, 100, 1, account=2))
    taker = stp_limit(3, BUY, 100, 2, StpMode.EXPIRE_MAKER)
    assert b.process(taker) == [done(1, Status.EXPIRED_IN_MATCH, Reason.SELF_TRADE),
                                trade(1, 100, 1, taker, 2, 2), done(2, Status.FILLED, account=2),
                                rested(taker, 1)]


def test_expire_both_ends_the_maker_and_the_taker() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 5))
    taker = stp_limit(2, BUY, 100, 2, StpMode.EXPIRE_BOTH)
    assert b.process(taker) == [done(1, Status.EXPIRED_IN_MATCH, Reason.SELF_TRADE),
                                done(2, Status.EXPIRED_IN_MATCH, Reason.SELF_TRADE)]
    assert b.depth(1) == ([], [])


def test_market_order_with_expire_taker_keeps_what_it_executed() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 1, account=2), limit(2, SELL, 101, 1))
    taker = NewOrder(3, 1, BUY, OrderType.MARKET, GTC, 0, 5, 10**9, False, TS,
                     stp=StpMode.EXPIRE_TAKER)
    out = b.process(taker)
    assert out[0] == trade(1, 100, 1, taker, 1, 2)
    assert out[-1] == done(3, Status.EXPIRED_IN_MATCH, Reason.SELF_TRADE)


# --------------------------------------------------------------------------- good-till-date
def gtd(oid: int, side: Side, price: int, qty: int, good_till: int, account: int = 1,
        ts: int = TS) -> NewOrder:
    return NewOrder(oid, account, side, OrderType.LIMIT, GTD, price, qty, 0, False, ts,
                    good_till=good_till)


def test_good_till_date_in_the_past_is_rejected() -> None:
    b = book()
    assert b.process(gtd(1, BUY, 99, 1, good_till=TS)) == [done(1, Status.REJECTED)]


def test_gtd_orders_expire_only_on_the_engine_clock_in_expiry_order() -> None:
    b = book()
    run(b, gtd(1, BUY, 99, 1, good_till=TS + 500), gtd(2, BUY, 98, 1, good_till=TS + 200),
        stop(3, SELL, SLL, stop_price=90, price=90, qty=1, tif=GTD, good_till=TS + 200))
    assert b.next_expiry() == TS + 200
    assert b.process(Tick(TS + 199)) == []
    # A later command's own timestamp does not expire anything: only Ticks do.
    b.process(limit(4, BUY, 50, 1, ts=TS + 10_000))
    assert b.open_orders_count == 4
    assert b.process(Tick(TS + 300)) == [
        done(2, Status.EXPIRED, Reason.GTD_EXPIRED, ts=TS + 300),
        done(3, Status.EXPIRED, Reason.GTD_EXPIRED, ts=TS + 300)]
    assert b.next_expiry() == TS + 500
    b.process(SetTrading(TradingState.HALTED, TS))
    assert b.process(Tick(TS + 500)) == [done(1, Status.EXPIRED, Reason.GTD_EXPIRED,
                                              ts=TS + 500)]
    assert b.next_expiry() is None


def test_filled_gtd_order_leaves_no_pending_expiry() -> None:
    b = book()
    run(b, gtd(1, SELL, 100, 1, good_till=TS + 100), limit(2, BUY, 100, 1, account=2))
    assert b.next_expiry() is None
    assert b.process(Tick(TS + 100)) == []


# --------------------------------------------------------------------------- amend
def test_amend_reduces_quantity_and_keeps_priority() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 5), limit(2, SELL, 100, 5, account=2))
    assert b.process(Amend(1, 1, 2, TS)) == [Amended(1, 1, 2, 3, TS)]
    assert b.depth(1) == ([], [(100, 7)])
    taker = limit(3, BUY, 100, 1, account=3)
    assert b.process(taker)[0] == trade(1, 100, 1, taker, 1)  # still first in the queue


def test_amend_takes_hidden_iceberg_lots_first() -> None:
    b = book()
    run(b, iceberg(1, SELL, 100, 10, peak=3))
    assert b.process(Amend(1, 1, 4, TS)) == [Amended(1, 1, 4, 6, TS)]
    view = b.order(1)
    assert view is not None and (view.remaining, view.hidden, view.qty) == (3, 1, 4)


def test_amend_down_to_the_executed_quantity_fills_the_order() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 5), limit(2, BUY, 100, 2, account=2))
    assert b.process(Amend(1, 1, 1, TS)) == [Amended(1, 1, 2, 3, TS), done(1, Status.FILLED)]
    assert b.depth(1) == ([], [])


def test_amend_that_does_not_reduce_or_names_no_order_is_rejected() -> None:
    b = book()
    run(b, limit(1, SELL, 100, 5), stop(2, SELL, SL, stop_price=90, qty=1))
    assert b.process(Amend(1, 1, 5, TS)) == [AmendRejected(1, 1, Reason.NOT_AMENDABLE, TS)]
    assert b.process(Amend(1, 1, 0, TS)) == [AmendRejected(1, 1, Reason.NOT_AMENDABLE, TS)]
    assert b.process(Amend(1, 2, 1, TS)) == [AmendRejected(1, 2, Reason.UNKNOWN_ORDER, TS)]
    assert b.process(Amend(2, 1, 1, TS)) == [AmendRejected(2, 1, Reason.NOT_AMENDABLE, TS)]
    b.process(SetTrading(TradingState.HALTED, TS))
    assert b.process(Amend(1, 1, 1, TS)) == [AmendRejected(1, 1, Reason.HALTED, TS)]


def test_amend_of_a_waiting_stop_limit_changes_what_it_will_trade() -> None:
    b = book()
    run(b, stop(1, SELL, SLL, stop_price=90, price=90, qty=5))
    assert b.process(Amend(1, 1, 2, TS)) == [Amended(1, 1, 2, 3, TS)]
    assert b.stop_orders()[0].qty == 2


# --------------------------------------------------------------------------- OCO
def oco_sell(list_id: int, first: int, above: int, below_stop: int, below_price: int,
             qty: int, account: int = 1) -> NewOrderList:
    """Binance's classic SELL OCO: a LIMIT_MAKER above the market, a stop-loss limit below."""
    return NewOrderList(list_id, account, [
        NewOrder(first, account, SELL, OrderType.LIMIT_MAKER, GTC, above, qty, 0, False, TS,
                 list_id=list_id),
        stop(first + 1, SELL, SLL, stop_price=below_stop, price=below_price, qty=qty,
             account=account, list_id=list_id),
    ], TS)


def test_oco_places_both_legs() -> None:
    b = book()
    set_last_price(b, 100)
    out = b.process(oco_sell(7, 1, above=110, below_stop=95, below_price=94, qty=2))
    assert out == [Rested(1, 1, SELL, 110, 2, TS), Accepted(2, 1, TS)]
    assert b.open_orders_count == 2


def test_oco_limit_leg_trading_expires_the_stop_leg_first() -> None:
    b = book()
    set_last_price(b, 100)
    run(b, oco_sell(7, 1, above=110, below_stop=95, below_price=94, qty=2))
    taker = limit(3, BUY, 110, 1, account=2)
    out = b.process(taker)
    assert out == [done(2, Status.EXPIRED, Reason.LIST_DONE), trade(2, 110, 1, taker, 1),
                   done(3, Status.FILLED, account=2)]
    # The survivor is on its own: a snapshot restores without its partner.
    assert OrderBook.restore(b.snapshot()).state_hash() == b.state_hash()


def test_oco_stop_leg_triggering_expires_the_limit_leg_first() -> None:
    b = book()
    set_last_price(b, 100)
    run(b, oco_sell(7, 1, above=110, below_stop=95, below_price=94, qty=2),
        limit(3, BUY, 95, 1, account=2), limit(4, BUY, 94, 5, account=2))
    out = b.process(limit(5, SELL, 95, 1, account=3))
    i = out.index(Triggered(2, 1, 95, TS))
    assert out[i - 1] == done(1, Status.EXPIRED, Reason.LIST_DONE)
    assert out[-1] == done(2, Status.FILLED)


def test_canceling_one_leg_cancels_the_list() -> None:
    b = book()
    set_last_price(b, 100)
    run(b, oco_sell(7, 1, above=110, below_stop=95, below_price=94, qty=2))
    assert b.process(Cancel(2, 1, TS)) == [done(2, Status.CANCELED), done(1, Status.CANCELED)]
    assert b.open_orders_count == 0


def test_oco_with_a_refused_leg_places_nothing() -> None:
    b = book()
    set_last_price(b, 100)
    run(b, limit(1, BUY, 105, 1, account=2))  # the LIMIT_MAKER leg at 105 would take
    out = b.process(oco_sell(7, 2, above=105, below_stop=95, below_price=94, qty=1))
    assert out == [done(2, Status.REJECTED, Reason.WOULD_TAKE),
                   done(3, Status.REJECTED, Reason.BAD_LIST)]
    out = b.process(oco_sell(8, 4, above=110, below_stop=101, below_price=94, qty=1))
    assert out == [done(4, Status.REJECTED, Reason.BAD_LIST),
                   done(5, Status.REJECTED, Reason.WOULD_TRIGGER)]
    assert b.open_orders_count == 1


def test_malformed_list_is_rejected_as_bad_list() -> None:
    b = book()
    good = oco_sell(7, 1, above=110, below_stop=95, below_price=94, qty=1)
    mixed = NewOrderList(7, 1, [good.legs[0], msgspec.structs.replace(good.legs[1], side=BUY)],
                         TS)
    assert b.process(mixed) == [done(1, Status.REJECTED, Reason.BAD_LIST),
                                done(2, Status.REJECTED, Reason.BAD_LIST)]


# --------------------------------------------------------------------------- snapshot
def test_snapshot_with_every_control_restores_and_continues_identically() -> None:
    b = book()
    set_last_price(b, 100)
    cmds = [
        iceberg(1, SELL, 105, 9, peak=2),
        gtd(2, BUY, 90, 3, good_till=TS + 50),
        oco_sell(7, 3, above=110, below_stop=95, below_price=94, qty=2),
        stop(5, BUY, SL, stop_price=104, qty=2, quote=10**9),
        Amend(1, 1, 7, TS),
    ]
    run(b, *cmds)
    raw = codec.encode(b.snapshot())
    restored = OrderBook.restore(codec.decode_as(raw, BookSnapshot), debug=True)
    assert restored.state_hash() == b.state_hash()
    after = [limit(20, BUY, 105, 3, account=2), Tick(TS + 60), limit(21, SELL, 95, 1, account=3),
             limit(22, BUY, 95, 1, account=2), market(23, BUY, 3, quote=10**9, account=4)]
    for cmd in after:
        assert restored.process(cmd) == b.process(cmd)
        assert restored.state_hash() == b.state_hash()


def test_redelivered_list_and_stop_produce_no_events() -> None:
    b = book()
    set_last_price(b, 100)
    lst = oco_sell(7, 1, above=110, below_stop=95, below_price=94, qty=1)
    st = stop(5, BUY, SL, stop_price=104, qty=2, quote=10**9)
    run(b, lst, st)
    assert b.process(lst) == [] and b.process(st) == []
    assert isinstance(b.process(Cancel(1, 1, TS))[0], Done)
    assert b.process(lst) == []
