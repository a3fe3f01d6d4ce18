"""The operator's view of what the system is doing (the admin health view).

Read from what the platform already keeps: each symbol's command stream (how far clients
have asked) and last event batch (how far its engine has matched), settlement's cursor
(how far the ledger has settled), market data's position in the EVENTS stream, the last
ledger invariant verdict settlement recorded, and the JetStream streams' depths. Each part
is read on its own: one that cannot be read is reported unknown (``None``, with the
reason), never its last good value, and never fails the whole view.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

from tradeplane.domain.errors import Unavailable

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StreamDepth:
    name: str
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    consumers: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """A ledger invariant check: when, whether every invariant held, what failed."""

    checked_ms: int
    ok: bool
    problems: tuple[str, ...]


class HealthReads(Protocol):
    """What the health view reads (``adapters/health.py``). Each raises Unavailable when
    its source does not answer."""

    async def command_seq(self, symbol: str) -> int:
        """The symbol's command stream's last sequence (0: none)."""
        ...

    async def engine_seq(self, symbol: str) -> int:
        """The last command sequence the symbol's engine has published events for (0:
        none yet)."""
        ...

    async def settled(self) -> Mapping[str, int]:
        """Settlement's cursor: the last command sequence settled, per symbol."""
        ...

    async def events_last_seq(self) -> int:
        """The EVENTS stream's last sequence."""
        ...

    async def marketdata_position(self) -> int | None:
        """The EVENTS sequence market data's stored state includes (None: no state)."""
        ...

    async def verdict(self) -> Verdict | None:
        """The last ledger invariant verdict (None: no check recorded yet)."""
        ...

    async def streams(self) -> list[StreamDepth]: ...


async def _read(what: Callable[[], Awaitable[T]], errors: list[str], name: str
                ) -> tuple[bool, T | None]:
    try:
        return True, await what()
    except Unavailable as exc:
        errors.append(f"{name}: {exc}")
        return False, None


def _lag(ahead: int | None, behind: int | None) -> int | None:
    if ahead is None or behind is None:
        return None
    return max(ahead - behind, 0)


def verdict_status(v: Verdict | None, now_ms: int, stale_ms: int) -> str:
    """``ok``, ``violated``, or ``unknown`` (no check yet, or the last one older than
    ``stale_ms``: settlement has stopped checking, so its old verdict says nothing)."""
    if v is None or now_ms - v.checked_ms > stale_ms:
        return "unknown"
    return "ok" if v.ok else "violated"


class Health:
    def __init__(self, reads: HealthReads, *, verdict_stale_ms: int) -> None:
        self.reads = reads
        self.verdict_stale_ms = verdict_stale_ms

    async def report(self, symbols: Sequence[str], now_ms: int) -> dict[str, Any]:
        """The health view as a JSON document (see the module's doc). Never raises for
        an unreadable source: its fields are null and ``errors`` says why."""
        r = self.reads
        errors: list[str] = []
        _, settled = await _read(r.settled, errors, "settlement cursor")
        engines = []
        for sym in sorted(symbols):
            _, commands = await _read(partial(r.command_seq, sym), errors,
                                      f"commands of {sym}")
            _, applied = await _read(partial(r.engine_seq, sym), errors, f"events of {sym}")
            done = None if settled is None else settled.get(sym, 0)
            engines.append({
                "symbol": sym, "commandSequence": commands, "engineSequence": applied,
                "settledSequence": done,
                "engineBacklog": _lag(commands, applied),
                "settlementLag": _lag(applied, done),
            })
        _, last = await _read(r.events_last_seq, errors, "EVENTS stream")
        md_ok, position = await _read(r.marketdata_position, errors, "market-data position")
        _, verdict = await _read(r.verdict, errors, "ledger verdict")
        _, streams = await _read(r.streams, errors, "streams")
        status = verdict_status(verdict, now_ms, self.verdict_stale_ms)
        return {
            "time": now_ms,
            "engines": engines,
            "marketData": {"eventsSequence": last,
                           "position": position if md_ok else None,
                           "lag": _lag(last, position)},
            "ledger": {"status": status,
                       "checkedAt": verdict.checked_ms if verdict else None,
                       "problems": list(verdict.problems) if verdict else []},
            "streams": [{"name": s.name, "messages": s.messages, "bytes": s.bytes,
                         "firstSequence": s.first_seq, "lastSequence": s.last_seq,
                         "consumers": s.consumers} for s in streams or []],
            "errors": errors,
        }
