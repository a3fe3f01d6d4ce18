"""``tradeplane chaos``'s options are parsed once and bounded (a clear error, exit 2), its
schedule is the seed's alone and injects every fault, and its table adds up."""

from __future__ import annotations

import math
import os

import pytest

from tradeplane.chaos.plan import (
    ALL_FAULTS,
    CHAIN_FAULTS,
    CLUSTER_FAULTS,
    FAULTS,
    SINGLE_NATS_FAULTS,
    OptionError,
    for_bus,
    parse_duration,
    parse_faults,
    parse_period,
    parse_seed,
    schedule,
)
from tradeplane.chaos.report import Outcome, clean, percentile, table
from tradeplane.chaos.resources import Sampler, slope_per_hour
from tradeplane.cli import main


@pytest.mark.parametrize(("text", "seconds"), [("10", 10.0), ("90s", 90.0), ("5m", 300.0),
                                               ("30m", 1800.0), ("24h", 86400.0)])
def test_durations_in_seconds_minutes_or_hours(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["9", "25h", "1d", "-5m", "1.5m", "", "\uff15m", "9" * 40])
def test_a_duration_out_of_bounds_or_malformed_is_refused(text: str) -> None:
    with pytest.raises(OptionError):
        parse_duration(text)


def test_faults_all_or_a_list_in_the_tables_order() -> None:
    assert parse_faults("all") == ALL_FAULTS
    assert parse_faults("kill-redis,kill-engine") == ("kill-engine", "kill-redis")
    assert parse_faults("kill-stream-leader,pause-engine") == ("pause-engine",
                                                               "kill-stream-leader")


def test_all_faults_are_those_the_bus_has_and_another_bus_s_fault_is_refused() -> None:
    assert for_bus(ALL_FAULTS, nats_cluster=False) == FAULTS + CHAIN_FAULTS
    cluster = for_bus(ALL_FAULTS, nats_cluster=True)
    assert set(cluster) == ((set(FAULTS) - set(SINGLE_NATS_FAULTS)) | set(CHAIN_FAULTS)
                            | set(CLUSTER_FAULTS))
    assert for_bus(("pause-engine",), nats_cluster=True) == ("pause-engine",)
    with pytest.raises(OptionError, match="kill-nats-node cannot be injected on one NATS"):
        for_bus(("kill-engine", "kill-nats-node"), nats_cluster=False)
    with pytest.raises(OptionError, match="kill-nats cannot be injected on a NATS cluster"):
        for_bus(("kill-nats",), nats_cluster=True)


def test_a_cluster_fault_without_the_cluster_exits_2_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["chaos", "--faults", "kill-stream-leader"]) == 2
    assert "kill-stream-leader cannot be injected on one NATS" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["", "kill-engine,kill-engine", "kill-everything",
                                  "kill-engine,"])
def test_unknown_repeated_or_empty_faults_are_refused(text: str) -> None:
    with pytest.raises(OptionError):
        parse_faults(text)


@pytest.mark.parametrize("text", ["-1", "x", "1e3", str(2**63), "\u0663"])
def test_a_seed_is_a_bounded_ascii_integer(text: str) -> None:
    with pytest.raises(OptionError):
        parse_seed(text)
    assert parse_seed("42") == 42


@pytest.mark.parametrize("text", ["4", "601", "10.5", "x"])
def test_a_period_is_5_to_600_seconds(text: str) -> None:
    with pytest.raises(OptionError):
        parse_period(text)


@pytest.mark.parametrize("argv", [["--duration", "5"], ["--faults", "kill-foo"],
                                  ["--seed", "x"], ["--period", "1"]])
def test_the_command_exits_2_with_the_reason_on_a_bad_option(
    argv: list[str], capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["chaos", *argv])
    assert info.value.code == 2
    assert f"argument {argv[0]}" in capsys.readouterr().err


def test_the_same_seed_gives_the_same_schedule_and_every_fault_at_least_once() -> None:
    one = schedule(7, 60.0, FAULTS, 20.0)
    assert one == schedule(7, 60.0, FAULTS, 20.0)
    assert one != schedule(8, 60.0, FAULTS, 20.0)
    assert {i.fault for i in one} == set(FAULTS)  # stretched: 3 periods, more faults
    assert [i.at_s for i in one] == sorted(i.at_s for i in one)
    long = schedule(7, 5 * len(FAULTS) * 20.0, FAULTS, 20.0)
    assert len(long) == 5 * len(FAULTS)
    assert all(sum(i.fault == f for i in long) == 5 for f in FAULTS)


def test_the_table_counts_per_fault_and_in_total() -> None:
    outcomes = [Outcome("kill-nats", 2.0, acked=10), Outcome("kill-nats", 4.0, acked=5),
                Outcome("kill-redis", None, acked=3, lost=1, failures=["x"])]
    text = table(outcomes, FAULTS)
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:]}
    assert rows["kill-nats"] == ["kill-nats", "2", "2.00", "4.00", "15", "0", "0", "0"]
    assert rows["kill-redis"] == ["kill-redis", "1", "-", "-", "3", "1", "0", "2"]
    assert rows["total"] == ["total", "3", "18", "1", "0", "2"]
    assert not clean(outcomes)
    assert clean(outcomes[:2])


def test_percentiles_by_nearest_rank() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert math.isnan(percentile([], 50))


def test_a_memory_slope_is_per_hour_by_least_squares() -> None:
    assert slope_per_hour([(0.0, 10.0), (1800.0, 15.0), (3600.0, 20.0)]) == 10.0
    assert math.isnan(slope_per_hour([(5.0, 1.0)]))
    assert math.isnan(slope_per_hour([(5.0, 1.0), (5.0, 2.0)]))


def test_the_sampler_reads_a_live_process_and_skips_a_gone_one() -> None:
    sampler = Sampler()
    sampler.sample(0.0, {"me": os.getpid(), "gone": None})
    sampler.sample(5.0, {"me": os.getpid()})
    sampler.record_sizes(0.0, {"table orders rows": 10})
    sampler.record_sizes(120.0, {"table orders rows": 70})
    [(at, rss, fds, pid), _] = sampler.series["me"].samples
    assert (at, pid) == (0.0, os.getpid()) and rss > 0 and fds > 0
    assert "gone" not in sampler.series
    rows = {line.split()[0]: line.split() for line in sampler.table().splitlines() if line}
    assert rows["me"][1:3] == ["2", "1"]
    assert rows["table"][-1] == "30.0"  # 60 rows in 2 minutes


def test_faults_this_machine_cannot_inject_are_left_out_saying_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    # Stand-ins for a machine without root and without Debian's libfaketime.
    monkeypatch.setattr("tradeplane.chaos.disk.can_mount", lambda: False)
    monkeypatch.setattr("tradeplane.chaos.clock.libfaketime", lambda: None)

    assert main(["chaos", "--faults", "disk-full,clock-skew"]) == 2

    err = capsys.readouterr().err
    assert "disk-full left out" in err and "needs root" in err
    assert "clock-skew left out" in err and "libfaketime" in err
