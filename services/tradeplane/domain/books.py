"""Which order book runs: the compiled one (``_cbook``, built from ``_cbook.pyx`` when the
package is installed) or the pure-Python one (``book``), which is the specification and
the fallback when no compiler was there to build the other.

Both take the same commands and give the same events, snapshots and state hashes (the
book tests run on both, and a differential test feeds them the same random streams), so
a snapshot written by one restores into the other.

``select("auto")`` (the default everywhere) is the compiled book when it was built;
``select("python")`` forces the fallback (the ``TRADEPLANE_BOOK`` setting of the engine);
``select("compiled")`` refuses to run without it. This module only answers: the engine
logs which book it runs, and why when it is the fallback.
"""

from __future__ import annotations

from typing import Final, Literal, cast

from tradeplane.domain import book as _pure

__all__ = ["COMPILED", "IMPLEMENTATIONS", "UNAVAILABLE", "BookChoice", "OrderBook", "select"]

BookChoice = Literal["auto", "compiled", "python"]
IMPLEMENTATIONS: Final = ("compiled", "python")

OrderBook = _pure.OrderBook
"""The type both implementations share (the compiled one is checked against it by the
tests, not by inheritance)."""

COMPILED: type[_pure.OrderBook] | None
UNAVAILABLE: str
"""Why the compiled book cannot be used ("" when it can)."""

try:
    from tradeplane.domain import _cbook
except ImportError as exc:  # not built: no compiler, no Cython or no headers at install
    COMPILED = None
    UNAVAILABLE = f"the compiled order book is not built ({exc})"
else:
    # Same public interface as the pure-Python book (see _cbook.pyi), not a subclass.
    COMPILED = cast("type[_pure.OrderBook]", _cbook.OrderBook)
    UNAVAILABLE = ""


def select(choice: BookChoice = "auto") -> type[_pure.OrderBook]:
    """The book class for ``choice``.

    Raises:
        RuntimeError: ``choice`` is "compiled" and the compiled book is not built.
        ValueError: ``choice`` is none of "auto", "compiled", "python".
    """
    if choice == "python":
        return _pure.OrderBook
    if choice == "compiled":
        if COMPILED is None:
            raise RuntimeError(UNAVAILABLE)
        return COMPILED
    if choice == "auto":
        return COMPILED if COMPILED is not None else _pure.OrderBook
    raise ValueError(f"unknown order book implementation {choice!r}")


def implementation(cls: type[_pure.OrderBook]) -> str:
    """ "compiled" or "python": which implementation ``cls`` is."""
    return "compiled" if COMPILED is not None and cls is COMPILED else "python"
