"""Account snapshots against the in-process platform (real NATS, PostgreSQL, Redis):
settlement's worker takes them, ``GET /sapi/v1/accountSnapshot`` answers them in Binance's
exact shape and refuses bad bounds in Binance's error format (never a 5xx),
``GET /api/v1/portfolio`` gives value and P&L, and ``GET /admin/health`` shows each
engine's sequence, the lags, the ledger verdict and the streams."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from tests.support.harness import Platform, Trader, eventually, running_platform
from tests.support.security import FAST_HASHING, admin_headers

from tradeplane.adapters import db
from tradeplane.adapters.portfolio_db import PgSnapshotStore
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.usecases.portfolio import Portfolio

DAY_MS = 86_400_000


@pytest.fixture(scope="module")
async def plat(nats_url: str, pg_url: str, redis_url: str) -> AsyncIterator[Platform]:
    async with running_platform(nats_url, pg_url, redis_url, snapshot_interval_s=1,
                                invariant_check_s=1.0, **FAST_HASHING) as p:
        yield p


@pytest.fixture(scope="module")
async def traded(plat: Platform) -> tuple[Trader, Trader]:
    """Ann deposits USDT and buys 0.1 BTC from Bob at 50000."""
    ann = await plat.trader("ann", {"USDT": "10000"})
    bob = await plat.trader("bob", {"BTC": "1"})
    r = await bob.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="SELL",
                             type="LIMIT", timeInForce="GTC", quantity="0.1", price="50000")
    assert r.status_code == 200, r.text
    r = await ann.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY",
                             type="LIMIT", timeInForce="GTC", quantity="0.1", price="50000",
                             newOrderRespType="FULL")
    assert r.status_code == 200 and r.json()["status"] == "FILLED", r.text
    return ann, bob


async def _snapshots(trader: Trader, **params: Any) -> dict[str, Any]:
    r = await trader.api.signed("GET", "/sapi/v1/accountSnapshot", type="SPOT", **params)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


async def test_account_snapshot_answers_binances_fields(
        traded: tuple[Trader, Trader]) -> None:
    ann, _ = traded

    async def taken() -> dict[str, Any] | None:
        doc = await _snapshots(ann)
        return doc if doc["snapshotVos"] else None

    # One a day per account: the first round after the account has funds takes today's
    # (an account opened mid-day gets it at the worker's next interval round).
    doc = await eventually(taken, timeout=20)
    assert set(doc) == {"code", "msg", "snapshotVos"}
    assert doc["code"] == 200 and doc["msg"] == ""
    assert len(doc["snapshotVos"]) == 1
    vo = doc["snapshotVos"][0]
    assert set(vo) == {"type", "updateTime", "data"} and vo["type"] == "spot"
    assert isinstance(vo["updateTime"], int)
    assert set(vo["data"]) == {"totalAssetOfBtc", "balances"}
    for b in vo["data"]["balances"]:
        assert set(b) == {"asset", "free", "locked"}
        assert all(isinstance(b[k], str) for k in b)
    assert isinstance(vo["data"]["totalAssetOfBtc"], str)
    assert {b["asset"] for b in vo["data"]["balances"]} >= {"USDT"}


async def test_the_portfolio_series_shows_value_and_pnl(
        plat: Platform, traded: tuple[Trader, Trader]) -> None:
    ann, bob = traded

    async def with_btc() -> dict[str, Any] | None:
        r = await ann.api.signed("GET", "/api/v1/portfolio")
        assert r.status_code == 200, r.text
        doc: dict[str, Any] = r.json()
        # 5000 USDT left + 0.0999 BTC (0.1 less the taker's fee) at the last price 50000.
        return doc if doc["value"] == "9995.00000000" else None

    doc = await eventually(with_btc, timeout=20)
    assert doc["quote"] == "USDT" and doc["period"] == "interval" and doc["intervalMs"] == 1000
    assert {"time", "value", "pnl"} == set(doc["points"][0])
    # A deposit is not profit: more USDT credited to Ann moves her value, not her P&L.
    before = doc["points"][-1]
    await db.credit(plat.pool, ann.account, "USDT", 500_000_000_000, "ann:more")

    async def credited() -> dict[str, Any] | None:
        r = await ann.api.signed("GET", "/api/v1/portfolio",
                                 startTime=str(before["time"]))
        d: dict[str, Any] = r.json()
        return d if len(d["points"]) >= 2 and d["points"][-1]["value"] != before["value"] \
            else None

    after = await eventually(credited, timeout=20)
    first, last = after["points"][0], after["points"][-1]
    assert Decimal(last["value"]) - Decimal(first["value"]) == Decimal("5000")
    assert last["pnl"] == "0.00000000" and after["netFlows"] == "5000.00000000"
    del bob


async def test_a_round_is_idempotent_per_bucket(plat: Platform,
                                                traded: tuple[Trader, Trader]) -> None:
    cases = Portfolio(PgSnapshotStore(plat.pool), interval_ms=3_600_000)
    # Buckets no worker has taken (long ago: the latest snapshots stay the worker's).
    now = int(time.time() * 1000) - 400 * DAY_MS
    assert await cases.round(now) >= 4  # two accounts, a day's and an interval's each
    assert await cases.round(now + 1) == 0
    dup = await plat.pool.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM account_snapshots"
        " GROUP BY account_id, period, bucket_ms HAVING count(*) > 1) d")
    assert dup == 0


@pytest.mark.parametrize(("params", "code"), [
    ({"limit": "6"}, -1100), ({"limit": "31"}, -1100), ({"limit": "7x"}, -1100),
    ({"limit": "-7"}, -1100), ({"startTime": "abc"}, -1100),
    ({"startTime": "99999999999999999999999"}, -1100),
    ({"startTime": "2000", "endTime": "1000"}, -1128),
    ({"startTime": "0", "endTime": str(31 * DAY_MS)}, -1127),
    ({"type": "SPOTS"}, -1100), ({"type": ""}, -1102),
])
async def test_bad_bounds_answer_binances_errors(
        traded: tuple[Trader, Trader], params: dict[str, str], code: int) -> None:
    ann, _ = traded
    query = {"type": "SPOT", **params}
    r = await ann.api.signed("GET", "/sapi/v1/accountSnapshot", **query)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"code", "msg"} and r.json()["code"] == code, r.text


async def test_bounds_that_hold(traded: tuple[Trader, Trader]) -> None:
    ann, _ = traded
    now = int(time.time() * 1000)
    for params in ({"limit": "7"}, {"limit": "30"},
                   {"startTime": str(now - 30 * DAY_MS), "endTime": str(now)},
                   {"startTime": "0"}, {"endTime": str(now)}):
        doc = await _snapshots(ann, **params)
        assert doc["code"] == 200, params
    r = await ann.api.signed("GET", "/sapi/v1/accountSnapshot", type="MARGIN")
    assert r.json() == {"code": 200, "msg": "", "snapshotVos": []}
    r = await ann.api.signed("GET", "/sapi/v1/accountSnapshot")
    assert r.status_code == 400 and r.json()["code"] == -1102
    r = await ann.api.signed("GET", "/sapi/v1/accountSnapshot", type="SPOT",
                             startTime=str(now + DAY_MS))
    assert r.json()["snapshotVos"] == []


async def test_admin_health_shows_each_engines_sequence(
        plat: Platform, traded: tuple[Trader, Trader]) -> None:
    token = plat.settings.admin_token.get_secret_value()
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        async def checked() -> dict[str, Any] | None:
            r = await http.get("/admin/health", headers=admin_headers(token))
            assert r.status_code == 200, r.text
            doc: dict[str, Any] = r.json()
            btc = next(e for e in doc["engines"] if e["symbol"] == "BTCUSDT")
            ready = (doc["ledger"]["status"] == "ok" and btc["settlementLag"] == 0
                     and doc["marketData"]["lag"] == 0)
            return doc if ready else None

        doc = await eventually(checked, timeout=20)
        assert {e["symbol"] for e in doc["engines"]} == {p.symbol for p in DEMO_PAIRS}
        btc = next(e for e in doc["engines"] if e["symbol"] == "BTCUSDT")
        assert btc["commandSequence"] >= 2 and btc["engineSequence"] == btc["commandSequence"]
        assert btc["settledSequence"] == btc["engineSequence"]
        assert "EVENTS" in {s["name"] for s in doc["streams"]}
        assert doc["errors"] == []
        r = await http.get("/admin/health")
        assert r.status_code == 401 and "code" in r.json()
