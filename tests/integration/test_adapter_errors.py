"""Adapters translate their library's errors at their boundary: with the connection gone,
every call a service makes raises the adapter's own Unavailable class (the library's
exception kept as ``__cause__``), never a nats, asyncpg or redis exception."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import nats.errors
import pytest
import redis.exceptions

from tradeplane.adapters import accounts_db, db, marketstore
from tradeplane.adapters.bus import Bus, BusError, BusUnavailable, request, wallet_events
from tradeplane.adapters.cache import CacheError, MarketCache
from tradeplane.adapters.listenkeys import ListenKeyError, ListenKeyStore
from tradeplane.domain.errors import TradeplaneError, Unavailable
from tradeplane.domain.model import OrderType, Side, TimeInForce
from tradeplane.platform.servers import free_port
from tradeplane.usecases.orders import OrderRequest

pytestmark = pytest.mark.integration


async def _noop(*_: Any) -> None:
    return None


def _assert_translated(exc: BaseException, cls: type[TradeplaneError]) -> None:
    assert isinstance(exc, cls)
    assert isinstance(exc, Unavailable)
    assert exc.__cause__ is not None  # the library's error, kept for the log


# ---------------------------------------------------------------------------- NATS
BUS_CALLS: dict[str, Callable[[Bus], Awaitable[object]]] = {
    "ensure_symbol": lambda b: b.ensure_symbol("ERRUSDT"),
    "ensure_events": lambda b: b.ensure_events(),
    "publish_command": lambda b: b.publish_command("ERRUSDT", b"x", "m1"),
    "follow_commands": lambda b: b.follow_commands("ERRUSDT", 1, lambda *_: None),
    "last_command_seq": lambda b: b.last_command_seq("ERRUSDT"),
    "publish_events": lambda b: b.publish_events("ERRUSDT", b"x", "e1"),
    "publish_events_fenced": lambda b: b.publish_events_fenced("ERRUSDT", b"x", "e2", 0),
    "last_event": lambda b: b.last_event("ERRUSDT"),
    "publish": lambda b: b.publish("md.ERRUSDT.x", b"x"),
    "subscribe": lambda b: b.subscribe("md.ERRUSDT.x", _noop),
    "ensure_leases": lambda b: b.ensure_leases(5.0),
    "save_snapshot": lambda b: b.save_snapshot("ERRUSDT", b"x"),
    "load_snapshot": lambda b: b.load_snapshot("ERRUSDT"),
    "wallet_events": lambda b: wallet_events(b, "w1"),
    "request": lambda b: request(b, "wallet.w1.tip", b"", 0.5),
}


@pytest.mark.parametrize("call", BUS_CALLS.values(), ids=BUS_CALLS.keys())
async def test_every_bus_call_on_a_closed_connection_is_bus_unavailable(
    nats_url: str, call: Callable[[Bus], Awaitable[object]]
) -> None:
    bus = await Bus.connect(nats_url, name="test-adapter-errors")
    await bus.nc.close()
    with pytest.raises(BusError) as info:
        await call(bus)
    _assert_translated(info.value, BusUnavailable)
    assert isinstance(info.value.__cause__, nats.errors.Error)


async def test_an_unsubscribe_after_the_connection_closed_is_bus_unavailable(
    nats_url: str,
) -> None:
    bus = await Bus.connect(nats_url, name="test-adapter-errors")
    unsubscribe = await bus.subscribe("md.ERRUSDT.y", _noop)
    await bus.nc.close()
    with pytest.raises(BusUnavailable):
        await unsubscribe()


async def test_an_open_connection_still_answers(nats_url: str) -> None:
    bus = await Bus.connect(nats_url, name="test-adapter-errors")
    try:
        await bus.ensure_events()
        assert await bus.last_event("NOSUCHPAIR") is None  # not found is an answer
        assert await bus.load_snapshot("NOSUCHPAIR") is None
        await bus.publish("md.ERRUSDT.z", b"x")
    finally:
        await bus.close()


# ---------------------------------------------------------------------------- PostgreSQL
async def test_postgres_unreachable_is_database_unavailable() -> None:
    with pytest.raises(db.DatabaseError) as info:
        await db.create_pool(f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    _assert_translated(info.value, db.DatabaseUnavailable)


_ORDER = OrderRequest(1, "BTCUSDT", "c1", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 1, 1,
                      0, False, "USDT", 1, 1)

DB_CALLS: dict[str, Callable[[db.Pool], Awaitable[object]]] = {
    "balances": lambda p: db.balances(p, 1),
    "account_id": lambda p: db.account_id(p, "nobody"),
    "get_api_key": lambda p: db.get_api_key(p, "nokey"),
    "settlement_cursors": lambda p: db.settlement_cursors(p),
    "consumer_position": lambda p: db.consumer_position(p, "nobody"),
    "balances_of": lambda p: db.balances_of(p, {(1, "BTC")}),
    "load_pairs": lambda p: db.load_pairs(p),
    "locked_totals": lambda p: db.locked_totals(p),
    "fetch_klines": lambda p: marketstore.fetch_klines(p, "BTCUSDT", "1m", 0, 1, 10),
    "accounts_db.get_flag": lambda p: accounts_db.get_flag(p, "kill"),
    "accounts_db.user_by_email": lambda p: accounts_db.user_by_email(p, "a@example.com"),
    "accounts_db.get_key": lambda p: accounts_db.get_key(p, "nokey"),
    # The order path (found by ``tradeplane chaos``, stop-postgres: the gateway answered
    # 500, not 503, while PostgreSQL restarted).
    "place_orders": lambda p: db.place_orders(p, [_ORDER]),
    "get_order": lambda p: db.get_order(p, 1, "BTCUSDT", 1, None),
    "open_orders": lambda p: db.open_orders(p, 1, None),
    "rename_order": lambda p: db.rename_order(p, 1, "a", "b"),
    "get_order_list": lambda p: db.get_order_list(p, 1, 1, None),
    "open_order_lists": lambda p: db.open_order_lists(p, 1),
    "list_orders": lambda p: db.list_orders(p, [1]),
    "all_orders": lambda p: db.all_orders(p, 1, "BTCUSDT", None, None, None, 10),
    "order_trades": lambda p: db.order_trades(p, "BTCUSDT", 1),
    "my_trades": lambda p: db.my_trades(p, 1, "BTCUSDT", None, None, None, None, 10),
    "recent_public_trades": lambda p: db.recent_public_trades(p, "BTCUSDT", None, 10),
    "pending_orders": lambda p: db.pending_orders(p, 0),
}


@pytest.mark.parametrize("call", DB_CALLS.values(), ids=DB_CALLS.keys())
async def test_every_db_call_on_a_closed_pool_is_database_unavailable(
    pg_url: str, call: Callable[[db.Pool], Awaitable[object]]
) -> None:
    pool = await db.create_pool(pg_url, size=1)
    await pool.close()
    with pytest.raises(db.DatabaseError) as info:
        await call(pool)
    _assert_translated(info.value, db.DatabaseUnavailable)
    assert isinstance(info.value.__cause__, asyncpg.InterfaceError)


# ---------------------------------------------------------------------------- Redis
async def test_redis_unreachable_is_the_adapters_own_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(CacheError) as cache_info:
        await MarketCache.connect(url)
    _assert_translated(cache_info.value, CacheError)
    with pytest.raises(ListenKeyError) as lk_info:
        await ListenKeyStore.connect(url)
    _assert_translated(lk_info.value, ListenKeyError)
    assert isinstance(lk_info.value.__cause__, redis.exceptions.RedisError | OSError)
