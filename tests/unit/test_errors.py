"""One root exception: every exception class tradeplane defines derives from
TradeplaneError, and the classes callers branch on sit under the right cause."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import tradeplane
import tradeplane_operator
from tradeplane.adapters import accounts_db, bus, cache, db, listenkeys, vault
from tradeplane.domain import errors
from tradeplane.domain.errors import (
    ConfigurationError,
    Conflict,
    InvalidInput,
    InvariantViolation,
    NotFound,
    TradeplaneError,
    Unavailable,
)
from tradeplane.usecases import errors as uc

#: Deliberately outside the hierarchy, with the reason.
EXEMPT = {
    # A BaseException like KeyboardInterrupt: Ctrl-C must unwind `tradeplane up` past
    # every handler, ours included.
    "tradeplane.platform.local.StopRequestedError",
}


def _modules(pkg: ModuleType) -> list[ModuleType]:
    out = [pkg]
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        out.append(importlib.import_module(info.name))
    return out


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for pkg in (tradeplane, tradeplane_operator):
        for mod in _modules(pkg):
            for _, obj in inspect.getmembers(mod, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__ == mod.__name__:
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_exception_class_derives_from_the_root() -> None:
    found = _exception_classes()
    assert len(found) > 40  # the walk did find them
    # A private class (``_Refused``) is a module's internal short cut, caught in the
    # module that raises it: no caller ever sees it.
    outside = sorted(
        name for name, cls in found.items()
        if name not in EXEMPT and not cls.__name__.startswith("_")
        and not issubclass(cls, TradeplaneError)
    )
    assert outside == []


def test_the_exemptions_still_exist() -> None:
    assert set(_exception_classes()) >= EXEMPT


@pytest.mark.parametrize(("cls", "cause"), [
    (bus.BusUnavailable, Unavailable),
    (bus.Fenced, Conflict),
    (bus.LeaseTaken, Conflict),
    (db.DatabaseUnavailable, Unavailable),
    (db.UnknownAccount, NotFound),
    (accounts_db.NameTaken, Conflict),
    (accounts_db.EmailTaken, Conflict),
    (cache.CacheError, Unavailable),
    (listenkeys.ListenKeyError, Unavailable),
    (vault.VaultUnavailable, Unavailable),
    (vault.VaultNotFoundError, NotFound),
    (vault.VaultAuthError, ConfigurationError),
    (uc.NotFound, NotFound),
    (uc.Invalid, InvalidInput),
    (uc.Conflict, Conflict),
    (uc.Unavailable, Unavailable),
])
def test_classes_callers_branch_on_sit_under_their_cause(
    cls: type[Exception], cause: type[Exception]
) -> None:
    assert issubclass(cls, cause)


def test_a_refusal_is_never_mistaken_for_an_outage() -> None:
    # ``except Unavailable: retry`` must not retry a fenced write or a taken name.
    for cls in (bus.Fenced, bus.LeaseTaken, db.UnknownAccount, accounts_db.NameTaken,
                vault.VaultAuthError, vault.VaultNotFoundError):
        assert not issubclass(cls, Unavailable), cls
    # ... and an adapter's family still catches all of its own.
    assert issubclass(bus.BusUnavailable, bus.BusError)
    assert issubclass(db.DatabaseUnavailable, db.DatabaseError)


def test_value_errors_stay_value_errors() -> None:
    # pydantic turns a ValueError raised in a validator into a validation error.
    from tradeplane.domain.money import AmountError
    from tradeplane.domain.pairs import FilterError, PairConfigError

    for cls in (AmountError, FilterError, PairConfigError):
        assert issubclass(cls, ValueError)
        assert issubclass(cls, InvalidInput)


def test_the_causes_are_few_and_share_the_root() -> None:
    causes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
              if c.__module__ == errors.__name__ and c is not TradeplaneError]
    assert sorted(c.__name__ for c in causes) == sorted(
        c.__name__ for c in (InvalidInput, NotFound, Conflict, Unavailable,
                             InvariantViolation, ConfigurationError)
    )
    assert all(c.__bases__ == (TradeplaneError,) for c in causes)
