"""The wallet watcher's services over in-memory ports (tests/support/memory_custody.py) and
the fake node (tests/support/fake_chain.py): a deposit is credited once and announced once
per state, a withdrawal is sent once even across a crash, a store that does not answer
leaves nothing half-done, and the gateway's requests are answered through the custody use
case. The same behaviour against PostgreSQL, NATS and real nodes is
tests/integration/test_wallets.py."""

from __future__ import annotations

import json

import pytest
from tests.support.fake_chain import FakeChain
from tests.support.memory_custody import MemoryCustodyStore, MemoryWalletBus

from tradeplane.domain.custody import DepositStatus, WalletSpec, WithdrawalStatus, wallet_from_spec
from tradeplane.domain.errors import Unavailable
from tradeplane.domain.money import to_units
from tradeplane.usecases.custody import CustodyCases
from tradeplane.wallets.chain import ChainUnavailable
from tradeplane.wallets.reconcile import reconcile
from tradeplane.wallets.service import ChainAddresses, Custody
from tradeplane.wallets.settings import WalletSettings, load_spec

ALICE = 3
CONFIRMATIONS = 2


def spec() -> WalletSpec:
    return wallet_from_spec("ltc-fake", {
        "chain": "litecoin", "network": "regtest", "asset": "LTC",
        "rpc": {"url": "http://127.0.0.1:1/wallet/x"}, "confirmations": CONFIRMATIONS,
        "withdrawals": {"fee": "0.001", "min": "0.01", "approvalThreshold": "5"},
    })


def custody() -> tuple[Custody, MemoryCustodyStore, MemoryWalletBus, FakeChain]:
    store = MemoryCustodyStore()
    store.accounts.add(ALICE)
    bus = MemoryWalletBus()
    chain = FakeChain()
    return Custody(spec(), chain, store, bus, WalletSettings()), store, bus, chain


async def deposited(c: Custody, chain: FakeChain, amount: int) -> str:
    address = await c.cases.deposit_address(c.spec, ALICE)
    txid = chain.pay(address, amount)
    chain.mine(CONFIRMATIONS)
    await c.watcher.step()
    return txid


# --------------------------------------------------------------------------- deposits
async def test_a_confirmed_deposit_is_credited_once_however_often_it_is_scanned() -> None:
    c, store, _bus, chain = custody()
    await deposited(c, chain, to_units("1.5"))
    for _ in range(3):
        chain.mine()
        await c.watcher.step()
    [dep] = store.deposits.values()
    assert dep.status == DepositStatus.CREDITED
    assert store.credits == {dep.id: 1}
    assert store.held(ALICE, "LTC") == (to_units("1.5"), 0)


async def test_each_deposit_state_is_announced_once_with_its_message_id() -> None:
    c, store, bus, chain = custody()
    address = await c.cases.deposit_address(c.spec, ALICE)
    txid = chain.pay(address, to_units("1"))
    await c.watcher.step()  # seen in the mempool: PENDING
    chain.mine(CONFIRMATIONS)
    await c.watcher.step()  # CONFIRMED, then CREDITED in the same step
    await c.watcher.step()
    ids = [m for _w, _d, m in bus.events]
    assert ids[0] == f"litecoin:{txid}:0:PENDING"
    assert ids[-1] == f"litecoin:{txid}:0:CREDITED"
    assert len(ids) == len(set(ids))
    last = json.loads(bus.events[-1][1])
    assert (last["e"], last["account"], last["units"], last["apiStatus"]) == (
        "deposit", ALICE, to_units("1"), 1)
    [dep] = store.deposits.values()
    assert store.deposits_published[dep.id] == DepositStatus.CREDITED


async def test_events_the_bus_did_not_take_stay_in_the_outbox_until_it_does() -> None:
    c, _store, bus, chain = custody()
    bus.down = True
    txid = await deposited(c, chain, to_units("1"))  # the step logs, does not raise
    assert bus.events == []
    bus.down = False
    await c.watcher.announce()
    assert [m for _w, _d, m in bus.events] == [f"litecoin:{txid}:0:CREDITED"]


async def test_a_scan_with_the_store_down_is_unavailable_and_the_next_one_catches_up() -> None:
    c, store, _bus, chain = custody()
    address = await c.cases.deposit_address(c.spec, ALICE)
    chain.pay(address, to_units("1"))
    chain.mine(CONFIRMATIONS)
    store.down = True
    with pytest.raises(Unavailable):
        await c.watcher.step()
    store.down = False
    assert store.cursors == {} and store.deposits == {}
    await c.watcher.step()
    assert [d.status for d in store.deposits.values()] == [DepositStatus.CREDITED]


async def test_a_wallet_that_lost_track_of_a_credited_deposit_rescans_and_opens_no_adjustment(
) -> None:
    # Found by `tradeplane chaos` (chain-node-down): litecoind killed -9 came back with
    # its wallet reporting confirmed deposits as unconfirmed though their blocks were on
    # the main chain; the watcher took it for a reorganisation after the credit (an
    # adjustment each, a false alarm) and the hot wallet could not spend them.
    c, store, _bus, chain = custody()
    txid = await deposited(c, chain, to_units("1"))
    [dep] = store.deposits.values()
    assert dep.status == DepositStatus.CREDITED and dep.credited_hash is not None
    chain.lose_track(txid)
    await c.watcher.step()
    assert chain.rescans == [dep.credited_hash]
    assert store.adjustments == []
    await c.watcher.step()  # on the rescanned wallet
    [after] = store.deposits.values()
    assert (after.status, after.block_hash, after.credited_hash) == (
        DepositStatus.CREDITED, dep.credited_hash, dep.credited_hash)
    assert chain.rescans == [dep.credited_hash] and store.adjustments == []
    assert store.held(ALICE, "LTC") == (to_units("1"), 0)


# --------------------------------------------------------------------------- withdrawals
async def funded_withdrawal(c: Custody, store: MemoryCustodyStore, chain: FakeChain,
                            amount: str) -> int:
    await deposited(c, chain, to_units("10"))
    chain.fund(to_units("10"))
    chain.mine(CONFIRMATIONS)
    wid = await c.cases.request_withdrawal(c.spec, ALICE, "fake1out", to_units(amount),
                                           None, 0)
    assert isinstance(wid, int)
    return wid


async def test_an_approved_withdrawal_is_sent_once_and_completes_at_the_confirmations(
) -> None:
    c, store, _bus, chain = custody()
    wid = await funded_withdrawal(c, store, chain, "1")
    await c.processor.step()
    await c.processor.step()
    assert len(chain.sends) == 1
    assert store.withdrawals[wid].status == WithdrawalStatus.ON_CHAIN
    chain.mine(CONFIRMATIONS)
    await c.processor.step()
    w = store.withdrawals[wid]
    assert (w.status, w.txid) == (WithdrawalStatus.COMPLETED, chain.sends[0])
    assert store.held(ALICE, "LTC") == (to_units("10") - to_units("1") - to_units("0.001"), 0)


async def test_a_send_whose_answer_was_lost_is_found_by_its_intent_not_sent_again() -> None:
    c, store, _bus, chain = custody()
    wid = await funded_withdrawal(c, store, chain, "1")
    chain.fail_next_send(ChainUnavailable("answer lost"), after_sending=True)
    await c.processor.step()
    assert store.withdrawals[wid].status == WithdrawalStatus.PROCESSING
    await c.processor.step()
    assert len(chain.sends) == 1
    assert store.withdrawals[wid].status == WithdrawalStatus.ON_CHAIN


async def test_a_send_the_node_lost_from_its_mempool_is_handed_again_and_completes_once(
) -> None:
    # Found by `tradeplane chaos` (chain-node-down): litecoind killed just after two
    # sends, restarted; its wallet resubmitted them before it had the blocks holding
    # their inputs, so they stayed in its wallet only: ON_CHAIN for good, never mined.
    c, store, _bus, chain = custody()
    wid = await funded_withdrawal(c, store, chain, "1")
    await c.processor.step()
    [txid] = chain.sends
    chain.forget(txid)
    chain.mine(CONFIRMATIONS)  # without it
    await c.processor.step()
    assert chain.rebroadcasts == [txid] and txid in chain.mempool
    assert store.withdrawals[wid].status == WithdrawalStatus.ON_CHAIN
    await c.processor.step()  # in the mempool now: not handed again
    assert chain.rebroadcasts == [txid]
    chain.mine(CONFIRMATIONS)
    await c.processor.step()
    w = store.withdrawals[wid]
    assert (w.status, w.txid, chain.sends) == (WithdrawalStatus.COMPLETED, txid, [txid])


async def test_a_withdrawal_above_the_threshold_is_not_sent_before_its_approval() -> None:
    c, store, _bus, chain = custody()
    wid = await funded_withdrawal(c, store, chain, "5.5")
    await c.processor.step()
    assert chain.sends == [] and store.withdrawals[wid].status == WithdrawalStatus.PENDING


async def test_reconciliation_over_the_ports_balances_chain_and_ledger() -> None:
    c, store, _bus, chain = custody()
    await deposited(c, chain, to_units("2"))
    r = await reconcile(c.spec, chain, store)
    assert (r.chain_balance, r.ledger_total, r.difference, r.ok) == (
        to_units("2"), to_units("2"), 0, True)
    assert store.reconciliations["ltc-fake"]["ok"] is True


# --------------------------------------------------------------------------- requests
async def test_the_watcher_answers_address_requests_with_the_address_it_stored() -> None:
    c, store, bus, _chain = custody()
    await c.serve()
    assert bus.stream_ready
    answer = json.loads(await bus.request("ltc-fake", "address",
                                          json.dumps({"account": ALICE}).encode()))
    assert answer == {"address": store.addresses[("ltc-fake", ALICE)]}
    again = json.loads(await bus.request("ltc-fake", "address",
                                         json.dumps({"account": ALICE}).encode()))
    assert again == answer


async def test_the_watcher_answers_errors_for_bad_requests_unknown_accounts_and_a_dead_node(
) -> None:
    c, _store, bus, chain = custody()
    await c.serve()
    bad = json.loads(await bus.request("ltc-fake", "address", b"{}"))
    unknown = json.loads(await bus.request("ltc-fake", "address", b'{"account": 99}'))
    chain.unavailable = True
    dead = json.loads(await bus.request("ltc-fake", "validate", b'{"address": "fake1x"}'))
    assert bad == {"error": "bad request"}
    assert "99" in unknown["error"]
    assert "down" in dead["error"]


async def test_the_watcher_validates_addresses_on_its_chain() -> None:
    c, _store, bus, _chain = custody()
    await c.serve()
    ok = json.loads(await bus.request("ltc-fake", "validate", b'{"address": "fake1x"}'))
    no = json.loads(await bus.request("ltc-fake", "validate", b'{"address": "bc1x"}'))
    assert (ok, no) == ({"valid": True}, {"valid": False})


async def test_the_node_is_the_watcher_s_address_source() -> None:
    store = MemoryCustodyStore(accounts={ALICE})
    chain = FakeChain()
    cases = CustodyCases(store, ChainAddresses(chain))
    address = await cases.deposit_address(spec(), ALICE)
    assert address == chain.addresses[ALICE]


# --------------------------------------------------------------------------- settings
async def test_the_spec_is_read_from_the_store_when_no_file_is_configured() -> None:
    store = MemoryCustodyStore()
    await store.upsert_wallet(spec())
    assert await load_spec(store, "ltc-fake", WalletSettings()) == spec()
