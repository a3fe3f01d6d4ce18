"""User-data-stream documents written by more than one service (settlement's reports,
Convert's acceptances): one definition each, encoded as Binance sends them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from tradeplane.domain.money import fmt_units

_encoder = msgspec.json.Encoder()


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
