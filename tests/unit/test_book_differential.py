"""The compiled book against the pure-Python one (the specification): the same command
streams must give the same events, the same depth, dirty levels and views, and the same
state hash after every command; a snapshot of either restores into the other, which then
continues exactly as the original."""

from __future__ import annotations

import random

import pytest
from book_impls import book_class
from hypothesis import given
from hypothesis import strategies as st
from test_book_properties import PROPS, scenarios

from tradeplane.bench.book import RULES, generate_ops
from tradeplane.domain import codec
from tradeplane.domain.book import BookSnapshot, OrderBook
from tradeplane.domain.model import (
    Amend,
    Cancel,
    CancelAll,
    CancelRejected,
    Command,
    Done,
    NewOrder,
    NewOrderList,
    OrderType,
    Reason,
    SetTrading,
    Side,
    Status,
    StpMode,
    Tick,
    TimeInForce,
    TradingState,
)

DIRECTIONS = [("python", "compiled"), ("compiled", "python")]


def _pair(npl: int, recent_limit: int = 100_000) -> tuple[OrderBook, OrderBook]:
    return (book_class("python")("TEST", npl, recent_limit=recent_limit),
            book_class("compiled")("TEST", npl, recent_limit=recent_limit))


def _same_state(spec: OrderBook, compiled: OrderBook, probe: list[int]) -> None:
    assert compiled.state_hash() == spec.state_hash()
    assert compiled.depth(1000) == spec.depth(1000)
    assert (compiled.best_bid(), compiled.best_ask()) == (spec.best_bid(), spec.best_ask())
    assert compiled.open_orders_count == spec.open_orders_count
    assert compiled.stop_orders() == spec.stop_orders()
    assert compiled.last_price == spec.last_price
    assert compiled.trading == spec.trading
    assert compiled.next_expiry() == spec.next_expiry()
    for oid in probe:
        assert compiled.order(oid) == spec.order(oid)


def _ids(cmd: Command) -> list[int]:
    if isinstance(cmd, NewOrder | Cancel | Amend):
        return [cmd.order_id]
    if isinstance(cmd, NewOrderList):
        return [leg.order_id for leg in cmd.legs]
    return []


@PROPS
@given(scenarios(), st.sampled_from([2, 100_000]), st.data())
def test_compiled_book_gives_the_same_events_and_state_after_every_command(
    scenario: tuple[int, list[Command]], recent_limit: int, data: st.DataObject
) -> None:
    npl, cmds = scenario
    spec, compiled = _pair(npl, recent_limit)
    for cmd in cmds:
        assert compiled.process(cmd) == spec.process(cmd), cmd
        _same_state(spec, compiled, _ids(cmd))
        if data.draw(st.booleans()):
            assert compiled.take_dirty_levels() == spec.take_dirty_levels()
    assert compiled.snapshot() == spec.snapshot()
    compiled.check_invariants()


@PROPS
@given(scenarios(), st.sampled_from(DIRECTIONS), st.data())
def test_a_snapshot_of_one_book_restores_into_the_other_and_continues_identically(
    scenario: tuple[int, list[Command]], direction: tuple[str, str], data: st.DataObject
) -> None:
    npl, cmds = scenario
    source_cls, target_cls = (book_class(name) for name in direction)
    cut = data.draw(st.integers(0, len(cmds)))
    source = source_cls("TEST", npl, recent_limit=5)
    for cmd in cmds[:cut]:
        source.process(cmd)
    raw = codec.encode(source.snapshot())
    restored = target_cls.restore(codec.decode_as(raw, BookSnapshot), debug=True)
    assert restored.state_hash() == source.state_hash()
    assert restored.snapshot() == source.snapshot()
    for cmd in cmds[cut:]:
        assert restored.process(cmd) == source.process(cmd), cmd
        assert restored.state_hash() == source.state_hash()


def _wide_stream(n: int, seed: int) -> list[Command]:
    """A long seeded stream over hundreds of price levels (deep books: level arrays that
    grow, levels inserted and dropped in the middle), with every order control."""
    rng = random.Random(seed)
    cmds: list[Command] = []
    next_id = 1
    next_list = 1
    owner: dict[int, int] = {}
    halted = False
    stops = [OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT,
             OrderType.TAKE_PROFIT_LIMIT]
    for ts in range(1, n + 1):
        u = rng.random()
        side = rng.choice([Side.BUY, Side.SELL])
        acct = rng.randint(1, 20)
        stp = rng.choice([StpMode.NONE] * 6 + list(StpMode))
        mid = 1000 + rng.randint(-30, 30)
        away = rng.randint(-5, 20) if rng.random() < 0.7 else rng.randint(20, 600)
        price = mid - away if side == Side.BUY else mid + away
        cmd: Command
        if halted and rng.random() < 0.05:
            cmd = SetTrading(TradingState.ENABLED, ts)
            halted = False
        elif u < 0.45:
            tif = rng.choice([TimeInForce.GTC] * 8 + [TimeInForce.IOC, TimeInForce.FOK,
                                                      TimeInForce.GTD])
            iceberg = rng.randint(1, 5) if rng.random() < 0.1 and tif == TimeInForce.GTC else 0
            qty = rng.randint(1, 40) + iceberg
            cmd = NewOrder(next_id, acct, side, OrderType.LIMIT, tif, max(price, 1), qty, 0,
                           False, ts, iceberg_qty=iceberg, stp=stp,
                           good_till=ts + rng.randint(1, 300) if tif == TimeInForce.GTD else 0)
            next_id += 1
        elif u < 0.75:
            cmd = Cancel(rng.randint(max(1, next_id - 400), next_id), acct, ts)
            if rng.random() < 0.5:  # the right owner, likely live
                cmd = Cancel(cmd.order_id, owner.get(cmd.order_id, acct), ts)
        elif u < 0.82:
            by_quote = rng.random() < 0.3
            cmd = NewOrder(next_id, acct, side, OrderType.MARKET, TimeInForce.GTC, 0,
                           0 if by_quote else rng.randint(1, 200),
                           rng.randint(1, 10**6) if by_quote else rng.choice([0, 50_000]),
                           by_quote, ts, stp=stp)
            next_id += 1
        elif u < 0.88:
            typ = rng.choice(stops)
            limit = typ in (OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT)
            cmd = NewOrder(next_id, acct, side, typ, TimeInForce.GTC, max(price, 1) if limit
                           else 0, rng.randint(1, 30), 0, False, ts,
                           stop_price=max(1, mid + rng.randint(-100, 100)), stp=stp)
            next_id += 1
        elif u < 0.91:
            legs = [NewOrder(next_id, acct, side, OrderType.LIMIT_MAKER, TimeInForce.GTC,
                             max(price, 1), 5, 0, False, ts, list_id=next_list),
                    NewOrder(next_id + 1, acct, side, rng.choice(stops), TimeInForce.GTC,
                             max(price, 1), 5, 0, False, ts,
                             stop_price=max(1, mid + rng.randint(-100, 100)),
                             list_id=next_list)]
            cmd = NewOrderList(next_list, acct, legs, ts)
            next_id += 2
            next_list += 1
        elif u < 0.96:
            target = rng.randint(max(1, next_id - 100), next_id)
            cmd = Amend(target, owner.get(target, acct), rng.randint(0, 30), ts)
        elif u < 0.98:
            cmd = Tick(ts)
        elif u < 0.995 or halted:
            cmd = CancelAll(acct, ts)
        else:
            cmd = SetTrading(rng.choice([TradingState.HALTED, TradingState.CANCEL_ONLY]), ts)
            halted = True
        for oid in _ids(cmd):
            owner.setdefault(oid, acct)
        cmds.append(cmd)
    return cmds


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_long_deep_streams_give_the_same_events_and_hashes(seed: int) -> None:
    spec, compiled = _pair(RULES.notional_per_tick_lot if seed == 3 else 7, recent_limit=500)
    for i, cmd in enumerate(_wide_stream(15_000, seed)):
        assert compiled.process(cmd) == spec.process(cmd), (i, cmd)
        if i % 500 == 0:
            _same_state(spec, compiled, _ids(cmd))
            assert compiled.take_dirty_levels() == spec.take_dirty_levels()
    _same_state(spec, compiled, [])
    compiled.check_invariants()


def test_the_benchmark_mix_gives_the_same_events_and_hashes() -> None:
    cmds, _ = generate_ops(50_000, 7)
    spec, compiled = _pair(RULES.notional_per_tick_lot)
    for i, cmd in enumerate(cmds):
        assert compiled.process(cmd) == spec.process(cmd), (i, cmd)
        if i % 5_000 == 0:
            _same_state(spec, compiled, _ids(cmd))
    _same_state(spec, compiled, [])


def test_the_compiled_book_rejects_integers_beyond_64_bits_instead_of_raising() -> None:
    # Its one documented deviation (_cbook.pyx): the codec's unsigned 64-bit integers can
    # carry such a quantity; the pure-Python book would take it, the compiled one answers.
    compiled = book_class("compiled")("TEST", 1)
    huge = 2**64 - 1
    rest = NewOrder(1, 5, Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 100, 3, 0, False, 1)
    assert compiled.process(rest) == book_class("python")("TEST", 1).process(rest)
    too_big = NewOrder(2, 5, Side.SELL, OrderType.LIMIT, TimeInForce.GTC, 100, huge, 0, False, 2)
    assert compiled.process(too_big) == [Done(2, 5, Status.REJECTED, Reason.NONE, 2)]
    legs = [NewOrder(3, 5, Side.SELL, OrderType.LIMIT_MAKER, TimeInForce.GTC, 200, huge, 0,
                     False, 3, list_id=1),
            NewOrder(4, 5, Side.SELL, OrderType.STOP_LOSS, TimeInForce.GTC, 0, 1, 0, False, 3,
                     stop_price=90, list_id=1)]
    assert compiled.process(NewOrderList(1, 5, legs, 3)) == [
        Done(3, 5, Status.REJECTED, Reason.BAD_LIST, 3),
        Done(4, 5, Status.REJECTED, Reason.BAD_LIST, 3)]
    assert compiled.process(Cancel(1, huge, 4)) == [
        CancelRejected(1, huge, Reason.UNKNOWN_ORDER, 4)]
    assert compiled.depth(5) == ([(100, 3)], [])
    compiled.check_invariants()


@pytest.mark.parametrize("recent_limit", [1, 700, 5_000])
def test_finished_ids_are_remembered_and_forgotten_alike_for_scattered_ids(
    recent_limit: int,
) -> None:
    # The compiled book keeps finished ids in its own hash set: random 63-bit ids (and 0),
    # finished at once (IOC on an empty side), then redelivered at random, must be
    # recognised exactly while among the last ``recent_limit``, as by the pure-Python book.
    rng = random.Random(recent_limit)
    spec, compiled = _pair(1, recent_limit)
    sent: list[int] = [0]
    for ts in range(1, 20_001):
        if rng.random() < 0.3:
            oid = rng.choice(sent[-2 * recent_limit:])  # redelivery, recent or forgotten
        else:
            oid = rng.choice([rng.randrange(1, 2**63), rng.randrange(1, 4 * recent_limit)])
            sent.append(oid)
        cmd = NewOrder(oid, 1, Side.BUY, OrderType.LIMIT, TimeInForce.IOC, 100, 1, 0, False, ts)
        assert compiled.process(cmd) == spec.process(cmd), (ts, cmd)
    assert compiled.snapshot().recent == spec.snapshot().recent
    assert compiled.state_hash() == spec.state_hash()
    compiled.check_invariants()
