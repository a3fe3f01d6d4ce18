"""The wallet watcher's settings, its Wallet spec and its node credentials.

* The spec: the file named by ``TRADEPLANE_WALLET_CONFIG`` (the operator mounts the
  Wallet's spec there as JSON) wins and is stored in the ``wallets`` table, where the
  gateway reads it; without the variable, the ``wallets`` row of that name
  (``tradeplane wallet-add``).
* The node URL is the spec's ``rpc.url``. Its login: from Vault when the process has a
  Vault session (``TRADEPLANE_VAULT_ADDR``) and the spec names ``rpc.vaultPath`` (keys
  ``username`` and ``password``; the document's ``url`` is ignored: the spec, which the
  operator shows, is the one place the endpoint is set); otherwise
  ``TRADEPLANE_CHAIN_RPC_USERNAME`` / ``TRADEPLANE_CHAIN_RPC_PASSWORD`` or the files named
  by ``..._FILE`` (as :mod:`tradeplane.secretsource` reads every other secret).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from tradeplane.domain.custody import WalletSpec, WalletSpecError, wallet_from_spec
from tradeplane.domain.errors import ConfigurationError, TradeplaneError
from tradeplane.secretsource import ENV_PREFIX, SecretSourceError
from tradeplane.wallets.ports import CredentialSource, WalletStore


class WalletConfigError(ConfigurationError):
    """The watcher cannot find or read its wallet's spec or credentials."""


class WalletSettings(BaseSettings):
    """Settings of ``tradeplane wallet-watcher`` (prefix ``TRADEPLANE_``)."""

    model_config = SettingsConfigDict(
        env_prefix="TRADEPLANE_", extra="ignore", hide_input_in_errors=True
    )

    wallet_config: str = Field(
        default="", description="Path of the Wallet spec as JSON (the operator's ConfigMap); "
        "empty = the spec stored in the wallets table (tradeplane wallet-add).",
    )
    chain_rpc_username: str = Field(
        default="", description="Node RPC user when Vault is not used (or *_FILE)."
    )
    chain_rpc_password: SecretStr = Field(
        default=SecretStr(""), description="Node RPC password when Vault is not used "
        "(or TRADEPLANE_CHAIN_RPC_PASSWORD_FILE).",
    )
    wallet_scan_interval_s: float = Field(
        default=2.0, description="Seconds between two scans of the chain for deposits."
    )
    wallet_withdraw_interval_s: float = Field(
        default=2.0, description="Seconds between two passes of the withdrawal processor."
    )
    wallet_reconcile_interval_s: float = Field(
        default=300.0, description="Seconds between two reconciliations of the wallet's "
        "on-chain balance with the ledger's liabilities.",
    )
    wallet_max_send_attempts: int = Field(
        default=5, description="Sends refused by the node before a withdrawal is FAILED "
        "(funds released); an unreachable node is never counted.",
    )


def load_wallet_settings(env: Mapping[str, str] | None = None) -> WalletSettings:
    """Settings from the environment, credentials also from ``TRADEPLANE_*_FILE`` files.

    Raises:
        SecretSourceError: a ``*_FILE`` cannot be read.
        pydantic.ValidationError: invalid settings.
    """
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for name in ("chain_rpc_username", "chain_rpc_password"):
        var = f"{ENV_PREFIX}{name.upper()}"
        path = env.get(f"{var}_FILE")
        if not path or env.get(var):
            continue
        try:
            text = Path(path).read_text().strip()
        except OSError as exc:
            raise SecretSourceError(f"cannot read {var}_FILE ({path}): {exc.strerror}") \
                from exc
        values[name] = SecretStr(text) if name == "chain_rpc_password" else text
    return WalletSettings(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class NodeLogin:
    """Where and as whom the watcher reaches its node."""

    url: str
    username: str
    password: SecretStr = field(repr=False)


async def load_spec(store: WalletStore, name: str, ws: WalletSettings) -> WalletSpec:
    """The wallet's spec: from ``TRADEPLANE_WALLET_CONFIG`` (then stored in the wallets
    table for the gateway), else from the table.

    Raises:
        WalletConfigError: no spec, or an invalid one.
    """
    if ws.wallet_config:
        try:
            text = await asyncio.to_thread(Path(ws.wallet_config).read_text)
            doc = json.loads(text)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            spec = wallet_from_spec(name, doc)
        except (OSError, ValueError) as exc:
            raise WalletConfigError(f"wallet config {ws.wallet_config}: {exc}") from exc
        await store.upsert_wallet(spec)
        return spec
    try:
        found = await store.load_wallet(name)
    except WalletSpecError as exc:
        raise WalletConfigError(f"wallet {name}: stored spec is invalid: {exc}") from exc
    if found is None:
        raise WalletConfigError(
            f"no wallet {name}: set TRADEPLANE_WALLET_CONFIG or run tradeplane wallet-add"
        )
    return found


async def node_login(spec: WalletSpec, ws: WalletSettings,
                     vault: CredentialSource | None) -> NodeLogin:
    """The node's URL (from the spec) and credentials (Vault, else settings).

    Raises:
        WalletConfigError: Vault refused or lacks the credentials.
    """
    if vault is not None and spec.vault_path:
        try:
            creds = await asyncio.to_thread(vault.read_chain_rpc, spec.vault_path)
        except TradeplaneError as exc:  # Vault refused, is away, or lacks the keys
            raise WalletConfigError(f"node credentials of {spec.name}: {exc}") from exc
        return NodeLogin(spec.rpc_url, creds.username, creds.password)
    return NodeLogin(spec.rpc_url, ws.chain_rpc_username, ws.chain_rpc_password)
