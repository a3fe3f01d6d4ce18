"""The convert desk's hedge jobs on JetStream: a work queue and its dead-letter stream.

* ``CONVERT_HEDGE`` / ``convert.hedge``: retention *workqueue* (a job is deleted once
  acknowledged), file storage, ``Nats-Msg-Id`` = ``hedge:<conversion id>`` (a job enqueued
  twice within the de-duplication window is stored once). One durable pull consumer,
  ``hedger``, shared by every hedger replica: each job goes to one of them; explicit acks;
  ``ack_wait`` bounds how long a killed worker's job stays invisible; ``max_deliver`` is
  the worker's limit plus one, so a job whose last delivery died with its worker comes
  back once more, only to be dead-lettered.
* ``CONVERT_HEDGE_DLQ`` / ``convert.hedge.dlq``: limits retention, the jobs given up, with
  the reason and the delivery count (``Nats-Msg-Id`` = ``hedge-dlq:<conversion id>``).

Job payload: ``{"orderId": <conversion id>}`` (the plan is read from the database).
"""

from __future__ import annotations

import contextlib
import json
from typing import Final

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext, api

from tradeplane.adapters.bus import _NATS_ERRORS, Bus, BusUnavailable

HEDGE_STREAM: Final = "CONVERT_HEDGE"
HEDGE_SUBJECT: Final = "convert.hedge"
DLQ_STREAM: Final = "CONVERT_HEDGE_DLQ"
DLQ_SUBJECT: Final = "convert.hedge.dlq"
CONSUMER: Final = "hedger"
#: The dead-letter stream keeps jobs this long (someone must look at them).
DLQ_MAX_AGE_S: Final = 90 * 86_400.0


class HedgeDelivery:
    """One delivery of a job. ``order_id`` is 0 for a payload that cannot be read."""

    def __init__(self, msg: Msg) -> None:
        self._msg = msg
        self.delivered = int(msg.metadata.num_delivered)
        self.order_id = _order_id(msg.data)

    async def ack(self) -> None:
        """Done (deleted from the work queue). Raises BusUnavailable."""
        try:
            await self._msg.ack()
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"hedge job ack: {exc}") from exc

    async def retry(self, delay_s: float) -> None:
        """Redeliver after ``delay_s``. Raises BusUnavailable (then ``ack_wait`` does)."""
        try:
            await self._msg.nak(delay=delay_s)
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"hedge job nak: {exc}") from exc

    async def working(self) -> None:
        """Still on it: restart the ``ack_wait`` clock. Raises BusUnavailable."""
        try:
            await self._msg.in_progress()
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"hedge job in progress: {exc}") from exc


def _order_id(data: bytes) -> int:
    try:
        doc = json.loads(data)
        value = doc["orderId"] if isinstance(doc, dict) else None
    except (ValueError, KeyError):
        return 0
    return value if isinstance(value, int) and 0 < value < 2**63 else 0


class HedgeJobs:
    """``HedgeQueue`` (enqueue) and the worker's side (:meth:`next`, :meth:`dead_letter`)
    over one bus connection."""

    def __init__(self, bus: Bus, *, max_deliveries: int = 10, ack_wait_s: float = 30.0) -> None:
        self._bus = bus
        self._js: JetStreamContext = bus.js
        self._max_deliver = max_deliveries + 1
        self._ack_wait = ack_wait_s
        self._sub: JetStreamContext.PullSubscription | None = None

    async def ensure(self) -> None:
        """Create or update both streams (idempotent). Raises BusUnavailable."""
        await self._bus._ensure_stream(api.StreamConfig(
            name=HEDGE_STREAM, subjects=[HEDGE_SUBJECT],
            retention=api.RetentionPolicy.WORK_QUEUE, storage=api.StorageType.FILE,
            num_replicas=self._bus._replicas, duplicate_window=self._bus._dedup))
        await self._bus._ensure_stream(api.StreamConfig(
            name=DLQ_STREAM, subjects=[DLQ_SUBJECT], retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE, num_replicas=self._bus._replicas,
            duplicate_window=self._bus._dedup, max_age=DLQ_MAX_AGE_S))
        # Created, or updated to this process's settings (max_deliver, ack_wait).
        try:
            await self._js.add_consumer(HEDGE_STREAM, self._consumer_config())
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"hedge consumer: {exc}") from exc

    def _consumer_config(self) -> api.ConsumerConfig:
        return api.ConsumerConfig(
            durable_name=CONSUMER, ack_policy=api.AckPolicy.EXPLICIT, ack_wait=self._ack_wait,
            max_deliver=self._max_deliver, max_ack_pending=1000,
            filter_subject=HEDGE_SUBJECT)

    async def enqueue(self, order_id: int) -> None:
        """Raises BusUnavailable: not (provably) stored."""
        try:
            await self._js.publish(HEDGE_SUBJECT, json.dumps({"orderId": order_id}).encode(),
                                   headers={"Nats-Msg-Id": f"hedge:{order_id}"}, timeout=5.0)
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"hedge job {order_id} not stored: {exc}") from exc

    async def next(self, timeout: float) -> HedgeDelivery | None:
        """The next job for this worker, None when none came within ``timeout``.
        Raises BusUnavailable."""
        try:
            if self._sub is None:
                self._sub = await self._js.pull_subscribe_bind(CONSUMER, HEDGE_STREAM)
            msgs = await self._sub.fetch(1, timeout=timeout)
        except (NatsTimeout, TimeoutError):
            return None
        except _NATS_ERRORS as exc:
            self._sub = None
            raise BusUnavailable(f"hedge queue: {exc}") from exc
        return HedgeDelivery(msgs[0]) if msgs else None

    async def dead_letter(self, order_id: int, deliveries: int, reason: str) -> None:
        """Store the job on the dead-letter stream (once per conversion; ``order_id`` 0:
        an unreadable job). Raises BusUnavailable."""
        body = {"orderId": order_id, "deliveries": deliveries, "reason": reason[:500]}
        headers = {"Nats-Msg-Id": f"hedge-dlq:{order_id}"} if order_id else None
        try:
            await self._js.publish(DLQ_SUBJECT, json.dumps(body).encode(), headers=headers,
                                   timeout=5.0)
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"dead letter of hedge job {order_id}: {exc}") from exc

    async def dead_letters(self, limit: int = 1000) -> list[dict[str, object]]:
        """The oldest ``limit`` jobs on the dead-letter stream (operators and tests); an
        unreadable one as ``{"raw": text}``. Raises BusUnavailable."""
        out: list[dict[str, object]] = []
        try:
            info = await self._js.stream_info(DLQ_STREAM)
            if info.state.messages == 0:
                return out
            last = min(info.state.last_seq, info.state.first_seq + limit - 1)
            for seq in range(info.state.first_seq, last + 1):
                raw = await self._js.get_msg(DLQ_STREAM, seq)
                if not raw.data:
                    continue
                try:
                    out.append(json.loads(raw.data))
                except ValueError:
                    out.append({"raw": raw.data.decode("utf-8", "replace")[:1000]})
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"dead-letter stream: {exc}") from exc
        return out

    async def close(self) -> None:
        """Leave the consumer (it stays for the next worker)."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(*_NATS_ERRORS):
                await sub.unsubscribe()
