"""The withdrawal processor: sends approved withdrawals exactly once and completes them
at the wallet's confirmation count. It runs inside the wallet-watcher process (the only
one that talks to the node).

Requests are made by the gateway (``usecases.custody.CustodyCases.request_withdrawal``:
the amount plus the fee locked in the same transaction; PENDING above the approval
threshold, else APPROVED).
Each pass here, in this order:

1. PROCESSING (a send may have been made before a crash): ``find_sent(intent)`` -> txid:
   ON_CHAIN; nothing: send again (same intent) — or FAILED, funds released, once the node
   has refused ``max_attempts`` sends;
2. APPROVED: hot-wallet limits first (``balance - amount < minBalance``: stays APPROVED,
   alert), and the fee estimate (above the charged fee: stays APPROVED); then the intent is
   written (APPROVED -> PROCESSING, committed) BEFORE ``send(address, amount, intent)``,
   and the txid recorded after (ON_CHAIN);
3. ON_CHAIN: ``outgoing(txid)``; at the wallet's confirmation count COMPLETED, the hold
   leaves the ledger in the same transaction: user locked -(amount + fee), external
   +(amount + network fee actually paid), fee account +(fee - network fee).

What a failed send means: the node unreachable (``ChainUnavailable``): unknown whether it
went out -> stays PROCESSING, settled by ``find_sent`` next pass; invalid address:
certainly not sent -> FAILED; the hot wallet cannot pay: not sent -> back to APPROVED
(alert); any other node error: not sent, counted, retried.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from enum import Enum

from prometheus_client import Counter, Gauge

from tradeplane.domain.custody import WalletSpec, WithdrawalStatus
from tradeplane.domain.money import fmt_units
from tradeplane.usecases.custody import FeeShortfall, WithdrawalRow
from tradeplane.wallets.chain import (
    ChainAdapter,
    ChainError,
    ChainUnavailable,
    InsufficientFunds,
    InvalidAddress,
)
from tradeplane.wallets.loop import run_passes
from tradeplane.wallets.ports import WalletStore

log = logging.getLogger("tradeplane.wallets.withdrawals")

WITHDRAWALS = Counter("tradeplane_wallet_withdrawals_total",
                      "Withdrawals reaching a state", ["wallet", "state"])
HOT_BALANCE = Gauge("tradeplane_wallet_hot_balance_units",
                    "The hot wallet's confirmed on-chain balance", ["wallet", "asset"])
HOT_LOW = Gauge("tradeplane_wallet_hot_wallet_low",
                "1 while approved withdrawals wait because the hot wallet would fall below "
                "its minBalance (or cannot pay)", ["wallet"])
HOT_HIGH = Gauge("tradeplane_wallet_hot_wallet_high",
                 "1 while the hot wallet holds more than its maxBalance", ["wallet"])
FEE_TOO_LOW = Gauge("tradeplane_wallet_withdraw_fee_below_network",
                    "1 while the network fee estimate exceeds the charged withdrawal fee "
                    "(approved withdrawals wait)", ["wallet"])
#: Seconds between two hands of one unconfirmed send to the node
#: (:meth:`WithdrawalProcessor._keep_on_network`).
REBROADCAST_EVERY_S = 10.0
PROCESSOR_ERRORS = Counter("tradeplane_wallet_withdraw_errors_total",
                           "Failed withdrawal processor passes", ["wallet"])


class Sent(Enum):
    YES = "yes"  # sent and recorded (ON_CHAIN)
    NO = "no"  # not sent (FAILED, or left PROCESSING for the next pass)
    SHORT = "short"  # the hot wallet could not pay it: back to APPROVED


class WithdrawalProcessor:
    """Sends and completes one wallet's withdrawals; see the module docstring."""

    def __init__(self, spec: WalletSpec, chain: ChainAdapter, store: WalletStore, *,
                 max_attempts: int = 5, clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self.chain = chain
        self.store = store
        self.max_attempts = max_attempts
        self._clock = clock
        self._told: set[tuple[int, str]] = set()  # (withdrawal, why it waits) already logged
        self._handed: dict[int, float] = {}  # withdrawal -> when its send was last handed

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def run(self, stop: asyncio.Event, interval_s: float,
                  after_pass: Callable[[], Awaitable[None]] | None = None) -> None:
        """Pass every ``interval_s`` until ``stop``, then ``after_pass()`` (the watcher
        announces the states it changed); failures are logged (one line when the node is
        away) and retried, less often while they keep failing."""

        async def one_pass() -> None:
            await self.step()
            if after_pass is not None:
                await after_pass()

        await run_passes(f"withdrawal pass of {self.spec.name}", one_pass, stop, interval_s,
                         log, PROCESSOR_ERRORS.labels(self.spec.name).inc)

    async def step(self) -> None:
        """One pass: recover PROCESSING, send APPROVED, follow ON_CHAIN."""
        name = self.spec.name
        for w in await self.store.withdrawals_in(name, [WithdrawalStatus.PROCESSING]):
            await self._recover(w)
        approved = await self.store.withdrawals_in(name, [WithdrawalStatus.APPROVED])
        if approved:
            await self._send_approved(approved)
        else:  # nothing waits (any more): no alert
            HOT_LOW.labels(name).set(0)
            FEE_TOO_LOW.labels(name).set(0)
        for w in await self.store.withdrawals_in(name, [WithdrawalStatus.ON_CHAIN]):
            await self._follow(w)

    # ------------------------------------------------------------------ sending
    async def _send_approved(self, approved: list[WithdrawalRow]) -> None:
        balance = await self.chain.balance()
        self._watch_balance(balance)
        estimate_cache: dict[int, int] = {}
        low = fee_low = False
        for w in approved:
            if balance - w.amount < self.spec.hot_min:
                low = True
                self._once(w.id, "low", logging.ERROR,
                           "wallet %s: withdrawal %d of %s %s waits: the hot wallet (%s) would "
                           "fall below its minBalance %s", self.spec.name, w.id,
                           fmt_units(w.amount), w.asset, fmt_units(balance),
                           fmt_units(self.spec.hot_min))
                continue
            if w.amount not in estimate_cache:
                estimate_cache[w.amount] = await self.chain.estimate_fee(w.amount)
            if estimate_cache[w.amount] > w.fee:
                fee_low = True
                self._once(w.id, "fee", logging.WARNING,
                           "wallet %s: withdrawal %d waits: network fee estimate %s above the "
                           "charged fee %s", self.spec.name, w.id,
                           fmt_units(estimate_cache[w.amount]), fmt_units(w.fee))
                continue
            started = await self.store.start_processing(w.id, self._now_ms())
            if started is None:  # rejected meanwhile
                continue
            sent = await self._send(started)
            if sent is Sent.YES:
                balance -= w.amount
            low = low or sent is Sent.SHORT
        HOT_LOW.labels(self.spec.name).set(1 if low else 0)
        FEE_TOO_LOW.labels(self.spec.name).set(1 if fee_low else 0)

    async def _send(self, w: WithdrawalRow) -> Sent:
        """Send a PROCESSING withdrawal (its intent is durable) and record its txid."""
        now = self._now_ms
        try:
            txid = await self.chain.send(w.address, w.amount, w.intent)
        except InvalidAddress as exc:
            await self._fail(w, f"invalid address: {exc}")
            return Sent.NO
        except InsufficientFunds as exc:
            await self.store.back_to_approved(w.id, f"hot wallet: {exc}", now())
            log.error("wallet %s: the hot wallet cannot pay withdrawal %d (%s %s): %s",
                      self.spec.name, w.id, fmt_units(w.amount), w.asset, exc)
            return Sent.SHORT
        except ChainUnavailable as exc:
            # Unknown whether the node made it: find_sent decides on the next pass.
            await self.store.note_attempt(w.id, f"node unavailable: {exc}", now(),
                                          count=False)
            log.warning("wallet %s: send of withdrawal %d unconfirmed (%s); will look it up",
                        self.spec.name, w.id, exc)
            return Sent.NO
        except ChainError as exc:
            await self.store.note_attempt(w.id, f"node refused: {exc}", now(),
                                          count=True)
            log.warning("wallet %s: node refused withdrawal %d: %s", self.spec.name, w.id, exc)
            return Sent.NO
        if await self.store.record_sent(w.id, txid, now()):
            WITHDRAWALS.labels(self.spec.name, WithdrawalStatus.ON_CHAIN.value).inc()
            log.info("wallet %s: withdrawal %d sent: %s %s to %s, tx %s", self.spec.name, w.id,
                     fmt_units(w.amount), w.asset, w.address, txid)
        return Sent.YES

    async def _recover(self, w: WithdrawalRow) -> None:
        """A PROCESSING withdrawal: did the send happen (before a crash, or unanswered)?"""
        txid = await self.chain.find_sent(w.intent)
        if txid is not None:
            if await self.store.record_sent(w.id, txid, self._now_ms()):
                WITHDRAWALS.labels(self.spec.name, WithdrawalStatus.ON_CHAIN.value).inc()
                log.info("wallet %s: withdrawal %d had been sent (tx %s); recorded",
                         self.spec.name, w.id, txid)
            return
        if w.attempts >= self.max_attempts:
            await self._fail(w, f"not sent after {w.attempts} attempts: {w.info}")
            return
        balance = await self.chain.balance()
        if balance - w.amount < self.spec.hot_min:
            await self.store.back_to_approved(w.id, "hot wallet below minBalance",
                                              self._now_ms())
            return
        if await self._send(w) is Sent.SHORT:
            HOT_LOW.labels(self.spec.name).set(1)

    async def _fail(self, w: WithdrawalRow, info: str) -> None:
        if await self.store.fail(w.id, info, self._now_ms()) is not None:
            WITHDRAWALS.labels(self.spec.name, WithdrawalStatus.FAILED.value).inc()
            log.error("wallet %s: withdrawal %d FAILED, %s %s released to account %d: %s",
                      self.spec.name, w.id, fmt_units(w.hold), w.asset, w.account, info)

    # ------------------------------------------------------------------ confirming
    async def _follow(self, w: WithdrawalRow) -> None:
        assert w.txid is not None
        out = await self.chain.outgoing(w.txid)
        if out is None:
            log.error("wallet %s: the node does not know withdrawal %d's tx %s any more; "
                      "it stays ON_CHAIN for an operator", self.spec.name, w.id, w.txid)
            return
        if out.confirmations == 0:
            await self._keep_on_network(w.id, w.txid)
        now = self._now_ms()
        if out.confirmations < self.spec.confirmations:
            await self.store.update_on_chain(w.id, max(out.confirmations, 0),
                                             out.fee, now)
            return
        try:
            done = await self.store.complete(w.id, out.confirmations, out.fee, now)
        except FeeShortfall:
            log.error("wallet %s: withdrawal %d paid a network fee of %s above its charged "
                      "fee %s and the fee account cannot cover it; it stays ON_CHAIN",
                      self.spec.name, w.id, fmt_units(out.fee), fmt_units(w.fee))
            return
        self._handed.pop(w.id, None)
        if done is not None:
            WITHDRAWALS.labels(self.spec.name, WithdrawalStatus.COMPLETED.value).inc()
            log.info("wallet %s: withdrawal %d completed (%d confirmations, network fee %s)",
                     self.spec.name, w.id, out.confirmations, fmt_units(out.fee))

    async def _keep_on_network(self, wid: int, txid: str) -> None:
        """An unconfirmed send must be on the network: a node killed before it relayed
        the send, then resubmitting it before it had caught up with the chain (its
        inputs missing), keeps it in its wallet only; a restarted node puts its
        wallet's sends back in its mempool without announcing them to its peers
        (Bitcoin Core's wallet does 30 minutes or more later). Either way nobody mines
        it meanwhile (the withdrawal ON_CHAIN, its funds locked, the hot wallet's change
        missing from reconciliation). Handed to the node again (at most every
        REBROADCAST_EVERY_S; :meth:`ChainAdapter.rebroadcast` says when it is due)
        until it confirms.

        Raises:
            ChainUnavailable: the node did not answer.
        """
        now = time.monotonic()
        if now - self._handed.get(wid, -math.inf) < REBROADCAST_EVERY_S:
            return
        try:
            if await self.chain.rebroadcast(txid):
                self._handed[wid] = now
                self._once(wid, "rebroadcast", logging.WARNING,
                           "wallet %s: withdrawal %d's tx %s still unconfirmed; handed to "
                           "the node again (every %g s until it confirms)",
                           self.spec.name, wid, txid, REBROADCAST_EVERY_S)
        except ChainUnavailable:
            raise
        except ChainError as exc:
            self._once(wid, "refused again", logging.ERROR,
                       "wallet %s: withdrawal %d's tx %s is in no mempool and the node "
                       "refuses it (retried every pass): %s", self.spec.name, wid, txid,
                       exc)

    def _once(self, wid: int, why: str, level: int, msg: str, *args: object) -> None:
        """Log why a withdrawal waits once, not on every pass (the gauge stays up)."""
        if (wid, why) not in self._told:
            self._told.add((wid, why))
            log.log(level, msg, *args)

    def _watch_balance(self, balance: int) -> None:
        HOT_BALANCE.labels(self.spec.name, self.spec.asset).set(balance)
        high = bool(self.spec.hot_max) and balance > self.spec.hot_max
        HOT_HIGH.labels(self.spec.name).set(1 if high else 0)
        if high:
            log.warning("wallet %s: hot wallet holds %s, above its maxBalance %s (sweeping "
                        "to cold storage is not automated)", self.spec.name,
                        fmt_units(balance), fmt_units(self.spec.hot_max))
