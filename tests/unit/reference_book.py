"""A naive, obviously-correct order book: the oracle the real ``OrderBook`` is tested against.

Plain lists and linear scans, no caching, no indices. Resting orders live in one list in
arrival order, so "the first best-priced order in the list" is price-time priority. It
implements the same ``process`` semantics as ``tradeplane.domain.book`` (see its module and
``NewOrder`` docstrings); only speed differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from tradeplane.domain.model import (
    Cancel,
    CancelAll,
    CancelRejected,
    Command,
    Done,
    Event,
    NewOrder,
    OrderType,
    Reason,
    Rested,
    SetTrading,
    Side,
    Status,
    TimeInForce,
    Trade,
    TradingChanged,
    TradingState,
)


@dataclass
class RefOrder:
    order_id: int
    account: int
    side: Side
    price: int
    remaining: int


class ReferenceBook:
    def __init__(self, notional_per_tick_lot: int, recent_limit: int = 100_000) -> None:
        self.npl = notional_per_tick_lot
        self.recent_limit = recent_limit
        self.resting: list[RefOrder] = []  # arrival order
        self.finished: list[int] = []  # oldest first, at most recent_limit
        self.trading = TradingState.ENABLED
        self.next_trade_id = 1

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
        return {o.order_id for o in self.resting}

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
        raise TypeError(cmd)

    def finish(self, order_id: int) -> None:
        self.finished.append(order_id)
        self.finished = self.finished[-self.recent_limit :]

    def done(self, cmd: NewOrder, status: Status, reason: Reason) -> Done:
        self.finish(cmd.order_id)
        return Done(cmd.order_id, cmd.account, status, reason, cmd.ts)

    def new_order(self, cmd: NewOrder) -> list[Event]:
        if cmd.order_id in self.open_ids() or cmd.order_id in self.finished:
            return []
        if self.trading != TradingState.ENABLED:
            return [self.done(cmd, Status.REJECTED, Reason.HALTED)]
        if cmd.type == OrderType.MARKET:
            return self.market(cmd)
        if cmd.price <= 0 or cmd.qty <= 0:
            return [self.done(cmd, Status.REJECTED, Reason.NONE)]
        crosses = self.best_maker(cmd.side, cmd.price) is not None
        if cmd.type == OrderType.LIMIT_MAKER:
            if crosses:
                return [self.done(cmd, Status.REJECTED, Reason.WOULD_TAKE)]
            return [self.rest(cmd, cmd.qty)]
        if cmd.tif == TimeInForce.FOK:
            available = sum(
                o.remaining for o in self.resting
                if o.side != cmd.side and self.acceptable(cmd.side, cmd.price, o.price)
            )
            if available < cmd.qty:
                return [self.done(cmd, Status.EXPIRED, Reason.NO_LIQUIDITY)]
        events: list[Event] = []
        left = cmd.qty
        while left > 0:
            maker = self.best_maker(cmd.side, cmd.price)
            if maker is None:
                break
            n = min(left, maker.remaining)
            self.fill(cmd, maker, n, events)
            left -= n
        if left == 0:
            events.append(self.done(cmd, Status.FILLED, Reason.NONE))
        elif cmd.tif == TimeInForce.GTC:
            events.append(self.rest(cmd, left))
        else:
            events.append(self.done(cmd, Status.EXPIRED, Reason.NO_LIQUIDITY))
        return events

    def market(self, cmd: NewOrder) -> list[Event]:
        if (
            cmd.price != 0
            or cmd.qty < 0
            or cmd.quote_qty < 0
            or (cmd.qty == 0 and not cmd.by_quote)
            or (cmd.by_quote and cmd.quote_qty == 0)
        ):
            return [self.done(cmd, Status.REJECTED, Reason.NONE)]
        lots_left = cmd.qty if cmd.qty else None
        quote_left = cmd.quote_qty if cmd.quote_qty else None
        executed = False
        stopped_at_maker_by_quote = False
        events: list[Event] = []
        while lots_left != 0 and quote_left != 0:
            maker = self.best_maker(cmd.side, None)
            if maker is None:
                break
            n = maker.remaining
            if lots_left is not None:
                n = min(n, lots_left)
            if quote_left is not None:
                n = min(n, quote_left // (maker.price * self.npl))
            if n == 0:
                stopped_at_maker_by_quote = True
                break
            if lots_left is not None:
                lots_left -= n
            if quote_left is not None:
                quote_left -= n * maker.price * self.npl
            executed = True
            self.fill(cmd, maker, n, events)
        quote_spent = stopped_at_maker_by_quote or quote_left == 0
        if cmd.by_quote:
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
        return events

    @staticmethod
    def acceptable(taker_side: Side, limit: int | None, maker_price: int) -> bool:
        if limit is None:
            return True
        return maker_price <= limit if taker_side == Side.BUY else maker_price >= limit

    def best_maker(self, taker_side: Side, limit: int | None) -> RefOrder | None:
        best: RefOrder | None = None
        for o in self.resting:  # arrival order: the first of equal prices wins
            if o.side == taker_side or not self.acceptable(taker_side, limit, o.price):
                continue
            if best is None:
                best = o
                continue
            if o.price < best.price if taker_side == Side.BUY else o.price > best.price:
                best = o
        return best

    def fill(self, cmd: NewOrder, maker: RefOrder, n: int, events: list[Event]) -> None:
        events.append(Trade(
            self.next_trade_id, maker.price, n, cmd.order_id, cmd.account, cmd.side,
            maker.order_id, maker.account, cmd.ts,
        ))
        self.next_trade_id += 1
        maker.remaining -= n
        if maker.remaining == 0:
            self.resting.remove(maker)
            self.finish(maker.order_id)
            events.append(Done(maker.order_id, maker.account, Status.FILLED, Reason.NONE, cmd.ts))

    def rest(self, cmd: NewOrder, qty: int) -> Rested:
        self.resting.append(RefOrder(cmd.order_id, cmd.account, cmd.side, cmd.price, qty))
        return Rested(cmd.order_id, cmd.account, cmd.side, cmd.price, qty, cmd.ts)

    def cancel(self, cmd: Cancel) -> list[Event]:
        if self.trading == TradingState.HALTED:
            return [CancelRejected(cmd.order_id, cmd.account, Reason.HALTED, cmd.ts)]
        for o in self.resting:
            if o.order_id == cmd.order_id and o.account == cmd.account:
                self.resting.remove(o)
                self.finish(o.order_id)
                return [Done(o.order_id, o.account, Status.CANCELED, Reason.NONE, cmd.ts)]
        return [CancelRejected(cmd.order_id, cmd.account, Reason.UNKNOWN_ORDER, cmd.ts)]

    def cancel_all(self, cmd: CancelAll) -> list[Event]:
        if self.trading == TradingState.HALTED:
            return [CancelRejected(0, cmd.account, Reason.HALTED, cmd.ts)]
        mine = sorted(o.order_id for o in self.resting if o.account == cmd.account)
        events: list[Event] = []
        for oid in mine:
            events.extend(self.cancel(Cancel(oid, cmd.account, cmd.ts)))
        return events
