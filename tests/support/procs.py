"""Real tradeplane processes for end-to-end tests (``python -m tradeplane.cli ...``)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.harness import limits_env

from tradeplane.config import Settings
from tradeplane.platform.local import service_env


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
            [sys.executable, "-m", "tradeplane.cli", *args],
            env={**service_env(self.settings), **limits_env(self.settings)},
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
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.stop(name)

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")
