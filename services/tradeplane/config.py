"""Settings for every process, read from the environment (prefix ``TRADEPLANE_``).

Built once in each process's ``main()`` and passed down; nothing reads the environment
at import time.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_PLACEHOLDER = "dev-only-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRADEPLANE_", extra="ignore")

    dev_mode: bool = Field(
        default=False, description="Local/dev mode: placeholder secrets are allowed."
    )
    nats_url: str = Field(default="nats://127.0.0.1:4222", description="NATS server URL(s).")
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/tradeplane",
        description="PostgreSQL DSN of the ledger database.",
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis cache URL.")
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
