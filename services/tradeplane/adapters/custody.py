"""Custody's ports over PostgreSQL and NATS: :class:`PgCustodyStore`
(``wallets.ports.WalletStore``, which extends ``usecases.custody.CustodyStore``),
:class:`NatsWalletBus` (``wallets.ports.WalletBus``) and :class:`BusWatchers` (the
gateway's ``usecases.custody.AddressSource``: the wallets' watchers over NATS
request/reply).

The adapters sit below the services, so these classes satisfy the wallet watcher's
Protocols structurally, without importing them; mypy checks the fit where
``wallets/service.py`` and ``gateway/app.py`` compose them. The SQL is in
``wallets_db``; errors are the adapters' own (``DatabaseUnavailable``, ``BusUnavailable``,
:class:`WatcherUnavailable`), each ``Unavailable``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from tradeplane.adapters import accounts_db, db, wallets_db
from tradeplane.adapters.bus import (
    Bus,
    BusError,
    ensure_wallet_stream,
    publish_wallet_event,
    request,
    serve_requests,
    wallet_request_subject,
)
from tradeplane.domain.custody import (
    DepositChange,
    DepositRow,
    DepositStatus,
    WalletSpec,
    WithdrawalStatus,
)
from tradeplane.usecases import custody
from tradeplane.usecases.audit import AuditRecord
from tradeplane.usecases.custody import (
    DepositQuery,
    RequestResult,
    WithdrawalRow,
    WithdrawQuery,
)


class PgCustodyStore:
    """Custody's tables (migration 003) and the balances they hold, over one pool."""

    def __init__(self, pool: db.Pool) -> None:
        self.pool = pool

    # ------------------------------------------------------------------ audit
    async def audit(self, record: AuditRecord) -> None:
        await accounts_db.append_audit(self.pool, accounts_db.AuditEntry(
            record.actor, record.role, record.action, record.target, record.before,
            record.after, record.ip))

    # ------------------------------------------------------------------ wallets
    async def wallets(self, asset: str | None = None) -> list[WalletSpec]:
        return await wallets_db.wallets(self.pool, asset)

    async def upsert_wallet(self, spec: WalletSpec) -> None:
        await wallets_db.upsert_wallet(self.pool, spec)

    async def load_wallet(self, name: str) -> WalletSpec | None:
        return await wallets_db.load_wallet(self.pool, name)

    # ------------------------------------------------------------------ accounts
    async def balances(self, account: int) -> list[tuple[str, int, int]]:
        return await db.balances(self.pool, account)

    async def withdrawing(self, account: int) -> dict[str, int]:
        return await wallets_db.withdrawing(self.pool, account)

    # ------------------------------------------------------------------ addresses
    async def deposit_address(self, wallet: str, account: int) -> str | None:
        return await wallets_db.deposit_address(self.pool, wallet, account)

    async def save_deposit_address(self, wallet: str, account: int, address: str) -> str:
        return await wallets_db.save_deposit_address(self.pool, wallet, account, address)

    async def address_owners(self, wallet: str, addresses: Iterable[str]) -> dict[str, int]:
        return await wallets_db.address_owners(self.pool, wallet, addresses)

    # ------------------------------------------------------------------ deposits
    async def load_cursor(self, wallet: str) -> tuple[str, int] | None:
        return await wallets_db.load_cursor(self.pool, wallet)

    async def deposits_to_follow(
        self, wallet: str, chain: str, keys: Sequence[tuple[str, int]], min_height: int
    ) -> dict[tuple[str, int], DepositRow]:
        return await wallets_db.deposits_to_follow(self.pool, wallet, chain, keys, min_height)

    async def apply_scan(
        self, spec: WalletSpec, changes: Sequence[DepositChange], cursor: str, height: int,
        now_ms: int,
    ) -> list[wallets_db.Adjustment]:
        return await wallets_db.apply_scan(self.pool, spec, changes, cursor, height, now_ms)

    async def deposits_due(self, wallet: str) -> list[DepositRow]:
        return await wallets_db.deposits_due(self.pool, wallet)

    async def credit_deposit(self, deposit_id: int, now_ms: int) -> bool:
        return await wallets_db.credit_deposit(self.pool, deposit_id, now_ms)

    async def pending_deposits(self, wallet: str) -> int:
        return await wallets_db.pending_deposits(self.pool, wallet)

    async def unpublished_deposits(self, wallet: str) -> list[DepositRow]:
        return await wallets_db.unpublished_deposits(self.pool, wallet)

    async def mark_deposit_published(self, deposit_id: int, status: DepositStatus) -> None:
        await wallets_db.mark_deposit_published(self.pool, deposit_id, status)

    async def deposit_history(self, account: int, query: DepositQuery) -> list[DepositRow]:
        return await wallets_db.deposit_history(
            self.pool, account, asset=query.asset, statuses=query.statuses,
            start_ms=query.start_ms, end_ms=query.end_ms, offset=query.offset,
            limit=query.limit, txid=query.txid)

    # ------------------------------------------------------------------ whitelist
    async def whitelisted(self, account: int, asset: str, address: str, *,
                          required: bool) -> bool:
        return await wallets_db.whitelisted(self.pool, account, asset, address,
                                            required=required)

    async def whitelist_add(self, account: int, asset: str, address: str) -> bool:
        return await wallets_db.whitelist_add(self.pool, account, asset, address)

    async def whitelist_remove(self, account: int, asset: str, address: str) -> bool:
        return await wallets_db.whitelist_remove(self.pool, account, asset, address)

    # ------------------------------------------------------------------ withdrawals
    async def request_withdrawal(
        self, spec: WalletSpec, account: int, address: str, amount: int,
        client_id: str | None, now_ms: int,
    ) -> tuple[RequestResult, int | None]:
        return await wallets_db.request_withdrawal(self.pool, spec, account, address, amount,
                                                   client_id, now_ms)

    async def withdrawal(self, wid: int) -> WithdrawalRow | None:
        return await wallets_db.withdrawal(self.pool, wid)

    async def withdrawals_in(self, wallet: str,
                             statuses: Iterable[WithdrawalStatus]) -> list[WithdrawalRow]:
        return await wallets_db.withdrawals_in(self.pool, wallet, statuses)

    async def all_withdrawals(self, status: WithdrawalStatus | None,
                              limit: int) -> list[WithdrawalRow]:
        return await wallets_db.all_withdrawals(self.pool, status, limit)

    async def withdraw_history(self, account: int,
                               query: WithdrawQuery) -> list[WithdrawalRow]:
        return await wallets_db.withdraw_history(
            self.pool, account, asset=query.asset, statuses=query.statuses,
            client_id=query.client_id, ids=query.ids, start_ms=query.start_ms,
            end_ms=query.end_ms, offset=query.offset, limit=query.limit)

    async def approve(self, wid: int, now_ms: int) -> WithdrawalRow | None:
        return await wallets_db.approve(self.pool, wid, now_ms)

    async def reject(self, wid: int, reason: str, now_ms: int) -> WithdrawalRow | None:
        return await wallets_db.reject(self.pool, wid, reason, now_ms)

    async def start_processing(self, wid: int, now_ms: int) -> WithdrawalRow | None:
        return await wallets_db.start_processing(self.pool, wid, now_ms)

    async def back_to_approved(self, wid: int, info: str, now_ms: int) -> bool:
        return await wallets_db.back_to_approved(self.pool, wid, info, now_ms)

    async def note_attempt(self, wid: int, info: str, now_ms: int, *, count: bool) -> None:
        await wallets_db.note_attempt(self.pool, wid, info, now_ms, count=count)

    async def record_sent(self, wid: int, txid: str, now_ms: int) -> bool:
        return await wallets_db.record_sent(self.pool, wid, txid, now_ms)

    async def update_on_chain(self, wid: int, confirmations: int, network_fee: int,
                              now_ms: int) -> None:
        await wallets_db.update_on_chain(self.pool, wid, confirmations, network_fee, now_ms)

    async def complete(self, wid: int, confirmations: int, network_fee: int,
                       now_ms: int) -> WithdrawalRow | None:
        """Raises FeeShortfall (``usecases.custody.FeeShortfall``)."""
        return await wallets_db.complete(self.pool, wid, confirmations, network_fee, now_ms)

    async def fail(self, wid: int, info: str, now_ms: int) -> WithdrawalRow | None:
        return await wallets_db.fail(self.pool, wid, info, now_ms)

    async def unpublished_withdrawals(self, wallet: str) -> list[WithdrawalRow]:
        return await wallets_db.unpublished_withdrawals(self.pool, wallet)

    async def mark_withdrawal_published(self, wid: int, status: WithdrawalStatus) -> None:
        await wallets_db.mark_withdrawal_published(self.pool, wid, status)

    # ------------------------------------------------------------------ reconciliation
    async def ledger_side(self, wallet: str, asset: str) -> wallets_db.LedgerSide:
        return await wallets_db.ledger_side(self.pool, wallet, asset)

    async def save_reconciliation(
        self, wallet: str, asset: str, holdings: int, liabilities: int, difference: int,
        ok: bool, detail: dict[str, Any],
    ) -> None:
        await wallets_db.save_reconciliation(self.pool, wallet, asset, holdings, liabilities,
                                             difference, ok, detail)


class NatsWalletBus:
    """The WALLETS stream and the gateway's requests to a wallet's watcher."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def ensure_stream(self) -> None:
        await ensure_wallet_stream(self.bus)

    async def serve(self, wallet: str, what: str, handler: Callable[[bytes], Awaitable[bytes]]
                    ) -> Callable[[], Awaitable[None]]:
        return await serve_requests(self.bus, wallet_request_subject(wallet, what), handler)

    async def publish(self, wallet: str, data: bytes, msg_id: str) -> None:
        await publish_wallet_event(self.bus, wallet, data, msg_id)


class WatcherUnavailable(BusError, custody.WatcherUnavailable):
    """A wallet's watcher did not answer, or answered an error; the message says which
    and names the wallet (the process to look at)."""


class BusWatchers:
    """The gateway's way to a wallet's node: its watcher, by NATS request/reply
    (``wallet.<NAME>.address``, ``wallet.<NAME>.validate``; JSON both ways)."""

    def __init__(self, bus: Bus, timeout_s: float) -> None:
        self.bus = bus
        self.timeout_s = timeout_s

    async def _ask(self, spec: WalletSpec, what: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Raises WatcherUnavailable: no answer, or an error answered."""
        try:
            raw = await request(self.bus, wallet_request_subject(spec.name, what),
                                json.dumps(doc).encode(), self.timeout_s)
            answer = json.loads(raw)
        except (BusError, ValueError) as exc:
            raise WatcherUnavailable(
                f"no answer from its watcher to {what!r} ({str(exc) or type(exc).__name__}):"
                f" is `tradeplane wallet-watcher --wallet {spec.name}` running?") from exc
        if not isinstance(answer, dict) or "error" in answer:
            why = answer.get("error") if isinstance(answer, dict) else "not a JSON object"
            raise WatcherUnavailable(f"its watcher could not answer {what!r}: {str(why)[:300]}")
        return answer

    async def new_address(self, wallet: WalletSpec, account: int) -> str:
        """The address the watcher issued (and stored) for ``account``.

        Raises:
            WatcherUnavailable: no address came back.
        """
        answer = await self._ask(wallet, "address", {"account": account})
        address = answer.get("address")
        if not isinstance(address, str):
            raise WatcherUnavailable(f"its watcher answered no address: {str(answer)[:300]}")
        return address

    async def validate_address(self, wallet: WalletSpec, address: str) -> bool:
        """Raises WatcherUnavailable."""
        return bool((await self._ask(wallet, "validate", {"address": address})).get("valid"))
