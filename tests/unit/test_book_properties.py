"""Property tests: random command sequences through ``OrderBook`` and the naive reference.

The example budget is a Hypothesis profile: ``ci`` (the default: a fixed, derandomized
budget) or ``long`` for a deeper random search, e.g.
``pytest tests/unit/test_book_properties.py --hypothesis-profile=long``.
"""

from __future__ import annotations

from book_impls import book_impl  # noqa: F401 - runs every test on both books
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_book import ReferenceBook

from tradeplane.domain import codec
from tradeplane.domain.book import BookSnapshot, OrderBook
from tradeplane.domain.model import (
    Accepted,
    Amend,
    Amended,
    Cancel,
    CancelAll,
    Command,
    Done,
    Event,
    NewOrder,
    NewOrderList,
    OrderType,
    Rested,
    SetTrading,
    Side,
    Status,
    StpMode,
    Tick,
    TimeInForce,
    Trade,
    TradingState,
    Triggered,
)

PROPS = settings()  # the profile's budget: see tests/conftest.py

KINDS = (["limit"] * 10 + ["maker", "market", "market", "market", "cancel", "cancel", "cancel",
                            "cancel_all", "duplicate", "invalid", "trading"]
         + ["stop"] * 4 + ["iceberg"] * 2 + ["gtd", "tick"] + ["amend"] * 3 + ["oco"] * 2)
STOPS = [OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT,
         OrderType.TAKE_PROFIT_LIMIT]
STP = st.sampled_from([StpMode.NONE] * 3 + list(StpMode))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, list[Command]]:
    """A notional per tick x lot and a command sequence around a mid of 100 ticks, with
    every order control: stops, icebergs, self-trade prevention, GTD with clock ticks,
    amends and OCO lists."""
    npl = draw(st.sampled_from([1, 3]))
    count = draw(st.integers(1, 100))
    owners: dict[int, int] = {}
    cmds: list[Command] = []
    next_list = 1

    def price() -> int:
        return draw(st.integers(96, 104))

    for ts in range(1, count + 1):
        kind = draw(st.sampled_from(KINDS))
        side = draw(st.sampled_from([Side.BUY, Side.SELL]))
        account = draw(st.integers(1, 3))
        oid = len(owners) + 1
        cmd: Command
        if kind == "limit":
            tif = draw(st.sampled_from([TimeInForce.GTC] * 4 + [TimeInForce.IOC, TimeInForce.FOK]))
            cmd = NewOrder(oid, account, side, OrderType.LIMIT, tif, price(),
                           draw(st.integers(1, 6)), 0, False, ts, stp=draw(STP))
        elif kind == "iceberg":
            qty = draw(st.integers(2, 12))
            cmd = NewOrder(oid, account, side, OrderType.LIMIT, TimeInForce.GTC, price(), qty, 0,
                           False, ts, iceberg_qty=draw(st.integers(1, qty - 1)), stp=draw(STP))
        elif kind == "gtd":
            typ = draw(st.sampled_from([OrderType.LIMIT, OrderType.LIMIT_MAKER,
                                        OrderType.STOP_LOSS_LIMIT]))
            cmd = NewOrder(oid, account, side, typ, TimeInForce.GTD, price(),
                           draw(st.integers(1, 6)), 0, False, ts,
                           stop_price=price() if typ == OrderType.STOP_LOSS_LIMIT else 0,
                           good_till=ts + draw(st.integers(-1, 15)))
        elif kind == "maker":
            cmd = NewOrder(oid, account, side, OrderType.LIMIT_MAKER, TimeInForce.GTC,
                           price(), draw(st.integers(1, 6)), 0, False, ts)
        elif kind == "market":
            by_quote = draw(st.booleans())
            qty = draw(st.integers(0 if by_quote else 1, 12))
            quote = draw(st.integers(1, 4000)) if by_quote else draw(
                st.sampled_from([0, 0, 150, 700, 2500]))
            cmd = NewOrder(oid, account, side, OrderType.MARKET, TimeInForce.GTC, 0, qty, quote,
                           by_quote, ts, stp=draw(STP))
        elif kind == "stop":
            typ = draw(st.sampled_from(STOPS))
            limit = typ in (OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT)
            cmd = NewOrder(oid, account, side, typ,
                           draw(st.sampled_from([TimeInForce.GTC, TimeInForce.IOC])),
                           price() if limit else 0, draw(st.integers(1, 8)),
                           0 if limit else draw(st.sampled_from([0, 0, 900])), False, ts,
                           stop_price=price(), stp=draw(STP))
        elif kind == "oco":
            list_id = next_list
            next_list += 1
            qty = draw(st.integers(1, 6))
            a_type = draw(st.sampled_from([OrderType.LIMIT_MAKER, *STOPS]))
            b_type = draw(st.sampled_from(STOPS))
            legs = []
            for i, typ in enumerate((a_type, b_type)):
                limit = typ != OrderType.STOP_LOSS and typ != OrderType.TAKE_PROFIT
                legs.append(NewOrder(
                    oid + i, account, side, typ, TimeInForce.GTC, price() if limit else 0, qty,
                    0, False, ts, stop_price=0 if typ == OrderType.LIMIT_MAKER else price(),
                    list_id=list_id))
                owners[oid + i] = account
            cmds.append(NewOrderList(list_id, account, legs, ts))
            continue
        elif kind == "invalid":
            typ = draw(st.sampled_from(list(OrderType)))
            cmd = NewOrder(oid, account, side, typ, draw(st.sampled_from(list(TimeInForce))),
                           draw(st.integers(-1, 1)), draw(st.integers(-1, 1)),
                           draw(st.integers(-1, 1)), draw(st.booleans()), ts,
                           stop_price=draw(st.integers(-1, 1)),
                           iceberg_qty=draw(st.integers(-1, 1)),
                           good_till=draw(st.integers(0, ts + 1)))
        elif kind == "duplicate" and owners:
            cmds.append(cmds[draw(st.integers(0, len(cmds) - 1))])
            continue
        elif kind == "cancel" and owners:
            target = draw(st.integers(max(1, len(owners) - 8), len(owners) + 1))  # likely live
            right_owner = draw(st.integers(0, 4)) > 0
            cmds.append(Cancel(target, owners.get(target, 1) if right_owner else account, ts))
            continue
        elif kind == "amend" and owners:
            target = draw(st.integers(max(1, len(owners) - 8), len(owners) + 1))
            right_owner = draw(st.integers(0, 4)) > 0
            cmds.append(Amend(target, owners.get(target, 1) if right_owner else account,
                              draw(st.integers(0, 5)), ts))
            continue
        elif kind == "tick":
            cmds.append(Tick(ts))
            continue
        elif kind == "cancel_all":
            cmds.append(CancelAll(account, ts))
            continue
        elif kind == "trading":
            state = draw(st.sampled_from([TradingState.ENABLED] * 3 + [TradingState.HALTED,
                                                                        TradingState.CANCEL_ONLY]))
            cmds.append(SetTrading(state, ts))
            continue
        else:
            continue
        owners[oid] = account
        cmds.append(cmd)
    return npl, cmds


@PROPS
@given(scenarios(), st.sampled_from([2, 100_000]))
def test_book_matches_reference_book_event_for_event(
    scenario: tuple[int, list[Command]], recent_limit: int
) -> None:
    npl, cmds = scenario
    book = OrderBook("TEST", npl, debug=True, recent_limit=recent_limit)
    ref = ReferenceBook(npl, recent_limit=recent_limit)
    for cmd in cmds:
        assert book.process(cmd) == ref.process(cmd), cmd
        assert book.depth(100) == ref.depth(100)
        assert (book.best_bid(), book.best_ask()) == (ref.best_bid(), ref.best_ask())
        assert book.open_orders_count == len(ref.resting) + len(ref.waiting)
        assert book.stop_orders() == [s.cmd for s in ref.waiting]
        assert (book.last_price or 0) == ref.last_price


def _orders_of(cmd: Command) -> list[NewOrder]:
    if isinstance(cmd, NewOrder):
        return [cmd]
    if isinstance(cmd, NewOrderList):
        return list(cmd.legs)
    return []


@PROPS
@given(scenarios())
def test_events_conserve_quantity_and_never_cross_the_book(
    scenario: tuple[int, list[Command]],
) -> None:
    npl, cmds = scenario
    book = OrderBook("TEST", npl)
    qty_of: dict[int, int] = {}  # each order's quantity (as amended)
    by_quote: set[int] = set()
    executed: dict[int, int] = {}
    open_qty: dict[int, int] = {}  # what the events say rests (visible + hidden), per order
    waiting: set[int] = set()  # accepted stops not yet triggered
    finished: set[int] = set()
    next_trade_id = 1
    for cmd in cmds:
        for o in _orders_of(cmd):
            if o.order_id not in qty_of:
                qty_of[o.order_id] = o.qty
                if o.by_quote:
                    by_quote.add(o.order_id)
        events: list[Event] = book.process(cmd)
        for ev in events:
            if isinstance(ev, Trade):
                assert ev.trade_id == next_trade_id
                next_trade_id += 1
                assert ev.qty > 0 and 0 < ev.qty <= open_qty[ev.maker_order]
                assert ev.taker_order not in open_qty and ev.taker_order not in waiting
                open_qty[ev.maker_order] -= ev.qty
                for oid in (ev.taker_order, ev.maker_order):
                    executed[oid] = executed.get(oid, 0) + ev.qty
                    assert oid in by_quote or executed[oid] <= qty_of[oid]
            elif isinstance(ev, Rested):
                assert ev.order_id not in finished and ev.order_id not in open_qty
                assert executed.get(ev.order_id, 0) + ev.remaining == qty_of[ev.order_id]
                open_qty[ev.order_id] = ev.remaining
            elif isinstance(ev, Accepted):
                assert ev.order_id not in finished and ev.order_id not in waiting
                waiting.add(ev.order_id)
            elif isinstance(ev, Triggered):
                waiting.remove(ev.order_id)
            elif isinstance(ev, Amended):
                assert ev.new_qty < qty_of[ev.order_id]
                qty_of[ev.order_id] = ev.new_qty
                if ev.order_id in open_qty:
                    open_qty[ev.order_id] -= ev.reduced
                    assert open_qty[ev.order_id] >= 0
            elif isinstance(ev, Done):
                assert ev.order_id not in finished
                finished.add(ev.order_id)
                waiting.discard(ev.order_id)
                left = open_qty.pop(ev.order_id, 0)
                if ev.status == Status.FILLED:
                    assert left == 0
                    if ev.order_id not in by_quote:
                        assert executed.get(ev.order_id, 0) == qty_of[ev.order_id]
        # Conservation: the book holds exactly what the events say rests, and its depth is
        # the visible part of it.
        expected: dict[tuple[int, int], int] = {}
        for oid, qty in open_qty.items():
            assert qty > 0
            view = book.order(oid)
            assert view is not None and view.remaining + view.hidden == qty
            assert view.qty == qty_of[oid] and view.remaining > 0
            key = (view.side.value, view.price)
            expected[key] = expected.get(key, 0) + view.remaining
        bids, asks = book.depth(1000)
        actual = {(Side.BUY.value, p): q for p, q in bids}
        actual.update({(Side.SELL.value, p): q for p, q in asks})
        assert actual == expected
        assert {s.order_id for s in book.stop_orders()} == waiting
        assert book.open_orders_count == len(open_qty) + len(waiting)
        # An order is either open or done, never both.
        for oid in finished:
            assert book.order(oid) is None
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is None or ask is None or bid < ask


@PROPS
@given(scenarios(), st.data())
def test_dirty_levels_turn_the_previous_depth_into_the_current_one(
    scenario: tuple[int, list[Command]], data: st.DataObject
) -> None:
    npl, cmds = scenario
    book = OrderBook("TEST", npl)
    mirror: dict[tuple[int, int], int] = {}
    for cmd in cmds:
        book.process(cmd)
        if data.draw(st.booleans()):  # batches of random size
            for side, price, qty in book.take_dirty_levels():
                if qty:
                    mirror[(side, price)] = qty
                else:
                    mirror.pop((side, price), None)
            bids, asks = book.depth(1000)
            current = {(Side.BUY.value, p): q for p, q in bids}
            current.update({(Side.SELL.value, p): q for p, q in asks})
            assert mirror == current


@PROPS
@given(scenarios(), st.data())
def test_restored_snapshot_continues_like_an_uninterrupted_book(
    scenario: tuple[int, list[Command]], data: st.DataObject
) -> None:
    npl, cmds = scenario
    cut = data.draw(st.integers(0, len(cmds)))
    straight = OrderBook("TEST", npl, recent_limit=5)
    interrupted = OrderBook("TEST", npl, recent_limit=5)
    for cmd in cmds[:cut]:
        straight.process(cmd)
        interrupted.process(cmd)
    raw = codec.encode(interrupted.snapshot())
    restored = OrderBook.restore(codec.decode_as(raw, BookSnapshot), debug=True)
    assert restored.state_hash() == straight.state_hash()
    for cmd in cmds[cut:]:
        expected: list[Event] = straight.process(cmd)
        assert restored.process(cmd) == expected
        assert restored.state_hash() == straight.state_hash()  # after every command
    assert restored.snapshot() == straight.snapshot()
