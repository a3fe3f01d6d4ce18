"""Debian's Chromium for the browser tests (driven by Playwright, never downloaded)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def chromium() -> str:
    """Debian's chromium; the test fails (it is not skipped) when it is missing."""
    found = shutil.which("chromium") or next(
        (p for p in ("/usr/bin/chromium", "/usr/lib/chromium/chromium") if Path(p).exists()),
        None)
    if found is None:
        pytest.fail("chromium is not installed (not on PATH nor in /usr/bin): install "
                    "Debian's 'chromium' package: apt-get install -y --no-install-recommends "
                    "chromium (bash .ci/run does)")
    return found
