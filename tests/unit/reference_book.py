"""A naive, obviously-correct order book: the oracle the real ``OrderBook`` is tested against.

Plain lists and linear scans, no caching, no indices. Resting orders live in one list in
queue order (arrival, and an iceberg refill moves its order to the end), so "the first
best-priced order in the list" is price-time priority. Waiting stop orders live in a
second list in placement order. It implements the same ``process`` semantics as
``tradeplane.domain.book`` (see its module docstring and ``model.py``); only speed differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from tradeplane.domain.model import (
    STOP_TYPES,
    Accepted,
    Amend,
    Amended,
    AmendRejected,
    Cancel,
    CancelAll,
    CancelRejected,
    Command,
    Done,
    Event,
    NewOrder,
    NewOrderList,
    OrderType,
    Reason,
    Rested,
    SetTrading,
    Side,
    Status,
    StpMode,
    Tick,
    TimeInForce,
    Trade,
    TradingChanged,
    TradingState,
    Triggered,
    stop_triggers_above,
)

LIMIT_STOPS = (OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT)


@dataclass
class RefOrder:
    order_id: int
    account: int
    side: Side
    price: int
    remaining: int  # visible
    qty: int = 0
    hidden: int = 0
    peak: int = 0
    gtd: int = 0
    list_id: int = 0


@dataclass
class RefStop:
    cmd: NewOrder
    gtd: int = 0


class ReferenceBook:
    def __init__(self, notional_per_tick_lot: int, recent_limit: int = 100_000) -> None:
        self.npl = notional_per_tick_lot
        self.recent_limit = recent_limit
        self.resting: list[RefOrder] = []  # queue order
        self.waiting: list[RefStop] = []  # placement order
        self.finished: list[int] = []  # oldest first, at most recent_limit
        self.trading = TradingState.ENABLED
        self.next_trade_id = 1
        self.last_price = 0
        self.traded: list[int] = []  # prices the current taker round traded at
        self.quote_stop = False  # the last taker stopped where its quote could not pay a lot

    # ------------------------------------------------------------------ queries
    def depth(self, limit: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        def levels(side: Side) -> list[tuple[int, int]]:
            totals: dict[int, int] = {}
            for o in self.resting:
                if o.side == side:
                    totals[o.price] = totals.get(o.price, 0) + o.remaining
            prices = sorted(totals, reverse=side == Side.BUY)
            return [(p, totals[p]) for p in prices[:limit]]

        return levels(Side.BUY), levels(Side.SELL)

    def best_bid(self) -> int | None:
        return max((o.price for o in self.resting if o.side == Side.BUY), default=None)

    def best_ask(self) -> int | None:
        return min((o.price for o in self.resting if o.side == Side.SELL), default=None)

    def open_ids(self) -> set[int]:
        return {o.order_id for o in self.resting} | {s.cmd.order_id for s in self.waiting}

    def live(self, order_id: int) -> RefOrder | RefStop | None:
        for o in self.resting:
            if o.order_id == order_id:
                return o
        for s in self.waiting:
            if s.cmd.order_id == order_id:
                return s
        return None

    @staticmethod
    def oid(x: RefOrder | RefStop) -> int:
        return x.cmd.order_id if isinstance(x, RefStop) else x.order_id

    @staticmethod
    def account_of(x: RefOrder | RefStop) -> int:
        return x.cmd.account if isinstance(x, RefStop) else x.account

    @staticmethod
    def list_of(x: RefOrder | RefStop) -> int:
        return x.cmd.list_id if isinstance(x, RefStop) else x.list_id

    def partner(self, x: RefOrder | RefStop) -> RefOrder | RefStop | None:
        lid = self.list_of(x)
        if not lid:
            return None
        for y in [*self.resting, *self.waiting]:
            if y is not x and self.list_of(y) == lid:
                return y
        return None

    # ------------------------------------------------------------------ commands
    def process(self, cmd: Command) -> list[Event]:
        if isinstance(cmd, NewOrder):
            return self.new_order(cmd)
        if isinstance(cmd, Cancel):
            return self.cancel(cmd)
        if isinstance(cmd, CancelAll):
            return self.cancel_all(cmd)
        if isinstance(cmd, SetTrading):
            self.trading = cmd.state
            return [TradingChanged(cmd.state, cmd.ts)]
        if isinstance(cmd, Tick):
            return self.tick(cmd.ts)
        if isinstance(cmd, Amend):
            return self.amend(cmd)
        if isinstance(cmd, NewOrderList):
            return self.new_list(cmd)
        raise TypeError(cmd)

    def finish(self, order_id: int) -> None:
        self.finished.append(order_id)
        self.finished = self.finished[-self.recent_limit :]

    def done(self, cmd: NewOrder, status: Status, reason: Reason) -> Done:
        self.finish(cmd.order_id)
        return Done(cmd.order_id, cmd.account, status, reason, cmd.ts)

    def seen(self, order_id: int) -> bool:
        return order_id in self.open_ids() or order_id in self.finished

    def remove(self, x: RefOrder | RefStop) -> None:
        if isinstance(x, RefStop):
            self.waiting.remove(x)
        else:
            self.resting.remove(x)
        self.finish(self.oid(x))

    def end(self, x: RefOrder | RefStop, status: Status, reason: Reason, ts: int,
            events: list[Event]) -> None:
        """End a live order and, when it is a list leg, its partner (LIST_DONE / CANCELED)."""
        peer = self.partner(x)
        self.remove(x)
        events.append(Done(self.oid(x), self.account_of(x), status, reason, ts))
        if peer is not None:
            self.end_partner(peer, Status.CANCELED if status == Status.CANCELED
                             else Status.EXPIRED, ts, events)

    def end_partner(self, peer: RefOrder | RefStop, status: Status, ts: int,
                    events: list[Event]) -> None:
        self.remove(peer)
        reason = Reason.NONE if status == Status.CANCELED else Reason.LIST_DONE
        events.append(Done(self.oid(peer), self.account_of(peer), status, reason, ts))

    def new_order(self, cmd: NewOrder) -> list[Event]:
        if self.seen(cmd.order_id):
            return []
        if self.trading != TradingState.ENABLED:
            return [self.done(cmd, Status.REJECTED, Reason.HALTED)]
        events: list[Event] = []
        if cmd.type in STOP_TYPES:
            reason = self.stop_refusal(cmd)
            if reason is not None:
                return [self.done(cmd, Status.REJECTED, reason)]
            self.park(cmd)
            return [Accepted(cmd.order_id, cmd.account, cmd.ts)]
        self.work(cmd, events)
        self.run_triggers(cmd.ts, events)
        return events

    def work(self, cmd: NewOrder, events: list[Event]) -> None:
        if cmd.type == OrderType.MARKET:
            self.market(cmd, events)
        else:
            self.limit(cmd, events)

    def limit(self, cmd: NewOrder, events: list[Event]) -> None:
        if cmd.price <= 0 or cmd.qty <= 0 or (
                cmd.tif == TimeInForce.GTD and cmd.good_till <= cmd.ts):
            events.append(self.done(cmd, Status.REJECTED, Reason.NONE))
            return
        crosses = self.best_maker(cmd.side, cmd.price) is not None
        if cmd.type == OrderType.LIMIT_MAKER:
            if crosses:
                events.append(self.done(cmd, Status.REJECTED, Reason.WOULD_TAKE))
                return
            self.rest(cmd, cmd.qty, events)
            return
        resting_tif = cmd.tif in (TimeInForce.GTC, TimeInForce.GTD)
        if not crosses:
            if resting_tif:
                self.rest(cmd, cmd.qty, events)
            else:
                events.append(self.done(cmd, Status.EXPIRED, Reason.NO_LIQUIDITY))
            return
        if cmd.tif == TimeInForce.FOK and self.fillable(cmd) < cmd.qty:
            events.append(self.done(cmd, Status.EXPIRED, Reason.NO_LIQUIDITY))
            return
        left, _quote, self_trade = self.take(cmd, cmd.price, cmd.qty, None, events)
        if self_trade:
            events.append(self.done(cmd, Status.EXPIRED_IN_MATCH, Reason.SELF_TRADE))
        elif left == 0:
            events.append(self.done(cmd, Status.FILLED, Reason.NONE))
        elif resting_tif:
            self.rest(cmd, left, events)
        else:
            events.append(self.done(cmd, Status.EXPIRED, Reason.NO_LIQUIDITY))

    def fillable(self, cmd: NewOrder) -> int:
        """Lots a FOK taker would execute (own makers under STP: stop or skip)."""
        makers = sorted(
            (o for o in self.resting
             if o.side != cmd.side and self.acceptable(cmd.side, cmd.price, o.price)),
            key=lambda o: o.price if cmd.side == Side.BUY else -o.price,
        )  # stable: queue order within a price
        total = 0
        for o in makers:
            if cmd.stp != StpMode.NONE and o.account == cmd.account:
                if cmd.stp in (StpMode.EXPIRE_TAKER, StpMode.EXPIRE_BOTH):
                    break
                continue
            total += o.remaining + o.hidden
        return total

    def take(self, cmd: NewOrder, limit: int | None, lots: int | None, quote: int | None,
             events: list[Event]) -> tuple[int | None, int | None, bool]:
        """Match the taker; returns (lots left, quote left, expired by self-trade)."""
        self.quote_stop = False
        while lots != 0 and quote != 0:
            maker = self.best_maker(cmd.side, limit)
            if maker is None:
                break
            if cmd.stp != StpMode.NONE and maker.account == cmd.account:
                if cmd.stp == StpMode.EXPIRE_TAKER:
                    return lots, quote, True
                self.end(maker, Status.EXPIRED_IN_MATCH, Reason.SELF_TRADE, cmd.ts, events)
                if cmd.stp == StpMode.EXPIRE_BOTH:
                    return lots, quote, True
                continue
            n = maker.remaining
            if lots is not None:
                n = min(n, lots)
            if quote is not None:
                n = min(n, quote // (maker.price * self.npl))
            if n == 0:
                self.quote_stop = True
                break
            if lots is not None:
                lots -= n
            if quote is not None:
                quote -= n * maker.price * self.npl
            self.fill(cmd, maker, n, events)
        return lots, quote, False

    def market(self, cmd: NewOrder, events: list[Event]) -> None:
        if (
            cmd.price != 0
            or cmd.qty < 0
            or cmd.quote_qty < 0
            or (cmd.qty == 0 and not cmd.by_quote)
            or (cmd.by_quote and cmd.quote_qty == 0)
        ):
            events.append(self.done(cmd, Status.REJECTED, Reason.NONE))
            return
        trades_before = self.next_trade_id
        lots_left, quote_left, self_trade = self.take(
            cmd, None, cmd.qty if cmd.qty else None, cmd.quote_qty if cmd.quote_qty else None,
            events)
        executed = self.next_trade_id != trades_before
        quote_spent = self.quote_stop or quote_left == 0
        if self_trade:
            events.append(self.done(cmd, Status.EXPIRED_IN_MATCH, Reason.SELF_TRADE))
        elif cmd.by_quote:
            if executed and quote_spent:
                events.append(self.done(cmd, Status.FILLED, Reason.NONE))
            else:
                events.append(self.done(cmd, Status.EXPIRED, Reason.NO_LIQUIDITY))
        elif lots_left == 0:
            events.append(self.done(cmd, Status.FILLED, Reason.NONE))
        elif quote_spent:
            events.append(self.done(cmd, Status.EXPIRED, Reason.CAP_REACHED))
        else:
            events.append(self.done(cmd, Status.EXPIRED, Reason.NO_LIQUIDITY))

    @staticmethod
    def acceptable(taker_side: Side, limit: int | None, maker_price: int) -> bool:
        if limit is None:
            return True
        return maker_price <= limit if taker_side == Side.BUY else maker_price >= limit

    def best_maker(self, taker_side: Side, limit: int | None) -> RefOrder | None:
        best: RefOrder | None = None
        for o in self.resting:  # queue order: the first of equal prices wins
            if o.side == taker_side or not self.acceptable(taker_side, limit, o.price):
                continue
            if best is None:
                best = o
                continue
            if o.price < best.price if taker_side == Side.BUY else o.price > best.price:
                best = o
        return best

    def fill(self, cmd: NewOrder, maker: RefOrder, n: int, events: list[Event]) -> None:
        peer = self.partner(maker)
        if peer is not None:  # a list leg executes: the other one ends first
            self.end_partner(peer, Status.EXPIRED, cmd.ts, events)
        events.append(Trade(
            self.next_trade_id, maker.price, n, cmd.order_id, cmd.account, cmd.side,
            maker.order_id, maker.account, cmd.ts,
        ))
        self.next_trade_id += 1
        self.last_price = maker.price
        self.traded.append(maker.price)
        maker.remaining -= n
        if maker.remaining == 0:
            if maker.hidden:
                refill = min(maker.peak, maker.hidden)
                maker.hidden -= refill
                maker.remaining = refill
                self.resting.remove(maker)
                self.resting.append(maker)  # back of the queue
                return
            self.resting.remove(maker)
            self.finish(maker.order_id)
            events.append(Done(maker.order_id, maker.account, Status.FILLED, Reason.NONE, cmd.ts))

    def rest(self, cmd: NewOrder, qty: int, events: list[Event], list_id: int = 0) -> None:
        peak = cmd.iceberg_qty
        visible = min(qty, peak) if peak > 0 else qty
        gtd = cmd.good_till if cmd.tif == TimeInForce.GTD else 0
        self.resting.append(RefOrder(cmd.order_id, cmd.account, cmd.side, cmd.price, visible,
                                     cmd.qty, qty - visible, max(peak, 0), gtd, list_id))
        events.append(Rested(cmd.order_id, cmd.account, cmd.side, cmd.price, qty, cmd.ts))

    # ------------------------------------------------------------------ stops
    def stop_refusal(self, cmd: NewOrder) -> Reason | None:
        if cmd.type not in STOP_TYPES or cmd.stop_price <= 0 or cmd.qty <= 0 or cmd.by_quote:
            return Reason.NONE
        if cmd.type in LIMIT_STOPS:
            if cmd.price <= 0:
                return Reason.NONE
        elif cmd.price != 0 or cmd.quote_qty < 0:
            return Reason.NONE
        if cmd.tif == TimeInForce.GTD and cmd.good_till <= cmd.ts:
            return Reason.NONE
        if self.last_price:
            above = stop_triggers_above(cmd.type, cmd.side)
            if (self.last_price >= cmd.stop_price) if above else (
                    self.last_price <= cmd.stop_price):
                return Reason.WOULD_TRIGGER
        return None

    def park(self, cmd: NewOrder) -> None:
        gtd = cmd.good_till if cmd.tif == TimeInForce.GTD else 0
        self.waiting.append(RefStop(cmd, gtd))

    def run_triggers(self, ts: int, events: list[Event]) -> None:
        """Rounds: the stops the previous round's price range reached, in placement order."""
        while self.traded:
            lo, hi = min(self.traded), max(self.traded)
            self.traded = []
            fired = [s for s in self.waiting
                     if (s.cmd.stop_price <= hi if stop_triggers_above(s.cmd.type, s.cmd.side)
                         else s.cmd.stop_price >= lo)]
            for s in fired:
                if s in self.waiting:  # not ended as an earlier stop's list partner
                    self.trigger(s, ts, events)

    def trigger(self, s: RefStop, ts: int, events: list[Event]) -> None:
        peer = self.partner(s)
        self.waiting.remove(s)
        if peer is not None:
            self.end_partner(peer, Status.EXPIRED, ts, events)
        cmd = s.cmd
        events.append(Triggered(cmd.order_id, cmd.account, self.last_price, ts))
        if cmd.tif == TimeInForce.GTD and cmd.good_till <= ts:
            self.finish(cmd.order_id)
            events.append(Done(cmd.order_id, cmd.account, Status.EXPIRED, Reason.GTD_EXPIRED, ts))
            return
        working = OrderType.LIMIT if cmd.type in LIMIT_STOPS else OrderType.MARKET
        self.work(replace_cmd(cmd, type=working, ts=ts, list_id=0), events)

    # ------------------------------------------------------------------ lists
    def new_list(self, cmd: NewOrderList) -> list[Event]:
        legs = cmd.legs
        if any(self.seen(leg.order_id) for leg in legs):
            return []
        refusals: list[Reason | None]
        allowed = {OrderType.LIMIT_MAKER, *STOP_TYPES}
        if self.trading != TradingState.ENABLED:
            refusals = [Reason.HALTED] * len(legs)
        elif (len(legs) != 2 or legs[0].order_id == legs[1].order_id or not cmd.list_id
              or any(leg.account != cmd.account or leg.list_id != cmd.list_id
                     or leg.side != legs[0].side or leg.type not in allowed for leg in legs)
              or legs[0].type == legs[1].type == OrderType.LIMIT_MAKER):
            refusals = [Reason.BAD_LIST] * len(legs)
        else:
            refusals = [self.leg_refusal(leg) for leg in legs]
        events: list[Event] = []
        if any(r is not None for r in refusals):
            refused: set[int] = set()
            for leg, r in zip(legs, refusals, strict=True):
                if leg.order_id not in refused:
                    refused.add(leg.order_id)
                    self.finish(leg.order_id)
                    events.append(Done(leg.order_id, cmd.account, Status.REJECTED,
                                       r or Reason.BAD_LIST, cmd.ts))
            return events
        for leg in legs:
            if leg.type == OrderType.LIMIT_MAKER:
                self.rest(leg, leg.qty, events, list_id=cmd.list_id)
            else:
                self.park(leg)
                events.append(Accepted(leg.order_id, leg.account, leg.ts))
        return events

    def leg_refusal(self, leg: NewOrder) -> Reason | None:
        if leg.type != OrderType.LIMIT_MAKER:
            return self.stop_refusal(leg)
        if leg.price <= 0 or leg.qty <= 0 or (
                leg.tif == TimeInForce.GTD and leg.good_till <= leg.ts):
            return Reason.NONE
        if self.best_maker(leg.side, leg.price) is not None:
            return Reason.WOULD_TAKE
        return None

    # ------------------------------------------------------------------ cancel, amend, tick
    def cancel(self, cmd: Cancel) -> list[Event]:
        if self.trading == TradingState.HALTED:
            return [CancelRejected(cmd.order_id, cmd.account, Reason.HALTED, cmd.ts)]
        x = self.live(cmd.order_id)
        if x is None or self.account_of(x) != cmd.account:
            return [CancelRejected(cmd.order_id, cmd.account, Reason.UNKNOWN_ORDER, cmd.ts)]
        events: list[Event] = []
        self.end(x, Status.CANCELED, Reason.NONE, cmd.ts, events)
        return events

    def cancel_all(self, cmd: CancelAll) -> list[Event]:
        if self.trading == TradingState.HALTED:
            return [CancelRejected(0, cmd.account, Reason.HALTED, cmd.ts)]
        mine = sorted(oid for oid in self.open_ids()
                      if self.account_of(self.live(oid)) == cmd.account)  # type: ignore[arg-type]
        events: list[Event] = []
        for oid in mine:
            x = self.live(oid)
            if x is not None:
                self.end(x, Status.CANCELED, Reason.NONE, cmd.ts, events)
        return events

    def amend(self, cmd: Amend) -> list[Event]:
        oid, acct, ts, new = cmd.order_id, cmd.account, cmd.ts, cmd.new_qty
        if self.trading == TradingState.HALTED:
            return [AmendRejected(oid, acct, Reason.HALTED, ts)]
        x = self.live(oid)
        if x is None or self.account_of(x) != acct:
            return [AmendRejected(oid, acct, Reason.UNKNOWN_ORDER, ts)]
        if isinstance(x, RefStop):
            if x.cmd.type not in LIMIT_STOPS or not 0 < new < x.cmd.qty:
                return [AmendRejected(oid, acct, Reason.NOT_AMENDABLE, ts)]
            reduced = x.cmd.qty - new
            x.cmd = replace_cmd(x.cmd, qty=new)
            return [Amended(oid, acct, new, reduced, ts)]
        if not 0 < new < x.qty:
            return [AmendRejected(oid, acct, Reason.NOT_AMENDABLE, ts)]
        live = x.remaining + x.hidden
        executed = x.qty - live
        if new <= executed:
            events: list[Event] = [Amended(oid, acct, executed, live, ts)]
            self.end(x, Status.FILLED, Reason.NONE, ts, events)
            return events
        reduced = x.qty - new
        from_hidden = min(x.hidden, reduced)
        x.hidden -= from_hidden
        x.remaining -= reduced - from_hidden
        x.qty = new
        return [Amended(oid, acct, new, reduced, ts)]

    def tick(self, ts: int) -> list[Event]:
        due = sorted(
            (x.gtd, self.oid(x)) for x in [*self.resting, *self.waiting] if 0 < x.gtd <= ts
        )
        events: list[Event] = []
        for _gtd, oid in due:
            x = self.live(oid)
            if x is not None:
                self.end(x, Status.EXPIRED, Reason.GTD_EXPIRED, ts, events)
        return events


def replace_cmd(cmd: NewOrder, **changes: object) -> NewOrder:
    return msgspec.structs.replace(cmd, **changes)
