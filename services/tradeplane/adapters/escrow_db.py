"""Escrowed deals in PostgreSQL (migration 009) and their user-stream events on NATS.

``PgEscrowStore.transaction`` is one database transaction per use case
(:mod:`tradeplane.usecases.escrow`): the deal row locked ``FOR UPDATE``, the balance rows
locked in the ledger's (account, asset) order, the postings applied by
``db.apply_postings``, the transition and the audit record written in it. Every method
raises DatabaseUnavailable when a round trip fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import asyncpg

from tradeplane.adapters import accounts_db
from tradeplane.adapters.bus import Bus, user_subject
from tradeplane.adapters.db import (
    DRIVER_ERRORS,
    Conn,
    DatabaseUnavailable,
    Pool,
    apply_postings,
    balances,
)
from tradeplane.domain.escrow import DealState, Terms
from tradeplane.domain.ledger import Posting
from tradeplane.domain.money import fmt_units
from tradeplane.domain.userevents import account_position, encode
from tradeplane.usecases.audit import AuditRecord
from tradeplane.usecases.escrow import Deal, Transition

_DEAL_COLS = ("id, seller_id, buyer_id, client_deal_id, asset, amount, price_asset, price,"
              " fund_window_ms, pay_window_ms, state, deadline_ms, created_ms, updated_ms")
_TR_COLS = ("deal_id, seq, action, party, actor, from_state, to_state, request_id, note,"
            " at_ms")


def _deal(r: asyncpg.Record) -> Deal:
    return Deal(r["id"], r["seller_id"], r["buyer_id"], r["client_deal_id"], r["asset"],
                r["amount"], r["price_asset"], r["price"], r["fund_window_ms"],
                r["pay_window_ms"], DealState(r["state"]), r["deadline_ms"],
                r["created_ms"], r["updated_ms"])


def _transition(r: asyncpg.Record) -> Transition:
    return Transition(r["deal_id"], r["seq"], r["action"], r["party"], r["actor"],
                      r["from_state"], DealState(r["to_state"]), r["request_id"], r["note"],
                      r["at_ms"])


class PgEscrowTx:
    def __init__(self, con: Conn) -> None:
        self.con = con

    async def audit(self, record: AuditRecord) -> None:
        await accounts_db.append_audit(self.con, accounts_db.AuditEntry(
            record.actor, record.role, record.action, record.target, record.before,
            record.after, record.ip))

    async def is_user(self, account: int) -> bool:
        kind = await self.con.fetchval("SELECT kind FROM accounts WHERE id = $1", account)
        return bool(kind == "user")

    async def deal_of_client(self, buyer: int, client_deal_id: str) -> Deal | None:
        r = await self.con.fetchrow(
            f"SELECT {_DEAL_COLS} FROM escrow_deals WHERE buyer_id = $1"
            " AND client_deal_id = $2", buyer, client_deal_id)
        return None if r is None else _deal(r)

    async def insert_deal(self, terms: Terms, client_deal_id: str, now_ms: int,
                          deadline_ms: int | None) -> Deal | None:
        # A concurrent opening with the same clientDealId: PostgreSQL waits for it and
        # this inserts nothing (None); the use case then reads the deal it made.
        r = await self.con.fetchrow(
            f"""INSERT INTO escrow_deals ({_DEAL_COLS})
                VALUES (nextval('escrow_deal_ids'), $1, $2, $3, $4, $5, $6, $7, $8, $9,
                        'CREATED', $10, $11, $11)
                ON CONFLICT (buyer_id, client_deal_id) DO NOTHING
                RETURNING {_DEAL_COLS}""",
            terms.seller, terms.buyer, client_deal_id, terms.asset, terms.amount,
            terms.price_asset, terms.price, terms.fund_window_ms, terms.pay_window_ms,
            deadline_ms, now_ms)
        return None if r is None else _deal(r)

    async def lock_deal(self, deal_id: int) -> Deal | None:
        r = await self.con.fetchrow(
            f"SELECT {_DEAL_COLS} FROM escrow_deals WHERE id = $1 FOR UPDATE", deal_id)
        return None if r is None else _deal(r)

    async def transition_of_request(self, deal_id: int, request_id: str
                                    ) -> Transition | None:
        r = await self.con.fetchrow(
            f"SELECT {_TR_COLS} FROM escrow_transitions WHERE deal_id = $1"
            " AND request_id = $2", deal_id, request_id)
        return None if r is None else _transition(r)

    async def lock_balances(self, keys: Sequence[tuple[int, str]]
                            ) -> dict[tuple[int, str], int]:
        ordered = sorted(set(keys))
        rows = await self.con.fetch(
            """SELECT b.account_id, b.asset, b.available FROM balances b
               JOIN unnest($1::bigint[], $2::text[]) AS k(account_id, asset)
                 ON b.account_id = k.account_id AND b.asset = k.asset
               ORDER BY b.account_id, b.asset FOR UPDATE OF b""",
            [k[0] for k in ordered], [k[1] for k in ordered])
        return {(r["account_id"], r["asset"]): int(r["available"]) for r in rows}

    async def apply(self, ledger: list[Posting]) -> None:
        await apply_postings(self.con, ledger)

    async def record(self, deal: Deal, to: DealState, deadline_ms: int | None,
                     action: str, party: str, actor: str, request_id: str | None,
                     note: str, now_ms: int) -> tuple[Deal, Transition]:
        r = await self.con.fetchrow(
            f"""UPDATE escrow_deals SET state = $2, deadline_ms = $3, updated_ms = $4
                WHERE id = $1 RETURNING {_DEAL_COLS}""",
            deal.deal_id, to.value, deadline_ms, now_ms)
        t = await self.con.fetchrow(
            f"""INSERT INTO escrow_transitions ({_TR_COLS})
                SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4, $5, $6, $7, $8, $9
                FROM escrow_transitions WHERE deal_id = $1
                RETURNING {_TR_COLS}""",
            deal.deal_id, action, party, actor,
            deal.state.value if action != "create" else "", to.value, request_id, note,
            now_ms)
        assert r is not None and t is not None
        return _deal(r), _transition(t)


class PgEscrowStore:
    """``EscrowStore`` in PostgreSQL."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgEscrowTx]:
        try:
            async with self._pool.acquire() as con, con.transaction():
                yield PgEscrowTx(con)
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc

    async def deal(self, deal_id: int) -> Deal | None:
        try:
            r = await self._pool.fetchrow(
                f"SELECT {_DEAL_COLS} FROM escrow_deals WHERE id = $1", deal_id)
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        return None if r is None else _deal(r)

    async def deals(self, *, account: int | None, states: Sequence[DealState] | None,
                    from_id: int, limit: int) -> list[Deal]:
        try:
            rows = await self._pool.fetch(
                f"""SELECT {_DEAL_COLS} FROM escrow_deals
                    WHERE id >= $1
                      AND ($2::bigint IS NULL OR seller_id = $2 OR buyer_id = $2)
                      AND ($3::text[] IS NULL OR state = ANY($3::text[]))
                    ORDER BY id LIMIT $4""",
                from_id, account, None if states is None else [s.value for s in states],
                limit)
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        return [_deal(r) for r in rows]

    async def history(self, deal_id: int) -> list[Transition]:
        try:
            rows = await self._pool.fetch(
                f"SELECT {_TR_COLS} FROM escrow_transitions WHERE deal_id = $1"
                " ORDER BY seq", deal_id)
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        return [_transition(r) for r in rows]

    async def due(self, now_ms: int, limit: int) -> list[int]:
        try:
            rows = await self._pool.fetch(
                "SELECT id FROM escrow_deals WHERE deadline_ms <= $1"
                " ORDER BY deadline_ms, id LIMIT $2", now_ms, limit)
        except DRIVER_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {exc}") from exc
        return [int(r["id"]) for r in rows]

    async def balances(self, account: int, assets: Sequence[str]
                       ) -> list[tuple[str, int, int]]:
        return await balances(self._pool, account, assets)


def deal_event(deal: Deal, transition: Transition) -> dict[str, object]:
    """``escrowDealUpdate`` (ours) on the user data stream of both parties."""
    return {"e": "escrowDealUpdate", "E": transition.at_ms, "dealId": deal.deal_id,
            "clientDealId": deal.client_deal_id, "action": transition.action,
            "fromState": transition.from_state, "state": deal.state.value,
            "seller": deal.seller, "buyer": deal.buyer, "asset": deal.asset,
            "amount": fmt_units(deal.amount), "priceAsset": deal.price_asset,
            "price": fmt_units(deal.price), "deadline": deal.deadline_ms}


class BusEscrowNotifier:
    """``EscrowNotifier`` on each party's ``user.<account>`` subject (the one settlement
    publishes on): the new balances as ``outboundAccountPosition`` where they moved, then
    ``escrowDealUpdate``."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def deal_changed(self, deal: Deal, transition: Transition,
                           balances: dict[int, list[tuple[str, int, int]]]) -> None:
        """Raises BusUnavailable when NATS fails."""
        event = encode(deal_event(deal, transition))
        for account in (deal.seller, deal.buyer):
            subject = user_subject(account)
            if account in balances:
                await self._bus.publish(subject, encode(account_position(
                    transition.at_ms, transition.at_ms, balances[account])))
            await self._bus.publish(subject, event)
