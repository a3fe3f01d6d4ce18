"""What each injection measured, and the table ``tradeplane chaos`` prints."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


def say(line: str) -> None:
    """A line of the run's narrative, as it happens."""
    print(f"chaos: {line}", flush=True)


@dataclass
class Outcome:
    """One injection: how long the platform took to take (and settle) an order again,
    and what the check after it found."""

    fault: str
    recovery_s: float | None
    """None: not recovered within the deadline (counted as an invariant failure)."""
    acked: int = 0
    """Orders acknowledged since the previous check."""
    lost: int = 0
    duplicated: int = 0
    failures: list[str] = field(default_factory=list)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _seconds(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def table(outcomes: Iterable[Outcome], order: Sequence[str]) -> str:
    """One row per fault (in ``order``) and a total row: times injected, recovery p50 and
    max (s), orders acknowledged, lost, duplicated, invariant failures."""
    rows: list[tuple[str, ...]] = []
    by_fault: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_fault.setdefault(o.fault, []).append(o)
    names = [n for n in order if n in by_fault] + [n for n in by_fault if n not in order]
    total = [0, 0, 0, 0, 0]
    for name in names:
        got = by_fault[name]
        rec = [o.recovery_s for o in got if o.recovery_s is not None]
        counts = [len(got), sum(o.acked for o in got), sum(o.lost for o in got),
                  sum(o.duplicated for o in got),
                  sum(len(o.failures) + (o.recovery_s is None) for o in got)]
        total = [a + b for a, b in zip(total, counts, strict=True)]
        rows.append((name, str(counts[0]), _seconds(percentile(rec, 50)),
                     _seconds(max(rec) if rec else math.nan), *map(str, counts[1:])))
    rows.append(("total", str(total[0]), "", "", *map(str, total[1:])))
    head = ("fault", "injected", "recovery p50 s", "recovery max s", "acked", "lost",
            "duplicated", "invariant failures")
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    return "\n".join([line(head), line(tuple("-" * w for w in widths)),
                      *map(line, rows)])


def clean(outcomes: Iterable[Outcome]) -> bool:
    """True when nothing was lost or duplicated, every check held and every injection
    recovered."""
    return all(o.lost == 0 and o.duplicated == 0 and not o.failures
               and o.recovery_s is not None for o in outcomes)
