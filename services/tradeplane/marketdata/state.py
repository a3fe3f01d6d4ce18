"""Market data of one symbol, folded from the engine's event batches. Pure: no I/O, no clock.

``MarketState.apply(batch)`` updates the L2 book, the trade and aggregate-trade lists, the
24h rolling window and the klines, and queues the Binance stream payloads the batch caused;
``take_updates(now_ms)`` hands them over, ``take_depth(speed, now_ms)`` emits one cadence's
``depthUpdate`` diff and ``tick(now_ms)`` does what only the passing of time does (closing
klines, expiring the 24h window, the ``@ticker`` push).

Depth continuity: each cadence remembers the first command sequence it has not emitted
yet, so every diff has ``U`` = previous ``u`` + 1 and ``u`` = the last applied sequence,
and the REST snapshot's ``lastUpdateId`` is the last applied sequence. A diff carries each
changed level's new total (not a delta), so a client that drops diffs with
``u <= lastUpdateId`` and starts at the one with ``U <= lastUpdateId + 1 <= u`` is exact.

Units: prices are ticks, quantities lots and notionals quote units everywhere inside;
strings are made only for payloads, with ``fmt_units``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Final, Literal

import msgspec
from sortedcontainers import SortedDict

from tradeplane.domain import codec
from tradeplane.domain.errors import InvalidInput
from tradeplane.domain.model import EventBatch, Side, Trade
from tradeplane.domain.money import UNITS_PER_COIN, fmt_units
from tradeplane.domain.pairs import PairRules

SNAPSHOT_VERSION: Final = 1

#: The kline intervals we build, with their length in milliseconds (open times are
#: aligned to multiples of the length since the Unix epoch, i.e. in UTC).
INTERVALS: Final[dict[str, int]] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}

MINUTE_MS: Final = 60_000
DAY_MS: Final = 86_400_000
WINDOW_MINUTES: Final = 1440  # the 24h rolling window, in one-minute buckets
AVG_PRICE_MINUTES: Final = 5  # /api/v3/avgPrice

#: Stream names (after ``<symbol>@``) this module produces.
TRADE: Final = "trade"
AGG_TRADE: Final = "aggTrade"
TICKER: Final = "ticker"
MINI_TICKER: Final = "miniTicker"
BOOK_TICKER: Final = "bookTicker"
DEPTH_SLOW: Final = "depth"  # 1000ms
DEPTH_FAST: Final = "depth@100ms"
KLINE_STREAMS: Final = {i: f"kline_{i}" for i in INTERVALS}
#: Partial book depth (``<symbol>@depth5``, ``@depth10@100ms``...): the top levels.
PARTIAL_LEVELS: Final = (5, 10, 20)
PARTIAL_DEPTH: Final[dict[str, dict[int, str]]] = {
    "1000ms": {n: f"depth{n}" for n in PARTIAL_LEVELS},
    "100ms": {n: f"depth{n}@100ms" for n in PARTIAL_LEVELS},
}
STREAMS: Final = frozenset(
    {TRADE, AGG_TRADE, TICKER, MINI_TICKER, BOOK_TICKER, DEPTH_SLOW, DEPTH_FAST,
     *KLINE_STREAMS.values(), *(n for by in PARTIAL_DEPTH.values() for n in by.values())}
)
#: The all-market streams of the ``@ticker`` and ``@miniTicker`` payloads that changed,
#: each as one array, and the symbol their subjects name instead of a pair's (pairs'
#: symbols are upper case).
ALL_TICKERS: Final = "!ticker@arr"
ALL_MINI_TICKERS: Final = "!miniTicker@arr"
ALL_MARKET_STREAMS: Final = {TICKER: ALL_TICKERS, MINI_TICKER: ALL_MINI_TICKERS}
ALL_MARKETS: Final = "all"

ZERO: Final = "0.00000000"

Speed = Literal["100ms", "1000ms"]
Level = tuple[int, int]  # (price ticks, qty lots)

_enc = msgspec.json.Encoder()


class StateError(InvalidInput, ValueError):
    """A state snapshot does not belong to this market or this version."""


# --------------------------------------------------------------------------- records
class Kline(msgspec.Struct, array_like=True, gc=False):
    """One candle: prices in ticks, volumes in lots, quote volumes in quote units."""

    interval: str
    open_time: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    trades: int
    taker_buy_volume: int
    taker_buy_quote_volume: int
    first_id: int
    last_id: int
    closed: bool = False  # its final (``"x": true``) payload was sent

    @property
    def close_time(self) -> int:
        return self.open_time + INTERVALS[self.interval] - 1


class Bucket(msgspec.Struct, array_like=True, gc=False):
    """The trades of one UTC minute, for the rolling 24h statistics."""

    minute: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    count: int
    first_id: int
    last_id: int


class LastTrade(msgspec.Struct, array_like=True, gc=False):
    trade_id: int
    price: int
    qty: int
    ts: int


class StateSnapshot(msgspec.Struct, array_like=True, gc=False):
    """Everything but the book (stored beside it, with the same sequence) to resume from."""

    v: int
    symbol: str
    seq: int
    ts: int
    clock: int
    next_agg_id: int
    last_trade: LastTrade | None
    klines: list[Kline]
    buckets: list[Bucket]
    prev_close: int


@dataclass(frozen=True, slots=True)
class Top:
    """Last trade and best levels, in ticks and lots (0 = none)."""

    last_price: int
    last_qty: int
    bid: int
    bid_qty: int
    ask: int
    ask_qty: int


@dataclass(slots=True)
class Updates:
    """What changed since the last hand-over, ready for the cache and the stream bus."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)  # (stream, payload)
    trades: list[bytes] = field(default_factory=list)  # /api/v3/trades docs, oldest first
    agg_trades: list[bytes] = field(default_factory=list)  # /api/v3/aggTrades docs
    klines: list[Kline] = field(default_factory=list)  # changed candles, oldest first
    book_changed: bool = False
    ticker: bytes | None = None  # /api/v3/ticker/24hr doc
    avg_price: bytes | None = None  # /api/v3/avgPrice doc

    def __bool__(self) -> bool:
        return bool(
            self.messages or self.trades or self.klines or self.book_changed
            or self.ticker is not None
        )


# --------------------------------------------------------------------------- book
def _neg(price: int) -> int:
    return -price


class L2Book:
    """Total quantity per price level: bids best (highest) first, asks best (lowest) first."""

    def __init__(self) -> None:
        self.bids: Any = SortedDict(_neg)
        self.asks: Any = SortedDict()

    def set(self, side: int, price: int, qty: int) -> None:
        levels = self.bids if side == Side.BUY else self.asks
        if qty:
            levels[price] = qty
        else:
            levels.pop(price, None)

    def best_bid(self) -> Level:
        """``(price, qty)`` of the best bid; ``(0, 0)`` when there is none."""
        if not self.bids:
            return 0, 0
        price, qty = self.bids.peekitem(0)
        return price, qty

    def best_ask(self) -> Level:
        """``(price, qty)`` of the best ask; ``(0, 0)`` when there is none."""
        if not self.asks:
            return 0, 0
        price, qty = self.asks.peekitem(0)
        return price, qty

    def levels(self) -> tuple[list[Level], list[Level]]:
        return list(self.bids.items()), list(self.asks.items())


class _DiffAccumulator:
    """The levels one depth cadence has not emitted yet, and its first unemitted sequence."""

    __slots__ = ("_taken", "asks", "bids", "first")

    def __init__(self, first: int) -> None:
        self.first = first
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self._taken: tuple[int, dict[int, int], dict[int, int]] | None = None

    def note(self, side: int, price: int, qty: int) -> None:
        (self.bids if side == Side.BUY else self.asks)[price] = qty

    def take(self, last_seq: int) -> tuple[int, dict[int, int], dict[int, int]] | None:
        """``(U, bids, asks)`` covering ``U..last_seq``; None when no level changed.

        Sequences that changed no level stay pending, so the next diff's ``U`` still
        follows the previous ``u``.
        """
        if not (self.bids or self.asks):
            return None
        out = (self.first, self.bids, self.asks)
        self.first = last_seq + 1
        self.bids, self.asks = {}, {}
        self._taken = out
        return out

    def untake(self) -> None:
        """Put the last diff taken back (it could not be published): the next one covers
        its sequences and levels too, levels noted since winning."""
        if self._taken is None:
            return
        first, bids, asks = self._taken
        self._taken = None
        self.first = first
        self.bids = {**bids, **self.bids}
        self.asks = {**asks, **self.asks}


# --------------------------------------------------------------------------- 24h window
class RollingWindow:
    """24h statistics over one-minute buckets: O(1) per trade, O(1440) once a minute."""

    def __init__(self, buckets: Iterable[Bucket] = (), prev_close: int = 0) -> None:
        self.buckets: deque[Bucket] = deque(buckets)
        self.prev_close = prev_close  # last price before the window (0 = none)
        self.volume = sum(b.volume for b in self.buckets)
        self.quote_volume = sum(b.quote_volume for b in self.buckets)
        self.count = sum(b.count for b in self.buckets)
        self.high = 0
        self.low = 0
        self._rescan()

    def _rescan(self) -> None:
        self.high = max((b.high for b in self.buckets), default=0)
        self.low = min((b.low for b in self.buckets), default=0)

    def add(self, minute: int, trade_id: int, price: int, qty: int, notional: int) -> None:
        buckets = self.buckets
        b = buckets[-1] if buckets else None
        if b is None or minute > b.minute:
            buckets.append(
                Bucket(minute, price, price, price, price, qty, notional, 1, trade_id, trade_id)
            )
        else:
            b.high = max(b.high, price)
            b.low = min(b.low, price)
            b.close = price
            b.volume += qty
            b.quote_volume += notional
            b.count += 1
            b.last_id = trade_id
        self.volume += qty
        self.quote_volume += notional
        self.count += 1
        if price > self.high:
            self.high = price
        if not self.low or price < self.low:
            self.low = price

    def expire(self, now_minute: int) -> bool:
        """Drop the buckets older than 24h before ``now_minute``; True when any was."""
        horizon = now_minute - WINDOW_MINUTES
        buckets = self.buckets
        dropped = False
        while buckets and buckets[0].minute <= horizon:
            b = buckets.popleft()
            self.volume -= b.volume
            self.quote_volume -= b.quote_volume
            self.count -= b.count
            self.prev_close = b.close
            dropped = True
        if dropped:
            self._rescan()
        return dropped

    def average(self, now_minute: int, minutes: int) -> tuple[int, int]:
        """``(quote units, lots)`` traded in the last ``minutes`` minutes."""
        quote = lots = 0
        for b in reversed(self.buckets):
            if b.minute <= now_minute - minutes:
                break
            quote += b.quote_volume
            lots += b.volume
        return quote, lots


# --------------------------------------------------------------------------- formatting
def percent(change: int, base: int) -> str:
    """``change / base`` in percent with 3 decimals, truncated toward zero ("-1.234")."""
    if base <= 0:
        return "0.000"
    milli = abs(change) * 100_000 // base
    sign = "-" if change < 0 and milli else ""
    return f"{sign}{milli // 1000}.{milli % 1000:03d}"


def _sorted_levels(levels: dict[int, int], reverse: bool) -> list[tuple[int, int]]:
    return sorted(levels.items(), reverse=reverse)


# --------------------------------------------------------------------------- state
class MarketState:
    """The market data of one symbol; one writer (the marketdata service)."""

    def __init__(self, rules: PairRules, *, seq: int = 0) -> None:
        self.rules = rules
        self.symbol = rules.symbol
        self.seq = seq  # last applied command sequence (= the book's lastUpdateId)
        self.ts = 0  # engine time of the last applied batch
        self.clock = 0  # latest trade time seen: time never runs backwards for candles
        self.book = L2Book()
        self.window = RollingWindow()
        self.klines: dict[str, Kline] = {}
        self.last_trade: LastTrade | None = None
        self.next_agg_id = 1
        self._fast = _DiffAccumulator(seq + 1)
        self._slow = _DiffAccumulator(seq + 1)
        self._top = (0, 0, 0, 0)
        self._tick = rules.tick
        self._lot = rules.lot
        self._npl = rules.notional_per_tick_lot
        self._pending = Updates()
        self._changed_klines: dict[tuple[str, int], Kline] = {}
        self._ticker_dirty = True  # the @ticker push is due
        self._doc_dirty = True  # the REST ticker document is due
        # the book (its seq) last sent as partial depth, per cadence; -1: never
        self._partial_seq: dict[str, int] = {"100ms": -1, "1000ms": -1}

    # ------------------------------------------------------------------ formatting
    def price(self, ticks: int) -> str:
        return fmt_units(ticks * self._tick)

    def qty(self, lots: int) -> str:
        return fmt_units(lots * self._lot)

    # ------------------------------------------------------------------ applying
    def apply(self, batch: EventBatch) -> bool:
        """Fold one engine batch in. A batch already applied is ignored (returns False).

        A gap before ``batch.first_seq`` is trusted: the engine numbers commands, not
        batches, and commands without effect on market data leave no trace here.
        """
        if batch.last_seq <= self.seq:
            return False
        if batch.levels:
            book_set = self.book.set
            fast = self._fast.note
            slow = self._slow.note
            for side, price, qty in batch.levels:
                book_set(side, price, qty)
                fast(side, price, qty)
                slow(side, price, qty)
            self._pending.book_changed = True
        self.ts = batch.ts
        agg: list[Trade] = []
        for ev in batch.events:
            if type(ev) is not Trade:
                continue
            if agg and (ev.taker_order != agg[0].taker_order or ev.price != agg[0].price):
                self._emit_agg(agg)
                agg = []
            agg.append(ev)
            self._on_trade(ev)
        if agg:
            self._emit_agg(agg)
        self.seq = batch.last_seq
        self._check_top()
        return True

    def _on_trade(self, t: Trade) -> None:
        price, qty = t.price, t.qty
        notional = price * qty * self._npl
        p, q = self.price(price), self.qty(qty)
        buyer_maker = t.taker_side == Side.SELL
        out = self._pending
        out.trades.append(_enc.encode({
            "id": t.trade_id, "price": p, "qty": q, "quoteQty": fmt_units(notional),
            "time": t.ts, "isBuyerMaker": buyer_maker, "isBestMatch": True,
        }))
        out.messages.append((TRADE, _enc.encode({
            "e": "trade", "E": self.ts, "s": self.symbol, "t": t.trade_id, "p": p, "q": q,
            "T": t.ts, "m": buyer_maker, "M": True,
        })))
        when = t.ts if t.ts > self.clock else self.clock
        self.clock = when
        self.window.add(when // MINUTE_MS, t.trade_id, price, qty, notional)
        taker_buy = not buyer_maker
        for interval, length in INTERVALS.items():
            self._kline_trade(interval, length, when, t, notional, taker_buy)
        self.last_trade = LastTrade(t.trade_id, price, qty, t.ts)
        self._ticker_dirty = self._doc_dirty = True

    def _kline_trade(
        self, interval: str, length: int, when: int, t: Trade, notional: int, taker_buy: bool
    ) -> None:
        k = self.klines.get(interval)
        price = t.price
        if k is None or when >= k.open_time + length:
            if k is not None and not k.closed:
                k.closed = True
                self._changed_klines[(interval, k.open_time)] = k
            k = Kline(interval, when - when % length, price, price, price, price,
                      0, 0, 0, 0, 0, t.trade_id, t.trade_id)
            self.klines[interval] = k
        elif price > k.high:
            k.high = price
        elif price < k.low:
            k.low = price
        k.close = price
        k.volume += t.qty
        k.quote_volume += notional
        k.trades += 1
        k.last_id = t.trade_id
        if taker_buy:
            k.taker_buy_volume += t.qty
            k.taker_buy_quote_volume += notional
        self._changed_klines[(interval, k.open_time)] = k

    def _emit_agg(self, fills: list[Trade]) -> None:
        first = fills[0]
        qty = sum(f.qty for f in fills)
        aid = self.next_agg_id
        self.next_agg_id = aid + 1
        doc = {
            "a": aid, "p": self.price(first.price), "q": self.qty(qty),
            "f": first.trade_id, "l": fills[-1].trade_id, "T": first.ts,
            "m": first.taker_side == Side.SELL, "M": True,
        }
        self._pending.agg_trades.append(_enc.encode(doc))
        self._pending.messages.append(
            (AGG_TRADE, _enc.encode({"e": "aggTrade", "E": self.ts, "s": self.symbol, **doc}))
        )

    def _check_top(self) -> None:
        bid, bid_qty = self.book.best_bid()
        ask, ask_qty = self.book.best_ask()
        top = (bid, bid_qty, ask, ask_qty)
        if top == self._top:
            return
        self._top = top
        self._ticker_dirty = self._doc_dirty = True
        self._pending.messages.append((BOOK_TICKER, _enc.encode({
            "u": self.seq, "s": self.symbol, "b": self.price(bid), "B": self.qty(bid_qty),
            "a": self.price(ask), "A": self.qty(ask_qty),
        })))

    # ------------------------------------------------------------------ hand-over
    def take_updates(self, now_ms: int) -> Updates:
        """Everything queued since the last call: kline payloads are made here, one per
        changed candle (not per trade); the REST ticker documents when they changed."""
        out, self._pending = self._pending, Updates()
        if self._changed_klines:
            for k in self._changed_klines.values():
                out.messages.append((KLINE_STREAMS[k.interval], self._kline_payload(k, self.ts)))
            out.klines = list(self._changed_klines.values())
            self._changed_klines = {}
        if self.window.expire(now_ms // MINUTE_MS):
            self._ticker_dirty = self._doc_dirty = True
        if self._doc_dirty:
            out.ticker = _enc.encode(self.ticker_doc(now_ms))
            out.avg_price = _enc.encode(self.avg_price_doc(now_ms))
            self._doc_dirty = False
        return out

    def refresh_documents(self) -> None:
        """Make the next hand-over carry the REST documents even if nothing changed."""
        self._doc_dirty = True

    def take_depth(self, speed: Speed, now_ms: int) -> bytes | None:
        """The ``depthUpdate`` payload of one cadence, or None when no level changed."""
        acc = self._fast if speed == "100ms" else self._slow
        taken = acc.take(self.seq)
        if taken is None:
            return None
        first, bids, asks = taken
        price, qty = self.price, self.qty
        return _enc.encode({
            "e": "depthUpdate", "E": now_ms, "s": self.symbol, "U": first, "u": self.seq,
            "b": [[price(p), qty(q)] for p, q in _sorted_levels(bids, True)],
            "a": [[price(p), qty(q)] for p, q in _sorted_levels(asks, False)],
        })

    def untake_depth(self, speed: Speed) -> None:
        """The payload :meth:`take_depth` last gave for ``speed`` was not published: keep
        its changes for the next one, so clients see no gap in ``U``/``u``."""
        (self._fast if speed == "100ms" else self._slow).untake()

    def take_partial_depth(self, speed: Speed) -> list[tuple[str, bytes]]:
        """The partial book depth payloads of one cadence (``depth5``, ``depth10``,
        ``depth20``, with ``@100ms`` at the fast one): Binance's ``{"lastUpdateId", "bids",
        "asks"}`` with the best levels. The slow cadence sends them every time (a new
        subscriber's first view within a second), the fast one only when the book moved.
        A payload not published is sent again after :meth:`untake_partial_depth`."""
        if speed == "100ms" and self._partial_seq[speed] == self.seq:
            return []
        self._partial_seq[speed] = self.seq
        most = PARTIAL_LEVELS[-1]
        price, qty = self.price, self.qty
        bids = [[price(p), qty(q)] for p, q in islice(self.book.bids.items(), most)]
        asks = [[price(p), qty(q)] for p, q in islice(self.book.asks.items(), most)]
        return [(name, _enc.encode({"lastUpdateId": self.seq, "bids": bids[:n],
                                    "asks": asks[:n]}))
                for n, name in PARTIAL_DEPTH[speed].items()]

    def untake_partial_depth(self, speed: Speed) -> None:
        self._partial_seq[speed] = -1

    def tick(self, now_ms: int) -> Updates:
        """Time passing: close candles whose interval ended, expire the window, push the
        ``@ticker`` / ``@miniTicker`` payloads when anything they show changed."""
        out = self.take_updates(now_ms)
        for k in self.klines.values():
            if not k.closed and now_ms > k.close_time:
                k.closed = True
                out.messages.append((KLINE_STREAMS[k.interval], self._kline_payload(k, now_ms)))
        if self._ticker_dirty:
            self._ticker_dirty = False
            out.messages.append((TICKER, _enc.encode(self.ticker_payload(now_ms))))
            out.messages.append((MINI_TICKER, _enc.encode(self.mini_ticker_payload(now_ms))))
        return out

    # ------------------------------------------------------------------ views
    def top(self) -> Top:
        lt = self.last_trade
        bid, bid_qty, ask, ask_qty = self._top
        return Top(lt.price if lt else 0, lt.qty if lt else 0, bid, bid_qty, ask, ask_qty)

    def reference_price(self) -> int | None:
        """Last trade price in ticks, else the mid of the best levels, else None."""
        if self.last_trade is not None:
            return self.last_trade.price
        bid, _, ask, _ = self._top
        if bid and ask:
            return (bid + ask) // 2
        return None

    def _kline_payload(self, k: Kline, event_ms: int) -> bytes:
        price, qty = self.price, self.qty
        return _enc.encode({
            "e": "kline", "E": event_ms, "s": self.symbol,
            "k": {
                "t": k.open_time, "T": k.close_time, "s": self.symbol, "i": k.interval,
                "f": k.first_id, "L": k.last_id, "o": price(k.open), "c": price(k.close),
                "h": price(k.high), "l": price(k.low), "v": qty(k.volume), "n": k.trades,
                "x": k.closed, "q": fmt_units(k.quote_volume),
                "V": qty(k.taker_buy_volume), "Q": fmt_units(k.taker_buy_quote_volume),
                "B": "0",
            },
        })

    def _ticker_values(self, now_ms: int) -> dict[str, Any]:
        """The 24h statistics once, in Binance's REST names; payloads rename them."""
        w = self.window
        w.expire(now_ms // MINUTE_MS)
        last = self.last_trade
        last_price = last.price if last else 0
        if w.buckets:
            open_, high, low = w.buckets[0].open, w.high, w.low
            first_id, last_id = w.buckets[0].first_id, w.buckets[-1].last_id
        else:
            open_ = high = low = last_price
            first_id = last_id = -1
        change = last_price - open_ if w.buckets else 0
        base_units = w.volume * self._lot
        wavg = w.quote_volume * UNITS_PER_COIN // base_units if base_units else 0
        bid, bid_qty, ask, ask_qty = self._top
        price, qty = self.price, self.qty
        return {
            "symbol": self.symbol,
            "priceChange": fmt_units(change * self._tick),
            "priceChangePercent": percent(change, open_),
            "weightedAvgPrice": fmt_units(wavg),
            "prevClosePrice": price(w.prev_close),
            "lastPrice": price(last_price),
            "lastQty": qty(last.qty if last else 0),
            "bidPrice": price(bid),
            "bidQty": qty(bid_qty),
            "askPrice": price(ask),
            "askQty": qty(ask_qty),
            "openPrice": price(open_),
            "highPrice": price(high),
            "lowPrice": price(low),
            "volume": qty(w.volume),
            "quoteVolume": fmt_units(w.quote_volume),
            "openTime": now_ms - DAY_MS,
            "closeTime": now_ms,
            "firstId": first_id,
            "lastId": last_id,
            "count": w.count,
        }

    def ticker_doc(self, now_ms: int) -> dict[str, Any]:
        """The ``/api/v3/ticker/24hr`` document."""
        return self._ticker_values(now_ms)

    def ticker_payload(self, now_ms: int) -> dict[str, Any]:
        """The ``<symbol>@ticker`` payload."""
        v = self._ticker_values(now_ms)
        return {
            "e": "24hrTicker", "E": now_ms, "s": self.symbol, "p": v["priceChange"],
            "P": v["priceChangePercent"], "w": v["weightedAvgPrice"],
            "x": v["prevClosePrice"], "c": v["lastPrice"], "Q": v["lastQty"],
            "b": v["bidPrice"], "B": v["bidQty"], "a": v["askPrice"], "A": v["askQty"],
            "o": v["openPrice"], "h": v["highPrice"], "l": v["lowPrice"], "v": v["volume"],
            "q": v["quoteVolume"], "O": v["openTime"], "C": v["closeTime"],
            "F": v["firstId"], "L": v["lastId"], "n": v["count"],
        }

    def mini_ticker_payload(self, now_ms: int) -> dict[str, Any]:
        """The ``<symbol>@miniTicker`` payload."""
        v = self._ticker_values(now_ms)
        return {
            "e": "24hrMiniTicker", "E": now_ms, "s": self.symbol, "c": v["lastPrice"],
            "o": v["openPrice"], "h": v["highPrice"], "l": v["lowPrice"], "v": v["volume"],
            "q": v["quoteVolume"],
        }

    def avg_price_doc(self, now_ms: int) -> dict[str, Any]:
        """``/api/v3/avgPrice``: volume-weighted over 5 minutes, else the last price."""
        quote, lots = self.window.average(now_ms // MINUTE_MS, AVG_PRICE_MINUTES)
        base_units = lots * self._lot
        if base_units:
            units = quote * UNITS_PER_COIN // base_units
        else:
            units = (self.last_trade.price if self.last_trade else 0) * self._tick
        return {"mins": AVG_PRICE_MINUTES, "price": fmt_units(units), "closeTime": now_ms}

    def book_levels(self) -> tuple[list[Level], list[Level]]:
        """The whole book: bids best first, asks best first."""
        return self.book.levels()

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> bytes:
        """The state to resume from, except the book (see ``book_levels``)."""
        return codec.encode(StateSnapshot(
            SNAPSHOT_VERSION, self.symbol, self.seq, self.ts, self.clock, self.next_agg_id,
            self.last_trade, list(self.klines.values()), list(self.window.buckets),
            self.window.prev_close,
        ))

    @classmethod
    def restore(
        cls, rules: PairRules, data: bytes, bids: Iterable[Level], asks: Iterable[Level]
    ) -> MarketState:
        """Rebuild from ``snapshot()`` and the book saved with it.

        Raises:
            StateError: the snapshot is of another symbol or version, or malformed.
        """
        try:
            snap = codec.decode_as(data, StateSnapshot)
        except codec.DecodeError as exc:
            raise StateError(f"{rules.symbol}: unreadable market-data snapshot: {exc}") from exc
        if snap.v != SNAPSHOT_VERSION or snap.symbol != rules.symbol:
            raise StateError(f"{rules.symbol}: snapshot v{snap.v} of {snap.symbol} refused")
        st = cls(rules, seq=snap.seq)
        st.ts = snap.ts
        st.clock = snap.clock
        st.next_agg_id = snap.next_agg_id
        st.last_trade = snap.last_trade
        st.klines = {k.interval: k for k in snap.klines if k.interval in INTERVALS}
        st.window = RollingWindow(snap.buckets, snap.prev_close)
        for price, qty in bids:
            st.book.set(Side.BUY, price, qty)
        for price, qty in asks:
            st.book.set(Side.SELL, price, qty)
        bid, bid_qty = st.book.best_bid()
        ask, ask_qty = st.book.best_ask()
        st._top = (bid, bid_qty, ask, ask_qty)
        return st
