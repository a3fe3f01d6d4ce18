"""Escrowed deals: open, fund, mark paid, release, cancel, dispute, resolve, expire —
each written once, for the gateway, the admin API, the CLI and the timer alike.

The rules are the domain's (:mod:`tradeplane.domain.escrow`: who may take which action
from which state, and what moves in the ledger); here each transition is one store
transaction: the deal row locked, the rule applied to the state it holds then, the
balance rows locked in the ledger's (account, asset) order and checked, the balanced
postings applied, the transition and the audit record written. A refusal writes nothing.

**Idempotent.** A request may carry a ``request_id``: the same request again (same deal,
same id) answers the deal without doing anything again; the id used for another action
is refused. Without an id a repeated request meets the state its first one left
(``WRONG_STATE``: a second release is refused, nothing moves twice). A repeated creation
(the same ``client_deal_id`` of the buyer) answers the deal it made. The timer expires a
deal only if, under the row lock, it is still due: two timers racing expire it once.

Every transition is told to both parties' user data streams after the commit (a stream
that cannot be reached loses the message, never the transition).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Final, Protocol

from tradeplane.domain.errors import Unavailable
from tradeplane.domain.escrow import (
    ESCROW_ACCOUNT,
    Action,
    DealState,
    Movement,
    Party,
    Refusal,
    Step,
    Terms,
    deadline,
    decide,
    postings,
    terms_problem,
)
from tradeplane.domain.ledger import Posting
from tradeplane.domain.money import fmt_units
from tradeplane.usecases.audit import Actor, AuditRecord
from tradeplane.usecases.errors import UseCaseError

log = logging.getLogger(__name__)


class EscrowCode:
    """Our own error codes of the escrow API (documented in the API reference)."""

    UNKNOWN_DEAL = -24001
    NOT_ALLOWED = -24002
    WRONG_STATE = -24003
    INSUFFICIENT = -24004
    BAD_TERMS = -24005
    REQUEST_REUSED = -24006


#: Every code, with what it means (the API reference's table).
CODES: Final[dict[int, str]] = {
    EscrowCode.UNKNOWN_DEAL: "Escrow: no such deal, or not one of yours.",
    EscrowCode.NOT_ALLOWED: "Escrow: your side of the deal may not take this action "
                            "(only the seller funds and releases, only the buyer marks "
                            "paid, only an admin resolves a dispute).",
    EscrowCode.WRONG_STATE: "Escrow: the deal's state does not allow this action (e.g. "
                            "released already, or disputed: funds stay in escrow until "
                            "an admin resolves it); nothing changed.",
    EscrowCode.INSUFFICIENT: "Escrow: the seller's available balance does not cover the "
                             "deal; nothing was locked.",
    EscrowCode.BAD_TERMS: "Escrow: the deal's terms are not acceptable (unknown seller, "
                          "seller and buyer the same, a timeout out of range), or the "
                          "clientDealId is taken by other terms.",
    EscrowCode.REQUEST_REUSED: "Escrow: this requestId was used for another action on "
                               "this deal.",
}


class EscrowRefused(UseCaseError):
    """An escrow request refused; ``code`` is one of :class:`EscrowCode`."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


# --------------------------------------------------------------------------- records
@dataclass(frozen=True, slots=True)
class Deal:
    deal_id: int
    seller: int
    buyer: int
    client_deal_id: str
    asset: str
    amount: int
    price_asset: str
    price: int
    fund_window_ms: int
    pay_window_ms: int
    state: DealState
    deadline_ms: int | None
    created_ms: int
    updated_ms: int

    def party(self, account: int) -> Party | None:
        """The account's side of the deal, or None."""
        if account == self.seller:
            return Party.SELLER
        if account == self.buyer:
            return Party.BUYER
        return None

    def doc(self) -> dict[str, Any]:
        """As the audit log records it."""
        return {"dealId": self.deal_id, "seller": self.seller, "buyer": self.buyer,
                "asset": self.asset, "amount": fmt_units(self.amount),
                "priceAsset": self.price_asset, "price": fmt_units(self.price),
                "state": self.state.value, "deadline": self.deadline_ms}


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of a deal's history."""

    deal_id: int
    seq: int
    action: str  # an Action's value, or "create"
    party: str
    actor: str
    from_state: str
    to_state: DealState
    request_id: str | None
    note: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class Moved:
    """What a request did: the deal after it, the transition (None for a repeat that
    changed nothing) and whether the ledger moved."""

    deal: Deal
    transition: Transition | None
    movement: Movement


# --------------------------------------------------------------------------- ports
class EscrowTx(Protocol):
    """One transaction of the escrow store; everything is undone unless it completes."""

    async def audit(self, record: AuditRecord) -> None: ...

    async def is_user(self, account: int) -> bool:
        """Whether ``account`` is a user account."""
        ...

    async def deal_of_client(self, buyer: int, client_deal_id: str) -> Deal | None: ...

    async def insert_deal(self, terms: Terms, client_deal_id: str, now_ms: int,
                          deadline_ms: int | None) -> Deal | None:
        """A new CREATED deal (its id from the store); None when the buyer's
        ``client_deal_id`` was taken meanwhile (a concurrent opening)."""
        ...

    async def lock_deal(self, deal_id: int) -> Deal | None:
        """The deal, its row locked until the transaction ends."""
        ...

    async def transition_of_request(self, deal_id: int, request_id: str
                                    ) -> Transition | None: ...

    async def lock_balances(self, keys: Sequence[tuple[int, str]]) -> dict[tuple[int, str], int]:
        """Lock the balance rows (in the ledger's (account, asset) order); their
        available units (absent rows: 0)."""
        ...

    async def apply(self, ledger: list[Posting]) -> None:
        """Write the balanced postings and move the balances."""
        ...

    async def record(self, deal: Deal, to: DealState, deadline_ms: int | None,
                     action: str, party: str, actor: str, request_id: str | None,
                     note: str, now_ms: int) -> tuple[Deal, Transition]:
        """Set the deal's state (and deadline) and append the transition."""
        ...


class EscrowStore(Protocol):
    """Deals in PostgreSQL (``adapters/escrow_db.py``)."""

    def transaction(self) -> AbstractAsyncContextManager[EscrowTx]: ...

    async def deal(self, deal_id: int) -> Deal | None: ...

    async def deals(self, *, account: int | None, states: Sequence[DealState] | None,
                    from_id: int, limit: int) -> list[Deal]:
        """Deals from ``from_id`` on, oldest first: one account's (as seller or buyer) or
        all, in ``states`` or any."""
        ...

    async def history(self, deal_id: int) -> list[Transition]: ...

    async def due(self, now_ms: int, limit: int) -> list[int]:
        """Deals whose deadline passed (CREATED, FUNDED), oldest deadline first."""
        ...

    async def balances(self, account: int, assets: Sequence[str]
                       ) -> list[tuple[str, int, int]]: ...


class EscrowNotifier(Protocol):
    """The parties' user data streams."""

    async def deal_changed(self, deal: Deal, transition: Transition,
                           balances: dict[int, list[tuple[str, int, int]]]) -> None:
        """Tell both parties (and, for the accounts in ``balances``, their new balances).
        Raises Unavailable when a message could not be sent."""
        ...


#: The timer's identity in the audit log.
TIMER_ACTOR: Final = Actor("system", "escrow-timer", "System", "timer")
#: Most deals one timer round expires (the rest wait for the next round).
TIMER_BATCH: Final = 500
#: Most deals one list answers.
MAX_LIST: Final = 1000


def _refuse(code: int, msg: str) -> EscrowRefused:
    return EscrowRefused(code, msg)


@dataclass
class Escrow:
    """The escrow use cases over the store."""

    store: EscrowStore
    notifier: EscrowNotifier | None = None

    # ------------------------------------------------------------------ create
    async def create(self, actor: Actor, buyer: int, terms: Terms, client_deal_id: str,
                     now_ms: int) -> Deal:
        """Open a deal as its buyer (CREATED; nothing locked until the seller funds it).
        The same ``client_deal_id`` with the same terms answers the deal it made.

        Raises:
            EscrowRefused: BAD_TERMS (unknown seller, the buyer selling to itself, a
                window out of range, the clientDealId taken by other terms).
        """
        problem = terms_problem(terms)
        if terms.buyer != buyer:
            problem = "The buyer is the caller."
        if problem:
            raise _refuse(EscrowCode.BAD_TERMS, problem)
        async with self.store.transaction() as tx:
            if not await tx.is_user(terms.seller):
                raise _refuse(EscrowCode.BAD_TERMS, f"Unknown seller {terms.seller}.")
            deal = await tx.insert_deal(
                terms, client_deal_id, now_ms,
                deadline(DealState.CREATED, now_ms, terms.fund_window_ms,
                         terms.pay_window_ms))
            if deal is None:
                known = await tx.deal_of_client(buyer, client_deal_id)
                assert known is not None  # the conflicting row is committed and stays
                if _terms_of(known) != terms:
                    raise _refuse(EscrowCode.BAD_TERMS,
                                  f"clientDealId {client_deal_id} is taken by deal "
                                  f"{known.deal_id} with other terms.")
                return known
            _, tr = await tx.record(deal, DealState.CREATED, deal.deadline_ms, "create",
                                    Party.BUYER.value, actor.label, None, "", now_ms)
            await tx.audit(actor.record("escrow.create", f"deal:{deal.deal_id}", None,
                                        deal.doc()))
        await self._notify(Moved(deal, tr, Movement.NONE))
        return deal

    # ------------------------------------------------------------------ transitions
    async def act(self, actor: Actor, account: int | None, deal_id: int, action: Action,
                  now_ms: int, *, request_id: str | None = None, note: str = "") -> Moved:
        """``account`` (None: an admin or the timer, by ``actor.kind``) takes ``action``
        on the deal.

        Raises:
            EscrowRefused: UNKNOWN_DEAL (none, or not the account's), NOT_ALLOWED (its
                side never may), WRONG_STATE (not from the deal's state),
                INSUFFICIENT (funding beyond the seller's balance), REQUEST_REUSED.
        """
        moved = await self._act(actor, account, deal_id, action, now_ms, request_id, note)
        if moved.transition is not None:
            await self._notify(moved)
        return moved

    async def _act(self, actor: Actor, account: int | None, deal_id: int, action: Action,
                   now_ms: int, request_id: str | None, note: str) -> Moved:
        async with self.store.transaction() as tx:
            deal = await tx.lock_deal(deal_id)
            party = _party(actor, account, deal)
            if deal is None or party is None:
                raise _refuse(EscrowCode.UNKNOWN_DEAL, f"Deal {deal_id} does not exist.")
            if request_id is not None:
                done = await tx.transition_of_request(deal_id, request_id)
                if done is not None:
                    if done.action != action.value or done.actor != actor.label:
                        raise _refuse(EscrowCode.REQUEST_REUSED,
                                      f"requestId {request_id} was used for "
                                      f"{done.action} on deal {deal_id}.")
                    return Moved(deal, None, Movement.NONE)
            if action is Action.EXPIRE and (deal.deadline_ms is None
                                            or deal.deadline_ms > now_ms):
                raise _refuse(EscrowCode.WRONG_STATE, f"Deal {deal_id} is not due.")
            step = decide(deal.state, action, party)
            if step is Refusal.NOT_ALLOWED:
                raise _refuse(EscrowCode.NOT_ALLOWED,
                              f"The {party.value} may not {action.value} a deal.")
            if step is Refusal.WRONG_STATE:
                raise _refuse(EscrowCode.WRONG_STATE,
                              f"Deal {deal_id} is {deal.state.value}: cannot "
                              f"{action.value} it.")
            assert isinstance(step, Step)
            await self._move(tx, deal, step)
            after, tr = await tx.record(
                deal, step.to, deadline(step.to, now_ms, deal.fund_window_ms,
                                        deal.pay_window_ms),
                action.value, party.value, actor.label, request_id, note, now_ms)
            await tx.audit(actor.record(f"escrow.{action.value}", f"deal:{deal_id}",
                                        deal.doc(), {**after.doc(), "note": note}
                                        if note else after.doc()))
            return Moved(after, tr, step.movement)

    async def _move(self, tx: EscrowTx, deal: Deal, step: Step) -> None:
        ledger = postings(deal.deal_id, step.to, step.movement, deal.seller, deal.buyer,
                          deal.asset, deal.amount)
        if not ledger:
            return
        keys = sorted({(p[1], p[2]) for p in ledger})
        avail = await tx.lock_balances(keys)
        if step.movement is Movement.LOCK and avail.get((deal.seller, deal.asset), 0) < deal.amount:
            raise _refuse(EscrowCode.INSUFFICIENT,
                          "Insufficient balance to fund the deal.")
        await tx.apply(ledger)

    async def _notify(self, moved: Moved) -> None:
        if self.notifier is None or moved.transition is None:
            return
        d = moved.deal
        touched = {
            Movement.NONE: (), Movement.LOCK: (d.seller,), Movement.TO_BUYER: (d.buyer,),
            Movement.TO_SELLER: (d.seller,),
        }[moved.movement]
        try:
            balances = {a: await self.store.balances(a, (d.asset,)) for a in touched}
            await self.notifier.deal_changed(d, moved.transition, balances)
        except Unavailable:
            log.warning("escrow deal %s: user-stream event not sent", d.deal_id)

    # ------------------------------------------------------------------ timer
    async def expire_due(self, now_ms: int, limit: int = TIMER_BATCH) -> int:
        """Expire every deal whose deadline passed; how many this call expired (a deal
        another timer expired first is skipped)."""
        done = 0
        for deal_id in await self.store.due(now_ms, limit):
            try:
                await self.act(TIMER_ACTOR, None, deal_id, Action.EXPIRE, now_ms)
            except EscrowRefused:
                continue  # moved on meanwhile (funded, paid, expired by another timer)
            done += 1
        return done

    # ------------------------------------------------------------------ reads
    async def deal(self, account: int | None, deal_id: int) -> tuple[Deal, list[Transition]]:
        """A deal and its history: the account's (as seller or buyer), or any (None).

        Raises:
            EscrowRefused: UNKNOWN_DEAL.
        """
        deal = await self.store.deal(deal_id)
        if deal is None or (account is not None and deal.party(account) is None):
            raise _refuse(EscrowCode.UNKNOWN_DEAL, f"Deal {deal_id} does not exist.")
        return deal, await self.store.history(deal_id)

    async def deals(self, account: int | None, states: Sequence[DealState] | None,
                    from_id: int = 1, limit: int = 100) -> list[Deal]:
        """Deals oldest first: the account's, or all (None)."""
        return await self.store.deals(account=account, states=states, from_id=from_id,
                                      limit=max(1, min(limit, MAX_LIST)))


def _terms_of(d: Deal) -> Terms:
    return Terms(d.seller, d.buyer, d.asset, d.amount, d.price_asset, d.price,
                 d.fund_window_ms, d.pay_window_ms)


def _party(actor: Actor, account: int | None, deal: Deal | None) -> Party | None:
    if deal is None:
        return None
    if account is not None:
        return deal.party(account)
    if actor is TIMER_ACTOR:
        return Party.TIMER
    return Party.ADMIN


# --------------------------------------------------------------------------- the timer
Clock = Callable[[], int]


class EscrowTimer:
    """Expires due deals every ``every_s``: a supervised loop (it runs in the settlement
    process's task group). A round the database refuses is retried with backoff; any
    other error is a defect and ends the loop (and its process, which is restarted)."""

    def __init__(self, escrow: Escrow, clock: Clock, *, every_s: float = 1.0,
                 retry_max_s: float = 30.0) -> None:
        self.escrow = escrow
        self.clock = clock
        self.every_s = every_s
        self.retry_max_s = retry_max_s

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop``.

        Raises:
            Exception: a defect in a round (anything but Unavailable).
        """
        delay = self.every_s
        while not stop.is_set():
            try:
                expired = await self.escrow.expire_due(self.clock())
            except Unavailable as exc:
                log.warning("escrow timer: round failed; retrying in %.0fs: %s", delay, exc)
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            delay = self.every_s
            if expired:
                log.info("escrow deals expired", extra={"fields": {"deals": expired}})
            await _sleep_or_stop(stop, self.every_s)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(seconds, 0.0))


__all__ = ["CODES", "ESCROW_ACCOUNT", "Deal", "Escrow", "EscrowCode", "EscrowNotifier",
           "EscrowRefused", "EscrowStore", "EscrowTimer", "EscrowTx", "Moved", "Transition"]
