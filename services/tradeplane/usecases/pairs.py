"""Pairs: the single owner of a pair's trading state and fees, and of the kill switch.

Every ``SetTrading`` on a symbol's command log is made by :func:`trading_message` (the
admin API, the CLI, the engine's own enforcement and the operator alike), with one
message-id scheme: ``t<SYMBOL>:<cause>:<state>``. ``cause`` names the one change — an
admin request and its time, the log position the engine decided on, a TradingPair's
generation — so a retry of that change is de-duplicated by JetStream and a different
change never is.

Every change is audited in the same transaction as the pairs table and the kill-switch
flag. While the kill switch is on, a pair's trading change only sets the state it
returns to when the switch is lifted (for every caller).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from tradeplane.domain import codec
from tradeplane.domain.access import AdminAction
from tradeplane.domain.model import SetTrading, TradingState
from tradeplane.domain.pairs import TRADING_STATES
from tradeplane.usecases.audit import Actor, AuditLog
from tradeplane.usecases.errors import Invalid, NotFound

KILL_SWITCH = "kill_switch"


# --------------------------------------------------------------------------- SetTrading
def trading_msg_id(symbol: str, state: str, cause: str) -> str:
    """The one message-id scheme of SetTrading commands (see the module docstring)."""
    return f"t{symbol}:{cause}:{state}"


def trading_message(symbol: str, state: str, cause: str, now_ms: int) -> tuple[bytes, str]:
    """The one SetTrading builder: the encoded command and its message id.

    Raises:
        Invalid: ``state`` is not enabled, halted or cancel-only.
    """
    if state not in TRADING_STATES:
        raise Invalid(f"unknown trading state {state!r}")
    cmd = SetTrading(TradingState(TRADING_STATES[state]), now_ms)
    return codec.encode([cmd]), trading_msg_id(symbol, state, cause)


# --------------------------------------------------------------------------- typed rows
@dataclass(frozen=True, slots=True)
class PairRow:
    symbol: str
    trading: str
    maker_fee_ppm: int
    taker_fee_ppm: int

    def doc(self) -> dict[str, Any]:
        """As the admin API shows it and the audit log records it."""
        return {"symbol": self.symbol, "trading": self.trading,
                "makerFeePpm": self.maker_fee_ppm, "takerFeePpm": self.taker_fee_ppm}


@dataclass(frozen=True, slots=True)
class KillSwitch:
    """The kill switch while on: who threw it, why, and the state each pair returns to."""

    by: str
    reason: str
    pairs: dict[str, str] = field(default_factory=dict)

    def doc(self) -> dict[str, Any]:
        return {"on": True, "by": self.by, "reason": self.reason, "pairs": dict(self.pairs)}


# --------------------------------------------------------------------------- ports
class PairsTx(AuditLog, Protocol):
    """One transaction on the pairs table, the kill-switch flag and the audit log."""

    async def pair(self, symbol: str) -> PairRow | None:
        """The pair, locked until the transaction ends."""
        ...

    async def set_trading(self, symbol: str, state: str) -> None: ...

    async def set_fees(self, symbol: str, maker_ppm: int, taker_ppm: int) -> None: ...

    async def trading_states(self) -> dict[str, str]: ...

    async def kill_switch(self) -> KillSwitch | None: ...

    async def set_kill_switch(self, value: KillSwitch | None) -> None: ...


class PairStore(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[PairsTx]: ...


class PairControl(Protocol):
    """Where a pair's trading state and fees change besides the pairs table: the symbol's
    command log (local mode) or its TradingPair resource (under the operator).

    Both methods raise :class:`~tradeplane.usecases.errors.Unavailable`."""

    async def set_trading(self, symbol: str, state: str) -> None: ...

    async def set_fees(self, symbol: str, maker_ppm: int, taker_ppm: int) -> None: ...


class CommandLog(Protocol):
    """The symbols' command logs. Raises Unavailable when a command is not stored."""

    async def append(self, symbol: str, data: bytes, msg_id: str) -> int: ...


class Gateways(Protocol):
    """What every gateway replica must learn at once."""

    async def pairs_changed(self) -> None: ...

    async def kill_switch(self, on: bool) -> None: ...


# --------------------------------------------------------------------------- use cases
class Pairs:
    """Halt, resume, cancel-only, fees and the kill switch, each audited.

    ``clock`` gives milliseconds since the epoch."""

    def __init__(self, store: PairStore, control: PairControl, log: CommandLog,
                 gateways: Gateways, clock: Callable[[], int]) -> None:
        self.store = store
        self.control = control
        self.log = log
        self.gateways = gateways
        self.clock = clock

    async def set_trading(self, actor: Actor, symbol: str, state: str) -> dict[str, Any]:
        """The pair's new trading state, live; under the kill switch, the state it
        returns to. Returns the pair as it now is (its ``trading`` the state asked).

        Raises:
            Invalid: an unknown state. NotFound: no such pair.
            Unavailable: the engine (or the TradingPair) did not take it; nothing changed.
        """
        if state not in TRADING_STATES:
            raise Invalid(f"unknown trading state {state!r}")
        async with self.store.transaction() as tx:
            pair = await _pair(tx, symbol)
            kill = await tx.kill_switch()
            if kill is not None:
                # Halted by the kill switch: this becomes the state the pair resumes to.
                pair = replace(pair, trading=kill.pairs.get(pair.symbol, "enabled"))
                await tx.set_kill_switch(replace(kill, pairs={**kill.pairs,
                                                              pair.symbol: state}))
            else:
                await self.control.set_trading(pair.symbol, state)
                await tx.set_trading(pair.symbol, state)
            after = replace(pair, trading=state)
            await tx.audit(actor.record(AdminAction.PAIR_TRADING, f"pair:{pair.symbol}",
                                        pair.doc(), after.doc()))
        await self.gateways.pairs_changed()
        return after.doc()

    async def set_fees(self, actor: Actor, symbol: str, maker_ppm: int,
                       taker_ppm: int) -> dict[str, Any]:
        """New maker/taker fees in parts per million.

        Raises:
            Invalid: a fee outside [0, 10^6). NotFound: no such pair.
            Unavailable: the TradingPair was not updated; nothing changed.
        """
        if not (0 <= maker_ppm < 1_000_000 and 0 <= taker_ppm < 1_000_000):
            raise Invalid("fees are parts per million in [0, 1000000)")
        async with self.store.transaction() as tx:
            pair = await _pair(tx, symbol)
            await self.control.set_fees(pair.symbol, maker_ppm, taker_ppm)
            await tx.set_fees(pair.symbol, maker_ppm, taker_ppm)
            after = replace(pair, maker_fee_ppm=maker_ppm, taker_fee_ppm=taker_ppm)
            await tx.audit(actor.record(AdminAction.PAIR_FEES, f"pair:{pair.symbol}",
                                        pair.doc(), after.doc()))
        await self.gateways.pairs_changed()
        return after.doc()

    async def kill_switch_state(self) -> dict[str, Any]:
        async with self.store.transaction() as tx:
            kill = await tx.kill_switch()
        return {"on": False} if kill is None else kill.doc()

    async def kill_switch_on(self, actor: Actor, reason: str) -> dict[str, Any]:
        """Halt every symbol: the gateways first (at once), then every engine. Each pair's
        state is kept, to be restored when the switch is lifted. Again while on: the halts
        are re-sent, nothing is recorded. Returns the switch, ``symbols`` those halted.

        Raises:
            Unavailable: some engine's log did not take its halt (the switch is on and
                the gateways refuse trading; call again).
        """
        async with self.store.transaction() as tx:
            kill = await tx.kill_switch()
            if kill is None:
                kill = KillSwitch(actor.name, reason,
                                  await tx.trading_states())
                await tx.set_kill_switch(kill)
                await tx.audit(actor.record(AdminAction.KILL_SWITCH, "platform",
                                            {"on": False}, kill.doc()))
        await self.gateways.kill_switch(True)
        now = self.clock()
        symbols = sorted(kill.pairs)
        for symbol in symbols:
            await self.log.append(symbol, *trading_message(symbol, "halted", f"kill-{now}",
                                                           now))
        return {**kill.doc(), "symbols": symbols}

    async def kill_switch_off(self, actor: Actor) -> dict[str, Any]:
        """Every engine back to the state its pair had when the switch was thrown (or was
        given since), then the gateways. Again while off: the states are re-sent.

        Raises:
            Unavailable: some engine's log did not take its state (call again).
        """
        async with self.store.transaction() as tx:
            kill = await tx.kill_switch()
            states = await tx.trading_states()
            if kill is not None:
                states.update(kill.pairs)
                for symbol, state in sorted(states.items()):  # the order rows are locked in
                    await tx.set_trading(symbol, state)
                await tx.set_kill_switch(None)
                await tx.audit(actor.record(AdminAction.KILL_SWITCH, "platform", kill.doc(),
                                            {"on": False}))
        now = self.clock()
        for symbol, state in states.items():
            await self.log.append(symbol, *trading_message(symbol, state, f"revive-{now}",
                                                           now))
        await self.gateways.kill_switch(False)
        await self.gateways.pairs_changed()
        return {"on": False, "pairs": states}


async def _pair(tx: PairsTx, symbol: str) -> PairRow:
    pair = await tx.pair(symbol.upper())
    if pair is None:
        raise NotFound(f"no pair {symbol}")
    return pair
