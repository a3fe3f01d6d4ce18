"""The local platform's supervisor with real short-lived processes: a child that exits
during the start fails it, a crashed child is restarted after a growing backoff, a crash
loop gives up, a port taken meanwhile is not reused, and children die with their parent
however it dies. And what counts as a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tradeplane.platform.ports import free_port, port_is_free
from tradeplane.platform.supervisor import (
    Command,
    ExitedDuringStartError,
    GaveUpError,
    RestartPolicy,
    Supervisor,
)

CRASH = [sys.executable, "-c", "import sys; print('boom', flush=True); sys.exit(3)"]
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def _until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _poll_until(sup: Supervisor, check: Callable[[], bool]) -> None:
    """Poll the supervisor (real time passes) until ``check`` holds; its errors propagate."""
    def polled() -> bool:
        sup.poll()
        return check()

    _until(polled)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _quiet(lines: list[str]) -> Callable[[str], None]:
    return lines.append


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_child_that_exits_during_the_start_fails_it_naming_its_log(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, report=_quiet([]))
    sup.add("crasher", CRASH, dict(os.environ))
    try:
        with pytest.raises(ExitedDuringStartError) as failed:
            _poll_until(sup, lambda: False)
    finally:
        sup.stop()
    message = str(failed.value)
    assert "crasher exited with code 3" in message
    assert str(tmp_path / "crasher.log") in message
    assert "boom" in message  # the log's tail


def test_a_crashed_child_is_restarted_only_after_its_backoff(tmp_path: Path) -> None:
    clock, lines = Clock(), []
    sup = Supervisor(tmp_path, RestartPolicy(first_delay=1, max_delay=30, max_crashes=10),
                     clock=clock, report=_quiet(lines))
    child = sup.add("crasher", CRASH, dict(os.environ))
    assert isinstance(child, Command)
    sup.running()
    try:
        for crashes, delay in ((1, 1.0), (2, 2.0), (3, 4.0)):
            # Wait for the crash to be noticed (real time), then hold the clock.
            expected = f"restarting in {delay:g} s"
            _poll_until(sup, lambda: expected in "".join(lines))  # noqa: B023
            lines.clear()
            assert child.starts == crashes
            clock.now += delay - 0.01
            sup.poll()
            assert child.starts == crashes, "restarted before its backoff"
            clock.now += 0.01
            sup.poll()
            assert child.starts == crashes + 1
    finally:
        sup.stop()


def test_a_child_its_liveness_check_calls_broken_is_stopped_and_restarted(
    tmp_path: Path,
) -> None:
    clock, lines = Clock(), []
    sup = Supervisor(tmp_path, RestartPolicy(first_delay=1, max_delay=30, max_crashes=10),
                     clock=clock, report=_quiet(lines))
    child = sup.add("server", SLEEP, dict(os.environ))
    verdicts: list[str | None] = [None, "stream X: write error"]
    checks: list[float] = []

    def check() -> str | None:
        checks.append(clock.now)
        return verdicts.pop(0) if verdicts else None

    sup.add_liveness("server", check, every=5.0)
    sup.poll()
    assert checks == [], "checked while the platform was starting"
    sup.running()
    try:
        sup.poll()
        clock.now += 4.9
        sup.poll()
        assert checks == [1000.0], "checked again before its period"
        first = child.pid
        clock.now += 0.1
        sup.poll()  # the second check says broken: stopped, restarted after the backoff
        assert child.returncode() is not None
        assert any("server was stopped: it runs but is broken (stream X: write error); "
                   "restarting in 1 s" in line for line in lines), lines
        clock.now += 1.0
        sup.poll()
        assert child.starts == 2 and child.pid not in (None, first)
        assert child.returncode() is None
    finally:
        sup.stop()


def test_a_liveness_check_is_only_for_a_supervised_child(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, report=_quiet([]))
    with pytest.raises(KeyError):
        sup.add_liveness("nobody", lambda: None)


def test_a_crash_loop_gives_up_with_a_message_naming_the_log(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, RestartPolicy(first_delay=0.01, max_crashes=3, window=60),
                     report=_quiet([]))
    child = sup.add("engine", CRASH, dict(os.environ))
    sup.running()
    try:
        with pytest.raises(GaveUpError) as gave_up:
            _poll_until(sup, lambda: False)
    finally:
        sup.stop()
    assert isinstance(child, Command) and child.starts == 3
    message = str(gave_up.value)
    assert "engine crashed 3 times within 60 s" in message
    assert "giving up" in message and str(tmp_path / "engine.log") in message


def test_crashes_outside_the_window_do_not_count(tmp_path: Path) -> None:
    clock = Clock()
    sup = Supervisor(tmp_path, RestartPolicy(first_delay=0, max_crashes=2, window=60),
                     clock=clock, report=_quiet([]))
    child = sup.add("flaky", CRASH, dict(os.environ))
    assert isinstance(child, Command)
    sup.running()
    try:
        for starts in (2, 3, 4):
            _poll_until(sup, lambda: child.starts == starts)  # noqa: B023
            clock.now += 61  # each crash a minute after the last: never two in a window
    finally:
        sup.stop()


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RestartPolicy(first_delay=1, max_delay=30)
    assert [policy.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_restart_takes_a_new_port_when_the_old_one_was_taken(tmp_path: Path) -> None:
    clock = Clock()
    sup = Supervisor(tmp_path, RestartPolicy(first_delay=0), clock=clock, report=_quiet([]))
    child = sup.add("engine", CRASH, dict(os.environ), port_env="TRADEPLANE_METRICS_PORT")
    assert isinstance(child, Command) and child.port is not None
    first = child.port
    sup.running()
    try:
        # Another program takes the port on another loopback address meanwhile.
        with socket.socket() as other:
            other.bind(("127.0.0.2", first))
            other.listen()
            _poll_until(sup, lambda: child.starts == 2)
            assert child.port != first
    finally:
        sup.stop()


def test_stop_ends_every_child(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, report=_quiet([]))
    children = [sup.add(f"sleeper-{n}", SLEEP, dict(os.environ)) for n in range(3)]
    pids = [c.pid for c in children if isinstance(c, Command)]
    assert all(pids)
    sup.stop()
    assert not any(_alive(pid) for pid in pids if pid)


def test_children_die_with_their_parent_even_when_it_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import os, sys, time\n"
         "from pathlib import Path\n"
         "from tradeplane.platform.supervisor import Supervisor\n"
         "sup = Supervisor(Path(sys.argv[1]))\n"
         "child = sup.add('sleeper', "
         "[sys.executable, '-c', 'import time; time.sleep(60)'], dict(os.environ))\n"
         "print(child.pid, flush=True)\n"
         "time.sleep(60)\n",
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    _until(lambda: not _alive(child), timeout=10)


def test_a_port_held_on_any_local_address_is_not_free() -> None:
    for family, address in ((socket.AF_INET, "127.0.0.2"), (socket.AF_INET, "0.0.0.0"),
                            (socket.AF_INET6, "::1")):
        try:
            holder = socket.socket(family, socket.SOCK_STREAM)
            holder.bind((address, 0))
        except OSError:
            continue  # no IPv6 here
        with holder:
            holder.listen()
            port = holder.getsockname()[1]
            assert not port_is_free(port), address
    port = free_port()
    assert port_is_free(port)
