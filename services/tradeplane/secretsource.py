"""Where a process's secrets come from: Vault when ``TRADEPLANE_VAULT_ADDR`` is set,
otherwise ``TRADEPLANE_*`` variables or files named by ``TRADEPLANE_*_FILE``.

Precedence per field (first wins): values the caller passes (``overrides``), the Vault
document's key of the same name, ``TRADEPLANE_<NAME>``, the file named by
``TRADEPLANE_<NAME>_FILE``, the default. The Vault document (KV v2 at
``<vault_kv_mount>/<vault_path>``) may hold ``database_url``, ``nats_url``, ``redis_url``,
``secret_key`` and ``admin_token``; other keys are left to other readers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from tradeplane.config import SECRET_FIELDS, Settings, VaultSettings
from tradeplane.domain.errors import ConfigurationError

if TYPE_CHECKING:
    from tradeplane.adapters.vault import VaultSession

ENV_PREFIX = "TRADEPLANE_"


class SecretSourceError(ConfigurationError):
    """The secrets cannot be loaded (Vault refused or unreachable, a file unreadable).
    The message never contains a secret value."""


@dataclass(frozen=True, slots=True)
class Loaded:
    settings: Settings
    #: The Vault session the secrets came from; long-running processes keep its token
    #: alive (``VaultSession.keep_alive``). None without Vault.
    vault: VaultSession | None = None


def load_settings(overrides: Mapping[str, Any] | None = None) -> Loaded:
    """Build the process's settings with its secrets.

    Raises:
        SecretSourceError: Vault or a ``*_FILE`` could not be read.
        pydantic.ValidationError: the settings are invalid (inputs are not echoed).
    """
    given = dict(overrides or {})
    values = _from_files(os.environ, (*SECRET_FIELDS, "vault_token"))
    vault_cfg = VaultSettings(**{k: v for k, v in {**values, **given}.items()
                                 if k in VaultSettings.model_fields})
    session: VaultSession | None = None
    if vault_cfg.vault_addr:
        session, doc = _from_vault(vault_cfg)
        values.update({k: doc[k] for k in SECRET_FIELDS if k in doc})
    values.update(given)
    return Loaded(Settings(**values), session)


def _from_files(env: Mapping[str, str], names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        var = f"{ENV_PREFIX}{name.upper()}"
        path = env.get(f"{var}_FILE")
        if not path or env.get(var):  # the variable itself wins (tradeplane up sets it)
            continue
        try:
            text = Path(path).read_text().strip()
        except OSError as exc:
            raise SecretSourceError(f"cannot read {var}_FILE ({path}): {exc.strerror}") from exc
        out[name] = SecretStr(text) if name in ("secret_key", "admin_token", "vault_token") \
            else text
    return out


def _from_vault(cfg: VaultSettings) -> tuple[VaultSession, dict[str, Any]]:
    # Imported here: hvac (and requests) load only in processes that use Vault.
    from tradeplane.adapters.vault import VaultConfig, VaultError, VaultSession

    try:
        session = VaultSession.login(VaultConfig(
            addr=cfg.vault_addr, auth=cfg.vault_auth, role=cfg.vault_role,
            token=cfg.vault_token, kv_mount=cfg.vault_kv_mount,
            auth_mount=cfg.vault_auth_mount, jwt_file=cfg.vault_jwt_file,
            ca_file=cfg.vault_ca_file,
        ))
        doc = session.read_kv(cfg.vault_path)
    except VaultError as exc:
        raise SecretSourceError(f"secrets from Vault: {exc}") from exc
    out: dict[str, Any] = {}
    for name, value in doc.items():
        # URLs are plain strings in Settings (kept out of repr); keys stay SecretStr.
        out[name] = value if name in ("secret_key", "admin_token") else value.get_secret_value()
    return session, out
