"""The settler over its in-memory ports (tests/support/memory_settlement.py): event batches
are applied exactly once whatever the bus redelivers, the cursor moves with the ledger in
one transaction, and a failed transaction leaves nothing behind."""

from __future__ import annotations

import asyncio

import pytest
from tests.support.memory_settlement import MemoryLedger, MemorySettlementBus

from tradeplane.domain.errors import Unavailable
from tradeplane.domain.model import Done, Event, EventBatch, Reason, Rested, Side, Status, Trade
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.settlement.service import Settler

RULES = next(p for p in DEMO_PAIRS if p.symbol == "BTCUSDT")
SYMBOL = RULES.symbol
PRICE, QTY = 600_000, 50  # ticks, lots
COST = RULES.notional(PRICE, QTY)
ALICE, BOB = 1, 2


def batch(seq: int, *events: Event) -> EventBatch:
    return EventBatch(1, SYMBOL, seq, seq, 1_000 + seq, list(events), [])


async def started() -> tuple[Settler, MemoryLedger, MemorySettlementBus]:
    ledger = MemoryLedger(pairs={SYMBOL: RULES})
    ledger.credit(ALICE, RULES.quote, COST)
    ledger.credit(BOB, RULES.base, RULES.qty_units(QTY))
    ledger.place(1, ALICE, SYMBOL, Side.BUY, PRICE, QTY, RULES.quote, COST)
    bus = MemorySettlementBus()
    settler = Settler(bus, ledger)
    await settler.start()
    return settler, ledger, bus


def rested(order_id: int, account: int, side: Side, seq: int) -> EventBatch:
    return batch(seq, Rested(order_id, account, side, PRICE, QTY, 1_000 + seq))


def canceled(order_id: int, account: int, seq: int) -> EventBatch:
    return batch(seq, Done(order_id, account, Status.CANCELED, Reason.NONE, 1_000 + seq))


async def sound(ledger: MemoryLedger) -> None:
    imbalances, problems = await ledger.check_invariants()
    assert problems == []
    assert set(imbalances.values()) <= {0}


async def test_a_redelivered_pull_is_skipped_whole() -> None:
    settler, ledger, bus = await started()
    msgs = [bus.append(rested(1, ALICE, Side.BUY, 1)), bus.append(canceled(1, ALICE, 2))]

    await settler.handle(msgs)
    await settler.handle(msgs)  # the bus redelivers: settlement already applied both

    assert ledger.settles == 1
    assert ledger.status(1) == Status.CANCELED
    assert ledger.balances[(ALICE, RULES.quote)] == [COST, 0]  # released once, not twice
    assert ledger.cursor == {SYMBOL: 2}
    assert ledger.positions == {"settlement": 2}
    # Each pull still publishes its mark: a gateway waiting on it must hear it.
    assert bus.settled == [(SYMBOL, 2), (SYMBOL, 2)]
    await sound(ledger)


async def test_a_pull_overlapping_the_cursor_applies_only_the_new_batches() -> None:
    settler, ledger, bus = await started()
    first = bus.append(rested(1, ALICE, Side.BUY, 1))
    second = bus.append(canceled(1, ALICE, 2))

    await settler.handle([first])
    assert ledger.status(1) == Status.NEW
    await settler.handle([first, second])

    assert ledger.settles == 2
    assert ledger.status(1) == Status.CANCELED
    assert ledger.balances[(ALICE, RULES.quote)] == [COST, 0]
    assert ledger.cursor == {SYMBOL: 2}
    await sound(ledger)


async def test_a_failed_transaction_leaves_ledger_and_cursor_and_is_redone_once() -> None:
    settler, ledger, bus = await started()
    msgs = [bus.append(rested(1, ALICE, Side.BUY, 1)), bus.append(canceled(1, ALICE, 2))]
    ledger.down = True

    with pytest.raises(Unavailable):
        await settler.handle(msgs)
    assert ledger.cursor == {} and settler.cursors == {}
    assert ledger.status(1) == Status.PENDING_NEW
    assert bus.settled == []  # no mark for what is not settled

    ledger.down = False
    await settler.handle(msgs)  # the consumer retries the same messages
    await settler.handle(msgs)
    assert ledger.settles == 1
    assert ledger.balances[(ALICE, RULES.quote)] == [COST, 0]
    await sound(ledger)


async def test_a_restarted_settler_resumes_from_the_stored_cursor() -> None:
    settler, ledger, bus = await started()
    msgs = [bus.append(rested(1, ALICE, Side.BUY, 1)), bus.append(canceled(1, ALICE, 2))]
    await settler.handle(msgs[:1])

    again = Settler(bus, ledger)  # a new process over the same ledger
    await again.start()
    await again.handle(msgs)  # redelivered from before its cursor

    assert ledger.settles == 2
    assert ledger.status(1) == Status.CANCELED
    assert ledger.balances[(ALICE, RULES.quote)] == [COST, 0]
    await sound(ledger)


async def test_a_trade_settles_both_sides_once_and_reports_to_both_accounts() -> None:
    settler, ledger, bus = await started()
    ledger.place(2, BOB, SYMBOL, Side.SELL, PRICE, QTY, RULES.base, RULES.qty_units(QTY))
    msgs = [
        bus.append(rested(1, ALICE, Side.BUY, 1)),
        bus.append(batch(2,
                         Trade(1, PRICE, QTY, 2, BOB, Side.SELL, 1, ALICE, 1_002),
                         Done(1, ALICE, Status.FILLED, Reason.NONE, 1_002),
                         Done(2, BOB, Status.FILLED, Reason.NONE, 1_002))),
    ]

    await settler.handle(msgs)
    await settler.handle(msgs[1:])

    assert ledger.settles == 1
    assert len(ledger.trades) == 1
    assert ledger.status(1) == ledger.status(2) == Status.FILLED
    assert ledger.balances[(ALICE, RULES.quote)][1] == 0  # nothing held any more
    assert ledger.balances[(BOB, RULES.base)] == [0, 0]
    assert ledger.balances[(ALICE, RULES.base)][0] > 0
    assert ledger.balances[(BOB, RULES.quote)][0] > 0
    assert {account for account, _data in bus.user} == {ALICE, BOB}
    await sound(ledger)


async def test_a_pull_committed_though_its_commit_failed_is_not_applied_again() -> None:
    # Found by ``tradeplane chaos`` (stop-postgres): the settler kept its own cursor after
    # the failed commit, retried the committed trade and refused it for ever ("order 1
    # spends ... but holds 0") until it was restarted.
    settler, ledger, bus = await started()
    ledger.place(2, BOB, SYMBOL, Side.SELL, PRICE, QTY, RULES.base, RULES.qty_units(QTY))
    await settler.handle([bus.append(rested(1, ALICE, Side.BUY, 1))])
    trade = bus.append(batch(2,
                             Trade(1, PRICE, QTY, 2, BOB, Side.SELL, 1, ALICE, 1_002),
                             Done(1, ALICE, Status.FILLED, Reason.NONE, 1_002),
                             Done(2, BOB, Status.FILLED, Reason.NONE, 1_002)))
    ledger.lose_commit_answers = 1

    with pytest.raises(Unavailable):
        await settler.handle([trade])
    await settler.handle([trade])  # the consumer retries the same message

    assert ledger.settles == 2  # the rest and the trade, each once
    assert len(ledger.trades) == 1
    assert ledger.cursor == settler.cursors == {SYMBOL: 2}
    assert bus.settled[-1] == (SYMBOL, 2)
    await sound(ledger)


async def test_run_consumes_from_the_stored_position_and_stops() -> None:
    settler, ledger, bus = await started()
    msgs = [bus.append(rested(1, ALICE, Side.BUY, 1)), bus.append(canceled(1, ALICE, 2))]
    await settler.handle(msgs[:1])
    bus.pull = 1
    stop = asyncio.Event()

    task = asyncio.create_task(settler.run(stop))
    for _ in range(100):  # every step is synchronous in memory: a few turns suffice
        if ledger.cursor.get(SYMBOL) == 2:
            break
        await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(task, 5)

    assert ledger.settles == 2  # the first batch was not delivered again
    assert ledger.status(1) == Status.CANCELED
    assert bus.watchers == []  # unsubscribed from pair changes
