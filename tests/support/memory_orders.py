"""In-memory implementations of the order use cases' ports (:mod:`tradeplane.usecases.orders`):
a store with balances and holds, a command log, and a settlement that applies each logged
command the simplest way the engine could (a stand-in, not the engine: orders rest, cancels
cancel, amends reduce). Rows are kept as dicts and returned as the use cases' typed rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tradeplane.domain.model import (
    TERMINAL,
    Amend,
    Cancel,
    CancelAll,
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
from tradeplane.usecases.errors import Unavailable
from tradeplane.usecases.orders import (
    BalanceRow,
    ListRequest,
    ListRow,
    OrderRequest,
    OrderRow,
    PlaceResult,
    TradeRow,
    Window,
)


def _order(d: dict[str, Any]) -> OrderRow:
    return OrderRow(**{**d, "side": Side(d["side"]), "type": OrderType(d["type"]),
                       "tif": TimeInForce(d["tif"]), "status": Status(d["status"]),
                       "stp": StpMode(d["stp"]), "reason": Reason(d["reason"])})


def _get(row: Any, key: str) -> int:
    return int(row[key] if isinstance(row, dict) else getattr(row, key))


def _windowed(rows: list[Any], id_key: str, time_key: str, window: Window) -> list[Any]:
    """The ledger's history rule: from ``from_id`` on (the first ``limit``), else within
    the time range; without ``from_id`` the latest ``limit``. Oldest first."""
    rows = sorted(rows, key=lambda r: _get(r, id_key))
    rows = [r for r in rows
            if (window.from_id is None or _get(r, id_key) >= window.from_id)
            and (window.start_ms is None or _get(r, time_key) >= window.start_ms)
            and (window.end_ms is None or _get(r, time_key) <= window.end_ms)]
    if window.from_id is not None:
        return rows[:window.limit]
    return rows[-window.limit:]


@dataclass
class MemoryOrders:
    """The store (:class:`~tradeplane.usecases.orders.OrderStore`), its read side
    (:class:`~tradeplane.usecases.orders.OrderHistory`), the command log and the settled
    watermarks in one, over dicts.

    ``free[(account, asset)]`` is what is free; a placed order moves its hold to
    ``locked``. ``trade_rows`` are the trades the queries read (tests add them).
    ``refuse`` makes the engine stand-in reject new orders with that reason; ``bus_down``
    makes the log refuse every command; ``settles`` False keeps settlement from ever
    catching up."""

    free: dict[tuple[int, str], int] = field(default_factory=dict)
    locked: dict[tuple[int, str], int] = field(default_factory=dict)
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    lists: dict[int, dict[str, Any]] = field(default_factory=dict)
    trade_rows: list[TradeRow] = field(default_factory=list)
    log: list[tuple[str, Command]] = field(default_factory=list)
    applied: int = 0
    refuse: Reason | None = None
    bus_down: bool = False
    settles: bool = True
    _ids: int = 0

    def _next(self) -> int:
        self._ids += 1
        return self._ids

    def _hold(self, account: int, asset: str, amount: int) -> bool:
        key = (account, asset)
        if self.free.get(key, 0) < amount:
            return False
        self.free[key] -= amount
        self.locked[key] = self.locked.get(key, 0) + amount
        return True

    def _taken(self, account: int, symbol: str, cid: str) -> bool:
        return any(o["account_id"] == account and o["symbol"] == symbol
                   and o["client_order_id"] == cid and Status(o["status"]) not in TERMINAL
                   for o in self.orders.values())

    def _row(self, req: OrderRequest, list_id: int = 0) -> dict[str, Any]:
        oid = self._next()
        row = {
            "id": oid, "account_id": req.account, "symbol": req.symbol,
            "client_order_id": req.client_order_id, "side": int(req.side),
            "type": int(req.type), "tif": int(req.tif), "price": req.price, "qty": req.qty,
            "quote_qty": req.quote_qty, "by_quote": req.by_quote,
            "status": int(Status.PENDING_NEW), "executed": 0, "cum_quote": 0,
            "hold_asset": req.hold_asset, "hold_amount": req.hold,
            "hold_remaining": req.hold, "created_ms": req.ts, "updated_ms": req.ts,
            "stop_price": req.stop_price, "iceberg_qty": req.iceberg_qty, "stp": int(req.stp),
            "good_till": req.good_till, "working_ms": 0, "order_list_id": list_id,
            "reason": 0,
        }
        self.orders[oid] = row
        return row

    # ---------------------------------------------------------------- OrderStore
    async def place(self, req: OrderRequest) -> tuple[int | None, PlaceResult]:
        if self._taken(req.account, req.symbol, req.client_order_id):
            return None, PlaceResult.DUPLICATE
        if not self._hold(req.account, req.hold_asset, req.hold):
            return None, PlaceResult.INSUFFICIENT
        return self._row(req)["id"], PlaceResult.PLACED

    async def place_list(self, req: ListRequest) -> tuple[int | None, list[int], PlaceResult]:
        if any(self._taken(req.account, req.symbol, leg.client_order_id) for leg in req.legs):
            return None, [], PlaceResult.DUPLICATE
        if not self._hold(req.account, req.hold_asset, req.hold):
            return None, [], PlaceResult.INSUFFICIENT
        list_id = self._next()
        self.lists[list_id] = {
            "id": list_id, "account_id": req.account, "symbol": req.symbol,
            "list_client_order_id": req.list_client_order_id, "contingency": "OCO",
            "status": "EXECUTING", "created_ms": req.ts, "updated_ms": req.ts,
        }
        ids = [self._row(leg, list_id)["id"] for leg in req.legs]
        return list_id, ids, PlaceResult.PLACED

    async def order(self, account: int, symbol: str, order_id: int | None,
                    client_order_id: str | None) -> OrderRow | None:
        found = [o for o in self.orders.values()
                 if o["account_id"] == account and o["symbol"] == symbol
                 and (o["id"] == order_id if order_id is not None
                      else o["client_order_id"] == client_order_id)]
        return _order(found[-1]) if found else None

    async def open_orders(self, account: int, symbol: str | None) -> Sequence[OrderRow]:
        return [_order(o) for o in self.orders.values()
                if o["account_id"] == account and symbol in (None, o["symbol"])
                and Status(o["status"]) not in TERMINAL]

    async def rename(self, order_id: int, old_client_id: str, new_client_id: str) -> bool:
        row = self.orders.get(order_id)
        if row is None or row["client_order_id"] != old_client_id:
            return False
        if self._taken(row["account_id"], row["symbol"], new_client_id):
            return False
        row["client_order_id"] = new_client_id
        return True

    async def order_list(self, account: int, list_id: int | None,
                         list_client_id: str | None, symbol: str | None = None) -> ListRow | None:
        for lst in self.lists.values():
            if lst["account_id"] != account or (symbol and lst["symbol"] != symbol):
                continue
            if (lst["id"] == list_id if list_id is not None
                    else lst["list_client_order_id"] == list_client_id):
                return ListRow(**lst)
        return None

    async def list_orders(self, list_ids: Sequence[int]) -> Mapping[int, Sequence[OrderRow]]:
        out: dict[int, list[OrderRow]] = {}
        for o in self.orders.values():
            if o["order_list_id"] in list_ids:
                out.setdefault(o["order_list_id"], []).append(_order(o))
        return out

    async def trades(self, symbol: str, order_id: int) -> Sequence[TradeRow]:
        return [t for t in self.trade_rows
                if t.symbol == symbol and order_id in (t.buyer_order, t.seller_order)]

    # ---------------------------------------------------------------- OrderHistory
    async def all_orders(self, account: int, symbol: str,
                         window: Window) -> Sequence[OrderRow]:
        rows = [o for o in self.orders.values()
                if o["account_id"] == account and o["symbol"] == symbol]
        return [_order(o) for o in _windowed(rows, "id", "created_ms", window)]

    async def my_trades(self, account: int, symbol: str, order_id: int | None,
                        window: Window) -> Sequence[TradeRow]:
        rows = [t for t in self.trade_rows
                if t.symbol == symbol and account in (t.buyer_account, t.seller_account)
                and (order_id is None or order_id in (t.buyer_order, t.seller_order))]
        return _windowed(rows, "trade_id", "ts", window)

    async def open_order_lists(self, account: int) -> Sequence[ListRow]:
        return [ListRow(**lst) for lst in sorted(self.lists.values(), key=lambda x: x["id"])
                if lst["account_id"] == account and lst["status"] == "EXECUTING"]

    async def public_trades(self, symbol: str, from_id: int | None,
                            limit: int) -> Sequence[TradeRow]:
        rows = [t for t in self.trade_rows if t.symbol == symbol]
        return _windowed(rows, "trade_id", "ts", Window(from_id, None, None, limit))

    async def balances(self, account: int) -> Sequence[BalanceRow]:
        assets = {a for acc, a in (*self.free, *self.locked) if acc == account}
        return [BalanceRow(a, self.free.get((account, a), 0),
                           self.locked.get((account, a), 0)) for a in sorted(assets)]

    # ---------------------------------------------------------------- CommandLog
    async def send(self, symbol: str, cmd: Command) -> int:
        if self.bus_down:
            raise Unavailable("the bus is down")
        self.log.append((symbol, cmd))
        return len(self.log)

    # ---------------------------------------------------------------- Settled
    async def wait(self, symbol: str, seq: int, timeout: float) -> bool:
        if not self.settles:
            return False
        while self.applied < min(seq, len(self.log)):
            self._apply(self.log[self.applied][1])
            self.applied += 1
        return True

    def _apply(self, cmd: Command) -> None:
        if isinstance(cmd, NewOrderList):
            for leg in cmd.legs:
                self._apply(leg)
            if self.refuse is not None:
                self.lists[cmd.list_id]["status"] = "REJECT"
            return
        if isinstance(cmd, NewOrder):
            row = self.orders[cmd.order_id]
            if self.refuse is not None:
                row.update(status=int(Status.REJECTED), reason=int(self.refuse))
                self._release(row)
            else:
                row["status"] = int(Status.NEW)
        elif isinstance(cmd, Cancel):
            row = self.orders[cmd.order_id]
            self._cancel(row)
            if row["order_list_id"]:
                for leg in self.orders.values():
                    if leg["order_list_id"] == row["order_list_id"]:
                        self._cancel(leg)
                self.lists[row["order_list_id"]]["status"] = "ALL_DONE"
        elif isinstance(cmd, CancelAll):
            for row in self.orders.values():
                if row["account_id"] == cmd.account:
                    self._cancel(row)
        elif isinstance(cmd, Amend):
            row = self.orders[cmd.order_id]
            if Status(row["status"]) not in TERMINAL and self.refuse is None:
                row["qty"] = cmd.new_qty

    def _cancel(self, row: dict[str, Any]) -> None:
        if Status(row["status"]) not in TERMINAL:
            row["status"] = int(Status.CANCELED)
            self._release(row)

    def _release(self, row: dict[str, Any]) -> None:
        key = (row["account_id"], row["hold_asset"])
        if row["order_list_id"] and any(
            o["order_list_id"] == row["order_list_id"] and o["id"] < row["id"]
            for o in self.orders.values()
        ):
            return  # the list's one hold sits on its first leg
        self.locked[key] -= row["hold_remaining"]
        self.free[key] += row["hold_remaining"]
        row["hold_remaining"] = 0
