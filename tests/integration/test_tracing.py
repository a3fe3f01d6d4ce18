"""One order, one trace: the gateway's span, the engine's span (through the JetStream
command message's headers) and the settlement and market-data spans (through the event
batch's headers), with the right parents; log lines inside carry the trace id."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from tests.support.harness import Platform, eventually
from tests.support.tracing import SpanCapture, install_test_tracing

from tradeplane import msgtrace
from tradeplane.adapters.bus import EVENTS_STREAM, Bus, command_stream, event_subject
from tradeplane.observability import JsonFormatter

pytestmark = pytest.mark.integration



@pytest.fixture
def tracing() -> Iterator[SpanCapture]:
    t = install_test_tracing()
    t.exporter.clear()
    t.switch.on = True
    try:
        yield t
    finally:
        t.switch.on = False


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The services' JSON log lines (observability.JsonFormatter), DEBUG and up."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("test"))
    loggers = [logging.getLogger(n) for n in ("tradeplane.engine", "tradeplane.settlement")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_order_is_one_trace_from_http_to_ledger(
    plat: Platform, tracing: SpanCapture, json_logs: io.StringIO
) -> None:
    alice = await plat.trader("alice", {"USDT": "1000"})
    r = await alice.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY",
                               type="LIMIT", timeInForce="GTC", price="100.00",
                               quantity="1", newOrderRespType="RESULT")
    assert r.status_code == 200, r.text
    order_id = r.json()["orderId"]

    async def spans() -> dict[str, ReadableSpan] | None:
        gw = [s for s in tracing.spans("order.new")
              if s.attributes and s.attributes.get("order_id") == order_id]
        if not gw:
            return None
        trace_id = gw[0].context.trace_id
        mine = {s.name: s for s in tracing.spans() if s.context.trace_id == trace_id}
        wanted = {"order.new", "engine.process", "settlement.apply", "marketdata.apply"}
        return mine if wanted <= mine.keys() else None

    found = await eventually(spans, timeout=15)
    gateway, engine = found["order.new"], found["engine.process"]
    settlement, market = found["settlement.apply"], found["marketdata.apply"]
    assert _parent(gateway) is None
    assert _parent(engine) == gateway.context.span_id
    assert engine.parent is not None and engine.parent.is_remote
    assert _parent(settlement) == engine.context.span_id
    assert _parent(market) == engine.context.span_id
    assert engine.attributes is not None and engine.attributes["symbol"] == "BTCUSDT"

    # The settlement transaction logged inside its span: the JSON line has its trace id.
    trace_hex = f"{gateway.context.trace_id:032x}"
    lines = [json.loads(x) for x in json_logs.getvalue().splitlines()]
    settled = [x for x in lines if x["logger"] == "tradeplane.settlement"
               and x["msg"] == "settled" and x.get("trace_id") == trace_hex]
    assert settled and settled[0]["span_id"] == f"{settlement.context.span_id:016x}"


async def test_engine_log_lines_inside_a_traced_message_carry_its_trace_id(
    plat: Platform, tracing: SpanCapture, json_logs: io.StringIO
) -> None:
    trace_hex = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {msgtrace.TRACEPARENT: f"00-{trace_hex}-00f067aa0ba902b7-01"}
    bus = await Bus.connect(plat.settings.nats_url, name="test")
    try:
        await bus.publish_command("ETHBTC", b"\x00not a command", "garbage-1", headers)
    finally:
        await bus.close()

    async def logged() -> list[dict[str, str]]:
        return [x for x in map(json.loads, json_logs.getvalue().splitlines())
                if x["msg"] == "undecodable command message skipped"]

    line = (await eventually(logged))[0]
    assert line["trace_id"] == trace_hex
    engine = [s for s in tracing.spans("engine.process")
              if s.context.trace_id == int(trace_hex, 16)]
    assert engine and line["span_id"] == f"{engine[0].context.span_id:016x}"


async def test_untraced_orders_carry_no_trace_headers(plat: Platform) -> None:
    """Without a sampled span (no tracer provider, or not sampled) nothing is added to
    the messages and consumers start no spans: the hot path stays as it was."""
    install_test_tracing().switch.on = False
    bob = await plat.trader("bob", {"USDT": "1000"})
    r = await bob.api.signed("POST", "/api/v3/order", symbol="ETHUSDT", side="BUY",
                             type="LIMIT", timeInForce="GTC", price="10.00",
                             quantity="1", newOrderRespType="RESULT")
    assert r.status_code == 200, r.text
    bus = await Bus.connect(plat.settings.nats_url, name="test")
    try:
        cmd = await bus.js.get_last_msg(command_stream("ETHUSDT"), "cmd.ETHUSDT")
        evt = await bus.js.get_last_msg(EVENTS_STREAM, event_subject("ETHUSDT"))
    finally:
        await bus.close()
    for msg in (cmd, evt):
        assert msg.headers is not None and "Nats-Msg-Id" in msg.headers
        assert msgtrace.TRACEPARENT not in msg.headers
