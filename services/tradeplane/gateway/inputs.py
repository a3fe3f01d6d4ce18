"""The one parser of request values: every integer, decimal and free-form text a client
sends is turned into a typed, bounded value here, before anything else sees it.

Rules, for every entry point (query, form body, path, JSON body, WebSocket frame):
- digits are ASCII ``0-9`` only (``str.isdigit`` also takes superscripts, which ``int()``
  refuses, and ``int()`` silently takes Arabic-Indic and fullwidth digits);
- a value is matched whole (``re.fullmatch``; ``$`` would let a trailing newline through);
- an integer fits the column it is stored in (PostgreSQL ``bigint``), a decimal amount
  fits in integer units (10**-8) of that column;
- text reaching PostgreSQL carries no control character (PostgreSQL refuses NUL: that
  must be a 4xx here, never a 5xx there);
- an error message never echoes an unbounded input (:func:`tradeplane.gateway.errors.shown`).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Annotated

from fastapi import Path, Query
from pydantic import Field

from tradeplane.domain.money import MAX_UNITS, UNIT_DECIMALS
from tradeplane.gateway import errors

#: PostgreSQL ``bigint``: every id, time and amount column.
INT64_MAX = MAX_UNITS
#: The last millisecond of the year 9999: the latest time a client may name.
MAX_TIME_MS = 253_402_300_799_999
#: The largest decimal amount whose units (10**-8) fit a ``bigint`` column.
MAX_AMOUNT = Decimal(MAX_UNITS).scaleb(-UNIT_DECIMALS)

#: Text without control characters (no NUL, no line breaks), for pydantic ``pattern``
#: (its regex engine anchors ``$`` at the very end of the text, unlike ``re``).
PLAIN_TEXT = r"^[^\x00-\x1f\x7f]*$"
#: API keys as issued (URL-safe base64).
KEY_ID = r"^[A-Za-z0-9_\-]{1,128}$"
KEY_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,128}")
SYMBOL = r"^[A-Za-z0-9\-]{1,32}$"
#: An asset name (``BTC``, ``USDT``): letters and digits, as the pairs name them.
ASSET_RE = re.compile(r"[A-Z0-9]{1,20}")
#: Binance's client order id alphabet (newClientOrderId, origClientOrderId...).
CLIENT_ID_RE = re.compile(r"[a-zA-Z0-9\-_]{1,36}")
_ADDR = r"[^@\s\x00-\x1f\x7f]"
EMAIL_RE = re.compile(rf"{_ADDR}{{1,64}}@{_ADDR}{{1,252}}\.{_ADDR}{{1,63}}")

_DIGITS = re.compile(r"[0-9]{1,20}")
#: Binance's decimal format: ``^([0-9]{1,20})(\.[0-9]{1,20})?$``, ASCII only.
_DECIMAL = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,20})?")
_DECIMAL_RANGE = r"^([0-9]{1,20})(\.[0-9]{1,20})?$"

#: Integers of the admin and user JSON APIs that become a bigint (ids): in a path, a
#: query and a JSON body.
PathId = Annotated[int, Path(ge=1, le=INT64_MAX)]
QueryId = Annotated[int, Query(ge=1, le=INT64_MAX)]
BodyId = Annotated[int, Field(ge=1, le=INT64_MAX)]

def parse_int(raw: str, name: str, *, lo: int = 0, hi: int = INT64_MAX) -> int:
    """An integer parameter: ASCII digits only, within ``lo..hi``.

    Raises:
        ApiError: -1100 when it is not plain ASCII digits, -1100 naming the legal range
            when it is outside ``lo..hi``.
    """
    if not _DIGITS.fullmatch(raw):
        raise errors.illegal_chars(name)
    value = int(raw)
    if not lo <= value <= hi:
        raise errors.ApiError(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is "
                   f"'{lo}-{hi}'.")
    return value


def optional_int(
    params: dict[str, str], name: str, *, lo: int = 0, hi: int = INT64_MAX
) -> int | None:
    """An integer parameter (see :func:`parse_int`), None when absent or empty.

    Raises:
        ApiError: -1100 when malformed or out of range.
    """
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    return parse_int(raw, name, lo=lo, hi=hi)


def parse_amount(raw: str, name: str) -> Decimal:
    """A decimal parameter in Binance's format (ASCII, at most 20 digits on each side of
    the point), whose value fits a ``bigint`` column in units.

    Raises:
        ApiError: -1100 when malformed or too large.
    """
    if not _DECIMAL.fullmatch(raw):
        raise errors.ApiError(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is "
                   f"'{_DECIMAL_RANGE}'.")
    value = Decimal(raw)
    if value > MAX_AMOUNT:
        raise errors.ApiError(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is "
                   f"'0-{MAX_AMOUNT}'.")
    return value


def optional_amount(params: dict[str, str], name: str) -> Decimal | None:
    """A decimal parameter (see :func:`parse_amount`), None when absent or empty.

    Raises:
        ApiError: -1100 when malformed or too large.
    """
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    return parse_amount(raw, name)


def client_id(raw: str, name: str) -> str:
    """A client order id (``newClientOrderId``, ``origClientOrderId``...).

    Raises:
        ApiError: -1100 outside Binance's alphabet and length.
    """
    if not CLIENT_ID_RE.fullmatch(raw):
        raise errors.ApiError(
            -1100, f"Illegal characters found in parameter '{name}'; "
            "legal range is '^[a-zA-Z0-9-_]{1,36}$'."
        )
    return raw


def asset(raw: str, name: str) -> str:
    """An asset name, upper case (``btc`` is ``BTC``).

    Raises:
        ApiError: -1100 when it is not 1-20 ASCII letters and digits.
    """
    upper = raw.upper()
    if not raw.isascii() or not ASSET_RE.fullmatch(upper):
        raise errors.ApiError(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is "
                   "'^[A-Za-z0-9]{1,20}$'.")
    return upper


def optional_asset(params: dict[str, str], name: str) -> str | None:
    """An asset parameter (see :func:`asset`), None when absent or empty.

    Raises:
        ApiError: -1100 when malformed.
    """
    raw = params.get(name)
    if not raw:
        return None
    return asset(raw, name)


def optional_client_id(params: dict[str, str], name: str) -> str | None:
    """A client order id parameter, None when absent or empty.

    Raises:
        ApiError: -1100 outside Binance's alphabet and length.
    """
    raw = params.get(name)
    if not raw:
        return None
    return client_id(raw, name)


#: ``symbols=["BTCUSDT","ETHUSDT"]``: at most this many names, and this many characters.
MAX_SYMBOLS = 100
_MAX_SYMBOLS_TEXT = 4096


def symbol_list(raw: str, name: str = "symbols") -> list[str]:
    """Binance's ``symbols`` parameter: a JSON array of 1 to 100 symbol names.

    Raises:
        ApiError: -1100 for anything else (too long, not JSON, not a list of strings).
    """
    if len(raw) > _MAX_SYMBOLS_TEXT:
        raise errors.bad_param(name, raw)
    try:
        names = json.loads(raw)
    except (ValueError, RecursionError):
        raise errors.bad_param(name, raw) from None
    if (not isinstance(names, list) or not 1 <= len(names) <= MAX_SYMBOLS
            or not all(isinstance(n, str) for n in names)):
        raise errors.bad_param(name, raw)
    return names
