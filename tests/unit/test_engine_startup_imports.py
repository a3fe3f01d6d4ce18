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


_GATEWAY_PROBE = """
import sys
import tradeplane.gateway.app, tradeplane.hedger.service, tradeplane.services
print(",".join(m for m in ("ccxt", "tradeplane.adapters.venues") if m in sys.modules))
"""


def test_ccxt_is_loaded_only_where_an_external_venue_is_configured() -> None:
    # ccxt is the optional extra ``venues``: the image does not carry it, so the gateway
    # and the hedger must start without it (a container test once found them not).
    done = subprocess.run([sys.executable, "-c", _GATEWAY_PROBE], capture_output=True,
                          text=True, env=dict(os.environ), timeout=120, check=True)

    assert done.stdout.strip() == ""
