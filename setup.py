"""Builds the compiled order book (``tradeplane/domain/_cbook.pyx``) when the package is
installed; everything else is in pyproject.toml.

The extension is optional: without Cython, a C compiler or the Python headers the build
prints why and goes on, and ``tradeplane.domain.books`` falls back to the pure-Python book
(``tradeplane/domain/book.py``), which the engine then logs at start.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

PYX = "services/tradeplane/domain/_cbook.pyx"
FALLBACK = ("tradeplane: the compiled order book was not built ({}); the pure-Python book "
            "will be used")


def _say(msg: str) -> None:
    # stderr, so pip shows it (with -v) and a log of the install keeps it
    print(msg, file=sys.stderr, flush=True)


class OptionalBuildExt(build_ext):
    """build_ext that reports a failed compilation instead of failing the install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # no compiler at all (setuptools raises before compiling)
            _say(FALLBACK.format(f"{type(e).__name__}: {e}"))

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:  # the compiler or the headers are missing or failed
            _say(FALLBACK.format(f"{type(e).__name__}: {e}"))


def _extensions() -> list[Extension]:
    if os.environ.get("TRADEPLANE_NO_EXTENSION"):
        _say(FALLBACK.format("TRADEPLANE_NO_EXTENSION is set"))
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        _say(FALLBACK.format("Cython is not installed"))
        return []
    if not os.path.exists(PYX):
        _say(FALLBACK.format(f"{PYX} is missing"))
        return []
    ext = Extension("tradeplane.domain._cbook", [PYX], extra_compile_args=["-O3"])
    try:
        return list(cythonize([ext], language_level=3, quiet=True))
    except Exception as e:  # Cython could not translate it: install without it, loudly
        _say(FALLBACK.format(f"Cython failed: {type(e).__name__}: {e}"))
        return []


if __name__ == "__main__":  # (setuptools' build backend runs this file as __main__)
    setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
