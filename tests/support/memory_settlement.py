"""In-memory implementations of the settler's ports (:mod:`tradeplane.settlement.ports`),
for unit tests of :class:`~tradeplane.settlement.service.Settler` without PostgreSQL or
NATS.

* :class:`MemoryLedger` (``SettlementStore``): orders as rows (dicts with the orders
  table's columns), balances, postings, trades, the per-symbol cursors and the EVENTS
  consumer position. ``settle`` is one transaction: it works on copies and commits them
  only when everything succeeded, so a failure leaves nothing behind, as a rollback does.
* :class:`MemorySettlementBus` (``SettlementBus``): EVENTS as a list, the marks and user
  updates settlement publishes, the symbols' command logs (de-duplicated on message id)
  and the pairs-changed watchers.

``down`` makes every operation of either raise :class:`Unavailable`, as the real adapters
do when their server does not answer.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tradeplane.domain import codec
from tradeplane.domain.errors import Unavailable
from tradeplane.domain.ledger import EXTERNAL_ACCOUNT, LedgerError, OrderState, check_balanced
from tradeplane.domain.model import (
    Command,
    EventBatch,
    NewOrder,
    OrderType,
    Reason,
    Side,
    Status,
    StpMode,
    TimeInForce,
)
from tradeplane.domain.pairs import PairRules
from tradeplane.settlement.ports import EventHandler, Settle

#: The orders table's columns an order row holds here.
ORDER_DEFAULTS: dict[str, Any] = {
    "client_order_id": "", "type": int(OrderType.LIMIT), "tif": int(TimeInForce.GTC),
    "quote_qty": 0, "by_quote": False, "status": int(Status.PENDING_NEW), "executed": 0,
    "cum_quote": 0, "stop_price": 0, "iceberg_qty": 0, "order_list_id": 0,
    "stp": int(StpMode.NONE), "working_ms": 0, "reason": int(Reason.NONE), "updated_ms": 0,
    "good_till": 0,
}


def _state(r: Mapping[str, Any]) -> OrderState:
    return OrderState(
        r["id"], r["account_id"], Side(r["side"]), Status(r["status"]), r["executed"],
        r["cum_quote"], r["hold_asset"], r["hold_remaining"], r["updated_ms"],
        type=OrderType(r["type"]), price=r["price"], qty=r["qty"], quote_qty=r["quote_qty"],
        working_ms=r["working_ms"], reason=Reason(r["reason"]), list_id=r["order_list_id"],
    )


@dataclass
class MemoryLedger:
    """The settlement side of the ledger over dicts.

    ``balances[(account, asset)]`` is ``[available, locked]``; ``external[asset]`` the net
    of what came in from outside (:meth:`credit`). ``settles`` counts committed
    transactions."""

    pairs: dict[str, PairRules] = field(default_factory=dict)
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    balances: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    external: dict[str, int] = field(default_factory=dict)
    postings: list[tuple[str, int, str, str, int]] = field(default_factory=list)
    trades: list[Any] = field(default_factory=list)
    cursor: dict[str, int] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    settles: int = 0
    down: bool = False
    #: relay message id -> the traceparent stored with that order
    traces: dict[str, str] = field(default_factory=dict)
    lose_commit_answers: int = 0
    """That many transactions more commit and then raise Unavailable, as when the
    connection to PostgreSQL goes while its COMMIT is in flight (a server stopped in
    ``immediate`` mode): committed, and the settler not told."""

    def _check(self, what: str) -> None:
        if self.down:
            raise Unavailable(f"{what}: no answer (memory ledger down)")

    # ------------------------------------------------------------------ test set-up
    def credit(self, account: int, asset: str, amount: int) -> None:
        self.balances.setdefault((account, asset), [0, 0])[0] += amount
        self.external[asset] = self.external.get(asset, 0) + amount

    def place(self, order_id: int, account: int, symbol: str, side: Side, price: int,
              qty: int, hold_asset: str, hold: int, created_ms: int = 1, **row: Any) -> None:
        """An order as the gateway stores it: PENDING_NEW, its hold moved to locked."""
        free = self.balances.setdefault((account, hold_asset), [0, 0])
        if free[0] < hold:
            raise AssertionError(f"account {account} cannot hold {hold} {hold_asset}")
        free[0] -= hold
        free[1] += hold
        self.orders[order_id] = {
            **ORDER_DEFAULTS, "id": order_id, "account_id": account, "symbol": symbol,
            "side": int(side), "price": price, "qty": qty, "hold_asset": hold_asset,
            "hold_amount": hold, "hold_remaining": hold, "created_ms": created_ms, **row,
        }

    def status(self, order_id: int) -> Status:
        return Status(self.orders[order_id]["status"])

    # ------------------------------------------------------------------ SettlementStore
    async def load_pairs(self) -> dict[str, PairRules]:
        self._check("pairs")
        return dict(self.pairs)

    async def cursors(self) -> dict[str, int]:
        self._check("settlement cursors")
        return dict(self.cursor)

    async def consumer_position(self, consumer: str) -> int:
        self._check("consumer position")
        return self.positions.get(consumer, 0)

    async def settle(self, order_ids: Iterable[int], settle: Settle) -> Mapping[int, Any]:
        """Raises Unavailable: down (nothing written); LedgerError: unbalanced postings or
        an event the ledger refuses (nothing written)."""
        self._check("settlement transaction")
        wanted = set(order_ids)
        lists = {self.orders[i]["order_list_id"] for i in wanted if i in self.orders} - {0}
        rows = {i: copy.deepcopy(r) for i, r in self.orders.items()
                if i in wanted or r["order_list_id"] in lists}
        states = {i: _state(r) for i, r in rows.items()}
        for s in states.values():  # the other leg of an OCO list
            s.partner = next((j for j, o in states.items()
                              if j != s.order_id and s.list_id and o.list_id == s.list_id), 0)
        w = settle(states)
        check_balanced(w.settlement.postings)
        balances = copy.deepcopy(self.balances)
        for (account, asset), (avail, locked) in w.settlement.balance_deltas().items():
            b = balances.setdefault((account, asset), [0, 0])
            b[0] += avail
            b[1] += locked
            if b[0] < 0 or b[1] < 0:
                raise LedgerError(f"balance of {account} {asset} would go negative")
        # Commit: nothing above wrote to self.
        for s in states.values():
            if s.dirty:
                self.orders[s.order_id].update(
                    status=int(s.status), executed=s.executed, cum_quote=s.cum_quote,
                    hold_remaining=s.hold_remaining, updated_ms=s.updated_ms, qty=s.qty,
                    working_ms=s.working_ms, reason=int(s.reason))
        self.balances = balances
        self.postings += w.settlement.postings
        self.trades += w.settlement.trades
        self.cursor.update(w.cursors)
        consumer, seq = w.position
        self.positions[consumer] = seq
        for symbol, state in w.trading.items():
            self.pairs[symbol] = dataclasses.replace(self.pairs[symbol], trading=state)
        self.settles += 1
        if self.lose_commit_answers > 0:
            self.lose_commit_answers -= 1
            raise Unavailable("settlement transaction: connection lost during COMMIT")
        return rows

    async def balances_of(
        self, keys: Iterable[tuple[int, str]]
    ) -> dict[int, list[tuple[str, int, int]]]:
        self._check("balances")
        out: dict[int, list[tuple[str, int, int]]] = {}
        for account, asset in sorted(set(keys)):
            if (account, asset) in self.balances:
                avail, locked = self.balances[(account, asset)]
                out.setdefault(account, []).append((asset, avail, locked))
        return out

    async def stored_traces(self, msg_ids: Sequence[str]) -> dict[str, str]:
        self._check("order traces")
        return {m: self.traces[m] for m in msg_ids if m in self.traces}

    async def pending_commands(self, older_than_ms: int) -> list[tuple[str, str, Command]]:
        """Single orders only (no order lists)."""
        self._check("pending orders")
        return [
            (r["symbol"], f"o{i}", NewOrder(
                i, r["account_id"], Side(r["side"]), OrderType(r["type"]),
                TimeInForce(r["tif"]), r["price"], r["qty"], r["quote_qty"], r["by_quote"],
                r["created_ms"]))
            for i, r in sorted(self.orders.items())
            if r["status"] == Status.PENDING_NEW and r["created_ms"] < older_than_ms
        ]

    async def check_invariants(self) -> tuple[dict[str, int], list[str]]:
        self._check("invariants")
        totals: dict[str, int] = {}
        for (_account, asset), (avail, locked) in self.balances.items():
            totals[asset] = totals.get(asset, 0) + avail + locked
        assets = totals.keys() | self.external.keys()
        imbalances = {a: totals.get(a, 0) - self.external.get(a, 0) for a in sorted(assets)}
        problems = [f"{a}: balances differ from external net by {d}"
                    for a, d in imbalances.items() if d]
        held: dict[tuple[int, str], int] = {}
        for r in self.orders.values():
            key = (r["account_id"], r["hold_asset"])
            held[key] = held.get(key, 0) + r["hold_remaining"]
        problems += [f"account {acc} {asset}: locked differs from open order holds"
                     for (acc, asset), (_a, locked) in sorted(self.balances.items())
                     if acc != EXTERNAL_ACCOUNT and locked != held.get((acc, asset), 0)]
        return imbalances, problems

    async def locked_totals(self) -> dict[str, int]:
        self._check("locked totals")
        out: dict[str, int] = {}
        for (_account, asset), (_avail, locked) in self.balances.items():
            out[asset] = out.get(asset, 0) + locked
        return out


@dataclass(frozen=True, slots=True)
class Msg:
    """One EVENTS message (``settlement.ports.EventMessage``)."""

    seq: int
    data: bytes
    headers: Mapping[str, str] | None = None


@dataclass
class MemorySettlementBus:
    """EVENTS and what settlement publishes. ``pull`` is the consumer's pull size."""

    events: list[Msg] = field(default_factory=list)
    settled: list[tuple[str, int]] = field(default_factory=list)
    user: list[tuple[int, bytes]] = field(default_factory=list)
    commands: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    watchers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    pull: int = 500
    down: bool = False

    def _check(self, what: str) -> None:
        if self.down:
            raise Unavailable(f"{what}: no answer (memory bus down)")

    def append(self, batch: EventBatch) -> Msg:
        """The engine's side: one batch onto EVENTS."""
        msg = Msg(len(self.events) + 1, codec.encode(batch))
        self.events.append(msg)
        return msg

    async def ensure_events(self) -> None:
        self._check("stream EVENTS")

    async def consume_events(
        self, name: str, handler: EventHandler, *, start_seq: int, stop: asyncio.Event,
        linger: float,
    ) -> None:
        """Deliver the backlog from ``start_seq`` in pulls of ``pull``, then wait for
        ``stop`` (append before consuming). A failing handler raises here: the real
        consumer retries it forever, a test wants to see it."""
        next_seq = max(1, start_seq)
        while not stop.is_set():
            msgs: Sequence[Msg] = self.events[next_seq - 1:next_seq - 1 + self.pull]
            if not msgs:
                await stop.wait()
                return
            await handler(msgs)
            next_seq = msgs[-1].seq + 1

    async def publish_settled(self, symbol: str, seq: int) -> None:
        self._check(f"settled.{symbol}")
        self.settled.append((symbol, seq))

    async def publish_users(self, updates: Sequence[tuple[int, bytes]]) -> None:
        for account, data in updates:
            self._check(f"user.{account}")
            self.user.append((account, data))

    async def last_command_seq(self, symbol: str) -> int:
        self._check(f"command stream of {symbol}")
        return len(self.commands.get(symbol, []))

    async def publish_command(self, symbol: str, data: bytes, msg_id: str,
                              headers: Mapping[str, str] | None = None) -> int:
        self._check(f"command on {symbol}")
        log = self.commands.setdefault(symbol, [])
        for seq, (seen, _data) in enumerate(log, 1):
            if seen == msg_id:
                return seq
        log.append((msg_id, data))
        return len(log)

    async def watch_pairs(
        self, handler: Callable[[], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        self._check("control.pairs")
        self.watchers.append(handler)

        async def unsubscribe() -> None:
            self.watchers.remove(handler)

        return unsubscribe
