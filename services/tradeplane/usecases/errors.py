"""The use cases' refusals: one root, a few meaningful causes. Entry points translate them
(the admin API into its error codes, the CLI into a message and exit code 2)."""

from __future__ import annotations

from tradeplane.domain import errors


class UseCaseError(errors.TradeplaneError):
    """A use case refused or could not complete."""


class NotFound(UseCaseError, errors.NotFound):
    """The account, key, pair or admin named does not exist."""


class Invalid(UseCaseError, errors.InvalidInput):
    """The request is not acceptable as given (the message says why)."""


class NotRequired(Invalid):
    """A parameter was given that this request must not carry (``field`` names it)."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field} sent when not required")
        self.field = field


class Conflict(UseCaseError, errors.Conflict):
    """The name is taken."""


class Unavailable(UseCaseError, errors.Unavailable):
    """A system the change must reach (the engine's command log, Kubernetes) did not take
    it; nothing was recorded unless the message says otherwise."""


class SecretUnreadable(UseCaseError):
    """A stored secret does not decrypt with the configured key (a wrong key, or the
    stored value was tampered with)."""
