"""User data stream (Binance listenKey): executionReport and outboundAccountPosition.

A listenKey is derived from the account and the server's secret key (HMAC), so every
gateway replica recognises every key without shared state. Settlement publishes the
account's updates on ``user.<account>`` after each commit; the WebSocket relays them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from typing import Any

from fastapi import APIRouter, Depends, Request, WebSocket
from starlette.websockets import WebSocketDisconnect

from tradeplane.adapters.bus import user_subject
from tradeplane.gateway import errors
from tradeplane.gateway.auth import Caller, api_key_only

router = APIRouter(prefix="/api/v3", tags=["user data stream"])


def listen_key(secret: str, account: int) -> str:
    mac = hmac.new(secret.encode(), f"listen:{account}".encode(), hashlib.sha256).hexdigest()
    return f"{account:x}x{mac[:48]}"


def resolve_listen_key(secret: str, key: str) -> int | None:
    head, sep, _ = key.partition("x")
    if not sep:
        return None
    try:
        account = int(head, 16)
    except ValueError:
        return None
    return account if hmac.compare_digest(listen_key(secret, account), key) else None


def _secret(request: Request | WebSocket) -> str:
    s: str = request.app.state.ctx.settings.secret_key.get_secret_value()
    return s


@router.post("/userDataStream")
async def create_stream(request: Request, caller: Caller = Depends(api_key_only)) -> dict[str, str]:
    return {"listenKey": listen_key(_secret(request), caller.account)}


@router.put("/userDataStream")
async def keepalive(request: Request, caller: Caller = Depends(api_key_only)) -> dict[str, Any]:
    key = caller.params.get("listenKey", "")
    if resolve_listen_key(_secret(request), key) != caller.account:
        raise errors.ApiError(-1125, "This listenKey does not exist.")
    return {}


@router.delete("/userDataStream")
async def close_stream(request: Request, caller: Caller = Depends(api_key_only)) -> dict[str, Any]:
    return await keepalive(request, caller)


async def serve_user_stream(websocket: WebSocket, account: int) -> None:
    """Relay the account's updates until the client goes away (socket already accepted)."""
    c = websocket.app.state.ctx
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10_000)
    overflow = asyncio.Event()

    async def on_msg(_subject: str, data: bytes) -> None:
        try:
            queue.put_nowait(data)
        except asyncio.QueueFull:
            # A silently dropped report would leave the client's view of its orders wrong:
            # disconnect it instead (as Binance does with slow readers); it reconnects.
            overflow.set()

    async def pump() -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            while True:
                data = await queue.get()
                await websocket.send_text(data.decode())

    async def drain_client() -> None:
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                return

    unsub = await c.bus.subscribe(user_subject(account), on_msg)
    tasks = [asyncio.create_task(pump()), asyncio.create_task(drain_client()),
             asyncio.create_task(overflow.wait())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if overflow.is_set():
            with contextlib.suppress(Exception):  # the peer may be gone already
                await websocket.close(code=1008)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await unsub()

