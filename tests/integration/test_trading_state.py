"""The kill switch: halting a pair is a command on its log, applied live by its engine,
recorded by settlement and enforced by the gateway; a rules file (the operator's
ConfigMap) registers a pair and brings its engine to the desired trading state."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from tests.support.harness import Platform, eventually

from tradeplane.adapters.bus import Bus
from tradeplane.domain import codec
from tradeplane.domain.model import SetTrading, TradingState
from tradeplane.services import run_matching

pytestmark = pytest.mark.integration



async def _set_trading(plat: Platform, symbol: str, state: TradingState) -> None:
    bus = await Bus.connect(plat.settings.nats_url, name="test")
    try:
        now = int(time.time() * 1000)
        await bus.publish_command(symbol, codec.encode([SetTrading(state, now)]), f"t{now}")
    finally:
        await bus.close()


async def test_halt_stops_new_orders_and_cancels_and_resume_restores_trading(
    plat: Platform,
) -> None:
    t = await plat.trader("halted", {"USDT": "10000"})
    order = {"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
             "price": "2000", "quantity": "1"}
    resting = (await t.api.signed("POST", "/api/v3/order", **order)).json()
    assert resting["status"] == "NEW"

    await _set_trading(plat, "ETHUSDT", TradingState.HALTED)

    async def pair_is(state: str) -> bool:
        row = await plat.pool.fetchval("SELECT trading FROM pairs WHERE symbol='ETHUSDT'")
        return bool(row == state)

    await eventually(lambda: pair_is("halted"))

    async def refused() -> bool:
        r = await t.api.signed("POST", "/api/v3/order", **order)
        return r.json() == {"code": -1013, "msg": "Market is closed."}

    await eventually(refused, timeout=20)
    info = await t.api.public("/api/v3/exchangeInfo", symbol="ETHUSDT")
    assert info["symbols"][0]["status"] == "HALT"
    r = await t.api.signed("DELETE", "/api/v3/order", symbol="ETHUSDT",
                           orderId=resting["orderId"])
    assert r.json()["code"] == -2011  # halted: not even cancels
    balances = await plat.balances(t.account)
    assert balances["USDT"][1] > 0  # the resting order still holds its funds

    await _set_trading(plat, "ETHUSDT", TradingState.ENABLED)
    await eventually(lambda: pair_is("enabled"))

    async def accepted() -> bool:
        r = await t.api.signed("DELETE", "/api/v3/order", symbol="ETHUSDT",
                               orderId=resting["orderId"])
        return r.status_code == 200 and r.json()["status"] == "CANCELED"

    await eventually(accepted, timeout=20)
    assert (await plat.balances(t.account))["USDT"][1] == 0


async def test_rules_file_registers_the_pair_and_enforces_its_trading_state(
    plat: Platform, tmp_path: Path
) -> None:
    spec = {"base": "SOL", "quote": "USDT", "tickSize": "0.001", "lotSize": "0.01",
            "maxQuantity": "100000", "minNotional": "1", "makerFee": "0.0008",
            "takerFee": "0.001", "trading": "cancel-only"}
    path = tmp_path / "pair.json"
    path.write_text(json.dumps(spec))
    stop = asyncio.Event()
    task = asyncio.create_task(run_matching(plat.settings, "SOL-USDT", stop, str(path)))
    try:
        async def registered_and_enforced() -> bool:
            row = await plat.pool.fetchrow(
                "SELECT tick, maker_fee_ppm, trading FROM pairs WHERE symbol = 'SOLUSDT'")
            return row is not None and (row["tick"], row["maker_fee_ppm"],
                                        row["trading"]) == (100_000, 800, "cancel-only")

        await eventually(registered_and_enforced, timeout=20)

        # ... and the engine put the state on its own log, so replay reproduces it.
        async def logged() -> bool:
            bus = await Bus.connect(plat.settings.nats_url, name="test")
            try:
                if await bus.last_command_seq("SOLUSDT") == 0:
                    return False
                msg = await bus.js.get_last_msg("CMD_SOLUSDT", "cmd.SOLUSDT")
                return codec.decode_commands(msg.data or b"") == [
                    SetTrading(TradingState.CANCEL_ONLY, codec.decode_commands(
                        msg.data or b"")[0].ts)]
            finally:
                await bus.close()

        assert await eventually(logged)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
