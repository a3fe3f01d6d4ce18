"""``tradeplane up``: the whole platform on a laptop, no Docker, no root, no cluster.

Starts NATS (JetStream), PostgreSQL and Redis from their pip wheels under a project-local
data folder, applies migrations, creates the demo markets and a funded demo account, runs
every service as a local process, prints how to reach it, and stops everything on Ctrl-C.
Running it again keeps the data: a restart is a recovery.
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

import httpx

from tradeplane.adapters import db
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.config import Settings
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.platform.servers import LocalServers, free_port

DEMO_FUNDS = {"BTC": "10", "ETH": "100", "USDT": "1000000"}
MM_FUNDS = {"BTC": "1000", "ETH": "10000", "USDT": "100000000"}


@dataclass(frozen=True)
class Credentials:
    account: int
    api_key: str
    secret: str


def _local_secret(data_dir: Path) -> str:
    """The local platform's master key, generated once and kept in the data folder."""
    path = data_dir / "secret.key"
    if not path.exists():
        path.write_text(_stdlib_secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


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
    store.write_text(json.dumps(known, indent=2))
    store.chmod(0o600)
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
        master_key = _local_secret(root)
        creds = asyncio.run(_provision(servers.pg_url, root, master_key))
        env = {
            **os.environ,
            "TRADEPLANE_DEV_MODE": "1",
            "TRADEPLANE_NATS_URL": servers.nats_url,
            "TRADEPLANE_DATABASE_URL": servers.pg_url,
            "TRADEPLANE_REDIS_URL": servers.redis_url,
            "TRADEPLANE_SECRET_KEY": master_key,
            "TRADEPLANE_ADMIN_TOKEN": master_key,
            "TRADEPLANE_HTTP_PORT": str(http_port),
            # Sign-up mail (verification tokens) as JSON files, read them there.
            "TRADEPLANE_MAIL_OUTBOX": os.environ.get("TRADEPLANE_MAIL_OUTBOX",
                                                     str(root / "mail")),
        }
        metrics: dict[str, int] = {}

        def start(name: str, args: list[str]) -> None:
            port = free_port()
            metrics[name] = port
            children[name] = _spawn(args, {**env, "TRADEPLANE_METRICS_PORT": str(port)},
                                    logs, name)

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
            children["marketmaker"] = _spawn(
                ["marketmaker", "--url", base, "--api-key", mm.api_key,
                 "--api-secret", mm.secret], env, logs, "marketmaker")
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
                f"  admin token   {master_key}\n"
                f"  markets       {', '.join(p.symbol for p in DEMO_PAIRS)}\n"
                f"  metrics       gateway {base}/metrics; "
                + ", ".join(f"{n} :{p}" for n, p in metrics.items()) + "\n"
                f"  logs          {logs}\n"
                "Press Ctrl-C to stop (data is kept; run again to resume).\n",
                flush=True,
            )
        while not stop:
            for name, proc in children.items():
                if proc.poll() is not None:
                    print(f"tradeplane: {name} exited with {proc.returncode}; restarting "
                          f"(see {logs}/{name}.log)", file=sys.stderr, flush=True)
                    children[name] = subprocess.Popen(
                        proc.args, env=env if name == "gateway" else
                        {**env, "TRADEPLANE_METRICS_PORT": str(metrics.get(name, 0))},
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
