"""Settings for every process, read from the environment (prefix ``TRADEPLANE_``).

Built once in each process's ``main()`` and passed down; nothing reads the environment
at import time.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_PLACEHOLDER = "dev-only-change-me"

#: Fields that may hold credentials: filled from Vault when it is configured, or read from
#: the file named by ``TRADEPLANE_<NAME>_FILE`` (see :mod:`tradeplane.secretsource`).
SECRET_FIELDS = ("database_url", "nats_url", "redis_url", "secret_key", "admin_token")


class VaultSettings(BaseSettings):
    """Where the process finds its secrets. Read before the other settings, which may come
    from Vault (see :mod:`tradeplane.secretsource`)."""

    # Errors must not echo what was given: that may be a secret.
    model_config = SettingsConfigDict(
        env_prefix="TRADEPLANE_", extra="ignore", hide_input_in_errors=True
    )

    vault_addr: str = Field(
        default="", description="Vault address (https://vault:8200); empty = Vault off, "
        "secrets from TRADEPLANE_* variables or the files named by TRADEPLANE_*_FILE.",
    )
    vault_auth: Literal["kubernetes", "token"] = Field(
        default="kubernetes",
        description="kubernetes: log in with the pod's service-account JWT (in cluster); "
        "token: use TRADEPLANE_VAULT_TOKEN (local).",
    )
    vault_role: str = Field(
        default="tradeplane", description="Vault role bound to the service account."
    )
    vault_token: SecretStr = Field(
        default=SecretStr(""), description="Vault token for vault_auth=token."
    )
    vault_kv_mount: str = Field(default="secret", description="Mount of the KV v2 engine.")
    vault_path: str = Field(
        default="tradeplane", description="KV v2 path of the platform's secret document."
    )
    vault_auth_mount: str = Field(
        default="kubernetes", description="Mount of the Kubernetes auth method."
    )
    vault_jwt_file: str = Field(
        default="/var/run/secrets/kubernetes.io/serviceaccount/token",
        description="Service-account JWT presented to the Kubernetes auth method.",
    )
    vault_ca_file: str = Field(
        default="", description="CA bundle that signed Vault's certificate; empty = system CAs."
    )


class Settings(VaultSettings):
    dev_mode: bool = Field(
        default=False, description="Local/dev mode: placeholder secrets are allowed."
    )
    # The URLs may carry passwords: kept out of repr (use ``redacted()`` in messages).
    nats_url: str = Field(
        default="nats://127.0.0.1:4222", repr=False, description="NATS server URL(s)."
    )
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/tradeplane", repr=False,
        description="PostgreSQL DSN of the ledger database.",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", repr=False, description="Redis cache URL."
    )
    http_host: str = Field(default="127.0.0.1", description="Gateway bind address.")
    http_port: int = Field(default=8080, description="Gateway port.")
    metrics_port: int = Field(
        default=0, description="Port of the Prometheus /metrics listener (0 = off/none)."
    )
    admin_token: SecretStr = Field(
        default=SecretStr(DEV_PLACEHOLDER), description="Bearer token for /admin endpoints."
    )
    secret_key: SecretStr = Field(
        default=SecretStr(DEV_PLACEHOLDER),
        description="Key that encrypts API secrets at rest (any string; stretched with HKDF).",
    )
    db_pool_size: int = Field(default=8, description="asyncpg pool size per process.")
    stream_replicas: int = Field(default=1, description="JetStream replicas for our streams.")
    dedup_window_s: float = Field(
        default=600.0, description="JetStream duplicate window for our streams, seconds."
    )
    invariant_check_s: float = Field(
        default=60.0,
        description="Seconds between full ledger-invariant checks in settlement (each scans "
        "every posting; the metric tradeplane_ledger_invariant_ok follows it).",
    )
    snapshot_every: int = Field(
        default=50_000, description="Engine snapshot after this many commands."
    )
    otlp_endpoint: str = Field(
        default="", description="OTLP/HTTP traces endpoint; empty = tracing exporter off."
    )
    log_level: str = Field(default="INFO", description="Log level.")
    response_timeout_s: float = Field(
        default=10.0, description="How long the gateway waits for the engine+ledger to apply."
    )

    @model_validator(mode="after")
    def _no_placeholders_in_production(self) -> Settings:
        if not self.dev_mode:
            for name in ("admin_token", "secret_key"):
                if getattr(self, name).get_secret_value() == DEV_PLACEHOLDER:
                    raise ValueError(
                        f"TRADEPLANE_{name.upper()} must be set outside dev mode"
                    )
        return self


def redacted(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***``, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return "<unparsable url>"
