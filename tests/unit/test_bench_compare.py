"""The book benchmark's comparison with other order-book packages: each adapter must do the
same work as our book (same trades, lots and notional) on a small mix, and a package that
is missing or broken is reported, never a crash."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import pytest

from tradeplane.bench import compare
from tradeplane.bench.book import RULES, SYMBOL, generate_ops, main
from tradeplane.bench.compare import ADAPTERS, Adapter, Op, Prepared
from tradeplane.domain.model import Cancel, NewOrder, OrderType

NPL = RULES.notional_per_tick_lot
SMALL = 2000


@pytest.fixture(scope="module")
def workload() -> compare.Workload:
    cmds, _ = generate_ops(SMALL, 7)
    return compare.build_workload(cmds, NPL, SYMBOL)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_adapter_executes_what_our_book_executes(
    adapter: Adapter, workload: compare.Workload
) -> None:
    try:
        compare._import(adapter.module)
    except ImportError:
        pytest.skip(f"{adapter.dist} is not installed (it is in the dev extra)")
    result = compare.run_adapter(adapter, workload)
    assert result.error == ""
    assert result.tally == workload.reference
    assert result.ops == SMALL and result.ops_per_sec > 0


def test_workload_translates_every_command_but_by_quote_orders_that_executed_nothing() -> None:
    cmds, trades = generate_ops(SMALL, 7)
    w = compare.build_workload(cmds, NPL, SYMBOL)
    markets = [c for c in cmds if type(c) is NewOrder and c.type == OrderType.MARKET]
    assert w.reference.trades == trades > 0
    assert w.by_quote == sum(1 for c in markets if c.by_quote) > w.skipped
    assert len(w.ops) == len(cmds) - w.skipped
    assert w.cancels == sum(1 for c in cmds if type(c) is Cancel)
    assert w.capped == 0  # the mix's funds caps on market orders by quantity never bind
    lots = sum(op[3] for op in w.ops if op[0] == compare.MARKET)
    assert lots >= sum(c.qty for c in markets if not c.by_quote)


def test_comparison_prefix_is_the_start_of_the_full_mix() -> None:
    # The benchmark compares on generate_ops(n) and calls it the first n of the mix.
    assert generate_ops(500, 3)[0] == generate_ops(1000, 3)[0][:500]


def test_a_package_that_is_not_installed_is_reported_with_its_pip_name(
    workload: compare.Workload,
) -> None:
    missing = Adapter("nobook", "no-such-book", "no_such_book_module_xyz", "?",
                      compare._prepare_cython_orderbook)
    result = compare.run_adapter(missing, workload)
    assert result.error == "not installed (pip install no-such-book)"
    assert result.tally is None


def test_a_package_that_raises_is_reported_as_failed(workload: compare.Workload) -> None:
    def broken(module: ModuleType, ops: Sequence[Op]) -> Prepared:
        raise RuntimeError("boom")

    result = compare.run_adapter(Adapter("broken", "gc", "gc", "?", broken), workload)
    assert result.error == "failed: RuntimeError: boom"
    lines = compare.format_report(
        workload, [compare.Result("tradeplane", "0", "ours", SMALL, 1.0, workload.reference)],
        [result], SMALL,
    )
    assert any(line.split() == ["broken", "failed:", "RuntimeError:", "boom"]
               for line in lines)


def test_a_book_that_trades_differently_is_flagged() -> None:
    ref = compare.Tally(10, 50, 5000)
    r = compare.Result("x", "1", "?", 1, 1.0, compare.Tally(11, 50, 5007))
    assert compare.check(r, ref) == "DIFFERS from ours: trades +1, notional +7"
    same = compare.Result("x", "1", "?", 1, 1.0, ref)
    assert compare.check(same, ref) == "same trades, lots and notional"


def test_book_bench_prints_the_comparison_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--ops", "1500", "--compare-ops", "1000"]) == 0
    out = capsys.readouterr().out
    assert "first 1,000 of 1,500 operations" in out
    table = out[out.index("same workload through"):]
    rows = {line.split()[0]: line for line in table.splitlines()[2:] if line.startswith("  ")}
    assert "reference" in rows["tradeplane"]
    for adapter in ADAPTERS:
        row = rows[adapter.name]
        assert "same trades, lots and notional" in row or "not installed" in row


def test_book_bench_without_comparison_prints_only_our_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--ops", "1000", "--no-compare"]) == 0
    out = capsys.readouterr().out
    assert "throughput" in out and "same workload through" not in out
