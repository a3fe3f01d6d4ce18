"""Exact money: every amount is an integer number of *units* (10**-8 of an asset).

Decimal appears only at the edges (parsing API input, formatting API output).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from tradeplane.domain.errors import InvalidInput

UNIT_DECIMALS = 8
UNITS_PER_COIN = 10**UNIT_DECIMALS
#: Binance's decimal format, ASCII digits only; match it whole (``fullmatch``).
PLAIN_DECIMAL = re.compile(r"([0-9]{1,20})(\.[0-9]{1,20})?")
#: Every amount is stored in a PostgreSQL ``bigint``: the most units an amount can have.
MAX_UNITS = 2**63 - 1


class AmountError(InvalidInput, ValueError):
    """An amount could not be parsed or is not representable in units."""


def parse_decimal(text: str) -> Decimal:
    """Parse a decimal string as sent by clients.

    Raises:
        AmountError: not a finite, non-negative decimal.
    """
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError) as exc:
        raise AmountError(f"not a decimal: {text!r}") from exc
    if not value.is_finite() or value < 0:
        raise AmountError(f"not a finite non-negative decimal: {text!r}")
    return value


def plain_to_units(text: str) -> int:
    """Units from a plain decimal string as Binance accepts it (no sign, no exponent).

    Raises:
        AmountError: not a plain decimal, more than 8 decimals, or more units than a
            ``bigint`` holds.
    """
    if not PLAIN_DECIMAL.fullmatch(text):
        raise AmountError(f"not a plain decimal: {text[:64]!r}")
    units = to_units(text)
    if units > MAX_UNITS:
        raise AmountError(f"too large: {text[:64]!r}")
    return units


def to_units(value: Decimal | str) -> int:
    """Convert a decimal amount to integer units, exactly.

    Raises:
        AmountError: the amount has more than 8 decimals or is malformed.
    """
    dec = parse_decimal(value) if isinstance(value, str) else value
    scaled = dec.scaleb(UNIT_DECIMALS)
    if scaled != scaled.to_integral_value():
        raise AmountError(f"more than {UNIT_DECIMALS} decimals: {value}")
    return int(scaled)


def fmt_units(units: int) -> str:
    """Format units as Binance does: a plain decimal string with 8 decimals."""
    sign = "-" if units < 0 else ""
    units = abs(units)
    return f"{sign}{units // UNITS_PER_COIN}.{units % UNITS_PER_COIN:08d}"
