"""The ``disk-full`` fault: the JetStream store on a small filesystem of its own (a tmpfs
mounted over NATS' data folder), filled to the last byte by a file under load, then
freed. Mounting needs root (CAP_SYS_ADMIN); without it the fault cannot be injected and
``tradeplane chaos`` says so rather than pretend."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tradeplane.chaos.report import say
from tradeplane.domain.errors import TradeplaneError
from tradeplane.platform.servers import NatsServer

#: The tmpfs' size: far more than a run's streams need (a 5-minute run leaves a few MB),
#: little enough to fill in a fraction of a second.
SIZE_MB = 256
#: A soak's: its streams grow for hours, and nats-server caps its store at 75% of the
#: space it finds at start.
SOAK_SIZE_MB = 2048
_CHUNK = 1 << 20
#: The file that fills the filesystem.
FILLER = "chaos-filler"
#: How long the disk stays full under load, besides the order asked for meanwhile (which
#: the gateway answers after its 5 s wait for JetStream).
HOLD_S = 2.0
#: How long NATS' health may take to name the broken stream once the space is back.
HEAL_TIMEOUT_S = 3.0


class MountError(TradeplaneError, OSError):
    """The small filesystem could not be mounted (not root, or no tmpfs)."""


def can_mount() -> bool:
    """True when this process may mount filesystems (it runs as root)."""
    return os.geteuid() == 0


class SmallFilesystem:
    """A tmpfs of ``size_mb`` mounted at ``path`` (created if missing) until
    :meth:`unmount`; :meth:`fill` and :meth:`free` take its last byte and give it back."""

    def __init__(self, path: Path, size_mb: int = SIZE_MB) -> None:
        self.path = path
        self.size_mb = size_mb
        self.mounted = False

    def mount(self) -> None:
        """Raises:
            MountError: not root, or the mount failed (its message says why).
        """
        if not can_mount():
            raise MountError("disk-full needs root: it mounts a small filesystem for the "
                             "JetStream store")
        self.path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode=0755",
             "tradeplane-chaos", str(self.path)],
            capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise MountError(f"mount -t tmpfs on {self.path}: {done.stderr.strip()}")
        self.mounted = True

    def unmount(self) -> None:
        """Unmount (lazily: a server still holding a file there does not keep it)."""
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True,
                           check=False)
            self.mounted = False

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self) -> int:
        """Write a file until the filesystem has no byte left; returns its size."""
        written = 0
        chunk = b"\0" * _CHUNK
        fd = os.open(self.path / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = _CHUNK
            while size >= 1:
                try:
                    written += os.write(fd, chunk[:size])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    size //= 2  # the last pages, down to the last byte
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        """Delete the filler: the space is back."""
        (self.path / FILLER).unlink(missing_ok=True)


def fill_hold_free(fs: SmallFilesystem, nats: NatsServer, idle: Callable[[float], None],
                   ask: Callable[[], tuple[int, str]], freed: Callable[[float], None],
                   hold_s: float = HOLD_S,
                   heal_timeout_s: float = HEAL_TIMEOUT_S) -> list[str]:
    """The fault: fill the store's filesystem under load, ask for an order while it is
    full (``ask`` returns the gateway's status and body), free it (``freed`` is told
    when, by ``time.monotonic()``), and restart NATS the
    way the platform's supervisor does (``Supervisor.add_liveness`` with
    ``NatsServer.store_error``) once its health names a stream that failed a write.
    Returns the problems found: an answer other than a clear refusal, or a store that
    stays broken."""
    problems: list[str] = []
    filled = fs.fill()
    say(f"  the store's filesystem filled ({filled >> 20} MiB written, "
        f"{fs.free_bytes()} bytes left)")
    idle(hold_s / 2)
    status, body = ask()
    say(f"  an order while the disk is full: {status} {body[:160]}")
    if status not in (200, 503):
        problems.append(f"disk full: an order was answered {status} {body[:160]} "
                        "(expected 503 with -1007/-1001, or 200)")
    idle(hold_s / 2)
    fs.free()
    freed(time.monotonic())
    deadline = time.monotonic() + heal_timeout_s
    broken: str | None = None
    while time.monotonic() < deadline:
        broken = nats.store_error()
        if broken is not None:
            break
        idle(0.5)
    if broken is not None:
        say(f"  NATS reports {broken[:160]}; restarting it")
        nats.stop()
        nats.start()
        if nats.store_error() is not None:
            problems.append(f"disk full: the store still broken after a restart: {broken}")
    return problems
