"""The deposit state machine (wallets/deposits.py): confirmations move a deposit between
PENDING and CONFIRMED, a payment that left the chain is DROPPED before its credit, and a
credited one is never un-credited: its reorganisation asks for an adjustment instead."""

from __future__ import annotations

from tradeplane.domain.custody import DepositRow, DepositStatus
from tradeplane.wallets.chain import Incoming
from tradeplane.wallets.deposits import missing, observed

REQUIRED = 3


def inc(confs: int, block: str | None = "b1", height: int | None = 10) -> Incoming:
    return Incoming("tx", 0, "addr", 500, confs, block if confs else None,
                    height if confs else None)


def row(status: DepositStatus, confs: int, block: str | None = "b1",
        credited_hash: str | None = None) -> DepositRow:
    return DepositRow(1, "w", "litecoin", "tx", 0, 1000, "LTC", "addr", 500, status, confs,
                      block, 10 if block else None, credited_hash, 0, 0,
                      1 if status == DepositStatus.CREDITED else None)


def test_a_new_payment_is_pending_until_confirmed_enough() -> None:
    ch = observed(None, inc(0), 1000, REQUIRED)
    assert ch is not None and ch.existing is None
    assert (ch.status, ch.confirmations, ch.block_hash) == (DepositStatus.PENDING, 0, None)
    ch = observed(None, inc(REQUIRED), 1000, REQUIRED)
    assert ch is not None and ch.status == DepositStatus.CONFIRMED


def test_confirmations_move_pending_to_confirmed_and_nothing_else_changes_nothing() -> None:
    ch = observed(row(DepositStatus.PENDING, 2), inc(3), 1000, REQUIRED)
    assert ch is not None and (ch.status, ch.confirmations) == (DepositStatus.CONFIRMED, 3)
    assert observed(row(DepositStatus.PENDING, 2), inc(2), 1000, REQUIRED) is None


def test_a_reorg_before_the_credit_takes_a_confirmed_deposit_back_to_pending() -> None:
    ch = observed(row(DepositStatus.CONFIRMED, 3), inc(0), 1000, REQUIRED)
    assert ch is not None
    assert (ch.status, ch.confirmations, ch.block_hash) == (DepositStatus.PENDING, 0, None)
    assert not ch.open_adjustment


def test_a_payment_gone_from_chain_and_mempool_is_dropped_before_credit() -> None:
    ch = missing(row(DepositStatus.CONFIRMED, 3), in_main_chain=False)
    assert ch is not None and ch.status == DepositStatus.DROPPED
    assert missing(row(DepositStatus.PENDING, 0, block=None), in_main_chain=False) \
        is not None
    assert missing(row(DepositStatus.DROPPED, 0, block=None), in_main_chain=False) is None


def test_a_dropped_payment_that_comes_back_is_pending_again() -> None:
    ch = observed(row(DepositStatus.DROPPED, 0, block=None), inc(1), 1000, REQUIRED)
    assert ch is not None and ch.status == DepositStatus.PENDING


def test_an_unreported_deposit_still_in_the_main_chain_is_just_older_than_the_horizon() -> None:
    assert missing(row(DepositStatus.CREDITED, 9, credited_hash="b1"), in_main_chain=True) \
        is None


def test_a_credited_deposit_whose_block_is_orphaned_stays_credited_and_asks_for_an_adjustment(
) -> None:
    credited = row(DepositStatus.CREDITED, 3, credited_hash="b1")
    back_in_mempool = observed(credited, inc(0), 1000, REQUIRED)
    assert back_in_mempool is not None
    assert back_in_mempool.status == DepositStatus.CREDITED
    assert back_in_mempool.open_adjustment and not back_in_mempool.resolve_adjustment
    gone = missing(credited, in_main_chain=False)
    assert gone is not None and gone.status == DepositStatus.CREDITED
    assert gone.open_adjustment and gone.block_hash is None
    # Once off the chain, nothing more to do until it is reported again.
    assert missing(row(DepositStatus.CREDITED, 0, block=None, credited_hash="b1"),
                   in_main_chain=False) is None


def test_a_credited_deposit_confirmed_again_elsewhere_resolves_its_adjustment() -> None:
    moved = row(DepositStatus.CREDITED, 0, block=None, credited_hash="b1")
    ch = observed(moved, inc(1, block="b2"), 1000, REQUIRED)
    assert ch is not None and not ch.resolve_adjustment  # not confirmed enough yet
    ch = observed(moved, inc(REQUIRED, block="b2"), 1000, REQUIRED)
    assert ch is not None and ch.resolve_adjustment and ch.credited_hash == "b2"
    assert ch.status == DepositStatus.CREDITED


def test_a_credited_deposit_just_gaining_confirmations_needs_no_adjustment() -> None:
    ch = observed(row(DepositStatus.CREDITED, 3, credited_hash="b1"), inc(4), 1000, REQUIRED)
    assert ch is not None and not ch.open_adjustment and ch.confirmations == 4


def test_a_credited_deposit_back_in_its_own_block_after_a_reorg_resolves_its_adjustment(
) -> None:
    # The reorganisation was undone (reconsiderblock): the credited block is main again.
    off = row(DepositStatus.CREDITED, 0, block=None, credited_hash="b1")
    ch = observed(off, inc(REQUIRED, block="b1"), 1000, REQUIRED)
    assert ch is not None and ch.resolve_adjustment and not ch.open_adjustment
    assert ch.block_hash == "b1"
