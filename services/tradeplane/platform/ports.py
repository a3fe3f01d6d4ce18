"""Which TCP ports the local platform may listen on.

A port counts as free only when it can be bound on every local address a listener of ours
or of another program could hold it on: 127.0.0.1, the IPv4 wildcard, and ::1 and the
IPv6 wildcard where the machine has IPv6. A server on 0.0.0.0, on another loopback address
(127.0.0.2) or on [::] takes the port from us as surely as one on 127.0.0.1: our listener
would fail to bind, or clients of "localhost" would reach the other program.
"""

from __future__ import annotations

import errno
import socket

__all__ = ["HOST", "free_port", "port_is_free"]

HOST = "127.0.0.1"
"""Where every local listener binds."""

_PROBES: tuple[tuple[socket.AddressFamily, str], ...] = (
    (socket.AF_INET, HOST),
    (socket.AF_INET, "0.0.0.0"),
    (socket.AF_INET6, "::1"),
    (socket.AF_INET6, "::"),
)
# Errors that mean "this machine has no such address" (no IPv6), not "taken".
_NO_ADDRESS = (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)


def port_is_free(port: int) -> bool:
    """True when ``port`` can be bound on every local address (see the module's docstring).

    SO_REUSEADDR is set as our servers set it, so a port held only by connections in
    TIME_WAIT counts as free, while any listener on an overlapping address does not.

    Raises:
        PermissionError: binding the port needs privileges we lack (below 1024).
    """
    for family, address in _PROBES:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            if exc.errno in _NO_ADDRESS:
                continue
            raise
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return False
                if exc.errno in _NO_ADDRESS:
                    continue
                raise
    return True


def free_port(avoid: frozenset[int] = frozenset()) -> int:
    """A TCP port free on every local address right now (the OS proposes, we check).

    Raises:
        OSError: no free port found after many tries (the ephemeral range is exhausted).
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port not in avoid and port_is_free(port):
            return port
    raise OSError(errno.EADDRINUSE, "no free TCP port found on the local addresses")
