"""User-data-stream listen keys as the gateway and their store agree on them: their form
and what a live one grants. Pure: the store (``adapters/listenkeys.py``) makes and keeps
them; the gateway (``gateway/userstream.py``) checks a client's text against this form
before it asks the store anything."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

#: Characters in a listen key (ASCII letters and digits).
LISTEN_KEY_LENGTH: Final = 60
_LISTEN_KEY_RE: Final = re.compile(rf"[A-Za-z0-9]{{{LISTEN_KEY_LENGTH}}}")


def is_listen_key(text: str) -> bool:
    """Whether ``text`` has a listen key's form."""
    return _LISTEN_KEY_RE.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class ListenKeyGrant:
    """A live listen key: whose it is and how long it has left."""

    listen_key: str
    account: int
    api_key: str
    ttl_ms: int
