"""User data stream (Binance listenKey): executionReport and outboundAccountPosition.

Listen keys are random and live in a store every gateway replica shares (Redis,
``adapters/listenkeys.py``, behind :class:`ListenKeys`), so every replica knows every
key: ``POST /api/v3/userDataStream`` gives the API key's listen key (its live one,
renewed, or a new one), ``PUT`` renews it for ``listen_key_ttl_s`` (60 minutes),
``DELETE`` removes it and closes its sockets on every replica (over ``control.gateway``).
Settlement publishes the account's updates on ``user.<account>`` after each commit;
``/ws/<listenKey>`` relays them (over the bus's core subscriptions, :class:`Subscriber`).

A socket lives only as long as its listen key and its API key. Revoking the key or
freezing the account closes it at once, on every replica (``control.gateway``, see
``gateway/control.py``); each socket also wakes when its listen key or its API key is due
to expire, and at least every ``RECHECK_S``, and asks again (a keepalive on another
replica may have renewed the listen key; the recheck bounds what a lost control message
can delay). Closed for any reason but its DELETE, a socket first gets Binance's
``{"e":"listenKeyExpired","E":<ms>,"listenKey":"..."}``. A frozen account may not open a
stream, as its keys may not trade.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from fastapi import APIRouter, Depends, Request, WebSocket
from starlette.websockets import WebSocketDisconnect

from tradeplane.domain.errors import Unavailable
from tradeplane.domain.listenkeys import ListenKeyGrant

# Only texts of a listen key's form reach the store (``streams`` asks this module).
from tradeplane.domain.listenkeys import is_listen_key as is_listen_key
from tradeplane.domain.market import user_subject
from tradeplane.gateway import errors
from tradeplane.gateway.auth import Caller, KeyEntry, api_key_only
from tradeplane.gateway.context import gateway
from tradeplane.gateway.wslimits import POLICY_VIOLATION, Inbound, Violation, WsLimits

log = logging.getLogger("tradeplane.gateway.userstream")

router = APIRouter(prefix="/api/v3", tags=["user data stream"])

#: The longest a socket goes without asking whether its keys still stand.
RECHECK_S: Final = 30.0
#: Wake this long after an expiry, so the expiry has certainly happened.
_MARGIN_S: Final = 0.01
QUEUE_LIMIT: Final = 10_000


class ListenKeys(Protocol):
    """Where listen keys live (``adapters.listenkeys.ListenKeyStore``). Every method
    raises Unavailable when the store cannot be asked."""

    def issue(self, api_key: str, account: int, ttl_ms: int) -> Awaitable[str]: ...

    def extend(self, listen_key: str, api_key: str, ttl_ms: int) -> Awaitable[bool]: ...

    def remove(self, listen_key: str, api_key: str = "") -> Awaitable[bool]: ...

    def remove_api_key(self, api_key: str) -> Awaitable[str | None]: ...

    def remove_account(self, account: int) -> Awaitable[list[str]]: ...

    def lookup(self, listen_key: str) -> Awaitable[ListenKeyGrant | None]: ...


class KeyLookup(Protocol):
    """The API keys (``auth.KeyCache``)."""

    async def lookup(self, pool: Any, api_key: str) -> KeyEntry | None: ...


class AccountStatus(Protocol):
    """Whether an account is frozen (``adapters.accountstatus.PgAccountStatus``)."""

    async def frozen(self, account: int) -> bool:
        """False for a live or unknown account; raises Unavailable when it cannot be
        read."""
        ...


#: Subscribe ``handler(subject, data)`` to a core subject; returns the unsubscriber.
Handler = Callable[[str, bytes], Awaitable[None]]


class Subscriber(Protocol):
    """Core (not persisted) subscriptions on the bus (``adapters.bus.Bus``): the user data
    of an account here, the market-data payloads in ``streams``. Raises Unavailable when
    the bus cannot take the subscription (or, from the unsubscriber, its removal)."""

    async def subscribe(self, subject: str, handler: Handler) -> Callable[[], Awaitable[None]]:
        ...


def usable(entry: KeyEntry | None, now_ms: int) -> bool:
    """A key that may hold a user stream: live, not expired, its account not frozen."""
    if entry is None or entry.policy.frozen:
        return False
    return not (entry.policy.expires_ms and now_ms >= entry.policy.expires_ms)


def _now_ms() -> int:
    return int(time.time() * 1000)


class UserSession:
    """One open ``/ws/<listenKey>`` socket, as the registry sees it."""

    def __init__(self, grant: ListenKeyGrant) -> None:
        self.listen_key = grant.listen_key
        self.account = grant.account
        self.api_key = grant.api_key
        self.ended = asyncio.Event()
        self.expired = False  # True: tell the client listenKeyExpired before closing

    def end(self, *, expired: bool) -> None:
        if not self.ended.is_set():
            self.expired = expired
            self.ended.set()


class UserStreams:
    """One gateway's listen-key use cases and its open user-stream sockets."""

    def __init__(self, store: ListenKeys, keys: KeyLookup, pool: Any, *, ttl_s: float,
                 accounts: AccountStatus, recheck_s: float = RECHECK_S) -> None:
        self.store = store
        self.keys = keys
        self.pool = pool  # passed through to ``keys.lookup``
        self.accounts = accounts
        self.ttl_ms = int(ttl_s * 1000)
        self.recheck_s = recheck_s
        self._sessions: dict[str, set[UserSession]] = {}

    def sessions(self) -> list[UserSession]:
        return [s for group in self._sessions.values() for s in group]

    # ------------------------------------------------------------------ REST
    async def create(self, api_key: str, account: int) -> str:
        """Raises Unavailable."""
        return await self.store.issue(api_key, account, self.ttl_ms)

    async def keepalive(self, listen_key: str, api_key: str) -> bool:
        """Raises Unavailable."""
        return is_listen_key(listen_key) and await self.store.extend(listen_key, api_key,
                                                                     self.ttl_ms)

    async def delete(self, listen_key: str, api_key: str) -> bool:
        """Remove the listen key and close its sockets here (the caller tells the other
        replicas). Raises Unavailable."""
        if not is_listen_key(listen_key) or not await self.store.remove(listen_key, api_key):
            return False
        self.close_listen_key(listen_key)
        return True

    # ------------------------------------------------------------------ sockets
    async def open(self, listen_key: str) -> UserSession | None:
        """A session for a live listen key of a usable API key, else None.
        Raises Unavailable."""
        grant = await self.store.lookup(listen_key) if is_listen_key(listen_key) else None
        if grant is None:
            return None
        if not usable(await self.keys.lookup(self.pool, grant.api_key), _now_ms()):
            return None
        return self._attach(grant)

    def attach(self, name: str, account: int, api_key: str) -> UserSession:
        """A session without a listen key (a WebSocket API subscription), under a
        ``name`` of its own: it ends like every other when its API key is revoked or its
        account frozen, on every replica."""
        return self._attach(ListenKeyGrant(name, account, api_key, 0))

    def _attach(self, grant: ListenKeyGrant) -> UserSession:
        session = UserSession(grant)
        self._sessions.setdefault(grant.listen_key, set()).add(session)
        return session

    def release(self, session: UserSession) -> None:
        group = self._sessions.get(session.listen_key)
        if group is not None:
            group.discard(session)
            if not group:
                del self._sessions[session.listen_key]

    async def check(self, session: UserSession) -> float | None:
        """Ask whether the session's keys still stand: end it (expired) if not and return
        None, else the seconds until it must be asked again."""
        try:
            grant = await self.store.lookup(session.listen_key)
        except Unavailable as exc:  # keep the socket; ask again later
            log.warning("listen-key check failed: %s", exc)
            return self.recheck_s
        entry = None if grant is None else await self.keys.lookup(self.pool, grant.api_key)
        now = _now_ms()
        if grant is None or entry is None or not usable(entry, now):
            session.end(expired=True)
            return None
        due_ms = grant.ttl_ms
        if entry.policy.expires_ms:
            due_ms = min(due_ms, entry.policy.expires_ms - now)
        return min(self.recheck_s, max(due_ms, 0) / 1000 + _MARGIN_S)

    # ------------------------------------------------------------------ control
    def close_listen_key(self, listen_key: str) -> None:
        """DELETEd: close its sockets here, without listenKeyExpired (as Binance)."""
        for s in list(self._sessions.get(listen_key, ())):
            s.end(expired=False)

    async def key_revoked(self, api_key: str) -> None:
        """The API key was revoked: drop its listen key and close its sockets here."""
        for s in self.sessions():
            if s.api_key == api_key:
                s.end(expired=True)
        try:
            await self.store.remove_api_key(api_key)
        except Unavailable as exc:  # its sockets re-check; the key is refused anyway
            log.warning("could not drop the listen key of a revoked key: %s", exc)

    async def account_changed(self, account: int) -> None:
        """Frozen (or unfrozen): when frozen, drop the account's listen keys and close
        its sockets here."""
        if not await self.accounts.frozen(account):
            return
        for s in self.sessions():
            if s.account == account:
                s.end(expired=True)
        try:
            await self.store.remove_account(account)
        except Unavailable as exc:
            log.warning("could not drop the listen keys of a frozen account: %s", exc)


# --------------------------------------------------------------------------- REST
def _streams(request: Request) -> UserStreams:
    return gateway(request.app).user_streams


def _unavailable() -> errors.ApiError:
    return errors.ApiError(-1001, "Internal error; unable to process your request. "
                                  "Please try again.", 503)


def _no_such_key() -> errors.ApiError:
    return errors.ApiError(-1125, "This listenKey does not exist.")


@router.post("/userDataStream")
async def create_stream(request: Request, caller: Caller = Depends(api_key_only)) -> dict[str, str]:
    """The API key's listen key: its live one (renewed) or a new one.

    Raises -2015 for a frozen account (its streams are closed at freezing)."""
    users = _streams(request)
    if not usable(await users.keys.lookup(users.pool, caller.api_key), _now_ms()):
        raise errors.bad_api_key()
    try:
        return {"listenKey": await users.create(caller.api_key, caller.account)}
    except Unavailable as exc:
        log.warning("listen key store: %s", exc)
        raise _unavailable() from None


@router.put("/userDataStream")
async def keepalive(request: Request, caller: Caller = Depends(api_key_only)) -> dict[str, Any]:
    """Renew the listen key for another ``listen_key_ttl_s``; -1125 when the API key has
    no such live listen key."""
    users = _streams(request)
    try:
        ok = await users.keepalive(caller.params.get("listenKey", ""), caller.api_key)
    except Unavailable as exc:
        log.warning("listen key store: %s", exc)
        raise _unavailable() from None
    if not ok:
        raise _no_such_key()
    return {}


@router.delete("/userDataStream")
async def close_stream(request: Request, caller: Caller = Depends(api_key_only)) -> dict[str, Any]:
    """Remove the listen key; its sockets close on every replica. -1125 when the API key
    has no such live listen key."""
    users = _streams(request)
    listen_key = caller.params.get("listenKey", "")
    try:
        ok = await users.delete(listen_key, caller.api_key)
    except Unavailable as exc:
        log.warning("listen key store: %s", exc)
        raise _unavailable() from None
    if not ok:
        raise _no_such_key()
    await gateway(request.app).controls.listen_key_closed(listen_key)
    return {}


# --------------------------------------------------------------------------- socket
async def account_updates(
    bus: Subscriber, account: int, on_msg: Handler
) -> Callable[[], Awaitable[None]]:
    """Hear the account's updates (settlement's executionReport, outboundAccountPosition,
    balanceUpdate) as they are published; returns what stops it."""
    return await bus.subscribe(user_subject(account), on_msg)


async def serve_user_stream(
    websocket: WebSocket, session: UserSession, users: UserStreams, limits: WsLimits,
    bus: Subscriber,
) -> None:
    """Relay the account's updates (from ``bus``) until the client goes away or the
    session ends (socket already accepted; the session is released at the end)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=QUEUE_LIMIT)
    overflow = asyncio.Event()

    async def on_msg(_subject: str, data: bytes) -> None:
        try:
            queue.put_nowait(data)
        except asyncio.QueueFull:
            # A silently dropped report would leave the client's view of its orders wrong:
            # disconnect it instead (as Binance does with slow readers); it reconnects.
            overflow.set()

    async def pump() -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            while True:
                data = await queue.get()
                await websocket.send_text(data.decode())

    async def drain_client() -> Violation | None:
        inbound = Inbound(websocket, limits)
        try:
            while await inbound.next() is not None:
                pass  # a user stream takes no requests
        except Violation as v:
            return v
        return None

    async def watch() -> None:
        while (delay := await users.check(session)) is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.ended.wait(), delay)

    unsub = await account_updates(bus, session.account, on_msg)
    drain = asyncio.create_task(drain_client())
    tasks = [asyncio.create_task(pump()), drain, asyncio.create_task(overflow.wait()),
             asyncio.create_task(session.ended.wait()), asyncio.create_task(watch())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        violation = drain.result() if drain.done() and not drain.cancelled() \
            and drain.exception() is None else None
        gone = drain.done() and not drain.cancelled() and violation is None \
            and drain.exception() is None
        with contextlib.suppress(Exception):  # the peer may be gone already
            if violation is not None:
                await websocket.close(code=violation.code, reason=violation.reason)
            elif gone:
                pass  # the client closed
            elif overflow.is_set():
                await websocket.close(code=POLICY_VIOLATION, reason="Too slow a reader.")
            elif session.ended.is_set():
                if session.expired:
                    await websocket.send_text(json.dumps(
                        {"e": "listenKeyExpired", "E": _now_ms(),
                         "listenKey": session.listen_key}, separators=(",", ":")))
                await websocket.close(code=1000)
            else:  # a check failed (the database could not be asked): the client reconnects
                await websocket.close(code=1011)
    finally:
        for t in tasks:
            t.cancel()
        users.release(session)
        await unsub()
