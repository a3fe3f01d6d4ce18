"""The run: a local platform (embedded NATS, or three clustered NATS nodes, PostgreSQL and
Redis; an engine per symbol, or two with hot standby, settlement, market data and the
gateway as processes under the platform's supervisor), the load, the faults of the seeded
schedule, a check after each and a last one after a clean stop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

from tradeplane.chaos import clock, compose, custody, disk, slow
from tradeplane.chaos.load import MARKETS, Load, SignedHttp, Trader
from tradeplane.chaos.plan import ALL_FAULTS, CHAIN_FAULTS, OptionError, schedule
from tradeplane.chaos.report import Outcome, clean, say, table
from tradeplane.chaos.resources import Sampler
from tradeplane.domain.custody import WalletSpec
from tradeplane.domain.errors import Unavailable
from tradeplane.domain.pairs import DEMO_PAIRS
from tradeplane.platform.chains import ChainNodeError, LitecoindProcess, LitecoinNode
from tradeplane.platform.ports import HOST, free_port
from tradeplane.platform.servers import LocalServers, NatsServer, ServerStartError
from tradeplane.platform.supervisor import Command, RestartPolicy, Supervisor, SupervisorError

T = TypeVar("T")

#: The books the load trades (one engine each).
PAIRS = tuple(p for p in DEMO_PAIRS if p.symbol in {m.symbol for m in MARKETS})
#: How long the platform has to take and settle an order again after a fault.
RECOVERY_TIMEOUT_S = 60.0
#: What the supervisor gives a process to stop (``Command.stop_timeout``): a process that
#: takes longer to exit on SIGTERM fails the check.
GRACE_S = 15.0
_POLL_S = 0.1
#: Seconds between two samples of the processes' memory and descriptors.
SAMPLE_S = 5.0
#: How long pause-engine keeps the writer stopped: past its lease's TTL (3 s) and the
#: bus's timeouts (an event batch's publish waits 10 s), so that when it wakes every
#: deadline it had has passed.
PAUSE_S = 12.0
#: How long a killed NATS node stays down before it is started again on its store.
NODE_DOWN_S = 5.0
#: How long a woken writer has to notice that it was replaced and exit, and a restarted
#: NATS node to catch up (healthy: every replica it holds current).
SETTLE_S = 30.0
#: Nodes of the clustered bus (--nats-cluster), and its streams' replicas.
CLUSTER_NODES = 3
#: The rate limits, raised: the load speaks from one address as fast as it can.
_LIMITS = {"TRADEPLANE_IP_WEIGHT_PER_MINUTE": "10000000",
           "TRADEPLANE_KEY_WEIGHT_PER_MINUTE": "10000000",
           "TRADEPLANE_ORDERS_PER_10S": "1000000", "TRADEPLANE_ORDERS_PER_DAY": "100000000"}


@dataclass(frozen=True)
class Options:
    seed: int
    duration_s: float
    faults: tuple[str, ...]
    period_s: float = 20.0
    """Seconds between injections."""
    traders: int = 4
    workers: int = 4
    soak: bool = False
    """A soak: the same, and the processes' memory and descriptors and the stores'
    growth printed at the end (they are sampled on every run)."""
    data_dir: Path | None = None
    """Where the servers keep their data and the processes their logs; by default a
    temporary folder, removed after a clean run. Not under pytest's tmp tree (pytest
    resets it to 0700 when another session starts: PostgreSQL's unprivileged user is
    locked out)."""
    nats_cluster: bool = False
    """The bus as three clustered nats-server nodes, the streams with three replicas
    and every process given the three URLs (plan.CLUSTER_FAULTS need it)."""
    standby: bool | None = None
    """Each symbol's engine as two replicas with ``--standby`` (hot standby); None: when
    pause-engine is among the faults (it needs a standby to take over)."""

    chains: bool | None = None
    """A regtest litecoind, the exchange's wallet on it and its watcher, with deposits
    and withdrawals in the load (chaos/custody.py); None: when a chain fault is among
    the faults."""

    @property
    def with_chains(self) -> bool:
        return self.chains if self.chains is not None else any(
            f in CHAIN_FAULTS for f in self.faults)

    @property
    def engine_replicas(self) -> int:
        standby = self.standby if self.standby is not None else "pause-engine" in self.faults
        return 2 if standby else 1


#: How long :meth:`_Probe.ask` waits for an answer: more than the gateway's wait for
#: JetStream's acknowledgement (5 s, ``Bus.publish_command``), after which it says -1007.
ASK_TIMEOUT_S = 10.0
#: The probe's order per symbol: a bid 10% under the load's prices (price, quantity).
_PROBE = {"BTCUSDT": ("54000.00", "0.001"), "ETHUSDT": ("2700.00", "0.01")}


class _Probe:
    """A signed order placed again and again until the exchange has taken and settled one
    (its status is no longer PENDING_NEW): how recovery is measured."""

    def __init__(self, base: str, trader: Trader, load: Load) -> None:
        self.api = SignedHttp(base, trader)
        self.load = load

    def _signed(self, method: str, path: str, timeout: float = 3.0,
                **params: str | int) -> httpx.Response:
        return self.api.request(method, path, timeout, **params)

    def ask(self, symbol: str = "BTCUSDT") -> tuple[int, str]:
        """One order, once: the gateway's status and body (an acknowledged one is owed,
        and counted so); 0 and the error when no answer came."""
        price, qty = _PROBE[symbol]
        try:
            r = self._signed("POST", "/api/v3/order", symbol=symbol, side="BUY",
                             type="LIMIT", timeInForce="GTC", price=price, quantity=qty,
                             newOrderRespType="ACK", timeout=ASK_TIMEOUT_S)
            if r.status_code == 200:
                self.load.acked.add(int(r.json()["orderId"]))
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            return 0, f"{type(exc).__name__}: {exc}"
        return r.status_code, r.text

    def recovered(self, idle: Callable[[float], None], symbol: str = "BTCUSDT") -> bool:
        """True once an order on ``symbol`` was acknowledged and settled; False after the
        timeout."""
        price, qty = _PROBE[symbol]
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        oid: int | None = None
        while time.monotonic() < deadline:
            try:
                if oid is None:
                    r = self._signed("POST", "/api/v3/order", symbol=symbol, side="BUY",
                                     type="LIMIT", timeInForce="GTC", price=price,
                                     quantity=qty, newOrderRespType="ACK")
                    if r.status_code == 200:
                        oid = int(r.json()["orderId"])
                        self.load.acked.add(oid)
                else:
                    r = self._signed("GET", "/api/v3/order", symbol=symbol, orderId=oid)
                    if r.status_code == 200 and r.json()["status"] != "PENDING_NEW":
                        self._signed("DELETE", "/api/v3/order", symbol=symbol,
                                     orderId=oid)
                        return True
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            idle(0.1)
        return False


class Chaos:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.root = options.data_dir or Path(tempfile.mkdtemp(prefix="tradeplane-chaos-"))
        self.servers = LocalServers(
            self.root, nats_nodes=CLUSTER_NODES if options.nats_cluster else 1)
        #: Each symbol's engine processes (two with hot standby).
        self.engines: dict[str, list[str]] = {
            p.symbol: ([f"matching-{p.name}"] if options.engine_replicas == 1 else
                       [f"matching-{p.name}-{i + 1}" for i in range(options.engine_replicas)])
            for p in PAIRS}
        #: What is due later during an injection (``(monotonic time, action)``), run by
        #: :meth:`idle`: the SIGCONT of a paused engine, the restart of a NATS node.
        self._later: list[tuple[float, Callable[[], None]]] = []
        #: What must hold once the injection's effects are over (each returns problems).
        self._settles: list[Callable[[], list[str]]] = []
        #: When the fault struck (recovery is measured from it): when the injection
        #: began, or the moment of the kill or SIGSTOP when it first had to prepare (make
        #: a node lead nothing, find the writer).
        self.injected_at = time.monotonic()
        self.supervisor = Supervisor(
            self.root / "logs", RestartPolicy(first_delay=0.5, max_delay=4.0,
                                              max_crashes=10_000, window=60.0),
            report=lambda line: say(line.removeprefix("tradeplane: ")))
        self.outcomes: list[Outcome] = []
        self.base = ""
        self.stores: compose.Stores | None = None
        self.disk: disk.SmallFilesystem | None = None
        self.probe: _Probe | None = None
        self.figures: list[str] = []
        """Figures a fault measured beyond the table's (printed after it)."""
        self._freed_at: float | None = None
        self.sampler = Sampler()
        self._began = time.monotonic()
        self._sampled = 0.0
        self._sampling = False  # from when the platform is up: not its start-up
        #: With chains: the regtest network's node (the payer's, which mines) and the
        #: exchange's (the hot wallet's), their RPC as the main thread's, the load's
        #: deposits and withdrawals and the wallet's spec.
        self.network: LitecoindProcess | None = None
        self.litecoind: LitecoindProcess | None = None
        self.payer: LitecoinNode | None = None
        self.node: LitecoinNode | None = None
        self.chain_load: custody.ChainLoad | None = None
        self.wallet: WalletSpec | None = None

    # ------------------------------------------------------------------ the platform
    def idle(self, seconds: float) -> None:
        """Wait, restarting the children that exit meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            self.supervisor.poll()
            if self._sampling and time.monotonic() - self._sampled >= SAMPLE_S:
                self._sample()
            due = [a for a in self._later if a[0] <= time.monotonic()]
            for item in due:
                self._later.remove(item)
                item[1]()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(_POLL_S, left))

    def _sample(self) -> None:
        self._sampled = time.monotonic()
        pids: dict[str, int | None] = {
            c.name: c.pid for c in self.supervisor.children if isinstance(c, Command)}
        nodes = self.servers.nats_nodes
        for server in self.servers.servers:
            pids[server.name] = server.pid
        if len(nodes) > 1:
            pids.pop("nats", None)
            pids.update({f"nats-{i + 1}": node.pid for i, node in enumerate(nodes)})
        if self.litecoind is not None and self.network is not None:
            pids["litecoind"] = self.litecoind.pid
            pids["litecoind-network"] = self.network.pid
        self.sampler.sample(self._sampled - self._began, pids)

    def start(self) -> list[Trader]:
        say(f"data and logs in {self.root}")
        if "clock-skew" in self.options.faults and clock.libfaketime() is None:
            raise OptionError(f"clock-skew needs Debian's {clock.PACKAGE} (.ci/run "
                              "installs it)")
        if "disk-full" in self.options.faults:
            self.disk = disk.SmallFilesystem(
                self.root / "nats", disk.SOAK_SIZE_MB if self.options.soak else disk.SIZE_MB)
            self.disk.mount()
            say(f"the JetStream store on a {self.disk.size_mb} MiB tmpfs of its own")
        try:
            self.servers.start()
            if self.options.with_chains:
                self._start_chain()
        except BaseException:
            self.stop()
            raise
        secret_key = secrets.token_hex(32)
        traders = asyncio.run(compose.provision(self.servers.pg_url, secret_key, PAIRS,
                                                self.options.traders + 1,
                                                withdraw=self.options.with_chains))
        if self.node is not None:
            self.wallet = asyncio.run(compose.provision_wallet(
                self.servers.pg_url, custody.WALLET, custody.wallet_doc(self.node)))
        port = free_port()
        self.base = f"http://{HOST}:{port}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TRADEPLANE_")},
            **_LIMITS,
            "TRADEPLANE_DEV_MODE": "1",
            "TRADEPLANE_NATS_URL": self.servers.nats_url,
            "TRADEPLANE_DATABASE_URL": self.servers.pg_url,
            "TRADEPLANE_REDIS_URL": self.servers.redis_url,
            "TRADEPLANE_SECRET_KEY": secret_key,
            "TRADEPLANE_ADMIN_TOKEN": secrets.token_hex(32),
            "TRADEPLANE_JWT_SECRET": secrets.token_hex(32),
            "TRADEPLANE_HTTP_HOST": HOST,
            "TRADEPLANE_HTTP_PORT": str(port),
            "TRADEPLANE_METRICS_HOST": HOST,
            "TRADEPLANE_METRICS_PORT": "0",
            # Frequent snapshots: each check compares the latest with the replay.
            "TRADEPLANE_SNAPSHOT_EVERY": "200",
            "TRADEPLANE_STREAM_REPLICAS": str(len(self.servers.nats_nodes)),
        }
        standby = ("--standby",) if self.options.engine_replicas > 1 else ()
        for pair in PAIRS:
            for name in self.engines[pair.symbol]:
                self._add(name, env, "matching", "--symbol", pair.name, *standby)
                if standby:  # the first replica takes the lease, the others stand by
                    self._wait_writer(pair.symbol)
        self._add("settlement", env, "settlement")
        self._add("marketdata", env, "marketdata")
        if self.node is not None:
            self._add(custody.PROCESS, {**env, **custody.watcher_env(self.node)},
                      "wallet-watcher", "--wallet", custody.WALLET)
        self._add("gateway", env, "gateway")
        deadline = time.monotonic() + 60
        while not self._answers():
            if time.monotonic() > deadline:
                raise SupervisorError(f"the gateway did not answer on {self.base}")
            self.idle(0.2)
        self.supervisor.running()
        self._began = time.monotonic()
        self._sampling = True
        self.stores = compose.Stores(self.servers.nats_url, self.servers.pg_url,
                                     self.servers.redis_url, PAIRS)
        return traders

    def _start_chain(self) -> None:
        """The network's litecoind, then the exchange's as its peer, at its tip.

        Raises:
            ChainNodeError: one did not start, or did not sync within 60 s.
        """
        p2p = free_port()
        self.network = LitecoindProcess(self.root / "litecoin-network", p2p_port=p2p)
        self.payer = self.network.start()
        self.litecoind = LitecoindProcess(self.root / "litecoin", peer=f"{HOST}:{p2p}")
        self.node = self.litecoind.start()
        deadline = time.monotonic() + 60
        while self.node.height() != self.payer.height():
            if time.monotonic() >= deadline:
                raise ChainNodeError("the exchange's litecoind did not sync with the "
                                     "network's within 60 s")
            time.sleep(0.1)
        say(f"litecoind (regtest): the network's on {self.payer.url}, the exchange's "
             f"on {self.node.url}")

    def _add(self, name: str, env: dict[str, str], *args: str) -> None:
        self.supervisor.add(name, [sys.executable, "-m", "tradeplane.cli", *args], env)

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.base}/api/v3/ping", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    def command(self, name: str) -> Command:
        found = next(c for c in self.supervisor.children if c.name == name)
        assert isinstance(found, Command)
        return found

    def stop(self) -> None:
        self.supervisor.stop()
        for node in (self.litecoind, self.network):
            if node is not None:
                node.stop()
        self.servers.stop()
        if self.disk is not None:
            self.disk.unmount()

    # ------------------------------------------------------------------ the faults
    def _kill(self, name: str) -> None:
        pid = self.command(name).pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)

    def _kill_nats(self) -> None:
        pid = self.servers.nats.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        self._wait_exit(self.servers.nats.returncode)

    def _wait_exit(self, returncode: Callable[[], int | None]) -> None:
        deadline = time.monotonic() + 30
        while returncode() is None and time.monotonic() < deadline:
            self.idle(0.05)

    def _writer(self, symbol: str) -> str | None:
        """The engine process holding the symbol's lease (hot standby), by the pid its
        holder name carries (``host:pid:tag``); None when nobody holds it."""
        stores = compose.Stores(self.servers.nats_url, "", "", PAIRS)
        try:
            holder = asyncio.run(compose.lease_holder(stores, symbol))
        except Unavailable:
            return None
        pid = holder.split(":")[-2] if holder and holder.count(":") >= 2 else ""
        return next((n for n in self.engines[symbol]
                     if pid.isdigit() and self.command(n).pid == int(pid)), None)

    def _wait_writer(self, symbol: str, timeout: float = 60.0) -> str:
        """Wait until one of the symbol's engines holds its lease; its process name.

        Raises:
            SupervisorError: none did within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            name = self._writer(symbol)
            if name is not None:
                return name
            self.idle(0.2)
        raise SupervisorError(f"no engine of {symbol} took its lease within {timeout:g} s")

    def _pause_engine(self, symbol: str) -> list[str]:
        """SIGSTOP the symbol's writer; SIGCONT it PAUSE_S later. Once woken it must find
        itself replaced and exit (NotWriter), and the supervisor start it again."""
        name = self._writer(symbol)
        if name is None:
            return [f"{symbol}: no engine held the lease to pause"]
        command = self.command(name)
        pid, starts = command.pid, command.starts
        assert pid is not None
        self.injected_at = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        say(f"  {name} (pid {pid}, the writer) stopped for {PAUSE_S:g} s")
        woken: list[float] = []

        def wake() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            woken.append(time.monotonic())

        def stepped_down() -> list[str]:
            deadline = time.monotonic() + SETTLE_S
            while command.starts == starts and command.pid == pid:
                if time.monotonic() >= deadline:
                    return [f"{name}: still running {SETTLE_S:g} s after it woke from "
                            "its pause, though another engine had taken its lease"]
                self.idle(0.05)
            say(f"  {name} exited {time.monotonic() - woken[0]:.2f} s after it woke "
                 f"(code {command.returncode()}); restarted as a standby")
            return []

        self._later.append((time.monotonic() + PAUSE_S, wake))
        self._settles.append(stepped_down)
        return []

    def _kill_node(self, node: NatsServer, why: str) -> list[str]:
        """kill -9 of one NATS node; started again on its store NODE_DOWN_S later, and it
        must catch up (healthy) within SETTLE_S."""
        self.injected_at = time.monotonic()
        if node.pid is not None:
            os.kill(node.pid, signal.SIGKILL)
        self._wait_exit(node.returncode)
        say(f"  NATS node {node.server_name} ({why}) killed; back in {NODE_DOWN_S:g} s")
        problems: list[str] = []
        restarted: list[float] = []

        def restart() -> None:
            restarted.append(time.monotonic())
            try:
                node.start()
            except ServerStartError as exc:
                problems.append(f"NATS node {node.server_name} did not start again: {exc}")

        def caught_up() -> list[str]:
            deadline = time.monotonic() + SETTLE_S
            while not problems and not node.healthy():
                if time.monotonic() >= deadline:
                    return [f"NATS node {node.server_name} not caught up {SETTLE_S:g} s "
                            "after its restart"]
                self.idle(0.1)
            if not problems:
                say(f"  NATS node {node.server_name} caught up "
                     f"{time.monotonic() - restarted[0]:.2f} s after its restart")
            return problems

        self._later.append((time.monotonic() + NODE_DOWN_S, restart))
        self._settles.append(caught_up)
        return []

    def _leaders(self) -> dict[str, str | None]:
        """The server leading each stream, once every one has a leader (30 s at most)."""
        assert self.stores is not None
        deadline = time.monotonic() + 30
        while True:
            try:
                leaders = asyncio.run(compose.stream_leaders(self.stores))
            except Unavailable:
                leaders = {"": None}
            if all(leaders.values()) or time.monotonic() >= deadline:
                return leaders
            self.idle(0.2)

    def _follower(self) -> tuple[NatsServer, list[str]]:
        """A node (the seed's choice) made a follower of everything: not the meta group's
        leader (which steps down for the system account only, so it is not chosen), and
        each stream leader it holds asked to step down (a new one is elected among the
        others at once), again if the election falls on it. Returns it and what it still
        leads after ten rounds."""
        assert self.stores is not None
        cluster = self.servers.nats_cluster
        assert cluster is not None
        meta = next((m for m in (n.meta_leader() for n in cluster.nodes) if m), None)
        node = self.rng.choice([n for n in cluster.nodes if n.server_name != meta])
        led: list[str] = []
        for _ in range(10):
            led = [s for s, lead in self._leaders().items() if lead == node.server_name]
            if not led:
                break
            try:
                asyncio.run(compose.step_down(self.stores, led))
            except Unavailable as exc:
                say(f"  step down refused: {exc}")
            self.idle(0.5)
        return node, led

    def settle(self) -> list[str]:
        """Run what is still due of the last injection (waiting for it), then what must
        hold once its effects are over; the problems found."""
        while self._later:
            self.idle(max(0.0, min(t for t, _ in self._later) - time.monotonic()))
        settles, self._settles = self._settles, []
        return [p for settle in settles for p in settle()]

    def inject(self, fault: str) -> tuple[str, list[str]]:
        """Inject ``fault`` and heal what a supervisor would not (the servers), now or
        later (:meth:`settle`). Returns the symbol whose orders show the recovery (the
        killed or paused engine's, the killed stream leader's), and the problems the
        injection found itself (a process slow to stop)."""
        problems: list[str] = []
        symbol = "BTCUSDT"
        if fault == "kill-engine":
            pair = self.rng.choice(PAIRS)
            symbol = pair.symbol
            names = self.engines[symbol]
            # With a standby, the writer: the one whose death needs a takeover.
            self._kill((self._writer(symbol) or names[0]) if len(names) > 1 else names[0])
        elif fault == "pause-engine":
            symbol = self.rng.choice(PAIRS).symbol
            problems += self._pause_engine(symbol)
        elif fault in ("kill-settlement", "kill-marketdata", "kill-gateway"):
            self._kill(fault.removeprefix("kill-"))
        elif fault == "kill-nats":
            self._kill_nats()
            self.idle(1.0)
            self.servers.nats.start()
        elif fault == "kill-stream-leader":
            cluster = self.servers.nats_cluster
            assert cluster is not None
            symbol = self.rng.choice(PAIRS).symbol
            lead = self._leaders().get(compose.command_stream_name(symbol))
            if lead is None:
                return symbol, [f"the command stream of {symbol} has no leader"]
            problems += self._kill_node(cluster.node(lead),
                                        f"leader of {symbol}'s command stream")
        elif fault == "kill-nats-node":
            symbol = self.rng.choice(PAIRS).symbol
            node, still = self._follower()
            problems += self._kill_node(node, "leading nothing" if not still else
                                        f"still leading {', '.join(still)}")
        elif fault == "stop-postgres":
            pg = self.servers.postgres
            if pg.pid is not None:
                os.kill(pg.pid, signal.SIGQUIT)  # pg_ctl stop -m immediate
            self._wait_exit(pg.returncode)
            self.idle(1.0)
            pg.start()
        elif fault == "kill-redis":
            redis = self.servers.redis
            if redis.pid is not None:
                os.kill(redis.pid, signal.SIGKILL)
            self._wait_exit(redis.returncode)
            for path in redis.data_dir.iterdir():  # its data is lost
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.suffix in (".aof", ".rdb"):
                    path.unlink()
            self.idle(1.0)
            redis.start()
        elif fault == "sigterm-nats-down":
            self._kill_nats()
            self.idle(1.0)
            problems += self._stop_all_services()
            self.servers.nats.start()
        elif fault == "disk-full":
            assert self.disk is not None and self.probe is not None
            problems += disk.fill_hold_free(self.disk, self.servers.nats, self.idle,
                                            self.probe.ask, self._freed)
        elif fault == "slow-consumer":
            assert self.stores is not None and self.probe is not None
            name = self.rng.choice(compose.CONSUMERS)
            found, figures = slow.slow_consumer(name, lambda: self.command(name).pid,
                                                self.idle, self.probe.ask, self.stores)
            problems += found
            self.figures.append(figures)
        elif fault == "clock-skew":
            assert self.probe is not None
            pair = self.rng.choice(PAIRS)
            engines = self.engines[pair.symbol]
            # With a standby, the writer: the replica whose clock could matter.
            engine = ((self._writer(pair.symbol) or engines[0]) if len(engines) > 1
                      else engines[0])
            name = self.rng.choice(("gateway", engine))
            symbol = pair.symbol if name != "gateway" else symbol
            problems += clock.skew(self.command(name),
                                   self.rng.choice((1, -1)) * clock.SKEW_S, self.idle,
                                   self.probe.ask, gateway=name == "gateway")
        elif fault == "kill-watcher":
            self._kill(custody.PROCESS)
        elif fault == "chain-reorg":
            assert self.chain_load is not None and self.payer is not None
            problems += self.chain_load.reorg(self.payer, self.idle)
        elif fault == "chain-node-down":
            problems += self._chain_node_down()
        else:
            raise ValueError(f"unknown fault {fault}")
        return symbol, problems

    def _chain_node_down(self) -> list[str]:
        """Withdrawals requested, the exchange's litecoind killed (-9) as soon as one is
        being sent (or after 3 s), started again on its folder NODE_DOWN_S later (it
        gets the blocks it forgot from the network): the watcher must send each
        withdrawal exactly once, and lose none."""
        assert self.chain_load is not None and self.litecoind is not None
        litecoind, stores = self.litecoind, self.stores
        assert stores is not None
        ids = self.chain_load.withdraw_now(3)
        sending = self._meanwhile(lambda: asyncio.run(
            compose.wait_processing(stores.dsn, custody.WALLET, 3.0)))
        self.injected_at = time.monotonic()
        litecoind.kill()
        say(f"  litecoind killed ({len(ids)} withdrawals just requested; "
             f"{'one being sent' if sending else 'none being sent'}); back in "
             f"{NODE_DOWN_S:g} s")
        problems: list[str] = []

        def restart() -> None:
            try:
                litecoind.start()
            except ChainNodeError as exc:
                problems.append(f"litecoind did not start again: {exc}")

        def answered() -> list[str]:
            return problems

        self._later.append((time.monotonic() + NODE_DOWN_S, restart))
        self._settles.append(answered)
        return []

    def _freed(self, at: float) -> None:
        self._freed_at = at

    def _stop_all_services(self) -> list[str]:
        """SIGTERM to every engine, settlement and market data; each must exit within
        GRACE_S (the supervisor restarts them afterwards)."""
        names = [n for p in PAIRS for n in self.engines[p.symbol]]
        names += ["settlement", "marketdata"]
        started = time.monotonic()
        for name in names:
            self.command(name).signal_stop()
        waiting = set(names)
        while waiting and time.monotonic() - started < GRACE_S + 5:
            waiting = {n for n in waiting if self.command(n).returncode() is None}
            time.sleep(0.05)  # not idle(): the supervisor would restart them meanwhile
        took = time.monotonic() - started
        if waiting:
            for name in waiting:
                self._kill(name)
            return [f"{', '.join(sorted(waiting))} still running {took:.1f} s after SIGTERM "
                    f"with NATS down (grace {GRACE_S:g} s)"]
        say(f"every service stopped {took:.1f} s after SIGTERM with NATS down")
        return []

    # ------------------------------------------------------------------ the run
    def _meanwhile(self, work: Callable[[], T], *, supervise: bool = True) -> T:
        """``work()`` in a thread while this one keeps supervising (:meth:`idle`): a
        process that crashes during a check (an engine whose bus was still electing a
        leader) is restarted, as it would be in production, instead of being left down
        until the check gives up on settlement. Not ``supervise``: only wait (the final
        check, whose engines were stopped on purpose).

        Raises:
            Exception: whatever ``work`` raised.
        """
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chaos") as pool:
            done = pool.submit(work)
            while not done.done():
                if supervise:
                    self.idle(_POLL_S)
                else:
                    time.sleep(_POLL_S)
            return done.result()

    def check(self, load: Load, *, final: bool = False) -> compose.Findings:
        assert self.stores is not None
        stores, acked, converted = self.stores, load.acked.all(), load.converted.all()
        found = self._meanwhile(
            lambda: asyncio.run(compose.check(stores, acked, final=final,
                                              converted=converted)),
            supervise=not final)
        chain_load, payer, node, wallet = self.chain_load, self.payer, self.node, self.wallet
        if chain_load is not None and payer is not None and node is not None \
                and wallet is not None:
            # Connections of its own: the check runs in another thread.
            network, exchange = payer.copy(), node.copy()
            try:
                held = self._meanwhile(lambda: chain_load.check(network, exchange, wallet),
                                       supervise=not final)
            finally:
                network.close()
                exchange.close()
            found.lost += held.lost
            found.duplicated += held.duplicated
            found.failures += held.failures
        try:
            self.sampler.record_sizes(time.monotonic() - self._began,
                                      asyncio.run(compose.sizes(self.stores)))
        except Unavailable as exc:
            found.failures.append(f"sizes of the stores: {exc}")
        return found

    def run(self) -> int:
        opts = self.options
        plan = schedule(opts.seed, opts.duration_s, opts.faults, opts.period_s)
        traders = self.start()
        if self.payer is not None:
            assert self.stores is not None
            self.chain_load = custody.ChainLoad(self.base, self.payer, traders, opts.seed,
                                                self.stores.dsn)
            self.chain_load.prepare(self.payer, self.idle)
        probe_trader, traders = traders[0], traders[1:]
        load = Load(self.base, traders, opts.seed, opts.workers)
        probe = self.probe = _Probe(self.base, probe_trader, load)
        # Ready first, as a readiness probe would have it: every engine has recovered
        # (the gateway answers before); a fault must not find the platform still starting
        # (in CI a NATS node killed then cost an engine its 10 s snapshot read).
        for pair in PAIRS:
            if not probe.recovered(self.idle, pair.symbol):
                self.stop()
                raise SupervisorError(f"{pair.symbol} took no order within "
                                      f"{RECOVERY_TIMEOUT_S:.0f} s of the start")
        load.start()
        if self.chain_load is not None:
            self.chain_load.start()
        began = time.monotonic()
        say(f"load running; {len(plan)} faults to inject (seed {opts.seed})")
        try:
            for n, step in enumerate(plan, 1):
                self.idle(max(0.0, began + step.at_s - time.monotonic()))
                say(f"[{n}/{len(plan)}] {step.fault} at {time.monotonic() - began:.0f} s")
                self.injected_at = time.monotonic()
                symbol, problems = self.inject(step.fault)
                if step.fault in CHAIN_FAULTS:  # deposits credited again
                    assert self.chain_load is not None and self.payer is not None
                    recovered = self.chain_load.credited_again(self.payer, self.idle,
                                                               RECOVERY_TIMEOUT_S)
                else:
                    recovered = probe.recovered(self.idle, symbol)
                recovery = time.monotonic() - self.injected_at if recovered else None
                problems += self.settle()
                if self._freed_at is not None and recovered:
                    self.figures.append(f"disk-full: orders taken and settled again "
                                        f"{time.monotonic() - self._freed_at:.2f} s after "
                                        "the space was freed")
                self._freed_at = None
                self.idle(2.0)  # load under the recovered platform
                if not load.pause():
                    problems.append("the load did not pause within 60 s")
                if self.chain_load is not None and not self.chain_load.pause():
                    problems.append("the chain load did not pause within 60 s")
                found = self.check(load)
                load.resume()
                if self.chain_load is not None:
                    self.chain_load.resume()
                outcome = Outcome(step.fault, recovery, load.acked.since_last(), found.lost,
                                  found.duplicated, problems + found.failures)
                self.outcomes.append(outcome)
                say(f"  recovered in {'-' if recovery is None else f'{recovery:.2f}'} s; "
                     f"{outcome.acked} acknowledged, {outcome.lost} lost, "
                     f"{outcome.duplicated} duplicated"
                     + "".join(f"\n    FAILED {f}" for f in outcome.failures))
            load.stop()
            if self.chain_load is not None:
                self.chain_load.stop()
            self.outcomes.append(self._final(load))
        finally:
            load.stop()
            if self.chain_load is not None:
                self.chain_load.stop()
            probe.api.close()
            self.stop()
        say(f"answers: {dict(sorted(load.answers.items()))}")
        if self.chain_load is not None:
            say(f"custody: {dict(sorted(self.chain_load.answers.items()))}")
        print(table(self.outcomes, (*ALL_FAULTS, "final")), flush=True)
        if self.chain_load is not None:
            print(self.chain_load.summary, flush=True)
        for line in self.figures:
            print(line, flush=True)
        if opts.soak:
            print("\n" + self.sampler.table(), flush=True)
        ok = clean(self.outcomes)
        if ok and self.options.data_dir is None:
            shutil.rmtree(self.root, ignore_errors=True)
        elif not ok:
            say(f"the servers' data and every process's log are in {self.root}")
        say("no loss, no duplicate, every invariant held" if ok else "FAILED")
        return 0 if ok else 1

    def _final(self, load: Load) -> Outcome:
        """Stop the engines cleanly (each leaves a snapshot at its last command), check
        everything against the full replay. First, still supervising, settlement must
        have caught up: an engine restarting after the last fault would otherwise be
        stopped before it applied the last commands."""
        assert self.stores is not None
        stores = self.stores
        if not self._meanwhile(lambda: asyncio.run(compose.wait_settled(stores, 60.0))):
            say("not settled 60 s after the load stopped; stopping the engines anyway")
        for pair in PAIRS:
            names = self.engines[pair.symbol]
            writer = self._writer(pair.symbol) if len(names) > 1 else None
            # The standbys first: the writer's stop then hands the lease to nobody.
            for name in sorted(names, key=lambda n: n == writer):
                self.command(name).stop()
        found = self.check(load, final=True)
        say(f"final check: {found.lost} lost, {found.duplicated} duplicated"
             + "".join(f"\n    FAILED {f}" for f in found.failures))
        # Not an injection: no recovery to measure.
        return Outcome("final", math.nan, load.acked.since_last(), found.lost,
                       found.duplicated, found.failures)
