"""Who may do what: API-key restrictions, the admin permission matrix, client addresses
behind proxies, ban escalation, request weights."""

from __future__ import annotations

import pytest

from tradeplane.domain.access import (
    PERMISSION_MATRIX,
    AdminAction,
    KeyPolicy,
    KeyRefusal,
    Role,
    allowed,
    ban_seconds,
    check_permissions,
    client_ip,
    key_refusal,
    parse_networks,
)
from tradeplane.gateway.ratelimit import route_cost

NOW = 1_700_000_000_000


def test_a_key_may_only_do_what_its_permissions_name() -> None:
    policy = KeyPolicy(frozenset({"read", "trade"}))
    assert key_refusal(policy, "read", "1.2.3.4", NOW) is None
    assert key_refusal(policy, "trade", "1.2.3.4", NOW) is None
    assert key_refusal(policy, "withdraw", "1.2.3.4", NOW) is KeyRefusal.PERMISSION


def test_an_allow_list_admits_its_addresses_and_networks_only() -> None:
    policy = KeyPolicy(frozenset({"read"}), parse_networks(["203.0.113.7", "10.0.0.0/8",
                                                            "2001:db8::/32"]))
    assert key_refusal(policy, "read", "203.0.113.7", NOW) is None
    assert key_refusal(policy, "read", "10.200.1.1", NOW) is None
    assert key_refusal(policy, "read", "2001:db8::1", NOW) is None
    assert key_refusal(policy, "read", "203.0.113.8", NOW) is KeyRefusal.IP
    assert key_refusal(policy, "read", "", NOW) is KeyRefusal.IP  # unknown address
    assert key_refusal(policy, "read", "not-an-ip", NOW) is KeyRefusal.IP


def test_an_expired_key_is_refused_from_its_expiry_on() -> None:
    policy = KeyPolicy(frozenset({"read"}), expires_ms=NOW)
    assert key_refusal(policy, "read", "1.2.3.4", NOW - 1) is None
    assert key_refusal(policy, "read", "1.2.3.4", NOW) is KeyRefusal.EXPIRED


def test_a_frozen_account_may_read_but_not_trade_or_withdraw() -> None:
    policy = KeyPolicy(frozenset({"read", "trade", "withdraw"}), frozen=True)
    assert key_refusal(policy, "read", "1.2.3.4", NOW) is None
    assert key_refusal(policy, "trade", "1.2.3.4", NOW) is KeyRefusal.FROZEN
    assert key_refusal(policy, "withdraw", "1.2.3.4", NOW) is KeyRefusal.FROZEN


@pytest.mark.parametrize("perms", [[], ["read", "admin"], ["Trade"]])
def test_unknown_or_missing_permissions_are_refused(perms: list[str]) -> None:
    with pytest.raises(ValueError):
        check_permissions(perms)


def test_permissions_are_deduplicated_and_sorted() -> None:
    assert check_permissions(["trade", "read", "trade"]) == ["read", "trade"]


@pytest.mark.parametrize("bad", [["300.1.1.1"], ["10.0.0.0/33"], ["example.com"]])
def test_allow_lists_refuse_what_is_not_an_address(bad: list[str]) -> None:
    with pytest.raises(ValueError, match="not an IP"):
        parse_networks(bad)


def test_an_allow_list_holds_at_most_thirty_entries() -> None:
    with pytest.raises(ValueError, match="at most 30"):
        parse_networks([f"10.0.0.{i}" for i in range(31)])


PROXY = parse_networks(["10.0.0.0/8"])


def test_the_peer_is_the_client_unless_it_is_a_trusted_proxy() -> None:
    # No trusted proxies: the header is ignored whatever it says.
    assert client_ip("198.51.100.9", "203.0.113.1", ()) == "198.51.100.9"
    # A client forging the header is still itself.
    assert client_ip("198.51.100.9", "203.0.113.1", PROXY) == "198.51.100.9"
    # Behind our proxy: the client the proxy saw.
    assert client_ip("10.1.1.1", "203.0.113.1", PROXY) == "203.0.113.1"


def test_behind_proxies_the_rightmost_untrusted_hop_is_the_client() -> None:
    # The client put a fake address first; our two proxies appended what they saw.
    xff = "1.1.1.1, 203.0.113.5, 10.2.2.2"
    assert client_ip("10.1.1.1", xff, PROXY) == "203.0.113.5"
    # A malformed hop: trust nothing the chain said.
    assert client_ip("10.1.1.1", "1.1.1.1, garbage", PROXY) == "10.1.1.1"


@pytest.mark.parametrize("action", list(AdminAction))
def test_every_admin_action_has_a_row_in_the_matrix(action: AdminAction) -> None:
    assert PERMISSION_MATRIX[action]
    assert allowed(Role.SUPER_ADMIN, action)  # the break-glass role may do everything


def test_auditors_only_read_and_support_cannot_move_money_or_markets() -> None:
    for action, roles in PERMISSION_MATRIX.items():
        if Role.AUDITOR in roles:
            assert action.value.endswith(".read"), action
    for action in (AdminAction.ACCOUNT_CREDIT, AdminAction.PAIR_TRADING,
                   AdminAction.PAIR_FEES, AdminAction.KILL_SWITCH,
                   AdminAction.WITHDRAWAL_APPROVE, AdminAction.ADMIN_CREATE):
        assert not allowed(Role.SUPPORT, action)
    assert allowed(Role.OPERATOR, AdminAction.WITHDRAWAL_APPROVE)
    assert allowed(Role.SUPPORT, AdminAction.WITHDRAWAL_READ)
    assert allowed(Role.AUDITOR, AdminAction.AUDIT_READ)
    assert not allowed(Role.OPERATOR, AdminAction.AUDIT_READ)


def test_bans_double_up_to_the_maximum() -> None:
    assert [ban_seconds(n, 120, 259_200) for n in (1, 2, 3, 4)] == [120, 240, 480, 960]
    assert ban_seconds(50, 120, 259_200) == 259_200
    with pytest.raises(ValueError):
        ban_seconds(0, 120, 259_200)


@pytest.mark.parametrize(
    ("method", "path", "query", "cost"),
    [
        ("GET", "/api/v3/ping", "", (1, 0, False)),
        ("GET", "/api/v3/exchangeInfo", "", (20, 0, False)),
        ("GET", "/api/v3/depth", "symbol=BTCUSDT", (5, 0, False)),
        ("GET", "/api/v3/depth", "symbol=BTCUSDT&limit=500", (25, 0, False)),
        ("GET", "/api/v3/depth", "symbol=BTCUSDT&limit=1000", (50, 0, False)),
        ("GET", "/api/v3/depth", "symbol=BTCUSDT&limit=5000", (250, 0, False)),
        ("GET", "/api/v3/ticker/24hr", "symbol=BTCUSDT", (2, 0, False)),
        ("GET", "/api/v3/ticker/24hr", "", (80, 0, False)),
        ("POST", "/api/v3/order", "", (1, 1, True)),
        ("POST", "/api/v3/orderList/oco", "", (1, 2, True)),
        ("GET", "/api/v3/account", "", (20, 0, True)),
        ("GET", "/api/v3/openOrders", "symbol=BTCUSDT", (6, 0, True)),
        ("GET", "/api/v3/openOrders", "", (80, 0, True)),
        ("POST", "/sapi/v1/capital/withdraw/apply", "", (1, 0, True)),
        ("GET", "/somewhere/else", "", (1, 0, False)),
    ],
)
def test_requests_weigh_what_binance_charges(
    method: str, path: str, query: str, cost: tuple[int, int, bool]
) -> None:
    assert route_cost(method, path, query) == cost
