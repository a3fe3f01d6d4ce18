"""Shapes of free-form inputs that reach the database (PostgreSQL refuses NUL in text: an
input that could carry one must be refused with a 4xx before, never fail as a 5xx)."""

from __future__ import annotations

import re

from tradeplane.gateway import errors

#: Text without control characters (no NUL, no line breaks).
PLAIN_TEXT = r"^[^\x00-\x1f\x7f]*$"
#: API keys as issued (URL-safe base64).
KEY_ID = r"^[A-Za-z0-9_\-]{1,128}$"
KEY_ID_RE = re.compile(KEY_ID)
SYMBOL = r"^[A-Za-z0-9\-]{1,32}$"
_ADDR = r"[^@\s\x00-\x1f\x7f]"
EMAIL_RE = re.compile(rf"^{_ADDR}{{1,64}}@{_ADDR}{{1,252}}\.{_ADDR}{{1,63}}$")


def optional_int(params: dict[str, str], name: str) -> int | None:
    """A non-negative integer parameter, None when absent or empty.

    Raises:
        ApiError: -1100 when it is not plain digits (at most 20).
    """
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise errors.illegal_chars(name)
    return int(raw)
