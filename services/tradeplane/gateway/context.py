"""What every gateway route needs, built once by the composition root (``app.compose``,
run by the app's lifespan) and kept as one typed object: :class:`Gateway`, read with
:func:`gateway`.

The gateway fails closed: a service that was not wired (the rate limiter, the kill
switch's controls, any other) is a start-up error (:class:`GatewayWiringError`), never a
check skipped per request. Rate limits turned off by settings are an explicit object
(:class:`~tradeplane.gateway.ratelimit.NoRateLimits`), not an absent one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from tradeplane.adapters.bus import Bus
from tradeplane.adapters.db import Pool
from tradeplane.adapters.orderpath import OrderPath
from tradeplane.config import Settings
from tradeplane.domain.errors import ConfigurationError
from tradeplane.domain.pairs import PairRules
from tradeplane.gateway.errors import bad_symbol
from tradeplane.gateway.references import ReferencePrices
from tradeplane.usecases.convert import Convert
from tradeplane.usecases.custody import CustodyCases
from tradeplane.usecases.escrow import Escrow
from tradeplane.usecases.health import Health
from tradeplane.usecases.portfolio import Portfolio

if TYPE_CHECKING:  # these modules read the gateway through this one
    from tradeplane.gateway.auth import KeyCache
    from tradeplane.gateway.control import Controls
    from tradeplane.gateway.market import MarketReads
    from tradeplane.gateway.ratelimit import RateLimits
    from tradeplane.gateway.streams import StreamHub
    from tradeplane.gateway.users import Credentials
    from tradeplane.gateway.userstream import UserStreams
    from tradeplane.gateway.watermarks import Watermarks
    from tradeplane.supervision import BackgroundTasks
    from tradeplane.usecases.users import Users

#: The one attribute of ``app.state`` the gateway uses.
_STATE_KEY = "gateway"


@dataclass
class GatewayContext:
    settings: Settings
    pool: Pool
    bus: Bus
    references: ReferencePrices
    pairs: dict[str, PairRules] = field(default_factory=dict)
    #: Custody's use cases (the /sapi wallet routes and the withdrawal admin routes).
    custody: CustodyCases = field(kw_only=True)
    #: Account snapshots (accountSnapshot, the portfolio page).
    portfolio: Portfolio = field(kw_only=True)
    #: The admin health view.
    health: Health = field(kw_only=True)

    def pair(self, symbol: str | None) -> PairRules:
        """Raises ApiError -1121 for an unknown symbol."""
        if not symbol:
            raise bad_symbol()
        try:
            return self.pairs[symbol.upper()]
        except KeyError:
            raise bad_symbol() from None


class GatewayWiringError(ConfigurationError):
    """The gateway was composed without one of its services, or is used before its
    lifespan composed it: it refuses to start (or to answer) rather than run without."""


@dataclass(frozen=True, slots=True)
class Gateway:
    """Every service the gateway's routes use, wired once at start-up.

    Raises:
        GatewayWiringError: when built with any service missing (None).
    """

    ctx: GatewayContext
    #: API keys ready to verify.
    keys: KeyCache
    #: Request weight and order limits; ``NoRateLimits`` when ``rate_limits`` is off.
    limiter: RateLimits
    #: The kill switch, pair control and cross-replica invalidation.
    controls: Controls
    #: Password hashing and session tokens.
    credentials: Credentials
    #: Users, sessions and 2FA (the users use case).
    users: Users
    #: Listen keys and the user data streams' sockets.
    user_streams: UserStreams
    #: How far settlement has applied each symbol's commands (read-your-writes).
    watermarks: Watermarks
    #: Holds and commands of the order path.
    orderpath: OrderPath
    #: Market-data streams' shared NATS subscriptions.
    stream_hub: StreamHub
    #: The market data the public endpoints read (documents, candles).
    market: MarketReads
    #: The gateway's background tasks, supervised for the app's lifetime (``app.serve``).
    background: BackgroundTasks
    #: Convert: quotes through the books, acceptance against the house desk.
    convert: Convert
    #: Escrowed deals (REST, the admin console).
    escrow: Escrow

    def __post_init__(self) -> None:
        missing = [f.name for f in fields(self) if getattr(self, f.name) is None]
        if missing:
            raise GatewayWiringError(
                f"the gateway was composed without {', '.join(missing)}: refusing to start")


def install(app: Starlette, gw: Gateway) -> None:
    """Make ``gw`` the services of ``app`` (the lifespan does, once composed).

    Raises:
        GatewayWiringError: ``gw`` is not a Gateway.
    """
    if not isinstance(gw, Gateway):
        raise GatewayWiringError(f"not a Gateway: {type(gw).__name__}")
    setattr(app.state, _STATE_KEY, gw)


def gateway(app: Starlette) -> Gateway:
    """The services of a started gateway.

    Raises:
        GatewayWiringError: the app's lifespan has not composed them.
    """
    try:
        gw = getattr(app.state, _STATE_KEY)
    except AttributeError:
        raise GatewayWiringError("the gateway's services are not wired (not started)") from None
    assert isinstance(gw, Gateway)
    return gw


def ctx(conn: HTTPConnection) -> GatewayContext:
    """The context of the gateway serving this request or socket."""
    return gateway(conn.app).ctx
