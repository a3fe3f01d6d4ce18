"""The order use cases without servers: admission's rules and holds (pure), place,
cancel, amend, OCO and cancel-all, and the read-only queries over the in-memory ports."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from tests.support.memory_orders import MemoryOrders

from tradeplane.domain.model import (
    Amend,
    Cancel,
    CancelAll,
    NewOrder,
    NewOrderList,
    OrderType,
    Reason,
    Side,
    Status,
    StpMode,
    TimeInForce,
)
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.usecases.orders import (
    BalanceRow,
    ListRequest,
    OrderQueries,
    OrderRefused,
    OrderRequest,
    OrderRow,
    Orders,
    OrderSpec,
    Placed,
    PlaceOco,
    PlaceOrder,
    Refusal,
    TradeRow,
    Window,
    admit,
    admit_oco,
)

BTCUSDT = DEMO_PAIRS[0]  # tick 0.01 USDT, lot 0.00001 BTC, min notional 5 USDT
NOW = 1_700_000_000_000
REF = 6_000_000  # 60000.00 USDT in ticks
ACCOUNT = 7
D = Decimal


def limit(side: Side, price: str, qty: str, **kw: object) -> PlaceOrder:
    spec = OrderSpec(OrderType.LIMIT, "c1", TimeInForce.GTC, D(price))
    return PlaceOrder(ACCOUNT, "BTCUSDT", side, replace(spec, **kw), D(qty))  # type: ignore[arg-type]


def admitted(result: OrderRequest | Refusal) -> OrderRequest:
    assert isinstance(result, OrderRequest), result
    return result


def refused(result: object) -> tuple[int, str]:
    assert isinstance(result, Refusal), result
    return result.code, result.msg


# --------------------------------------------------------------------------- admit
def test_a_limit_buy_holds_its_notional_and_takes_the_pairs_default_stp() -> None:
    req = admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "0.01"), REF, NOW))
    assert (req.price, req.qty, req.hold_asset) == (6_000_000, 1000, "USDT")
    assert req.hold == to_units("600")
    assert (req.account, req.symbol, req.ts, req.stp) == (ACCOUNT, "BTCUSDT", NOW,
                                                          StpMode.NONE)


def test_a_limit_sell_holds_its_quantity() -> None:
    req = admitted(admit(BTCUSDT, limit(Side.SELL, "60000", "0.01"), REF, NOW))
    assert (req.hold_asset, req.hold) == ("BTC", to_units("0.01"))


@pytest.mark.parametrize(
    ("request_", "error"),
    [(limit(Side.BUY, "60000.001", "0.01"), (-1013, "Filter failure: PRICE_FILTER")),
     (limit(Side.BUY, "60000", "0.000001"), (-1013, "Filter failure: LOT_SIZE")),
     (limit(Side.BUY, "60000", "0.00001"), (-1013, "Filter failure: NOTIONAL")),
     (limit(Side.BUY, "90000", "0.01"), (-1013, "Filter failure: PERCENT_PRICE")),
     (limit(Side.BUY, "60000", "0.01", iceberg_qty=D("0.01")),
      (-2010, "IcebergQty exceeds QTY.")),
     (limit(Side.BUY, "60000", "0.01", iceberg_qty=D("0.0001")),
      (-1013, "Filter failure: ICEBERG_PARTS")),
     (limit(Side.BUY, "60000", "0.01", tif=TimeInForce.GTD, good_till=NOW),
      (-1130, "Data sent for parameter 'goodTillDate' is not valid."))],
    ids=["tick", "lot", "notional", "band", "iceberg-qty", "iceberg-parts", "gtd-past"],
)
def test_admission_refuses_in_binances_words(request_: PlaceOrder,
                                             error: tuple[int, str]) -> None:
    assert refused(admit(BTCUSDT, request_, REF, NOW)) == error


def test_filter_refusals_are_labelled_for_metrics() -> None:
    result = admit(BTCUSDT, limit(Side.BUY, "60000.001", "0.01"), REF, NOW)
    assert isinstance(result, Refusal) and result.outcome == "filter"


def test_a_closed_market_admits_nothing() -> None:
    halted = replace(BTCUSDT, trading="halted")
    assert refused(admit(halted, limit(Side.BUY, "60000", "0.01"), REF, NOW)) == (
        -1013, "Market is closed.")


def test_market_buy_by_quantity_holds_the_top_of_the_band() -> None:
    req = PlaceOrder(ACCOUNT, "BTCUSDT", Side.BUY, OrderSpec(OrderType.MARKET, "m"),
                     D("0.01"))
    got = admitted(admit(BTCUSDT, req, REF, NOW))
    assert got.hold_asset == "USDT"
    assert got.hold == BTCUSDT.notional(REF * 12_000 // 10_000 + 1, 1000)
    assert got.quote_qty == got.hold and not got.by_quote


def test_market_sell_for_quote_holds_enough_base_at_the_bottom_of_the_band() -> None:
    req = PlaceOrder(ACCOUNT, "BTCUSDT", Side.SELL, OrderSpec(OrderType.MARKET, "m"),
                     None, D("600"))
    got = admitted(admit(BTCUSDT, req, REF, NOW))
    low = REF * 8_000 // 10_000
    assert got.by_quote and got.hold_asset == "BTC"
    assert got.qty == -(-to_units("600") // BTCUSDT.notional(low, 1))


def test_a_quote_amount_with_more_than_eight_decimals_is_malformed() -> None:
    req = PlaceOrder(ACCOUNT, "BTCUSDT", Side.BUY, OrderSpec(OrderType.MARKET, "m"),
                     None, D("600.000000001"))
    assert refused(admit(BTCUSDT, req, REF, NOW))[0] == -1100


def oco(side: Side = Side.SELL, above_price: str = "61000",
        below_stop: str = "59000") -> PlaceOco:
    return PlaceOco(
        ACCOUNT, "BTCUSDT", side, "l1",
        OrderSpec(OrderType.LIMIT_MAKER, "a", price=D(above_price), prefix="above"),
        OrderSpec(OrderType.STOP_LOSS, "b", stop_price=D(below_stop), prefix="below"),
        D("0.01"))


def test_an_oco_sell_holds_its_quantity_once() -> None:
    lst = admit_oco(BTCUSDT, oco(), REF, NOW)
    assert isinstance(lst, ListRequest)
    assert (lst.hold_asset, lst.hold) == ("BTC", to_units("0.01"))
    assert [leg.type for leg in lst.legs] == [OrderType.LIMIT_MAKER, OrderType.STOP_LOSS]


def test_oco_legs_in_the_wrong_order_or_place_are_refused() -> None:
    assert refused(admit_oco(BTCUSDT, oco(below_stop="61500"), REF, NOW)) == (
        -2010, "The relationship of the prices for the orders is not correct.")
    assert refused(admit_oco(BTCUSDT, oco(side=Side.BUY), REF, NOW)) == (
        -1165, "A limit order in a buy OCO must be below.")


# --------------------------------------------------------------------------- use cases
def world(**balances: str) -> tuple[MemoryOrders, Orders]:
    mem = MemoryOrders(free={(ACCOUNT, a): to_units(v) for a, v in balances.items()})
    return mem, Orders(mem, mem, mem, timeout=1.0)


async def test_place_locks_the_hold_and_logs_the_command_with_the_order_id() -> None:
    mem, orders = world(USDT="1000")
    req = admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "0.01"), REF, NOW))
    placed = await orders.place(req)
    assert mem.locked[(ACCOUNT, "USDT")] == to_units("600")
    (symbol, cmd), = mem.log
    assert symbol == "BTCUSDT" and cmd == req.command(placed.order_id)
    assert isinstance(cmd, NewOrder) and placed.seq == 1
    row = await orders.result(ACCOUNT, "BTCUSDT", placed)
    assert row.status == Status.NEW


async def test_place_refuses_an_insufficient_balance_and_a_duplicate() -> None:
    mem, orders = world(USDT="1000")
    req = admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "0.01"), REF, NOW))
    await orders.place(req)
    with pytest.raises(OrderRefused) as dup:
        await orders.place(req)
    assert dup.value.refusal.outcome == "duplicate"
    with pytest.raises(OrderRefused) as poor:
        await orders.place(replace(req, client_order_id="c2"))
    assert (poor.value.refusal.code, poor.value.refusal.outcome) == (-2010, "insufficient")
    assert len(mem.log) == 1


async def test_an_order_the_log_did_not_take_has_an_unknown_status() -> None:
    mem, orders = world(USDT="1000")
    mem.bus_down = True
    req = admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "0.01"), REF, NOW))
    with pytest.raises(OrderRefused) as exc:
        await orders.place(req)
    assert (exc.value.refusal.code, exc.value.refusal.status) == (-1007, 503)


async def test_an_engine_rejection_is_answered_in_binances_words() -> None:
    mem, orders = world(USDT="1000")
    mem.refuse = Reason.WOULD_TAKE
    req = admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "0.01"), REF, NOW))
    placed = await orders.place(req)
    with pytest.raises(OrderRefused) as exc:
        await orders.result(ACCOUNT, "BTCUSDT", placed)
    assert (exc.value.refusal.code, exc.value.refusal.msg) == (
        -2010, "Order would immediately match and take.")


async def test_unsettled_results_time_out_as_unknown() -> None:
    mem, orders = world(USDT="1000")
    mem.settles = False
    req = admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "0.01"), REF, NOW))
    placed = await orders.place(req)
    with pytest.raises(OrderRefused) as exc:
        await orders.result(ACCOUNT, "BTCUSDT", placed)
    assert exc.value.refusal.code == -1007


async def test_cancel_by_client_id_releases_the_hold() -> None:
    mem, orders = world(USDT="1000")
    req = admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "0.01"), REF, NOW))
    placed = await orders.place(req)
    row = await orders.cancel(ACCOUNT, "BTCUSDT", None, "c1", NOW + 1)
    assert row.status == Status.CANCELED and row.id == placed.order_id
    assert mem.log[-1][1] == Cancel(placed.order_id, ACCOUNT, NOW + 1)
    assert mem.free[(ACCOUNT, "USDT")] == to_units("1000")
    with pytest.raises(OrderRefused) as again:
        await orders.cancel(ACCOUNT, "BTCUSDT", placed.order_id, None, NOW + 2)
    assert again.value.refusal.code == -2011


async def test_cancel_all_answers_the_orders_it_canceled_or_refuses_when_none() -> None:
    mem, orders = world(USDT="2000")
    for cid in ("a", "b"):
        req = admit(BTCUSDT, limit(Side.BUY, "60000", "0.01", client_order_id=cid), REF, NOW)
        await orders.place(admitted(req))
    rows = await orders.cancel_all(ACCOUNT, "BTCUSDT", NOW + 1)
    assert sorted(r.client_order_id for r in rows) == ["a", "b"]
    assert mem.log[-1][1] == CancelAll(ACCOUNT, NOW + 1)
    with pytest.raises(OrderRefused):
        await orders.cancel_all(ACCOUNT, "BTCUSDT", NOW + 2)


async def test_cancel_replace_settles_the_cancel_before_the_new_order_takes_its_funds(
) -> None:
    mem, orders = world(USDT="1000")
    old = await orders.place(admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "0.01"),
                                            REF, NOW)))
    # 0.016 BTC at 60000 = 960 USDT: only there once the old order's 600 are released
    new = admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "0.016", client_order_id="c2"),
                         REF, NOW))
    done = await orders.cancel_replace(ACCOUNT, "BTCUSDT", old.order_id, None, new, NOW + 1,
                                       allow_failure=False)
    assert done.complete
    assert isinstance(done.canceled, OrderRow) and done.canceled.status == Status.CANCELED
    assert isinstance(done.placed, Placed)
    assert [type(c) for _, c in mem.log] == [NewOrder, Cancel, NewOrder]
    assert mem.locked[(ACCOUNT, "USDT")] == to_units("960")


async def test_cancel_replace_stops_on_a_failed_cancel_unless_failure_is_allowed() -> None:
    mem, orders = world(USDT="1000")
    new = admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "0.01"), REF, NOW))
    stopped = await orders.cancel_replace(ACCOUNT, "BTCUSDT", 404, None, new, NOW,
                                          allow_failure=False)
    assert stopped.placed is None and not stopped.complete
    assert isinstance(stopped.canceled, Refusal) and stopped.canceled.code == -2011
    assert mem.log == []
    allowed = await orders.cancel_replace(ACCOUNT, "BTCUSDT", 404, None, new, NOW,
                                          allow_failure=True)
    assert isinstance(allowed.canceled, Refusal) and isinstance(allowed.placed, Placed)


async def test_cancel_replace_reports_a_refused_new_order_after_the_cancel() -> None:
    _, orders = world(USDT="1000")
    old = await orders.place(admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "0.01"),
                                            REF, NOW)))
    poor = admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "1", client_order_id="c2"),
                          REF, NOW))
    done = await orders.cancel_replace(ACCOUNT, "BTCUSDT", old.order_id, None, poor, NOW,
                                       allow_failure=False)
    assert isinstance(done.canceled, OrderRow)
    assert isinstance(done.placed, Refusal) and done.placed.outcome == "insufficient"
    refusal = admit(BTCUSDT, limit(Side.BUY, "60000.001", "0.01"), REF, NOW)  # off the tick
    assert isinstance(refusal, Refusal)
    other = await orders.place(admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "0.01"),
                                              REF, NOW)))
    done = await orders.cancel_replace(ACCOUNT, "BTCUSDT", other.order_id, None, refusal,
                                       NOW, allow_failure=False)
    assert isinstance(done.canceled, OrderRow) and done.placed == refusal


async def test_cancel_replace_whose_cancel_is_unknown_raises_rather_than_guess() -> None:
    mem, orders = world(USDT="1000")
    old = await orders.place(admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "0.01"),
                                            REF, NOW)))
    mem.settles = False
    new = admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "0.01", client_order_id="c2"),
                         REF, NOW))
    with pytest.raises(OrderRefused) as exc:
        await orders.cancel_replace(ACCOUNT, "BTCUSDT", old.order_id, None, new, NOW,
                                    allow_failure=True)
    assert exc.value.refusal.code == -1007


async def test_amend_reduces_and_renames_the_order() -> None:
    mem, orders = world(USDT="1000")
    placed = await orders.place(admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "0.01"),
                                               REF, NOW)))
    done = await orders.amend(BTCUSDT, ACCOUNT, placed.order_id, None, D("0.005"), "c9",
                              NOW + 1)
    assert (done.before.qty, done.after.qty) == (1000, 500)
    assert done.after.client_order_id == "c9" and done.order_list is None
    assert mem.log[-1][1] == Amend(placed.order_id, ACCOUNT, 500, NOW + 1)


@pytest.mark.parametrize(
    ("qty", "error"),
    [("0.02", (-2038, "Order amend (quantity increase) is not supported.")),
     ("0.01", (-2038, "The requested action would change no state; rejecting")),
     ("0.000001", (-1013, "Filter failure: LOT_SIZE"))],
)
async def test_amend_refuses_what_is_no_reduction(qty: str, error: tuple[int, str]) -> None:
    mem, orders = world(USDT="1000")
    placed = await orders.place(admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "0.01"),
                                               REF, NOW)))
    with pytest.raises(OrderRefused) as exc:
        await orders.amend(BTCUSDT, ACCOUNT, placed.order_id, None, D(qty), "c1", NOW)
    assert (exc.value.refusal.code, exc.value.refusal.msg) == error
    assert len(mem.log) == 1


async def test_an_amend_the_engine_refused_gives_the_client_id_back() -> None:
    mem, orders = world(USDT="1000")
    placed = await orders.place(admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "0.01"),
                                               REF, NOW)))
    await orders.result(ACCOUNT, "BTCUSDT", placed)
    mem.refuse = Reason.HALTED
    with pytest.raises(OrderRefused) as exc:
        await orders.amend(BTCUSDT, ACCOUNT, placed.order_id, None, D("0.005"), "c9", NOW)
    assert exc.value.refusal.code == -2038
    row = await mem.order(ACCOUNT, "BTCUSDT", placed.order_id, None)
    assert row is not None and row.client_order_id == "c1"


async def test_an_oco_list_is_placed_as_one_command_and_canceled_as_one() -> None:
    mem, orders = world(BTC="0.05")
    lst = admit_oco(BTCUSDT, oco(), REF, NOW)
    assert isinstance(lst, ListRequest)
    placed = await orders.place_oco(lst)
    (_, cmd), = mem.log
    assert isinstance(cmd, NewOrderList) and cmd == lst.command(placed.list_id,
                                                                placed.order_ids)
    assert mem.locked[(ACCOUNT, "BTC")] == to_units("0.01")
    row, legs = await orders.oco_result(ACCOUNT, "BTCUSDT", placed)
    assert row.status == "EXECUTING" and len(legs) == 2
    after, legs = await orders.cancel_list(ACCOUNT, "BTCUSDT", None, "l1", NOW + 1)
    assert after.status == "ALL_DONE"
    assert all(leg.status == Status.CANCELED for leg in legs)
    assert mem.free[(ACCOUNT, "BTC")] == to_units("0.05")
    with pytest.raises(OrderRefused) as exc:
        await orders.cancel_list(ACCOUNT, "BTCUSDT", placed.list_id, None, NOW + 2)
    assert exc.value.refusal.code == -2011


# --------------------------------------------------------------------------- queries
async def placed_orders(orders: Orders, *cids: str) -> list[int]:
    ids = []
    for i, cid in enumerate(cids):
        req = admitted(admit(BTCUSDT, limit(Side.BUY, "60000", "0.01", client_order_id=cid),
                             REF, NOW + i))
        ids.append((await orders.place(req)).order_id)
    return ids


async def test_an_order_is_found_by_id_or_client_id_and_an_unknown_one_refused() -> None:
    mem, orders = world(USDT="1000")
    oid, = await placed_orders(orders, "c1")
    queries = OrderQueries(mem)
    assert (await queries.order(ACCOUNT, "BTCUSDT", oid, None)).client_order_id == "c1"
    assert (await queries.order(ACCOUNT, "BTCUSDT", None, "c1")).id == oid
    for key in ((oid + 100, None), (None, "nope")):
        with pytest.raises(OrderRefused) as exc:
            await queries.order(ACCOUNT, "BTCUSDT", *key)
        assert (exc.value.refusal.code, exc.value.refusal.msg) == (-2013,
                                                                   "Order does not exist.")
    with pytest.raises(OrderRefused):
        await queries.order(ACCOUNT + 1, "BTCUSDT", oid, None)  # another account's


async def test_open_orders_of_a_symbol_or_of_all_leave_out_finished_ones() -> None:
    mem, orders = world(USDT="2000")
    a, b = await placed_orders(orders, "a", "b")
    await orders.cancel(ACCOUNT, "BTCUSDT", a, None, NOW + 5)
    queries = OrderQueries(mem)
    assert [r.id for r in await queries.open_orders(ACCOUNT, "BTCUSDT")] == [b]
    assert [r.id for r in await queries.open_orders(ACCOUNT, None)] == [b]
    assert await queries.open_orders(ACCOUNT, "ETHUSDT") == []


async def test_all_orders_reads_a_window_from_an_id_or_the_latest() -> None:
    mem, orders = world(USDT="3000")
    a, b, c = await placed_orders(orders, "a", "b", "c")
    queries = OrderQueries(mem)

    async def ids(window: Window) -> list[int]:
        return [r.id for r in await queries.all_orders(ACCOUNT, "BTCUSDT", window)]

    assert await ids(Window(None, None, None, 500)) == [a, b, c]
    assert await ids(Window(None, None, None, 2)) == [b, c]
    assert await ids(Window(a, None, None, 2)) == [a, b]
    assert await ids(Window(None, NOW + 1, NOW + 1, 500)) == [b]


def trade(trade_id: int, buyer_order: int, seller_order: int, buyer: int,
          seller: int) -> TradeRow:
    return TradeRow("BTCUSDT", trade_id, REF, 100, to_units("60"), buyer_order,
                    seller_order, buyer, seller, True, 0, 0, NOW + trade_id)


async def test_my_trades_of_the_account_of_one_order_and_from_an_id() -> None:
    mem = MemoryOrders(trade_rows=[trade(1, 10, 20, ACCOUNT, 8),
                                   trade(2, 11, 21, ACCOUNT, 8), trade(3, 30, 31, 9, 9)])
    queries = OrderQueries(mem)
    every = Window(None, None, None, 500)
    got = await queries.my_trades(ACCOUNT, "BTCUSDT", None, every)
    assert [t.trade_id for t in got] == [1, 2]
    got = await queries.my_trades(ACCOUNT, "BTCUSDT", 11, every)
    assert [t.trade_id for t in got] == [2]
    got = await queries.my_trades(8, "BTCUSDT", None, Window(2, None, None, 500))
    assert [t.trade_id for t in got] == [2]
    assert await queries.my_trades(ACCOUNT, "ETHUSDT", None, every) == []


async def test_order_lists_come_with_their_legs_and_an_unknown_one_is_refused() -> None:
    mem, orders = world(BTC="0.05")
    lst = admit_oco(BTCUSDT, oco(), REF, NOW)
    assert isinstance(lst, ListRequest)
    placed = await orders.place_oco(lst)
    queries = OrderQueries(mem)
    row, legs = await queries.order_list(ACCOUNT, None, "l1")
    assert row.id == placed.list_id and [leg.id for leg in legs] == placed.order_ids
    (open_row, open_legs), = await queries.open_order_lists(ACCOUNT)
    assert open_row == row and list(open_legs) == list(legs)
    with pytest.raises(OrderRefused) as exc:
        await queries.order_list(ACCOUNT, placed.list_id + 100, None)
    assert (exc.value.refusal.code, exc.value.refusal.msg) == (-2013,
                                                               "Order list does not exist.")
    await orders.cancel_list(ACCOUNT, "BTCUSDT", placed.list_id, None, NOW + 1)
    assert await queries.open_order_lists(ACCOUNT) == []


async def test_balances_are_free_and_locked_by_asset() -> None:
    mem, orders = world(USDT="1000", BTC="1")
    await placed_orders(orders, "a")
    assert await OrderQueries(mem).balances(ACCOUNT) == [
        BalanceRow("BTC", to_units("1"), 0),
        BalanceRow("USDT", to_units("400"), to_units("600")),
    ]
    assert await OrderQueries(mem).balances(ACCOUNT + 1) == []


async def test_public_trades_are_the_latest_or_from_an_id_oldest_first() -> None:
    mem = MemoryOrders(trade_rows=[trade(i, 10 + i, 20 + i, ACCOUNT, 8) for i in (3, 1, 2)])
    queries = OrderQueries(mem)
    assert [t.trade_id for t in await queries.public_trades("BTCUSDT", None, 2)] == [2, 3]
    assert [t.trade_id for t in await queries.public_trades("BTCUSDT", 1, 2)] == [1, 2]
    assert await queries.public_trades("ETHUSDT", None, 500) == []
