# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, infer_types=False
"""The compiled order book: ``tradeplane.domain.book.OrderBook`` in Cython.

Same ``process()`` contract, same events (the ``model`` types, field for field), same
``BookSnapshot`` and the same ``state_hash()``: the pure-Python book in ``book.py`` is the
specification, and the test suite runs on both (``tests/unit/test_book*.py``) and feeds
them the same random command streams (``test_book_differential.py``).

What differs is only the layout, chosen so the common commands run in C:

* a side keeps its levels in a C array sorted by key (``price * sign``, as in ``book.py``)
  *descending*, so the best level is the last element: reaching it, dropping it and the
  "does this order cross?" test are O(1), and a new level is a binary search plus a short
  ``memmove`` (new levels appear near the top of the book);
* a level is an intrusive doubly linked FIFO of its orders (borrowed pointers: the order
  index ``_open`` owns every live order), so a cancel unlinks in O(1) and there are no
  dead entries to skip or compact;
* each account's open orders form another intrusive list (``_Acct``), replacing the
  ``dict[int, set[int]]`` of ``book.py``;
* resting orders and waiting stops share one ``dict`` (``_open``), so a new order's
  redelivery test is two lookups (``_open`` and the finished-id set); finished ids are a
  ring of int64 plus an open-addressing hash set of them (``_Recent``);
* changed levels are recorded in a C array of prices (a flag on the level avoids most
  duplicates; ``take_dirty_levels`` sorts and de-duplicates);
* events are the ``msgspec`` structs of ``model.py`` built with positional arguments
  (vectorcall), from the command's own ``int`` objects wherever the value is unchanged.

The rare paths (stops, OCO lists, good-till-date, amends, snapshots) follow ``book.py``
line by line over Python objects, as it does (``SortedList`` for the waiting stops, a
``heapq`` of expiries).

One deviation: prices, quantities, ids and accounts are C ``int64`` here. A ``NewOrder``
(or a list leg) with an integer field outside the signed 64-bit range, which the codec's
unsigned 64-bit integers can carry and ``book.py`` would take as a Python ``int``, ends
``Done(REJECTED, NONE)`` (in a list: every leg ``REJECTED``, ``BAD_LIST``) instead of
raising on every replay of the log; an order id beyond 64 bits is not remembered among the
finished ids either (its redelivery is rejected again), and a snapshot holding one is
refused. The gateway's limits keep real orders far below that range.
"""

cimport cython
from libc.stdint cimport int64_t, INT64_MAX, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort, realloc
from libc.string cimport memmove
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF

import hashlib
import heapq

import msgspec
from sortedcontainers import SortedList

from tradeplane.domain.book import DEFAULT_RECENT_LIMIT, BookSnapshot, RestingOrder
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
    Done,
    NewOrder,
    NewOrderList,
    OrderType,
    Reason,
    Rested,
    SetTrading,
    Side,
    Status,
    Tick,
    TimeInForce,
    Trade,
    TradingChanged,
    TradingState,
    Triggered,
    stop_triggers_above,
)

__all__ = ["OrderBook"]

cdef extern from *:
    """
    static inline int tp_mul_overflow(int64_t a, int64_t b, int64_t *out) {
        return __builtin_mul_overflow(a, b, out);
    }
    """
    int tp_mul_overflow(int64_t a, int64_t b, int64_t *out) noexcept nogil

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        const char* name
        int type
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member

DEF T_OBJECT_EX = 16


cdef Py_ssize_t _slot(object tp, str name) except -1:
    """Where ``tp`` (a msgspec Struct) keeps field ``name``: the offset of its slot, read
    from the field's member descriptor once, so the hot path reads a command's fields
    with one load each instead of an attribute lookup."""
    d = tp.__dict__[name]
    if type(d) is not _member_descriptor:
        raise TypeError(f"{tp.__name__}.{name} is not a slot")
    cdef PyMemberDef* m = (<PyMemberDescrObject*>d).d_member
    if m.type != T_OBJECT_EX:
        raise TypeError(f"{tp.__name__}.{name} is not an object slot")
    return m.offset


cdef inline object _get(object obj, Py_ssize_t offset):
    """Field of a command whose exact type is known (see ``_slot``)."""
    cdef PyObject* v = (<PyObject**>(<char*><PyObject*>obj + offset))[0]
    if v == NULL:
        raise AttributeError("command field not set")
    return <object>v


DEF C_EMPTY = 4611686018427387904  # 1 << 62: the best key of an empty side (as book.py)
DEF C_NO_LIMIT = 4611686018427387903  # the limit key of a market order

# Command and event types, bound once: module attribute lookups cost on the hot path.
cdef object _NewOrder = NewOrder
cdef object _Cancel = Cancel
cdef object _CancelAll = CancelAll
cdef object _Tick = Tick
cdef object _Amend = Amend
cdef object _NewOrderList = NewOrderList
cdef object _SetTrading = SetTrading
cdef object _Trade = Trade
cdef object _Rested = Rested
cdef object _Done = Done
cdef object _Accepted = Accepted
cdef object _Triggered = Triggered
cdef object _Amended = Amended
cdef object _AmendRejected = AmendRejected
cdef object _CancelRejected = CancelRejected
cdef object _TradingChanged = TradingChanged
cdef object _RestingOrder = RestingOrder
cdef object _replace = msgspec.structs.replace
cdef object _heappush = heapq.heappush
cdef object _heappop = heapq.heappop

cdef object _member_descriptor = type(Tick.__dict__["ts"])
cdef Py_ssize_t N_ID = _slot(NewOrder, "order_id")
cdef Py_ssize_t N_ACCOUNT = _slot(NewOrder, "account")
cdef Py_ssize_t N_SIDE = _slot(NewOrder, "side")
cdef Py_ssize_t N_TYPE = _slot(NewOrder, "type")
cdef Py_ssize_t N_TIF = _slot(NewOrder, "tif")
cdef Py_ssize_t N_PRICE = _slot(NewOrder, "price")
cdef Py_ssize_t N_QTY = _slot(NewOrder, "qty")
cdef Py_ssize_t N_QUOTE = _slot(NewOrder, "quote_qty")
cdef Py_ssize_t N_BY_QUOTE = _slot(NewOrder, "by_quote")
cdef Py_ssize_t N_TS = _slot(NewOrder, "ts")
cdef Py_ssize_t N_ICEBERG = _slot(NewOrder, "iceberg_qty")
cdef Py_ssize_t N_STP = _slot(NewOrder, "stp")
cdef Py_ssize_t N_GOOD_TILL = _slot(NewOrder, "good_till")
cdef Py_ssize_t N_LIST = _slot(NewOrder, "list_id")
cdef Py_ssize_t C_ID = _slot(Cancel, "order_id")
cdef Py_ssize_t C_ACCOUNT = _slot(Cancel, "account")
cdef Py_ssize_t C_TS = _slot(Cancel, "ts")

cdef object _EMPTY_OBJ = 1 << 62
cdef object _I64_MIN = -(1 << 63)
cdef object _I64_MAX = (1 << 63) - 1
cdef object _BUY = Side.BUY
cdef object _SELL = Side.SELL
cdef object _LIMIT_T = OrderType.LIMIT
cdef object _MARKET_T = OrderType.MARKET
cdef object _LIMIT_MAKER_T = OrderType.LIMIT_MAKER
cdef object _GTD_T = TimeInForce.GTD
cdef object _FILLED = Status.FILLED
cdef object _CANCELED = Status.CANCELED
cdef object _REJECTED = Status.REJECTED
cdef object _EXPIRED = Status.EXPIRED
cdef object _EXPIRED_IN_MATCH = Status.EXPIRED_IN_MATCH
cdef object _R_NONE = Reason.NONE
cdef object _R_WOULD_TAKE = Reason.WOULD_TAKE
cdef object _R_NO_LIQUIDITY = Reason.NO_LIQUIDITY
cdef object _R_UNKNOWN = Reason.UNKNOWN_ORDER
cdef object _R_HALTED = Reason.HALTED
cdef object _R_CAP = Reason.CAP_REACHED
cdef object _R_WOULD_TRIGGER = Reason.WOULD_TRIGGER
cdef object _R_SELF_TRADE = Reason.SELF_TRADE
cdef object _R_GTD = Reason.GTD_EXPIRED
cdef object _R_LIST_DONE = Reason.LIST_DONE
cdef object _R_NOT_AMENDABLE = Reason.NOT_AMENDABLE
cdef object _R_BAD_LIST = Reason.BAD_LIST
cdef object _ENABLED = TradingState.ENABLED
cdef object _LIMIT_STOPS = frozenset({OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT})
cdef object _STOP_TYPES = STOP_TYPES

# The same values as C constants, for the hot path.
DEF BUY = 1
DEF T_LIMIT = 1
DEF T_MARKET = 2
DEF T_LIMIT_MAKER = 3
DEF GTC = 1
DEF FOK = 3
DEF GTD = 4
DEF ENABLED = 1
DEF HALTED = 2
DEF STP_TAKER = 1
DEF STP_BOTH = 3
# Why a taker stopped matching (besides running out of book, limit or lots).
DEF GO = 0
DEF CAP = 1
DEF SELF = 2


@cython.final
cdef class _Ext:
    """What only icebergs, GTD orders and list legs need (as ``book._Ext``)."""
    cdef int64_t peak
    cdef int64_t hidden
    cdef object gtd  # good-till ms as given (0: none); compared with the expiry heap's
    cdef int64_t list_id
    cdef object list_id_obj
    cdef object peer  # the live other leg of the list: _Order, _Stop or None

    def __cinit__(self, int64_t peak, int64_t hidden, object gtd, object list_id):
        self.peak = peak
        self.hidden = hidden
        self.gtd = gtd
        self.list_id = list_id
        self.list_id_obj = list_id
        self.peer = None


@cython.final
cdef class _Acct:
    """The head of one account's intrusive list of open orders (resting and waiting)."""
    cdef PyObject* head  # borrowed: the order index owns every open order
    cdef Py_ssize_t count


cdef class _Open:
    """What resting orders and waiting stops share: identity and the account list."""
    cdef object oid  # the order id as given (an int)
    cdef object acct  # the account as given (an int)
    cdef int64_t account
    cdef _Ext ext
    cdef _Acct accts
    cdef PyObject* aprev
    cdef PyObject* anext


@cython.final
cdef class _Order(_Open):
    """A resting order: an element of its level's FIFO."""
    cdef object side  # as given (a Side)
    cdef int side_i
    cdef int64_t price
    cdef int64_t remaining  # visible lots
    cdef int64_t qty  # original quantity (as amended)
    cdef PyObject* level  # borrowed: a level lives as long as it holds an order
    cdef PyObject* prev
    cdef PyObject* next


@cython.final
cdef class _Stop(_Open):
    """A stop order waiting for its trigger; ``cmd`` is its command (quantity as amended)."""
    cdef object cmd
    cdef tuple key  # its entry in the up or down list: (stop key, arrival, id)
    cdef bint up
    cdef int64_t arrival


@cython.final
cdef class _Level:
    cdef int64_t price
    cdef object price_obj
    cdef int64_t total  # visible lots of its orders
    cdef Py_ssize_t live  # number of orders
    cdef PyObject* head
    cdef PyObject* tail
    cdef bint dirty  # its price is in its side's dirty array

    cdef inline void append(self, _Order o) noexcept:
        o.prev = self.tail
        o.next = NULL
        if self.tail != NULL:
            (<_Order>self.tail).next = <PyObject*>o
        else:
            self.head = <PyObject*>o
        self.tail = <PyObject*>o

    cdef inline void unlink(self, _Order o) noexcept:
        if o.prev != NULL:
            (<_Order>o.prev).next = o.next
        else:
            self.head = o.next
        if o.next != NULL:
            (<_Order>o.next).prev = o.prev
        else:
            self.tail = o.prev
        o.prev = NULL
        o.next = NULL


cdef int _cmp_i64(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<int64_t*>a)[0]
    cdef int64_t y = (<int64_t*>b)[0]
    return (x > y) - (x < y)


@cython.final
cdef class _Side:
    """One side's levels, sorted by key descending (the best level last)."""
    cdef int64_t sign  # key = price * sign: +1 for asks, -1 for bids
    cdef int64_t* keys
    cdef PyObject** lv  # owned references to _Level
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    cdef int64_t* dirty  # prices changed since take_dirty_levels (may repeat)
    cdef Py_ssize_t ndirty
    cdef Py_ssize_t dcap

    def __cinit__(self, int64_t sign):
        self.sign = sign
        self.cap = 64
        self.keys = <int64_t*>malloc(self.cap * sizeof(int64_t))
        self.lv = <PyObject**>malloc(self.cap * sizeof(PyObject*))
        self.dcap = 64
        self.dirty = <int64_t*>malloc(self.dcap * sizeof(int64_t))
        if self.keys == NULL or self.lv == NULL or self.dirty == NULL:
            raise MemoryError()
        self.n = 0
        self.ndirty = 0

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.lv != NULL:
            for i in range(self.n):
                (<_Level>self.lv[i]).head = NULL
                (<_Level>self.lv[i]).tail = NULL
                Py_DECREF(<object>self.lv[i])
        free(self.keys)
        free(self.lv)
        free(self.dirty)

    cdef inline int64_t best(self) noexcept:
        return self.keys[self.n - 1] if self.n else C_EMPTY

    cdef inline Py_ssize_t lower(self, int64_t key) noexcept:
        """The first index whose key is <= ``key`` (keys descend)."""
        cdef Py_ssize_t lo = 0, hi = self.n, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.keys[mid] > key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef inline _Level get(self, int64_t price):
        cdef int64_t key = price * self.sign
        cdef Py_ssize_t i
        # Most lookups are at or near the top of the book (the end of the array).
        if self.n and self.keys[self.n - 1] == key:
            return <_Level>self.lv[self.n - 1]
        i = self.lower(key)
        if i < self.n and self.keys[i] == key:
            return <_Level>self.lv[i]
        return None

    cdef _Level add_level(self, int64_t price, object price_obj):
        cdef int64_t key = price * self.sign
        cdef Py_ssize_t i = self.lower(key)
        cdef _Level level = _Level.__new__(_Level)
        level.price = price
        level.price_obj = price_obj
        if self.n == self.cap:
            self._grow()
        if i < self.n:
            memmove(&self.keys[i + 1], &self.keys[i], (self.n - i) * sizeof(int64_t))
            memmove(&self.lv[i + 1], &self.lv[i], (self.n - i) * sizeof(PyObject*))
        self.keys[i] = key
        Py_INCREF(level)
        self.lv[i] = <PyObject*>level
        self.n += 1
        return level

    cdef void _grow(self) except *:
        cdef Py_ssize_t cap = self.cap * 2
        cdef int64_t* keys = <int64_t*>realloc(self.keys, cap * sizeof(int64_t))
        if keys == NULL:
            raise MemoryError()
        self.keys = keys
        cdef PyObject** lv = <PyObject**>realloc(self.lv, cap * sizeof(PyObject*))
        if lv == NULL:
            raise MemoryError()
        self.lv = lv
        self.cap = cap

    cdef void drop_level(self, _Level level) noexcept:
        cdef int64_t key = level.price * self.sign
        cdef Py_ssize_t i
        if self.keys[self.n - 1] == key:
            i = self.n - 1
        else:
            i = self.lower(key)
        self.n -= 1
        if i < self.n:
            memmove(&self.keys[i], &self.keys[i + 1], (self.n - i) * sizeof(int64_t))
            memmove(&self.lv[i], &self.lv[i + 1], (self.n - i) * sizeof(PyObject*))
        Py_DECREF(level)

    cdef inline int mark(self, _Level level) except -1:
        cdef int64_t* d
        if level.dirty:
            return 0
        level.dirty = True
        if self.ndirty == self.dcap:
            d = <int64_t*>realloc(self.dirty, self.dcap * 2 * sizeof(int64_t))
            if d == NULL:
                raise MemoryError()
            self.dirty = d
            self.dcap *= 2
        self.dirty[self.ndirty] = level.price
        self.ndirty += 1
        return 0

    cdef list take_dirty(self, int side):
        cdef list out = []
        cdef Py_ssize_t i
        cdef int64_t price, prev = 0
        cdef _Level level
        if not self.ndirty:
            return out
        qsort(self.dirty, self.ndirty, sizeof(int64_t), _cmp_i64)
        for i in range(self.ndirty):
            price = self.dirty[i]
            if i and price == prev:
                continue
            prev = price
            level = self.get(price)
            if level is None:
                out.append((side, price, 0))
            else:
                level.dirty = False
                out.append((side, level.price_obj, level.total))
        self.ndirty = 0
        return out


@cython.final
cdef class _Recent:
    """The last ``limit`` finished order ids, oldest first (``book.py``'s deque and set):
    a ring of int64 plus an open-addressing hash set of them (linear probing, Fibonacci
    hashing, backward-shift deletion, load at most 1/2). Both grow to their full size as
    ids arrive, so a book that finishes few orders stays small."""
    cdef Py_ssize_t limit
    cdef int64_t* ring
    cdef Py_ssize_t rcap  # allocated ring entries; ``limit`` once full
    cdef Py_ssize_t start  # oldest entry once full (0 before)
    cdef Py_ssize_t n
    cdef int64_t* tab  # 0: an empty slot; the id 0 itself is ``has_zero``
    cdef Py_ssize_t mask
    cdef int shift
    cdef bint has_zero

    def __cinit__(self, Py_ssize_t limit):
        self.limit = limit
        self.rcap = min(limit, 1024)
        self.ring = <int64_t*>malloc(self.rcap * sizeof(int64_t))
        if self.ring == NULL:
            raise MemoryError()
        self._alloc(2048)

    def __dealloc__(self):
        free(self.ring)
        free(self.tab)

    cdef int _alloc(self, Py_ssize_t cap) except -1:
        self.tab = <int64_t*>calloc(cap, sizeof(int64_t))
        if self.tab == NULL:
            raise MemoryError()
        self.mask = cap - 1
        self.shift = 64
        while cap > 1:
            cap >>= 1
            self.shift -= 1
        return 0

    cdef inline Py_ssize_t _slot(self, int64_t k) noexcept:
        return <Py_ssize_t>((<uint64_t>k * <uint64_t>0x9E3779B97F4A7C15) >> self.shift)

    cdef bint has(self, int64_t k) noexcept:
        cdef Py_ssize_t i
        cdef int64_t v
        if k == 0:
            return self.has_zero
        i = self._slot(k)
        while True:
            v = self.tab[i]
            if v == k:
                return True
            if v == 0:
                return False
            i = (i + 1) & self.mask

    cdef void _insert(self, int64_t k) noexcept:
        """Put ``k`` (absent) in the set; the caller keeps room."""
        cdef Py_ssize_t i
        if k == 0:
            self.has_zero = True
            return
        i = self._slot(k)
        while self.tab[i] != 0:
            i = (i + 1) & self.mask
        self.tab[i] = k

    cdef void _delete(self, int64_t k) noexcept:
        cdef Py_ssize_t i, j, h
        cdef int64_t v
        cdef bint stays
        if k == 0:
            self.has_zero = False
            return
        i = self._slot(k)
        while self.tab[i] != k:
            if self.tab[i] == 0:
                return  # not there
            i = (i + 1) & self.mask
        # Close the hole: move back every later entry of the run whose home slot does not
        # lie cyclically in (hole, its slot].
        j = i
        while True:
            j = (j + 1) & self.mask
            v = self.tab[j]
            if v == 0:
                break
            h = self._slot(v)
            if i <= j:
                stays = i < h <= j
            else:
                stays = h > i or h <= j
            if not stays:
                self.tab[i] = v
                i = j
        self.tab[i] = 0

    cdef int add(self, int64_t k) except -1:
        """Remember ``k`` as the newest id, forgetting the oldest when full."""
        cdef int64_t* ring
        cdef int64_t* old
        cdef Py_ssize_t cap, i
        if self.has(k):
            return 0  # cannot happen (an id finishes once while remembered); kept single
        if self.n == self.limit:
            self._delete(self.ring[self.start])
            self.ring[self.start] = k
            self.start += 1
            if self.start == self.limit:
                self.start = 0
        else:
            if self.n == self.rcap:
                cap = min(self.limit, self.rcap * 2)
                ring = <int64_t*>realloc(self.ring, cap * sizeof(int64_t))
                if ring == NULL:
                    raise MemoryError()
                self.ring = ring
                self.rcap = cap
            self.ring[self.n] = k
            self.n += 1
            if 2 * (self.n + 1) > self.mask + 1:
                old = self.tab
                cap = self.mask + 1
                self._alloc(cap * 2)
                for i in range(cap):
                    if old[i] != 0:
                        self._insert(old[i])
                free(old)
        self._insert(k)
        return 0

    cdef list ids(self):
        """Oldest first."""
        cdef Py_ssize_t i
        return [self.ring[(self.start + i) % self.rcap] for i in range(self.n)]

    cdef Py_ssize_t stored(self) noexcept:
        """Ids in the set (for the invariant check)."""
        cdef Py_ssize_t i, count = 1 if self.has_zero else 0
        for i in range(self.mask + 1):
            if self.tab[i] != 0:
                count += 1
        return count


cdef class OrderBook:
    """The order book of one symbol, compiled; see ``tradeplane.domain.book.OrderBook``
    (the specification) and this module's docstring.

    Raises:
        ValueError: ``notional_per_tick_lot`` or ``recent_limit`` is not positive.
    """
    cdef public object symbol
    cdef int64_t _npl
    cdef object _npl_obj
    cdef bint _debug
    cdef _Side _bids
    cdef _Side _asks
    cdef dict _open  # order id -> _Order (resting) or _Stop (waiting)
    cdef Py_ssize_t _nstops
    cdef object _stops_up  # SortedList of (stop price, arrival, id)
    cdef object _stops_down  # SortedList of (-stop price, arrival, id)
    cdef int64_t _arrival
    cdef dict _accounts  # account -> _Acct
    cdef list _expiries  # heap of (good_till, id); may be stale
    cdef int64_t _last_price
    cdef int64_t _touch_lo
    cdef int64_t _touch_hi
    cdef object _trading
    cdef int64_t _trading_i
    cdef int64_t _next_trade_id
    cdef Py_ssize_t _recent_limit
    cdef _Recent _recent  # finished ids
    # _match's second and third results
    cdef int64_t _m_quote_left
    cdef int _m_why

    def __init__(self, symbol, notional_per_tick_lot, *, debug=False,
                 recent_limit=DEFAULT_RECENT_LIMIT):
        if notional_per_tick_lot <= 0:
            raise ValueError("notional_per_tick_lot must be positive")
        if recent_limit <= 0:
            raise ValueError("recent_limit must be positive")
        self.symbol = symbol
        self._npl = notional_per_tick_lot
        self._npl_obj = notional_per_tick_lot
        self._debug = bool(debug)
        self._bids = _Side(-1)
        self._asks = _Side(1)
        self._open = {}
        self._nstops = 0
        self._stops_up = SortedList()
        self._stops_down = SortedList()
        self._arrival = 0
        self._accounts = {}
        self._expiries = []
        self._last_price = 0
        self._touch_lo = 0
        self._touch_hi = 0
        self._trading = _ENABLED
        self._trading_i = ENABLED
        self._next_trade_id = 1
        self._recent_limit = recent_limit
        self._recent = _Recent(recent_limit)

    # ------------------------------------------------------------------ queries
    @property
    def open_orders_count(self):
        """Resting plus waiting stop orders."""
        return len(self._open)

    @property
    def trading(self):
        return self._trading

    @property
    def last_price(self):
        """The price of the last trade in ticks, None before the first."""
        return self._last_price or None

    def best_bid(self):
        cdef int64_t best = self._bids.best()
        return None if best == C_EMPTY else -best

    def best_ask(self):
        cdef int64_t best = self._asks.best()
        return None if best == C_EMPTY else best

    def order(self, order_id):
        """The live order ``order_id``, or None when it is not resting on the book."""
        o = self._open.get(order_id)
        if type(o) is not _Order:
            return None
        return _view(<_Order>o)

    def stop_orders(self):
        """The waiting stop orders in placement order (quantities as amended)."""
        stops = [s for s in self._open.values() if type(s) is _Stop]
        stops.sort(key=_arrival_key)
        return [(<_Stop>s).cmd for s in stops]

    def next_expiry(self):
        """The earliest good-till time (ms) of a live GTD order, or None."""
        cdef list heap = self._expiries
        cdef _Open o
        while heap:
            gtd, oid = heap[0]
            x = self._open.get(oid)
            if x is not None:
                o = <_Open>x
                if o.ext is not None and o.ext.gtd == gtd:
                    return gtd
            _heappop(heap)  # that order ended meanwhile
        return None

    def depth(self, limit):
        """The best ``limit`` levels as ``(price, visible qty)``: bids descending, asks
        ascending.

        Raises:
            ValueError: ``limit`` is negative.
        """
        if limit < 0:
            raise ValueError("depth limit must be >= 0")
        return (_levels(self._bids, limit), _levels(self._asks, limit))

    def take_dirty_levels(self):
        """``(side, price, qty)`` of every level changed since the last call (qty 0 = gone).

        Sorted by side (bids first) then price ascending; the change set is reset.
        """
        cdef list out = self._bids.take_dirty(1)
        out.extend(self._asks.take_dirty(2))
        return out

    # ------------------------------------------------------------------ commands
    def process(self, cmd):
        """Apply one command and return its events, in the order they happened.

        Raises:
            TypeError: ``cmd`` is not one of the ``Command`` types.
            AssertionError: only with ``debug=True``, when an internal invariant breaks.
        """
        cdef list out
        cdef _Order o
        t = type(cmd)
        if t is _NewOrder:
            out = self._new_order(cmd)
        elif t is _Cancel:
            x = self._open.get(_get(cmd, C_ID))
            if (x is not None and type(x) is _Order and self._trading_i != HALTED
                    and (<_Order>x).ext is None
                    and (<_Order>x).acct == _get(cmd, C_ACCOUNT)):
                o = <_Order>x
                self._finish_order(o)  # the plain cancel: 30% of traffic
                out = [_Done(o.oid, o.acct, _CANCELED, _R_NONE, _get(cmd, C_TS))]
            else:
                out = self._cancel(cmd)
        elif t is _Tick:
            out = self._tick(cmd.ts)
        elif t is _Amend:
            out = self._amend(cmd)
        elif t is _NewOrderList:
            out = self._new_list(cmd)
        elif t is _CancelAll:
            out = self._cancel_all(cmd)
        elif t is _SetTrading:
            self._trading = cmd.state
            self._trading_i = cmd.state
            out = [_TradingChanged(cmd.state, cmd.ts)]
        else:
            raise TypeError(f"not a command: {t.__name__}")
        if self._debug:
            self.check_invariants()
        return out

    cdef list _new_order(self, cmd):
        oid = _get(cmd, N_ID)
        if oid in self._open or self._finished(oid):
            return []  # redelivered: its outcome was published the first time
        if self._trading_i != ENABLED:
            self._remember(oid)
            return [_Done(oid, cmd.account, _REJECTED, _R_HALTED, cmd.ts)]
        if not _fits(cmd):
            self._remember(oid)
            return [_Done(oid, cmd.account, _REJECTED, _R_NONE, cmd.ts)]
        cdef list events = []
        cdef int typ = _get(cmd, N_TYPE)
        if typ == T_LIMIT or typ == T_LIMIT_MAKER:
            self._limit(cmd, events)
        elif typ == T_MARKET:
            self._market(cmd, events)
        else:
            refusal = self._stop_refusal(cmd)
            if refusal is None:
                self._park(cmd, None, events)
            else:
                self._remember(oid)
                events.append(_Done(oid, cmd.account, _REJECTED, refusal, cmd.ts))
        if self._touch_hi:
            self._run_triggers(cmd.ts, events)
        return events

    cdef int _limit(self, cmd, list events) except -1:
        """A LIMIT or LIMIT_MAKER order (or a triggered stop-limit, as LIMIT)."""
        oid = _get(cmd, N_ID)
        acct_o = _get(cmd, N_ACCOUNT)
        ts = _get(cmd, N_TS)
        side_o = _get(cmd, N_SIDE)
        price_o = _get(cmd, N_PRICE)
        qty_o = _get(cmd, N_QTY)
        cdef int64_t price = price_o
        cdef int64_t qty = qty_o
        cdef int side_i = side_o
        cdef int tif = _get(cmd, N_TIF)
        cdef _Side opp, own
        cdef int64_t limit_key
        if side_i == BUY:
            opp = self._asks
            own = self._bids
            limit_key = price
        else:
            opp = self._bids
            own = self._asks
            limit_key = -price
        if not (0 < price < C_EMPTY and qty > 0) or (tif == GTD and cmd.good_till <= ts):
            self._remember(oid)
            events.append(_Done(oid, acct_o, _REJECTED, _R_NONE, ts))
            return 0
        cdef int typ = _get(cmd, N_TYPE)
        cdef int64_t acct = acct_o
        cdef int64_t orig_qty = qty
        cdef int64_t stp
        if opp.best() <= limit_key:
            if typ == T_LIMIT_MAKER:
                self._remember(oid)
                events.append(_Done(oid, acct_o, _REJECTED, _R_WOULD_TAKE, ts))
                return 0
            stp = _get(cmd, N_STP)
            if tif == FOK and not self._can_fill(opp, limit_key, qty, acct, stp):
                self._remember(oid)
                events.append(_Done(oid, acct_o, _EXPIRED, _R_NO_LIQUIDITY, ts))
                return 0
            qty = self._match(opp, limit_key, oid, acct_o, acct, side_o, ts, qty, 0, stp,
                              events)
            if self._m_why:
                self._remember(oid)
                events.append(_Done(oid, acct_o, _EXPIRED_IN_MATCH, _R_SELF_TRADE, ts))
                return 0
            if not qty:
                self._remember(oid)
                events.append(_Done(oid, acct_o, _FILLED, _R_NONE, ts))
                return 0
            if tif != GTC and tif != GTD:
                self._remember(oid)
                events.append(_Done(oid, acct_o, _EXPIRED, _R_NO_LIQUIDITY, ts))
                return 0
            qty_o = qty
        elif tif != GTC and tif != GTD and typ == T_LIMIT:
            self._remember(oid)
            events.append(_Done(oid, acct_o, _EXPIRED, _R_NO_LIQUIDITY, ts))
            return 0
        if tif == GTD or _get(cmd, N_ICEBERG):
            self._rest(cmd, qty, None, events)
            return 0
        # A plain order rests: most of the traffic.
        cdef _Level level = own.get(price)
        if level is None:
            level = own.add_level(price, price_o)
        cdef _Order o = _Order.__new__(_Order)
        o.oid = oid
        o.acct = acct_o
        o.account = acct
        o.side = side_o
        o.side_i = side_i
        o.price = price
        o.remaining = qty
        o.qty = orig_qty
        o.level = <PyObject*>level
        level.append(o)
        level.total += qty
        level.live += 1
        own.mark(level)
        self._open[oid] = o
        self._acct_add(o)
        events.append(_Rested(oid, acct_o, side_o, price_o, qty_o, ts))
        return 0

    cdef _Order _rest(self, cmd, int64_t qty, _Ext ext, list events):
        """Put ``qty`` lots of ``cmd`` on its side of the book (``ext``: a list leg's)."""
        oid = cmd.order_id
        acct_o = cmd.account
        side_o = cmd.side
        price_o = cmd.price
        cdef int64_t price = price_o
        cdef int side_i = side_o
        cdef _Side own = self._bids if side_i == BUY else self._asks
        cdef _Level level = own.get(price)
        if level is None:
            level = own.add_level(price, price_o)
        cdef int64_t visible = qty
        cdef int64_t peak = cmd.iceberg_qty
        gtd = cmd.good_till if <int>cmd.tif == GTD else 0
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
                _heappush(self._expiries, (gtd, oid))
        cdef _Order o = _Order.__new__(_Order)
        o.oid = oid
        o.acct = acct_o
        o.account = acct_o
        o.side = side_o
        o.side_i = side_i
        o.price = price
        o.remaining = visible
        o.qty = cmd.qty
        o.ext = ext
        o.level = <PyObject*>level
        level.append(o)
        level.total += visible
        level.live += 1
        own.mark(level)
        self._open[oid] = o
        self._acct_add(o)
        events.append(_Rested(oid, acct_o, side_o, price_o, qty, cmd.ts))
        return o

    cdef int64_t _match(self, _Side opp, int64_t limit_key, object oid, object acct_o,
                        int64_t acct, object side_o, object ts, int64_t want, int64_t quote,
                        int64_t stp, list events) except? -1:
        """Match ``want`` lots of the taker against ``opp`` up to ``limit_key``, as
        ``book.OrderBook._match``; returns the lots left and sets ``_m_quote_left`` and
        ``_m_why``."""
        cdef int64_t quote_left = quote
        cdef int why = GO
        cdef int64_t lo = 0, hi = 0, last = 0
        cdef int64_t tid = self._next_trade_id
        cdef int64_t level_tid, price, lot_cost, r, n, fit, refill
        cdef _Level level
        cdef _Order m
        cdef _Ext ext
        while opp.n and opp.keys[opp.n - 1] <= limit_key:
            level = <_Level>opp.lv[opp.n - 1]
            price = level.price
            if tp_mul_overflow(price, self._npl, &lot_cost):
                lot_cost = INT64_MAX  # more than any quote cap: not one lot fits
            level_tid = tid
            while True:
                m = <_Order>level.head
                r = m.remaining
                if stp and m.account == acct:
                    if stp == STP_TAKER:
                        why = SELF
                        break
                    self._expire_maker(m, level, ts, events)
                    if stp == STP_BOTH:
                        why = SELF
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
                            why = CAP
                            break
                    quote_left -= n * lot_cost
                ext = m.ext
                if ext is not None and ext.peer is not None:
                    self._end_peer(ext, _EXPIRED, _R_LIST_DONE, ts, events)
                events.append(_Trade(tid, level.price_obj, n, oid, acct_o, side_o, m.oid,
                                     m.acct, ts))
                tid += 1
                want -= n
                level.total -= n
                if n < r:
                    m.remaining = r - n
                else:
                    level.unlink(m)
                    if ext is not None and ext.hidden:
                        # Iceberg refill: shown again at the back of the queue.
                        refill = ext.peak if ext.peak < ext.hidden else ext.hidden
                        ext.hidden -= refill
                        m.remaining = refill
                        level.total += refill
                        level.append(m)
                    else:
                        m.remaining = 0
                        level.live -= 1
                        del self._open[m.oid]
                        self._acct_drop(m)
                        self._remember(m.oid)
                        events.append(_Done(m.oid, m.acct, _FILLED, _R_NONE, ts))
                if not want or not level.live or (quote and not quote_left):
                    break
            if tid != level_tid:
                last = price
                if not lo or price < lo:
                    lo = price
                if price > hi:
                    hi = price
            opp.mark(level)
            if not level.live:
                opp.drop_level(level)
            if why or not want or (quote and not quote_left):
                break
        self._next_trade_id = tid
        if last:
            self._last_price = last
            if not self._nstops:
                pass  # nothing can trigger
            elif not self._touch_hi:
                self._touch_lo = lo
                self._touch_hi = hi
            else:
                self._touch_lo = min(self._touch_lo, lo)
                self._touch_hi = max(self._touch_hi, hi)
        self._m_quote_left = quote_left
        self._m_why = why
        return want

    cdef int _market(self, cmd, list events) except -1:
        """Match a market order (or a triggered stop-market), as ``book.OrderBook._market``."""
        oid = _get(cmd, N_ID)
        acct_o = _get(cmd, N_ACCOUNT)
        ts = _get(cmd, N_TS)
        cdef int64_t qty = _get(cmd, N_QTY)
        cdef int64_t quote = _get(cmd, N_QUOTE)
        cdef bint by_quote = _get(cmd, N_BY_QUOTE)
        if (_get(cmd, N_PRICE) != 0 or qty < 0 or quote < 0 or not (qty or by_quote)
                or (by_quote and not quote)):
            self._remember(oid)
            events.append(_Done(oid, acct_o, _REJECTED, _R_NONE, ts))
            return 0
        side_o = _get(cmd, N_SIDE)
        cdef _Side opp = self._asks if <int>side_o == BUY else self._bids
        cdef int64_t want = qty if qty else C_EMPTY  # no lot cap: more than any book holds
        cdef int64_t tid = self._next_trade_id
        want = self._match(opp, C_NO_LIMIT, oid, acct_o, acct_o, side_o, ts, want, quote,
                           _get(cmd, N_STP), events)
        cdef bint executed = self._next_trade_id != tid
        cdef int why = self._m_why
        cdef bint quote_spent = why == CAP or (quote > 0 and not self._m_quote_left)
        self._remember(oid)
        if why == SELF:
            events.append(_Done(oid, acct_o, _EXPIRED_IN_MATCH, _R_SELF_TRADE, ts))
        elif by_quote:
            if executed and quote_spent:
                events.append(_Done(oid, acct_o, _FILLED, _R_NONE, ts))
            else:
                events.append(_Done(oid, acct_o, _EXPIRED, _R_NO_LIQUIDITY, ts))
        elif not want:
            events.append(_Done(oid, acct_o, _FILLED, _R_NONE, ts))
        else:
            events.append(_Done(oid, acct_o, _EXPIRED, _R_CAP if quote_spent else _R_NO_LIQUIDITY,
                                ts))
        return 0

    cdef bint _can_fill(self, _Side opp, int64_t limit_key, int64_t qty, int64_t acct,
                        int64_t stp) except -1:
        """Whether ``opp`` holds ``qty`` executable lots at keys up to ``limit_key`` (FOK)."""
        cdef Py_ssize_t i
        cdef _Level level
        cdef PyObject* p
        cdef _Order m
        for i in range(opp.n - 1, -1, -1):
            if opp.keys[i] > limit_key:
                return False
            level = <_Level>opp.lv[i]
            p = level.head
            while p != NULL:
                m = <_Order>p
                p = m.next
                if stp and m.account == acct:
                    if stp == STP_TAKER or stp == STP_BOTH:
                        return False
                    continue  # EXPIRE_MAKER: expired, not executed
                qty -= m.remaining + (m.ext.hidden if m.ext is not None else 0)
                if qty <= 0:
                    return True
        return False

    # ------------------------------------------------------------------ stops
    cdef object _stop_refusal(self, cmd):
        """Why a stop order (or a stop leg) cannot be accepted now; None when it can."""
        typ = cmd.type
        sp = cmd.stop_price
        if typ not in _STOP_TYPES or not 0 < sp < _EMPTY_OBJ or cmd.qty <= 0 or cmd.by_quote:
            return _R_NONE
        if typ in _LIMIT_STOPS:
            if not 0 < cmd.price < _EMPTY_OBJ:
                return _R_NONE
        elif cmd.price != 0 or cmd.quote_qty < 0:
            return _R_NONE
        if cmd.tif == _GTD_T and cmd.good_till <= cmd.ts:
            return _R_NONE
        last = self._last_price
        if last and ((last >= sp) if stop_triggers_above(typ, cmd.side) else (last <= sp)):
            return _R_WOULD_TRIGGER
        return None

    cdef _Stop _park(self, cmd, _Ext ext, list events):
        """Make ``cmd`` (already validated) wait for its trigger."""
        oid = cmd.order_id
        self._arrival += 1
        up = stop_triggers_above(cmd.type, cmd.side)
        sp = cmd.stop_price
        key = (sp, self._arrival, oid) if up else (-sp, self._arrival, oid)
        if cmd.tif == _GTD_T:
            if ext is None:
                ext = _Ext(0, 0, 0, 0)
            ext.gtd = cmd.good_till
            _heappush(self._expiries, (cmd.good_till, oid))
        cdef _Stop s = _Stop.__new__(_Stop)
        s.cmd = cmd
        s.oid = oid
        s.acct = cmd.account
        s.account = s.acct
        s.key = key
        s.up = up
        s.arrival = self._arrival
        s.ext = ext
        (self._stops_up if up else self._stops_down).add(key)
        self._open[oid] = s
        self._nstops += 1
        self._acct_add(s)
        if events is not None:
            events.append(_Accepted(oid, cmd.account, cmd.ts))
        return s

    cdef int _run_triggers(self, ts, list events) except -1:
        """Trigger every stop the traded price range reached, in placement order, until
        the trades of triggered orders trigger no more."""
        up = self._stops_up
        down = self._stops_down
        cdef int64_t lo, hi
        cdef list fired
        while self._touch_hi:
            lo = self._touch_lo
            hi = self._touch_hi
            self._touch_lo = 0
            self._touch_hi = 0
            fired = []
            while up and up[0][0] <= hi:
                fired.append(up.pop(0))
            while down and -down[0][0] >= lo:
                fired.append(down.pop(0))
            fired.sort(key=_arrival_of)
            for key in fired:
                s = self._open.get(key[2])
                if type(s) is _Stop and (<_Stop>s).key == key:  # not ended as a partner
                    self._trigger(<_Stop>s, ts, events)
        return 0

    cdef int _trigger(self, _Stop s, ts, list events) except -1:
        oid = s.oid
        acct = s.acct
        del self._open[oid]
        self._nstops -= 1
        self._acct_drop(s)
        ext = s.ext
        if ext is not None and s.ext.peer is not None:
            self._end_peer(s.ext, _EXPIRED, _R_LIST_DONE, ts, events)
        events.append(_Triggered(oid, acct, self._last_price, ts))
        cmd = s.cmd
        if cmd.tif == _GTD_T and cmd.good_till <= ts:
            self._remember(oid)  # its time ran out before the Tick that would expire it
            events.append(_Done(oid, acct, _EXPIRED, _R_GTD, ts))
            return 0
        if cmd.type in _LIMIT_STOPS:
            self._limit(_replace(cmd, type=_LIMIT_T, ts=ts), events)
        else:
            self._market(_replace(cmd, type=_MARKET_T, ts=ts), events)
        return 0

    # ------------------------------------------------------------------ lists
    cdef list _new_list(self, cmd):
        legs = cmd.legs
        ids = list(dict.fromkeys(leg.order_id for leg in legs))
        if any(i in self._open or self._finished(i) for i in ids):
            return []  # redelivered
        ts = cmd.ts
        acct = cmd.account
        if self._trading_i != ENABLED:
            refusals = [_R_HALTED] * len(legs)
        elif not all(type(leg) is _NewOrder and _fits(leg) for leg in legs):
            refusals = [_R_BAD_LIST] * len(legs)  # integers beyond 64 bits: see the module doc
        elif (
            len(legs) != 2
            or len(ids) != 2
            or not cmd.list_id
            or any(leg.account != acct or leg.list_id != cmd.list_id or leg.side != legs[0].side
                   or (leg.type != _LIMIT_MAKER_T and leg.type not in _STOP_TYPES)
                   for leg in legs)
            or legs[0].type == legs[1].type == _LIMIT_MAKER_T
        ):
            refusals = [_R_BAD_LIST] * len(legs)
        else:
            refusals = [self._leg_refusal(leg) for leg in legs]
        cdef list events = []
        if any(r is not None for r in refusals):
            refused = set()
            for leg, r in zip(legs, refusals, strict=True):
                if leg.order_id not in refused:  # a list naming one id twice ends it once
                    refused.add(leg.order_id)
                    self._remember(leg.order_id)
                    events.append(_Done(leg.order_id, acct, _REJECTED, r or _R_BAD_LIST, ts))
            return events
        placed = []
        for leg in legs:
            ext = _Ext(0, 0, 0, cmd.list_id)
            if leg.type == _LIMIT_MAKER_T:
                placed.append(self._rest(leg, leg.qty, ext, events))
            else:
                placed.append(self._park(leg, ext, events))
        a, b = placed
        (<_Open>a).ext.peer = b
        (<_Open>b).ext.peer = a
        return events

    cdef object _leg_refusal(self, leg):
        if leg.type != _LIMIT_MAKER_T:
            return self._stop_refusal(leg)
        if not (0 < leg.price < _EMPTY_OBJ and leg.qty > 0):
            return _R_NONE
        if leg.tif == _GTD_T and leg.good_till <= leg.ts:
            return _R_NONE
        if leg.side == _BUY:
            crosses = self._asks.best() <= leg.price
        else:
            crosses = self._bids.best() <= -leg.price
        return _R_WOULD_TAKE if crosses else None

    cdef int _end_peer(self, _Ext ext, status, reason, ts, list events) except -1:
        """End the live list partner of the order whose ``ext`` this is."""
        cdef _Open peer = <_Open>ext.peer
        ext.peer = None
        ext.list_id = 0  # the survivor is on its own now (its snapshot names no list)
        ext.list_id_obj = 0
        peer.ext.peer = None
        self._finish(peer)
        events.append(_Done(peer.oid, peer.acct, status, reason, ts))
        return 0

    # ------------------------------------------------------------------ cancel, amend, expiry
    cdef list _cancel(self, cmd):
        oid = cmd.order_id
        acct_o = cmd.account
        if self._trading_i == HALTED:
            return [_CancelRejected(oid, acct_o, _R_HALTED, cmd.ts)]
        x = self._open.get(oid)
        if x is None or (<_Open>x).acct != acct_o:
            return [_CancelRejected(oid, acct_o, _R_UNKNOWN, cmd.ts)]
        cdef _Open o = <_Open>x
        if o.ext is None and type(o) is _Order:
            self._finish_order(<_Order>o)
            return [_Done(oid, acct_o, _CANCELED, _R_NONE, cmd.ts)]
        cdef list events = []
        self._cancel_one(o, cmd.ts, events)
        return events

    cdef int _cancel_one(self, _Open o, ts, list events) except -1:
        self._finish(o)
        events.append(_Done(o.oid, o.acct, _CANCELED, _R_NONE, ts))
        if o.ext is not None and o.ext.peer is not None:
            self._end_peer(o.ext, _CANCELED, _R_NONE, ts, events)
        return 0

    cdef list _cancel_all(self, cmd):
        acct_o = cmd.account
        if self._trading_i == HALTED:
            # One refusal for the whole request; order id 0 stands for "all".
            return [_CancelRejected(0, acct_o, _R_HALTED, cmd.ts)]
        a = self._accounts.get(acct_o)
        if a is None:
            return []
        cdef list ids = []
        cdef PyObject* p = (<_Acct>a).head
        while p != NULL:
            ids.append((<_Open>p).oid)
            p = (<_Open>p).anext
        ids.sort()
        cdef list events = []
        for oid in ids:
            x = self._open.get(oid)
            if x is not None:  # None: canceled above as a list partner
                self._cancel_one(<_Open>x, cmd.ts, events)
        return events

    cdef list _amend(self, cmd):
        oid = cmd.order_id
        acct_o = cmd.account
        ts = cmd.ts
        new_o = cmd.new_qty
        if self._trading_i == HALTED:
            return [_AmendRejected(oid, acct_o, _R_HALTED, ts)]
        x = self._open.get(oid)
        cdef _Order o
        cdef _Stop s
        cdef _Ext ext
        cdef int64_t new, hidden, live, reduce, from_hidden, shown
        cdef list events
        if type(x) is _Order and (<_Order>x).acct == acct_o:
            o = <_Order>x
            if not 0 < new_o < o.qty:
                return [_AmendRejected(oid, acct_o, _R_NOT_AMENDABLE, ts)]
            new = new_o
            ext = o.ext
            hidden = ext.hidden if ext is not None else 0
            live = o.remaining + hidden
            reduce = o.qty - new
            if reduce >= live:
                # Nothing would remain: what executed is all the order ever was.
                events = [_Amended(oid, acct_o, o.qty - live, live, ts)]
                self._finish(o)
                events.append(_Done(oid, acct_o, _FILLED, _R_NONE, ts))
                if ext is not None and ext.peer is not None:
                    self._end_peer(ext, _EXPIRED, _R_LIST_DONE, ts, events)
                return events
            from_hidden = min(hidden, reduce)
            if from_hidden:
                ext.hidden -= from_hidden
            shown = reduce - from_hidden
            if shown:
                o.remaining -= shown
                (<_Level>o.level).total -= shown
                (self._bids if o.side_i == BUY else self._asks).mark(<_Level>o.level)
            o.qty = new
            return [_Amended(oid, acct_o, new_o, reduce, ts)]
        if type(x) is _Stop and (<_Stop>x).acct == acct_o:
            s = <_Stop>x
            if s.cmd.type not in _LIMIT_STOPS or not 0 < new_o < s.cmd.qty:
                return [_AmendRejected(oid, acct_o, _R_NOT_AMENDABLE, ts)]
            reduce_o = s.cmd.qty - new_o
            s.cmd = _replace(s.cmd, qty=new_o)
            return [_Amended(oid, acct_o, new_o, reduce_o, ts)]
        return [_AmendRejected(oid, acct_o, _R_UNKNOWN, ts)]

    cdef list _tick(self, ts):
        """The engine clock: expire every GTD order due at ``ts`` (in any trading state)."""
        cdef list heap = self._expiries
        cdef list events = []
        cdef _Open o
        while heap and heap[0][0] <= ts:
            gtd, oid = _heappop(heap)
            x = self._open.get(oid)
            if x is None:
                continue
            o = <_Open>x
            if o.ext is None or o.ext.gtd != gtd:
                continue  # ended before its time
            self._finish(o)
            events.append(_Done(oid, o.acct, _EXPIRED, _R_GTD, ts))
            if o.ext.peer is not None:
                self._end_peer(o.ext, _EXPIRED, _R_LIST_DONE, ts, events)
        return events

    # ------------------------------------------------------------------ bookkeeping
    cdef int _expire_maker(self, _Order m, _Level level, ts, list events) except -1:
        """Self-trade prevention ends the maker at the head of ``level``; the level stays
        (the matcher drops it when empty)."""
        level.unlink(m)
        level.total -= m.remaining
        level.live -= 1
        m.remaining = 0
        if m.ext is not None:
            m.ext.hidden = 0
        del self._open[m.oid]
        self._acct_drop(m)
        self._remember(m.oid)
        events.append(_Done(m.oid, m.acct, _EXPIRED_IN_MATCH, _R_SELF_TRADE, ts))
        if m.ext is not None and m.ext.peer is not None:
            self._end_peer(m.ext, _EXPIRED, _R_LIST_DONE, ts, events)
        return 0

    cdef int _finish(self, _Open o) except -1:
        """Take a live order off the book, or a stop out of waiting, and remember it as
        finished; the caller reports how it ended."""
        cdef _Stop s
        if type(o) is _Stop:
            s = <_Stop>o
            del self._open[s.oid]
            self._nstops -= 1
            (self._stops_up if s.up else self._stops_down).discard(s.key)
            self._acct_drop(s)
            self._remember(s.oid)
        else:
            self._finish_order(<_Order>o)
        return 0

    cdef int _finish_order(self, _Order o) except -1:
        cdef _Level level = <_Level>o.level
        cdef _Side side = self._bids if o.side_i == BUY else self._asks
        level.total -= o.remaining
        level.live -= 1
        o.remaining = 0
        if o.ext is not None:
            o.ext.hidden = 0
        level.unlink(o)
        side.mark(level)
        if not level.live:
            side.drop_level(level)
        del self._open[o.oid]
        self._acct_drop(o)
        self._remember(o.oid)
        return 0

    cdef inline int _acct_add(self, _Open o) except -1:
        cdef _Acct a
        x = self._accounts.get(o.acct)
        if x is None:
            a = _Acct.__new__(_Acct)
            self._accounts[o.acct] = a
        else:
            a = <_Acct>x
        o.accts = a
        o.aprev = NULL
        o.anext = a.head
        if a.head != NULL:
            (<_Open>a.head).aprev = <PyObject*>o
        a.head = <PyObject*>o
        a.count += 1
        return 0

    cdef inline int _acct_drop(self, _Open o) except -1:
        cdef _Acct a = o.accts
        if o.aprev != NULL:
            (<_Open>o.aprev).anext = o.anext
        else:
            a.head = o.anext
        if o.anext != NULL:
            (<_Open>o.anext).aprev = o.aprev
        o.aprev = NULL
        o.anext = NULL
        o.accts = None
        a.count -= 1
        if not a.count:
            del self._accounts[o.acct]
        return 0

    cdef inline int _remember(self, oid) except -1:
        cdef int overflow = 0
        cdef int64_t k = PyLong_AsLongLongAndOverflow(oid, &overflow)
        if not overflow:  # beyond 64 bits: not remembered (see the module docstring)
            self._recent.add(k)
        return 0

    cdef inline bint _finished(self, oid) except -1:
        """Whether ``oid`` is among the remembered finished ids."""
        cdef int overflow = 0
        cdef int64_t k = PyLong_AsLongLongAndOverflow(oid, &overflow)
        return not overflow and self._recent.has(k)

    cdef list _recent_list(self):
        return self._recent.ids()

    # ------------------------------------------------------------------ state
    def snapshot(self):
        """The book's full state; ``OrderBook.restore`` rebuilds it exactly."""
        return BookSnapshot(
            v=SCHEMA_VERSION,
            symbol=self.symbol,
            notional_per_tick_lot=self._npl_obj,
            trading=self._trading,
            next_trade_id=self._next_trade_id,
            recent_limit=self._recent_limit,
            bids=_resting(self._bids),
            asks=_resting(self._asks),
            recent=self._recent_list(),
            last_price=self._last_price,
            stops=self.stop_orders(),
        )

    @classmethod
    def restore(cls, snapshot, *, debug=False):
        """Rebuild a book from ``snapshot`` (also one the pure-Python book made); it
        continues exactly as the original would.

        Raises:
            ValueError: the snapshot has an unknown version or is inconsistent (crossed,
                duplicate order ids, non-positive prices or quantities, unpaired list legs).
        """
        if snapshot.v != SCHEMA_VERSION:
            raise ValueError(f"unsupported book snapshot version {snapshot.v}")
        cdef OrderBook book = cls(snapshot.symbol, snapshot.notional_per_tick_lot,
                                  debug=debug, recent_limit=snapshot.recent_limit)
        book._trading = TradingState(snapshot.trading)
        book._trading_i = book._trading
        book._next_trade_id = snapshot.next_trade_id
        book._last_price = snapshot.last_price
        for oid in snapshot.recent[-snapshot.recent_limit:]:
            if not isinstance(oid, int) or not (_I64_MIN <= oid <= _I64_MAX):
                raise ValueError(f"inconsistent book snapshot: finished id {oid} is beyond "
                                 "64 bits")
            if book._finished(oid):
                raise ValueError("inconsistent book snapshot: dedup record holds an id twice")
            book._remember(oid)
        legs = {}
        cdef _Side own
        cdef _Level level
        cdef _Order o
        cdef _Ext ext
        cdef _Stop s
        for side, resting in ((_BUY, snapshot.bids), (_SELL, snapshot.asks)):
            own = book._bids if side == _BUY else book._asks
            for r in resting:
                if (r.side != side or r.price <= 0 or r.remaining <= 0 or r.hidden < 0
                        or r.order_id in book._open):
                    raise ValueError(f"inconsistent book snapshot at order {r.order_id}")
                level = own.get(r.price)
                if level is None:
                    level = own.add_level(r.price, r.price)
                ext = None
                if r.hidden or r.peak or r.good_till or r.list_id:
                    ext = _Ext(r.peak, r.hidden, r.good_till, r.list_id)
                    if r.good_till:
                        _heappush(book._expiries, (r.good_till, r.order_id))
                o = _Order.__new__(_Order)
                o.oid = r.order_id
                o.acct = r.account
                o.account = r.account
                o.side = side
                o.side_i = side
                o.price = r.price
                o.remaining = r.remaining
                o.qty = r.qty or r.remaining + r.hidden
                o.ext = ext
                o.level = <PyObject*>level
                level.append(o)
                level.total += r.remaining
                level.live += 1
                book._open[r.order_id] = o
                book._acct_add(o)
                if r.list_id:
                    legs.setdefault(r.list_id, []).append(o)
        for cmd in snapshot.stops:
            if cmd.type not in _STOP_TYPES or cmd.order_id in book._open:
                raise ValueError(f"inconsistent book snapshot at stop {cmd.order_id}")
            s = book._park(cmd, _Ext(0, 0, 0, cmd.list_id) if cmd.list_id else None, None)
            if cmd.list_id:
                legs.setdefault(cmd.list_id, []).append(s)
        for list_id, pair in legs.items():
            if len(pair) != 2:
                raise ValueError(f"inconsistent book snapshot: list {list_id} is not a pair")
            a, b = pair
            (<_Open>a).ext.peer = b
            (<_Open>b).ext.peer = a
        try:
            book.check_invariants()
        except AssertionError as exc:
            raise ValueError(f"inconsistent book snapshot: {exc}") from exc
        return book

    def state_hash(self):
        """A digest of the full state (blake2b of the canonical snapshot encoding); equal
        to the pure-Python book's for the same state."""
        data = msgspec.msgpack.encode(self.snapshot())
        return hashlib.blake2b(data, digest_size=32).hexdigest()

    def _set_level_total(self, side, int64_t price, int64_t total):
        """Corrupt a level's total: for the test that ``debug`` catches it."""
        cdef _Level level = (self._bids if side == _BUY else self._asks).get(price)
        level.total = total

    def check_invariants(self):
        """Verify the internal structure; O(book size), meant for tests and ``debug``.

        Raises:
            AssertionError: the level arrays, the order queues and their links, level
                totals and counts, the order, stop, account and expiry indices, list
                pairing or the dedup record disagree, or the book is crossed.
        """
        cdef _Side bs
        cdef _Level level
        cdef _Order o
        cdef _Open x
        cdef Py_ssize_t i, count
        cdef int64_t total
        cdef PyObject* p
        cdef PyObject* prev
        seen = {}
        for bs, side in ((self._bids, _BUY), (self._asks, _SELL)):
            for i in range(bs.n):
                level = <_Level>bs.lv[i]
                _check(level.price * bs.sign == bs.keys[i], "price keys disagree with levels")
                _check(i == 0 or bs.keys[i - 1] > bs.keys[i], "price keys out of order")
                _check(level.price > 0, f"level {level.price} price")
                count = 0
                total = 0
                prev = NULL
                p = level.head
                while p != NULL:
                    o = <_Order>p
                    _check(o.prev == prev, f"order {o.oid} back link")
                    _check(o.remaining > 0, f"dead order {o.oid} queued")
                    filed = (o.side == side and o.price == level.price
                             and o.level == <PyObject*>level)
                    _check(filed, f"order {o.oid} misfiled")
                    _check(o.oid not in seen, f"order {o.oid} queued twice")
                    hidden = o.ext.hidden if o.ext is not None else 0
                    _check(hidden >= 0 and o.qty >= o.remaining + hidden,
                           f"order {o.oid} quantities")
                    _check(not hidden or o.ext.peak > 0,
                           f"order {o.oid} hides lots without a peak")
                    seen[o.oid] = o
                    count += 1
                    total += o.remaining
                    prev = p
                    p = o.next
                _check(level.tail == prev, f"level {level.price} tail")
                _check(count > 0, f"empty level {level.price} kept")
                _check(level.live == count, f"level {level.price} live count")
                _check(level.total == total, f"level {level.price} total")
        orders = {k: v for k, v in self._open.items() if type(v) is _Order}
        stops = {k: v for k, v in self._open.items() if type(v) is _Stop}
        _check(len(orders) + len(stops) == len(self._open), "order index holds strangers")
        _check(seen.keys() == orders.keys(), "order index disagrees with levels")
        _check(len(stops) == self._nstops, "stop count")
        keys_up = {(<_Stop>s).key for s in stops.values() if (<_Stop>s).up}
        keys_down = {(<_Stop>s).key for s in stops.values() if not (<_Stop>s).up}
        _check(keys_up == set(self._stops_up) and len(keys_up) == len(self._stops_up),
               "rising stops disagree")
        _check(keys_down == set(self._stops_down) and len(keys_down) == len(self._stops_down),
               "falling stops disagree")
        pending = set(self._expiries)
        for oid, v in self._open.items():
            x = <_Open>v
            _check(x.oid == oid, f"order {oid} filed under another id")
            if type(v) is _Order:
                _check(seen[oid] is v, f"order {oid} index points elsewhere")
            _check(not self._finished(oid), f"order {oid} both open and finished")
            if x.ext is None:
                continue
            if x.ext.gtd:
                _check((x.ext.gtd, oid) in pending, f"order {oid} has no expiry entry")
            peer = x.ext.peer
            if peer is not None:
                _check(self._open.get((<_Open>peer).oid) is peer, f"order {oid} partner not live")
                _check((<_Open>peer).ext is not None and (<_Open>peer).ext.peer is v,
                       f"order {oid} pairing")
                _check((<_Open>peer).ext is not None
                       and (<_Open>peer).ext.list_id == x.ext.list_id, f"order {oid} list id")
                _check(not (type(v) is _Order and type(peer) is _Order),
                       f"list of {oid} rests twice")
        by_account = {}
        for oid, v in self._open.items():
            by_account.setdefault((<_Open>v).acct, set()).add(oid)
        listed = {}
        for acct, a in self._accounts.items():
            ids = set()
            count = 0
            prev = NULL
            p = (<_Acct>a).head
            while p != NULL:
                _check((<_Open>p).aprev == prev, f"account {acct} back link")
                _check((<_Open>p).accts is a, f"account {acct} list misfiled")
                ids.add((<_Open>p).oid)
                count += 1
                prev = p
                p = (<_Open>p).anext
            _check(count == (<_Acct>a).count and count == len(ids), f"account {acct} count")
            listed[acct] = ids
        _check(by_account == listed, "account index disagrees")
        recent = self._recent.ids()
        _check(len(recent) <= self._recent_limit, "dedup record overflows")
        _check(all(self._recent.has(k) for k in recent), "dedup record disagrees")
        _check(len(set(recent)) == len(recent) == self._recent.stored(),
               "dedup record holds an id twice")
        if self._bids.n and self._asks.n:
            _check(-self._bids.best() < self._asks.best(), "book crossed")


cdef Py_ssize_t[11] _FIT_SLOTS = [N_ID, N_ACCOUNT, N_SIDE, N_TYPE, N_TIF, N_PRICE, N_QTY,
                                  N_QUOTE, N_ICEBERG, N_STP, N_LIST]


cdef bint _fits(cmd) except -1:
    """Whether every integer of the NewOrder ``cmd`` the book computes with fits in 64 bits
    (the compiled book's one deviation from ``book.py``: see the module docstring).

    Raises:
        TypeError: a field is not an integer.
    """
    cdef int overflow = 0
    cdef Py_ssize_t i
    cdef PyObject* v
    for i in range(11):
        v = (<PyObject**>(<char*><PyObject*>cmd + _FIT_SLOTS[i]))[0]
        if v == NULL:
            raise AttributeError("command field not set")
        PyLong_AsLongLongAndOverflow(<object>v, &overflow)
        if overflow:
            return False
    return True


def _arrival_of(key):
    return key[1]


def _arrival_key(s):
    return (<_Stop>s).arrival


cdef object _view(_Order o):
    cdef _Ext ext = o.ext
    if ext is None:
        return _RestingOrder(o.oid, o.acct, o.side, (<_Level>o.level).price_obj, o.remaining,
                             o.qty)
    return _RestingOrder(o.oid, o.acct, o.side, (<_Level>o.level).price_obj, o.remaining,
                         o.qty, ext.hidden, ext.peak, ext.gtd, ext.list_id_obj)


cdef list _resting(_Side bs):
    cdef list out = []
    cdef Py_ssize_t i
    cdef PyObject* p
    for i in range(bs.n - 1, -1, -1):
        p = (<_Level>bs.lv[i]).head
        while p != NULL:
            out.append(_view(<_Order>p))
            p = (<_Order>p).next
    return out


cdef list _levels(_Side bs, Py_ssize_t limit):
    cdef list out = []
    cdef Py_ssize_t i = bs.n - 1
    cdef _Level level
    while i >= 0 and len(out) < limit:
        level = <_Level>bs.lv[i]
        out.append((level.price_obj, level.total))
        i -= 1
    return out


cdef inline void _check(bint ok, what) except *:
    if not ok:
        raise AssertionError(what)
