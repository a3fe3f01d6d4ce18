"""The admin health view's reads (``usecases.health.HealthReads``) over what the platform
already keeps: JetStream (command streams, the EVENTS stream, stream depths), PostgreSQL
(settlement's cursor, the ledger verdict) and Redis (market data's position)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus
from tradeplane.adapters.cache import MarketCache
from tradeplane.domain.codec import DecodeError, decode_batch
from tradeplane.domain.errors import Unavailable
from tradeplane.usecases.health import StreamDepth, Verdict


class PlatformHealthReads:
    def __init__(self, bus: Bus, pool: db.Pool, cache: MarketCache) -> None:
        self.bus = bus
        self.pool = pool
        self.cache = cache

    async def command_seq(self, symbol: str) -> int:
        return await self.bus.last_command_seq(symbol)

    async def engine_seq(self, symbol: str) -> int:
        last = await self.bus.last_event(symbol)
        if last is None:
            return 0  # the engine has not matched a command yet
        try:
            return int(decode_batch(last.data).last_seq)
        except DecodeError as exc:
            raise Unavailable(f"last event batch of {symbol} unreadable: {exc}") from exc

    async def settled(self) -> Mapping[str, int]:
        return await db.settlement_cursors(self.pool)

    async def events_last_seq(self) -> int:
        return await self.bus.events_last_seq()

    async def marketdata_position(self) -> int | None:
        return await self.cache.position()

    async def verdict(self) -> Verdict | None:
        row = await db.ledger_verdict(self.pool)
        if row is None:
            return None
        checked_ms, ok, problems = row
        return Verdict(checked_ms, ok, tuple(str(p) for p in json.loads(problems)))

    async def streams(self) -> list[StreamDepth]:
        return [StreamDepth(*s) for s in await self.bus.stream_depths()]
