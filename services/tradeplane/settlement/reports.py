"""Binance user data stream payloads for settled events: ``executionReport`` and
``outboundAccountPosition``. Pure: no I/O, no clock (``now_ms`` is passed in).

Settlement calls :func:`user_updates` after each commit with the pull's batches, the rows of
the orders they touch *as loaded before the pull* and the pair rules; it walks the events in
order, advancing each order's cumulative quantities itself, so the reports never depend on
the ledger rules having mutated anything. Event -> report:

* Every order the engine accepted is reported ``x=NEW`` first, as Binance does: at its
  ``Rested`` when it rests without fills, else just before its first ``TRADE`` or its
  ``EXPIRED``/``CANCELED`` (an IOC, FOK or market order that could not fill). A rejected
  order gets only its ``REJECTED``.
* ``Trade``: one ``x=TRADE`` per side (taker and maker), ``X=PARTIALLY_FILLED``, with the
  fill (``l``, ``L``, ``Y``, ``t``), the commission (``n``, ``N``) and the cumulative
  ``z``/``Z``. A later ``Rested`` of the taker marks its trades as working (``w``, ``W``).
* ``Done(FILLED)``: no report of its own; the order's last ``TRADE`` becomes ``X=FILLED``
  and not working, as Binance's last fill reads.
* ``Done(CANCELED | EXPIRED | REJECTED)``: ``x=X=`` that status; ``r`` says why a rejected
  order was refused. A GTD expiry and the other leg of an OCO list that executed are
  ``EXPIRED`` too.
* ``Done(EXPIRED_IN_MATCH)`` (self-trade prevention): ``x=TRADE_PREVENTION``,
  ``X=EXPIRED_IN_MATCH``, with the prevented quantity in ``A`` and ``B``.
* ``Accepted`` (a stop order now waits for its trigger): ``x=NEW``, not working.
* ``Triggered``: ``x=NEW`` again, now working (``w`` true, ``W`` the trigger time): the
  report Binance sends when a stop order goes to work; its fills follow as ``TRADE``.
* ``Amended``: ``x=REPLACED`` with the new quantity ``q`` (and, when the amend left
  nothing to fill, ``X=FILLED``).

Then one :func:`account_position` per account whose balances the transaction changed, or
whose order the engine answered for the first time (its hold was taken at entry).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from tradeplane.domain.ledger import trade_amounts
from tradeplane.domain.model import (
    STOP_TYPES,
    Accepted,
    Amended,
    Done,
    EventBatch,
    OrderType,
    Reason,
    Rested,
    Side,
    Status,
    StpMode,
    TimeInForce,
    Trade,
    Triggered,
)
from tradeplane.domain.money import fmt_units
from tradeplane.domain.pairs import PairRules
from tradeplane.domain.userevents import account_position as account_position
from tradeplane.domain.userevents import encode as encode

ZERO: Final = "0.00000000"
#: Execution id ``I`` = ``first_seq << 20 | event index``: unique per symbol while a batch
#: holds under 2**20 events, and below 2**53 (exact in JavaScript) up to 2**33 commands.
EXEC_ID_SHIFT: Final = 20
NEW_EXEC_BIT: Final = 1 << (EXEC_ID_SHIFT - 1)  # the NEW announced before an event

_STATUS: Final[dict[int, str]] = {s: s.name for s in Status}
_SIDES: Final[dict[int, str]] = {s: s.name for s in Side}
_TYPES: Final[dict[int, str]] = {t: t.name for t in OrderType}
_TIFS: Final[dict[int, str]] = {t: t.name for t in TimeInForce}
_STP: Final[dict[int, str]] = {m: m.name for m in StpMode}
#: Binance's ``r`` values ("Order Reject Reason"; MARKET_CLOSED is from its older list);
#: anything else is NONE.
REJECT_REASONS: Final = {
    Reason.WOULD_TAKE: "WOULD_MATCH_IMMEDIATELY",
    Reason.WOULD_TRIGGER: "STOP_PRICE_WOULD_TRIGGER_IMMEDIATELY",
    Reason.HALTED: "MARKET_CLOSED",
}



class Row(Protocol):
    """An order row (asyncpg Record of ``db.ORDER_COLUMNS``) or a mapping with its keys."""

    def __getitem__(self, key: str, /) -> Any: ...


class _Progress:
    """An order as the reports see it so far: advanced event by event. The fields that
    never change are formatted once per order, not once per report."""

    __slots__ = ("F", "O", "P", "Q", "S", "V", "W", "buyer", "c", "cum_quote", "executed",
                 "f", "g", "i", "last", "o", "p", "q", "qty", "qty_unit", "status",
                 "taker_trades", "working")

    def __init__(self, row: Row, rules: PairRules) -> None:
        by_quote = row["by_quote"]
        side = row["side"]
        # Name tables are looked up by the stored integers: no enum call per order.
        self.c: str = row["client_order_id"]
        self.S = _SIDES[side]
        self.o = _TYPES[row["type"]]
        self.f = _TIFS[row["tif"]]
        self.q = ZERO if by_quote else fmt_units(rules.qty_units(row["qty"]))
        self.p = fmt_units(rules.price_units(row["price"]))
        self.i: int = row["id"]
        self.O: int = row["created_ms"]
        self.Q = fmt_units(row["quote_qty"]) if by_quote else ZERO
        self.buyer = side == Side.BUY
        self.qty_unit = rules.lot
        self.status: int = row["status"]  # a Status value
        self.executed: int = row["executed"]  # lots
        self.cum_quote: int = row["cum_quote"]  # quote units
        self.P = fmt_units(rules.price_units(row["stop_price"]))
        self.F = fmt_units(rules.qty_units(row["iceberg_qty"]))
        self.g: int = row["order_list_id"] or -1
        self.V = _STP[row["stp"]]
        self.qty: int = row["qty"]  # lots
        # When it went to work: at entry, or a stop order when it triggered (0 = not yet).
        self.W: int = row["working_ms"] if row["type"] in STOP_TYPES else self.O
        self.working = (self.status in (Status.NEW, Status.PARTIALLY_FILLED)  # on the book
                        and self.W > 0)
        self.last: dict[str, Any] | None = None  # the order's last TRADE report of this pull
        self.taker_trades: list[dict[str, Any]] = []


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
    reports = out.reports

    def track(order_id: int, r: PairRules) -> _Progress | None:
        p = progress.get(order_id)
        if p is None:
            row = orders.get(order_id)
            if row is None:
                return None
            p = progress[order_id] = _Progress(row, r)
            if p.status == Status.PENDING_NEW:
                out.entered.add((row["account_id"], row["hold_asset"]))
        return p

    def emit(account: int, doc: dict[str, Any]) -> None:
        bucket = reports.get(account)
        if bucket is None:
            reports[account] = [doc]
        else:
            bucket.append(doc)

    def announce(p: _Progress, account: int, sym: str, ts: int, exec_id: int) -> None:
        """Binance reports every accepted order as NEW first, even one that trades or
        expires at once; ``exec_id`` gets the NEW bit so it never equals the event's."""
        if p.status != Status.PENDING_NEW:
            return
        p.status = Status.NEW
        doc = _report(p, sym, "NEW", ts, now_ms, exec_id | NEW_EXEC_BIT, False)
        p.taker_trades.append(doc)  # marked working if the remainder rests
        emit(account, doc)

    for b in batches:
        r = rules[b.symbol]
        sym = b.symbol
        exec_base = b.first_seq << EXEC_ID_SHIFT
        for i, ev in enumerate(b.events):
            if isinstance(ev, Trade):
                amounts = trade_amounts(r, ev)
                base_amt, quote_amt = amounts.base, amounts.quote
                buyer_fee, seller_fee = amounts.buyer_fee, amounts.seller_fee
                fill = (fmt_units(base_amt), fmt_units(r.price_units(ev.price)),
                        fmt_units(quote_amt))
                for oid, account, maker in (
                    (ev.taker_order, ev.taker_account, False),
                    (ev.maker_order, ev.maker_account, True),
                ):
                    updated[account] = ev.ts
                    p = track(oid, r)
                    if p is None:
                        continue
                    announce(p, account, sym, ev.ts, exec_base | i)
                    p.executed += ev.qty
                    p.cum_quote += quote_amt
                    p.status = Status.PARTIALLY_FILLED
                    if maker:
                        p.working = True
                    doc = _report(
                        p, sym, "TRADE", ev.ts, now_ms, exec_base | i, maker, fill=fill,
                        commission=fmt_units(buyer_fee if p.buyer else seller_fee),
                        commission_asset=r.base if p.buyer else r.quote,
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
                    emit(ev.account, _report(p, sym, "NEW", ev.ts, now_ms, exec_base | i, True))
                else:
                    # The remainder of a taker rests after its fills: they were working.
                    p.working = True
                    for doc in p.taker_trades:
                        doc["w"] = True
                        doc["W"] = p.W
                        doc["V"] = doc.pop("V")  # keep Binance's key order
                p.taker_trades = []
            elif isinstance(ev, Done):
                updated[ev.account] = ev.ts
                p = track(ev.order_id, r)
                if p is None:
                    continue
                if ev.status in (Status.EXPIRED, Status.CANCELED, Status.EXPIRED_IN_MATCH):
                    announce(p, ev.account, sym, ev.ts, exec_base | i)
                p.status = ev.status
                if p.status == Status.FILLED:
                    if p.last is not None:
                        p.last["X"] = "FILLED"
                        p.last["w"] = False
                elif p.status == Status.EXPIRED_IN_MATCH:
                    prevented = fmt_units((p.qty - p.executed) * p.qty_unit)
                    doc = _report(p, sym, "TRADE_PREVENTION", ev.ts, now_ms, exec_base | i,
                                  False)
                    doc["A"] = prevented
                    doc["B"] = prevented
                    emit(ev.account, doc)
                else:
                    kind = _STATUS[p.status]
                    reason = (REJECT_REASONS.get(ev.reason, "NONE")
                              if p.status == Status.REJECTED else "NONE")
                    emit(ev.account, _report(p, sym, kind, ev.ts, now_ms, exec_base | i, False,
                                             reason=reason))
                p.taker_trades = []
            elif isinstance(ev, Accepted):
                updated[ev.account] = ev.ts
                p = track(ev.order_id, r)
                if p is None or p.status != Status.PENDING_NEW:
                    continue
                p.status = Status.NEW
                emit(ev.account, _report(p, sym, "NEW", ev.ts, now_ms, exec_base | i, False))
            elif isinstance(ev, Triggered):
                updated[ev.account] = ev.ts
                p = track(ev.order_id, r)
                if p is None:
                    continue
                p.W = ev.ts
                p.working = True
                emit(ev.account, _report(p, sym, "NEW", ev.ts, now_ms, exec_base | i, True))
            elif isinstance(ev, Amended):
                updated[ev.account] = ev.ts
                p = track(ev.order_id, r)
                if p is None:
                    continue
                p.qty = ev.new_qty
                p.q = fmt_units(ev.new_qty * p.qty_unit)
                doc = _report(p, sym, "REPLACED", ev.ts, now_ms, exec_base | i, p.working)
                p.last = doc  # an amend down to the executed quantity fills the order
                emit(ev.account, doc)
    return out


_NO_FILL: Final = (ZERO, ZERO, ZERO)


def _report(
    p: _Progress, symbol: str, kind: str, ts: int, now_ms: int, exec_id: int, on_book: bool,
    *, reason: str = "NONE", fill: tuple[str, str, str] = _NO_FILL, commission: str = "0",
    commission_asset: str | None = None, trade_id: int = -1, maker: bool = False,
) -> dict[str, Any]:
    """One executionReport; ``fill`` is (last qty, last price, last quote) as strings."""
    doc: dict[str, Any] = {
        "e": "executionReport",
        "E": now_ms,
        "s": symbol,
        "c": p.c,
        "S": p.S,
        "o": p.o,
        "f": p.f,
        "q": p.q,
        "p": p.p,
        "P": p.P,
        "F": p.F,
        "g": p.g,
        # Binance names the canceled order's client id here (``c`` is the cancel request's
        # own id, which the engine does not carry: we repeat the order's).
        "C": p.c if kind == "CANCELED" else "",
        "x": kind,
        "X": _STATUS[p.status],
        "r": reason,
        "i": p.i,
        "l": fill[0],
        "z": fmt_units(p.executed * p.qty_unit),
        "L": fill[1],
        "n": commission,
        "N": commission_asset,
        "T": ts,
        "t": trade_id,
        "I": exec_id,
        "w": on_book,
        "m": maker,
        "M": False,
        "O": p.O,
        "Z": fmt_units(p.cum_quote),
        "Y": fill[2],
        "Q": p.Q,
    }
    if p.working:
        # Binance shows the working time only for orders that have been on the book; ours
        # is the entry time (the engine rests an order within the command that placed it),
        # a stop order's its trigger time.
        doc["W"] = p.W
    doc["V"] = p.V
    return doc


