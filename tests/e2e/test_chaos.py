"""``tradeplane chaos``'s short schedule, as CI runs it: every fault injected at least
once under the mixed load, and nothing lost, duplicated or broken after any of them.
The checks themselves are shown to see what they exist for (an order the exchange owes
but does not have, a ledger that does not add up)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tradeplane.adapters import db
from tradeplane.chaos.load import Acked, Load
from tradeplane.chaos.plan import FAULTS
from tradeplane.chaos.report import table
from tradeplane.chaos.run import PAIRS, Chaos, Options

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
              faults: tuple[str, ...]) -> None:
    chaos = Chaos(Options(seed=17, duration_s=10.0, faults=faults, period_s=5.0,
                          traders=3, workers=3, data_dir=data_dir))

    code = chaos.run()

    with capsys.disabled():
        print("\n" + table(chaos.outcomes, (*faults, "final")))
    injected = {o.fault for o in chaos.outcomes}
    assert injected == {*faults, "final"}
    assert sum(o.acked for o in chaos.outcomes) > 500, "the load did not run"
    for o in chaos.outcomes:
        assert (o.fault, o.lost, o.duplicated, o.failures) == (o.fault, 0, 0, [])
        assert o.recovery_s is not None, f"{o.fault}: not recovered"
    assert code == 0


def test_every_fault_under_load_loses_nothing_duplicates_nothing_breaks_no_invariant(
    data_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    _schedule(data_dir, capsys, FAULTS)


def test_the_checks_count_an_acknowledged_order_the_exchange_lacks_and_a_broken_ledger(
    data_dir: Path,
) -> None:
    chaos = Chaos(Options(seed=1, duration_s=10.0, faults=FAULTS, data_dir=data_dir))
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
    finally:
        chaos.stop()
