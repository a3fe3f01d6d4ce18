"""The mixed load: several accounts placing LIMIT and MARKET orders, cancelling, amending,
placing OCO lists on two books and converting (Convert: a quote, then its acceptance),
through the REST API with signed requests (the demo client), in a thread of its own so
that faults and checks never stall it.

An order counts as acknowledged when the gateway answered 200 with its id: from then on
the exchange owes it; a conversion when ``acceptQuote`` answered 200 with its
``orderId``. Anything else (a refusal, a 503 while a server is down, a timeout) owes
nothing and is only counted.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from tradeplane.demo.client import ApiClient, signed_query


@dataclass(frozen=True)
class Market:
    symbol: str
    """Binance style, e.g. BTCUSDT."""
    reference: int
    """Centre of the load's prices, in cents."""
    qty_steps: tuple[str, ...]
    """Quantities the load picks from."""


MARKETS = (
    Market("BTCUSDT", 6_000_000, ("0.001", "0.002", "0.005")),
    Market("ETHUSDT", 300_000, ("0.01", "0.02", "0.05")),
)


@dataclass(frozen=True)
class Trader:
    account: int
    api_key: str
    secret: str


class SignedHttp:
    """One trader's signed REST requests, synchronous (the recovery probe's and the
    custody load's, each from its own thread)."""

    def __init__(self, base: str, trader: Trader, timeout: float = 3.0) -> None:
        self.http = httpx.Client(base_url=base, timeout=timeout)
        self.trader = trader

    def request(self, method: str, path: str, timeout: float | None = None,
                **params: str | int) -> httpx.Response:
        """Raises: httpx.HTTPError."""
        params["timestamp"] = int(time.time() * 1000)
        body = signed_query(self.trader.secret, params)
        headers = {"X-MBX-APIKEY": self.trader.api_key}
        wait = self.http.timeout if timeout is None else httpx.Timeout(timeout)
        if method == "POST":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            return self.http.request(method, path, content=body, headers=headers,
                                     timeout=wait)
        return self.http.request(method, f"{path}?{body}", headers=headers, timeout=wait)

    def close(self) -> None:
        self.http.close()


def _price(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


@dataclass
class Acked:
    """Acknowledged order ids, shared with the thread that checks them."""

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: list[int] = field(default_factory=list)
    _taken: int = 0

    def add(self, *ids: int) -> None:
        with self._lock:
            self._ids.extend(ids)

    def all(self) -> list[int]:
        with self._lock:
            return list(self._ids)

    def since_last(self) -> int:
        """How many were acknowledged since the previous call."""
        with self._lock:
            n = len(self._ids) - self._taken
            self._taken = len(self._ids)
            return n


class Load:
    """Runs the load in a thread until :meth:`stop`; :meth:`pause` and :meth:`resume`
    hold it while the stores are checked."""

    def __init__(self, base_url: str, traders: list[Trader], seed: int,
                 workers: int = 4) -> None:
        self.base_url = base_url
        self.traders = traders
        self.seed = seed
        self.workers = workers
        self.acked = Acked()
        self.converted = Acked()
        self.answers: Counter[str] = Counter()
        self._running = threading.Event()
        self._running.set()
        self._stopped = threading.Event()
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name="chaos-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def pause(self, timeout: float = 60.0) -> bool:
        """Stop placing new requests and wait for those in flight; False on timeout."""
        self._running.clear()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._busy_lock:
                if self._busy == 0:
                    return True
            time.sleep(0.02)
        return False

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stopped.set()
        self._running.set()
        self._thread.join(60)

    # ------------------------------------------------------------------ the thread
    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        clients = [ApiClient(self.base_url, t.api_key, t.secret,
                             httpx.AsyncClient(base_url=self.base_url, timeout=10.0))
                   for t in self.traders]
        try:
            await asyncio.gather(*(self._worker(i, clients) for i in range(self.workers)))
        finally:
            for c in clients:
                await c.close()

    async def _worker(self, index: int, clients: list[ApiClient]) -> None:
        rng = random.Random(self.seed * 1000 + index)
        mine: dict[int, list[tuple[str, int]]] = {i: [] for i in range(len(clients))}
        while not self._stopped.is_set():
            with self._busy_lock:
                running = self._running.is_set()
                if running:
                    self._busy += 1
            if not running:
                await asyncio.sleep(0.05)
                continue
            try:
                who = rng.randrange(len(clients))
                await self._one(rng, clients[who], mine[who])
            except (httpx.HTTPError, ValueError, KeyError) as exc:  # ValueError: not JSON
                self.answers[type(exc).__name__] += 1
                await asyncio.sleep(0.1)
            finally:
                with self._busy_lock:
                    self._busy -= 1

    async def _one(self, rng: random.Random, api: ApiClient,
                   open_: list[tuple[str, int]]) -> None:
        roll = rng.random()
        if open_ and roll < 0.2:
            symbol, oid = open_.pop(rng.randrange(len(open_)))
            r = await api.signed("DELETE", "/api/v3/order", symbol=symbol, orderId=oid)
            self.answers[f"cancel {r.status_code}"] += 1
            return
        if open_ and roll < 0.3:
            symbol, oid = open_[rng.randrange(len(open_))]
            r = await api.signed("PUT", "/api/v3/order/amend/keepPriority", symbol=symbol,
                                 orderId=oid, newQty=_smaller(symbol))
            self.answers[f"amend {r.status_code}"] += 1
            return
        if roll < 0.35:
            await self._convert(rng, api)
            return
        market = rng.choice(MARKETS)
        side = rng.choice(("BUY", "SELL"))
        qty = rng.choice(market.qty_steps)
        if roll < 0.4:
            r = await api.signed("POST", "/api/v3/order", symbol=market.symbol, side=side,
                                 type="MARKET", quantity=qty, newOrderRespType="ACK")
            self._ack("market", r)
            return
        if roll < 0.5:
            ref = market.reference
            r = await api.signed(
                "POST", "/api/v3/orderList/oco", symbol=market.symbol, side="SELL",
                quantity=qty, aboveType="LIMIT_MAKER", abovePrice=_price(ref + 1500),
                belowType="STOP_LOSS_LIMIT", belowStopPrice=_price(ref - 800),
                belowPrice=_price(ref - 900), belowTimeInForce="GTC",
                newOrderRespType="ACK")
            for oid in self._ack("oco", r, list_=True):
                open_.append((market.symbol, oid))
            return
        offset = rng.randint(-10, 10) * 100
        cents = market.reference + (offset if side == "SELL" else -offset)
        r = await api.signed("POST", "/api/v3/order", symbol=market.symbol, side=side,
                             type="LIMIT", timeInForce="GTC", price=_price(cents),
                             quantity=qty, newOrderRespType="ACK")
        for oid in self._ack("limit", r):
            open_.append((market.symbol, oid))
        if len(open_) > 40:
            del open_[:20]  # forget the oldest: many have filled by now

    async def _convert(self, rng: random.Random, api: ApiClient) -> None:
        """A small conversion through the house desk, in either direction."""
        base, amount = rng.choice((("BTC", "0.001"), ("ETH", "0.01")))
        params: dict[str, str] = (
            {"fromAsset": "USDT", "toAsset": base, "fromAmount": "20"}
            if rng.random() < 0.5 else {"fromAsset": base, "toAsset": "USDT",
                                        "fromAmount": amount})
        r = await api.signed("POST", "/sapi/v1/convert/getQuote", **params)
        self.answers[f"quote {r.status_code}"] += 1
        if r.status_code != 200:
            return
        quote = r.json()["quoteId"]
        r = await api.signed("POST", "/sapi/v1/convert/acceptQuote", quoteId=quote)
        self.answers[f"convert {r.status_code}"] += 1
        if r.status_code == 200:
            self.converted.add(int(r.json()["orderId"]))

    def _ack(self, what: str, r: httpx.Response, list_: bool = False) -> list[int]:
        self.answers[f"{what} {r.status_code}"] += 1
        if r.status_code != 200:
            return []
        doc: Any = r.json()
        ids = ([int(o["orderId"]) for o in doc["orders"]] if list_
               else [int(doc["orderId"])])
        self.acked.add(*ids)
        return ids


def _smaller(symbol: str) -> str:
    # The smallest of the load's quantities: a reduction for every order it placed but
    # those placed at that size (the engine refuses those; counted, harmless).
    return next(m.qty_steps[0] for m in MARKETS if m.symbol == symbol)
