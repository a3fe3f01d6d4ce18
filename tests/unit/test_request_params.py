"""Binance's parameters from the query string and the form body: the gateway's parser
gives exactly what ``urllib.parse.parse_qsl`` gives (keep_blank_values), field for field,
whether or not a text has anything to decode."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradeplane.gateway.auth import parse_params
from tradeplane.gateway.errors import ApiError

# The characters that mean something to the form encoding, and a few that do not.
_TEXT = st.text(alphabet="ab=&%+2F0é;.- ", max_size=40)


def _reference(raw_query: str, body: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for raw in (body, raw_query):
        for k, v in parse_qsl(raw, keep_blank_values=True):
            params[k] = v
    return params


@given(_TEXT, _TEXT)
def test_parameters_are_what_parse_qsl_reads(raw_query: str, body: str) -> None:
    got = parse_params(raw_query, body, "application/x-www-form-urlencoded")
    assert got == _reference(raw_query, body)
    assert list(got) == list(_reference(raw_query, body))


def test_a_signed_order_without_escapes_is_read_whole() -> None:
    body = ("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&price=60000.50"
            "&quantity=0.012&recvWindow=60000&timestamp=1764900000000&signature=ab01")
    assert parse_params("", body, "application/x-www-form-urlencoded") == {
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
        "price": "60000.50", "quantity": "0.012", "recvWindow": "60000",
        "timestamp": "1764900000000", "signature": "ab01"}


def test_the_query_string_wins_over_the_body_and_blank_fields_are_kept() -> None:
    got = parse_params("price=2&flag", "price=1&qty=&&side=BUY", "")
    assert got == {"price": "2", "qty": "", "side": "BUY", "flag": ""}


def test_escapes_are_decoded_as_parse_qsl_decodes_them() -> None:
    got = parse_params("newClientOrderId=a%2Bb+c", "", "")
    assert got == {"newClientOrderId": "a+b c"}


def test_a_json_body_is_refused() -> None:
    with pytest.raises(ApiError) as exc:
        parse_params("", '{"symbol": "BTCUSDT"}', "application/json")
    assert exc.value.code == -1104
