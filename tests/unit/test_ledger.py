"""Ledger rules: trades, fees and hold releases produce balanced, exact postings."""

from __future__ import annotations

import pytest

from tradeplane.domain.ledger import (
    FEE_ACCOUNT,
    LedgerError,
    OrderState,
    check_balanced,
    fee,
    settle_batch,
)
from tradeplane.domain.model import (
    Accepted,
    Amended,
    AmendRejected,
    Done,
    OrderType,
    Reason,
    Rested,
    Side,
    Status,
    Trade,
    Triggered,
)
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import DEMO_PAIRS

BTCUSDT = DEMO_PAIRS[0]  # tick 0.01 USDT, lot 0.00001 BTC, fees 0.1% / 0.1%


def _order(oid: int, account: int, side: Side, hold: int) -> OrderState:
    asset = BTCUSDT.quote if side == Side.BUY else BTCUSDT.base
    return OrderState(oid, account, side, Status.PENDING_NEW, 0, 0, asset, hold, 0)


def test_trade_moves_base_and_quote_and_charges_fees_to_the_fee_account() -> None:
    price = 6_000_000  # 60000.00 USDT in ticks
    qty = 10_000  # 0.1 BTC in lots
    notional = BTCUSDT.notional(price, qty)
    assert notional == to_units("6000")
    orders = {
        1: _order(1, 100, Side.SELL, BTCUSDT.qty_units(qty)),
        2: _order(2, 200, Side.BUY, notional),
    }
    s = settle_batch(
        BTCUSDT,
        [
            Rested(1, 100, Side.SELL, price, qty, 1),
            Trade(1, price, qty, 2, 200, Side.BUY, 1, 100, 2),
            Done(1, 100, Status.FILLED, Reason.NONE, 2),
            Done(2, 200, Status.FILLED, Reason.NONE, 2),
        ],
        orders,
    )
    check_balanced(s.postings)
    deltas = s.balance_deltas()
    btc_fee = to_units("0.1") // 1000
    usdt_fee = to_units("6000") // 1000
    assert deltas[(200, "BTC")] == (to_units("0.1") - btc_fee, 0)
    assert deltas[(200, "USDT")] == (0, -notional)
    assert deltas[(100, "BTC")] == (0, -to_units("0.1"))
    assert deltas[(100, "USDT")] == (notional - usdt_fee, 0)
    assert deltas[(FEE_ACCOUNT, "BTC")] == (btc_fee, 0)
    assert deltas[(FEE_ACCOUNT, "USDT")] == (usdt_fee, 0)
    assert orders[1].status == Status.FILLED and orders[2].status == Status.FILLED
    assert orders[1].executed == qty and orders[2].cum_quote == notional
    assert orders[1].hold_remaining == 0 and orders[2].hold_remaining == 0
    assert s.trades[0].buyer_is_maker is False


def test_price_improvement_is_released_when_the_buy_order_finishes() -> None:
    qty = 100
    limit, fill = 6_000_000, 5_900_000
    hold = BTCUSDT.notional(limit, qty)
    orders = {1: _order(1, 1, Side.SELL, BTCUSDT.qty_units(qty)), 2: _order(2, 2, Side.BUY, hold)}
    s = settle_batch(
        BTCUSDT,
        [Trade(1, fill, qty, 2, 2, Side.BUY, 1, 1, 5),
         Done(1, 1, Status.FILLED, Reason.NONE, 5), Done(2, 2, Status.FILLED, Reason.NONE, 5)],
        orders,
    )
    check_balanced(s.postings)
    released = hold - BTCUSDT.notional(fill, qty)
    assert s.balance_deltas()[(2, "USDT")] == (released, -hold)


def test_cancel_releases_the_whole_remaining_hold() -> None:
    orders = {7: _order(7, 9, Side.BUY, 12345)}
    s = settle_batch(
        BTCUSDT, [Rested(7, 9, Side.BUY, 1, 1, 1), Done(7, 9, Status.CANCELED, Reason.NONE, 2)],
        orders,
    )
    assert s.balance_deltas() == {(9, "USDT"): (12345, -12345)}
    assert orders[7].status == Status.CANCELED


def test_spending_more_than_the_hold_is_refused() -> None:
    orders = {1: _order(1, 1, Side.SELL, 10**9), 2: _order(2, 2, Side.BUY, 1)}
    with pytest.raises(LedgerError):
        settle_batch(BTCUSDT, [Trade(1, 100, 100, 2, 2, Side.BUY, 1, 1, 1)], orders)


def test_an_order_cannot_finish_twice() -> None:
    orders = {1: _order(1, 1, Side.SELL, 0)}
    done = Done(1, 1, Status.CANCELED, Reason.NONE, 1)
    events = [done, done]
    with pytest.raises(LedgerError):
        settle_batch(BTCUSDT, events, orders)


def test_fees_round_down_to_the_unit() -> None:
    assert fee(999, 1000) == 0
    assert fee(1000, 1000) == 1
    assert fee(1999, 1000) == 1


def test_unbalanced_postings_are_detected() -> None:
    with pytest.raises(LedgerError):
        check_balanced([("t", 1, "BTC", "a", 5), ("t", 2, "BTC", "a", -4)])


# --------------------------------------------------------------------------- order controls
def _leg(oid: int, account: int, side: Side, hold: int, otype: OrderType, *, price: int = 0,
         qty: int = 0, quote_qty: int = 0, partner: int = 0) -> OrderState:
    o = _order(oid, account, side, hold)
    o.type, o.price, o.qty, o.quote_qty, o.partner = otype, price, qty, quote_qty, partner
    o.list_id = 77 if partner else 0
    return o


def test_a_stop_order_is_new_once_accepted_and_working_from_its_trigger() -> None:
    orders = {1: _leg(1, 5, Side.SELL, 1000, OrderType.STOP_LOSS_LIMIT, price=10, qty=1)}
    s = settle_batch(BTCUSDT, [Accepted(1, 5, 10)], orders)
    assert (orders[1].status, orders[1].working_ms, s.postings) == (Status.NEW, 0, [])
    settle_batch(BTCUSDT, [Triggered(1, 5, 9, 20)], orders)
    assert (orders[1].status, orders[1].working_ms, orders[1].dirty) == (Status.NEW, 20, True)


def test_amend_releases_exactly_the_hold_of_the_removed_lots() -> None:
    price = 6_000_000
    buy = _leg(1, 5, Side.BUY, BTCUSDT.notional(price, 300), OrderType.LIMIT, price=price,
               qty=300)
    sell = _leg(2, 6, Side.SELL, BTCUSDT.qty_units(300), OrderType.LIMIT, price=price, qty=300)
    orders = {1: buy, 2: sell}
    s = settle_batch(BTCUSDT, [Amended(1, 5, 200, 100, 7), Amended(2, 6, 120, 180, 7)], orders)
    check_balanced(s.postings)
    assert s.balance_deltas() == {
        (5, "USDT"): (BTCUSDT.notional(price, 100), -BTCUSDT.notional(price, 100)),
        (6, "BTC"): (BTCUSDT.qty_units(180), -BTCUSDT.qty_units(180)),
    }
    assert (buy.qty, buy.hold_remaining) == (200, BTCUSDT.notional(price, 200))
    assert (sell.qty, sell.hold_remaining) == (120, BTCUSDT.qty_units(120))
    assert buy.status == Status.PENDING_NEW  # an amend never changes the status


def test_an_amend_down_to_the_executed_quantity_fills_the_order_and_frees_the_rest() -> None:
    price, improved = 6_000_000, 5_900_000
    buy = _leg(1, 5, Side.BUY, BTCUSDT.notional(price, 300), OrderType.LIMIT, price=price,
               qty=300)
    orders = {1: buy, 2: _order(2, 6, Side.SELL, BTCUSDT.qty_units(100))}
    s = settle_batch(BTCUSDT, [
        Trade(1, improved, 100, 2, 6, Side.SELL, 1, 5, 5),
        Done(2, 6, Status.FILLED, Reason.NONE, 5),
        Amended(1, 5, 100, 200, 6),
        Done(1, 5, Status.FILLED, Reason.NONE, 6),
    ], orders)
    check_balanced(s.postings)
    assert buy.hold_remaining == 0 and buy.status == Status.FILLED and buy.qty == 100
    # Locked went back to zero: spent the trade, released the rest (removed lots + improvement).
    assert s.balance_deltas()[(5, "USDT")] == (
        BTCUSDT.notional(price, 300) - BTCUSDT.notional(improved, 100),
        -BTCUSDT.notional(price, 300),
    )


def test_a_refused_amend_changes_nothing() -> None:
    orders = {1: _leg(1, 5, Side.SELL, 500, OrderType.LIMIT, price=1, qty=5)}
    refused = AmendRejected(1, 5, Reason.NOT_AMENDABLE, 3)
    s = settle_batch(BTCUSDT, [refused], orders)
    assert (s.postings, orders[1].qty, orders[1].hold_remaining, orders[1].dirty) == (
        [], 5, 500, False)


def test_self_trade_prevention_expiry_releases_the_whole_hold() -> None:
    orders = {1: _order(1, 5, Side.BUY, 4242)}
    s = settle_batch(BTCUSDT, [Done(1, 5, Status.EXPIRED_IN_MATCH, Reason.SELF_TRADE, 2)],
                     orders)
    assert s.balance_deltas() == {(5, "USDT"): (4242, -4242)}
    assert (orders[1].status, orders[1].reason) == (Status.EXPIRED_IN_MATCH, Reason.SELF_TRADE)


def _sell_oco(qty: int = 1000) -> dict[int, OrderState]:
    """A SELL OCO: LIMIT_MAKER above at 61000, STOP_LOSS below; one hold on the first leg."""
    hold = BTCUSDT.qty_units(qty)
    return {
        1: _leg(1, 5, Side.SELL, hold, OrderType.LIMIT_MAKER, price=6_100_000, qty=qty,
                partner=2),
        2: _leg(2, 5, Side.SELL, 0, OrderType.STOP_LOSS, qty=qty, partner=1),
    }


def test_canceling_an_oco_hands_the_hold_over_then_releases_it_once() -> None:
    orders = _sell_oco()
    first = settle_batch(BTCUSDT, [Done(1, 5, Status.CANCELED, Reason.NONE, 3)], orders)
    assert first.postings == []  # same locked bucket: the hold only changes hands
    assert (orders[1].hold_remaining, orders[2].hold_remaining) == (0, BTCUSDT.qty_units(1000))
    second = settle_batch(BTCUSDT, [Done(2, 5, Status.CANCELED, Reason.NONE, 3)], orders)
    assert second.balance_deltas() == {
        (5, "BTC"): (BTCUSDT.qty_units(1000), -BTCUSDT.qty_units(1000))}
    assert orders[2].hold_remaining == 0


def test_the_oco_leg_that_executes_spends_the_list_hold_after_the_other_expired() -> None:
    orders = _sell_oco()
    orders[3] = _order(3, 9, Side.BUY, BTCUSDT.notional(6_100_000, 1000))
    s = settle_batch(BTCUSDT, [
        # The book ends the stop leg before the limit maker's first trade.
        Done(2, 5, Status.EXPIRED, Reason.LIST_DONE, 4),
        Trade(1, 6_100_000, 1000, 3, 9, Side.BUY, 1, 5, 4),
        Done(1, 5, Status.FILLED, Reason.NONE, 4),
        Done(3, 9, Status.FILLED, Reason.NONE, 4),
    ], orders)
    check_balanced(s.postings)
    assert s.balance_deltas()[(5, "BTC")] == (0, -BTCUSDT.qty_units(1000))
    assert [o.hold_remaining for o in orders.values()] == [0, 0, 0]
    assert (orders[2].status, orders[2].reason) == (Status.EXPIRED, Reason.LIST_DONE)


def test_amending_a_buy_oco_leg_frees_only_what_exceeds_the_dearer_leg() -> None:
    # BUY OCO: STOP_LOSS_LIMIT above (limit 61000), LIMIT_MAKER below at 59000; the list
    # holds the dearer leg, the stop at 61000.
    stop = _leg(1, 5, Side.BUY, BTCUSDT.notional(6_100_000, 1000), OrderType.STOP_LOSS_LIMIT,
                price=6_100_000, qty=1000, partner=2)
    maker = _leg(2, 5, Side.BUY, 0, OrderType.LIMIT_MAKER, price=5_900_000, qty=1000,
                 partner=1)
    orders = {1: stop, 2: maker}
    s = settle_batch(BTCUSDT, [Amended(2, 5, 500, 500, 3)], orders)
    assert s.postings == []  # the stop leg still needs all of it
    s = settle_batch(BTCUSDT, [Amended(1, 5, 900, 100, 4)], orders)
    check_balanced(s.postings)
    # Now the dearest is 0.009 BTC at 61000 = 549 USDT: 61 of 610 USDT are free.
    need = BTCUSDT.notional(6_100_000, 900)
    freed = BTCUSDT.notional(6_100_000, 1000) - need
    assert s.balance_deltas() == {(5, "USDT"): (freed, -freed)}
    assert (stop.hold_remaining, maker.hold_remaining) == (need, 0)
    s = settle_batch(BTCUSDT, [Amended(1, 5, 400, 500, 5)], orders)
    # Below the maker's 0.005 BTC at 59000 = 295 USDT, that leg's cost is what is held.
    assert stop.hold_remaining == BTCUSDT.notional(5_900_000, 500)
    check_balanced(s.postings)
