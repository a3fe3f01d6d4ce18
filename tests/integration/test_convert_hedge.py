"""The convert desk's hedge and the conversion status stream against the real platform
(NATS JetStream, PostgreSQL, Redis, the gateway over HTTP and WebSocket, the engines and
settlement), with the hedger running in the test's loop as ``tradeplane hedger`` composes
it (``services.hedger_parts``).

Failures are injected at the hedge's order-placement port (:class:`RefusingPlacement`, a
named test double that refuses as the order path would, then places for real); NATS is
never mocked. The ledger's invariants hold after every test.

The books (a maker's resting orders, deep enough for every hedge of the module):
BTCUSDT bids 1 @ 50000, asks 1 @ 50010.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import websockets
import yaml
from prometheus_client import REGISTRY
from tests.integration.test_user_stream import UserStream, user_stream
from tests.support.harness import Platform, Trader, eventually

from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus
from tradeplane.adapters.cache import MarketCache
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.adapters.convert_db import PgHedgeStore
from tradeplane.adapters.hedge_queue import HedgeJobs
from tradeplane.demo.client import ApiClient
from tradeplane.domain.convert import DESK_ACCOUNT
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import PairRules
from tradeplane.services import hedger_parts
from tradeplane.usecases.hedge import HedgePlacement, hedge_client_id
from tradeplane.usecases.orders import OrderRefused, OrderRow, PlaceOrder, Refusal

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "charts" / "tradeplane" / "rules" / "alerts.yaml"
MAX_DELIVERIES = 3
#: What every test's hedger runs with: short backoff, three deliveries, a killed
#: worker's job back after 2 s.
HEDGE_SETTINGS = {"hedge_max_deliveries": MAX_DELIVERIES, "hedge_backoff_s": 0.2,
                  "hedge_backoff_max_s": 1.0, "hedge_ack_wait_s": 2.0}
FEE_PPM = 1000  # the demo pairs' taker fee


# --------------------------------------------------------------------------- doubles
class RefusingPlacement:
    """Test double of the hedge's order-placement port: refuses the first ``failures``
    placements as the order path refuses an order it could not confirm (-1007), then
    places through the real order path. Counts every call."""

    def __init__(self, inner: HedgePlacement, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.calls = 0

    async def place(self, rules: PairRules, request: PlaceOrder, now_ms: int) -> OrderRow:
        self.calls += 1
        if self.calls <= self.failures:
            raise OrderRefused(Refusal(-1007, "Timeout waiting for response (injected)."))
        return await self.inner.place(rules, request, now_ms)


class StallAfterPlacing:
    """Test double of the placement port: places for real, then never returns (a worker
    stuck mid-job, about to be killed)."""

    def __init__(self, inner: HedgePlacement) -> None:
        self.inner = inner
        self.placed = asyncio.Event()

    async def place(self, rules: PairRules, request: PlaceOrder, now_ms: int) -> OrderRow:
        await self.inner.place(rules, request, now_ms)
        self.placed.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
async def books(plat: Platform) -> None:
    maker = await plat.trader("hedge-maker", {"BTC": "10", "USDT": "1000000"})
    for side, price in (("BUY", "50000"), ("SELL", "50010")):
        r = await maker.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side=side,
                                   type="LIMIT", timeInForce="GTC", price=price, quantity="1")
        assert r.status_code == 200, r.text

    async def published() -> bool:
        depth = await maker.api.public("/api/v3/depth", symbol="BTCUSDT")
        return len(depth["bids"]) == 1 and len(depth["asks"]) == 1

    await eventually(published)
    for asset, amount in (("USDT", "100000"), ("BTC", "5")):
        await db.credit(plat.pool, DESK_ACCOUNT, asset, to_units(amount), f"desk:{asset}")


@pytest.fixture(autouse=True)
async def ledger_sound(plat: Platform, books: None) -> AsyncIterator[None]:
    yield
    _, problems = await db.check_invariants(plat.pool)
    assert problems == []


Wrap = Callable[[HedgePlacement], HedgePlacement]


def start_hedger(plat: Platform, name: str, wrap: Wrap) -> None:
    settings = plat.settings.model_copy(update=HEDGE_SETTINGS)

    async def body(stop: asyncio.Event) -> None:
        bus = await Bus.connect(settings.nats_url, name=name)
        cache = await MarketCache.connect(settings.redis_url)
        try:
            async with hedger_parts(settings, plat.pool, bus, cache, wrap) as worker:
                await worker.run(stop)
        finally:
            await cache.close()
            await bus.close()

    plat.start_service(name, body)


@contextlib.asynccontextmanager
async def hedger(plat: Platform, wrap: Wrap, name: str = "hedger") -> AsyncIterator[None]:
    start_hedger(plat, name, wrap)
    try:
        yield
    finally:
        if name in plat.tasks:
            await plat.stop_service(name)


# --------------------------------------------------------------------------- helpers
async def converter(plat: Platform, funds: dict[str, str]) -> Trader:
    name = f"hedge-{secrets.token_hex(4)}"
    account = await db.create_account(plat.pool, name)
    secret = secrets.token_hex(32)
    cipher = SecretCipher(plat.settings.secret_key.get_secret_value())
    key = await db.create_api_key(plat.pool, account, cipher.encrypt(secret),
                                  ["read", "convert"])
    for asset, amount in funds.items():
        await db.credit(plat.pool, account, asset, to_units(amount), f"{name}:{asset}")
    api = ApiClient(plat.base_url, key, secret)
    plat.clients.append(api)
    return Trader(account, key, secret, api)


async def convert_btc(t: Trader, amount: str = "0.01") -> tuple[dict[str, Any], int]:
    """Quote and accept ``amount`` BTC -> USDT; the quote and the convert order id."""
    r = await t.api.signed("POST", "/sapi/v1/convert/getQuote", fromAsset="BTC",
                           toAsset="USDT", fromAmount=amount)
    assert r.status_code == 200, r.text
    q = r.json()
    r = await t.api.signed("POST", "/sapi/v1/convert/acceptQuote", quoteId=q["quoteId"])
    assert r.status_code == 200, r.text
    return q, int(r.json()["orderId"])


async def routing_status(t: Trader, order_id: int) -> dict[str, Any]:
    r = await t.api.signed("GET", "/sapi/v1/convert/orderStatus", orderId=str(order_id))
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


async def until_routing(t: Trader, order_id: int, status: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        doc = await routing_status(t, order_id)
        return doc if doc["routingStatus"] == status else None

    return await eventually(reached, timeout=30)


async def hedge_orders(plat: Platform, order_id: int) -> list[tuple[int, int, int]]:
    """``(status, executed lots, hold remaining)`` of the desk's orders for the leg."""
    rows = await plat.pool.fetch(
        "SELECT status, executed, hold_remaining FROM orders WHERE account_id = $1"
        " AND client_order_id = $2 ORDER BY id", DESK_ACCOUNT, hedge_client_id(order_id, 0))
    return [(r["status"], r["executed"], r["hold_remaining"]) for r in rows]


def jobs(outcome: str) -> float:
    return REGISTRY.get_sample_value("tradeplane_convert_hedge_jobs_total",
                                     {"outcome": outcome}) or 0.0


def deliveries() -> float:
    return REGISTRY.get_sample_value("tradeplane_convert_hedge_deliveries_total") or 0.0


def updates(stream: UserStream, order_id: int) -> list[str]:
    return [m["status"] for m in stream.events
            if m.get("e") == "convertOrderUpdate" and m["orderId"] == order_id]


async def listen_key(t: Trader) -> str:
    r = await t.api.http.post("/api/v3/userDataStream", headers={"X-MBX-APIKEY": t.api_key})
    assert r.status_code == 200, r.text
    key: str = r.json()["listenKey"]
    return key


def order_socket(plat: Platform, order_id: str, key: str) -> Any:
    return websockets.connect(
        f"ws://127.0.0.1:{plat.settings.http_port}/ws/convert/{order_id}?listenKey={key}")


async def read_until_closed(ws: Any) -> tuple[list[dict[str, Any]], int]:
    """Every frame until the server closes the socket, and its close code."""
    got: list[dict[str, Any]] = []
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            got.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    return got, int(ws.close_code)


UNIT_LOTS = to_units("0.00001")  # BTCUSDT's lot


# --------------------------------------------------------------------------- hedging
async def test_a_hedge_refused_twice_fills_on_its_third_delivery_and_streams_every_state(
    plat: Platform,
) -> None:
    t = await converter(plat, {"BTC": "0.01"})
    desk_before = await plat.balances(DESK_ACCOUNT)
    retried, hedged, delivered = jobs("retried"), jobs("hedged"), deliveries()
    doubles: list[RefusingPlacement] = []

    def wrap(inner: HedgePlacement) -> HedgePlacement:
        doubles.append(RefusingPlacement(inner, failures=2))
        return doubles[-1]

    async with hedger(plat, wrap), user_stream(plat, t) as stream:
        q, order_id = await convert_btc(t)
        async with order_socket(plat, str(order_id), await listen_key(t)) as ws:
            frames, code = await read_until_closed(ws)
        done = await until_routing(t, order_id, "CONFIRMED")

        async def four() -> bool:
            return len(updates(stream, order_id)) == 4

        await eventually(four)
        assert updates(stream, order_id) == ["PENDING", "ROUTING", "ROUTING_COMPLETE",
                                             "CONFIRMED"]
    assert done["orderStatus"] == "SUCCESS"  # the user's side, in every routing state
    # The per-order socket: the state when it opened, every later one, closed at the end.
    states = [f["status"] for f in frames]
    assert states[-1] == "CONFIRMED" and code == 1000
    order = ["PENDING", "ROUTING", "ROUTING_COMPLETE", "CONFIRMED"]
    assert [order.index(s) for s in states] == sorted({order.index(s) for s in states})
    assert all(f["orderId"] == order_id and f["orderStatus"] == "SUCCESS" for f in frames)
    # Two refusals, then one IOC order that filled the whole leg; three deliveries.
    assert doubles[0].calls == 3
    assert await hedge_orders(plat, order_id) == [(3, to_units("0.01") // UNIT_LOTS, 0)]
    assert jobs("retried") - retried == 2 and jobs("hedged") - hedged == 1
    assert deliveries() - delivered == 3
    # The desk is flat in BTC and kept the spread: it sold 0.01 BTC at 50000 less the
    # taker fee and paid the user the quote's toAmount.
    desk = await plat.balances(DESK_ACCOUNT)
    assert desk["BTC"] == desk_before["BTC"]
    proceeds = to_units("500") - to_units("500") * FEE_PPM // 1_000_000
    assert desk["USDT"][0] == desk_before["USDT"][0] - to_units(q["toAmount"]) + proceeds


async def test_a_hedge_that_exhausts_its_deliveries_is_dead_lettered_and_alerts(
    plat: Platform, tmp_path: Path,
) -> None:
    t = await converter(plat, {"BTC": "0.01"})
    desk_before = await plat.balances(DESK_ACCOUNT)
    dead_before = jobs("dead_lettered")
    doubles: list[RefusingPlacement] = []

    def wrap(inner: HedgePlacement) -> HedgePlacement:
        doubles.append(RefusingPlacement(inner, failures=10**6))
        return doubles[-1]

    async with hedger(plat, wrap), user_stream(plat, t) as stream:
        _, order_id = await convert_btc(t)
        failed = await until_routing(t, order_id, "FAILED")

        async def final() -> bool:
            return updates(stream, order_id)[-1:] == ["FAILED"]

        await eventually(final)
        # The per-order socket of a final order: its state, then closed at once.
        async with order_socket(plat, str(order_id), await listen_key(t)) as ws:
            frames, code = await read_until_closed(ws)
    assert [f["status"] for f in frames] == ["FAILED"] and code == 1000
    assert failed["orderStatus"] == "SUCCESS"  # the user's conversion stands
    assert doubles[0].calls == MAX_DELIVERIES
    assert await hedge_orders(plat, order_id) == []
    bus = await Bus.connect(plat.settings.nats_url, name="dlq-reader")
    try:
        dead = [d for d in await HedgeJobs(bus).dead_letters() if d["orderId"] == order_id]
    finally:
        await bus.close()
    assert len(dead) == 1 and dead[0]["deliveries"] == MAX_DELIVERIES
    assert "-1007" in str(dead[0]["reason"])
    dead_after = jobs("dead_lettered")
    assert dead_after - dead_before == 1
    # The desk carries the unhedged position: the user's BTC, nothing sold.
    desk = await plat.balances(DESK_ACCOUNT)
    assert desk["BTC"][0] == desk_before["BTC"][0] + to_units("0.01")
    # The chart's alert fires on exactly this counter's step (promtool's rule test).
    alert_fires_on(tmp_path, dead_before, dead_after)


def alert_fires_on(tmp_path: Path, before: float, after: float) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package ships it)")
    series = 'tradeplane_convert_hedge_jobs_total{outcome="dead_lettered", job="hedger"}'
    rule = next(r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
                if r.get("alert") == "TradeplaneConvertHedgeDeadLettered")
    tests = {"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": series, "values": f"{before:g}x5 {after:g}x10"}],
        "alert_rule_test": [
            {"eval_time": "4m", "alertname": "TradeplaneConvertHedgeDeadLettered",
             "exp_alerts": []},
            {"eval_time": "8m", "alertname": "TradeplaneConvertHedgeDeadLettered",
             "exp_alerts": [{"exp_labels": {"severity": "warning"},
                             "exp_annotations": rule["annotations"]}]},
        ]}]}
    path = tmp_path / "hedge-alert-test.yaml"
    path.write_text(yaml.safe_dump(tests))
    done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_a_job_redelivered_after_its_worker_was_killed_mid_job_is_not_hedged_twice(
    plat: Platform,
) -> None:
    t = await converter(plat, {"BTC": "0.01"})
    desk_before = await plat.balances(DESK_ACCOUNT)
    stalls: list[StallAfterPlacing] = []
    counting: list[RefusingPlacement] = []

    def stall(inner: HedgePlacement) -> HedgePlacement:
        stalls.append(StallAfterPlacing(inner))
        return stalls[-1]

    def count(inner: HedgePlacement) -> HedgePlacement:
        counting.append(RefusingPlacement(inner, failures=0))
        return counting[-1]

    start_hedger(plat, "hedger-killed", stall)
    _, order_id = await convert_btc(t)
    await asyncio.wait_for(stalls[0].placed.wait(), 20)
    plat.kill_service("hedger-killed")  # mid-job: placed, never acknowledged
    async with hedger(plat, count, "hedger-next"):
        await until_routing(t, order_id, "CONFIRMED")
    assert counting[0].calls == 0  # the leg was found hedged in the ledger
    assert await hedge_orders(plat, order_id) == [(3, to_units("0.01") // UNIT_LOTS, 0)]
    desk = await plat.balances(DESK_ACCOUNT)
    assert desk["BTC"] == desk_before["BTC"]


async def test_a_conversion_claimed_by_another_worker_is_not_hedged_beside_it(
    plat: Platform,
) -> None:
    """A worker whose delivery outlived ``ack_wait`` still holds the conversion's claim
    (PostgreSQL advisory lock): the worker given the redelivery places nothing and
    retries until the claim is released."""
    t = await converter(plat, {"BTC": "0.01"})
    counting: list[RefusingPlacement] = []

    def count(inner: HedgePlacement) -> HedgePlacement:
        counting.append(RefusingPlacement(inner, failures=0))
        return counting[-1]

    retried = jobs("retried")
    async with hedger(plat, count):
        # Claimed before the job exists: the hedger's first deliveries find it held.
        async with PgHedgeStore(plat.pool).claim(await next_conversion_id(plat)) as mine:
            assert mine
            _, order_id = await convert_btc(t)

            async def refused_twice() -> bool:
                return jobs("retried") - retried >= 2

            await eventually(refused_twice)
            assert counting[0].calls == 0 and await hedge_orders(plat, order_id) == []
        await until_routing(t, order_id, "CONFIRMED")
    assert counting[0].calls == 1 and len(await hedge_orders(plat, order_id)) == 1


async def next_conversion_id(plat: Platform) -> int:
    """The id the next acceptance gets (nothing else converts meanwhile in this module)."""
    row = await plat.pool.fetchrow("SELECT last_value, is_called FROM convert_order_ids")
    return int(row["last_value"]) + (1 if row["is_called"] else 0)


async def test_a_job_whose_enqueue_was_lost_is_sent_by_the_relay(plat: Platform) -> None:
    """The outbox: the job row is committed with the conversion. With the work queue gone
    (deleted: the gateway's post-commit enqueue fails, as with NATS unreachable) the
    conversion still succeeds, its row stays unsent, and the hedger's relay sends it once
    the queue is back (the hedger re-creates it) and the row is ``relay_age_ms`` old."""
    t = await converter(plat, {"BTC": "0.01"})
    bus = await Bus.connect(plat.settings.nats_url, name="queue-remover")
    try:
        await bus.js.delete_stream("CONVERT_HEDGE")
    finally:
        await bus.close()
    _, order_id = await convert_btc(t)
    assert await plat.pool.fetchval(
        "SELECT enqueued FROM convert_hedges WHERE order_id = $1", order_id) is False
    await plat.pool.execute(  # as if accepted a minute ago
        "UPDATE convert_hedges SET created_ms = created_ms - 60000 WHERE order_id = $1",
        order_id)
    counting: list[RefusingPlacement] = []

    def count(inner: HedgePlacement) -> HedgePlacement:
        counting.append(RefusingPlacement(inner, failures=0))
        return counting[-1]

    async with hedger(plat, count):
        await until_routing(t, order_id, "CONFIRMED")
    assert counting[0].calls == 1
    assert len(await hedge_orders(plat, order_id)) == 1
    assert await plat.pool.fetchval(
        "SELECT enqueued FROM convert_hedges WHERE order_id = $1", order_id) is True
    # The relay measured the hedge lag before the job was worked: a minute old.
    lag = REGISTRY.get_sample_value("tradeplane_convert_hedge_oldest_open_seconds")
    assert lag is not None and 60 <= lag < 120


async def test_the_queues_consumer_follows_the_hedgers_settings(plat: Platform) -> None:
    bus = await Bus.connect(plat.settings.nats_url, name="consumer-settings")
    try:
        for deliveries, wait in ((7, 9.0), (MAX_DELIVERIES, 2.0)):  # then back as it was
            await HedgeJobs(bus, max_deliveries=deliveries, ack_wait_s=wait).ensure()
            info = await bus.js.consumer_info("CONVERT_HEDGE", "hedger")
            assert info.config.max_deliver == deliveries + 1
            assert info.config.ack_wait == wait
        stream = await bus.js.stream_info("CONVERT_HEDGE")
        assert stream.config.retention == "workqueue"
    finally:
        await bus.close()


# --------------------------------------------------------------------------- status socket
async def test_the_order_socket_refuses_a_malformed_order_id(plat: Platform) -> None:
    t = await converter(plat, {})
    key = await listen_key(t)
    for bad in ("abc", "0", "-1", "1" * 20, "12%2034"):
        async with order_socket(plat, bad, key) as ws:
            frames, code = await read_until_closed(ws)
        assert code == 1008, bad
        assert frames == [{"code": -1100, "msg": "Illegal characters found in parameter "
                                                 "'orderId'; legal range is "
                                                 "'^[0-9]{1,19}$'."}], bad


async def test_the_order_socket_refuses_another_accounts_order_and_a_bad_listen_key(
    plat: Platform,
) -> None:
    owner = await converter(plat, {"BTC": "0.01"})
    other = await converter(plat, {})
    _, order_id = await convert_btc(owner)
    async with order_socket(plat, str(order_id), await listen_key(other)) as ws:
        frames, code = await read_until_closed(ws)
    assert code == 1008
    assert frames == [{"code": -23008, "msg": "Order does not exist."}]
    async with order_socket(plat, str(order_id), "x" * 64) as ws:
        frames, code = await read_until_closed(ws)
    assert code == 1008
    assert frames == [{"code": -1125, "msg": "This listenKey does not exist."}]
    async with order_socket(plat, "999999999", await listen_key(owner)) as ws:
        frames, code = await read_until_closed(ws)
    assert frames == [{"code": -23008, "msg": "Order does not exist."}] and code == 1008
