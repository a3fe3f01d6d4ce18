"""Shared fixtures. Each section is one concern; fixtures start nothing until a test asks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tradeplane.platform.servers import LocalServers

# --------------------------------------------------------------------------------------
# Local servers: real NATS (JetStream), PostgreSQL and Redis from the pip wheels.
# Started once per session, on free ports in a temporary folder, and only when a test
# (or a fixture it uses) requests one of these fixtures, so unit tests stay fast.
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def local_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServers]:
    with LocalServers(tmp_path_factory.mktemp("servers")) as servers:
        yield servers


@pytest.fixture(scope="session")
def nats_url(local_servers: LocalServers) -> str:
    return local_servers.nats_url


@pytest.fixture(scope="session")
def pg_url(local_servers: LocalServers) -> str:
    return local_servers.pg_url


@pytest.fixture(scope="session")
def redis_url(local_servers: LocalServers) -> str:
    return local_servers.redis_url
