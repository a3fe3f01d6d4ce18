"""The ``tradeplane`` command line: its help tells every option, and every flag is bounded
and refused in one line (argparse's exit 2), never a traceback."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from tradeplane.bench import book, e2e, engine
from tradeplane.cli import build_parser


def _help(fn: object, argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        fn(argv)  # type: ignore[operator]
    return out.getvalue()


def test_bench_help_lists_every_option_of_every_benchmark() -> None:
    shown = _help(build_parser().parse_args, ["bench", "--help"])
    for name in ("--no-compare", "--compare-ops", "--symbols"):
        assert name in shown
    for bench in (book.main, engine.main, e2e.main):
        for option in set(re.findall(r"--[a-z][a-z0-9-]+", _help(bench, ["--help"]))):
            if option != "--help":
                assert option in shown, f"{option} of {bench.__module__} is not in the help"


@pytest.mark.parametrize("argv", [
    ["marketmaker", "--api-key", "k", "--interval", "nan"],
    ["marketmaker", "--api-key", "k", "--interval", "-1"],
    ["marketmaker", "--api-key", "k", "--interval", "1e9"],
    ["marketmaker", "--api-key", "k", "--symbols", "btcusdt"],
    ["marketmaker", "--api-key", "k", "--symbols", "X" * 21],
    ["check-ledger", "--data-dir", ""],
    ["--data-dir", "x" * 5000, "check-ledger"],
    ["env", "--data-dir", "a\nb"],
    ["pair-fees", "--symbol", "BTC-USDT", "--maker-fee-ppm", "-1", "--taker-fee-ppm", "0"],
    ["pair-fees", "--symbol", "BTC-USDT", "--maker-fee-ppm", "0", "--taker-fee-ppm",
     "1000000"],
    ["pair-fees", "--symbol", "BTC-USDT", "--maker-fee-ppm", "\u0661", "--taker-fee-ppm", "0"],
    ["kill-switch", "maybe"],
])
def test_out_of_range_flags_are_refused_in_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_data_dir_is_taken_before_or_after_the_subcommand() -> None:
    before = build_parser().parse_args(["--data-dir", "/d", "credit", "a", "USDT", "1"])
    after = build_parser().parse_args(["credit", "a", "USDT", "1", "--data-dir", "/d"])
    assert (before.global_data_dir, before.platform_dir) == ("/d", None)
    assert (after.global_data_dir, after.platform_dir) == (None, "/d")


@pytest.mark.parametrize("argv", [["user-freeze", "alice"],
                                  ["user-freeze", "alice", "--reason", "r", "--unfreeze"]])
def test_user_freeze_takes_a_reason_or_unfreeze_and_not_both(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from tradeplane.cli import main

    assert main(argv) == 2  # refused before anything is reached
    assert "either --reason (freeze) or --unfreeze" in capsys.readouterr().err
