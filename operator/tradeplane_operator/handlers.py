"""Thin kopf handlers: read the object, call the pure functions (``children``,
``status``), apply through the adapters (``kube``, ``exchange``).

``build_registry(settings)`` registers everything into a fresh registry (nothing happens at
import time); ``main.py`` and the tests run it.

Errors, chosen deliberately:

* ``kopf.PermanentError``: the spec can never work (invalid rules) or the API rejected a
  manifest as invalid. Retrying the same input cannot help; a new spec triggers a new run.
* ``kopf.TemporaryError(delay=...)``: NATS, PostgreSQL or the API unreachable, overloaded,
  conflicting, forbidden (an admin can fix RBAC), or open orders still draining.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from tradeplane_operator import children, exchange, status
from tradeplane_operator.kube import Kube, KubeError
from tradeplane_operator.settings import OperatorSettings

GROUP = children.GROUP
VERSION = children.VERSION
PREFIX = children.PREFIX
FINALIZER = f"{GROUP}/finalizer"
SKIP_DRAIN = f"{PREFIX}/skip-drain"
DRAIN_POLL_S = 0.25
DRAIN_STEP_S = 20.0  # longest a single deletion attempt waits before a TemporaryError

log = logging.getLogger("tradeplane.operator")


@dataclass
class Runtime:
    """What the handlers share: settings and the API adapter (set at startup)."""

    settings: OperatorSettings
    kube: Kube | None = None
    service_monitor: bool = False
    scrapes: dict[str, float] = field(default_factory=dict)

    @property
    def api(self) -> Kube:
        if self.kube is None:
            raise kopf.TemporaryError("the Kubernetes client is not ready yet", delay=1)
        return self.kube


def configure(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> None:
    """Our finalizer and annotation prefix instead of kopf.zalando.org; peering mode."""
    kopf_settings.persistence.finalizer = FINALIZER
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration")
    kopf_settings.peering.standalone = settings.standalone
    kopf_settings.peering.name = settings.peering
    kopf_settings.peering.mandatory = not settings.standalone
    # Problems (handler warnings and failures) as Kubernetes Events on the object. kopf
    # posts log messages only with posting.loggers, off by default in kopf 1.45.
    kopf_settings.posting.loggers = True
    kopf_settings.posting.level = logging.WARNING
    kopf_settings.watching.server_timeout = 300
    kopf_settings.batching.error_delays = (1, 2, 5, 10, 30, 60)
    # A deletion waits for a running resync timer to exit before the finalizer goes; poll
    # for that every second instead of kopf's default minute.
    kopf_settings.background.cancellation_polling = 1.0


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _temporary(exc: Exception, delay: float) -> kopf.TemporaryError:
    return kopf.TemporaryError(str(exc), delay=delay)


# ------------------------------------------------------------------------------ applying
async def apply_children(rt: Runtime, manifests: list[children.Manifest],
                         logger: logging.Logger | logging.LoggerAdapter[Any]) -> list[str]:
    """Create missing children, restore drifted ones. Returns what changed (for logs).

    Raises:
        kopf.TemporaryError: the API is unreachable, overloaded, conflicting or forbidden.
        kopf.PermanentError: the API rejected a manifest as invalid.
    """
    changed: list[str] = []
    for manifest in manifests:
        what = f"{manifest['kind']}/{manifest['metadata']['name']}"
        try:
            live = await rt.api.get(manifest)
            if live is None:
                await rt.api.create(manifest)
                changed.append(f"created {what}")
            elif children.drifted(children.managed_part(manifest), live):
                await rt.api.merge_patch(manifest, children.managed_part(manifest))
                changed.append(f"restored {what}")
        except KubeError as exc:
            if exc.retryable:
                raise _temporary(exc, rt.settings.retry_delay_s) from exc
            raise kopf.PermanentError(f"{what}: {exc}") from exc
    if changed:
        logger.info("children: %s", ", ".join(changed))
    return changed


def _pair_manifests(rt: Runtime, body: kopf.Body, spec: Mapping[str, Any]) -> list[Any]:
    return children.desired_children(
        body.meta.name or "", body.meta.namespace or "", spec, rt.settings,
        uid=body.meta.uid or "", service_monitor=rt.service_monitor)


async def _observe_deployment(rt: Runtime, manifest: children.Manifest) -> dict[str, Any] | None:
    try:
        return await rt.api.get(manifest)
    except KubeError:
        return None


async def reconcile_pair(rt: Runtime, body: kopf.Body, spec: Mapping[str, Any],
                         patch: kopf.Patch, logger: Any, *, streams: bool) -> None:
    """Children to the desired state, streams ensured, status recomputed."""
    generation = body.meta.get("generation")
    previous = dict(body.get("status") or {})
    try:
        manifests = _pair_manifests(rt, body, spec)
        symbol, _ = children.pair_symbol(spec)
    except children.InvalidSpec as exc:
        refused = status.pair_status(
            generation=generation, symbol=None, spec=spec, deployment=None, figures=None,
            previous=previous, now=now_iso(), invalid=str(exc))
        if not status.same_status(previous, refused):
            patch.status.update(refused)
        if streams:  # the change handler reports it once; the resync timer stays quiet
            raise kopf.PermanentError(f"invalid TradingPair spec: {exc}") from exc
        return
    await apply_children(rt, manifests, logger)
    if streams:
        try:
            await exchange.ensure_streams(rt.settings.nats_url, symbol)
        except exchange.ExchangeUnavailable as exc:
            raise _temporary(exc, rt.settings.retry_delay_s) from exc
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    observed = await _observe_deployment(rt, deployment)
    figures = await _figures(rt, body, symbol, observed)
    new = status.pair_status(generation=generation, symbol=symbol, spec=spec,
                             deployment=observed, figures=figures, previous=previous,
                             now=now_iso())
    if not status.same_status(previous, new):
        patch.status.update(new)


async def _figures(rt: Runtime, body: kopf.Body, symbol: str,
                   deployment: Mapping[str, Any] | None) -> status.EngineFigures | None:
    if not rt.settings.scrape_metrics or not status.deployment_ready(deployment):
        return None
    url = rt.settings.metrics_url.format(
        name=children.metrics_service_name(body.meta.name or ""),
        namespace=body.meta.namespace, port=rt.settings.metrics_port)
    text = await exchange.scrape(url)
    return status.parse_engine_metrics(text, symbol) if text is not None else None


async def reconcile_wallet(rt: Runtime, body: kopf.Body, spec: Mapping[str, Any],
                           patch: kopf.Patch, logger: Any, *, report: bool) -> None:
    generation = body.meta.get("generation")
    previous = dict(body.get("status") or {})
    try:
        manifests = children.wallet_children(body.meta.name or "", body.meta.namespace or "",
                                             spec, rt.settings, uid=body.meta.uid or "")
    except children.InvalidSpec as exc:
        refused = status.wallet_status(generation=generation, deployment=None,
                                       previous=previous, now=now_iso(), invalid=str(exc))
        if not status.same_status(previous, refused):
            patch.status.update(refused)
        if report:  # the change handler reports it once; the resync timer stays quiet
            raise kopf.PermanentError(f"invalid Wallet spec: {exc}") from exc
        return
    await apply_children(rt, manifests, logger)
    observed = await _observe_deployment(rt, manifests[1])
    new = status.wallet_status(generation=generation, deployment=observed, previous=previous,
                               now=now_iso())
    if not status.same_status(previous, new):
        patch.status.update(new)


# ------------------------------------------------------------------------------ deletion
async def drain_pair(rt: Runtime, body: kopf.Body, spec: Mapping[str, Any], retry: int,
                     logger: Any) -> None:
    """Cancel-only, then CancelAll for every account with open orders, then wait until
    settlement shows none (holds released).

    Raises:
        kopf.TemporaryError: NATS/PostgreSQL unreachable, or orders still open after one
            step (the finalizer stays; the next attempt re-sends and waits again).
    """
    try:
        symbol, _ = children.pair_symbol(spec)
    except children.InvalidSpec:
        return  # an invalid pair never ran an engine: nothing to drain
    s = rt.settings
    uid = body.meta.uid
    try:
        # Cancel-only, not halted: a halted book refuses cancels too.
        await exchange.set_trading(s.nats_url, symbol, "cancel-only", f"delete-{uid}")
        async with exchange.ledger(s.database_url) as pool:
            open_orders = await exchange.open_orders_by_account(pool, symbol)
            if open_orders:
                logger.info("draining %s: %d open orders of %d accounts", symbol,
                            sum(open_orders.values()), len(open_orders))
                await exchange.cancel_all(s.nats_url, symbol, sorted(open_orders),
                                          f"x{symbol}:{uid}:{retry}")
            deadline = time.monotonic() + min(DRAIN_STEP_S, s.drain_timeout_s)
            while open_orders and time.monotonic() < deadline:
                await asyncio.sleep(DRAIN_POLL_S)
                open_orders = await exchange.open_orders_by_account(pool, symbol)
    except exchange.ExchangeUnavailable as exc:
        raise _temporary(exc, s.retry_delay_s) from exc
    if open_orders:
        raise kopf.TemporaryError(
            f"{sum(open_orders.values())} orders still open on {symbol}; is its engine and "
            f"settlement running? (annotate {SKIP_DRAIN}=true to delete without draining)",
            delay=s.retry_delay_s)


async def delete_children(rt: Runtime, refs: list[children.Manifest]) -> None:
    """Explicit deletion: correct with or without a garbage collector (tests, emulators)."""
    for ref in reversed(refs):  # the Deployment goes before the ConfigMap it mounts
        try:
            await rt.api.delete(ref)
        except KubeError as exc:
            if exc.retryable:
                raise _temporary(exc, rt.settings.retry_delay_s) from exc
            raise kopf.PermanentError(str(exc)) from exc


# ------------------------------------------------------------------------------ registry
def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    """All handlers, bound to ``settings``, in a registry of their own."""
    registry = kopf.OperatorRegistry()
    rt = Runtime(settings)
    tp = (GROUP, VERSION, "tradingpairs")
    wl = (GROUP, VERSION, "wallets")

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, logger: Any, **_: Any) -> None:
        configure(settings, rt.settings)
        try:
            rt.kube = Kube.connect()
        except KubeError as exc:
            raise kopf.TemporaryError(str(exc), delay=5) from exc
        mode = rt.settings.service_monitor
        if mode == "auto":
            try:
                rt.service_monitor = await rt.kube.has_api_group("monitoring.coreos.com")
            except KubeError:
                rt.service_monitor = False
        else:
            rt.service_monitor = mode == "on"
        logger.info("tradeplane operator started (service monitors: %s)", rt.service_monitor)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In-cluster service account first, else $KUBECONFIG as it is now (kopf's
        # client-library login would use the path the client read when it was imported).
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
        return info or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if rt.kube is not None:
            rt.kube.close()

    # -------------------------------------------------------------- TradingPair
    @kopf.on.create(*tp, registry=registry, id="reconcile")
    @kopf.on.update(*tp, registry=registry, id="reconcile")
    @kopf.on.resume(*tp, registry=registry, id="reconcile")
    async def pair_reconcile(body: kopf.Body, spec: kopf.Spec, patch: kopf.Patch,
                             logger: Any, **_: Any) -> None:
        await reconcile_pair(rt, body, spec, patch, logger, streams=True)

    @kopf.on.field(*tp, field="spec.trading", registry=registry, id="trading")
    async def pair_trading(body: kopf.Body, spec: kopf.Spec, old: Any, new: Any,
                           logger: Any, **_: Any) -> None:
        # On creation the engine takes the state from its ConfigMap; afterwards a change is
        # applied live by appending SetTrading to the symbol's log (no restart).
        if old is None or new is None or old == new:
            return
        try:
            symbol = children.pair_symbol(spec)[0]
        except children.InvalidSpec as exc:
            raise kopf.PermanentError(str(exc)) from exc
        cause = f"gen{body.meta.get('generation')}"
        try:
            seq = await exchange.set_trading(rt.settings.nats_url, symbol, str(new), cause)
        except exchange.ExchangeUnavailable as exc:
            raise _temporary(exc, rt.settings.retry_delay_s) from exc
        logger.info("trading %s -> %s on %s (command seq %d)", old, new, symbol, seq)

    @kopf.on.timer(*tp, registry=registry, id="resync", interval=settings.resync_s,
                 initial_delay=settings.resync_s)
    async def pair_resync(body: kopf.Body, spec: kopf.Spec, patch: kopf.Patch,
                          logger: Any, **_: Any) -> None:
        # Drift repair (a deleted or hand-edited child) and the status from observed state.
        await reconcile_pair(rt, body, spec, patch, logger, streams=False)

    @kopf.on.delete(*tp, registry=registry, id="drain")
    async def pair_delete(body: kopf.Body, spec: kopf.Spec, retry: int, logger: Any,
                          **_: Any) -> None:
        if body.meta.annotations.get(SKIP_DRAIN) != "true":
            await drain_pair(rt, body, spec, retry, logger)
        await delete_children(rt, children.pair_child_refs(
            body.meta.name or "", body.meta.namespace or "", service_monitor=rt.service_monitor))
        logger.info("drained and removed children")

    # -------------------------------------------------------------- Wallet
    @kopf.on.create(*wl, registry=registry, id="reconcile")
    @kopf.on.update(*wl, registry=registry, id="reconcile")
    @kopf.on.resume(*wl, registry=registry, id="reconcile")
    async def wallet_reconcile(body: kopf.Body, spec: kopf.Spec, patch: kopf.Patch,
                               logger: Any, **_: Any) -> None:
        await reconcile_wallet(rt, body, spec, patch, logger, report=True)

    @kopf.on.timer(*wl, registry=registry, id="resync", interval=settings.resync_s,
                 initial_delay=settings.resync_s)
    async def wallet_resync(body: kopf.Body, spec: kopf.Spec, patch: kopf.Patch,
                            logger: Any, **_: Any) -> None:
        await reconcile_wallet(rt, body, spec, patch, logger, report=False)

    return registry
