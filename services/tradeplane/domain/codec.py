"""The one codec for commands, events and snapshots: MessagePack via msgspec."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from tradeplane.domain.errors import InvalidInput
from tradeplane.domain.model import Command, EventBatch

T = TypeVar("T")

_enc = msgspec.msgpack.Encoder()
_cmds_dec = msgspec.msgpack.Decoder(list[Command])
_batch_dec = msgspec.msgpack.Decoder(EventBatch)


class DecodeError(InvalidInput, ValueError):
    """A message on the bus could not be decoded."""


def encode(obj: Any) -> bytes:
    return _enc.encode(obj)


def decode_commands(data: bytes) -> list[Command]:
    """A command-stream message: a list of commands appended together.

    Raises DecodeError on a malformed message.
    """
    try:
        cmds: list[Command] = _cmds_dec.decode(data)
        return cmds
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from exc


def decode_batch(data: bytes) -> EventBatch:
    """Raises DecodeError on a malformed event batch."""
    try:
        return _batch_dec.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from exc


def decode_as(data: bytes, typ: type[T]) -> T:
    try:
        return msgspec.msgpack.decode(data, type=typ)
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from exc
