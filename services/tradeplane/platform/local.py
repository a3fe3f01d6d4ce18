"""``tradeplane up``: the whole platform on a laptop, no Docker, no root, no cluster.

Starts NATS (JetStream), PostgreSQL and Redis from their pip wheels under a project-local
data folder, applies migrations, creates the demo markets and a funded demo account, runs
every service as a local process under a :class:`~tradeplane.platform.supervisor.Supervisor`,
prints how to reach it, and stops everything on Ctrl-C, SIGTERM or SIGHUP. Running it again
keeps the data: a restart is a recovery.

It is honest about its state: a port that another program holds fails the start at once
(exit 2) before anything starts; each step of the start is printed; the banner comes only
once the gateway answers and the demo books are quoted; a child that crashes during the
start fails it, and one that keeps crashing later makes ``up`` give up and stop (exit 1).
Nothing it started outlives it, even when it is killed (see
:func:`~tradeplane.platform.supervisor.die_with_parent`).

Secrets: the admin token, the key that encrypts API secrets and the JWT key are separate
random values, generated once per data folder into ``secrets.json`` (mode 0600); the
PostgreSQL password is kept by the server (``pg/password``). Only the admin token is
printed. Children get their secrets through the environment, never on the command line
(anyone can read every process's command line with ``ps``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets as _stdlib_secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from tradeplane.adapters import db
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.config import Settings
from tradeplane.demo.marketmaker import API_SECRET_ENV
from tradeplane.domain.convert import DESK_ACCOUNT
from tradeplane.domain.errors import Unavailable
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.platform.chains import (
    NO_CUSTODY,
    ChainNodeError,
    LocalChainNodes,
    LocalCustody,
    start_custody,
)
from tradeplane.platform.discovery import PLATFORM_FILE, state_pointer
from tradeplane.platform.monitoring import (
    LocalMonitoring,
    MonitoringStartError,
    start_monitoring,
)
from tradeplane.platform.ports import HOST, port_is_free
from tradeplane.platform.servers import LocalServers, PostgresServer
from tradeplane.platform.supervisor import Command, Supervisor, SupervisorError

DEMO_FUNDS = {"BTC": "10", "ETH": "100", "USDT": "1000000"}
MM_FUNDS = {"BTC": "1000", "ETH": "10000", "USDT": "100000000"}
#: The house convert desk's demo inventory (the other side of every conversion).
DESK_FUNDS = {"BTC": "100", "ETH": "1000", "USDT": "10000000"}


@dataclass(frozen=True)
class Credentials:
    account: int
    api_key: str
    secret: str


SECRETS_FILE = "secrets.json"
#: Before ``secrets.json``: one value served as admin token, encryption key and JWT root.
_LEGACY_KEY_FILE = "secret.key"
#: Variables that carry the platform's own secrets; the market maker gets none of them.
_PLATFORM_SECRETS = ("TRADEPLANE_DATABASE_URL", "TRADEPLANE_SECRET_KEY",
                     "TRADEPLANE_ADMIN_TOKEN", "TRADEPLANE_JWT_SECRET")


@dataclass(frozen=True, repr=False)
class LocalSecrets:
    """The local platform's keys; three separate random values."""

    admin_token: str
    """Bearer token of the bootstrap SuperAdmin; printed in the banner."""
    secret_key: str
    """Encrypts API and TOTP secrets at rest; never printed."""
    jwt_secret: str
    """Signs users' access tokens; never printed."""


def local_secrets(data_dir: Path) -> LocalSecrets:
    """The data folder's secrets, generated once into ``secrets.json`` (mode 0600).

    A folder made before that file has only ``secret.key``: its value stays the encryption
    key (the API secrets in its database are encrypted with it), the admin token and the
    JWT key are new, and ``secret.key`` is removed once ``secrets.json`` holds it.
    """
    path = data_dir / SECRETS_FILE
    legacy = data_dir / _LEGACY_KEY_FILE
    try:
        known: Any = json.loads(path.read_text())
    except FileNotFoundError:
        known = {}
    if not isinstance(known, dict):
        raise ValueError(f"{path} is not a JSON object")
    values: dict[str, str] = {}
    for name in ("admin_token", "secret_key", "jwt_secret"):
        value = known.get(name)
        if not isinstance(value, str) or not value:
            if name == "secret_key" and legacy.exists():
                value = legacy.read_text().strip()
            else:
                value = _stdlib_secrets.token_hex(32)
        values[name] = value
    if values != known:
        _write_private(path, json.dumps(values, indent=2) + "\n")
    legacy.unlink(missing_ok=True)
    return LocalSecrets(**values)


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by us only from the first byte on."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def client_overrides(data_dir: Path) -> dict[str, Any]:
    """Settings for a command run beside a local platform's data folder (the CLI's
    fallback when nothing is configured): its servers' URLs, the PostgreSQL password
    included, and its secrets unless the environment names them."""
    ports = json.loads((data_dir / "ports.json").read_text())
    pg = PostgresServer(data_dir / "pg", port=ports["postgres"])
    out: dict[str, Any] = {
        "dev_mode": True,
        "database_url": pg.url,
        "nats_url": f"nats://127.0.0.1:{ports['nats']}",
        "redis_url": f"redis://127.0.0.1:{ports['redis']}/0",
    }
    secrets = local_secrets(data_dir)
    for name in ("admin_token", "secret_key", "jwt_secret"):
        var = f"TRADEPLANE_{name.upper()}"
        if var not in os.environ and f"{var}_FILE" not in os.environ:
            out[name] = getattr(secrets, name)
    return out


async def _provision(dsn: str, data_dir: Path, master_key: str) -> dict[str, Credentials]:
    """Migrations, demo pairs, demo and market-maker accounts with keys and funds.

    Idempotent: credentials are kept in ``data_dir/accounts.json``; credits use fixed refs.
    """
    pool = await db.create_pool(dsn, 2)
    cipher = SecretCipher(master_key)
    store = data_dir / "accounts.json"
    known: dict[str, dict[str, str | int]] = json.loads(store.read_text()) if store.exists() else {}
    out: dict[str, Credentials] = {}
    try:
        await db.migrate(pool)
        for p in DEMO_PAIRS:
            await db.upsert_pair(pool, p)
        for name, funds in (("demo", DEMO_FUNDS), ("market-maker", MM_FUNDS)):
            account = await db.create_account(pool, name)
            entry = known.get(name)
            if not entry or await db.get_api_key(pool, str(entry["api_key"])) is None:
                secret = _stdlib_secrets.token_hex(32)
                perms = (["read", "trade", "convert", "escrow"] if name == "demo"
                         else ["read", "trade"])
                key = await db.create_api_key(pool, account, cipher.encrypt(secret), perms)
                entry = {"api_key": key, "secret": secret}
                known[name] = entry
            for asset, amount in funds.items():
                await db.credit(pool, account, asset, to_units(amount), f"{name}-initial-{asset}")
            out[name] = Credentials(account, str(entry["api_key"]), str(entry["secret"]))
        for asset, amount in DESK_FUNDS.items():
            await db.credit(pool, DESK_ACCOUNT, asset, to_units(amount),
                            f"convert-desk-initial-{asset}")
    finally:
        await pool.close()
    _write_private(store, json.dumps(known, indent=2))
    return out


def service_env(settings: Settings) -> dict[str, str]:
    """The environment a service process needs to reach the same servers and keys."""
    return {
        **os.environ,
        "TRADEPLANE_DEV_MODE": "1" if settings.dev_mode else "0",
        "TRADEPLANE_NATS_URL": settings.nats_url,
        "TRADEPLANE_DATABASE_URL": settings.database_url,
        "TRADEPLANE_REDIS_URL": settings.redis_url,
        "TRADEPLANE_HTTP_PORT": str(settings.http_port),
        "TRADEPLANE_SNAPSHOT_EVERY": str(settings.snapshot_every),
        "TRADEPLANE_RESPONSE_TIMEOUT_S": str(settings.response_timeout_s),
        "TRADEPLANE_SECRET_KEY": settings.secret_key.get_secret_value(),
        "TRADEPLANE_ADMIN_TOKEN": settings.admin_token.get_secret_value(),
        "TRADEPLANE_JWT_SECRET": settings.jwt_secret.get_secret_value(),
    }


def wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


# ------------------------------------------------------------------ discovery
# What the CLI reads (tradeplane.platform.discovery): the data folder's PLATFORM_FILE,
# {"pid", "http_port", "data_dir", "started_ms"} (no secrets), written once the platform
# is up and removed when ``up`` stops (one left by a killed ``up`` names a dead pid); and
# the state pointer, the data folder's absolute path, written when ``up`` starts.
_LOCK_FILE = "up.lock"


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _lock_data_dir(root: Path) -> IO[bytes] | None:
    """Hold the data folder's lock for as long as the returned file stays open; None when
    another ``up`` holds it (the kernel drops it when its holder dies, however it dies)."""
    lock = (root / _LOCK_FILE).open("ab")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


# ------------------------------------------------------------------ start and stop
#: Seconds the gateway has to answer, and the demo books to be quoted, before the start
#: fails.
READY_TIMEOUT_S = 60.0
_POLL_S = 0.2
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequestedError(BaseException):
    """Ctrl-C, SIGTERM or SIGHUP reached ``up``: unwind and stop everything.

    A BaseException, like KeyboardInterrupt, so that it unwinds whatever ``up`` is doing
    (a server's start, the migrations) and nothing on the way swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


class StartFailedError(Unavailable):
    """The platform did not come up in time."""


def _raise_stop(signum: int, _frame: object) -> None:
    raise StopRequestedError(signum)


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    """Print ``what ... ok (1.2 s)`` around one step of the start."""
    print(f"tradeplane: {what} ...", end="", flush=True)
    started = time.monotonic()
    try:
        yield
    except StopRequestedError:
        print(" interrupted", flush=True)
        raise
    except BaseException:
        print(" failed", flush=True)
        raise
    print(f" ok ({time.monotonic() - started:.1f} s)", flush=True)


def _wait_until(check: Callable[[], bool], what: str, supervisor: Supervisor) -> None:
    """Poll ``check`` (and the children: one that exits fails the start) until it holds.

    Raises:
        StartFailedError: ``check`` still fails after READY_TIMEOUT_S.
        ExitedDuringStartError: a child exited meanwhile.
    """
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        supervisor.poll()
        if check():
            return
        if time.monotonic() >= deadline:
            raise StartFailedError(f"{what} after {READY_TIMEOUT_S:g} s")
        time.sleep(_POLL_S)


def _answers(base: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(f"{base}/api/v3/ping", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    return check


def _books_quoted(base: str) -> Callable[[], bool]:
    """True once every demo pair's book has shown a bid and an ask."""
    waiting = {p.symbol for p in DEMO_PAIRS}

    def check() -> bool:
        for symbol in sorted(waiting):
            try:
                r = httpx.get(f"{base}/api/v3/depth", params={"symbol": symbol, "limit": 5},
                              timeout=1.0)
                book: Any = r.json() if r.status_code == 200 else {}
            except (httpx.TransportError, ValueError):  # ValueError: not JSON
                return False
            if isinstance(book, dict) and book.get("bids") and book.get("asks"):
                waiting.discard(symbol)
        return not waiting

    return check


def _ready_env(root: Path, servers: LocalServers, keys: LocalSecrets, http_port: int,
               ) -> dict[str, str]:
    return {
        # Not a TRADEPLANE_DATA_DIR from the caller's shell (`eval "$(tradeplane env)"`):
        # the CLI would take it over the settings below and reach another platform.
        **{k: v for k, v in os.environ.items() if k != "TRADEPLANE_DATA_DIR"},
        "TRADEPLANE_DEV_MODE": "1",
        "TRADEPLANE_NATS_URL": servers.nats_url,
        "TRADEPLANE_DATABASE_URL": servers.pg_url,  # carries the password
        "TRADEPLANE_REDIS_URL": servers.redis_url,
        "TRADEPLANE_SECRET_KEY": keys.secret_key,
        "TRADEPLANE_ADMIN_TOKEN": keys.admin_token,
        "TRADEPLANE_JWT_SECRET": keys.jwt_secret,
        "TRADEPLANE_HTTP_HOST": HOST,
        "TRADEPLANE_HTTP_PORT": str(http_port),
        # Every listener on loopback: nothing of a laptop's platform faces the network.
        "TRADEPLANE_METRICS_HOST": HOST,
        # Account snapshots (settlement's worker) every minute: the portfolio page of a
        # laptop's platform draws something soon (a cluster's default is hourly).
        "TRADEPLANE_SNAPSHOT_INTERVAL_S": os.environ.get("TRADEPLANE_SNAPSHOT_INTERVAL_S", "60"),
        # Sign-up mail (verification tokens) as JSON files, read them there.
        "TRADEPLANE_MAIL_OUTBOX": os.environ.get("TRADEPLANE_MAIL_OUTBOX", str(root / "mail")),
    }


def _service(*args: str) -> list[str]:
    return [sys.executable, "-m", "tradeplane.cli", *args]


def run_local_platform(data_dir: str, http_port: int, market_maker: bool,
                       chains: bool = True, observability: bool = False) -> int:
    """Run the platform until a stop signal (exit 0) or a failure (exit 1; 2 when the
    port or the data folder is taken). Prints each step, then the banner once the gateway
    answers and, with the market maker, every demo book is quoted. With
    ``observability``, Prometheus and Alertmanager scrape every process (when installed:
    platform/monitoring.py) and their URLs are printed."""
    root = Path(data_dir).absolute()
    root.mkdir(parents=True, exist_ok=True)
    lock = _lock_data_dir(root)
    if lock is None:
        print(f"tradeplane: another `tradeplane up` is running on {root}; stop it first "
              "or use --data-dir", file=sys.stderr, flush=True)
        return 2
    with lock:
        # Before anything starts: whatever holds the port would answer in our place.
        problem = _port_problem(http_port)
        if problem:
            print(f"tradeplane: {problem}; use --port", file=sys.stderr, flush=True)
            return 2
        previous = {sig: signal.signal(sig, _raise_stop) for sig in _STOP_SIGNALS}
        try:
            return _run(root, http_port, market_maker, chains, observability)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _port_problem(port: int) -> str | None:
    """Why the gateway could not listen on ``port``; None when it can."""
    if not 0 < port < 65536:
        return f"port {port} is not a TCP port (1-65535)"
    try:
        if not port_is_free(port):
            return f"port {port} is in use (by another program)"
    except PermissionError:
        return f"port {port} needs privileges we do not have"
    return None


def _run(root: Path, http_port: int, market_maker: bool, chains: bool = True,
         observability: bool = False) -> int:
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    _write_atomically(state_pointer(os.environ, Path.home()), f"{root}\n")
    print(f"tradeplane: data in {root}, logs in {logs}", flush=True)
    supervisor = Supervisor(logs)
    servers = LocalServers(root, step=_step)
    platform_file = root / PLATFORM_FILE
    chain_nodes = LocalChainNodes(root)
    monitoring: LocalMonitoring | None = None
    code = 0
    try:
        servers.start()
        for server in servers.servers:
            supervisor.adopt(server)
        # A full disk leaves a JetStream stream refusing every write until nats-server
        # restarts, even once the space is back.
        supervisor.add_liveness(servers.nats.name, servers.nats.store_error)
        keys = local_secrets(root)
        with _step("migrations, demo markets and accounts"):
            creds = asyncio.run(_provision(servers.pg_url, root, keys.secret_key))
        # Custody on the laptop (platform/chains.py): regtest nodes, wallets, their markets.
        custody = NO_CUSTODY
        if chains:
            with _step("regtest chain nodes and wallets (litecoind, monerod, if installed)"):
                custody = start_custody(chain_nodes, servers.pg_url,
                                        creds["market-maker"].account if market_maker else None)
        env = _ready_env(root, servers, keys, http_port)
        metrics = "TRADEPLANE_METRICS_PORT"
        pairs = [p.name for p in DEMO_PAIRS] + custody.pairs
        with _step(f"starting the engines ({', '.join(pairs)}), "
                   "settlement, market data, rates and the hedger"):
            for name in pairs:
                supervisor.add(f"matching-{name}", _service("matching", "--symbol", name),
                               env, port_env=metrics)
            supervisor.add("settlement", _service("settlement"), env, port_env=metrics)
            supervisor.add("marketdata", _service("marketdata"), env, port_env=metrics)
            supervisor.add("rates", _service("rates"), env, port_env=metrics)
            supervisor.add("hedger", _service("hedger"), env, port_env=metrics)
            for wallet in custody.wallets:
                supervisor.add(f"wallet-{wallet}", _service("wallet-watcher", "--wallet", wallet),
                               {**env, **custody.env}, port_env=metrics)
        base = f"http://{HOST}:{http_port}"
        with _step(f"starting the gateway on port {http_port}"):
            supervisor.add("gateway", _service("gateway"), env)
            _wait_until(_answers(base), f"the gateway did not answer on {base}", supervisor)
        if market_maker:
            mm = creds["market-maker"]
            # Its API secret in its environment (argv is public), and none of ours.
            mm_env = {**{k: v for k, v in env.items() if k not in _PLATFORM_SECRETS},
                      API_SECRET_ENV: mm.secret}
            with _step("starting the market maker; waiting for the demo books"):
                # A round every 5 s: its ~33 orders a round stay within its key's default
                # 100 orders per 10 s (every 2 s they would not); 5 s more per three more
                # markets (the custody ones).
                interval = 5 * -(-len(pairs) // len(DEMO_PAIRS))
                supervisor.add("marketmaker", _service(
                    "marketmaker", "--url", base, "--api-key", mm.api_key,
                    "--interval", str(interval),
                    "--symbols", *(n.replace("-", "") for n in pairs)),
                    mm_env)
                _wait_until(_books_quoted(base), "the demo books were not quoted", supervisor)
        ports = _metrics_ports(supervisor)
        if observability:
            with _step("starting Prometheus and Alertmanager (if installed)"):
                monitoring, notes = start_monitoring(
                    root / "monitoring", {**ports, "gateway": http_port})
            for note in notes:
                print(f"tradeplane: {note}", flush=True)
        _print_banner(root, base, http_port, creds["demo"], keys, ports, custody)
        if monitoring is not None:
            print(f"  Prometheus    {monitoring.prometheus_url}   (alert rules: "
                  f"{monitoring.rules or 'none'})", flush=True)
            if monitoring.alertmanager_url:
                print(f"  Alertmanager  {monitoring.alertmanager_url}", flush=True)
        _write_atomically(platform_file, json.dumps({
            "pid": os.getpid(), "http_port": http_port, "data_dir": str(root),
            "started_ms": int(time.time() * 1000),
        }) + "\n")
        supervisor.running()
        while True:
            supervisor.poll()
            if monitoring is not None:  # a restarted process has a new metrics port
                monitoring.update({**_metrics_ports(supervisor), "gateway": http_port})
            time.sleep(_POLL_S)
    except StopRequestedError:
        pass
    except (SupervisorError, StartFailedError, ChainNodeError, MonitoringStartError) as exc:
        print(f"tradeplane: {exc}", file=sys.stderr, flush=True)
        print(f"tradeplane: logs are in {logs}", file=sys.stderr, flush=True)
        code = 1
    finally:
        # A second Ctrl-C must not cut the stop short: the children would be left behind.
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        print("tradeplane: stopping ...", flush=True)
        platform_file.unlink(missing_ok=True)
        if monitoring is not None:
            monitoring.stop()
        supervisor.stop()
        chain_nodes.stop()
        servers.stop()
    print("tradeplane: stopped.", flush=True)
    return code


def _metrics_ports(supervisor: Supervisor) -> dict[str, int]:
    return {c.name: c.port for c in supervisor.children
            if isinstance(c, Command) and c.port is not None}


def _print_banner(root: Path, base: str, http_port: int, demo: Credentials,
                  keys: LocalSecrets, metrics: Mapping[str, int],
                  custody: LocalCustody) -> None:
    print(
        "\n"
        "tradeplane is running.\n"
        f"  web UI        {base}/   (admin console: {base}/admin)\n"
        f"  REST API      {base}/api/v3   (OpenAPI docs: {base}/docs)\n"
        f"  WebSocket     ws://{HOST}:{http_port}/ws\n"
        f"  demo account  {demo.account}\n"
        f"  API key       {demo.api_key}\n"
        f"  API secret    {demo.secret}\n"
        f"  admin token   {keys.admin_token}\n"
        f"  markets       {', '.join(p.symbol for p in DEMO_PAIRS)}"
        + "".join(f", {n.replace('-', '')}" for n in custody.pairs) + "\n"
        + custody.banner() +
        f"  metrics       gateway {base}/metrics; "
        + ", ".join(f"{n} :{p}" for n, p in metrics.items()) + "\n"
        f"  logs          {root / 'logs'}\n"
        f"  secrets       {root / SECRETS_FILE} (encryption and JWT keys; not shown)\n"
        "Press Ctrl-C to stop (data is kept; run again to resume).\n",
        flush=True,
    )
