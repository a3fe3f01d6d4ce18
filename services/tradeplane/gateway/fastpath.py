"""The hot path of order entry as a lean ASGI layer.

``POST /api/v3/order`` is by far the most frequent request; serving it here skips
FastAPI's routing, dependency injection and response validation (about a third of the
gateway's CPU per order, measured). Everything else falls through to the FastAPI app,
which also keeps the endpoint in the OpenAPI description. The business logic is the
same function either way: :func:`tradeplane.gateway.trading.place_new_order`.

Every HTTP request, this path's included, first passes the guard
(:class:`tradeplane.gateway.security.Guard`: body limit, CORS, rate limits, security
headers); its meter reaches authentication, which charges the key's limits.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
from fastapi import FastAPI
from opentelemetry import propagate, trace
from prometheus_client import Counter, Histogram
from starlette.types import Message, Receive, Scope, Send

from tradeplane import stagestamps
from tradeplane.config import Settings
from tradeplane.domain.errors import Unavailable
from tradeplane.gateway.auth import authenticate, parse_params
from tradeplane.gateway.context import gateway
from tradeplane.gateway.errors import ApiError, defect, status_unknown
from tradeplane.gateway.ratelimit import METER
from tradeplane.gateway.security import Guard, body_too_large
from tradeplane.gateway.trading import place_new_order

log = logging.getLogger("tradeplane.gateway")
tracer = trace.get_tracer("tradeplane.gateway")

_json = msgspec.json.Encoder()


HTTP_REQUESTS = Counter(
    "tradeplane_http_requests_total", "HTTP requests by route and status code",
    ["method", "route", "code"],
)
HTTP_SECONDS = Histogram(
    "tradeplane_http_request_seconds", "HTTP request duration, first byte in to last out",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)


class OrderFastPath:
    """Wraps the FastAPI app; serves ``POST /api/v3/order`` itself, and measures every HTTP
    request (rate, errors, duration per route: the API RED dashboard)."""

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.app = app
        # Label routes by their path, and anything unknown as "other": bounded labels.
        # Routers included into the app are not plain routes in ``app.routes`` (FastAPI
        # wraps them), so the API's paths come from its OpenAPI description.
        self._routes = ({getattr(r, "path", "") for r in app.routes}
                        | set(app.openapi().get("paths", {}))) - {""}
        self.max_body = settings.max_body_bytes
        self.guard = Guard(app, self._dispatch, settings)
        # The HTTP server span FastAPI makes for its routes when traces are exported: this
        # path makes its own, the root of an order's trace (or the child of the caller's
        # ``traceparent``). Without an exporter nothing is added to the hot path.
        self.traced = bool(settings.otlp_endpoint)
        # Each (method, route, status)'s series, looked up once: ``labels()`` on every
        # request cost ~5 us. Bounded as the labels are (known methods, routes, codes).
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        route = path if path in self._routes else "other"
        method = scope["method"]
        code = 500
        if path == "/api/v3/order":
            stagestamps.received()

        async def measured_send(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.guard(scope, receive, measured_send)
        finally:
            series = self._series.get((method, route, code))
            if series is None:
                series = self._series[(method, route, code)] = (
                    HTTP_REQUESTS.labels(method, route, str(code)),
                    HTTP_SECONDS.labels(method, route))
            series[0].inc()
            series[1].observe(time.perf_counter() - started)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST" and scope["path"] == "/api/v3/order":
            await self._order(scope, receive, send)
        elif scope["path"] == "/debug/stages" and stagestamps.enabled():
            await self._stages(send)
        else:
            await self.app(scope, receive, send)

    @staticmethod
    async def _stages(send: Send) -> None:
        """The benchmark's stage stamps (:mod:`tradeplane.stagestamps`), drained."""
        body = stagestamps.drain()
        await send({
            "type": "http.response.start", "status": 200,
            "headers": [(b"content-type", b"application/octet-stream"),
                        (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": body})

    async def _order(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.traced:
            await self._answer(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        with tracer.start_as_current_span(
            "POST /api/v3/order", context=propagate.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": "POST", "http.route": "/api/v3/order",
                        "url.path": "/api/v3/order"},
        ) as span:
            status = await self._answer(scope, receive, send)
            span.set_attribute("http.response.status_code", status)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> int:
        status, doc = await self._handle(scope, receive)
        body = _json.encode(doc)
        stagestamps.stamp(stagestamps.ACKED)
        await send({
            "type": "http.response.start", "status": status,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": body})
        return status

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return 400, {"code": -1000, "msg": "Client disconnected."}
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return body_too_large(self.max_body)
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        body = b"".join(chunks).decode("utf-8", errors="replace")
        raw_query = scope.get("query_string", b"").decode("latin-1")
        key = content_type = ""
        for name, value in scope["headers"]:
            if name == b"x-mbx-apikey":
                key = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
        try:
            gw = gateway(self.app)
            params = parse_params(raw_query, body, content_type)
            caller = await authenticate(gw, key, params, raw_query, body, "trade",
                                        meter=scope.get(METER))
            return 200, await place_new_order(gw, caller)
        except ApiError as exc:
            return exc.status, exc.doc()
        except Unavailable as exc:
            log.warning("order entry: %s", exc)  # the order may or may not be stored
            return 503, status_unknown().doc()
        except Exception:
            log.exception("order entry failed")
            return 500, defect().doc()
