"""The ports of the market-data service: what it needs of the bus (:class:`MarketBus`,
which ``tradeplane.adapters.bus.Bus`` satisfies) and of its storage (:class:`MarketStore`,
which ``tradeplane.adapters.marketdata.RedisMarketStore`` satisfies over Redis and the
klines table), declared here as Protocols; the adapters fit them structurally, without
importing them (mypy checks the fit where ``tradeplane.services`` composes the service).
In-memory stand-ins implement them in ``tests/unit/test_marketdata_service.py``.

Errors: an operation that fails because NATS, Redis or PostgreSQL did not answer raises
a :class:`tradeplane.domain.errors.Unavailable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from tradeplane.domain.market import (
    Candle,
    DepthSnapshot,
    SymbolWrite,
    TopOfBook,
    market_subject,
)
from tradeplane.domain.pairs import PairRules

#: The records the service writes and the subject naming are the domain's
#: (``domain/market.py``), so that the adapters store the very same types.
__all__ = [
    "Candle",
    "DepthSnapshot",
    "EventHandler",
    "EventMsg",
    "MarketBus",
    "MarketStore",
    "StoredBook",
    "SymbolWrite",
    "TopOfBook",
    "market_subject",
]


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
    stream payloads (``md.<SYMBOL>.<stream>``, see ``domain.market.market_subject``)."""

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

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """``(subject, data)`` messages, in order, each as :meth:`publish`; those before
        one that raises are sent."""
        ...


# --------------------------------------------------------------------------- storage
class StoredBook(Protocol):
    """The book saved with a resume snapshot, at command sequence ``last_update_id``."""

    @property
    def last_update_id(self) -> int: ...

    @property
    def bids(self) -> Sequence[tuple[int, int]]: ...

    @property
    def asks(self) -> Sequence[tuple[int, int]]: ...


class MarketStore(Protocol):
    """The pairs, the market-data documents with the EVENTS position they include, and the
    candles. Every method raises Unavailable when its server did not answer."""

    async def load_pairs(self) -> dict[str, PairRules]: ...

    async def position(self) -> int | None:
        """The EVENTS stream sequence the stored snapshots include; None when nothing is
        stored (never written, or flushed)."""
        ...

    async def reset(self, symbols: Sequence[str]) -> None:
        """Forget the documents of ``symbols`` and the position (before a rebuild)."""
        ...

    async def load_state(self, symbol: str) -> tuple[bytes, StoredBook] | None:
        """The resume snapshot and the book saved with it; None if absent."""
        ...

    async def write(self, writes: Sequence[SymbolWrite], *, position: int | None) -> None:
        """The candles first (idempotent upserts), then everything else and ``position``
        (when not None) in one transaction."""
        ...
