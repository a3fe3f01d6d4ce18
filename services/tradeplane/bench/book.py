"""Order-book throughput and latency: ``python -m tradeplane.bench.book --ops 1000000``.

The operation mix is generated (seeded) *before* anything is timed, by running it through a
shadow book so that cancels can name orders that are really live at that point:

* 60 % limit orders, random side, price 2 ticks through to 8 ticks away from a fixed mid
  on the order's own side (so most rest and some take), 1-10 lots;
* 30 % cancels of a uniformly chosen live order (a limit order instead if none is live);
* 10 % market orders, 1-10 lots with a funds cap; one in five is by quote.

Both of our books are measured, side by side: the compiled one (``domain/_cbook.pyx``,
when it was built at install; the engine runs it) and the pure-Python one
(``domain/book.py``, the specification and fallback); ``--book`` picks one.

Throughput is one timed pass of ``book.process`` over every command on a fresh book, with
the collector frozen and disabled. Latency is a second pass on another fresh book timing
*every* command with ``perf_counter_ns``; the median cost of an empty timer pair is
measured and subtracted, so the percentiles are of ``process`` alone.

Then the same commands go through our books and the order-book packages a Python user
could pick instead (liquibook, cython-orderbook, pyorderbook; ``bench/compare.py`` says
how, and where their semantics differ) and a table prints their ops/s, the ratio of the
book the engine runs to each and whether each made the same trades as our books.
``--no-compare`` skips it; ``--compare-ops N`` limits it to the first N operations.
"""

from __future__ import annotations

import argparse
import gc
import random
import time

from tradeplane.bench import compare
from tradeplane.domain import books
from tradeplane.domain.book import OrderBook
from tradeplane.domain.model import (
    Cancel,
    Command,
    Done,
    NewOrder,
    OrderType,
    Rested,
    Side,
    TimeInForce,
    Trade,
)
from tradeplane.domain.pairs import DEMO_PAIRS

RULES = DEMO_PAIRS[0]
MID = 10_000_000  # ticks: 100 000.00 USDT
SYMBOL = RULES.symbol


def generate_ops(ops: int, seed: int) -> tuple[list[Command], int]:
    """The seeded command mix and the number of trades it produces."""
    rng = random.Random(seed)
    npl = RULES.notional_per_tick_lot
    shadow = OrderBook(SYMBOL, npl)
    live: list[int] = []  # live order ids; index kept in `where` for O(1) removal
    where: dict[int, int] = {}
    cmds: list[Command] = []
    trades = 0
    next_id = 1
    for ts in range(1, ops + 1):
        u = rng.random()
        cmd: Command
        if u < 0.3 and live:
            oid = live[rng.randrange(len(live))]
            cmd = Cancel(oid, oid % 100, ts)
        elif u < 0.4:
            qty = rng.randint(1, 10)
            side = Side.BUY if rng.random() < 0.5 else Side.SELL
            if rng.random() < 0.2:
                quote = rng.randint(1, 10) * MID * npl
                cmd = NewOrder(next_id, next_id % 100, side, OrderType.MARKET, TimeInForce.GTC,
                               0, 0, quote, True, ts)
            else:
                hold = qty * (MID + 20) * npl if side == Side.BUY else 0
                cmd = NewOrder(next_id, next_id % 100, side, OrderType.MARKET, TimeInForce.GTC,
                               0, qty, hold, False, ts)
            next_id += 1
        else:
            side = Side.BUY if rng.random() < 0.5 else Side.SELL
            away = rng.randint(-2, 8)
            price = MID - away if side == Side.BUY else MID + away
            cmd = NewOrder(next_id, next_id % 100, side, OrderType.LIMIT, TimeInForce.GTC,
                           price, rng.randint(1, 10), 0, False, ts)
            next_id += 1
        cmds.append(cmd)
        for ev in shadow.process(cmd):
            if type(ev) is Trade:
                trades += 1
            elif type(ev) is Rested:
                where[ev.order_id] = len(live)
                live.append(ev.order_id)
            elif type(ev) is Done and ev.order_id in where:
                i = where.pop(ev.order_id)
                last = live.pop()
                if last != ev.order_id:
                    live[i] = last
                    where[last] = i
    return cmds, trades


def _timer_overhead_ns(samples: int = 100_000) -> int:
    clock = time.perf_counter_ns
    costs = []
    for _ in range(samples):
        t0 = clock()
        costs.append(clock() - t0)
    costs.sort()
    return costs[len(costs) // 2]


def run_book_bench(ops: int = 1_000_000, seed: int = 42,
                   book_class: type[OrderBook] | None = None) -> dict[str, float]:
    """Run the benchmark on ``book_class`` (default: the book the engine runs, see
    ``domain.books``); returns ops, seconds, ops_per_sec, ops_per_cpu_sec (ops over the
    process's CPU time of the same pass: wall time on a busy machine also counts the
    time other processes held the core), p50_us, p99_us, p999_us,
    max_us, trades and timer_overhead_us (already subtracted from the percentiles)."""
    cmds, trades = generate_ops(ops, seed)
    return _measure(cmds, trades, book_class or books.select())


def _measure(cmds: list[Command], trades: int, book_class: type[OrderBook]) -> dict[str, float]:
    npl = RULES.notional_per_tick_lot
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        book = book_class(SYMBOL, npl)
        process = book.process
        cpu_started = time.process_time_ns()
        started = time.perf_counter_ns()
        for cmd in cmds:
            process(cmd)
        elapsed = time.perf_counter_ns() - started
        cpu = time.process_time_ns() - cpu_started

        overhead = _timer_overhead_ns()
        clock = time.perf_counter_ns
        book = book_class(SYMBOL, npl)
        process = book.process
        lat = [0] * len(cmds)
        for i, cmd in enumerate(cmds):
            t0 = clock()
            process(cmd)
            lat[i] = clock() - t0
    finally:
        if was_enabled:
            gc.enable()
        gc.unfreeze()
    lat.sort()
    n = len(lat)

    def pct(p: float) -> float:
        return max(lat[min(n - 1, int(p * n))] - overhead, 0) / 1000

    return {
        "ops": float(n),
        "seconds": elapsed / 1e9,
        "ops_per_sec": n / (elapsed / 1e9),
        "ops_per_cpu_sec": n / (cpu / 1e9) if cpu else 0.0,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "max_us": (lat[-1] - overhead) / 1000,
        "trades": float(trades),
        "timer_overhead_us": overhead / 1000,
    }


# (row label, figure, unit) of the printed table
_FIGURES: list[tuple[str, str, str]] = [
    ("operations", "ops", ""),
    ("elapsed", "seconds", "s"),
    ("throughput", "ops_per_sec", "ops/s"),
    ("per CPU second", "ops_per_cpu_sec", "ops/s"),
    ("latency p50", "p50_us", "us"),
    ("latency p99", "p99_us", "us"),
    ("latency p99.9", "p999_us", "us"),
    ("latency max", "max_us", "us"),
    ("trades", "trades", ""),
    ("timer overhead", "timer_overhead_us", "us"),
]


def _cell(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "us":
        return f"{value:.3f} us" if value < 0.1 else f"{value:.2f} us"
    return f"{value:,.0f} {unit}".rstrip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tradeplane.bench.book", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=1_000_000, help="commands to process")
    parser.add_argument("--seed", type=int, default=42, help="seed of the operation mix")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the same workload through other order-book packages")
    parser.add_argument("--compare-ops", type=int, default=0, metavar="N",
                        help="compare on the first N operations only (default: all --ops)")
    parser.add_argument("--book", choices=["both", "compiled", "python"], default="both",
                        help="which of our books to measure (default: both, side by side)")
    args = parser.parse_args(argv)
    if args.book == "compiled" and books.COMPILED is None:
        parser.error(books.UNAVAILABLE)
    chosen = [(name, cls) for name, cls in (("compiled", books.COMPILED),
                                             ("pure Python", books.select("python")))
              if cls is not None and args.book in ("both", name.split()[0])]
    cmds, trades = generate_ops(args.ops, args.seed)
    print(f"order book bench: {SYMBOL}, seed {args.seed}")
    if books.COMPILED is None:
        print(f"  ({books.UNAVAILABLE}: the pure-Python book only)")
    figures = [(name, _measure(cmds, trades, cls)) for name, cls in chosen]
    rows = [("", *(name for name, _ in figures))]
    for label, key, unit in _FIGURES:
        rows.append((label, *(_cell(r[key], unit) for _, r in figures)))
    width = max(len(row[0]) for row in rows)
    for row in rows:
        print(f"  {row[0]:<{width}}" + "".join(f"  {v:>18}" for v in row[1:]), flush=True)
    if len(figures) == 2:
        speedup = figures[0][1]["ops_per_sec"] / figures[1][1]["ops_per_sec"]
        print(f"  compiled / pure Python: {speedup:.2f}x throughput "
              "(timer overhead subtracted from the latencies)")
    if not args.no_compare:
        _print_comparison(args.ops, args.compare_ops, args.seed)
    return 0


def _print_comparison(ops: int, compare_ops: int, seed: int) -> None:
    """The same commands (or their first ``compare_ops``) through other order books."""
    n = min(compare_ops, ops) if compare_ops > 0 else ops
    cmds, _ = generate_ops(n, seed)  # the first n commands of the ops-long mix
    workload, ours, others = compare.compare(cmds, RULES.notional_per_tick_lot, SYMBOL)
    print()
    for line in compare.format_report(workload, ours, others, ops):
        print(line)


if __name__ == "__main__":
    raise SystemExit(main())
