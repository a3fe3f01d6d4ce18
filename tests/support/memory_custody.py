"""Custody's ports in memory: :class:`MemoryCustodyStore` (``wallets.ports.WalletStore``,
hence ``usecases.custody.CustodyStore``), :class:`MemoryWalletBus`
(``wallets.ports.WalletBus``) and :class:`NodeStandIn` (``usecases.custody.AddressSource``),
for unit tests of the custody use cases, the deposit watcher and the withdrawal processor
without PostgreSQL or NATS (the real adapters stay in tests/integration/test_wallets.py).

The store keeps balances as ``(account, asset) -> [available, locked]`` and applies the
same moves as the SQL adapter: a request locks amount + fee, a rejection or failure
releases it, a completion takes it out; every move is conditional on the state it leaves.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tradeplane.domain.custody import (
    HOLDING,
    DepositChange,
    DepositRow,
    DepositStatus,
    WalletSpec,
    WithdrawalStatus,
    withdrawal_intent,
)
from tradeplane.domain.errors import Unavailable
from tradeplane.usecases.audit import AuditRecord
from tradeplane.usecases.custody import (
    DepositQuery,
    FeeShortfall,
    RequestResult,
    WatcherUnavailable,
    WithdrawalRow,
    WithdrawQuery,
)
from tradeplane.usecases.errors import NotFound


class StoreDown(Unavailable):
    """The in-memory store plays a database that does not answer."""


@dataclass(frozen=True, slots=True)
class MemAdjustment:
    id: int
    deposit_id: int
    account: int
    asset: str
    amount: int
    detail: str


@dataclass(frozen=True, slots=True)
class MemLedgerSide:
    ledger_total: int
    sent_unfinished: int
    uncredited: int


@dataclass
class MemoryCustodyStore:
    accounts: set[int] = field(default_factory=set)
    balance: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    specs: dict[str, WalletSpec] = field(default_factory=dict)
    addresses: dict[tuple[str, int], str] = field(default_factory=dict)
    cursors: dict[str, tuple[str, int]] = field(default_factory=dict)
    deposits: dict[int, DepositRow] = field(default_factory=dict)
    deposits_published: dict[int, DepositStatus] = field(default_factory=dict)
    adjustments: list[MemAdjustment] = field(default_factory=list)
    credits: dict[int, int] = field(default_factory=dict)  # deposit id -> times credited
    withdrawals: dict[int, WithdrawalRow] = field(default_factory=dict)
    withdrawals_published: dict[int, WithdrawalStatus] = field(default_factory=dict)
    whitelists: set[tuple[int, str, str]] = field(default_factory=set)
    reconciliations: dict[str, dict[str, Any]] = field(default_factory=dict)
    audit_log: list[AuditRecord] = field(default_factory=list)
    #: Set to make every call raise StoreDown (an Unavailable).
    down: bool = False
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # ------------------------------------------------------------------ test controls
    def fund(self, account: int, asset: str, units: int) -> None:
        self.accounts.add(account)
        self.balance.setdefault((account, asset), [0, 0])[0] += units

    def held(self, account: int, asset: str) -> tuple[int, int]:
        available, locked = self.balance.get((account, asset), [0, 0])
        return available, locked

    def _up(self) -> None:
        if self.down:
            raise StoreDown("memory store is down")

    def _move(self, account: int, asset: str, available: int, locked: int) -> None:
        b = self.balance.setdefault((account, asset), [0, 0])
        b[0] += available
        b[1] += locked

    # ------------------------------------------------------------------ audit
    async def audit(self, record: AuditRecord) -> None:
        self._up()
        self.audit_log.append(record)

    # ------------------------------------------------------------------ wallets
    async def wallets(self, asset: str | None = None) -> list[WalletSpec]:
        self._up()
        return [s for _n, s in sorted(self.specs.items()) if asset is None or s.asset == asset]

    async def upsert_wallet(self, spec: WalletSpec) -> None:
        self._up()
        self.specs[spec.name] = spec

    async def load_wallet(self, name: str) -> WalletSpec | None:
        self._up()
        return self.specs.get(name)

    # ------------------------------------------------------------------ accounts
    async def balances(self, account: int) -> list[tuple[str, int, int]]:
        self._up()
        return sorted((asset, b[0], b[1]) for (acct, asset), b in self.balance.items()
                      if acct == account)

    async def withdrawing(self, account: int) -> dict[str, int]:
        self._up()
        held: dict[str, int] = {}
        for w in self.withdrawals.values():
            if w.account == account and w.status in HOLDING:
                held[w.asset] = held.get(w.asset, 0) + w.hold
        return held

    # ------------------------------------------------------------------ addresses
    async def deposit_address(self, wallet: str, account: int) -> str | None:
        self._up()
        return self.addresses.get((wallet, account))

    async def save_deposit_address(self, wallet: str, account: int, address: str) -> str:
        self._up()
        if account not in self.accounts:
            raise NotFound(f"no account {account}")
        return self.addresses.setdefault((wallet, account), address)

    async def address_owners(self, wallet: str, addresses: Iterable[str]) -> dict[str, int]:
        self._up()
        wanted = set(addresses)
        return {a: acct for (w, acct), a in self.addresses.items()
                if w == wallet and a in wanted}

    # ------------------------------------------------------------------ deposits
    async def load_cursor(self, wallet: str) -> tuple[str, int] | None:
        self._up()
        return self.cursors.get(wallet)

    async def deposits_to_follow(
        self, wallet: str, chain: str, keys: Sequence[tuple[str, int]], min_height: int
    ) -> dict[tuple[str, int], DepositRow]:
        self._up()
        wanted = set(keys)
        return {d.key: d for d in self.deposits.values()
                if (d.chain == chain and d.key in wanted) or (d.wallet == wallet and (
                    d.status in (DepositStatus.PENDING, DepositStatus.CONFIRMED)
                    or (d.status == DepositStatus.CREDITED
                        and (d.height is None or d.height >= min_height))))}

    async def apply_scan(
        self, spec: WalletSpec, changes: Sequence[DepositChange], cursor: str, height: int,
        now_ms: int,
    ) -> list[MemAdjustment]:
        self._up()
        opened: list[MemAdjustment] = []
        for ch in changes:
            if ch.existing is None:
                if any(d.chain == spec.chain and d.key == ch.key
                       for d in self.deposits.values()):
                    continue
                did = next(self._ids)
                self.deposits[did] = DepositRow(
                    did, spec.name, spec.chain, ch.key[0], ch.key[1], ch.account, spec.asset,
                    ch.address, ch.amount, ch.status, ch.confirmations, ch.block_hash,
                    ch.height, None, now_ms, now_ms, None)
                continue
            d = self.deposits[ch.existing]
            if d.status != DepositStatus.CREDITED or ch.status == DepositStatus.CREDITED:
                self.deposits[d.id] = replace(
                    d, status=ch.status, confirmations=ch.confirmations,
                    block_hash=ch.block_hash, height=ch.height,
                    credited_hash=ch.credited_hash or d.credited_hash, updated_ms=now_ms)
            if ch.open_adjustment:
                adj = MemAdjustment(next(self._ids), d.id, ch.account, spec.asset, ch.amount,
                                    ch.open_adjustment)
                self.adjustments.append(adj)
                opened.append(adj)
        self.cursors[spec.name] = (cursor, height)
        return opened

    async def deposits_due(self, wallet: str) -> list[DepositRow]:
        self._up()
        return [d for _i, d in sorted(self.deposits.items())
                if d.wallet == wallet and d.status == DepositStatus.CONFIRMED]

    async def credit_deposit(self, deposit_id: int, now_ms: int) -> bool:
        self._up()
        d = self.deposits.get(deposit_id)
        if d is None or d.status != DepositStatus.CONFIRMED:
            return False
        self._move(d.account, d.asset, d.amount, 0)
        self.credits[d.id] = self.credits.get(d.id, 0) + 1
        self.deposits[d.id] = replace(d, status=DepositStatus.CREDITED, credited_ms=now_ms,
                                      credited_hash=d.block_hash, updated_ms=now_ms)
        return True

    async def pending_deposits(self, wallet: str) -> int:
        self._up()
        return sum(1 for d in self.deposits.values() if d.wallet == wallet
                   and d.status in (DepositStatus.PENDING, DepositStatus.CONFIRMED))

    async def unpublished_deposits(self, wallet: str) -> list[DepositRow]:
        self._up()
        return [d for _i, d in sorted(self.deposits.items())
                if d.wallet == wallet and self.deposits_published.get(d.id) != d.status]

    async def mark_deposit_published(self, deposit_id: int, status: DepositStatus) -> None:
        self._up()
        if self.deposits[deposit_id].status == status:
            self.deposits_published[deposit_id] = status

    async def deposit_history(self, account: int, query: DepositQuery) -> list[DepositRow]:
        self._up()
        rows = [d for d in self.deposits.values()
                if d.account == account and d.status != DepositStatus.DROPPED
                and (query.asset is None or d.asset == query.asset)
                and (query.statuses is None or d.status.value in query.statuses)
                and query.start_ms <= d.created_ms <= query.end_ms
                and (query.txid is None or d.txid == query.txid)]
        rows.sort(key=lambda d: (d.created_ms, d.id), reverse=True)
        return rows[query.offset:query.offset + query.limit]

    # ------------------------------------------------------------------ whitelist
    async def whitelisted(self, account: int, asset: str, address: str, *,
                          required: bool) -> bool:
        self._up()
        entries = {a for acct, s, a in self.whitelists if acct == account and s == asset}
        if not entries:
            return not required
        return address in entries

    async def whitelist_add(self, account: int, asset: str, address: str) -> bool:
        self._up()
        if account not in self.accounts:
            raise NotFound(f"no account {account}")
        if (account, asset, address) in self.whitelists:
            return False
        self.whitelists.add((account, asset, address))
        return True

    async def whitelist_remove(self, account: int, asset: str, address: str) -> bool:
        self._up()
        if (account, asset, address) not in self.whitelists:
            return False
        self.whitelists.discard((account, asset, address))
        return True

    # ------------------------------------------------------------------ withdrawals
    async def request_withdrawal(
        self, spec: WalletSpec, account: int, address: str, amount: int,
        client_id: str | None, now_ms: int,
    ) -> tuple[RequestResult, int | None]:
        self._up()
        if account not in self.accounts:
            raise NotFound(f"no account {account}")
        if client_id is not None:
            same = next((w for w in self.withdrawals.values()
                         if w.account == account and w.client_id == client_id), None)
            if same is not None:
                if (same.wallet, same.address, same.amount) == (spec.name, address, amount):
                    return RequestResult.DUPLICATE, same.id
                return RequestResult.CONFLICT, None
        hold = amount + spec.withdraw_fee
        if self.held(account, spec.asset)[0] < hold:
            return RequestResult.INSUFFICIENT, None
        wid = next(self._ids)
        status = WithdrawalStatus.PENDING if spec.needs_approval(amount) \
            else WithdrawalStatus.APPROVED
        self.withdrawals[wid] = WithdrawalRow(
            wid, spec.name, account, spec.asset, address, amount, spec.withdraw_fee, hold,
            client_id, status, withdrawal_intent(wid, "mem"), None, None, 0, 0, "", now_ms,
            now_ms, None)
        self._move(account, spec.asset, -hold, hold)
        return RequestResult.CREATED, wid

    async def withdrawal(self, wid: int) -> WithdrawalRow | None:
        self._up()
        return self.withdrawals.get(wid)

    def _change(self, wid: int, frm: Iterable[WithdrawalStatus], to: WithdrawalStatus,
                now_ms: int, **sets: Any) -> WithdrawalRow | None:
        self._up()
        w = self.withdrawals.get(wid)
        if w is None or w.status not in set(frm):
            return None
        moved = replace(w, status=to, updated_ms=now_ms, **sets)
        self.withdrawals[wid] = moved
        return moved

    async def withdrawals_in(self, wallet: str,
                             statuses: Iterable[WithdrawalStatus]) -> list[WithdrawalRow]:
        self._up()
        wanted = set(statuses)
        return [w for _i, w in sorted(self.withdrawals.items())
                if w.wallet == wallet and w.status in wanted]

    async def all_withdrawals(self, status: WithdrawalStatus | None,
                              limit: int) -> list[WithdrawalRow]:
        self._up()
        rows = [w for _i, w in sorted(self.withdrawals.items(), reverse=True)
                if status is None or w.status == status]
        return rows[:limit]

    async def withdraw_history(self, account: int,
                               query: WithdrawQuery) -> list[WithdrawalRow]:
        self._up()
        rows = [w for w in self.withdrawals.values()
                if w.account == account and (query.asset is None or w.asset == query.asset)
                and (query.statuses is None or w.status.value in query.statuses)
                and (query.client_id is None or w.client_id == query.client_id)
                and (query.ids is None or w.id in query.ids)
                and query.start_ms <= w.created_ms <= query.end_ms]
        rows.sort(key=lambda w: (w.created_ms, w.id), reverse=True)
        return rows[query.offset:query.offset + query.limit]

    async def approve(self, wid: int, now_ms: int) -> WithdrawalRow | None:
        return self._change(wid, [WithdrawalStatus.PENDING], WithdrawalStatus.APPROVED, now_ms)

    def _release(self, w: WithdrawalRow | None) -> WithdrawalRow | None:
        if w is not None:
            self._move(w.account, w.asset, w.hold, -w.hold)
        return w

    async def reject(self, wid: int, reason: str, now_ms: int) -> WithdrawalRow | None:
        return self._release(self._change(
            wid, [WithdrawalStatus.PENDING, WithdrawalStatus.APPROVED],
            WithdrawalStatus.REJECTED, now_ms, info=reason))

    async def fail(self, wid: int, info: str, now_ms: int) -> WithdrawalRow | None:
        return self._release(self._change(wid, [WithdrawalStatus.PROCESSING],
                                          WithdrawalStatus.FAILED, now_ms, info=info))

    async def start_processing(self, wid: int, now_ms: int) -> WithdrawalRow | None:
        return self._change(wid, [WithdrawalStatus.APPROVED], WithdrawalStatus.PROCESSING,
                            now_ms)

    async def back_to_approved(self, wid: int, info: str, now_ms: int) -> bool:
        return self._change(wid, [WithdrawalStatus.PROCESSING], WithdrawalStatus.APPROVED,
                            now_ms, info=info) is not None

    async def note_attempt(self, wid: int, info: str, now_ms: int, *, count: bool) -> None:
        self._up()
        w = self.withdrawals[wid]
        self.withdrawals[wid] = replace(w, info=info, updated_ms=now_ms,
                                        attempts=w.attempts + (1 if count else 0))

    async def record_sent(self, wid: int, txid: str, now_ms: int) -> bool:
        return self._change(wid, [WithdrawalStatus.PROCESSING], WithdrawalStatus.ON_CHAIN,
                            now_ms, txid=txid, info="") is not None

    async def update_on_chain(self, wid: int, confirmations: int, network_fee: int,
                              now_ms: int) -> None:
        self._up()
        w = self.withdrawals[wid]
        if w.status == WithdrawalStatus.ON_CHAIN:
            self.withdrawals[wid] = replace(w, confirmations=confirmations,
                                            network_fee=network_fee, updated_ms=now_ms)

    async def complete(self, wid: int, confirmations: int, network_fee: int,
                       now_ms: int) -> WithdrawalRow | None:
        self._up()
        w = self.withdrawals.get(wid)
        if w is not None and network_fee > w.fee:
            raise FeeShortfall(f"withdrawal {wid}: network fee {network_fee} above {w.fee}")
        done = self._change(wid, [WithdrawalStatus.ON_CHAIN], WithdrawalStatus.COMPLETED,
                            now_ms, confirmations=confirmations, network_fee=network_fee,
                            completed_ms=now_ms)
        if done is not None:
            self._move(done.account, done.asset, 0, -done.hold)
        return done

    async def unpublished_withdrawals(self, wallet: str) -> list[WithdrawalRow]:
        self._up()
        return [w for _i, w in sorted(self.withdrawals.items())
                if w.wallet == wallet and self.withdrawals_published.get(w.id) != w.status]

    async def mark_withdrawal_published(self, wid: int, status: WithdrawalStatus) -> None:
        self._up()
        if self.withdrawals[wid].status == status:
            self.withdrawals_published[wid] = status

    # ------------------------------------------------------------------ reconciliation
    async def ledger_side(self, wallet: str, asset: str) -> MemLedgerSide:
        self._up()
        total = sum(b[0] + b[1] for (_a, s), b in self.balance.items() if s == asset)
        sent = sum(w.amount + (w.network_fee if w.network_fee is not None else w.fee)
                   for w in self.withdrawals.values()
                   if w.wallet == wallet and w.status == WithdrawalStatus.ON_CHAIN)
        uncredited = sum(d.amount for d in self.deposits.values() if d.wallet == wallet
                         and d.status in (DepositStatus.PENDING, DepositStatus.CONFIRMED)
                         and d.confirmations >= 1)
        return MemLedgerSide(total, sent, uncredited)

    async def save_reconciliation(
        self, wallet: str, asset: str, holdings: int, liabilities: int, difference: int,
        ok: bool, detail: dict[str, Any],
    ) -> None:
        self._up()
        self.reconciliations[wallet] = {"asset": asset, "holdings": holdings,
                                        "liabilities": liabilities, "difference": difference,
                                        "ok": ok, "detail": detail}


@dataclass
class MemoryWalletBus:
    """The WALLETS stream as a list (de-duplicated by message id, as JetStream's window
    does) and request handlers by subject."""

    events: list[tuple[str, bytes, str]] = field(default_factory=list)
    handlers: dict[str, Callable[[bytes], Awaitable[bytes]]] = field(default_factory=dict)
    stream_ready: bool = False
    down: bool = False

    async def ensure_stream(self) -> None:
        self.stream_ready = True

    async def serve(self, wallet: str, what: str, handler: Callable[[bytes], Awaitable[bytes]]
                    ) -> Callable[[], Awaitable[None]]:
        subject = f"wallet.{wallet}.{what}"
        self.handlers[subject] = handler

        async def unsubscribe() -> None:
            self.handlers.pop(subject, None)

        return unsubscribe

    async def publish(self, wallet: str, data: bytes, msg_id: str) -> None:
        if self.down:
            raise StoreDown("memory bus is down")
        if all(m != msg_id for _w, _d, m in self.events):
            self.events.append((wallet, data, msg_id))

    async def request(self, wallet: str, what: str, data: bytes) -> bytes:
        """What the gateway would get asking the watcher of ``wallet``."""
        return await self.handlers[f"wallet.{wallet}.{what}"](data)


@dataclass
class NodeStandIn:
    """An address source: addresses ``<prefix><account>``, valid when they start with
    ``valid_prefix``; ``away`` makes every call raise WatcherUnavailable."""

    prefix: str = "fake1acct"
    valid_prefix: str = "fake1"
    away: bool = False
    issued: list[int] = field(default_factory=list)
    validated: list[str] = field(default_factory=list)

    async def new_address(self, wallet: WalletSpec, account: int) -> str:
        if self.away:
            raise WatcherUnavailable(f"no answer from the watcher of {wallet.name}")
        self.issued.append(account)
        return f"{self.prefix}{account}"

    async def validate_address(self, wallet: WalletSpec, address: str) -> bool:
        if self.away:
            raise WatcherUnavailable(f"no answer from the watcher of {wallet.name}")
        self.validated.append(address)
        return address.startswith(self.valid_prefix)
