"""Redis adapter for market data: the marketdata service writes, the gateway reads.

Keys per symbol (``md:<SYMBOL>:<name>``):

* ``book``: the whole L2 book with its ``lastUpdateId`` as one msgpack value
  (``DepthSnapshot``, ticks and lots), so a reader never mixes two versions of it.
* ``state``: the marketdata resume snapshot (opaque bytes), always written in the same
  transaction as ``book``: together they are the state at one command sequence.
* ``trades`` / ``aggTrades``: lists of ``/api/v3/trades`` / ``aggTrades`` JSON documents,
  oldest first, capped.
* ``ticker`` / ``avgPrice``: the ``/api/v3/ticker/24hr`` / ``avgPrice`` JSON documents.
* ``top``: last trade and best bid/ask in ticks and lots (``TopOfBook``).
* ``klines``: hash interval -> the current candle (``Candle``, units).

``md:position`` is the EVENTS stream sequence the snapshots include, written in the same
transaction as them: marketdata resumes consuming after it. Its absence means the cache
lost (or never had) the market-data state, which is then rebuilt from the first event.

The records (``DepthSnapshot``, ``TopOfBook``, ``Candle``) are the domain's
(``domain/market.py``), stored as they are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import wraps
from typing import Final, ParamSpec, Self, TypeVar

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tradeplane.config import redacted
from tradeplane.domain.errors import Unavailable
from tradeplane.domain.market import Candle, DepthSnapshot, TopOfBook

POSITION: Final = "md:position"
_NAMES: Final = ("book", "state", "trades", "aggTrades", "ticker", "avgPrice", "top", "klines")
TRADES_CAP: Final = 1000
AGG_TRADES_CAP: Final = 1000

P = ParamSpec("P")
R = TypeVar("R")


class CacheError(Unavailable):
    """Redis could not be reached or refused an operation."""


@dataclass(slots=True)
class SymbolUpdate:
    """What one write changes for one symbol; None / empty = leave as is."""

    symbol: str
    book: DepthSnapshot | None = None
    state: bytes | None = None
    trades: Sequence[bytes] = ()
    agg_trades: Sequence[bytes] = ()
    ticker: bytes | None = None
    avg_price: bytes | None = None
    top: TopOfBook | None = None
    klines: dict[str, Candle] = field(default_factory=dict)


def _key(symbol: str, name: str) -> str:
    return f"md:{symbol}:{name}"


def _bytes(value: bytes | str) -> bytes:
    # the client never decodes responses; the union is only the library's typing
    return value if isinstance(value, bytes) else value.encode()


_enc = msgspec.msgpack.Encoder()
_book_dec = msgspec.msgpack.Decoder(DepthSnapshot)
_top_dec = msgspec.msgpack.Decoder(TopOfBook)
_kline_dec = msgspec.msgpack.Decoder(Candle)


def _translated(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except (RedisError, OSError, TimeoutError) as exc:
            raise CacheError(f"redis: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise CacheError(f"unreadable market-data value: {exc}") from exc

    return wrapper


class MarketCache:
    """The market-data keys in Redis. Every method raises CacheError on a Redis failure."""

    def __init__(
        self, client: Redis, *, trades_cap: int = TRADES_CAP,
        agg_trades_cap: int = AGG_TRADES_CAP,
    ) -> None:
        self._r = client
        self._trades_cap = trades_cap
        self._agg_cap = agg_trades_cap

    @classmethod
    async def connect(
        cls, url: str, *, trades_cap: int = TRADES_CAP, agg_trades_cap: int = AGG_TRADES_CAP
    ) -> Self:
        """Raises CacheError when Redis cannot be reached."""
        client = Redis.from_url(url)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise CacheError(f"cannot connect to Redis at {redacted(url)}: {exc}") from exc
        return cls(client, trades_cap=trades_cap, agg_trades_cap=agg_trades_cap)

    async def close(self) -> None:
        await self._r.aclose()

    # ------------------------------------------------------------------ writer side
    @_translated
    async def write(
        self, updates: Iterable[SymbolUpdate], *, position: int | None = None
    ) -> None:
        """Apply the updates of many symbols, and the stream ``position`` they bring the
        snapshots to, in one transaction (MULTI/EXEC)."""
        pipe = self._r.pipeline(transaction=True)
        for u in updates:
            sym = u.symbol
            if u.book is not None:
                pipe.set(_key(sym, "book"), _enc.encode(u.book))
            if u.state is not None:
                pipe.set(_key(sym, "state"), u.state)
            if u.trades:
                pipe.rpush(_key(sym, "trades"), *u.trades)
                pipe.ltrim(_key(sym, "trades"), -self._trades_cap, -1)
            if u.agg_trades:
                pipe.rpush(_key(sym, "aggTrades"), *u.agg_trades)
                pipe.ltrim(_key(sym, "aggTrades"), -self._agg_cap, -1)
            if u.ticker is not None:
                pipe.set(_key(sym, "ticker"), u.ticker)
            if u.avg_price is not None:
                pipe.set(_key(sym, "avgPrice"), u.avg_price)
            if u.top is not None:
                pipe.set(_key(sym, "top"), _enc.encode(u.top))
            if u.klines:
                pipe.hset(
                    _key(sym, "klines"),
                    mapping={iv: _enc.encode(row) for iv, row in u.klines.items()},
                )
        if position is not None:
            pipe.set(POSITION, str(position))
        await pipe.execute()

    @_translated
    async def reset(self, symbols: Sequence[str]) -> None:
        """Forget the market data of ``symbols`` and the position (before a rebuild)."""
        await self._r.delete(POSITION, *(_key(s, n) for s in symbols for n in _NAMES))

    @_translated
    async def position(self) -> int | None:
        """The EVENTS stream sequence the stored snapshots include; None when the cache
        holds no market-data state (never written, or flushed)."""
        raw = await self._r.get(POSITION)
        return None if raw is None else int(raw)

    @_translated
    async def load_state(self, symbol: str) -> tuple[bytes, DepthSnapshot] | None:
        """The resume snapshot and the book saved with it, read together; None if absent."""
        pipe = self._r.pipeline(transaction=True)
        pipe.get(_key(symbol, "state"))
        pipe.get(_key(symbol, "book"))
        state, book = await pipe.execute()
        if state is None or book is None:
            return None
        return _bytes(state), _book_dec.decode(_bytes(book))

    # ------------------------------------------------------------------ reader side
    @_translated
    async def depth(self, symbol: str) -> DepthSnapshot | None:
        raw = await self._r.get(_key(symbol, "book"))
        return None if raw is None else _book_dec.decode(_bytes(raw))

    @_translated
    async def depths(self, symbols: Sequence[str]) -> list[DepthSnapshot | None]:
        """The books of ``symbols`` in one round trip, None where not written."""
        if not symbols:
            return []
        raw = await self._r.mget([_key(s, "book") for s in symbols])
        return [None if x is None else _book_dec.decode(_bytes(x)) for x in raw]

    @_translated
    async def recent_trades(self, symbol: str, limit: int) -> list[bytes]:
        """Up to ``limit`` latest ``/api/v3/trades`` JSON documents, oldest first."""
        if limit <= 0:
            return []
        return [_bytes(x) for x in await self._r.lrange(_key(symbol, "trades"), -limit, -1)]

    @_translated
    async def agg_trades(self, symbol: str) -> list[bytes]:
        """Every cached ``/api/v3/aggTrades`` JSON document, oldest first."""
        return [_bytes(x) for x in await self._r.lrange(_key(symbol, "aggTrades"), 0, -1)]

    @_translated
    async def tickers(self, symbols: Sequence[str]) -> list[bytes | None]:
        """The ``/api/v3/ticker/24hr`` JSON documents, None where not written yet."""
        if not symbols:
            return []
        raw = await self._r.mget([_key(s, "ticker") for s in symbols])
        return [None if x is None else _bytes(x) for x in raw]

    @_translated
    async def avg_price(self, symbol: str) -> bytes | None:
        raw = await self._r.get(_key(symbol, "avgPrice"))
        return None if raw is None else _bytes(raw)

    @_translated
    async def tops(self, symbols: Sequence[str]) -> list[TopOfBook | None]:
        if not symbols:
            return []
        raw = await self._r.mget([_key(s, "top") for s in symbols])
        return [None if x is None else _top_dec.decode(_bytes(x)) for x in raw]

    async def top(self, symbol: str) -> TopOfBook | None:
        return (await self.tops([symbol]))[0]

    async def last_price(self, symbol: str) -> int | None:
        """The last trade price in ticks, None before the first trade."""
        t = await self.top(symbol)
        return t.last_price if t is not None and t.last_price else None

    async def best_bid_ask(self, symbol: str) -> tuple[int, int, int, int] | None:
        """``(bid, bid qty, ask, ask qty)`` in ticks and lots (0 = empty side)."""
        t = await self.top(symbol)
        return None if t is None else (t.bid, t.bid_qty, t.ask, t.ask_qty)

    async def reference_price(self, symbol: str) -> int | None:
        """Last trade price in ticks, else the mid of the best bid and ask, else None."""
        t = await self.top(symbol)
        return None if t is None else t.reference_price()

    # ------------------------------------------------------------------ other documents
    @_translated
    async def put_document(self, key: str, value: bytes) -> None:
        """A document another service publishes beside the market data (Convert's rates:
        ``convert:rates``)."""
        await self._r.set(key, value)

    @_translated
    async def document(self, key: str) -> bytes | None:
        raw = await self._r.get(key)
        return None if raw is None else _bytes(raw)

    @_translated
    async def current_kline(self, symbol: str, interval: str) -> Candle | None:
        raw = await self._r.hget(_key(symbol, "klines"), interval)  # type: ignore[misc]
        return None if raw is None else _kline_dec.decode(_bytes(raw))
