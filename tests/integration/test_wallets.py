"""Custody end to end: deposits, withdrawals, the /sapi API and reconciliation, against a
real regtest litecoind (and monerod + monero-wallet-rpc) from tests/support/chains.py,
real PostgreSQL and NATS, and the in-process platform's gateway.

One wallet of the node serves LTC for the module's first tests (reconciliation compares
that wallet with every LTC balance of the ledger, so it ends at exactly zero only if every
test before it was exact). The custody services are stepped explicitly
(``watcher.step()``, ``processor.step()``), except where a test runs the whole loop to
kill it, or the real ``tradeplane wallet-watcher`` process. Cases a real node cannot be
made to produce on demand (a send whose answer is lost, a node that keeps refusing, a
payment that vanishes for good) run against the in-memory FakeChain at the end. The
ledger invariants (``db.check_invariants``) and custody's own
(``wallets_db.custody_problems``) are checked after every test.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from tests.support.chains import LitecoinNode, MoneroNodes
from tests.support.fake_chain import FakeChain
from tests.support.harness import Platform, eventually

from tradeplane.adapters import db, wallets_db
from tradeplane.adapters.bus import Bus, wallet_events
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.adapters.custody import PgCustodyStore
from tradeplane.adapters.wallets_db import RequestResult
from tradeplane.demo.client import ApiClient
from tradeplane.domain.custody import (
    DepositRow,
    DepositStatus,
    WalletSpec,
    WithdrawalStatus,
    deposit_ref,
    wallet_from_spec,
)
from tradeplane.domain.ledger import FEE_ACCOUNT
from tradeplane.domain.money import fmt_units, to_units
from tradeplane.platform.local import service_env
from tradeplane.platform.servers import free_port
from tradeplane.wallets.chain import ChainAdapter, ChainError, ChainUnavailable
from tradeplane.wallets.reconcile import reconcile
from tradeplane.wallets.service import Custody, connect_chain, custody_over
from tradeplane.wallets.settings import NodeLogin, WalletSettings
from tradeplane.wallets.withdrawals import WithdrawalProcessor

pytestmark = pytest.mark.integration

WALLET = "ltc-test"
CONFIRMATIONS = 3
FEE = to_units("0.001")
MINIMUM = to_units("0.01")
THRESHOLD = to_units("0.5")
_names = itertools.count(1)


def metric(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


# --------------------------------------------------------------------------- fixtures
@dataclass
class Ltc:
    plat: Platform
    node: LitecoinNode
    wallet: str  # the node's wallet serving the exchange
    spec: WalletSpec
    custody: Custody
    bus: Bus

    @property
    def pool(self) -> db.Pool:
        return self.plat.pool

    async def steps(self) -> None:
        await self.custody.watcher.step()
        await self.custody.processor.step()
        await self.custody.watcher.announce()

    async def deposit_row(self, txid: str) -> DepositRow | None:
        rows = await wallets_db.deposit_history(
            self.pool, await self._owner(txid), asset="LTC", statuses=None, start_ms=0,
            end_ms=2**62, offset=0, limit=1000, txid=txid)
        return rows[0] if rows else None

    async def _owner(self, txid: str) -> int:
        v = await self.pool.fetchval("SELECT account_id FROM deposits WHERE txid = $1", txid)
        return int(v or 0)

    async def until_deposit(self, txid: str, status: DepositStatus,
                            confirmations: int | None = None) -> DepositRow:
        """Step the watcher until the deposit is in ``status`` (the node's wallet follows
        new blocks a moment after they are mined)."""

        async def probe() -> DepositRow:
            await self.custody.watcher.step()
            row = await self.deposit_row(txid)
            assert row is not None and row.status == status and (
                confirmations is None or row.confirmations == confirmations), row
            return row

        return await eventually(probe, timeout=20)

    async def until_withdrawal(self, wid: int, status: WithdrawalStatus
                               ) -> wallets_db.WithdrawalRow:
        async def probe() -> wallets_db.WithdrawalRow:
            await self.steps()
            w = await wallets_db.withdrawal(self.pool, wid)
            assert w is not None and w.status == status, w
            return w

        return await eventually(probe, timeout=20)


@dataclass
class User:
    account: int
    api: ApiClient

    async def get(self, path: str, **params: Any) -> Any:
        r = await self.api.signed("GET", path, **params)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
async def ltc(plat: Platform, litecoin_node: LitecoinNode) -> AsyncIterator[Ltc]:
    wallet = litecoin_node.create_wallet()
    spec = wallet_from_spec(WALLET, {
        "chain": "litecoin", "network": "regtest", "asset": "LTC",
        "rpc": {"url": f"{litecoin_node.url}/wallet/{wallet}"},
        "confirmations": CONFIRMATIONS,
        "withdrawals": {"fee": fmt_units(FEE), "min": fmt_units(MINIMUM),
                        "approvalThreshold": fmt_units(THRESHOLD)},
    })
    await wallets_db.upsert_wallet(plat.pool, spec)
    chain = connect_chain(spec, NodeLogin(litecoin_node.url, litecoin_node.user,
                                          SecretStr(litecoin_node.password)))
    bus = await Bus.connect(plat.settings.nats_url, name="test-wallet")
    custody = custody_over(spec, chain, plat.pool, bus, WalletSettings())
    unsubscribe = await custody.serve()
    try:
        yield Ltc(plat, litecoin_node, wallet, spec, custody, bus)
    finally:
        for unsub in unsubscribe:
            await unsub()
        await bus.close()
        await chain.close()


@pytest.fixture(autouse=True)
async def ledger_stays_sound(plat: Platform) -> AsyncIterator[None]:
    yield
    _checks, problems = await db.check_invariants(plat.pool)
    assert problems == []
    assert await wallets_db.custody_problems(plat.pool) == []


async def new_user(plat: Platform, perms: tuple[str, ...] = ("read", "trade", "withdraw")
                   ) -> User:
    account = await db.create_account(plat.pool, f"custody-{next(_names)}-{secrets.token_hex(3)}")
    secret = secrets.token_hex(32)
    cipher = SecretCipher(plat.settings.secret_key.get_secret_value())
    key = await db.create_api_key(plat.pool, account, cipher.encrypt(secret), list(perms))
    api = ApiClient(plat.base_url, key, secret)
    plat.clients.append(api)
    return User(account, api)


async def funded(ltc: Ltc, amount: str) -> tuple[User, str]:
    """A user with ``amount`` LTC deposited through the chain and credited; and their
    deposit address."""
    user = await new_user(ltc.plat)
    address = (await user.get("/sapi/v1/capital/deposit/address", coin="LTC"))["address"]
    txid = ltc.node.pay(address, to_units(amount))
    ltc.node.mine(CONFIRMATIONS)
    await ltc.until_deposit(txid, DepositStatus.CREDITED)
    return user, address


async def balances(plat: Platform, account: int) -> dict[str, tuple[int, int]]:
    return await plat.balances(account)


# --------------------------------------------------------------------------- deposits
async def test_a_deposit_is_credited_exactly_once_at_its_confirmation_count(ltc: Ltc) -> None:
    user = await new_user(ltc.plat)
    doc = await user.get("/sapi/v1/capital/deposit/address", coin="LTC", network="LTC")
    assert doc["coin"] == "LTC" and doc["tag"] == "" and doc["address"].startswith("rltc1")
    # The same address every time; the watcher stored it before answering.
    again = await user.get("/sapi/v1/capital/deposit/address", coin="LTC")
    assert again["address"] == doc["address"]
    assert await wallets_db.deposit_address(ltc.pool, WALLET, user.account) == doc["address"]

    amount = to_units("1.25")
    txid = ltc.node.pay(doc["address"], amount)
    row = await ltc.until_deposit(txid, DepositStatus.PENDING, 0)
    assert row.amount == amount and row.account == user.account
    for confs in range(1, CONFIRMATIONS):
        ltc.node.mine(1)
        await ltc.until_deposit(txid, DepositStatus.PENDING, confs)
        assert await balances(ltc.plat, user.account) == {}
    [pending] = await user.get("/sapi/v1/capital/deposit/hisrec", coin="LTC")
    assert (pending["status"], pending["confirmTimes"]) == (0, f"{CONFIRMATIONS - 1}/3")

    ltc.node.mine(1)
    await ltc.until_deposit(txid, DepositStatus.CREDITED)
    for _ in range(3):  # more scans, more blocks: still one credit
        ltc.node.mine(1)
        await ltc.steps()
    assert await balances(ltc.plat, user.account) == {"LTC": (amount, 0)}
    credits = await ltc.pool.fetch("SELECT amount FROM credits WHERE ref = $1",
                                   deposit_ref("litecoin", txid, row.index))
    assert [c["amount"] for c in credits] == [amount]

    [credited] = await user.get("/sapi/v1/capital/deposit/hisrec", coin="LTC", status=1)
    assert credited["amount"] == "1.25000000" and credited["txId"] == txid
    assert credited["network"] == "LTC" and credited["address"] == doc["address"]
    assert credited["insertTime"] <= credited["completeTime"]
    # Every state was announced on JetStream, once, under its de-duplication id.
    events = [json.loads(m.data) for m in await wallet_events(ltc.bus, WALLET)
              if json.loads(m.data).get("txid") == txid]
    assert [e["status"] for e in events] == ["PENDING", "CONFIRMED", "CREDITED"]
    assert all(e["account"] == user.account and e["units"] == amount for e in events)
    stored = [m.headers for m in await wallet_events(ltc.bus, WALLET)
              if json.loads(m.data).get("txid") == txid]
    assert [h["Nats-Msg-Id"] if h else None for h in stored] == [
        f"litecoin:{txid}:{row.index}:{s}" for s in ("PENDING", "CONFIRMED", "CREDITED")]
    assert metric("tradeplane_wallet_last_scanned_height", wallet=WALLET) == ltc.node.height()


async def test_a_watcher_killed_mid_flow_and_restarted_credits_nothing_twice(ltc: Ltc) -> None:
    user = await new_user(ltc.plat)
    address = (await user.get("/sapi/v1/capital/deposit/address", coin="LTC"))["address"]
    amount = to_units("0.4")
    txid = ltc.node.pay(address, amount)
    ltc.node.mine(1)
    settings = WalletSettings(wallet_scan_interval_s=0.05, wallet_withdraw_interval_s=0.05,
                              wallet_reconcile_interval_s=60)
    adapters: list[ChainAdapter] = []

    def start() -> tuple[asyncio.Task[None], asyncio.Event]:
        # A fresh process: its own adapter and services, only the database survives.
        chain = connect_chain(ltc.spec, NodeLogin(ltc.node.url, ltc.node.user,
                                                  SecretStr(ltc.node.password)))
        adapters.append(chain)
        stop = asyncio.Event()
        return asyncio.create_task(custody_over(ltc.spec, chain, ltc.pool, None, settings).run(stop)
                                   ), stop

    task, _stop = start()
    await eventually(lambda: _status_is(ltc, txid, DepositStatus.PENDING, 1), timeout=20)
    cursor = await wallets_db.load_cursor(ltc.pool, WALLET)
    task.cancel()  # killed mid-flow: no clean shutdown
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert cursor is not None  # the restart continues from here, not from genesis

    ltc.node.mine(CONFIRMATIONS)
    task, stop = start()
    await eventually(lambda: _status_is(ltc, txid, DepositStatus.CREDITED), timeout=20)
    # Kill it again while it keeps scanning, restart once more, let it run a while.
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    task, stop = start()
    ltc.node.mine(2)

    async def rescanned() -> bool:
        saved = await wallets_db.load_cursor(ltc.pool, WALLET)
        return saved is not None and saved[1] == ltc.node.height()

    await eventually(rescanned, timeout=20)
    stop.set()
    await asyncio.wait_for(task, 10)
    for chain in adapters:
        await chain.close()
    assert await balances(ltc.plat, user.account) == {"LTC": (amount, 0)}
    assert await ltc.pool.fetchval("SELECT count(*) FROM credits WHERE ref LIKE $1",
                                   f"deposit:litecoin:{txid}:%") == 1


async def _status_is(ltc: Ltc, txid: str, status: DepositStatus, confs: int | None = None
                     ) -> bool:
    row = await ltc.deposit_row(txid)
    return row is not None and row.status == status and (
        confs is None or row.confirmations == confs)


async def test_a_reorg_before_the_credit_takes_the_deposit_back_to_pending(ltc: Ltc) -> None:
    user = await new_user(ltc.plat)
    address = (await user.get("/sapi/v1/capital/deposit/address", coin="LTC"))["address"]
    amount = to_units("0.3")
    txid = ltc.node.pay(address, amount)
    [block] = ltc.node.mine(1)
    ltc.node.mine(1)
    await ltc.until_deposit(txid, DepositStatus.PENDING, 2)

    ltc.node.invalidate(block)  # the deposit's block leaves the main chain
    try:
        row = await ltc.until_deposit(txid, DepositStatus.PENDING, 0)
        assert row.block_hash is None
        assert await balances(ltc.plat, user.account) == {}
    finally:
        ltc.node.reconsider(block)
    await ltc.until_deposit(txid, DepositStatus.PENDING, 2)
    ltc.node.mine(1)
    await ltc.until_deposit(txid, DepositStatus.CREDITED)
    assert await balances(ltc.plat, user.account) == {"LTC": (amount, 0)}
    assert await wallets_db.open_adjustments(ltc.pool, WALLET) == []


async def test_a_reorg_after_the_credit_records_an_adjustment_and_changes_no_balance(
    ltc: Ltc, caplog: pytest.LogCaptureFixture,
) -> None:
    user = await new_user(ltc.plat)
    address = (await user.get("/sapi/v1/capital/deposit/address", coin="LTC"))["address"]
    amount = to_units("0.2")
    txid = ltc.node.pay(address, amount)
    [block, *_] = ltc.node.mine(CONFIRMATIONS)
    await ltc.until_deposit(txid, DepositStatus.CREDITED)
    alerts = metric("tradeplane_wallet_reorg_after_credit_total", wallet=WALLET)

    ltc.node.invalidate(block)
    try:
        with caplog.at_level(logging.ERROR, logger="tradeplane.wallets.watcher"):
            row = await ltc.until_deposit(txid, DepositStatus.CREDITED, 0)
        assert row.block_hash is None
        [adj] = await wallets_db.open_adjustments(ltc.pool, WALLET)
        assert (adj["kind"], adj["amount"], adj["account_id"]) == (
            "reorg_after_credit", amount, user.account)
        assert block in adj["detail"]
        assert metric("tradeplane_wallet_reorg_after_credit_total", wallet=WALLET) == alerts + 1
        assert any("adjustment" in r.getMessage() and r.levelno == logging.ERROR
                   for r in caplog.records)
        # Never a silent balance change: the credit stands, the ledger is untouched.
        assert await balances(ltc.plat, user.account) == {"LTC": (amount, 0)}
        # Scanning on does not raise the alarm twice.
        await ltc.steps()
        assert metric("tradeplane_wallet_reorg_after_credit_total", wallet=WALLET) == alerts + 1
        # Meanwhile the chain holds less than the ledger owes: reconciliation says so.
        r = await reconcile(ltc.spec, ltc.custody.chain, PgCustodyStore(ltc.pool))
        assert not r.ok and r.difference == -amount
    finally:
        ltc.node.reconsider(block)
    await ltc.until_deposit(txid, DepositStatus.CREDITED, CONFIRMATIONS)
    assert await wallets_db.open_adjustments(ltc.pool, WALLET) == []
    resolved = await ltc.pool.fetchrow(
        "SELECT status, resolution FROM wallet_adjustments WHERE deposit_id = $1", row.id)
    assert resolved is not None and resolved["status"] == "RESOLVED"
    assert await balances(ltc.plat, user.account) == {"LTC": (amount, 0)}


# --------------------------------------------------------------------------- withdrawals
async def test_a_withdrawal_goes_end_to_end_to_completed_with_the_fee_charged(ltc: Ltc) -> None:
    user, _address = await funded(ltc, "1")
    fees_before = (await balances(ltc.plat, FEE_ACCOUNT)).get("LTC", (0, 0))[0]
    to = str(ltc.node.rpc("getnewaddress", wallet=ltc.node.payer_wallet))
    amount = to_units("0.3")
    r = await user.api.signed("POST", "/sapi/v1/capital/withdraw/apply", coin="LTC",
                              network="LTC", address=to, amount="0.3",
                              withdrawOrderId="e2e-1")
    assert r.status_code == 200, r.text
    wid = int(r.json()["id"])
    # Locked at once: amount + fee.
    assert await balances(ltc.plat, user.account) == {
        "LTC": (to_units("1") - amount - FEE, amount + FEE)}
    [h] = await user.get("/sapi/v1/capital/withdraw/history", coin="LTC")
    assert (h["id"], h["status"], h["withdrawOrderId"]) == (str(wid), 4, "e2e-1")
    assert h["amount"] == "0.30000000" and h["transactionFee"] == "0.00100000"
    # A retry of the same request is the same withdrawal.
    again = await user.api.signed("POST", "/sapi/v1/capital/withdraw/apply", coin="LTC",
                                  address=to, amount="0.3", withdrawOrderId="e2e-1")
    assert again.json() == {"id": str(wid)}

    sent = await ltc.until_withdrawal(wid, WithdrawalStatus.ON_CHAIN)
    assert sent.txid is not None
    tx = ltc.node.rpc("gettransaction", sent.txid, wallet=ltc.wallet)
    assert tx["comment"] == sent.intent
    ltc.node.mine(CONFIRMATIONS)
    done = await ltc.until_withdrawal(wid, WithdrawalStatus.COMPLETED)
    network_fee = to_units(str(-tx["fee"]))
    assert done.network_fee == network_fee and 0 < network_fee < FEE

    # The user paid amount + fee; the network took its fee, the exchange kept the rest.
    assert await balances(ltc.plat, user.account) == {"LTC": (to_units("1") - amount - FEE, 0)}
    fees_after = (await balances(ltc.plat, FEE_ACCOUNT))["LTC"][0]
    assert fees_after - fees_before == FEE - network_fee
    received = ltc.node.rpc("getreceivedbyaddress", to, 1, wallet=ltc.node.payer_wallet)
    assert to_units(str(received)) == amount
    [h] = await user.get("/sapi/v1/capital/withdraw/history", coin="LTC", status=6)
    assert (h["txId"], h["confirmNo"]) == (sent.txid, CONFIRMATIONS) and "completeTime" in h
    kinds = [json.loads(m.data)["status"] for m in await wallet_events(ltc.bus, WALLET)
             if json.loads(m.data).get("id") == wid]
    assert kinds[-1] == "COMPLETED"


class CrashAfterSend:
    """The real node adapter, except that the process "dies" right after a send returns:
    the transaction is made, its txid never recorded."""

    def __init__(self, inner: ChainAdapter) -> None:
        self.inner = inner
        self.chain, self.asset = inner.chain, inner.asset

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def send(self, address: str, amount: int, intent: str) -> str:
        await self.inner.send(address, amount, intent)
        raise SystemExit("killed between send and record")


async def test_a_crash_between_send_and_record_never_sends_twice(ltc: Ltc) -> None:
    user, _address = await funded(ltc, "0.5")
    to = str(ltc.node.rpc("getnewaddress", wallet=ltc.node.payer_wallet))
    result, wid = await wallets_db.request_withdrawal(ltc.pool, ltc.spec, user.account, to,
                                                      to_units("0.1"), None, 0)
    assert result == RequestResult.CREATED and wid is not None
    crashing = WithdrawalProcessor(ltc.spec, CrashAfterSend(ltc.custody.chain),
                                   PgCustodyStore(ltc.pool))
    with pytest.raises(SystemExit):
        await crashing.step()
    w = await wallets_db.withdrawal(ltc.pool, wid)
    assert w is not None and w.status == WithdrawalStatus.PROCESSING and w.txid is None

    # The restarted process finds the send by its intent and records it; no second send.
    restarted = WithdrawalProcessor(ltc.spec, ltc.custody.chain, PgCustodyStore(ltc.pool))
    await restarted.step()
    w = await wallets_db.withdrawal(ltc.pool, wid)
    assert w is not None and w.status == WithdrawalStatus.ON_CHAIN
    sends = [t for t in ltc.node.rpc("listtransactions", "*", 1000, wallet=ltc.wallet)
             if t["category"] == "send" and t.get("comment") == w.intent]
    assert [t["txid"] for t in sends] == [w.txid]
    ltc.node.mine(CONFIRMATIONS)
    await ltc.until_withdrawal(wid, WithdrawalStatus.COMPLETED)
    assert await balances(ltc.plat, user.account) == {
        "LTC": (to_units("0.5") - to_units("0.1") - FEE, 0)}


async def test_a_withdrawal_above_the_threshold_waits_for_an_admin_and_a_rejection_releases_it(
    ltc: Ltc,
) -> None:
    user, _address = await funded(ltc, "2")
    to = str(ltc.node.rpc("getnewaddress", wallet=ltc.node.payer_wallet))
    admin = {"Authorization": f"Bearer {ltc.plat.settings.admin_token.get_secret_value()}"}
    ids = []
    for amount in ("0.6", "0.7"):
        r = await user.api.signed("POST", "/sapi/v1/capital/withdraw/apply", coin="LTC",
                                  address=to, amount=amount)
        assert r.status_code == 200, r.text
        ids.append(int(r.json()["id"]))
    rejected, approved = ids
    await ltc.steps()
    for wid in ids:  # above the threshold: nothing is sent without an admin
        w = await wallets_db.withdrawal(ltc.pool, wid)
        assert w is not None and w.status == WithdrawalStatus.PENDING
    history = await user.get("/sapi/v1/capital/withdraw/history", coin="LTC", status=2)
    assert sorted(int(h["id"]) for h in history) == ids
    locked = to_units("0.6") + to_units("0.7") + 2 * FEE
    assert await balances(ltc.plat, user.account) == {"LTC": (to_units("2") - locked, locked)}

    async with httpx.AsyncClient(base_url=ltc.plat.base_url, headers=admin) as http:
        r = await http.get("/admin/withdrawals", params={"status": "PENDING"})
        assert r.status_code == 200, r.text
        assert {w["id"] for w in r.json()} >= set(ids)
        r = await http.post(f"/admin/withdrawals/{rejected}/reject",
                            json={"reason": "address under review"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "REJECTED"
        r = await http.post(f"/admin/withdrawals/{rejected}/approve")
        assert r.status_code == 400 and r.json()["code"] == -4001
        r = await http.post("/admin/withdrawals/999999/approve")
        assert r.status_code == 404 and r.json()["code"] == -4029
        r = await http.post(f"/admin/withdrawals/{approved}/approve")
        assert r.status_code == 200 and r.json()["status"] == "APPROVED"
        anon = await http.post(f"/admin/withdrawals/{approved}/reject",
                               headers={"Authorization": "Bearer wrong"})
        assert anon.status_code == 401

    # The rejected one's hold is back; the approved one is sent and completes.
    hold = to_units("0.7") + FEE
    assert await balances(ltc.plat, user.account) == {"LTC": (to_units("2") - hold, hold)}
    [h] = await user.get("/sapi/v1/capital/withdraw/history", coin="LTC", status=3)
    assert (int(h["id"]), h["info"]) == (rejected, "address under review")
    await ltc.until_withdrawal(approved, WithdrawalStatus.ON_CHAIN)
    ltc.node.mine(CONFIRMATIONS)
    await ltc.until_withdrawal(approved, WithdrawalStatus.COMPLETED)
    assert await balances(ltc.plat, user.account) == {"LTC": (to_units("2") - hold, 0)}


async def test_bad_withdrawal_requests_get_binance_errors_and_lock_nothing(ltc: Ltc) -> None:
    user, own_address = await funded(ltc, "0.5")
    to = str(ltc.node.rpc("getnewaddress", wallet=ltc.node.payer_wallet))
    before = await balances(ltc.plat, user.account)
    readonly = await new_user(ltc.plat, ("read", "trade"))
    cases: list[tuple[User, dict[str, str], int, int]] = [
        (readonly, {"coin": "LTC", "address": to, "amount": "0.1"}, 401, -2015),
        (user, {"coin": "LTC", "address": "rltc1notanaddress", "amount": "0.1"}, 400, -4033),
        (user, {"coin": "LTC", "address": "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
                "amount": "0.1"}, 400, -4033),  # a valid address of another chain
        (user, {"coin": "LTC", "address": "x y", "amount": "0.1"}, 400, -4033),
        (user, {"coin": "LTC", "address": to, "amount": "0.001"}, 400, -4022),
        (user, {"coin": "LTC", "address": to, "amount": "0.5"}, 400, -4026),  # + fee > 0.5
        (user, {"coin": "LTC", "address": to, "amount": "0.123456789"}, 400, -4021),
        (user, {"coin": "LTC", "address": to, "amount": "-1"}, 400, -1100),
        (user, {"coin": "DOGE", "address": to, "amount": "0.1"}, 400, -4018),
        (user, {"coin": "LTC", "network": "BTC", "address": to, "amount": "0.1"}, 400, -4019),
        (user, {"coin": "LTC", "address": to}, 400, -1102),
    ]
    for who, params, status, code in cases:
        r = await who.api.signed("POST", "/sapi/v1/capital/withdraw/apply", **params)
        assert (r.status_code, r.json()["code"]) == (status, code), (params, r.text)
    # A whitelist, once the user keeps one, admits only its addresses; an address the
    # chain cannot pay is refused there too, and nothing is stored.
    admin = {"Authorization": f"Bearer {ltc.plat.settings.admin_token.get_secret_value()}"}
    async with httpx.AsyncClient(base_url=ltc.plat.base_url, headers=admin) as http:
        for address in ("rltc1notanaddress", "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"):
            r = await http.post("/admin/withdraw-whitelist", json={
                "account": user.account, "asset": "LTC", "address": address})
            assert (r.status_code, r.json()["code"]) == (400, -4033), r.text
        assert await wallets_db.whitelist(ltc.pool, user.account) == []
        r = await http.post("/admin/withdraw-whitelist", json={
            "account": user.account, "asset": "LTC", "address": own_address})
        assert r.status_code == 200 and r.json()["added"] is True, r.text
    r = await user.api.signed("POST", "/sapi/v1/capital/withdraw/apply", coin="LTC",
                              address=to, amount="0.1")
    assert (r.status_code, r.json()["code"]) == (400, -4035), r.text
    assert await balances(ltc.plat, user.account) == before
    assert await wallets_db.withdraw_history(
        ltc.pool, user.account, asset=None, statuses=None, client_id=None, ids=None,
        start_ms=0, end_ms=2**62, offset=0, limit=10) == []
    # The CLI's whitelist command is the same use case: the node refuses what it cannot
    # pay, and each change is audited as the API's is, under the CLI's actor.
    name = (await ltc.pool.fetchval("SELECT name FROM accounts WHERE id = $1", user.account))
    code, out = await cli(ltc.plat, "withdraw-whitelist", name, "LTC", "rltc1notanaddress")
    assert code == 2 and "not a LTC address" in out, out
    code, out = await cli(ltc.plat, "withdraw-whitelist", name, "LTC", own_address, "--remove")
    assert code == 0 and json.loads(out)["whitelist"] == [], out
    code, out = await cli(ltc.plat, "withdraw-whitelist", name, "LTC", own_address)
    assert code == 0 and json.loads(out)["changed"] is True, out
    rows = await ltc.pool.fetch(
        "SELECT action, actor, before, after FROM audit_log WHERE target = $1 ORDER BY id",
        f"account:{user.account}")
    trail = [(r["action"], r["actor"].split(":")[0]) for r in rows]
    assert trail == [("withdrawal.whitelist.add", "admin"),
                     ("withdrawal.whitelist.remove", "cli"),
                     ("withdrawal.whitelist.add", "cli")], trail
    assert rows[0]["after"] == rows[2]["after"] == rows[1]["before"]
    await wallets_db.whitelist_remove(ltc.pool, user.account, "LTC", own_address)


async def test_reconciliation_shows_zero_difference_after_all_of_it(
    ltc: Ltc,
) -> None:
    """Runs last: every deposit, reorganisation, withdrawal (one sent through a crash) and
    rejection above left the chain and the ledger in agreement, to the unit."""
    await ltc.steps()
    r = await reconcile(ltc.spec, ltc.custody.chain, PgCustodyStore(ltc.pool))
    assert r.ledger_total > 0 and r.uncredited == 0 and r.sent_unfinished == 0
    assert r.difference == 0 and r.ok, r.describe()
    assert metric("tradeplane_wallet_reconciliation_difference_units",
                  wallet=WALLET, asset="LTC") == 0
    assert metric("tradeplane_wallet_reconciliation_ok", wallet=WALLET, asset="LTC") == 1
    # `tradeplane check-wallets` prints the watcher's last result and exits 0.
    code, out = await cli(ltc.plat, "check-wallets", "--wallet", WALLET)
    assert code == 0, out
    assert WALLET in out and re.search(r"difference\s+0\.00000000\s+ok", out), out
    assert "wallets OK" in out
    # --live asks the node now, with the watcher's credentials (here from the environment).
    code, out = await cli(ltc.plat, "check-wallets", "--wallet", WALLET, "--live",
                          TRADEPLANE_CHAIN_RPC_USERNAME=ltc.node.user,
                          TRADEPLANE_CHAIN_RPC_PASSWORD=ltc.node.password)
    assert code == 0, out
    assert re.search(r"difference 0\.00000000 ok", out) and "wallets OK" in out, out


async def cli(plat: Platform, *args: str, **env: str) -> tuple[int, str]:
    """``tradeplane ARGS`` as a process against the platform's servers."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tradeplane.cli", *args, env={**service_env(plat.settings), **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out = (await asyncio.wait_for(proc.communicate(), 60))[0].decode()
    assert proc.returncode is not None
    return proc.returncode, out


async def test_a_wallet_added_by_cli_is_served_and_a_silent_watcher_locks_nothing(
    plat: Platform,
) -> None:
    code, out = await cli(plat, "wallet-add", "btc-cli", "--chain", "bitcoin", "--asset",
                          "BTCX", "--rpc-url", "http://127.0.0.1:1/wallet/hot",
                          "--confirmations", "2", "--withdraw-fee", "0.0002")
    assert code == 0, out
    spec = await wallets_db.load_wallet(plat.pool, "btc-cli")
    assert spec is not None and (spec.rpc_wallet, spec.withdraw_fee) == ("hot", 20_000)
    code, out = await cli(plat, "wallet-add", "bad", "--chain", "bitcoin", "--asset", "BTCX",
                          "--rpc-url", "nope", "--confirmations", "2")
    assert code == 2 and "spec.rpc.url" in out
    user = await new_user(plat)
    # No watcher runs for it: the address cannot be made now; nothing was stored.
    r = await user.api.signed("GET", "/sapi/v1/capital/deposit/address", coin="BTCX")
    assert (r.status_code, r.json()["code"]) == (503, -1001)
    assert await wallets_db.deposit_address(plat.pool, "btc-cli", user.account) is None
    assert await user.get("/sapi/v1/capital/deposit/hisrec", coin="BTCX") == []
    await db.credit(plat.pool, user.account, "BTCX", to_units("1"), f"btcx-{user.account}")
    r = await user.api.signed("POST", "/sapi/v1/capital/withdraw/apply", coin="BTCX",
                              address="bc1qsomething", amount="0.1")
    assert (r.status_code, r.json()["code"]) == (503, -1001)
    assert await plat.balances(user.account) == {"BTCX": (to_units("1"), 0)}


# --------------------------------------------------------------------------- no node
_DEAD_NODE = "http://127.0.0.1:1/wallet/hot"  # port 1: nothing listens there


async def test_check_wallets_never_says_ok_for_a_wallet_never_reconciled(
    plat: Platform,
) -> None:
    code, out = await cli(plat, "wallet-add", "ltc-unwatched", "--chain", "litecoin",
                          "--asset", "LTCU", "--rpc-url", _DEAD_NODE, "--confirmations", "2")
    assert code == 0, out
    code, out = await cli(plat, "check-wallets", "--wallet", "ltc-unwatched")
    assert code == 1, out
    assert "ltc-unwatched" in out and "never reconciled" in out, out
    assert "wallets OK" not in out and "wallets NOT CHECKED (1 not reconciled)" in out, out
    code, out = await cli(plat, "check-wallets", "--wallet", "no-such-wallet")
    assert code == 2 and out.strip() == "tradeplane check-wallets: no wallet named " \
        "no-such-wallet", out


async def test_wallet_commands_answer_an_unreachable_node_with_one_line(plat: Platform) -> None:
    """wallet-add registers the wallet and warns in one line; check-wallets --live says
    which wallet it could not check and exits 1; neither prints a traceback."""
    code, out = await cli(plat, "wallet-add", "ltc-dead", "--chain", "litecoin", "--asset",
                          "LTCD", "--rpc-url", _DEAD_NODE, "--confirmations", "2")
    assert code == 0, out
    warning = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "ltc-dead" in warning[0] and "does not answer" in warning[0]
    assert await wallets_db.load_wallet(plat.pool, "ltc-dead") is not None
    code, out = await cli(plat, "check-wallets", "--wallet", "ltc-dead", "--live")
    assert code == 1, out
    assert "Traceback" not in out, out
    lines = out.strip().splitlines()
    assert lines[0].startswith("ltc-dead LTCD: NOT CHECKED: its node did not answer"), out
    assert lines[-1] == "wallets NOT CHECKED (1 not reconciled)", out


async def test_a_watcher_without_its_node_warns_in_one_line_and_backs_off(
    plat: Platform, tmp_path: Path,
) -> None:
    """The real process, its node absent: one warning line per failed pass naming the
    wallet (no traceback), and the passes come further and further apart."""
    code, out = await cli(plat, "wallet-add", "ltc-away", "--chain", "litecoin", "--asset",
                          "LTCA", "--rpc-url", _DEAD_NODE, "--confirmations", "2")
    assert code == 0, out
    log_path = tmp_path / "watcher.log"
    env = {**service_env(plat.settings), "TRADEPLANE_WALLET_SCAN_INTERVAL_S": "0.1",
           "TRADEPLANE_CHAIN_RPC_USERNAME": "u", "TRADEPLANE_CHAIN_RPC_PASSWORD": "p"}
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tradeplane.cli", "wallet-watcher", "--wallet", "ltc-away",
            env=env, stdout=log, stderr=asyncio.subprocess.STDOUT)
    try:
        def scans() -> list[dict[str, Any]]:
            out = []
            for line in log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    doc = json.loads(line)
                    if "deposit scan of ltc-away failed" in str(doc.get("msg", doc)):
                        out.append(doc)
            return out

        async def four_failed_scans() -> list[dict[str, Any]]:
            assert proc.returncode is None, log_path.read_text()
            found = scans()
            assert len(found) >= 4, log_path.read_text()
            return found

        found = await eventually(four_failed_scans, timeout=30)
        text = log_path.read_text(errors="replace")
        assert "Traceback" not in text, text
        assert all(d.get("level") == "warning" for d in found), found
        waits = [float(m.group(1)) for d in found
                 if (m := re.search(r"retrying in (\d+) s", str(d.get("msg"))))]
        assert waits[:4] == sorted(waits[:4]) and waits[3] > waits[0], found
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0, log_path.read_text()


async def test_a_whitelist_request_with_no_watcher_is_503_and_logs_the_wallet(
    plat: Platform, caplog: pytest.LogCaptureFixture,
) -> None:
    spec = wallet_from_spec("ltc-nowatcher", {
        "chain": "litecoin", "network": "regtest", "asset": "LTCW",
        "rpc": {"url": _DEAD_NODE}, "confirmations": 2})
    await wallets_db.upsert_wallet(plat.pool, spec)
    user = await new_user(plat)
    caplog.set_level(logging.WARNING, logger="tradeplane.gateway.wallet")
    admin = {"Authorization": f"Bearer {plat.settings.admin_token.get_secret_value()}"}
    async with httpx.AsyncClient(base_url=plat.base_url, headers=admin) as http:
        r = await http.post("/admin/withdraw-whitelist", json={
            "account": user.account, "asset": "LTCW", "address": "rltc1qsomething"})
    assert (r.status_code, r.json()["code"]) == (503, -1001), r.text
    lines = [rec.getMessage() for rec in caplog.records
             if rec.name == "tradeplane.gateway.wallet"]
    assert any("ltc-nowatcher" in m and "wallet-watcher --wallet ltc-nowatcher" in m
               for m in lines), lines
    # The CLI asks the same watcher, and without an answer stores nothing either.
    name = await plat.pool.fetchval("SELECT name FROM accounts WHERE id = $1", user.account)
    code, out = await cli(plat, "withdraw-whitelist", name, "LTCW", "rltc1qsomething")
    assert code == 2 and "wallet-watcher --wallet ltc-nowatcher" in out, out
    assert await wallets_db.whitelist(plat.pool, user.account) == []


async def test_the_faucet_pays_an_address_from_the_recorded_node_and_mines(
    ltc: Ltc, tmp_path: Path,
) -> None:
    """``tradeplane faucet`` pays from the node ``up`` recorded in its data folder (here
    the test's node) and mines ``--confirm`` blocks; without a record, or with the node
    gone, it says so in one line."""
    data = tmp_path / ".tradeplane"
    (data / "chains").mkdir(parents=True)
    (data / "ports.json").write_text("{}")
    to = str(ltc.node.rpc("getnewaddress", wallet=ltc.wallet))
    code, out = await cli(ltc.plat, "faucet", "XMR", to, "1", "--data-dir", str(data))
    assert (code, out.count("\n")) == (1, 1) and "no regtest XMR node recorded" in out, out
    (data / "chains" / "chains.json").write_text(json.dumps({
        "username": ltc.node.user, "password": ltc.node.password,
        "litecoin": {"url": ltc.node.url}}))
    height = ltc.node.height()
    code, out = await cli(ltc.plat, "faucet", "ltc", to, "0.25", "--confirm", "2",
                          "--data-dir", str(data))
    assert code == 0, out
    paid = json.loads(out)
    assert (paid["asset"], paid["amount"], paid["blocksMined"]) == ("LTC", "0.25000000", 2)
    tx = ltc.node.rpc("gettransaction", paid["txid"], wallet=ltc.wallet)
    assert tx["amount"] == Decimal("0.25") and tx["confirmations"] == 2, tx
    assert ltc.node.height() == height + 2
    (data / "chains" / "chains.json").write_text(json.dumps({
        "username": "u", "password": "p", "litecoin": {"url": "http://127.0.0.1:1"}}))
    code, out = await cli(ltc.plat, "faucet", "LTC", to, "1", "--data-dir", str(data))
    assert code == 1 and out.count("\n") == 1 and "does not answer" in out, out
    assert "is `tradeplane up --data-dir" in out, out


# --------------------------------------------------------------------------- the process
async def test_the_wallet_watcher_process_runs_from_its_mounted_spec(
    ltc: Ltc, tmp_path: Path,
) -> None:
    """``tradeplane wallet-watcher --wallet NAME`` as the operator runs it: the Wallet spec
    from TRADEPLANE_WALLET_CONFIG (stored for the gateway), the node's login from
    TRADEPLANE_CHAIN_RPC_* (the password from a *_FILE); it answers the gateway's address
    requests, credits deposits, exports its metrics and stops cleanly on SIGTERM. (After
    the reconciliation test: this second LTC wallet is not part of that balance.)"""
    name = "ltc-proc"
    wallet = ltc.node.create_wallet()
    (tmp_path / "wallet.json").write_text(json.dumps({
        "chain": "litecoin", "family": "bitcoin", "network": "regtest", "asset": "LTC",
        "rpc": {"url": f"{ltc.node.url}/wallet/{wallet}", "vaultPath": "tradeplane/x"},
        "confirmations": 1, "hotWallet": {"maxBalance": "100", "minBalance": "0"},
        "sweep": {"enabled": False},
    }))
    (tmp_path / "rpc-password").write_text(ltc.node.password + "\n")
    port = free_port()
    env = {**service_env(ltc.plat.settings),
           "TRADEPLANE_WALLET_CONFIG": str(tmp_path / "wallet.json"),
           "TRADEPLANE_CHAIN_RPC_USERNAME": ltc.node.user,
           "TRADEPLANE_CHAIN_RPC_PASSWORD_FILE": str(tmp_path / "rpc-password"),
           "TRADEPLANE_METRICS_PORT": str(port), "TRADEPLANE_WALLET_SCAN_INTERVAL_S": "0.2"}
    with (tmp_path / "watcher.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tradeplane.cli", "wallet-watcher", "--wallet", name,
            env=env, stdout=log, stderr=asyncio.subprocess.STDOUT)
    try:
        user = await new_user(ltc.plat)

        async def address() -> str:
            r = await user.api.signed("GET", "/sapi/v1/capital/deposit/address", coin="LTC",
                                      network=name)
            assert r.status_code == 200, r.text  # until the process answers
            return str(r.json()["address"])

        to = await eventually(address, timeout=30)
        txid = ltc.node.pay(to, to_units("0.05"))
        ltc.node.mine(1)

        async def credited() -> bool:
            return await ltc.plat.balances(user.account) == {"LTC": (to_units("0.05"), 0)}

        await eventually(credited, timeout=30)
        stored = await wallets_db.load_wallet(ltc.pool, name)
        assert stored is not None and stored.rpc_wallet == wallet
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        assert f'tradeplane_wallet_last_scanned_height{{wallet="{name}"}} ' \
            f"{float(ltc.node.height())}" in text
        assert await ltc.pool.fetchval("SELECT count(*) FROM credits WHERE ref LIKE $1",
                                       f"deposit:litecoin:{txid}:%") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0, (tmp_path / "watcher.log").read_text()


# --------------------------------------------------------------------------- Monero
async def test_monero_deposit_and_withdrawal_end_to_end_reconcile_to_zero(
    plat: Platform, monero_nodes: MoneroNodes,
) -> None:
    """The same custody against monerod + monero-wallet-rpc: a subaddress per user, the
    credit at the confirmation count, a withdrawal once the deposit unlocked (10 blocks),
    completed with the network fee the wallet actually paid; chain and ledger agree."""
    spec = wallet_from_spec("xmr-test", {
        "chain": "monero", "network": "regtest", "asset": "XMR",
        "rpc": {"url": monero_nodes.wallet_url, "daemonUrl": monero_nodes.daemon_url,
                "accountIndex": monero_nodes.create_account("tp-custody-test")},
        "confirmations": 2, "withdrawals": {"fee": "0.01", "min": "0.1"},
    })
    await wallets_db.upsert_wallet(plat.pool, spec)
    chain = connect_chain(spec, NodeLogin(spec.rpc_url, monero_nodes.wallet_user,
                                          SecretStr(monero_nodes.wallet_password)))
    bus = await Bus.connect(plat.settings.nats_url, name="test-xmr")
    c = custody_over(spec, chain, plat.pool, bus, WalletSettings())
    unsubscribe = await c.serve()
    try:
        user = await new_user(plat)
        address = (await user.get("/sapi/v1/capital/deposit/address", coin="XMR"))["address"]
        txid = monero_nodes.pay(address, to_units("2"))

        async def deposit_is(status: DepositStatus) -> bool:
            await c.watcher.step()
            return bool(await plat.pool.fetchval(
                "SELECT status FROM deposits WHERE txid = $1", txid) == status)

        await eventually(lambda: deposit_is(DepositStatus.PENDING), timeout=60)
        monero_nodes.mine(1)
        await eventually(lambda: deposit_is(DepositStatus.PENDING), timeout=60)
        assert await plat.balances(user.account) == {}
        monero_nodes.mine(1)
        await eventually(lambda: deposit_is(DepositStatus.CREDITED), timeout=60)
        assert await plat.balances(user.account) == {"XMR": (to_units("2"), 0)}

        monero_nodes.mine(10)  # the received output unlocks
        r = await user.api.signed("POST", "/sapi/v1/capital/withdraw/apply", coin="XMR",
                                  address=monero_nodes.payer_address, amount="0.5")
        assert r.status_code == 200, r.text
        wid = int(r.json()["id"])

        async def withdrawal_is(status: WithdrawalStatus) -> bool:
            await c.processor.step()
            w = await wallets_db.withdrawal(plat.pool, wid)
            return w is not None and w.status == status

        await eventually(lambda: withdrawal_is(WithdrawalStatus.ON_CHAIN), timeout=120)
        monero_nodes.mine(2)
        await eventually(lambda: withdrawal_is(WithdrawalStatus.COMPLETED), timeout=60)
        w = await wallets_db.withdrawal(plat.pool, wid)
        assert w is not None and w.network_fee is not None and 0 < w.network_fee < w.fee
        assert await plat.balances(user.account) == {
            "XMR": (to_units("2") - to_units("0.5") - to_units("0.01"), 0)}
        rec = await reconcile(spec, chain, PgCustodyStore(plat.pool))
        assert rec.difference == 0 and rec.ok, rec.describe()
    finally:
        for unsub in unsubscribe:
            await unsub()
        await bus.close()
        await chain.close()


# --------------------------------------------------------------------------- FakeChain
_fakes = itertools.count(1)


async def fake_custody(plat: Platform, *, confirmations: int = 2, **spec: Any
                       ) -> tuple[Custody, FakeChain]:
    """A wallet of its own asset on the in-memory FakeChain (so its reconciliation is its
    own)."""
    n = next(_fakes)
    asset = f"FK{n}"
    chain = FakeChain(asset=asset)
    wallet = wallet_from_spec(f"fake-{n}", {
        "chain": "litecoin", "network": "regtest", "asset": asset,
        "rpc": {"url": "http://fake-node:1"}, "confirmations": confirmations, **spec})
    await wallets_db.upsert_wallet(plat.pool, wallet)
    return custody_over(wallet, chain, plat.pool, None,
                   WalletSettings(wallet_max_send_attempts=2)), chain


async def fake_deposit(plat: Platform, c: Custody, chain: FakeChain, amount: int
                       ) -> tuple[int, str]:
    account = await db.create_account(plat.pool, f"fake-{secrets.token_hex(4)}")
    address = await chain.deposit_address(account, c.spec.asset)
    await wallets_db.save_deposit_address(plat.pool, c.spec.name, account, address)
    txid = chain.pay(address, amount)
    chain.mine(c.spec.confirmations)
    await c.watcher.step()
    assert await plat.balances(account) == {c.spec.asset: (amount, 0)}
    return account, txid


async def _status(plat: Platform, txid: str) -> str:
    return str(await plat.pool.fetchval("SELECT status FROM deposits WHERE txid = $1", txid))


async def test_fake_a_payment_gone_for_good_before_its_credit_is_dropped(plat: Platform) -> None:
    c, chain = await fake_custody(plat, confirmations=3)
    account = await db.create_account(plat.pool, f"fake-{secrets.token_hex(4)}")
    address = await chain.deposit_address(account, c.spec.asset)
    await wallets_db.save_deposit_address(plat.pool, c.spec.name, account, address)
    txid = chain.pay(address, 5_000)
    chain.mine(2)
    await c.watcher.step()
    assert await _status(plat, txid) == DepositStatus.PENDING
    chain.reorg(2, drop={txid})  # double-spent away: not in any block nor the mempool
    chain.mine(3)
    await c.watcher.step()
    assert await _status(plat, txid) == DepositStatus.DROPPED
    assert await plat.balances(account) == {}
    r = await reconcile(c.spec, chain, PgCustodyStore(plat.pool))
    assert r.difference == 0


async def test_fake_a_credited_payment_gone_for_good_stays_an_open_adjustment(
    plat: Platform,
) -> None:
    c, chain = await fake_custody(plat)
    account, txid = await fake_deposit(plat, c, chain, 7_000)
    chain.reorg(2, drop={txid})
    chain.mine(5)
    await c.watcher.step()
    await c.watcher.step()
    [adj] = await wallets_db.open_adjustments(plat.pool, c.spec.name)
    assert (adj["account_id"], adj["amount"]) == (account, 7_000)
    assert await plat.balances(account) == {c.spec.asset: (7_000, 0)}
    r = await reconcile(c.spec, chain, PgCustodyStore(plat.pool))
    assert not r.ok and r.difference == -7_000


async def test_fake_a_restarted_watcher_scans_on_from_its_cursor_not_from_genesis(
    plat: Platform,
) -> None:
    c, chain = await fake_custody(plat)
    await fake_deposit(plat, c, chain, 1_000)
    chain.mine(4)
    saved = await wallets_db.load_cursor(plat.pool, c.spec.name)
    assert saved is not None
    restarted = custody_over(c.spec, chain, plat.pool, None, WalletSettings())
    await restarted.watcher.step()
    assert chain.scans[0] is None  # the wallet's very first scan
    assert chain.scans[1:] == [saved[0]]  # the restart's: the persisted cursor


async def test_fake_a_send_whose_answer_was_lost_is_found_not_repeated(plat: Platform) -> None:
    c, chain = await fake_custody(plat)
    account, _ = await fake_deposit(plat, c, chain, 100_000_000)
    result, wid = await wallets_db.request_withdrawal(plat.pool, c.spec, account, "fake1out",
                                                      10_000_000, None, 0)
    assert result == RequestResult.CREATED and wid is not None
    chain.fail_next_send(ChainUnavailable("timed out"), after_sending=True)
    await c.processor.step()
    w = await wallets_db.withdrawal(plat.pool, wid)
    assert w is not None and w.status == WithdrawalStatus.PROCESSING
    await c.processor.step()
    w = await wallets_db.withdrawal(plat.pool, wid)
    assert w is not None and w.status == WithdrawalStatus.ON_CHAIN
    assert chain.sends == [w.txid]
    chain.mine(2)
    await c.processor.step()
    w = await wallets_db.withdrawal(plat.pool, wid)
    assert w is not None and w.status == WithdrawalStatus.COMPLETED
    assert (await reconcile(c.spec, chain, PgCustodyStore(plat.pool))).difference == 0


async def test_fake_sends_the_node_keeps_refusing_fail_and_release_the_funds(
    plat: Platform,
) -> None:
    c, chain = await fake_custody(plat)
    account, _ = await fake_deposit(plat, c, chain, 50_000_000)
    _result, wid = await wallets_db.request_withdrawal(plat.pool, c.spec, account, "fake1out",
                                                       10_000_000, None, 0)
    assert wid is not None
    for _ in range(2):
        chain.fail_next_send(ChainError("rejected: too-long-mempool-chain"))
        await c.processor.step()
    await c.processor.step()
    w = await wallets_db.withdrawal(plat.pool, wid)
    assert w is not None and w.status == WithdrawalStatus.FAILED and chain.sends == []
    assert "too-long-mempool-chain" in w.info
    assert await plat.balances(account) == {c.spec.asset: (50_000_000, 0)}


async def test_fake_the_hot_wallet_floor_holds_a_withdrawal_until_there_is_enough(
    plat: Platform,
) -> None:
    c, chain = await fake_custody(plat, hotWallet={"minBalance": "0.5"})
    account, _ = await fake_deposit(plat, c, chain, 80_000_000)
    _result, wid = await wallets_db.request_withdrawal(plat.pool, c.spec, account, "fake1out",
                                                       40_000_000, None, 0)
    assert wid is not None
    await c.processor.step()
    w = await wallets_db.withdrawal(plat.pool, wid)
    assert w is not None and w.status == WithdrawalStatus.APPROVED and chain.sends == []
    assert metric("tradeplane_wallet_hot_wallet_low", wallet=c.spec.name) == 1
    chain.fund(20_000_000)  # the operator tops the hot wallet up
    chain.mine(1)
    await c.processor.step()
    w = await wallets_db.withdrawal(plat.pool, wid)
    assert w is not None and w.status == WithdrawalStatus.ON_CHAIN
    assert metric("tradeplane_wallet_hot_wallet_low", wallet=c.spec.name) == 0
    r = await reconcile(c.spec, chain, PgCustodyStore(plat.pool))
    assert r.difference == 20_000_000 and r.ok  # the top-up is a surplus, not a liability
