"""PostgreSQL side of market data: the ``klines`` table (written by marketdata alone).

Rows are stored in units, not ticks and lots, so they stay readable if a pair's tick or
lot changes: prices in quote units per whole base coin, volumes in base units, quote
volumes in quote units: the domain's ``Candle``, as the cache holds the current one.
"""

from __future__ import annotations

from collections.abc import Sequence

from tradeplane.adapters.db import Pool, _translated
from tradeplane.domain.market import Candle

_COLUMNS = (
    "open_time, open, high, low, close, volume, quote_volume, trades, taker_buy_volume,"
    " taker_buy_quote_volume"
)


@_translated
async def upsert_klines(pool: Pool, rows: Sequence[tuple[str, str, Candle]]) -> None:
    """Insert or replace candles given as ``(symbol, interval, row)``, in one statement.

    Idempotent: a candle rebuilt from the same trades overwrites itself with equal values.
    The last occurrence of a key wins when ``rows`` holds it twice.
    """
    if not rows:
        return
    latest: dict[tuple[str, str, int], Candle] = {}
    for symbol, interval, row in rows:
        latest[(symbol, interval, row.open_time)] = row
    keys = list(latest)
    vals = list(latest.values())
    await pool.execute(
        f"""INSERT INTO klines (symbol, interval, {_COLUMNS})
            SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[],
                $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[],
                $10::bigint[], $11::bigint[], $12::bigint[])
            ON CONFLICT (symbol, interval, open_time) DO UPDATE SET
                open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
                close = EXCLUDED.close, volume = EXCLUDED.volume,
                quote_volume = EXCLUDED.quote_volume, trades = EXCLUDED.trades,
                taker_buy_volume = EXCLUDED.taker_buy_volume,
                taker_buy_quote_volume = EXCLUDED.taker_buy_quote_volume""",
        [k[0] for k in keys], [k[1] for k in keys], [v.open_time for v in vals],
        [v.open for v in vals], [v.high for v in vals], [v.low for v in vals],
        [v.close for v in vals], [v.volume for v in vals], [v.quote_volume for v in vals],
        [v.trades for v in vals], [v.taker_buy_volume for v in vals],
        [v.taker_buy_quote_volume for v in vals],
    )


@_translated
async def fetch_klines(
    pool: Pool, symbol: str, interval: str, start_ms: int | None, end_ms: int | None,
    limit: int,
) -> list[Candle]:
    """Candles by open time, oldest first, as Binance selects them: from ``start_ms`` on
    when given, else the latest ``limit`` ones (up to ``end_ms`` when given)."""
    conds = ["symbol = $1", "interval = $2"]
    args: list[object] = [symbol, interval]
    if start_ms is not None:
        args.append(start_ms)
        conds.append(f"open_time >= ${len(args)}")
    if end_ms is not None:
        args.append(end_ms)
        conds.append(f"open_time <= ${len(args)}")
    args.append(limit)
    order = "ASC" if start_ms is not None else "DESC"
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM klines WHERE {' AND '.join(conds)}"
        f" ORDER BY open_time {order} LIMIT ${len(args)}",
        *args,
    )
    out = [
        Candle(r["open_time"], r["open"], r["high"], r["low"], r["close"], r["volume"],
                 r["quote_volume"], r["trades"], r["taker_buy_volume"],
                 r["taker_buy_quote_volume"])
        for r in rows
    ]
    if order == "DESC":
        out.reverse()
    return out
