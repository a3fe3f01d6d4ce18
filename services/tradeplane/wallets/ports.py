"""The wallet watcher's ports: what the deposit watcher, the withdrawal processor, the
reconciliation and the process's settings need from custody's tables, the bus and the
secret store, declared here and implemented by the adapters (``adapters/custody.py``
over PostgreSQL, NATS and Vault; ``tests/support/memory_custody.py`` in memory).

The adapters sit below the services, so they never import this module: they satisfy the
Protocols structurally, and mypy checks the fit where ``wallets/service.py`` composes the
watcher. The rows they share with the gateway (``WithdrawalRow``) and the operations the
gateway performs too (deposit addresses, withdrawal requests, the whitelist) are the
application layer's: :mod:`tradeplane.usecases.custody`.

Every method may raise :class:`~tradeplane.domain.errors.Unavailable` (the database or
the bus did not answer; the same call may succeed later).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from pydantic import SecretStr

from tradeplane.domain.custody import (
    DepositChange,
    DepositRow,
    DepositStatus,
    WalletSpec,
    WithdrawalStatus,
)
from tradeplane.usecases.custody import CustodyStore, WithdrawalRow


class Adjustment(Protocol):
    """A reorganisation after a credit, recorded for an operator (``wallet_adjustments``)."""

    @property
    def id(self) -> int: ...
    @property
    def deposit_id(self) -> int: ...
    @property
    def account(self) -> int: ...
    @property
    def asset(self) -> str: ...
    @property
    def amount(self) -> int: ...
    @property
    def detail(self) -> str: ...


class LedgerSide(Protocol):
    """What the ledger says a wallet's chain balance should be, in parts (units)."""

    @property
    def ledger_total(self) -> int:
        """Every account's available + locked of the asset (users and fees)."""
        ...

    @property
    def sent_unfinished(self) -> int:
        """ON_CHAIN withdrawals: already paid on chain, still locked in the ledger."""
        ...

    @property
    def uncredited(self) -> int:
        """Deposits with confirmations that are not credited yet."""
        ...


class WalletStore(CustodyStore, Protocol):
    """Custody's tables as one wallet's watcher uses them (PostgreSQL in production).
    Every state change is one transaction, conditional on the state it leaves."""

    # ------------------------------------------------------------------ the wallet
    async def upsert_wallet(self, spec: WalletSpec) -> None: ...

    async def load_wallet(self, name: str) -> WalletSpec | None:
        """Raises WalletSpecError when the stored spec is invalid."""
        ...

    # ------------------------------------------------------------------ deposits
    async def load_cursor(self, wallet: str) -> tuple[str, int] | None:
        """The scan cursor and the tip height it was taken at; None before the first."""
        ...

    async def address_owners(self, wallet: str, addresses: Iterable[str]) -> dict[str, int]:
        """The accounts owning those of ``addresses`` that are the wallet's."""
        ...

    async def deposits_to_follow(
        self, wallet: str, chain: str, keys: Sequence[tuple[str, int]], min_height: int
    ) -> dict[tuple[str, int], DepositRow]:
        """The deposits a scan must look at: those reported (``keys``), every one not
        credited yet, and credited ones within the horizon or off the chain."""
        ...

    async def apply_scan(
        self, spec: WalletSpec, changes: Sequence[DepositChange], cursor: str, height: int,
        now_ms: int,
    ) -> Sequence[Adjustment]:
        """One scan's changes and the new cursor, in one transaction; the adjustments it
        opened."""
        ...

    async def deposits_due(self, wallet: str) -> list[DepositRow]:
        """CONFIRMED deposits, to be credited."""
        ...

    async def credit_deposit(self, deposit_id: int, now_ms: int) -> bool:
        """Credit a CONFIRMED deposit and mark it CREDITED in one transaction; False when
        it is no longer CONFIRMED."""
        ...

    async def pending_deposits(self, wallet: str) -> int: ...

    async def unpublished_deposits(self, wallet: str) -> list[DepositRow]: ...

    async def mark_deposit_published(self, deposit_id: int, status: DepositStatus) -> None: ...

    # ------------------------------------------------------------------ withdrawals
    async def withdrawals_in(self, wallet: str,
                             statuses: Iterable[WithdrawalStatus]) -> list[WithdrawalRow]: ...

    async def start_processing(self, wid: int, now_ms: int) -> WithdrawalRow | None:
        """APPROVED -> PROCESSING (the intent durable before the send); None when it is no
        longer APPROVED."""
        ...

    async def back_to_approved(self, wid: int, info: str, now_ms: int) -> bool: ...

    async def note_attempt(self, wid: int, info: str, now_ms: int, *, count: bool) -> None: ...

    async def record_sent(self, wid: int, txid: str, now_ms: int) -> bool:
        """PROCESSING -> ON_CHAIN with the send's txid."""
        ...

    async def update_on_chain(self, wid: int, confirmations: int, network_fee: int,
                              now_ms: int) -> None: ...

    async def complete(self, wid: int, confirmations: int, network_fee: int,
                       now_ms: int) -> WithdrawalRow | None:
        """ON_CHAIN -> COMPLETED, the hold leaving the ledger, in one transaction.

        Raises:
            FeeShortfall: the fee account cannot pay the network fee above the charged
                fee (nothing written).
        """
        ...

    async def fail(self, wid: int, info: str, now_ms: int) -> WithdrawalRow | None:
        """PROCESSING -> FAILED, the hold released."""
        ...

    async def unpublished_withdrawals(self, wallet: str) -> list[WithdrawalRow]: ...

    async def mark_withdrawal_published(self, wid: int, status: WithdrawalStatus) -> None: ...

    # ------------------------------------------------------------------ reconciliation
    async def ledger_side(self, wallet: str, asset: str) -> LedgerSide: ...

    async def save_reconciliation(
        self, wallet: str, asset: str, holdings: int, liabilities: int, difference: int,
        ok: bool, detail: dict[str, Any],
    ) -> None: ...


#: Answers one request (JSON bytes in, JSON bytes out).
RequestHandler = Callable[[bytes], Awaitable[bytes]]


class WalletBus(Protocol):
    """The bus as the wallet watcher uses it (NATS in production)."""

    async def ensure_stream(self) -> None:
        """Create or update the WALLETS stream."""
        ...

    async def serve(self, wallet: str, what: str,
                    handler: RequestHandler) -> Callable[[], Awaitable[None]]:
        """Answer the gateway's requests ``what`` (``address``, ``validate``) about
        ``wallet``; returns the unsubscribe coroutine."""
        ...

    async def publish(self, wallet: str, data: bytes, msg_id: str) -> None:
        """Append a wallet event (a duplicate ``msg_id`` within the window is stored
        once)."""
        ...


class NodeCredentials(Protocol):
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> SecretStr: ...


class CredentialSource(Protocol):
    """A secret store holding nodes' logins (Vault in production)."""

    def read_chain_rpc(self, path: str) -> NodeCredentials:
        """Blocking.

        Raises:
            TradeplaneError: the store refused, or lacks the credentials.
        """
        ...
