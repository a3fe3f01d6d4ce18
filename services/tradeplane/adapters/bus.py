"""NATS JetStream adapter: streams, subjects, publishing and consuming for every service.

Streams and subjects (see docs/architecture.md):

* ``CMD_<SYMBOL>`` / ``cmd.<SYMBOL>``: the symbol's command log, written by the gateway with
  ``Nats-Msg-Id`` = ``o<order id>`` / ``c<cancel id>``; consumed in order by its engine only.
* ``EVENTS`` / ``evt.<SYMBOL>``: one message per engine batch, ``Nats-Msg-Id`` =
  ``<SYMBOL>:<first command seq>``; consumed by settlement and market data.
* core subjects (not persisted): ``settled.<SYMBOL>`` (ledger watermarks),
  ``md.<SYMBOL>.<stream>`` (market-data stream payloads), ``user.<account>`` (user data).
* object store ``ENGINE_SNAPSHOTS``: one object per symbol.
* key-value bucket ``ENGINE_LEASES``: key = symbol, value = the writing engine's lease
  (hot standby); entries expire ``ttl`` seconds after their last write (server clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext, api
from nats.js.errors import (
    APIError,
    BadRequestError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    NotFoundError,
    ObjectNotFoundError,
)
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from tradeplane.config import redacted
from tradeplane.domain.errors import Conflict, TradeplaneError, Unavailable

# The core subjects of stream payloads and user data are named in the domain (one
# definition for publishers and relays), re-exported here for this adapter's callers.
from tradeplane.domain.market import market_subject as market_subject
from tradeplane.domain.market import user_subject as user_subject

log = logging.getLogger("tradeplane.bus")

EVENTS_STREAM = "EVENTS"
SNAPSHOT_BUCKET = "ENGINE_SNAPSHOTS"
LEASE_BUCKET = "ENGINE_LEASES"
#: JetStream's error code for a failed ``Nats-Expected-Last-Subject-Sequence`` check.
_WRONG_LAST_SEQUENCE = 10071
#: A command follower whose consumer delivered nothing for this long while the stream
#: holds more re-subscribes. Longer than nats-py's own recovery takes after NATS restarts
#: (its check runs every two 2 s heartbeats, so it re-creates the consumer 4-8 s after the
#: last delivery), so that the follower steps in only where the library did not.
FOLLOW_STALL_S = 10.0


class BusError(TradeplaneError):
    """The bus refused or could not do an operation (the subclass says why)."""


class BusUnavailable(BusError, Unavailable):
    """NATS did not answer in time, the connection is lost or closed, or the server
    refused the operation (no stream, no responder): nothing was done, or the caller
    cannot know whether it was."""


#: What nats-py raises on a failed round trip: its own errors (JetStream's included),
#: socket errors and timeouts. Every method of this module turns them into
#: BusUnavailable, so no nats exception reaches a caller.
_NATS_ERRORS: tuple[type[Exception], ...] = (nats.errors.Error, OSError, TimeoutError)
#: ... and, from ``nats.connect``, ValueError for a malformed URL.
_CONNECT_ERRORS: tuple[type[Exception], ...] = (*_NATS_ERRORS, ValueError)


@contextlib.asynccontextmanager
async def _translated(what: str) -> AsyncIterator[None]:
    """Raise the library's errors inside as BusUnavailable(``what``: cause)."""
    try:
        yield
    except _NATS_ERRORS as exc:
        raise BusUnavailable(f"{what}: {type(exc).__name__} {exc}".rstrip()) from exc


class Fenced(BusError, Conflict):
    """Someone else appended to the subject since the sequence the writer expected: the
    writer is not the only one and must stop."""


class LeaseTaken(BusError, Conflict):
    """The lease is held by someone else, or changed since the caller last wrote it."""


T = TypeVar("T")

#: How long a JetStream answer is still awaited once the connection has come back (see
#: ``Bus._answered``).
RECONNECT_GRACE_S = 2.0
#: Between two tries of a publish no stream leader answered (a cluster electing one).
ELECTION_RETRY_S = 0.25
#: The longest wait for one try of a publish to replicated streams.
CLUSTER_TRY_S = 2.0
#: How long an event consumer that cannot be made is tried again before giving up.
CONSUMER_RETRY_S = 15.0
#: The whole read of a snapshot (its bucket found or made, its chunks fetched).
SNAPSHOT_TIMEOUT_S = 30.0


class Reconnects:
    """The connection's reconnections, for ``Bus._acked`` to hear of the next one."""

    def __init__(self) -> None:
        self._next: asyncio.Future[None] | None = None

    async def reconnected(self) -> None:
        if self._next is not None and not self._next.done():
            self._next.set_result(None)
        self._next = None

    async def next(self) -> None:
        """Return at the next reconnection."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._next)


def command_stream(symbol: str) -> str:
    return f"CMD_{symbol}"


def command_subject(symbol: str) -> str:
    return f"cmd.{symbol}"


def event_subject(symbol: str) -> str:
    return f"evt.{symbol}"


def settled_subject(symbol: str) -> str:
    return f"settled.{symbol}"


#: Message headers as NATS gives them (None when a message has none).
Headers = Mapping[str, str] | None


@dataclass(frozen=True, slots=True)
class StoredMsg:
    seq: int
    data: bytes
    #: Headers stored with the message (``Nats-Msg-Id``, W3C ``traceparent``...).
    headers: Headers = None


class Bus:
    """One NATS connection with its JetStream context."""

    def __init__(self, nc: Client, js: JetStreamContext, replicas: int, dedup_window_s: float,
                 reconnects: Reconnects | None = None):
        self.nc = nc
        self.js = js
        self._replicas = replicas
        self._dedup = dedup_window_s
        self._leases: KeyValue | None = None
        self._reconnects = reconnects or Reconnects()

    @classmethod
    async def connect(
        cls, url: str, *, name: str, replicas: int = 1, dedup_window_s: float = 600.0
    ) -> Bus:
        """``url``: one server's, or a cluster's nodes' comma-separated (the client connects
        to one of them and moves to another when it goes).

        Raises:
            BusError: no server can be reached.
        """
        servers = [u.strip() for u in url.split(",") if u.strip()]
        reconnects = Reconnects()
        try:
            nc = await nats.connect(
                servers, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                pending_size=64 * 1024 * 1024, reconnected_cb=reconnects.reconnected,
            )
        except _CONNECT_ERRORS as exc:
            where = ",".join(redacted(u) for u in servers)
            raise BusUnavailable(f"cannot connect to NATS at {where}: {exc}") from exc
        return cls(nc, nc.jetstream(timeout=10.0), replicas, dedup_window_s, reconnects)

    async def close(self) -> None:
        """Drain and close the connection (idempotent).

        Raises:
            BusUnavailable: the drain failed or timed out.
        """
        if self.nc.is_closed:
            return
        async with _translated("drain"):
            if self.nc.is_connected:
                await self.nc.drain()
            else:
                # Nothing can be drained to a server that is gone, and a drain would wait
                # for its timeout (30 s): a stop must not wait on NATS.
                await self.nc.close()

    # ------------------------------------------------------------------ topology
    async def ensure_symbol(self, symbol: str) -> None:
        """Create or update the symbol's command stream (idempotent)."""
        await self._ensure_stream(
            api.StreamConfig(
                name=command_stream(symbol),
                subjects=[command_subject(symbol)],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                num_replicas=self._replicas,
                duplicate_window=self._dedup,
                discard=api.DiscardPolicy.OLD,
            )
        )

    async def ensure_events(self) -> None:
        await self._ensure_stream(
            api.StreamConfig(
                name=EVENTS_STREAM,
                subjects=["evt.*"],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                num_replicas=self._replicas,
                duplicate_window=self._dedup,
                max_msg_size=8 * 1024 * 1024,
            )
        )

    async def _ensure_stream(self, cfg: api.StreamConfig) -> None:
        """Raises BusUnavailable: the stream can be neither created nor updated."""
        async with _translated(f"stream {cfg.name}"):
            try:
                await self.js.add_stream(cfg)
            except BadRequestError:
                await self.js.update_stream(cfg)

    # ------------------------------------------------------------------ commands
    async def publish_command(
        self, symbol: str, data: bytes, msg_id: str, headers: Headers = None
    ) -> int:
        """Append a command; returns its stream sequence once JetStream has stored it.
        ``headers`` (e.g. trace context) are stored with it.

        A duplicate (same ``msg_id`` within the window) returns the original sequence.

        Raises:
            BusError: not stored (no stream, timeout).
        """
        try:
            # The whole call within 5 s (the outbox relay's safety rests on it).
            ack = await self._acked(command_subject(symbol), data, _with_id(msg_id, headers),
                                    timeout=5.0)
        except _NATS_ERRORS as exc:  # timeouts, no stream, connection loss: all "not stored"
            raise BusUnavailable(f"command not stored on {symbol}: {exc}") from exc
        return int(ack.seq)

    async def follow_commands(
        self, symbol: str, start_seq: int, on_msg: Callable[[int, bytes, Headers], None],
        *, stall_s: float = FOLLOW_STALL_S, heartbeat_s: float = 2.0,
    ) -> Callable[[], Awaitable[None]]:
        """Deliver every command message from ``start_seq`` on, in order, to
        ``on_msg(seq, data, headers)`` (headers carry the trace context).

        Exactly the sequences ``start_seq, start_seq + 1, ...``: no gap, no repeat. An
        ordered push consumer does the delivering (no acks: the engine's progress lives in
        its snapshots and its last published event batch); the follower checks what it
        delivers and, should the consumer skip a sequence or go quiet for ``stall_s``
        while the stream holds more, replaces it with a new one starting at the next
        sequence it owes (see :class:`_CommandFollower`). Returns an unsubscribe
        coroutine.

        Raises:
            BusUnavailable: the first subscription could not be made.
        """
        follower = _CommandFollower(self, symbol, start_seq, on_msg, stall_s, heartbeat_s)
        await follower.start()
        return follower.stop

    async def last_command_seq(self, symbol: str) -> int:
        """The symbol's command stream's last sequence (0: empty).

        Raises:
            BusError: no such stream, or no answer.
        """
        try:
            info = await self.js.stream_info(command_stream(symbol))
        except _NATS_ERRORS as exc:  # not found, timeout, connection loss
            raise BusUnavailable(f"command stream of {symbol} not readable: {exc}") from exc
        return int(info.state.last_seq)

    async def stream_depths(self) -> list[tuple[str, int, int, int, int, int]]:
        """Every JetStream stream as ``(name, messages, bytes, first_seq, last_seq,
        consumers)``, by name (the admin health view's queue depths).

        Raises:
            BusUnavailable: the bus did not answer.
        """
        async with _translated("stream list"):
            infos = await self.js.streams_info()
        out = [(i.config.name or "", int(i.state.messages), int(i.state.bytes),
                int(i.state.first_seq), int(i.state.last_seq), int(i.state.consumer_count))
               for i in infos]
        return sorted(out)

    async def stream_leaders(self) -> dict[str, str | None]:
        """Every JetStream stream (key-value buckets and object stores included, as
        ``KV_<bucket>`` and ``OBJ_<bucket>``) with the name of the server leading its
        replicas on a cluster; None when it has no leader now (an election) or runs on a
        lone server.

        Raises:
            BusUnavailable: the bus did not answer.
        """
        async with _translated("stream list"):
            infos = await self.js.streams_info()
        return {i.config.name or "": (i.cluster.leader or None) if i.cluster else None
                for i in infos}

    async def step_down(self, stream: str) -> None:
        """Ask the leader of ``stream``'s replicas to hand its leadership to another
        server; the new one is elected at once. (The meta group's leader takes such a
        request from the system account only.)

        Raises:
            BusUnavailable: the bus did not answer, or refused.
        """
        async with _translated(f"step down of {stream}'s leader"):
            await self.nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"{}",
                                  timeout=5.0)

    async def events_last_seq(self) -> int:
        """The EVENTS stream's last sequence (0: empty).

        Raises:
            BusUnavailable: the bus did not answer, or there is no EVENTS stream.
        """
        async with _translated("EVENTS stream"):
            info = await self.js.stream_info(EVENTS_STREAM)
        return int(info.state.last_seq)

    # ------------------------------------------------------------------ events
    async def publish_events(
        self, symbol: str, data: bytes, msg_id: str, headers: Headers = None
    ) -> int:
        """Append an event batch (with ``headers``, e.g. trace context).

        Raises:
            BusError: the batch is not stored.
        """
        try:
            ack = await self._acked(
                event_subject(symbol), data, _with_id(msg_id, headers), timeout=10.0
            )
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"events not stored for {symbol}: {exc}") from exc
        return int(ack.seq)

    async def publish_events_fenced(
        self, symbol: str, data: bytes, msg_id: str, expect_last: int, headers: Headers = None
    ) -> int:
        """Append an event batch only if the symbol's last message in EVENTS is still at
        stream sequence ``expect_last`` (0: none yet), i.e. nobody else wrote since; returns
        the batch's stream sequence (the next ``expect_last``).

        Raises:
            Fenced: another writer appended in between (nothing was stored).
            BusError: the batch is not stored.
        """
        hdrs = _with_id(msg_id, headers)
        hdrs["Nats-Expected-Last-Subject-Sequence"] = str(expect_last)
        try:
            ack = await self._acked(event_subject(symbol), data, hdrs, timeout=10.0)
        except APIError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                raise Fenced(f"events of {symbol} were appended by another writer") from exc
            raise BusUnavailable(f"events not stored for {symbol}: {exc}") from exc
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"events not stored for {symbol}: {exc}") from exc
        return int(ack.seq)

    async def _acked(self, subject: str, data: bytes, headers: dict[str, str],
                     timeout: float) -> api.PubAck:
        """``js.publish`` within ``timeout`` as a whole, each try bounded by
        :meth:`_answered`. With replicated streams (a cluster), a publish no stream leader
        answered, or did not answer within CLUSTER_TRY_S, is tried again every
        ELECTION_RETRY_S until the deadline: the leader was lost and another is being
        elected (1-7 s here), and a try the lost leader took is never answered. Nothing is
        stored twice: every publish carries its message id, so when a try was stored after
        all, the next one is answered with the same sequence, or, for a fenced event
        batch, refused as fenced (its expected last sequence has moved on), on which the
        engine exits and recovers from the stream as after any lost writer. ``tradeplane chaos
        --nats-cluster`` found every engine exiting on it when the leader of EVENTS was
        killed, each restart met by the same election: 7-12 s before orders were matched
        again.

        Raises:
            NatsTimeout: no ack within ``timeout``, or within the grace after a reconnect.
            NoStreamResponseError: no stream took it (one server: no such stream).
            APIError, and the other errors of ``js.publish``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if self._replicas > 1:  # one taken by the lost leader goes unanswered
                left = min(left, CLUSTER_TRY_S)
            try:
                return await self._answered(
                    self.js.publish(subject, data, headers=headers, timeout=left), left)
            except (NoStreamResponseError, NatsTimeout):
                if self._replicas == 1 or deadline - loop.time() <= ELECTION_RETRY_S:
                    raise
            await asyncio.sleep(ELECTION_RETRY_S)

    async def _answered(self, call: Awaitable[T], timeout: float) -> T:
        """``call`` (a request to JetStream), except that once the connection has come
        back while its answer is awaited, it gets RECONNECT_GRACE_S more rather than the
        rest of ``timeout``: a request the lost server took is never answered by the new
        one (found by ``tradeplane chaos``: after disk-full an engine waited out its 10 s
        publish once NATS was back, most of the platform's recovery; with a NATS cluster
        an engine starting when its node was killed waited 10 s for its snapshot), while
        one still buffered in the client is sent on reconnect and answered at once. Cut
        short, a publish is not known to be stored, as after a timeout: the engine
        restarts and recovers, the message id de-duplicating.

        Raises:
            NatsTimeout: no answer within ``timeout``, or within the grace after a
                reconnect.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        came_back = asyncio.ensure_future(self._reconnects.next())
        answer = asyncio.ensure_future(call)
        try:
            # ``timeout`` bounds the whole call, not only the wait for the answer that
            # nats-py times: the client can block before it (its outgoing queue full
            # behind a stalled socket) and a soak once saw an engine sit 95 s in such a
            # publish after NATS restarted, its orders unprocessed.
            await asyncio.wait({answer, came_back}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            if not answer.done() and not came_back.done():
                raise NatsTimeout
            if not answer.done():
                left = deadline - asyncio.get_running_loop().time()
                await asyncio.wait({answer}, timeout=max(0.0, min(RECONNECT_GRACE_S, left)))
                if not answer.done():
                    raise NatsTimeout
            return answer.result()
        finally:
            came_back.cancel()
            answer.cancel()

    async def last_event(self, symbol: str) -> StoredMsg | None:
        """The symbol's last event batch with its EVENTS stream sequence, or None.

        Raises:
            BusUnavailable: the bus did not answer.
        """
        async with _translated(f"last event of {symbol}"):
            try:
                msg = await self.js.get_last_msg(EVENTS_STREAM, event_subject(symbol))
            except NotFoundError:
                return None
        return StoredMsg(int(msg.seq or 0), bytes(msg.data or b""), msg.headers)

    async def consume_events(
        self,
        name: str,
        handler: Callable[[list[StoredMsg]], Awaitable[None]],
        *,
        start_seq: int = 1,
        batch: int = 500,
        stop: asyncio.Event,
        on_idle: Callable[[], None] | None = None,
        linger: float = 0.0,
    ) -> None:
        """Deliver EVENTS from stream sequence ``start_seq`` on, strictly in order.

        ``linger`` is the least time between two handler calls: messages arriving meanwhile
        wait on the server and come in the next, larger pull (less CPU per message at
        moderate rates, at the cost of up to ``linger`` seconds of latency).

        ``on_idle`` is called whenever a fetch comes back short (fewer than ``batch``, or
        nothing): at that moment the consumer has seen everything in the stream.

        The consumer's position is the caller's: it stores the last stream sequence it
        applied together with its own writes (exactly-once by construction) and passes
        ``last + 1`` here after a restart. No acks, so no out-of-order redelivery; a failing
        handler gets the same messages again until it succeeds.

        Raises:
            BusUnavailable: no consumer could be made for CONSUMER_RETRY_S.
        """
        next_seq = max(1, start_seq)
        psub: JetStreamContext.PullSubscription | None = None
        loop = asyncio.get_running_loop()
        last_handled = 0.0
        lost_at = loop.time()  # when there was last no consumer
        while not stop.is_set():
            if linger:
                wait = last_handled + linger - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            if psub is None:
                try:
                    psub = await self._event_consumer(name, next_seq)
                except BusUnavailable as exc:
                    # A cluster electing a leader for EVENTS (or its meta group) answers
                    # nothing for a few seconds: tried again here, not by a restart.
                    if loop.time() - lost_at > CONSUMER_RETRY_S:
                        raise
                    log.warning("event consumer %s not created (%s); trying again", name,
                                exc)
                    await asyncio.sleep(0.5)
                    continue
            try:
                msgs = await psub.fetch(batch, timeout=0.5)
            except (NatsTimeout, TimeoutError):
                if on_idle is not None:
                    on_idle()
                continue
            except _NATS_ERRORS as exc:  # consumer gone (restart, inactivity): re-create
                log.warning("event consumer %s lost (%s); re-creating", name, exc)
                with contextlib.suppress(*_NATS_ERRORS):
                    await psub.unsubscribe()
                psub, lost_at = None, loop.time()
                await asyncio.sleep(0.2)
                continue
            if not msgs:
                continue
            caught_up = len(msgs) < batch
            stored = [StoredMsg(m.metadata.sequence.stream, m.data, m.headers) for m in msgs]
            if stored[0].seq != next_seq or stored[-1].seq - stored[0].seq != len(stored) - 1:
                # EVENTS' sequences have no holes (evt.* is the whole stream): a consumer
                # that skips or repeats one is replaced, from the one owed.
                log.warning("event consumer %s delivered %d..%d, expected from %d; "
                            "re-creating", name, stored[0].seq, stored[-1].seq, next_seq)
                with contextlib.suppress(*_NATS_ERRORS):
                    await psub.unsubscribe()
                psub, lost_at = None, loop.time()
                next_seq = await self._first_kept(EVENTS_STREAM, next_seq)
                continue
            delay = 0.1
            while True:
                # Never skip or reorder: retry the same messages until they apply.
                try:
                    await handler(stored)
                    break
                except Exception:  # the caller's handler: any failure is retried, loudly
                    log.exception("event handler failed; retrying in %.1fs", delay)
                    if stop.is_set():
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            next_seq = stored[-1].seq + 1
            last_handled = loop.time()
            if caught_up and on_idle is not None:
                on_idle()
        if psub is not None:
            with contextlib.suppress(*_NATS_ERRORS):
                await psub.unsubscribe()

    async def _event_consumer(self, name: str, next_seq: int
                              ) -> JetStreamContext.PullSubscription:
        """A pull consumer of EVENTS from ``next_seq``, without acks.

        Raises:
            BusUnavailable: not created.
        """
        async with _translated("event consumer"):
            return await self.js.pull_subscribe(
                "evt.*",
                durable=None,
                stream=EVENTS_STREAM,
                config=api.ConsumerConfig(
                    name=f"{name}-{next_seq}-{id(self) & 0xFFFF:x}",
                    ack_policy=api.AckPolicy.NONE,
                    deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=next_seq,
                    inactive_threshold=300.0,
                    max_waiting=1,
                ),
            )

    async def _first_kept(self, stream: str, owed: int) -> int:
        """``owed``, or the stream's first sequence when ``owed`` was removed (a purge, a
        limit): nothing can deliver it any more, so it is said and skipped."""
        async with _translated(f"stream {stream}"):
            info = await self.js.stream_info(stream)
        first = int(info.state.first_seq)
        if first <= owed:
            return owed
        log.error("messages removed from the stream before they were delivered",
                  extra={"fields": {"stream": stream, "from_seq": owed, "to_seq": first - 1}})
        return first

    # ------------------------------------------------------------------ core pub/sub
    async def publish(self, subject: str, data: bytes) -> None:
        """Core publish (at most once). Raises BusUnavailable: connection closed, or its
        outgoing buffer is full."""
        async with _translated(f"publish on {subject}"):
            await self.nc.publish(subject, data)

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Core publishes of ``(subject, data)``, in order (each at most once): one error
        translation for all. Raises BusUnavailable as :meth:`publish`; the messages
        before the failing one are sent."""
        if not messages:
            return
        async with _translated(f"publish on {messages[0][0]} and {len(messages) - 1} more"):
            for subject, data in messages:
                await self.nc.publish(subject, data)

    async def subscribe(
        self, subject: str, handler: Callable[[str, bytes], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        async def cb(msg: Msg) -> None:
            await handler(msg.subject, msg.data)

        async with _translated(f"subscribe to {subject}"):
            sub = await self.nc.subscribe(subject, cb=cb)
            await self.nc.flush()  # registered at the server before the caller relies on it
        return _unsubscriber(sub, subject)

    # ------------------------------------------------------------------ leases
    async def ensure_leases(self, ttl_s: float) -> None:
        """Open (or create) the lease bucket; its entries expire ``ttl_s`` seconds after
        their last write, by the server's clock (so holders' clocks never need to agree).

        Raises:
            BusError: the bucket cannot be opened or created.
        """
        if self._leases is not None:
            return
        try:
            try:
                self._leases = await self.js.key_value(LEASE_BUCKET)
            except NotFoundError:
                self._leases = await self.js.create_key_value(api.KeyValueConfig(
                    bucket=LEASE_BUCKET, history=1, ttl=ttl_s, storage=api.StorageType.FILE,
                    replicas=self._replicas,
                ))
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"lease bucket unavailable: {exc}") from exc

    async def lease_acquire(self, symbol: str, value: bytes) -> int | None:
        """Take the symbol's lease if nobody holds it (never written, released or
        expired); returns its revision, or None while someone else holds it.

        Raises:
            BusError: the bus did not answer.
        """
        kv = self._lease_bucket()
        try:
            return int(await kv.create(symbol, value))
        except KeyWrongLastSequenceError:
            return None
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"lease of {symbol}: {exc}") from exc

    async def lease_renew(self, symbol: str, value: bytes, revision: int) -> int:
        """Rewrite the lease held at ``revision`` (compare-and-set); returns the new revision.

        Raises:
            LeaseTaken: it expired or someone else wrote it since.
            BusError: the bus did not answer (the caller cannot know whether it still
                holds the lease).
        """
        kv = self._lease_bucket()
        try:
            return int(await kv.update(symbol, value, last=revision))
        except KeyWrongLastSequenceError as exc:
            raise LeaseTaken(f"lease of {symbol} lost") from exc
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"lease of {symbol}: {exc}") from exc

    async def lease_release(self, symbol: str, revision: int) -> None:
        """Give the lease held at ``revision`` up now (a standby need not wait for its
        expiry); a lease that moved on meanwhile is left alone.

        Raises:
            BusError: the bus did not answer.
        """
        kv = self._lease_bucket()
        try:
            await kv.delete(symbol, last=revision)
        except APIError as exc:
            if exc.err_code != _WRONG_LAST_SEQUENCE:
                raise BusUnavailable(f"lease of {symbol}: {exc}") from exc
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"lease of {symbol}: {exc}") from exc

    async def lease_value(self, symbol: str) -> bytes | None:
        """The symbol's lease as its holder last wrote it; None when nobody holds it
        (never taken, released, expired, or no lease bucket).

        Raises:
            BusUnavailable: the bus did not answer.
        """
        async with _translated(f"lease of {symbol}"):
            try:
                kv = self._leases or await self.js.key_value(LEASE_BUCKET)
                entry = await kv.get(symbol)
            except (NotFoundError, KeyNotFoundError):  # the bucket, or the key
                return None
        return bytes(entry.value) if entry.value else None

    def _lease_bucket(self) -> KeyValue:
        if self._leases is None:
            raise BusError("lease bucket not opened (ensure_leases)")
        return self._leases

    # ------------------------------------------------------------------ snapshots
    async def save_snapshot(self, symbol: str, data: bytes) -> None:
        """Raises BusUnavailable: not stored."""
        async with _translated(f"snapshot of {symbol}"):
            store = await self._snapshots()
            await store.put(symbol, data)

    async def load_snapshot(self, symbol: str) -> bytes | None:
        """The symbol's snapshot, or None. Raises BusUnavailable: no answer."""
        async with _translated(f"snapshot of {symbol}"):
            return await self._answered(self._load_snapshot(symbol), SNAPSHOT_TIMEOUT_S)

    async def _load_snapshot(self, symbol: str) -> bytes | None:
        store = await self._snapshots()
        try:
            res = await store.get(symbol)
        except (ObjectNotFoundError, NotFoundError):
            return None
        return bytes(res.data or b"")

    async def _snapshots(self) -> ObjectStore:
        try:
            return await self.js.object_store(SNAPSHOT_BUCKET)
        except nats.errors.Error:  # not found (or not readable): create it
            return await self.js.create_object_store(
                SNAPSHOT_BUCKET,
                config=api.ObjectStoreConfig(
                    bucket=SNAPSHOT_BUCKET, storage=api.StorageType.FILE,
                    replicas=self._replicas,
                ),
            )


class _CommandFollower:
    """Delivers a command stream from a sequence on, gap-free, across anything that
    happens to the connection or the server.

    nats-py's ordered consumer is meant to do this alone: it re-creates its consumer
    when it misses two heartbeats or sees a consumer sequence out of order. Trusting it
    blindly cost a chaos run 59 acknowledged orders (kill -9 of NATS under load: one
    engine's consumer never resumed, the engine sat idle with its stream 57 messages
    ahead until it was restarted). So the follower checks, from what it can see:

    * every delivered stream sequence must be the next one it owes; a repeat is dropped;
      a gap (a message the library lost) makes it re-subscribe from the one it owes;
    * every second, when nothing was handed over for ``stall_s``, it reads the stream's
      last sequence; when the stream holds what it owes, the consumer is stalled and is
      replaced.

    A replacement that fails (NATS still down) is tried again at the next check.
    """

    def __init__(self, bus: Bus, symbol: str, start_seq: int,
                 on_msg: Callable[[int, bytes, Headers], None], stall_s: float,
                 heartbeat_s: float) -> None:
        self.bus = bus
        self.symbol = symbol
        self.next_seq = max(1, start_seq)
        self.on_msg = on_msg
        self.stall_s = stall_s
        self.heartbeat_s = heartbeat_s
        self.restarts = 0
        self._sub: Any = None
        self._last_delivery = time.monotonic()
        self._gap = False
        self._gen = 0  # which subscription's messages count
        self._stopped = False
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._subscribe()
        self._watch = asyncio.create_task(self._watchdog(), name=f"follow-{self.symbol}")

    async def stop(self) -> None:
        self._stopped = True
        if self._watch is not None:
            # Not awaited to the end: a cancellation can be lost in a round trip that
            # completes at that moment (``asyncio.wait_for`` in Python 3.11 swallows it),
            # and a stop must not hang on it (an engine fenced after a pause once stayed
            # up, its run ended, waiting here). The flag ends the loop at its next turn.
            self._watch.cancel()
            await asyncio.wait({self._watch}, timeout=2.0)
            self._watch = None
        sub, self._sub = self._sub, None
        if sub is not None:
            async with _translated(f"unsubscribe from {command_subject(self.symbol)}"):
                await sub.unsubscribe()

    async def _subscribe(self) -> None:
        start = self.next_seq
        self._gen += 1
        gen = self._gen

        async def cb(msg: Msg) -> None:
            if gen != self._gen:
                return  # a replaced subscription's last messages
            seq = msg.metadata.sequence.stream
            if seq < self.next_seq:
                return  # delivered already (the library's own reset re-delivers)
            if seq > self.next_seq:
                if not self._gap:
                    self._gap = True
                    log.warning("command stream delivered out of order; re-subscribing",
                                extra={"fields": {"symbol": self.symbol, "expected":
                                                  self.next_seq, "delivered": seq}})
                return
            self.next_seq = seq + 1
            self._last_delivery = time.monotonic()
            self.on_msg(seq, msg.data, msg.headers)

        async with _translated(f"command stream of {self.symbol}"):
            sub = await self.bus.js.subscribe(
                command_subject(self.symbol),
                cb=cb,
                ordered_consumer=True,
                stream=command_stream(self.symbol),
                config=api.ConsumerConfig(
                    deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=start,
                ),
                idle_heartbeat=self.heartbeat_s,
                pending_msgs_limit=1_000_000,
            )
        self._sub = sub
        self._gap = False
        self._last_delivery = time.monotonic()

    async def _watchdog(self) -> None:
        while not self._stopped:
            await asyncio.sleep(min(1.0, self.stall_s / 2))
            if self._stopped:
                return
            try:
                if self._gap:
                    await self._skip_removed()
                    await self._replace("a gap")
                elif await self._stalled():
                    await self._replace(f"nothing for {self.stall_s:g} s")
            except BusUnavailable as exc:  # NATS not back yet: the next round tries again
                log.info("command stream follower waits for NATS",
                         extra={"fields": {"symbol": self.symbol, "error": str(exc)}})

    async def _skip_removed(self) -> None:
        """Messages removed from the stream (a purge, a limit) can be delivered by no
        consumer: the follower goes on from the stream's first, saying so."""
        self.next_seq = await self.bus._first_kept(command_stream(self.symbol), self.next_seq)

    async def _stalled(self) -> bool:
        if time.monotonic() - self._last_delivery < self.stall_s:
            return False
        # Messages waiting in the subscription's queue do not make it busy: its callback
        # only hands them over, and this check runs on the same loop, so a queue not
        # served for stall_s is a stalled subscription too.
        if not self.bus.nc.is_connected:
            return False  # the connection is being re-established: nothing to read yet
        return await self.bus.last_command_seq(self.symbol) >= self.next_seq

    async def _replace(self, why: str) -> None:
        old, self._sub = self._sub, None
        self._gen += 1
        self.restarts += 1
        log.warning("command stream follower re-subscribing",
                    extra={"fields": {"symbol": self.symbol, "from_seq": self.next_seq,
                                      "why": why, "restarts": self.restarts,
                                      "library": _ordered_state(old)}})
        if old is not None:
            with contextlib.suppress(*_NATS_ERRORS):
                await old.unsubscribe()
        if not self._stopped:
            await self._subscribe()


def _ordered_state(sub: Any) -> str:
    """What nats-py's ordered consumer thinks (for the log of a replacement): the stream
    sequence it last saw, and whether its heartbeat check still runs."""
    jsi = getattr(getattr(sub, "_sub", sub), "_jsi", None)
    if jsi is None:
        return "none"
    hb = getattr(jsi, "_hbtask", None)
    hb_state = ("none" if hb is None else "running" if not hb.done()
                else "cancelled" if hb.cancelled() else f"died: {hb.exception()!r}")
    return (f"sseq={getattr(jsi, '_sseq', '?')} active={getattr(jsi, '_active', '?')} "
            f"heartbeat_check={hb_state}")


def _unsubscriber(sub: Any, subject: str) -> Callable[[], Awaitable[None]]:
    """``sub.unsubscribe`` with its errors translated (a closed connection, say)."""

    async def unsubscribe() -> None:
        async with _translated(f"unsubscribe from {subject}"):
            await sub.unsubscribe()

    return unsubscribe


def _with_id(msg_id: str, headers: Headers) -> dict[str, str]:
    if not headers:
        return {"Nats-Msg-Id": msg_id}
    return {**headers, "Nats-Msg-Id": msg_id}


# ---------------------------------------------------------------------- custody (wallets)
# Stream ``WALLETS`` / subject ``wallet.<NAME>``: deposit and withdrawal state changes of
# one wallet, ``Nats-Msg-Id`` = ``<chain>:<txid>:<idx>:<state>`` (deposits) or
# ``wd:<wallet>:<id>:<state>`` (withdrawals). Core request/reply ``wallet.<NAME>.<what>``
# (not captured by the stream: one token more) reaches the wallet's watcher, the only
# process that talks to the chain.
WALLETS_STREAM = "WALLETS"


def wallet_subject(wallet: str) -> str:
    return f"wallet.{wallet}"


def wallet_request_subject(wallet: str, what: str) -> str:
    return f"wallet.{wallet}.{what}"


async def ensure_wallet_stream(bus: Bus) -> None:
    """Create or update the WALLETS stream (idempotent).

    Raises:
        BusError: the stream cannot be created.
    """
    try:
        await bus._ensure_stream(api.StreamConfig(
            name=WALLETS_STREAM, subjects=["wallet.*"], retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE, num_replicas=bus._replicas,
            duplicate_window=bus._dedup,
        ))
    except _NATS_ERRORS as exc:
        raise BusUnavailable(f"stream {WALLETS_STREAM} unavailable: {exc}") from exc


async def publish_wallet_event(bus: Bus, wallet: str, data: bytes, msg_id: str) -> int:
    """Append a wallet event; a duplicate ``msg_id`` within the window is stored once.

    Raises:
        BusError: not stored.
    """
    try:
        ack = await bus.js.publish(wallet_subject(wallet), data, headers={"Nats-Msg-Id": msg_id},
                                   timeout=5.0)
    except _NATS_ERRORS as exc:
        raise BusUnavailable(f"wallet event not stored for {wallet}: {exc}") from exc
    return int(ack.seq)


async def wallet_events(bus: Bus, wallet: str) -> list[StoredMsg]:
    """Every stored event of ``wallet``, in order (audits and tests; not for hot paths).

    Raises:
        BusUnavailable: the bus did not answer.
    """
    out: list[StoredMsg] = []
    async with _translated(f"events of wallet {wallet}"):
        try:
            info = await bus.js.stream_info(WALLETS_STREAM)
        except NotFoundError:
            return out
        seq, last = 1, int(info.state.last_seq)
        while seq <= last:
            try:
                msg = await bus.js.get_msg(WALLETS_STREAM, seq, next=True,
                                           subject=wallet_subject(wallet))
            except NotFoundError:
                break
            out.append(StoredMsg(int(msg.seq or 0), bytes(msg.data or b""), msg.headers))
            seq = int(msg.seq or 0) + 1
    return out


async def request(bus: Bus, subject: str, data: bytes, timeout: float) -> bytes:
    """Core NATS request/reply.

    Raises:
        BusError: no responder, or no answer within ``timeout`` seconds.
    """
    try:
        msg = await bus.nc.request(subject, data, timeout=timeout)
    except _NATS_ERRORS as exc:  # NoRespondersError, TimeoutError, connection loss
        raise BusUnavailable(f"no answer on {subject}: {type(exc).__name__}") from exc
    return bytes(msg.data)


async def serve_requests(
    bus: Bus, subject: str, handler: Callable[[bytes], Awaitable[bytes]]
) -> Callable[[], Awaitable[None]]:
    """Answer requests on ``subject`` with ``handler(data)``; returns an unsubscribe
    coroutine. One queue group per subject: replicas would share the work."""

    async def cb(msg: Msg) -> None:
        try:
            reply = await handler(msg.data)
        except Exception:  # the caller's handler: the requester times out; we log it
            log.exception("request handler for %s failed", subject)
            return
        try:
            await msg.respond(reply)
        except _NATS_ERRORS as exc:  # the requester sees a timeout either way
            log.warning("reply on %s not sent: %s", subject, exc)

    async with _translated(f"serve {subject}"):
        sub = await bus.nc.subscribe(subject, queue=subject, cb=cb)
        await bus.nc.flush()
    return _unsubscriber(sub, subject)
