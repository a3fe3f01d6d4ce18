"""The escrow state machine (domain/escrow.py): every allowed transition, every forbidden
one, and the ledger movement of each — balanced, and the escrow account holding funds
exactly in the held states."""

from __future__ import annotations

import itertools

import pytest

from tradeplane.domain.escrow import (
    ESCROW_ACCOUNT,
    FINAL_STATES,
    HELD_STATES,
    TIMED_STATES,
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
from tradeplane.domain.ledger import check_balanced

S, A, P = DealState, Action, Party
SELLER, BUYER = 1001, 1002

#: The whole machine, written out again by hand: (state, action, party) -> (to, movement).
ALLOWED = {
    (S.CREATED, A.FUND, P.SELLER): (S.FUNDED, Movement.LOCK),
    (S.CREATED, A.CANCEL, P.SELLER): (S.CANCELLED, Movement.NONE),
    (S.CREATED, A.CANCEL, P.BUYER): (S.CANCELLED, Movement.NONE),
    (S.CREATED, A.EXPIRE, P.TIMER): (S.EXPIRED, Movement.NONE),
    (S.FUNDED, A.PAID, P.BUYER): (S.PAID, Movement.NONE),
    (S.FUNDED, A.RELEASE, P.SELLER): (S.RELEASED, Movement.TO_BUYER),
    (S.FUNDED, A.CANCEL, P.BUYER): (S.CANCELLED, Movement.TO_SELLER),
    (S.FUNDED, A.EXPIRE, P.TIMER): (S.EXPIRED, Movement.TO_SELLER),
    (S.PAID, A.RELEASE, P.SELLER): (S.RELEASED, Movement.TO_BUYER),
    (S.PAID, A.DISPUTE, P.SELLER): (S.DISPUTED, Movement.NONE),
    (S.PAID, A.DISPUTE, P.BUYER): (S.DISPUTED, Movement.NONE),
    (S.DISPUTED, A.RESOLVE_RELEASE, P.ADMIN): (S.RESOLVED_RELEASE, Movement.TO_BUYER),
    (S.DISPUTED, A.RESOLVE_REFUND, P.ADMIN): (S.RESOLVED_REFUND, Movement.TO_SELLER),
}


@pytest.mark.parametrize(("state", "action", "party"), sorted(ALLOWED))
def test_each_allowed_transition_goes_to_its_state_with_its_movement(
        state: DealState, action: Action, party: Party) -> None:
    to, movement = ALLOWED[(state, action, party)]
    assert decide(state, action, party) == Step(to, movement)


def test_every_other_combination_is_refused() -> None:
    refused = 0
    for key in itertools.product(DealState, Action, Party):
        if key in ALLOWED:
            continue
        assert isinstance(decide(*key), Refusal), key
        refused += 1
    assert refused == len(DealState) * len(Action) * len(Party) - len(ALLOWED)


def test_a_party_that_never_takes_an_action_is_not_allowed_whatever_the_state() -> None:
    for state in DealState:
        assert decide(state, A.RELEASE, P.BUYER) is Refusal.NOT_ALLOWED
        assert decide(state, A.PAID, P.SELLER) is Refusal.NOT_ALLOWED
        assert decide(state, A.FUND, P.BUYER) is Refusal.NOT_ALLOWED
        assert decide(state, A.RESOLVE_RELEASE, P.SELLER) is Refusal.NOT_ALLOWED
        assert decide(state, A.EXPIRE, P.ADMIN) is Refusal.NOT_ALLOWED
        assert decide(state, A.RELEASE, P.ADMIN) is Refusal.NOT_ALLOWED


def test_releasing_while_disputed_or_twice_is_the_wrong_state() -> None:
    assert decide(S.DISPUTED, A.RELEASE, P.SELLER) is Refusal.WRONG_STATE
    for final in FINAL_STATES:
        for action in Action:
            for party in Party:
                assert isinstance(decide(final, action, party), Refusal)
    assert decide(S.RELEASED, A.RELEASE, P.SELLER) is Refusal.WRONG_STATE


def test_a_paid_or_disputed_deal_never_expires_and_a_disputed_one_is_not_cancelled() -> None:
    for state in (S.PAID, S.DISPUTED):
        assert decide(state, A.EXPIRE, P.TIMER) is Refusal.WRONG_STATE
    assert decide(S.DISPUTED, A.CANCEL, P.BUYER) is Refusal.WRONG_STATE
    assert decide(S.FUNDED, A.CANCEL, P.SELLER) is Refusal.WRONG_STATE


def test_funds_are_in_escrow_exactly_in_the_held_states() -> None:
    """Walk every path through the machine: the escrow account's balance after each step
    is the deal's amount in the held states and zero elsewhere."""
    amount = 7

    def walk(state: DealState, held: int, seen: tuple[DealState, ...]) -> int:
        assert held == (amount if state in HELD_STATES else 0), seen
        paths = 1
        for (frm, _action, _party), (to, movement) in ALLOWED.items():
            if frm is not state:
                continue
            ledger = postings(9, to, movement, SELLER, BUYER, "BTC", amount)
            check_balanced(ledger)
            delta = sum(p[4] for p in ledger if p[1] == ESCROW_ACCOUNT)
            paths += walk(to, held + delta, (*seen, to))
        return paths

    assert walk(S.CREATED, 0, (S.CREATED,)) > len(FINAL_STATES)


def test_each_movement_is_a_balanced_transaction_between_the_right_accounts() -> None:
    lock = postings(5, S.FUNDED, Movement.LOCK, SELLER, BUYER, "BTC", 100)
    assert lock == [("escrow:5:FUNDED", SELLER, "BTC", "a", -100),
                    ("escrow:5:FUNDED", ESCROW_ACCOUNT, "BTC", "l", 100)]
    out = postings(5, S.RELEASED, Movement.TO_BUYER, SELLER, BUYER, "BTC", 100)
    assert out == [("escrow:5:RELEASED", ESCROW_ACCOUNT, "BTC", "l", -100),
                   ("escrow:5:RELEASED", BUYER, "BTC", "a", 100)]
    back = postings(5, S.EXPIRED, Movement.TO_SELLER, SELLER, BUYER, "BTC", 100)
    assert back == [("escrow:5:EXPIRED", ESCROW_ACCOUNT, "BTC", "l", -100),
                    ("escrow:5:EXPIRED", SELLER, "BTC", "a", 100)]
    assert postings(5, S.PAID, Movement.NONE, SELLER, BUYER, "BTC", 100) == []


def test_deadlines_run_only_in_the_timed_states() -> None:
    for state in DealState:
        d = deadline(state, 1_000, 60_000, 120_000)
        assert (d is not None) == (state in TIMED_STATES)
    assert deadline(S.CREATED, 1_000, 60_000, 120_000) == 61_000
    assert deadline(S.FUNDED, 1_000, 60_000, 120_000) == 121_000


def _terms(**kw: object) -> Terms:
    base: dict[str, object] = dict(seller=SELLER, buyer=BUYER, asset="BTC", amount=1,
                                   price_asset="EUR", price=1, fund_window_ms=1_000,
                                   pay_window_ms=1_000)
    base.update(kw)
    return Terms(**base)  # type: ignore[arg-type]


def test_terms_are_refused_for_self_deals_non_positive_amounts_and_out_of_range_windows(
) -> None:
    assert terms_problem(_terms()) is None
    assert terms_problem(_terms(buyer=SELLER)) is not None
    assert terms_problem(_terms(amount=0)) is not None
    assert terms_problem(_terms(price=-1)) is not None
    assert terms_problem(_terms(fund_window_ms=999)) is not None
    assert terms_problem(_terms(pay_window_ms=31 * 86_400_000)) is not None
