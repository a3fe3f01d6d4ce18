"""Trading-pair rules and the pure order-entry validation against them (Binance filters)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from tradeplane.domain.errors import InvalidInput
from tradeplane.domain.model import MARKET_LIKE, OrderType, Side
from tradeplane.domain.money import UNITS_PER_COIN, fmt_units, to_units

#: The self-trade prevention modes (``model.StpMode`` names), each allowed on every pair.
STP_MODES: tuple[str, ...] = ("NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH")
#: ICEBERG_PARTS: an iceberg shows at least 1/10 of its quantity at a time.
ICEBERG_PARTS = 10
#: PRICE_FILTER maxPrice, in ticks of the pair; NOTIONAL maxNotional, in quote units
#: (applied to every order type). Together with LOT_SIZE they keep every amount an order
#: holds far inside PostgreSQL's bigint, whatever a client sends.
MAX_PRICE_TICKS = 10**10
MAX_NOTIONAL = 9_000_000_000 * UNITS_PER_COIN


class PairConfigError(InvalidInput, ValueError):
    """A pair definition is inconsistent (e.g. tick x lot not representable in units)."""


@dataclass(frozen=True, slots=True)
class PairRules:
    """The rules of one market. All amounts are integer units (10**-8).

    ``tick`` is the price increment in quote units per whole base coin; ``lot`` is the
    quantity increment in base units. A price of ``p`` ticks and a quantity of ``q`` lots
    cost ``p * q * notional_per_tick_lot`` quote units, exactly.
    """

    base: str
    quote: str
    tick: int
    lot: int
    min_qty: int
    max_qty: int
    min_notional: int
    price_band_bps: int = 2000  # price band around the reference price, in basis points
    maker_fee_ppm: int = 1000  # 0.1%
    taker_fee_ppm: int = 1000
    trading: str = "enabled"  # enabled | halted | cancel-only
    #: Self-trade prevention for orders that name none: NONE | EXPIRE_TAKER |
    #: EXPIRE_MAKER | EXPIRE_BOTH (Binance's defaultSelfTradePreventionMode).
    default_stp: str = "NONE"

    def __post_init__(self) -> None:
        if self.tick <= 0 or self.lot <= 0:
            raise PairConfigError("tick and lot must be positive")
        if (self.tick * self.lot) % UNITS_PER_COIN:
            raise PairConfigError(
                f"{self.symbol}: tick x lot ({fmt_units(self.tick)} x {fmt_units(self.lot)}) "
                "is finer than one quote unit"
            )
        if self.min_qty % self.lot or self.max_qty % self.lot or self.min_qty <= 0:
            raise PairConfigError(f"{self.symbol}: min/max quantity must be multiples of the lot")
        if not (0 <= self.maker_fee_ppm < 1_000_000 and 0 <= self.taker_fee_ppm < 1_000_000):
            raise PairConfigError(f"{self.symbol}: fees must be in [0, 1)")
        if self.default_stp not in STP_MODES:
            raise PairConfigError(
                f"{self.symbol}: self-trade prevention mode must be one of {', '.join(STP_MODES)}"
            )

    @property
    def symbol(self) -> str:
        """The Binance-style symbol, e.g. ``BTCUSDT``."""
        return f"{self.base}{self.quote}"

    @property
    def name(self) -> str:
        """The human pair name, e.g. ``BTC-USDT`` (used for processes and resources)."""
        return f"{self.base}-{self.quote}"

    @property
    def notional_per_tick_lot(self) -> int:
        return int(self.tick * self.lot // UNITS_PER_COIN)

    def notional(self, price_ticks: int, qty_lots: int) -> int:
        """Quote units for ``qty_lots`` at ``price_ticks``."""
        return price_ticks * qty_lots * self.notional_per_tick_lot

    def price_units(self, price_ticks: int) -> int:
        return price_ticks * self.tick

    def qty_units(self, qty_lots: int) -> int:
        return qty_lots * self.lot


def normalize_symbol(text: str) -> str:
    """``BTC-USDT``, ``btc/usdt`` and ``BTCUSDT`` all become ``BTCUSDT``."""
    return text.replace("-", "").replace("/", "").replace("_", "").upper()


class FilterError(InvalidInput, ValueError):
    """An order violates one of the pair's filters; ``msg`` is Binance's wording."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


def price_to_ticks(rules: PairRules, price: Decimal) -> int:
    """Raises FilterError when the price is off the tick grid, not positive or above
    maxPrice."""
    units = _units_or_filter(price, "PRICE_FILTER")
    if units <= 0 or units % rules.tick or units // rules.tick > MAX_PRICE_TICKS:
        raise FilterError("Filter failure: PRICE_FILTER")
    return units // rules.tick


def qty_to_lots(rules: PairRules, qty: Decimal) -> int:
    """Raises FilterError when the quantity is off the lot grid or outside min/max."""
    units = _units_or_filter(qty, "LOT_SIZE")
    if units % rules.lot or units < rules.min_qty or units > rules.max_qty:
        raise FilterError("Filter failure: LOT_SIZE")
    return units // rules.lot


def check_notional(rules: PairRules, notional: int) -> None:
    """NOTIONAL: at least the pair's minimum, at most :data:`MAX_NOTIONAL`."""
    if not rules.min_notional <= notional <= MAX_NOTIONAL:
        raise FilterError("Filter failure: NOTIONAL")


def check_price_band(rules: PairRules, price_ticks: int, reference_ticks: int | None) -> None:
    """PERCENT_PRICE: the limit price must lie within the band around the reference price."""
    if reference_ticks is None or reference_ticks <= 0:
        return
    lo = reference_ticks * (10_000 - rules.price_band_bps)
    hi = reference_ticks * (10_000 + rules.price_band_bps)
    if not lo <= price_ticks * 10_000 <= hi:
        raise FilterError("Filter failure: PERCENT_PRICE")


def check_iceberg(qty_lots: int, iceberg_lots: int) -> None:
    """ICEBERG_PARTS: the order may split into at most ``ICEBERG_PARTS`` visible parts."""
    if -(-qty_lots // iceberg_lots) > ICEBERG_PARTS:
        raise FilterError("Filter failure: ICEBERG_PARTS")


def order_cost(
    rules: PairRules, side: Side, otype: OrderType, price: int, qty: int, quote_qty: int
) -> int:
    """What a LIMIT-priced or stop order can cost at most, in its hold asset: the quantity
    for a SELL, the limit notional for a limit-priced BUY, the funds cap (``quote_qty``) of
    a market-like BUY (a triggered STOP_LOSS / TAKE_PROFIT). The one hold rule of order
    entry and of the ledger's OCO lists."""
    if side == Side.SELL:
        return rules.qty_units(qty)
    if otype in MARKET_LIKE:
        return quote_qty
    return rules.notional(price, qty)


def stop_market_cap(rules: PairRules, stop_ticks: int, qty_lots: int) -> int:
    """The funds a STOP_LOSS / TAKE_PROFIT BUY holds (and may spend) once triggered: its
    quantity at the top of the price band above the stop price, rounded up to a unit."""
    band_up = 10_000 + rules.price_band_bps
    return -(-rules.notional(stop_ticks, qty_lots) * band_up // 10_000)


def _units_or_filter(value: Decimal, name: str) -> int:
    try:
        return to_units(value)
    except ValueError as exc:
        raise FilterError(f"Filter failure: {name}") from exc


TRADING_STATES = {"enabled": 1, "halted": 2, "cancel-only": 3}  # values of TradingState


DEMO_PAIRS: tuple[PairRules, ...] = (
    PairRules(
        base="BTC", quote="USDT", tick=to_units("0.01"), lot=to_units("0.00001"),
        min_qty=to_units("0.00001"), max_qty=to_units("9000"), min_notional=to_units("5"),
    ),
    PairRules(
        base="ETH", quote="USDT", tick=to_units("0.01"), lot=to_units("0.0001"),
        min_qty=to_units("0.0001"), max_qty=to_units("90000"), min_notional=to_units("5"),
    ),
    PairRules(
        base="ETH", quote="BTC", tick=to_units("0.00001"), lot=to_units("0.001"),
        min_qty=to_units("0.001"), max_qty=to_units("90000"), min_notional=to_units("0.0001"),
    ),
)


#: Markets for the coins the local platform's own regtest wallets take in (LTC, XMR), so
#: deposited coins can be traded. ``tradeplane up`` runs them after DEMO_PAIRS; the test
#: harness and the chart's example resources keep DEMO_PAIRS alone (one engine a pair).
CUSTODY_DEMO_PAIRS: tuple[PairRules, ...] = (
    PairRules(
        base="LTC", quote="USDT", tick=to_units("0.01"), lot=to_units("0.001"),
        min_qty=to_units("0.001"), max_qty=to_units("900000"), min_notional=to_units("5"),
    ),
    PairRules(
        base="LTC", quote="BTC", tick=to_units("0.000001"), lot=to_units("0.01"),
        min_qty=to_units("0.01"), max_qty=to_units("900000"), min_notional=to_units("0.0001"),
    ),
    PairRules(
        base="XMR", quote="USDT", tick=to_units("0.01"), lot=to_units("0.001"),
        min_qty=to_units("0.001"), max_qty=to_units("900000"), min_notional=to_units("5"),
    ),
)


def rules_from_spec(spec: dict[str, object]) -> PairRules:
    """Pair rules from a ``TradingPair`` spec (the CRD's field names, decimal strings).

    Fields: base, quote, tickSize, lotSize, minQuantity (default lotSize), maxQuantity,
    minNotional, priceBandPercent (default 20), makerFee, takerFee (fractions, default
    0.001), trading (enabled | halted | cancel-only, default enabled),
    selfTradePreventionMode (NONE | EXPIRE_TAKER | EXPIRE_MAKER | EXPIRE_BOTH, default
    NONE).

    Raises:
        PairConfigError: a missing or malformed field, or rules that are not exact.
    """
    def text(name: str, default: str | None = None) -> str:
        value = spec.get(name, default)
        if value is None:
            raise PairConfigError(f"spec.{name} is required")
        return str(value)

    def units(name: str, default: str | None = None) -> int:
        try:
            return to_units(text(name, default))
        except ValueError as exc:
            raise PairConfigError(f"spec.{name}: {exc}") from None

    def ppm(name: str) -> int:
        try:
            fee = Decimal(text(name, "0.001"))
        except InvalidOperation:
            raise PairConfigError(f"spec.{name} is not a decimal") from None
        scaled = fee * 1_000_000
        if scaled != scaled.to_integral_value() or not 0 <= fee < 1:
            raise PairConfigError(f"spec.{name} must be in [0, 1) with at most 6 decimals")
        return int(scaled)

    trading = text("trading", "enabled")
    if trading not in ("enabled", "halted", "cancel-only"):
        raise PairConfigError("spec.trading must be enabled, halted or cancel-only")
    try:
        band = int(text("priceBandPercent", "20"))
    except ValueError:
        raise PairConfigError("spec.priceBandPercent must be an integer") from None
    if not 1 <= band <= 100:
        raise PairConfigError("spec.priceBandPercent must be within 1..100")
    stp = text("selfTradePreventionMode", "NONE")
    if stp not in STP_MODES:
        raise PairConfigError(
            f"spec.selfTradePreventionMode must be one of {', '.join(STP_MODES)}"
        )
    lot = units("lotSize")
    return PairRules(
        base=text("base").upper(), quote=text("quote").upper(), tick=units("tickSize"),
        lot=lot, min_qty=units("minQuantity", text("lotSize")), max_qty=units("maxQuantity"),
        min_notional=units("minNotional"), price_band_bps=band * 100,
        maker_fee_ppm=ppm("makerFee"), taker_fee_ppm=ppm("takerFee"), trading=trading,
        default_stp=stp,
    )
