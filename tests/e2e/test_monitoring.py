"""The SRE's view on a real Prometheus and Alertmanager (Debian's packages): the chart's
scrape configuration (Kubernetes discovery replaced by a file of what it would find,
tests/support/monitoring.py) scrapes the release running in containers of the image
(tests/support/cluster.py); after traffic every dashboard panel's query returns data and
every alert rule evaluates; a killed engine container fires TradeplaneEngineDown and a
broken ledger in the test's throw-away database fires TradeplaneLedgerImbalance, both
received by Alertmanager; one order's trace reaches a real OTLP receiver (rotel) with the
spans of the gateway (its HTTP server span the root), the engine and settlement under one
trace id, and a cancel's trace goes from the gateway's HTTP server span to the engine.

Skipped, saying why, without Docker; fails naming the package without prometheus or
prometheus-alertmanager (.ci/run installs both)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from tests.support.cluster import CHART, FULLNAME, SYMBOL, Cluster, running_cluster
from tests.support.harness import eventually
from tests.support.monitoring import (
    ALERTMANAGER_MISSING,
    PROMETHEUS_MISSING,
    alerts,
    panel_queries,
    prometheus_config,
    query,
    rules,
    running_alertmanager,
    running_prometheus,
)
from tests.support.otlp import Collector, ReceivedSpan, running_rotel

#: The first test to ask for the image may build it: debootstrap (first run on a machine),
#: the wheelhouse and the build take up to three minutes on two busy cores.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
#: Grafana's variables as a dashboard on this Prometheus would fill them: a scrape every
#: second gives a rate interval of a few seconds.
VARIABLES = {"$__rate_interval": "10s", "$__interval": "2s", "$symbol": SYMBOL}
#: Panels with no data here, and why: nothing else may be empty.
NO_DATA_HERE = {
    # Wallet watchers need a chain node (tests/integration/test_wallets.py runs them); the
    # other custody panels read 0 without one.
    'up{component="wallet-watcher"}',
    "max by (wallet, asset) (tradeplane_wallet_reconciliation_difference_units)",
    # The desk's inventory is published by the rates service, which these pods do not
    # include (tests/integration/test_convert.py reads it from a running one).
    "max by (asset) (tradeplane_convert_desk_inventory)",
    # Likewise the hedger (tests/integration/test_convert_hedge.py runs it, with metrics).
    "sum by (outcome) (rate(tradeplane_convert_hedge_jobs_total[$__rate_interval]))",
    "sum(rate(tradeplane_convert_hedge_deliveries_total[$__rate_interval]))",
    "sum(rate(tradeplane_convert_hedge_redeliveries_total[$__rate_interval]))",
    "histogram_quantile(0.5, sum by (le) "
    "(rate(tradeplane_convert_hedge_lag_seconds_bucket[$__rate_interval])))",
    "histogram_quantile(0.99, sum by (le) "
    "(rate(tradeplane_convert_hedge_lag_seconds_bucket[$__rate_interval])))",
    "max(tradeplane_convert_hedge_oldest_open_seconds)",
    "min(tradeplane_convert_hedger_up)",
}


@dataclass
class Monitored:
    cluster: Cluster
    prometheus: str
    alertmanager: str
    collector: Collector


@pytest.fixture(scope="module")
def _servers_installed() -> None:
    for binary, reason in (("prometheus", PROMETHEUS_MISSING),
                           ("prometheus-alertmanager", ALERTMANAGER_MISSING)):
        if shutil.which(binary) is None:
            pytest.fail(reason)


@pytest.fixture(scope="module")
async def monitored(
    _servers_installed: None, tradeplane_image: str, nats_url: str, pg_url: str,
    redis_url: str, tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Monitored]:
    folder = tmp_path_factory.mktemp("monitoring")
    with running_rotel(folder) as collector:
        # Traces go to the local collector instead of the chart's Jaeger Service, and
        # settlement checks the ledger every second instead of every minute, so a broken
        # ledger shows within the test's patience.
        env = {"*": {"TRADEPLANE_OTLP_ENDPOINT": collector.endpoint},
               "settlement": {"TRADEPLANE_INVARIANT_CHECK_S": "1"}}
        async with running_cluster(tradeplane_image, nats_url, pg_url, redis_url, folder,
                                   values=("prometheus.scrapeInterval=1s",),
                                   env=env) as cluster:
            with running_alertmanager(folder) as am:
                config = prometheus_config(cluster, folder, am.removeprefix("http://"))
                with running_prometheus(config) as prom:
                    yield Monitored(cluster, prom, am, collector)


def _components(m: Monitored) -> dict[str, str]:
    return {s["metric"]["component"]: s["value"][1]
            for s in query(m.prometheus, "up")}


async def test_the_charts_scrape_config_finds_every_pod_and_labels_it_for_the_rules(
    monitored: Monitored,
) -> None:
    async def all_up() -> bool:
        return _components(monitored) == {
            "gateway": "1", "settlement": "1", "marketdata": "1", "matching-engine": "1"}

    await eventually(all_up, timeout=30)
    for sample in query(monitored.prometheus, "up"):
        assert sample["metric"]["namespace"] == "trading"
        assert sample["metric"]["pod"].startswith(FULLNAME)


async def test_only_settlement_reports_the_ledger_verdict(monitored: Monitored) -> None:
    # Every process imports the settler's module; an unset gauge would read 0, "violated",
    # and fire TradeplaneLedgerImbalance for each gateway, market-data and engine pod.
    async def reported() -> list[dict[str, object]]:
        return query(monitored.prometheus, "tradeplane_ledger_invariant_ok")

    await eventually(reported, timeout=30)
    verdicts = {s["metric"]["component"]: s["value"][1] for s in await reported()}
    assert set(verdicts) == {"settlement"}, verdicts


async def _traffic(cluster: Cluster) -> None:
    alice, bob = await cluster.trader("alice"), await cluster.trader("bob")
    try:
        for i in range(40):
            side, who = ("BUY", alice) if i % 2 else ("SELL", bob)
            r = await who.api.signed("POST", "/api/v3/order", symbol=SYMBOL, side=side,
                                     type="LIMIT", timeInForce="GTC",
                                     price=f"{60000 + (i % 5):.2f}", quantity="0.010")
            assert r.status_code == 200, r.text
        # A refusal (the price band) and a cancel: both outcomes exist on the dashboards.
        r = await alice.api.signed("POST", "/api/v3/order", symbol=SYMBOL, side="BUY",
                                   type="LIMIT", timeInForce="GTC", price="1.00",
                                   quantity="10")
        assert r.status_code == 400, r.text
        r = await alice.api.signed("POST", "/api/v3/order", symbol=SYMBOL, side="BUY",
                                   type="LIMIT", timeInForce="GTC", price="59000.00",
                                   quantity="0.010")
        oid = r.json()["orderId"]
        r = await alice.api.signed("DELETE", "/api/v3/order", symbol=SYMBOL, orderId=oid)
        assert r.status_code == 200, r.text
    finally:
        await alice.api.close()
        await bob.api.close()


def _dashboards() -> Iterator[tuple[str, str, str]]:
    for path in DASHBOARDS:
        for title, expr in panel_queries(json.loads(path.read_text())):
            yield path.name, title, expr


async def test_every_dashboard_panel_returns_data_after_traffic(monitored: Monitored) -> None:
    await _traffic(monitored.cluster)
    pending = {(d, t, e) for d, t, e in _dashboards() if e not in NO_DATA_HERE}
    assert len(pending) > 30

    async def all_have_data() -> bool:
        for dash, title, expr in sorted(pending):
            promql = expr
            for name, value in VARIABLES.items():
                promql = promql.replace(name, value)
            if query(monitored.prometheus, promql):
                pending.discard((dash, title, expr))
        assert not pending, "\n".join(f"{d} / {t}: {e}" for d, t, e in sorted(pending))
        return True

    await eventually(all_have_data, timeout=30, interval=1.0)


async def test_every_alert_rule_evaluates_without_error(monitored: Monitored) -> None:
    async def evaluated() -> bool:
        loaded = rules(monitored.prometheus)
        assert loaded and all(r["health"] == "ok" for r in loaded), [
            (r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
        return True

    await eventually(evaluated, timeout=15, interval=0.5)


def _received(m: Monitored, alert: str) -> list[dict[str, str]]:
    return [a["labels"] for a in alerts(m.alertmanager) if a["labels"]["alertname"] == alert]


async def test_a_killed_engine_fires_engine_down_and_alertmanager_receives_it(
    monitored: Monitored,
) -> None:
    engine = monitored.cluster.pods["engine"]
    assert not _received(monitored, "TradeplaneEngineDown")
    await asyncio.to_thread(engine.kill, "engine")
    try:
        async def fired() -> list[dict[str, str]]:
            return _received(monitored, "TradeplaneEngineDown")

        labels = (await eventually(fired, timeout=30, interval=0.5))[0]
        assert labels["component"] == "matching-engine" and labels["severity"] == "critical"
    finally:
        await asyncio.to_thread(engine.restart, "engine")
        await asyncio.to_thread(engine.wait_ready)


async def test_a_broken_ledger_fires_the_ledger_alert_and_alertmanager_receives_it(
    monitored: Monitored,
) -> None:
    # The test's own database: one balance no posting explains.
    pool = monitored.cluster.pool
    assert await pool.fetchval("SELECT count(*) FROM balances") > 0
    assert not _received(monitored, "TradeplaneLedgerImbalance")
    await pool.execute(
        "UPDATE balances SET available = available + 1"
        " WHERE (account_id, asset) = (SELECT account_id, asset FROM balances LIMIT 1)")

    async def fired() -> list[dict[str, str]]:
        return _received(monitored, "TradeplaneLedgerImbalance")

    labels = (await eventually(fired, timeout=30, interval=0.5))[0]
    assert labels["severity"] == "critical"


async def test_one_orders_trace_reaches_the_collector_from_gateway_engine_and_settlement(
    monitored: Monitored,
) -> None:
    carol = await monitored.cluster.trader("carol")
    try:
        r = await carol.api.signed("POST", "/api/v3/order", symbol=SYMBOL, side="BUY",
                                   type="LIMIT", timeInForce="GTC", price="59999.00",
                                   quantity="0.010", newOrderRespType="RESULT")
        assert r.status_code == 200, r.text
    finally:
        await carol.api.close()

    async def joined() -> dict[str, ReceivedSpan] | None:
        traces: dict[str, list[ReceivedSpan]] = defaultdict(list)
        for span in monitored.collector.spans():
            traces[span.trace_id].append(span)
        for spans in traces.values():
            by_name = {s.name: s for s in spans}
            if {"POST /api/v3/order", "engine.process", "settlement.apply"} <= by_name.keys():
                return by_name
        return None

    # The services' batch span processors export every 5 s.
    spans = await eventually(joined, timeout=30, interval=0.5)
    http, order, engine, settlement = (spans[n] for n in (
        "POST /api/v3/order", "order.new", "engine.process", "settlement.apply"))
    assert (http.service, http.kind, http.parent_id) == ("gateway", "SPAN_KIND_SERVER", "")
    assert order.service == "gateway" and order.parent_id == http.span_id
    assert engine.service == "matching"
    assert engine.parent_id == order.span_id  # through the command message's headers
    assert settlement.service == "settlement"
    assert settlement.parent_id == engine.span_id  # through the event message's headers


async def test_a_cancels_trace_goes_from_the_gateways_http_span_to_the_engine(
    monitored: Monitored,
) -> None:
    dave = await monitored.cluster.trader("dave")
    try:
        r = await dave.api.signed("POST", "/api/v3/order", symbol=SYMBOL, side="BUY",
                                  type="LIMIT", timeInForce="GTC", price="59998.00",
                                  quantity="0.010", newOrderRespType="RESULT")
        assert r.status_code == 200, r.text
        r = await dave.api.signed("DELETE", "/api/v3/order", symbol=SYMBOL,
                                  orderId=r.json()["orderId"])
        assert r.status_code == 200, r.text
    finally:
        await dave.api.close()

    async def joined() -> tuple[ReceivedSpan, ReceivedSpan] | None:
        spans = monitored.collector.spans()
        engine = {s.trace_id: s for s in spans if s.service == "matching"}
        for span in spans:
            if (span.service, span.name) == ("gateway", "DELETE /api/v3/order") \
                    and span.trace_id in engine:
                return span, engine[span.trace_id]
        return None

    http, engine = await eventually(joined, timeout=30, interval=0.5)
    assert http.kind == "SPAN_KIND_SERVER" and http.parent_id == ""  # the trace's root
    assert engine.trace_id == http.trace_id
