"""User data stream payloads: executionReport per order event with cumulative quantities
advancing event by event, outboundAccountPosition per account, in Binance's JSON shape."""

from __future__ import annotations

import json
import random
from typing import Any

from tradeplane.domain.book import OrderBook
from tradeplane.domain.ledger import OrderState, settle_batch
from tradeplane.domain.model import (
    SCHEMA_VERSION,
    Accepted,
    Amended,
    Cancel,
    Done,
    Event,
    EventBatch,
    NewOrder,
    OrderType,
    Reason,
    Rested,
    Side,
    Status,
    StpMode,
    TimeInForce,
    Trade,
    Triggered,
)
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.settlement.reports import (
    EXEC_ID_SHIFT,
    ZERO,
    account_position,
    encode,
    user_updates,
)

BTCUSDT = DEMO_PAIRS[0]  # tick 0.01 USDT, lot 0.00001 BTC, fees 0.1% / 0.1%
RULES = {BTCUSDT.symbol: BTCUSDT}
P60000 = 6_000_000  # ticks
NOW = 1_700_000_009_999

BINANCE_KEYS = ["e", "E", "s", "c", "S", "o", "f", "q", "p", "P", "F", "g", "C", "x", "X",
                "r", "i", "l", "z", "L", "n", "N", "T", "t", "I", "w", "m", "M", "O", "Z",
                "Y", "Q", "W", "V"]


def _row(oid: int, account: int, side: Side, *, price: int = P60000, qty: int = 50_000,
         otype: OrderType = OrderType.LIMIT, tif: TimeInForce = TimeInForce.GTC,
         status: Status = Status.PENDING_NEW, executed: int = 0, cum_quote: int = 0,
         quote_qty: int = 0, by_quote: bool = False, created: int = 1000,
         stop_price: int = 0, iceberg_qty: int = 0, stp: StpMode = StpMode.NONE,
         list_id: int = 0) -> dict[str, Any]:
    hold_asset = BTCUSDT.quote if side == Side.BUY else BTCUSDT.base
    hold = (quote_qty or BTCUSDT.notional(price, qty)) if side == Side.BUY else (
        BTCUSDT.qty_units(qty))
    return {
        "id": oid, "account_id": account, "symbol": "BTCUSDT", "client_order_id": f"c-{oid}",
        "side": side, "type": otype, "tif": tif, "price": price, "qty": qty,
        "quote_qty": quote_qty, "by_quote": by_quote, "status": status, "executed": executed,
        "cum_quote": cum_quote, "hold_asset": hold_asset, "hold_amount": hold,
        "hold_remaining": hold - (cum_quote if side == Side.BUY else BTCUSDT.qty_units(executed)),
        "created_ms": created, "updated_ms": created, "stop_price": stop_price,
        "iceberg_qty": iceberg_qty, "stp": stp, "good_till": 0, "working_ms": 0,
        "order_list_id": list_id, "reason": 0,
    }


def _batch(first_seq: int, events: list[Event], last_seq: int | None = None) -> EventBatch:
    return EventBatch(SCHEMA_VERSION, "BTCUSDT", first_seq, last_seq or first_seq, 0, events, [])


def _pick(doc: dict[str, Any], *keys: str) -> tuple[Any, ...]:
    return tuple(doc[k] for k in keys)


def test_an_order_resting_without_fills_reports_new_with_every_binance_field() -> None:
    rows = {1: _row(1, 100, Side.SELL, created=1000)}
    u = user_updates([_batch(7, [Rested(1, 100, Side.SELL, P60000, 50_000, 1001)])],
                     RULES, rows, NOW)
    assert u.reports == {100: [{
        "e": "executionReport", "E": NOW, "s": "BTCUSDT", "c": "c-1", "S": "SELL",
        "o": "LIMIT", "f": "GTC", "q": "0.50000000", "p": "60000.00000000", "P": ZERO,
        "F": ZERO, "g": -1, "C": "", "x": "NEW", "X": "NEW", "r": "NONE", "i": 1, "l": ZERO,
        "z": ZERO, "L": ZERO, "n": "0", "N": None, "T": 1001, "t": -1,
        "I": 7 << EXEC_ID_SHIFT, "w": True, "m": False, "M": False, "O": 1000, "Z": ZERO,
        "Y": ZERO, "Q": ZERO, "W": 1000, "V": "NONE",
    }]}
    # Binance's key order, compact JSON.
    text = encode(u.reports[100][0]).decode()
    assert list(json.loads(text)) == BINANCE_KEYS
    assert ", " not in text and ": " not in text


def test_partial_trades_then_filled_carry_fill_commission_and_cumulative_values() -> None:
    rows = {
        1: _row(1, 100, Side.SELL, qty=50_000),  # 0.5 BTC at 60000
        2: _row(2, 200, Side.BUY, qty=20_000, price=6_010_000),  # 0.2 BTC up to 60100
        3: _row(3, 300, Side.BUY, qty=30_000, price=6_010_000),
    }
    batches = [
        _batch(1, [Rested(1, 100, Side.SELL, P60000, 50_000, 10)]),
        _batch(2, [Trade(1, P60000, 20_000, 2, 200, Side.BUY, 1, 100, 20),
                   Done(2, 200, Status.FILLED, Reason.NONE, 20)]),
        _batch(3, [Trade(2, P60000, 30_000, 3, 300, Side.BUY, 1, 100, 30),
                   Done(1, 100, Status.FILLED, Reason.NONE, 30),
                   Done(3, 300, Status.FILLED, Reason.NONE, 30)]),
    ]
    u = user_updates(batches, RULES, rows, NOW)

    keys = ("x", "X", "l", "L", "z", "Z", "Y", "n", "N", "t", "m", "w", "T")
    assert [_pick(d, *keys) for d in u.reports[100]] == [
        ("NEW", "NEW", ZERO, ZERO, ZERO, ZERO, ZERO, "0", None, -1, False, True, 10),
        ("TRADE", "PARTIALLY_FILLED", "0.20000000", "60000.00000000", "0.20000000",
         "12000.00000000", "12000.00000000", "12.00000000", "USDT", 1, True, True, 20),
        ("TRADE", "FILLED", "0.30000000", "60000.00000000", "0.50000000", "30000.00000000",
         "18000.00000000", "18.00000000", "USDT", 2, True, False, 30),
    ]
    assert [d["I"] for d in u.reports[100]] == [1 << 20, 2 << 20, 3 << 20]
    assert all(d["W"] == 1000 for d in u.reports[100])  # it was on the book throughout

    # The taker is reported NEW first, as Binance does, then its fill.
    new, fill = u.reports[200]
    assert _pick(new, *keys) == (
        "NEW", "NEW", ZERO, ZERO, ZERO, ZERO, ZERO, "0", None, -1, False, False, 20)
    assert _pick(fill, *keys) == (
        "TRADE", "FILLED", "0.20000000", "60000.00000000", "0.20000000", "12000.00000000",
        "12000.00000000", "0.00020000", "BTC", 1, False, False, 20)
    assert new["I"] != fill["I"]  # distinct execution ids
    assert "W" not in new and "W" not in fill  # never on the book
    assert fill["p"] == "60100.00000000" and fill["q"] == "0.20000000"
    assert u.updated_ms == {100: 30, 200: 20, 300: 30}
    # First answers from the engine: the holds taken at entry are news for these accounts.
    assert u.entered == {(100, "BTC"), (200, "USDT"), (300, "USDT")}


def test_a_taker_that_rests_its_remainder_reports_new_then_working_trades() -> None:
    rows = {4: _row(4, 400, Side.SELL, qty=10_000, status=Status.NEW),
            5: _row(5, 500, Side.BUY, qty=50_000, created=2000)}
    u = user_updates([_batch(9, [
        Trade(11, P60000, 10_000, 5, 500, Side.BUY, 4, 400, 2000),
        Done(4, 400, Status.FILLED, Reason.NONE, 2000),
        Rested(5, 500, Side.BUY, P60000, 40_000, 2000),
    ])], RULES, rows, NOW)
    new, trade = u.reports[500]
    assert _pick(new, "x", "X", "z", "w", "W") == ("NEW", "NEW", ZERO, True, 2000)
    assert _pick(trade, "x", "X", "z", "w", "m", "W") == (
        "TRADE", "PARTIALLY_FILLED", "0.10000000", True, False, 2000)
    assert list(trade)[-2:] == ["W", "V"]
    [maker] = u.reports[400]
    assert _pick(maker, "X", "w", "m") == ("FILLED", False, True)


def test_cancel_after_fills_reports_cumulative_values_from_the_stored_row() -> None:
    rows = {6: _row(6, 600, Side.BUY, qty=50_000, status=Status.PARTIALLY_FILLED,
                    executed=20_000, cum_quote=to_units("12000"))}
    u = user_updates([_batch(4, [Done(6, 600, Status.CANCELED, Reason.NONE, 40)])],
                     RULES, rows, NOW)
    [doc] = u.reports[600]
    assert _pick(doc, "x", "X", "r", "c", "C", "z", "Z", "l", "w", "t", "n", "N", "W") == (
        "CANCELED", "CANCELED", "NONE", "c-6", "c-6", "0.20000000", "12000.00000000", ZERO,
        False, -1, "0", None, 1000)
    assert u.entered == set()  # the hold was announced when the engine first answered


def test_cumulative_values_advance_across_the_batches_of_one_pull() -> None:
    rows = {7: _row(7, 700, Side.SELL, qty=30_000, status=Status.NEW),
            8: _row(8, 800, Side.BUY, qty=10_000), 9: _row(9, 900, Side.BUY, qty=10_000)}
    u = user_updates([
        _batch(1, [Trade(1, P60000, 10_000, 8, 800, Side.BUY, 7, 700, 1),
                   Done(8, 800, Status.FILLED, Reason.NONE, 1)]),
        _batch(2, [Trade(2, P60000, 10_000, 9, 900, Side.BUY, 7, 700, 2),
                   Done(9, 900, Status.FILLED, Reason.NONE, 2)]),
        _batch(3, [Done(7, 700, Status.CANCELED, Reason.NONE, 3)]),
    ], RULES, rows, NOW)
    assert [_pick(d, "x", "X", "z", "Z") for d in u.reports[700]] == [
        ("TRADE", "PARTIALLY_FILLED", "0.10000000", "6000.00000000"),
        ("TRADE", "PARTIALLY_FILLED", "0.20000000", "12000.00000000"),
        ("CANCELED", "CANCELED", "0.20000000", "12000.00000000"),
    ]


def test_expired_and_rejected_orders_say_why_like_binance() -> None:
    rows = {
        10: _row(10, 1000, Side.SELL, otype=OrderType.MARKET, price=0, qty=10_000),
        11: _row(11, 1000, Side.BUY, otype=OrderType.LIMIT_MAKER),
        12: _row(12, 1000, Side.BUY, otype=OrderType.MARKET, price=0, qty=0,
                 quote_qty=to_units("300.1"), by_quote=True),
        13: _row(13, 1000, Side.BUY),
    }
    u = user_updates([_batch(1, [
        Done(10, 1000, Status.EXPIRED, Reason.NO_LIQUIDITY, 5),
        Done(11, 1000, Status.REJECTED, Reason.WOULD_TAKE, 5),
        Done(12, 1000, Status.EXPIRED, Reason.NO_LIQUIDITY, 5),
        Done(13, 1000, Status.REJECTED, Reason.HALTED, 5),
    ])], RULES, rows, NOW)
    assert [_pick(d, "i", "o", "x", "X", "r", "p", "q", "Q", "w") for d in u.reports[1000]] == [
        (10, "MARKET", "NEW", "NEW", "NONE", ZERO, "0.10000000", ZERO, False),
        (10, "MARKET", "EXPIRED", "EXPIRED", "NONE", ZERO, "0.10000000", ZERO, False),
        (11, "LIMIT_MAKER", "REJECTED", "REJECTED", "WOULD_MATCH_IMMEDIATELY",
         "60000.00000000", "0.50000000", ZERO, False),
        (12, "MARKET", "NEW", "NEW", "NONE", ZERO, ZERO, "300.10000000", False),
        (12, "MARKET", "EXPIRED", "EXPIRED", "NONE", ZERO, ZERO, "300.10000000", False),
        (13, "LIMIT", "REJECTED", "REJECTED", "MARKET_CLOSED", "60000.00000000",
         "0.50000000", ZERO, False),
    ]
    assert all("W" not in d for d in u.reports[1000])


def test_events_of_unknown_orders_and_non_order_events_report_nothing() -> None:
    u = user_updates([_batch(1, [Rested(99, 5, Side.BUY, P60000, 1, 1),
                                 Done(98, 5, Status.CANCELED, Reason.NONE, 1)])],
                     RULES, {}, NOW)
    assert u.reports == {}


def test_last_report_of_each_order_agrees_with_the_ledger_after_random_trading() -> None:
    rng = random.Random(7)
    book = OrderBook("BTCUSDT", BTCUSDT.notional_per_tick_lot)
    rows: dict[int, dict[str, Any]] = {}
    batches: list[EventBatch] = []
    for seq in range(1, 301):
        if len(rows) > 5 and rng.random() < 0.1:
            victim = rng.choice(list(rows))
            events = book.process(Cancel(victim, rows[victim]["account_id"], seq))
            batches.append(_batch(seq, events))
            continue
        oid = len(rows) + 1
        side = rng.choice((Side.BUY, Side.SELL))
        otype = rng.choice((OrderType.LIMIT,) * 4 + (OrderType.MARKET,))
        tif = rng.choice((TimeInForce.GTC, TimeInForce.GTC, TimeInForce.IOC))
        qty = rng.randint(1, 50) * 100
        price = 0 if otype == OrderType.MARKET else P60000 + rng.randint(-5, 5) * 100
        cap = BTCUSDT.notional(P60000 + 1000, qty) if (
            otype == OrderType.MARKET and side == Side.BUY) else 0
        rows[oid] = _row(oid, 10 + oid % 4, side, price=price or P60000 + 1000, qty=qty,
                         otype=otype, tif=tif, quote_qty=cap, created=oid)
        rows[oid]["price"] = price
        events = book.process(NewOrder(oid, rows[oid]["account_id"], side, otype, tif, price,
                                       qty, cap, False, oid))
        batches.append(_batch(seq, events))
    pulls = [batches[i:i + 7] for i in range(0, len(batches), 7)]

    states = {
        oid: OrderState(oid, r["account_id"], Side(r["side"]), Status(r["status"]), 0, 0,
                        r["hold_asset"], r["hold_amount"], r["created_ms"])
        for oid, r in rows.items()
    }
    last: dict[int, dict[str, Any]] = {}
    fees_reported = 0
    fees_ledger = 0
    for pull in pulls:
        before = {oid: {**rows[oid], "status": s.status, "executed": s.executed,
                        "cum_quote": s.cum_quote} for oid, s in states.items()}
        u = user_updates(pull, RULES, before, NOW)
        for b in pull:
            for t in settle_batch(BTCUSDT, b.events, states).trades:
                fees_ledger += t.buyer_fee + t.seller_fee
        for docs in u.reports.values():
            for d in docs:
                last[d["i"]] = d
                if d["x"] == "TRADE":
                    fees_reported += to_units(d["n"])
    assert fees_reported == fees_ledger > 0
    for oid, d in last.items():
        s = states[oid]
        assert (d["X"], to_units(d["z"]), to_units(d["Z"])) == (
            s.status.name, BTCUSDT.qty_units(s.executed), s.cum_quote), oid
        assert d["w"] == (s.status in (Status.NEW, Status.PARTIALLY_FILLED)), oid
    assert set(last) == set(rows)  # every order got at least one report
    assert {d["X"] for d in last.values()} == {
        "NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED"}


def test_account_position_lists_free_and_locked_as_decimal_strings() -> None:
    doc = account_position(NOW, 30, [("BTC", to_units("0.5"), to_units("0.3")),
                                     ("USDT", to_units("11988"), 0)])
    assert encode(doc).decode() == (
        '{"e":"outboundAccountPosition","E":1700000009999,"u":30,"B":['
        '{"a":"BTC","f":"0.50000000","l":"0.30000000"},'
        '{"a":"USDT","f":"11988.00000000","l":"0.00000000"}]}'
    )


def test_a_stop_order_reports_new_when_accepted_and_new_working_when_triggered() -> None:
    rows = {20: _row(20, 2000, Side.SELL, otype=OrderType.STOP_LOSS_LIMIT, price=5_900_000,
                     qty=10_000, stop_price=5_950_000),
            21: _row(21, 2100, Side.BUY, qty=10_000, price=5_900_000, status=Status.NEW)}
    u = user_updates([
        _batch(1, [Accepted(20, 2000, 1001)]),
        _batch(2, [Triggered(20, 2000, 5_950_000, 1500),
                   Trade(3, 5_900_000, 10_000, 20, 2000, Side.SELL, 21, 2100, 1500),
                   Done(21, 2100, Status.FILLED, Reason.NONE, 1500),
                   Done(20, 2000, Status.FILLED, Reason.NONE, 1500)]),
    ], RULES, rows, NOW)
    accepted, triggered, fill = u.reports[2000]
    keys = ("x", "X", "o", "P", "w", "T")
    assert _pick(accepted, *keys) == ("NEW", "NEW", "STOP_LOSS_LIMIT", "59500.00000000",
                                      False, 1001)
    assert "W" not in accepted  # not working until triggered
    assert _pick(triggered, *keys) == ("NEW", "NEW", "STOP_LOSS_LIMIT", "59500.00000000",
                                       True, 1500)
    assert triggered["W"] == 1500
    assert _pick(fill, "x", "X", "z") == ("TRADE", "FILLED", "0.10000000")


def test_amend_reports_replaced_with_the_new_quantity() -> None:
    rows = {22: _row(22, 2200, Side.BUY, qty=50_000, status=Status.NEW, iceberg_qty=10_000)}
    u = user_updates([_batch(3, [Amended(22, 2200, 30_000, 20_000, 77)])], RULES, rows, NOW)
    [doc] = u.reports[2200]
    assert _pick(doc, "x", "X", "q", "F", "w", "W", "T") == (
        "REPLACED", "NEW", "0.30000000", "0.10000000", True, 1000, 77)


def test_an_amend_to_the_executed_quantity_reports_replaced_filled() -> None:
    rows = {23: _row(23, 2300, Side.SELL, qty=50_000, status=Status.PARTIALLY_FILLED,
                     executed=20_000, cum_quote=to_units("12000"))}
    u = user_updates([_batch(4, [Amended(23, 2300, 20_000, 30_000, 80),
                                 Done(23, 2300, Status.FILLED, Reason.NONE, 80)])],
                     RULES, rows, NOW)
    [doc] = u.reports[2300]
    assert _pick(doc, "x", "X", "q", "z", "w") == (
        "REPLACED", "FILLED", "0.20000000", "0.20000000", False)


def test_self_trade_prevention_and_gtd_expiry_report_like_binance() -> None:
    rows = {24: _row(24, 2400, Side.SELL, qty=10_000, stp=StpMode.EXPIRE_TAKER),
            25: _row(25, 2500, Side.BUY, qty=10_000, status=Status.NEW,
                     tif=TimeInForce.GTD)}
    u = user_updates([_batch(5, [
        Done(24, 2400, Status.EXPIRED_IN_MATCH, Reason.SELF_TRADE, 90),
        Done(25, 2500, Status.EXPIRED, Reason.GTD_EXPIRED, 91),
    ])], RULES, rows, NOW)
    new, prevented = u.reports[2400]
    assert _pick(new, "x", "X") == ("NEW", "NEW")  # accepted, then expired in the match
    assert _pick(prevented, "x", "X", "V", "A", "B") == (
        "TRADE_PREVENTION", "EXPIRED_IN_MATCH", "EXPIRE_TAKER", "0.10000000", "0.10000000")
    [expired] = u.reports[2500]
    assert _pick(expired, "x", "X", "f") == ("EXPIRED", "EXPIRED", "GTD")


def test_oco_legs_name_their_order_list() -> None:
    rows = {26: _row(26, 2600, Side.SELL, otype=OrderType.LIMIT_MAKER, list_id=4),
            27: _row(27, 2600, Side.SELL, otype=OrderType.STOP_LOSS, price=0,
                     stop_price=5_000_000, list_id=4)}
    u = user_updates([_batch(6, [Rested(26, 2600, Side.SELL, P60000, 50_000, 5),
                                 Accepted(27, 2600, 5)])], RULES, rows, NOW)
    assert [_pick(d, "i", "x", "g", "w") for d in u.reports[2600]] == [
        (26, "NEW", 4, True), (27, "NEW", 4, False)]
