"""Custody on the laptop: ``tradeplane up`` runs its own regtest nodes (Debian's
``litecoind`` and ``monero``), registers the LTC and XMR wallets, runs their watchers and
the LTC and XMR markets. A user gets a deposit address, ``tradeplane faucet`` pays it, the
deposit goes PENDING -> CREDITED, the coins are sold, a withdrawal above the approval
threshold is approved by an admin and COMPLETED, and the live reconciliation of every
wallet is exactly zero. Everything through the real processes, the signed API and the CLI,
as the README tells a new user."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.harness import eventually, free_port

from tradeplane.demo.client import ApiClient
from tradeplane.platform.chains import LitecoinNode, read_record

pytestmark = pytest.mark.e2e

#: The first start makes both chains (80 Monero blocks, synced) and three more engines.
BANNER_TIMEOUT_S = 300.0


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TRADEPLANE_")}


def _cli(data: Path, *args: str) -> tuple[int, str]:
    """``tradeplane ARGS --data-dir DATA`` as a user types it; (exit code, stdout+stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "tradeplane.cli", *args, "--data-dir", str(data)],
        env=_clean_env(), capture_output=True, text=True, timeout=120, check=False)
    return done.returncode, done.stdout + done.stderr


class Up:
    """``tradeplane up`` as a real process; its output in a file."""

    def __init__(self, data: Path, port: int) -> None:
        self.out = data.parent / "up.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tradeplane.cli", "up", "--data-dir", str(data),
             "--port", str(port)],
            stdout=self.out.open("wb"), stderr=subprocess.STDOUT, env=_clean_env())

    def banner(self) -> str:
        deadline = time.monotonic() + BANNER_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.out.read_text(errors="replace")
            if "Press Ctrl-C" in text:
                return text
            assert self.proc.poll() is None, text
            time.sleep(0.2)
        raise AssertionError(self.out.read_text(errors="replace"))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Up, Path, int]]:
    data = tmp_path_factory.mktemp("custody") / ".tradeplane"
    port = free_port()
    running = Up(data, port)
    try:
        yield running, data, port
    finally:
        code = running.stop()
        assert code == 0, running.out.read_text(errors="replace")


def _field(banner: str, name: str) -> str:
    found = re.search(rf"^\s+{re.escape(name)}\s+(\S+)", banner, re.M)
    assert found, banner
    return found.group(1)


async def _ok(r: httpx.Response) -> Any:
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_deposit_is_credited_traded_withdrawn_with_approval_and_reconciles_to_zero(
    up: tuple[Up, Path, int],
) -> None:
    proc, data, port = up
    banner = proc.banner()
    base = f"http://127.0.0.1:{port}"
    assert re.search(r"^\s+wallets\s+ltc-regtest, xmr-regtest", banner, re.M), banner
    assert re.search(r"^\s+markets\s+.*LTCUSDT, LTCBTC, XMRUSDT", banner, re.M), banner
    admin_token = _field(banner, "admin token")

    # A key that may withdraw, for the demo user, as the README shows.
    code, out = _cli(data, "key-create", "demo", "--permissions", "read,trade,withdraw")
    assert code == 0, out
    key = json.loads(out)
    api = ApiClient(base, key["apiKey"], key["secretKey"])
    try:
        async def address() -> str:
            r = await api.signed("GET", "/sapi/v1/capital/deposit/address", coin="LTC")
            return str((await _ok(r))["address"])

        to = await eventually(address, timeout=60)

        code, out = _cli(data, "faucet", "LTC", to, "5")
        assert code == 0, out
        txid = json.loads(out)["txid"]

        async def deposit_status() -> int | None:
            r = await api.signed("GET", "/sapi/v1/capital/deposit/hisrec", coin="LTC")
            rows = [d for d in await _ok(r) if d["txId"] == txid]
            return int(rows[0]["status"]) if rows else None

        seen: list[int | None] = []

        async def credited() -> bool:
            status = await deposit_status()
            if not seen or seen[-1] != status:
                seen.append(status)
            return status == 1

        await eventually(credited, timeout=120, interval=0.2)
        assert 0 in seen, seen  # PENDING (0) before CREDITED (1)

        # Sell 1 LTC for USDT against the demo market maker's bids.
        async def bids() -> bool:
            book = await api.public("/api/v3/depth", symbol="LTCUSDT", limit=5)
            return bool(book["bids"])

        await eventually(bids, timeout=120, interval=0.5)
        sold = await _ok(await api.signed(
            "POST", "/api/v3/order", symbol="LTCUSDT", side="SELL", type="MARKET",
            quantity="1", newOrderRespType="FULL"))
        assert sold["status"] == "FILLED" and Decimal(sold["executedQty"]) == 1, sold

        # Withdraw 2 LTC (above the local wallet's approval threshold of 1) to the node's
        # payer: PENDING until an admin approves, then sent and COMPLETED.
        record = read_record(data)
        node = LitecoinNode(record["litecoin"]["url"], record["username"],
                            record["password"], data)
        try:
            payee = str(node.rpc("getnewaddress", wallet="payer"))
        finally:
            node.close()
        applied = await _ok(await api.signed(
            "POST", "/sapi/v1/capital/withdraw/apply", coin="LTC", address=payee,
            amount="2"))
        wid = str(applied["id"])

        async def withdrawal_status() -> int:
            r = await api.signed("GET", "/sapi/v1/capital/withdraw/history", coin="LTC")
            rows = [w for w in await _ok(r) if w["id"] == wid]
            assert rows, wid
            return int(rows[0]["status"])

        assert await withdrawal_status() == 2  # PENDING: waits for an admin
        async with httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {admin_token}"}) as admin:
            r = await admin.post(f"/admin/withdrawals/{wid}/approve")
            assert r.status_code == 200, r.text

        async def completed() -> bool:
            return await withdrawal_status() == 6

        await eventually(completed, timeout=120, interval=0.5)
        account = await _ok(await api.signed("GET", "/api/v3/account"))
        ltc = {b["asset"]: b for b in account["balances"]}["LTC"]
        assert Decimal(ltc["free"]) == Decimal("5") - 1 - 2 - Decimal("0.001"), ltc
        assert Decimal(ltc["locked"]) == 0, ltc
    finally:
        await api.close()

    # Every wallet's chain balance and the ledger agree to the unit.
    code, out = _cli(data, "check-wallets", "--live")
    assert code == 0, out
    assert re.search(r"^ltc-regtest LTC: .* difference 0\.00000000 ok$", out, re.M), out
    assert re.search(r"^xmr-regtest XMR: .* difference 0\.00000000 ok$", out, re.M), out
    assert out.strip().endswith("wallets OK"), out
