"""``tradeplane chaos``'s short schedule, as CI runs it: every fault injected at least
once under the mixed load, and nothing lost, duplicated or broken after any of them; the
faults of a clustered bus (three NATS nodes, streams with three replicas) in a run of
their own. The checks themselves are shown to see what they exist for (an order the
exchange owes but does not have, a ledger that does not add up, an event batch appended
twice)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus
from tradeplane.chaos.load import Acked, Load
from tradeplane.chaos.plan import CHAIN_FAULTS, CLUSTER_FAULTS, FAULTS
from tradeplane.chaos.report import table
from tradeplane.chaos.run import PAIRS, Chaos, Options
from tradeplane.domain import codec
from tradeplane.domain.model import SCHEMA_VERSION, EventBatch

pytestmark = pytest.mark.e2e


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not under pytest's tmp tree: pytest resets its folders to 0700 when another session
    # starts, which locks PostgreSQL's unprivileged user out of its data (at the restart
    # of stop-postgres).
    folder = Path(tempfile.mkdtemp(prefix="tp-chaos-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _schedule(data_dir: Path, capsys: pytest.CaptureFixture[str],
              faults: tuple[str, ...], *, nats_cluster: bool = False,
              min_acked: int = 500) -> Chaos:
    chaos = Chaos(Options(seed=17, duration_s=10.0, faults=faults, period_s=5.0,
                          traders=3, workers=3, data_dir=data_dir,
                          nats_cluster=nats_cluster))

    code = chaos.run()

    with capsys.disabled():
        print("\n" + table(chaos.outcomes, (*faults, "final")))
    injected = {o.fault for o in chaos.outcomes}
    assert injected == {*faults, "final"}
    assert sum(o.acked for o in chaos.outcomes) > min_acked, "the load did not run"
    for o in chaos.outcomes:
        assert (o.fault, o.lost, o.duplicated, o.failures) == (o.fault, 0, 0, [])
        assert o.recovery_s is not None, f"{o.fault}: not recovered"
    assert code == 0
    return chaos


def test_every_fault_under_load_loses_nothing_duplicates_nothing_breaks_no_invariant(
    data_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # pause-engine is among them: every engine runs as two replicas (hot standby).
    _schedule(data_dir, capsys, FAULTS)


def test_a_killed_watcher_a_reorg_with_a_double_spend_and_a_dead_node_lose_and_repeat_nothing(
    data_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # The wallet watcher on a regtest litecoind, deposits and withdrawals in the load;
    # after each fault (and at the end) each payment confirmed is credited exactly once,
    # the double-spent one never, each withdrawal broadcast exactly once and completed,
    # and the wallet reconciles to exactly 0 (compose.check_custody).
    chaos = _schedule(data_dir, capsys, CHAIN_FAULTS)

    assert chaos.chain_load is not None
    answers = chaos.chain_load.answers
    assert answers["deposit paid"] >= 10, answers
    assert len(chaos.chain_load.withdrawals.all()) >= 10, answers


def test_a_nats_node_and_a_stream_leader_killed_under_load_lose_nothing(
    data_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # Fewer orders than on one server: every append is stored (fsynced) by two nodes of
    # three sharing this machine's disk before its ack, and each fault stops the
    # appends of the streams it takes the leader of until a new one is elected.
    _schedule(data_dir, capsys, CLUSTER_FAULTS, nats_cluster=True, min_acked=200)


def test_the_checks_count_an_acknowledged_order_the_exchange_lacks_and_a_broken_ledger(
    data_dir: Path,
) -> None:
    chaos = Chaos(Options(seed=1, duration_s=10.0, faults=("kill-engine",),
                          data_dir=data_dir))
    traders = chaos.start()
    try:
        assert chaos.stores is not None
        load = Load(chaos.base, traders, seed=1)
        load.acked = Acked()
        load.acked.add(10**12)  # acknowledged, never stored
        found = chaos.check(load)
        assert found.lost == 1
        assert any("missing from PostgreSQL" in f for f in found.failures)

        async def break_the_ledger() -> None:
            pool = await db.create_pool(chaos.servers.pg_url, 1)
            try:
                await pool.execute("UPDATE balances SET available = available + 1"
                                   " WHERE account_id = $1", traders[0].account)
            finally:
                await pool.close()

        asyncio.run(break_the_ledger())
        found = chaos.check(Load(chaos.base, traders, seed=1))
        assert found.lost == 0
        assert any(f.startswith("ledger: ") for f in found.failures)
        assert len(PAIRS) == 2

        async def append_a_batch_twice() -> None:
            # What a writer that was not fenced would do: a batch for commands another
            # batch already covered (empty ones, for no command the log holds).
            bus = await Bus.connect(chaos.servers.nats_url, name="test")
            try:
                await bus.ensure_events()
                batch = codec.encode(EventBatch(SCHEMA_VERSION, "BTCUSDT", 1, 1, 0, [], []))
                for msg_id in ("test-once", "test-again"):
                    await bus.publish_events("BTCUSDT", batch, msg_id)
            finally:
                await bus.close()

        asyncio.run(append_a_batch_twice())
        found = chaos.check(Load(chaos.base, traders, seed=1))
        assert ("BTCUSDT: an event batch for commands 1..1 follows one ending at 1 "
                "(again or out of order)") in found.failures
        assert ("BTCUSDT: event batches go to command 1, past the log's end 0"
                in found.failures)
    finally:
        chaos.stop()
