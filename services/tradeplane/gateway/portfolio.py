"""The portfolio over HTTP: Binance's daily account snapshot
(``GET /sapi/v1/accountSnapshot?type=SPOT``) and, for the portfolio page, value and P&L
over time (``GET /api/v1/portfolio``). Both read the snapshots settlement's worker takes
(``usecases/portfolio.py``); these routes parse, call and answer.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from tradeplane.domain.errors import Unavailable
from tradeplane.domain.money import fmt_units
from tradeplane.gateway import errors
from tradeplane.gateway.auth import Caller, signed_read
from tradeplane.gateway.context import ctx
from tradeplane.gateway.inputs import MAX_TIME_MS, optional_int
from tradeplane.usecases.portfolio import DAY_MS, Period, Snapshot, series

router = APIRouter(tags=["wallet"])

#: Binance: ``limit`` 7..30 (default 7), and a window of at most 30 days.
SNAPSHOT_LIMITS = (7, 30)
SNAPSHOT_DEFAULT = 7
MAX_WINDOW_MS = 30 * DAY_MS
#: The page's series: at most this many points.
MAX_POINTS = 1000
#: Binance's ``type``: the account kinds it snapshots; this exchange has spot only.
SNAPSHOT_TYPES = ("SPOT", "MARGIN", "FUTURES")


def _now_ms() -> int:
    return int(time.time() * 1000)


def window(params: dict[str, str], most_ms: int) -> tuple[int, int]:
    """``startTime``..``endTime`` (ms), each optional: the latest ``most_ms`` by default.

    Raises:
        ApiError: -1100 malformed or out of range, -1128 startTime after endTime, -1127
            more than ``most_ms`` between them.
    """
    start = optional_int(params, "startTime", hi=MAX_TIME_MS)
    end = optional_int(params, "endTime", hi=MAX_TIME_MS)
    if start is not None and end is not None:
        if start > end:
            raise errors.ApiError(-1128, "Combination of optional parameters invalid: "
                                         "startTime is after endTime.")
        if end - start > most_ms:
            raise errors.ApiError(
                -1127, f"More than {most_ms // 3_600_000} hours between startTime and "
                       "endTime.")
        return start, end
    if end is None:
        end = MAX_TIME_MS if start is not None else _now_ms()
    return (start if start is not None else max(end - most_ms, 0)), end


def snapshot_vo(s: Snapshot) -> dict[str, Any]:
    """One day as Binance writes it (``snapshotVos[]``)."""
    return {
        "type": "spot",
        "updateTime": s.taken_ms,
        "data": {
            "totalAssetOfBtc": fmt_units(s.value_btc),
            "balances": [{"asset": b.asset, "free": fmt_units(b.free),
                          "locked": fmt_units(b.locked)} for b in s.balances],
        },
    }


def _unavailable(exc: Unavailable) -> errors.ApiError:
    return errors.ApiError(-1001, f"Internal error; unable to process your request. "
                                  f"Please try again. ({type(exc).__name__})", 503)


@router.get("/sapi/v1/accountSnapshot")
async def account_snapshot(request: Request, caller: Caller = Depends(signed_read)
                           ) -> dict[str, Any]:
    """The account's daily snapshots (``type=SPOT``): the newest ``limit`` (7..30) days
    taken in the window, oldest first.

    Raises:
        ApiError: -1102 without ``type``, -1100 for an unknown type or a bad number,
            -1127/-1128 for a bad window, -1001 (503) when the database does not answer.
    """
    p = caller.params
    kind = p.get("type")
    if not kind:
        raise errors.mandatory("type")
    if kind not in SNAPSHOT_TYPES:
        raise errors.bad_param("type", kind)
    limit = optional_int(p, "limit", lo=SNAPSHOT_LIMITS[0], hi=SNAPSHOT_LIMITS[1])
    start, end = window(p, MAX_WINDOW_MS)
    if kind != "SPOT":  # no margin or futures accounts here: nothing to show
        return {"code": 200, "msg": "", "snapshotVos": []}
    try:
        snaps = await ctx(request).portfolio.history(
            caller.account, Period.DAY, start, end, limit or SNAPSHOT_DEFAULT)
    except Unavailable as exc:
        raise _unavailable(exc) from None
    return {"code": 200, "msg": "", "snapshotVos": [snapshot_vo(s) for s in snaps]}


@router.get("/api/v1/portfolio")
async def portfolio(request: Request, caller: Caller = Depends(signed_read)
                    ) -> dict[str, Any]:
    """Value and P&L over time (``period`` ``interval``, the default, or ``day``), in
    the quote asset: P&L is the change in value minus net deposits and withdrawals,
    counted from the first point of the window.

    Raises:
        ApiError: -1100 for an unknown period or a bad number, -1127/-1128 for a bad
            window, -1001 (503) when the database does not answer.
    """
    p = caller.params
    raw = p.get("period") or "interval"
    try:
        period = Period(raw)
    except ValueError:
        raise errors.bad_param("period", raw) from None
    limit = optional_int(p, "limit", lo=1, hi=MAX_POINTS) or MAX_POINTS
    start, end = window(p, 366 * DAY_MS)
    c = ctx(request)
    try:
        snaps = await c.portfolio.history(caller.account, period, start, end, limit)
    except Unavailable as exc:
        raise _unavailable(exc) from None
    points = series(snaps)
    last = snaps[-1] if snaps else None
    return {
        "quote": last.quote if last else c.portfolio.quote,
        "period": str(period),
        "intervalMs": DAY_MS if period is Period.DAY else c.portfolio.interval_ms,
        "value": fmt_units(last.value) if last else "0",
        "pnl": fmt_units(points[-1].pnl) if points else "0",
        "netFlows": fmt_units(points[-1].invested - points[0].invested) if points else "0",
        "points": [{"time": pt.time_ms, "value": fmt_units(pt.value),
                    "pnl": fmt_units(pt.pnl)} for pt in points],
    }
