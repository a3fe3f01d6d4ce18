"""``supervision.loop_watchdog``: a crash-only process whose event loop blocks is ended, with
the stack that blocked it, so that its supervisor restarts it; one whose loop runs is left
alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import asyncio, logging, sys, time
    from tradeplane.supervision import loop_watchdog

    logging.basicConfig(level=logging.INFO)

    async def main(block: bool) -> None:
        async with loop_watchdog("probe", stall_s=2.0):
            await asyncio.sleep(0.2)
            if block:
                time.sleep(15)  # the loop blocked: no beat can run
            else:
                await asyncio.sleep(4)

    asyncio.run(main(sys.argv[1] == "block"))
""")


def run(tmp_path: Path, mode: str) -> tuple[int, str, float]:
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script), mode], capture_output=True,
                          text=True, timeout=30)
    return done.returncode, done.stderr, time.monotonic() - started


def test_a_blocked_loop_ends_the_process_with_its_stack_for_a_restart(tmp_path: Path) -> None:
    code, err, took = run(tmp_path, "block")
    assert code == 70
    assert took < 10  # not the 15 s of the block: ended within the stall and a beat
    assert "probe: event loop blocked for" in err
    assert "time.sleep(15)" in err  # the stack shows what blocked it


def test_a_loop_that_runs_is_left_alone(tmp_path: Path) -> None:
    code, err, _ = run(tmp_path, "run")
    assert code == 0, err
    assert "blocked" not in err
