"""Status of TradingPairs and Wallets: pure functions of what was observed.

The handlers observe (the engine Deployment, the engine's /metrics) and these functions
decide what the status says, so every rule here is unit-tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

LAST_SEQUENCE = "tradeplane_engine_last_sequence"
OPEN_ORDERS = "tradeplane_engine_open_orders"


@dataclass(frozen=True, slots=True)
class EngineFigures:
    last_sequence: int
    open_orders: int


def parse_engine_metrics(text: str, symbol: str) -> EngineFigures | None:
    """The engine's figures for ``symbol`` from a Prometheus text exposition, if present."""
    found: dict[str, int] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in (LAST_SEQUENCE, OPEN_ORDERS) and \
                        sample.labels.get("symbol") == symbol:
                    found[sample.name] = int(sample.value)
    except ValueError:
        return None
    if LAST_SEQUENCE not in found:
        return None
    return EngineFigures(found[LAST_SEQUENCE], found.get(OPEN_ORDERS, 0))


def deployment_ready(deployment: Mapping[str, Any] | None) -> bool:
    """A Deployment is ready when its current template has an available replica."""
    if not deployment:
        return False
    status = deployment.get("status") or {}
    meta_gen = (deployment.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if meta_gen is not None and observed is not None and observed < meta_gen:
        return False  # a rollout the controller has not even looked at yet
    ready = int(status.get("readyReplicas") or 0)
    updated = status.get("updatedReplicas")
    return ready >= 1 and (updated is None or int(updated) >= 1)


def condition(
    previous: Sequence[Mapping[str, Any]], type_: str, status: bool, reason: str, message: str,
    now: str,
) -> dict[str, Any]:
    """A condition; ``lastTransitionTime`` moves only when the status flips."""
    text = "True" if status else "False"
    before = next((c for c in previous if c.get("type") == type_), None)
    since = before["lastTransitionTime"] if before and before.get("status") == text and \
        before.get("lastTransitionTime") else now
    return {"type": type_, "status": text, "reason": reason, "message": message,
            "lastTransitionTime": since}


def pair_status(
    *, generation: int | None, symbol: str | None, spec: Mapping[str, Any],
    deployment: Mapping[str, Any] | None, figures: EngineFigures | None,
    previous: Mapping[str, Any] | None, now: str, invalid: str | None = None,
) -> dict[str, Any]:
    """The whole ``status`` of a TradingPair from what was observed.

    ``invalid`` is the reason the spec was refused (then nothing runs and Degraded says why).
    Engine figures that could not be read keep their last known values.
    """
    prev = dict(previous or {})
    prev_conditions = list(prev.get("conditions") or [])
    trading = str(spec.get("trading") or "enabled")
    ready = invalid is None and deployment_ready(deployment)
    prev_engine = dict(prev.get("engine") or {})

    if invalid is not None:
        ready_reason, ready_msg = "InvalidSpec", invalid
    elif deployment is None:
        ready_reason, ready_msg = "EngineMissing", "the engine Deployment does not exist yet"
    elif not ready:
        ready_reason, ready_msg = "EngineNotReady", "the engine has no ready replica"
    else:
        ready_reason, ready_msg = "EngineReady", "the engine is running"

    halted = trading != "enabled"
    halted_reason = {"enabled": "Trading", "halted": "Halted",
                     "cancel-only": "CancelOnly"}.get(trading, "Unknown")
    halted_msg = f"spec.trading is {trading}"

    if invalid is not None:
        degraded, deg_reason, deg_msg = True, "InvalidSpec", invalid
    elif deployment is not None and not ready:
        degraded, deg_reason, deg_msg = True, "EngineUnavailable", ready_msg
    elif ready and figures is None and not prev_engine:
        degraded, deg_reason, deg_msg = True, "MetricsUnavailable", \
            "the engine's /metrics could not be read"
    else:
        degraded, deg_reason, deg_msg = False, "AsExpected", "nothing to report"

    engine = {
        "ready": ready,
        "lastSequence": figures.last_sequence if figures else
        int(prev_engine.get("lastSequence") or 0),
        "openOrders": figures.open_orders if figures else
        int(prev_engine.get("openOrders") or 0),
    }
    out: dict[str, Any] = {
        "conditions": [
            condition(prev_conditions, "Ready", ready, ready_reason, ready_msg, now),
            condition(prev_conditions, "Halted", halted, halted_reason, halted_msg, now),
            condition(prev_conditions, "Degraded", degraded, deg_reason, deg_msg, now),
        ],
        "engine": engine,
    }
    if generation is not None:
        out["observedGeneration"] = generation
    if symbol is not None:
        out["symbol"] = symbol
    return out


def wallet_status(
    *, generation: int | None, deployment: Mapping[str, Any] | None,
    previous: Mapping[str, Any] | None, now: str, invalid: str | None = None,
) -> dict[str, Any]:
    """The ``status`` of a Wallet. Block heights and deposits are the watcher's to report."""
    prev = dict(previous or {})
    ready = invalid is None and deployment_ready(deployment)
    reason = "InvalidSpec" if invalid else "WatcherReady" if ready else "WatcherNotReady"
    message = invalid or ("the watcher is running" if ready else "the watcher has no ready pod")
    out: dict[str, Any] = {
        "conditions": [
            condition(list(prev.get("conditions") or []), "Ready", ready, reason, message, now),
        ],
        "watcherReady": ready,
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def same_status(current: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether patching ``new`` would change nothing (avoids a write per timer tick)."""
    current = current or {}
    return all(current.get(k) == v for k, v in new.items())
