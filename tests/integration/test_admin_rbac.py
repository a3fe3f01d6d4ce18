"""The admin API: every endpoint x every role against the one permission matrix, admin
identities (break-glass bootstrap token, hashed tokens of named admins), and the audit log
that records each privileged action exactly once and cannot be edited: freezes, pair
halts and resumes, fee changes (settlement charges the new fee), the global kill switch,
withdrawal approvals."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.support.harness import Platform, eventually, running_platform
from tests.support.security import FAST_HASHING, admin_headers

from tradeplane import cli
from tradeplane.adapters import accounts_db, wallets_db
from tradeplane.domain.access import PERMISSION_MATRIX, AdminAction, Role
from tradeplane.domain.custody import wallet_from_spec
from tradeplane.domain.money import to_units
from tradeplane.gateway.app import create_app

pytestmark = pytest.mark.integration

A = AdminAction
# Every admin endpoint with the action guarding it and a request that, once authorised,
# changes nothing (an unknown target or an invalid body).
ENDPOINTS: list[tuple[str, str, AdminAction, dict[str, Any] | None]] = [
    ("POST", "/admin/users", A.ACCOUNT_CREATE, {"name": "bad name!"}),
    ("GET", "/admin/users", A.USER_READ, None),
    ("GET", "/admin/users/{account}", A.USER_READ, None),
    ("POST", "/admin/users/{account}/freeze", A.USER_FREEZE, {}),
    ("POST", "/admin/users/{account}/unfreeze", A.USER_UNFREEZE, None),
    ("POST", "/admin/api-keys", A.APIKEY_CREATE, {"account": 424242}),
    ("GET", "/admin/api-keys", A.APIKEY_READ, None),
    ("DELETE", "/admin/api-keys/{api_key}", A.APIKEY_REVOKE, None),
    ("POST", "/admin/credit", A.ACCOUNT_CREDIT, {"account": 424242}),
    ("PUT", "/admin/pairs/{symbol}/trading", A.PAIR_TRADING, {"trading": "off"}),
    ("PUT", "/admin/pairs/{symbol}/fees", A.PAIR_FEES, {"makerFeePpm": -1}),
    ("GET", "/admin/kill-switch", A.KILL_SWITCH_READ, None),
    ("POST", "/admin/kill-switch", A.KILL_SWITCH, {"reason": 5}),
    ("DELETE", "/admin/kill-switch", A.KILL_SWITCH, None),
    ("POST", "/admin/admins", A.ADMIN_CREATE, {"name": "x", "role": "Janitor"}),
    ("GET", "/admin/audit", A.AUDIT_READ, None),
    ("GET", "/admin/health", A.HEALTH_READ, None),
    ("GET", "/admin/withdrawals", A.WITHDRAWAL_READ, None),
    ("POST", "/admin/withdrawals/{wid}/approve", A.WITHDRAWAL_APPROVE, None),
    ("POST", "/admin/withdrawals/{wid}/reject", A.WITHDRAWAL_APPROVE, None),
    ("POST", "/admin/withdraw-whitelist", A.WITHDRAWAL_WHITELIST, {"account": "x"}),
    ("DELETE", "/admin/withdraw-whitelist", A.WITHDRAWAL_WHITELIST, {"account": "x"}),
    ("GET", "/admin/escrow/deals", A.ESCROW_READ, None),
    ("GET", "/admin/escrow/deals/{deal_id}", A.ESCROW_READ, None),
    ("POST", "/admin/escrow/deals/{deal_id}/resolve", A.ESCROW_RESOLVE, {"outcome": "x"}),
]
TARGETS = {"account": "424242", "api_key": "no-such-key", "symbol": "NOPE", "wid": "424242",
           "deal_id": "424242"}
QUERIES = {"/admin/users": {"email": "nobody@example.com"}, "/admin/api-keys": {"account": 1},
           "/admin/audit": {"action": "nothing.yet"}, "/admin/withdrawals": {"limit": 1}}


@pytest.fixture(scope="module")
async def plat(nats_url: str, pg_url: str, redis_url: str) -> AsyncIterator[Platform]:
    async with running_platform(nats_url, pg_url, redis_url, **FAST_HASHING) as p:
        yield p


@pytest.fixture(scope="module")
async def tokens(plat: Platform) -> dict[Role, str]:
    """One admin identity per role, made by the bootstrap identity."""
    boot = plat.settings.admin_token.get_secret_value()
    out = {Role.SUPER_ADMIN: boot}
    async with httpx.AsyncClient(base_url=plat.base_url) as http:
        for role in (Role.OPERATOR, Role.SUPPORT, Role.AUDITOR):
            r = await http.post("/admin/admins", headers=admin_headers(boot),
                                json={"name": f"{role.value.lower()}-1", "role": role.value})
            assert r.status_code == 200, r.text
            out[role] = r.json()["token"]
    return out


@pytest.fixture
async def http(plat: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=plat.base_url) as c:
        yield c


def test_the_table_names_every_admin_endpoint(plat: Platform) -> None:
    paths = create_app(plat.settings).openapi()["paths"]
    routes = {(m.upper(), p) for p, ops in paths.items() if p.startswith("/admin")
              for m in ops}
    assert routes == {(m, p) for m, p, _, _ in ENDPOINTS}


@pytest.mark.parametrize("role", list(Role), ids=[r.value for r in Role])
@pytest.mark.parametrize(("method", "path", "action", "body"), ENDPOINTS,
                         ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS])
async def test_every_endpoint_admits_exactly_the_roles_of_its_action(
    http: httpx.AsyncClient, tokens: dict[Role, str], role: Role, method: str, path: str,
    action: AdminAction, body: dict[str, Any] | None,
) -> None:
    url = path.format(**TARGETS)
    kwargs: dict[str, Any] = {"params": QUERIES.get(path, {})}
    if body is not None:
        kwargs["json"] = body
    r = await http.request(method, url, headers=admin_headers(tokens[role]), **kwargs)
    if role in PERMISSION_MATRIX[action]:
        assert r.status_code not in (401, 403), r.text
    else:
        assert (r.status_code, r.json()["code"]) == (403, -2015), r.text
        assert r.json()["msg"] == f"Role {role.value} may not {action.value}."


@pytest.mark.parametrize(("method", "path", "action", "body"), ENDPOINTS[:6],
                         ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS[:6]])
async def test_no_or_a_wrong_admin_token_is_401(
    http: httpx.AsyncClient, method: str, path: str, action: AdminAction,
    body: dict[str, Any] | None,
) -> None:
    url = path.format(**TARGETS)
    for headers in ({}, admin_headers("tpa_not-a-real-token"), {"Authorization": "Basic x"}):
        r = await http.request(method, url, headers=headers, params=QUERIES.get(path, {}))
        assert (r.status_code, r.json()["code"]) == (401, -2015)


async def test_the_bearer_scheme_is_case_insensitive_and_required(
    http: httpx.AsyncClient, tokens: dict[Role, str]
) -> None:
    """``Authorization: <scheme> <token>``, the scheme in any case (RFC 7235); a token
    without the scheme is not an admin token."""
    for role, token in tokens.items():
        for header in (f"Bearer {token}", f"bearer {token}", f"BEARER {token}"):
            r = await http.get("/admin/kill-switch", headers={"Authorization": header})
            assert r.status_code == 200, (role, header, r.text)
        for header in (token, f"Token {token}", f"Bearer{token}"):
            r = await http.get("/admin/kill-switch", headers={"Authorization": header})
            assert (r.status_code, r.json()) == (
                401, {"code": -2015, "msg": "Invalid admin token."}), (role, header)


async def _audit(plat: Platform, **where: str) -> list[dict[str, Any]]:
    return await accounts_db.audit_entries(plat.pool, from_id=1, limit=1000,
                                           action=where.get("action"),
                                           actor=where.get("actor"),
                                           target=where.get("target"))


async def test_a_freeze_is_recorded_once_with_who_what_before_after_and_where(
    plat: Platform, http: httpx.AsyncClient, tokens: dict[Role, str]
) -> None:
    t = await plat.trader("audited", {"USDT": "10"})
    r = await http.post(f"/admin/users/{t.account}/freeze", json={"reason": "chargeback"},
                        headers=admin_headers(tokens[Role.SUPPORT]))
    assert r.status_code == 200, r.text
    again = await http.post(f"/admin/users/{t.account}/freeze", json={"reason": "again"},
                            headers=admin_headers(tokens[Role.SUPPORT]))
    assert again.status_code == 200  # already frozen: nothing changes, nothing recorded
    [entry] = await _audit(plat, target=f"account:{t.account}")
    assert entry["actor"] == "admin:support-1" and entry["role"] == "Support"
    assert entry["action"] == "user.freeze" and entry["ip"] == "127.0.0.1"
    assert entry["before"]["frozen"] is False
    assert entry["after"]["frozen"] is True and entry["after"]["frozenReason"] == "chargeback"
    assert entry["time"] > 0
    # Looking the user up shows it; reads are not recorded.
    doc = (await http.get(f"/admin/users/{t.account}",
                          headers=admin_headers(tokens[Role.AUDITOR]))).json()
    assert doc["frozen"] is True and [k["apiKey"] for k in doc["apiKeys"]] == [t.api_key]
    assert len(await _audit(plat, target=f"account:{t.account}")) == 1


async def test_the_audit_log_cannot_be_edited(plat: Platform, http: httpx.AsyncClient,
                                              tokens: dict[Role, str]) -> None:
    entries = await _audit(plat)
    assert entries
    first = entries[0]["id"]
    for sql in ("UPDATE audit_log SET actor = 'nobody' WHERE id = $1",
                "DELETE FROM audit_log WHERE id = $1"):
        with pytest.raises(Exception, match="append-only"):
            await plat.pool.execute(sql, first)
    with pytest.raises(Exception, match="append-only"):
        await plat.pool.execute("TRUNCATE audit_log")
    boot = admin_headers(tokens[Role.SUPER_ADMIN])
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        r = await http.request(method, "/admin/audit", headers=boot)
        assert r.status_code == 405
    assert (await _audit(plat))[0] == entries[0]


async def test_halting_and_resuming_a_pair_is_live_and_recorded(
    plat: Platform, http: httpx.AsyncClient, tokens: dict[Role, str]
) -> None:
    t = await plat.trader("halt-trader", {"USDT": "1000"})
    op = admin_headers(tokens[Role.OPERATOR])
    order = {"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
             "price": "1000", "quantity": "0.01", "newOrderRespType": "ACK"}
    r = await http.put("/admin/pairs/ETHUSDT/trading", json={"trading": "halted"}, headers=op)
    assert r.json()["trading"] == "halted"
    r = await t.api.signed("POST", "/api/v3/order", **order)
    assert r.json() == {"code": -1013, "msg": "Market is closed."}
    r = await http.put("/admin/pairs/ETHUSDT/trading", json={"trading": "enabled"}, headers=op)
    assert r.json()["trading"] == "enabled"

    async def accepted() -> bool:
        r = await t.api.signed("POST", "/api/v3/order", **{**order, "newOrderRespType": "RESULT"})
        return r.status_code == 200 and r.json()["status"] == "NEW"

    await eventually(accepted)
    entries = await _audit(plat, target="pair:ETHUSDT", action="pair.trading")
    assert [(e["before"]["trading"], e["after"]["trading"], e["actor"]) for e in entries] == [
        ("enabled", "halted", "admin:operator-1"), ("halted", "enabled", "admin:operator-1")]


async def test_a_fee_change_is_charged_on_the_next_trades_and_recorded(
    plat: Platform, http: httpx.AsyncClient, tokens: dict[Role, str]
) -> None:
    boot = admin_headers(tokens[Role.SUPER_ADMIN])
    r = await http.put("/admin/pairs/ETHBTC/fees", json={"makerFeePpm": 0, "takerFeePpm": 5000},
                       headers=boot)
    assert r.json() == {"symbol": "ETHBTC", "trading": "enabled", "makerFeePpm": 0,
                        "takerFeePpm": 5000}
    maker = await plat.trader("fee-maker", {"ETH": "1"})
    taker = await plat.trader("fee-taker", {"BTC": "1"})
    r = await maker.api.signed("POST", "/api/v3/order", symbol="ETHBTC", side="SELL",
                               type="LIMIT", timeInForce="GTC", price="0.05000",
                               quantity="1.000")
    assert r.status_code == 200, r.text
    r = await taker.api.signed("POST", "/api/v3/order", symbol="ETHBTC", side="BUY",
                               type="LIMIT", timeInForce="GTC", price="0.05000",
                               quantity="1.000", newOrderRespType="FULL")
    assert r.json()["fills"][0]["commission"] == "0.00500000"  # 0.5% of 1 ETH, taker
    assert await plat.balances(maker.account) == {"BTC": (to_units("0.05"), 0),
                                                  "ETH": (0, 0)}  # maker paid nothing
    [entry] = await _audit(plat, target="pair:ETHBTC", action="pair.fees")
    assert entry["before"]["takerFeePpm"] == 1000 and entry["after"]["takerFeePpm"] == 5000
    assert entry["actor"] == "admin:bootstrap" and entry["role"] == "SuperAdmin"


async def test_the_kill_switch_halts_every_symbol_at_once_and_resumes_each_as_configured(
    plat: Platform, http: httpx.AsyncClient, tokens: dict[Role, str]
) -> None:
    t = await plat.trader("kill-trader", {"USDT": "1000", "BTC": "1"})
    op = admin_headers(tokens[Role.OPERATOR])
    await http.put("/admin/pairs/ETHBTC/trading", json={"trading": "cancel-only"}, headers=op)
    r = await http.post("/admin/kill-switch", json={"reason": "incident 42"}, headers=op)
    assert r.status_code == 200, r.text
    assert r.json()["symbols"] == ["BTCUSDT", "ETHBTC", "ETHUSDT"]
    for symbol, price in (("BTCUSDT", "50000"), ("ETHUSDT", "1000")):
        r = await t.api.signed("POST", "/api/v3/order", symbol=symbol, side="BUY",
                               type="LIMIT", timeInForce="GTC", price=price, quantity="0.01")
        assert r.json() == {"code": -1013, "msg": "Market is closed."}
    state = (await http.get("/admin/kill-switch",
                            headers=admin_headers(tokens[Role.AUDITOR]))).json()
    assert state == {"on": True, "by": "operator-1", "reason": "incident 42", "pairs": {
        "BTCUSDT": "enabled", "ETHBTC": "cancel-only", "ETHUSDT": "enabled"}}

    # Every engine got SetTrading(HALTED) (settlement mirrors each engine's state into
    # the pairs table): an order reaching a log anyway would be refused by its engine.
    async def engines_halted() -> bool:
        rows = await plat.pool.fetch("SELECT trading FROM pairs")
        return {r["trading"] for r in rows} == {"halted"}

    await eventually(engines_halted)
    again = await http.post("/admin/kill-switch", json={"reason": "twice"}, headers=op)
    assert again.status_code == 200 and again.json()["reason"] == "incident 42"
    r = await http.delete("/admin/kill-switch", headers=op)
    assert r.json() == {"on": False, "pairs": {"BTCUSDT": "enabled", "ETHBTC": "cancel-only",
                                               "ETHUSDT": "enabled"}}

    async def trading_again() -> bool:
        r = await t.api.signed("POST", "/api/v3/order", symbol="BTCUSDT", side="BUY",
                               type="LIMIT", timeInForce="GTC", price="50000",
                               quantity="0.01", newOrderRespType="RESULT")
        return r.status_code == 200 and r.json()["status"] == "NEW"

    await eventually(trading_again)
    r = await t.api.signed("POST", "/api/v3/order", symbol="ETHBTC", side="SELL", type="LIMIT",
                           timeInForce="GTC", price="0.05", quantity="0.1")
    assert r.json()["code"] == -1013  # back to its configured cancel-only, not enabled
    entries = await _audit(plat, action="killswitch.set")
    assert [(e["before"]["on"], e["after"]["on"]) for e in entries] == [(False, True),
                                                                      (True, False)]
    await http.put("/admin/pairs/ETHBTC/trading", json={"trading": "enabled"}, headers=op)


async def test_named_admins_come_from_the_cli_with_hashed_tokens(
    plat: Platform, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TRADEPLANE_DATABASE_URL", plat.settings.database_url)
    monkeypatch.setenv("TRADEPLANE_DEV_MODE", "1")
    rc = await asyncio.to_thread(cli.main, ["admin-create", "carol", "--role", "Auditor"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["role"] == "Auditor" and doc["token"].startswith("tpa_")
    stored = await plat.pool.fetchval("SELECT token_hash FROM admin_users WHERE name = 'carol'")
    assert doc["token"].encode() not in bytes(stored)
    r = await http.get("/admin/audit", headers=admin_headers(doc["token"]))
    assert r.status_code == 200
    assert any(e["action"] == "admin.create" and e["target"] == "admin:carol" and
               e["actor"].startswith("cli:") for e in r.json())
    r = await http.post("/admin/kill-switch", json={}, headers=admin_headers(doc["token"]))
    assert r.status_code == 403
    assert await asyncio.to_thread(cli.main, ["admin-create", "carol", "--role",
                                              "Auditor"]) == 2
    assert await asyncio.to_thread(cli.main, ["admin-create", "bootstrap", "--role",
                                              "SuperAdmin"]) == 2


async def test_a_withdrawal_approval_is_recorded_once_and_only_by_an_allowed_role(
    plat: Platform, http: httpx.AsyncClient, tokens: dict[Role, str]
) -> None:
    t = await plat.trader("withdrawer", {"LTC": "10"})
    spec = wallet_from_spec("ltc-audit", {
        "chain": "litecoin", "network": "regtest", "asset": "LTC", "confirmations": 1,
        "rpc": {"url": "http://127.0.0.1:1/wallet/none"},
        "withdrawals": {"fee": "0.001", "min": "0.01", "approvalThreshold": "1"}})
    await wallets_db.upsert_wallet(plat.pool, spec)
    result, wid = await wallets_db.request_withdrawal(
        plat.pool, spec, t.account, "rltc1qexampleaddress0000000000000000000", to_units("5"),
        "audit-1", int(time.time() * 1000))
    assert result == wallets_db.RequestResult.CREATED and wid is not None
    r = await http.post(f"/admin/withdrawals/{wid}/approve",
                        headers=admin_headers(tokens[Role.SUPPORT]))
    assert r.status_code == 403
    r = await http.post(f"/admin/withdrawals/{wid}/approve",
                        headers=admin_headers(tokens[Role.OPERATOR]))
    assert r.status_code == 200 and r.json()["status"] == "APPROVED"
    again = await http.post(f"/admin/withdrawals/{wid}/approve",
                            headers=admin_headers(tokens[Role.OPERATOR]))
    assert again.status_code == 400  # no longer awaiting approval: nothing recorded
    [entry] = await _audit(plat, target=f"withdrawal:{wid}")
    assert entry["action"] == "withdrawal.approve" and entry["actor"] == "admin:operator-1"
    assert (entry["before"]["status"], entry["after"]["status"]) == ("PENDING", "APPROVED")
    listed = await http.get("/admin/withdrawals", headers=admin_headers(tokens[Role.AUDITOR]))
    assert wid in {w["id"] for w in listed.json()}
