"""Which book runs, and the fallback: an install without a compiler still works.

``domain.books`` picks the compiled book when it was built and the pure-Python one
otherwise (or when forced); the engine logs which. ``setup.py`` builds the extension at
install and, when it cannot (no compiler, no Cython), says so and installs without it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
from tests.support.memory_bus import MemoryBus

from tradeplane.domain import books
from tradeplane.domain.book import OrderBook as PurePythonBook
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.engine.service import Engine

ROOT = Path(__file__).resolve().parents[2]
RULES = DEMO_PAIRS[0]
FALLBACK_LINE = "the compiled order book was not built"


def test_auto_runs_the_compiled_book_when_it_is_built() -> None:
    if books.COMPILED is None:
        if not os.environ.get("TRADEPLANE_NO_EXTENSION"):
            pytest.fail(books.UNAVAILABLE)
        pytest.skip(books.UNAVAILABLE)
    assert books.select() is books.COMPILED
    assert books.select("compiled") is books.COMPILED
    assert books.implementation(books.select()) == "compiled"
    assert books.UNAVAILABLE == ""


def test_python_forces_the_pure_python_book() -> None:
    assert books.select("python") is PurePythonBook
    assert books.implementation(PurePythonBook) == "python"


def test_without_the_compiled_book_auto_falls_back_and_compiled_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(books, "COMPILED", None)
    monkeypatch.setattr(books, "UNAVAILABLE", "the compiled order book is not built (test)")
    assert books.select() is PurePythonBook
    with pytest.raises(RuntimeError, match="not built"):
        books.select("compiled")
    with pytest.raises(ValueError):
        books.select("fast")  # type: ignore[arg-type]


def test_the_engine_logs_the_fallback_and_runs_the_pure_python_book(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(books, "COMPILED", None)
    monkeypatch.setattr(books, "UNAVAILABLE", "the compiled order book is not built (test)")
    with caplog.at_level(logging.INFO, logger="tradeplane.engine"):
        engine = Engine(MemoryBus(), RULES)
    assert type(engine.book) is PurePythonBook
    assert any(r.levelno == logging.WARNING and "pure Python, the fallback" in r.getMessage()
               and "not built (test)" in r.getMessage() for r in caplog.records)


def test_the_engine_runs_the_book_its_setting_names(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tradeplane.engine"):
        forced = Engine(MemoryBus(), RULES, book="python")
    assert type(forced.book) is PurePythonBook
    assert "order book: pure Python (TRADEPLANE_BOOK=python)" in caplog.messages
    if books.COMPILED is not None:
        with caplog.at_level(logging.INFO, logger="tradeplane.engine"):
            auto = Engine(MemoryBus(), RULES)
        assert type(auto.book) is books.COMPILED
        assert "order book: compiled" in caplog.messages


def test_a_process_without_the_extension_imports_and_runs_the_pure_python_book() -> None:
    # As after an install without a compiler: the extension module cannot be imported.
    script = textwrap.dedent("""
        import sys
        sys.modules["tradeplane.domain._cbook"] = None  # import fails, as when not built
        from tradeplane.domain import books
        from tradeplane.domain.book import OrderBook
        from tradeplane.bench.book import run_book_bench
        assert books.COMPILED is None and "not built" in books.UNAVAILABLE
        assert books.select() is OrderBook
        assert run_book_bench(ops=2000, seed=3)["trades"] > 0
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def _setup_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tradeplane_setup", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: setup() is not called
    return module


def _build(tmp_path: Path, cc: str | None) -> subprocess.CompletedProcess[str]:
    """setup.py's build_ext on a one-function C extension, with compiler ``cc``."""
    (tmp_path / "probe.c").write_text(textwrap.dedent("""
        #include <Python.h>
        static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "probe", NULL, -1, NULL};
        PyMODINIT_FUNC PyInit_probe(void) { return PyModule_Create(&def); }
    """))
    script = textwrap.dedent(f"""
        import importlib.util
        from setuptools import Distribution, Extension
        spec = importlib.util.spec_from_file_location("tp_setup", {str(ROOT / "setup.py")!r})
        setup = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(setup)
        dist = Distribution(dict(
            name="probe", ext_modules=[Extension("probe", [{str(tmp_path / "probe.c")!r}])],
            cmdclass={{"build_ext": setup.OptionalBuildExt}},
            script_args=["build_ext", "--build-lib", {str(tmp_path / "lib")!r},
                         "--build-temp", {str(tmp_path / "tmp")!r}],
        ))
        dist.parse_command_line()
        dist.run_commands()
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "LDSHARED")}
    if cc is not None:
        env["CC"] = cc
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300, check=False)


def test_an_install_without_a_compiler_builds_no_extension_and_says_so(tmp_path: Path) -> None:
    done = _build(tmp_path, cc=str(tmp_path / "no-such-compiler"))
    assert done.returncode == 0, done.stderr
    assert FALLBACK_LINE in done.stderr
    assert "pure-Python book will be used" in done.stderr
    assert not list(tmp_path.glob("lib/probe*"))


def test_the_same_build_with_the_compiler_builds_the_extension(tmp_path: Path) -> None:
    done = _build(tmp_path, cc=None)
    assert done.returncode == 0, done.stderr
    assert FALLBACK_LINE not in done.stderr
    assert list((tmp_path / "lib").glob("probe*.so"))


def test_without_cython_setup_builds_no_extension_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    setup = _setup_module()
    monkeypatch.setitem(sys.modules, "Cython.Build", None)
    assert setup._extensions() == []
    assert "Cython is not installed" in capsys.readouterr().err
