"""Binance's WebSocket limits on a real gateway with its default (production) settings:
a frame over the size limit closes the socket (1009) before the gateway reads it, a sixth
message within a second closes it (1008), the 301st connection attempt from one address
within 5 minutes is refused with HTTP 429, error replies never echo a client's input whole,
and REST keeps answering meanwhile. With a short listen-key lifetime: a user stream whose
listen key expires gets ``listenKeyExpired`` and is closed; keepalives keep it open."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import websockets
from tests.support.harness import Platform, eventually, running_platform

pytestmark = pytest.mark.integration

LISTEN_KEY_TTL_S = 2


@pytest.fixture(scope="module")
async def plat(nats_url: str, pg_url: str, redis_url: str) -> AsyncIterator[Platform]:
    async with running_platform(nats_url, pg_url, redis_url,
                                listen_key_ttl_s=LISTEN_KEY_TTL_S) as p:
        yield p


def _ws(plat: Platform, path: str) -> str:
    return f"ws://127.0.0.1:{plat.settings.http_port}{path}"


async def _closed_with(ws: Any) -> tuple[int, str]:
    """Read until the gateway closes the socket; its close code and reason."""
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason


async def _rest_answers(plat: Platform) -> bool:
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        return (await http.get("/api/v3/time")).status_code == 200


async def test_a_frame_over_the_size_limit_closes_the_socket_with_1009(plat: Platform) -> None:
    assert plat.settings.ws_max_message_bytes == 4096
    async with websockets.connect(_ws(plat, "/ws")) as ws:
        name = "x" * 5000
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": [name], "id": 1}))
        code, _ = await _closed_with(ws)
        assert code == 1009
    async with websockets.connect(_ws(plat, "/ws")) as ws:  # just under: answered
        name = "y" * 4000
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": [name], "id": 2}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["id"] == 2 and reply["error"]["code"] == 2
        # The error names the stream, shortened: never the client's input whole.
        assert len(reply["error"]["msg"]) < 150 and "y" * 64 in reply["error"]["msg"]
    assert await _rest_answers(plat)


async def test_a_sixth_message_within_a_second_closes_the_socket(plat: Platform) -> None:
    assert plat.settings.ws_messages_per_second == 5
    async with websockets.connect(_ws(plat, "/stream?streams=btcusdt@trade")) as ws:
        for n in range(6):
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": n}))
        replies = []
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                replies.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        assert [r["id"] for r in replies] == [0, 1, 2, 3, 4]
        assert (ws.close_code, ws.close_reason) == (
            1008, "Too many messages; the limit is 5 per second.")
    assert await _rest_answers(plat)


async def test_connection_attempts_per_address_are_limited_to_300_per_5_minutes(
    plat: Platform,
) -> None:
    assert (plat.settings.ws_connections_per_window, plat.settings.ws_connection_window_s) \
        == (300, 300)
    r = aioredis.from_url(plat.settings.redis_url)

    async def forget_attempts() -> None:
        async for key in r.scan_iter("LIMITS:wsconn*"):
            await r.delete(key)

    await forget_attempts()
    try:
        for _ in range(300):
            async with websockets.connect(_ws(plat, "/ws")):
                pass
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(_ws(plat, "/ws/btcusdt@trade")):
                pass
        response = refused.value.response
        assert response.status_code == 429
        assert json.loads(response.body) == {
            "code": -1003,
            "msg": "Too many connection attempts; the limit is 300 per 300 seconds."}
        assert 0 < int(response.headers["Retry-After"]) <= 300
        assert await _rest_answers(plat)  # the address's REST requests are not affected
    finally:
        await forget_attempts()
        await r.aclose()


async def test_an_expired_listen_key_gets_listen_key_expired_and_is_closed(
    plat: Platform,
) -> None:
    t = await plat.trader("ws-expiry", {"USDT": "1"})
    headers = {"X-MBX-APIKEY": t.api_key}
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        key = (await http.post("/api/v3/userDataStream", headers=headers)).json()["listenKey"]
        async with websockets.connect(_ws(plat, f"/ws/{key}")) as ws:
            # Kept alive (every half lifetime, as a client does): the socket stays open
            # past several lifetimes.
            for _ in range(3 * LISTEN_KEY_TTL_S):
                r = await http.put("/api/v3/userDataStream", params={"listenKey": key},
                                   headers=headers)
                assert r.status_code == 200, r.text
                with contextlib.suppress(TimeoutError):
                    msg = await asyncio.wait_for(ws.recv(), LISTEN_KEY_TTL_S / 2)
                    pytest.fail(f"unexpected {msg!r}")
            # No more keepalives: listenKeyExpired, then the close.
            doc = json.loads(await asyncio.wait_for(ws.recv(), 10 + LISTEN_KEY_TTL_S))
            assert doc["e"] == "listenKeyExpired" and doc["listenKey"] == key
            assert await _closed_with(ws) == (1000, "")
        r = await http.put("/api/v3/userDataStream", params={"listenKey": key},
                           headers=headers)
        assert r.json() == {"code": -1125, "msg": "This listenKey does not exist."}


async def test_a_listen_key_socket_over_the_message_rate_is_closed(plat: Platform) -> None:
    t = await plat.trader("ws-chatty", {"USDT": "1"})
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        key = (await http.post("/api/v3/userDataStream",
                               headers={"X-MBX-APIKEY": t.api_key})).json()["listenKey"]
    async with websockets.connect(_ws(plat, f"/ws/{key}")) as ws:
        for _ in range(6):
            await ws.send("{}")
        assert await _closed_with(ws) == (1008, "Too many messages; the limit is 5 per "
                                                "second.")


async def test_rest_keeps_answering_while_sockets_send_oversized_frames(
    plat: Platform,
) -> None:
    big = json.dumps({"method": "SUBSCRIBE", "params": ["z" * (1 << 20)], "id": 1})

    async def abuser() -> int:
        async with websockets.connect(_ws(plat, "/ws"), max_size=None) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(big)
            code, _ = await _closed_with(ws)
            return code

    codes = await asyncio.gather(*(abuser() for _ in range(10)))
    assert set(codes) <= {1009, 1006} and 1009 in codes
    await eventually(lambda: _rest_answers(plat))
