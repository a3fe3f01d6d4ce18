"""Who may do what: API-key permissions and restrictions, admin roles and their one
permission matrix, the client address behind trusted proxies. Pure: no I/O, time passed in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# --------------------------------------------------------------------------- API keys
#: What a key may be used for: reading account data, trading, withdrawing funds,
#: converting one asset into another (``/sapi/v1/convert``), making and moving escrowed
#: deals (``/sapi/v1/escrow``: a release gives funds to another account).
KEY_PERMISSIONS: Final = frozenset({"read", "trade", "withdraw", "convert", "escrow"})
#: Most addresses one key's allow-list may hold.
MAX_ALLOWED_NETWORKS: Final = 30


class KeyType(StrEnum):
    HMAC_SHA256 = "HMAC_SHA256"
    ED25519 = "ED25519"


class KeyRefusal(StrEnum):
    """Why a correctly signed request is refused (answered as Binance's -2015)."""

    PERMISSION = "permission"
    IP = "ip"
    EXPIRED = "expired"
    FROZEN = "frozen"


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """The restrictions a key carries."""

    perms: frozenset[str]
    networks: tuple[IpNetwork, ...] = ()  # empty = any address
    expires_ms: int = 0  # 0 = never
    frozen: bool = False  # the account is frozen


#: Permissions a frozen account keeps.
FROZEN_KEEPS: Final = frozenset({"read"})


def key_refusal(policy: KeyPolicy, permission: str, ip: str, now_ms: int) -> KeyRefusal | None:
    """Why ``policy`` refuses a request needing ``permission`` from ``ip`` at ``now_ms``,
    or None when it is allowed. An unknown or unparsable address never passes an
    allow-list."""
    if policy.expires_ms and now_ms >= policy.expires_ms:
        return KeyRefusal.EXPIRED
    if permission not in policy.perms:
        return KeyRefusal.PERMISSION
    if policy.frozen and permission not in FROZEN_KEEPS:
        return KeyRefusal.FROZEN
    if policy.networks and not ip_allowed(ip, policy.networks):
        return KeyRefusal.IP
    return None


def check_permissions(perms: Iterable[str]) -> list[str]:
    """The permissions, sorted and deduplicated.

    Raises:
        ValueError: none given, or one that is not read/trade/withdraw/convert/escrow.
    """
    given = sorted(set(perms))
    bad = [p for p in given if p not in KEY_PERMISSIONS]
    if bad or not given:
        raise ValueError(f"permissions must be some of read, trade, withdraw, convert, escrow;"
                         f" got {given}")
    return given


def parse_networks(texts: Iterable[str]) -> tuple[IpNetwork, ...]:
    """``["203.0.113.7", "10.0.0.0/8"]`` as networks (a bare address is a /32 or /128).

    Raises:
        ValueError: a text is not an address or network, or there are too many.
    """
    out: list[IpNetwork] = []
    for text in texts:
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {text!r}") from None
    if len(out) > MAX_ALLOWED_NETWORKS:
        raise ValueError(f"at most {MAX_ALLOWED_NETWORKS} addresses per key")
    return tuple(out)


def ip_allowed(ip: str, networks: Sequence[IpNetwork]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in networks)


def client_ip(peer: str, forwarded_for: str, trusted: Sequence[IpNetwork]) -> str:
    """The client's address: the connection's peer, unless the peer is a trusted proxy;
    then the right-most address of ``X-Forwarded-For`` that is not itself a trusted
    proxy (the left part of that header is whatever the client claimed)."""
    if not trusted or not forwarded_for or not ip_allowed(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not ip_allowed(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a malformed hop: trust nothing the proxy chain said
    return hops[0] if hops else peer


# --------------------------------------------------------------------------- admin roles
class Role(StrEnum):
    SUPER_ADMIN = "SuperAdmin"
    OPERATOR = "Operator"
    SUPPORT = "Support"
    AUDITOR = "Auditor"


class AdminAction(StrEnum):
    """Every admin endpoint is guarded by exactly one of these."""

    ACCOUNT_CREATE = "account.create"
    ACCOUNT_CREDIT = "account.credit"
    USER_READ = "user.read"
    USER_FREEZE = "user.freeze"
    USER_UNFREEZE = "user.unfreeze"
    APIKEY_CREATE = "apikey.create"
    APIKEY_READ = "apikey.read"
    APIKEY_REVOKE = "apikey.revoke"
    PAIR_TRADING = "pair.trading"
    PAIR_FEES = "pair.fees"
    KILL_SWITCH = "killswitch.set"
    KILL_SWITCH_READ = "killswitch.read"
    WITHDRAWAL_READ = "withdrawal.read"
    WITHDRAWAL_APPROVE = "withdrawal.approve"
    WITHDRAWAL_WHITELIST = "withdrawal.whitelist"
    AUDIT_READ = "audit.read"
    ADMIN_CREATE = "admin.create"
    HEALTH_READ = "health.read"
    ESCROW_READ = "escrow.read"
    ESCROW_RESOLVE = "escrow.resolve"


_ALL: Final = frozenset(Role)
_SA: Final = frozenset({Role.SUPER_ADMIN})
_SA_OP: Final = frozenset({Role.SUPER_ADMIN, Role.OPERATOR})

#: THE permission matrix: which roles may take each admin action. Enforced server side on
#: every admin endpoint (tradeplane.gateway.rbac) and tested for every endpoint x role.
PERMISSION_MATRIX: Final[dict[AdminAction, frozenset[Role]]] = {
    AdminAction.ACCOUNT_CREATE: _SA_OP,
    AdminAction.ACCOUNT_CREDIT: _SA,
    AdminAction.USER_READ: _ALL,
    AdminAction.USER_FREEZE: frozenset({Role.SUPER_ADMIN, Role.OPERATOR, Role.SUPPORT}),
    AdminAction.USER_UNFREEZE: _SA_OP,
    AdminAction.APIKEY_CREATE: _SA_OP,
    AdminAction.APIKEY_READ: _ALL,
    AdminAction.APIKEY_REVOKE: frozenset({Role.SUPER_ADMIN, Role.OPERATOR, Role.SUPPORT}),
    AdminAction.PAIR_TRADING: _SA_OP,
    AdminAction.PAIR_FEES: _SA,
    AdminAction.KILL_SWITCH: _SA_OP,
    AdminAction.KILL_SWITCH_READ: _ALL,
    AdminAction.WITHDRAWAL_READ: _ALL,
    AdminAction.WITHDRAWAL_APPROVE: _SA_OP,
    AdminAction.WITHDRAWAL_WHITELIST: _SA_OP,
    AdminAction.AUDIT_READ: frozenset({Role.SUPER_ADMIN, Role.AUDITOR}),
    AdminAction.ADMIN_CREATE: _SA,
    AdminAction.HEALTH_READ: _ALL,
    AdminAction.ESCROW_READ: _ALL,
    AdminAction.ESCROW_RESOLVE: _SA_OP,
}


def allowed(role: Role, action: AdminAction) -> bool:
    return role in PERMISSION_MATRIX[action]


# --------------------------------------------------------------------------- bans
def ban_seconds(level: int, base_s: int, max_s: int) -> int:
    """How long the ``level``-th ban (1, 2, ...) in a row lasts: doubling from ``base_s``
    up to ``max_s`` (Binance: from 2 minutes up to 3 days)."""
    if level < 1:
        raise ValueError("ban levels start at 1")
    return int(min(max_s, base_s * 2 ** min(level - 1, 32)))
