"""The gateway's side of the platform controls: what every gateway replica must learn
at once over ``control.gateway`` (the kill switch, revoked keys, frozen accounts) and
``control.pairs`` (a pair's rules changed), and the admin use cases built once per gateway
(:attr:`Controls.pair_cases`, :attr:`Controls.account_cases`), for which this object is
the ``Gateways`` and ``KeyEvents`` port.

The kill switch itself is the pairs use case's (``usecases/pairs.py``): ``on`` records
the flag in PostgreSQL, makes every gateway refuse trading requests (-1013) at once, and
appends SetTrading(HALTED) to every symbol's command log; ``off`` appends
SetTrading(<the pair's configured state>) to each log, then lets the gateways trade again.
Gateways also re-read the flag every few seconds, so a replica that missed the message
(or started later) follows within that time.

User data streams hear the same messages (``user_streams``, see ``gateway/userstream.py``):
a revoked key or a frozen account drops its listen keys and closes their sockets on every
replica at once, and a DELETEd listen key (``{"kind": "listenKey"}``) closes its sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from tradeplane.domain.errors import TradeplaneError
from tradeplane.domain.pairs import PairRules
from tradeplane.gateway.auth import KeyCache
from tradeplane.gateway.context import GatewayContext
from tradeplane.supervision import BackgroundTasks, Backoff
from tradeplane.usecases.accounts import Accounts, KeyEvents
from tradeplane.usecases.pairs import KILL_SWITCH, Gateways, PairControl, Pairs

__all__ = ["KILL_SWITCH", "ControlChannel", "Controls", "PairControl", "UserStreamControl"]

log = logging.getLogger("tradeplane.gateway")

POLL_S = 5.0
#: The longest wait between two polls of the kill-switch flag while the database fails.
POLL_RETRY_MAX_S = 30.0

#: A control message's document, as a handler receives it.
Handler = Callable[[dict[str, Any]], Awaitable[None]]
Unsubscribe = Callable[[], Awaitable[None]]


class ControlChannel(Protocol):
    """``control.gateway`` and ``control.pairs`` between the gateway replicas (and the
    processes that reload pairs): fire-and-forget, so every receiver also polls.
    ``adapters/control.BusControlChannel`` implements it over NATS."""

    async def tell_gateways(self, doc: dict[str, Any]) -> None: ...

    async def pairs_changed(self) -> None: ...

    async def on_gateway(self, handler: Handler) -> Unsubscribe:
        """Deliver each well-formed ``control.gateway`` document; returns unsubscribe."""
        ...

    async def on_pairs(self, handler: Handler) -> Unsubscribe: ...


class UserStreamControl(Protocol):
    """What the user data streams must hear (``userstream.UserStreams``)."""

    def close_listen_key(self, listen_key: str) -> None: ...

    async def key_revoked(self, api_key: str) -> None: ...

    async def account_changed(self, account: int) -> None: ...


class Controls:
    """``pair_cases`` and ``account_cases`` are built by the composition root
    (``security.start_security``) with this object as their ``Gateways`` and
    ``KeyEvents`` port; ``load_pairs`` reads every pair's rules."""

    def __init__(self, c: GatewayContext, keys: KeyCache, channel: ControlChannel,
                 load_pairs: Callable[[], Awaitable[dict[str, PairRules]]],
                 pair_cases: Callable[[Gateways], Pairs],
                 account_cases: Callable[[KeyEvents], Accounts]) -> None:
        self.c = c
        self.keys = keys
        self.channel = channel
        self.load_pairs = load_pairs
        #: Set once the gateway has its user streams (app.py); None: nothing to close.
        self.user_streams: UserStreamControl | None = None
        self.halted = False
        self._unsubs: list[Unsubscribe] = []
        self.pair_cases = pair_cases(self)
        self.account_cases = account_cases(self)

    async def start(self, background: BackgroundTasks, poll_s: float = POLL_S) -> None:
        """Read the kill-switch flag, listen to the control subjects, and poll the flag
        every ``poll_s`` seconds as the task ``kill-switch-poll`` of ``background`` (which
        stops it)."""
        self.halted = await self._flag_on()
        self._unsubs = [
            await self.channel.on_gateway(self._on_gateway),
            await self.channel.on_pairs(self._on_pairs),
        ]
        background.start("kill-switch-poll", self._poll(poll_s))

    async def stop(self) -> None:
        for unsub in self._unsubs:
            with contextlib.suppress(TradeplaneError):
                await unsub()

    async def _flag_on(self) -> bool:
        return bool((await self.pair_cases.kill_switch_state())["on"])

    async def _poll(self, every: float) -> None:
        """Re-read the kill-switch flag every ``every`` seconds: a replica that missed a
        ``control.gateway`` message follows within that time.

        Retries with backoff: while the database fails (a ``TradeplaneError``) the last
        known state stays, each failure is logged once and the next poll waits twice as
        long, at most ``POLL_RETRY_MAX_S``. Any other error is a defect and ends the task,
        which stops the gateway (``gateway.app.serve``): a kill switch that silently
        stopped following the flag is not one.
        """
        backoff = Backoff(every, max(every, POLL_RETRY_MAX_S))
        delay = every
        while True:
            await asyncio.sleep(delay)
            try:
                self.halted = await self._flag_on()
            except TradeplaneError as exc:  # the database: keep the last known state
                delay = backoff.failed()
                log.warning("kill-switch poll failed; retrying in %.1fs: %s", delay, exc)
                continue
            backoff.succeeded()
            delay = every

    async def _on_gateway(self, doc: dict[str, Any]) -> None:
        kind = doc.get("kind")
        if kind == "kill":
            self.halted = bool(doc.get("on"))
        elif kind == "key" and isinstance(doc.get("apiKey"), str):
            self.keys.invalidate(api_key=doc["apiKey"])
            if self.user_streams is not None:
                await self.user_streams.key_revoked(doc["apiKey"])
        elif kind == "account" and isinstance(doc.get("account"), int):
            self.keys.invalidate(account=doc["account"])
            if self.user_streams is not None:
                await self.user_streams.account_changed(doc["account"])
        elif (kind == "listenKey" and isinstance(doc.get("listenKey"), str)
              and self.user_streams is not None):
            self.user_streams.close_listen_key(doc["listenKey"])

    async def _on_pairs(self, _doc: dict[str, Any]) -> None:
        await self.reload_pairs()

    async def reload_pairs(self) -> None:
        self.c.pairs = await self.load_pairs()

    # ------------------------------------------------------------------ broadcasts
    async def key_changed(self, api_key: str) -> None:
        """The key was revoked."""
        self.keys.invalidate(api_key=api_key)
        await self.channel.tell_gateways({"kind": "key", "apiKey": api_key})
        if self.user_streams is not None:
            await self.user_streams.key_revoked(api_key)

    async def account_changed(self, account: int) -> None:
        """The account was frozen or unfrozen."""
        self.keys.invalidate(account=account)
        await self.channel.tell_gateways({"kind": "account", "account": account})
        if self.user_streams is not None:
            await self.user_streams.account_changed(account)

    async def listen_key_closed(self, listen_key: str) -> None:
        """A listen key was DELETEd: its sockets close on every replica."""
        if self.user_streams is not None:
            self.user_streams.close_listen_key(listen_key)
        await self.channel.tell_gateways({"kind": "listenKey", "listenKey": listen_key})

    async def pairs_changed(self) -> None:
        await self.reload_pairs()
        await self.channel.pairs_changed()

    async def key_revoked(self, api_key: str) -> None:
        await self.key_changed(api_key)

    # ------------------------------------------------------------------ kill switch
    async def kill_switch(self, on: bool) -> None:
        """Every gateway refuses trading (-1013) at once, or trades again. The engines are
        told by the use case (``usecases.pairs.Pairs``): halted after this, revived
        before it."""
        self.halted = on
        await self.channel.tell_gateways({"kind": "kill", "on": on})
