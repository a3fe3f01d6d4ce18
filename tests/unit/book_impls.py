"""Both order books under one test suite.

A book test module imports ``book_impl`` (an autouse, module-scoped fixture): every test
in it then runs once per implementation, with the module's ``OrderBook`` (and
``test_book``'s, whose helpers the other modules share) bound to that implementation.

The compiled book is part of every install that had a compiler; when it is missing its
tests fail, saying so, unless ``TRADEPLANE_NO_EXTENSION`` is set (an install made
without it on purpose), where they are skipped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from tradeplane.domain import books
from tradeplane.domain.book import OrderBook

IMPLEMENTATIONS = list(books.IMPLEMENTATIONS)


def book_class(name: str) -> type[OrderBook]:
    """The implementation ``name`` ("python" or "compiled"); fails (or skips, see the
    module docstring) when the compiled one is asked for and not built."""
    if name == "compiled" and books.COMPILED is None:
        if os.environ.get("TRADEPLANE_NO_EXTENSION"):
            pytest.skip(f"TRADEPLANE_NO_EXTENSION is set: {books.UNAVAILABLE}")
        pytest.fail(f"{books.UNAVAILABLE}; build it with `pip install -e .` (needs a C "
                    "compiler and the Python headers)")
    return books.select("compiled" if name == "compiled" else "python")


@pytest.fixture(scope="module", params=IMPLEMENTATIONS, autouse=True)
def book_impl(request: pytest.FixtureRequest) -> Iterator[type[OrderBook]]:
    cls = book_class(request.param)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(request.module, "OrderBook", cls)
        shared = sys.modules.get("test_book")
        if shared is not None and shared is not request.module:
            mp.setattr(shared, "OrderBook", cls)
        yield cls
