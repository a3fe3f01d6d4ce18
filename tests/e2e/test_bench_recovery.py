"""``tradeplane bench recovery`` on a small stream: the real engine process fills in, is
killed with SIGKILL one message short of its next snapshot, and the figure printed is the
time from the kill to a new command's events stored. (The 1M-command figure itself is a
benchmark, reported in the README, not a CI gate.)"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tradeplane.bench import recovery

pytestmark = pytest.mark.e2e


@pytest.fixture
def folder() -> Iterator[Path]:
    # Not under pytest's tmp tree (PostgreSQL's unprivileged user must reach it).
    path = Path(tempfile.mkdtemp(prefix="tp-recovery-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_the_engine_killed_with_the_most_to_replay_is_back_and_the_figure_printed(
    folder: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    back = recovery.run(commands=20_000, per_msg=50, snapshot_every=5_000, seed=7,
                        folder=folder)

    out = capsys.readouterr().out
    assert 0 < back < 60
    behind = re.search(r"the snapshot is ([0-9,]+) commands behind", out)
    assert behind is not None, out
    # The worst case was made: one message (50 commands) short of the next snapshot.
    assert 5_000 - 50 <= int(behind.group(1).replace(",", "")) < 5_000
    assert f"its events stored {back:.2f} s after the kill" in out
    # The split, from the restarted engine's own "engine recovered" log line.
    split = re.search(r"snapshot restored ([0-9.]+) s; the ([0-9,]+) commands replayed and "
                      r"the new one processed and stored (-?[0-9.]+) s", out)
    assert split is not None, out
    assert abs(float(split.group(1)) + float(split.group(3)) - back) < 0.02
    assert split.group(2) == behind.group(1)
