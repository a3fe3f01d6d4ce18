"""The operator's edge to the exchange itself: JetStream (streams, SetTrading, CancelAll)
and PostgreSQL (who still has open orders). Through tradeplane's own adapters, so the wire
format is exactly the one the engines and the CLI use.

Every failure to reach NATS or PostgreSQL becomes ``ExchangeUnavailable``: the handlers
turn it into a kopf ``TemporaryError`` with a delay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx

from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus, BusError
from tradeplane.domain import codec
from tradeplane.domain.errors import Unavailable
from tradeplane.domain.model import CancelAll, Status
from tradeplane.usecases.pairs import trading_message

CONNECT_TIMEOUT_S = 5.0
# Open = PENDING_NEW, NEW, PARTIALLY_FILLED (the statuses of the orders_open index).
assert (Status.PENDING_NEW, Status.NEW, Status.PARTIALLY_FILLED) == (0, 1, 2)


class ExchangeUnavailable(Unavailable):
    """NATS or PostgreSQL could not be reached or refused the operation."""


def now_ms() -> int:
    return int(time.time() * 1000)


@asynccontextmanager
async def bus(url: str) -> AsyncIterator[Bus]:
    """A short-lived NATS connection (handlers act rarely; nothing to keep open).

    Raises:
        ExchangeUnavailable: NATS not reachable within the timeout.
    """
    try:
        # The bus reconnects forever once connected; bound the first attempt ourselves.
        conn = await asyncio.wait_for(Bus.connect(url, name="tradeplane-operator"),
                                      CONNECT_TIMEOUT_S)
    except (BusError, TimeoutError) as exc:
        raise ExchangeUnavailable(f"NATS unreachable: {exc}") from exc
    try:
        yield conn
    finally:
        await conn.close()


async def ensure_streams(url: str, symbol: str) -> None:
    """Create or update the symbol's command stream and the shared EVENTS stream.

    Raises:
        ExchangeUnavailable: NATS unreachable or refused.
    """
    async with bus(url) as b:
        try:
            await b.ensure_symbol(symbol)
            await b.ensure_events()
        except BusError as exc:
            raise ExchangeUnavailable(f"cannot create streams for {symbol}: {exc}") from exc


async def set_trading(url: str, symbol: str, trading: str, cause: str) -> int:
    """Append ``SetTrading`` to the symbol's command log, built by the pairs use case's one
    builder (``usecases.pairs.trading_message``) as for the admin API and the CLI; the
    running engine applies it in order, without a restart. ``cause`` names the change
    (its message id is ``t<SYMBOL>:<cause>:<state>``), so retries of one change are
    idempotent (JetStream de-duplication).

    Raises:
        ExchangeUnavailable: not stored.
    """
    data, msg_id = trading_message(symbol, trading, cause, now_ms())
    async with bus(url) as b:
        try:
            await b.ensure_symbol(symbol)
            return await b.publish_command(symbol, data, msg_id)
        except BusError as exc:
            raise ExchangeUnavailable(f"SetTrading not stored on {symbol}: {exc}") from exc


async def cancel_all(url: str, symbol: str, accounts: list[int], msg_prefix: str) -> None:
    """One ``CancelAll`` per account on the symbol's log (ids ``<prefix>:<account>``).

    Raises:
        ExchangeUnavailable: not stored.
    """
    async with bus(url) as b:
        try:
            for account in accounts:
                data = codec.encode([CancelAll(account, now_ms())])
                await b.publish_command(symbol, data, f"{msg_prefix}:{account}")
        except BusError as exc:
            raise ExchangeUnavailable(f"CancelAll not stored on {symbol}: {exc}") from exc


@asynccontextmanager
async def ledger(dsn: str) -> AsyncIterator[db.Pool]:
    """Raises: ExchangeUnavailable when PostgreSQL cannot be reached."""
    try:
        pool = await asyncio.wait_for(db.create_pool(dsn, 2), CONNECT_TIMEOUT_S)
    except (db.DatabaseError, TimeoutError, OSError) as exc:
        raise ExchangeUnavailable(f"PostgreSQL unreachable: {exc}") from exc
    try:
        yield pool
    finally:
        await pool.close()


async def open_orders_by_account(pool: db.Pool, symbol: str) -> dict[int, int]:
    """{account: number of open orders} on ``symbol`` (pending, new, partially filled).

    Raises:
        ExchangeUnavailable: the query failed.
    """
    try:
        rows = await pool.fetch(
            # Literal statuses: the same predicate as the partial index orders_open.
            "SELECT account_id, count(*) AS n FROM orders WHERE symbol = $1"
            " AND status IN (0, 1, 2) GROUP BY account_id ORDER BY account_id",
            symbol,
        )
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        raise ExchangeUnavailable(f"open orders of {symbol}: {exc}") from exc
    return {int(r["account_id"]): int(r["n"]) for r in rows}


async def scrape(url: str, timeout: float = 2.0) -> str | None:
    """An engine's Prometheus text exposition, or None when it cannot be read (status
    then keeps the last known figures; an unreadable engine is not an operator error)."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            resp = await client.get(url)
    except httpx.HTTPError:
        return None
    return resp.text if resp.status_code == 200 else None
