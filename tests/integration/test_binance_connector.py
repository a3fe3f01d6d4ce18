"""``binance-connector``, Binance's own Python client, unchanged against the gateway: only
its ``base_url`` points at the platform.

It sends every request with ``Content-Type: application/json;charset=utf-8`` and the
signed parameters in the query string, the body empty (POST and PUT included), which
Binance accepts whatever the content type of an empty body. The client is synchronous
(``requests``): each call runs in a thread, the platform in the test's event loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from binance.error import ClientError
from binance.spot import Spot
from tests.support.harness import Platform, Trader

pytestmark = pytest.mark.integration

T = TypeVar("T")


class Connector:
    """A ``binance.spot.Spot`` whose calls do not block the event loop the platform runs in."""

    def __init__(self, plat: Platform, trader: Trader | None = None) -> None:
        keys = {} if trader is None else {"api_key": trader.api_key,
                                          "api_secret": trader.secret}
        self.spot = Spot(base_url=plat.base_url, timeout=20, **keys)

    async def __call__(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(functools.partial(method, *args, **kwargs))

    def close(self) -> None:
        self.spot.session.close()


async def test_a_session_of_orders_account_and_listen_key(plat: Platform) -> None:
    trader = await plat.trader("connector", {"USDT": "1000"})
    client = Connector(plat, trader)
    spot = client.spot
    try:
        assert spot.session.headers["Content-Type"] == "application/json;charset=utf-8"
        placed = await client(spot.new_order, "ETHUSDT", "BUY", "LIMIT", timeInForce="GTC",
                              quantity="0.1", price="2500", newClientOrderId="connector-1",
                              newOrderRespType="RESULT")
        assert (placed["symbol"], placed["status"], placed["origQty"], placed["price"],
                placed["clientOrderId"]) == (
            "ETHUSDT", "NEW", "0.10000000", "2500.00000000", "connector-1")
        order_id = placed["orderId"]

        got = await client(spot.get_order, "ETHUSDT", orderId=order_id)
        assert (got["orderId"], got["status"], got["executedQty"]) == (
            order_id, "NEW", "0.00000000")
        by_client_id = await client(spot.get_order, "ETHUSDT",
                                    origClientOrderId="connector-1")
        assert by_client_id["orderId"] == order_id

        account = await client(spot.account)
        usdt = next(b for b in account["balances"] if b["asset"] == "USDT")
        assert (usdt["free"], usdt["locked"]) == ("750.00000000", "250.00000000")
        assert account["canTrade"] is True

        canceled = await client(spot.cancel_order, "ETHUSDT", orderId=order_id)
        assert (canceled["orderId"], canceled["status"]) == (order_id, "CANCELED")
        account = await client(spot.account)
        usdt = next(b for b in account["balances"] if b["asset"] == "USDT")
        assert (usdt["free"], usdt["locked"]) == ("1000.00000000", "0.00000000")

        # Refusals come back as the connector's ClientError with Binance's code and text.
        with pytest.raises(ClientError) as refused:
            await client(spot.cancel_order, "ETHUSDT", orderId=order_id)
        assert (refused.value.status_code, refused.value.error_code,
                refused.value.error_message) == (400, -2011, "Unknown order sent.")

        listen_key = (await client(spot.new_listen_key))["listenKey"]
        assert listen_key
        assert await client(spot.renew_listen_key, listen_key) == {}
        assert await client(spot.close_listen_key, listen_key) == {}
        with pytest.raises(ClientError) as gone:
            await client(spot.renew_listen_key, listen_key)
        assert gone.value.error_code == -1125
    finally:
        client.close()


async def test_a_market_order_fills_and_trades_are_listed(plat: Platform) -> None:
    maker = await plat.trader("connector-maker", {"ETH": "1"})
    taker = await plat.trader("connector-taker", {"USDT": "1000"})
    makers, takers = Connector(plat, maker), Connector(plat, taker)
    try:
        rest = await makers(makers.spot.new_order, "ETHUSDT", "SELL", "LIMIT",
                            timeInForce="GTC", quantity="0.2", price="3000")
        assert rest["status"] == "NEW"
        filled = await takers(takers.spot.new_order, "ETHUSDT", "BUY", "MARKET",
                              quantity="0.2", newOrderRespType="FULL")
        assert (filled["status"], filled["executedQty"], filled["cummulativeQuoteQty"]) == (
            "FILLED", "0.20000000", "600.00000000")
        [fill] = filled["fills"]
        assert (fill["price"], fill["qty"], fill["commissionAsset"]) == (
            "3000.00000000", "0.20000000", "ETH")
        [mine] = await takers(takers.spot.my_trades, "ETHUSDT")
        assert (mine["orderId"], mine["isBuyer"], mine["isMaker"]) == (
            filled["orderId"], True, False)
    finally:
        makers.close()
        takers.close()


async def test_public_and_wallet_calls(plat: Platform) -> None:
    trader = await plat.trader("connector-wallet", {"BTC": "0.5"})
    public, client = Connector(plat), Connector(plat, trader)
    try:
        assert await public(public.spot.ping) == {}
        assert (await public(public.spot.time))["serverTime"] > 0
        info = await public(public.spot.exchange_info, symbol="BTCUSDT")
        assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT"]
        assert await public(public.spot.system_status) == {"status": 0, "msg": "normal"}
        fees = await client(client.spot.trade_fee, symbol="BTCUSDT")
        assert fees == [{"symbol": "BTCUSDT", "makerCommission": "0.001",
                         "takerCommission": "0.001"}]
        coins = {c["coin"]: c for c in await client(client.spot.coin_info)}
        assert {"BTC", "ETH", "USDT"} <= set(coins)
        assert (coins["BTC"]["free"], coins["BTC"]["trading"]) == ("0.50000000", True)
        with pytest.raises(ClientError) as unknown:
            await client(client.spot.trade_fee, symbol="NOPE")
        assert (unknown.value.status_code, unknown.value.error_code) == (400, -1121)
    finally:
        public.close()
        client.close()
