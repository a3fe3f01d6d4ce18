"""The deposit watcher: scans its wallet's chain, follows each deposit to its credit, and
announces every state change on the bus.

One step (every ``wallet_scan_interval_s``):

1. ``incoming_since(cursor, horizon)``: payments to our deposit addresses since the
   persisted cursor, everything within the last ``horizon`` blocks reported again;
2. each payment, and each followed deposit it did not report (asking the node whether its
   block is still on the main chain), goes through the state machine
   (``wallets/deposits.py``); all changes and the new cursor are written in ONE
   transaction, so a restart continues where the deposits are (never from genesis);
3. every CONFIRMED deposit is credited, each in one transaction with its move to
   CREDITED (exactly once: the state, and the credit's reference
   ``deposit:<chain>:<txid>:<idx>``);
4. state changes not yet announced are published on ``wallet.<NAME>`` (stream WALLETS,
   ``Nats-Msg-Id`` = ``<chain>:<txid>:<idx>:<state>``), then marked announced (an outbox:
   after a crash the latest state is announced, intermediate ones may be skipped).

A credited deposit whose block leaves the main chain is never debited silently: an ERROR
log, the counter ``tradeplane_wallet_reorg_after_credit_total`` and a row in
``wallet_adjustments`` (resolved when the payment is confirmed again on the new chain).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge

from tradeplane.domain.custody import (
    DEPOSIT_API_STATUS,
    DepositChange,
    DepositRow,
    DepositStatus,
    WalletSpec,
)
from tradeplane.domain.errors import Unavailable
from tradeplane.domain.money import fmt_units
from tradeplane.usecases.custody import WithdrawalRow
from tradeplane.wallets import deposits
from tradeplane.wallets.chain import ChainAdapter, Incoming
from tradeplane.wallets.loop import run_passes
from tradeplane.wallets.ports import WalletBus, WalletStore

log = logging.getLogger("tradeplane.wallets.watcher")

LAST_HEIGHT = Gauge("tradeplane_wallet_last_scanned_height",
                    "Chain tip height at the wallet's last completed scan", ["wallet"])
PENDING = Gauge("tradeplane_wallet_pending_deposits",
                "Deposits seen but not credited yet (PENDING or CONFIRMED)", ["wallet"])
CREDITED = Counter("tradeplane_wallet_deposits_credited_total",
                   "Deposits credited to the ledger", ["wallet"])
REORG_AFTER_CREDIT = Counter(
    "tradeplane_wallet_reorg_after_credit_total",
    "Credited deposits whose block left the main chain (each one an adjustment to review)",
    ["wallet"],
)
WALLET_LOST_TRACK = Counter(
    "tradeplane_wallet_lost_track_total",
    "Scans that found the node's wallet reporting credited deposits outside blocks still on "
    "the main chain (the wallet was made to rescan)", ["wallet"])
SCAN_ERRORS = Counter("tradeplane_wallet_scan_errors_total", "Failed scan steps", ["wallet"])


class DepositWatcher:
    """Follows one wallet's deposits; see the module docstring."""

    def __init__(self, spec: WalletSpec, chain: ChainAdapter, store: WalletStore,
                 bus: WalletBus | None, *, clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self.chain = chain
        self.store = store
        self.bus = bus
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        """Scan until ``stop``; a failing step (node or database away) is one warning
        line and retried, less often while it keeps failing (``wallets/loop.py``)."""
        await run_passes(f"deposit scan of {self.spec.name}", self.step, stop, interval_s,
                         log, SCAN_ERRORS.labels(self.spec.name).inc)

    async def step(self) -> None:
        """One scan, its credits and its announcements.

        Raises:
            ChainError, Unavailable: nothing half-done stays (the scan's
                writes are one transaction; each credit is one transaction).
        """
        spec = self.spec
        saved = await self.store.load_cursor(spec.name)
        tip = await self.chain.tip()
        scan = await self.chain.incoming_since(None if saved is None else saved[0],
                                               spec.horizon)
        owners = await self.store.address_owners(spec.name,
                                                 (i.address for i in scan.incoming))
        # A conflicted payment (negative confirmations) counts as not reported.
        seen = {(i.txid, i.index): i for i in scan.incoming
                if i.address in owners and i.confirmations >= 0}
        follow = await self.store.deposits_to_follow(
            spec.name, spec.chain, list(seen), tip.height - spec.horizon + 1)
        changes: list[DepositChange] = []
        if await self._lost_track(seen, follow):
            return  # scanned again next step, on a wallet that read the chain again
        for key, inc in seen.items():
            ch = deposits.observed(follow.get(key), inc, owners[inc.address],
                                   spec.confirmations)
            if ch is not None:
                changes.append(ch)
        for key, dep in follow.items():
            if key in seen:
                continue
            on_chain = dep.block_hash is not None and await self.chain.in_main_chain(
                dep.block_hash)
            ch = deposits.missing(dep, in_main_chain=on_chain)
            if ch is not None:
                changes.append(ch)
        opened = await self.store.apply_scan(spec, changes, scan.cursor, tip.height,
                                             self._now_ms())
        for adj in opened:
            REORG_AFTER_CREDIT.labels(spec.name).inc()
            log.error(
                "wallet %s: credited deposit left the main chain; adjustment %d recorded, "
                "no balance was changed: %s", spec.name, adj.id, adj.detail,
                extra={"fields": {"wallet": spec.name, "adjustment": adj.id,
                                  "deposit": adj.deposit_id, "account": adj.account,
                                  "asset": adj.asset, "amount_units": adj.amount}},
            )
        await self.announce()
        for dep in await self.store.deposits_due(spec.name):
            if await self.store.credit_deposit(dep.id, self._now_ms()):
                CREDITED.labels(spec.name).inc()
                log.info("wallet %s: deposit %s:%d credited %s %s to account %d", spec.name,
                         dep.txid, dep.index, fmt_units(dep.amount), dep.asset, dep.account)
        await self.announce()
        LAST_HEIGHT.labels(spec.name).set(tip.height)
        PENDING.labels(spec.name).set(await self.store.pending_deposits(spec.name))

    async def _lost_track(self, seen: dict[tuple[str, int], Incoming],
                          follow: dict[tuple[str, int], DepositRow]) -> bool:
        """True (the wallet rescanned) when the node's wallet reports a credited deposit
        outside the block it was credited in while that block is still on the main
        chain: a payment cannot be in two blocks of one chain, so it is the wallet that
        lost track (litecoind killed -9 came back with confirmed payments as
        unconfirmed), not a reorganisation: no adjustment, the wallet reads the chain
        again from the earliest such block. Found by ``tradeplane chaos``
        (chain-node-down).

        Raises:
            ChainError: the node could not answer or rescan.
        """
        lost: list[DepositRow] = []
        for key, inc in seen.items():
            dep = follow.get(key)
            if (dep is not None and dep.status == DepositStatus.CREDITED
                    and dep.credited_hash is not None and inc.block_hash != dep.credited_hash
                    and await self.chain.in_main_chain(dep.credited_hash)):
                lost.append(dep)
        if not lost:
            return False
        first = min(lost, key=lambda d: d.height if d.height is not None else -1)
        assert first.credited_hash is not None
        rescanned = await self.chain.rescan(first.credited_hash)
        WALLET_LOST_TRACK.labels(self.spec.name).inc()
        log.error(
            "wallet %s: the node's wallet reports %d credited deposits outside the blocks "
            "they were credited in, which are on the main chain (first %s:%d, block %s): "
            "the wallet lost track, not a reorganisation; %s", self.spec.name, len(lost),
            first.txid, first.index, first.credited_hash,
            "it read the chain again from there" if rescanned
            else "this adapter cannot rescan: rescan the wallet by hand")
        return rescanned

    async def announce(self) -> None:
        """Publish deposit and withdrawal states not yet announced (the outbox)."""
        if self.bus is None:
            return
        spec = self.spec
        try:
            for dep in await self.store.unpublished_deposits(spec.name):
                await self.bus.publish(
                    spec.name, deposit_event(spec, dep),
                    f"{dep.chain}:{dep.txid}:{dep.index}:{dep.status.value}")
                await self.store.mark_deposit_published(dep.id, dep.status)
            for w in await self.store.unpublished_withdrawals(spec.name):
                await self.bus.publish(spec.name, withdrawal_event(spec, w),
                                           f"wd:{spec.name}:{w.id}:{w.status.value}")
                await self.store.mark_withdrawal_published(w.id, w.status)
        except Unavailable as exc:  # announced later: the outbox keeps them
            log.warning("wallet %s: events not published yet: %s", spec.name, exc)


def deposit_event(spec: WalletSpec, dep: DepositRow) -> bytes:
    return json.dumps({
        "e": "deposit", "wallet": spec.name, "chain": dep.chain, "asset": dep.asset,
        "txid": dep.txid, "index": dep.index, "address": dep.address, "account": dep.account,
        "amount": fmt_units(dep.amount), "units": dep.amount, "status": dep.status.value,
        "apiStatus": DEPOSIT_API_STATUS.get(dep.status), "confirmations": dep.confirmations,
        "required": spec.confirmations, "blockHash": dep.block_hash, "height": dep.height,
        "ts": dep.updated_ms,
    }).encode()


def withdrawal_event(spec: WalletSpec, w: WithdrawalRow) -> bytes:
    return json.dumps({
        "e": "withdrawal", "wallet": spec.name, "chain": spec.chain, "asset": w.asset,
        "id": w.id, "account": w.account, "address": w.address,
        "amount": fmt_units(w.amount), "units": w.amount, "fee": fmt_units(w.fee),
        "status": w.status.value, "txid": w.txid, "confirmations": w.confirmations,
        "ts": w.updated_ms,
    }).encode()
