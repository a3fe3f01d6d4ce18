"""Admin identities, the permission check on every admin endpoint, and the audit log.

An admin presents ``Authorization: Bearer <token>`` (the scheme in any case; a token
without it is refused). Tokens of admin users (``tradeplane
admin-create NAME --role ROLE``) are stored as SHA-256 hashes and looked up by hash; the
configured ``TRADEPLANE_ADMIN_TOKEN`` is the break-glass identity "bootstrap" with the
SuperAdmin role (compared in constant time). Each endpoint names one
:class:`~tradeplane.domain.access.AdminAction`; the role must be allowed it by
:data:`~tradeplane.domain.access.PERMISSION_MATRIX`, or the answer is 403.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from tradeplane.adapters import accounts_db, db
from tradeplane.domain.access import AdminAction, Role, allowed
from tradeplane.gateway import errors
from tradeplane.gateway.auth import request_ip
from tradeplane.gateway.context import ctx
from tradeplane.gateway.users import bearer_token
from tradeplane.usecases.accounts import ADMIN_TOKEN_PREFIX as TOKEN_PREFIX
from tradeplane.usecases.accounts import BOOTSTRAP, admin_token_hash, new_admin_token
from tradeplane.usecases.audit import Actor

__all__ = ["BOOTSTRAP", "TOKEN_PREFIX", "AdminIdentity", "admin_action", "audit", "identify",
           "new_admin_token", "token_hash"]


@dataclass(frozen=True, slots=True)
class AdminIdentity:
    name: str
    role: Role
    ip: str

    @property
    def actor(self) -> Actor:
        """The identity the use cases act for (``admin:<name>`` in the audit log)."""
        return Actor("admin", self.name, self.role, self.ip)

    def entry(self, action: AdminAction | str, target: str, before: Any,
              after: Any) -> accounts_db.AuditEntry:
        r = self.actor.record(str(action), target, before, after)
        return accounts_db.AuditEntry(r.actor, r.role, r.action, r.target, r.before, r.after,
                                      r.ip)


token_hash = admin_token_hash


async def identify(request: Request) -> AdminIdentity:
    """The admin behind the request's bearer token.

    Raises:
        ApiError: -2015 (401) without a valid admin token.
    """
    c = ctx(request)
    given = bearer_token(request)
    if given is None or len(given) > 256:
        raise _unauthorized()
    ip = request_ip(request)
    bootstrap = c.settings.admin_token.get_secret_value()
    if hmac.compare_digest(given.encode(), bootstrap.encode()):
        return AdminIdentity(BOOTSTRAP, Role.SUPER_ADMIN, ip)
    found = await accounts_db.admin_by_token(c.pool, token_hash(given))
    if found is None:
        raise _unauthorized()
    return AdminIdentity(found[0], Role(found[1]), ip)


def admin_action(action: AdminAction) -> Callable[[Request], Awaitable[AdminIdentity]]:
    """FastAPI dependency: the admin, if their role may take ``action``.

    Raises:
        ApiError: 401 no admin, 403 the role may not.
    """

    async def dependency(request: Request) -> AdminIdentity:
        who = await identify(request)
        if not allowed(who.role, action):
            raise errors.ApiError(-2015, f"Role {who.role} may not {action}.", 403)
        return who

    dependency.__name__ = f"admin_{action.name.lower()}"
    return dependency


async def audit(pool_or_con: db.Pool | db.Conn, who: AdminIdentity, action: AdminAction | str,
                target: str, before: Any, after: Any) -> None:
    """Append one audit record (inside the caller's transaction when given one), for the
    admin actions not yet behind a use case (withdrawal approvals, freezes)."""
    await accounts_db.append_audit(pool_or_con, who.entry(action, target, before, after))


def _unauthorized() -> errors.ApiError:
    return errors.ApiError(-2015, "Invalid admin token.", 401)
