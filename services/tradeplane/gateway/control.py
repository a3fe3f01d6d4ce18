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

from tradeplane.adapters import accounts_db, control, db
from tradeplane.adapters.admin_store import PgAccountStore, PgPairStore
from tradeplane.adapters.bus import BusError
from tradeplane.adapters.control import BusCommandLog, LocalPairControl, now_ms
from tradeplane.gateway.auth import KeyCache
from tradeplane.gateway.context import GatewayContext
from tradeplane.usecases.accounts import Accounts
from tradeplane.usecases.pairs import KILL_SWITCH, PairControl, Pairs

__all__ = ["KILL_SWITCH", "Controls", "LocalPairControl", "PairControl",
           "UserStreamControl"]

log = logging.getLogger("tradeplane.gateway")

POLL_S = 5.0


class UserStreamControl(Protocol):
    """What the user data streams must hear (``userstream.UserStreams``)."""

    def close_listen_key(self, listen_key: str) -> None: ...

    async def key_revoked(self, api_key: str) -> None: ...

    async def account_changed(self, account: int) -> None: ...


class Controls:
    def __init__(self, c: GatewayContext, keys: KeyCache, pairs: PairControl) -> None:
        self.c = c
        self.keys = keys
        self.pairs = pairs
        #: Set once the gateway has its user streams (app.py); None: nothing to close.
        self.user_streams: UserStreamControl | None = None
        self.halted = False
        self._unsubs: list[Callable[[], Awaitable[None]]] = []
        self._poller: asyncio.Task[None] | None = None
        self._pair_cases: Pairs | None = None
        self._account_cases: Accounts | None = None

    # The gateway's use cases, built once (on first use: the pool and the bus are the
    # context's, connected by then); this object is their Gateways and KeyEvents port.
    @property
    def pair_cases(self) -> Pairs:
        if self._pair_cases is None:
            self._pair_cases = Pairs(PgPairStore(self.c.pool), self.pairs,
                                     BusCommandLog(self.c.bus), self, now_ms)
        return self._pair_cases

    @property
    def account_cases(self) -> Accounts:
        if self._account_cases is None:
            self._account_cases = Accounts(PgAccountStore(self.c.pool), self.keys.cipher,
                                           now_ms, self)
        return self._account_cases

    async def start(self) -> None:
        self.halted = await self._flag_on()
        self._unsubs = [
            await control.subscribe(self.c.bus, control.GATEWAY, self._on_gateway),
            await control.subscribe(self.c.bus, control.PAIRS_CHANGED, self._on_pairs),
        ]
        self._poller = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for unsub in self._unsubs:
            with contextlib.suppress(BusError):
                await unsub()

    async def _flag_on(self) -> bool:
        flag = await accounts_db.get_flag(self.c.pool, KILL_SWITCH)
        return bool(flag and flag.get("on"))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                self.halted = await self._flag_on()
            except db.DatabaseError as exc:  # keep the last known state
                log.warning("kill-switch poll failed: %s", exc)
            except Exception:  # a defect: said loudly; the last known state stays
                log.exception("kill-switch poll failed")

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
        self.c.pairs = await db.load_pairs(self.c.pool)

    # ------------------------------------------------------------------ broadcasts
    async def key_changed(self, api_key: str) -> None:
        """The key was revoked."""
        self.keys.invalidate(api_key=api_key)
        await control.publish(self.c.bus, control.GATEWAY, {"kind": "key", "apiKey": api_key})
        if self.user_streams is not None:
            await self.user_streams.key_revoked(api_key)

    async def account_changed(self, account: int) -> None:
        """The account was frozen or unfrozen."""
        self.keys.invalidate(account=account)
        await control.publish(self.c.bus, control.GATEWAY, {"kind": "account",
                                                            "account": account})
        if self.user_streams is not None:
            await self.user_streams.account_changed(account)

    async def listen_key_closed(self, listen_key: str) -> None:
        """A listen key was DELETEd: its sockets close on every replica."""
        if self.user_streams is not None:
            self.user_streams.close_listen_key(listen_key)
        await control.publish(self.c.bus, control.GATEWAY, {"kind": "listenKey",
                                                            "listenKey": listen_key})

    async def pairs_changed(self) -> None:
        await self.reload_pairs()
        await control.publish(self.c.bus, control.PAIRS_CHANGED, {})

    async def key_revoked(self, api_key: str) -> None:
        await self.key_changed(api_key)

    # ------------------------------------------------------------------ kill switch
    async def kill_switch(self, on: bool) -> None:
        """Every gateway refuses trading (-1013) at once, or trades again. The engines are
        told by the use case (``usecases.pairs.Pairs``): halted after this, revived
        before it."""
        self.halted = on
        await control.publish(self.c.bus, control.GATEWAY, {"kind": "kill", "on": on})
