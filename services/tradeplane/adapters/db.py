"""PostgreSQL adapter (asyncpg): migrations, accounts, order entry holds, settlement writes.

The ledger database is the financial source of truth. Ownership: the gateway inserts
orders (with their hold) and reads; settlement alone updates orders, trades, balances
after entry; marketdata alone writes klines.
"""

from __future__ import annotations

import functools
import json
import secrets as _stdlib_secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, ParamSpec, TypeVar

import asyncpg

from tradeplane.domain.errors import NotFound, TradeplaneError, Unavailable
from tradeplane.domain.ledger import (
    EXTERNAL_ACCOUNT,
    OrderState,
    Posting,
    Settlement,
    check_balanced,
)
from tradeplane.domain.model import (
    Command,
    NewOrder,
    NewOrderList,
    OrderType,
    Reason,
    Side,
    Status,
    StpMode,
    TimeInForce,
)
from tradeplane.domain.pairs import PairRules
from tradeplane.usecases.orders import ListRequest as ListRequest
from tradeplane.usecases.orders import ListRow, OrderRow, TradeRow
from tradeplane.usecases.orders import OrderRequest as OrderRequest
from tradeplane.usecases.orders import PlaceResult as PlaceResult

Pool = asyncpg.Pool
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

class DatabaseError(TradeplaneError):
    """The database refused an operation for a reason the caller cannot fix."""


class DatabaseUnavailable(DatabaseError, Unavailable):
    """A round trip failed: PostgreSQL unreachable, the connection lost, the pool closed,
    a timeout, or the server refused the statement (see ``_translated``)."""


class UnknownAccount(DatabaseError, NotFound):
    pass


_P = ParamSpec("_P")
_R = TypeVar("_R")


#: What a failed round trip raises in the driver (server refused, connection lost, pool
#: closed, timeout): translated into DatabaseUnavailable at this adapter's boundary.
DRIVER_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def _translated(fn: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
    """A failed round trip (server refused, connection lost, pool closed, timeout) raised
    as DatabaseUnavailable, so no asyncpg exception reaches a caller. Every function a
    service calls carries it; errors the function gives a meaning of its own
    (UnknownAccount) are raised inside it, before this sees them."""

    @functools.wraps(fn)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await fn(*args, **kwargs)
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc

    return wrapper


async def _no_reset(_con: asyncpg.Connection) -> None:
    return None


async def create_pool(dsn: str, size: int = 8) -> Pool:
    """Raises DatabaseError when PostgreSQL cannot be reached."""
    try:
        # No session state is ever changed, so skip the reset round trips on every release.
        pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=size, command_timeout=30, reset=_no_reset
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    assert pool is not None
    return pool


@_translated
async def migrate(pool: Pool) -> list[str]:
    """Apply pending migrations in order, once, under an advisory lock. Returns applied."""
    files = sorted(
        (f for f in resources.files("tradeplane.adapters").joinpath("migrations").iterdir()
         if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    applied: list[str] = []
    async with pool.acquire() as con, con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock(7201)")
        await con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await con.fetch("SELECT name FROM schema_migrations")}
        for f in files:
            if f.name in done:
                continue
            await con.execute(f.read_text())
            await con.execute("INSERT INTO schema_migrations (name) VALUES ($1)", f.name)
            applied.append(f.name)
    return applied


# --------------------------------------------------------------------------- pairs
@_translated
async def upsert_pair(pool: Pool, r: PairRules) -> None:
    await pool.execute(
        """INSERT INTO pairs (symbol, base, quote, tick, lot, min_qty, max_qty, min_notional,
               price_band_bps, maker_fee_ppm, taker_fee_ppm, trading, default_stp)
           VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)
           ON CONFLICT (symbol) DO UPDATE SET tick=EXCLUDED.tick, lot=EXCLUDED.lot,
               min_qty=EXCLUDED.min_qty, max_qty=EXCLUDED.max_qty,
               min_notional=EXCLUDED.min_notional, price_band_bps=EXCLUDED.price_band_bps,
               maker_fee_ppm=EXCLUDED.maker_fee_ppm, taker_fee_ppm=EXCLUDED.taker_fee_ppm,
               trading=EXCLUDED.trading, default_stp=EXCLUDED.default_stp""",
        r.symbol, r.base, r.quote, r.tick, r.lot, r.min_qty, r.max_qty, r.min_notional,
        r.price_band_bps, r.maker_fee_ppm, r.taker_fee_ppm, r.trading, r.default_stp,
    )


async def set_pair_trading(con: Conn, symbol: str, trading: str) -> None:
    await con.execute("UPDATE pairs SET trading = $2 WHERE symbol = $1", symbol, trading)


@_translated
async def load_pairs(pool: Pool) -> dict[str, PairRules]:
    rows = await pool.fetch("SELECT * FROM pairs ORDER BY symbol")
    return {
        r["symbol"]: PairRules(
            base=r["base"], quote=r["quote"], tick=r["tick"], lot=r["lot"],
            min_qty=r["min_qty"], max_qty=r["max_qty"], min_notional=r["min_notional"],
            price_band_bps=r["price_band_bps"], maker_fee_ppm=r["maker_fee_ppm"],
            taker_fee_ppm=r["taker_fee_ppm"], trading=r["trading"],
            default_stp=r["default_stp"],
        )
        for r in rows
    }


# --------------------------------------------------------------------------- accounts
@_translated
async def create_account(pool: Pool, name: str) -> int:
    """Create a user account, or return the existing one of that name."""
    row = await pool.fetchrow(
        """INSERT INTO accounts (id, name, kind) VALUES (nextval('account_ids'), $1, 'user')
           ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id""",
        name,
    )
    assert row is not None
    return int(row["id"])


@_translated
async def account_id(pool: Pool, name: str) -> int | None:
    v = await pool.fetchval("SELECT id FROM accounts WHERE name = $1", name)
    return None if v is None else int(v)


@_translated
async def create_api_key(
    pool: Pool, account: int, secret_enc: bytes, perms: Sequence[str], api_key: str | None = None
) -> str:
    key = api_key or _stdlib_secrets.token_urlsafe(48)[:64]
    try:
        await pool.execute(
            "INSERT INTO api_keys (api_key, account_id, secret_enc, perms) VALUES ($1,$2,$3,$4)",
            key, account, secret_enc, list(perms),
        )
    except asyncpg.ForeignKeyViolationError as exc:
        raise UnknownAccount(f"no account {account}") from exc
    return key


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    api_key: str
    account: int
    secret_enc: bytes
    perms: frozenset[str]


@_translated
async def get_api_key(pool: Pool, api_key: str) -> ApiKeyRow | None:
    r = await pool.fetchrow(
        "SELECT api_key, account_id, secret_enc, perms FROM api_keys"
        " WHERE api_key = $1 AND revoked_at IS NULL",
        api_key,
    )
    if r is None:
        return None
    return ApiKeyRow(r["api_key"], r["account_id"], bytes(r["secret_enc"]), frozenset(r["perms"]))


@_translated
async def credit(pool: Pool, account: int, asset: str, amount: int, ref: str) -> bool:
    """Credit ``amount`` units from the outside world; idempotent by ``ref``.

    Returns False when ``ref`` was already applied.
    """
    async with pool.acquire() as con, con.transaction():
        return await credit_in(con, account, asset, amount, ref)


async def credit_in(con: Conn, account: int, asset: str, amount: int, ref: str) -> bool:
    """:func:`credit` inside the caller's transaction (a deposit is credited together
    with its state change). Returns False when ``ref`` was already applied."""
    if amount <= 0:
        raise ValueError("credit amount must be positive")
    tx_ref = f"credit:{ref}"
    try:
        inserted = await con.fetchval(
            "INSERT INTO credits (ref, account_id, asset, amount) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (ref) DO NOTHING RETURNING 1",
            ref, account, asset, amount,
        )
    except asyncpg.ForeignKeyViolationError as exc:
        raise UnknownAccount(f"no account {account}") from exc
    if not inserted:
        return False
    await _write_postings(
        con,
        [
            (tx_ref, EXTERNAL_ACCOUNT, asset, "x", -amount),
            (tx_ref, account, asset, "a", amount),
        ],
    )
    await _apply_deltas(con, {(account, asset): (amount, 0)})
    return True


async def apply_postings(con: Conn, postings: list[Posting]) -> None:
    """Write balanced postings and move the balances they name, in the caller's
    transaction (rows locked in the global (account, asset) order).

    Raises:
        LedgerError: unbalanced postings (nothing is written).
        asyncpg.CheckViolationError: a balance would go negative (the caller's
            transaction must be rolled back).
    """
    check_balanced(postings)
    deltas: dict[tuple[int, str], tuple[int, int]] = {}
    for _ref, account, asset, bucket, amount in postings:
        if account == EXTERNAL_ACCOUNT:
            continue
        a, lk = deltas.get((account, asset), (0, 0))
        deltas[(account, asset)] = (a + amount, lk) if bucket == "a" else (a, lk + amount)
    await _write_postings(con, postings)
    await _apply_deltas(con, {k: v for k, v in deltas.items() if v != (0, 0)})


@_translated
async def balances(pool: Pool, account: int, assets: Sequence[str] | None = None
                   ) -> list[tuple[str, int, int]]:
    """The account's ``(asset, available, locked)``, assets sorted; of ``assets`` only
    when given."""
    if assets is None:
        rows = await pool.fetch(
            "SELECT asset, available, locked FROM balances WHERE account_id = $1"
            " ORDER BY asset", account)
    else:
        rows = await pool.fetch(
            "SELECT asset, available, locked FROM balances"
            " WHERE account_id = $1 AND asset = ANY($2::text[]) ORDER BY asset",
            account, list(assets))
    return [(r["asset"], int(r["available"]), int(r["locked"])) for r in rows]


# --------------------------------------------------------------------------- order entry
@_translated
async def place_orders(
    pool: Pool, reqs: Sequence[OrderRequest],
    traceparents: Sequence[str | None] | None = None,
) -> list[tuple[int | None, PlaceResult]]:
    """Lock each request's hold and create its order; one round trip, one commit.
    ``traceparents`` (W3C, one per request, None when not traced) are stored with the
    orders created, in the same statement (``order_traces``).

    Each request stands alone: an insufficient balance or a duplicate client order id
    leaves nothing behind for that request and does not affect the others.
    """
    if any(r.hold <= 0 for r in reqs):
        raise ValueError("an order must hold a positive amount")
    # Balance rows are locked in one global order (account, asset) so concurrent batches
    # (and settlement, which locks the same way) cannot deadlock.
    order = sorted(range(len(reqs)), key=lambda i: (reqs[i].account, reqs[i].hold_asset))
    ordered = [reqs[i] for i in order]
    traces = [traceparents[i] for i in order] if traceparents else None
    if traces is not None and not any(traces):
        traces = None
    for attempt in range(5):
        try:
            results = await _place_orders(pool, ordered, traces)
            break
        except asyncpg.DeadlockDetectedError:
            if attempt == 4:
                raise
    out: list[tuple[int | None, PlaceResult]] = [(None, PlaceResult.INSUFFICIENT)] * len(reqs)
    for pos, i in enumerate(order):
        out[i] = results[pos]
    return out


_PLACE = (
    "place_orders($1::bigint[], $2::text[], $3::text[],"
    " $4::smallint[], $5::smallint[], $6::smallint[], $7::bigint[], $8::bigint[],"
    " $9::bigint[], $10::boolean[], $11::text[], $12::bigint[], $13::bigint[],"
    " $14::bigint[], $15::bigint[], $16::smallint[], $17::bigint[])"
)
# The same, storing the trace context of each order created (rows in request order).
_PLACE_TRACED = (
    f"WITH placed AS (SELECT p.order_id, p.result, p.pos FROM {_PLACE}"
    " WITH ORDINALITY AS p(order_id, result, pos)),"
    " traced AS (INSERT INTO order_traces (order_id, traceparent)"
    "  SELECT placed.order_id, t.tp FROM placed"
    "  JOIN unnest($18::text[]) WITH ORDINALITY AS t(tp, pos) USING (pos)"
    "  WHERE placed.order_id IS NOT NULL AND t.tp IS NOT NULL)"
    " SELECT order_id, result FROM placed ORDER BY pos"
)


async def _place_orders(
    pool: Pool, reqs: Sequence[OrderRequest], traces: Sequence[str | None] | None = None,
) -> list[tuple[int | None, PlaceResult]]:
    extra: list[Any] = [] if traces is None else [list(traces)]
    rows = await pool.fetch(
        f"SELECT order_id, result FROM {_PLACE}" if traces is None else _PLACE_TRACED,
        [r.account for r in reqs], [r.symbol for r in reqs],
        [r.client_order_id for r in reqs], [int(r.side) for r in reqs],
        [int(r.type) for r in reqs], [int(r.tif) for r in reqs], [r.price for r in reqs],
        [r.qty for r in reqs], [r.quote_qty for r in reqs], [r.by_quote for r in reqs],
        [r.hold_asset for r in reqs], [r.hold for r in reqs], [r.ts for r in reqs],
        [r.stop_price for r in reqs], [r.iceberg_qty for r in reqs],
        [int(r.stp) for r in reqs], [r.good_till for r in reqs], *extra,
    )
    return [(r["order_id"], PlaceResult(r["result"])) for r in rows]


@_translated
async def order_traces(pool: Pool, order_ids: Sequence[int]) -> dict[int, str]:
    """The stored trace context (W3C traceparent) of those orders that have one."""
    rows = await pool.fetch(
        "SELECT order_id, traceparent FROM order_traces WHERE order_id = ANY($1::bigint[])",
        list(order_ids))
    return {int(r["order_id"]): str(r["traceparent"]) for r in rows}


async def place_order_list(
    pool: Pool, req: ListRequest
) -> tuple[int | None, list[int], PlaceResult]:
    """Lock the list's one hold and create the list and its two orders, all or nothing.

    Returns ``(list id, order ids, PLACED)``, or ``(None, [], INSUFFICIENT | DUPLICATE)``
    (a duplicate list or order client id) with nothing left behind.
    """
    if req.hold <= 0:
        raise ValueError("an order list must hold a positive amount")
    legs = req.legs
    row = await pool.fetchrow(
        "SELECT list_id, order_ids, result FROM place_order_list($1, $2, $3, $4, $5, $6,"
        " $7::text[], $8, $9::smallint[], $10::smallint[], $11::bigint[], $12::bigint[],"
        " $13::bigint[], $14::bigint[], $15::bigint[], $16)",
        req.account, req.symbol, req.list_client_order_id, req.hold_asset, req.hold, req.ts,
        [leg.client_order_id for leg in legs], int(legs[0].side),
        [int(leg.type) for leg in legs], [int(leg.tif) for leg in legs],
        [leg.price for leg in legs], [leg.qty for leg in legs],
        [leg.quote_qty for leg in legs], [leg.stop_price for leg in legs],
        [leg.iceberg_qty for leg in legs], int(legs[0].stp),
    )
    assert row is not None
    result = PlaceResult(row["result"])
    if result != PlaceResult.PLACED:
        return None, [], result
    return int(row["list_id"]), [int(i) for i in row["order_ids"]], result


@_translated
async def place_order_lists(
    pool: Pool, reqs: Sequence[ListRequest]
) -> list[tuple[int | None, list[int], PlaceResult]]:
    """:func:`place_order_list` for many lists in one round trip and one commit: the same
    function once per list, so each list still stands alone (all or nothing, its own
    INSUFFICIENT or DUPLICATE); results in the order of ``reqs``.

    Raises:
        ValueError: a list holds nothing.
    """
    if any(r.hold <= 0 for r in reqs):
        raise ValueError("an order list must hold a positive amount")
    # Balance rows locked in the one global order (account, asset), as place_orders does.
    order = sorted(range(len(reqs)), key=lambda i: (reqs[i].account, reqs[i].hold_asset))
    ordered = [reqs[i] for i in order]
    for attempt in range(5):
        try:
            rows = await _place_order_lists(pool, ordered)
            break
        except asyncpg.DeadlockDetectedError:
            if attempt == 4:
                raise
    out: list[tuple[int | None, list[int], PlaceResult]] = [
        (None, [], PlaceResult.INSUFFICIENT)] * len(reqs)
    for pos, i in enumerate(order):
        out[i] = rows[pos]
    return out


async def _place_order_lists(
    pool: Pool, reqs: Sequence[ListRequest]
) -> list[tuple[int | None, list[int], PlaceResult]]:
    one = [r.legs[0] for r in reqs]
    two = [r.legs[1] for r in reqs]
    rows = await pool.fetch(
        """SELECT p.list_id, p.order_ids, p.result
           FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                       $6::bigint[], $7::smallint[], $8::smallint[], $9::text[], $10::text[],
                       $11::smallint[], $12::smallint[], $13::smallint[], $14::smallint[],
                       $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[],
                       $19::bigint[], $20::bigint[], $21::bigint[], $22::bigint[],
                       $23::bigint[], $24::bigint[])
                WITH ORDINALITY AS u(account, symbol, list_cid, hold_asset, hold, ts, side,
                                     stp, cid1, cid2, type1, type2, tif1, tif2, price1,
                                     price2, qty1, qty2, quote1, quote2, stop1, stop2, ice1,
                                     ice2, n)
           CROSS JOIN LATERAL place_order_list(
                u.account, u.symbol, u.list_cid, u.hold_asset, u.hold, u.ts,
                ARRAY[u.cid1, u.cid2], u.side, ARRAY[u.type1, u.type2],
                ARRAY[u.tif1, u.tif2], ARRAY[u.price1, u.price2], ARRAY[u.qty1, u.qty2],
                ARRAY[u.quote1, u.quote2], ARRAY[u.stop1, u.stop2], ARRAY[u.ice1, u.ice2],
                u.stp) AS p
           ORDER BY u.n""",
        [r.account for r in reqs], [r.symbol for r in reqs],
        [r.list_client_order_id for r in reqs], [r.hold_asset for r in reqs],
        [r.hold for r in reqs], [r.ts for r in reqs], [int(r.legs[0].side) for r in reqs],
        [int(r.legs[0].stp) for r in reqs],
        [g.client_order_id for g in one], [g.client_order_id for g in two],
        [int(g.type) for g in one], [int(g.type) for g in two],
        [int(g.tif) for g in one], [int(g.tif) for g in two],
        [g.price for g in one], [g.price for g in two], [g.qty for g in one],
        [g.qty for g in two], [g.quote_qty for g in one], [g.quote_qty for g in two],
        [g.stop_price for g in one], [g.stop_price for g in two],
        [g.iceberg_qty for g in one], [g.iceberg_qty for g in two],
    )
    out: list[tuple[int | None, list[int], PlaceResult]] = []
    for row in rows:
        result = PlaceResult(row["result"])
        if result != PlaceResult.PLACED:
            out.append((None, [], result))
        else:
            out.append((int(row["list_id"]), [int(i) for i in row["order_ids"]], result))
    return out


ORDER_COLUMNS = (
    "id, account_id, symbol, client_order_id, side, type, tif, price, qty, quote_qty, by_quote,"
    " status, executed, cum_quote, hold_asset, hold_amount, hold_remaining, created_ms,"
    " updated_ms, stop_price, iceberg_qty, stp, good_till, working_ms, order_list_id, reason"
)


def order_row(r: asyncpg.Record) -> OrderRow:
    """A row of :data:`ORDER_COLUMNS` as the use cases' typed row."""
    return OrderRow(
        r[0], r[1], r[2], r[3], Side(r[4]), OrderType(r[5]), TimeInForce(r[6]), r[7], r[8],
        r[9], r[10], Status(r[11]), r[12], r[13], r[14], r[15], r[16], r[17], r[18], r[19],
        r[20], StpMode(r[21]), r[22], r[23], r[24], Reason(r[25]),
    )


@_translated
async def get_order(
    pool: Pool, account: int, symbol: str, order_id: int | None, client_order_id: str | None
) -> OrderRow | None:
    if order_id is not None:
        r = await pool.fetchrow(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND account_id = $2"
            " AND symbol = $3",
            order_id, account, symbol,
        )
    else:
        # A client order id may be reused once its order is closed: the newest has it.
        r = await pool.fetchrow(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE client_order_id = $1"
            " AND account_id = $2 AND symbol = $3 ORDER BY id DESC LIMIT 1",
            client_order_id, account, symbol,
        )
    return None if r is None else order_row(r)


@_translated
async def open_orders(pool: Pool, account: int, symbol: str | None) -> list[OrderRow]:
    if symbol is None:
        rows = await pool.fetch(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE account_id = $1 AND status IN (0,1,2)"
            " ORDER BY id",
            account,
        )
    else:
        rows = await pool.fetch(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE account_id = $1 AND symbol = $2"
            " AND status IN (0,1,2) ORDER BY id",
            account, symbol,
        )
    return [order_row(r) for r in rows]


@_translated
async def rename_order(
    pool: Pool, order_id: int, old_client_id: str, new_client_id: str
) -> bool:
    """Give an open order a new client order id (an amend does; Binance semantics).

    Returns False when another order of the account and symbol has that id, or the order
    is no longer open under ``old_client_id``.
    """
    try:
        done = await pool.fetchval(
            "UPDATE orders SET client_order_id = $3 WHERE id = $1 AND client_order_id = $2"
            " RETURNING 1",
            order_id, old_client_id, new_client_id,
        )
    except asyncpg.UniqueViolationError:
        return False
    return bool(done)


# --------------------------------------------------------------------------- order lists
LIST_COLUMNS = (
    "id, account_id, symbol, list_client_order_id, contingency, status, created_ms, updated_ms"
)


@_translated
async def get_order_list(
    pool: Pool, account: int, list_id: int | None, list_client_id: str | None,
    symbol: str | None = None,
) -> ListRow | None:
    """An order list of the account by id or by its client id (optionally on a symbol)."""
    key, value = ("id", list_id) if list_id is not None else ("list_client_order_id",
                                                              list_client_id)
    if symbol is None:
        r = await pool.fetchrow(
            f"SELECT {LIST_COLUMNS} FROM order_lists WHERE {key} = $1 AND account_id = $2",
            value, account,
        )
    else:
        r = await pool.fetchrow(
            f"SELECT {LIST_COLUMNS} FROM order_lists WHERE {key} = $1 AND account_id = $2"
            " AND symbol = $3",
            value, account, symbol,
        )
    return None if r is None else ListRow(*r)


@_translated
async def open_order_lists(pool: Pool, account: int) -> list[ListRow]:
    rows = await pool.fetch(
        f"SELECT {LIST_COLUMNS} FROM order_lists WHERE account_id = $1"
        " AND status = 'EXECUTING' ORDER BY id",
        account,
    )
    return [ListRow(*r) for r in rows]


@_translated
async def list_orders(pool: Pool, list_ids: Sequence[int]) -> dict[int, list[OrderRow]]:
    """The orders of each list (in leg order), in one round trip."""
    rows = await pool.fetch(
        f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_list_id <> 0"
        " AND order_list_id = ANY($1::bigint[]) ORDER BY id",
        list(list_ids),
    )
    out: dict[int, list[OrderRow]] = {}
    for r in rows:
        row = order_row(r)
        out.setdefault(row.order_list_id, []).append(row)
    return out


async def _history(
    pool: Pool, select: str, key: str, conds: list[str], args: list[Any],
    ranges: tuple[tuple[str, int | None], ...], from_id: int | None, limit: int,
) -> list[asyncpg.Record]:
    """Binance history semantics: with ``fromId`` the ``limit`` rows from there on, else the
    newest ``limit`` rows; optional ``col >= / <=`` bounds; always returned oldest first."""
    conds, args = list(conds), list(args)
    for cond, val in ranges:
        if val is not None:
            args.append(val)
            conds.append(f"{cond}${len(args)}")
    args.append(limit)
    order = "ASC" if from_id is not None else "DESC"
    rows = await pool.fetch(
        f"{select} WHERE {' AND '.join(conds)} ORDER BY {key} {order} LIMIT ${len(args)}",
        *args,
    )
    return sorted(rows, key=lambda r: r[key])


@_translated
async def all_orders(
    pool: Pool, account: int, symbol: str, from_id: int | None, start_ms: int | None,
    end_ms: int | None, limit: int,
) -> list[OrderRow]:
    rows = await _history(
        pool, f"SELECT {ORDER_COLUMNS} FROM orders", "id",
        ["account_id = $1", "symbol = $2"], [account, symbol],
        (("id >= ", from_id), ("created_ms >= ", start_ms), ("created_ms <= ", end_ms)),
        from_id, limit,
    )
    return [order_row(r) for r in rows]


TRADE_COLUMNS = (
    "symbol, trade_id, price, qty, quote_qty, buyer_order, seller_order, buyer_account,"
    " seller_account, buyer_is_maker, buyer_fee, seller_fee, ts"
)


@_translated
async def order_trades(pool: Pool, symbol: str, order_id: int) -> list[TradeRow]:
    rows = await pool.fetch(
        f"SELECT {TRADE_COLUMNS} FROM trades WHERE symbol = $1"
        " AND (buyer_order = $2 OR seller_order = $2) ORDER BY trade_id",
        symbol, order_id,
    )
    return [TradeRow(*r) for r in rows]


@_translated
async def my_trades(
    pool: Pool, account: int, symbol: str, order_id: int | None, from_id: int | None,
    start_ms: int | None, end_ms: int | None, limit: int,
) -> list[TradeRow]:
    conds = ["symbol = $1", "(buyer_account = $2 OR seller_account = $2)"]
    args: list[Any] = [symbol, account]
    if order_id is not None:
        args.append(order_id)
        conds.append(f"(buyer_order = ${len(args)} OR seller_order = ${len(args)})")
    rows = await _history(
        pool, f"SELECT {TRADE_COLUMNS} FROM trades", "trade_id", conds, args,
        (("trade_id >= ", from_id), ("ts >= ", start_ms), ("ts <= ", end_ms)), from_id, limit,
    )
    return [TradeRow(*r) for r in rows]


@_translated
async def recent_public_trades(
    pool: Pool, symbol: str, from_id: int | None, limit: int
) -> list[asyncpg.Record]:
    if from_id is None:
        rows = await pool.fetch(
            "SELECT * FROM trades WHERE symbol = $1 ORDER BY trade_id DESC LIMIT $2",
            symbol, limit,
        )
        return list(reversed(rows))
    return await pool.fetch(
        "SELECT * FROM trades WHERE symbol = $1 AND trade_id >= $2 ORDER BY trade_id LIMIT $3",
        symbol, from_id, limit,
    )


@_translated
async def pending_orders(pool: Pool, older_than_ms: int, limit: int = 1000) -> list[asyncpg.Record]:
    """Orders whose command may not have reached the bus (outbox relay). Both legs of a
    list come together (a list is placed as one)."""
    return await pool.fetch(
        f"""WITH p AS (SELECT id, order_list_id FROM orders
                       WHERE status = 0 AND created_ms < $1 ORDER BY id LIMIT $2)
            SELECT {ORDER_COLUMNS} FROM orders WHERE id IN (SELECT id FROM p)
            UNION ALL
            SELECT {ORDER_COLUMNS} FROM orders
            WHERE status = 0 AND order_list_id <> 0 AND id NOT IN (SELECT id FROM p)
              AND order_list_id IN (SELECT order_list_id FROM p WHERE order_list_id <> 0)
            ORDER BY id""",
        older_than_ms, limit,
    )


# --------------------------------------------------------------------------- settlement
@_translated
async def settlement_cursors(pool: Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT symbol, last_seq FROM settlement_cursor")
    return {r["symbol"]: int(r["last_seq"]) for r in rows}


@_translated
async def consumer_position(pool: Pool, consumer: str) -> int:
    v = await pool.fetchval(
        "SELECT stream_seq FROM consumer_positions WHERE consumer = $1", consumer
    )
    return int(v or 0)


@_translated
async def load_settlement_orders(
    con: Conn, ids: Iterable[int]
) -> tuple[dict[int, OrderState], dict[int, asyncpg.Record]]:
    """The orders a settlement pull touches and the other legs of their order lists, in
    one round trip: the ledger states (which settlement mutates) and the full rows
    (``ORDER_COLUMNS``) as they were before the pull, which the user data stream reports
    start from."""
    rows = await con.fetch(
        # "order_list_id <> 0" on both sides lets the partial index orders_list serve it.
        f"""SELECT {ORDER_COLUMNS} FROM orders WHERE id = ANY($1::bigint[])
            UNION ALL
            SELECT {ORDER_COLUMNS} FROM orders
            WHERE order_list_id <> 0 AND NOT (id = ANY($1::bigint[])) AND order_list_id IN (
                SELECT order_list_id FROM orders
                WHERE id = ANY($1::bigint[]) AND order_list_id <> 0)""",
        list(ids),
    )
    by_id = {r["id"]: r for r in rows}
    legs: dict[int, list[int]] = {}
    for r in rows:
        if r["order_list_id"]:
            legs.setdefault(r["order_list_id"], []).append(r["id"])
    states = {}
    for i, r in by_id.items():
        lid = r["order_list_id"]
        partner = next((j for j in legs.get(lid, ()) if j != i), 0) if lid else 0
        states[i] = OrderState(
            i, r["account_id"], Side(r["side"]), Status(r["status"]), r["executed"],
            r["cum_quote"], r["hold_asset"], r["hold_remaining"], r["updated_ms"],
            type=OrderType(r["type"]), price=r["price"], qty=r["qty"],
            quote_qty=r["quote_qty"], working_ms=r["working_ms"], reason=Reason(r["reason"]),
            partner=partner, list_id=lid,
        )
    return states, by_id


@_translated
async def balances_of(
    con: Conn | Pool, keys: Iterable[tuple[int, str]]
) -> dict[int, list[tuple[str, int, int]]]:
    """``(asset, available, locked)`` of the given (account, asset) pairs, per account,
    assets sorted; one round trip."""
    pairs = list(keys)
    if not pairs:
        return {}
    rows = await con.fetch(
        """SELECT b.account_id, b.asset, b.available, b.locked FROM balances b
           JOIN unnest($1::bigint[], $2::text[]) AS k(account_id, asset)
             ON b.account_id = k.account_id AND b.asset = k.asset
           ORDER BY b.account_id, b.asset""",
        [k[0] for k in pairs], [k[1] for k in pairs],
    )
    out: dict[int, list[tuple[str, int, int]]] = {}
    for r in rows:
        out.setdefault(r["account_id"], []).append((r["asset"], r["available"], r["locked"]))
    return out


@_translated
async def write_settlement(
    con: Conn,
    settlement: Settlement,
    orders: Iterable[OrderState],
    cursors: dict[str, int],
    position: tuple[str, int] | None = None,
) -> None:
    """Write one settled batch; the caller holds the transaction.

    Raises:
        LedgerError: unbalanced postings (nothing is written).
    """
    check_balanced(settlement.postings)
    dirty = [o for o in orders if o.dirty]
    if dirty:
        await con.execute(
            """UPDATE orders AS o SET status = u.status, executed = u.executed,
                   cum_quote = u.cum_quote, hold_remaining = u.hold_remaining,
                   updated_ms = u.updated_ms, qty = u.qty, working_ms = u.working_ms,
                   reason = u.reason
               FROM unnest($1::bigint[], $2::smallint[], $3::bigint[], $4::bigint[],
                           $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[],
                           $9::smallint[])
                    AS u(id, status, executed, cum_quote, hold_remaining, updated_ms, qty,
                         working_ms, reason)
               WHERE o.id = u.id""",
            [o.order_id for o in dirty], [int(o.status) for o in dirty],
            [o.executed for o in dirty], [o.cum_quote for o in dirty],
            [o.hold_remaining for o in dirty], [o.updated_ms for o in dirty],
            [o.qty for o in dirty], [o.working_ms for o in dirty],
            [int(o.reason) for o in dirty],
        )
        lists = sorted({o.list_id for o in dirty if o.list_id})
        if lists:
            # listOrderStatus follows its legs: REJECT when the engine refused the list,
            # ALL_DONE once both legs ended.
            await con.execute(
                """UPDATE order_lists AS l SET status = s.status, updated_ms = s.updated_ms
                   FROM (SELECT order_list_id,
                                CASE WHEN bool_and(status = 5) THEN 'REJECT'
                                     WHEN bool_and(status IN (3, 4, 5, 6, 7)) THEN 'ALL_DONE'
                                     ELSE 'EXECUTING' END AS status,
                                max(updated_ms) AS updated_ms
                         FROM orders
                         WHERE order_list_id <> 0 AND order_list_id = ANY($1::bigint[])
                         GROUP BY order_list_id) AS s
                   WHERE l.id = s.order_list_id AND l.status <> s.status""",
                lists,
            )
    if settlement.trades:
        await con.copy_records_to_table(
            "trades",
            records=[
                (t.symbol, t.trade_id, t.price, t.qty, t.quote_qty, t.buyer_order,
                 t.seller_order, t.buyer_account, t.seller_account, t.buyer_is_maker,
                 t.buyer_fee, t.seller_fee, t.ts)
                for t in settlement.trades
            ],
            columns=["symbol", "trade_id", "price", "qty", "quote_qty", "buyer_order",
                     "seller_order", "buyer_account", "seller_account", "buyer_is_maker",
                     "buyer_fee", "seller_fee", "ts"],
        )
    await _write_postings(con, settlement.postings)
    await _apply_deltas(con, settlement.balance_deltas())
    if cursors and position is not None:
        # Both in one statement (two tables, no row in common): one round trip fewer. A
        # data-modifying WITH runs to completion whether or not the main query reads it.
        await con.execute(f"WITH cursors AS ({_CURSORS}) {_position_sql(3)}",
                          list(cursors), list(cursors.values()), *position)
    elif cursors:
        await con.execute(_CURSORS, list(cursors), list(cursors.values()))
    elif position is not None:
        await con.execute(_position_sql(1), *position)


_CURSORS = """INSERT INTO settlement_cursor (symbol, last_seq)
    SELECT * FROM unnest($1::text[], $2::bigint[])
    ON CONFLICT (symbol) DO UPDATE SET last_seq = EXCLUDED.last_seq"""


def _position_sql(first: int) -> str:
    """The consumer position's upsert, its two parameters numbered from ``first``."""
    return (f"INSERT INTO consumer_positions (consumer, stream_seq)"
            f" VALUES (${first}, ${first + 1})"
            " ON CONFLICT (consumer) DO UPDATE SET stream_seq = EXCLUDED.stream_seq")


async def _write_postings(con: Conn, postings: list[Posting]) -> None:
    if postings:
        await con.copy_records_to_table(
            "postings", records=postings,
            columns=["tx_ref", "account_id", "asset", "bucket", "amount"],
        )


async def _apply_deltas(
    con: Conn, deltas: dict[tuple[int, str], tuple[int, int]]
) -> None:
    if not deltas:
        return
    keys = sorted(deltas)
    accounts, assets = [k[0] for k in keys], [k[1] for k in keys]
    # Lock in the global (account, asset) order first, as order entry does: no deadlocks.
    found = await con.fetch(
        """SELECT b.account_id, b.asset FROM balances b
           JOIN unnest($1::bigint[], $2::text[]) AS k(account_id, asset)
             ON b.account_id = k.account_id AND b.asset = k.asset
           ORDER BY b.account_id, b.asset FOR UPDATE OF b""",
        accounts, assets,
    )
    # Create missing rows at zero first: an INSERT .. ON CONFLICT would check the CHECK
    # constraints against the delta itself, which may be negative. Only the rows the lock
    # did not find (usually none: a round trip per settlement saved); one created
    # meanwhile by another transaction is left as it is (DO NOTHING), as before.
    have = {(r["account_id"], r["asset"]) for r in found}
    missing = [k for k in keys if k not in have]
    if missing:
        await con.execute(
            """INSERT INTO balances (account_id, asset)
               SELECT * FROM unnest($1::bigint[], $2::text[])
               ON CONFLICT (account_id, asset) DO NOTHING""",
            [k[0] for k in missing], [k[1] for k in missing],
        )
    await con.execute(
        """UPDATE balances AS b SET available = b.available + u.a, locked = b.locked + u.l
           FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[])
                AS u(account_id, asset, a, l)
           WHERE b.account_id = u.account_id AND b.asset = u.asset""",
        accounts, assets, [deltas[k][0] for k in keys], [deltas[k][1] for k in keys],
    )


# --------------------------------------------------------------------------- invariants
@dataclass(frozen=True, slots=True)
class AssetCheck:
    asset: str
    balances_total: int  # sum over all accounts, available + locked
    external_net: int  # credits minus debits from the outside world
    postings_total: int  # sum of all postings: zero when every transaction balances

    @property
    def ok(self) -> bool:
        return self.balances_total == self.external_net and self.postings_total == 0


@_translated
async def check_invariants(pool: Pool) -> tuple[list[AssetCheck], list[str]]:
    """Per-asset totals and a list of violations (empty = the ledger is sound)."""
    rows = await pool.fetch(
        """WITH b AS (SELECT asset, sum(available + locked) AS total FROM balances
                      GROUP BY asset),
                p AS (SELECT asset, sum(amount) AS total,
                             -sum(amount) FILTER (WHERE account_id = 0) AS ext
                      FROM postings GROUP BY asset)
           SELECT coalesce(b.asset, p.asset) AS asset, coalesce(b.total, 0) AS bal,
                  coalesce(p.ext, 0) AS ext, coalesce(p.total, 0) AS post
           FROM b FULL JOIN p ON b.asset = p.asset ORDER BY 1"""
    )
    checks = [AssetCheck(r["asset"], int(r["bal"]), int(r["ext"]), int(r["post"])) for r in rows]
    problems = [
        f"{c.asset}: balances {c.balances_total} != external net {c.external_net}"
        f" (postings sum {c.postings_total})"
        for c in checks if not c.ok
    ]
    per_account = await pool.fetch(
        """WITH p AS (SELECT account_id, asset, sum(amount) FILTER (WHERE bucket='a') AS a,
                             sum(amount) FILTER (WHERE bucket='l') AS l
                      FROM postings WHERE account_id <> 0 GROUP BY account_id, asset)
           SELECT coalesce(b.account_id, p.account_id) AS account_id,
                  coalesce(b.asset, p.asset) AS asset
           FROM balances b FULL JOIN p ON b.account_id = p.account_id AND b.asset = p.asset
           WHERE coalesce(b.available, 0) <> coalesce(p.a, 0)
              OR coalesce(b.locked, 0) <> coalesce(p.l, 0)"""
    )
    problems += [
        f"account {r['account_id']} {r['asset']}: balance differs from its postings"
        for r in per_account
    ]
    # Locked funds are held by open orders, by open withdrawals (migration 003) and, in
    # the escrow account (3), by funded deals (migration 009).
    holds = await pool.fetch(
        """WITH h AS (SELECT account_id, asset, sum(held) AS held FROM (
                          SELECT account_id, hold_asset AS asset, hold_remaining AS held
                          FROM orders
                          UNION ALL
                          SELECT account_id, asset, hold FROM withdrawals
                          WHERE status IN ('PENDING', 'APPROVED', 'PROCESSING', 'ON_CHAIN')
                          UNION ALL
                          SELECT 3, asset, amount FROM escrow_deals
                          WHERE state IN ('FUNDED', 'PAID', 'DISPUTED')
                      ) AS x GROUP BY 1, 2)
           SELECT b.account_id, b.asset FROM balances b
           LEFT JOIN h ON h.account_id = b.account_id AND h.asset = b.asset
           WHERE b.locked <> coalesce(h.held, 0)"""
    )
    problems += [
        f"account {r['account_id']} {r['asset']}: locked differs from open order,"
        " withdrawal and escrow holds"
        for r in holds
    ]
    return checks, problems


def _stored_request(r: asyncpg.Record) -> OrderRequest:
    return OrderRequest(
        r["account_id"], r["symbol"], r["client_order_id"], Side(r["side"]),
        OrderType(r["type"]), TimeInForce(r["tif"]), r["price"], r["qty"], r["quote_qty"],
        r["by_quote"], r["hold_asset"], r["hold_amount"], r["created_ms"], r["stop_price"],
        r["iceberg_qty"], StpMode(r["stp"]), r["good_till"], r["order_list_id"],
    )


def new_order_command(r: asyncpg.Record) -> NewOrder:
    """The engine command for a stored order (the outbox relay re-sends it)."""
    return _stored_request(r).command(r["id"])


def relay_commands(rows: Sequence[asyncpg.Record]) -> list[tuple[str, str, Command]]:
    """``(symbol, message id, command)`` for stored pending orders: a ``NewOrder`` per
    order, and ONE ``NewOrderList`` per order list (for its legs, in leg order), each
    with a message id of its own (not the gateway's batch id), the same however often it
    is re-sent: see ``Settler.relay_round`` for why a re-send never doubles an order."""
    out: list[tuple[str, str, Command]] = []
    lists: dict[int, list[asyncpg.Record]] = {}
    for r in rows:
        if r["order_list_id"]:
            lists.setdefault(r["order_list_id"], []).append(r)
        else:
            out.append((r["symbol"], f"o{r['id']}", new_order_command(r)))
    for list_id, legs in lists.items():
        legs.sort(key=lambda r: r["id"])
        first = legs[0]
        cmd = NewOrderList(list_id, first["account_id"], [new_order_command(r) for r in legs],
                           first["created_ms"])
        out.append((first["symbol"], f"l{list_id}", cmd))
    return out


@_translated
async def locked_totals(pool: Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT asset, sum(locked) AS l FROM balances GROUP BY 1")
    return {r["asset"]: int(r["l"]) for r in rows}


# --------------------------------------------------------------------------- ledger verdict
@_translated
async def record_verdict(pool: Pool, checked_ms: int, problems: Sequence[str]) -> None:
    """Keep the last invariant check's verdict (the admin health view reads it)."""
    await pool.execute(
        "INSERT INTO ledger_verdict (id, checked_ms, ok, problems) VALUES (1, $1, $2, $3)"
        " ON CONFLICT (id) DO UPDATE SET checked_ms = EXCLUDED.checked_ms,"
        " ok = EXCLUDED.ok, problems = EXCLUDED.problems",
        checked_ms, not problems, json.dumps(list(problems)[:50]),
    )


@_translated
async def ledger_verdict(pool: Pool) -> tuple[int, bool, str] | None:
    """``(checked_ms, ok, problems as JSON)`` of the last check, or None."""
    r = await pool.fetchrow("SELECT checked_ms, ok, problems::text AS p FROM ledger_verdict")
    return None if r is None else (int(r["checked_ms"]), bool(r["ok"]), str(r["p"]))
