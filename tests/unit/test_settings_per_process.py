"""Settings are grouped by concern and each process checks only the groups it uses: the
engine, settlement and market data start without the gateway's secrets outside dev mode;
the gateway refuses to start without them. The variable names stay as they were."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from tradeplane.config import DEV_PLACEHOLDER, GROUPS, PROCESS_GROUPS, Group, Settings
from tradeplane.runner import run_service

GATEWAY_SECRETS = {"admin_token": "a" * 32, "secret_key": "s" * 32}


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DEV_MODE", "ADMIN_TOKEN", "SECRET_KEY", "JWT_SECRET", "ARGON2_MEMORY_KIB"):
        monkeypatch.delenv(f"TRADEPLANE_{var}", raising=False)


def test_every_setting_belongs_to_exactly_one_group() -> None:
    grouped = [name for names in GROUPS.values() for name in names]
    assert len(grouped) == len(set(grouped))
    everywhere = {"dev_mode"} | {n for n in Settings.model_fields if n.startswith("vault_")}
    assert set(grouped) == set(Settings.model_fields) - everywhere
    assert set(GROUPS) == set(Group)


def test_the_variable_names_are_the_flat_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    # A group is a way to read the settings, not a prefix: TRADEPLANE_JWT_SECRET, not
    # TRADEPLANE_SESSIONS__JWT_SECRET (the chart, the operator and users set these).
    monkeypatch.setenv("TRADEPLANE_JWT_SECRET", "j" * 32)
    monkeypatch.setenv("TRADEPLANE_SNAPSHOT_EVERY", "7")
    monkeypatch.setenv("TRADEPLANE_WS_MAX_STREAMS", "9")
    s = Settings()
    assert (s.jwt_secret.get_secret_value(), s.snapshot_every, s.ws_max_streams) == (
        "j" * 32, 7, 9)


@pytest.mark.parametrize("process", ["matching", "settlement", "marketdata", "wallet-watcher",
                                     "rates"])
def test_processes_without_secrets_start_without_the_gateways(process: str) -> None:
    s = Settings().for_process(process)  # placeholders everywhere, dev mode off
    assert not s.dev_mode
    assert s.admin_token.get_secret_value() == DEV_PLACEHOLDER
    assert Group.SESSIONS not in PROCESS_GROUPS[process]


def test_the_engine_ignores_even_a_placeholder_jwt_secret() -> None:
    Settings(jwt_secret=DEV_PLACEHOLDER, argon2_memory_kib=1024).for_process("matching")


@pytest.mark.parametrize(("missing", "variable"), [
    ("admin_token", "TRADEPLANE_ADMIN_TOKEN must be set"),
    ("secret_key", "TRADEPLANE_SECRET_KEY must be set"),
])
def test_the_gateway_refuses_to_start_without_its_secrets(missing: str, variable: str) -> None:
    given = {k: v for k, v in GATEWAY_SECRETS.items() if k != missing}
    with pytest.raises(ValidationError, match=variable) as info:
        Settings(**given).for_process("gateway")
    assert "a" * 32 not in str(info.value) and "s" * 32 not in str(info.value)
    assert Settings(**GATEWAY_SECRETS).for_process("gateway").admin_token.get_secret_value()


def test_the_gateway_refuses_a_placeholder_jwt_secret_and_one_derived_from_a_placeholder(
) -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET must not be the placeholder"):
        Settings(**GATEWAY_SECRETS, jwt_secret=DEV_PLACEHOLDER).for_process("gateway")
    # Empty = derived from secret_key: fine while secret_key is a real key.
    assert Settings(**GATEWAY_SECRETS).for_process("gateway").jwt_secret.get_secret_value() == ""


def test_dev_mode_accepts_placeholders_in_every_process() -> None:
    for process in PROCESS_GROUPS:
        assert Settings(dev_mode=True).for_process(process).dev_mode


def test_checking_for_a_process_keeps_the_values_given_not_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = Settings(**GATEWAY_SECRETS, http_port=9999, cors_origins=["https://a.example"])
    monkeypatch.setenv("TRADEPLANE_ADMIN_TOKEN", DEV_PLACEHOLDER)
    monkeypatch.setenv("TRADEPLANE_HTTP_PORT", "1")
    checked = s.for_process("gateway")
    assert checked.model_dump() == s.model_dump()
    assert isinstance(checked, Settings)


def test_run_service_refuses_a_gateway_without_secrets_before_starting_anything() -> None:
    started: list[str] = []

    async def body(stop: asyncio.Event) -> None:
        started.append("gateway")

    with pytest.raises(ValidationError, match="TRADEPLANE_ADMIN_TOKEN"):
        run_service("gateway", Settings(), body)
    assert started == []


def test_an_unknown_process_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        Settings().for_process("gatewya")


def test_the_clis_account_commands_never_encrypt_with_the_placeholder_key() -> None:
    with pytest.raises(ValidationError, match="TRADEPLANE_SECRET_KEY must be set"):
        Settings().for_process("cli-accounts")
    # ... but they do not need the gateway's admin token or JWT secret.
    Settings(secret_key="s" * 32).for_process("cli-accounts")
