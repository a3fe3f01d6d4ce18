"""A gateway for tests of the HTTP guard and the API reference, which use no service but
the rate limiter."""

from __future__ import annotations

from typing import Any

from tradeplane.gateway.context import Gateway
from tradeplane.gateway.ratelimit import NoRateLimits, RateLimits


def guard_only(limiter: RateLimits | None = None) -> Gateway:
    """A Gateway whose limiter is ``limiter`` (rate limits off by default) and whose other
    services are stand-ins that these tests never reach."""
    unused: Any = object()
    return Gateway(ctx=unused, keys=unused, limiter=limiter or NoRateLimits(),
                   controls=unused, credentials=unused, users=unused,
                   user_streams=unused,
                   watermarks=unused, orderpath=unused, stream_hub=unused, market=unused,
                   background=unused, convert=unused, escrow=unused)
