"""The matching order book of one symbol: pure, deterministic, price-time priority.

``OrderBook.process(command) -> list[Event]`` is the whole write interface. Prices are
integer ticks, quantities integer lots; the book never reads a clock (every event carries
the command's ``ts``), never performs I/O and allocates trade ids from its own counter, so
the same command log always yields the same events and the same ``state_hash()``.

Layout, chosen for speed in CPython:

* each side keeps ``dict[price, _Level]`` for O(1) level lookup plus a ``SortedList`` of
  *keys* for ordering. A key is the price on the ask side and ``-price`` on the bid side, so
  on both sides the best level is the smallest key and "the taker's limit accepts this
  level" is ``key <= limit_key``: one matching loop serves buyers and sellers;
* a level is a FIFO ``deque`` of ``_Order`` with lazy deletion: a cancel zeroes the
  order's ``remaining`` and the matcher drops such entries when it meets them; a level
  whose dead entries outnumber its live ones is compacted, so memory stays bounded;
* the best key of each side is cached (``_EMPTY`` when the side is empty), which turns the
  "does this order cross?" test into one integer comparison.

Semantics that ``model.py`` leaves open:

* Redelivery: a ``NewOrder`` whose ``order_id`` is live on the book, or among the last
  ``recent_limit`` orders that ended here (filled, canceled, expired or rejected), is a
  redelivered command and produces *no events*: its outcome was published the first time.
* A ``NewOrder`` breaking the book's preconditions (LIMIT / LIMIT_MAKER with a price or
  quantity <= 0; MARKET with a price, with no lot cap unless by quote, by quote without
  ``quote_qty``, or negative caps) ends ``Done(REJECTED, NONE)``. The gateway validates
  first; answering instead of raising keeps one bad command from crashing the engine on
  every replay of the log. ``tif`` is read for LIMIT only and ``quote_qty`` for MARKET only.
* ``CancelAll`` while HALTED is refused once, as ``CancelRejected(order_id=0)``.
* Market orders: see ``OrderBook._market``. Self-trades are allowed (STP none).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable
from itertools import islice
from typing import Final

import msgspec
from sortedcontainers import SortedList

from tradeplane.domain.model import (
    SCHEMA_VERSION,
    Cancel,
    CancelAll,
    CancelRejected,
    Command,
    Done,
    Event,
    NewOrder,
    OrderType,
    Reason,
    Rested,
    SetTrading,
    Side,
    Status,
    TimeInForce,
    Trade,
    TradingChanged,
    TradingState,
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
_FILLED: Final = Status.FILLED
_CANCELED: Final = Status.CANCELED
_REJECTED: Final = Status.REJECTED
_EXPIRED: Final = Status.EXPIRED
_R_NONE: Final = Reason.NONE
_R_WOULD_TAKE: Final = Reason.WOULD_TAKE
_R_NO_LIQUIDITY: Final = Reason.NO_LIQUIDITY
_R_UNKNOWN: Final = Reason.UNKNOWN_ORDER
_R_HALTED: Final = Reason.HALTED
_R_CAP: Final = Reason.CAP_REACHED
_ENABLED: Final = TradingState.ENABLED
_HALTED: Final = TradingState.HALTED


class RestingOrder(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A read-only view of an order resting on the book (also its snapshot form)."""

    order_id: int
    account: int
    side: Side
    price: int
    remaining: int


class BookSnapshot(msgspec.Struct, frozen=True):
    """Everything needed to rebuild a book exactly; encoded by ``domain.codec``.

    ``bids`` and ``asks`` list the live orders in priority order (best level first, FIFO
    within a level); ``recent`` lists the remembered finished order ids, oldest first.
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


class _Order:
    __slots__ = ("account", "level", "order_id", "price", "remaining", "side")

    def __init__(
        self, order_id: int, account: int, side: Side, price: int, remaining: int, level: _Level
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.side = side
        self.price = price
        self.remaining = remaining  # 0 once filled or canceled: a dead queue entry
        self.level = level


class _Level:
    __slots__ = ("book_side", "live", "price", "queue", "total")

    def __init__(self, price: int, book_side: _BookSide) -> None:
        self.price = price
        self.book_side = book_side
        self.queue: deque[_Order] = deque()  # FIFO; may hold dead entries (remaining == 0)
        self.total = 0  # lots of the live orders
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
        self._orders: dict[int, _Order] = {}
        self._by_account: dict[int, set[int]] = {}
        self._trading = _ENABLED
        self._next_trade_id = 1
        self._recent_limit = recent_limit
        self._recent: deque[int] = deque(maxlen=recent_limit)  # finished ids, oldest first
        self._recent_set: set[int] = set()

    # ------------------------------------------------------------------ queries
    @property
    def open_orders_count(self) -> int:
        return len(self._orders)

    @property
    def trading(self) -> TradingState:
        return self._trading

    def best_bid(self) -> int | None:
        best = self._bids.best
        return None if best == _EMPTY else -best

    def best_ask(self) -> int | None:
        best = self._asks.best
        return None if best == _EMPTY else best

    def order(self, order_id: int) -> RestingOrder | None:
        """The live order ``order_id``, or None when it is not resting on the book."""
        o = self._orders.get(order_id)
        if o is None:
            return None
        return RestingOrder(o.order_id, o.account, o.side, o.price, o.remaining)

    def depth(self, limit: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The best ``limit`` levels as ``(price, qty)``: bids descending, asks ascending.

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
        if type(cmd) is NewOrder:
            out = self._new_order(cmd)
        elif type(cmd) is Cancel:
            out = self._cancel(cmd)
        elif type(cmd) is CancelAll:
            out = self._cancel_all(cmd)
        elif type(cmd) is SetTrading:
            self._trading = cmd.state
            out = [TradingChanged(cmd.state, cmd.ts)]
        else:
            raise TypeError(f"not a command: {type(cmd).__name__}")
        if self._debug:
            self.check_invariants()
        return out

    def _new_order(self, cmd: NewOrder) -> list[Event]:
        oid = cmd.order_id
        if oid in self._orders or oid in self._recent_set:
            return []  # redelivered: its outcome was published the first time
        acct = cmd.account
        if self._trading != _ENABLED:
            self._remember(oid)
            return [Done(oid, acct, _REJECTED, _R_HALTED, cmd.ts)]
        typ = cmd.type
        if typ == _MARKET:
            return self._market(cmd)
        price = cmd.price
        qty = cmd.qty
        side = cmd.side
        if side == _BUY:
            opp = self._asks
            own = self._bids
            limit_key = price
        else:
            opp = self._bids
            own = self._asks
            limit_key = -price
        if not (0 < price < _EMPTY and qty > 0 and typ in (_LIMIT, _LIMIT_MAKER)):
            self._remember(oid)
            return [Done(oid, acct, _REJECTED, _R_NONE, cmd.ts)]
        events: list[Event] = []
        if opp.best <= limit_key:
            if typ == _LIMIT_MAKER:
                self._remember(oid)
                return [Done(oid, acct, _REJECTED, _R_WOULD_TAKE, cmd.ts)]
            tif = cmd.tif
            if tif == _FOK and not _can_fill(opp, limit_key, qty):
                self._remember(oid)
                return [Done(oid, acct, _EXPIRED, _R_NO_LIQUIDITY, cmd.ts)]
            qty = self._take(opp, limit_key, cmd, qty, events)
            if not qty:
                self._remember(oid)
                events.append(Done(oid, acct, _FILLED, _R_NONE, cmd.ts))
                return events
            if tif != _GTC:
                self._remember(oid)
                events.append(Done(oid, acct, _EXPIRED, _R_NO_LIQUIDITY, cmd.ts))
                return events
        elif typ == _LIMIT and cmd.tif != _GTC:
            self._remember(oid)
            return [Done(oid, acct, _EXPIRED, _R_NO_LIQUIDITY, cmd.ts)]
        # Rest what remains.
        level = own.levels.get(price)
        if level is None:
            level = own.add_level(price)
        o = _Order(oid, acct, side, price, qty, level)
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
        return events

    def _take(
        self, opp: _BookSide, limit_key: int, cmd: NewOrder, want: int, events: list[Event]
    ) -> int:
        """Match ``want`` lots against ``opp`` up to ``limit_key``; return the lots left."""
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
        tid = self._next_trade_id
        while opp.best <= limit_key:
            price = opp.best * sign
            level = levels[price]
            q = level.queue
            while True:
                m = q[0]
                r = m.remaining
                if not r:
                    q.popleft()
                    continue
                if r > want:
                    m.remaining = r - want
                    level.total -= want
                    append(Trade(tid, price, want, oid, acct, side, m.order_id, m.account, ts))
                    tid += 1
                    want = 0
                    break
                q.popleft()
                m.remaining = 0
                level.total -= r
                level.live -= 1
                want -= r
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
                append(Trade(tid, price, r, oid, acct, side, moid, macct, ts))
                tid += 1
                append(Done(moid, macct, _FILLED, _R_NONE, ts))
                if not want or not level.live:
                    break
            dirty.add(price)
            if not level.live:
                opp.drop_level(level)
            if not want:
                break
        self._next_trade_id = tid
        return want

    def _market(self, cmd: NewOrder) -> list[Event]:
        """Match a market order; its final status is decided from where it stopped.

        Each maker gives ``n = min(its remaining, lots left, quote left // lot cost)`` (caps
        that are 0 do not apply); matching stops when a cap is used up, the book is empty,
        or ``n`` is 0 (the quote left cannot pay one lot at this maker's price).

        By quote: FILLED when something executed and the quote cap is what stopped it
        (``n`` was 0, or the quote is spent exactly); otherwise, the book or the lot cap
        ran out first, EXPIRED(NO_LIQUIDITY). By quantity: FILLED when every lot executed,
        even if the quote cap was spent by the same fill; otherwise EXPIRED(CAP_REACHED)
        when the quote cap stopped it, EXPIRED(NO_LIQUIDITY) when the book ran out.
        """
        oid = cmd.order_id
        acct = cmd.account
        side = cmd.side
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
            return [Done(oid, acct, _REJECTED, _R_NONE, ts)]
        opp = self._asks if side == _BUY else self._bids
        npl = self._npl
        want = qty if qty else _EMPTY  # no lot cap: more lots than any book holds
        quote_left = quote
        quote_stop = False
        executed = False
        events: list[Event] = []
        append = events.append
        levels = opp.levels
        sign = opp.sign
        orders = self._orders
        by_account = self._by_account
        recent = self._recent
        recent_set = self._recent_set
        recent_limit = self._recent_limit
        tid = self._next_trade_id
        while opp.best != _EMPTY and not (quote and not quote_left):
            price = opp.best * sign
            level = levels[price]
            q = level.queue
            lot_cost = price * npl
            while True:
                m = q[0]
                r = m.remaining
                if not r:
                    q.popleft()
                    continue
                n = r if r < want else want
                if quote:
                    fit = quote_left // lot_cost
                    if fit < n:
                        n = fit
                        if not n:
                            quote_stop = True
                            break
                    quote_left -= n * lot_cost
                executed = True
                want -= n
                level.total -= n
                append(Trade(tid, price, n, oid, acct, side, m.order_id, m.account, ts))
                tid += 1
                if n < r:
                    m.remaining = r - n
                else:
                    q.popleft()
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
            opp.dirty.add(price)
            if not level.live:
                opp.drop_level(level)
            if quote_stop or not want:
                break
        self._next_trade_id = tid
        quote_spent = quote_stop or (quote > 0 and not quote_left)
        if by_quote:
            if executed and quote_spent:
                append(Done(oid, acct, _FILLED, _R_NONE, ts))
            else:
                append(Done(oid, acct, _EXPIRED, _R_NO_LIQUIDITY, ts))
        elif not want:
            append(Done(oid, acct, _FILLED, _R_NONE, ts))
        else:
            append(Done(oid, acct, _EXPIRED, _R_CAP if quote_spent else _R_NO_LIQUIDITY, ts))
        self._remember(oid)
        return events

    def _cancel(self, cmd: Cancel) -> list[Event]:
        oid = cmd.order_id
        acct = cmd.account
        if self._trading == _HALTED:
            return [CancelRejected(oid, acct, _R_HALTED, cmd.ts)]
        o = self._orders.get(oid)
        if o is None or o.account != acct:
            return [CancelRejected(oid, acct, _R_UNKNOWN, cmd.ts)]
        self._unlink(o)
        return [Done(oid, acct, _CANCELED, _R_NONE, cmd.ts)]

    def _cancel_all(self, cmd: CancelAll) -> list[Event]:
        acct = cmd.account
        if self._trading == _HALTED:
            # One refusal for the whole request; order id 0 stands for "all".
            return [CancelRejected(0, acct, _R_HALTED, cmd.ts)]
        ids = self._by_account.get(acct)
        if not ids:
            return []
        ts = cmd.ts
        events: list[Event] = []
        orders = self._orders
        for oid in sorted(ids):
            self._unlink(orders[oid])
            events.append(Done(oid, acct, _CANCELED, _R_NONE, ts))
        return events

    def _unlink(self, o: _Order) -> None:
        """Take a live order off the book (cancel) and remember it as finished."""
        level = o.level
        book_side = level.book_side
        level.total -= o.remaining
        level.live -= 1
        o.remaining = 0
        oid = o.order_id
        del self._orders[oid]
        ids = self._by_account[o.account]
        ids.discard(oid)
        if not ids:
            del self._by_account[o.account]
        recent = self._recent
        if len(recent) == self._recent_limit:
            self._recent_set.discard(recent[0])
        recent.append(oid)
        self._recent_set.add(oid)
        book_side.dirty.add(level.price)
        if not level.live:
            book_side.drop_level(level)
            return
        q = level.queue
        if q[0] is o:
            q.popleft()
        elif len(q) > 2 * level.live + _COMPACT_SLACK:
            level.queue = deque(x for x in q if x.remaining)

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
        )

    @classmethod
    def restore(cls, snapshot: BookSnapshot, *, debug: bool = False) -> OrderBook:
        """Rebuild a book from ``snapshot``; it continues exactly as the original would.

        Raises:
            ValueError: the snapshot has an unknown version or is inconsistent (crossed,
                duplicate order ids, non-positive prices or quantities).
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
        for oid in snapshot.recent[-snapshot.recent_limit :]:
            book._remember(oid)
        for side, resting in ((_BUY, snapshot.bids), (_SELL, snapshot.asks)):
            own = book._bids if side == _BUY else book._asks
            for r in resting:
                if r.side != side or r.price <= 0 or r.remaining <= 0 or r.order_id in book._orders:
                    raise ValueError(f"inconsistent book snapshot at order {r.order_id}")
                level = own.levels.get(r.price) or own.add_level(r.price)
                o = _Order(r.order_id, r.account, side, r.price, r.remaining, level)
                level.queue.append(o)
                level.total += r.remaining
                level.live += 1
                book._orders[r.order_id] = o
                book._by_account.setdefault(r.account, set()).add(r.order_id)
        try:
            book.check_invariants()
        except AssertionError as exc:
            raise ValueError(f"inconsistent book snapshot: {exc}") from exc
        return book

    def state_hash(self) -> str:
        """A digest of the full state (blake2b of the canonical snapshot encoding).

        Two books that will answer every future command identically have the same hash;
        lazily deleted queue entries and the dirty-level set are not state.
        """
        data = msgspec.msgpack.encode(self.snapshot())
        return hashlib.blake2b(data, digest_size=32).hexdigest()

    def check_invariants(self) -> None:
        """Verify the internal structure; O(book size), meant for tests and ``debug``.

        Raises:
            AssertionError: level totals, counts, sort order, cached bests, the order and
                account indices or the dedup record disagree, or the book is crossed.
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
                    seen[o.order_id] = o
        _check(seen.keys() == self._orders.keys(), "order index disagrees with levels")
        for oid, o in self._orders.items():
            _check(seen[oid] is o, f"order {oid} index points elsewhere")
            _check(oid not in self._recent_set, f"order {oid} both open and finished")
        by_account: dict[int, set[int]] = {}
        for oid, o in self._orders.items():
            by_account.setdefault(o.account, set()).add(oid)
        _check(by_account == self._by_account, "account index disagrees")
        _check(set(self._recent) == self._recent_set, "dedup record disagrees")
        _check(len(self._recent) == len(self._recent_set), "dedup record holds an id twice")
        if self._bids.best != _EMPTY and self._asks.best != _EMPTY:
            _check(-self._bids.best < self._asks.best, "book crossed")


def _can_fill(opp: _BookSide, limit_key: int, qty: int) -> bool:
    """Whether ``opp`` holds ``qty`` lots at keys up to ``limit_key`` (fill-or-kill)."""
    levels = opp.levels
    sign = opp.sign
    for key in opp.keys:
        if key > limit_key:
            return False
        qty -= levels[key * sign].total
        if qty <= 0:
            return True
    return False


def _resting(book_side: _BookSide) -> list[RestingOrder]:
    return [
        RestingOrder(o.order_id, o.account, o.side, o.price, o.remaining)
        for level in book_side.ordered_levels()
        for o in level.queue
        if o.remaining
    ]


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(what)
