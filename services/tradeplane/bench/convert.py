"""Convert benchmark: firm quotes/s and accepted conversions/s through a real gateway
process on freshly started servers.

The three demo books are written straight into the market-data cache (ten levels a side,
fresh), so the figure is Convert's own path: signature and limits, the books from Redis,
the router over every route (direct and through each bridge), the balance and inventory
checks and the stored quote in PostgreSQL; then, for conversions, the acceptance's one
ledger transaction. Requests cycle through BTC -> USDT, USDT -> BTC (by fromAmount) and
ETH -> BTC (by toAmount: a bisection); each one prices every candidate route, direct and
through each bridge.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tradeplane.adapters import db
from tradeplane.adapters.cache import MarketCache, SymbolUpdate
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.config import Settings
from tradeplane.demo.client import signed_query
from tradeplane.domain.convert import DESK_ACCOUNT
from tradeplane.domain.market import DepthSnapshot
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.platform.servers import LocalServers, free_port

LIMITS = {
    "TRADEPLANE_IP_WEIGHT_PER_MINUTE": "100000000",
    "TRADEPLANE_KEY_WEIGHT_PER_MINUTE": "100000000",
    # the books are written once, before the run: fresh for all of it
    "TRADEPLANE_CONVERT_MAX_BOOK_AGE_S": "3600",
}
#: (best bid, best ask) per demo pair, in ticks; ten levels a side, one tick apart.
TOPS = {"BTCUSDT": (5_000_000, 5_000_100), "ETHUSDT": (200_000, 200_100),
        "ETHBTC": (4_000, 4_010)}
REQUESTS = (("BTC", "USDT", "fromAmount", "0.01"), ("USDT", "BTC", "fromAmount", "300"),
            ("ETH", "BTC", "toAmount", "0.01"))


async def _provision(settings: Settings, n: int) -> list[tuple[str, str]]:
    pool = await db.create_pool(settings.database_url, 2)
    cache = await MarketCache.connect(settings.redis_url)
    cipher = SecretCipher(settings.secret_key.get_secret_value())
    keys = []
    try:
        await db.migrate(pool)
        for p in DEMO_PAIRS:
            await db.upsert_pair(pool, p)
        now = int(time.time() * 1000)
        await cache.write([SymbolUpdate(sym, book=DepthSnapshot(
            1, now,
            [(bid - i, 10**6) for i in range(10)], [(ask + i, 10**6) for i in range(10)]))
            for sym, (bid, ask) in TOPS.items()])
        for asset, amount in (("BTC", "100000"), ("ETH", "1000000"), ("USDT", "10000000000")):
            await db.credit(pool, DESK_ACCOUNT, asset, to_units(amount), f"bench-desk-{asset}")
        for i in range(n):
            account = await db.create_account(pool, f"bench-convert-{i}")
            secret = f"benchconvert{i:04d}" * 4
            key = await db.create_api_key(pool, account, cipher.encrypt(secret),
                                          ["read", "convert"])
            for asset, amount in (("BTC", "1000"), ("ETH", "100000"), ("USDT", "100000000")):
                await db.credit(pool, account, asset, to_units(amount), f"bc{i}-{asset}")
            keys.append((key, secret))
    finally:
        await cache.close()
        await pool.close()
    return keys


async def _load(base: str, keys: list[tuple[str, str]], seconds: float, accept: bool
                ) -> tuple[int, int, float]:
    """Workers (one per key) quoting (and accepting) for ``seconds``: (done, errors, s)."""
    done = errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=len(keys))
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:

        async def signed(key: str, secret: str, path: str, params: dict[str, str]
                         ) -> httpx.Response:
            sent: dict[str, str | int] = {**params, "timestamp": int(time.time() * 1000),
                                          "recvWindow": 60000}
            return await http.post(path, content=signed_query(secret, sent),
                                   headers={"X-MBX-APIKEY": key, "Content-Type":
                                            "application/x-www-form-urlencoded"})

        async def worker(i: int, key: str, secret: str) -> None:
            nonlocal done, errors
            n = i
            while time.perf_counter() < deadline:
                f, t, kind, amount = REQUESTS[n % len(REQUESTS)]
                n += 1
                r = await signed(key, secret, "/sapi/v1/convert/getQuote",
                                 {"fromAsset": f, "toAsset": t, kind: amount})
                if r.status_code != 200:
                    errors += 1
                    continue
                if accept:
                    r = await signed(key, secret, "/sapi/v1/convert/acceptQuote",
                                     {"quoteId": r.json()["quoteId"]})
                    if r.status_code != 200 or r.json()["orderStatus"] != "SUCCESS":
                        errors += 1
                        continue
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(i, k, s) for i, (k, s) in enumerate(keys)))
        return done, errors, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tradeplane bench convert")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    p.add_argument("--conns", type=int, default=16, help="concurrent clients (one key each)")
    p.add_argument("--keep", default="", help="data folder to keep (default: temporary)")
    args = p.parse_args(argv)

    import subprocess

    from tradeplane.platform.local import service_env, wait_http

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tp-bench-"))
    with LocalServers(folder) as servers:
        settings = Settings(dev_mode=True, nats_url=servers.nats_url,
                            database_url=servers.pg_url, redis_url=servers.redis_url,
                            http_port=free_port())
        keys = asyncio.run(_provision(settings, args.conns))
        logs = folder / "logs"
        logs.mkdir(exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-m", "tradeplane.cli", "gateway"],
                                env={**service_env(settings), **LIMITS},
                                stdout=(logs / "gateway.log").open("ab"),
                                stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{settings.http_port}"
        try:
            if not wait_http(f"{base}/api/v3/ping", 60):
                print("gateway did not start", file=sys.stderr)
                return 1
            asyncio.run(_load(base, keys, 1.0, True))  # warm up
            quotes, q_err, q_s = asyncio.run(_load(base, keys, args.seconds, False))
            convs, c_err, c_s = asyncio.run(_load(base, keys, args.seconds, True))
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    print("convert (one gateway process, books in Redis, PostgreSQL), 2 cores")
    print(f"  {args.conns} clients, {args.seconds:.0f} s each:")
    print(f"    firm quotes/s           {quotes / q_s:10.0f}   (errors {q_err})")
    print(f"    accepted conversions/s  {convs / c_s:10.0f}   (quote + accept; errors "
          f"{c_err})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
