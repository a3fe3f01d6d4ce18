"""``tradeplane up``: one command runs the whole platform from the pip wheels; Ctrl-C stops
it cleanly; running it again keeps the data (a restart is a recovery). Its secrets are
separate, kept in the data folder, never on a command line, and PostgreSQL wants a
password. It is honest: a taken port fails it at once, the banner waits for quoted demo
books, its listeners are on loopback only, and nothing it started outlives it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncpg
import httpx
import pytest
from tests.support.harness import eventually, free_port

from tradeplane.demo.client import ApiClient
from tradeplane.platform.local import local_secrets

pytestmark = pytest.mark.e2e
_REFUSED = (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)


class Up:
    def __init__(self, data: Path, port: int, *extra: str) -> None:
        self.out = (data.parent / f"up-{time.monotonic_ns()}.log")
        self.proc = subprocess.Popen(
            # Without the regtest chains (tests/e2e/test_local_custody.py runs them).
            [sys.executable, "-m", "tradeplane.cli", "up", "--data-dir", str(data),
             "--port", str(port), "--no-chains", *extra],
            stdout=self.out.open("wb"), stderr=subprocess.STDOUT,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("TRADEPLANE_")},
                 # Where it records its data folder (current_file), out of the real home.
                 "XDG_STATE_HOME": str(data.parent / "state")},
        )

    def banner(self, timeout: float = 120) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.out.read_text()
            if "Press Ctrl-C" in text:
                return dict(re.findall(
                    r"^\s+(web UI|API key|API secret|REST API|admin token)\s+(\S+)", text, re.M))
            assert self.proc.poll() is None, text
            time.sleep(0.2)
        raise AssertionError(self.out.read_text())

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)


def _secrets(data: Path) -> dict[str, str]:
    path = data / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values: dict[str, str] = json.loads(path.read_text())
    return values


def _check_secrets(data: Path, banner: str, admin_token: str) -> dict[str, str]:
    """The three keys are distinct; the banner shows the admin token and no other."""
    keys = _secrets(data)
    assert len({keys["admin_token"], keys["secret_key"], keys["jwt_secret"]}) == 3
    assert admin_token == keys["admin_token"]
    assert keys["secret_key"] not in banner and keys["jwt_secret"] not in banner
    return keys


def _command_lines() -> dict[int, str]:
    out = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                out[int(pid)] = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
    return out


def _children_gone(data: Path) -> bool:
    """No process names the data folder on its command line or works inside it (the
    servers do; PostgreSQL's backends too, under other names)."""
    for pid in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if (str(data) in cmd and "pytest" not in cmd) or Path(cwd).is_relative_to(data):
            return False
    return True


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0], ppid [1],
    start time [19]); None when the process is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields


def _descendants(root: int) -> set[tuple[int, str]]:
    """(pid, start time) of every live descendant of ``root``."""
    parents: dict[int, int] = {}
    started: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            parents[int(entry)] = int(fields[1])
            started[int(entry)] = fields[19]
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return {(pid, started[pid]) for pid in found}


def _survivors(processes: set[tuple[int, str]]) -> set[int]:
    """Those of ``processes`` still running (the same start time: not a recycled pid)."""
    return {pid for pid, start in processes
            if (fields := _stat(pid)) is not None and fields[19] == start}


def _listeners(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:
                out.add(address)
    return out


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


async def test_up_runs_the_platform_stops_cleanly_and_keeps_data(data_dir: Path) -> None:
    data = data_dir / "tp"
    port = free_port()
    up = Up(data, port, "--no-market-maker")
    try:
        info = up.banner()
        keys = _check_secrets(data, up.out.read_text(), info["admin token"])
        base = f"http://127.0.0.1:{port}"
        assert info["REST API"] == f"{base}/api/v3"
        # The UI's address comes first, and the gateway serves it.
        assert up.out.read_text().split("tradeplane is running.\n", 1)[1].startswith(
            f"  web UI        {base}/")
        assert info["web UI"] == f"{base}/"
        async with httpx.AsyncClient() as http:
            page = await http.get(info["web UI"])
        assert page.status_code == 200 and "/static/ui/trade.js" in page.text
        api = ApiClient(base, info["API key"], info["API secret"])
        markets = await api.public("/api/v3/exchangeInfo")
        assert {s["symbol"] for s in markets["symbols"]} == {"BTCUSDT", "ETHUSDT", "ETHBTC"}
        account = (await api.signed("GET", "/api/v3/account")).json()
        free = {b["asset"]: b["free"] for b in account["balances"]}
        assert free["USDT"] == "1000000.00000000"
        r = await api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY",
                             type="LIMIT", timeInForce="GTC", price="50000",
                             quantity="0.01", newClientOrderId="kept-across-restart")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "NEW"
        await api.close()
    finally:
        rc = up.interrupt()
    assert rc == 0, up.out.read_text()
    assert "tradeplane: stopped." in up.out.read_text()
    assert _children_gone(data)

    up = Up(data, port, "--no-market-maker")
    try:
        again = up.banner()
        assert again["API key"] == info["API key"]
        assert _check_secrets(data, up.out.read_text(), again["admin token"]) == keys
        api = ApiClient(f"http://127.0.0.1:{port}", again["API key"], again["API secret"])
        opened = (await api.signed("GET", "/api/v3/openOrders", symbol="BTCUSDT")).json()
        assert [o["clientOrderId"] for o in opened] == ["kept-across-restart"]
        # The engine recovered the book: the resting bid is in the depth.
        async def bid_in_book() -> bool:
            depth = await api.public("/api/v3/depth", symbol="BTCUSDT")
            return depth["bids"] == [["50000.00000000", "0.01000000"]]

        await eventually(bid_in_book, timeout=20)
        await api.close()
    finally:
        assert up.interrupt() == 0

    # Back to a folder made before secrets.json and PostgreSQL passwords: one secret.key for
    # everything, trust authentication. Its data was encrypted with that key.
    (data / "secret.key").write_text(keys["secret_key"])
    (data / "secrets.json").unlink()
    (data / "pg" / "password").unlink()
    (data / "pg" / "pgdata" / "pg_hba.conf").write_text(
        "local all all trust\nhost all all 127.0.0.1/32 trust\n")
    up = Up(data, port, "--no-market-maker")
    try:
        migrated = up.banner()
        assert not (data / "secret.key").exists()
        new = _check_secrets(data, up.out.read_text(), migrated["admin token"])
        assert new["secret_key"] == keys["secret_key"]
        assert new["admin_token"] != keys["secret_key"]
        # The stored API secret still decrypts: signed requests work, the order is there.
        api = ApiClient(f"http://127.0.0.1:{port}", migrated["API key"], migrated["API secret"])
        opened = (await api.signed("GET", "/api/v3/openOrders", symbol="BTCUSDT")).json()
        assert [o["clientOrderId"] for o in opened] == ["kept-across-restart"]
        await api.close()
        pg_port = json.loads((data / "ports.json").read_text())["postgres"]
        with pytest.raises(_REFUSED):
            await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/tradeplane")
    finally:
        assert up.interrupt() == 0


async def test_up_keeps_secrets_off_command_lines_and_locks_postgres(data_dir: Path) -> None:
    # Named like make up's folder, so CLI commands run beside it find the platform.
    data = data_dir / ".tradeplane"
    port = free_port()
    up = Up(data, port)
    try:
        info = up.banner()
        keys = _check_secrets(data, up.out.read_text(), info["admin token"])
        accounts = json.loads((data / "accounts.json").read_text())
        pg_password = (data / "pg" / "password").read_text().strip()
        secrets = {
            "market maker's API secret": accounts["market-maker"]["secret"],
            "demo API secret": accounts["demo"]["secret"],
            "admin token": keys["admin_token"],
            "encryption key": keys["secret_key"],
            "JWT secret": keys["jwt_secret"],
            "PostgreSQL password": pg_password,
        }

        async def market_maker_running() -> bool:
            return any("marketmaker" in cmd and str(port) in cmd
                       for cmd in _command_lines().values())

        await eventually(market_maker_running, timeout=30)
        for pid, cmd in _command_lines().items():
            for what, value in secrets.items():
                assert value not in cmd, f"the {what} is on the command line of pid {pid}"

        pg_port = json.loads((data / "ports.json").read_text())["postgres"]
        for password in (None, "", "postgres"):
            with pytest.raises(_REFUSED):
                await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/tradeplane",
                                      password=password)

        # A CLI command beside the folder gets the password and the encryption key: a key
        # it creates signs requests the gateway accepts.
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEPLANE_")}
        made = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tradeplane.cli", "key-create", "demo",
            "--permissions", "read",
            cwd=data_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(made.communicate(), 60)
        assert made.returncode == 0, err.decode()
        key = json.loads(out)
        api = ApiClient(f"http://127.0.0.1:{port}", key["apiKey"], key["secretKey"])
        r = await api.signed("GET", "/api/v3/account")
        await api.close()
        assert r.status_code == 200, r.text
    finally:
        assert up.interrupt() == 0


def test_local_secrets_are_separate_private_and_kept(tmp_path: Path) -> None:
    first = local_secrets(tmp_path)
    assert len({first.admin_token, first.secret_key, first.jwt_secret}) == 3
    assert stat.S_IMODE((tmp_path / "secrets.json").stat().st_mode) == 0o600
    assert local_secrets(tmp_path) == first
    assert first.secret_key not in repr(first)

    old = tmp_path / "old"
    old.mkdir()
    (old / "secret.key").write_text("the-one-old-value\n")
    migrated = local_secrets(old)
    assert migrated.secret_key == "the-one-old-value"
    assert "the-one-old-value" not in (migrated.admin_token, migrated.jwt_secret)
    assert not (old / "secret.key").exists()
    assert local_secrets(old) == migrated


async def test_the_banner_waits_for_the_demo_books_and_the_market_maker_keeps_them_alive(
    data_dir: Path,
) -> None:
    data = data_dir / "tp"
    port = free_port()
    up = Up(data, port)
    try:
        up.banner()
        # A client that starts reading when the banner says "running" finds every book
        # quoted, from its first request.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            for symbol in ("BTCUSDT", "ETHUSDT", "ETHBTC"):
                book = (await c.get("/api/v3/depth", params={"symbol": symbol})).json()
                assert book["bids"] and book["asks"], (symbol, book)

        async def traded() -> bool:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                t = (await c.get("/api/v3/ticker/24hr", params={"symbol": "BTCUSDT"})).json()
                d = (await c.get("/api/v3/depth", params={"symbol": "ETHUSDT"})).json()
                return int(t["count"]) > 0 and len(d["bids"]) > 0 and len(d["asks"]) > 0

        await eventually(traded, timeout=60, interval=0.5)
    finally:
        assert up.interrupt() == 0


def test_the_market_maker_reads_its_secret_from_the_environment_or_a_file(
    tmp_path: Path,
) -> None:
    from tradeplane.cli import build_parser
    from tradeplane.demo.marketmaker import API_SECRET_ENV, MissingSecretError, api_secret

    assert api_secret({API_SECRET_ENV: "from-env"}) == "from-env"
    (tmp_path / "s").write_text("from-file\n")
    assert api_secret({f"{API_SECRET_ENV}_FILE": str(tmp_path / "s")}) == "from-file"
    with pytest.raises(MissingSecretError, match=API_SECRET_ENV):
        api_secret({})
    with pytest.raises(SystemExit):  # no way to put it on the command line
        build_parser().parse_args(["marketmaker", "--api-key", "k", "--api-secret", "s"])


class _Answers200(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _foreign_listener(kind: str) -> Iterator[int]:
    """Another program on a port: a bare listening socket on every address, or an HTTP
    server answering 200 to everything (so a readiness check would pass) on loopback."""
    if kind == "socket":
        with socket.socket() as sock:
            sock.bind(("0.0.0.0", 0))
            sock.listen()
            yield sock.getsockname()[1]
        return
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers200)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("kind", ["socket", "http-server"])
def test_up_fails_at_once_when_another_program_holds_its_port(data_dir: Path, kind: str) -> None:
    data = data_dir / "tp"
    with _foreign_listener(kind) as port:
        up = Up(data, port)
        code = _wait_exit(up.proc, 20)
        if code is None:
            up.proc.kill()
            up.proc.wait()
    out = up.out.read_text()
    assert code == 2, out
    assert f"port {port} is in use (by another program); use --port" in out
    assert "tradeplane is running" not in out
    # It failed before starting anything.
    assert not (data / "nats").exists() and not (data / "pg").exists(), out
    assert _children_gone(data)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP], ids=["SIGKILL", "SIGHUP"])
def test_nothing_up_started_outlives_it_however_it_ends(
    data_dir: Path, sig: signal.Signals
) -> None:
    data = data_dir / "tp"
    port = free_port()
    up = Up(data, port, "--no-market-maker")
    started: set[tuple[int, str]] = set()
    try:
        up.banner()
        text = up.out.read_text()
        # Each step of the start was printed with how long it took, before the banner.
        for step in ("NATS", "PostgreSQL", "Redis", "migrations", "the gateway"):
            assert re.search(rf"^tradeplane: .*{step}.* \.\.\. ok \(\d+\.\d s\)$", text,
                             re.M), (step, text)
        # Every listener it started is on loopback only, /metrics included.
        metrics = {name: int(p) for name, p in re.findall(r"([\w-]+) :(\d+)", text)}
        assert {"matching-BTC-USDT", "matching-ETH-USDT", "matching-ETH-BTC", "settlement",
                "marketdata", "rates", "hedger"} <= set(metrics), text
        for p in [port, *metrics.values()]:
            assert _listeners(p) == {"0100007F"}, (p, _listeners(p))
        # Where the CLI finds it.
        record = json.loads((data / "platform.json").read_text())
        assert record["pid"] == up.proc.pid and record["http_port"] == port
        assert record["data_dir"] == str(data.absolute())
        current = data.parent / "state" / "tradeplane" / "current"
        assert current.read_text().strip() == str(data.absolute())
        started = _descendants(up.proc.pid)
        assert len(started) >= 9  # 3 servers, 6 services, PostgreSQL's own processes
        # A second `up` on the same folder leaves the first alone (it would otherwise
        # stop its servers as leftovers of a crash).
        second = Up(data, free_port(), "--no-market-maker")
        assert _wait_exit(second.proc, 20) == 2, second.out.read_text()
        assert "another `tradeplane up` is running on" in second.out.read_text()
        assert _survivors(started) == {pid for pid, _ in started}
    finally:
        up.proc.send_signal(sig)
        code = _wait_exit(up.proc, 60)
    deadline = time.monotonic() + 30
    while _survivors(started) or not _children_gone(data):
        assert time.monotonic() < deadline, (
            f"still running after {sig.name}: "
            + ", ".join(_command_lines().get(pid, "?") for pid in _survivors(started)))
        time.sleep(0.2)
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 0, up.out.read_text()
        assert "tradeplane: stopped." in up.out.read_text()
        assert not (data / "platform.json").exists()


async def test_up_with_observability_scrapes_every_process_with_the_charts_rules(
    data_dir: Path,
) -> None:
    """``up --observability``: Debian's Prometheus and Alertmanager start, their URLs are
    printed, every process is a target that is up, labelled as the chart labels pods, the
    chart's alert rules are loaded and Prometheus sends to the Alertmanager."""
    from tradeplane.platform import monitoring

    for names, package in ((monitoring.PROMETHEUS_BINARIES, "prometheus"),
                           (monitoring.ALERTMANAGER_BINARIES, "prometheus-alertmanager")):
        if monitoring.find_binary(names) is None:
            pytest.skip(f"{package} is not installed (Debian's package of that name)")
    data = data_dir / "tp"
    up = Up(data, free_port(), "--no-market-maker", "--observability")
    try:
        up.banner(timeout=180)
        text = up.out.read_text()
        prometheus = re.search(r"^\s+Prometheus\s+(\S+)", text, re.M)
        alertmanager = re.search(r"^\s+Alertmanager\s+(\S+)", text, re.M)
        assert prometheus and alertmanager, text
        async with httpx.AsyncClient(base_url=prometheus[1], timeout=10) as prom:
            async def all_up() -> list[dict[str, str]]:
                found = (await prom.get("/api/v1/targets")).json()["data"]["activeTargets"]
                assert len(found) >= 6 and all(t["health"] == "up" for t in found), found
                return [t["labels"] for t in found]

            labels = await eventually(all_up, timeout=60)
            rules = (await prom.get("/api/v1/rules")).json()["data"]["groups"]
            managers = (await prom.get("/api/v1/alertmanagers")).json()["data"]
        components = sorted(label["component"] for label in labels)
        assert components == ["gateway", "marketdata", "matching-engine", "matching-engine",
                              "matching-engine", "settlement"]
        assert {label["namespace"] for label in labels} == {"local"}
        names = {rule["name"] for group in rules for rule in group["rules"]}
        assert {"TradeplaneEngineDown", "TradeplaneServiceDown"} <= names
        assert [m["url"] for m in managers["activeAlertmanagers"]] == [
            f"{alertmanager[1]}/api/v2/alerts"]
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{alertmanager[1]}/-/ready")).status_code == 200
    finally:
        rc = up.interrupt()
    assert rc == 0, up.out.read_text()
    assert _children_gone(data)
