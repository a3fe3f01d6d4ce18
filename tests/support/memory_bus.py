"""An in-memory bus implementing the engine's port (:class:`tradeplane.engine.service.EngineBus`)
with the JetStream semantics the engine relies on, for unit tests without a NATS server.

* Each symbol's command log is a list with stream sequences from 1; a ``msg_id`` seen before
  is stored once and returns the original sequence (JetStream's duplicate window, unbounded).
* ``follow_commands`` delivers the backlog from ``start_seq`` at once, then every new command
  as it is appended (synchronously: no task, no sleep).
* EVENTS is one list for every symbol with one stream sequence, like the real stream;
  ``publish_events_fenced`` is refused with the real :class:`Fenced` unless the symbol's last
  batch is at ``expect_last``. A duplicate ``msg_id`` is checked first (as JetStream does) and
  returns the original sequence.
* Snapshots are one bytes value per symbol; leases a compare-and-set map with revisions,
  which a test expires explicitly (``expire_lease``) instead of waiting for a TTL.

``down`` makes every operation raise :class:`BusUnavailable`, as the real adapter does when
NATS does not answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tradeplane.adapters.bus import BusError, BusUnavailable, Fenced, Headers, LeaseTaken, StoredMsg
from tradeplane.domain import codec
from tradeplane.domain.model import Command, EventBatch

OnMsg = Callable[[int, bytes, Headers], None]


@dataclass
class _Lease:
    revision: int
    value: bytes


@dataclass
class MemoryBus:
    """The command logs, EVENTS, snapshots and leases of one (imaginary) NATS server."""

    commands: dict[str, list[StoredMsg]] = field(default_factory=dict)
    #: EVENTS as (symbol, message); a message's ``seq`` is its EVENTS stream sequence.
    events: list[tuple[str, StoredMsg]] = field(default_factory=list)
    snapshots: dict[str, bytes] = field(default_factory=dict)
    leases: dict[str, _Lease] = field(default_factory=dict)
    down: bool = False
    _command_ids: dict[str, dict[str, int]] = field(default_factory=dict)
    _event_ids: dict[str, int] = field(default_factory=dict)
    _followers: dict[str, list[OnMsg]] = field(default_factory=dict)
    _streams: set[str] = field(default_factory=set)
    _events_stream: bool = False
    _leases_open: bool = False
    _lease_revision: int = 0

    def _check(self, what: str) -> None:
        if self.down:
            raise BusUnavailable(f"{what}: no answer (memory bus down)")

    # ------------------------------------------------------------------ topology
    async def ensure_symbol(self, symbol: str) -> None:
        self._check(f"stream of {symbol}")
        self._streams.add(symbol)
        self.commands.setdefault(symbol, [])

    async def ensure_events(self) -> None:
        self._check("stream EVENTS")
        self._events_stream = True

    # ------------------------------------------------------------------ commands
    async def publish_command(
        self, symbol: str, data: bytes, msg_id: str, headers: Headers = None
    ) -> int:
        """Raises BusUnavailable: down, or no such stream (``ensure_symbol``)."""
        self._check(f"command on {symbol}")
        if symbol not in self._streams:
            raise BusUnavailable(f"command not stored on {symbol}: no stream")
        ids = self._command_ids.setdefault(symbol, {})
        if msg_id in ids:
            return ids[msg_id]
        log = self.commands[symbol]
        msg = StoredMsg(len(log) + 1, data, {**(headers or {}), "Nats-Msg-Id": msg_id})
        log.append(msg)
        ids[msg_id] = msg.seq
        for on_msg in list(self._followers.get(symbol, ())):
            on_msg(msg.seq, msg.data, msg.headers)
        return msg.seq

    async def follow_commands(
        self, symbol: str, start_seq: int, on_msg: OnMsg
    ) -> Callable[[], Awaitable[None]]:
        self._check(f"command stream of {symbol}")
        if symbol not in self._streams:
            raise BusUnavailable(f"command stream of {symbol}: no stream")
        for msg in self.commands[symbol][max(1, start_seq) - 1:]:
            on_msg(msg.seq, msg.data, msg.headers)
        followers = self._followers.setdefault(symbol, [])
        followers.append(on_msg)

        async def unsubscribe() -> None:
            followers.remove(on_msg)

        return unsubscribe

    async def last_command_seq(self, symbol: str) -> int:
        self._check(f"command stream of {symbol}")
        if symbol not in self._streams:
            raise BusUnavailable(f"command stream of {symbol} not readable: no stream")
        return len(self.commands[symbol])

    # ------------------------------------------------------------------ events
    def _last_event_seq(self, symbol: str) -> int:
        for sym, msg in reversed(self.events):
            if sym == symbol:
                return msg.seq
        return 0

    async def publish_events_fenced(
        self, symbol: str, data: bytes, msg_id: str, expect_last: int, headers: Headers = None
    ) -> int:
        """Raises Fenced: the symbol's last batch is not at ``expect_last``; BusUnavailable:
        down, or no EVENTS stream."""
        self._check(f"events of {symbol}")
        if not self._events_stream:
            raise BusUnavailable(f"events not stored for {symbol}: no stream")
        if msg_id in self._event_ids:
            return self._event_ids[msg_id]
        if self._last_event_seq(symbol) != expect_last:
            raise Fenced(f"events of {symbol} were appended by another writer")
        msg = StoredMsg(len(self.events) + 1, data, {**(headers or {}), "Nats-Msg-Id": msg_id})
        self.events.append((symbol, msg))
        self._event_ids[msg_id] = msg.seq
        return msg.seq

    async def last_event(self, symbol: str) -> StoredMsg | None:
        self._check(f"last event of {symbol}")
        for sym, msg in reversed(self.events):
            if sym == symbol:
                return msg
        return None

    # ------------------------------------------------------------------ snapshots
    async def save_snapshot(self, symbol: str, data: bytes) -> None:
        self._check(f"snapshot of {symbol}")
        self.snapshots[symbol] = data

    async def load_snapshot(self, symbol: str) -> bytes | None:
        self._check(f"snapshot of {symbol}")
        return self.snapshots.get(symbol)

    # ------------------------------------------------------------------ leases
    async def ensure_leases(self, ttl_s: float) -> None:
        self._check("lease bucket")
        self._leases_open = True

    def _lease_bucket(self) -> dict[str, _Lease]:
        if not self._leases_open:
            raise BusError("lease bucket not opened (ensure_leases)")
        return self.leases

    async def lease_acquire(self, symbol: str, value: bytes) -> int | None:
        self._check(f"lease of {symbol}")
        leases = self._lease_bucket()
        if symbol in leases:
            return None
        self._lease_revision += 1
        leases[symbol] = _Lease(self._lease_revision, value)
        return self._lease_revision

    async def lease_renew(self, symbol: str, value: bytes, revision: int) -> int:
        """Raises LeaseTaken: expired, released or rewritten since ``revision``."""
        self._check(f"lease of {symbol}")
        leases = self._lease_bucket()
        held = leases.get(symbol)
        if held is None or held.revision != revision:
            raise LeaseTaken(f"lease of {symbol} lost")
        self._lease_revision += 1
        leases[symbol] = _Lease(self._lease_revision, value)
        return self._lease_revision

    async def lease_release(self, symbol: str, revision: int) -> None:
        self._check(f"lease of {symbol}")
        leases = self._lease_bucket()
        held = leases.get(symbol)
        if held is not None and held.revision == revision:
            del leases[symbol]

    def expire_lease(self, symbol: str) -> None:
        """What the bucket's TTL does to a lease nobody renewed."""
        self.leases.pop(symbol, None)

    # ------------------------------------------------------------------ for assertions
    def command_log(self, symbol: str) -> list[tuple[int, list[Command]]]:
        return [(m.seq, codec.decode_commands(m.data)) for m in self.commands.get(symbol, [])]

    def batches(self, symbol: str) -> list[EventBatch]:
        return [codec.decode_batch(m.data) for sym, m in self.events if sym == symbol]

    def event_messages(self, symbol: str) -> list[StoredMsg]:
        return [m for sym, m in self.events if sym == symbol]
