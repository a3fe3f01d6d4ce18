"""Account snapshots in PostgreSQL (``usecases.portfolio.SnapshotStore``).

One round reads the balances, the external flows, the books' last prices and each
account's latest snapshot in one REPEATABLE READ transaction, so a snapshot's value and
its flows describe the same moment. The flows are the user's postings of the ledger
transactions that touch the outside world (the external account 0: credits, deposits,
completed withdrawals, fee included); like the invariant check, this scans ``postings``
(which has no secondary index, to keep settlement's writes cheap), once per round.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from tradeplane.adapters import db
from tradeplane.usecases.portfolio import Balance, LedgerState, Period, Snapshot

_COLUMNS = ("account_id, period, bucket_ms, taken_ms, quote, value, value_btc, invested,"
            " balances::text AS balances, flows::text AS flows")


def _snapshot(r: asyncpg.Record) -> Snapshot:
    balances = tuple(Balance(str(a), int(f), int(lk)) for a, f, lk in json.loads(r["balances"]))
    flows = {str(k): int(v) for k, v in json.loads(r["flows"]).items()}
    return Snapshot(int(r["account_id"]), Period(r["period"]), int(r["bucket_ms"]),
                    int(r["taken_ms"]), str(r["quote"]), int(r["value"]), int(r["value_btc"]),
                    int(r["invested"]), balances, flows)


class PgSnapshotStore:
    def __init__(self, pool: db.Pool) -> None:
        self.pool = pool

    async def ledger_state(self) -> LedgerState:
        """Raises DatabaseUnavailable."""
        try:
            async with self.pool.acquire() as con, con.transaction(
                    isolation="repeatable_read", readonly=True):
                return await self._state(con)
        except db.DRIVER_ERRORS as exc:
            raise db.DatabaseUnavailable(f"PostgreSQL: {exc}") from exc

    async def _state(self, con: Any) -> LedgerState:
        balances: dict[int, list[Balance]] = {}
        for r in await con.fetch(
                "SELECT b.account_id, b.asset, b.available, b.locked FROM balances b"
                " JOIN accounts a ON a.id = b.account_id AND a.kind = 'user'"
                " ORDER BY 1, 2"):
            balances.setdefault(int(r["account_id"]), []).append(
                Balance(r["asset"], int(r["available"]), int(r["locked"])))
        flows: dict[int, dict[str, int]] = {}
        for r in await con.fetch(
                """WITH ext AS (SELECT DISTINCT tx_ref FROM postings WHERE account_id = 0)
                   SELECT p.account_id, p.asset, sum(p.amount)::bigint AS net
                   FROM postings p JOIN ext USING (tx_ref)
                   JOIN accounts a ON a.id = p.account_id AND a.kind = 'user'
                   GROUP BY 1, 2"""):
            flows.setdefault(int(r["account_id"]), {})[r["asset"]] = int(r["net"])
        prices: dict[tuple[str, str], int] = {}
        for r in await con.fetch(
                """SELECT p.base, p.quote, t.price * p.tick AS price FROM pairs p
                   CROSS JOIN LATERAL (SELECT price FROM trades WHERE symbol = p.symbol
                                       ORDER BY trade_id DESC LIMIT 1) t"""):
            prices[(r["base"], r["quote"])] = int(r["price"])
        latest = {}
        for r in await con.fetch(
                f"SELECT DISTINCT ON (account_id) {_COLUMNS} FROM account_snapshots"
                " ORDER BY account_id, taken_ms DESC"):
            latest[int(r["account_id"])] = _snapshot(r)
        return LedgerState({k: tuple(v) for k, v in balances.items()}, flows, prices, latest)

    async def save(self, snapshots: Sequence[Snapshot]) -> int:
        """Raises DatabaseUnavailable."""
        if not snapshots:
            return 0
        try:
            async with self.pool.acquire() as con, con.transaction():
                rows = await con.fetch(
                    """INSERT INTO account_snapshots (account_id, period, bucket_ms, taken_ms,
                           quote, value, value_btc, invested, balances, flows)
                       SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[],
                           $4::bigint[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[],
                           $9::jsonb[], $10::jsonb[])
                       ON CONFLICT DO NOTHING RETURNING 1""",
                    [s.account for s in snapshots], [str(s.period) for s in snapshots],
                    [s.bucket_ms for s in snapshots], [s.taken_ms for s in snapshots],
                    [s.quote for s in snapshots], [s.value for s in snapshots],
                    [s.value_btc for s in snapshots], [s.invested for s in snapshots],
                    [json.dumps([[b.asset, b.free, b.locked] for b in s.balances])
                     for s in snapshots],
                    [json.dumps(dict(s.flows)) for s in snapshots],
                )
        except db.DRIVER_ERRORS as exc:
            raise db.DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        return len(rows)

    async def history(self, account: int, period: Period, start_ms: int, end_ms: int,
                      limit: int) -> list[Snapshot]:
        """Raises DatabaseUnavailable."""
        try:
            rows = await self.pool.fetch(
                f"""SELECT * FROM (SELECT {_COLUMNS} FROM account_snapshots
                       WHERE account_id = $1 AND period = $2 AND taken_ms BETWEEN $3 AND $4
                       ORDER BY bucket_ms DESC LIMIT $5) s ORDER BY bucket_ms""",
                account, str(period), start_ms, end_ms, limit)
        except db.DRIVER_ERRORS as exc:
            raise db.DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        return [_snapshot(r) for r in rows]
