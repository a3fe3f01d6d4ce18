"""Escrowed deals against the real platform (PostgreSQL, NATS, the gateway over HTTP, the
settlement process with its escrow timer): every transition, the timer's expiry, both
dispute outcomes, forbidden transitions refused with their codes and nothing moved,
insufficient balance leaving nothing locked, idempotent repeats, the audit trail and the
user-stream events; the ledger's invariants hold after every test."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.integration.test_user_stream import user_stream
from tests.support.harness import Platform, Trader, eventually
from tests.support.security import admin_headers

from tradeplane.adapters import db
from tradeplane.adapters.cipher import SecretCipher
from tradeplane.adapters.escrow_db import PgEscrowStore
from tradeplane.demo.client import ApiClient
from tradeplane.domain.escrow import ESCROW_ACCOUNT
from tradeplane.domain.money import to_units
from tradeplane.usecases.escrow import Escrow, EscrowTimer

pytestmark = pytest.mark.integration

AMOUNT = "0.25"


@pytest.fixture(autouse=True)
async def ledger_sound(plat: Platform) -> AsyncIterator[None]:
    yield
    _, problems = await db.check_invariants(plat.pool)
    assert problems == []


@pytest.fixture
async def admin(plat: Platform) -> AsyncIterator[httpx.AsyncClient]:
    token = plat.settings.admin_token.get_secret_value()
    async with httpx.AsyncClient(base_url=plat.base_url, headers=admin_headers(token)) as c:
        yield c


async def party(plat: Platform, funds: dict[str, str] | None = None,
                perms: tuple[str, ...] = ("read", "escrow")) -> Trader:
    name = f"escrow-{secrets.token_hex(4)}"
    account = await db.create_account(plat.pool, name)
    secret = secrets.token_hex(32)
    cipher = SecretCipher(plat.settings.secret_key.get_secret_value())
    key = await db.create_api_key(plat.pool, account, cipher.encrypt(secret), list(perms))
    for asset, amount in (funds or {}).items():
        await db.credit(plat.pool, account, asset, to_units(amount), f"{name}:{asset}")
    api = ApiClient(plat.base_url, key, secret)
    plat.clients.append(api)
    return Trader(account, key, secret, api)


async def call(t: Trader, method: str, path: str, **params: Any) -> tuple[int, Any]:
    r = await t.api.signed(method, path, **params)
    return r.status_code, r.json()


async def open_deal(buyer: Trader, seller: Trader, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"seller": seller.account, "asset": "BTC", "amount": AMOUNT,
                              "priceAsset": "EUR", "price": "12500", **extra}
    status, doc = await call(buyer, "POST", "/sapi/v1/escrow/deal", **params)
    assert status == 200, doc
    assert doc["state"] == "CREATED"
    return dict(doc)


async def act(t: Trader, action: str, deal_id: int, **extra: Any) -> tuple[int, Any]:
    return await call(t, "POST", f"/sapi/v1/escrow/deal/{action}", dealId=deal_id, **extra)


async def btc(plat: Platform, account: int) -> tuple[int, int]:
    return (await plat.balances(account)).get("BTC", (0, 0))


async def ledger_state(plat: Platform, *accounts: int) -> list[tuple[int, int]]:
    return [await btc(plat, a) for a in (*accounts, ESCROW_ACCOUNT)]


async def funded(plat: Platform, **extra: Any) -> tuple[Trader, Trader, int]:
    seller = await party(plat, {"BTC": "1"})
    buyer = await party(plat)
    deal = await open_deal(buyer, seller, **extra)
    status, doc = await act(seller, "fund", deal["dealId"])
    assert (status, doc["state"]) == (200, "FUNDED"), doc
    return seller, buyer, int(deal["dealId"])


async def audit_trail(plat: Platform, deal_id: int) -> list[tuple[str, str]]:
    rows = await plat.pool.fetch(
        "SELECT actor, action FROM audit_log WHERE target = $1 ORDER BY id", f"deal:{deal_id}")
    return [(r["actor"], r["action"]) for r in rows]


UNITS = to_units(AMOUNT)
ONE = to_units("1")


# --------------------------------------------------------------------------- the happy path
async def test_a_deal_goes_created_funded_paid_released_and_the_asset_reaches_the_buyer(
        plat: Platform) -> None:
    seller = await party(plat, {"BTC": "1"})
    buyer = await party(plat)
    escrow_before = await btc(plat, ESCROW_ACCOUNT)
    deal = await open_deal(buyer, seller, clientDealId="first-deal")
    deal_id = deal["dealId"]
    assert deal["side"] == "BUYER" and deal["deadline"] is not None
    assert await btc(plat, seller.account) == (ONE, 0)  # nothing locked before funding

    status, doc = await act(seller, "fund", deal_id)
    assert (status, doc["state"], doc["side"]) == (200, "FUNDED", "SELLER")
    assert await btc(plat, seller.account) == (ONE - UNITS, 0)
    assert await btc(plat, ESCROW_ACCOUNT) == (0, escrow_before[1] + UNITS)

    status, doc = await act(buyer, "paid", deal_id)
    assert (status, doc["state"], doc["deadline"]) == (200, "PAID", None)
    status, doc = await act(seller, "release", deal_id)
    assert (status, doc["state"]) == (200, "RELEASED")
    assert await btc(plat, buyer.account) == (UNITS, 0)
    assert await btc(plat, seller.account) == (ONE - UNITS, 0)
    assert await btc(plat, ESCROW_ACCOUNT) == escrow_before

    status, doc = await call(buyer, "GET", "/sapi/v1/escrow/deal", dealId=deal_id)
    assert status == 200
    assert [(h["action"], h["fromState"], h["state"]) for h in doc["history"]] == [
        ("create", "", "CREATED"), ("fund", "CREATED", "FUNDED"), ("paid", "FUNDED", "PAID"),
        ("release", "PAID", "RELEASED")]
    assert await audit_trail(plat, deal_id) == [
        (f"user:{buyer.account}", "escrow.create"), (f"user:{seller.account}", "escrow.fund"),
        (f"user:{buyer.account}", "escrow.paid"), (f"user:{seller.account}", "escrow.release")]
    postings = await plat.pool.fetch(
        "SELECT tx_ref, account_id, bucket, amount FROM postings WHERE tx_ref LIKE $1"
        " ORDER BY id", f"escrow:{deal_id}:%")
    assert [tuple(p) for p in postings] == [
        (f"escrow:{deal_id}:FUNDED", seller.account, "a", -UNITS),
        (f"escrow:{deal_id}:FUNDED", ESCROW_ACCOUNT, "l", UNITS),
        (f"escrow:{deal_id}:RELEASED", ESCROW_ACCOUNT, "l", -UNITS),
        (f"escrow:{deal_id}:RELEASED", buyer.account, "a", UNITS)]
    status, mine = await call(seller, "GET", "/sapi/v1/escrow/deals", state="RELEASED")
    assert status == 200 and [d["dealId"] for d in mine] == [deal_id]


async def test_the_seller_may_release_a_funded_deal_before_it_is_marked_paid(
        plat: Platform) -> None:
    seller, buyer, deal_id = await funded(plat)
    status, doc = await act(seller, "release", deal_id)
    assert (status, doc["state"]) == (200, "RELEASED")
    assert await btc(plat, buyer.account) == (UNITS, 0)


async def test_cancelling_before_funding_moves_nothing_and_after_funding_refunds_the_seller(
        plat: Platform) -> None:
    seller = await party(plat, {"BTC": "1"})
    buyer = await party(plat)
    deal = await open_deal(buyer, seller)
    status, doc = await act(seller, "cancel", deal["dealId"])
    assert (status, doc["state"]) == (200, "CANCELLED")
    assert await btc(plat, seller.account) == (ONE, 0)

    seller, buyer, deal_id = await funded(plat)
    status, doc = await act(seller, "cancel", deal_id)  # the buyer may be paying
    assert (status, doc["code"]) == (400, -24003)
    status, doc = await act(buyer, "cancel", deal_id)
    assert (status, doc["state"]) == (200, "CANCELLED")
    assert await btc(plat, seller.account) == (ONE, 0)
    assert await btc(plat, buyer.account) == (0, 0)


# --------------------------------------------------------------------------- disputes
@pytest.mark.parametrize(("outcome", "state", "to_buyer"), [
    ("release", "RESOLVED_RELEASE", True), ("refund", "RESOLVED_REFUND", False)])
async def test_a_dispute_keeps_the_funds_locked_until_an_admin_resolves_it(
        plat: Platform, admin: httpx.AsyncClient, outcome: str, state: str,
        to_buyer: bool) -> None:
    seller, buyer, deal_id = await funded(plat)
    assert (await act(buyer, "paid", deal_id))[0] == 200
    status, doc = await act(buyer, "dispute", deal_id, reason="paid, not released")
    assert (status, doc["state"]) == (200, "DISPUTED")
    locked = await ledger_state(plat, seller.account, buyer.account)

    for who, action in ((seller, "release"), (buyer, "cancel"), (seller, "cancel")):
        status, doc = await act(who, action, deal_id)
        assert (status, doc["code"]) == (400, -24003), (action, doc)
    status, doc = await act(buyer, "release", deal_id)
    assert (status, doc["code"]) == (400, -24002)
    assert await ledger_state(plat, seller.account, buyer.account) == locked

    r = await admin.get("/admin/escrow/deals", params={"state": "DISPUTED"})
    assert r.status_code == 200 and deal_id in [d["dealId"] for d in r.json()]
    r = await admin.post(f"/admin/escrow/deals/{deal_id}/resolve",
                         json={"outcome": outcome, "reason": "bank statement checked"})
    assert (r.status_code, r.json()["state"]) == (200, state), r.text
    assert await btc(plat, buyer.account) == ((UNITS, 0) if to_buyer else (0, 0))
    assert await btc(plat, seller.account) == ((ONE - UNITS, 0) if to_buyer else (ONE, 0))
    r = await admin.post(f"/admin/escrow/deals/{deal_id}/resolve",
                         json={"outcome": outcome, "reason": "again"})
    assert (r.status_code, r.json()["code"]) == (400, -24003)
    trail = await audit_trail(plat, deal_id)
    assert trail[-2:] == [(f"user:{buyer.account}", "escrow.dispute"),
                          ("admin:bootstrap", f"escrow.resolve-{outcome}")]
    r = await admin.get(f"/admin/escrow/deals/{deal_id}")
    assert r.json()["history"][-1]["note"] == "bank statement checked"


async def test_only_an_admin_with_the_resolve_action_and_a_disputed_deal_resolves(
        plat: Platform, admin: httpx.AsyncClient) -> None:
    seller, buyer, deal_id = await funded(plat)
    before = await ledger_state(plat, seller.account, buyer.account)
    r = await admin.post(f"/admin/escrow/deals/{deal_id}/resolve",
                         json={"outcome": "release", "reason": "not disputed"})
    assert (r.status_code, r.json()["code"]) == (400, -24003)
    r = await admin.post("/admin/escrow/deals/424242424/resolve",
                         json={"outcome": "release", "reason": "x"})
    assert (r.status_code, r.json()["code"]) == (404, -24001)
    r = await admin.post(f"/admin/escrow/deals/{deal_id}/resolve",
                         json={"outcome": "steal", "reason": "x"})
    assert r.status_code == 400
    assert await ledger_state(plat, seller.account, buyer.account) == before


# --------------------------------------------------------------------------- refusals
async def test_funding_beyond_the_sellers_balance_is_refused_and_locks_nothing(
        plat: Platform) -> None:
    seller = await party(plat, {"BTC": "0.1"})
    buyer = await party(plat)
    deal = await open_deal(buyer, seller)
    before = await ledger_state(plat, seller.account, buyer.account)
    status, doc = await act(seller, "fund", deal["dealId"])
    assert (status, doc["code"]) == (400, -24004)
    assert await ledger_state(plat, seller.account, buyer.account) == before
    status, doc = await call(buyer, "GET", "/sapi/v1/escrow/deal", dealId=deal["dealId"])
    assert doc["state"] == "CREATED" and len(doc["history"]) == 1


async def test_forbidden_transitions_are_refused_with_their_codes_and_move_nothing(
        plat: Platform) -> None:
    seller, buyer, deal_id = await funded(plat)
    stranger = await party(plat, {"BTC": "1"})
    before = await ledger_state(plat, seller.account, buyer.account, stranger.account)
    refusals = [
        (buyer, "release", -24002), (buyer, "fund", -24002), (seller, "paid", -24002),
        (stranger, "release", -24001), (seller, "fund", -24003), (seller, "dispute", -24003),
    ]
    for who, action, code in refusals:
        status, doc = await act(who, action, deal_id)
        assert (status, doc["code"]) == (400, code), (action, doc)
    assert await ledger_state(plat, seller.account, buyer.account, stranger.account) == before
    status, doc = await call(stranger, "GET", "/sapi/v1/escrow/deal", dealId=deal_id)
    assert (status, doc["code"]) == (400, -24001)

    assert (await act(seller, "release", deal_id))[0] == 200
    after = await ledger_state(plat, seller.account, buyer.account)
    status, doc = await act(seller, "release", deal_id)  # a second, distinct release
    assert (status, doc["code"]) == (400, -24003)
    assert "RELEASED" in doc["msg"]
    assert await ledger_state(plat, seller.account, buyer.account) == after


async def test_a_key_without_the_escrow_permission_may_read_but_not_move_a_deal(
        plat: Platform) -> None:
    seller, _buyer, deal_id = await funded(plat)
    reader = ApiClient(plat.base_url, *await _read_only_key(plat, seller.account))
    plat.clients.append(reader)
    r = await reader.signed("POST", "/sapi/v1/escrow/deal/release", dealId=deal_id)
    assert (r.status_code, r.json()["code"]) == (401, -2015)
    r = await reader.signed("GET", "/sapi/v1/escrow/deal", dealId=deal_id)
    assert r.status_code == 200 and r.json()["state"] == "FUNDED"


async def _read_only_key(plat: Platform, account: int) -> tuple[str, str]:
    secret = secrets.token_hex(32)
    cipher = SecretCipher(plat.settings.secret_key.get_secret_value())
    key = await db.create_api_key(plat.pool, account, cipher.encrypt(secret),
                                  ["read", "trade"])
    return key, secret


# --------------------------------------------------------------------------- idempotence
async def test_a_repeated_request_answers_the_same_deal_and_moves_nothing_again(
        plat: Platform) -> None:
    seller, buyer, deal_id = await funded(plat)
    first = await act(seller, "release", deal_id, requestId="rel-1")
    again = await act(seller, "release", deal_id, requestId="rel-1")
    assert first[0] == again[0] == 200
    assert first[1] == again[1]
    assert await btc(plat, buyer.account) == (UNITS, 0)
    status, doc = await act(seller, "cancel", deal_id, requestId="rel-1")
    assert (status, doc["code"]) == (400, -24006)
    count = await plat.pool.fetchval(
        "SELECT count(*) FROM postings WHERE tx_ref = $1", f"escrow:{deal_id}:RELEASED")
    assert count == 2
    assert [a for _, a in await audit_trail(plat, deal_id)].count("escrow.release") == 1


async def test_opening_again_with_the_same_client_deal_id_answers_the_same_deal(
        plat: Platform) -> None:
    seller = await party(plat, {"BTC": "1"})
    buyer = await party(plat)
    one = await open_deal(buyer, seller, clientDealId="same-id")
    two = await open_deal(buyer, seller, clientDealId="same-id")
    assert one == two
    status, doc = await call(buyer, "POST", "/sapi/v1/escrow/deal", seller=seller.account,
                             asset="BTC", amount="0.5", priceAsset="EUR", price="1",
                             clientDealId="same-id")
    assert (status, doc["code"]) == (400, -24005)
    n = await plat.pool.fetchval("SELECT count(*) FROM escrow_deals WHERE buyer_id = $1",
                                 buyer.account)
    assert n == 1


async def test_concurrent_openings_with_one_client_deal_id_make_one_deal(
        plat: Platform) -> None:
    seller = await party(plat, {"BTC": "1"})
    buyer = await party(plat)
    answers = await asyncio.gather(*(open_deal(buyer, seller, clientDealId="racing")
                                     for _ in range(6)))
    assert len({a["dealId"] for a in answers}) == 1
    n = await plat.pool.fetchval("SELECT count(*) FROM escrow_deals WHERE buyer_id = $1",
                                 buyer.account)
    assert n == 1


# --------------------------------------------------------------------------- the timer
async def test_the_timer_expires_an_unpaid_funded_deal_and_refunds_the_seller(
        plat: Platform) -> None:
    seller, buyer, deal_id = await funded(plat, payTimeout=1)

    async def expired() -> bool:
        _, doc = await call(seller, "GET", "/sapi/v1/escrow/deal", dealId=deal_id)
        return bool(doc["state"] == "EXPIRED")

    await eventually(expired)
    assert await btc(plat, seller.account) == (ONE, 0)
    assert await btc(plat, buyer.account) == (0, 0)
    assert (await audit_trail(plat, deal_id))[-1] == ("system:escrow-timer", "escrow.expire")
    status, doc = await act(buyer, "paid", deal_id)
    assert (status, doc["code"]) == (400, -24003)


async def test_the_timer_expires_an_unfunded_deal_and_a_paid_one_never(
        plat: Platform) -> None:
    seller = await party(plat, {"BTC": "1"})
    buyer = await party(plat)
    unfunded = (await open_deal(buyer, seller, fundTimeout=1))["dealId"]
    _, paid_buyer, paid = await funded(plat, payTimeout=2)
    assert (await act(paid_buyer, "paid", paid))[0] == 200

    async def expired() -> bool:
        _, doc = await call(buyer, "GET", "/sapi/v1/escrow/deal", dealId=unfunded)
        return bool(doc["state"] == "EXPIRED")

    await eventually(expired)
    await asyncio.sleep(2.5)  # past the paid deal's old deadline: it must not expire
    _, doc = await call(paid_buyer, "GET", "/sapi/v1/escrow/deal", dealId=paid)
    assert doc["state"] == "PAID"
    assert await btc(plat, seller.account) == (ONE, 0)


async def test_two_timers_racing_expire_a_deal_once(plat: Platform) -> None:
    seller, _buyer, deal_id = await funded(plat, payTimeout=30)
    later = int(time.time() * 1000) + 60_000
    timers = [Escrow(PgEscrowStore(plat.pool)) for _ in range(4)]
    await asyncio.gather(*(t.expire_due(later) for t in timers))
    rows = await plat.pool.fetch(
        "SELECT action FROM escrow_transitions WHERE deal_id = $1 ORDER BY seq", deal_id)
    assert [r["action"] for r in rows] == ["create", "fund", "expire"]
    refunds = await plat.pool.fetchval(
        "SELECT count(*) FROM postings WHERE tx_ref = $1", f"escrow:{deal_id}:EXPIRED")
    assert refunds == 2
    assert await btc(plat, seller.account) == (ONE, 0)


# --------------------------------------------------------------------------- user streams
async def test_each_transition_reaches_both_parties_user_streams(plat: Platform) -> None:
    seller = await party(plat, {"BTC": "1"})
    buyer = await party(plat)
    async with user_stream(plat, seller) as s_stream, user_stream(plat, buyer) as b_stream:
        deal_id = (await open_deal(buyer, seller))["dealId"]
        assert (await act(seller, "fund", deal_id))[0] == 200
        assert (await act(buyer, "paid", deal_id))[0] == 200
        assert (await act(seller, "release", deal_id))[0] == 200
        seller_events = await s_stream.wait_for(5)
        buyer_events = await b_stream.wait_for(5)
    updates = [e for e in seller_events if e["e"] == "escrowDealUpdate"]
    assert [(e["action"], e["state"]) for e in updates] == [
        ("create", "CREATED"), ("fund", "FUNDED"), ("paid", "PAID"), ("release", "RELEASED")]
    assert [e for e in buyer_events if e["e"] == "escrowDealUpdate"] == updates
    (s_pos,) = [e for e in seller_events if e["e"] == "outboundAccountPosition"]
    assert s_pos["B"] == [{"a": "BTC", "f": "0.75000000", "l": "0.00000000"}]
    (b_pos,) = [e for e in buyer_events if e["e"] == "outboundAccountPosition"]
    assert b_pos["B"] == [{"a": "BTC", "f": "0.25000000", "l": "0.00000000"}]
    assert updates[-1]["amount"] == AMOUNT.ljust(10, "0") and updates[-1]["dealId"] == deal_id


# --------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(("params", "code"), [
    ({"amount": "abc"}, -1100), ({"amount": "0"}, -1100), ({"amount": "0.000000001"}, -1100),
    ({"amount": "1" * 30}, -1100), ({"price": "-1"}, -1100), ({"seller": "x"}, -1100),
    ({"seller": "99999999999999999999"}, -1100), ({"asset": "BTC\x00"}, -1100),
    ({"fundTimeout": "0"}, -1100), ({"payTimeout": "2592001"}, -1100),
    ({"clientDealId": "x" * 40}, -1100), ({"seller": ""}, -1102), ({"priceAsset": ""}, -1102),
    ({"seller": "424242424"}, -24005), ({"seller": "self"}, -24005),
    ({"seller": str(ESCROW_ACCOUNT)}, -24005),
])
async def test_bad_deal_inputs_are_answered_with_clear_errors_and_nothing_stored(
        plat: Platform, params: dict[str, str], code: int) -> None:
    seller = await party(plat, {"BTC": "1"})
    buyer = await party(plat)
    full = {"seller": str(seller.account), "asset": "BTC", "amount": "0.1",
            "priceAsset": "EUR", "price": "10", **params}
    if full["seller"] == "self":
        full["seller"] = str(buyer.account)
    status, doc = await call(buyer, "POST", "/sapi/v1/escrow/deal", **full)
    assert (status, doc["code"]) == (400, code), doc
    assert isinstance(doc["msg"], str) and doc["msg"]
    n = await plat.pool.fetchval("SELECT count(*) FROM escrow_deals WHERE buyer_id = $1",
                                 buyer.account)
    assert n == 0


async def test_bad_transition_inputs_are_answered_with_clear_errors(plat: Platform) -> None:
    seller, buyer, deal_id = await funded(plat)
    before = await ledger_state(plat, seller.account, buyer.account)
    for params, code in (({"dealId": ""}, -1102), ({"dealId": "0"}, -1100),
                         ({"dealId": "1e5"}, -1100), ({"dealId": "9" * 25}, -1100),
                         ({"dealId": deal_id, "requestId": "bad id!"}, -1100)):
        status, doc = await call(seller, "POST", "/sapi/v1/escrow/deal/release", **params)
        assert (status, doc["code"]) == (400, code), (params, doc)
    assert (await act(buyer, "paid", deal_id))[0] == 200
    status, doc = await act(buyer, "dispute", deal_id, reason="line\nbreak")
    assert (status, doc["code"]) == (400, -1100)
    status, doc = await act(buyer, "dispute", deal_id, reason="x" * 257)
    assert (status, doc["code"]) == (400, -1100)
    status, doc = await call(seller, "GET", "/sapi/v1/escrow/deals", state="NOPE")
    assert (status, doc["code"]) == (400, -1100)
    assert await ledger_state(plat, seller.account, buyer.account) == before


# --------------------------------------------------------------------------- the CLI
@pytest.fixture
def cli_env(plat: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI pointed at the test platform."""
    monkeypatch.setenv("TRADEPLANE_DATABASE_URL", plat.settings.database_url)
    monkeypatch.setenv("TRADEPLANE_NATS_URL", plat.settings.nats_url)
    monkeypatch.setenv("TRADEPLANE_SECRET_KEY", plat.settings.secret_key.get_secret_value())
    monkeypatch.setenv("TRADEPLANE_DEV_MODE", "1")


async def _disputed(plat: Platform) -> tuple[Trader, Trader, int]:
    seller, buyer, deal_id = await funded(plat)
    assert (await act(buyer, "paid", deal_id))[0] == 200
    assert (await act(seller, "dispute", deal_id, reason="no transfer seen"))[0] == 200
    return seller, buyer, deal_id


async def test_the_cli_lists_and_resolves_disputes_leaving_the_api_s_audit_record(
        plat: Platform, admin: httpx.AsyncClient, cli_env: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    from tradeplane import cli

    async def run(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(cli.main, list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    by_cli_seller, _, by_cli = await _disputed(plat)
    by_api_seller, _, by_api = await _disputed(plat)
    code, out, _ = await run("escrow", "list", "--state", "DISPUTED")
    assert code == 0
    assert {by_cli, by_api} <= {d["dealId"] for d in json.loads(out)}

    code, _, _ = await run("escrow", "resolve", str(by_cli), "--outcome", "refund",
                           "--reason", "refund, no transfer")
    assert code == 0
    r = await admin.post(f"/admin/escrow/deals/{by_api}/resolve",
                         json={"outcome": "refund", "reason": "refund, no transfer"})
    assert r.status_code == 200
    for seller in (by_cli_seller, by_api_seller):
        assert await btc(plat, seller.account) == (ONE, 0)

    records = {}
    for deal_id in (by_cli, by_api):
        r = await plat.pool.fetchrow(
            "SELECT actor, role, action, ip, before, after FROM audit_log WHERE target = $1"
            " ORDER BY id DESC LIMIT 1", f"deal:{deal_id}")
        before, after = json.loads(r["before"]), json.loads(r["after"])
        records[deal_id] = (r["actor"], r["ip"], r["role"], r["action"], before["state"],
                            after["state"], after["note"])
    assert records[by_cli] == (f"cli:{getpass.getuser()}", "cli", "SuperAdmin",
                               "escrow.resolve-refund", "DISPUTED", "RESOLVED_REFUND",
                               "refund, no transfer")
    assert records[by_api][2:] == records[by_cli][2:]
    assert records[by_api][0] == "admin:bootstrap"

    code, out, _ = await run("escrow", "show", str(by_cli))
    assert code == 0 and json.loads(out)["history"][-1]["actor"].startswith("cli:")
    code, _, err = await run("escrow", "resolve", str(by_cli), "--outcome", "release",
                             "--reason", "again")
    assert code == 2  # refused: no longer disputed; nothing moved
    assert "-24003" in err
    assert await btc(plat, by_cli_seller.account) == (ONE, 0)


# --------------------------------------------------------------------------- supervision
async def test_the_timer_retries_a_database_outage_and_dies_loudly_on_a_defect(
        plat: Platform, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tradeplane.usecases.escrow")
    closed = await db.create_pool(plat.settings.database_url, 1)
    await closed.close()  # every round trip fails: the outage the timer must outlive
    timer = EscrowTimer(Escrow(PgEscrowStore(closed)), lambda: int(time.time() * 1000),
                        every_s=0.02, retry_max_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(timer.run(stop))

    async def retried() -> bool:
        return sum("escrow timer: round failed" in r.message for r in caplog.records) >= 3

    await eventually(retried)
    assert not task.done(), "the timer retries; it keeps running"
    stop.set()
    await asyncio.wait_for(task, 5)

    def broken_clock() -> int:
        raise KeyError("clock")

    defect = EscrowTimer(Escrow(PgEscrowStore(plat.pool)), broken_clock, every_s=0.02)
    with pytest.raises(KeyError):
        await asyncio.wait_for(defect.run(asyncio.Event()), 5)
