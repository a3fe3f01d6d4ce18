"""Platform control messages over core NATS (fire-and-forget; every receiver also polls
the database, so a lost message only delays, never loses, a change).

``control.pairs``: a pair's rules changed in the pairs table (fees, trading state):
gateways and settlement reload them. ``control.gateway``: what every gateway replica must
learn at once: the kill switch, a revoked key, a frozen account.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tradeplane.adapters.bus import Bus

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
