"""Real tradeplane processes for end-to-end tests (``python -m tradeplane.cli ...``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tradeplane.config import Settings


def service_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "TRADEPLANE_DEV_MODE": "1",
        "TRADEPLANE_NATS_URL": settings.nats_url,
        "TRADEPLANE_DATABASE_URL": settings.database_url,
        "TRADEPLANE_REDIS_URL": settings.redis_url,
        "TRADEPLANE_HTTP_PORT": str(settings.http_port),
        "TRADEPLANE_SNAPSHOT_EVERY": str(settings.snapshot_every),
        "TRADEPLANE_SECRET_KEY": settings.secret_key.get_secret_value(),
        "TRADEPLANE_ADMIN_TOKEN": settings.admin_token.get_secret_value(),
    }


@dataclass
class Processes:
    settings: Settings
    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    args: dict[str, list[str]] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> None:
        self.args[name] = list(args)
        log = (self.log_dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "tradeplane.cli", *args], env=service_env(self.settings),
            stdout=log, stderr=subprocess.STDOUT,
        )

    def kill9(self, name: str) -> None:
        p = self.procs.pop(name)
        p.send_signal(signal.SIGKILL)
        p.wait()

    def restart(self, name: str) -> None:
        self.start(name, *self.args[name])

    def stop(self, name: str, timeout: float = 20.0) -> int:
        p = self.procs.pop(name)
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise

    def stop_all(self) -> None:
        for name in list(self.procs):
            try:
                self.stop(name)
            except subprocess.TimeoutExpired:
                pass

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")
