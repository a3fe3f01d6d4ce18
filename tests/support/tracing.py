"""An OpenTelemetry SDK tracer provider for tests, exporting to memory.

A process has one global tracer provider and it can be set only once, so it is installed
once (idempotent) with a sampler that starts new traces only while switched on: other
tests in the session keep running untraced, as in production without an OTLP endpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes


class SwitchSampler(Sampler):
    """Samples new (root) traces while ``on``; children follow their parent (ParentBased)."""

    def __init__(self) -> None:
        self.on = False

    def should_sample(
        self, parent_context: Context | None, trace_id: int, name: str,
        kind: SpanKind | None = None, attributes: Attributes = None,
        links: Sequence[Link] | None = None, trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        decision = Decision.RECORD_AND_SAMPLE if self.on else Decision.DROP
        return SamplingResult(decision, attributes if self.on else None)

    def get_description(self) -> str:
        return "SwitchSampler"


@dataclass
class SpanCapture:
    exporter: InMemorySpanExporter
    switch: SwitchSampler

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name in (None, s.name)]


_installed: SpanCapture | None = None


def install_test_tracing() -> SpanCapture:
    global _installed
    if _installed is None:
        switch = SwitchSampler()
        exporter = InMemorySpanExporter()
        provider = TracerProvider(sampler=ParentBased(root=switch))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _installed = SpanCapture(exporter, switch)
    return _installed
