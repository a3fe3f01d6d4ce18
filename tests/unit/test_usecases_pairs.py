"""The pairs use cases over in-memory ports: the one SetTrading builder and message-id
scheme, the kill switch's rule for every caller, and nothing recorded when the engine
did not take a change."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from tradeplane.domain import codec
from tradeplane.domain.access import Role
from tradeplane.domain.model import SetTrading, TradingState
from tradeplane.usecases.audit import Actor, AuditRecord
from tradeplane.usecases.errors import Invalid, NotFound, Unavailable
from tradeplane.usecases.pairs import KillSwitch, PairRow, Pairs, trading_message

ACTOR = Actor("cli", "ops", Role.SUPER_ADMIN, "cli")


@dataclass
class State:
    pairs: dict[str, PairRow]
    kill: KillSwitch | None = None
    audit: list[AuditRecord] = field(default_factory=list)


class MemoryTx:
    def __init__(self, state: State) -> None:
        self.s = state

    async def audit(self, record: AuditRecord) -> None:
        self.s.audit.append(record)

    async def pair(self, symbol: str) -> PairRow | None:
        return self.s.pairs.get(symbol)

    async def set_trading(self, symbol: str, state: str) -> None:
        p = self.s.pairs[symbol]
        self.s.pairs[symbol] = PairRow(p.symbol, state, p.maker_fee_ppm, p.taker_fee_ppm)

    async def set_fees(self, symbol: str, maker_ppm: int, taker_ppm: int) -> None:
        p = self.s.pairs[symbol]
        self.s.pairs[symbol] = PairRow(p.symbol, p.trading, maker_ppm, taker_ppm)

    async def trading_states(self) -> dict[str, str]:
        return {s: p.trading for s, p in sorted(self.s.pairs.items())}

    async def kill_switch(self) -> KillSwitch | None:
        return self.s.kill

    async def set_kill_switch(self, value: KillSwitch | None) -> None:
        self.s.kill = value


class MemoryStore:
    """Transactions that keep their changes only when the use case completes."""

    def __init__(self, state: State) -> None:
        self.state = state

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryTx]:
        work = copy.deepcopy(self.state)
        yield MemoryTx(work)
        self.state.pairs, self.state.kill, self.state.audit = work.pairs, work.kill, work.audit


class Recorder:
    """The pair control, the command log and the gateways, recording what they were told
    in one sequence."""

    def __init__(self, refuse: bool = False) -> None:
        self.seen: list[tuple[str, ...]] = []
        self.refuse = refuse

    async def set_trading(self, symbol: str, state: str) -> None:
        if self.refuse:
            raise Unavailable("engine unreachable")
        self.seen.append(("control", symbol, state))

    async def set_fees(self, symbol: str, maker_ppm: int, taker_ppm: int) -> None:
        self.seen.append(("fees", symbol, str(maker_ppm), str(taker_ppm)))

    async def append(self, symbol: str, data: bytes, msg_id: str) -> int:
        [cmd] = codec.decode_commands(data)
        assert isinstance(cmd, SetTrading)
        self.seen.append(("log", symbol, TradingState(cmd.state).name))
        return len(self.seen)

    async def pairs_changed(self) -> None:
        self.seen.append(("pairs_changed",))

    async def kill_switch(self, on: bool) -> None:
        self.seen.append(("gateways", "kill" if on else "trade"))


def _pairs(state: State, rec: Recorder) -> Pairs:
    return Pairs(MemoryStore(state), rec, rec, rec, lambda: 1_000)


def _state() -> State:
    return State({s: PairRow(s, "enabled", 1000, 1000) for s in ("BTCUSDT", "ETHUSDT")})


def test_every_set_trading_is_built_once_with_a_message_id_naming_symbol_cause_and_state(
) -> None:
    data, msg_id = trading_message("BTCUSDT", "cancel-only", "gen7", 42)
    assert codec.decode_commands(data) == [SetTrading(TradingState.CANCEL_ONLY, 42)]
    assert msg_id == "tBTCUSDT:gen7:cancel-only"
    with pytest.raises(Invalid):
        trading_message("BTCUSDT", "paused", "gen7", 42)


async def test_a_trading_change_reaches_the_engine_the_table_and_the_audit_log() -> None:
    state, rec = _state(), Recorder()
    after = await _pairs(state, rec).set_trading(ACTOR, "btcusdt", "halted")
    assert after["trading"] == "halted" and state.pairs["BTCUSDT"].trading == "halted"
    assert rec.seen == [("control", "BTCUSDT", "halted"), ("pairs_changed",)]
    [entry] = state.audit
    assert (entry.actor, entry.role, entry.action, entry.target) == (
        "cli:ops", "SuperAdmin", "pair.trading", "pair:BTCUSDT")
    assert (entry.before["trading"], entry.after["trading"]) == ("enabled", "halted")


async def test_under_the_kill_switch_a_trading_change_only_sets_the_state_it_returns_to(
) -> None:
    state, rec = _state(), Recorder()
    cases = _pairs(state, rec)
    await cases.kill_switch_on(ACTOR, "incident")
    rec.seen.clear()
    await cases.set_trading(ACTOR, "BTCUSDT", "cancel-only")
    assert rec.seen == [("pairs_changed",)]  # the engine stays halted
    assert state.kill is not None and state.kill.pairs["BTCUSDT"] == "cancel-only"
    off = await cases.kill_switch_off(ACTOR)
    assert off["pairs"] == {"BTCUSDT": "cancel-only", "ETHUSDT": "enabled"}


async def test_the_kill_switch_stops_gateways_before_engines_and_revives_engines_first(
) -> None:
    state, rec = _state(), Recorder()
    cases = _pairs(state, rec)
    on = await cases.kill_switch_on(ACTOR, "incident")
    assert on["symbols"] == ["BTCUSDT", "ETHUSDT"] and on["by"] == "ops"
    assert rec.seen == [("gateways", "kill"), ("log", "BTCUSDT", "HALTED"),
                        ("log", "ETHUSDT", "HALTED")]
    rec.seen.clear()
    await cases.kill_switch_on(ACTOR, "again")  # re-sends the halts, records nothing
    assert [e.action for e in state.audit] == ["killswitch.set"]
    rec.seen.clear()
    await cases.kill_switch_off(ACTOR)
    assert rec.seen == [("log", "BTCUSDT", "ENABLED"), ("log", "ETHUSDT", "ENABLED"),
                        ("gateways", "trade"), ("pairs_changed",)]
    assert [(e.before["on"], e.after["on"]) for e in state.audit] == [(False, True),
                                                                      (True, False)]


async def test_a_change_the_engine_did_not_take_changes_and_records_nothing() -> None:
    state, rec = _state(), Recorder(refuse=True)
    with pytest.raises(Unavailable):
        await _pairs(state, rec).set_trading(ACTOR, "BTCUSDT", "halted")
    assert state.pairs["BTCUSDT"].trading == "enabled" and state.audit == []


async def test_an_unknown_pair_or_state_is_refused_before_anything_changes() -> None:
    state, rec = _state(), Recorder()
    with pytest.raises(NotFound):
        await _pairs(state, rec).set_trading(ACTOR, "NOPE", "halted")
    with pytest.raises(Invalid):
        await _pairs(state, rec).set_trading(ACTOR, "BTCUSDT", "off")
    assert rec.seen == [] and state.audit == []
