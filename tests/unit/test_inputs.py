"""The one parser of request values (gateway/inputs.py): whatever text arrives, the answer
is a bounded value or the API's own error, never another exception."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradeplane.domain.money import MAX_UNITS, to_units
from tradeplane.domain.signing import sign, verify
from tradeplane.gateway.errors import ApiError, bad_param
from tradeplane.gateway.inputs import (
    INT64_MAX,
    client_id,
    optional_int,
    parse_amount,
    parse_int,
)

#: What the issue's attacker sent, and their cousins.
HOSTILE = ["\u00b2", "\uff15", "\u0661", "9223372036854775808", "9" * 20, "1\x00", "1\n",
           "\n1", "-1", "+1", "1e3", " 1", "1 ", "1_000", "0x10", "NaN", "", "9" * 4000]
# Text a client could send: any unicode, and digit-heavy strings near the edges.
TEXT = st.one_of(st.text(max_size=40),
                 st.text(alphabet="0123456789.\u00b2\uff15\u0661\n\x00-+e ", max_size=30))


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_integers_are_refused_with_minus_1100(raw: str) -> None:
    with pytest.raises(ApiError) as exc:
        parse_int(raw, "orderId")
    assert exc.value.code == -1100 and exc.value.status == 400


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_amounts_are_refused_with_minus_1100(raw: str) -> None:
    with pytest.raises(ApiError) as exc:
        parse_amount(raw, "quantity")
    assert exc.value.code == -1100


@given(TEXT)
def test_an_integer_is_plain_ascii_digits_within_the_bigint_range_or_an_api_error(
    raw: str,
) -> None:
    try:
        value = parse_int(raw, "x")
    except ApiError as exc:
        assert exc.code == -1100
        return
    assert raw.isascii() and raw.isdigit() and str(value) == raw.lstrip("0").rjust(1, "0")
    assert 0 <= value <= INT64_MAX


@given(TEXT)
def test_an_amount_fits_a_bigint_in_units_or_is_an_api_error(raw: str) -> None:
    try:
        value = parse_amount(raw, "x")
    except ApiError as exc:
        assert exc.code == -1100
        return
    assert raw.isascii() and "\n" not in raw
    assert Decimal(0) <= value
    assert value.scaleb(8) <= MAX_UNITS


def test_the_largest_amount_is_accepted_and_one_unit_more_is_not() -> None:
    assert to_units(parse_amount("92233720368.54775807", "x")) == MAX_UNITS
    with pytest.raises(ApiError):
        parse_amount("92233720368.54775808", "x")


def test_integer_bounds_are_inclusive() -> None:
    assert parse_int(str(INT64_MAX), "x") == INT64_MAX
    assert optional_int({"limit": "1000"}, "limit", lo=1, hi=1000) == 1000
    assert optional_int({"limit": ""}, "limit") is None
    with pytest.raises(ApiError, match="legal range is '1-1000'"):
        optional_int({"limit": "1001"}, "limit", lo=1, hi=1000)


@pytest.mark.parametrize("raw", ["abc\n", "a\x00", "x" * 37, "\u00e9", "a b"])
def test_client_order_ids_outside_binances_alphabet_are_refused(raw: str) -> None:
    with pytest.raises(ApiError) as exc:
        client_id(raw, "newClientOrderId")
    assert exc.value.code == -1100


@given(st.text(max_size=80))
def test_any_signature_text_verifies_false_rather_than_raising(signature: str) -> None:
    assert verify("secret", "a=1", signature) is (signature.lower() == sign("secret", "a=1"))


def test_an_error_quotes_at_most_a_bounded_escaped_prefix_of_the_input() -> None:
    err = bad_param("symbols", "\x00" + "x" * 1_000_000)
    assert len(err.msg) < 200 and "\\x00" in err.msg and err.msg.endswith("...'.")
