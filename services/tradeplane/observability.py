"""JSON logs, Prometheus metrics listener and OpenTelemetry tracing, set up by each main()."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from opentelemetry import trace
from prometheus_client import start_http_server


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the current trace id when a span is active."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            doc["trace_id"] = f"{ctx.trace_id:032x}"
            doc["span_id"] = f"{ctx.span_id:016x}"
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            doc.update(extra)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def setup_tracing(service: str, otlp_endpoint: str) -> None:
    """Install the SDK tracer provider exporting over OTLP/HTTP when an endpoint is set.

    Without one, the API's no-op tracer stays: spans in the code cost (almost) nothing.
    """
    if not otlp_endpoint:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(provider)


def start_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve Prometheus /metrics on ``host``:``port`` (port 0 = do not listen: the gateway
    serves its own)."""
    if port:
        start_http_server(port, addr=host)


def setup(
    service: str, level: str, otlp_endpoint: str, metrics_port: int,
    metrics_host: str = "127.0.0.1",
) -> None:
    setup_logging(service, level)
    setup_tracing(service, otlp_endpoint)
    start_metrics(metrics_port, metrics_host)
