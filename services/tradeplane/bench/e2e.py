"""End-to-end benchmark: durable orders/s through the gateway, and order-ack latency at a
fixed offered rate, on a freshly started local platform (real processes, real servers).

An order counts when the gateway answered 200 to ``POST /api/v3/order`` with
``newOrderRespType=ACK``: its funds are locked in PostgreSQL (committed) and its command
is stored in JetStream (NATS runs with ``sync_interval: always``: fsync before the ack).
Requests are signed before the clock starts (recvWindow 60 s) so the load generator spends
its time sending, not hashing; it runs in this process on raw asyncio sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.config import Settings
from tradeplane.demo.client import signed_query
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.platform.servers import LocalServers, free_port

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
}


@dataclass
class Account:
    key: str
    secret: str


def _request(host: str, port: int, acct: Account, rng: random.Random, ts: int) -> bytes:
    side = rng.choice(("BUY", "SELL"))
    # Near the mid so a good share of orders trade (settlement does real work).
    price = 60000 + rng.randint(-10, 10) * 0.5
    body = signed_query(acct.secret, {
        "symbol": SYMBOL, "side": side, "type": "LIMIT", "timeInForce": "GTC",
        "price": f"{price:.2f}", "quantity": f"{rng.randint(1, 20) / 1000:.3f}",
        "newOrderRespType": "ACK", "recvWindow": 60000, "timestamp": ts,
    }).encode()
    head = (
        f"POST /api/v3/order HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"X-MBX-APIKEY: {acct.key}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     req: bytes) -> int:
    writer.write(req)
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def closed_loop(host: str, port: int, reqs: list[bytes], conns: int,
                      seconds: float) -> tuple[int, int, float]:
    """``conns`` connections, each sending its next request when the last one returned."""
    it = iter(reqs)
    ok = bad = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal ok, bad
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for req in it:
                if time.perf_counter() >= deadline:
                    break
                if await _roundtrip(reader, writer, req) == 200:
                    ok += 1
                else:
                    bad += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    return ok, bad, time.perf_counter() - started


async def open_loop(host: str, port: int, reqs: list[bytes], rate: float,
                    seconds: float, conns: int = 64) -> tuple[list[float], int]:
    """Offer ``rate`` requests/s on a fixed schedule; latency is measured from the
    scheduled send time (so queueing in the generator is not hidden)."""
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(conns):
        pool.put_nowait(await asyncio.open_connection(host, port))
    lat: list[float] = []
    errors = 0
    n = int(rate * seconds)
    start = time.perf_counter() + 0.05
    tasks = []

    async def one(i: int) -> None:
        nonlocal errors
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        conn = await pool.get()
        try:
            status = await _roundtrip(*conn, reqs[i])
        finally:
            pool.put_nowait(conn)
        if status == 200:
            lat.append(time.perf_counter() - at)
        else:
            errors += 1

    for i in range(n):
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait()[1].close()
    return lat, errors


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
    p.add_argument("--seconds", type=float, default=10.0, help="throughput run length")
    p.add_argument("--conns", type=int, default=64, help="closed-loop connections")
    p.add_argument("--rate", type=float, default=1000.0, help="fixed offered rate, orders/s")
    p.add_argument("--rate-seconds", type=float, default=10.0)
    p.add_argument("--nats-sync", default="always", help="JetStream sync_interval")
    p.add_argument("--accounts", type=int, default=500, help="trading accounts")
    p.add_argument("--keep", default="", help="data folder to keep (default: temporary)")
    args = p.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass

    import subprocess

    from tradeplane.platform.local import wait_http

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tp-bench-"))
    with LocalServers(folder, nats_sync=args.nats_sync) as servers:
        settings = Settings(dev_mode=True, nats_url=servers.nats_url,
                            database_url=servers.pg_url, redis_url=servers.redis_url,
                            http_port=free_port())
        accounts = asyncio.run(_provision(settings, args.accounts))
        from tradeplane.platform.local import service_env

        env = {**service_env(settings), **BENCH_LIMITS}
        logs = folder / "logs"
        logs.mkdir(exist_ok=True)
        procs = [
            subprocess.Popen([sys.executable, "-m", "tradeplane.cli", *cmd], env=env,
                             stdout=(logs / f"{cmd[0]}.log").open("ab"),
                             stderr=subprocess.STDOUT)
            for cmd in (["matching", "--symbol", RULES.name], ["settlement"], ["marketdata"],
                        ["gateway"])
        ]
        host, port = "127.0.0.1", settings.http_port
        try:
            if not wait_http(f"http://{host}:{port}/api/v3/ping", 60):
                print("gateway did not start", file=sys.stderr)
                return 1
            rng = random.Random(42)
            ts = int(time.time() * 1000)
            total = int(args.seconds * 8000) + int(args.rate * args.rate_seconds) + 2000
            reqs = [_request(host, port, accounts[i % len(accounts)], rng, ts)
                    for i in range(total)]
            warm = reqs[:1000]
            asyncio.run(closed_loop(host, port, warm, 16, 30))
            body = reqs[1000:]
            ok, bad, took = asyncio.run(closed_loop(host, port, body, args.conns, args.seconds))
            catch_up = asyncio.run(_settled(settings, 120))
            rest = body[ok + bad:]
            lat, errs = asyncio.run(open_loop(host, port, rest, args.rate, args.rate_seconds))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    ms = [x * 1000 for x in lat]
    print("end-to-end (gateway -> PostgreSQL hold -> JetStream, fsync always), 2 cores")
    print(f"  closed loop, {args.conns} connections, {took:.1f} s:")
    print(f"    durable orders/s        {ok / took:10.0f}   (errors {bad})")
    print(f"    settled within          {catch_up:10.2f} s after the load stopped")
    print(f"  fixed rate {args.rate:.0f} orders/s for {args.rate_seconds:.0f} s:")
    print(f"    ack latency p50         {statistics.median(ms) if ms else float('nan'):10.2f} ms")
    print(f"    ack latency p99         {_pct(ms, 99):10.2f} ms")
    print(f"    ack latency max         {max(ms) if ms else float('nan'):10.2f} ms"
          f"   (errors {errs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
