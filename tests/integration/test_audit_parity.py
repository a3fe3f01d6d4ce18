"""The CLI's admin commands and the admin API are one set of use cases
(``tradeplane.usecases``): each CLI command leaves the audit record its API call leaves —
the same action, target, role, before and after — differing only in who acted
(``cli:<os user>`` instead of ``admin:<name>``) and from where. And the CLI obeys the
rules the API obeys: under the kill switch, a pair's trading change only sets the state it
returns to when the switch is lifted."""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from tests.support.harness import Platform, eventually, running_platform
from tests.support.security import FAST_HASHING, admin_headers

from tradeplane import cli
from tradeplane.adapters import accounts_db, db
from tradeplane.adapters.bus import Bus

pytestmark = pytest.mark.integration

CLI_ACTOR = f"cli:{getpass.getuser()}"
#: Values that differ between two runs of one operation by their nature (times).
VOLATILE = frozenset({"createdAt"})


@pytest.fixture(scope="module")
async def plat(nats_url: str, pg_url: str, redis_url: str) -> AsyncIterator[Platform]:
    async with running_platform(nats_url, pg_url, redis_url, **FAST_HASHING) as p:
        yield p


@pytest.fixture
async def http(plat: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=plat.base_url,
                                 headers=admin_headers(
                                     plat.settings.admin_token.get_secret_value())) as c:
        yield c


@pytest.fixture
def cli_env(plat: Platform, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI pointed at the test platform."""
    monkeypatch.setenv("TRADEPLANE_DATABASE_URL", plat.settings.database_url)
    monkeypatch.setenv("TRADEPLANE_NATS_URL", plat.settings.nats_url)
    monkeypatch.setenv("TRADEPLANE_SECRET_KEY", plat.settings.secret_key.get_secret_value())
    monkeypatch.setenv("TRADEPLANE_DEV_MODE", "1")
    yield


async def _last_id(plat: Platform) -> int:
    return int(await plat.pool.fetchval("SELECT coalesce(max(id), 0) FROM audit_log"))


async def _one_record_since(plat: Platform, since: int) -> dict[str, Any]:
    """The one audit record written after ``since``."""
    entries = await accounts_db.audit_entries(plat.pool, from_id=since + 1, limit=10,
                                              action=None, actor=None, target=None)
    assert len(entries) == 1, entries
    return entries[0]


def _shape(value: Any, names: dict[Any, str]) -> Any:
    """``value`` with the run's own ids and names replaced by what they stand for."""
    if isinstance(value, dict):
        return {k: "<volatile>" if k in VOLATILE else
                names.get(v, v) if k == "account" else _shape(v, names)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v, names) for v in value]
    if isinstance(value, str):
        for given, placeholder in names.items():
            if isinstance(given, str):
                value = value.replace(given, placeholder)
            else:
                value = value.replace(f":{given}", f":{placeholder}")
        return value
    return value


def _comparable(entry: dict[str, Any], names: dict[Any, str]) -> dict[str, Any]:
    return {k: _shape(entry[k], names) for k in ("action", "target", "role", "before",
                                                 "after")}


async def _pair_state(plat: Platform, symbol: str, state: str) -> None:
    """Wait until the pairs table says ``state`` for the pair (settlement mirrors the
    engine's state into it)."""

    async def mirrored() -> bool:
        trading = await plat.pool.fetchval("SELECT trading FROM pairs WHERE symbol = $1",
                                           symbol)
        return bool(trading == state)

    await eventually(mirrored)


async def _settled_states(plat: Platform) -> dict[str, str]:
    """Every pair's trading state once settlement has applied every command of every
    symbol's log (the pairs table then says what the engines do)."""
    bus = await Bus.connect(plat.settings.nats_url, name="audit-parity")
    try:
        async def caught_up() -> bool:
            cursors = await db.settlement_cursors(plat.pool)
            symbols = [r["symbol"] for r in await plat.pool.fetch("SELECT symbol FROM pairs")]
            for symbol in symbols:
                if await bus.last_command_seq(symbol) > cursors.get(symbol, 0):
                    return False
            return True

        await eventually(caught_up)
    finally:
        await bus.close()
    return {r["symbol"]: r["trading"]
            for r in await plat.pool.fetch("SELECT symbol, trading FROM pairs")}


async def _cli(*argv: str) -> int:
    return await asyncio.to_thread(cli.main, list(argv))


async def test_each_cli_admin_command_leaves_the_audit_record_of_its_admin_api_call(
    plat: Platform, http: httpx.AsyncClient, cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def by_cli(*argv: str) -> tuple[dict[str, Any], dict[str, Any]]:
        since = await _last_id(plat)
        assert await _cli(*argv) == 0
        out = json.loads(capsys.readouterr().out)
        entry = await _one_record_since(plat, since)
        assert entry["actor"] == CLI_ACTOR and entry["ip"] == "cli"
        return entry, out

    async def by_api(method: str, path: str, body: dict[str, Any] | None = None
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
        since = await _last_id(plat)
        r = await http.request(method, path, json=body)
        assert r.status_code == 200, r.text
        entry = await _one_record_since(plat, since)
        assert entry["actor"] == "admin:bootstrap"
        return entry, r.json()

    runs: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    c, c_out = await by_cli("user-create", "parity-cli")
    a, a_out = await by_api("POST", "/admin/users", {"name": "parity-api"})
    runs.append(("user-create", c, a))
    cli_account, api_account = c_out["account"], a_out["account"]

    c, _ = await by_cli("credit", "parity-cli", "usdt", "12.5", "--ref", "ref-cli")
    a, _ = await by_api("POST", "/admin/credit", {"account": api_account, "asset": "USDT",
                                                  "amount": "12.5", "ref": "ref-api"})
    runs.append(("credit", c, a))

    c, c_out = await by_cli("key-create", "parity-cli", "--permissions", "read,trade",
                            "--label", "parity", "--ip-allow", "10.0.0.0/8")
    a, a_out = await by_api("POST", "/admin/api-keys", {
        "account": api_account, "permissions": ["read", "trade"], "label": "parity",
        "ipAllowList": ["10.0.0.0/8"]})
    runs.append(("key-create", c, a))
    cli_key, api_key = c_out["apiKey"], a_out["apiKey"]

    c, _ = await by_cli("key-revoke", cli_key)
    a, _ = await by_api("DELETE", f"/admin/api-keys/{api_key}")
    runs.append(("key-revoke", c, a))

    c, _ = await by_cli("admin-create", "parity-admin-cli", "--role", "Support")
    a, _ = await by_api("POST", "/admin/admins", {"name": "parity-admin-api",
                                                  "role": "Support"})
    runs.append(("admin-create", c, a))

    c, _ = await by_cli("user-freeze", "parity-cli", "--reason", "parity")
    a, _ = await by_api("POST", f"/admin/users/{api_account}/freeze", {"reason": "parity"})
    runs.append(("user-freeze", c, a))
    c, _ = await by_cli("user-freeze", "parity-cli", "--unfreeze")
    a, _ = await by_api("POST", f"/admin/users/{api_account}/unfreeze")
    runs.append(("user-unfreeze", c, a))

    # Both directions, the CLI on one pair and the API on another (each pair's "before"
    # is then its own: settlement mirrors the engine's state into the pairs table later).
    c, _ = await by_cli("pair-trading", "--symbol", "ETH-USDT", "--state", "halted")
    a, _ = await by_api("PUT", "/admin/pairs/BTCUSDT/trading", {"trading": "halted"})
    runs.append(("pair-trading halted", c, a))
    c, _ = await by_cli("pair-trading", "--symbol", "ETH-USDT", "--state", "enabled")
    a, _ = await by_api("PUT", "/admin/pairs/BTCUSDT/trading", {"trading": "enabled"})
    runs.append(("pair-trading enabled", c, a))

    cli_names: dict[Any, str] = {cli_account: "<account>", "parity-cli": "<name>",
                                 "ref-cli": "<ref>", cli_key: "<apiKey>",
                                 "parity-admin-cli": "<admin>", "ETHUSDT": "<symbol>"}
    api_names: dict[Any, str] = {api_account: "<account>", "parity-api": "<name>",
                                 "ref-api": "<ref>", api_key: "<apiKey>",
                                 "parity-admin-api": "<admin>", "BTCUSDT": "<symbol>"}
    for what, from_cli, from_api in runs:
        assert _comparable(from_cli, cli_names) == _comparable(from_api, api_names), what


async def test_the_cli_cannot_resume_a_pair_under_the_kill_switch_only_set_its_return_state(
    plat: Platform, http: httpx.AsyncClient, cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    r = await http.post("/admin/kill-switch", json={"reason": "parity"})
    assert r.status_code == 200, r.text
    try:
        assert await _cli("pair-trading", "--symbol", "ETH-BTC", "--state",
                          "cancel-only") == 0
        assert json.loads(capsys.readouterr().out)["trading"] == "cancel-only"
        state = (await http.get("/admin/kill-switch")).json()
        assert state["on"] is True and state["pairs"]["ETHBTC"] == "cancel-only"
        [entry] = await accounts_db.audit_entries(
            plat.pool, from_id=1, limit=1000, action="pair.trading", actor=CLI_ACTOR,
            target="pair:ETHBTC")
        assert (entry["before"]["trading"], entry["after"]["trading"]) == ("enabled",
                                                                           "cancel-only")
    finally:
        r = await http.delete("/admin/kill-switch")
    assert r.json()["pairs"]["ETHBTC"] == "cancel-only"

    await _pair_state(plat, "ETHBTC", "cancel-only")
    await http.put("/admin/pairs/ETHBTC/trading", json={"trading": "enabled"})


async def test_the_cli_fee_and_kill_switch_commands_leave_the_records_of_their_api_calls(
    plat: Platform, http: httpx.AsyncClient, cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def by_cli(*argv: str) -> tuple[dict[str, Any], dict[str, Any]]:
        since = await _last_id(plat)
        assert await _cli(*argv) == 0
        out = json.loads(capsys.readouterr().out)
        entry = await _one_record_since(plat, since)
        assert entry["actor"] == CLI_ACTOR and entry["ip"] == "cli"
        return entry, out

    async def by_api(method: str, path: str, body: dict[str, Any] | None = None
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
        since = await _last_id(plat)
        r = await http.request(method, path, json=body)
        assert r.status_code == 200, r.text
        entry = await _one_record_since(plat, since)
        assert entry["actor"] == "admin:bootstrap"
        return entry, r.json()

    # Every pair's state once settlement has applied every command so far (the pairs
    # table mirrors the engines' states, so it can lag behind a change for a moment).
    states = await _settled_states(plat)
    fees = await plat.pool.fetchrow(
        "SELECT maker_fee_ppm, taker_fee_ppm FROM pairs WHERE symbol = 'ETHUSDT'")
    assert fees is not None
    assert (await http.get("/admin/kill-switch")).json() == {"on": False}

    runs: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    c, c_out = await by_cli("pair-fees", "--symbol", "ETH-USDT", "--maker-fee-ppm", "900",
                            "--taker-fee-ppm", "1100")
    a, _ = await by_api("PUT", "/admin/pairs/BTCUSDT/fees",
                            {"makerFeePpm": 900, "takerFeePpm": 1100})
    assert (c_out["makerFeePpm"], c_out["takerFeePpm"]) == (900, 1100)
    runs.append(("pair-fees", c, a))

    c_on, c_out = await by_cli("kill-switch", "on", "--reason", "parity")
    assert c_out["on"] is True and c_out["pairs"] == states
    assert await _settled_states(plat) == dict.fromkeys(states, "halted")
    c_off, c_out = await by_cli("kill-switch", "off")
    assert c_out == {"on": False, "pairs": states}
    assert await _settled_states(plat) == states
    a_on, _ = await by_api("POST", "/admin/kill-switch", {"reason": "parity"})
    assert await _settled_states(plat) == dict.fromkeys(states, "halted")
    a_off, _ = await by_api("DELETE", "/admin/kill-switch")
    assert await _settled_states(plat) == states
    runs += [("kill-switch on", c_on, a_on), ("kill-switch off", c_off, a_off)]

    # Put the fees back for the module's other tests.
    for symbol in ("ETHUSDT", "BTCUSDT"):
        r = await http.put(f"/admin/pairs/{symbol}/fees",
                           json={"makerFeePpm": fees["maker_fee_ppm"],
                                 "takerFeePpm": fees["taker_fee_ppm"]})
        assert r.status_code == 200, r.text

    cli_names: dict[Any, str] = {"ETHUSDT": "<symbol>", getpass.getuser(): "<by>"}
    api_names: dict[Any, str] = {"BTCUSDT": "<symbol>", "bootstrap": "<by>"}
    for what, from_cli, from_api in runs:
        if what.startswith("kill-switch"):  # every pair, by name: only "by" differs
            cli_names.pop("ETHUSDT", None)
            api_names.pop("BTCUSDT", None)
        assert _comparable(from_cli, cli_names) == _comparable(from_api, api_names), what
