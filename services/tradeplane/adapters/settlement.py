"""The settlement service's ports over PostgreSQL and NATS: :class:`PgSettlementStore`
(``settlement.ports.SettlementStore``) and :class:`NatsSettlementBus`
(``settlement.ports.SettlementBus``).

The adapters sit below the services, so these classes satisfy the Protocols structurally,
without importing them; mypy checks the fit where ``services.py`` composes the settler.
Errors are the adapters' own (``DatabaseUnavailable``, ``BusUnavailable``), both
``Unavailable``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import asyncpg

from tradeplane.adapters import control, db
from tradeplane.adapters.bus import Bus, StoredMsg, settled_subject, user_subject
from tradeplane.domain.ledger import OrderState, Settlement
from tradeplane.domain.model import Command
from tradeplane.domain.pairs import PairRules


class _Write(Protocol):
    """``settlement.ports.SettlementWrite``, as far as this adapter reads it."""

    @property
    def settlement(self) -> Settlement: ...

    @property
    def cursors(self) -> Mapping[str, int]: ...

    @property
    def position(self) -> tuple[str, int]: ...

    @property
    def trading(self) -> Mapping[str, str]: ...


class PgSettlementStore:
    """The ledger tables (orders, balances, postings, trades, cursors, pairs)."""

    def __init__(self, pool: db.Pool) -> None:
        self.pool = pool

    async def load_pairs(self) -> dict[str, PairRules]:
        return await db.load_pairs(self.pool)

    async def cursors(self) -> dict[str, int]:
        return await db.settlement_cursors(self.pool)

    async def consumer_position(self, consumer: str) -> int:
        return await db.consumer_position(self.pool, consumer)

    async def settle(
        self, order_ids: Iterable[int], settle: Callable[[dict[int, OrderState]], _Write]
    ) -> Mapping[int, asyncpg.Record]:
        """Raises DatabaseUnavailable; LedgerError: unbalanced postings (nothing written)."""
        try:
            async with self.pool.acquire() as con, con.transaction():
                orders, rows = await db.load_settlement_orders(con, order_ids)
                w = settle(orders)
                await db.write_settlement(con, w.settlement, orders.values(),
                                          dict(w.cursors), w.position)
                # In symbol order, as every writer of pairs rows locks them: in a batch's
                # order, a halt here and the kill switch's release deadlocked.
                for symbol, state in sorted(w.trading.items()):
                    await db.set_pair_trading(con, symbol, state)
        except (OSError, TimeoutError, asyncpg.PostgresError,
                asyncpg.InterfaceError) as exc:
            # The acquire, the commit and set_pair_trading are outside db's translation.
            raise db.DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        return rows

    async def balances_of(
        self, keys: Iterable[tuple[int, str]]
    ) -> dict[int, list[tuple[str, int, int]]]:
        return await db.balances_of(self.pool, keys)

    async def pending_commands(self, older_than_ms: int) -> list[tuple[str, str, Command]]:
        return db.relay_commands(await db.pending_orders(self.pool, older_than_ms))

    async def stored_traces(self, msg_ids: Sequence[str]) -> dict[str, str]:
        # Single orders only ("o<id>"): an order list's re-send starts no trace.
        ids = {int(m[1:]): m for m in msg_ids if m.startswith("o") and m[1:].isdigit()}
        if not ids:
            return {}
        return {ids[i]: tp for i, tp in (await db.order_traces(self.pool, list(ids))).items()}

    async def check_invariants(self) -> tuple[dict[str, int], list[str]]:
        """The per-asset imbalances and the problems found; the verdict is also kept in
        the database for the admin health view (``ledger_verdict``)."""
        checks, problems = await db.check_invariants(self.pool)
        await db.record_verdict(self.pool, int(time.time() * 1000), problems)
        return {c.asset: c.balances_total - c.external_net for c in checks}, problems

    async def locked_totals(self) -> dict[str, int]:
        return await db.locked_totals(self.pool)


class NatsSettlementBus:
    """EVENTS, the symbols' command logs, and the core subjects settlement publishes on
    (``settled.<SYMBOL>``, ``user.<account>``) or listens to (``control.pairs``)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def ensure_events(self) -> None:
        await self.bus.ensure_events()

    async def consume_events(
        self, name: str, handler: Callable[[Sequence[StoredMsg]], Awaitable[None]], *,
        start_seq: int, stop: asyncio.Event, linger: float,
    ) -> None:
        await self.bus.consume_events(name, handler, start_seq=start_seq, stop=stop,
                                      linger=linger)

    async def publish_settled(self, symbol: str, seq: int) -> None:
        await self.bus.publish(settled_subject(symbol), str(seq).encode())

    async def publish_users(self, updates: Sequence[tuple[int, bytes]]) -> None:
        await self.bus.publish_many([(user_subject(a), data) for a, data in updates])

    async def last_command_seq(self, symbol: str) -> int:
        return await self.bus.last_command_seq(symbol)

    async def publish_command(self, symbol: str, data: bytes, msg_id: str,
                              headers: Mapping[str, str] | None = None) -> int:
        return await self.bus.publish_command(
            symbol, data, msg_id, dict(headers) if headers else None)

    async def watch_pairs(
        self, handler: Callable[[], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        async def changed(_doc: dict[str, Any]) -> None:
            await handler()

        return await control.subscribe(self.bus, control.PAIRS_CHANGED, changed)
