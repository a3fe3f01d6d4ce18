"""The portfolio's arithmetic (integer units, never float) and the snapshot round over an
in-memory store: idempotent per (account, period, bucket), P&L = change in value minus
net deposits and withdrawals."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from tradeplane.domain.errors import Unavailable
from tradeplane.domain.money import to_units
from tradeplane.usecases.health import Health, StreamDepth, Verdict, verdict_status
from tradeplane.usecases.portfolio import (
    DAY_MS,
    Balance,
    LedgerState,
    Period,
    Portfolio,
    Snapshot,
    SnapshotWorker,
    bucket_of,
    in_btc,
    invested_after,
    pnl,
    quote_prices,
    series,
    value_of,
    worth,
)

U = to_units


def test_prices_in_the_quote_direct_inverse_and_through_btc() -> None:
    last = {("BTC", "USDT"): U("50000"), ("ETH", "BTC"): U("0.05"), ("USDT", "EUR"): U("0.8")}
    prices = quote_prices("USDT", last)
    assert prices["USDT"] == U("1")
    assert prices["BTC"] == U("50000")
    assert prices["ETH"] == U("2500")  # 0.05 BTC x 50000
    assert prices["EUR"] == U("1.25")  # the inverse of USDT/EUR 0.8
    assert "DOGE" not in prices


def test_value_is_exact_integer_units() -> None:
    prices = {"USDT": U("1"), "BTC": U("50000.01")}
    assert worth(U("0.00000001"), U("50000.01")) == 50000  # 1 sat: 0.0005000001 USDT, floored
    assert value_of({"BTC": U("0.3"), "USDT": U("10"), "DOGE": U("5")}, prices) \
        == U("15000.003") + U("10")
    assert in_btc(U("25000"), prices) == U("0.49999990")
    assert in_btc(U("25000"), {"USDT": U("1")}) == 0
    assert worth(-U("2"), U("3")) == -U("6")


def test_pnl_is_the_change_in_value_minus_net_deposits() -> None:
    p0 = {"USDT": U("1"), "BTC": U("100")}
    # Deposit 1000 USDT: value 1000, invested 1000, no P&L.
    inv0 = invested_after(0, {}, {"USDT": U("1000")}, p0)
    a = _snap(0, value=U("1000"), invested=inv0, flows={"USDT": U("1000")})
    # Buy 5 BTC for 500 USDT; BTC goes to 120; deposit 1 BTC more; withdraw 100 USDT.
    p1 = {"USDT": U("1"), "BTC": U("120")}
    flows1 = {"USDT": U("900"), "BTC": U("1")}
    inv1 = invested_after(inv0, a.flows, flows1, p1)
    assert inv1 == U("1000") + U("120") - U("100")
    value1 = value_of({"USDT": U("400"), "BTC": U("6")}, p1)
    b = _snap(1, value=value1, invested=inv1, flows=flows1)
    assert pnl(a, b) == (U("1120") - U("1000")) - U("20") == U("100")  # 5 BTC x +20
    assert [pt.pnl for pt in series([b, a])] == [0, U("100")]
    assert isinstance(pnl(a, b), int)


def test_buckets_align_to_utc_days_and_intervals() -> None:
    t = 1_700_000_123_456
    assert bucket_of(t, DAY_MS) % DAY_MS == 0 and 0 <= t - bucket_of(t, DAY_MS) < DAY_MS
    assert bucket_of(t, 60_000) == t - t % 60_000


def _snap(bucket: int, *, value: int, invested: int, flows: dict[str, int]) -> Snapshot:
    return Snapshot(7, Period.INTERVAL, bucket, bucket, "USDT", value, 0, invested, (), flows)


@dataclass
class MemoryStore:
    state: LedgerState
    rows: dict[tuple[int, Period, int], Snapshot] = field(default_factory=dict)

    async def ledger_state(self) -> LedgerState:
        latest: dict[int, Snapshot] = {}
        for s in sorted(self.rows.values(), key=lambda s: s.taken_ms):
            latest[s.account] = s
        return LedgerState(self.state.balances, self.state.flows, self.state.last_prices,
                           latest)

    async def save(self, snapshots: Sequence[Snapshot]) -> int:
        new = [s for s in snapshots if (s.account, s.period, s.bucket_ms) not in self.rows]
        for s in new:
            self.rows[(s.account, s.period, s.bucket_ms)] = s
        return len(new)

    async def history(self, account: int, period: Period, start_ms: int, end_ms: int,
                      limit: int) -> list[Snapshot]:
        got = sorted((s for s in self.rows.values() if s.account == account
                      and s.period == period and start_ms <= s.taken_ms <= end_ms),
                     key=lambda s: s.bucket_ms)
        return got[-limit:]


async def test_a_round_is_idempotent_per_bucket_and_counts_flows_once() -> None:
    store = MemoryStore(LedgerState(
        balances={7: (Balance("USDT", U("500"), U("0")), Balance("BTC", U("5"), U("0")))},
        flows={7: {"USDT": U("1000")}},
        last_prices={("BTC", "USDT"): U("100")}, latest={}))
    cases = Portfolio(store, interval_ms=60_000)
    t0 = 10 * DAY_MS + 5
    assert await cases.round(t0) == 2  # the day's and the interval's
    assert await cases.round(t0 + 1000) == 0  # the same buckets: nothing new
    store.state = LedgerState(store.state.balances, {7: {"USDT": U("1000")}},
                              {("BTC", "USDT"): U("110")}, {})
    assert await cases.round(t0 + 60_000) == 1  # a new interval, the same day
    snaps = await cases.history(7, Period.INTERVAL, 0, t0 + DAY_MS, 10)
    assert [s.value for s in snaps] == [U("1000"), U("1050")]
    assert [s.invested for s in snaps] == [U("1000"), U("1000")]
    assert pnl(snaps[0], snaps[1]) == U("50")
    assert cases.next_wake(t0) == t0 - 5 + 60_000


@dataclass
class Reads:
    down: bool = False

    async def command_seq(self, symbol: str) -> int:
        return 12

    async def engine_seq(self, symbol: str) -> int:
        return 10

    async def settled(self) -> dict[str, int]:
        from tradeplane.domain.errors import Unavailable
        if self.down:
            raise Unavailable("db down")
        return {"BTCUSDT": 9}

    async def events_last_seq(self) -> int:
        return 40

    async def marketdata_position(self) -> int | None:
        return 37

    async def verdict(self) -> Verdict | None:
        return Verdict(1000, True, ())

    async def streams(self) -> list[StreamDepth]:
        return [StreamDepth("EVENTS", 40, 4000, 1, 40, 2)]


async def test_health_reports_lags_and_unknown_parts() -> None:
    doc = await Health(Reads(), verdict_stale_ms=5000).report(["BTCUSDT"], 2000)
    assert doc["engines"] == [{"symbol": "BTCUSDT", "commandSequence": 12,
                               "engineSequence": 10, "settledSequence": 9,
                               "engineBacklog": 2, "settlementLag": 1}]
    assert doc["marketData"] == {"eventsSequence": 40, "position": 37, "lag": 3}
    assert doc["ledger"]["status"] == "ok" and doc["errors"] == []
    down = await Health(Reads(down=True), verdict_stale_ms=5000).report(["BTCUSDT"], 2000)
    assert down["engines"][0]["settledSequence"] is None
    assert down["engines"][0]["settlementLag"] is None
    assert down["errors"] == ["settlement cursor: db down"]
    assert verdict_status(Verdict(1000, True, ()), 10_000, 5000) == "unknown"
    assert verdict_status(Verdict(1000, False, ("x",)), 2000, 5000) == "violated"
    assert verdict_status(None, 0, 5000) == "unknown"


@dataclass
class FlakyStore(MemoryStore):
    failures: int = 2

    async def ledger_state(self) -> LedgerState:
        if self.failures:
            self.failures -= 1
            raise Unavailable("PostgreSQL: connection refused")
        return await super().ledger_state()


async def test_the_worker_retries_an_outage_and_then_snapshots() -> None:
    store = FlakyStore(LedgerState({7: (Balance("USDT", U("5"), 0),)}, {}, {}, {}))
    worker = SnapshotWorker(Portfolio(store, interval_ms=60_000), lambda: 10 * DAY_MS,
                            retry_first_s=0.001)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    for _ in range(500):
        if store.rows:
            break
        await asyncio.sleep(0.002)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert store.failures == 0
    assert {(k[1], k[2]) for k in store.rows} == {(Period.DAY, 10 * DAY_MS),
                                                   (Period.INTERVAL, 10 * DAY_MS)}
