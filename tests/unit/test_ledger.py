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
from tradeplane.domain.model import Done, Reason, Rested, Side, Status, Trade
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
