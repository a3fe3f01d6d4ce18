"""Rate limits as Binance's: request weight per address and per key per minute, orders
per key per 10 s and per day, usage headers on every answer, 429 (-1003/-1015) with
Retry-After over a limit, 418 bans that grow for repeat offenders; and limits that hold
under concurrent load. Every test runs against both accounting modes (counted in-process
and synced to Redis, or charged to Redis on every request).

Each test speaks from its own loopback address (127.0.0.x) so the per-address limits of
one test do not touch another's. The limits here are set explicitly (STRICT); Binance's,
the defaults, have tests of their own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis
from limits import RateLimitItemPerDay
from tests.support.harness import Platform, eventually, running_platform
from tests.support.security import FAST_HASHING, send_signed, signed_payload

from tradeplane.adapters.ratelimits import RedisRateLimitStore as RateLimitStore
from tradeplane.config import Settings
from tradeplane.domain.money import to_units
from tradeplane.gateway.errors import ApiError
from tradeplane.gateway.ratelimit import Hit, Limiter, Meter, route_cost

pytestmark = pytest.mark.integration

STRICT = {"ip_weight_per_minute": 100, "key_weight_per_minute": 50, "orders_per_10s": 5,
          "orders_per_day": 1000, "ban_after_429s": 3, "ban_window_s": 60, "ban_base_s": 1,
          "ban_max_s": 60}
PROXY = "127.0.0.2"  # connections from here are the ingress controller (trusted_proxies)
ORDER = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
         "price": "50000", "quantity": "0.001", "newOrderRespType": "ACK"}


@pytest.fixture(scope="module", params=[1000, 0], ids=["synced", "per-request"])
async def plat(request: pytest.FixtureRequest, nats_url: str, pg_url: str,
               redis_url: str) -> AsyncIterator[Platform]:
    async with running_platform(nats_url, pg_url, redis_url, rate_limit_sync_ms=request.param,
                                trusted_proxies=[f"{PROXY}/32"], **STRICT,
                                **FAST_HASHING) as p:
        yield p


def client(plat: Platform, ip: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=plat.base_url,
                             transport=httpx.AsyncHTTPTransport(local_address=ip),
                             limits=httpx.Limits(max_connections=200))


async def test_every_answer_reports_the_weight_used_this_minute(plat: Platform) -> None:
    async with client(plat, "127.0.0.10") as http:
        r = await http.get("/api/v3/ping")
        assert r.headers["X-MBX-USED-WEIGHT-1M"] == "1"
        r = await http.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 500})
        assert r.headers["X-MBX-USED-WEIGHT-1M"] == "26"  # depth 101-500 weighs 25
        r = await http.get("/api/v3/nothing-here")
        assert r.status_code == 404 and r.headers["X-MBX-USED-WEIGHT-1M"] == "27"
        info = (await http.get("/api/v3/exchangeInfo")).json()  # advertises what it enforces
        assert [x["limit"] for x in info["rateLimits"]] == [100, 5, 1000]


async def test_over_the_address_weight_limit_answers_429_with_retry_after(
    plat: Platform,
) -> None:
    async with client(plat, "127.0.0.11") as http:
        for used in (20, 40, 60, 80, 100):  # exchangeInfo weighs 20
            r = await http.get("/api/v3/exchangeInfo")
            assert r.status_code == 200 and r.headers["X-MBX-USED-WEIGHT-1M"] == str(used)
        r = await http.get("/api/v3/exchangeInfo")
        assert r.status_code == 429
        assert r.json()["code"] == -1003
        assert "100 request weight per 1 MINUTE" in r.json()["msg"]
        assert 1 <= int(r.headers["Retry-After"]) <= 60
    async with client(plat, "127.0.0.12") as other:  # another address is unaffected
        assert (await other.get("/api/v3/exchangeInfo")).status_code == 200


async def test_a_keys_weight_counts_across_addresses(plat: Platform) -> None:
    t = await plat.trader("key-weight", {"USDT": "100"})
    async with client(plat, "127.0.0.13") as a, client(plat, "127.0.0.14") as b:
        for http in (a, b):  # /account weighs 20: 40 of the key's 50
            r = await send_signed(http, "GET", "/api/v3/account", t.api_key,
                                  signed_payload({}, secret=t.secret))
            assert r.status_code == 200, r.text
        r = await send_signed(a, "GET", "/api/v3/account", t.api_key,
                              signed_payload({}, secret=t.secret))
        assert (r.status_code, r.json()["code"]) == (429, -1003)
        assert "50 request weight" in r.json()["msg"]


async def test_orders_per_10_seconds_are_counted_per_key_in_headers(plat: Platform) -> None:
    t = await plat.trader("order-count", {"USDT": "10000"})
    async with client(plat, "127.0.0.15") as http:
        for n in range(1, 6):
            r = await send_signed(http, "POST", "/api/v3/order", t.api_key,
                                  signed_payload(ORDER, secret=t.secret))
            assert r.status_code == 200, r.text
            assert r.headers["X-MBX-ORDER-COUNT-10S"] == str(n)
            assert r.headers["X-MBX-ORDER-COUNT-1D"] == str(n)
        r = await send_signed(http, "POST", "/api/v3/order", t.api_key,
                              signed_payload(ORDER, secret=t.secret))
        assert r.status_code == 429
        assert r.json() == {"code": -1015,
                            "msg": "Too many new orders; current limit is 5 orders per "
                                   "10 SECOND."}
        assert 1 <= int(r.headers["Retry-After"]) <= 10
    opened = (await t.api.signed("GET", "/api/v3/openOrders", symbol="BTCUSDT")).json()
    assert len(opened) == 5  # the refused order locked nothing and placed nothing
    assert await plat.balances(t.account) == {"USDT": (to_units("9750"), to_units("250"))}


async def test_repeat_offenders_get_418_bans_that_grow(plat: Platform) -> None:
    async with client(plat, "127.0.0.16") as http:
        statuses = [(await http.get("/api/v3/exchangeInfo")).status_code for _ in range(6)]
        statuses += [(await http.get("/api/v3/ping")).status_code for _ in range(2)]
        # Over the limit from the 6th request on; the third refusal is a ban instead.
        assert statuses == [200] * 5 + [429, 429, 418]
        r = await http.get("/api/v3/ping")
        assert r.status_code == 418 and r.json()["code"] == -1003
        assert "banned until" in r.json()["msg"]
        assert int(r.headers["Retry-After"]) == 1  # first ban: ban_base_s

        # The ban lives in Redis (every replica sees it) and ends by itself.
        redis = aioredis.from_url(plat.settings.redis_url)
        try:
            ban = RateLimitStore.ban_key("ip:127.0.0.16")
            assert await redis.pttl(ban) > 0

            async def ban_over() -> bool:
                return bool(await redis.exists(ban) == 0)

            await eventually(ban_over, timeout=10)
        finally:
            await redis.aclose()
        # Still over the minute's weight and already warned: the next refusal is a second
        # ban, twice as long.
        r = await http.get("/api/v3/ping")
        assert r.status_code == 418 and int(r.headers["Retry-After"]) == 2


async def test_limits_hold_under_concurrent_clients(plat: Platform) -> None:
    """60 concurrent clients on one address send 3 pings each (weight 1; the address may
    spend 100 a minute): exactly 100 get through."""
    async with client(plat, "127.0.0.17") as http:
        async def pinger() -> list[int]:
            return [(await http.get("/api/v3/ping")).status_code for _ in range(3)]

        results = await asyncio.gather(*(pinger() for _ in range(60)))
    codes = [c for r in results for c in r]
    assert codes.count(200) == 100
    assert set(codes) <= {200, 429, 418}


async def test_order_limits_hold_under_concurrent_orders(plat: Platform) -> None:
    t = await plat.trader("order-burst", {"USDT": "100000"})
    async with client(plat, "127.0.0.18") as http:
        rs = await asyncio.gather(*(
            send_signed(http, "POST", "/api/v3/order", t.api_key,
                        signed_payload({**ORDER, "newClientOrderId": f"burst-{i}"},
                                       secret=t.secret))
            for i in range(30)))
    assert sum(r.status_code == 200 for r in rs) == 5
    assert {r.json()["code"] for r in rs if r.status_code != 200} <= {-1015, -1003}
    opened = (await t.api.signed("GET", "/api/v3/openOrders", symbol="BTCUSDT")).json()
    assert len(opened) == 5


async def test_daily_order_limit_and_replicas_sharing_redis(redis_url: str) -> None:
    """Two gateway replicas (limiters) charging Redis on every request admit no more than
    the limit between them, and the daily order count is a limit of its own."""
    settings = Settings(dev_mode=True, redis_url=redis_url, rate_limit_sync_ms=0,
                        orders_per_day=7, orders_per_10s=1000)
    stores = [RateLimitStore(redis_url) for _ in range(2)]
    try:
        limiters = [Limiter(s, settings) for s in stores]
        await stores[0].storage.reset()

        async def place(i: int) -> bool:
            try:
                await limiters[i % 2].charge(Meter("192.0.2.1", 1, 1, True), "day-key")
            except ApiError as exc:
                assert exc.code == -1015 and "per 1 DAY" in exc.msg
                return False
            return True

        admitted = await asyncio.gather(*(place(i) for i in range(20)))
        assert sum(admitted) == 7
        item = RateLimitItemPerDay(7, namespace="ord1d")
        count = await stores[0].storage.get(Hit(item, ("key", "day-key"), 1).key)
        assert count == 20  # refused orders count too, as on Binance
    finally:
        for s in stores:
            await s.close()


async def test_behind_a_trusted_proxy_each_client_has_its_own_limits(plat: Platform) -> None:
    """Behind an Ingress every connection comes from the ingress controller: the client is
    the right-most X-Forwarded-For entry that is not a trusted proxy (what the client
    wrote in front of it is ignored), so one abuser does not spend everyone's budget."""
    async with client(plat, PROXY) as ingress:
        async def get(forwarded_for: str) -> httpx.Response:
            return await ingress.get("/api/v3/exchangeInfo",
                                     headers={"X-Forwarded-For": forwarded_for})

        for used in (20, 40, 60, 80, 100):
            r = await get("198.51.100.7")
            assert r.status_code == 200 and r.headers["X-MBX-USED-WEIGHT-1M"] == str(used)
        assert (await get("198.51.100.7")).status_code == 429
        # Claiming another address in front of the one the proxy saw changes nothing.
        assert (await get("198.51.100.8, 198.51.100.7")).status_code == 429
        # Another client behind the same proxy has its own budget.
        r = await get("198.51.100.8")
        assert r.status_code == 200 and r.headers["X-MBX-USED-WEIGHT-1M"] == "20"


def _limiter_settings(redis_url: str, sync_ms: int, **overrides: int) -> Settings:
    return Settings(dev_mode=True, redis_url=redis_url, rate_limit_sync_ms=sync_ms,
                    **overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize("sync_ms", [1000, 0], ids=["synced", "per-request"])
async def test_the_defaults_are_binances_limits(redis_url: str, sync_ms: int) -> None:
    """Without settings the gateway enforces Binance's limits: 6000 request weight a
    minute per address (24 ``depth?limit=5000`` of weight 250, not thousands), 100 orders
    per 10 s and 200,000 a day per key."""
    s = _limiter_settings(redis_url, sync_ms)
    assert (s.ip_weight_per_minute, s.key_weight_per_minute, s.orders_per_10s,
            s.orders_per_day) == (6000, 6000, 100, 200_000)
    store = RateLimitStore(redis_url)
    try:
        limiter = Limiter(store, s)
        ip = f"192.0.2.{10 + sync_ms % 7}"
        await store.storage.clear(Hit(limiter.ip_weight, ("ip", ip), 1).key)
        weight, _, _ = route_cost("GET", "/api/v3/depth", "symbol=BTCUSDT&limit=5000")
        assert weight == 250
        for n in range(1, 25):
            meter = Meter(ip, weight, 0, False)
            await limiter.charge(meter)
            assert meter.used_weight == 250 * n
        with pytest.raises(ApiError) as refused:
            await limiter.charge(Meter(ip, weight, 0, False))
        assert (refused.value.status, refused.value.code) == (429, -1003)
        assert "6000 request weight per 1 MINUTE" in refused.value.msg

        key = f"default-orders-{sync_ms}"
        await store.storage.clear(Hit(limiter.orders_10s, ("key", key), 1).key)
        await store.storage.clear(Hit(limiter.key_weight, ("key", key), 1).key)
        for _ in range(100):
            await limiter.charge(Meter("192.0.2.99", 1, 1, True), key)
        with pytest.raises(ApiError) as refused:
            await limiter.charge(Meter("192.0.2.99", 1, 1, True), key)
        assert refused.value.msg == ("Too many new orders; current limit is 100 orders per "
                                     "10 SECOND.")
    finally:
        await store.close()


@pytest.mark.parametrize("sync_ms", [1000, 0], ids=["synced", "per-request"])
async def test_a_burst_earns_one_ban_of_the_first_length_and_each_ban_doubles_once(
    redis_url: str, sync_ms: int
) -> None:
    """A burst of concurrent requests over the limit, on two replicas at once, is one
    offence streak: the first ban is ban_base_s (not one doubling per refusal in flight),
    and the next ban, earned after it ended, is exactly twice as long."""
    settings = _limiter_settings(redis_url, sync_ms, ip_weight_per_minute=10,
                                 ban_after_429s=3, ban_base_s=120)
    ip = f"192.0.2.{50 + sync_ms % 7}"
    subject = f"ip:{ip}"
    stores = [RateLimitStore(redis_url) for _ in range(2)]
    redis = aioredis.from_url(redis_url)
    try:
        probe = Limiter(stores[0], settings)
        ban = RateLimitStore.ban_key(subject)
        await redis.delete(ban)
        for key in (probe.ip_weight.key_for("ip", ip), probe.offences.key_for(subject),
                    probe.ban_levels.key_for(subject)):
            await stores[0].storage.clear(key)

        async def burst(n: int) -> list[int]:
            """``n`` concurrent requests over two replicas, as the guard answers them."""
            replicas = [Limiter(st, settings) for st in stores]

            async def request(i: int) -> int:
                limiter, meter = replicas[i % 2], Meter(ip, 1, 0, False)
                try:
                    await limiter.charge(meter)
                except ApiError as exc:
                    if exc.status == 429 and not meter.used_weight:  # refused from memory
                        exc = await limiter.note_refusal(meter) or exc
                    return exc.status
                return 200

            return list(await asyncio.gather(*(request(i) for i in range(n))))

        statuses = await burst(200)
        assert statuses.count(200) >= 10 and 418 in statuses
        assert 110_000 < await redis.pttl(ban) <= 120_000  # the first ban: 2 minutes
        assert await stores[0].storage.get(probe.ban_levels.key_for(subject)) == 1

        # The ban ends; the address goes on (fresh replicas: nothing remembered in
        # memory): its next ban is twice the last, and only twice.
        await redis.delete(ban)
        statuses = await burst(200)
        assert 418 in statuses
        assert 230_000 < await redis.pttl(ban) <= 240_000
        assert await stores[0].storage.get(probe.ban_levels.key_for(subject)) == 2
    finally:
        await redis.aclose()
        for st in stores:
            await st.close()
