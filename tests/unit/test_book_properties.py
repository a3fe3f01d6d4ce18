"""Property tests: random command sequences through ``OrderBook`` and the naive reference."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_book import ReferenceBook

from tradeplane.domain import codec
from tradeplane.domain.book import BookSnapshot, OrderBook
from tradeplane.domain.model import (
    Cancel,
    CancelAll,
    Command,
    Done,
    Event,
    NewOrder,
    OrderType,
    Rested,
    SetTrading,
    Side,
    Status,
    TimeInForce,
    Trade,
    TradingState,
)

PROPS = settings(
    max_examples=250,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

KINDS = ["limit"] * 10 + ["maker", "market", "market", "market", "cancel", "cancel", "cancel",
                          "cancel_all", "duplicate", "invalid", "trading"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, list[Command]]:
    """A notional per tick x lot and a command sequence around a mid of 100 ticks."""
    npl = draw(st.sampled_from([1, 3]))
    count = draw(st.integers(1, 80))
    owners: dict[int, int] = {}
    cmds: list[Command] = []
    for ts in range(1, count + 1):
        kind = draw(st.sampled_from(KINDS))
        side = draw(st.sampled_from([Side.BUY, Side.SELL]))
        account = draw(st.integers(1, 3))
        oid = len(owners) + 1
        cmd: Command
        if kind == "limit":
            tif = draw(st.sampled_from([TimeInForce.GTC] * 4 + [TimeInForce.IOC, TimeInForce.FOK]))
            cmd = NewOrder(oid, account, side, OrderType.LIMIT, tif, draw(st.integers(96, 104)),
                           draw(st.integers(1, 6)), 0, False, ts)
        elif kind == "maker":
            cmd = NewOrder(oid, account, side, OrderType.LIMIT_MAKER, TimeInForce.GTC,
                           draw(st.integers(96, 104)), draw(st.integers(1, 6)), 0, False, ts)
        elif kind == "market":
            by_quote = draw(st.booleans())
            qty = draw(st.integers(0 if by_quote else 1, 12))
            quote = draw(st.integers(1, 4000)) if by_quote else draw(
                st.sampled_from([0, 0, 150, 700, 2500]))
            cmd = NewOrder(oid, account, side, OrderType.MARKET, TimeInForce.GTC, 0, qty, quote,
                           by_quote, ts)
        elif kind == "invalid":
            typ = draw(st.sampled_from(list(OrderType)))
            cmd = NewOrder(oid, account, side, typ, TimeInForce.GTC, draw(st.integers(-1, 1)),
                           draw(st.integers(-1, 1)), draw(st.integers(-1, 1)), draw(st.booleans()),
                           ts)
        elif kind == "duplicate" and owners:
            cmds.append(cmds[draw(st.integers(0, len(cmds) - 1))])
            continue
        elif kind == "cancel" and owners:
            target = draw(st.integers(max(1, len(owners) - 8), len(owners) + 1))  # likely live
            right_owner = draw(st.integers(0, 4)) > 0
            cmds.append(Cancel(target, owners.get(target, 1) if right_owner else account, ts))
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
        assert book.open_orders_count == len(ref.resting)


@PROPS
@given(scenarios())
def test_events_conserve_quantity_and_never_cross_the_book(
    scenario: tuple[int, list[Command]],
) -> None:
    npl, cmds = scenario
    book = OrderBook("TEST", npl)
    open_qty: dict[int, int] = {}  # what the events say rests, per order
    where: dict[int, tuple[int, int]] = {}  # order -> (side, price)
    finished: set[int] = set()
    next_trade_id = 1
    for cmd in cmds:
        events = book.process(cmd)
        taken = 0
        for ev in events:
            if isinstance(ev, Trade):
                assert ev.trade_id == next_trade_id
                next_trade_id += 1
                assert isinstance(cmd, NewOrder) and ev.taker_order == cmd.order_id
                assert ev.qty > 0 and 0 < ev.qty <= open_qty[ev.maker_order]
                open_qty[ev.maker_order] -= ev.qty
                taken += ev.qty
            elif isinstance(ev, Rested):
                assert ev.order_id not in finished and ev.order_id not in open_qty
                open_qty[ev.order_id] = ev.remaining
                where[ev.order_id] = (ev.side, ev.price)
                assert isinstance(cmd, NewOrder) and taken + ev.remaining == cmd.qty
            elif isinstance(ev, Done):
                assert ev.order_id not in finished
                finished.add(ev.order_id)
                left = open_qty.pop(ev.order_id, 0)
                if ev.status == Status.FILLED:
                    assert left == 0
                if isinstance(cmd, NewOrder) and ev.order_id == cmd.order_id:
                    if ev.status == Status.FILLED and cmd.type != OrderType.MARKET:
                        assert taken == cmd.qty
                    if cmd.qty > 0:
                        assert taken <= cmd.qty
        # Conservation: the book holds exactly what the events say rests.
        expected: dict[tuple[int, int], int] = {}
        for oid, qty in open_qty.items():
            assert qty > 0
            expected[where[oid]] = expected.get(where[oid], 0) + qty
        bids, asks = book.depth(1000)
        actual = {(Side.BUY.value, p): q for p, q in bids}
        actual.update({(Side.SELL.value, p): q for p, q in asks})
        assert actual == expected
        # An order is either open or done, never both.
        for oid in finished:
            assert book.order(oid) is None
        for oid, qty in open_qty.items():
            view = book.order(oid)
            assert view is not None and view.remaining == qty
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
    assert restored.state_hash() == straight.state_hash()
    assert restored.snapshot() == straight.snapshot()
