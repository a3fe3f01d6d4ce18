"""Trace context in message headers: the first sampled context is the parent, the others
links; unsampled and invalid contexts do not travel."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import SpanContext, TraceFlags

from tradeplane import msgtrace


def _ctx(n: int, sampled: bool = True) -> SpanContext:
    return SpanContext(trace_id=0x1000 + n, span_id=0x10 + n, is_remote=False,
                       trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else 0))


def test_first_sampled_context_is_the_parent_the_others_are_links() -> None:
    headers = msgtrace.outgoing([_ctx(1, sampled=False), _ctx(2), _ctx(3), _ctx(4)])
    assert headers is not None
    assert headers["traceparent"] == f"00-{0x1002:032x}-{0x12:016x}-01"
    parent, links = msgtrace.incoming([None, {"Nats-Msg-Id": "x"}, headers])
    assert parent is not None
    sc = trace.get_current_span(parent).get_span_context()
    assert (sc.trace_id, sc.span_id, sc.is_remote) == (0x1002, 0x12, True)
    assert [(ln.context.trace_id, ln.context.span_id) for ln in links] == [
        (0x1003, 0x13), (0x1004, 0x14)]


def test_contexts_of_several_messages_link_to_the_first() -> None:
    a = msgtrace.outgoing([_ctx(1)])
    b = msgtrace.outgoing([_ctx(2), _ctx(3)])
    parent, links = msgtrace.incoming([a, b])
    assert trace.get_current_span(parent).get_span_context().span_id == 0x11
    assert [ln.context.span_id for ln in links] == [0x12, 0x13]


def test_nothing_sampled_means_no_headers_and_no_parent() -> None:
    assert msgtrace.outgoing([_ctx(1, sampled=False), trace.INVALID_SPAN_CONTEXT]) is None
    assert msgtrace.incoming([None, {"Nats-Msg-Id": "x"}]) == (None, [])
    assert msgtrace.sampled_context() is None  # no span here


def test_links_are_capped() -> None:
    headers = msgtrace.outgoing([_ctx(i) for i in range(300)])
    assert headers is not None
    _, links = msgtrace.incoming([headers, headers])
    assert len(links) == msgtrace.MAX_LINKS
