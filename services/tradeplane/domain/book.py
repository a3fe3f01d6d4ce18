"""The matching order book of one symbol: pure, deterministic, price-time priority.

``OrderBook.process(command) -> list[Event]`` is the whole write interface. Prices are
integer ticks, quantities integer lots; the book never reads a clock (every event carries
the command's ``ts``; good-till-date expiry happens only on ``Tick`` commands, which the
engine appends to the log), never performs I/O and allocates trade ids from its own
counter, so the same command log always yields the same events and the same
``state_hash()``.

Layout, chosen for speed in CPython:

* each side keeps ``dict[price, _Level]`` for O(1) level lookup plus a ``SortedList`` of
  *keys* for ordering. A key is the price on the ask side and ``-price`` on the bid side, so
  on both sides the best level is the smallest key and "the taker's limit accepts this
  level" is ``key <= limit_key``: one matching loop serves buyers and sellers;
* a level is a FIFO ``deque`` of ``_Order`` with lazy deletion: a cancel zeroes the
  order's ``remaining`` and the matcher drops such entries when it meets them; a level
  whose dead entries outnumber its live ones is compacted, so memory stays bounded;
* the best key of each side is cached (``_EMPTY`` when the side is empty), which turns the
  "does this order cross?" test into one integer comparison;
* what only some orders need (iceberg reserve, good-till date, OCO partner) lives in an
  optional ``_Ext``, so a plain limit order pays one ``None`` test per trade for it;
* stop orders wait off the book in two ``SortedList``s of ``(stop key, arrival, id)``,
  one per trigger direction, so a trade finds the triggered ones as a prefix.

Semantics that ``model.py`` leaves open:

* Redelivery: a ``NewOrder`` (or list) whose order id is live on the book, waiting as a
  stop, or among the last ``recent_limit`` orders that ended here, is a redelivered command
  and produces *no events*: its outcome was published the first time.
* A ``NewOrder`` breaking the book's preconditions (LIMIT / LIMIT_MAKER with a price or
  quantity <= 0; MARKET with a price, with no lot cap unless by quote, by quote without
  ``quote_qty``, or negative caps; a stop without ``stop_price``; an iceberg that is not a
  resting GTC/GTD limit order or whose visible part is not below its quantity; GTD without
  a future ``good_till``; a ``list_id`` outside a list) ends ``Done(REJECTED, NONE)``. The
  gateway validates first; answering instead of raising keeps one bad command from
  crashing the engine on every replay of the log.
* Stops trigger on trades: after each taker finishes matching, every waiting stop whose
  stop price lies within the range of prices that taker traded at is triggered, in the
  order the stops were placed; the trades of triggered orders trigger further stops. A
  stop whose condition already holds against the last trade price at placement is
  ``Done(REJECTED, WOULD_TRIGGER)``. Stops are open orders: cancelable, covered by
  ``CancelAll``, amendable when they carry a limit price.
* Iceberg refills go to the back of their level's queue (they lose time priority);
  ``Rested.remaining`` and ``RestingOrder.remaining + hidden`` are the full remainder.
* Self-trade prevention: the taker's ``stp`` decides; an expired order ends
  ``EXPIRED_IN_MATCH`` / ``SELF_TRADE``. FOK counts an own maker as liquidity only under
  ``NONE``; under the expiring modes the check stops at the first own maker (where the
  taker would expire) or skips it (EXPIRE_MAKER).
* OCO lists: see ``NewOrderList``. A list may hold at most one limit (``LIMIT_MAKER``) leg,
  so at most one leg ever rests and a resting leg's partner is always a waiting stop.
* ``CancelAll`` while HALTED is refused once, as ``CancelRejected(order_id=0)``.
* Market orders: see ``OrderBook._match``.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import deque
from collections.abc import Iterable
from itertools import islice
from typing import Final

import msgspec
from sortedcontainers import SortedList

from tradeplane.domain.model import (
    SCHEMA_VERSION,
    STOP_TYPES,
    Accepted,
    Amend,
    Amended,
    AmendRejected,
    Cancel,
    CancelAll,
    CancelRejected,
    Command,
    Done,
    Event,
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
    Trade,
    TradingChanged,
    TradingState,
    Triggered,
    stop_triggers_above,
)

__all__ = ["DEFAULT_RECENT_LIMIT", "BookSnapshot", "OrderBook", "RestingOrder"]

DEFAULT_RECENT_LIMIT: Final = 100_000
"""How many finished order ids the book remembers to recognise redelivered orders."""

# The best key of an empty side; larger than any key, so "crosses" tests need no None check.
_EMPTY: Final = 1 << 62
_NO_LIMIT: Final = _EMPTY - 1  # limit key of a market order: accepts every level
_COMPACT_SLACK: Final = 32  # dead entries a level tolerates before compaction is considered

# Enum members bound once: attribute access on an Enum class is slow on the hot path.
_BUY: Final = Side.BUY
_SELL: Final = Side.SELL
_LIMIT: Final = OrderType.LIMIT
_MARKET: Final = OrderType.MARKET
_LIMIT_MAKER: Final = OrderType.LIMIT_MAKER
_GTC: Final = TimeInForce.GTC
_FOK: Final = TimeInForce.FOK
_GTD: Final = TimeInForce.GTD
_FILLED: Final = Status.FILLED
_CANCELED: Final = Status.CANCELED
_REJECTED: Final = Status.REJECTED
_EXPIRED: Final = Status.EXPIRED
_EXPIRED_IN_MATCH: Final = Status.EXPIRED_IN_MATCH
_R_NONE: Final = Reason.NONE
_R_WOULD_TAKE: Final = Reason.WOULD_TAKE
_R_NO_LIQUIDITY: Final = Reason.NO_LIQUIDITY
_R_UNKNOWN: Final = Reason.UNKNOWN_ORDER
_R_HALTED: Final = Reason.HALTED
_R_CAP: Final = Reason.CAP_REACHED
_R_WOULD_TRIGGER: Final = Reason.WOULD_TRIGGER
_R_SELF_TRADE: Final = Reason.SELF_TRADE
_R_GTD: Final = Reason.GTD_EXPIRED
_R_LIST_DONE: Final = Reason.LIST_DONE
_R_NOT_AMENDABLE: Final = Reason.NOT_AMENDABLE
_R_BAD_LIST: Final = Reason.BAD_LIST
_ENABLED: Final = TradingState.ENABLED
_HALTED: Final = TradingState.HALTED
_STP_NONE: Final = int(StpMode.NONE)
_STP_TAKER: Final = int(StpMode.EXPIRE_TAKER)
_STP_BOTH: Final = int(StpMode.EXPIRE_BOTH)
_LIMIT_STOPS: Final = frozenset({OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT})

# Why a taker stopped matching (besides running out of book, limit or lots).
_GO: Final = 0
_CAP: Final = 1  # the quote cap cannot pay the next lot
_SELF: Final = 2  # self-trade prevention expired the taker


class RestingOrder(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A read-only view of an order resting on the book (also its snapshot form).

    ``remaining`` is the visible part; an iceberg keeps ``hidden`` more lots in reserve
    and shows at most ``peak`` at a time. ``qty`` is the original quantity (as amended).
    """

    order_id: int
    account: int
    side: Side
    price: int
    remaining: int
    qty: int = 0
    hidden: int = 0
    peak: int = 0
    good_till: int = 0
    list_id: int = 0


class BookSnapshot(msgspec.Struct, frozen=True):
    """Everything needed to rebuild a book exactly; encoded by ``domain.codec``.

    ``bids`` and ``asks`` list the live orders in priority order (best level first, FIFO
    within a level); ``stops`` the waiting stop orders in placement order (with their
    current quantity); ``recent`` lists the remembered finished order ids, oldest first.
    """

    v: int
    symbol: str
    notional_per_tick_lot: int
    trading: TradingState
    next_trade_id: int
    recent_limit: int
    bids: list[RestingOrder]
    asks: list[RestingOrder]
    recent: list[int]
    last_price: int = 0
    stops: list[NewOrder] = msgspec.field(default_factory=list)


class _Ext:
    """What only icebergs, GTD orders and list legs need."""

    __slots__ = ("gtd", "hidden", "list_id", "peak", "peer")

    def __init__(self, peak: int, hidden: int, gtd: int, list_id: int) -> None:
        self.peak = peak  # visible lots of an iceberg (0: not an iceberg)
        self.hidden = hidden  # reserve lots not yet shown
        self.gtd = gtd  # good-till ms (0: none)
        self.list_id = list_id
        self.peer: _Order | _Stop | None = None  # the live other leg of the list


class _Order(msgspec.Struct):
    """A resting order. A msgspec Struct rather than a ``__slots__`` class: it is built
    in C, without a Python ``__init__`` frame, on every order that rests."""

    order_id: int
    account: int
    side: Side
    price: int
    remaining: int  # visible lots; 0 once filled or canceled: a dead queue entry
    level: _Level
    qty: int  # original quantity (as amended)
    ext: _Ext | None


class _Stop:
    """A stop order waiting for its trigger; ``cmd`` is its command (quantity as amended)."""

    __slots__ = ("account", "cmd", "ext", "key", "order_id", "up")

    def __init__(self, cmd: NewOrder, key: tuple[int, int, int], up: bool,
                 ext: _Ext | None) -> None:
        self.cmd = cmd
        self.order_id = cmd.order_id
        self.account = cmd.account
        self.key = key  # its entry in the up or down list
        self.up = up  # triggers when the price rises to its stop (else when it falls)
        self.ext = ext


class _Level:
    __slots__ = ("book_side", "live", "price", "queue", "total")

    def __init__(self, price: int, book_side: _BookSide) -> None:
        self.price = price
        self.book_side = book_side
        self.queue: deque[_Order] = deque()  # FIFO; may hold dead entries (remaining == 0)
        self.total = 0  # visible lots of the live orders
        self.live = 0  # number of live orders


class _BookSide:
    __slots__ = ("best", "dirty", "keys", "levels", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign  # key = price * sign: +1 for asks, -1 for bids
        self.levels: dict[int, _Level] = {}
        self.keys = SortedList()
        self.best = _EMPTY  # smallest key, i.e. the best level
        self.dirty: set[int] = set()  # prices changed since take_dirty_levels()

    def add_level(self, price: int) -> _Level:
        level = _Level(price, self)
        self.levels[price] = level
        key = price * self.sign
        self.keys.add(key)
        if key < self.best:
            self.best = key
        return level

    def drop_level(self, level: _Level) -> None:
        del self.levels[level.price]
        key = level.price * self.sign
        keys = self.keys
        keys.remove(key)
        if key == self.best:
            self.best = keys[0] if keys else _EMPTY

    def ordered_levels(self) -> Iterable[_Level]:
        levels = self.levels
        sign = self.sign
        return (levels[key * sign] for key in self.keys)


class OrderBook:
    """The order book of one symbol; see the module docstring.

    ``notional_per_tick_lot`` is the quote units of one tick x one lot
    (``PairRules.notional_per_tick_lot``); it prices the quote caps of market orders.
    With ``debug=True`` every command is followed by ``check_invariants()``.

    Raises:
        ValueError: ``notional_per_tick_lot`` or ``recent_limit`` is not positive.
    """

    def __init__(
        self,
        symbol: str,
        notional_per_tick_lot: int,
        *,
        debug: bool = False,
        recent_limit: int = DEFAULT_RECENT_LIMIT,
    ) -> None:
        if notional_per_tick_lot <= 0:
            raise ValueError("notional_per_tick_lot must be positive")
        if recent_limit <= 0:
            raise ValueError("recent_limit must be positive")
        self.symbol = symbol
        self._npl = notional_per_tick_lot
        self._debug = debug
        self._bids = _BookSide(-1)
        self._asks = _BookSide(1)
        self._orders: dict[int, _Order] = {}  # resting
        self._stops: dict[int, _Stop] = {}  # waiting for their trigger
        self._stops_up = SortedList()  # (stop price, arrival, id): trigger at or above
        self._stops_down = SortedList()  # (-stop price, arrival, id): trigger at or below
        self._arrival = 0
        self._by_account: dict[int, set[int]] = {}  # resting and waiting ids per account
        self._expiries: list[tuple[int, int]] = []  # heap of (good_till, id); may be stale
        self._last_price = 0  # ticks of the last trade; 0 before the first
        # Price range the current taker traded in (0, 0 = none): what triggers stops.
        self._touch_lo = 0
        self._touch_hi = 0
        self._trading = _ENABLED
        self._next_trade_id = 1
        self._recent_limit = recent_limit
        self._recent: deque[int] = deque(maxlen=recent_limit)  # finished ids, oldest first
        self._recent_set: set[int] = set()

    # ------------------------------------------------------------------ queries
    @property
    def open_orders_count(self) -> int:
        """Resting plus waiting stop orders."""
        return len(self._orders) + len(self._stops)

    @property
    def trading(self) -> TradingState:
        return self._trading

    @property
    def last_price(self) -> int | None:
        """The price of the last trade in ticks, None before the first."""
        return self._last_price or None

    def best_bid(self) -> int | None:
        best = self._bids.best
        return None if best == _EMPTY else -best

    def best_ask(self) -> int | None:
        best = self._asks.best
        return None if best == _EMPTY else best

    def order(self, order_id: int) -> RestingOrder | None:
        """The live order ``order_id``, or None when it is not resting on the book."""
        o = self._orders.get(order_id)
        return None if o is None else _view(o)

    def stop_orders(self) -> list[NewOrder]:
        """The waiting stop orders in placement order (quantities as amended)."""
        return [s.cmd for s in sorted(self._stops.values(), key=lambda s: s.key[1])]

    def next_expiry(self) -> int | None:
        """The earliest good-till time (ms) of a live GTD order, or None: when the engine
        should append its next ``Tick``."""
        heap = self._expiries
        while heap:
            gtd, oid = heap[0]
            o = self._orders.get(oid) or self._stops.get(oid)
            if o is not None and o.ext is not None and o.ext.gtd == gtd:
                return gtd
            heapq.heappop(heap)  # that order ended meanwhile
        return None

    def depth(self, limit: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The best ``limit`` levels as ``(price, visible qty)``: bids descending, asks
        ascending.

        Raises:
            ValueError: ``limit`` is negative.
        """
        return (
            [(lv.price, lv.total) for lv in islice(self._bids.ordered_levels(), limit)],
            [(lv.price, lv.total) for lv in islice(self._asks.ordered_levels(), limit)],
        )

    def take_dirty_levels(self) -> list[tuple[int, int, int]]:
        """``(side, price, qty)`` of every level changed since the last call (qty 0 = gone).

        Sorted by side (bids first) then price ascending; the change set is reset. Costs
        O(changed levels), whatever the number of commands in between.
        """
        out: list[tuple[int, int, int]] = []
        for book_side, side in ((self._bids, int(_BUY)), (self._asks, int(_SELL))):
            if not book_side.dirty:
                continue
            levels = book_side.levels
            for price in sorted(book_side.dirty):
                level = levels.get(price)
                out.append((side, price, level.total if level is not None else 0))
            book_side.dirty = set()
        return out

    # ------------------------------------------------------------------ commands
    def process(self, cmd: Command) -> list[Event]:
        """Apply one command and return its events, in the order they happened.

        Raises:
            TypeError: ``cmd`` is not one of the ``Command`` types.
            AssertionError: only with ``debug=True``, when an internal invariant breaks.
        """
        t = type(cmd)
        if t is NewOrder:
            # _new_order inlined for the common case (an enabled book, a limit or market
            # order): one call less on most of the traffic.
            typ = cmd.type  # type: ignore[union-attr]
            oid = cmd.order_id  # type: ignore[union-attr]
            if (self._trading != _ENABLED or oid in self._orders or oid in self._recent_set
                    or oid in self._stops or not (typ in (_LIMIT, _LIMIT_MAKER)
                                                  or typ == _MARKET)):
                out = self._new_order(cmd)  # type: ignore[arg-type]
            else:
                out = []
                if typ == _MARKET:
                    self._market(cmd, out)  # type: ignore[arg-type]
                else:
                    self._limit(cmd, out)  # type: ignore[arg-type]
                if self._touch_hi:
                    self._run_triggers(cmd.ts, out)
        elif t is Cancel:
            o = self._orders.get(cmd.order_id)  # type: ignore[union-attr]
            if (o is not None and o.ext is None and o.account == cmd.account  # type: ignore[union-attr]
                    and self._trading != _HALTED):
                self._finish_order(o)  # the plain cancel, inlined as above
                out = [Done(o.order_id, o.account, _CANCELED, _R_NONE, cmd.ts)]
            else:
                out = self._cancel(cmd)  # type: ignore[arg-type]
        elif t is Tick:
            out = self._tick(cmd.ts)
        elif t is Amend:
            out = self._amend(cmd)  # type: ignore[arg-type]
        elif t is NewOrderList:
            out = self._new_list(cmd)  # type: ignore[arg-type]
        elif t is CancelAll:
            out = self._cancel_all(cmd)  # type: ignore[arg-type]
        elif t is SetTrading:
            self._trading = cmd.state  # type: ignore[union-attr]
            out = [TradingChanged(cmd.state, cmd.ts)]  # type: ignore[union-attr]
        else:
            raise TypeError(f"not a command: {t.__name__}")
        if self._debug:
            self.check_invariants()
        return out

    def _new_order(self, cmd: NewOrder) -> list[Event]:
        oid = cmd.order_id
        if oid in self._orders or oid in self._recent_set or oid in self._stops:
            return []  # redelivered: its outcome was published the first time
        if self._trading != _ENABLED:
            self._remember(oid)
            return [Done(oid, cmd.account, _REJECTED, _R_HALTED, cmd.ts)]
        events: list[Event] = []
        typ = cmd.type
        if typ in (_LIMIT, _LIMIT_MAKER):
            self._limit(cmd, events)
        elif typ == _MARKET:
            self._market(cmd, events)
        else:
            refusal = self._stop_refusal(cmd)
            if refusal is None:
                self._park(cmd, None, events)
            else:
                self._remember(oid)
                events.append(Done(oid, cmd.account, _REJECTED, refusal, cmd.ts))
        if self._touch_hi:
            self._run_triggers(cmd.ts, events)
        return events

    def _limit(self, cmd: NewOrder, events: list[Event]) -> None:
        """A LIMIT or LIMIT_MAKER order (or a triggered stop-limit, as LIMIT)."""
        oid = cmd.order_id
        price = cmd.price
        qty = cmd.qty
        side = cmd.side
        if side == _BUY:
            opp = self._asks
            limit_key = price
        else:
            opp = self._bids
            limit_key = -price
        tif = cmd.tif
        if not (0 < price < _EMPTY and qty > 0) or (tif == _GTD and cmd.good_till <= cmd.ts):
            self._remember(oid)
            events.append(Done(oid, cmd.account, _REJECTED, _R_NONE, cmd.ts))
            return
        if opp.best <= limit_key:
            if cmd.type == _LIMIT_MAKER:
                self._remember(oid)
                events.append(Done(oid, cmd.account, _REJECTED, _R_WOULD_TAKE, cmd.ts))
                return
            stp = cmd.stp
            if tif == _FOK and not self._can_fill(opp, limit_key, qty, cmd.account, stp):
                self._remember(oid)
                events.append(Done(oid, cmd.account, _EXPIRED, _R_NO_LIQUIDITY, cmd.ts))
                return
            qty, _quote, why = self._match(opp, limit_key, cmd, qty, 0, stp, events)
            if why:
                self._remember(oid)
                events.append(Done(oid, cmd.account, _EXPIRED_IN_MATCH, _R_SELF_TRADE, cmd.ts))
                return
            if not qty:
                self._remember(oid)
                events.append(Done(oid, cmd.account, _FILLED, _R_NONE, cmd.ts))
                return
            if tif != _GTC and tif != _GTD:
                self._remember(oid)
                events.append(Done(oid, cmd.account, _EXPIRED, _R_NO_LIQUIDITY, cmd.ts))
                return
        elif tif != _GTC and tif != _GTD and cmd.type == _LIMIT:
            self._remember(oid)
            events.append(Done(oid, cmd.account, _EXPIRED, _R_NO_LIQUIDITY, cmd.ts))
            return
        if cmd.iceberg_qty or tif == _GTD:
            self._rest(cmd, qty, None, events)
            return
        # A plain order rests: _rest inlined, this is most of the traffic.
        own = self._asks if opp is self._bids else self._bids
        level = own.levels.get(price)
        if level is None:
            level = own.add_level(price)
        acct = cmd.account
        o = _Order(oid, acct, side, price, qty, level, cmd.qty, None)
        level.queue.append(o)
        level.total += qty
        level.live += 1
        own.dirty.add(price)
        self._orders[oid] = o
        ids = self._by_account.get(acct)
        if ids is None:
            self._by_account[acct] = {oid}
        else:
            ids.add(oid)
        events.append(Rested(oid, acct, side, price, qty, cmd.ts))

    def _rest(self, cmd: NewOrder, qty: int, ext: _Ext | None, events: list[Event]) -> _Order:
        """Put ``qty`` lots of ``cmd`` on its side of the book (``ext``: a list leg's)."""
        oid = cmd.order_id
        acct = cmd.account
        side = cmd.side
        price = cmd.price
        own = self._bids if side == _BUY else self._asks
        level = own.levels.get(price)
        if level is None:
            level = own.add_level(price)
        visible = qty
        peak = cmd.iceberg_qty
        gtd = cmd.good_till if cmd.tif == _GTD else 0
        if peak or gtd:
            if ext is None:
                ext = _Ext(0, 0, 0, 0)
            if peak > 0:
                ext.peak = peak
                if peak < qty:
                    visible = peak
                    ext.hidden = qty - peak
            if gtd:
                ext.gtd = gtd
                heapq.heappush(self._expiries, (gtd, oid))
        o = _Order(oid, acct, side, price, visible, level, cmd.qty, ext)
        level.queue.append(o)
        level.total += visible
        level.live += 1
        own.dirty.add(price)
        self._orders[oid] = o
        ids = self._by_account.get(acct)
        if ids is None:
            self._by_account[acct] = {oid}
        else:
            ids.add(oid)
        events.append(Rested(oid, acct, side, price, qty, cmd.ts))
        return o

    def _match(
        self, opp: _BookSide, limit_key: int, cmd: NewOrder, want: int, quote: int, stp: int,
        events: list[Event],
    ) -> tuple[int, int, int]:
        """Match ``want`` lots of the taker ``cmd`` against ``opp`` up to ``limit_key``.

        Each maker gives ``n = min(its visible remaining, lots left, quote left // lot
        cost)`` (a ``quote`` cap of 0 does not apply); matching stops when the lots or the
        quote are used up, the book (up to the limit) is empty, ``n`` is 0 (the quote left
        cannot pay one lot at this maker's price: ``_CAP``) or self-trade prevention
        expires the taker (``_SELF``). Returns ``(lots left, quote left, why stopped)``.
        """
        oid = cmd.order_id
        acct = cmd.account
        side = cmd.side
        ts = cmd.ts
        levels = opp.levels
        sign = opp.sign
        dirty = opp.dirty
        orders = self._orders
        by_account = self._by_account
        recent = self._recent
        recent_set = self._recent_set
        recent_limit = self._recent_limit
        append = events.append
        npl = self._npl
        quote_left = quote
        why = _GO
        lo = hi = last = 0
        tid = self._next_trade_id
        while opp.best <= limit_key:
            price = opp.best * sign
            level = levels[price]
            q = level.queue
            lot_cost = price * npl
            level_tid = tid
            while True:
                m = q[0]
                r = m.remaining
                if not r:
                    q.popleft()
                    continue
                if stp and m.account == acct:
                    if stp == _STP_TAKER:
                        why = _SELF
                        break
                    self._expire_maker(m, level, ts, events)
                    if stp == _STP_BOTH:
                        why = _SELF
                        break
                    if not level.live:
                        break
                    continue
                n = r if r < want else want
                if quote:
                    fit = quote_left // lot_cost
                    if fit < n:
                        n = fit
                        if not n:
                            why = _CAP
                            break
                    quote_left -= n * lot_cost
                ext = m.ext
                if ext is not None and ext.peer is not None:
                    self._end_peer(ext, _EXPIRED, _R_LIST_DONE, ts, events)
                append(Trade(tid, price, n, oid, acct, side, m.order_id, m.account, ts))
                tid += 1
                want -= n
                level.total -= n
                if n < r:
                    m.remaining = r - n
                else:
                    q.popleft()
                    if ext is not None and ext.hidden:
                        # Iceberg refill: shown again at the back of the queue.
                        refill = ext.peak if ext.peak < ext.hidden else ext.hidden
                        ext.hidden -= refill
                        m.remaining = refill
                        level.total += refill
                        q.append(m)
                    else:
                        m.remaining = 0
                        level.live -= 1
                        moid = m.order_id
                        macct = m.account
                        del orders[moid]
                        ids = by_account[macct]
                        ids.discard(moid)
                        if not ids:
                            del by_account[macct]
                        if len(recent) == recent_limit:
                            recent_set.discard(recent[0])
                        recent.append(moid)
                        recent_set.add(moid)
                        append(Done(moid, macct, _FILLED, _R_NONE, ts))
                if not want or not level.live or (quote and not quote_left):
                    break
            if tid != level_tid:
                last = price
                if not lo or price < lo:
                    lo = price
                if price > hi:
                    hi = price
            dirty.add(price)
            if not level.live:
                opp.drop_level(level)
            if why or not want or (quote and not quote_left):
                break
        self._next_trade_id = tid
        if last:
            self._last_price = last
            if not self._stops:
                pass  # nothing can trigger
            elif not self._touch_hi:
                self._touch_lo = lo
                self._touch_hi = hi
            else:
                self._touch_lo = min(self._touch_lo, lo)
                self._touch_hi = max(self._touch_hi, hi)
        return want, quote_left, why

    def _market(self, cmd: NewOrder, events: list[Event]) -> None:
        """Match a market order (or a triggered stop-market); its final status is decided
        from where it stopped (see ``_match``).

        By quote: FILLED when something executed and the quote cap is what stopped it
        (``n`` was 0, or the quote is spent exactly); otherwise, the book or the lot cap
        ran out first, EXPIRED(NO_LIQUIDITY). By quantity: FILLED when every lot executed,
        even if the quote cap was spent by the same fill; otherwise EXPIRED(CAP_REACHED)
        when the quote cap stopped it, EXPIRED(NO_LIQUIDITY) when the book ran out.
        Self-trade prevention expiring the taker ends it EXPIRED_IN_MATCH either way.
        """
        oid = cmd.order_id
        acct = cmd.account
        ts = cmd.ts
        qty = cmd.qty
        quote = cmd.quote_qty
        by_quote = cmd.by_quote
        if (
            cmd.price != 0
            or qty < 0
            or quote < 0
            or not (qty or by_quote)
            or (by_quote and not quote)
        ):
            self._remember(oid)
            events.append(Done(oid, acct, _REJECTED, _R_NONE, ts))
            return
        opp = self._asks if cmd.side == _BUY else self._bids
        want = qty if qty else _EMPTY  # no lot cap: more lots than any book holds
        tid = self._next_trade_id
        want, quote_left, why = self._match(opp, _NO_LIMIT, cmd, want, quote, cmd.stp, events)
        executed = self._next_trade_id != tid
        quote_spent = why == _CAP or (quote > 0 and not quote_left)
        self._remember(oid)
        if why == _SELF:
            events.append(Done(oid, acct, _EXPIRED_IN_MATCH, _R_SELF_TRADE, ts))
        elif by_quote:
            if executed and quote_spent:
                events.append(Done(oid, acct, _FILLED, _R_NONE, ts))
            else:
                events.append(Done(oid, acct, _EXPIRED, _R_NO_LIQUIDITY, ts))
        elif not want:
            events.append(Done(oid, acct, _FILLED, _R_NONE, ts))
        else:
            reason = _R_CAP if quote_spent else _R_NO_LIQUIDITY
            events.append(Done(oid, acct, _EXPIRED, reason, ts))

    def _can_fill(self, opp: _BookSide, limit_key: int, qty: int, acct: int, stp: int) -> bool:
        """Whether ``opp`` holds ``qty`` lots at keys up to ``limit_key`` that a taker of
        ``acct`` with self-trade mode ``stp`` would execute against (fill-or-kill)."""
        levels = opp.levels
        sign = opp.sign
        for key in opp.keys:
            if key > limit_key:
                return False
            for m in levels[key * sign].queue:
                if not m.remaining:
                    continue
                if stp and m.account == acct:
                    if stp in (_STP_TAKER, _STP_BOTH):
                        return False
                    continue  # EXPIRE_MAKER: expired, not executed
                qty -= m.remaining + (m.ext.hidden if m.ext is not None else 0)
                if qty <= 0:
                    return True
        return False

    # ------------------------------------------------------------------ stops
    def _stop_refusal(self, cmd: NewOrder) -> Reason | None:
        """Why a stop order (or a stop leg) cannot be accepted now; None when it can."""
        typ = cmd.type
        sp = cmd.stop_price
        if typ not in STOP_TYPES or not 0 < sp < _EMPTY or cmd.qty <= 0 or cmd.by_quote:
            return _R_NONE
        if typ in _LIMIT_STOPS:
            if not 0 < cmd.price < _EMPTY:
                return _R_NONE
        elif cmd.price != 0 or cmd.quote_qty < 0:
            return _R_NONE
        if cmd.tif == _GTD and cmd.good_till <= cmd.ts:
            return _R_NONE
        last = self._last_price
        if last and ((last >= sp) if stop_triggers_above(typ, cmd.side) else (last <= sp)):
            return _R_WOULD_TRIGGER
        return None

    def _park(self, cmd: NewOrder, ext: _Ext | None, events: list[Event] | None) -> _Stop:
        """Make ``cmd`` (already validated) wait for its trigger."""
        oid = cmd.order_id
        self._arrival += 1
        up = stop_triggers_above(cmd.type, cmd.side)
        sp = cmd.stop_price
        key = (sp, self._arrival, oid) if up else (-sp, self._arrival, oid)
        if cmd.tif == _GTD:
            if ext is None:
                ext = _Ext(0, 0, 0, 0)
            ext.gtd = cmd.good_till
            heapq.heappush(self._expiries, (cmd.good_till, oid))
        s = _Stop(cmd, key, up, ext)
        (self._stops_up if up else self._stops_down).add(key)
        self._stops[oid] = s
        self._by_account.setdefault(cmd.account, set()).add(oid)
        if events is not None:
            events.append(Accepted(oid, cmd.account, cmd.ts))
        return s

    def _run_triggers(self, ts: int, events: list[Event]) -> None:
        """Trigger every stop the traded price range reached, in placement order, until
        the trades of triggered orders trigger no more."""
        up = self._stops_up
        down = self._stops_down
        stops = self._stops
        while self._touch_hi:
            lo = self._touch_lo
            hi = self._touch_hi
            self._touch_lo = self._touch_hi = 0
            fired: list[tuple[int, int, int]] = []
            while up and up[0][0] <= hi:
                fired.append(up.pop(0))
            while down and -down[0][0] >= lo:
                fired.append(down.pop(0))
            fired.sort(key=_arrival_of)
            for key in fired:
                s = stops.get(key[2])
                if s is not None and s.key == key:  # not ended meanwhile as a list partner
                    self._trigger(s, ts, events)

    def _trigger(self, s: _Stop, ts: int, events: list[Event]) -> None:
        oid = s.order_id
        acct = s.account
        del self._stops[oid]
        self._drop_account_id(acct, oid)
        ext = s.ext
        if ext is not None and ext.peer is not None:
            self._end_peer(ext, _EXPIRED, _R_LIST_DONE, ts, events)
        events.append(Triggered(oid, acct, self._last_price, ts))
        cmd = s.cmd
        if cmd.tif == _GTD and cmd.good_till <= ts:
            self._remember(oid)  # its time ran out before the Tick that would expire it
            events.append(Done(oid, acct, _EXPIRED, _R_GTD, ts))
            return
        if cmd.type in _LIMIT_STOPS:
            self._limit(msgspec.structs.replace(cmd, type=_LIMIT, ts=ts), events)
        else:
            self._market(msgspec.structs.replace(cmd, type=_MARKET, ts=ts), events)

    # ------------------------------------------------------------------ lists
    def _new_list(self, cmd: NewOrderList) -> list[Event]:
        legs = cmd.legs
        ids = list(dict.fromkeys(leg.order_id for leg in legs))
        if any(i in self._orders or i in self._stops or i in self._recent_set for i in ids):
            return []  # redelivered
        ts = cmd.ts
        acct = cmd.account
        refusals: list[Reason | None]
        if self._trading != _ENABLED:
            refusals = [_R_HALTED] * len(legs)
        elif (
            len(legs) != 2
            or len(ids) != 2
            or not cmd.list_id
            or any(leg.account != acct or leg.list_id != cmd.list_id or leg.side != legs[0].side
                   or (leg.type != _LIMIT_MAKER and leg.type not in STOP_TYPES)
                   for leg in legs)
            or legs[0].type == legs[1].type == _LIMIT_MAKER
        ):
            refusals = [_R_BAD_LIST] * len(legs)
        else:
            refusals = [self._leg_refusal(leg) for leg in legs]
        events: list[Event] = []
        if any(r is not None for r in refusals):
            refused: set[int] = set()
            for leg, r in zip(legs, refusals, strict=True):
                if leg.order_id not in refused:  # a list naming one id twice ends it once
                    refused.add(leg.order_id)
                    self._remember(leg.order_id)
                    events.append(Done(leg.order_id, acct, _REJECTED, r or _R_BAD_LIST, ts))
            return events
        placed: list[_Order | _Stop] = []
        for leg in legs:
            ext = _Ext(0, 0, 0, cmd.list_id)
            if leg.type == _LIMIT_MAKER:
                placed.append(self._rest(leg, leg.qty, ext, events))
            else:
                placed.append(self._park(leg, ext, events))
        a, b = placed
        assert a.ext is not None and b.ext is not None
        a.ext.peer = b
        b.ext.peer = a
        return events

    def _leg_refusal(self, leg: NewOrder) -> Reason | None:
        if leg.type != _LIMIT_MAKER:
            return self._stop_refusal(leg)
        if not (0 < leg.price < _EMPTY and leg.qty > 0):
            return _R_NONE
        if leg.tif == _GTD and leg.good_till <= leg.ts:
            return _R_NONE
        if leg.side == _BUY:
            crosses = self._asks.best <= leg.price
        else:
            crosses = self._bids.best <= -leg.price
        return _R_WOULD_TAKE if crosses else None

    def _end_peer(
        self, ext: _Ext, status: Status, reason: Reason, ts: int, events: list[Event]
    ) -> None:
        """End the live list partner of the order whose ``ext`` this is."""
        peer = ext.peer
        assert peer is not None and peer.ext is not None
        ext.peer = None
        ext.list_id = 0  # the survivor is on its own now (its snapshot names no list)
        peer.ext.peer = None
        self._finish(peer)
        events.append(Done(peer.order_id, peer.account, status, reason, ts))

    # ------------------------------------------------------------------ cancel, amend, expiry
    def _cancel(self, cmd: Cancel) -> list[Event]:
        oid = cmd.order_id
        acct = cmd.account
        if self._trading == _HALTED:
            return [CancelRejected(oid, acct, _R_HALTED, cmd.ts)]
        o = self._orders.get(oid) or self._stops.get(oid)
        if o is None or o.account != acct:
            return [CancelRejected(oid, acct, _R_UNKNOWN, cmd.ts)]
        if o.ext is None and type(o) is _Order:
            self._finish_order(o)
            return [Done(oid, acct, _CANCELED, _R_NONE, cmd.ts)]
        events: list[Event] = []
        self._cancel_one(o, cmd.ts, events)
        return events

    def _cancel_one(self, o: _Order | _Stop, ts: int, events: list[Event]) -> None:
        self._finish(o)
        events.append(Done(o.order_id, o.account, _CANCELED, _R_NONE, ts))
        if o.ext is not None and o.ext.peer is not None:
            self._end_peer(o.ext, _CANCELED, _R_NONE, ts, events)

    def _cancel_all(self, cmd: CancelAll) -> list[Event]:
        acct = cmd.account
        if self._trading == _HALTED:
            # One refusal for the whole request; order id 0 stands for "all".
            return [CancelRejected(0, acct, _R_HALTED, cmd.ts)]
        ids = self._by_account.get(acct)
        if not ids:
            return []
        events: list[Event] = []
        for oid in sorted(ids):
            o = self._orders.get(oid) or self._stops.get(oid)
            if o is not None:  # None: canceled above as a list partner
                self._cancel_one(o, cmd.ts, events)
        return events

    def _amend(self, cmd: Amend) -> list[Event]:
        oid = cmd.order_id
        acct = cmd.account
        ts = cmd.ts
        new = cmd.new_qty
        if self._trading == _HALTED:
            return [AmendRejected(oid, acct, _R_HALTED, ts)]
        o = self._orders.get(oid)
        s = self._stops.get(oid)
        if o is not None and o.account == acct:
            if not 0 < new < o.qty:
                return [AmendRejected(oid, acct, _R_NOT_AMENDABLE, ts)]
            ext = o.ext
            hidden = ext.hidden if ext is not None else 0
            live = o.remaining + hidden
            reduce = o.qty - new
            if reduce >= live:
                # Nothing would remain: what executed is all the order ever was.
                events: list[Event] = [Amended(oid, acct, o.qty - live, live, ts)]
                self._finish(o)
                events.append(Done(oid, acct, _FILLED, _R_NONE, ts))
                if ext is not None and ext.peer is not None:
                    self._end_peer(ext, _EXPIRED, _R_LIST_DONE, ts, events)
                return events
            from_hidden = min(hidden, reduce)
            if from_hidden:
                assert ext is not None
                ext.hidden -= from_hidden
            shown = reduce - from_hidden
            if shown:
                o.remaining -= shown
                o.level.total -= shown
                o.level.book_side.dirty.add(o.price)
            o.qty = new
            return [Amended(oid, acct, new, reduce, ts)]
        if s is not None and s.account == acct:
            if s.cmd.type not in _LIMIT_STOPS or not 0 < new < s.cmd.qty:
                return [AmendRejected(oid, acct, _R_NOT_AMENDABLE, ts)]
            reduce = s.cmd.qty - new
            s.cmd = msgspec.structs.replace(s.cmd, qty=new)
            return [Amended(oid, acct, new, reduce, ts)]
        return [AmendRejected(oid, acct, _R_UNKNOWN, ts)]

    def _tick(self, ts: int) -> list[Event]:
        """The engine clock: expire every GTD order due at ``ts`` (in any trading state)."""
        heap = self._expiries
        events: list[Event] = []
        while heap and heap[0][0] <= ts:
            gtd, oid = heapq.heappop(heap)
            o = self._orders.get(oid) or self._stops.get(oid)
            if o is None or o.ext is None or o.ext.gtd != gtd:
                continue  # ended before its time
            self._finish(o)
            events.append(Done(oid, o.account, _EXPIRED, _R_GTD, ts))
            if o.ext.peer is not None:
                self._end_peer(o.ext, _EXPIRED, _R_LIST_DONE, ts, events)
        return events

    # ------------------------------------------------------------------ bookkeeping
    def _expire_maker(self, m: _Order, level: _Level, ts: int, events: list[Event]) -> None:
        """Self-trade prevention ends the maker at the head of ``level``'s queue; the level
        stays (the matcher drops it when empty)."""
        level.queue.popleft()
        level.total -= m.remaining
        level.live -= 1
        m.remaining = 0
        if m.ext is not None:
            m.ext.hidden = 0
        del self._orders[m.order_id]
        self._drop_account_id(m.account, m.order_id)
        self._remember(m.order_id)
        events.append(Done(m.order_id, m.account, _EXPIRED_IN_MATCH, _R_SELF_TRADE, ts))
        if m.ext is not None and m.ext.peer is not None:
            self._end_peer(m.ext, _EXPIRED, _R_LIST_DONE, ts, events)

    def _finish(self, o: _Order | _Stop) -> None:
        """Take a live order off the book, or a stop out of waiting, and remember it as
        finished; the caller reports how it ended."""
        if type(o) is _Stop:
            oid = o.order_id
            del self._stops[oid]
            (self._stops_up if o.up else self._stops_down).discard(o.key)
            self._drop_account_id(o.account, oid)
            self._remember(oid)
        else:
            assert type(o) is _Order
            self._finish_order(o)

    def _finish_order(self, o: _Order) -> None:
        """``_finish`` for a resting order (inlined helpers: cancels are 30% of traffic)."""
        oid = o.order_id
        level = o.level
        book_side = level.book_side
        level.total -= o.remaining
        level.live -= 1
        o.remaining = 0
        if o.ext is not None:
            o.ext.hidden = 0
        del self._orders[oid]
        book_side.dirty.add(level.price)
        if not level.live:
            book_side.drop_level(level)
        else:
            q = level.queue
            if q[0] is o:
                q.popleft()
            elif len(q) > 2 * level.live + _COMPACT_SLACK:
                level.queue = deque(x for x in q if x.remaining)
        ids = self._by_account[o.account]
        ids.discard(oid)
        if not ids:
            del self._by_account[o.account]
        recent = self._recent
        if len(recent) == self._recent_limit:
            self._recent_set.discard(recent[0])  # the append below evicts it
        recent.append(oid)
        self._recent_set.add(oid)

    def _drop_account_id(self, acct: int, oid: int) -> None:
        ids = self._by_account[acct]
        ids.discard(oid)
        if not ids:
            del self._by_account[acct]

    def _remember(self, oid: int) -> None:
        recent = self._recent
        if len(recent) == self._recent_limit:
            self._recent_set.discard(recent[0])  # the append below evicts it
        recent.append(oid)
        self._recent_set.add(oid)

    # ------------------------------------------------------------------ state
    def snapshot(self) -> BookSnapshot:
        """The book's full state; ``OrderBook.restore`` rebuilds it exactly."""
        return BookSnapshot(
            v=SCHEMA_VERSION,
            symbol=self.symbol,
            notional_per_tick_lot=self._npl,
            trading=self._trading,
            next_trade_id=self._next_trade_id,
            recent_limit=self._recent_limit,
            bids=_resting(self._bids),
            asks=_resting(self._asks),
            recent=list(self._recent),
            last_price=self._last_price,
            stops=self.stop_orders(),
        )

    @classmethod
    def restore(cls, snapshot: BookSnapshot, *, debug: bool = False) -> OrderBook:
        """Rebuild a book from ``snapshot``; it continues exactly as the original would.

        Raises:
            ValueError: the snapshot has an unknown version or is inconsistent (crossed,
                duplicate order ids, non-positive prices or quantities, unpaired list legs).
        """
        if snapshot.v != SCHEMA_VERSION:
            raise ValueError(f"unsupported book snapshot version {snapshot.v}")
        book = cls(
            snapshot.symbol,
            snapshot.notional_per_tick_lot,
            debug=debug,
            recent_limit=snapshot.recent_limit,
        )
        book._trading = TradingState(snapshot.trading)
        book._next_trade_id = snapshot.next_trade_id
        book._last_price = snapshot.last_price
        for oid in snapshot.recent[-snapshot.recent_limit :]:
            book._remember(oid)
        legs: dict[int, list[_Order | _Stop]] = {}
        for side, resting in ((_BUY, snapshot.bids), (_SELL, snapshot.asks)):
            own = book._bids if side == _BUY else book._asks
            for r in resting:
                if (r.side != side or r.price <= 0 or r.remaining <= 0 or r.hidden < 0
                        or r.order_id in book._orders):
                    raise ValueError(f"inconsistent book snapshot at order {r.order_id}")
                level = own.levels.get(r.price) or own.add_level(r.price)
                ext = None
                if r.hidden or r.peak or r.good_till or r.list_id:
                    ext = _Ext(r.peak, r.hidden, r.good_till, r.list_id)
                    if r.good_till:
                        heapq.heappush(book._expiries, (r.good_till, r.order_id))
                qty = r.qty or r.remaining + r.hidden
                o = _Order(r.order_id, r.account, side, r.price, r.remaining, level, qty, ext)
                level.queue.append(o)
                level.total += r.remaining
                level.live += 1
                book._orders[r.order_id] = o
                book._by_account.setdefault(r.account, set()).add(r.order_id)
                if r.list_id:
                    legs.setdefault(r.list_id, []).append(o)
        for cmd in snapshot.stops:
            if cmd.type not in STOP_TYPES or cmd.order_id in book._orders \
                    or cmd.order_id in book._stops:
                raise ValueError(f"inconsistent book snapshot at stop {cmd.order_id}")
            s = book._park(cmd, _Ext(0, 0, 0, cmd.list_id) if cmd.list_id else None, None)
            if cmd.list_id:
                legs.setdefault(cmd.list_id, []).append(s)
        for list_id, pair in legs.items():
            if len(pair) != 2:
                raise ValueError(f"inconsistent book snapshot: list {list_id} is not a pair")
            a, b = pair
            assert a.ext is not None and b.ext is not None
            a.ext.peer = b
            b.ext.peer = a
        try:
            book.check_invariants()
        except AssertionError as exc:
            raise ValueError(f"inconsistent book snapshot: {exc}") from exc
        return book

    def state_hash(self) -> str:
        """A digest of the full state (blake2b of the canonical snapshot encoding).

        Two books that will answer every future command identically have the same hash;
        lazily deleted queue entries, stale expiry entries and the dirty-level set are not
        state.
        """
        data = msgspec.msgpack.encode(self.snapshot())
        return hashlib.blake2b(data, digest_size=32).hexdigest()

    def check_invariants(self) -> None:
        """Verify the internal structure; O(book size), meant for tests and ``debug``.

        Raises:
            AssertionError: level totals, counts, sort order, cached bests, the order,
                stop, account and expiry indices, list pairing or the dedup record
                disagree, or the book is crossed.
        """
        seen: dict[int, _Order] = {}
        for book_side, side in ((self._bids, _BUY), (self._asks, _SELL)):
            keys = list(book_side.keys)
            expected_keys = sorted(price * book_side.sign for price in book_side.levels)
            _check(keys == expected_keys, "price keys disagree with levels")
            _check(book_side.best == (keys[0] if keys else _EMPTY), "stale best key")
            for price, level in book_side.levels.items():
                live = [o for o in level.queue if o.remaining]
                _check(level.price == price and level.book_side is book_side, "level misfiled")
                _check(bool(live), f"empty level {price} kept")
                _check(level.live == len(live), f"level {price} live count")
                _check(level.total == sum(o.remaining for o in live), f"level {price} total")
                for o in live:
                    filed = o.side == side and o.price == price and o.level is level
                    _check(filed, f"order {o.order_id} misfiled")
                    _check(o.order_id not in seen, f"order {o.order_id} queued twice")
                    hidden = o.ext.hidden if o.ext is not None else 0
                    _check(hidden >= 0 and o.qty >= o.remaining + hidden,
                           f"order {o.order_id} quantities")
                    _check(not hidden or (o.ext is not None and o.ext.peak > 0),
                           f"order {o.order_id} hides lots without a peak")
                    seen[o.order_id] = o
        _check(seen.keys() == self._orders.keys(), "order index disagrees with levels")
        keys_up = {s.key for s in self._stops.values() if s.up}
        keys_down = {s.key for s in self._stops.values() if not s.up}
        _check(keys_up == set(self._stops_up) and len(keys_up) == len(self._stops_up),
               "rising stops disagree")
        _check(keys_down == set(self._stops_down) and len(keys_down) == len(self._stops_down),
               "falling stops disagree")
        live_all: dict[int, _Order | _Stop] = {**self._stops, **self._orders}
        _check(len(live_all) == len(self._stops) + len(self._orders), "order rests and waits")
        pending = set(self._expiries)
        for oid, x in live_all.items():
            if isinstance(x, _Order):
                _check(seen[oid] is x, f"order {oid} index points elsewhere")
            _check(oid not in self._recent_set, f"order {oid} both open and finished")
            ext = x.ext
            if ext is None:
                continue
            if ext.gtd:
                _check((ext.gtd, oid) in pending, f"order {oid} has no expiry entry")
            peer = ext.peer
            if peer is not None:
                _check(live_all.get(peer.order_id) is peer, f"order {oid} partner not live")
                _check(peer.ext is not None and peer.ext.peer is x, f"order {oid} pairing")
                _check(peer.ext is not None and peer.ext.list_id == ext.list_id,
                       f"order {oid} list id")
                rests_twice = isinstance(x, _Order) and isinstance(peer, _Order)
                _check(not rests_twice, f"list of {oid} rests twice")
        by_account: dict[int, set[int]] = {}
        for oid, x in live_all.items():
            by_account.setdefault(x.account, set()).add(oid)
        _check(by_account == self._by_account, "account index disagrees")
        _check(set(self._recent) == self._recent_set, "dedup record disagrees")
        _check(len(self._recent) == len(self._recent_set), "dedup record holds an id twice")
        if self._bids.best != _EMPTY and self._asks.best != _EMPTY:
            _check(-self._bids.best < self._asks.best, "book crossed")


def _arrival_of(key: tuple[int, int, int]) -> int:
    return key[1]


def _view(o: _Order) -> RestingOrder:
    ext = o.ext
    if ext is None:
        return RestingOrder(o.order_id, o.account, o.side, o.price, o.remaining, o.qty)
    return RestingOrder(o.order_id, o.account, o.side, o.price, o.remaining, o.qty,
                        ext.hidden, ext.peak, ext.gtd, ext.list_id)


def _resting(book_side: _BookSide) -> list[RestingOrder]:
    return [_view(o) for level in book_side.ordered_levels() for o in level.queue if o.remaining]


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(what)
