"""Shared fixtures. Each section is one concern; fixtures start nothing until a test asks."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from tests.support.chains import LitecoinNode, MoneroNodes, running_litecoind, running_monero
from tests.support.containers import BuildFigures, build_image, docker_unavailable
from tests.support.harness import Platform, running_platform
from tests.support.k8s_emulator import RunningEmulator, running_emulator

from tradeplane.platform.servers import LocalServers

# --------------------------------------------------------------------------------------
# Property-test budgets. CI runs the fixed, derandomized "ci" budget; a deeper random
# search is one flag away: pytest tests/unit/test_book_properties.py --hypothesis-profile=long
# --------------------------------------------------------------------------------------
_PROPERTY_SETTINGS = {
    "database": None,
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("ci", max_examples=250, derandomize=True, **_PROPERTY_SETTINGS)
settings.register_profile("long", max_examples=5_000, **_PROPERTY_SETTINGS)
settings.load_profile("ci")

# --------------------------------------------------------------------------------------
# Local servers: real NATS (JetStream), PostgreSQL and Redis from the pip wheels.
# Started once per session, on free ports in a temporary folder, and only when a test
# (or a fixture it uses) requests one of these fixtures, so unit tests stay fast.
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def local_servers() -> Iterator[LocalServers]:
    # Not under pytest's tmp tree: pytest resets its folders to 0700 when another session
    # starts, which would lock PostgreSQL's unprivileged user out of its data mid-run.
    with data_folder("tp-servers-") as folder, LocalServers(folder) as servers:
        yield servers


@contextlib.contextmanager
def data_folder(prefix: str) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def nats_url(local_servers: LocalServers) -> str:
    return local_servers.nats_url


@pytest.fixture(scope="session")
def pg_url(local_servers: LocalServers) -> str:
    return local_servers.pg_url


@pytest.fixture(scope="session")
def redis_url(local_servers: LocalServers) -> str:
    return local_servers.redis_url


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A fresh folder for a test's own servers (outside pytest's tmp tree, see above)."""
    with data_folder("tp-test-") as folder:
        yield folder


# --------------------------------------------------------------------------------------
# The whole platform in-process (tests/support/harness.py), one per test module: each
# module starts from a fresh database, empty streams and an empty cache.
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def plat(nats_url: str, pg_url: str, redis_url: str) -> AsyncIterator[Platform]:
    async with running_platform(nats_url, pg_url, redis_url) as p:
        yield p


@pytest.fixture(scope="module")
def k8s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    """A Kubernetes API emulator (kmock) with our CRDs, for the operator's tests."""
    with running_emulator(tmp_path_factory.mktemp("k8s")) as emu:
        yield emu


# --------------------------------------------------------------------------------------
# Regtest chain nodes (tests/support/chains.py) from Debian's litecoind and monero
# packages, once per session and only when requested. A missing binary fails the test
# with the package to install. Tests share the nodes: use your own wallet
# (litecoin_node.create_wallet()) or account (monero_nodes.create_account()) and fresh
# exchange account ids, and undo any reorg you make (reconsiderblock).
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def litecoin_node() -> Iterator[LitecoinNode]:
    """litecoind -regtest: wallets ``hot`` (the exchange's) and ``payer`` (mined to)."""
    with data_folder("tp-ltc-") as folder, running_litecoind(folder) as node:
        yield node


@pytest.fixture(scope="session")
def monero_nodes() -> Iterator[MoneroNodes]:
    """monerod --regtest and two monero-wallet-rpc: ``hot`` (the exchange's) and ``payer``."""
    with data_folder("tp-xmr-") as folder, running_monero(folder) as nodes:
        yield nodes


# --------------------------------------------------------------------------------------
# The tradeplane image (tests/support/containers.py), built once per session from the
# Dockerfile on a debootstrapped Debian base, only when a test asks for it. Without a
# running dockerd the tests that need it are skipped, saying why.
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def image_build() -> tuple[str, BuildFigures]:
    """The image's tag and how long building it took."""
    if reason := docker_unavailable():
        pytest.skip(reason)
    figures = BuildFigures()
    return build_image(figures), figures


@pytest.fixture(scope="session")
def tradeplane_image(image_build: tuple[str, BuildFigures]) -> str:
    return image_build[0]
