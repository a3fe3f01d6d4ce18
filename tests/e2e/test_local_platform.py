"""``tradeplane up``: one command runs the whole platform from the pip wheels; Ctrl-C stops
it cleanly; running it again keeps the data (a restart is a recovery)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.support.harness import eventually, free_port

from tradeplane.demo.client import ApiClient

pytestmark = pytest.mark.e2e


class Up:
    def __init__(self, data: Path, port: int, *extra: str) -> None:
        self.out = (data.parent / f"up-{time.monotonic_ns()}.log")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tradeplane.cli", "up", "--data-dir", str(data),
             "--port", str(port), *extra],
            stdout=self.out.open("wb"), stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("TRADEPLANE_")},
        )

    def banner(self, timeout: float = 120) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.out.read_text()
            if "Press Ctrl-C" in text:
                return dict(re.findall(r"^\s+(API key|API secret|REST API)\s+(\S+)", text, re.M))
            assert self.proc.poll() is None, text
            time.sleep(0.2)
        raise AssertionError(self.out.read_text())

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)


def _children_gone(data: Path) -> bool:
    for pid in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(data) in cmd and "pytest" not in cmd:
            return False
    return True


async def test_up_runs_the_platform_stops_cleanly_and_keeps_data(data_dir: Path) -> None:
    data = data_dir / "tp"
    port = free_port()
    up = Up(data, port, "--no-market-maker")
    try:
        info = up.banner()
        base = f"http://127.0.0.1:{port}"
        assert info["REST API"] == f"{base}/api/v3"
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


async def test_demo_market_maker_keeps_the_books_alive(data_dir: Path) -> None:
    data = data_dir / "tp"
    port = free_port()
    up = Up(data, port)
    try:
        up.banner()

        async def traded() -> bool:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                t = (await c.get("/api/v3/ticker/24hr", params={"symbol": "BTCUSDT"})).json()
                d = (await c.get("/api/v3/depth", params={"symbol": "ETHUSDT"})).json()
                return int(t["count"]) > 0 and len(d["bids"]) > 0 and len(d["asks"]) > 0

        await eventually(traded, timeout=60, interval=0.5)
    finally:
        assert up.interrupt() == 0
    _ = asyncio
