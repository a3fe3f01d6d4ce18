"""The book benchmark's workload run through order-book packages a Python user could pick
instead, in the same run: ``python -m tradeplane.bench.book`` prints the table.

Packages (each optional: ``pip install -e '.[bench]'``; a missing one is reported as not
installed, never a crash):

* ``liquibook``: SWIG bindings to the C++ Liquibook matching engine (``DepthOrderBook``).
  Fills reach Python only through a listener; ours counts them, the least a caller can do
  (without one it is hardly faster: the time goes into the calls through SWIG).
* ``cython-orderbook``: a Cython order book (``SortedDict`` of ``OrderedDict`` levels) that
  logs a ``Trade`` per fill.
* ``pyorderbook``: a pure-Python book (heaps of ``Decimal`` price levels, ``uuid4`` ids).

Tried and left out: ``order-matching`` (does not import without its polars extra; queues
orders and matches them in batches; finds an order to cancel by scanning the whole book),
``lightmatchingengine`` (scans every price level for the best one on each order and sums
a level on each fill; a market order's remainder rests at price 0), ``limit-order-book``
(C++ through ctypes, but it reports no fills, so nothing can check that it did the same
work; it builds from source with ``-march=native``), ``manticore-orderbook`` (not
measured: its own claim is 17,000 orders/s), ``pylob`` (level-2 statistics, no matching),
``orderbook`` (Python 2 only).

The workload is ``generate_ops`` (same seed, same commands). Before anything is timed it
is replayed through our book (the *reference*: its trades, lots and notional are what
every package must reproduce) and translated into package-neutral operations, then into
each package's own objects. The deviations, printed with the table:

* Market orders: every package gets a market order by *quantity* (none supports a quote
  cap). A by-quantity order keeps its lots: its funds cap cannot bind in this mix (asks
  stay within 8 ticks of mid, the cap allows 20), and an order whose cap did bind is sent
  with the lots our book executed. A by-quote order (``quoteOrderQty``) is sent as the
  lots our book executed for it; one that executed nothing is skipped (a free operation
  for the package, counted in its ops/s).
* ``liquibook``: a market order is price 0, added with ``immediate_or_cancel`` (a
  condition of ``add``; the order's own are not read), so its remainder does not rest.
* ``pyorderbook`` has no market orders: a limit order at an extreme price (10**12 ticks to
  buy, 0 to sell), whose remainder, if any, is canceled at once (both calls timed). Its
  trades are counted in a second, untimed pass, because ``Book.match`` reports them in
  its return value, which the timed pass drops like ours.
* Accounts are not modelled by the packages; no cancel in the mix names a wrong account.

Throughput is measured as ``run_book_bench`` does: objects built first, collector frozen
and disabled, one timed pass over every operation on a fresh book. Our books (the compiled
one, when built, and the pure-Python one) are timed again here, on exactly the commands the
packages get, so the ratios compare the same work; the ratio column is the first of our
rows (the book the engine runs) over each row. With ``--compare-ops N`` that is the first N
operations of the mix (default: all of them).
"""

from __future__ import annotations

import gc
import importlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any, Final

from tradeplane.domain import books
from tradeplane.domain.book import OrderBook
from tradeplane.domain.model import (
    Cancel,
    Command,
    Done,
    NewOrder,
    OrderType,
    Reason,
    Side,
    Trade,
)

# Package-neutral operations, built from our commands before anything is timed:
# (LIMIT, order_id, is_buy, price, qty) | (MARKET, order_id, is_buy, lots) | (CANCEL, order_id)
LIMIT: Final = 0
MARKET: Final = 1
CANCEL: Final = 2
Op = tuple[int, ...]

_PYORDERBOOK_BUY_ANY: Final = 10**12  # ticks: above any ask of the mix


@dataclass(frozen=True, slots=True)
class Tally:
    """What a book executed: trades, lots, and notional (sum of price x lots, in ticks)."""

    trades: int
    lots: int
    notional: int


@dataclass(frozen=True, slots=True)
class Workload:
    """A command list, translated: ``ops`` (one per command except ``skipped``), what our
    book executed on it (``reference``) and how market orders were translated."""

    commands: int
    ops: list[Op]
    reference: Tally
    by_quote: int  # market orders by quote, sent as the lots our book executed
    capped: int  # market orders by quantity whose funds cap bound, sent likewise
    skipped: int  # by-quote orders that executed nothing: no operation for the packages
    cancels: int


@dataclass(slots=True)
class Prepared:
    """A package's book and the operations as its own calls, ready for one timed pass:
    ``for fn, arg in steps: fn(arg)``; ``tally()`` is called after that pass."""

    steps: list[tuple[Callable[[Any], object], Any]]
    tally: Callable[[], Tally]
    keep: object = None  # what must outlive the steps: a C++ book holds raw pointers


@dataclass(frozen=True, slots=True)
class Adapter:
    """One package: ``prepare(module, ops)`` builds a fresh book and its steps."""

    name: str  # as printed
    dist: str  # distribution name, for ``pip install``
    module: str  # import name
    kind: str  # how it is built, as printed
    prepare: Callable[[ModuleType, Sequence[Op]], Prepared]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Result:
    """One row of the comparison: ``error`` is set (and the figures are 0) when the
    package is not installed or failed."""

    name: str
    version: str
    kind: str
    ops: int
    seconds: float
    tally: Tally | None
    error: str = ""
    notes: tuple[str, ...] = field(default=())
    # CPU time of the same pass (0: not measured): on a shared machine, wall time also
    # counts the time other processes held the core.
    cpu_seconds: float = 0.0

    @property
    def ops_per_sec(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    @property
    def ops_per_cpu_sec(self) -> float:
        return self.ops / self.cpu_seconds if self.cpu_seconds > 0 else 0.0


# --------------------------------------------------------------------------- workload
def build_workload(cmds: Sequence[Command], npl: int, symbol: str) -> Workload:
    """Replay ``cmds`` through our book (the reference) and translate them.

    Raises:
        TypeError: a command other than ``NewOrder`` (LIMIT or MARKET) or ``Cancel``.
    """
    book = OrderBook(symbol, npl)
    trades = lots = notional = 0
    ops: list[Op] = []
    by_quote = capped = skipped = cancels = 0
    for cmd in cmds:
        events = book.process(cmd)
        executed = 0
        reason = Reason.NONE
        for ev in events:
            if type(ev) is Trade:
                trades += 1
                lots += ev.qty
                notional += ev.price * ev.qty
                executed += ev.qty
            elif type(ev) is Done and type(cmd) is NewOrder and ev.order_id == cmd.order_id:
                reason = ev.reason
        if type(cmd) is Cancel:
            ops.append((CANCEL, cmd.order_id))
            cancels += 1
        elif type(cmd) is NewOrder and cmd.type == OrderType.LIMIT:
            ops.append((LIMIT, cmd.order_id, cmd.side == Side.BUY, cmd.price, cmd.qty))
        elif type(cmd) is NewOrder and cmd.type == OrderType.MARKET:
            want = cmd.qty
            if cmd.by_quote:
                by_quote += 1
                want = executed
            elif reason == Reason.CAP_REACHED:
                capped += 1
                want = executed
            if want:
                ops.append((MARKET, cmd.order_id, cmd.side == Side.BUY, want))
            else:
                skipped += 1
        else:
            raise TypeError(f"the comparison does not translate {cmd!r}")
    return Workload(len(cmds), ops, Tally(trades, lots, notional), by_quote, capped, skipped,
                    cancels)


def workload_notes(w: Workload) -> list[str]:
    """The deviations of the translation, for the printed output."""
    notes = [
        f"market orders by quote ({w.by_quote:,}) are sent as market orders for the lots "
        f"our book executed; those that executed nothing ({w.skipped:,}) are skipped, a "
        "free operation for each package",
    ]
    if w.capped:
        notes.append(f"{w.capped:,} market orders by quantity hit their funds cap in our "
                     "book and are sent with the lots it executed")
    return notes


# --------------------------------------------------------------------------- timing
def _timed(steps: list[tuple[Callable[[Any], object], Any]]) -> tuple[float, float]:
    """One pass over ``steps`` with the collector frozen and disabled: wall seconds and
    the CPU seconds of this process over the same pass."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        cpu_started = time.process_time_ns()
        started = time.perf_counter_ns()
        for fn, arg in steps:
            fn(arg)
        elapsed = time.perf_counter_ns() - started
        cpu = time.process_time_ns() - cpu_started
    finally:
        if was_enabled:
            gc.enable()
        gc.unfreeze()
    return elapsed / 1e9, cpu / 1e9


def time_ours(cmds: Sequence[Command], npl: int, symbol: str,
              book_class: type[OrderBook] = OrderBook) -> tuple[float, float]:
    """Wall and CPU seconds for one pass of our book (``book_class``) over ``cmds``, timed
    like the packages."""
    book = book_class(symbol, npl)
    return _timed([(book.process, cmd) for cmd in cmds])


def tally_ours(cmds: Sequence[Command], npl: int, symbol: str,
               book_class: type[OrderBook]) -> Tally:
    """What ``book_class`` executed on ``cmds`` (an untimed pass), to check it like the
    packages against the reference."""
    book = book_class(symbol, npl)
    trades = lots = notional = 0
    for cmd in cmds:
        for ev in book.process(cmd):
            if type(ev) is Trade:
                trades += 1
                lots += ev.qty
                notional += ev.price * ev.qty
    return Tally(trades, lots, notional)


def our_books() -> list[tuple[str, str, type[OrderBook]]]:
    """Our implementations as ``(row name, kind, class)``: the compiled book first when it
    is built (the one the engine runs), then the pure-Python one."""
    rows = []
    if books.COMPILED is not None:
        rows.append(("tradeplane", "Cython (compiled book)", books.COMPILED))
    rows.append(("tradeplane-py", "pure Python (book.py)", books.select("python")))
    return rows


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def run_adapter(adapter: Adapter, workload: Workload) -> Result:
    """Prepare, time and tally one package on ``workload``; a package that is not
    installed, or that raises, comes back as a ``Result`` with ``error`` set."""
    try:
        module = _import(adapter.module)
    except ImportError:
        return Result(adapter.name, "", adapter.kind, 0, 0.0, None,
                      f"not installed (pip install {adapter.dist})")
    version = _version(adapter.dist)
    try:
        prepared = adapter.prepare(module, workload.ops)
        seconds, cpu_seconds = _timed(prepared.steps)
        tally = prepared.tally()
    except Exception as e:  # a third-party book failing is a finding to print, not a crash
        return Result(adapter.name, version, adapter.kind, 0, 0.0, None,
                      f"failed: {type(e).__name__}: {e}")
    return Result(adapter.name, version, adapter.kind, workload.commands, seconds, tally,
                  notes=adapter.notes, cpu_seconds=cpu_seconds)


def _import(name: str) -> ModuleType:
    if name == "pyorderbook":
        # pyorderbook calls logging.basicConfig(level=INFO) when imported; undo that.
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            return importlib.import_module(name)
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
            # Its per-order debug calls are malformed (they raise when a DEBUG root logger
            # formats them) and would cost time in the timed loop: keep them off.
            logging.getLogger(name).setLevel(logging.WARNING)
    return importlib.import_module(name)


# --------------------------------------------------------------------------- adapters
def _prepare_liquibook(lb: ModuleType, ops: Sequence[Op]) -> Prepared:
    class Fills(lb.OrderListener):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            lb.OrderListener.__init__(self)
            self.trades = 0
            self.lots = 0
            self.notional = 0

        def on_fill(self, order: Any, matched: Any, qty: int, price: int) -> None:
            self.trades += 1
            self.lots += qty
            self.notional += qty * price

        # The bindings call every method of the listener; the others have nothing to do.
        def on_accept(self, order: Any) -> None:
            pass

        def on_reject(self, order: Any, reason: str) -> None:
            pass

        def on_cancel(self, order: Any) -> None:
            pass

        def on_cancel_reject(self, order: Any, reason: str) -> None:
            pass

        def on_replace(self, order: Any, size_delta: int, new_price: int) -> None:
            pass

        def on_replace_reject(self, order: Any, reason: str) -> None:
            pass

    book = lb.DepthOrderBook()
    listener = Fills()
    book.set_order_listener(listener)
    book.set_symbol("BTC-USDT")
    ioc = lb.oc_immediate_or_cancel
    make = lb.SimpleOrder
    orders: dict[int, Any] = {}
    steps: list[tuple[Callable[[Any], object], Any]] = []
    add = book.add
    cancel = book.cancel

    def market(order: Any) -> object:
        # Conditions are an argument of ``add``; the order's own are not read.
        return add(order, ioc)

    for op in ops:
        if op[0] == LIMIT:
            o = make(op[2], op[3], op[4])
            orders[op[1]] = o
            steps.append((add, o))
        elif op[0] == MARKET:
            o = make(op[2], 0, op[3], 0, ioc)
            orders[op[1]] = o
            steps.append((market, o))
        else:
            steps.append((cancel, orders[op[1]]))

    def tally() -> Tally:
        return Tally(listener.trades, listener.lots, listener.notional)

    return Prepared(steps, tally, keep=(book, listener, orders))


def _prepare_cython_orderbook(cob: ModuleType, ops: Sequence[Op]) -> Prepared:
    book = cob.OrderBook()
    bid, ask = cob.OrderSide.BID, cob.OrderSide.ASK
    make = cob.Order
    ids: dict[int, str] = {}
    steps: list[tuple[Callable[[Any], object], Any]] = []
    for op in ops:
        if op[0] == LIMIT:
            o = make(bid if op[2] else ask, op[4], op[3])
            ids[op[1]] = o.order_id
            steps.append((book.add_limit_order, o))
        elif op[0] == MARKET:
            steps.append((book.add_market_order, make(bid if op[2] else ask, op[3])))
        else:
            steps.append((book.cancel_order, ids[op[1]]))

    def tally() -> Tally:
        log = book.trade_log
        return Tally(len(log), sum(t.quantity_filled for t in log),
                     sum(t.price * t.quantity_filled for t in log))

    return Prepared(steps, tally)


def _pyorderbook_steps(
    pob: ModuleType, ops: Sequence[Op]
) -> tuple[Any, list[tuple[Callable[[Any], object], Any]]]:
    book = pob.Book()
    match = book.match
    cancel = book.cancel
    bid, ask = pob.bid, pob.ask
    symbol = "BTC-USDT"

    def market(order: Any) -> object:
        blotter = match(order)
        if order.quantity:  # what no one took now rests at the extreme price: take it back
            cancel(order)
        return blotter

    orders: dict[int, Any] = {}
    steps: list[tuple[Callable[[Any], object], Any]] = []
    for op in ops:
        if op[0] == LIMIT:
            o = (bid if op[2] else ask)(symbol, op[3], op[4])
            orders[op[1]] = o
            steps.append((match, o))
        elif op[0] == MARKET:
            o = bid(symbol, _PYORDERBOOK_BUY_ANY, op[3]) if op[2] else ask(symbol, 0, op[3])
            steps.append((market, o))
        else:
            steps.append((cancel, orders[op[1]]))
    return book, steps


def _prepare_pyorderbook(pob: ModuleType, ops: Sequence[Op]) -> Prepared:
    _, steps = _pyorderbook_steps(pob, ops)

    def tally() -> Tally:
        # A second pass on a fresh book, untimed, keeping what ``match`` returns.
        _, again = _pyorderbook_steps(pob, ops)
        trades = lots = notional = 0
        for fn, arg in again:
            out: Any = fn(arg)
            if out is not None:
                for t in out.trades:
                    trades += 1
                    lots += t.fill_quantity
                    notional += int(t.fill_price) * t.fill_quantity
        return Tally(trades, lots, notional)

    return Prepared(steps, tally)


ADAPTERS: Final[tuple[Adapter, ...]] = (
    Adapter("liquibook", "liquibook", "liquibook", "C++ (SWIG)", _prepare_liquibook,
            ("market: price 0, immediate_or_cancel; fills counted by a Python listener",)),
    Adapter("cython-orderbook", "cython-orderbook", "cython_orderbook", "Cython",
            _prepare_cython_orderbook, ("prices passed as int ticks (its docs use Decimal)",)),
    Adapter("pyorderbook", "pyorderbook", "pyorderbook", "pure Python", _prepare_pyorderbook,
            ("no market orders: limit at an extreme price, remainder canceled (timed)",)),
)


# --------------------------------------------------------------------------- report
def compare(
    cmds: Sequence[Command], npl: int, symbol: str, adapters: Sequence[Adapter] = ADAPTERS
) -> tuple[Workload, list[Result], list[Result]]:
    """Our books and every adapter on ``cmds``: the workload, our rows (``our_books``),
    their rows."""
    workload = build_workload(cmds, npl, symbol)
    ours = []
    for name, kind, cls in our_books():
        seconds, cpu_seconds = time_ours(cmds, npl, symbol, cls)
        ours.append(Result(name, _version("tradeplane"), kind, len(cmds), seconds,
                           tally_ours(cmds, npl, symbol, cls), cpu_seconds=cpu_seconds))
    return workload, ours, [run_adapter(a, workload) for a in adapters]


def check(result: Result, reference: Tally) -> str:
    """``same trades, lots, notional`` or what differs."""
    t = result.tally
    if t is None:
        return ""
    if t == reference:
        return "same trades, lots and notional"
    diffs = [f"{what} {mine:+,}" for what, mine in (
        ("trades", t.trades - reference.trades),
        ("lots", t.lots - reference.lots),
        ("notional", t.notional - reference.notional),
    ) if mine]
    return "DIFFERS from ours: " + ", ".join(diffs)


def format_report(workload: Workload, ours: Sequence[Result], others: Sequence[Result],
                  full_ops: int) -> list[str]:
    """The comparison table and its notes, one line each; the ratio column is
    ``ours[0]`` (the book the engine runs) over each row."""
    scope = ("all" if workload.commands == full_ops
             else f"the first {workload.commands:,} of") + f" {full_ops:,} operations"
    out = [f"same workload through other order books: {scope}, same seed",
           "(commands translated before timing; our books timed again on the same commands;",
           " ours/theirs: the first row over each, by wall time and by CPU time of the pass)"]
    header = ("book", "version", "kind", "ops/s", "ours/theirs", "ops/CPU-s", "(CPU)",
              "trades", "check")
    rows = [header]
    missing: list[Result] = []
    first = ours[0]
    for r in (*ours, *others):
        if r.error or r.tally is None:
            missing.append(r)
            continue
        ratio = first.ops_per_sec / r.ops_per_sec if r.ops_per_sec else 0.0
        cpu_ratio = (first.ops_per_cpu_sec / r.ops_per_cpu_sec if r.ops_per_cpu_sec
                     else 0.0)
        verdict = check(r, workload.reference)
        if r in ours and r.tally == workload.reference:
            verdict = "reference"
        rows.append((r.name, r.version, r.kind, f"{r.ops_per_sec:,.0f}", f"{ratio:.2f}x",
                     f"{r.ops_per_cpu_sec:,.0f}", f"{cpu_ratio:.2f}x", f"{r.tally.trades:,}",
                     verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = (c.rjust(w) if 3 <= i <= 7 else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        out.append(("  " + "  ".join(cells)).rstrip())
    out.extend(f"  {r.name.ljust(widths[0])}  {r.error}" for r in missing)
    out.append("  notes:")
    out.extend(f"  - {n}" for n in workload_notes(workload))
    for r in others:
        out.extend(f"  - {r.name}: {n}" for n in r.notes)
    return out
