"""``tradeplane up``: the whole platform on a laptop, no Docker, no root, no cluster.

Starts NATS (JetStream), PostgreSQL and Redis from their pip wheels under a project-local
data folder, applies migrations, creates the demo markets and a funded demo account, runs
every service as a local process, prints how to reach it, and stops everything on Ctrl-C.
Running it again keeps the data: a restart is a recovery.

Secrets: the admin token, the key that encrypts API secrets and the JWT key are separate
random values, generated once per data folder into ``secrets.json`` (mode 0600); the
PostgreSQL password is kept by the server (``pg/password``). Only the admin token is
printed. Children get their secrets through the environment, never on the command line
(anyone can read every process's command line with ``ps``).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets as _stdlib_secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tradeplane.adapters import db
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.config import Settings
from tradeplane.demo.marketmaker import API_SECRET_ENV
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.platform.servers import LocalServers, PostgresServer, free_port

DEMO_FUNDS = {"BTC": "10", "ETH": "100", "USDT": "1000000"}
MM_FUNDS = {"BTC": "1000", "ETH": "10000", "USDT": "100000000"}


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
                key = await db.create_api_key(pool, account, cipher.encrypt(secret),
                                              ["read", "trade"])
                entry = {"api_key": key, "secret": secret}
                known[name] = entry
            for asset, amount in funds.items():
                await db.credit(pool, account, asset, to_units(amount), f"{name}-initial-{asset}")
            out[name] = Credentials(account, str(entry["api_key"]), str(entry["secret"]))
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


def _spawn(
    args: list[str], env: dict[str, str], log_dir: Path, name: str
) -> subprocess.Popen[bytes]:
    log = (log_dir / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "tradeplane.cli", *args], env=env, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )


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


def run_local_platform(data_dir: str, http_port: int, market_maker: bool) -> int:
    root = Path(data_dir).absolute()
    root.mkdir(parents=True, exist_ok=True)
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"tradeplane: starting NATS, PostgreSQL and Redis under {root} ...", flush=True)
    children: dict[str, subprocess.Popen[bytes]] = {}
    with LocalServers(root) as servers:
        keys = local_secrets(root)
        creds = asyncio.run(_provision(servers.pg_url, root, keys.secret_key))
        env = {
            **os.environ,
            "TRADEPLANE_DEV_MODE": "1",
            "TRADEPLANE_NATS_URL": servers.nats_url,
            "TRADEPLANE_DATABASE_URL": servers.pg_url,  # carries the password
            "TRADEPLANE_REDIS_URL": servers.redis_url,
            "TRADEPLANE_SECRET_KEY": keys.secret_key,
            "TRADEPLANE_ADMIN_TOKEN": keys.admin_token,
            "TRADEPLANE_JWT_SECRET": keys.jwt_secret,
            "TRADEPLANE_HTTP_PORT": str(http_port),
            # Sign-up mail (verification tokens) as JSON files, read them there.
            "TRADEPLANE_MAIL_OUTBOX": os.environ.get("TRADEPLANE_MAIL_OUTBOX",
                                                     str(root / "mail")),
        }
        metrics: dict[str, int] = {}
        # Each child's environment, kept for its restarts.
        envs: dict[str, dict[str, str]] = {"gateway": env}

        def start(name: str, args: list[str]) -> None:
            port = free_port()
            metrics[name] = port
            envs[name] = {**env, "TRADEPLANE_METRICS_PORT": str(port)}
            children[name] = _spawn(args, envs[name], logs, name)

        for p in DEMO_PAIRS:
            start(f"matching-{p.name}", ["matching", "--symbol", p.name])
        start("settlement", ["settlement"])
        start("marketdata", ["marketdata"])
        children["gateway"] = _spawn(["gateway"], env, logs, "gateway")
        base = f"http://127.0.0.1:{http_port}"
        if not wait_http(f"{base}/api/v3/ping", 60):
            print(f"tradeplane: the gateway did not come up; see {logs}/gateway.log",
                  file=sys.stderr)
            stop = True
        elif market_maker:
            mm = creds["market-maker"]
            # Its API secret in its environment (argv is public), and none of ours.
            envs["marketmaker"] = {
                **{k: v for k, v in env.items() if k not in _PLATFORM_SECRETS},
                API_SECRET_ENV: mm.secret,
            }
            # A round every 5 s: its ~33 orders a round stay within its key's default
            # 100 orders per 10 s (every 2 s they would not).
            children["marketmaker"] = _spawn(
                ["marketmaker", "--url", base, "--api-key", mm.api_key, "--interval", "5"],
                envs["marketmaker"], logs, "marketmaker")
        if not stop:
            demo = creds["demo"]
            print(
                "\n"
                "tradeplane is running.\n"
                f"  REST API      {base}/api/v3   (OpenAPI docs: {base}/docs)\n"
                f"  WebSocket     ws://127.0.0.1:{http_port}/ws\n"
                f"  demo account  {demo.account}\n"
                f"  API key       {demo.api_key}\n"
                f"  API secret    {demo.secret}\n"
                f"  admin token   {keys.admin_token}\n"
                f"  markets       {', '.join(p.symbol for p in DEMO_PAIRS)}\n"
                f"  metrics       gateway {base}/metrics; "
                + ", ".join(f"{n} :{p}" for n, p in metrics.items()) + "\n"
                f"  logs          {logs}\n"
                f"  secrets       {root / SECRETS_FILE} (encryption and JWT keys; not shown)\n"
                "Press Ctrl-C to stop (data is kept; run again to resume).\n",
                flush=True,
            )
        while not stop:
            for name, proc in children.items():
                if proc.poll() is not None:
                    print(f"tradeplane: {name} exited with {proc.returncode}; restarting "
                          f"(see {logs}/{name}.log)", file=sys.stderr, flush=True)
                    children[name] = subprocess.Popen(
                        proc.args, env=envs[name],
                        stdout=(logs / f"{name}.log").open("ab"),
                        stderr=subprocess.STDOUT, start_new_session=True,
                    )
                    break
            time.sleep(0.5)
        print("\ntradeplane: stopping ...", flush=True)
        for name in ("marketmaker", "gateway", *[n for n in children if n.startswith("matching")],
                     "marketdata", "settlement"):
            proc_ = children.get(name)
            if proc_ and proc_.poll() is None:
                proc_.send_signal(signal.SIGTERM)
        for proc_ in children.values():
            try:
                proc_.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc_.kill()
                proc_.wait()
    print("tradeplane: stopped.", flush=True)
    return 0
