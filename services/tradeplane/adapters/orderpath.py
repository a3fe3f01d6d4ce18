"""The order path's adapter: batched holds in PostgreSQL, batched commands on each
symbol's JetStream stream (with the trace context of the requests, see
:mod:`tradeplane.msgtrace`). :class:`OrderPath` implements the order use cases' store,
history and command-log ports (:mod:`tradeplane.usecases.orders`); one per gateway
process, built by its composition root (``gateway.app.compose``), so the batches gather
that process's concurrent requests."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

from opentelemetry.trace import SpanContext

from tradeplane import msgtrace
from tradeplane.adapters import db
from tradeplane.adapters.batching import Batcher, BatcherFailed
from tradeplane.adapters.bus import Bus, BusError
from tradeplane.domain import codec
from tradeplane.domain.model import Command
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


class OrderPath:
    """``on_failure(name, exc)`` is told when a batcher's worker dies (its requests fail
    with ``BatcherFailed``; the gateway's composition root stops the gateway)."""

    def __init__(self, pool: db.Pool, bus: Bus, *, db_workers: int = 4,
                 list_workers: int = 2, publish_workers: int = 2,
                 on_failure: Callable[[str, BaseException], None] | None = None) -> None:
        self.pool = pool
        self.bus = bus
        self._publish_workers = publish_workers
        self._on_failure = on_failure
        # One statement over arrays: a request that fails it must fail alone.
        # Each request with its trace context (taken in the request's task), stored with it.
        self._holds: Batcher[tuple[OrderRequest, str | None],
                             tuple[int | None, PlaceResult]] = Batcher(
            self._place, workers=db_workers, isolate=True, name="order-holds",
            on_failure=on_failure)
        # OCO lists alike, in a statement of their own (each list all or nothing).
        self._list_holds: Batcher[ListRequest, tuple[int | None, list[int], PlaceResult]] = (
            Batcher(self._place_lists, workers=list_workers, isolate=True,
                    name="order-list-holds", on_failure=on_failure))
        self._publishers: dict[str, Batcher[tuple[Command, SpanContext | None], int]] = {}

    async def place(self, req: OrderRequest) -> tuple[int | None, PlaceResult]:
        """Lock funds and create the order (batched with concurrent requests)."""
        return await self._holds.submit((req, msgtrace.stored()))

    async def send(self, symbol: str, cmd: Command) -> int:
        """Append ``cmd`` to the symbol's command stream; returns the stored message's
        sequence once JetStream has acknowledged it.

        Raises:
            Unavailable: not (provably) stored.
        """
        pub = self._publishers.get(symbol)
        if pub is None:
            pub = Batcher(lambda items: self._publish(symbol, items),
                          workers=self._publish_workers, max_batch=512,
                          name=f"commands-{symbol}", on_failure=self._on_failure)
            self._publishers[symbol] = pub
        try:
            # Taken here, in the request's task: the batch is published from a worker task.
            return await pub.submit((cmd, msgtrace.sampled_context()))
        except (BusError, BatcherFailed) as exc:
            raise Unavailable(str(exc)) from exc

    async def place_list(self, req: ListRequest) -> tuple[int | None, list[int], PlaceResult]:
        """Lock an OCO list's one hold and create it, batched with concurrent lists (one
        round trip and one commit for the batch; each list all or nothing on its own)."""
        return await self._list_holds.submit(req)

    async def order(self, account: int, symbol: str, order_id: int | None,
                    client_order_id: str | None) -> OrderRow | None:
        return await db.get_order(self.pool, account, symbol, order_id, client_order_id)

    async def open_orders(self, account: int, symbol: str | None) -> Sequence[OrderRow]:
        return await db.open_orders(self.pool, account, symbol)

    async def all_orders(self, account: int, symbol: str,
                         window: Window) -> Sequence[OrderRow]:
        return await db.all_orders(self.pool, account, symbol, window.from_id,
                                   window.start_ms, window.end_ms, window.limit)

    async def my_trades(self, account: int, symbol: str, order_id: int | None,
                        window: Window) -> Sequence[TradeRow]:
        return await db.my_trades(self.pool, account, symbol, order_id, window.from_id,
                                  window.start_ms, window.end_ms, window.limit)

    async def open_order_lists(self, account: int) -> Sequence[ListRow]:
        return await db.open_order_lists(self.pool, account)

    async def balances(self, account: int) -> Sequence[BalanceRow]:
        return [BalanceRow(a, free, locked)
                for a, free, locked in await db.balances(self.pool, account)]

    async def public_trades(self, symbol: str, from_id: int | None,
                            limit: int) -> Sequence[TradeRow]:
        rows = await db.recent_public_trades(self.pool, symbol, from_id, limit)
        return [TradeRow(r["symbol"], r["trade_id"], r["price"], r["qty"], r["quote_qty"],
                         r["buyer_order"], r["seller_order"], r["buyer_account"],
                         r["seller_account"], r["buyer_is_maker"], r["buyer_fee"],
                         r["seller_fee"], r["ts"]) for r in rows]

    async def rename(self, order_id: int, old_client_id: str, new_client_id: str) -> bool:
        return await db.rename_order(self.pool, order_id, old_client_id, new_client_id)

    async def order_list(self, account: int, list_id: int | None,
                         list_client_id: str | None, symbol: str | None = None) -> ListRow | None:
        return await db.get_order_list(self.pool, account, list_id, list_client_id, symbol)

    async def list_orders(self, list_ids: Sequence[int]) -> Mapping[int, Sequence[OrderRow]]:
        return await db.list_orders(self.pool, list_ids)

    async def trades(self, symbol: str, order_id: int) -> Sequence[TradeRow]:
        return await db.order_trades(self.pool, symbol, order_id)

    async def _place(
        self, items: list[tuple[OrderRequest, str | None]]
    ) -> list[tuple[int | None, PlaceResult]]:
        return await db.place_orders(self.pool, [req for req, _ in items],
                                     [tp for _, tp in items])

    async def _place_lists(
        self, reqs: list[ListRequest]
    ) -> list[tuple[int | None, list[int], PlaceResult]]:
        return await db.place_order_lists(self.pool, reqs)

    async def _publish(
        self, symbol: str, items: list[tuple[Command, SpanContext | None]]
    ) -> list[int]:
        data = codec.encode([cmd for cmd, _ in items])
        # The message id is the content's hash: a retry of this very batch is dropped by
        # JetStream; different batches never collide (they carry distinct order ids/times).
        msg_id = "b" + hashlib.blake2b(data, digest_size=16).hexdigest()
        traced = [sc for _, sc in items if sc is not None]
        headers = msgtrace.outgoing(traced) if traced else None
        seq = await self.bus.publish_command(symbol, data, msg_id, headers)
        return [seq] * len(items)

    async def close(self) -> None:
        await self._holds.close()
        await self._list_holds.close()
        for pub in self._publishers.values():
            await pub.close()
