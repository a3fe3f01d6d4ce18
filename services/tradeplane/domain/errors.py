"""The one root exception and its causes (httpx's ``HTTPError`` is the model).

Every exception tradeplane raises derives from :class:`TradeplaneError`, and most also
from one cause below, so a caller catches what it can act on — ``except Unavailable``
to retry, ``except InvalidInput`` to answer 400 — and never ``Exception``. Each module
keeps its own classes (``BusError``, ``AmountError``...) for callers that care which
adapter or rule failed; each adapter translates its library's errors into them at its
own boundary (``raise BusUnavailable(...) from exc``), so no library exception crosses
it. Classes that were ``ValueError`` before stay so as a second base: pydantic turns a
``ValueError`` raised by a validator into a validation error.

The domain is the innermost layer, so this module is importable from every layer (and
from the operator).
"""

from __future__ import annotations


class TradeplaneError(Exception):
    """Something tradeplane refused or could not do; the message says what and why."""


class InvalidInput(TradeplaneError):
    """A value, request or spec is not acceptable as given: retrying it unchanged fails
    the same way."""


class NotFound(TradeplaneError):
    """The account, key, pair, secret or object named does not exist."""


class Conflict(TradeplaneError):
    """The request collides with current state held by someone else: a name taken, a
    lease held, a writer fenced off by another writer."""


class Unavailable(TradeplaneError):
    """A system the operation needs (NATS, PostgreSQL, Redis, Vault, Kubernetes, a chain
    node, another tradeplane process) did not answer or refused for reasons of its own;
    the same call may succeed later."""


class InvariantViolation(TradeplaneError):
    """A rule that must always hold does not (the ledger does not balance, a stream is
    out of order): a defect or corrupted state, never retried blindly."""


class ConfigurationError(TradeplaneError):
    """Settings or secrets are missing or malformed: the process refuses to start."""
