"""The gateway's side of the order path: batched holds in PostgreSQL, batched commands
on each symbol's JetStream stream (with the trace context of the requests, see
:mod:`tradeplane.msgtrace`)."""

from __future__ import annotations

import hashlib

from opentelemetry.trace import SpanContext

from tradeplane import msgtrace
from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus
from tradeplane.domain import codec
from tradeplane.domain.model import Command
from tradeplane.gateway.batching import Batcher


class OrderPath:
    def __init__(self, pool: db.Pool, bus: Bus, *, db_workers: int = 4,
                 publish_workers: int = 2) -> None:
        self.pool = pool
        self.bus = bus
        self._publish_workers = publish_workers
        # One statement over arrays: a request that fails it must fail alone.
        self._holds: Batcher[db.OrderRequest, tuple[int | None, db.PlaceResult]] = Batcher(
            self._place, workers=db_workers, isolate=True)
        self._publishers: dict[str, Batcher[tuple[Command, SpanContext | None], int]] = {}

    async def place(self, req: db.OrderRequest) -> tuple[int | None, db.PlaceResult]:
        """Lock funds and create the order (batched with concurrent requests)."""
        return await self._holds.submit(req)

    async def send(self, symbol: str, cmd: Command) -> int:
        """Append ``cmd`` to the symbol's command stream; returns the stored message's
        sequence once JetStream has acknowledged it.

        Raises:
            BusError: not (provably) stored.
        """
        pub = self._publishers.get(symbol)
        if pub is None:
            pub = Batcher(lambda items: self._publish(symbol, items),
                          workers=self._publish_workers, max_batch=512)
            self._publishers[symbol] = pub
        # Taken here, in the request's task: the batch is published from a worker task.
        return await pub.submit((cmd, msgtrace.sampled_context()))

    async def _place(
        self, reqs: list[db.OrderRequest]
    ) -> list[tuple[int | None, db.PlaceResult]]:
        return await db.place_orders(self.pool, reqs)

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
        for pub in self._publishers.values():
            await pub.close()
