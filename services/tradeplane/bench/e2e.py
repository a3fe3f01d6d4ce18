"""End-to-end benchmark: durable orders/s through the gateway, and order-ack latency at a
fixed offered rate, over REST and the WebSocket API, on a freshly started local platform
(real processes, real servers).

An order counts when the gateway answered 200 (``POST /api/v3/order`` or ``order.place``
with ``newOrderRespType=ACK``): its funds are locked in PostgreSQL (committed) and its
command is stored in JetStream (NATS runs with ``sync_interval: always``: fsync before the
ack). Requests are signed before the clock starts (recvWindow 60 s) so the load generator
spends its time sending, not hashing. The load generator is a process of its own
(:mod:`tradeplane.bench.loadgen`), so it shares neither the gateway's event loop nor its
CPU accounting.

For each phase the benchmark prints, besides orders/s and latencies: the CPU seconds each
process (and its children: PostgreSQL's backends) spent per 1,000 orders, from
``/proc/<pid>/stat``; and, with the gateway's stage stamps on (``TRADEPLANE_STAGE_STAMPS``,
:mod:`tradeplane.stagestamps`; ``--no-stages`` turns them off), the percentiles of each
stage of an order's path: received -> admitted -> hold committed -> published -> acked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.config import Settings
from tradeplane.demo.client import signed_query
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.domain.signing import sign
from tradeplane.platform.servers import LocalServers, free_port
from tradeplane.stagestamps import STAGES

RULES = DEMO_PAIRS[0]
SYMBOL = RULES.symbol
#: The load comes from one address at thousands of orders a second: far over Binance's
#: limits, which are the gateway's defaults. The benchmark raises them for its own gateway
#: (every order still passes the limiter: its cost is part of the figure).
BENCH_LIMITS = {
    "TRADEPLANE_IP_WEIGHT_PER_MINUTE": "100000000",
    "TRADEPLANE_KEY_WEIGHT_PER_MINUTE": "100000000",
    "TRADEPLANE_ORDERS_PER_10S": "10000000",
    "TRADEPLANE_ORDERS_PER_DAY": "1000000000",
    "TRADEPLANE_WS_MESSAGES_PER_SECOND": "1000000",
}
#: Orders the gateway keeps stamps of (the longest phase's, with room to spare).
STAMP_RING = 400_000
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Account:
    key: str
    secret: str


def _order(rng: random.Random, ts: int) -> dict[str, str | int]:
    side = rng.choice(("BUY", "SELL"))
    # Near the mid so a good share of orders trade (settlement does real work).
    price = 60000 + rng.randint(-10, 10) * 0.5
    return {
        "symbol": SYMBOL, "side": side, "type": "LIMIT", "timeInForce": "GTC",
        "price": f"{price:.2f}", "quantity": f"{rng.randint(1, 20) / 1000:.3f}",
        "newOrderRespType": "ACK", "recvWindow": 60000, "timestamp": ts,
    }


def _request(host: str, port: int, acct: Account, rng: random.Random, ts: int) -> bytes:
    body = signed_query(acct.secret, _order(rng, ts)).encode()
    head = (
        f"POST /api/v3/order HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"X-MBX-APIKEY: {acct.key}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def _frame(rid: int, acct: Account, rng: random.Random, ts: int) -> tuple[int, str]:
    """A signed ``order.place`` (HMAC over the params sorted by name, as Binance)."""
    params = {k: str(v) for k, v in _order(rng, ts).items()}
    params["apiKey"] = acct.key
    payload = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    params["signature"] = sign(acct.secret, payload)
    return rid, json.dumps({"id": rid, "method": "order.place", "params": params})


# ------------------------------------------------------------------------------- CPU
def _tree_ticks(roots: Mapping[str, int]) -> dict[str, int]:
    """utime+stime of each root process and its living descendants, plus what its reaped
    children used (cutime+cstime), in clock ticks."""
    parent: dict[int, int] = {}
    ticks: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        f = raw[raw.rindex(")") + 2:].split()
        pid = int(entry)
        parent[pid] = int(f[1])
        ticks[pid] = (int(f[11]) + int(f[12]), int(f[13]) + int(f[14]))
    out = {}
    for name, root in roots.items():
        total = ticks.get(root, (0, 0))[1]
        for pid in ticks:
            p = pid
            while p > 1 and p != root:
                p = parent.get(p, 0)
            if p == root:
                total += ticks[pid][0]
        out[name] = total
    return out


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of every CPU of the machine (/proc/stat)."""
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = f[3] + f[4]  # idle + iowait
    return sum(f) - idle, sum(f)


# ------------------------------------------------------------------------------ stages
def _drain_stages(host: str, port: int) -> list[tuple[int, ...]]:
    """The gateway's stamps since the last drain: one tuple of ns per complete order."""
    with urllib.request.urlopen(f"http://{host}:{port}/debug/stages", timeout=30) as r:
        data = r.read()
    a = array("q")
    a.frombytes(data)
    n = len(STAGES)
    rows = (tuple(a[i:i + n]) for i in range(0, len(a), n))
    return [r for r in rows if all(r)]


def _stage_table(rows: list[tuple[int, ...]]) -> list[str]:
    if not rows:
        return ["    (no stage stamps)"]
    names = [f"{STAGES[i]} -> {STAGES[i + 1]}" for i in range(len(STAGES) - 1)]
    names.append(f"{STAGES[0]} -> {STAGES[-1]}")
    cols: list[list[float]] = [[] for _ in names]
    for r in rows:
        for i in range(len(STAGES) - 1):
            cols[i].append((r[i + 1] - r[i]) / 1e6)
        cols[-1].append((r[-1] - r[0]) / 1e6)
    out = [f"    {'stage (ms)':32} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}"
           f"   ({len(rows)} orders)"]
    for name, xs in zip(names, cols, strict=True):
        out.append(f"    {name:32} {_pct(xs, 50):8.2f} {_pct(xs, 90):8.2f} "
                   f"{_pct(xs, 99):8.2f} {max(xs):8.2f}")
    worst = sorted(rows, key=lambda r: r[-1] - r[0])[-5:]
    out.append("    slowest 5, per stage (ms): "
               + "; ".join("/".join(f"{(r[i + 1] - r[i]) / 1e6:.1f}"
                                    for i in range(len(STAGES) - 1)) for r in worst))
    return out


# ------------------------------------------------------------------------------ phases
@dataclass
class Phase:
    title: str
    ok: int
    bad: int
    seconds: float
    lat_ms: list[float]
    cpu_s: dict[str, float]
    stages: list[tuple[int, ...]]
    machine_busy_s: float  # every process's CPU on the machine during the phase, ours too
    machine_s: float  # the CPUs' capacity during the phase (cores x seconds)
    refused: dict[str, int]  # HTTP/WebSocket API status -> requests answered so
    planned_s: float  # how long the phase was to take

    def report(self) -> list[str]:
        out = [f"  {self.title}: {self.ok} orders in {self.seconds:.1f} s "
               f"(errors {self.bad}{' ' + str(self.refused) if self.refused else ''}); "
               f"load: {_loadavg()}"]
        if self.lat_ms:
            ms = self.lat_ms
            # The schedule took longer than planned: the platform fell behind the offered
            # rate and the latencies are mostly queueing (they grow with the run's length).
            out.append(f"    achieved orders/s       {self.ok / self.seconds:10.0f}"
                       + ("   (behind the offered rate)" if self.seconds > 1.1 * self.planned_s
                          else ""))
            out.append(f"    ack latency ms           p50 {statistics.median(ms):7.2f}   "
                       f"p99 {_pct(ms, 99):7.2f}   p99.9 {_pct(ms, 99.9):7.2f}   "
                       f"max {max(ms):7.2f}")
        else:
            out.append(f"    durable orders/s        {self.ok / self.seconds:10.0f}")
        if not self.ok:
            return [*out, "    (no order acknowledged: no per-order figures)"]
        per = 1000 / self.ok
        ours = sum(self.cpu_s.values())
        out.append("    CPU s per 1,000 orders   " + "  ".join(
            f"{k} {v * per:.3f}" for k, v in self.cpu_s.items())
            + f"  | total {ours * per:.3f}")
        # Other work on a shared machine takes CPU the platform then waits for: say how
        # much, and what the platform's own CPU per order would allow on these cores alone.
        cores = os.cpu_count() or 1
        others = max(0.0, self.machine_busy_s - ours)
        platform = ours - self.cpu_s.get("loadgen", 0.0)
        out.append(f"    machine CPU busy {self.machine_busy_s / self.machine_s:4.0%} "
                   f"(this benchmark {ours / self.machine_s:4.0%}, other work "
                   f"{others / self.machine_s:4.0%})")
        if not self.lat_ms:  # closed loop: the platform's CPU per order at full load
            ceiling = cores * self.ok / max(platform, 1e-9)
            out.append(f"    CPU-bound ceiling        {ceiling:10.0f}   orders/s on {cores} "
                       "cores left to the platform alone (load generator excluded)")
        return out + _stage_table(self.stages)


def _say(lines: list[str]) -> list[str]:
    print("\n".join(lines), flush=True)
    return lines


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _phase(title: str, spec: dict[str, Any], roots: Mapping[str, int], folder: Path,
           stages: bool) -> Phase:
    host, port = spec["host"], spec["port"]
    if stages:
        _drain_stages(host, port)
    path = folder / "loadgen.pickle"
    out = folder / "loadgen.json"
    with path.open("wb") as f:
        pickle.dump({**spec, "out": str(out)}, f)
    gen = subprocess.Popen([sys.executable, "-m", "tradeplane.bench.loadgen", str(path)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert gen.stdin is not None and gen.stdout is not None
    if gen.stdout.readline().strip() != "ready":
        raise RuntimeError("load generator did not start")
    before = _tree_ticks(roots)
    m_before = _machine_ticks()
    gen.stdin.write("go\n")
    gen.stdin.flush()
    said = gen.stdout.readline().strip()
    after = _tree_ticks(roots)
    m_after = _machine_ticks()
    if said != "done":
        raise RuntimeError(f"load generator failed: {said!r}")
    result = json.loads(out.read_text())
    gen.wait(30)
    cpu = {k: (after[k] - before[k]) / _TICK for k in roots}
    cpu["loadgen"] = result["cpu_s"]
    got = _drain_stages(host, port) if stages else []
    return Phase(title, result["ok"], result["bad"], result["seconds"], result["lat_ms"],
                 cpu, got, (m_after[0] - m_before[0]) / _TICK,
                 (m_after[1] - m_before[1]) / _TICK, result.get("statuses", {}),
                 spec["seconds"])


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def _provision(settings: Settings, n: int) -> list[Account]:
    pool = await db.create_pool(settings.database_url, 2)
    cipher = SecretCipher(settings.secret_key.get_secret_value())
    out = []
    try:
        await db.migrate(pool)
        await db.upsert_pair(pool, RULES)
        for i in range(n):
            account = await db.create_account(pool, f"bench-{i}")
            secret = f"benchsecret{i:04d}" * 4
            key = await db.create_api_key(pool, account, cipher.encrypt(secret),
                                          ["read", "trade"])
            await db.credit(pool, account, "BTC", to_units("100000"), f"b{i}-btc")
            await db.credit(pool, account, "USDT", to_units("10000000000"), f"b{i}-usdt")
            out.append(Account(key, secret))
    finally:
        await pool.close()
    return out


async def _settled(settings: Settings, timeout: float) -> float:
    bus = await Bus.connect(settings.nats_url, name="bench")
    pool = await db.create_pool(settings.database_url, 1)
    started = time.perf_counter()
    try:
        last = await bus.last_command_seq(SYMBOL)
        while time.perf_counter() - started < timeout:
            if (await db.settlement_cursors(pool)).get(SYMBOL, 0) >= last:
                return time.perf_counter() - started
            await asyncio.sleep(0.05)
        return float("nan")
    finally:
        await pool.close()
        await bus.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tradeplane bench e2e")
    p.add_argument("--seconds", type=float, default=10.0, help="closed-loop run length")
    p.add_argument("--conns", type=int, default=64, help="REST closed-loop connections")
    p.add_argument("--ws-conns", type=int, default=8, help="WebSocket API sockets")
    p.add_argument("--ws-window", type=int, default=32,
                   help="WebSocket API requests in flight per socket (closed loop)")
    p.add_argument("--rate", type=float, default=1000.0, help="fixed offered rate, orders/s")
    p.add_argument("--rate-seconds", type=float, default=10.0)
    p.add_argument("--nats-sync", default="always", help="JetStream sync_interval")
    p.add_argument("--accounts", type=int, default=500, help="trading accounts")
    p.add_argument("--no-stages", action="store_true",
                   help="gateway without stage stamps (their cost out of the figures)")
    p.add_argument("--only", choices=["all", "rest", "ws"], default="all")
    p.add_argument("--keep", default="", help="data folder to keep (default: temporary)")
    args = p.parse_args(argv)

    from tradeplane.platform.local import service_env, wait_http

    stages = not args.no_stages
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tp-bench-"))
    lines: list[str] = []
    with LocalServers(folder, nats_sync=args.nats_sync) as servers:
        settings = Settings(dev_mode=True, nats_url=servers.nats_url,
                            database_url=servers.pg_url, redis_url=servers.redis_url,
                            http_port=free_port())
        accounts = asyncio.run(_provision(settings, args.accounts))
        env = {**service_env(settings), **BENCH_LIMITS}
        if stages:
            env["TRADEPLANE_STAGE_STAMPS"] = str(STAMP_RING)
        logs = folder / "logs"
        logs.mkdir(exist_ok=True)
        names = ("matching", "settlement", "marketdata", "gateway")
        procs = {
            cmd[0]: subprocess.Popen([sys.executable, "-m", "tradeplane.cli", *cmd], env=env,
                                     stdout=(logs / f"{cmd[0]}.log").open("ab"),
                                     stderr=subprocess.STDOUT)
            for cmd in (["matching", "--symbol", RULES.name], ["settlement"], ["marketdata"],
                        ["gateway"])
        }
        roots = {"gateway": procs["gateway"].pid, "postgres": servers.postgres.pid,
                 "nats": servers.nats.pid, "matching": procs["matching"].pid,
                 "settlement": procs["settlement"].pid,
                 "marketdata": procs["marketdata"].pid, "redis": servers.redis.pid}
        assert all(isinstance(v, int) for v in roots.values()) and len(names) == 4
        host, port = "127.0.0.1", settings.http_port
        base = {"host": host, "port": port}
        try:
            if not wait_http(f"http://{host}:{port}/api/v3/ping", 60):
                print("gateway did not start", file=sys.stderr)
                return 1
            rng = random.Random(42)
            n_closed = int(args.seconds * 20000)
            n_rate = int(args.rate * args.rate_seconds)

            # Signed just before their phase: a phase that waits behind a slow one (a busy
            # machine) must not find its timestamps outside recvWindow (60 s, the most
            # Binance allows).
            def rest(n: int) -> list[bytes]:
                ts = int(time.time() * 1000)
                return [_request(host, port, accounts[i % len(accounts)], rng, ts)
                        for i in range(n)]

            def ws(n: int) -> list[tuple[int, str]]:
                ts = int(time.time() * 1000)
                return [_frame(i, accounts[i % len(accounts)], rng, ts) for i in range(n)]

            roots_i = {k: int(v) for k, v in roots.items() if v is not None}
            _phase("warm-up", {**base, "transport": "rest", "phase": "closed",
                               "requests": rest(2000), "conns": 16, "seconds": 30},
                   roots_i, folder, stages)
            lines += _say(["end-to-end (gateway -> PostgreSQL hold -> JetStream, fsync "
                           f"always), {os.cpu_count()} cores"])
            if args.only in ("all", "rest"):
                ph = _phase(f"REST closed loop, {args.conns} connections",
                            {**base, "transport": "rest", "phase": "closed",
                             "requests": rest(n_closed), "conns": args.conns,
                             "seconds": args.seconds}, roots_i, folder, stages)
                lines += _say(ph.report())
                lines += _say([f"    settled within          "
                               f"{asyncio.run(_settled(settings, 120)):10.2f} s after the "
                               "load"])
                ph = _phase(f"REST fixed rate {args.rate:.0f}/s",
                            {**base, "transport": "rest", "phase": "rate",
                             "requests": rest(n_rate), "conns": 64, "rate": args.rate,
                             "seconds": args.rate_seconds}, roots_i, folder, stages)
                lines += _say(ph.report())
            if args.only in ("all", "ws"):
                ph = _phase(f"WebSocket API closed loop, {args.ws_conns} sockets x "
                            f"{args.ws_window} in flight",
                            {**base, "transport": "ws", "phase": "closed",
                             "requests": ws(n_closed), "conns": args.ws_conns,
                             "window": args.ws_window, "seconds": args.seconds},
                            roots_i, folder, stages)
                lines += _say(ph.report())
                lines += _say([f"    settled within          "
                               f"{asyncio.run(_settled(settings, 120)):10.2f} s after the "
                               "load"])
                ph = _phase(f"WebSocket API fixed rate {args.rate:.0f}/s",
                            {**base, "transport": "ws", "phase": "rate",
                             "requests": ws(n_rate), "conns": 4, "window": 16,
                             "rate": args.rate, "seconds": args.rate_seconds},
                            roots_i, folder, stages)
                lines += _say(ph.report())
        finally:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return 0 if lines else 1


if __name__ == "__main__":
    sys.exit(main())
