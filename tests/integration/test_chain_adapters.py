"""The chain adapters against real regtest nodes (tests/support/chains.py): litecoind for
the Bitcoin-family adapter, monerod + monero-wallet-rpc for Monero.

Every Litecoin test has a wallet of its own, every Monero test an account of its own in
the hot wallet, so that deposits and balances of one test never show up in another."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from tests.support.chains import (
    PAYER_FEE_RATE,
    ChainNodeError,
    LitecoinNode,
    MoneroNodes,
    find_binary,
)
from tests.support.harness import eventually

from tradeplane.adapters.chain_bitcoin import BitcoinRpc, BitcoinRpcConfig
from tradeplane.adapters.chain_monero import MoneroRpcConfig, MoneroWalletRpc
from tradeplane.platform.servers import free_port
from tradeplane.wallets.chain import (
    ChainAdapter,
    ChainError,
    ChainUnavailable,
    Incoming,
    InsufficientFunds,
    InvalidAddress,
)

pytestmark = pytest.mark.integration

COIN = 10**8
# Valid addresses of other networks (checksums intact): Litecoin mainnet (BIP 173 test
# vector re-encoded for "ltc"), Bitcoin regtest, Monero testnet.
LTC_MAINNET = "ltc1qw508d6qejxtdg4y5r3zarvary0c5xw7kgmn4n9"
BTC_REGTEST = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
XMR_TESTNET = ("9wviCeWe2D8XS82k2ovp5EUYLzBt9pYNW2LXUFsZiv8S3Mt21FZ5qQaAroko1enzw3eGr9qC7X1D7G"
               "eoo2RrAotYPwq9Gm8")


class RecordingTransport(httpx.AsyncBaseTransport):
    """Passes requests to the real node and remembers each JSON-RPC call."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.calls: list[tuple[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        doc = json.loads(request.content)
        self.calls.append((doc["method"], doc["params"]))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def params_of(self, method: str) -> list[Any]:
        return [params for m, params in self.calls if m == method]


def _protocol_check(adapter: ChainAdapter) -> ChainAdapter:
    return adapter  # mypy: both adapters implement the port


@pytest.fixture
async def ltc(litecoin_node: LitecoinNode) -> AsyncIterator[BitcoinRpc]:
    """The adapter on a fresh, empty wallet of the regtest node."""
    adapter = litecoin_node.adapter(wallet=litecoin_node.create_wallet())
    _protocol_check(adapter)
    yield adapter
    await adapter.close()


async def fund(ltc: BitcoinRpc, node: LitecoinNode, amount: int) -> None:
    """Pay ``amount`` to the adapter's wallet (a deposit address) and confirm it."""
    node.pay(await ltc.deposit_address(999, "LTC"), amount)
    node.mine(1)


def only(incoming: list[Incoming], txid: str) -> Incoming:
    [found] = [i for i in incoming if i.txid == txid]
    return found


# ======================================================================================
# Litecoin (Bitcoin Core's RPC)
# ======================================================================================


async def test_deposit_address_is_stable_and_labelled_per_account(
        ltc: BitcoinRpc, litecoin_node: LitecoinNode) -> None:
    first = await ltc.deposit_address(7, "LTC")
    assert await ltc.deposit_address(7, "LTC") == first
    other = await ltc.deposit_address(8, "LTC")
    assert other != first
    info = litecoin_node.rpc("getaddressinfo", first, wallet=ltc.cfg.wallet)
    assert info["ismine"] is True
    assert [label["name"] if isinstance(label, dict) else label
            for label in info["labels"]] == ["acct:7"]
    # The label in the node's wallet is the record: a new adapter finds the same address.
    again = BitcoinRpc(ltc.cfg)
    try:
        assert await again.deposit_address(7, "LTC") == first
    finally:
        await again.close()
    # Concurrent first requests for one account still give one address.
    racing = await asyncio.gather(*(ltc.deposit_address(9, "LTC") for _ in range(5)))
    assert len(set(racing)) == 1
    assert list(litecoin_node.rpc("getaddressesbylabel", "acct:9", wallet=ltc.cfg.wallet)) \
        == [racing[0]]
    with pytest.raises(ChainError, match="holds LTC, not BTC"):
        await ltc.deposit_address(7, "BTC")


async def test_payment_is_reported_unconfirmed_then_with_confirmations(
        ltc: BitcoinRpc, litecoin_node: LitecoinNode) -> None:
    address = await ltc.deposit_address(1, "LTC")
    # A receive address without an acct: label is not a deposit address.
    unlabelled = litecoin_node.rpc("getnewaddress", wallet=ltc.cfg.wallet)
    litecoin_node.pay(unlabelled, COIN)
    txid = litecoin_node.pay(address, 123_456_789)

    scan = await ltc.incoming_since(None, 6)
    assert [i.txid for i in scan.incoming] == [txid]
    pending = scan.incoming[0]
    assert (pending.address, pending.amount, pending.confirmations) == (address, 123_456_789, 0)
    assert pending.block_hash is None and pending.height is None
    tx = litecoin_node.rpc("getrawtransaction", txid, True)
    assert tx["vout"][pending.index]["scriptPubKey"]["addresses"] == [address]

    [block] = litecoin_node.mine(1)
    confirmed = only((await ltc.incoming_since(None, 6)).incoming, txid)
    assert confirmed.confirmations == 1
    assert (confirmed.block_hash, confirmed.height) == (block, litecoin_node.height())
    assert (confirmed.index, confirmed.amount) == (pending.index, 123_456_789)

    litecoin_node.mine(2)
    assert only((await ltc.incoming_since(None, 6)).incoming, txid).confirmations == 3


async def test_scan_with_a_cursor_starts_horizon_blocks_below_the_tip_not_at_genesis(
        litecoin_node: LitecoinNode) -> None:
    recorder = RecordingTransport()
    ltc = BitcoinRpc(litecoin_node.config(wallet=litecoin_node.create_wallet()),
                     transport=recorder)
    try:
        old = litecoin_node.pay(await ltc.deposit_address(1, "LTC"), COIN)
        litecoin_node.mine(10)
        first = await ltc.incoming_since(None, 3)
        assert [i.txid for i in first.incoming] == [old]
        tip = litecoin_node.height()
        assert first.cursor == litecoin_node.block_hash(tip - 3)

        new = litecoin_node.pay(await ltc.deposit_address(2, "LTC"), 2 * COIN)
        [block] = litecoin_node.mine(1)
        second = await ltc.incoming_since(first.cursor, 3)
        # The old payment (11 confirmations) is below the horizon: not scanned again.
        assert [(i.txid, i.confirmations, i.block_hash) for i in second.incoming] \
            == [(new, 1, block)]
        assert second.cursor == litecoin_node.block_hash(tip + 1 - 3)
        assert recorder.params_of("listsinceblock")[-1] == {
            "blockhash": first.cursor, "target_confirmations": 4, "include_removed": False}
    finally:
        await ltc.close()


async def test_reorg_orphans_the_block_and_the_payment_is_unconfirmed_again(
        ltc: BitcoinRpc, litecoin_node: LitecoinNode) -> None:
    start = await ltc.incoming_since(None, 6)
    txid = litecoin_node.pay(await ltc.deposit_address(1, "LTC"), 5 * COIN)
    [orphan] = litecoin_node.mine(1)
    seen = only((await ltc.incoming_since(start.cursor, 6)).incoming, txid)
    assert (seen.confirmations, seen.block_hash) == (1, orphan)
    assert await ltc.in_main_chain(orphan) is True

    litecoin_node.invalidate(orphan)
    try:
        assert await ltc.in_main_chain(orphan) is False
        back = only((await ltc.incoming_since(start.cursor, 6)).incoming, txid)
        assert (back.confirmations, back.block_hash, back.height) == (0, None, None)
        # A cursor on the orphaned block itself: the node lists from the fork point.
        from_orphan = only((await ltc.incoming_since(orphan, 6)).incoming, txid)
        assert from_orphan.confirmations == 0

        # The other branch grows longer and takes the payment into a block of its own.
        other = litecoin_node.rpc("getnewaddress", wallet=litecoin_node.payer_wallet)
        replacement = litecoin_node.mine(2, to=other)
    finally:
        litecoin_node.reconsider(orphan)
    assert litecoin_node.block_hash(litecoin_node.height()) == replacement[-1]
    assert await ltc.in_main_chain(orphan) is False
    again = only((await ltc.incoming_since(start.cursor, 6)).incoming, txid)
    assert (again.confirmations, again.block_hash) == (2, replacement[0])
    assert again.index == seen.index and again.amount == 5 * COIN


async def test_send_is_found_by_its_intent_and_reports_confirmations_and_fee(
        ltc: BitcoinRpc, litecoin_node: LitecoinNode) -> None:
    await fund(ltc, litecoin_node, 2 * COIN)
    assert await ltc.balance() == 2 * COIN
    intent = f"wd-{secrets.token_hex(8)}"
    assert await ltc.find_sent(intent) is None
    estimate = await ltc.estimate_fee(COIN // 2)

    txid = await ltc.send(litecoin_node.payer_address, COIN // 2, intent)

    assert await ltc.find_sent(intent) == txid
    pending = await ltc.outgoing(txid)
    assert pending is not None
    assert (pending.txid, pending.confirmations, pending.block_hash) == (txid, 0, None)
    # One input, two outputs at the fallback rate: the estimate is that, to a vbyte.
    assert abs(pending.fee - estimate) <= PAYER_FEE_RATE
    assert pending.fee > 0
    # Our own change is spendable at once (trusted): the balance drops by amount + fee.
    assert await ltc.balance() == 2 * COIN - COIN // 2 - pending.fee

    [block] = litecoin_node.mine(1)
    done = await ltc.outgoing(txid)
    assert done is not None
    assert (done.confirmations, done.block_hash, done.fee) == (1, block, pending.fee)
    received = litecoin_node.rpc("gettransaction", txid, wallet=litecoin_node.payer_wallet)
    assert received["amount"] * COIN == COIN // 2
    assert await ltc.outgoing("00" * 32) is None


async def test_a_send_spends_no_coin_below_the_wallet_s_confirmations(
        litecoin_node: LitecoinNode) -> None:
    # Found by `tradeplane chaos` (chain-reorg): a withdrawal spending the change of a
    # send in a block that was then reorganised away became an orphan no peer relayed;
    # one spending a deposit not credited yet would be invalid once it is spent again.
    ltc = litecoin_node.adapter(wallet=litecoin_node.create_wallet(), spend_min_conf=2)
    try:
        await fund(ltc, litecoin_node, COIN)  # one confirmation
        intent = f"wd-{secrets.token_hex(8)}"
        with pytest.raises(InsufficientFunds):
            await ltc.send(litecoin_node.payer_address, COIN // 10, intent)
        assert await ltc.find_sent(intent) is None
        litecoin_node.mine(1)  # two: spendable, and unlocked after the refusal
        txid = await ltc.send(litecoin_node.payer_address, COIN // 10, intent)
        assert await ltc.find_sent(intent) == txid
        # Its change (no confirmation) is not spent by the next send; nothing stays
        # locked once a send is done.
        with pytest.raises(InsufficientFunds):
            await ltc.send(litecoin_node.payer_address, COIN // 10, f"{intent}-2")
        assert await ltc.call("listlockunspent") == []
    finally:
        await ltc.close()


async def test_send_to_a_bad_address_or_beyond_the_balance_sends_nothing(
        ltc: BitcoinRpc, litecoin_node: LitecoinNode) -> None:
    await fund(ltc, litecoin_node, COIN)
    intent = f"wd-{secrets.token_hex(8)}"
    for bad in (LTC_MAINNET, BTC_REGTEST, "not-an-address"):
        with pytest.raises(InvalidAddress):
            await ltc.send(bad, COIN // 10, intent)
    with pytest.raises(InsufficientFunds):
        await ltc.send(litecoin_node.payer_address, 2 * COIN, intent)
    with pytest.raises(ChainError):
        await ltc.send(litecoin_node.payer_address, 0, intent)
    assert await ltc.find_sent(intent) is None
    assert await ltc.balance() == COIN


async def test_validate_address_accepts_only_this_chains_regtest_addresses(
        ltc: BitcoinRpc, litecoin_node: LitecoinNode) -> None:
    legacy = litecoin_node.rpc("getnewaddress", "", "legacy", wallet=litecoin_node.payer_wallet)
    assert await ltc.validate_address(await ltc.deposit_address(1, "LTC")) is True
    assert await ltc.validate_address(litecoin_node.payer_address) is True
    assert await ltc.validate_address(legacy) is True
    for other in (LTC_MAINNET, BTC_REGTEST, XMR_TESTNET, "", "rltc1qqqqqqq"):
        assert await ltc.validate_address(other) is False, other


async def test_fee_estimate_falls_back_to_the_configured_rate_without_node_estimate(
        litecoin_node: LitecoinNode) -> None:
    assert "feerate" not in litecoin_node.rpc("estimatesmartfee", 6)  # regtest: no data
    ltc = litecoin_node.adapter(fallback_fee_rate=25, typical_vsize=200)
    try:
        assert await ltc.estimate_fee(COIN) == 25 * 200
    finally:
        await ltc.close()


async def test_balance_counts_confirmed_receipts_only(
        ltc: BitcoinRpc, litecoin_node: LitecoinNode) -> None:
    assert await ltc.balance() == 0
    litecoin_node.pay(await ltc.deposit_address(1, "LTC"), 123_000_001)
    assert await ltc.balance() == 0  # unconfirmed receipt: untrusted
    litecoin_node.mine(1)
    assert await ltc.balance() == 123_000_001
    tip = await ltc.tip()
    assert (tip.height, tip.block_hash) == (
        litecoin_node.height(), litecoin_node.block_hash(litecoin_node.height()))


async def test_wrong_password_is_a_chain_error_not_unavailability(
        litecoin_node: LitecoinNode) -> None:
    cfg = litecoin_node.config()
    ltc = BitcoinRpc(BitcoinRpcConfig(url=cfg.url, username=cfg.username,
                                      password=SecretStr("wrong"), wallet=cfg.wallet))
    try:
        with pytest.raises(ChainError, match="credentials refused") as err:
            await ltc.tip()
        assert not isinstance(err.value, ChainUnavailable)
        assert "wrong" not in str(err.value)
    finally:
        await ltc.close()


async def test_unreachable_nodes_raise_chain_unavailable() -> None:
    closed = f"http://user:secret-pw@127.0.0.1:{free_port()}"
    ltc = BitcoinRpc(BitcoinRpcConfig(url=closed, username="u", password=SecretStr("p")))
    xmr = MoneroWalletRpc(MoneroRpcConfig(wallet_url=closed, daemon_url=closed))
    try:
        for call in (ltc.tip(), ltc.balance(), xmr.tip(), xmr.balance()):
            with pytest.raises(ChainUnavailable) as err:
                await call
            assert "secret-pw" not in str(err.value)
    finally:
        await ltc.close()
        await xmr.close()


# ======================================================================================
# Monero (monero-wallet-rpc + monerod): few tests, each mines, sends and waits for proofs
# ======================================================================================


@pytest.fixture
async def xmr(monero_nodes: MoneroNodes) -> AsyncIterator[tuple[MoneroWalletRpc,
                                                                RecordingTransport]]:
    """The adapter on a fresh account of the hot wallet, recording its RPC calls."""
    recorder = RecordingTransport()
    adapter = MoneroWalletRpc(monero_nodes.config(account_index=monero_nodes.create_account()),
                              transport=recorder)
    _protocol_check(adapter)
    yield adapter, recorder
    await adapter.close()


async def test_monero_deposit_is_labelled_confirmed_and_scanned_from_the_cursor(
        xmr: tuple[MoneroWalletRpc, RecordingTransport], monero_nodes: MoneroNodes) -> None:
    adapter, recorder = xmr
    index = adapter.cfg.account_index
    address = await adapter.deposit_address(5, "XMR")
    assert await adapter.deposit_address(5, "XMR") == address
    assert await adapter.deposit_address(6, "XMR") != address
    labels = {a["address"]: a["label"]
              for a in monero_nodes.hot("get_address", account_index=index)["addresses"]}
    assert labels[address] == "acct:5"
    again = MoneroWalletRpc(adapter.cfg)  # the label in the wallet file is the record
    try:
        assert await again.deposit_address(5, "XMR") == address
    finally:
        await again.close()

    assert await adapter.validate_address(address) is True
    assert await adapter.validate_address(monero_nodes.payer_address) is True
    for other in (XMR_TESTNET, LTC_MAINNET, "", address[:-1] + "x"):
        assert await adapter.validate_address(other) is False, other

    start = await adapter.incoming_since(None, 10)
    assert start.incoming == []
    assert start.cursor == str(monero_nodes.height() - 1)

    # 1.234567891234 XMR: not a whole number of units (10**4 piconero), credited floor.
    txid = monero_nodes.pay_piconero(address, 1_234_567_891_234)

    async def in_pool() -> Incoming | None:
        found = [i for i in (await adapter.incoming_since(start.cursor, 10)).incoming
                 if i.txid == txid]
        return found[0] if found else None

    pending = await eventually(in_pool)
    assert (pending.address, pending.amount, pending.confirmations) == (address, 123_456_789, 0)
    assert (pending.block_hash, pending.height) == (None, None)
    assert pending.index == int(monero_nodes.hot(
        "get_address_index", address=address)["index"]["minor"])

    monero_nodes.mine(1)
    top = monero_nodes.daemon("get_last_block_header")["block_header"]
    confirmed = only((await adapter.incoming_since(start.cursor, 10)).incoming, txid)
    assert (confirmed.confirmations, confirmed.block_hash, confirmed.height) == (
        1, top["hash"], top["height"])
    assert await adapter.in_main_chain(top["hash"]) is True
    assert await adapter.in_main_chain("00" * 32) is False

    monero_nodes.mine(9)  # received outputs unlock after 10 blocks
    scan = await adapter.incoming_since(start.cursor, 10)
    assert only(scan.incoming, txid).confirmations == 10
    assert recorder.params_of("get_transfers")[-1]["min_height"] == int(start.cursor) - 10
    # From the new cursor with a short horizon the deposit (10 deep) is not scanned again.
    later = await adapter.incoming_since(scan.cursor, 3)
    assert later.incoming == []
    assert recorder.params_of("get_transfers")[-1]["min_height"] == int(scan.cursor) - 3

    assert await adapter.balance() == 123_456_789
    assert await adapter.unlocked_balance() == 123_456_789


async def test_monero_send_is_found_by_its_intent_with_fee(
        xmr: tuple[MoneroWalletRpc, RecordingTransport], monero_nodes: MoneroNodes) -> None:
    adapter, _ = xmr
    monero_nodes.pay(await adapter.deposit_address(1, "XMR"), 2 * COIN)
    monero_nodes.mine(10)
    await eventually(lambda: _equals(adapter.unlocked_balance(), 2 * COIN), timeout=30)
    intent = f"wd-{secrets.token_hex(8)}"
    with pytest.raises(InvalidAddress):
        await adapter.send(XMR_TESTNET, COIN // 2, intent)
    with pytest.raises(InsufficientFunds):
        await adapter.send(monero_nodes.payer_address, 100 * COIN, intent)
    assert await adapter.find_sent(intent) is None

    estimate = await adapter.estimate_fee(COIN // 2)
    txid = await adapter.send(monero_nodes.payer_address, COIN // 2, intent)

    assert await adapter.find_sent(intent) == txid
    pending = await adapter.outgoing(txid)
    assert pending is not None
    assert (pending.confirmations, pending.block_hash) == (0, None)
    assert estimate / 2 <= pending.fee <= estimate * 2, (estimate, pending.fee)
    # Change is locked for 10 blocks but still ours: the balance drops by amount + fee.
    assert await adapter.balance() == 2 * COIN - COIN // 2 - pending.fee

    monero_nodes.mine(1)
    top = monero_nodes.daemon("get_last_block_header")["block_header"]
    done = await adapter.outgoing(txid)
    assert done is not None
    assert (done.confirmations, done.block_hash, done.fee) == (1, top["hash"], pending.fee)
    assert await adapter.outgoing("00" * 32) is None
    tip = await adapter.tip()
    assert (tip.height, tip.block_hash) == (top["height"], top["hash"])


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)


def test_a_missing_node_binary_fails_naming_the_package_to_install() -> None:
    with pytest.raises(ChainNodeError, match="install Debian's 'litecoind' package"):
        find_binary("litecoind-not-installed-here", "litecoind")
