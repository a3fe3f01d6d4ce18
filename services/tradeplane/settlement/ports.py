"""The settler's ports: what it needs from the ledger store and from the bus, declared here
and implemented by the adapters (:mod:`tradeplane.adapters.settlement` over PostgreSQL and
NATS, ``tests/support/memory_settlement.py`` in memory).

The adapters sit below the services, so they never import this module: they satisfy the
Protocols structurally, and mypy checks them where ``services.py`` composes the settler.

Every method may raise :class:`~tradeplane.domain.errors.Unavailable` (the database or the
bus did not answer; the same call may succeed later); the settler retries on it and on
nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tradeplane.domain.ledger import OrderState, Settlement
from tradeplane.domain.model import Command
from tradeplane.domain.pairs import PairRules
from tradeplane.settlement.reports import Row


@dataclass(frozen=True, slots=True)
class SettlementWrite:
    """What one settlement transaction writes beside the order states it was given: the
    postings and trades, each symbol's new cursor (the last command sequence settled), the
    trading states the engine changed, and the EVENTS consumer's position
    ``(consumer, stream sequence)``, all or nothing."""

    settlement: Settlement
    cursors: Mapping[str, int]
    position: tuple[str, int]
    trading: Mapping[str, str] = field(default_factory=dict)


#: Given the order states of a pull (mutated in place), the writes of its transaction.
Settle = Callable[[dict[int, OrderState]], SettlementWrite]


class SettlementStore(Protocol):
    """The ledger as settlement sees it (PostgreSQL in production)."""

    async def load_pairs(self) -> dict[str, PairRules]:
        """Every pair's rules, by symbol."""
        ...

    async def cursors(self) -> dict[str, int]:
        """Each symbol's settlement cursor: the last command sequence settled."""
        ...

    async def consumer_position(self, consumer: str) -> int:
        """The last EVENTS stream sequence ``consumer`` applied (0: none)."""
        ...

    async def settle(self, order_ids: Iterable[int], settle: Settle) -> Mapping[int, Row]:
        """In one transaction: load the orders ``order_ids`` (and the other legs of their
        lists), call ``settle`` with their states, write the states it left and what it
        returns (postings, trades, cursors, trading states, consumer position). Returns
        the loaded rows as they were before. Nothing is written if ``settle`` raises.

        Raises:
            Unavailable: nothing was written, or the caller cannot know (it retries: the
                cursor makes a retry of a committed batch a no-op).
            LedgerError: unbalanced postings (nothing is written).
        """
        ...

    async def balances_of(
        self, keys: Iterable[tuple[int, str]]
    ) -> dict[int, list[tuple[str, int, int]]]:
        """``(asset, available, locked)`` of the given (account, asset) pairs, per
        account, assets sorted."""
        ...

    async def pending_commands(self, older_than_ms: int) -> list[tuple[str, str, Command]]:
        """``(symbol, message id, command)`` of each order still PENDING_NEW created
        before ``older_than_ms`` (one ``NewOrderList`` per order list): what the outbox
        relay may re-send. The message id is the same however often it is re-sent."""
        ...

    async def stored_traces(self, msg_ids: Sequence[str]) -> dict[str, str]:
        """The trace context (W3C traceparent) stored with the orders of these relay
        message ids, for those that have one."""
        ...

    async def check_invariants(self) -> tuple[dict[str, int], list[str]]:
        """Per asset, the sum of balances minus the external net credits (0 when sound),
        and the invariants violated (empty: the ledger is sound)."""
        ...

    async def locked_totals(self) -> dict[str, int]:
        """Per asset, the funds held (locked) for open orders and withdrawals."""
        ...


class EventMessage(Protocol):
    """One stored EVENTS message: its stream sequence, payload and headers."""

    @property
    def seq(self) -> int: ...

    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> Mapping[str, str] | None: ...


#: A pull of EVENTS messages, in stream order.
EventHandler = Callable[[Sequence[EventMessage]], Awaitable[None]]


class SettlementBus(Protocol):
    """The bus as settlement sees it (NATS in production)."""

    async def ensure_events(self) -> None:
        """Create the EVENTS stream if it does not exist."""
        ...

    async def consume_events(
        self, name: str, handler: EventHandler, *, start_seq: int,
        stop: asyncio.Event, linger: float,
    ) -> None:
        """Deliver EVENTS from ``start_seq`` on, strictly in order, until ``stop`` is
        set; a failing ``handler`` gets the same messages again."""
        ...

    async def publish_settled(self, symbol: str, seq: int) -> None:
        """Tell the gateways the symbol is settled up to command sequence ``seq``."""
        ...

    async def publish_users(self, updates: Sequence[tuple[int, bytes]]) -> None:
        """User data stream updates, ``(account, data)``, in this order (each at most
        once)."""
        ...

    async def last_command_seq(self, symbol: str) -> int:
        """The symbol's command log's last stream sequence."""
        ...

    async def publish_command(self, symbol: str, data: bytes, msg_id: str,
                              headers: Mapping[str, str] | None = None) -> int:
        """Append to the symbol's command log (de-duplicated on ``msg_id``), with
        ``headers`` (trace context); returns its stream sequence."""
        ...

    async def watch_pairs(
        self, handler: Callable[[], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        """Call ``handler`` whenever a pair's rules change; returns unsubscribe."""
        ...
