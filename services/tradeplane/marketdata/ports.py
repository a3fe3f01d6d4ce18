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
from dataclasses import dataclass, field
from typing import Protocol

from tradeplane.domain.pairs import PairRules


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



# --------------------------------------------------------------------------- storage
class StoredBook(Protocol):
    """The book saved with a resume snapshot, at command sequence ``last_update_id``."""

    @property
    def last_update_id(self) -> int: ...

    @property
    def bids(self) -> Sequence[tuple[int, int]]: ...

    @property
    def asks(self) -> Sequence[tuple[int, int]]: ...


@dataclass(frozen=True, slots=True)
class Book:
    """The book at command sequence ``last_update_id``, best levels first, as ``(price
    ticks, qty lots)``."""

    last_update_id: int
    ts: int
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Top:
    """Last trade and best levels in ticks and lots; 0 where there is none."""

    seq: int
    last_price: int
    last_qty: int
    bid: int
    bid_qty: int
    ask: int
    ask_qty: int


@dataclass(frozen=True, slots=True)
class Candle:
    """One candle in units (prices and volumes times 10**8), as the klines table holds it."""

    open_time: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    trades: int
    taker_buy_volume: int
    taker_buy_quote_volume: int


@dataclass(slots=True)
class SymbolWrite:
    """What one write changes for one symbol; None / empty = leave as is. ``candles`` are
    ``(interval, candle)`` oldest first: the last one per interval is the current one."""

    symbol: str
    candles: list[tuple[str, Candle]] = field(default_factory=list)
    trades: Sequence[bytes] = ()
    agg_trades: Sequence[bytes] = ()
    ticker: bytes | None = None
    avg_price: bytes | None = None
    book: Book | None = None
    state: bytes | None = None
    top: Top | None = None


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
