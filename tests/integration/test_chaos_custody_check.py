"""The custody check ``tradeplane chaos`` runs after each chain fault
(``chaos.compose.check_custody``), shown to catch what it exists for: a confirmed payment
never credited, a credit for a payment spent again elsewhere or made by nobody, an
acknowledged withdrawal not stored, one unfinished, one broadcast twice, a send of the
hot wallet for no withdrawal, and a reconciliation that is not 0. (That it finds nothing
on a sound exchange is what tests/e2e/test_chaos.py's chain schedule shows.)"""

from __future__ import annotations

import pytest
from tests.support.fake_chain import FakeChain
from tests.support.harness import Platform

from tradeplane.adapters import db, wallets_db
from tradeplane.chaos import compose
from tradeplane.domain.custody import deposit_ref
from tradeplane.domain.money import to_units

pytestmark = pytest.mark.integration

TXID = ["aa" * 32, "bb" * 32, "cc" * 32]


async def test_the_custody_check_counts_lost_and_duplicated_deposits_and_withdrawals(
    plat: Platform,
) -> None:
    dsn = plat.settings.database_url
    spec = await compose.provision_wallet(dsn, "chk-wallet", {
        "chain": "litecoin", "network": "regtest", "asset": "CHK", "confirmations": 2,
        "rpc": {"url": "http://127.0.0.1:9/wallet/hot"},
        "withdrawals": {"fee": "0.001", "min": "0.002", "approvalThreshold": "1000"}})
    account = await db.create_account(plat.pool, "chk-owner")
    await db.credit(plat.pool, account, "CHK", to_units("1"), "chk-funding")
    # A payment spent again elsewhere, credited all the same; a credit nobody paid for.
    await db.credit(plat.pool, account, "CHK", to_units("0.2"),
                    deposit_ref("litecoin", TXID[1], 0))
    await db.credit(plat.pool, account, "CHK", to_units("0.3"),
                    deposit_ref("litecoin", TXID[2], 1))
    _, wid = await wallets_db.request_withdrawal(plat.pool, spec, account, "fake1out",
                                                 to_units("0.1"), None, 0)
    assert wid is not None
    stored = await wallets_db.withdrawal(plat.pool, wid)
    assert stored is not None
    payments = [
        compose.Payment(TXID[0], 0, "fake1a", to_units("0.5"), 3),  # confirmed, no credit
        compose.Payment(TXID[1], 0, "fake1a", to_units("0.2"), -1),  # spent elsewhere
    ]
    sends = {stored.intent: {"01" * 32, "02" * 32}, "": {"03" * 32}}

    found = await compose.check_custody(dsn, spec, FakeChain(asset="CHK"), payments,
                                        sends, acked=[wid, 10**9])

    assert (found.lost, found.duplicated) == (2, 3), found.failures
    expected = [
        f"deposit {TXID[0]}:0 (3 confirmations) never credited",
        f"deposit {TXID[1]}:0 credited though it was spent again elsewhere (gone from the "
        "chain)",
        f"deposits credited that no payment made: ['{deposit_ref('litecoin', TXID[2], 1)}']",
        f"withdrawals acknowledged but not stored: {[10**9]}",
        f"withdrawal {wid} is APPROVED after settling (no info)",
        f"withdrawal {wid} broadcast 2 times: {sorted(sends[stored.intent])}",
        f"sends of the hot wallet for no withdrawal: (no comment) {['03' * 32]}",
    ]
    for line in expected:
        assert line in found.failures, (line, found.failures)
    assert any(f.startswith("custody: deposit ") for f in found.failures), found.failures
    assert any(f.startswith("reconciliation is not 0: chk-wallet CHK: ")
               and f.endswith("SHORTFALL") for f in found.failures), found.failures
