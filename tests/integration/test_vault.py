"""Secrets from Vault through hvac, against an HTTP stand-in for Vault's API (no Vault
binary exists here; see tests/support/vault_standin.py and docs/secrets-and-tracing.md):
Kubernetes and token auth, a KV v2 document filling the settings, token renewal, clean
errors, and no secret value in any log line, repr or error text."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from tests.support.harness import eventually
from tests.support.vault_standin import VaultStandIn, vault_standin

from tradeplane import cli
from tradeplane.adapters.vault import VaultAuthError, VaultConfig, VaultSession
from tradeplane.config import Settings, redacted
from tradeplane.secretsource import SecretSourceError, load_settings

pytestmark = pytest.mark.integration

JWT = "eyJhbGciOiJSUzI1NiJ9.service-account-jwt-that-must-never-leak.c2lnbmF0dXJl"
DOC = {
    "database_url": "postgresql://tp:db-pw-9f8e7d@127.0.0.1:1/tradeplane",
    "nats_url": "nats://tp:nats-pw-1a2b3c@127.0.0.1:4222",
    "redis_url": "redis://:redis-pw-4d5e6f@127.0.0.1:6379/0",
    "secret_key": "api-key-encryption-key-7g8h9i",
    "admin_token": "admin-token-0j1k2l",
    "unrelated": "ignored",
}
SECRETS = [JWT, "db-pw-9f8e7d", "nats-pw-1a2b3c", "redis-pw-4d5e6f",
           DOC["secret_key"], DOC["admin_token"]]


@pytest.fixture
def vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[VaultStandIn]:
    """The stand-in with the platform's document, and the environment of a pod using it."""
    for var in ("DATABASE_URL", "NATS_URL", "REDIS_URL", "SECRET_KEY", "ADMIN_TOKEN",
                "DEV_MODE", "VAULT_TOKEN"):
        monkeypatch.delenv(f"TRADEPLANE_{var}", raising=False)
    jwt_file = tmp_path / "token"
    jwt_file.write_text(JWT + "\n")
    with vault_standin(VaultStandIn(jwt=JWT, role="tradeplane")) as st:
        st.kv["secret/tradeplane"] = dict(DOC)
        monkeypatch.setenv("TRADEPLANE_VAULT_ADDR", st.url)
        monkeypatch.setenv("TRADEPLANE_VAULT_AUTH", "kubernetes")
        monkeypatch.setenv("TRADEPLANE_VAULT_ROLE", "tradeplane")
        monkeypatch.setenv("TRADEPLANE_VAULT_JWT_FILE", str(jwt_file))
        yield st


def _jwt_file() -> str:
    return os.environ["TRADEPLANE_VAULT_JWT_FILE"]


def _texts(exc: BaseException) -> str:
    """Everything an error shows: str and repr of it and of every cause."""
    out = []
    e: BaseException | None = exc
    while e is not None:
        out += [str(e), repr(e)]
        e = e.__cause__ or e.__context__
    return "\n".join(out)


def _assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_kubernetes_login_fills_settings_from_kv(vault: VaultStandIn,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    loaded = load_settings()
    s = loaded.settings
    assert not s.dev_mode  # the real secrets came: no placeholder refused
    assert s.database_url == DOC["database_url"]
    assert s.nats_url == DOC["nats_url"]
    assert s.redis_url == DOC["redis_url"]
    assert s.secret_key.get_secret_value() == DOC["secret_key"]
    assert s.admin_token.get_secret_value() == DOC["admin_token"]
    assert ("POST", "/v1/auth/kubernetes/login") in vault.requests
    assert ("GET", "/v1/secret/data/tradeplane") in vault.requests
    assert loaded.vault is not None and loaded.vault.renewable
    _assert_no_secret(repr(s) + str(s) + repr(loaded) + caplog.text)


def test_vault_values_win_over_environment(vault: VaultStandIn,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEPLANE_DATABASE_URL", "postgresql://from-env/x")
    monkeypatch.setenv("TRADEPLANE_HTTP_PORT", "9999")
    vault.kv["secret/tradeplane"].pop("redis_url")
    s = load_settings().settings
    assert s.database_url == DOC["database_url"]
    assert s.http_port == 9999
    assert s.redis_url == "redis://127.0.0.1:6379/0"  # not in the document: default


def test_token_auth(vault: VaultStandIn, monkeypatch: pytest.MonkeyPatch,
                    tmp_path: Path) -> None:
    token = vault.issue_token()
    monkeypatch.setenv("TRADEPLANE_VAULT_AUTH", "token")
    monkeypatch.setenv("TRADEPLANE_VAULT_TOKEN", token)
    loaded = load_settings()
    assert loaded.settings.secret_key.get_secret_value() == DOC["secret_key"]
    assert ("GET", "/v1/auth/token/lookup-self") in vault.requests
    assert ("POST", "/v1/auth/kubernetes/login") not in vault.requests
    assert token not in repr(loaded) + repr(loaded.settings)
    # The token may come from a file too (a Vault Agent sink, a mounted Secret).
    monkeypatch.delenv("TRADEPLANE_VAULT_TOKEN")
    (tmp_path / "vault-token").write_text(token)
    monkeypatch.setenv("TRADEPLANE_VAULT_TOKEN_FILE", str(tmp_path / "vault-token"))
    assert load_settings().settings.admin_token.get_secret_value() == DOC["admin_token"]


async def test_token_renewed_before_expiry(vault: VaultStandIn) -> None:
    vault.token_ttl = 1.0
    session = VaultSession.login(VaultConfig(
        addr=vault.url, auth="kubernetes", role="tradeplane",
        jwt_file=_jwt_file(),
    ))
    assert session.ttl_s == 1.0
    stop = asyncio.Event()
    task = asyncio.create_task(session.keep_alive(stop))
    try:
        async def renewed_twice() -> bool:
            return vault.renewals() >= 2

        await eventually(renewed_twice, timeout=10)
        # Older than its first TTL and still accepted: renewal kept it alive.
        assert (await asyncio.to_thread(session.read_kv, "tradeplane"))["admin_token"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def test_expired_token_is_re_obtained_with_kubernetes_auth(vault: VaultStandIn) -> None:
    session = VaultSession.login(VaultConfig(addr=vault.url, role="tradeplane",
                                             jwt_file=_jwt_file()))
    vault.tokens.clear()  # revoked behind our back
    session.renew()
    assert session.read_kv("tradeplane")["secret_key"].get_secret_value() == DOC["secret_key"]


@pytest.mark.parametrize("case", ["wrong role", "wrong jwt", "wrong token", "no document"])
def test_refusals_are_clean_errors(vault: VaultStandIn, monkeypatch: pytest.MonkeyPatch,
                                   caplog: pytest.LogCaptureFixture, case: str) -> None:
    caplog.set_level(logging.DEBUG)
    expected = {"wrong role": 'invalid role name "trader"', "wrong jwt": "permission denied",
                "wrong token": "permission denied", "no document": "secret/elsewhere"}[case]
    if case == "wrong role":
        monkeypatch.setenv("TRADEPLANE_VAULT_ROLE", "trader")
    elif case == "wrong jwt":
        vault.jwt = "another-jwt"
    elif case == "wrong token":
        monkeypatch.setenv("TRADEPLANE_VAULT_AUTH", "token")
        monkeypatch.setenv("TRADEPLANE_VAULT_TOKEN", DOC["admin_token"])  # a secret, wrong
    else:
        monkeypatch.setenv("TRADEPLANE_VAULT_PATH", "elsewhere")
    with pytest.raises(SecretSourceError) as info:
        load_settings()
    assert expected in str(info.value)
    if case != "no document":
        assert isinstance(info.value.__cause__, VaultAuthError)
    _assert_no_secret(_texts(info.value) + caplog.text)


def test_cli_reports_configuration_errors_without_secrets(
    vault: VaultStandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRADEPLANE_VAULT_ROLE", "trader")
    assert cli.main(["check-ledger"]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err and "invalid role name" in err
    _assert_no_secret(err)
    # With the right role the secrets load; the database in the document is unreachable,
    # and that error names no password either.
    monkeypatch.setenv("TRADEPLANE_VAULT_ROLE", "tradeplane")
    assert cli.main(["check-ledger"]) == 1
    err = capsys.readouterr().err
    assert "PostgreSQL" in err
    _assert_no_secret(err)


def test_local_mode_env_and_file_fallback(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRADEPLANE_VAULT_ADDR", raising=False)
    monkeypatch.delenv("TRADEPLANE_DEV_MODE", raising=False)
    (tmp_path / "key").write_text(DOC["secret_key"] + "\n")
    (tmp_path / "db").write_text(DOC["database_url"])
    monkeypatch.setenv("TRADEPLANE_SECRET_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("TRADEPLANE_DATABASE_URL_FILE", str(tmp_path / "db"))
    monkeypatch.setenv("TRADEPLANE_ADMIN_TOKEN", DOC["admin_token"])
    loaded = load_settings()
    assert loaded.vault is None
    assert loaded.settings.secret_key.get_secret_value() == DOC["secret_key"]
    assert loaded.settings.database_url == DOC["database_url"]
    assert loaded.settings.admin_token.get_secret_value() == DOC["admin_token"]
    monkeypatch.setenv("TRADEPLANE_SECRET_KEY", "from-the-variable")
    assert load_settings().settings.secret_key.get_secret_value() == "from-the-variable"
    monkeypatch.delenv("TRADEPLANE_SECRET_KEY")
    monkeypatch.setenv("TRADEPLANE_SECRET_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(SecretSourceError, match="cannot read TRADEPLANE_SECRET_KEY_FILE"):
        load_settings()


def test_invalid_settings_do_not_echo_their_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRADEPLANE_DEV_MODE", raising=False)
    monkeypatch.delenv("TRADEPLANE_SECRET_KEY", raising=False)
    with pytest.raises(ValidationError) as info:
        Settings(admin_token=DOC["admin_token"], database_url=DOC["database_url"]
                 ).for_process("gateway")
    assert "TRADEPLANE_SECRET_KEY must be set" in str(info.value)
    _assert_no_secret(_texts(info.value))


def test_redacted_urls() -> None:
    assert redacted(DOC["nats_url"]) == "nats://tp:***@127.0.0.1:4222"
    assert redacted(DOC["redis_url"]) == "redis://:***@127.0.0.1:6379/0"
    assert redacted("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
