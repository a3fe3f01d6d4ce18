"""Which platform a CLI command talks to, from any folder.

``tradeplane up`` keeps its servers' ports in ``<data-dir>/ports.json`` and, while it runs,
``<data-dir>/platform.json`` (``{"pid", "http_port", "data_dir", "started_ms"}``, removed
on a clean stop); it also writes its data folder's absolute path to
``$XDG_STATE_HOME/tradeplane/current`` (default ``~/.local/state/tradeplane/current``).

A command finds its platform in this order (:func:`locate`):

1. ``--data-dir DIR``;
2. ``TRADEPLANE_DATA_DIR``;
3. explicit settings in the environment (``TRADEPLANE_DATABASE_URL`` and the like: the
   Kubernetes and operations case; no data folder is used);
4. the nearest running platform: ``./.tradeplane`` or a parent folder's ``.tradeplane``
   whose ``platform.json`` names a live process, then the ``current`` pointer if its
   process is alive;
5. failing those, the nearest ``.tradeplane`` holding a ``ports.json`` (a platform that is
   probably stopped: connecting to it then says so, naming its address).

Everything here but :func:`pid_alive` and the file reads is pure; the environment, the
working directory and the liveness check are passed in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from tradeplane.domain.errors import TradeplaneError

LOCAL_DIR = ".tradeplane"
PORTS_FILE = "ports.json"
PLATFORM_FILE = "platform.json"
DATA_DIR_ENV = "TRADEPLANE_DATA_DIR"
#: Any of these set means "configured from the environment": no data folder is used.
CONFIGURED_ENV = ("TRADEPLANE_DATABASE_URL", "TRADEPLANE_DATABASE_URL_FILE",
                  "TRADEPLANE_VAULT_ADDR", "TRADEPLANE_NATS_URL", "TRADEPLANE_REDIS_URL")
#: Longest data-folder path accepted (Linux's PATH_MAX).
MAX_PATH_CHARS = 4096
#: ``platform.json`` is a few dozen bytes; anything much larger is not ours.
_MAX_PLATFORM_FILE_BYTES = 64 * 1024
_MAX_PID = 2**22  # Linux's pid_max ceiling


class DiscoveryError(TradeplaneError):
    """No platform could be found; the message says where it looked and what to do."""


class Source(Enum):
    """Where the platform was found."""

    FLAG = "--data-dir"
    ENV_DATA_DIR = DATA_DIR_ENV
    ENV_SETTINGS = "TRADEPLANE_* settings"
    NEAREST = "nearest running platform"
    CURRENT = "the last `tradeplane up` (state pointer)"
    NEAREST_STOPPED = "nearest data folder (not running)"


@dataclass(frozen=True, slots=True)
class PlatformInfo:
    """A running ``tradeplane up``, as its ``platform.json`` describes it."""

    pid: int
    http_port: int
    data_dir: Path
    started_ms: int


@dataclass(frozen=True, slots=True)
class Located:
    """The platform a command uses."""

    source: Source
    data_dir: Path | None
    """The data folder; None when the environment's settings are used as they are."""
    running: PlatformInfo | None = None
    """Its ``platform.json`` when the process it names is alive."""


def check_data_dir_text(text: str) -> str:
    """A ``--data-dir`` / ``TRADEPLANE_DATA_DIR`` value, bounded.

    Raises:
        DiscoveryError: empty, longer than :data:`MAX_PATH_CHARS` or holding a NUL or a
            line break.
    """
    if not text:
        raise DiscoveryError("the data folder must not be empty")
    if len(text) > MAX_PATH_CHARS:
        raise DiscoveryError(f"the data folder path is longer than {MAX_PATH_CHARS} characters")
    if any(c in text for c in "\x00\r\n"):
        raise DiscoveryError("the data folder path holds a NUL or a line break")
    return text


def state_pointer(env: Mapping[str, str], home: Path) -> Path:
    """The file naming the data folder of the last ``tradeplane up``."""
    state = env.get("XDG_STATE_HOME", "")
    base = Path(state) if state and Path(state).is_absolute() else home / ".local" / "state"
    return base / "tradeplane" / "current"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0: nothing is sent)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except OSError:
        return False
    return True


def _int_field(doc: Mapping[str, object], name: str, low: int, high: int) -> int | None:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def parse_platform(text: str) -> PlatformInfo | None:
    """``platform.json``'s content, or None when it is not a well-formed one."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    pid = _int_field(doc, "pid", 1, _MAX_PID)
    port = _int_field(doc, "http_port", 1, 65535)
    started = _int_field(doc, "started_ms", 0, 2**63 - 1)
    data_dir = doc.get("data_dir")
    if pid is None or port is None or started is None or not isinstance(data_dir, str):
        return None
    try:
        check_data_dir_text(data_dir)
    except DiscoveryError:
        return None
    return PlatformInfo(pid, port, Path(data_dir), started)


def read_platform(data_dir: Path) -> PlatformInfo | None:
    """The data folder's ``platform.json``, or None (missing, unreadable, malformed)."""
    try:
        with (data_dir / PLATFORM_FILE).open("rb") as f:
            raw = f.read(_MAX_PLATFORM_FILE_BYTES + 1)
    except OSError:
        return None
    if len(raw) > _MAX_PLATFORM_FILE_BYTES:
        return None
    try:
        return parse_platform(raw.decode())
    except UnicodeDecodeError:
        return None


def running_platform(data_dir: Path, alive: Callable[[int], bool] = pid_alive
                     ) -> PlatformInfo | None:
    """The platform running on ``data_dir``: its ``platform.json`` with a live pid."""
    info = read_platform(data_dir)
    return info if info is not None and alive(info.pid) else None


def _candidates(cwd: Path) -> list[Path]:
    return [d / LOCAL_DIR for d in (cwd, *cwd.parents)]


def _explicit(text: str, source: Source, cwd: Path,
              alive: Callable[[int], bool]) -> Located:
    path = Path(check_data_dir_text(text)).expanduser()
    path = (path if path.is_absolute() else cwd / path).resolve()
    if not (path / PORTS_FILE).is_file():
        how = "--data-dir" if source is Source.FLAG else DATA_DIR_ENV
        raise DiscoveryError(
            f"{path} holds no platform ({PORTS_FILE} missing; {how} names the folder "
            f"`tradeplane up --data-dir` keeps its data in) — is `tradeplane up` running?")
    return Located(source, path, running_platform(path, alive))


def locate(flag: str | None, env: Mapping[str, str], cwd: Path, home: Path,
           alive: Callable[[int], bool] = pid_alive) -> Located:
    """The platform a command uses (the order is the module's docstring's).

    ``flag`` is ``--data-dir`` (None when not given); ``cwd`` must be absolute.

    Raises:
        DiscoveryError: a named data folder holds no platform, or none was found.
    """
    if flag is not None:
        return _explicit(flag, Source.FLAG, cwd, alive)
    named = env.get(DATA_DIR_ENV)
    if named is not None:
        return _explicit(named, Source.ENV_DATA_DIR, cwd, alive)
    if any(env.get(v) for v in CONFIGURED_ENV):
        return Located(Source.ENV_SETTINGS, None)
    nearby = _candidates(cwd)
    for d in nearby:
        info = running_platform(d, alive)
        if info is not None and (d / PORTS_FILE).is_file():
            return Located(Source.NEAREST, d, info)
    pointer = state_pointer(env, home)
    try:
        current = pointer.read_text(encoding="utf-8").strip()[:MAX_PATH_CHARS + 1]
    except (OSError, UnicodeDecodeError):
        current = ""
    if current:
        try:
            path = Path(check_data_dir_text(current))
        except DiscoveryError:
            path = None
        if path is not None and path.is_absolute() and (path / PORTS_FILE).is_file():
            info = running_platform(path, alive)
            if info is not None:
                return Located(Source.CURRENT, path, info)
    for d in nearby:
        if (d / PORTS_FILE).is_file():
            return Located(Source.NEAREST_STOPPED, d, None)
    raise DiscoveryError(
        f"no running platform found (looked in {cwd / LOCAL_DIR} and its parents' "
        f"{LOCAL_DIR}, and {pointer}) — is `tradeplane up` running? (or pass --data-dir / "
        f"set {DATA_DIR_ENV}, or set TRADEPLANE_DATABASE_URL and the other settings)")
