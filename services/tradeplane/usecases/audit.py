"""Who acts and the record each change leaves in the append-only audit log."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Any, Protocol

from tradeplane.domain.access import Role


@dataclass(frozen=True, slots=True)
class AuditRecord:
    actor: str
    role: str
    action: str
    target: str
    before: Any
    after: Any
    ip: str


@dataclass(frozen=True, slots=True)
class Actor:
    """An identity the use cases act for: an admin behind the admin API (``kind``
    "admin"), the operating-system user running the CLI (``kind`` "cli": whoever holds
    the database credentials holds every power, hence SuperAdmin, and ``ip`` "cli"), or a
    user acting on their own account (``kind`` "user", role :data:`USER_ROLE`)."""

    kind: str
    name: str
    #: An admin :class:`Role`, or :data:`USER_ROLE`.
    role: str
    ip: str

    @property
    def label(self) -> str:
        """As the audit log names the actor: ``admin:<name>`` or ``cli:<os user>``."""
        return f"{self.kind}:{self.name}"

    def record(self, action: str, target: str, before: Any, after: Any) -> AuditRecord:
        return AuditRecord(self.label, str(self.role), str(action), target, before, after,
                           self.ip)


#: The role a user's own changes are recorded with.
USER_ROLE = "User"


def user_actor(user_id: int, ip: str) -> Actor:
    """A user acting on their own account (``user:<id>`` in the audit log)."""
    return Actor("user", str(user_id), USER_ROLE, ip)


def cli_actor() -> Actor:
    """The CLI's identity: the operating-system user running it, as SuperAdmin."""
    return Actor("cli", getpass.getuser(), Role.SUPER_ADMIN, "cli")


class AuditLog(Protocol):
    """Append-only; inside the caller's transaction when the store has one."""

    async def audit(self, record: AuditRecord) -> None: ...
