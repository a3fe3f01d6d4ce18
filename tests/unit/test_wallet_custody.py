"""Custody rules: what a Wallet spec means, the Binance status codes, and the postings of a
withdrawal (balanced, fee split between the network and the fee account)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from tradeplane.domain.custody import (
    API_WITHDRAW_STATUSES,
    DEPOSIT_API_STATUS,
    HOLDING,
    DepositStatus,
    WalletSpecError,
    WithdrawalStatus,
    complete_postings,
    deposit_ref,
    lock_postings,
    release_postings,
    wallet_from_spec,
    withdrawal_intent,
)
from tradeplane.domain.ledger import EXTERNAL_ACCOUNT, FEE_ACCOUNT, Posting, check_balanced
from tradeplane.domain.money import to_units

LTC = {
    "chain": "litecoin", "network": "regtest", "asset": "LTC",
    "rpc": {"url": "http://litecoind:19443", "vaultPath": "tradeplane/wallets/ltc"},
    "confirmations": 3, "hotWallet": {"maxBalance": "100", "minBalance": "1"},
}


def test_a_wallet_spec_reads_amounts_as_units_and_defaults_the_withdrawal_rules() -> None:
    spec = wallet_from_spec("litecoin-regtest", LTC)
    assert (spec.chain, spec.family, spec.asset, spec.confirmations) == (
        "litecoin", "bitcoin", "LTC", 3)
    assert (spec.hot_min, spec.hot_max) == (to_units("1"), to_units("100"))
    assert (spec.withdraw_fee, spec.withdraw_min, spec.approval_threshold) == (
        to_units("0.001"), to_units("0.002"), to_units("10"))
    assert spec.vault_path == "tradeplane/wallets/ltc" and not spec.whitelist_required
    assert spec.network_code == "LTC"
    assert spec.accepts_network(None) and spec.accepts_network("ltc")
    assert spec.accepts_network("LITECOIN") and not spec.accepts_network("BTC")


def test_the_spec_round_trips_through_its_stored_form() -> None:
    spec = wallet_from_spec("ltc", {**LTC, "withdrawals": {
        "fee": "0.0005", "min": "0.01", "approvalThreshold": "2.5",
        "whitelistRequired": True}})
    assert wallet_from_spec("ltc", spec.to_spec()) == spec


def test_a_bitcoind_wallet_url_names_the_wallet() -> None:
    spec = wallet_from_spec("ltc", {**LTC, "rpc": {"url": "http://node:19443/wallet/hot"}})
    assert (spec.rpc_url, spec.rpc_wallet) == ("http://node:19443", "hot")


def test_scans_reread_more_blocks_than_a_credit_needs() -> None:
    for confirmations in (1, 3, 10, 100):
        spec = wallet_from_spec("ltc", {**LTC, "confirmations": confirmations})
        assert spec.horizon > confirmations


@pytest.mark.parametrize(("change", "field"), [
    ({"chain": "dogecoin"}, "spec.chain"),
    ({"family": "monero"}, "spec.family"),
    ({"network": "signet"}, "spec.network"),
    ({"asset": "l"}, "spec.asset"),
    ({"rpc": {"url": "ftp://x"}}, "spec.rpc.url"),
    ({"confirmations": 0}, "spec.confirmations"),
    ({"confirmations": True}, "spec.confirmations"),
    ({"hotWallet": {"minBalance": "0.000000001"}}, "spec.hotWallet.minBalance"),
    ({"withdrawals": {"min": "0"}}, "spec.withdrawals.min"),
    ({"chain": "monero", "asset": "XMR"}, "spec.rpc.daemonUrl"),
])
def test_an_unusable_spec_is_refused_naming_the_field(change: dict[str, object],
                                                      field: str) -> None:
    with pytest.raises(WalletSpecError, match=field.replace(".", r"\.")):
        wallet_from_spec("ltc", {**LTC, **change})


def test_a_wallet_name_must_be_one_subject_token() -> None:
    with pytest.raises(WalletSpecError, match="DNS label"):
        wallet_from_spec("ltc.main", LTC)


def test_approval_is_needed_only_above_the_threshold() -> None:
    spec = wallet_from_spec("ltc", {**LTC, "withdrawals": {"approvalThreshold": "1"}})
    assert not spec.needs_approval(to_units("1"))
    assert spec.needs_approval(to_units("1") + 1)


def test_binance_status_codes() -> None:
    assert DEPOSIT_API_STATUS[DepositStatus.PENDING] == 0
    assert DEPOSIT_API_STATUS[DepositStatus.CONFIRMED] == 0
    assert DEPOSIT_API_STATUS[DepositStatus.CREDITED] == 1
    assert API_WITHDRAW_STATUSES[2] == [WithdrawalStatus.PENDING]
    assert API_WITHDRAW_STATUSES[3] == [WithdrawalStatus.REJECTED]
    assert set(API_WITHDRAW_STATUSES[4]) == {WithdrawalStatus.APPROVED,
                                            WithdrawalStatus.PROCESSING,
                                            WithdrawalStatus.ON_CHAIN}
    assert API_WITHDRAW_STATUSES[5] == [WithdrawalStatus.FAILED]
    assert API_WITHDRAW_STATUSES[6] == [WithdrawalStatus.COMPLETED]
    assert {WithdrawalStatus.PENDING, WithdrawalStatus.APPROVED, WithdrawalStatus.PROCESSING,
            WithdrawalStatus.ON_CHAIN} == HOLDING


def _net(postings: list[Posting]) -> dict[tuple[int, str], int]:
    out: dict[tuple[int, str], int] = defaultdict(int)
    for _ref, account, _asset, bucket, amount in postings:
        out[(account, bucket)] += amount
    return dict(out)


def test_a_withdrawal_locks_then_releases_exactly_its_hold() -> None:
    lock = lock_postings(7, 1000, "LTC", 150)
    release = release_postings(7, 1000, "LTC", 150)
    check_balanced(lock)
    check_balanced(release)
    assert _net(lock) == {(1000, "a"): -150, (1000, "l"): 150}
    assert {k: v for k, v in _net(lock + release).items() if v} == {}


@pytest.mark.parametrize(("fee", "network_fee", "to_fees"), [
    (1000, 300, 700),  # the usual case: the exchange keeps the rest of the fee
    (1000, 1000, None),  # no fee-account posting at all
    (1000, 1500, -500),  # the fee account pays what the charge did not cover
])
def test_completion_pays_amount_and_network_fee_out_and_the_rest_to_the_fee_account(
    fee: int, network_fee: int, to_fees: int | None
) -> None:
    postings = complete_postings(7, 1000, "LTC", 50_000, fee, network_fee)
    check_balanced(postings)
    net = _net(postings)
    assert net[(1000, "l")] == -(50_000 + fee)
    assert net[(EXTERNAL_ACCOUNT, "x")] == 50_000 + network_fee
    assert net.get((FEE_ACCOUNT, "a")) == to_fees


def test_references_and_intents_are_unique_per_output_and_withdrawal() -> None:
    assert deposit_ref("litecoin", "ab", 1) != deposit_ref("litecoin", "ab", 0)
    assert withdrawal_intent(1, "x") != withdrawal_intent(1, "y")
    assert withdrawal_intent(1, "x").startswith("tpwd-1-")
