"""What the processes hold over a run: resident memory and open file descriptors per
process (read from ``/proc``), sampled every few seconds, with the memory's slope; and the
growth of the streams and tables between the first check and the last (``--soak``)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PROC = Path("/proc")


def rss_bytes(pid: int) -> int | None:
    """The process's resident set size; None when it is gone."""
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def open_fds(pid: int) -> int | None:
    """How many file descriptors the process has open; None when it is gone."""
    try:
        return len(os.listdir(_PROC / str(pid) / "fd"))
    except OSError:
        return None


def slope_per_hour(points: Iterable[tuple[float, float]]) -> float:
    """The least-squares slope of ``(seconds, value)`` points, per hour; NaN with fewer
    than two distinct times."""
    pts = list(points)
    if len(pts) < 2:
        return math.nan
    mean_t = sum(t for t, _ in pts) / len(pts)
    mean_v = sum(v for _, v in pts) / len(pts)
    var = sum((t - mean_t) ** 2 for t, _ in pts)
    if var == 0:
        return math.nan
    cov = sum((t - mean_t) * (v - mean_v) for t, v in pts)
    return cov / var * 3600


@dataclass
class Series:
    """One process's samples: (seconds into the run, RSS bytes, open fds, pid)."""

    samples: list[tuple[float, int, int, int]] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)


@dataclass
class Sampler:
    """Samples named processes' memory and descriptors; tracks the stores' sizes."""

    series: dict[str, Series] = field(default_factory=dict)
    sizes: list[tuple[float, dict[str, int]]] = field(default_factory=list)

    def sample(self, at_s: float, pids: Mapping[str, int | None]) -> None:
        for name, pid in pids.items():
            if pid is None:
                continue
            rss, fds = rss_bytes(pid), open_fds(pid)
            if rss is None or fds is None:
                continue
            s = self.series.setdefault(name, Series())
            s.samples.append((at_s, rss, fds, pid))
            s.pids.add(pid)

    def record_sizes(self, at_s: float, sizes: Mapping[str, int]) -> None:
        self.sizes.append((at_s, dict(sizes)))

    def table(self) -> str:
        """Per process: samples, starts seen, RSS first/last/max (MB) and its slope
        (MB/h, over the samples of its latest process only: a restart starts afresh),
        open fds first/last/max; then each store's size first/last and its growth a
        minute."""
        head = ("process", "samples", "pids", "RSS first MB", "RSS last MB", "RSS max MB",
                "RSS slope MB/h", "fds first", "fds last", "fds max")
        rows: list[tuple[str, ...]] = []
        for name, s in sorted(self.series.items()):
            if not s.samples:
                continue
            mb = [r / 2**20 for _, r, _, _ in s.samples]
            fds = [f for _, _, f, _ in s.samples]
            last_pid = s.samples[-1][3]
            slope = slope_per_hour((t, r / 2**20) for t, r, _, pid in s.samples
                                   if pid == last_pid)
            rows.append((name, str(len(s.samples)), str(len(s.pids)), f"{mb[0]:.1f}",
                         f"{mb[-1]:.1f}", f"{max(mb):.1f}",
                         "-" if math.isnan(slope) else f"{slope:+.1f}",
                         str(fds[0]), str(fds[-1]), str(max(fds))))
        out = [_render(head, rows)]
        if len(self.sizes) >= 2:
            (t0, first), (t1, last) = self.sizes[0], self.sizes[-1]
            minutes = max((t1 - t0) / 60, 1e-9)
            grow = [(k, str(first.get(k, 0)), str(v), f"{(v - first.get(k, 0)) / minutes:.1f}")
                    for k, v in sorted(last.items())]
            out.append(_render(("store", "first", "last", "growth a minute"), grow))
        return "\n\n".join(out)


def _render(head: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    return "\n".join([line(head), line(tuple("-" * w for w in widths)), *map(line, rows)])
