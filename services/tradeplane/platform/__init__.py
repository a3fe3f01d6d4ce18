"""The local platform: real NATS, PostgreSQL and Redis servers for development and tests.

Started from pip wheels by :mod:`tradeplane.platform.servers`; nothing runs on import.
"""

from tradeplane.platform.servers import (
    LocalServers,
    NatsCluster,
    NatsServer,
    PostgresServer,
    RedisServer,
    ServerStartError,
    free_port,
)

__all__ = [
    "LocalServers",
    "NatsCluster",
    "NatsServer",
    "PostgresServer",
    "RedisServer",
    "ServerStartError",
    "free_port",
]
