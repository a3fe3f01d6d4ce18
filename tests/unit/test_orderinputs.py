"""The order parameters' one parser: typed requests out, Binance's refusals for anything
malformed, missing or superfluous, and nothing that needs the pair, a price or the time."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradeplane.domain.model import OrderType, Side, StpMode, TimeInForce
from tradeplane.gateway.errors import ApiError
from tradeplane.gateway.orderinputs import place_oco, place_order

LIMIT = {"symbol": "BTCUSDT", "side": "buy", "type": "LIMIT", "timeInForce": "GTC",
         "price": "60000", "quantity": "0.01", "newClientOrderId": "mine"}
OCO = {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.01",
       "aboveType": "LIMIT_MAKER", "abovePrice": "61000",
       "belowType": "STOP_LOSS", "belowStopPrice": "59000"}


def error(fn: object, *args: object) -> tuple[int, str]:
    with pytest.raises(ApiError) as exc:
        fn(*args)  # type: ignore[operator]
    return exc.value.code, exc.value.msg


def test_a_limit_order_parses_into_typed_values() -> None:
    req, resp = place_order(LIMIT, 7, "BTCUSDT")
    assert (req.account, req.symbol, req.side, resp) == (7, "BTCUSDT", Side.BUY, "FULL")
    spec = req.order
    assert (spec.type, spec.tif, spec.price, spec.client_order_id) == (
        OrderType.LIMIT, TimeInForce.GTC, Decimal("60000"), "mine")
    assert req.quantity == Decimal("0.01") and req.stp is None


def test_defaults_a_random_client_id_and_ack_for_stop_orders() -> None:
    p = {"side": "SELL", "type": "STOP_LOSS", "stopPrice": "59000", "quantity": "0.01",
         "selfTradePreventionMode": "expire_maker"}
    req, resp = place_order(p, 7, "BTCUSDT")
    assert resp == "ACK" and req.order.client_order_id.startswith("tp")
    assert req.stp == StpMode.EXPIRE_MAKER


@pytest.mark.parametrize(
    ("change", "expected"),
    [({"side": "SIDEWAYS"}, (-1117, "Invalid side.")),
     ({"price": None}, (-1102, "Mandatory parameter 'price' was not sent, was empty/null, "
                               "or malformed.")),
     ({"price": "\uff16\uff10"},  # fullwidth digits
      (-1100, "Illegal characters found in parameter 'price'; legal range "
              "is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.")),
     ({"stopPrice": "1"}, (-1106, "Parameter 'stopPrice' sent when not required.")),
     ({"icebergQty": "0.001", "timeInForce": "IOC"},
      (-1014, "Unsupported order combination.")),
     ({"timeInForce": "GTD"}, (-1102, "Mandatory parameter 'goodTillDate' was not sent, "
                                      "was empty/null, or malformed.")),
     ({"selfTradePreventionMode": "NEVER"},
      (-1130, "Data sent for parameter 'selfTradePreventionMode' is not valid.")),
     ({"newOrderRespType": "ALL"},
      (-1100, "Illegal characters found in parameter 'newOrderRespType'; legal range is "
              "'ACK, RESULT, FULL'."))],
    ids=["side", "no-price", "fullwidth-digits", "stop-price", "iceberg-ioc", "gtd-no-date",
         "stp", "resp-type"],
)
def test_limit_orders_refused_at_the_edge(change: dict[str, str | None],
                                          expected: tuple[int, str]) -> None:
    p = {k: v for k, v in (LIMIT | change).items() if v is not None}
    assert error(place_order, p, 7, "BTCUSDT") == expected


def test_a_market_order_takes_exactly_one_amount() -> None:
    base = {"side": "BUY", "type": "MARKET"}
    assert error(place_order, base, 7, "BTCUSDT")[0] == -1102
    both = base | {"quantity": "1", "quoteOrderQty": "100"}
    assert error(place_order, both, 7, "BTCUSDT") == (
        -1102, "Param 'quantity' and 'quoteOrderQty' cannot be sent at the same time.")
    req, _ = place_order(base | {"quoteOrderQty": "100"}, 7, "BTCUSDT")
    assert (req.quantity, req.quote_qty) == (None, Decimal("100"))


def test_oco_legs_are_placed_before_their_parameters_are_read() -> None:
    """Binance names the misplaced leg, not the leftover parameter of its old type."""
    swapped = OCO | {"belowType": "LIMIT_MAKER", "belowPrice": "59000"}
    assert error(place_oco, swapped, 7, "BTCUSDT") == (
        -1168, "At least one OCO order must be contingent.")
    req, resp = place_oco(OCO, 7, "BTCUSDT")
    assert resp == "RESULT" and req.above.prefix == "above"
    assert req.below.stop_price == Decimal("59000")
    assert error(place_oco, OCO | {"belowPrice": "1"}, 7, "BTCUSDT") == (
        -1106, "Parameter 'belowPrice' sent when not required.")
