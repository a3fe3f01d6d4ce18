"""MarketState: depth diff continuity, aggregate trades, klines, the 24h ticker, snapshots."""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tradeplane.domain.model import SCHEMA_VERSION, Event, EventBatch, Side, Trade
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import PairRules
from tradeplane.marketdata.state import (
    ALL_MARKET_STREAMS,
    ALL_MARKETS,
    INTERVALS,
    MINUTE_MS,
    STREAMS,
    MarketState,
    Updates,
    percent,
)

RULES = PairRules(
    base="BTC", quote="USDT", tick=to_units("0.01"), lot=to_units("0.00001"),
    min_qty=to_units("0.00001"), max_qty=to_units("9000"), min_notional=to_units("5"),
)
T0 = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000  # a UTC midnight


def batch(
    first: int, last: int | None = None, *, events: list[Event] | None = None,
    levels: list[tuple[int, int, int]] | None = None, ts: int = T0,
) -> EventBatch:
    return EventBatch(SCHEMA_VERSION, "BTCUSDT", first, first if last is None else last, ts,
                      events or [], levels or [])


def trade(tid: int, price: int, qty: int, *, taker: int = 100, side: Side = Side.BUY,
          ts: int = T0) -> Trade:
    return Trade(tid, price, qty, taker, 1, side, 200 + tid, 2, ts)


def payloads(updates: Updates, stream: str) -> list[dict[str, Any]]:
    return [json.loads(p) for s, p in updates.messages if s == stream]


# --------------------------------------------------------------------------- depth
def test_depth_diffs_chain_u_to_previous_u_and_end_at_the_last_applied_seq() -> None:
    s = MarketState(RULES)
    s.apply(batch(1, 3, levels=[(Side.BUY, 100, 5)]))
    first = json.loads(s.take_depth("100ms", T0) or b"")
    s.apply(batch(4, 4, levels=[(Side.SELL, 110, 2)]))
    s.apply(batch(5, 9, levels=[(Side.BUY, 100, 0)]))
    second = json.loads(s.take_depth("100ms", T0) or b"")
    assert (first["U"], first["u"]) == (1, 3)
    assert (second["U"], second["u"]) == (4, 9)
    assert second["b"] == [["1.00000000", "0.00000000"]]
    assert second["a"] == [["1.10000000", "0.00002000"]]
    assert second["e"] == "depthUpdate" and second["s"] == "BTCUSDT"


def test_depth_sequences_without_level_changes_are_covered_by_the_next_diff() -> None:
    s = MarketState(RULES)
    s.apply(batch(1, levels=[(Side.BUY, 100, 5)]))
    assert s.take_depth("100ms", T0) is not None
    s.apply(batch(2, 5))  # e.g. rejected cancels: no level changed
    assert s.take_depth("100ms", T0) is None
    s.apply(batch(6, levels=[(Side.BUY, 101, 1)]))
    diff = json.loads(s.take_depth("100ms", T0) or b"")
    assert (diff["U"], diff["u"]) == (2, 6)


def test_a_diff_that_could_not_be_published_is_carried_by_the_next_one() -> None:
    s = MarketState(RULES)
    s.apply(batch(1, 3, levels=[(Side.BUY, 100, 5), (Side.SELL, 110, 1)]))
    assert s.take_depth("100ms", T0) is not None
    s.untake_depth("100ms")  # its publish failed
    s.apply(batch(4, levels=[(Side.BUY, 100, 6)]))
    diff = json.loads(s.take_depth("100ms", T0) or b"")
    assert (diff["U"], diff["u"]) == (1, 4)  # no gap for clients
    assert diff["b"] == [["1.00000000", "0.00006000"]]  # the newer total wins
    assert diff["a"] == [["1.10000000", "0.00001000"]]
    s.untake_depth("100ms")
    s.untake_depth("100ms")  # only the last diff taken is put back, once
    again = json.loads(s.take_depth("100ms", T0) or b"")
    assert (again["U"], again["u"]) == (1, 4)


def test_depth_cadences_are_independent() -> None:
    s = MarketState(RULES)
    s.apply(batch(1, levels=[(Side.BUY, 100, 5)]))
    fast1 = json.loads(s.take_depth("100ms", T0) or b"")
    s.apply(batch(2, levels=[(Side.BUY, 100, 7)]))
    fast2 = json.loads(s.take_depth("100ms", T0) or b"")
    slow = json.loads(s.take_depth("1000ms", T0) or b"")
    assert [(d["U"], d["u"]) for d in (fast1, fast2, slow)] == [(1, 1), (2, 2), (1, 2)]
    assert slow["b"] == [["1.00000000", "0.00007000"]]  # the level's latest total


def test_partial_depth_sends_the_best_5_10_and_20_levels_with_the_books_seq() -> None:
    s = MarketState(RULES)
    s.apply(batch(1, 7, levels=[(Side.BUY, 100 - i, i + 1) for i in range(25)]
                  + [(Side.SELL, 101 + i, 1) for i in range(3)]))
    docs = {name: json.loads(p) for name, p in s.take_partial_depth("1000ms")}
    assert set(docs) == {"depth5", "depth10", "depth20"}
    assert [len(docs[f"depth{n}"]["bids"]) for n in (5, 10, 20)] == [5, 10, 20]
    d5 = docs["depth5"]
    assert d5["lastUpdateId"] == 7 and len(d5["asks"]) == 3
    assert d5["bids"][0] == ["1.00000000", "0.00001000"]  # best first
    assert d5["asks"][0] == ["1.01000000", "0.00001000"]
    assert set(d5) == {"lastUpdateId", "bids", "asks"}


def test_fast_partial_depth_only_when_the_book_moved_and_again_after_a_failed_publish(
) -> None:
    s = MarketState(RULES)
    s.apply(batch(1, levels=[(Side.BUY, 100, 5)]))
    assert [n for n, _ in s.take_partial_depth("100ms")] == [
        "depth5@100ms", "depth10@100ms", "depth20@100ms"]
    assert s.take_partial_depth("100ms") == []
    assert len(s.take_partial_depth("1000ms")) == 3  # the slow cadence: every time
    assert len(s.take_partial_depth("1000ms")) == 3
    s.untake_partial_depth("100ms")
    assert len(s.take_partial_depth("100ms")) == 3
    s.apply(batch(2, levels=[(Side.BUY, 100, 6)]))
    [(_, p), *_] = s.take_partial_depth("100ms")
    assert json.loads(p)["bids"] == [["1.00000000", "0.00006000"]]


def test_a_batch_at_or_below_the_applied_seq_is_ignored() -> None:
    s = MarketState(RULES)
    assert s.apply(batch(1, 4, levels=[(Side.BUY, 100, 5)], events=[trade(1, 100, 5)]))
    s.take_updates(T0)
    assert not s.apply(batch(1, 4, levels=[(Side.BUY, 100, 9)], events=[trade(1, 100, 5)]))
    assert s.book_levels() == ([(100, 5)], [])
    assert not s.take_updates(T0).trades


_level_changes = st.lists(
    st.tuples(st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 8), st.integers(0, 3)),
    max_size=4,
)


@given(
    steps=st.lists(st.tuples(_level_changes, st.integers(1, 3), st.booleans()), min_size=1,
                   max_size=25),
    snapshot_at=st.integers(0, 25),
)
@settings(max_examples=200, deadline=None)
def test_a_client_following_binance_rules_rebuilds_the_book_exactly(
    steps: list[tuple[list[tuple[Side, int, int]], int, bool]], snapshot_at: int,
) -> None:
    """Snapshot at any point + diffs filtered by Binance's rule == the server's book."""
    s = MarketState(RULES)
    seq = 0
    diffs: list[dict[str, Any]] = []
    snap: tuple[int, dict[int, int], dict[int, int]] | None = None
    for i, (levels, n_cmds, flush) in enumerate(steps):
        if i == snapshot_at:
            bids, asks = s.book_levels()
            snap = (s.seq, dict(bids), dict(asks))
        s.apply(batch(seq + 1, seq + n_cmds, levels=[(int(a), b, c) for a, b, c in levels]))
        seq += n_cmds
        if flush and (raw := s.take_depth("100ms", T0)):
            diffs.append(json.loads(raw))
    if (raw := s.take_depth("100ms", T0)) is not None:
        diffs.append(json.loads(raw))
    if snap is None:
        bids, asks = s.book_levels()
        snap = (s.seq, dict(bids), dict(asks))
    for prev, nxt in itertools.pairwise(diffs):
        assert nxt["U"] == prev["u"] + 1
    last_update_id, cbids, casks = snap
    started = False
    for d in diffs:
        if d["u"] <= last_update_id:
            continue
        if not started:
            assert d["U"] <= last_update_id + 1 <= d["u"]
            started = True
        for side, book in (("b", cbids), ("a", casks)):
            for p, q in d[side]:
                price = int(p.replace(".", "")) // RULES.tick
                lots = int(q.replace(".", "")) // RULES.lot
                if lots:
                    book[price] = lots
                else:
                    book.pop(price, None)
    bids, asks = s.book_levels()
    assert (cbids, casks) == (dict(bids), dict(asks))


# --------------------------------------------------------------------------- trades
def test_fills_of_one_taker_at_one_price_make_one_aggregate_trade() -> None:
    s = MarketState(RULES)
    s.apply(batch(1, events=[
        trade(1, 100, 2, taker=7), trade(2, 100, 3, taker=7),  # one aggregate
        trade(3, 101, 1, taker=7),  # same taker, next price: a new aggregate
        trade(4, 101, 4, taker=8, side=Side.SELL),  # next taker
    ]))
    u = s.take_updates(T0)
    aggs = [json.loads(a) for a in u.agg_trades]
    assert [(a["a"], a["f"], a["l"], a["q"], a["m"]) for a in aggs] == [
        (1, 1, 2, "0.00005000", False), (2, 3, 3, "0.00001000", False),
        (3, 4, 4, "0.00004000", True),
    ]
    assert [a["a"] for a in payloads(u, "aggTrade")] == [1, 2, 3]
    assert len(u.trades) == 4 and len(payloads(u, "trade")) == 4


def test_aggregate_ids_continue_across_batches() -> None:
    s = MarketState(RULES)
    s.apply(batch(1, events=[trade(1, 100, 1, taker=7)]))
    s.apply(batch(2, events=[trade(2, 100, 1, taker=7)]))  # a new command: a new aggregate
    assert [json.loads(a)["a"] for a in s.take_updates(T0).agg_trades] == [1, 2]


def test_trade_documents_carry_binance_fields_and_exact_amounts() -> None:
    s = MarketState(RULES)
    s.apply(batch(1, events=[trade(9, 2_500_012, 150, side=Side.SELL, ts=T0 + 5)]))
    u = s.take_updates(T0)
    doc = json.loads(u.trades[0])
    assert doc == {"id": 9, "price": "25000.12000000", "qty": "0.00150000",
                   "quoteQty": "37.50018000", "time": T0 + 5, "isBuyerMaker": True,
                   "isBestMatch": True}
    ws = payloads(u, "trade")[0]
    assert (ws["e"], ws["s"], ws["t"], ws["p"], ws["q"], ws["T"], ws["m"]) == (
        "trade", "BTCUSDT", 9, "25000.12000000", "0.00150000", T0 + 5, True)


# --------------------------------------------------------------------------- klines
def test_klines_open_at_the_interval_start_in_utc_and_close_when_the_next_opens() -> None:
    s = MarketState(RULES)
    s.apply(batch(1, events=[trade(1, 100, 2, ts=T0 + 61_000)]))
    s.apply(batch(2, events=[trade(2, 105, 1, ts=T0 + 62_000, side=Side.SELL)]))
    s.apply(batch(3, events=[trade(3, 99, 1, ts=T0 + 119_999)]))
    s.apply(batch(4, events=[trade(4, 98, 1, ts=T0 + 120_000)]))
    u = s.take_updates(T0 + 120_000)
    ones = [k for k in u.klines if k.interval == "1m"]
    assert [(k.open_time, k.closed) for k in ones] == [(T0 + 60_000, True), (T0 + 120_000, False)]
    k = ones[0]
    assert (k.open, k.high, k.low, k.close, k.volume, k.trades) == (100, 105, 99, 99, 4, 3)
    assert (k.taker_buy_volume, k.first_id, k.last_id) == (3, 1, 3)
    assert k.quote_volume == RULES.notional(100, 2) + RULES.notional(105, 1) + RULES.notional(99, 1)
    hour = s.klines["1h"]
    assert (hour.open_time, hour.trades, hour.close_time) == (T0, 4, T0 + 3_600_000 - 1)
    sent = payloads(u, "kline_1m")
    assert [(p["k"]["t"], p["k"]["x"]) for p in sent] == [(T0 + 60_000, True),
                                                          (T0 + 120_000, False)]
    assert sent[0]["k"]["T"] == T0 + 119_999 and sent[0]["k"]["i"] == "1m"


def test_a_kline_is_closed_by_time_passing_without_trades() -> None:
    s = MarketState(RULES)
    s.apply(batch(1, events=[trade(1, 100, 2, ts=T0 + 1)]))
    s.take_updates(T0 + 1)
    assert not payloads(s.tick(T0 + 59_999), "kline_1m")
    closed = payloads(s.tick(T0 + 60_000), "kline_1m")
    assert [(p["k"]["t"], p["k"]["x"]) for p in closed] == [(T0, True)]
    assert not payloads(s.tick(T0 + 61_000), "kline_1m")  # sent once


def test_a_late_trade_joins_the_current_kline_instead_of_reopening_the_past() -> None:
    s = MarketState(RULES)
    s.apply(batch(1, events=[trade(1, 100, 1, ts=T0 + 60_000)]))
    s.apply(batch(2, events=[trade(2, 101, 1, ts=T0 + 59_000)]))  # clock skew upstream
    assert s.klines["1m"].open_time == T0 + 60_000
    assert s.klines["1m"].trades == 2


# --------------------------------------------------------------------------- ticker
def test_ticker_reports_change_percent_weighted_average_and_ids_over_24h() -> None:
    s = MarketState(RULES)
    s.apply(batch(1, events=[trade(1, 10_000, 100_000, ts=T0)]))  # 1 BTC at 100.00
    s.apply(batch(2, events=[trade(2, 12_000, 100_000, ts=T0 + 3_600_000)]))  # 1 at 120.00
    s.apply(batch(3, events=[trade(3, 11_000, 200_000, ts=T0 + 7_200_000)]))  # 2 at 110.00
    doc = s.ticker_doc(T0 + 7_200_000)
    assert doc["openPrice"] == "100.00000000" and doc["lastPrice"] == "110.00000000"
    assert doc["priceChange"] == "10.00000000" and doc["priceChangePercent"] == "10.000"
    assert doc["highPrice"] == "120.00000000" and doc["lowPrice"] == "100.00000000"
    assert doc["volume"] == "4.00000000" and doc["quoteVolume"] == "440.00000000"
    assert doc["weightedAvgPrice"] == "110.00000000"
    assert (doc["firstId"], doc["lastId"], doc["count"]) == (1, 3, 3)
    assert doc["lastQty"] == "2.00000000" and doc["prevClosePrice"] == "0.00000000"
    assert doc["closeTime"] - doc["openTime"] == 86_400_000


def test_ticker_window_drops_trades_older_than_24h() -> None:
    s = MarketState(RULES)
    s.apply(batch(1, events=[trade(1, 10_000, 100_000, ts=T0)]))
    s.apply(batch(2, events=[trade(2, 9_000, 100_000, ts=T0 + 3_600_000)]))
    doc = s.ticker_doc(T0 + 86_400_000 + 60_000)  # the first minute left the window
    assert (doc["firstId"], doc["lastId"], doc["count"]) == (2, 2, 1)
    assert doc["openPrice"] == doc["highPrice"] == doc["lowPrice"] == "90.00000000"
    assert doc["prevClosePrice"] == "100.00000000"
    assert doc["volume"] == "1.00000000" and doc["priceChangePercent"] == "0.000"


def test_empty_market_ticker_is_a_valid_zero_document() -> None:
    doc = MarketState(RULES).ticker_doc(T0)
    assert doc["lastPrice"] == doc["openPrice"] == doc["volume"] == "0.00000000"
    assert doc["priceChangePercent"] == "0.000"
    assert (doc["firstId"], doc["lastId"], doc["count"]) == (-1, -1, 0)
    assert doc["weightedAvgPrice"] == "0.00000000"


def test_percent_truncates_toward_zero_with_three_decimals() -> None:
    assert percent(-1, 3) == "-33.333"
    assert percent(2, 3) == "66.666"
    assert percent(0, 5) == "0.000"
    assert percent(-1, 10**9) == "0.000"  # no "-0.000"
    assert percent(5, 0) == "0.000"


def test_ticker_push_happens_once_per_change_on_tick() -> None:
    s = MarketState(RULES)
    s.apply(batch(1, events=[trade(1, 100, 1)]))
    first = s.tick(T0 + 1000)
    assert payloads(first, "ticker")[0]["c"] == "1.00000000"
    assert payloads(first, "miniTicker")[0]["e"] == "24hrMiniTicker"
    assert not payloads(s.tick(T0 + 2000), "ticker")


def test_book_ticker_is_sent_only_when_the_best_levels_change() -> None:
    s = MarketState(RULES)
    s.apply(batch(1, levels=[(Side.BUY, 100, 5), (Side.SELL, 102, 1)]))
    s.apply(batch(2, levels=[(Side.BUY, 90, 5)]))  # below the best bid
    u = s.take_updates(T0)
    assert payloads(u, "bookTicker") == [{"u": 1, "s": "BTCUSDT", "b": "1.00000000",
                                          "B": "0.00005000", "a": "1.02000000",
                                          "A": "0.00001000"}]


def test_reference_price_is_the_last_trade_else_the_mid() -> None:
    s = MarketState(RULES)
    assert s.reference_price() is None
    s.apply(batch(1, levels=[(Side.BUY, 100, 5), (Side.SELL, 103, 1)]))
    assert s.reference_price() == 101
    s.apply(batch(2, events=[trade(1, 103, 1)]))
    assert s.reference_price() == 103
    assert s.top().last_price == 103


def test_avg_price_is_volume_weighted_over_five_minutes() -> None:
    s = MarketState(RULES)
    s.apply(batch(1, events=[trade(1, 10_000, 100_000, ts=T0)]))
    s.apply(batch(2, events=[trade(2, 20_000, 300_000, ts=T0 + 4 * MINUTE_MS)]))
    assert s.avg_price_doc(T0 + 4 * MINUTE_MS)["price"] == "175.00000000"
    assert s.avg_price_doc(T0 + 6 * MINUTE_MS)["price"] == "200.00000000"
    assert s.avg_price_doc(T0 + 60 * MINUTE_MS)["price"] == "200.00000000"  # last price


# --------------------------------------------------------------------------- snapshots
def test_restored_state_continues_exactly_like_the_original() -> None:
    a = MarketState(RULES)
    a.apply(batch(1, 3, levels=[(Side.BUY, 100, 5), (Side.SELL, 104, 2)],
                  events=[trade(1, 100, 1, ts=T0 + 10)]))
    a.take_updates(T0 + 10)
    a.take_depth("100ms", T0 + 10)  # a restart loses only diffs not sent yet
    bids, asks = a.book_levels()
    b = MarketState.restore(RULES, a.snapshot(), bids, asks)
    nxt = batch(4, 6, levels=[(Side.BUY, 100, 0)], events=[trade(2, 104, 1, ts=T0 + 70_000)])
    a.apply(nxt)
    b.apply(nxt)
    ua, ub = a.take_updates(T0 + 70_000), b.take_updates(T0 + 70_000)
    assert ua.messages == ub.messages and ua.agg_trades == ub.agg_trades
    assert ua.ticker == ub.ticker
    assert a.take_depth("100ms", T0) == b.take_depth("100ms", T0) is not None
    assert a.book_levels() == b.book_levels() and a.snapshot() == b.snapshot()


def test_gateway_serves_exactly_the_intervals_and_streams_marketdata_builds() -> None:
    from tradeplane.gateway import streams
    from tradeplane.gateway.market import KLINE_INTERVALS

    assert KLINE_INTERVALS == INTERVALS
    assert streams.STREAM_KINDS == STREAMS
    assert set(ALL_MARKET_STREAMS.values()) == streams.ALL_MARKET_STREAMS
    assert streams.ALL_MARKETS == ALL_MARKETS
