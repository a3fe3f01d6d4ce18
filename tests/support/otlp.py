"""A real OTLP receiver for trace tests: rotel (PyPI's ``rotel``, a dev extra, ships the
collector binary ``rotel-agent``), listening for OTLP/HTTP on a free local port, exporting
nowhere and writing every span it receives to its debug log, which :meth:`Collector.spans`
reads back."""

from __future__ import annotations

import contextlib
import importlib.util
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.containers import free_port

ROTEL_MISSING = "rotel is not installed (PyPI's rotel, in the dev extras: pip install -e '.[dev]')"


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str


@dataclass
class Collector:
    endpoint: str  # the OTLP/HTTP traces URL the services are given
    log: Path

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, parsed from rotel's detailed debug log."""
        text = re.sub(r"\x1b\[[0-9;]*m", "", self.log.read_text(errors="replace"))
        out: list[ReceivedSpan] = []
        service = ""
        span: dict[str, str] = {}
        fields = {"Trace ID": "trace_id", "Parent ID": "parent_id", "ID": "span_id",
                  "Name": "name", "Kind": "kind"}
        for line in text.splitlines():
            if m := re.search(r"-> service\.name: Str\((.*)\)$", line):
                service = m.group(1)
            elif m := re.match(r"\s+(Trace ID|Parent ID|ID|Name|Kind)\s+: ?(.*)$", line):
                span[fields[m.group(1)]] = m.group(2).strip()
                if m.group(1) == "Kind":
                    out.append(ReceivedSpan(service=service, **span))
                    span = {}
        return out


@contextlib.contextmanager
def running_rotel(folder: Path) -> Iterator[Collector]:
    """rotel on free ports (OTLP/HTTP and gRPC), its log in ``folder``.

    Raises:
        AssertionError: rotel is not installed, or did not start listening.
    """
    spec = importlib.util.find_spec("rotel")
    assert spec is not None and spec.origin is not None, ROTEL_MISSING
    binary = Path(spec.origin).parent / "rotel-agent"
    http, grpc = free_port(), free_port()
    log = folder / "rotel.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(binary), "start", f"--otlp-http-endpoint=127.0.0.1:{http}",
             f"--otlp-grpc-endpoint=127.0.0.1:{grpc}", "--exporter=blackhole",
             "--debug-log=traces", "--debug-log-verbosity=detailed"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", http), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    f"rotel did not start:\n{log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.1)
        yield Collector(f"http://127.0.0.1:{http}/v1/traces", log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
