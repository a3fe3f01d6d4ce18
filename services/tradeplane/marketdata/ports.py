"""The ports of the market-data service: what it needs of the bus, declared here as
Protocols that ``tradeplane.adapters.bus.Bus`` satisfies structurally (mypy checks it where
``tradeplane.services`` composes the service) and in-memory stand-ins implement in unit
tests (``tests/unit/test_marketdata_service.py``).

Errors: an operation that fails because NATS did not answer raises a
:class:`tradeplane.domain.errors.Unavailable` (the adapter's ``BusUnavailable``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol


class EventMsg(Protocol):
    """One stored EVENTS message: its stream sequence, payload (an encoded
    ``EventBatch``) and the headers stored with it (W3C ``traceparent``...)."""

    @property
    def seq(self) -> int: ...

    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> Mapping[str, str] | None: ...


#: What the service does with one pulled group of EVENTS messages, oldest first.
EventHandler = Callable[[Sequence[EventMsg]], Awaitable[None]]


class MarketBus(Protocol):
    """The EVENTS stream, read in order from a stream sequence, and core publish for the
    stream payloads (``md.<SYMBOL>.<stream>``, see :func:`market_subject`)."""

    async def ensure_events(self) -> None: ...

    async def consume_events(
        self,
        name: str,
        handler: EventHandler,
        *,
        start_seq: int = 1,
        batch: int = 500,
        stop: asyncio.Event,
        on_idle: Callable[[], None] | None = None,
        linger: float = 0.0,
    ) -> None:
        """Deliver EVENTS from stream sequence ``start_seq`` on, strictly in order, in
        groups, until ``stop`` is set; a group whose handler raises is delivered again."""
        ...

    async def publish(self, subject: str, data: bytes) -> None:
        """At most once; raises Unavailable when the connection cannot take it."""
        ...


def market_subject(symbol: str, stream: str) -> str:
    """The core NATS subject of one symbol's stream payloads, which the gateway's stream
    relay subscribes to. The same function as ``tradeplane.adapters.bus.market_subject``
    (a unit test holds them equal); declared here so that the service need not import the
    adapter for a name."""
    return f"md.{symbol}.{stream}"

