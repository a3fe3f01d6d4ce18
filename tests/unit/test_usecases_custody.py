"""The custody use cases over in-memory ports (tests/support/memory_custody.py): the rules
a withdrawal request meets and their order, deposit addresses issued once, and the admin
changes (approve, reject, whitelist) each audited once, only when something changed."""

from __future__ import annotations

import pytest
from tests.support.memory_custody import MemoryCustodyStore, NodeStandIn

from tradeplane.domain.access import Role
from tradeplane.domain.custody import WalletSpec, WithdrawalStatus, wallet_from_spec
from tradeplane.domain.money import to_units
from tradeplane.usecases.audit import Actor
from tradeplane.usecases.custody import (
    CustodyCases,
    DepositQuery,
    Refusal,
    WatcherUnavailable,
    WithdrawalNotMovable,
    WithdrawQuery,
    withdrawal_doc,
)
from tradeplane.usecases.errors import NotFound

ALICE = 7
FEE = to_units("0.001")
MINIMUM = to_units("0.01")
THRESHOLD = to_units("0.5")
ADMIN = Actor("admin", "ops", Role.SUPER_ADMIN, "10.0.0.1")
NOW = 1_700_000_000_000


def spec(*, whitelist_required: bool = False) -> WalletSpec:
    return wallet_from_spec("ltc-unit", {
        "chain": "litecoin", "network": "regtest", "asset": "LTC",
        "rpc": {"url": "http://127.0.0.1:1/wallet/x"}, "confirmations": 3,
        "withdrawals": {"fee": "0.001", "min": "0.01", "approvalThreshold": "0.5",
                        "whitelistRequired": whitelist_required},
    })


def cases(funds: str = "1") -> tuple[CustodyCases, MemoryCustodyStore, NodeStandIn]:
    store = MemoryCustodyStore()
    store.fund(ALICE, "LTC", to_units(funds))
    node = NodeStandIn()
    return CustodyCases(store, node), store, node


# --------------------------------------------------------------------------- addresses
async def test_a_deposit_address_is_issued_once_and_then_served_from_the_store() -> None:
    c, store, node = cases()
    first = await c.deposit_address(spec(), ALICE)
    again = await c.deposit_address(spec(), ALICE)
    assert first == again == "fake1acct7"
    assert node.issued == [ALICE]
    assert await store.deposit_address("ltc-unit", ALICE) == first


async def test_a_deposit_address_racing_another_answers_the_one_stored_first() -> None:
    store = MemoryCustodyStore()
    store.fund(ALICE, "LTC", 1)

    class RacedNode(NodeStandIn):
        async def new_address(self, wallet: WalletSpec, account: int) -> str:
            # Another request stored its address while this one asked the node.
            store.addresses[(wallet.name, account)] = "fake1first"
            return await super().new_address(wallet, account)

    assert await CustodyCases(store, RacedNode()).deposit_address(spec(), ALICE) == \
        "fake1first"
    assert store.addresses == {("ltc-unit", ALICE): "fake1first"}


async def test_no_deposit_address_is_stored_while_the_watcher_is_away() -> None:
    c, store, node = cases()
    node.away = True
    with pytest.raises(WatcherUnavailable):
        await c.deposit_address(spec(), ALICE)
    assert store.addresses == {}


# --------------------------------------------------------------------------- withdrawals
async def test_a_withdrawal_below_the_threshold_is_approved_and_locks_amount_plus_fee() -> None:
    c, store, _node = cases("1")
    wid = await c.request_withdrawal(spec(), ALICE, "fake1out", to_units("0.1"), None, NOW)
    assert isinstance(wid, int)
    w = store.withdrawals[wid]
    assert w.status == WithdrawalStatus.APPROVED
    assert store.held(ALICE, "LTC") == (to_units("1") - to_units("0.1") - FEE,
                                        to_units("0.1") + FEE)


async def test_a_withdrawal_above_the_threshold_waits_for_an_admin() -> None:
    c, store, _node = cases("1")
    wid = await c.request_withdrawal(spec(), ALICE, "fake1out", THRESHOLD + 1, None, NOW)
    assert isinstance(wid, int)
    assert store.withdrawals[wid].status == WithdrawalStatus.PENDING


async def test_the_minimum_is_checked_before_the_client_id_and_the_address() -> None:
    c, store, node = cases()
    refused = await c.request_withdrawal(spec(), ALICE, "not-an-address!", MINIMUM - 1,
                                         "bad id!", NOW)
    assert refused is Refusal.BELOW_MINIMUM
    assert node.validated == [] and store.withdrawals == {}


async def test_a_malformed_client_id_is_refused_before_the_address_form() -> None:
    c, _store, _node = cases()
    assert await c.request_withdrawal(spec(), ALICE, "not-an-address!", MINIMUM, "bad id!",
                                      NOW) is Refusal.BAD_CLIENT_ID


async def test_an_address_of_the_wrong_form_never_reaches_the_node() -> None:
    c, _store, node = cases()
    assert await c.request_withdrawal(spec(), ALICE, "not-an-address!", MINIMUM, None,
                                      NOW) is Refusal.ILLEGAL_ADDRESS
    assert node.validated == []


async def test_a_required_whitelist_without_the_address_refuses_it() -> None:
    c, store, _node = cases()
    assert await c.request_withdrawal(spec(whitelist_required=True), ALICE, "fake1out",
                                      MINIMUM, None, NOW) is Refusal.NOT_WHITELISTED
    store.whitelists.add((ALICE, "LTC", "fake1out"))
    assert isinstance(await c.request_withdrawal(spec(whitelist_required=True), ALICE,
                                                 "fake1out", MINIMUM, None, NOW), int)


async def test_a_kept_whitelist_binds_even_when_the_wallet_does_not_require_one() -> None:
    c, store, _node = cases()
    store.whitelists.add((ALICE, "LTC", "fake1listed"))
    assert await c.request_withdrawal(spec(), ALICE, "fake1other", MINIMUM, None,
                                      NOW) is Refusal.NOT_WHITELISTED


async def test_the_balance_must_hold_amount_plus_fee_before_the_node_is_asked() -> None:
    c, store, node = cases("0.1")
    assert await c.request_withdrawal(spec(), ALICE, "fake1out", to_units("0.1"), None,
                                      NOW) is Refusal.INSUFFICIENT
    assert node.validated == [] and store.held(ALICE, "LTC") == (to_units("0.1"), 0)


async def test_an_address_the_node_refuses_is_illegal_and_nothing_is_locked() -> None:
    c, store, node = cases()
    assert await c.request_withdrawal(spec(), ALICE, "elsewhere1", MINIMUM, None,
                                      NOW) is Refusal.ILLEGAL_ADDRESS
    assert node.validated == ["elsewhere1"] and store.withdrawals == {}


async def test_a_repeated_client_id_returns_the_same_withdrawal_or_refuses_other_content(
) -> None:
    c, store, _node = cases()
    first = await c.request_withdrawal(spec(), ALICE, "fake1out", MINIMUM, "w-1", NOW)
    again = await c.request_withdrawal(spec(), ALICE, "fake1out", MINIMUM, "w-1", NOW)
    other = await c.request_withdrawal(spec(), ALICE, "fake1out", MINIMUM * 2, "w-1", NOW)
    assert isinstance(first, int) and again == first
    assert other is Refusal.CLIENT_ID_USED
    assert len(store.withdrawals) == 1


async def test_a_withdrawal_request_with_the_watcher_away_is_unavailable_and_locks_nothing(
) -> None:
    c, store, node = cases()
    node.away = True
    with pytest.raises(WatcherUnavailable):
        await c.request_withdrawal(spec(), ALICE, "fake1out", MINIMUM, None, NOW)
    assert store.withdrawals == {} and store.held(ALICE, "LTC") == (to_units("1"), 0)


async def test_history_queries_read_the_account_s_own_rows_newest_first() -> None:
    c, _store, _node = cases()
    older = await c.request_withdrawal(spec(), ALICE, "fake1out", MINIMUM, None, NOW)
    newer = await c.request_withdrawal(spec(), ALICE, "fake1out", MINIMUM, None, NOW + 1)
    rows = await c.withdraw_history(ALICE, WithdrawQuery(None, None, None, None, 0, 2**62,
                                                         0, 10))
    assert [w.id for w in rows] == [newer, older]
    assert await c.withdraw_history(ALICE + 1, WithdrawQuery(None, None, None, None, 0,
                                                             2**62, 0, 10)) == []
    assert await c.deposit_history(ALICE, DepositQuery(None, None, 0, 2**62, 0, 10,
                                                       None)) == []


# --------------------------------------------------------------------------- admin
async def pending(c: CustodyCases) -> int:
    wid = await c.request_withdrawal(spec(), ALICE, "fake1out", THRESHOLD + 1, None, NOW)
    assert isinstance(wid, int)
    return wid


async def test_an_approval_moves_pending_to_approved_and_is_audited_with_both_states() -> None:
    c, store, _node = cases()
    wid = await pending(c)
    before = withdrawal_doc(store.withdrawals[wid])
    w = await c.approve(ADMIN, wid, NOW + 5)
    assert w.status == WithdrawalStatus.APPROVED
    [record] = store.audit_log
    assert (record.actor, record.role, record.action, record.target, record.ip) == (
        "admin:ops", str(Role.SUPER_ADMIN), "withdrawal.approve", f"withdrawal:{wid}",
        "10.0.0.1")
    assert record.before == before and record.after == withdrawal_doc(w)


async def test_approving_twice_is_not_movable_and_audits_once() -> None:
    c, store, _node = cases()
    wid = await pending(c)
    await c.approve(ADMIN, wid, NOW)
    with pytest.raises(WithdrawalNotMovable) as caught:
        await c.approve(ADMIN, wid, NOW)
    assert caught.value.status == WithdrawalStatus.APPROVED
    assert len(store.audit_log) == 1


async def test_an_unknown_withdrawal_is_not_found_and_nothing_is_audited() -> None:
    c, store, _node = cases()
    with pytest.raises(NotFound):
        await c.approve(ADMIN, 999, NOW)
    with pytest.raises(NotFound):
        await c.reject(ADMIN, 999, "no", NOW)
    assert store.audit_log == []


async def test_a_rejection_releases_the_hold_and_is_audited() -> None:
    c, store, _node = cases("1")
    wid = await pending(c)
    w = await c.reject(ADMIN, wid, "suspicious", NOW)
    assert (w.status, w.info) == (WithdrawalStatus.REJECTED, "suspicious")
    assert store.held(ALICE, "LTC") == (to_units("1"), 0)
    assert [r.action for r in store.audit_log] == ["withdrawal.reject"]


async def test_a_whitelist_entry_is_added_once_audited_once_and_removed_audited_once(
) -> None:
    c, store, _node = cases()
    entry = {"account": ALICE, "asset": "LTC", "address": "fake1mine"}
    assert await c.whitelist_add(ADMIN, spec(), ALICE, "fake1mine", entry) is True
    assert await c.whitelist_add(ADMIN, spec(), ALICE, "fake1mine", entry) is False
    assert await c.whitelist_remove(ADMIN, ALICE, "LTC", "fake1mine", entry) is True
    assert await c.whitelist_remove(ADMIN, ALICE, "LTC", "fake1mine", entry) is False
    assert [(r.action, r.target, r.before, r.after) for r in store.audit_log] == [
        ("withdrawal.whitelist.add", f"account:{ALICE}", None, entry),
        ("withdrawal.whitelist.remove", f"account:{ALICE}", entry, None),
    ]


async def test_a_whitelist_address_the_node_refuses_is_illegal_and_not_listed() -> None:
    c, store, _node = cases()
    assert await c.whitelist_add(ADMIN, spec(), ALICE, "elsewhere1", {}) is \
        Refusal.ILLEGAL_ADDRESS
    assert store.whitelists == set() and store.audit_log == []


async def test_a_whitelist_entry_for_an_unknown_account_is_not_found() -> None:
    c, store, _node = cases()
    with pytest.raises(NotFound):
        await c.whitelist_add(ADMIN, spec(), 404, "fake1mine", {})
    assert store.audit_log == []
