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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext, api
from nats.js.errors import (
    APIError,
    BadRequestError,
    KeyWrongLastSequenceError,
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

    def __init__(self, nc: Client, js: JetStreamContext, replicas: int, dedup_window_s: float):
        self.nc = nc
        self.js = js
        self._replicas = replicas
        self._dedup = dedup_window_s
        self._leases: KeyValue | None = None

    @classmethod
    async def connect(
        cls, url: str, *, name: str, replicas: int = 1, dedup_window_s: float = 600.0
    ) -> Bus:
        """Raises BusError when the server cannot be reached."""
        try:
            nc = await nats.connect(
                url, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                pending_size=64 * 1024 * 1024,
            )
        except _CONNECT_ERRORS as exc:
            raise BusUnavailable(f"cannot connect to NATS at {redacted(url)}: {exc}") from exc
        return cls(nc, nc.jetstream(timeout=10.0), replicas, dedup_window_s)

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
            ack = await self.js.publish(
                command_subject(symbol), data, headers=_with_id(msg_id, headers), timeout=5.0
            )
        except _NATS_ERRORS as exc:  # timeouts, no stream, connection loss: all "not stored"
            raise BusUnavailable(f"command not stored on {symbol}: {exc}") from exc
        return int(ack.seq)

    async def follow_commands(
        self, symbol: str, start_seq: int, on_msg: Callable[[int, bytes, Headers], None]
    ) -> Callable[[], Awaitable[None]]:
        """Deliver every command message from ``start_seq`` on, in order, to
        ``on_msg(seq, data, headers)`` (headers carry the trace context).

        An ordered push consumer: gap-free, no acks (the engine's progress lives in its
        snapshots and its last published event batch). Returns an unsubscribe coroutine.
        """

        async def cb(msg: Msg) -> None:
            on_msg(msg.metadata.sequence.stream, msg.data, msg.headers)

        async with _translated(f"command stream of {symbol}"):
            sub = await self.js.subscribe(
                command_subject(symbol),
                cb=cb,
                ordered_consumer=True,
                stream=command_stream(symbol),
                config=api.ConsumerConfig(
                    deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=max(1, start_seq),
                ),
                idle_heartbeat=2.0,
                pending_msgs_limit=1_000_000,
            )
        return _unsubscriber(sub, command_subject(symbol))

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
            ack = await self.js.publish(
                event_subject(symbol), data, headers=_with_id(msg_id, headers), timeout=10.0
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
            ack = await self.js.publish(event_subject(symbol), data, headers=hdrs, timeout=10.0)
        except APIError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                raise Fenced(f"events of {symbol} were appended by another writer") from exc
            raise BusUnavailable(f"events not stored for {symbol}: {exc}") from exc
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"events not stored for {symbol}: {exc}") from exc
        return int(ack.seq)

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
        """
        next_seq = max(1, start_seq)
        psub: JetStreamContext.PullSubscription | None = None
        loop = asyncio.get_running_loop()
        last_handled = 0.0
        while not stop.is_set():
            if linger:
                wait = last_handled + linger - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            if psub is None:
                async with _translated("event consumer"):
                    psub = await self.js.pull_subscribe(
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
                psub = None
                await asyncio.sleep(0.2)
                continue
            if not msgs:
                continue
            caught_up = len(msgs) < batch
            stored = [StoredMsg(m.metadata.sequence.stream, m.data, m.headers) for m in msgs]
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
