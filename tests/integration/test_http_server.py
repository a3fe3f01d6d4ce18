"""The gateway's HTTP server itself: how long it keeps idle connections, and how it answers
a path or method it does not serve.

Idle connections: uvicorn's default (5 s) closed a pooled connection just as a client whose
loop runs every 5 s reused it, and that request got a reset instead of an answer. The
platform here keeps idle connections ``KEEP_ALIVE_S`` (the real default is minutes; a
short one keeps the test short): a request ``REUSED_AFTER_S`` after the last one (past
uvicorn's old limit) is answered on the same connection, and the server closes an idle
connection cleanly (FIN, no reset) only once its limit has passed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from tests.support.harness import Platform, running_platform

from tradeplane.config import Settings

pytestmark = pytest.mark.integration

KEEP_ALIVE_S = 8
#: Past uvicorn's 5 s default, comfortably before KEEP_ALIVE_S.
REUSED_AFTER_S = 6.0


@pytest.fixture(scope="module")
async def plat(nats_url: str, pg_url: str, redis_url: str) -> AsyncIterator[Platform]:
    async with running_platform(nats_url, pg_url, redis_url,
                                http_keep_alive_s=KEEP_ALIVE_S) as p:
        yield p


class Connection:
    """One HTTP/1.1 connection, spoken by hand so nothing reconnects behind the test's
    back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, plat: Platform) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", plat.settings.http_port)
        return cls(reader, writer)

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """Send one request and read its whole answer (Content-Length framed)."""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n".encode())
        await self.writer.drain()
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}
        body = await self.reader.readexactly(int(headers["content-length"]))
        return int(status_line.split()[1]), headers, body

    async def wait_closed_by_server(self, timeout: float) -> bytes:
        """What the server sends before closing (b"" for a clean close)."""
        return await asyncio.wait_for(self.reader.read(), timeout)

    def close(self) -> None:
        self.writer.close()


def test_the_default_idle_timeout_outlasts_clients_pools_and_proxies() -> None:
    """Minutes, and longer than the idle timeout of the proxies in front (ingress-nginx's
    upstream keepalive and AWS ALB: 60 s), so the proxy is always the side that closes."""
    assert Settings.model_fields["http_keep_alive_s"].default > 60


async def test_an_idle_connection_is_reused_past_5s_and_closed_cleanly_at_the_limit(
    plat: Platform,
) -> None:
    reused, idle = await Connection.open(plat), await Connection.open(plat)
    try:
        assert (await reused.get("/api/v3/ping"))[0] == 200
        assert (await idle.get("/api/v3/time"))[0] == 200
        since = time.monotonic()

        async def request_later() -> tuple[int, dict[str, str], bytes]:
            # The idle time is what is under test: nothing to poll for.
            await asyncio.sleep(REUSED_AFTER_S)
            return await reused.get("/api/v3/time")

        # Both at once: the whole test waits about KEEP_ALIVE_S.
        answered, closed = await asyncio.gather(
            request_later(), idle.wait_closed_by_server(KEEP_ALIVE_S + 10))
        status, headers, body = answered
        assert status == 200 and "serverTime" in json.loads(body)
        assert headers.get("connection", "keep-alive") != "close"
        assert closed == b""  # a clean close (FIN): no half-sent answer, no reset
        assert time.monotonic() - since >= KEEP_ALIVE_S - 0.5  # not before the limit
    finally:
        reused.close()
        idle.close()


async def test_a_pooled_httpx_client_sends_again_on_its_one_connection(plat: Platform) -> None:
    """What a bot does: one pooled connection, a request every few seconds. (httpx itself
    drops a connection idle for 5 s by default: its ``keepalive_expiry``.)"""
    limits = httpx.Limits(max_connections=1, keepalive_expiry=60)
    async with httpx.AsyncClient(base_url=plat.base_url, limits=limits) as http:
        first = await http.get("/api/v3/ping")
        peer = first.extensions["network_stream"].get_extra_info("client_addr")
        await asyncio.sleep(REUSED_AFTER_S)  # idle past uvicorn's old limit, as above
        second = await http.get("/api/v3/ping")
        assert (first.status_code, second.status_code) == (200, 200)
        assert second.extensions["network_stream"].get_extra_info("client_addr") == peer


# --------------------------------------------------------------------------- refusals
async def test_an_unknown_path_is_a_binance_style_404(plat: Platform) -> None:
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        for path in ("/api/v3/nothing", "/sapi/v1/nothing/here", "/fapi/v1/ticker/price",
                     "/redoc", "/api/v9/ping"):  # "/" leads to /docs (test_apidoc.py)
            r = await http.get(path)
            assert r.status_code == 404, path
            assert r.headers["content-type"] == "application/json"
            assert r.json() == {"code": -1020, "msg": "This operation is not supported."}, path


async def test_a_method_a_path_does_not_serve_is_a_binance_style_405(plat: Platform) -> None:
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        r = await http.post("/api/v3/ping")
        assert r.status_code == 405
        assert r.json() == {"code": -1020, "msg": "This operation is not supported."}
        assert r.headers["allow"] == "GET"
        r = await http.delete("/api/v3/exchangeInfo")
        assert (r.status_code, r.json()["code"]) == (405, -1020)
