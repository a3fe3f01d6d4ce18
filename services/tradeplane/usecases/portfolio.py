"""The portfolio: account snapshots, their value in a quote asset and the P&L between them.

A snapshot worker (:class:`SnapshotWorker`, run beside settlement: ``services.py``) takes,
once per time bucket, every user account's balances, values them in the quote asset at the
books' last prices, and records its net deposits and withdrawals so far (the user's
postings of the ledger transactions that touch the outside world). Two periods are kept:
UTC days (Binance's ``accountSnapshot``) and a configurable interval (the portfolio
page). A snapshot is idempotent per (account, period, bucket): a retried round changes
nothing.

P&L is the change in value minus the net deposits and withdrawals in between. Each
external flow is valued once, at the prices of the first snapshot that sees it, and
accumulated in the snapshot's ``invested``; so between snapshots ``a`` and ``b``
``pnl = (b.value - a.value) - (b.invested - a.invested)``, in integer units. Money is
never a float here: amounts are integer units (10**-8 of an asset), a price is the quote
units one whole coin costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from tradeplane.domain.errors import Unavailable
from tradeplane.domain.money import UNITS_PER_COIN as _UNITS

#: Units of an asset per whole coin.
UNITS_PER_COIN: int = int(_UNITS)

log = logging.getLogger("tradeplane.portfolio")

DAY_MS = 86_400_000
#: The asset Binance gives a snapshot's total in (``totalAssetOfBtc``).
BTC = "BTC"


class Period(StrEnum):
    DAY = "day"
    INTERVAL = "interval"


def bucket_of(now_ms: int, period_ms: int) -> int:
    """The start of the bucket of ``period_ms`` holding ``now_ms`` (UTC-aligned)."""
    if period_ms <= 0:
        raise ValueError("a snapshot period must be positive")
    return now_ms - now_ms % period_ms


# --------------------------------------------------------------------------- valuation
def quote_prices(quote: str, last: Mapping[tuple[str, str], int]) -> dict[str, int]:
    """Each asset's price in ``quote`` (quote units per whole coin) from the books' last
    prices ``{(base, quote_asset): price in quote_asset units per base coin}``: the quote
    itself at 1, a pair against the quote directly, else its inverse, else through BTC.
    An asset with no path has no price (it counts as worth nothing)."""
    prices: dict[str, int] = {quote: UNITS_PER_COIN}
    for (base, q), p in last.items():
        if q == quote and p > 0:
            prices[base] = p
    for (base, q), p in last.items():
        if base == quote and p > 0 and q not in prices:
            prices[q] = UNITS_PER_COIN * UNITS_PER_COIN // p
    btc = prices.get(BTC)
    if btc is not None:
        for (base, q), p in last.items():
            if q == BTC and p > 0 and base not in prices:
                prices[base] = p * btc // UNITS_PER_COIN
    return prices


def worth(units: int, price: int) -> int:
    """``units`` of an asset in quote units at ``price`` (rounded toward zero)."""
    value = abs(units) * price // UNITS_PER_COIN
    return value if units >= 0 else -value


def value_of(holdings: Mapping[str, int], prices: Mapping[str, int]) -> int:
    """Total worth of ``{asset: units}`` in quote units (unpriced assets count 0)."""
    return sum(worth(units, prices.get(asset, 0)) for asset, units in holdings.items())


def in_btc(value: int, prices: Mapping[str, int]) -> int:
    """A quote-unit value in BTC units; 0 without a BTC price."""
    btc = prices.get(BTC, 0)
    return value * UNITS_PER_COIN // btc if btc > 0 else 0


def invested_after(previous: int, before: Mapping[str, int], now: Mapping[str, int],
                   prices: Mapping[str, int]) -> int:
    """``invested`` after the external flows between two snapshots: the new net units of
    each asset (``now`` minus ``before``, both cumulative) valued at today's ``prices``."""
    assets = set(before) | set(now)
    return previous + sum(worth(now.get(a, 0) - before.get(a, 0), prices.get(a, 0))
                          for a in assets)


# --------------------------------------------------------------------------- records
@dataclass(frozen=True, slots=True)
class Balance:
    asset: str
    free: int
    locked: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    account: int
    period: Period
    bucket_ms: int
    taken_ms: int
    quote: str
    value: int
    value_btc: int
    invested: int
    balances: tuple[Balance, ...]
    #: Net external units so far, per asset (cumulative).
    flows: Mapping[str, int]


def pnl(first: Snapshot, last: Snapshot) -> int:
    """P&L from ``first`` to ``last``: change in value minus net deposits and withdrawals."""
    return (last.value - first.value) - (last.invested - first.invested)


@dataclass(frozen=True, slots=True)
class Point:
    """One point of the page's series: P&L counted from the first point shown."""

    time_ms: int
    value: int
    invested: int
    pnl: int


def series(snaps: Sequence[Snapshot]) -> list[Point]:
    """Value and P&L over time, oldest first, P&L counted from the first snapshot."""
    ordered = sorted(snaps, key=lambda s: s.bucket_ms)
    if not ordered:
        return []
    first = ordered[0]
    return [Point(s.taken_ms, s.value, s.invested, pnl(first, s)) for s in ordered]


@dataclass(frozen=True, slots=True)
class LedgerState:
    """What one round reads, all in one database snapshot: balances and cumulative
    external flows per user account, the books' last prices, and each account's latest
    snapshot of any period (None: never snapshotted)."""

    balances: Mapping[int, tuple[Balance, ...]]
    flows: Mapping[int, Mapping[str, int]]
    last_prices: Mapping[tuple[str, str], int]
    latest: Mapping[int, Snapshot]


def take(state: LedgerState, buckets: Mapping[Period, int], now_ms: int,
         quote: str) -> list[Snapshot]:
    """The snapshots of one round: each account in ``state`` for each period's bucket."""
    prices = quote_prices(quote, state.last_prices)
    out: list[Snapshot] = []
    for account in sorted(set(state.balances) | set(state.flows)):
        balances = state.balances.get(account, ())
        flows = dict(state.flows.get(account, {}))
        holdings: dict[str, int] = {}
        for b in balances:
            holdings[b.asset] = holdings.get(b.asset, 0) + b.free + b.locked
        value = value_of(holdings, prices)
        prev = state.latest.get(account)
        invested = (invested_after(0, {}, flows, prices) if prev is None else
                    invested_after(prev.invested, prev.flows, flows, prices))
        for period, bucket in buckets.items():
            out.append(Snapshot(account, period, bucket, now_ms, quote, value,
                                in_btc(value, prices), invested, balances, flows))
    return out


# --------------------------------------------------------------------------- ports
class SnapshotStore(Protocol):
    """Where snapshots are kept (``adapters/portfolio_db.py``). Every method raises
    Unavailable when the database does not answer."""

    async def ledger_state(self) -> LedgerState: ...

    async def save(self, snapshots: Sequence[Snapshot]) -> int:
        """Insert the snapshots not yet taken (per account, period and bucket); returns
        how many were new."""
        ...

    async def history(self, account: int, period: Period, start_ms: int, end_ms: int,
                      limit: int) -> list[Snapshot]:
        """An account's snapshots of ``period`` taken in ``[start_ms, end_ms]``, the
        newest ``limit``, oldest first."""
        ...


class Clock(Protocol):
    def __call__(self) -> int:
        """Now, in epoch milliseconds."""
        ...


# --------------------------------------------------------------------------- use cases
class Portfolio:
    """The snapshots' reads (the API and the page) and one worker round."""

    def __init__(self, store: SnapshotStore, *, quote: str = "USDT",
                 interval_ms: int = 3_600_000) -> None:
        if interval_ms <= 0:
            raise ValueError("the snapshot interval must be positive")
        self.store = store
        self.quote = quote
        self.interval_ms = interval_ms

    async def round(self, now_ms: int) -> int:
        """Snapshot every account for the current day and interval buckets; returns how
        many snapshots were new (0 when this bucket was already taken).

        Raises:
            Unavailable: the database did not answer (nothing was written).
        """
        buckets = {Period.DAY: bucket_of(now_ms, DAY_MS),
                   Period.INTERVAL: bucket_of(now_ms, self.interval_ms)}
        state = await self.store.ledger_state()
        return await self.store.save(take(state, buckets, now_ms, self.quote))

    async def history(self, account: int, period: Period, start_ms: int, end_ms: int,
                      limit: int) -> list[Snapshot]:
        """Raises Unavailable when the database does not answer."""
        return await self.store.history(account, period, start_ms, end_ms, limit)

    def next_wake(self, now_ms: int) -> int:
        """When the next bucket (of either period) begins."""
        return min(bucket_of(now_ms, DAY_MS) + DAY_MS,
                   bucket_of(now_ms, self.interval_ms) + self.interval_ms)


#: The longest wait before a failed round is tried again.
RETRY_MAX_S = 60.0


class SnapshotWorker:
    """Runs :meth:`Portfolio.round` at start and at the start of every bucket. A round
    the database refuses is retried with backoff (logged each time); any other error is
    a defect and ends the worker (and the process it runs in, which is restarted)."""

    def __init__(self, portfolio: Portfolio, clock: Clock, *,
                 retry_first_s: float = 1.0) -> None:
        self.portfolio = portfolio
        self.clock = clock
        self.retry_first_s = retry_first_s

    async def run(self, stop: asyncio.Event) -> None:
        """Take rounds until ``stop``.

        Raises:
            Exception: a defect in a round (anything but Unavailable).
        """
        delay = self.retry_first_s
        while not stop.is_set():
            try:
                taken = await self.portfolio.round(self.clock())
            except Unavailable as exc:
                log.warning("account snapshots not taken; retrying in %.0fs: %s", delay, exc)
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = self.retry_first_s
            if taken:
                log.info("account snapshots taken", extra={"fields": {"snapshots": taken}})
            now = self.clock()
            # A little past the boundary, so the round lands in the new bucket.
            await _sleep_or_stop(stop, (self.portfolio.next_wake(now) - now + 5) / 1000)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(seconds, 0.0))
