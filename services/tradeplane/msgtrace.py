"""W3C trace context in bus message headers (OpenTelemetry API only).

A bus message carries many orders: the gateway puts the commands of concurrent requests
in one JetStream message, the engine publishes one event batch per step, settlement
applies up to 500 batches in one transaction. A span has one parent, so a message
carries the context of its first traced request as the standard ``traceparent`` (+
``tracestate``) header and the others, space-separated, in ``Tradeplane-Trace-Links``;
the span that processes the message is a child of the first and links to the others
(OpenTelemetry's convention for batches). Only *sampled* contexts travel: with the usual
ratio sampling, a message rarely holds two sampled orders, so nearly every sampled
order's trace runs unbroken from the HTTP request to the ledger; without a tracer
provider nothing is sampled, messages carry no trace headers and consumers start no spans.

An order's context is also stored with it (:func:`stored`): when the outbox relay re-sends
its command, the re-send is a span of the order's trace and its message carries it on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
LINKS = "Tradeplane-Trace-Links"
#: Links kept per span (the SDK's default span limit is 128).
MAX_LINKS = 100

_propagator = TraceContextTextMapPropagator()


def tracing() -> bool:
    """Whether a tracer provider is installed (``observability.setup_tracing``, or a
    test's). Without one every span is the API's no-op span and no context is sampled:
    the order path then starts none (a no-op span costs several times this check,
    measured)."""
    return not isinstance(trace.get_tracer_provider(),
                          trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def sampled_context() -> SpanContext | None:
    """The current span's context if it is sampled (worth propagating), else None."""
    sc = trace.get_current_span().get_span_context()
    return sc if sc.trace_flags.sampled else None


def outgoing(contexts: Sequence[SpanContext]) -> dict[str, str] | None:
    """Headers for a message on behalf of ``contexts`` (sampled ones only)."""
    sampled = [c for c in contexts if c.is_valid and c.trace_flags.sampled]
    if not sampled:
        return None
    headers: dict[str, str] = {}
    first = trace.set_span_in_context(trace.NonRecordingSpan(sampled[0]))
    _propagator.inject(headers, context=first)
    if len(sampled) > 1:
        headers[LINKS] = " ".join(_format(c) for c in sampled[1 : MAX_LINKS + 1])
    return headers


def incoming(
    headers_of_messages: Iterable[Mapping[str, str] | None],
) -> tuple[Context | None, list[Link]]:
    """Parent context and links for a span processing these messages: the first traced
    message's context is the parent, every other context a link. (None, []) when no
    message is traced."""
    parent: Context | None = None
    links: list[Link] = []
    for headers in headers_of_messages:
        if headers is None or TRACEPARENT not in headers:
            continue
        ctx = _propagator.extract(headers)
        if parent is None:
            parent = ctx
        else:
            _add_link(links, trace.get_current_span(ctx).get_span_context())
        for value in headers.get(LINKS, "").split():
            _add_link(links, _parse(value))
    return parent, links


def stored() -> str | None:
    """The current sampled context as a W3C traceparent to keep with a stored record (an
    order, whose command the outbox relay may re-send later), else None."""
    sc = sampled_context()
    return None if sc is None else _format(sc)


def _add_link(links: list[Link], sc: SpanContext | None) -> None:
    if sc is not None and sc.is_valid and len(links) < MAX_LINKS:
        links.append(Link(sc))


def _format(sc: SpanContext) -> str:
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"


def _parse(traceparent: str) -> SpanContext | None:
    ctx = _propagator.extract({TRACEPARENT: traceparent})
    sc = trace.get_current_span(ctx).get_span_context()
    return sc if sc.is_valid else None
