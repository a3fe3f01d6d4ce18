"""The WebSocket API's frame parser and signature payload, without a server: every frame
is read once into bounded, typed values, and the payload is what Binance (and ccxt's
``sign_params``) signs."""

from __future__ import annotations

import json

import pytest

from tradeplane.gateway.wsapi import (
    MAX_PARAMS,
    METHODS,
    SIGNED,
    BadFrame,
    parse_frame,
    signature_payload,
)


def test_a_request_is_read_into_text_params_as_binance_signs_them() -> None:
    req = parse_frame(json.dumps({
        "id": "a1", "method": "order.place",
        "params": {"symbol": "BTCUSDT", "quantity": "0.01", "timestamp": 1700000000000,
                   "returnRateLimits": False, "recvWindow": 5000.5,
                   "symbols": ["BTCUSDT", "ETHBTC"]}}))
    assert (req.id, req.method) == ("a1", "order.place")
    assert req.params == {"symbol": "BTCUSDT", "quantity": "0.01",
                          "timestamp": "1700000000000", "returnRateLimits": "false",
                          "recvWindow": "5000.5", "symbols": '["BTCUSDT","ETHBTC"]'}


def test_numbers_are_signed_as_the_client_wrote_them() -> None:
    req = parse_frame('{"id": 1, "method": "x", "params": {"price": 1.10, "qty": 1e-3}}')
    assert req.params == {"price": "1.10", "qty": "1e-3"}


def test_the_payload_is_every_param_but_the_signature_sorted_by_name() -> None:
    assert signature_payload({"timestamp": "2", "apiKey": "k", "signature": "s",
                              "symbol": "BTCUSDT"}) == "apiKey=k&symbol=BTCUSDT&timestamp=2"


@pytest.mark.parametrize(("frame", "code", "rid"), [
    ("{not json", -1000, None),
    ("[" * 5000 + "]" * 5000, -1000, None),  # nested too deep: refused, never a crash
    ("[1, 2]", -1102, None),
    ('{"id": 3}', -1102, 3),
    ('{"id": 3, "method": 5}', -1102, 3),
    ('{"id": true, "method": "ping"}', -1100, None),
    ('{"id": 1.5, "method": "ping"}', -1100, None),
    ('{"id": 99999999999999999999, "method": "ping"}', -1100, None),
    (json.dumps({"id": "x" * 65, "method": "ping"}), -1100, None),
    ('{"id": 4, "method": "ping", "params": [1]}', -1135, 4),
    ('{"id": 4, "method": "ping", "params": {"a": null}}', -1100, 4),
    ('{"id": 4, "method": "ping", "params": {"a": {"b": 1}}}', -1100, 4),
    ('{"id": 4, "method": "ping", "params": {"a": [[1]]}}', -1100, 4),
    (json.dumps({"id": 4, "method": "ping", "params": {"x" * 65: 1}}), -1100, 4),
    (json.dumps({"id": 4, "method": "ping",
                 "params": {f"p{i}": 1 for i in range(MAX_PARAMS + 1)}}), -1101, 4),
])
def test_a_frame_that_is_no_request_is_refused_with_its_id_when_readable(
    frame: str, code: int, rid: object,
) -> None:
    with pytest.raises(BadFrame) as exc:
        parse_frame(frame)
    assert (exc.value.code, exc.value.rid, exc.value.status) == (code, rid, 400)
    assert len(exc.value.msg) < 200  # never echoes the frame


def test_methods_that_place_orders_count_them_and_every_trade_method_is_signed() -> None:
    for name, method in METHODS.items():
        if method.permission == "trade":
            assert method.security == SIGNED, name
    counted = {name for name, m in METHODS.items() if m.orders}
    assert counted == {"order.place", "order.cancelReplace", "orderList.place.oco"}
    assert METHODS["openOrders.status"].cost({}) == 80
    assert METHODS["openOrders.status"].cost({"symbol": "BTCUSDT"}) == 6
