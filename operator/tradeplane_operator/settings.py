"""Operator settings, read from the environment (prefix ``TRADEPLANE_OPERATOR_``).

Built once in ``main()`` (and by the handlers' startup hook) and passed down; nothing
reads the environment at import time. The exchange URLs also accept the platform's own
names (``TRADEPLANE_NATS_URL``, ``TRADEPLANE_DATABASE_URL``) so the chart can give the
operator the same Secret (``envFrom``) it gives the engines.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "TRADEPLANE_OPERATOR_"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", populate_by_name=True)

    secret: str = Field(
        default="tradeplane-env",
        description="Name of the Secret (same namespace as the pair) whose keys become the "
        "engine's environment via envFrom: TRADEPLANE_NATS_URL, _DATABASE_URL, ...",
    )
    engine_image: str = Field(
        default="ghcr.io/tradeplane/tradeplane:0.1.0",
        description="Image of matching engines when a TradingPair sets no spec.engine.image.",
    )
    watcher_image: str = Field(
        default="ghcr.io/tradeplane/tradeplane:0.1.0",
        description="Image of wallet watchers when a Wallet sets no spec.watcher.image.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="imagePullPolicy of every container we create."
    )
    service_account: str = Field(
        default="tradeplane-engine",
        description="ServiceAccount of engine pods (no API access needed; token not mounted).",
    )
    watcher_service_account: str = Field(
        default="tradeplane-wallet-watcher",
        description="ServiceAccount of wallet watchers; bound to the Vault role we annotate.",
    )
    vault_role: str = Field(
        default="tradeplane-wallet-watcher",
        description="Vault Kubernetes-auth role wallet watchers log in with.",
    )
    vault_audience: str = Field(
        default="",
        description="Audience of the projected token pods present to Vault's Kubernetes auth "
        "(must match the Vault role's audience); empty = the API server's default.",
    )
    metrics_port: int = Field(default=9100, description="Port of the engines' /metrics.")
    service_monitor: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Create ServiceMonitors: auto = when the monitoring.coreos.com API exists.",
    )
    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        validation_alias=AliasChoices(f"{PREFIX}NATS_URL", "TRADEPLANE_NATS_URL"),
        description="NATS URL for live halts (SetTrading) and the deletion drain.",
    )
    database_url: str = Field(
        default="postgresql://tradeplane@127.0.0.1:5432/tradeplane",
        validation_alias=AliasChoices(f"{PREFIX}DATABASE_URL", "TRADEPLANE_DATABASE_URL"),
        description="PostgreSQL DSN: the deletion drain reads open orders from it.",
    )
    scrape_metrics: bool = Field(
        default=True,
        description="Read engine figures from <pair>-engine-metrics:<port>/metrics for status.",
    )
    metrics_url: str = Field(
        default="http://{name}.{namespace}.svc:{port}/metrics",
        description="Where an engine's metrics are read; {name} is its metrics Service.",
    )
    resync_s: float = Field(
        default=30.0, description="Seconds between drift-repair and status-refresh passes."
    )
    drain_timeout_s: float = Field(
        default=120.0,
        description="How long deletion waits for settlement to show no open orders before "
        "retrying (the finalizer stays until it does).",
    )
    retry_delay_s: float = Field(
        default=10.0, description="Delay of TemporaryErrors (NATS/PostgreSQL/API unreachable)."
    )
    namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces to serve (empty = cluster-wide, needs the ClusterRole).",
    )
    standalone: bool = Field(
        default=True,
        description="Run without kopf peering (exactly one replica). False = peering via "
        "a ClusterKopfPeering/KopfPeering named by `peering`.",
    )
    peering: str = Field(default="tradeplane", description="Peering object name (not standalone).")
    liveness_port: int = Field(default=8080, description="Port of kopf's /healthz endpoint.")
