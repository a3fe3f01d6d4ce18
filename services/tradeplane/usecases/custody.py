"""Custody's operations that more than one entry point performs, written once: an
account's deposit address, a withdrawal request and its rules, an admin's approval or
rejection, the withdrawal whitelist, and the history queries.

The gateway's wallet routes and the wallet watcher both call these. What differs between
them is where a new address comes from and who checks an address on its chain
(:class:`AddressSource`): the gateway asks the wallet's watcher over the bus, the watcher
asks its node. Both read and write custody's tables through :class:`CustodyStore`
(PostgreSQL in ``adapters/wallets_db.py``, in memory in ``tests/support/memory_custody.py``).

Admin changes (approve, reject, whitelist) leave an audit record through the store's
:class:`~tradeplane.usecases.audit.AuditLog`, as the account and pair use cases do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any, Protocol

from tradeplane.domain.custody import DepositRow, WalletSpec, WithdrawalStatus
from tradeplane.domain.money import fmt_units
from tradeplane.usecases.audit import Actor, AuditLog
from tradeplane.usecases.errors import NotFound, Unavailable, UseCaseError

#: A client's withdrawal id (``withdrawOrderId``).
CLIENT_ID = re.compile(r"[A-Za-z0-9._\-]{1,64}")
#: What an address may look like before the wallet's node validates it on its chain.
ADDRESS = re.compile(r"[A-Za-z0-9]{1,128}")


# --------------------------------------------------------------------------- typed rows
@dataclass(frozen=True, slots=True)
class WithdrawalRow:
    """A withdrawal as the store returns it (amounts in units)."""

    id: int
    wallet: str
    account: int
    asset: str
    address: str
    amount: int
    fee: int
    hold: int
    client_id: str | None
    status: WithdrawalStatus
    intent: str
    txid: str | None
    network_fee: int | None
    confirmations: int
    attempts: int
    info: str
    created_ms: int
    updated_ms: int
    completed_ms: int | None


class RequestResult(IntEnum):
    CREATED = 0
    DUPLICATE = 1  # the same withdrawOrderId with the same content: the existing one
    CONFLICT = 2  # the same withdrawOrderId with other content
    INSUFFICIENT = 3  # the balance cannot hold amount + fee


def withdrawal_doc(w: WithdrawalRow) -> dict[str, Any]:
    """A withdrawal as the admin API lists it and the audit log records it."""
    return {"id": w.id, "wallet": w.wallet, "account": w.account, "asset": w.asset,
            "address": w.address, "amount": fmt_units(w.amount), "fee": fmt_units(w.fee),
            "status": w.status.value, "txid": w.txid, "confirmations": w.confirmations,
            "networkFee": None if w.network_fee is None else fmt_units(w.network_fee),
            "info": w.info, "withdrawOrderId": w.client_id, "createdMs": w.created_ms,
            "updatedMs": w.updated_ms}


@dataclass(frozen=True, slots=True)
class DepositQuery:
    """Filters of an account's deposit history (bounded by the entry point)."""

    asset: str | None
    statuses: Sequence[str] | None
    start_ms: int
    end_ms: int
    offset: int
    limit: int
    txid: str | None


@dataclass(frozen=True, slots=True)
class WithdrawQuery:
    """Filters of an account's withdrawal history (bounded by the entry point)."""

    asset: str | None
    statuses: Sequence[str] | None
    client_id: str | None
    ids: Sequence[int] | None
    start_ms: int
    end_ms: int
    offset: int
    limit: int


# --------------------------------------------------------------------------- errors
class FeeShortfall(UseCaseError):
    """A withdrawal's network fee exceeded its charged fee by more than the fee account
    holds: it cannot be completed in the ledger yet (nothing was written)."""


class WatcherUnavailable(Unavailable):
    """The wallet's watcher (or its node) gave no usable answer; the message names the
    wallet and says why."""


class WithdrawalNotMovable(UseCaseError):
    """An admin asked to approve or reject a withdrawal past that point (``status``)."""

    def __init__(self, wid: int, status: WithdrawalStatus) -> None:
        super().__init__(f"withdrawal {wid} is {status.value}")
        self.wid = wid
        self.status = status


class Refusal(Enum):
    """Why a withdrawal request or a whitelist entry was refused (nothing was written)."""

    BELOW_MINIMUM = "below the wallet's minimum"
    BAD_CLIENT_ID = "withdrawOrderId is not an id"
    ILLEGAL_ADDRESS = "not an address of the wallet's chain"
    NOT_WHITELISTED = "the address is not on the account's whitelist"
    INSUFFICIENT = "the balance cannot hold amount + fee"
    CLIENT_ID_USED = "withdrawOrderId already used for another withdrawal"


# --------------------------------------------------------------------------- ports
class CustodyStore(AuditLog, Protocol):
    """Custody's tables and the ledger balances they hold, as the use cases see them.

    Every method may raise :class:`~tradeplane.domain.errors.Unavailable` (the database
    did not answer)."""

    async def wallets(self, asset: str | None = None) -> list[WalletSpec]:
        """The wallets (of ``asset``), by name.

        Raises:
            WalletSpecError: a stored spec is invalid.
        """
        ...

    async def deposit_address(self, wallet: str, account: int) -> str | None: ...

    async def save_deposit_address(self, wallet: str, account: int, address: str) -> str:
        """Remember ``address`` as the account's on ``wallet``; returns the one stored
        first should two requests race.

        Raises:
            NotFound: no such account.
        """
        ...

    async def balances(self, account: int) -> list[tuple[str, int, int]]:
        """``(asset, available, locked)`` of each asset the account holds."""
        ...

    async def withdrawing(self, account: int) -> dict[str, int]:
        """Per asset, what the account's withdrawals in flight hold."""
        ...

    async def whitelisted(self, account: int, asset: str, address: str, *,
                          required: bool) -> bool: ...

    async def whitelist_add(self, account: int, asset: str, address: str) -> bool:
        """False when it was listed already.

        Raises:
            NotFound: no such account.
        """
        ...

    async def whitelist_remove(self, account: int, asset: str, address: str) -> bool: ...

    async def request_withdrawal(
        self, spec: WalletSpec, account: int, address: str, amount: int,
        client_id: str | None, now_ms: int,
    ) -> tuple[RequestResult, int | None]:
        """Create a withdrawal and lock amount + fee in one transaction."""
        ...

    async def withdrawal(self, wid: int) -> WithdrawalRow | None: ...

    async def approve(self, wid: int, now_ms: int) -> WithdrawalRow | None:
        """PENDING -> APPROVED; None when it is not awaiting approval."""
        ...

    async def reject(self, wid: int, reason: str, now_ms: int) -> WithdrawalRow | None:
        """PENDING or APPROVED -> REJECTED, the hold released; None past that point."""
        ...

    async def all_withdrawals(self, status: WithdrawalStatus | None,
                              limit: int) -> list[WithdrawalRow]: ...

    async def deposit_history(self, account: int, query: DepositQuery) -> list[DepositRow]: ...

    async def withdraw_history(self, account: int,
                               query: WithdrawQuery) -> list[WithdrawalRow]: ...


class AddressSource(Protocol):
    """Whoever talks to the wallet's node: the node itself in the watcher, the watcher
    (over the bus) in the gateway.

    Both methods raise :class:`WatcherUnavailable` (the gateway's source) or the chain's
    errors (the watcher's) when no answer can be had."""

    async def new_address(self, wallet: WalletSpec, account: int) -> str:
        """A deposit address of ``wallet`` for ``account``."""
        ...

    async def validate_address(self, wallet: WalletSpec, address: str) -> bool:
        """Whether ``address`` can be paid on ``wallet``'s chain and network."""
        ...


# --------------------------------------------------------------------------- use cases
class CustodyCases:
    """The custody operations over a store and an address source."""

    __slots__ = ("addresses", "store")

    def __init__(self, store: CustodyStore, addresses: AddressSource) -> None:
        self.store = store
        self.addresses = addresses

    # ------------------------------------------------------------------ reads
    async def wallets(self, asset: str | None = None) -> list[WalletSpec]:
        """Raises WalletSpecError when a stored spec is invalid."""
        return await self.store.wallets(asset)

    async def balances(self, account: int) -> list[tuple[str, int, int]]:
        return await self.store.balances(account)

    async def withdrawing(self, account: int) -> dict[str, int]:
        return await self.store.withdrawing(account)

    async def deposit_history(self, account: int, query: DepositQuery) -> list[DepositRow]:
        return await self.store.deposit_history(account, query)

    async def withdraw_history(self, account: int,
                               query: WithdrawQuery) -> list[WithdrawalRow]:
        return await self.store.withdraw_history(account, query)

    async def all_withdrawals(self, status: WithdrawalStatus | None,
                              limit: int) -> list[WithdrawalRow]:
        return await self.store.all_withdrawals(status, limit)

    # ------------------------------------------------------------------ deposits
    async def deposit_address(self, spec: WalletSpec, account: int) -> str:
        """The account's deposit address on ``spec``: the stored one, else a new one from
        the node, stored before it is answered (so every payment to it is attributed;
        should two requests race, both answer the one stored first).

        Raises:
            Unavailable, ChainError: no address could be had.
            NotFound: no such account.
        """
        known = await self.store.deposit_address(spec.name, account)
        if known is not None:
            return known
        made = await self.addresses.new_address(spec, account)
        return await self.store.save_deposit_address(spec.name, account, made)

    # ------------------------------------------------------------------ withdrawals
    async def request_withdrawal(
        self, spec: WalletSpec, account: int, address: str, amount: int,
        client_id: str | None, now_ms: int,
    ) -> int | Refusal:
        """Request a withdrawal of ``amount`` units to ``address``: its id (an existing
        one for a repeated ``client_id`` with the same content), or why not. The rules in
        the order a client meets them: the wallet's minimum, the id's and the address's
        form, the whitelist, the balance (amount + fee), the address on its chain.

        Raises:
            Unavailable: the node (or its watcher) could not validate the address.
        """
        if amount < spec.withdraw_min:
            return Refusal.BELOW_MINIMUM
        if client_id is not None and not CLIENT_ID.fullmatch(client_id):
            return Refusal.BAD_CLIENT_ID
        if not ADDRESS.fullmatch(address):
            return Refusal.ILLEGAL_ADDRESS
        if not await self.store.whitelisted(account, spec.asset, address,
                                            required=spec.whitelist_required):
            return Refusal.NOT_WHITELISTED
        free = {a: f for a, f, _l in await self.store.balances(account)}.get(spec.asset, 0)
        if free < amount + spec.withdraw_fee:
            return Refusal.INSUFFICIENT
        if not await self.addresses.validate_address(spec, address):
            return Refusal.ILLEGAL_ADDRESS
        result, wid = await self.store.request_withdrawal(spec, account, address, amount,
                                                          client_id, now_ms)
        if result == RequestResult.INSUFFICIENT:
            return Refusal.INSUFFICIENT
        if result == RequestResult.CONFLICT or wid is None:
            return Refusal.CLIENT_ID_USED
        return wid

    async def approve(self, actor: Actor, wid: int, now_ms: int) -> WithdrawalRow:
        """PENDING -> APPROVED, audited (``withdrawal.approve``).

        Raises:
            NotFound: no such withdrawal.
            WithdrawalNotMovable: it is not awaiting approval.
        """
        before = await self.store.withdrawal(wid)
        w = await self.store.approve(wid, now_ms)
        if w is None or before is None:
            raise await self._not_movable(wid)
        await self.store.audit(actor.record("withdrawal.approve", f"withdrawal:{wid}",
                                            withdrawal_doc(before), withdrawal_doc(w)))
        return w

    async def reject(self, actor: Actor, wid: int, reason: str, now_ms: int) -> WithdrawalRow:
        """PENDING or APPROVED -> REJECTED, its hold released, audited
        (``withdrawal.reject``).

        Raises:
            NotFound: no such withdrawal.
            WithdrawalNotMovable: it is being sent or done.
        """
        before = await self.store.withdrawal(wid)
        w = await self.store.reject(wid, reason, now_ms)
        if w is None or before is None:
            raise await self._not_movable(wid)
        await self.store.audit(actor.record("withdrawal.reject", f"withdrawal:{wid}",
                                            withdrawal_doc(before), withdrawal_doc(w)))
        return w

    async def _not_movable(self, wid: int) -> UseCaseError:
        w = await self.store.withdrawal(wid)
        if w is None:
            return NotFound(f"no withdrawal {wid}")
        return WithdrawalNotMovable(wid, w.status)

    # ------------------------------------------------------------------ whitelist
    async def whitelist_add(self, actor: Actor, spec: WalletSpec, account: int,
                            address: str, entry: dict[str, Any]) -> bool | Refusal:
        """Put ``address`` on the account's whitelist of ``spec``'s asset once the node
        says it is payable on that chain; audited (``withdrawal.whitelist.add``, with
        ``entry`` as the record's after) when it was not listed yet. False: it was.

        Raises:
            Unavailable: the address could not be validated.
            NotFound: no such account.
        """
        if not await self.addresses.validate_address(spec, address):
            return Refusal.ILLEGAL_ADDRESS
        added = await self.store.whitelist_add(account, spec.asset, address)
        if added:
            await self.store.audit(actor.record("withdrawal.whitelist.add",
                                                f"account:{account}", None, entry))
        return added

    async def whitelist_remove(self, actor: Actor, account: int, asset: str, address: str,
                               entry: dict[str, Any]) -> bool:
        """Take ``address`` off the whitelist; audited (``withdrawal.whitelist.remove``,
        ``entry`` as the record's before) when it was listed."""
        removed = await self.store.whitelist_remove(account, asset, address)
        if removed:
            await self.store.audit(actor.record("withdrawal.whitelist.remove",
                                                f"account:{account}", entry, None))
        return removed

