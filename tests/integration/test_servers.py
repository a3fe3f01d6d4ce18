"""The local servers really work: JetStream, PostgreSQL and Redis, and data survives restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import nats
import pytest
import redis.asyncio as aioredis
from nats.js.api import ConsumerConfig

from tradeplane.adapters.bus import Bus, BusUnavailable
from tradeplane.platform.servers import (
    LocalServers,
    NatsCluster,
    NatsServer,
    PostgresServer,
    RedisServer,
    ServerStartError,
)
from tradeplane.platform.supervisor import RestartPolicy, Supervisor

pytestmark = pytest.mark.integration


async def test_jetstream_publish_fetch_ack(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="SMOKE", subjects=["smoke.>"])
        ack = await js.publish("smoke.one", b"hello")
        assert (ack.stream, ack.seq) == ("SMOKE", 1)

        sub = await js.pull_subscribe("smoke.>", durable="reader", stream="SMOKE")
        [msg] = await sub.fetch(1, timeout=5)
        assert msg.data == b"hello"
        await msg.ack_sync()

        info = await js.consumer_info("SMOKE", "reader")
        assert (info.num_pending, info.num_ack_pending) == (0, 0)
    finally:
        await nc.close()


async def test_nats_accepts_8mb_payloads(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        assert nc.max_payload == 8 * 1024 * 1024
    finally:
        await nc.close()


async def test_postgres_query(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT current_database()") == "tradeplane"
        assert await conn.fetchval("SHOW fsync") == "on"
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        assert await conn.fetchval("SHOW max_connections") == "200"
        version = await conn.fetchval("SHOW server_version_num")
        assert int(version) >= 170000
    finally:
        await conn.close()


_REFUSED = (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)


async def test_postgres_refuses_connections_without_the_password(
    local_servers: LocalServers,
) -> None:
    pg = local_servers.postgres
    password = urlsplit(pg.url).password
    assert password and len(password) >= 32
    assert stat.S_IMODE(pg.password_file.stat().st_mode) == 0o600
    no_password = f"postgresql://postgres@127.0.0.1:{pg.port}/tradeplane"
    for kwargs in ({}, {"password": ""}, {"password": "wrong"}):
        with pytest.raises(_REFUSED):
            await asyncpg.connect(no_password, **kwargs)
    # The Unix socket too (peer or trust there would let any local user in).
    with pytest.raises(_REFUSED):
        await asyncpg.connect(host=str(pg.socket_dir), port=pg.port, user="postgres",
                              database="tradeplane")
    conn = await asyncpg.connect(host=str(pg.socket_dir), port=pg.port, user="postgres",
                                 database="tradeplane", password=password)
    await conn.close()


async def test_a_cluster_made_before_passwords_is_locked_on_its_next_start(
    data_dir: Path,
) -> None:
    # The layout before passwords: initdb --auth=trust, no password file.
    server = PostgresServer(data_dir)
    server.start()
    try:
        conn = await asyncpg.connect(server.url)
        await conn.execute("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('old')")
        await conn.close()
    finally:
        server.stop()
    (data_dir / "pgdata" / "pg_hba.conf").write_text(
        "local all all trust\nhost all all 127.0.0.1/32 trust\n")
    (data_dir / "password").unlink()

    again = PostgresServer(data_dir, port=server.port)
    again.start()
    try:
        assert again.password_file.exists()
        with pytest.raises(_REFUSED):
            await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{again.port}/tradeplane")
        conn = await asyncpg.connect(again.url)
        try:
            assert await conn.fetchval("SELECT note FROM kept") == "old"
        finally:
            await conn.close()
    finally:
        again.stop()


async def test_redis_ping_set_get(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.ping()
        await client.set("smoke", "value")
        assert await client.get("smoke") == b"value"
    finally:
        await client.aclose()


async def test_data_survives_restart(data_dir: Path) -> None:
    servers = LocalServers(data_dir)
    with servers:
        urls = (servers.nats_url, servers.pg_url, servers.redis_url)
        await _write_one_of_each(servers)

    with LocalServers(data_dir) as again:
        assert (again.nats_url, again.pg_url, again.redis_url) == urls
        await _read_one_of_each(again)


async def _write_one_of_each(servers: LocalServers) -> None:
    conn = await asyncpg.connect(servers.pg_url)
    try:
        await conn.execute("CREATE TABLE kept (id int PRIMARY KEY, note text)")
        await conn.execute("INSERT INTO kept VALUES (1, 'survives')")
    finally:
        await conn.close()

    nc = await nats.connect(servers.nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="KEPT", subjects=["kept.>"])
        await js.publish("kept.one", b"survives")
    finally:
        await nc.close()

    client = aioredis.Redis.from_url(servers.redis_url)
    try:
        await client.set("kept", "survives")
    finally:
        await client.aclose()


async def _read_one_of_each(servers: LocalServers) -> None:
    conn = await asyncpg.connect(servers.pg_url)
    try:
        assert await conn.fetchval("SELECT note FROM kept WHERE id = 1") == "survives"
    finally:
        await conn.close()

    nc = await nats.connect(servers.nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            "kept.>", durable="reader", stream="KEPT", config=ConsumerConfig()
        )
        [msg] = await sub.fetch(1, timeout=5)
        assert (msg.subject, msg.data) == ("kept.one", b"survives")
        await msg.ack_sync()
    finally:
        await nc.close()

    client = aioredis.Redis.from_url(servers.redis_url)
    try:
        assert await client.get("kept") == b"survives"
    finally:
        await client.aclose()


def test_start_failure_reports_log_tail(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, max_payload="lots", start_timeout=10)
    expected = r"(?s)nats on port \d+ exited with code 1.*nats\.conf:4"  # the log's tail
    with pytest.raises(ServerStartError, match=expected):
        server.start()
    assert server.pid is None


def test_start_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = RedisServer(tmp_path, port=busy.getsockname()[1])
        with pytest.raises(ServerStartError, match="already in use"):
            server.start()
    assert server.pid is None


def test_start_refuses_a_port_taken_on_another_local_address(tmp_path: Path) -> None:
    # Our server would bind 127.0.0.1 and start, but clients of the port on other local
    # addresses would reach the other program.
    with socket.socket() as busy:
        busy.bind(("127.0.0.2", 0))
        busy.listen()
        server = RedisServer(tmp_path, port=busy.getsockname()[1])
        with pytest.raises(ServerStartError, match="already in use"):
            server.start()
    assert server.pid is None


def test_a_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from tradeplane.platform.servers import RedisServer\n"
         "server = RedisServer(sys.argv[1])\n"
         "server.start()\n"
         "print(server.pid, flush=True)\n"
         "time.sleep(60)\n",
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert owner.stdout is not None
        pid = int(owner.stdout.readline())
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 15
    while _running(pid):
        assert time.monotonic() < deadline, "redis-server outlived the process that started it"
        time.sleep(0.05)


def test_the_supervisor_restarts_a_server_that_died(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    supervisor = Supervisor(tmp_path / "logs", RestartPolicy(first_delay=0),
                            report=lambda _line: None)
    supervisor.adopt(server)
    supervisor.running()
    try:
        first = server.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while server.pid in (None, first):
            assert time.monotonic() < deadline, "not restarted"
            supervisor.poll()
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
            conn.sendall(b"PING\r\n")
            assert conn.recv(64) == b"+PONG\r\n"
    finally:
        supervisor.stop()
    assert server.pid is None


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_a_three_node_cluster_keeps_a_replicated_stream_through_its_leader_s_kill(
    tmp_path: Path,
) -> None:
    cluster = NatsCluster(tmp_path / "cluster")
    await asyncio.to_thread(cluster.start)
    try:
        bus = await Bus.connect(cluster.url, name="test", replicas=3)  # every node's URL
        try:
            await bus.ensure_symbol("TESTUSDT")
            assert await bus.publish_command("TESTUSDT", b"one", "m1") == 1
            leader = (await bus.stream_leaders())["CMD_TESTUSDT"]
            assert leader is not None
            node = cluster.node(leader)
            assert node.pid is not None and node.healthy()
            os.kill(node.pid, signal.SIGKILL)

            deadline = time.monotonic() + 30
            while True:  # the two left elect a leader; the client moves over if need be
                try:
                    seq = await bus.publish_command("TESTUSDT", b"two", "m2")
                    break
                except BusUnavailable:
                    assert time.monotonic() < deadline, "no leader elected in 30 s"
                    await asyncio.sleep(0.2)
            assert seq == 2
            while True:  # listing streams asks the meta group, which may be electing too
                try:
                    leaders = await bus.stream_leaders()
                    break
                except BusUnavailable:
                    assert time.monotonic() < deadline, "no stream list in 30 s"
                    await asyncio.sleep(0.2)
            assert leaders["CMD_TESTUSDT"] not in (None, leader)

            await asyncio.to_thread(cluster.restart, node)  # on its store; caught up
            assert node.healthy()
            assert await bus.last_command_seq("TESTUSDT") == 2
        finally:
            await bus.close()
    finally:
        cluster.stop()
    assert all(n.pid is None for n in cluster.nodes)
