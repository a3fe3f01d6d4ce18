"""User-data-stream listen keys in Redis, shared by every gateway replica.

Keys (each write is one Lua script, so concurrent requests never see half a change):

* ``lk:<listenKey>``: hash ``{account, apiKey}``, expiring ``ttl`` after its creation or
  last keepalive. Its absence is the only truth: an expired or deleted key is gone.
* ``lk:api:<apiKey>``: the API key's listen key (one per API key, as Binance: asking again
  returns it and extends it), with the same expiry.
* ``lk:acct:<account>``: the account's listen keys (to close them all when it is frozen);
  it expires with its latest renewal, and members whose key is gone are pruned on issue.

Listen keys are 60 random letters and digits (``secrets``), like Binance's.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, Final, ParamSpec, Self, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tradeplane.config import redacted
from tradeplane.domain.errors import Unavailable

# The form of a listen key and what one grants are the domain's (the gateway checks a
# client's text against the same definition); re-exported for this adapter's callers.
from tradeplane.domain.listenkeys import LISTEN_KEY_LENGTH as LISTEN_KEY_LENGTH
from tradeplane.domain.listenkeys import ListenKeyGrant as ListenKeyGrant

P = ParamSpec("P")
R = TypeVar("R")

_ALPHABET: Final = string.ascii_letters + string.digits


class ListenKeyError(Unavailable):
    """Redis could not be reached or refused an operation."""


def new_listen_key() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(LISTEN_KEY_LENGTH))


def _lk(listen_key: str) -> str:
    return f"lk:{listen_key}"


def _api(api_key: str) -> str:
    return f"lk:api:{api_key}"


def _acct(account: int) -> str:
    return f"lk:acct:{account}"


# KEYS: lk:api:<apiKey>, lk:acct:<account>; ARGV: candidate, apiKey, account, ttl_ms.
# The API key's live listen key is renewed and returned; else the candidate is stored.
_ISSUE: Final = """
local cur = redis.call('GET', KEYS[1])
if cur and redis.call('PEXPIRE', 'lk:' .. cur, ARGV[4]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  return cur
end
for _, m in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', 'lk:' .. m) == 0 then redis.call('SREM', KEYS[2], m) end
end
redis.call('HSET', 'lk:' .. ARGV[1], 'account', ARGV[3], 'apiKey', ARGV[2])
redis.call('PEXPIRE', 'lk:' .. ARGV[1], ARGV[4])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return ARGV[1]
"""

# KEYS: lk:<listenKey>, lk:api:<apiKey>; ARGV: apiKey, ttl_ms. 1 = renewed, 0 = no such
# listen key of this API key.
_EXTEND: Final = """
if redis.call('HGET', KEYS[1], 'apiKey') ~= ARGV[1] then return 0 end
local acct = redis.call('HGET', KEYS[1], 'account')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', 'lk:acct:' .. acct, ARGV[2])
return 1
"""

# KEYS: lk:<listenKey>; ARGV: listenKey, apiKey ('' = whoever owns it). 1 = removed.
_REMOVE: Final = """
local owner = redis.call('HGET', KEYS[1], 'apiKey')
if not owner or (ARGV[2] ~= '' and owner ~= ARGV[2]) then return 0 end
local acct = redis.call('HGET', KEYS[1], 'account')
redis.call('DEL', KEYS[1])
if redis.call('GET', 'lk:api:' .. owner) == ARGV[1] then redis.call('DEL', 'lk:api:' .. owner) end
redis.call('SREM', 'lk:acct:' .. acct, ARGV[1])
return 1
"""

# KEYS: lk:acct:<account>. Removes every listen key of the account; returns them.
_REMOVE_ACCOUNT: Final = """
local gone = {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local owner = redis.call('HGET', 'lk:' .. m, 'apiKey')
  if owner then
    redis.call('DEL', 'lk:' .. m)
    if redis.call('GET', 'lk:api:' .. owner) == m then redis.call('DEL', 'lk:api:' .. owner) end
    table.insert(gone, m)
  end
end
redis.call('DEL', KEYS[1])
return gone
"""


def _translated(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except (RedisError, OSError, TimeoutError) as exc:
            raise ListenKeyError(f"redis: {exc}") from exc

    return wrapper


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ListenKeyStore:
    """The listen keys. Callers pass well-formed listen keys and API keys (the gateway
    parses them); every method raises ListenKeyError on a Redis failure."""

    def __init__(self, client: Redis) -> None:
        self._r = client
        self._issue: Any = client.register_script(_ISSUE)
        self._extend: Any = client.register_script(_EXTEND)
        self._remove: Any = client.register_script(_REMOVE)
        self._remove_account: Any = client.register_script(_REMOVE_ACCOUNT)

    @classmethod
    async def connect(cls, url: str) -> Self:
        """Raises ListenKeyError when Redis cannot be reached."""
        client = Redis.from_url(url)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise ListenKeyError(f"cannot connect to Redis at {redacted(url)}: {exc}") from exc
        return cls(client)

    async def close(self) -> None:
        await self._r.aclose()

    @_translated
    async def issue(self, api_key: str, account: int, ttl_ms: int) -> str:
        """The API key's listen key, renewed for ``ttl_ms``; a new one if it has none."""
        got = await self._issue(keys=[_api(api_key), _acct(account)],
                                args=[new_listen_key(), api_key, account, ttl_ms])
        return _text(got)

    @_translated
    async def extend(self, listen_key: str, api_key: str, ttl_ms: int) -> bool:
        """Renew ``listen_key`` for ``ttl_ms``; False when the API key has no such one."""
        return bool(await self._extend(keys=[_lk(listen_key), _api(api_key)],
                                       args=[api_key, ttl_ms]))

    @_translated
    async def remove(self, listen_key: str, api_key: str = "") -> bool:
        """Delete ``listen_key`` (only if it is ``api_key``'s, when given); False when
        there was no such listen key."""
        return bool(await self._remove(keys=[_lk(listen_key)], args=[listen_key, api_key]))

    @_translated
    async def remove_api_key(self, api_key: str) -> str | None:
        """Delete the API key's listen key; returns it (None: it had none)."""
        raw = await self._r.get(_api(api_key))
        if raw is None:
            return None
        listen_key = _text(raw)
        await self._remove(keys=[_lk(listen_key)], args=[listen_key, api_key])
        return listen_key

    @_translated
    async def remove_account(self, account: int) -> list[str]:
        """Delete every listen key of the account; returns them."""
        gone = await self._remove_account(keys=[_acct(account)], args=[])
        return [_text(x) for x in gone]

    @_translated
    async def lookup(self, listen_key: str) -> ListenKeyGrant | None:
        """The live listen key, None when it does not exist (never did, expired, deleted)."""
        pipe = self._r.pipeline(transaction=True)
        pipe.hmget(_lk(listen_key), ["account", "apiKey"])
        pipe.pttl(_lk(listen_key))
        (account, api_key), ttl = await pipe.execute()
        if account is None or api_key is None or int(ttl) <= 0:
            return None
        return ListenKeyGrant(listen_key, int(account), _text(api_key), int(ttl))
