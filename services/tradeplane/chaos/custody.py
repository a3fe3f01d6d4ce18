"""Custody under ``tradeplane chaos``: two regtest litecoind, the network (the payer's
wallet, which mines and pays deposits) and the exchange's node (its hot wallet, which the
wallet watcher uses), peers on the loopback; the deposits and withdrawals of the load,
the chain reorganisation with a double spend, and the custody check.

Two nodes, because a node killed with -9 forgets the blocks and wallet records it had not
flushed: alone, it would come back on a chain cut short that no real network has; with
a peer it gets the chain again, and a send it made before dying is on the network even
if its own wallet lost the record (what a second send would then duplicate).

Litecoin only: a Monero regtest chain takes minutes to start (80 blocks) and its received
outputs unlock only after 10 blocks, too slow for a short schedule.

- the load (:class:`ChainLoad`, a thread of its own): the payer pays the traders'
  deposit addresses; the traders request withdrawals through the API (paid to the
  payer); a block every BLOCK_S;
- chain-reorg (:meth:`ChainLoad.reorg`): a deposit mined in a block the watcher has seen,
  that block invalidated on the network, the deposit spent again in the first block of
  a longer branch (a double spend by a miner), which the exchange's node follows;
- chain-node-down: the exchange's litecoind killed and started again (``run.py``, with
  :class:`~tradeplane.platform.chains.LitecoindProcess`);
- the check (:meth:`ChainLoad.check`): blocks mined until the watcher has nothing left to
  do, then :func:`~tradeplane.chaos.compose.check_custody` against what the payer paid
  and what the hot wallet sent, as the node tells.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import httpx
from pydantic import SecretStr

from tradeplane.chaos import compose
from tradeplane.chaos.load import Acked, SignedHttp, Trader
from tradeplane.chaos.report import say
from tradeplane.domain.custody import WalletSpec
from tradeplane.domain.errors import Unavailable
from tradeplane.domain.money import fmt_units, to_units
from tradeplane.platform.chains import PAYER_FEE_RATE, ChainNodeError, LitecoinNode
from tradeplane.platform.supervisor import SupervisorError
from tradeplane.wallets.service import connect_chain
from tradeplane.wallets.settings import NodeLogin

#: The exchange's wallet on the node, and the watcher process that serves it.
WALLET = "ltc-chaos"
PROCESS = f"wallet-{WALLET}"
#: Confirmations before a deposit is credited and a withdrawal completed.
CONFIRMATIONS = 2
#: Its spec (``rpc`` added by :func:`wallet_doc`); no withdrawal waits for an admin.
SPEC: dict[str, Any] = {
    "chain": "litecoin", "network": "regtest", "asset": "LTC",
    "confirmations": CONFIRMATIONS,
    "withdrawals": {"fee": "0.001", "min": "0.002", "approvalThreshold": "1000"},
}
#: The watcher scans and sends often: a short schedule sees many deposits and sends.
WATCHER_ENV = {"TRADEPLANE_WALLET_SCAN_INTERVAL_S": "0.5",
               "TRADEPLANE_WALLET_WITHDRAW_INTERVAL_S": "0.5",
               "TRADEPLANE_WALLET_RECONCILE_INTERVAL_S": "30"}
#: Each trader's first deposit (LTC), before the load: what its withdrawals spend.
FUNDING = "2"
DEPOSITS = ("0.1", "0.2", "0.5")
WITHDRAWAL = "0.01"
#: The recovery probe's deposit, and chain-reorg's (spent again elsewhere).
PROBE_DEPOSIT = "0.05"
REORG_DEPOSIT = "0.3"
#: What the double spend pays the network: above the replaced transaction and its
#: descendants' fees together (BIP 125).
DOUBLE_SPEND_FEE = Decimal("0.01")
#: Seconds between two blocks the load mines, and between two of its steps.
BLOCK_S = 1.0
STEP_S = 0.25
#: How long the watcher has to finish its work once the load is paused.
SETTLE_S = 60.0
#: How long it has to see chain-reorg's deposit in its block.
SEEN_S = 15.0


def wallet_doc(node: LitecoinNode) -> dict[str, Any]:
    """The wallet's spec on ``node``'s hot wallet."""
    return {**SPEC, "rpc": {"url": f"{node.url}/wallet/{node.wallet}"}}


def watcher_env(node: LitecoinNode) -> dict[str, str]:
    """The watcher's node login (environment, never argv) and its intervals."""
    return {"TRADEPLANE_CHAIN_RPC_USERNAME": node.user,
            "TRADEPLANE_CHAIN_RPC_PASSWORD": node.password, **WATCHER_ENV}


class ChainLoad:
    """Deposits, withdrawals and blocks, in a thread until :meth:`stop`; :meth:`pause`
    and :meth:`resume` hold it (with the order load) while the stores are checked.

    A withdrawal counts as acknowledged when the gateway answered 200 with its id. A
    deposit owes nothing until the chain says so: the check asks the payer's wallet what
    it paid (a payment whose answer was lost while the node died counts too).

    ``network`` is the node of the payer (which mines), used by the load's thread through
    a copy of its own; the other methods take the nodes to use from their caller."""

    def __init__(self, base: str, network: LitecoinNode, traders: Sequence[Trader],
                 seed: int, dsn: str) -> None:
        self.base = base
        self.dsn = dsn
        self.seed = seed
        self.probe = traders[0]
        self.traders = list(traders[1:])
        self._node = network.copy()  # this thread's connections
        self._apis = [SignedHttp(base, t, timeout=10.0) for t in self.traders]
        self.addresses: dict[int, str] = {}
        """Each trader's (and the probe's) deposit address."""
        self.payee = ""
        """Where withdrawals go: an address of the payer."""
        self.withdrawals = Acked()
        self.answers: Counter[str] = Counter()
        self.mining = threading.Lock()
        """Held while no other block may be mined (chain-reorg, the check)."""
        self.summary = ""
        """What the last check counted."""
        self._ids = itertools.count(1)
        self._block_at = time.monotonic()
        self._running = threading.Event()
        self._running.set()
        self._stopped = threading.Event()
        self._busy = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name="chaos-chain-load",
                                        daemon=True)

    # ------------------------------------------------------------------ set up
    def prepare(self, network: LitecoinNode, idle: Callable[[float], None]) -> None:
        """Every trader's deposit address, through the API (the gateway asks the watcher,
        which stores it before answering), and a first deposit of FUNDING to each,
        confirmed.

        Raises:
            SupervisorError: an address not issued within 60 s.
        """
        self.payee = str(network.rpc("getnewaddress", wallet=network.payer_wallet))
        deadline = time.monotonic() + 60
        for trader in (self.probe, *self.traders):
            api = SignedHttp(self.base, trader)
            try:
                last = ""
                while trader.account not in self.addresses:
                    try:
                        r = api.request("GET", "/sapi/v1/capital/deposit/address",
                                        coin="LTC")
                        if r.status_code == 200:
                            self.addresses[trader.account] = str(r.json()["address"])
                            break
                        last = f"{r.status_code} {r.text[:200]}"
                    except (httpx.HTTPError, ValueError, KeyError) as exc:
                        last = f"{type(exc).__name__}: {exc}"
                    if time.monotonic() >= deadline:
                        raise SupervisorError(f"no deposit address for account "
                                              f"{trader.account} within 60 s: {last}")
                    idle(0.2)
            finally:
                api.close()
        for trader in self.traders:
            network.pay(self.addresses[trader.account], to_units(FUNDING))
        network.mine(CONFIRMATIONS)

    def start(self) -> None:
        self._thread.start()

    def pause(self, timeout: float = 60.0) -> bool:
        """Stop placing new requests and payments and wait for the one in flight; False
        on timeout."""
        self._running.clear()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._busy:
                    return True
            time.sleep(0.02)
        return False

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stopped.set()
        self._running.set()
        if self._thread.is_alive():
            self._thread.join(60)

    # ------------------------------------------------------------------ the thread
    def _main(self) -> None:
        rng = random.Random(self.seed * 7919 + 17)
        try:
            while not self._stopped.is_set():
                with self._lock:
                    go = self._running.is_set()
                    self._busy = go
                if not go:
                    time.sleep(0.05)
                    continue
                try:
                    self._step(rng)
                except (ChainNodeError, httpx.HTTPError, ValueError, KeyError) as exc:
                    self.answers[f"chain {type(exc).__name__}"] += 1
                finally:
                    with self._lock:
                        self._busy = False
                time.sleep(STEP_S)
        finally:
            self._node.close()
            for api in self._apis:
                api.close()

    def _step(self, rng: random.Random) -> None:
        if rng.random() < 0.5:
            trader = rng.choice(self.traders)
            self._node.pay(self.addresses[trader.account], to_units(rng.choice(DEPOSITS)))
            self.answers["deposit paid"] += 1
        else:
            self._withdraw(rng.choice(self._apis))
        if time.monotonic() - self._block_at >= BLOCK_S and self.mining.acquire(
                blocking=False):
            try:
                self._node.mine(1)
            finally:
                self.mining.release()
            self._block_at = time.monotonic()

    def _withdraw(self, api: SignedHttp) -> int | None:
        """One withdrawal request; its id when acknowledged.

        Raises:
            httpx.HTTPError, ValueError, KeyError: no usable answer.
        """
        r = api.request("POST", "/sapi/v1/capital/withdraw/apply", coin="LTC",
                        address=self.payee, amount=WITHDRAWAL,
                        withdrawOrderId=f"chaos-{self.seed}-{next(self._ids)}")
        self.answers[f"withdraw {r.status_code}"] += 1
        if r.status_code != 200:
            return None
        wid = int(r.json()["id"])
        self.withdrawals.add(wid)
        return wid

    # ------------------------------------------------------------------ the faults
    def withdraw_now(self, count: int) -> list[int]:
        """``count`` withdrawals requested from the calling thread (chain-node-down's,
        just before the node goes); the acknowledged ids."""
        out: list[int] = []
        api = SignedHttp(self.base, self.traders[0], timeout=10.0)
        try:
            for _ in range(count):
                try:
                    wid = self._withdraw(api)
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    self.answers[f"withdraw {type(exc).__name__}"] += 1
                    continue
                if wid is not None:
                    out.append(wid)
        finally:
            api.close()
        return out

    def reorg(self, network: LitecoinNode, idle: Callable[[float], None]) -> list[str]:
        """A deposit paid and mined on the network; once the watcher has seen it in its
        block, that block is invalidated on the network (its transactions go back to the
        mempool), a block spending the deposit's inputs again (to the payer) mined in its
        place, and one more: a longer branch, which the exchange's node follows. The
        watcher must never credit the deposit, and credit the block's other deposits
        once each. Returns the problems met."""
        node = network
        address = self.addresses[self.probe.account]
        problems: list[str] = []
        with self.mining:  # the load mines nothing meanwhile
            txid = str(node.rpc("sendtoaddress", wallet=node.payer_wallet, address=address,
                                amount=REORG_DEPOSIT, fee_rate=PAYER_FEE_RATE))
            [block] = node.mine(1)
            deadline = time.monotonic() + SEEN_S
            while asyncio.run(compose.deposit_block(self.dsn, WALLET, txid)) != block:
                if time.monotonic() >= deadline:
                    problems.append(f"chain-reorg: the watcher did not see deposit {txid} "
                                    f"in block {block} within {SEEN_S:g} s")
                    break
                idle(0.05)
            node.invalidate(block)
            # Another address: the same one in the same second would make the very block
            # that was invalidated.
            other = str(node.rpc("getnewaddress", wallet=node.payer_wallet))
            try:
                spent = double_spend(node, txid, other)
                say(f"  block {block[:16]}… invalidated; deposit {txid[:16]}… spent again "
                     f"in block {spent[:16]}…")
            except ChainNodeError as exc:
                problems.append(f"chain-reorg: the double spend of {txid} was refused: {exc}")
                node.mine(1, to=other)
            node.mine(CONFIRMATIONS - 1, to=other)
        return problems

    def credited_again(self, network: LitecoinNode, idle: Callable[[float], None],
                       timeout: float) -> bool:
        """The recovery probe of a chain fault: a deposit paid to the probe's address
        (again and again while the node does not answer) and credited; False after
        ``timeout``."""
        deadline = time.monotonic() + timeout
        txid: str | None = None
        while time.monotonic() < deadline:
            try:
                if txid is None:
                    txid = network.pay(self.addresses[self.probe.account],
                                       to_units(PROBE_DEPOSIT))
                elif asyncio.run(compose.credited(self.dsn, WALLET, txid)):
                    return True
            except (ChainNodeError, Unavailable):
                pass
            idle(0.1)
        return False

    # ------------------------------------------------------------------ the check
    def check(self, network: LitecoinNode, exchange: LitecoinNode, spec: WalletSpec
              ) -> compose.Findings:
        """Mine until the watcher has nothing left to do (SETTLE_S at most), then check
        custody (:func:`~tradeplane.chaos.compose.check_custody`): the payments as the
        payer's wallet on the network sees them, the sends as the hot wallet does. Call
        it with the load paused, from one thread, with nodes of its own."""
        unsettled = self._settle(network, exchange)
        try:
            addresses = asyncio.run(compose.deposit_addresses(self.dsn, WALLET))
            payments = _payments(network, addresses)
            sends = _sends(exchange)
        except (ChainNodeError, Unavailable) as exc:
            return compose.Findings(failures=[f"custody: {exc}"])
        chain = connect_chain(spec, NodeLogin(spec.rpc_url, exchange.user,
                                              SecretStr(exchange.password)))

        async def checked() -> compose.Findings:
            try:
                return await compose.check_custody(self.dsn, spec, chain, payments, sends,
                                                   self.withdrawals.all())
            finally:
                await chain.close()

        try:
            found = asyncio.run(checked())
        except (ChainNodeError, Unavailable) as exc:
            return compose.Findings(failures=[f"custody: {exc}"])
        confirmed = sum(p.confirmations >= CONFIRMATIONS for p in payments)
        gone = sum(p.confirmations < 0 for p in payments)
        self.summary = (f"custody: {len(payments)} payments to deposit addresses "
                        f"({confirmed} confirmed, each to be credited once; {gone} spent "
                        f"again elsewhere, never to be); {len(self.withdrawals.all())} "
                        f"withdrawals acknowledged, {sum(map(len, sends.values()))} sends "
                        "of the hot wallet")
        if unsettled:
            found.failures.insert(0, unsettled)
        return found

    def _settle(self, network: LitecoinNode, exchange: LitecoinNode) -> str | None:
        """None once no deposit waits, no withdrawal is unfinished, both mempools are
        empty, the exchange's node is at the network's tip and the watcher has scanned
        it; blocks mined meanwhile. What is left after SETTLE_S otherwise."""
        deadline = time.monotonic() + SETTLE_S
        left = "nothing known yet"
        while True:
            try:
                _resubmit_payments(network)
                work = asyncio.run(compose.custody_work(self.dsn, WALLET))
                tip, seen = network.height(), exchange.height()
                mempool = (int(network.rpc("getmempoolinfo")["size"]),
                           int(exchange.rpc("getmempoolinfo")["size"]))
                left = (f"{work.deposits} deposits and {work.withdrawals} withdrawals "
                        f"unfinished, {mempool} transactions in the mempools (network, "
                        f"exchange), tip {tip}, the exchange's node at {seen}, scanned to "
                        f"{work.scanned}")
                busy = work.deposits or work.withdrawals or any(mempool)
                if not busy and work.scanned == seen == tip:
                    return None
                if busy:
                    with self.mining:
                        network.mine(1)
            except (ChainNodeError, Unavailable) as exc:
                left = str(exc)
            if time.monotonic() >= deadline:
                return f"custody not settled within {SETTLE_S:g} s: {left}"
            time.sleep(0.3)


def double_spend(node: LitecoinNode, txid: str, to: str) -> str:
    """Spend the inputs of the payer's ``txid`` (in the mempool) again, to the payer
    itself with a DOUBLE_SPEND_FEE fee, in a block mined to ``to`` (``generateblock``: a
    miner's double spend needs no mempool's consent); the block's hash.

    Raises:
        ChainNodeError: the node refused it.
    """
    wallet = node.payer_wallet
    decoded = node.rpc("decoderawtransaction",
                       node.rpc("gettransaction", txid, wallet=wallet)["hex"])
    inputs: list[dict[str, Any]] = []
    total = Decimal(0)
    for vin in decoded["vin"]:
        parent = node.rpc("decoderawtransaction",
                          node.rpc("gettransaction", vin["txid"], wallet=wallet)["hex"])
        total += Decimal(parent["vout"][vin["vout"]]["value"])
        inputs.append({"txid": vin["txid"], "vout": vin["vout"]})
    back = str(node.rpc("getnewaddress", wallet=wallet))
    amount = to_units(total) - to_units(DOUBLE_SPEND_FEE)
    raw = node.rpc("createrawtransaction", inputs, [{back: fmt_units(amount)}])
    signed = node.rpc("signrawtransactionwithwallet", raw, wallet=wallet)
    if not signed.get("complete"):
        raise ChainNodeError(f"the payer could not sign the double spend of {txid}: "
                             f"{signed.get('errors')}")
    return str(node.rpc("generateblock", to, [signed["hex"]])["hash"])


def _resubmit_payments(network: LitecoinNode) -> None:
    """The payer's unconfirmed payments that are in no mempool, handed to the network
    again, as a customer's wallet does sooner or later (Bitcoin Core's wallet leaves out
    a payment it made during a reorganisation, its lock time a block ahead of the chain
    it was rolled back to, and offers it again only 30 minutes or more later). What
    cannot be handed again (spent elsewhere) stays out."""
    wallet = network.payer_wallet
    pool = set(network.rpc("getrawmempool"))
    for t in network.rpc("listtransactions", "*", 1_000_000, 0, False, wallet=wallet):
        if t.get("category") == "send" and int(t["confirmations"]) == 0 \
                and t["txid"] not in pool:
            pool.add(t["txid"])
            with contextlib.suppress(ChainNodeError):
                network.rpc("sendrawtransaction",
                            network.rpc("gettransaction", t["txid"], wallet=wallet)["hex"])


def _payments(node: LitecoinNode, addresses: set[str]) -> list[compose.Payment]:
    """Every payment of the payer to one of ``addresses``, with its confirmations now."""
    txs = node.rpc("listtransactions", "*", 1_000_000, 0, False, wallet=node.payer_wallet)
    seen: dict[tuple[str, int], compose.Payment] = {}
    for t in txs:
        if t.get("category") == "send" and t.get("address") in addresses:
            key = (str(t["txid"]), int(t["vout"]))
            seen[key] = compose.Payment(key[0], key[1], str(t["address"]),
                                        to_units(-Decimal(t["amount"])),
                                        int(t["confirmations"]))
    return list(seen.values())


def _sends(node: LitecoinNode) -> dict[str, set[str]]:
    """The hot wallet's sends: their txids by comment (a withdrawal's intent,
    ``tpwd-...``; empty: a send whose record the wallet lost)."""
    txs = node.rpc("listtransactions", "*", 1_000_000, 0, False, wallet=node.wallet)
    out: dict[str, set[str]] = {}
    for t in txs:
        if t.get("category") == "send":
            out.setdefault(str(t.get("comment", "")), set()).add(str(t["txid"]))
    return out
