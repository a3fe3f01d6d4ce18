"""Process plumbing shared by every service: signals to a stop event, then a clean exit."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from tradeplane.config import Settings
from tradeplane.observability import setup

if TYPE_CHECKING:
    from tradeplane.adapters.vault import VaultSession


def run_service(
    name: str, settings: Settings, body: Callable[[asyncio.Event], Awaitable[None]],
    *, metrics: bool = True, vault: VaultSession | None = None,
) -> int:
    """Run ``body(stop)`` until it returns; SIGINT/SIGTERM set ``stop``. With ``vault``
    (where the secrets came from), its token is kept alive meanwhile."""
    setup(name, settings.log_level, settings.otlp_endpoint,
          settings.metrics_port if metrics else 0, settings.metrics_host)

    async def main() -> None:
        # Long-lived objects (app, routes, pools, books) leave the collector's view, and
        # young-generation collections run less often: fewer pauses on the hot path.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        renewal = asyncio.create_task(vault.keep_alive(stop)) if vault is not None else None
        try:
            await body(stop)
        finally:
            if renewal is not None:
                renewal.cancel()

    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        pass
    asyncio.run(main())
    return 0
