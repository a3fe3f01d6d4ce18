"""Convert's adapters: quotes, convert orders and the desk's side of the ledger in
PostgreSQL (migration 007), the books from the market-data cache in Redis.

Acceptance is one PostgreSQL transaction: the quote row is locked, the four balance rows
(user and desk, both assets) are locked in the ledger's global (account, asset) order, the
balances are checked, the balanced postings written (``db.apply_postings``), the order
inserted and the quote marked used. A refusal returns before anything is written, and the
transaction is rolled back whatever happens in between.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import msgspec

from tradeplane.adapters.bus import Bus, user_subject
from tradeplane.adapters.cache import CacheError, MarketCache
from tradeplane.adapters.db import (
    DRIVER_ERRORS,
    DatabaseUnavailable,
    Pool,
    apply_postings,
    balances,
)
from tradeplane.domain.convert import DESK_ACCOUNT, convert_postings
from tradeplane.domain.market import DepthSnapshot
from tradeplane.domain.model import Status
from tradeplane.domain.userevents import account_position, encode
from tradeplane.usecases.convert import (
    AcceptResult,
    ConvertOrder,
    NewQuote,
    OrderStatus,
    Rates,
    RouteLeg,
    RoutingStatus,
    order_update,
)
from tradeplane.usecases.hedge import HedgePlan

#: Where the rates service publishes (msgpack of ``(computed ms, Rates)``).
RATES_KEY = "convert:rates"
_rates_enc = msgspec.msgpack.Encoder()
_rates_dec = msgspec.msgpack.Decoder(tuple[int, Rates])


class CacheBooks:
    """``BookSource`` over the market-data cache."""

    def __init__(self, cache: MarketCache) -> None:
        self._cache = cache

    async def books(self, symbols: Sequence[str]) -> dict[str, DepthSnapshot | None]:
        """Raises CacheError when Redis fails."""
        return dict(zip(symbols, await self._cache.depths(symbols), strict=True))


class CacheRates:
    """``RatesSink`` and ``RatesFeed`` in Redis (one key, the latest snapshot)."""

    def __init__(self, cache: MarketCache) -> None:
        self._cache = cache

    async def publish(self, rates: Rates, now_ms: int) -> None:
        """Raises CacheError when Redis fails."""
        await self._cache.put_document(RATES_KEY, _rates_enc.encode((now_ms, rates)))

    async def latest(self) -> tuple[int, Rates] | None:
        """Raises CacheError when Redis fails or the value is unreadable."""
        raw = await self._cache.document(RATES_KEY)
        if raw is None:
            return None
        try:
            return _rates_dec.decode(raw)
        except msgspec.DecodeError as exc:
            raise CacheError(f"unreadable rates: {exc}") from exc


_ORDER_COLS = ("id, quote_id, account_id, status, from_asset, to_asset, from_amount,"
               " to_amount, created_ms")
#: An order with its routing state (no hedge row: accepted before hedging, CONFIRMED).
_ROUTED = ("SELECT o.id, o.quote_id, o.account_id, o.status, o.from_asset, o.to_asset,"
           " o.from_amount, o.to_amount, o.created_ms,"
           " coalesce(h.status, 'CONFIRMED') AS routing"
           " FROM convert_orders o LEFT JOIN convert_hedges h ON h.order_id = o.id")


def _order(r: asyncpg.Record) -> ConvertOrder:
    return ConvertOrder(r["id"], r["quote_id"], r["account_id"], OrderStatus(r["status"]),
                        r["from_asset"], r["to_asset"], r["from_amount"], r["to_amount"],
                        r["created_ms"], RoutingStatus(r["routing"]))


class PgConvertStore:
    """``ConvertStore`` in PostgreSQL. Every method raises DatabaseUnavailable when a
    round trip fails."""

    def __init__(self, pool: Pool, desk: int = DESK_ACCOUNT) -> None:
        self._pool = pool
        self._desk = desk

    async def available(self, account: int, asset: str) -> int:
        try:
            v = await self._pool.fetchval(
                "SELECT available FROM balances WHERE account_id = $1 AND asset = $2",
                account, asset)
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        return int(v or 0)

    async def save_quote(self, quote: NewQuote) -> int:
        route: list[dict[str, Any]] = [
            {"symbol": leg.symbol, "side": leg.side, "fromAsset": leg.from_asset,
             "toAsset": leg.to_asset, "fromAmount": leg.from_amount,
             "toAmount": leg.to_amount, "fee": leg.fee, "bestPrice": leg.best_price,
             "worstPrice": leg.worst_price, "venue": leg.venue, "path": leg.path}
            for leg in quote.route]
        try:
            v = await self._pool.fetchval(
                """INSERT INTO convert_quotes (id, account_id, from_asset, to_asset,
                       from_amount, to_amount, created_ms, valid_until_ms, route,
                       impact_ppm, fee)
                   VALUES (nextval('convert_quote_ids'), $1, $2, $3, $4, $5, $6, $7, $8,
                       $9, $10) RETURNING id""",
                quote.account, quote.from_asset, quote.to_asset, quote.from_amount,
                quote.to_amount, quote.created_ms, quote.valid_until_ms, json.dumps(route),
                quote.impact_ppm, quote.fee)
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        return int(v)

    async def accept(self, account: int, quote_id: int, now_ms: int
                     ) -> tuple[AcceptResult, ConvertOrder | None]:
        try:
            async with self._pool.acquire() as con, con.transaction():
                return await self._accept(con, account, quote_id, now_ms)
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc

    async def _accept(self, con: Any, account: int, quote_id: int, now_ms: int
                      ) -> tuple[AcceptResult, ConvertOrder | None]:
        q = await con.fetchrow(
            "SELECT * FROM convert_quotes WHERE id = $1 AND account_id = $2 FOR UPDATE",
            quote_id, account)
        if q is None:
            return AcceptResult.UNKNOWN, None
        if q["order_id"] is not None:  # a retry: the same order, nothing moves again
            r = await con.fetchrow(f"{_ROUTED} WHERE o.id = $1", q["order_id"])
            return AcceptResult.ACCEPTED, _order(r)
        if now_ms > q["valid_until_ms"]:
            return AcceptResult.EXPIRED, None
        fa, ta = q["from_asset"], q["to_asset"]
        keys = sorted({(account, fa), (account, ta), (self._desk, fa), (self._desk, ta)})
        rows = await con.fetch(
            """SELECT b.account_id, b.asset, b.available FROM balances b
               JOIN unnest($1::bigint[], $2::text[]) AS k(account_id, asset)
                 ON b.account_id = k.account_id AND b.asset = k.asset
               ORDER BY b.account_id, b.asset FOR UPDATE OF b""",
            [k[0] for k in keys], [k[1] for k in keys])
        avail = {(r["account_id"], r["asset"]): int(r["available"]) for r in rows}
        if avail.get((account, fa), 0) < q["from_amount"]:
            return AcceptResult.INSUFFICIENT, None
        if avail.get((self._desk, ta), 0) < q["to_amount"]:
            return AcceptResult.INVENTORY, None
        order_id = int(await con.fetchval("SELECT nextval('convert_order_ids')"))
        await apply_postings(con, convert_postings(
            order_id, account, fa, q["from_amount"], ta, q["to_amount"], self._desk))
        r = await con.fetchrow(
            f"""INSERT INTO convert_orders ({_ORDER_COLS})
                VALUES ($1, $2, $3, 'SUCCESS', $4, $5, $6, $7, $8)
                RETURNING {_ORDER_COLS}, 'PENDING' AS routing""",
            order_id, quote_id, account, fa, ta, q["from_amount"], q["to_amount"], now_ms)
        # The hedge job, in the conversion's own transaction (the queue's outbox).
        await con.execute(
            "INSERT INTO convert_hedges (order_id, status, created_ms, updated_ms)"
            " VALUES ($1, 'PENDING', $2, $2)", order_id, now_ms)
        await con.execute("UPDATE convert_quotes SET order_id = $1 WHERE id = $2",
                          order_id, quote_id)
        return AcceptResult.ACCEPTED, _order(r)

    async def order(self, account: int, *, order_id: int | None = None,
                    quote_id: int | None = None) -> ConvertOrder | None:
        col, value = ("id", order_id) if order_id is not None else ("quote_id", quote_id)
        try:
            r = await self._pool.fetchrow(
                f"{_ROUTED} WHERE o.account_id = $1 AND o.{col} = $2", account, value)
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        return None if r is None else _order(r)

    async def purge_quotes(self, expired_before_ms: int) -> int:
        try:
            status = await self._pool.execute(
                "DELETE FROM convert_quotes WHERE order_id IS NULL AND valid_until_ms < $1",
                expired_before_ms)
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        return int(status.split()[-1])

    async def balances(self, account: int, assets: Sequence[str]
                       ) -> list[tuple[str, int, int]]:
        return await balances(self._pool, account, assets)

    async def history(self, account: int, start_ms: int, end_ms: int, limit: int
                      ) -> list[ConvertOrder]:
        try:
            rows = await self._pool.fetch(
                f"""{_ROUTED}
                    WHERE o.account_id = $1 AND o.created_ms BETWEEN $2 AND $3
                    ORDER BY o.created_ms, o.id LIMIT $4""", account, start_ms, end_ms, limit)
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        return [_order(r) for r in rows]


#: The advisory-lock class of the hedger's per-conversion claims ("hd").
_HEDGE_LOCKS = 0x6864


class PgHedgeStore:
    """``HedgeStore`` (and ``HedgeOutbox``) in PostgreSQL: the hedge rows of migration 010,
    the quotes' routes, the desk's orders. Every method raises DatabaseUnavailable when a
    round trip fails."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def claim(self, order_id: int) -> AsyncIterator[bool]:
        """A session advisory lock on the conversion, on a connection held while inside
        (a dead worker's connection closes and frees it). Raises DatabaseUnavailable."""
        key = (_HEDGE_LOCKS, order_id % 2**31)  # a shared key only makes a worker wait
        try:
            con = await self._pool.acquire()
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        try:
            try:
                got = bool(await con.fetchval("SELECT pg_try_advisory_lock($1, $2)", *key))
            except DRIVER_ERRORS as exc:
                raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
            try:
                yield got
            finally:
                if got:
                    with contextlib.suppress(*DRIVER_ERRORS):
                        await con.execute("SELECT pg_advisory_unlock($1, $2)", *key)
        finally:
            await self._pool.release(con)

    async def plan(self, order_id: int) -> HedgePlan | None:
        try:
            r = await self._pool.fetchrow(
                f"""SELECT x.*, q.route FROM ({_ROUTED} WHERE o.id = $1) x
                    JOIN convert_quotes q ON q.id = x.quote_id""", order_id)
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        if r is None:
            return None
        legs = tuple(
            RouteLeg(leg["symbol"], leg["side"], leg["fromAsset"], leg["toAsset"],
                     int(leg["fromAmount"]), int(leg["toAmount"]), int(leg["fee"]),
                     int(leg["bestPrice"]), int(leg["worstPrice"]),
                     str(leg.get("venue", "")), int(leg.get("path", 0)))
            for leg in json.loads(r["route"]))
        return HedgePlan(_order(r), legs)

    async def advance(self, order_id: int, to: RoutingStatus,
                      allowed_from: frozenset[RoutingStatus], now_ms: int,
                      error: str = "") -> ConvertOrder | None:
        try:
            moved = await self._pool.fetchval(
                """UPDATE convert_hedges SET status = $2, updated_ms = $3, error = $5
                   WHERE order_id = $1 AND status = ANY($4::text[]) RETURNING order_id""",
                order_id, to.value, now_ms, [s.value for s in allowed_from], error)
            if moved is None:
                return None
            r = await self._pool.fetchrow(f"{_ROUTED} WHERE o.id = $1", order_id)
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        return None if r is None else _order(r)

    async def leg_orders(self, account: int, symbol: str, client_order_id: str
                         ) -> list[tuple[Status, int]]:
        try:
            rows = await self._pool.fetch(
                "SELECT status, executed FROM orders"
                " WHERE account_id = $1 AND symbol = $2 AND client_order_id = $3",
                account, symbol, client_order_id)
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        return [(Status(r["status"]), int(r["executed"])) for r in rows]

    async def unsent(self, created_before_ms: int, limit: int) -> list[int]:
        try:
            rows = await self._pool.fetch(
                "SELECT order_id FROM convert_hedges WHERE NOT enqueued AND created_ms < $1"
                " ORDER BY created_ms LIMIT $2", created_before_ms, limit)
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        return [int(r["order_id"]) for r in rows]

    async def oldest_open(self) -> int | None:
        try:
            v = await self._pool.fetchval(
                "SELECT min(created_ms) FROM convert_hedges"
                " WHERE status IN ('PENDING', 'ROUTING', 'ROUTING_COMPLETE')")
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        return None if v is None else int(v)

    async def mark_enqueued(self, order_id: int) -> None:
        try:
            await self._pool.execute(
                "UPDATE convert_hedges SET enqueued = true WHERE order_id = $1", order_id)
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc


class CacheReference:
    """``ReferencePrice`` from the market-data cache (the gateway's band reference: the
    last trade price, else the mid)."""

    def __init__(self, cache: MarketCache) -> None:
        self._cache = cache

    async def reference(self, symbol: str) -> int | None:
        """Raises CacheError when Redis fails."""
        top = await self._cache.top(symbol)
        return None if top is None else top.reference_price()


class BusConvertNotifier:
    """``ConvertNotifier`` and ``RoutingNotifier`` on the account's user-data subject
    (``user.<account>``), the one settlement publishes on: at acceptance the new balances
    as ``outboundAccountPosition``, then our ``convertOrderUpdate`` (status PENDING); then
    one ``convertOrderUpdate`` per routing state the hedger reaches."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def converted(self, order: ConvertOrder, balances: Sequence[tuple[str, int, int]],
                        now_ms: int) -> None:
        """Raises BusUnavailable when NATS fails."""
        subject = user_subject(order.account)
        await self._bus.publish(subject, encode(account_position(now_ms, now_ms, balances)))
        await self._bus.publish(subject, encode(order_update(order, now_ms)))

    async def routed(self, order: ConvertOrder, now_ms: int) -> None:
        """Raises BusUnavailable when NATS fails."""
        await self._bus.publish(user_subject(order.account),
                                encode(order_update(order, now_ms)))
