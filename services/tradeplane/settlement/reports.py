"""Binance user data stream payloads for settled events: ``executionReport`` and
``outboundAccountPosition``. Pure: no I/O, no clock (``now_ms`` is passed in).

Settlement calls :func:`user_updates` after each commit with the pull's batches, the rows of
the orders they touch *as loaded before the pull* and the pair rules; it walks the events in
order, advancing each order's cumulative quantities itself, so the reports never depend on
the ledger rules having mutated anything. Event -> report:

* ``Rested`` of a ``PENDING_NEW`` order (it rests without fills): ``x=NEW``.
* ``Trade``: one ``x=TRADE`` per side (taker and maker), ``X=PARTIALLY_FILLED``, with the
  fill (``l``, ``L``, ``Y``, ``t``), the commission (``n``, ``N``) and the cumulative
  ``z``/``Z``. A later ``Rested`` of the taker marks its trades as working (``w``, ``W``).
* ``Done(FILLED)``: no report of its own; the order's last ``TRADE`` becomes ``X=FILLED``
  and not working, as Binance's last fill reads.
* ``Done(CANCELED | EXPIRED | REJECTED)``: ``x=X=`` that status; ``r`` says why a rejected
  order was refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import msgspec

from tradeplane.domain.ledger import fee
from tradeplane.domain.model import (
    Done,
    EventBatch,
    OrderType,
    Reason,
    Rested,
    Side,
    Status,
    TimeInForce,
    Trade,
)
from tradeplane.domain.money import fmt_units
from tradeplane.domain.pairs import PairRules

ZERO: Final = "0.00000000"
#: Room for the events of one batch in an execution id (``I``): ``first_seq << 20 | index``.
EXEC_ID_SHIFT: Final = 20

_STATUS: Final = {s: s.name for s in Status}
_SIDES: Final = {s: s.name for s in Side}
_TYPES: Final = {t: t.name for t in OrderType}
_TIFS: Final = {t: t.name for t in TimeInForce}
#: Binance's ``r`` values (user data stream, "Order Reject Reason"); anything else is NONE.
REJECT_REASONS: Final = {
    Reason.WOULD_TAKE: "WOULD_MATCH_IMMEDIATELY",
    Reason.HALTED: "MARKET_CLOSED",
}

_encoder = msgspec.json.Encoder()


class Row(Protocol):
    """An order row (asyncpg Record of ``db.ORDER_COLUMNS``) or a mapping with its keys."""

    def __getitem__(self, key: str, /) -> Any: ...


@dataclass(slots=True)
class _Progress:
    """An order as the reports see it so far: advanced event by event."""

    row: Row
    rules: PairRules
    status: Status
    executed: int  # lots
    cum_quote: int  # quote units
    working: bool  # has been placed on the book
    last: dict[str, Any] | None = None  # the order's last TRADE report of this pull
    taker_trades: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class UserUpdates:
    """What one settlement transaction tells each account, in event order."""

    reports: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    updated_ms: dict[int, int] = field(default_factory=dict)  # last event time per account
    #: (account, hold asset) of the orders the engine answered for the first time: their
    #: hold was taken at entry, so the account's position there is news too.
    entered: set[tuple[int, str]] = field(default_factory=set)


def user_updates(
    batches: Sequence[EventBatch],
    rules: Mapping[str, PairRules],
    orders: Mapping[int, Row],
    now_ms: int,
) -> UserUpdates:
    """The execution reports of ``batches`` per account, in event order.

    ``orders`` holds the row of every order the events name, as it was before the first
    batch; events naming an order without a row are skipped (settlement would have refused
    them already). Rows are only read.
    """
    out = UserUpdates()
    progress: dict[int, _Progress] = {}
    updated = out.updated_ms

    def track(order_id: int, r: PairRules) -> _Progress | None:
        p = progress.get(order_id)
        if p is None:
            row = orders.get(order_id)
            if row is None:
                return None
            status = Status(row["status"])
            p = progress[order_id] = _Progress(
                row, r, status, row["executed"], row["cum_quote"],
                status in (Status.NEW, Status.PARTIALLY_FILLED),
            )
            if status == Status.PENDING_NEW:
                out.entered.add((row["account_id"], row["hold_asset"]))
        return p

    def emit(account: int, doc: dict[str, Any]) -> None:
        bucket = out.reports.get(account)
        if bucket is None:
            out.reports[account] = [doc]
        else:
            bucket.append(doc)

    for b in batches:
        r = rules[b.symbol]
        exec_base = b.first_seq << EXEC_ID_SHIFT
        for i, ev in enumerate(b.events):
            if isinstance(ev, Trade):
                base_amt = r.qty_units(ev.qty)
                quote_amt = r.notional(ev.price, ev.qty)
                buyer_is_maker = ev.taker_side == Side.SELL
                maker_rate, taker_rate = r.maker_fee_ppm, r.taker_fee_ppm
                fees = {
                    True: fee(base_amt, maker_rate if buyer_is_maker else taker_rate),
                    False: fee(quote_amt, taker_rate if buyer_is_maker else maker_rate),
                }
                for oid, account, maker in (
                    (ev.taker_order, ev.taker_account, False),
                    (ev.maker_order, ev.maker_account, True),
                ):
                    updated[account] = ev.ts
                    p = track(oid, r)
                    if p is None:
                        continue
                    p.executed += ev.qty
                    p.cum_quote += quote_amt
                    p.status = Status.PARTIALLY_FILLED
                    if maker:
                        p.working = True
                    buyer = Side(p.row["side"]) == Side.BUY
                    doc = _report(
                        p, b.symbol, "TRADE", ev.ts, now_ms, exec_base | i, on_book=maker,
                        last_qty=base_amt, last_price=r.price_units(ev.price),
                        last_quote=quote_amt, commission=fmt_units(fees[buyer]),
                        commission_asset=r.base if buyer else r.quote,
                        trade_id=ev.trade_id, maker=maker,
                    )
                    p.last = doc
                    if not maker:
                        p.taker_trades.append(doc)
                    emit(account, doc)
            elif isinstance(ev, Rested):
                updated[ev.account] = ev.ts
                p = track(ev.order_id, r)
                if p is None:
                    continue
                if p.status == Status.PENDING_NEW:
                    p.status = Status.NEW
                    p.working = True
                    emit(ev.account,
                         _report(p, b.symbol, "NEW", ev.ts, now_ms, exec_base | i, on_book=True))
                else:
                    # The remainder of a taker rests after its fills: they were working.
                    p.working = True
                    for doc in p.taker_trades:
                        doc["w"] = True
                        doc["W"] = p.row["created_ms"]
                        doc["V"] = doc.pop("V")  # keep Binance's key order
                p.taker_trades = []
            elif isinstance(ev, Done):
                updated[ev.account] = ev.ts
                p = track(ev.order_id, r)
                if p is None:
                    continue
                p.status = Status(ev.status)
                if p.status == Status.FILLED:
                    if p.last is not None:
                        p.last["X"] = "FILLED"
                        p.last["w"] = False
                else:
                    kind = _STATUS[p.status]
                    reason = (REJECT_REASONS.get(ev.reason, "NONE")
                              if p.status == Status.REJECTED else "NONE")
                    emit(ev.account, _report(p, b.symbol, kind, ev.ts, now_ms, exec_base | i,
                                             on_book=False, reason=reason))
                p.taker_trades = []
    return out


def _report(
    p: _Progress, symbol: str, kind: str, ts: int, now_ms: int, exec_id: int, *,
    on_book: bool, reason: str = "NONE", last_qty: int = 0, last_price: int = 0,
    last_quote: int = 0, commission: str = "0", commission_asset: str | None = None,
    trade_id: int = -1, maker: bool = False,
) -> dict[str, Any]:
    row, r = p.row, p.rules
    by_quote = row["by_quote"]
    client_id = row["client_order_id"]
    doc: dict[str, Any] = {
        "e": "executionReport",
        "E": now_ms,
        "s": symbol,
        "c": client_id,
        "S": _SIDES[Side(row["side"])],
        "o": _TYPES[OrderType(row["type"])],
        "f": _TIFS[TimeInForce(row["tif"])],
        "q": ZERO if by_quote else fmt_units(r.qty_units(row["qty"])),
        "p": fmt_units(r.price_units(row["price"])),
        "P": ZERO,
        "F": ZERO,
        "g": -1,
        # Binance names the canceled order's client id here (``c`` is the cancel request's
        # own id, which the engine does not carry: we repeat the order's).
        "C": client_id if kind == "CANCELED" else "",
        "x": kind,
        "X": _STATUS[p.status],
        "r": reason,
        "i": row["id"],
        "l": fmt_units(last_qty),
        "z": fmt_units(r.qty_units(p.executed)),
        "L": fmt_units(last_price),
        "n": commission,
        "N": commission_asset,
        "T": ts,
        "t": trade_id,
        "I": exec_id,
        "w": on_book,
        "m": maker,
        "M": False,
        "O": row["created_ms"],
        "Z": fmt_units(p.cum_quote),
        "Y": fmt_units(last_quote),
        "Q": fmt_units(row["quote_qty"]) if by_quote else ZERO,
    }
    if p.working:
        # Binance shows the working time only for orders that have been on the book; ours
        # is the entry time (the engine rests an order within the command that placed it).
        doc["W"] = row["created_ms"]
    doc["V"] = "NONE"
    return doc


def account_position(
    now_ms: int, updated_ms: int, balances: Iterable[tuple[str, int, int]]
) -> dict[str, Any]:
    """``outboundAccountPosition`` for ``(asset, free, locked)`` balances, in units."""
    return {
        "e": "outboundAccountPosition",
        "E": now_ms,
        "u": updated_ms,
        "B": [{"a": a, "f": fmt_units(free), "l": fmt_units(locked)}
              for a, free, locked in balances],
    }


def encode(doc: dict[str, Any]) -> bytes:
    """Compact JSON, keys in insertion order (as Binance sends them)."""
    return _encoder.encode(doc)
