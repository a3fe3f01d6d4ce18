"""Supervision of the local platform's processes: start, watch, restart with backoff, give up.

A :class:`Supervisor` owns a list of children. Until :meth:`Supervisor.running` is called
(the platform is up), a child that exits fails the start at once; afterwards a child that
exits is restarted after an exponential backoff, and after too many crashes in a window
the supervisor gives up (:class:`GaveUpError`) rather than restart forever.

Every process started here dies with the process that started it, even when that one is
killed with SIGKILL: on Linux each child asks the kernel for a parent-death signal
(``PR_SET_PDEATHSIG``) before it runs anything.

Children are :class:`Command` (a plain process: argv, environment, log file), or anything
else that satisfies :class:`Child` (the embedded servers do), so more processes join the
platform with one :meth:`Supervisor.add` each.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tradeplane.domain.errors import TradeplaneError
from tradeplane.platform.ports import free_port, port_is_free

__all__ = [
    "Child",
    "ChildStartError",
    "Command",
    "ExitedDuringStartError",
    "GaveUpError",
    "RestartPolicy",
    "Supervisor",
    "SupervisorError",
    "die_with_parent",
]

_PR_SET_PDEATHSIG = 1
_LOG_TAIL_LINES = 15


class SupervisorError(TradeplaneError):
    """A supervised process could not be kept running."""


class ChildStartError(SupervisorError):
    """A child could not be started (its program is missing, it was not ready...)."""


class ExitedDuringStartError(SupervisorError):
    """A child exited while the platform was starting."""


class GaveUpError(SupervisorError):
    """A child crashed too often within the restart window; nothing more is restarted."""


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when its parent dies.

    The kernel tracks the thread that forked the child, so children must be started from
    a thread that lives as long as the process (the main thread). None off Linux.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        # The parent may have died between fork and prctl: then no signal would come.
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


class Child(Protocol):
    """One supervised process (or server) with a log file."""

    @property
    def name(self) -> str: ...

    @property
    def log_path(self) -> Path: ...

    def start(self) -> None:
        """Start it (a no-op while it runs); may wait until it is ready.

        Raises:
            ChildStartError: it could not be started.
        """

    def returncode(self) -> int | None:
        """Its exit code once it has exited; None while it runs."""

    def stop(self) -> None:
        """Stop it cleanly, killing it if it does not stop in time; a no-op if stopped."""


@dataclass
class Command:
    """A plain process: argv, environment and a log file (stdout and stderr, appended).

    With ``port_env``, the named variable holds a TCP port chosen at each start: the
    previous one while it is still free on every local address, else a new free one.
    """

    name: str
    args: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    port_env: str | None = None
    cwd: Path | None = None
    stop_signal: signal.Signals = signal.SIGTERM
    """Asks it to stop cleanly (:meth:`stop`)."""
    death_signal: signal.Signals = signal.SIGKILL
    """What it receives when the supervising process dies. SIGKILL by default: our
    services are crash-only, and one asked to stop cleanly could wait forever for servers
    that die at the same moment."""
    stop_timeout: float = 15.0
    port: int | None = field(default=None, init=False)
    """The port given in ``port_env`` at the latest start."""
    starts: int = field(default=0, init=False)
    """How many times it was started."""
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        """Start the process unless it runs (without waiting for it to be ready).

        Raises:
            ChildStartError: the program could not be run.
        """
        if self._process is not None and self._process.poll() is None:
            return
        env = dict(self.env)
        if self.port_env is not None:
            if self.port is None or not port_is_free(self.port):
                self.port = free_port()
            env[self.port_env] = str(self.port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    list(self.args), env=env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT,
                    # Its own session: a Ctrl-C in the terminal reaches only the supervisor,
                    # which stops its children in order.
                    start_new_session=True,
                    preexec_fn=die_with_parent(self.death_signal),
                )
        except OSError as exc:
            raise ChildStartError(f"{self.name}: cannot run {self.args[0]}: {exc}") from exc
        self.starts += 1

    @property
    def pid(self) -> int | None:
        """Its pid while it runs."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def signal_stop(self) -> None:
        """Ask it to stop (without waiting)."""
        # Popen only signals a child it has not reaped yet, so a recycled pid is safe.
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(self.stop_signal)

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        self.signal_stop()
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class RestartPolicy:
    """When a crashed child is restarted, and when the supervisor stops trying."""

    first_delay: float = 1.0
    """Seconds before the first restart; each crash within ``window`` doubles it."""
    max_delay: float = 30.0
    """The longest wait before a restart."""
    max_crashes: int = 5
    """Give up at this many crashes of one child within ``window`` seconds."""
    window: float = 60.0
    """Seconds over which crashes are counted."""

    def delay(self, crashes: int) -> float:
        """Seconds to wait before restarting a child that crashed ``crashes`` times in
        the window: 1, 2, 4 ... up to ``max_delay``."""
        return min(self.max_delay, self.first_delay * float(2 ** max(0, crashes - 1)))


@dataclass
class _Watch:
    child: Child
    crashes: deque[float] = field(default_factory=deque)
    restart_at: float | None = None
    last_code: int | None = None


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
    except OSError as exc:
        return f"  (log unreadable: {exc})"
    return "\n".join(f"  | {line}" for line in lines) if lines else "  (log is empty)"


class Supervisor:
    """Starts children, restarts the ones that crash (once running), stops them all.

    Not thread-safe: call it from the main thread only (see :func:`die_with_parent`).
    """

    def __init__(
        self,
        log_dir: Path,
        policy: RestartPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.policy = policy or RestartPolicy()
        self._clock = clock
        self._report = report or (lambda line: print(line, file=sys.stderr, flush=True))
        self._watches: dict[str, _Watch] = {}
        self._running = False
        self._liveness: dict[str, tuple[Callable[[], str | None], float]] = {}
        self._checked: dict[str, float] = {}

    def add(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        port_env: str | None = None,
        cwd: Path | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        death_signal: signal.Signals = signal.SIGKILL,
    ) -> Command:
        """Start a process and supervise it; its output goes to ``log_dir/<name>.log``.

        Raises:
            ChildStartError: it could not be started.
        """
        command = Command(name, args, env, self.log_dir / f"{name}.log", port_env=port_env,
                          cwd=cwd, stop_signal=stop_signal, death_signal=death_signal)
        self.adopt(command)
        return command

    def adopt(self, child: Child) -> None:
        """Supervise ``child``, starting it unless it runs already.

        Raises:
            ChildStartError: it could not be started.
            ValueError: a child of that name is supervised already.
        """
        if child.name in self._watches:
            raise ValueError(f"{child.name} is supervised already")
        child.start()
        self._watches[child.name] = _Watch(child)

    def add_liveness(self, name: str, check: Callable[[], str | None],
                     every: float = 5.0) -> None:
        """Kubernetes' liveness probe, here: every ``every`` seconds while the child
        ``name`` runs (and the platform is up), ``check()``; a reason back means it runs
        but is broken in a way only a restart mends, so it is stopped and restarted as
        if it had crashed (the same backoff, the same count).

        Raises:
            KeyError: no child of that name.
        """
        if name not in self._watches:
            raise KeyError(name)
        self._liveness[name] = (check, every)

    @property
    def children(self) -> list[Child]:
        """The supervised children, in the order they were added."""
        return [w.child for w in self._watches.values()]

    def running(self) -> None:
        """The platform is up: from now on a child that exits is restarted."""
        self._running = True

    def poll(self) -> None:
        """Notice children that exited and restart those whose backoff has passed.

        Raises:
            ExitedDuringStartError: a child exited before :meth:`running` was called.
            GaveUpError: a child crashed ``policy.max_crashes`` times within the window.
        """
        now = self._clock()
        for watch in self._watches.values():
            child = watch.child
            if watch.restart_at is None:
                code = child.returncode()
                if code is None:
                    continue
                self._crashed(watch, code, now)
            elif now >= watch.restart_at:
                watch.restart_at = None
                self._report(f"tradeplane: restarting {child.name}")
                try:
                    child.start()
                except ChildStartError as exc:
                    self._report(f"tradeplane: {exc}")
                    self._crashed(watch, watch.last_code, now)
        if self._running:
            self._probe(now)

    def _probe(self, now: float) -> None:
        for name, (check, every) in self._liveness.items():
            watch = self._watches[name]
            if (watch.restart_at is not None or watch.child.returncode() is not None
                    or now - self._checked.get(name, -math.inf) < every):
                continue
            self._checked[name] = now
            reason = check()
            if reason is None:
                continue
            watch.child.stop()
            self._crashed(watch, watch.child.returncode(), now,
                          f"was stopped: it runs but is broken ({reason})")

    def _crashed(self, watch: _Watch, code: int | None, now: float,
                 exited: str | None = None) -> None:
        child = watch.child
        watch.last_code = code
        if exited is None:
            exited = f"exited with code {code}" if code is not None else "did not start"
        if not self._running:
            raise ExitedDuringStartError(
                f"{child.name} {exited} while the platform was starting; "
                f"its log, {child.log_path}, ends with:\n{_log_tail(child.log_path)}"
            )
        watch.crashes.append(now)
        while watch.crashes and watch.crashes[0] <= now - self.policy.window:
            watch.crashes.popleft()
        crashes = len(watch.crashes)
        if crashes >= self.policy.max_crashes:
            raise GaveUpError(
                f"{child.name} crashed {crashes} times within {self.policy.window:g} s "
                f"(last: {exited}); giving up. Its log, {child.log_path}, ends with:\n"
                f"{_log_tail(child.log_path)}"
            )
        delay = self.policy.delay(crashes)
        watch.restart_at = now + delay
        self._report(f"tradeplane: {child.name} {exited}; restarting in {delay:g} s "
                     f"(see {child.log_path})")

    def stop(self) -> None:
        """Stop every child, the last added first; plain processes are all asked to stop
        before any is waited for."""
        children = list(reversed(self.children))
        for child in children:
            if isinstance(child, Command):
                child.signal_stop()
        for child in children:
            child.stop()
        self._watches.clear()
