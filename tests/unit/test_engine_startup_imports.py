"""An engine restarted after a kill is back only once Python has imported what it runs:
``tradeplane matching`` (and settlement, market data) must not load the gateway's web
stack, which was most of an engine's restart (``tradeplane bench recovery``: 1.4 of 2.1 s
of imports)."""

from __future__ import annotations

import os
import subprocess
import sys

_PROBE = """
import sys
import tradeplane.cli, tradeplane.runner, tradeplane.services
print(",".join(sorted(m for m in ("fastapi", "starlette", "uvicorn", "ccxt",
                                  "tradeplane.gateway.app") if m in sys.modules)))
"""


def test_the_services_module_loads_no_web_stack_for_an_engine() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120, check=True)

    assert done.stdout.strip() == ""
