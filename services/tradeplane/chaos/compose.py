"""The one module of ``tradeplane chaos`` that reaches the stores (its composition root):
the accounts the load trades with, and the checks run after each fault and at the end.

Every check reads what the exchange keeps (PostgreSQL's ledger and orders, the NATS
command streams and engine snapshots, Redis' depth) and compares it with a replay of the
command log through the pure book; a difference is one line of :attr:`Findings.failures`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tradeplane.adapters import db, wallets_db
from tradeplane.adapters.bus import (
    EVENTS_STREAM,
    Bus,
    BusError,
    StoredMsg,
    command_stream,
)
from tradeplane.adapters.cache import CacheError, MarketCache
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.adapters.custody import PgCustodyStore
from tradeplane.chaos.load import Trader
from tradeplane.domain import codec
from tradeplane.domain.book import OrderBook
from tradeplane.domain.convert import DESK_ACCOUNT
from tradeplane.domain.custody import (
    WalletSpec,
    WithdrawalStatus,
    deposit_ref,
    wallet_from_spec,
)
from tradeplane.domain.model import NewOrder, NewOrderList
from tradeplane.domain.money import to_units
from tradeplane.domain.pairs import PairRules
from tradeplane.engine.service import WRITER_HEADER, EngineSnapshot, LeaseRecord
from tradeplane.wallets.chain import ChainAdapter
from tradeplane.wallets.reconcile import reconcile

TRADER_FUNDS = {"BTC": "1000", "ETH": "10000", "USDT": "100000000"}
_OPEN = (0, 1, 2)
#: The house convert desk's inventory: the other side of the load's conversions.
DESK_FUNDS = {"BTC": "100", "ETH": "1000", "USDT": "10000000"}


async def provision(dsn: str, secret_key: str, pairs: Sequence[PairRules],
                    traders: int, *, withdraw: bool = False) -> list[Trader]:
    """The schema and ``pairs``; accounts with trading keys and funds, new ones each run;
    with ``withdraw``, keys that may withdraw too (the custody load's).
    """
    pool = await db.create_pool(dsn, 2)
    cipher = SecretCipher(secret_key)
    out: list[Trader] = []
    tag = secrets.token_hex(4)
    try:
        await db.migrate(pool)
        for pair in pairs:
            await db.upsert_pair(pool, pair)
        for i in range(traders):
            name = f"chaos-{tag}-{i}"
            account = await db.create_account(pool, name)
            secret = secrets.token_hex(32)
            key = await db.create_api_key(pool, account, cipher.encrypt(secret),
                                          ["read", "trade", "convert",
                                           *(["withdraw"] if withdraw else [])])
            for asset, amount in TRADER_FUNDS.items():
                await db.credit(pool, account, asset, to_units(amount), f"{name}-{asset}")
            out.append(Trader(account, key, secret))
        for asset, amount in DESK_FUNDS.items():  # the other side of the conversions
            await db.credit(pool, DESK_ACCOUNT, asset, to_units(amount),
                            f"chaos-{tag}-desk-{asset}")
    finally:
        await pool.close()
    return out


@dataclass
class Findings:
    """What one check found."""

    lost: int = 0
    duplicated: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Stores:
    nats_url: str
    dsn: str
    redis_url: str
    pairs: Sequence[PairRules]


#: How many times a check is taken again when the command logs grew while it ran.
CHECK_ATTEMPTS = 3


async def check(stores: Stores, acked: Sequence[int], *, settle_timeout: float = 60.0,
                final: bool = False, converted: Sequence[int] = ()) -> Findings:
    """Wait until settlement has applied every command, then check everything.

    With ``final`` (the engines were stopped cleanly, so each left a snapshot at its last
    command), the engines' state hashes are compared with the full replay; otherwise with
    the replay up to their latest snapshot.

    The load is paused, but a request its client gave up on (a timeout while NATS was
    down) may still reach a command log, and the outbox relay publishes a killed
    gateway's pending orders late: when the logs grew while the check ran, what it
    compared was not one moment, so it is taken again (CHECK_ATTEMPTS times at most).
    """
    try:
        bus = await Bus.connect(stores.nats_url, name="chaos-check")
    except BusError as exc:
        return Findings(failures=[f"NATS: {exc}"])
    pool = await db.create_pool(stores.dsn, 2)
    try:
        for _ in range(CHECK_ATTEMPTS):
            out, lasts = await _check_once(stores, bus, pool, acked, settle_timeout, final)
            await _check_conversions(pool, converted, out)
            now = {p.symbol: await bus.last_command_seq(p.symbol) for p in stores.pairs}
            if now == lasts:
                break
    finally:
        await pool.close()
        await bus.close()
    return out


async def _check_once(stores: Stores, bus: Bus, pool: db.Pool, acked: Sequence[int],
                      settle_timeout: float, final: bool,
                      ) -> tuple[Findings, dict[str, int]]:
    out = Findings()
    lasts = await _settled(bus, pool, stores.pairs, settle_timeout)
    if lasts is None:
        lasts = {p.symbol: await bus.last_command_seq(p.symbol) for p in stores.pairs}
        cursors = await db.settlement_cursors(pool)
        out.failures.append(f"not settled within {settle_timeout:g} s: commands "
                            f"{lasts}, settled {cursors}")
    await _check_orders(pool, acked, out)
    new_ids: Counter[int] = Counter()
    for pair in stores.pairs:
        book = await _check_replay(bus, pair, lasts[pair.symbol], new_ids, final, out)
        await _check_open_orders(pool, pair.symbol, book, out)
        await _check_depth(stores.redis_url, pair.symbol, book, out)
        await _check_trades(pool, pair.symbol, out)
    await _check_batches(bus, stores.pairs, lasts, out)
    dup = [oid for oid, n in new_ids.items() if n > 1]
    out.duplicated += len(dup)
    if dup:
        out.failures.append(f"orders placed twice in the command log: {dup[:10]}")
    _, problems = await db.check_invariants(pool)
    out.failures += [f"ledger: {p}" for p in problems]
    await _check_holds(pool, out)
    return out, lasts


_TABLES = ("orders", "trades", "postings", "order_lists")


async def sizes(stores: Stores) -> dict[str, int]:
    """Rows of the tables that grow with trading; messages and bytes of each stream."""
    out: dict[str, int] = {}
    pool = await db.create_pool(stores.dsn, 1)
    try:
        for table in _TABLES:
            out[f"table {table} rows"] = int(await pool.fetchval(
                f"SELECT count(*) FROM {table}"))  # the names are _TABLES
    finally:
        await pool.close()
    bus = await Bus.connect(stores.nats_url, name="chaos-sizes")
    try:
        for name in (*(command_stream(p.symbol) for p in stores.pairs), EVENTS_STREAM):
            info = await bus.js.stream_info(name)
            out[f"stream {name} messages"] = int(info.state.messages)
            out[f"stream {name} bytes"] = int(info.state.bytes)
    finally:
        await bus.close()
    return out


async def wait_settled(stores: Stores, timeout: float) -> bool:
    """Wait until settlement has applied every command and no order is pending; False
    after ``timeout`` (or when a store does not answer)."""
    try:
        bus = await Bus.connect(stores.nats_url, name="chaos-settled")
    except BusError:
        return False
    try:
        pool = await db.create_pool(stores.dsn, 1)
        try:
            return await _settled(bus, pool, stores.pairs, timeout) is not None
        finally:
            await pool.close()
    except (BusError, db.DatabaseError):
        return False
    finally:
        await bus.close()


async def _settled(bus: Bus, pool: db.Pool, pairs: Sequence[PairRules],
                   timeout: float) -> dict[str, int] | None:
    """Each symbol's last command once settlement has applied every command and no order
    is pending; None after ``timeout``. The last commands are read again each round: the
    outbox relay publishes, late, the orders of a gateway killed between storing and
    publishing them, so the log may grow after the load paused."""
    deadline = time.monotonic() + timeout
    while True:
        lasts = {p.symbol: await bus.last_command_seq(p.symbol) for p in pairs}
        cursors = await db.settlement_cursors(pool)
        pending = await pool.fetchval("SELECT count(*) FROM orders WHERE status = 0")
        if pending == 0 and all(cursors.get(s, 0) >= n for s, n in lasts.items()):
            again = {p.symbol: await bus.last_command_seq(p.symbol) for p in pairs}
            if again == lasts:
                return lasts
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.2)


def _owed(what: str, ids: Sequence[int], status: dict[int, object], unfinished: object,
          unfinished_says: str, out: Findings) -> None:
    """Each id the API acknowledged (``ids``, as often as acknowledged) exists once in
    ``status`` and is not in the ``unfinished`` state."""
    missing = [i for i in set(ids) if i not in status]
    bad = [i for i, st in status.items() if st == unfinished]
    out.lost += len(missing) + len(bad)
    if missing:
        out.failures.append(f"acknowledged {what} missing from PostgreSQL: {missing[:10]}")
    if bad:
        out.failures.append(f"acknowledged {what} {unfinished_says}: {bad[:10]}")
    repeated = [i for i, n in Counter(ids).items() if n > 1]
    out.duplicated += len(repeated)
    if repeated:
        out.failures.append(f"one {what} id acknowledged twice: {repeated[:10]}")


async def _check_orders(pool: db.Pool, acked: Sequence[int], out: Findings) -> None:
    """Every acknowledged order exists once, and the engine has seen it."""
    rows = await pool.fetch("SELECT id, status FROM orders WHERE id = ANY($1::bigint[])",
                            list(set(acked)))
    _owed("orders", acked, {r["id"]: r["status"] for r in rows}, 0, "never settled", out)


async def _check_conversions(pool: db.Pool, converted: Sequence[int], out: Findings) -> None:
    """Every conversion the API accepted exists once, and did not fail afterwards (its
    two legs are one ledger transaction, which the ledger's invariants check)."""
    if not converted:
        return
    rows = await pool.fetch("SELECT id, status FROM convert_orders WHERE id = ANY($1::bigint[])",
                            list(set(converted)))
    _owed("conversions", converted, {r["id"]: r["status"] for r in rows}, "FAIL",
          "later failed", out)


async def _commands(bus: Bus, symbol: str, last: int) -> list[bytes]:
    """The symbol's command messages 1..last, in order."""
    got: list[bytes] = []
    done = asyncio.Event()

    def on_msg(seq: int, data: bytes, _headers: object) -> None:
        got.append(data)
        if seq >= last:
            done.set()

    if last == 0:
        return []
    unsubscribe = await bus.follow_commands(symbol, 1, on_msg)
    try:
        await asyncio.wait_for(done.wait(), 60)
    finally:
        await unsubscribe()
    return got[:last]


async def _check_replay(bus: Bus, pair: PairRules, last: int, new_ids: Counter[int],
                        final: bool, out: Findings) -> OrderBook:
    """Replay the whole command log; the engine's snapshot must hash as the replay at the
    same command. Returns the replayed book (at ``last``)."""
    symbol = pair.symbol
    raw = await bus.load_snapshot(symbol)
    snap = codec.decode_as(raw, EngineSnapshot) if raw else None
    if final and (snap is None or snap.seq != last):
        out.failures.append(f"{symbol}: no snapshot at the last command {last} after a "
                            f"clean stop (snapshot at {snap.seq if snap else None})")
    book = OrderBook(symbol, pair.notional_per_tick_lot)
    try:
        messages = await _commands(bus, symbol, last)
    except TimeoutError:
        out.failures.append(f"{symbol}: the command log could not be read to {last}")
        return book
    compared = False
    for seq, data in enumerate(messages, 1):
        for cmd in codec.decode_commands(data):
            if isinstance(cmd, NewOrder):
                new_ids[cmd.order_id] += 1
            elif isinstance(cmd, NewOrderList):
                for leg in cmd.legs:
                    new_ids[leg.order_id] += 1
            book.process(cmd)
        if snap is not None and seq == snap.seq:
            compared = True
            live = OrderBook.restore(snap.book).state_hash()
            if live != book.state_hash():
                out.failures.append(f"{symbol}: the engine's state at command {seq} "
                                    "differs from the replay of its log")
    if snap is not None and snap.seq > 0 and not compared:
        out.failures.append(f"{symbol}: snapshot at {snap.seq}, past the log's end {last}")
    return book


class _BatchHead(msgspec.Struct):
    """The part of an encoded ``EventBatch`` the batch check reads (events skipped)."""

    symbol: str
    first_seq: int
    last_seq: int


async def _event_batches(bus: Bus) -> list[tuple[str, int, int, str]]:
    """Every batch in EVENTS, in stream order, as ``(symbol, first command, last command,
    writer)`` (the writer: its ``Tp-Writer`` header, "" without a lease).

    Raises:
        BusError: the bus did not answer.
        TimeoutError: EVENTS was not read to its end within 60 s.
    """
    end = await bus.events_last_seq()
    got: list[tuple[str, int, int, str]] = []
    if end == 0:
        return got
    stop = asyncio.Event()

    async def take(msgs: list[StoredMsg]) -> None:
        for m in msgs:
            head = codec.decode_as(m.data, _BatchHead)
            got.append((head.symbol, head.first_seq, head.last_seq,
                        (m.headers or {}).get(WRITER_HEADER, "")))
            if m.seq >= end:
                stop.set()

    await asyncio.wait_for(bus.consume_events("chaos-check", take, stop=stop), 60)
    return got


async def _check_batches(bus: Bus, pairs: Sequence[PairRules], lasts: dict[str, int],
                         out: Findings) -> None:
    """EVENTS read to its end and judged by :func:`batch_failures`."""
    try:
        batches = await _event_batches(bus)
    except (BusError, TimeoutError) as exc:
        out.failures.append(f"EVENTS could not be read: {exc or 'no end within 60 s'}")
        return
    out.failures += batch_failures(batches, {p.symbol: lasts[p.symbol] for p in pairs})


def batch_failures(batches: Sequence[tuple[str, int, int, str]],
                   lasts: dict[str, int]) -> list[str]:
    """What is wrong with EVENTS' batches (``(symbol, first command, last command,
    writer)`` in stream order) given each symbol's last command: each symbol's batches
    must follow one another through its command log, none covering a command twice or
    out of order, none skipping one, none past the log's end; and once an engine took
    the writing over (hot standby), the one it replaced (fenced, or paused and woken)
    must append no batch again."""
    failures: list[str] = []
    ends: dict[str, int] = {}
    writers: dict[str, str] = {}
    replaced: dict[str, set[str]] = {}
    for symbol, first, last, writer in batches:
        end = ends.get(symbol, 0)
        if first != end + 1:
            what = "again or out of order" if first <= end else "skipping commands"
            failures.append(f"{symbol}: an event batch for commands {first}..{last} "
                            f"follows one ending at {end} ({what})")
        ends[symbol] = max(end, last)
        current = writers.get(symbol)
        if writer and writer != current:
            if writer in replaced.get(symbol, set()):
                failures.append(f"{symbol}: {writer} appended commands {first}..{last} "
                                "after another engine had taken over from it")
            if current:
                replaced.setdefault(symbol, set()).add(current)
            writers[symbol] = writer
    for symbol, last in lasts.items():
        if ends.get(symbol, 0) > last:
            failures.append(f"{symbol}: event batches go to command {ends[symbol]}, "
                            f"past the log's end {last}")
    return failures


async def lease_holder(stores: Stores, symbol: str) -> str | None:
    """Who holds the symbol's engine lease (hot standby): its ``holder``
    (``host:pid:tag``), or None when nobody does.

    Raises:
        BusError: the bus did not answer.
    """
    bus = await Bus.connect(stores.nats_url, name="chaos-lease")
    try:
        raw = await bus.lease_value(symbol)
    finally:
        await bus.close()
    return msgspec.json.decode(raw, type=LeaseRecord).holder if raw else None


async def stream_leaders(stores: Stores) -> dict[str, str | None]:
    """The server leading each stream on a NATS cluster (None: an election), by the
    stream's name; :func:`command_stream_name` names a symbol's command stream.

    Raises:
        BusError: the bus did not answer.
    """
    bus = await Bus.connect(stores.nats_url, name="chaos-leaders")
    try:
        return await bus.stream_leaders()
    finally:
        await bus.close()


async def step_down(stores: Stores, streams: Sequence[str]) -> None:
    """Ask the leaders of ``streams`` to hand their leadership over.

    Raises:
        BusError: the bus did not answer.
    """
    bus = await Bus.connect(stores.nats_url, name="chaos-step-down")
    try:
        for name in streams:
            await bus.step_down(name)
    finally:
        await bus.close()


def command_stream_name(symbol: str) -> str:
    """The name of ``symbol``'s command stream."""
    return command_stream(symbol)


async def _check_open_orders(pool: db.Pool, symbol: str, book: OrderBook,
                             out: Findings) -> None:
    """PostgreSQL's open orders are the book's, with the same quantities left."""
    snap = book.snapshot()
    in_book = {o.order_id: o.remaining for o in (*snap.bids, *snap.asks)}
    in_book.update({s.order_id: s.qty for s in snap.stops})
    rows = await pool.fetch(
        "SELECT id, qty - executed AS remaining FROM orders WHERE symbol = $1"
        " AND status = ANY($2::smallint[])", symbol, list(_OPEN))
    in_pg = {r["id"]: int(r["remaining"]) for r in rows}
    if in_pg != in_book:
        only_pg = sorted(set(in_pg) - set(in_book))[:10]
        only_book = sorted(set(in_book) - set(in_pg))[:10]
        differ = sorted(k for k in set(in_pg) & set(in_book) if in_pg[k] != in_book[k])[:10]
        out.failures.append(f"{symbol}: open orders differ from the book (only in "
                            f"PostgreSQL {only_pg}, only in the book {only_book}, "
                            f"quantity differs {differ})")


async def _check_depth(redis_url: str, symbol: str, book: OrderBook,
                       out: Findings) -> None:
    """Redis' depth (what the API serves) is the book's, level by level."""
    try:
        cache = await MarketCache.connect(redis_url)
    except CacheError as exc:
        out.failures.append(f"Redis: {exc}")
        return
    try:
        depth = None
        deadline = time.monotonic() + 10.0
        bids, asks = book.depth(100_000)
        while time.monotonic() < deadline:
            depth = await cache.depth(symbol)
            if depth is not None and (depth.bids, depth.asks) == (
                    [tuple(x) for x in bids[:len(depth.bids)]],
                    [tuple(x) for x in asks[:len(depth.asks)]]) and (
                    len(depth.bids) == len(bids) or len(depth.bids) >= 100) and (
                    len(depth.asks) == len(asks) or len(depth.asks) >= 100):
                return
            await asyncio.sleep(0.2)
        what = "none" if depth is None else (
            f"{len(depth.bids)} bid and {len(depth.asks)} ask levels at update "
            f"{depth.last_update_id}")
        out.failures.append(f"{symbol}: Redis depth ({what}) differs from the book "
                            f"({len(bids)} bid and {len(asks)} ask levels)")
    except CacheError as exc:
        out.failures.append(f"Redis: {exc}")
    finally:
        await cache.close()


async def _check_trades(pool: db.Pool, symbol: str, out: Findings) -> None:
    """Trade ids run 1..n without a gap or a repeat, and each trade's quantity is
    executed once on each side."""
    ids = [r["trade_id"] for r in await pool.fetch(
        "SELECT trade_id FROM trades WHERE symbol = $1 ORDER BY trade_id", symbol)]
    if ids != list(range(1, len(ids) + 1)):
        out.failures.append(f"{symbol}: trade ids are not contiguous from 1")
    executed = await pool.fetchval(
        "SELECT coalesce(sum(executed), 0) FROM orders WHERE symbol = $1", symbol)
    traded = await pool.fetchval(
        "SELECT coalesce(sum(qty), 0) FROM trades WHERE symbol = $1", symbol)
    if executed != 2 * traded:
        out.failures.append(f"{symbol}: orders executed {executed} != twice the trades' "
                            f"quantity {traded}")


async def _check_holds(pool: db.Pool, out: Findings) -> None:
    """No funds held for a finished order, and none locked without an open order."""
    held = await pool.fetch(
        "SELECT id FROM orders WHERE status <> ALL($1::smallint[]) AND hold_remaining <> 0"
        " LIMIT 10", list(_OPEN))
    if held:
        out.failures.append(f"funds still held for finished orders {[r['id'] for r in held]}")
    stray = await pool.fetch(
        """SELECT b.account_id, b.asset FROM balances b
           WHERE b.locked <> 0 AND NOT EXISTS (
               SELECT 1 FROM orders o WHERE o.account_id = b.account_id
               AND o.status = ANY($1::smallint[]))
           LIMIT 10""", list(_OPEN))
    if stray:
        out.failures.append("funds locked without an open order: "
                            + ", ".join(f"{r['account_id']} {r['asset']}" for r in stray))


#: The consumers of the EVENTS stream whose progress :func:`drain` follows, and where
#: each keeps its position (the last stream sequence it applied).
CONSUMERS = ("settlement", "marketdata")


async def _position(consumer: str, pool: db.Pool, cache: MarketCache) -> int:
    if consumer == "settlement":
        return await db.consumer_position(pool, consumer)
    return await cache.position() or 0


def _consumer(consumer: str) -> None:
    if consumer not in CONSUMERS:
        raise ValueError(f"not a consumer of EVENTS: {consumer}")


async def backlog(stores: Stores, consumer: str) -> tuple[int, int]:
    """The EVENTS stream's last sequence, and how many of its events the consumer has
    yet to apply.

    Raises:
        ValueError: not one of CONSUMERS.
        Unavailable: a store did not answer.
    """
    _consumer(consumer)
    bus = await Bus.connect(stores.nats_url, name="chaos-backlog")
    pool = await db.create_pool(stores.dsn, 1)
    cache = await MarketCache.connect(stores.redis_url)
    try:
        last = await bus.events_last_seq()
        return last, max(0, last - await _position(consumer, pool, cache))
    finally:
        await cache.close()
        await pool.close()
        await bus.close()


async def drained(stores: Stores, consumer: str, target: int, since: float,
                  timeout: float = 60.0) -> float | None:
    """Seconds from ``since`` (``time.monotonic()``) until the consumer has applied the
    EVENTS stream up to ``target``; None when not within ``timeout`` of ``since``.

    Raises:
        ValueError: not one of CONSUMERS.
        Unavailable: a store did not answer.
    """
    _consumer(consumer)
    pool = await db.create_pool(stores.dsn, 1)
    cache = await MarketCache.connect(stores.redis_url)
    try:
        while time.monotonic() - since < timeout:
            if await _position(consumer, pool, cache) >= target:
                return time.monotonic() - since
            await asyncio.sleep(0.02)
        return None
    finally:
        await cache.close()
        await pool.close()


# ------------------------------------------------------------------ custody
async def provision_wallet(dsn: str, name: str, doc: Mapping[str, Any]) -> WalletSpec:
    """The wallet ``name`` of spec ``doc`` in the wallets table (where its watcher and the
    gateway read it)."""
    spec = wallet_from_spec(name, dict(doc))
    pool = await db.create_pool(dsn, 1)
    try:
        await wallets_db.upsert_wallet(pool, spec)
    finally:
        await pool.close()
    return spec


async def deposit_block(dsn: str, wallet: str, txid: str) -> str | None:
    """The block the watcher last saw the deposit ``txid`` in (None: not seen in one)."""
    pool = await db.create_pool(dsn, 1)
    try:
        found = await pool.fetchval(
            "SELECT block_hash FROM deposits WHERE wallet = $1 AND txid = $2 LIMIT 1",
            wallet, txid)
    finally:
        await pool.close()
    return None if found is None else str(found)


async def credited(dsn: str, wallet: str, txid: str) -> bool:
    """Whether the deposit ``txid`` is credited."""
    pool = await db.create_pool(dsn, 1)
    try:
        return bool(await pool.fetchval(
            "SELECT count(*) FROM deposits WHERE wallet = $1 AND txid = $2"
            " AND status = 'CREDITED'", wallet, txid))
    finally:
        await pool.close()


async def wait_processing(dsn: str, wallet: str, timeout: float) -> bool:
    """Poll until a withdrawal of ``wallet`` is PROCESSING (its send about to be made or
    being made); False after ``timeout``."""
    pool = await db.create_pool(dsn, 1)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await pool.fetchval(
                    "SELECT count(*) FROM withdrawals WHERE wallet = $1 AND status = $2",
                    wallet, WithdrawalStatus.PROCESSING.value):
                return True
            await asyncio.sleep(0.005)
        return False
    finally:
        await pool.close()


@dataclass(frozen=True)
class CustodyWork:
    """What the wallet watcher still has to do."""

    deposits: int
    """Deposits seen and not yet credited nor dropped."""
    withdrawals: int
    """Withdrawals not yet COMPLETED, FAILED or REJECTED."""
    scanned: int
    """The chain height of its last scan (-1: none yet)."""


async def custody_work(dsn: str, wallet: str) -> CustodyWork:
    pool = await db.create_pool(dsn, 1)
    try:
        r = await pool.fetchrow(
            """SELECT
                 (SELECT count(*) FROM deposits WHERE wallet = $1
                  AND status IN ('PENDING', 'CONFIRMED')) AS deposits,
                 (SELECT count(*) FROM withdrawals WHERE wallet = $1
                  AND status NOT IN ('COMPLETED', 'FAILED', 'REJECTED')) AS withdrawals,
                 (SELECT coalesce(max(height), -1) FROM wallet_cursors
                  WHERE wallet = $1) AS scanned""", wallet)
        assert r is not None
        return CustodyWork(int(r["deposits"]), int(r["withdrawals"]), int(r["scanned"]))
    finally:
        await pool.close()


@dataclass(frozen=True)
class Payment:
    """A payment of the payer to one of the wallet's deposit addresses, as the payer's
    wallet sees it now."""

    txid: str
    index: int
    address: str
    amount: int
    confirmations: int
    """Negative: a conflicting transaction is on the main chain (it was spent again)."""


async def deposit_addresses(dsn: str, wallet: str) -> set[str]:
    pool = await db.create_pool(dsn, 1)
    try:
        return {str(r["address"]) for r in await pool.fetch(
            "SELECT address FROM deposit_addresses WHERE wallet = $1", wallet)}
    finally:
        await pool.close()


async def check_custody(dsn: str, spec: WalletSpec, chain: ChainAdapter,
                        payments: Sequence[Payment], sends: Mapping[str, set[str]],
                        acked: Sequence[int]) -> Findings:
    """Once the watcher has nothing left to do (every payment confirmed or gone, every
    withdrawal finished): each payment confirmed enough is credited exactly once with its
    amount and one spent again elsewhere never; no deposit is credited that no payment
    made; each acknowledged withdrawal exists and is COMPLETED, and each withdrawal was
    broadcast exactly once (``sends``: the hot wallet's send txids by their comment, the
    withdrawal's intent; any other send is reported); custody's ledger invariants hold
    and the reconciliation is exactly 0."""
    out = Findings()
    pool = await db.create_pool(dsn, 2)
    try:
        rows = await pool.fetch(
            "SELECT ref, amount FROM credits WHERE ref LIKE $1",
            f"deposit:{spec.chain}:%")
        credits = {str(r["ref"]): int(r["amount"]) for r in rows}
        paid: set[str] = set()
        for p in payments:
            ref = deposit_ref(spec.chain, p.txid, p.index)
            paid.add(ref)
            got = credits.get(ref)
            if p.confirmations >= spec.confirmations:
                if got is None:
                    out.lost += 1
                    out.failures.append(f"deposit {p.txid}:{p.index} ({p.confirmations} "
                                        "confirmations) never credited")
                elif got != p.amount:
                    out.failures.append(f"deposit {p.txid}:{p.index} credited {got}, "
                                        f"paid {p.amount}")
            elif p.confirmations < 0:
                if got is not None:
                    out.duplicated += 1
                    out.failures.append(f"deposit {p.txid}:{p.index} credited though it "
                                        "was spent again elsewhere (gone from the chain)")
            else:
                out.failures.append(f"deposit {p.txid}:{p.index} still has "
                                    f"{p.confirmations} confirmations after settling")
        extra = sorted(set(credits) - paid)
        if extra:
            out.duplicated += len(extra)
            out.failures.append(f"deposits credited that no payment made: {extra[:5]}")
        rows = await pool.fetch(
            "SELECT id, status, intent, txid, info FROM withdrawals WHERE wallet = $1",
            spec.name)
        known = {int(r["id"]) for r in rows}
        missing = sorted(set(acked) - known)
        if missing:
            out.lost += len(missing)
            out.failures.append(f"withdrawals acknowledged but not stored: {missing[:10]}")
        intents = set()
        for r in rows:
            intents.add(str(r["intent"]))
            txids = sends.get(str(r["intent"]), set())
            if r["status"] != WithdrawalStatus.COMPLETED.value:
                out.failures.append(f"withdrawal {r['id']} is {r['status']} after settling "
                                    f"({r['info'] or 'no info'})")
            if len(txids) > 1:
                out.duplicated += 1
                out.failures.append(f"withdrawal {r['id']} broadcast {len(txids)} times: "
                                    f"{sorted(txids)}")
            elif r["status"] in (WithdrawalStatus.ON_CHAIN.value,
                                 WithdrawalStatus.COMPLETED.value) and (
                    txids != {r["txid"]}):
                out.lost += 1
                out.failures.append(f"withdrawal {r['id']} recorded as sent in "
                                    f"{r['txid']}, the hot wallet sent {sorted(txids)}")
        strays = sorted(set(sends) - intents)
        if strays:
            out.failures.append("sends of the hot wallet for no withdrawal: " + ", ".join(
                f"{c or '(no comment)'} {sorted(sends[c])[:5]}" for c in strays[:5]))
        out.failures += [f"custody: {p}" for p in await wallets_db.custody_problems(pool)]
        adjustments = await wallets_db.open_adjustments(pool, spec.name)
        if adjustments:
            out.failures.append(f"{len(adjustments)} reorganisation adjustments open")
        rec = await reconcile(spec, chain, PgCustodyStore(pool), save=False)
        if rec.difference != 0:
            out.failures.append(f"reconciliation is not 0: {rec.describe()}")
    finally:
        await pool.close()
    return out
