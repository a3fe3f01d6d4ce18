"""What every gateway route needs, built once in the gateway's main and kept on app.state."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from tradeplane.adapters.bus import Bus
from tradeplane.adapters.cache import MarketCache
from tradeplane.adapters.db import Pool
from tradeplane.config import Settings
from tradeplane.domain.pairs import PairRules
from tradeplane.gateway.errors import bad_symbol
from tradeplane.gateway.references import ReferencePrices


@dataclass
class GatewayContext:
    settings: Settings
    pool: Pool
    bus: Bus
    cache: MarketCache
    references: ReferencePrices
    pairs: dict[str, PairRules] = field(default_factory=dict)

    def pair(self, symbol: str | None) -> PairRules:
        """Raises ApiError -1121 for an unknown symbol."""
        if not symbol:
            raise bad_symbol()
        try:
            return self.pairs[symbol.upper()]
        except KeyError:
            raise bad_symbol() from None


def ctx(request: Request) -> GatewayContext:
    c = request.app.state.ctx
    assert isinstance(c, GatewayContext)
    return c
