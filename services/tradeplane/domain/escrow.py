"""Escrowed deals: the state machine and its ledger movements. Pure: time comes in.

A deal is between a seller and a buyer: the seller sells ``amount`` units of ``asset``
(held on the platform) for ``price`` units of ``price_asset``, which the buyer pays off
the platform (a bank transfer, another chain: the platform never sees it). The buyer opens
the deal; the seller accepts it by funding it, which moves the asset from the seller's
available balance into the ledger's escrow account (:data:`ESCROW_ACCOUNT`, locked
bucket); from there it goes to the buyer (released) or back to the seller (cancelled,
expired, refunded), each a balanced ledger transaction.

::

    CREATED --fund (seller)--> FUNDED --paid (buyer)--> PAID --release (seller)--> RELEASED
    CREATED --cancel (seller, buyer)--> CANCELLED      CREATED --expire (timer)--> EXPIRED
    FUNDED --release (seller)--> RELEASED
    FUNDED --cancel (buyer)--> CANCELLED (refund)     FUNDED --expire (timer)--> EXPIRED (refund)
    PAID --dispute (seller, buyer)--> DISPUTED
    DISPUTED --resolve (admin)--> RESOLVED_RELEASE (to the buyer) | RESOLVED_REFUND (refund)

Only the seller (or an admin resolving a dispute) releases; funds stay in escrow while a
dispute is open; a deal that was paid never expires (the seller releases, or either
party disputes).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from tradeplane.domain.ledger import Posting
from tradeplane.domain.money import MAX_UNITS

#: The ledger account that holds every funded deal's asset (its locked bucket).
ESCROW_ACCOUNT: Final = 3


class DealState(StrEnum):
    CREATED = "CREATED"
    FUNDED = "FUNDED"
    PAID = "PAID"
    RELEASED = "RELEASED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    DISPUTED = "DISPUTED"
    RESOLVED_RELEASE = "RESOLVED_RELEASE"
    RESOLVED_REFUND = "RESOLVED_REFUND"


#: States in which the deal's asset is in the escrow account.
HELD_STATES: Final = frozenset({DealState.FUNDED, DealState.PAID, DealState.DISPUTED})
#: States with a deadline, after which the timer expires the deal.
TIMED_STATES: Final = frozenset({DealState.CREATED, DealState.FUNDED})
FINAL_STATES: Final = frozenset({DealState.RELEASED, DealState.CANCELLED, DealState.EXPIRED,
                                 DealState.RESOLVED_RELEASE, DealState.RESOLVED_REFUND})


class Action(StrEnum):
    FUND = "fund"
    PAID = "paid"
    RELEASE = "release"
    CANCEL = "cancel"
    DISPUTE = "dispute"
    RESOLVE_RELEASE = "resolve-release"
    RESOLVE_REFUND = "resolve-refund"
    EXPIRE = "expire"


class Party(StrEnum):
    """Who asks: one side of the deal, an admin, or the platform's timer."""

    SELLER = "seller"
    BUYER = "buyer"
    ADMIN = "admin"
    TIMER = "timer"


class Movement(StrEnum):
    """What a transition does to the ledger."""

    NONE = "none"
    LOCK = "lock"  # seller available -> escrow locked
    TO_BUYER = "to-buyer"  # escrow locked -> buyer available
    TO_SELLER = "to-seller"  # escrow locked -> seller available


@dataclass(frozen=True, slots=True)
class Step:
    to: DealState
    movement: Movement


S, A, P, M = DealState, Action, Party, Movement

#: THE transition table: (state, action) -> (who may, the step).
TRANSITIONS: Final[dict[tuple[DealState, Action], tuple[frozenset[Party], Step]]] = {
    (S.CREATED, A.FUND): (frozenset({P.SELLER}), Step(S.FUNDED, M.LOCK)),
    (S.CREATED, A.CANCEL): (frozenset({P.SELLER, P.BUYER}), Step(S.CANCELLED, M.NONE)),
    (S.CREATED, A.EXPIRE): (frozenset({P.TIMER}), Step(S.EXPIRED, M.NONE)),
    (S.FUNDED, A.PAID): (frozenset({P.BUYER}), Step(S.PAID, M.NONE)),
    (S.FUNDED, A.RELEASE): (frozenset({P.SELLER}), Step(S.RELEASED, M.TO_BUYER)),
    (S.FUNDED, A.CANCEL): (frozenset({P.BUYER}), Step(S.CANCELLED, M.TO_SELLER)),
    (S.FUNDED, A.EXPIRE): (frozenset({P.TIMER}), Step(S.EXPIRED, M.TO_SELLER)),
    (S.PAID, A.RELEASE): (frozenset({P.SELLER}), Step(S.RELEASED, M.TO_BUYER)),
    (S.PAID, A.DISPUTE): (frozenset({P.SELLER, P.BUYER}), Step(S.DISPUTED, M.NONE)),
    (S.DISPUTED, A.RESOLVE_RELEASE): (frozenset({P.ADMIN}),
                                      Step(S.RESOLVED_RELEASE, M.TO_BUYER)),
    (S.DISPUTED, A.RESOLVE_REFUND): (frozenset({P.ADMIN}),
                                     Step(S.RESOLVED_REFUND, M.TO_SELLER)),
}

#: Who may ever take each action (in some state).
ACTORS: Final[dict[Action, frozenset[Party]]] = {
    a: frozenset().union(*(who for (_, act), (who, _) in TRANSITIONS.items() if act is a))
    for a in Action
}


class Refusal(StrEnum):
    """Why a transition is refused (nothing changes)."""

    NOT_ALLOWED = "not-allowed"  # this party never takes this action
    WRONG_STATE = "wrong-state"  # not from the deal's current state


def decide(state: DealState, action: Action, party: Party) -> Step | Refusal:
    """The step ``party`` taking ``action`` makes from ``state``, or why not."""
    if party not in ACTORS[action]:
        return Refusal.NOT_ALLOWED
    entry = TRANSITIONS.get((state, action))
    if entry is None or party not in entry[0]:
        return Refusal.WRONG_STATE
    return entry[1]


def deadline(to: DealState, now_ms: int, fund_window_ms: int, pay_window_ms: int
             ) -> int | None:
    """When a deal entering ``to`` at ``now_ms`` expires: unfunded after the fund
    window, unpaid after the pay window; other states never do."""
    if to is DealState.CREATED:
        return now_ms + fund_window_ms
    if to is DealState.FUNDED:
        return now_ms + pay_window_ms
    return None


def postings(deal_id: int, to: DealState, movement: Movement, seller: int, buyer: int,
             asset: str, amount: int) -> list[Posting]:
    """The balanced ledger transaction of a step (``escrow:<deal>:<state>``: each state
    is entered at most once, so the reference is unique); empty when nothing moves."""
    ref = f"escrow:{deal_id}:{to.value}"
    if movement is Movement.LOCK:
        return [(ref, seller, asset, "a", -amount), (ref, ESCROW_ACCOUNT, asset, "l", amount)]
    if movement is Movement.TO_BUYER:
        return [(ref, ESCROW_ACCOUNT, asset, "l", -amount), (ref, buyer, asset, "a", amount)]
    if movement is Movement.TO_SELLER:
        return [(ref, ESCROW_ACCOUNT, asset, "l", -amount), (ref, seller, asset, "a", amount)]
    return []


# --------------------------------------------------------------------------- terms
#: The bounds of a deal's windows (ms): at least a second, at most 30 days.
MIN_WINDOW_MS: Final = 1_000
MAX_WINDOW_MS: Final = 30 * 86_400_000


@dataclass(frozen=True, slots=True)
class Terms:
    """What the buyer asks for: ``amount`` units of ``asset`` from ``seller`` for ``price``
    units of ``price_asset`` paid off the platform."""

    seller: int
    buyer: int
    asset: str
    amount: int
    price_asset: str
    price: int
    fund_window_ms: int
    pay_window_ms: int


def terms_problem(t: Terms) -> str | None:
    """Why the terms cannot make a deal, or None."""
    if t.seller == t.buyer:
        return "The seller and the buyer must be different accounts."
    if not 0 < t.amount <= MAX_UNITS:
        return "amount must be positive and within range."
    if not 0 < t.price <= MAX_UNITS:
        return "price must be positive and within range."
    for name, w in (("fundTimeout", t.fund_window_ms), ("payTimeout", t.pay_window_ms)):
        if not MIN_WINDOW_MS <= w <= MAX_WINDOW_MS:
            return f"{name} must be within 1..{MAX_WINDOW_MS // 1000} seconds."
    return None
