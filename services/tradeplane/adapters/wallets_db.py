"""PostgreSQL for custody (migration 003): wallets, deposit addresses, deposits and their
scan cursor, withdrawals and their holds, whitelists, adjustments, reconciliations.

Every state change is one transaction and conditional on the state it leaves, so a
retried or concurrent change (the processor and an admin, a restarted watcher) applies at
most once. Ledger effects go through :func:`db.credit_in` / :func:`db.apply_postings` with
the postings of :mod:`tradeplane.domain.custody`, in the same transaction as the state.
"""

from __future__ import annotations

import json
import secrets as _stdlib_secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from tradeplane.adapters import db
from tradeplane.adapters.db import Conn, Pool, _translated
from tradeplane.domain.custody import (
    HOLDING,
    DepositChange,
    DepositRow,
    DepositStatus,
    WalletSpec,
    WithdrawalStatus,
    complete_postings,
    deposit_ref,
    lock_postings,
    release_postings,
    wallet_from_spec,
    withdrawal_intent,
)
from tradeplane.usecases import custody
from tradeplane.usecases.custody import RequestResult as RequestResult
from tradeplane.usecases.custody import WithdrawalRow as WithdrawalRow

_OPEN = [s.value for s in HOLDING]


# --------------------------------------------------------------------------- wallets
@_translated
async def upsert_wallet(pool: Pool, spec: WalletSpec) -> None:
    await pool.execute(
        """INSERT INTO wallets (name, chain, asset, spec) VALUES ($1, $2, $3, $4::jsonb)
           ON CONFLICT (name) DO UPDATE SET chain = EXCLUDED.chain, asset = EXCLUDED.asset,
               spec = EXCLUDED.spec, updated_at = now()""",
        spec.name, spec.chain, spec.asset, json.dumps(spec.to_spec()),
    )


def _spec(r: asyncpg.Record) -> WalletSpec:
    doc = r["spec"]
    return wallet_from_spec(r["name"], json.loads(doc) if isinstance(doc, str) else doc)


@_translated
async def load_wallet(pool: Pool, name: str) -> WalletSpec | None:
    """Raises WalletSpecError when the stored spec is invalid."""
    r = await pool.fetchrow("SELECT name, spec FROM wallets WHERE name = $1", name)
    return None if r is None else _spec(r)


@_translated
async def wallets(pool: Pool, asset: str | None = None) -> list[WalletSpec]:
    rows = await pool.fetch(
        "SELECT name, spec FROM wallets WHERE $1::text IS NULL OR asset = $1 ORDER BY name",
        asset,
    )
    return [_spec(r) for r in rows]


# --------------------------------------------------------------------------- addresses
@_translated
async def deposit_address(pool: Pool, wallet: str, account: int) -> str | None:
    v = await pool.fetchval(
        "SELECT address FROM deposit_addresses WHERE wallet = $1 AND account_id = $2",
        wallet, account,
    )
    return None if v is None else str(v)


@_translated
async def save_deposit_address(pool: Pool, wallet: str, account: int, address: str) -> str:
    """Remember ``address`` as ``account``'s on ``wallet`` and return the account's address
    (the one stored first, should two requests race).

    Raises:
        db.UnknownAccount: no such account.
        db.DatabaseError: the address already belongs to another account.
    """
    try:
        await pool.execute(
            """INSERT INTO deposit_addresses (wallet, account_id, address) VALUES ($1, $2, $3)
               ON CONFLICT (wallet, account_id) DO NOTHING""",
            wallet, account, address,
        )
    except asyncpg.ForeignKeyViolationError as exc:
        raise db.UnknownAccount(f"no account {account}") from exc
    except asyncpg.UniqueViolationError as exc:
        raise db.DatabaseError(f"address {address} already belongs to another account") \
            from exc
    stored = await deposit_address(pool, wallet, account)
    assert stored is not None
    return stored


@_translated
async def address_owners(pool: Pool, wallet: str, addresses: Iterable[str]) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT address, account_id FROM deposit_addresses"
        " WHERE wallet = $1 AND address = ANY($2::text[])",
        wallet, list(set(addresses)),
    )
    return {r["address"]: int(r["account_id"]) for r in rows}


# --------------------------------------------------------------------------- deposits
@_translated
async def load_cursor(pool: Pool, wallet: str) -> tuple[str, int] | None:
    """The scan cursor and the tip height it was taken at, None before the first scan."""
    r = await pool.fetchrow("SELECT cursor, height FROM wallet_cursors WHERE wallet = $1",
                            wallet)
    return None if r is None else (str(r["cursor"]), int(r["height"]))


_DEPOSIT_COLUMNS = ("id, wallet, chain, txid, idx, account_id, asset, address, amount, status,"
                    " confirmations, block_hash, height, credited_hash, created_ms, updated_ms,"
                    " credited_ms")


def _deposit(r: asyncpg.Record) -> DepositRow:
    return DepositRow(
        int(r["id"]), r["wallet"], r["chain"], r["txid"], int(r["idx"]), int(r["account_id"]),
        r["asset"], r["address"], int(r["amount"]), DepositStatus(r["status"]),
        int(r["confirmations"]), r["block_hash"], r["height"], r["credited_hash"],
        int(r["created_ms"]), int(r["updated_ms"]), r["credited_ms"],
    )


@_translated
async def deposits_to_follow(
    pool: Pool, wallet: str, chain: str, keys: Sequence[tuple[str, int]], min_height: int
) -> dict[tuple[str, int], DepositRow]:
    """The wallet's deposits a scan must look at: those it reported (``keys``), every one
    not yet credited, and credited ones still within the horizon (``height >=
    min_height``) or knocked off the chain (no block) after their credit."""
    rows = await pool.fetch(
        f"""SELECT {_DEPOSIT_COLUMNS} FROM deposits
            WHERE chain = $2 AND (txid, idx) IN (
                SELECT * FROM unnest($3::text[], $4::int[]))
            UNION
            SELECT {_DEPOSIT_COLUMNS} FROM deposits
            WHERE wallet = $1 AND (status IN ('PENDING', 'CONFIRMED')
                OR (status = 'CREDITED' AND (height IS NULL OR height >= $5)))""",
        wallet, chain, [k[0] for k in keys], [k[1] for k in keys], min_height,
    )
    return {(r["txid"], int(r["idx"])): _deposit(r) for r in rows}


@dataclass(frozen=True, slots=True)
class Adjustment:
    id: int
    deposit_id: int
    account: int
    asset: str
    amount: int
    detail: str


@_translated
async def apply_scan(
    pool: Pool, spec: WalletSpec, changes: Sequence[DepositChange], cursor: str, height: int,
    now_ms: int,
) -> list[Adjustment]:
    """Write one scan's deposit changes and move the cursor, in one transaction (a crash
    leaves the cursor where the deposits are). Returns the adjustments it opened (a
    reorganisation seen for the first time)."""
    opened: list[Adjustment] = []
    async with pool.acquire() as con, con.transaction():
        for ch in changes:
            if ch.existing is None:
                await con.fetchval(
                    """INSERT INTO deposits (wallet, chain, txid, idx, account_id, asset,
                           address, amount, status, confirmations, block_hash, height,
                           created_ms, updated_ms)
                       VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$13)
                       ON CONFLICT (chain, txid, idx) DO NOTHING RETURNING id""",
                    spec.name, spec.chain, ch.key[0], ch.key[1], ch.account, spec.asset,
                    ch.address, ch.amount, ch.status.value, ch.confirmations, ch.block_hash,
                    ch.height, now_ms,
                )
                # None: the same output is already another wallet's (of the same chain).
                continue
            await con.execute(
                """UPDATE deposits SET status = $2, confirmations = $3, block_hash = $4,
                       height = $5, credited_hash = coalesce($6, credited_hash),
                       updated_ms = $7
                   WHERE id = $1 AND (status <> 'CREDITED' OR $2 = 'CREDITED')""",
                ch.existing, ch.status.value, ch.confirmations, ch.block_hash, ch.height,
                ch.credited_hash, now_ms,
            )
            if ch.open_adjustment:
                adj = await con.fetchval(
                    """INSERT INTO wallet_adjustments (wallet, kind, deposit_id, account_id,
                           asset, amount, detail)
                       VALUES ($1, 'reorg_after_credit', $2, $3, $4, $5, $6)
                       ON CONFLICT (deposit_id, kind) WHERE status = 'OPEN' DO NOTHING
                       RETURNING id""",
                    spec.name, ch.existing, ch.account, spec.asset, ch.amount,
                    ch.open_adjustment,
                )
                if adj is not None:
                    opened.append(Adjustment(int(adj), ch.existing, ch.account, spec.asset,
                                             ch.amount, ch.open_adjustment))
            if ch.resolve_adjustment:
                await con.execute(
                    """UPDATE wallet_adjustments SET status = 'RESOLVED', resolution = $2,
                           resolved_at = now()
                       WHERE deposit_id = $1 AND kind = 'reorg_after_credit'
                         AND status = 'OPEN'""",
                    ch.existing, ch.resolve_adjustment,
                )
        await con.execute(
            """INSERT INTO wallet_cursors (wallet, cursor, height) VALUES ($1, $2, $3)
               ON CONFLICT (wallet) DO UPDATE SET cursor = EXCLUDED.cursor,
                   height = EXCLUDED.height, updated_at = now()""",
            spec.name, cursor, height,
        )
    return opened


@_translated
async def deposits_due(pool: Pool, wallet: str) -> list[DepositRow]:
    """CONFIRMED deposits: confirmed enough, not yet credited."""
    rows = await pool.fetch(
        f"SELECT {_DEPOSIT_COLUMNS} FROM deposits WHERE wallet = $1 AND status = 'CONFIRMED'"
        " ORDER BY id",
        wallet,
    )
    return [_deposit(r) for r in rows]


@_translated
async def credit_deposit(pool: Pool, deposit_id: int, now_ms: int) -> bool:
    """Credit a CONFIRMED deposit to its account and mark it CREDITED, in one transaction;
    the ledger credit is idempotent by ``deposit:<chain>:<txid>:<idx>`` besides. Returns
    False when the deposit is no longer CONFIRMED (credited already, or a reorganisation
    took it back)."""
    async with pool.acquire() as con, con.transaction():
        r = await con.fetchrow(
            f"SELECT {_DEPOSIT_COLUMNS} FROM deposits WHERE id = $1 FOR UPDATE", deposit_id
        )
        if r is None or r["status"] != DepositStatus.CONFIRMED:
            return False
        d = _deposit(r)
        await db.credit_in(con, d.account, d.asset, d.amount,
                           deposit_ref(d.chain, d.txid, d.index))
        await con.execute(
            """UPDATE deposits SET status = 'CREDITED', credited_ms = $2,
                   credited_hash = block_hash, updated_ms = $2
               WHERE id = $1""",
            deposit_id, now_ms,
        )
    return True


@_translated
async def unpublished_deposits(pool: Pool, wallet: str, limit: int = 500) -> list[DepositRow]:
    rows = await pool.fetch(
        f"SELECT {_DEPOSIT_COLUMNS} FROM deposits"
        " WHERE wallet = $1 AND published IS DISTINCT FROM status ORDER BY id LIMIT $2",
        wallet, limit,
    )
    return [_deposit(r) for r in rows]


@_translated
async def mark_deposit_published(pool: Pool, deposit_id: int, status: DepositStatus) -> None:
    await pool.execute("UPDATE deposits SET published = $2 WHERE id = $1 AND status = $2",
                       deposit_id, status.value)


@_translated
async def pending_deposits(pool: Pool, wallet: str) -> int:
    return int(await pool.fetchval(
        "SELECT count(*) FROM deposits WHERE wallet = $1 AND status IN ('PENDING', 'CONFIRMED')",
        wallet,
    ))


@_translated
async def deposit_history(
    pool: Pool, account: int, *, asset: str | None, statuses: Sequence[str] | None,
    start_ms: int, end_ms: int, offset: int, limit: int, txid: str | None,
) -> list[DepositRow]:
    """An account's deposits, newest first (dropped ones are not history)."""
    rows = await pool.fetch(
        f"""SELECT {_DEPOSIT_COLUMNS} FROM deposits
            WHERE account_id = $1 AND status <> 'DROPPED'
              AND ($2::text IS NULL OR asset = $2)
              AND ($3::text[] IS NULL OR status = ANY($3::text[]))
              AND created_ms BETWEEN $4 AND $5
              AND ($6::text IS NULL OR txid = $6)
            ORDER BY created_ms DESC, id DESC OFFSET $7 LIMIT $8""",
        account, asset, None if statuses is None else list(statuses), start_ms, end_ms, txid,
        offset, limit,
    )
    return [_deposit(r) for r in rows]


@_translated
async def open_adjustments(pool: Pool, wallet: str | None = None) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM wallet_adjustments WHERE status = 'OPEN'"
        " AND ($1::text IS NULL OR wallet = $1) ORDER BY id",
        wallet,
    )


# --------------------------------------------------------------------------- withdrawals
def _withdrawal(r: asyncpg.Record) -> WithdrawalRow:
    return WithdrawalRow(
        int(r["id"]), r["wallet"], int(r["account_id"]), r["asset"], r["address"],
        int(r["amount"]), int(r["fee"]), int(r["hold"]), r["client_id"],
        WithdrawalStatus(r["status"]), r["intent"], r["txid"], r["network_fee"],
        int(r["confirmations"]), int(r["attempts"]), r["info"], int(r["created_ms"]),
        int(r["updated_ms"]), r["completed_ms"],
    )


class FeeShortfall(db.DatabaseError, custody.FeeShortfall):
    """A withdrawal's network fee exceeded its charged fee by more than the fee account
    holds: it cannot be completed in the ledger yet."""


@_translated
async def whitelisted(
    pool: Pool, account: int, asset: str, address: str, *, required: bool
) -> bool:
    """Whether ``account`` may withdraw ``asset`` to ``address``: always, unless the account
    keeps a whitelist for the asset (or the wallet ``required`` one), which must list it."""
    r = await pool.fetchrow(
        """SELECT count(*) AS entries, bool_or(address = $3) AS listed
           FROM withdraw_whitelist WHERE account_id = $1 AND asset = $2""",
        account, asset, address,
    )
    assert r is not None
    if not r["entries"]:
        return not required
    return bool(r["listed"])


@_translated
async def whitelist_add(pool: Pool, account: int, asset: str, address: str) -> bool:
    """Returns False when it was listed already.

    Raises:
        db.UnknownAccount: no such account.
    """
    try:
        done = await pool.fetchval(
            """INSERT INTO withdraw_whitelist (account_id, asset, address) VALUES ($1, $2, $3)
               ON CONFLICT DO NOTHING RETURNING 1""",
            account, asset, address,
        )
    except asyncpg.ForeignKeyViolationError as exc:
        raise db.UnknownAccount(f"no account {account}") from exc
    return bool(done)


@_translated
async def whitelist_remove(pool: Pool, account: int, asset: str, address: str) -> bool:
    done = await pool.fetchval(
        "DELETE FROM withdraw_whitelist WHERE account_id = $1 AND asset = $2 AND address = $3"
        " RETURNING 1",
        account, asset, address,
    )
    return bool(done)


@_translated
async def whitelist(pool: Pool, account: int) -> list[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT asset, address FROM withdraw_whitelist WHERE account_id = $1"
        " ORDER BY asset, address",
        account,
    )
    return [(r["asset"], r["address"]) for r in rows]


@_translated
async def request_withdrawal(
    pool: Pool, spec: WalletSpec, account: int, address: str, amount: int,
    client_id: str | None, now_ms: int,
) -> tuple[RequestResult, int | None]:
    """Create a withdrawal and lock its amount plus the wallet's fee, in one transaction:
    PENDING above the approval threshold, APPROVED below. On any refusal nothing remains.

    Returns ``(CREATED | DUPLICATE, id)`` or ``(CONFLICT | INSUFFICIENT, None)``.
    """
    fee = spec.withdraw_fee
    hold = amount + fee
    status = WithdrawalStatus.PENDING if spec.needs_approval(amount) \
        else WithdrawalStatus.APPROVED
    try:
        async with pool.acquire() as con, con.transaction():
            wid = int(await con.fetchval("SELECT nextval('withdrawal_ids')"))
            inserted = await con.fetchval(
                """INSERT INTO withdrawals (id, wallet, account_id, asset, address, amount, fee,
                       hold, client_id, status, intent, created_ms, updated_ms)
                   VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$12)
                   ON CONFLICT (account_id, client_id) DO NOTHING RETURNING 1""",
                wid, spec.name, account, spec.asset, address, amount, fee, hold, client_id,
                status.value, withdrawal_intent(wid, _stdlib_secrets.token_hex(6)), now_ms,
            )
            if inserted:
                await db.apply_postings(con, lock_postings(wid, account, spec.asset, hold))
                return RequestResult.CREATED, wid
    except asyncpg.CheckViolationError:
        return RequestResult.INSUFFICIENT, None
    except asyncpg.ForeignKeyViolationError as exc:
        raise db.UnknownAccount(f"no account {account}") from exc
    same = await pool.fetchrow(
        "SELECT id, wallet, address, amount FROM withdrawals"
        " WHERE account_id = $1 AND client_id = $2",
        account, client_id,
    )
    assert same is not None
    if (same["wallet"], same["address"], same["amount"]) == (spec.name, address, amount):
        return RequestResult.DUPLICATE, int(same["id"])
    return RequestResult.CONFLICT, None


_W = "SELECT * FROM withdrawals"


@_translated
async def withdrawal(pool: Pool, wid: int) -> WithdrawalRow | None:
    r = await pool.fetchrow(f"{_W} WHERE id = $1", wid)
    return None if r is None else _withdrawal(r)


@_translated
async def withdrawals_in(
    pool: Pool, wallet: str, statuses: Iterable[WithdrawalStatus]
) -> list[WithdrawalRow]:
    rows = await pool.fetch(f"{_W} WHERE wallet = $1 AND status = ANY($2::text[]) ORDER BY id",
                            wallet, [s.value for s in statuses])
    return [_withdrawal(r) for r in rows]


async def _move(
    con: Conn, wid: int, frm: Iterable[WithdrawalStatus], to: WithdrawalStatus, now_ms: int,
    sets: str = "", *args: Any,
) -> WithdrawalRow | None:
    """Move a withdrawal from one of ``frm`` to ``to`` (plus ``sets``, parameters from $5);
    None when it is in none of ``frm`` (someone moved it first)."""
    r = await con.fetchrow(
        f"""UPDATE withdrawals SET status = $3, updated_ms = $4{', ' + sets if sets else ''}
            WHERE id = $1 AND status = ANY($2::text[]) RETURNING *""",
        wid, [s.value for s in frm], to.value, now_ms, *args,
    )
    return None if r is None else _withdrawal(r)


@_translated
async def approve(pool: Pool, wid: int, now_ms: int) -> WithdrawalRow | None:
    """PENDING -> APPROVED; None when it is not awaiting approval."""
    async with pool.acquire() as con:
        return await _move(con, wid, [WithdrawalStatus.PENDING], WithdrawalStatus.APPROVED,
                           now_ms)


async def _release(
    pool: Pool, wid: int, frm: Iterable[WithdrawalStatus], to: WithdrawalStatus, info: str,
    now_ms: int,
) -> WithdrawalRow | None:
    async with pool.acquire() as con, con.transaction():
        w = await _move(con, wid, frm, to, now_ms, "info = $5", info)
        if w is not None:
            await db.apply_postings(con, release_postings(w.id, w.account, w.asset, w.hold))
        return w


@_translated
async def reject(pool: Pool, wid: int, reason: str, now_ms: int) -> WithdrawalRow | None:
    """An admin refuses a withdrawal not yet being sent (PENDING or APPROVED): REJECTED,
    the hold released in the same transaction. None when it is past that point."""
    return await _release(pool, wid, [WithdrawalStatus.PENDING, WithdrawalStatus.APPROVED],
                          WithdrawalStatus.REJECTED, reason, now_ms)


@_translated
async def fail(pool: Pool, wid: int, info: str, now_ms: int) -> WithdrawalRow | None:
    """A send that definitely did not happen and will not be retried: FAILED, hold
    released."""
    return await _release(pool, wid, [WithdrawalStatus.PROCESSING], WithdrawalStatus.FAILED,
                          info, now_ms)


@_translated
async def start_processing(pool: Pool, wid: int, now_ms: int) -> WithdrawalRow | None:
    """APPROVED -> PROCESSING: the intent (the row's ``intent``) is durable before the send
    is made. None when it is no longer APPROVED (rejected meanwhile)."""
    async with pool.acquire() as con:
        return await _move(con, wid, [WithdrawalStatus.APPROVED],
                           WithdrawalStatus.PROCESSING, now_ms)


@_translated
async def back_to_approved(pool: Pool, wid: int, info: str, now_ms: int) -> bool:
    """PROCESSING -> APPROVED when the send was certainly not made (the hot wallet could not
    pay it); it is tried again later."""
    async with pool.acquire() as con:
        return await _move(con, wid, [WithdrawalStatus.PROCESSING], WithdrawalStatus.APPROVED,
                           now_ms, "info = $5", info) is not None


@_translated
async def note_attempt(pool: Pool, wid: int, info: str, now_ms: int, *, count: bool) -> None:
    """Record why a send did not go through (and, with ``count``, one more attempt)."""
    await pool.execute(
        "UPDATE withdrawals SET info = $2, updated_ms = $3, attempts = attempts + $4"
        " WHERE id = $1",
        wid, info, now_ms, 1 if count else 0,
    )


@_translated
async def record_sent(pool: Pool, wid: int, txid: str, now_ms: int) -> bool:
    """PROCESSING -> ON_CHAIN with the send's txid."""
    async with pool.acquire() as con:
        return await _move(con, wid, [WithdrawalStatus.PROCESSING], WithdrawalStatus.ON_CHAIN,
                           now_ms, "txid = $5, info = ''", txid) is not None


@_translated
async def update_on_chain(
    pool: Pool, wid: int, confirmations: int, network_fee: int, now_ms: int
) -> None:
    await pool.execute(
        """UPDATE withdrawals SET confirmations = $2, network_fee = $3, updated_ms = $4
           WHERE id = $1 AND status = 'ON_CHAIN'
             AND (confirmations, network_fee) IS DISTINCT FROM ($2, $3)""",
        wid, confirmations, network_fee, now_ms,
    )


@_translated
async def complete(
    pool: Pool, wid: int, confirmations: int, network_fee: int, now_ms: int
) -> WithdrawalRow | None:
    """ON_CHAIN -> COMPLETED and the hold leaves the ledger (``complete_postings``), in one
    transaction. None when it is not ON_CHAIN.

    Raises:
        FeeShortfall: the fee account cannot pay a network fee above the charged fee
            (nothing is written).
    """
    try:
        async with pool.acquire() as con, con.transaction():
            w = await _move(con, wid, [WithdrawalStatus.ON_CHAIN], WithdrawalStatus.COMPLETED,
                            now_ms, "confirmations = $5, network_fee = $6, completed_ms = $4",
                            confirmations, network_fee)
            if w is not None:
                await db.apply_postings(con, complete_postings(
                    w.id, w.account, w.asset, w.amount, w.fee, network_fee))
            return w
    except asyncpg.CheckViolationError as exc:
        raise FeeShortfall(f"withdrawal {wid}: the fee account cannot cover a network fee "
                           f"of {network_fee} units") from exc


@_translated
async def unpublished_withdrawals(pool: Pool, wallet: str, limit: int = 500
                                  ) -> list[WithdrawalRow]:
    rows = await pool.fetch(
        f"{_W} WHERE wallet = $1 AND published IS DISTINCT FROM status ORDER BY id LIMIT $2",
        wallet, limit,
    )
    return [_withdrawal(r) for r in rows]


@_translated
async def mark_withdrawal_published(pool: Pool, wid: int, status: WithdrawalStatus) -> None:
    await pool.execute("UPDATE withdrawals SET published = $2 WHERE id = $1 AND status = $2",
                       wid, status.value)


@_translated
async def withdraw_history(
    pool: Pool, account: int, *, asset: str | None, statuses: Sequence[str] | None,
    client_id: str | None, ids: Sequence[int] | None, start_ms: int, end_ms: int,
    offset: int, limit: int,
) -> list[WithdrawalRow]:
    """An account's withdrawals, newest first."""
    rows = await pool.fetch(
        f"""{_W} WHERE account_id = $1 AND ($2::text IS NULL OR asset = $2)
              AND ($3::text[] IS NULL OR status = ANY($3::text[]))
              AND ($4::text IS NULL OR client_id = $4)
              AND ($5::bigint[] IS NULL OR id = ANY($5::bigint[]))
              AND created_ms BETWEEN $6 AND $7
            ORDER BY created_ms DESC, id DESC OFFSET $8 LIMIT $9""",
        account, asset, None if statuses is None else list(statuses), client_id,
        None if ids is None else list(ids), start_ms, end_ms, offset, limit,
    )
    return [_withdrawal(r) for r in rows]


@_translated
async def withdrawing(pool: Pool, account: int) -> dict[str, int]:
    """Per asset, the units an account's withdrawals in flight hold (part of its locked
    balance until they complete, fail or are rejected)."""
    rows = await pool.fetch(
        """SELECT asset, sum(hold)::bigint AS held FROM withdrawals
           WHERE account_id = $1 AND status = ANY($2::text[]) GROUP BY asset""",
        account, _OPEN,
    )
    return {r["asset"]: int(r["held"]) for r in rows}


@_translated
async def all_withdrawals(pool: Pool, status: WithdrawalStatus | None, limit: int
                          ) -> list[WithdrawalRow]:
    rows = await pool.fetch(
        f"{_W} WHERE $1::text IS NULL OR status = $1 ORDER BY id DESC LIMIT $2",
        None if status is None else status.value, limit,
    )
    return [_withdrawal(r) for r in rows]


# --------------------------------------------------------------------------- reconciliation
@dataclass(frozen=True, slots=True)
class LedgerSide:
    """What the ledger says a wallet's chain balance should be, in parts."""

    ledger_total: int  # every account's available + locked of the asset (users and fees)
    sent_unfinished: int  # ON_CHAIN withdrawals: already paid on chain, still locked here
    uncredited: int  # deposits with confirmations that are not credited yet

    @property
    def liabilities(self) -> int:
        """The ledger's claim on the wallet: what it holds minus what already left."""
        return self.ledger_total - self.sent_unfinished


@_translated
async def ledger_side(pool: Pool, wallet: str, asset: str) -> LedgerSide:
    r = await pool.fetchrow(
        """SELECT
             (SELECT coalesce(sum(available + locked), 0) FROM balances
              WHERE asset = $2 AND account_id <> 0) AS total,
             (SELECT coalesce(sum(amount + coalesce(network_fee, fee)), 0) FROM withdrawals
              WHERE wallet = $1 AND status = 'ON_CHAIN') AS sent,
             (SELECT coalesce(sum(amount), 0) FROM deposits
              WHERE wallet = $1 AND status IN ('PENDING', 'CONFIRMED')
                AND confirmations >= 1) AS uncredited""",
        wallet, asset,
    )
    assert r is not None
    return LedgerSide(int(r["total"]), int(r["sent"]), int(r["uncredited"]))


@_translated
async def save_reconciliation(
    pool: Pool, wallet: str, asset: str, holdings: int, liabilities: int, difference: int,
    ok: bool, detail: dict[str, Any],
) -> None:
    await pool.execute(
        """INSERT INTO wallet_reconciliations (wallet, asset, holdings, liabilities,
               difference, ok, detail) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
           ON CONFLICT (wallet) DO UPDATE SET asset = EXCLUDED.asset,
               holdings = EXCLUDED.holdings, liabilities = EXCLUDED.liabilities,
               difference = EXCLUDED.difference, ok = EXCLUDED.ok, detail = EXCLUDED.detail,
               checked_at = now()""",
        wallet, asset, holdings, liabilities, difference, ok, json.dumps(detail),
    )


@_translated
async def reconciliations(pool: Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM wallet_reconciliations ORDER BY wallet")


# --------------------------------------------------------------------------- invariants
@_translated
async def custody_problems(pool: Pool) -> list[str]:
    """Custody's own ledger invariants (empty = sound): each credited deposit was credited
    exactly once with its amount, each deposit credit belongs to a credited deposit, and
    each withdrawal carries exactly the postings of the states it went through."""
    problems: list[str] = []
    rows = await pool.fetch(
        """SELECT d.id, d.status, d.amount, c.amount AS credited FROM deposits d
           FULL JOIN credits c ON c.ref = 'deposit:' || d.chain || ':' || d.txid || ':' || d.idx
           WHERE (c.ref IS NULL AND d.status = 'CREDITED')
              OR (c.ref IS NOT NULL AND c.ref LIKE 'deposit:%'
                  AND (d.id IS NULL OR d.status <> 'CREDITED' OR c.amount <> d.amount))"""
    )
    problems += [f"deposit {r['id']} ({r['status']}): credit {r['credited']} does not match"
                 f" amount {r['amount']}" for r in rows]
    rows = await pool.fetch(
        """WITH p AS (SELECT split_part(tx_ref, ':', 2)::bigint AS id,
                             split_part(tx_ref, ':', 3) AS step, count(*) AS n
                      FROM postings WHERE tx_ref LIKE 'withdraw:%' GROUP BY 1, 2)
           SELECT w.id, w.status,
                  coalesce((SELECT n FROM p WHERE p.id = w.id AND step = 'lock'), 0) AS lock,
                  coalesce((SELECT n FROM p WHERE p.id = w.id AND step = 'release'), 0) AS rel,
                  coalesce((SELECT n FROM p WHERE p.id = w.id AND step = 'complete'), 0) AS done
           FROM withdrawals w"""
    )
    for r in rows:
        released = r["status"] in ("FAILED", "REJECTED")
        completed = r["status"] == "COMPLETED"
        if r["lock"] != 2 or (r["rel"] == 2) != released or (r["rel"] not in (0, 2)) \
                or (r["done"] > 0) != completed:
            problems.append(f"withdrawal {r['id']} ({r['status']}): postings lock={r['lock']}"
                            f" release={r['rel']} complete={r['done']}")
    return problems
