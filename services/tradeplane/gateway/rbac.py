"""Admin identities, the permission check on every admin endpoint, and the audit log.

An admin presents ``Authorization: Bearer <token>`` (the scheme in any case; a token
without it is refused). Tokens of admin users (``tradeplane
admin-create NAME --role ROLE``) are stored as SHA-256 hashes and looked up by hash; the
configured ``TRADEPLANE_ADMIN_TOKEN`` is the break-glass identity "bootstrap" with the
SuperAdmin role (compared in constant time). Each endpoint names one
:class:`~tradeplane.domain.access.AdminAction`; the role must be allowed it by
:data:`~tradeplane.domain.access.PERMISSION_MATRIX`, or the answer is 403.

Identities are read through the accounts use case (``usecases/accounts.py``) the gateway
composed; every change an admin makes is recorded by the use case that makes it.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request

from tradeplane.domain.access import AdminAction, Role, allowed
from tradeplane.gateway import errors
from tradeplane.gateway.auth import request_ip
from tradeplane.gateway.context import gateway
from tradeplane.gateway.users import bearer_token
from tradeplane.usecases.accounts import ADMIN_TOKEN_PREFIX as TOKEN_PREFIX
from tradeplane.usecases.accounts import BOOTSTRAP, admin_token_hash, new_admin_token
from tradeplane.usecases.audit import Actor

__all__ = ["BOOTSTRAP", "TOKEN_PREFIX", "AdminIdentity", "admin_action", "identify",
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


token_hash = admin_token_hash


async def identify(request: Request) -> AdminIdentity:
    """The admin behind the request's bearer token.

    Raises:
        ApiError: -2015 (401) without a valid admin token.
    """
    gw = gateway(request.app)
    given = bearer_token(request)
    if given is None or len(given) > 256:
        raise _unauthorized()
    ip = request_ip(request)
    bootstrap = gw.ctx.settings.admin_token.get_secret_value()
    if hmac.compare_digest(given.encode(), bootstrap.encode()):
        return AdminIdentity(BOOTSTRAP, Role.SUPER_ADMIN, ip)
    found = await gw.controls.account_cases.admin_of_token(given)
    if found is None:
        raise _unauthorized()
    return AdminIdentity(found[0], found[1], ip)


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


def _unauthorized() -> errors.ApiError:
    return errors.ApiError(-2015, "Invalid admin token.", 401)
