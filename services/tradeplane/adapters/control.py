"""Platform control messages over core NATS (fire-and-forget; every receiver also polls
the database, so a lost message only delays, never loses, a change).

``control.pairs``: a pair's rules changed in the pairs table (fees, trading state):
gateways and settlement reload them. ``control.gateway``: what every gateway replica must
learn at once: the kill switch, a revoked key, a frozen account.

Also the bus-side ports of the pairs use cases (:mod:`tradeplane.usecases.pairs`): the
symbols' command logs, the pair control of local mode, and the broadcasts of a process
that is not a gateway (the CLI); and the gateway's own channel
(``gateway.control.ControlChannel``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tradeplane.adapters.bus import Bus, BusError
from tradeplane.usecases.errors import Unavailable
from tradeplane.usecases.pairs import trading_message

log = logging.getLogger("tradeplane.control")

PAIRS_CHANGED = "control.pairs"
GATEWAY = "control.gateway"


async def publish(bus: Bus, subject: str, doc: dict[str, Any]) -> None:
    await bus.publish(subject, json.dumps(doc).encode())


async def subscribe(
    bus: Bus, subject: str, handler: Callable[[dict[str, Any]], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    """Deliver each well-formed message's document to ``handler``; returns unsubscribe."""

    async def on_msg(_subject: str, data: bytes) -> None:
        try:
            doc = json.loads(data)
        except ValueError:
            log.warning("malformed control message on %s", subject)
            return
        if isinstance(doc, dict):
            await handler(doc)

    return await bus.subscribe(subject, on_msg)


def now_ms() -> int:
    return int(time.time() * 1000)


class BusCommandLog:
    """The symbols' command logs on JetStream (``usecases.pairs.CommandLog``)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def append(self, symbol: str, data: bytes, msg_id: str) -> int:
        try:
            return await self.bus.publish_command(symbol, data, msg_id)
        except BusError as exc:
            raise Unavailable(str(exc)) from exc


class LocalPairControl:
    """Local mode: the engine is told through its command log; fees live in the pairs
    table alone (settlement reloads them on ``control.pairs``)."""

    def __init__(self, bus: Bus, clock: Callable[[], int] = now_ms) -> None:
        self.log = BusCommandLog(bus)
        self.clock = clock

    async def set_trading(self, symbol: str, state: str) -> None:
        now = self.clock()
        await self.log.append(symbol, *trading_message(symbol, state, f"admin-{now}", now))

    async def set_fees(self, symbol: str, maker_ppm: int, taker_ppm: int) -> None:
        return None


class BusBroadcasts:
    """What a process other than a gateway tells the gateways (``usecases.pairs.Gateways``,
    ``usecases.accounts.KeyEvents``): they reload or drop at once."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def pairs_changed(self) -> None:
        await publish(self.bus, PAIRS_CHANGED, {})

    async def kill_switch(self, on: bool) -> None:
        await publish(self.bus, GATEWAY, {"kind": "kill", "on": on})

    async def key_revoked(self, api_key: str) -> None:
        await publish(self.bus, GATEWAY, {"kind": "key", "apiKey": api_key})

    async def account_changed(self, account: int) -> None:
        await publish(self.bus, GATEWAY, {"kind": "account", "account": account})


class BusControlChannel:
    """A gateway's ``control.gateway`` and ``control.pairs`` over core NATS
    (``gateway.control.ControlChannel``)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def tell_gateways(self, doc: dict[str, Any]) -> None:
        await publish(self.bus, GATEWAY, doc)

    async def pairs_changed(self) -> None:
        await publish(self.bus, PAIRS_CHANGED, {})

    async def on_gateway(self, handler: Callable[[dict[str, Any]], Awaitable[None]]
                         ) -> Callable[[], Awaitable[None]]:
        return await subscribe(self.bus, GATEWAY, handler)

    async def on_pairs(self, handler: Callable[[dict[str, Any]], Awaitable[None]]
                       ) -> Callable[[], Awaitable[None]]:
        return await subscribe(self.bus, PAIRS_CHANGED, handler)
