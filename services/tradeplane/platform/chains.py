"""Regtest chain nodes on this machine: litecoind, and monerod with two monero-wallet-rpc,
from Debian's ``litecoind`` and ``monero`` packages. ``tradeplane up`` runs them for its
LTC and XMR wallets (:func:`local_chains`), ``tradeplane faucet`` pays from them
(:func:`faucet`) and the tests start their own (``tests/support/chains.py``).

Each process runs on ports checked free, keeps its data and log in the given folder, runs
in its own session (a Ctrl-C in the terminal reaches only its parent, which stops it in
order) and gets SIGTERM if its parent dies (``supervisor.die_with_parent``). A
missing binary is an error naming the Debian package to install.

The helpers are synchronous (plain HTTP JSON-RPC with httpx). Amounts are integer units
(10**-8), as everywhere in tradeplane.

* :class:`LitecoinNode`: wallet ``hot`` is the exchange's; wallet ``payer`` is a
  customer's, holds the mined coins and pays deposits (:meth:`LitecoinNode.pay`); blocks
  are mined on demand (:meth:`LitecoinNode.mine`, to the payer). MWEB is switched off
  (``-vbparams=mweb:-2:0``): with it, litecoind 0.21 cannot mine past its activation
  height (432) on regtest.
* :class:`MoneroNodes`: monerod (``--regtest --offline --fixed-difficulty 1``), the
  exchange's wallet (``hot``, behind an RPC login) and the payer's wallet, which mines.
  Start-up mines 80 blocks to the payer: coinbase outputs unlock after 60 blocks, and a
  transfer needs 16 unlocked outputs on the chain for its ring. Monero locks received
  outputs for 10 blocks: a hot wallet can spend a deposit 10 blocks after it.

Started again on the same folder, a node keeps its chain and wallets (and mines only what
start-up still lacks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from tradeplane.adapters.chain_bitcoin import BitcoinRpc, BitcoinRpcConfig
from tradeplane.adapters.chain_monero import PICONERO_PER_UNIT, MoneroRpcConfig, MoneroWalletRpc
from tradeplane.domain.errors import TradeplaneError, Unavailable
from tradeplane.domain.money import fmt_units
from tradeplane.platform.ports import free_port, port_is_free
from tradeplane.platform.supervisor import die_with_parent

__all__ = [
    "NO_CUSTODY",
    "ChainNodeError",
    "ChainNodeUnavailable",
    "LitecoinNode",
    "LitecoindProcess",
    "LocalChainNodes",
    "LocalChains",
    "LocalCustody",
    "MoneroNodes",
    "custody_pairs",
    "faucet",
    "find_binary",
    "local_chains",
    "provision_custody",
    "running_litecoind",
    "running_monero",
    "start_custody",
]

HOST = "127.0.0.1"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
_LOG_TAIL_LINES = 40

#: Payer's fee rate (sat/vB) for deposits: Litecoin's wallet minimum (regtest has no estimate).
PAYER_FEE_RATE = 10
#: Blocks mined to the Litecoin payer at start: 100 to mature + 20 spendable coinbases.
LITECOIN_START_BLOCKS = 120
#: Blocks mined to the Monero payer at start: 60 to unlock coinbases + 20 unlocked outputs.
MONERO_START_BLOCKS = 80
#: Bitcoin Core's RPC_WALLET_NOT_FOUND (loadwallet of a wallet that does not exist).
_RPC_WALLET_NOT_FOUND = -18
#: The Debian package that holds each binary.
LITECOIN_PACKAGE = "litecoind"
MONERO_PACKAGE = "monero"


class ChainNodeError(TradeplaneError):
    """A regtest node could not be started or answered an error; the message ends with
    the tail of its log when there is one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ChainNodeUnavailable(ChainNodeError, Unavailable):
    """A node does not answer (not running, or not on that port)."""


def find_binary(name: str, package: str) -> str:
    """The path of ``name`` on PATH or in /usr/bin.

    Raises:
        ChainNodeError: not installed; names the Debian package to install.
    """
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists()
                                   else None)
    if found is None:
        raise ChainNodeError(
            f"{name} is not installed (not on PATH nor in /usr/bin): install Debian's "
            f"{package!r} package: apt-get install -y --no-install-recommends {package} "
            "(bash .ci/run does)")
    return found


def _tail(*logs: Path) -> str:
    parts = []
    for log in logs:
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        parts.append(f"--- {log}:\n" + "\n".join(lines[-_LOG_TAIL_LINES:]))
    return "\n".join(parts) or "(no log)"


class _Rpc:
    """Synchronous JSON-RPC over HTTP; JSON numbers as Decimal."""

    def __init__(self, url: str, *, auth: httpx.Auth | None = None, version: str = "2.0"
                 ) -> None:
        self.url = url
        self.version = version
        self._http = httpx.Client(auth=auth, timeout=120.0)

    def __call__(self, method: str, params: Any = None) -> Any:
        """Raises: ChainNodeUnavailable (no answer), ChainNodeError (an error answer)."""
        body: dict[str, Any] = {
            "jsonrpc": self.version, "id": 1, "method": method,
            "params": {} if params is None and self.version == "2.0" else params or [],
        }
        where = httpx.URL(self.url)
        try:
            resp = self._http.post(self.url, content=json.dumps(body),
                                   headers={"content-type": "application/json"})
        except httpx.TransportError as e:
            raise ChainNodeUnavailable(
                f"{method}: nothing answers at {where.host}:{where.port} "
                f"({type(e).__name__})") from e
        try:
            doc = json.loads(resp.content, parse_float=Decimal)
        except ValueError as e:
            raise ChainNodeError(f"{method} at {where.host}:{where.port}: HTTP "
                                 f"{resp.status_code}: {resp.text[:200]}") from e
        error = doc.get("error") if isinstance(doc, dict) else None
        if error:
            code = error.get("code") if isinstance(error, dict) else None
            text = error.get("message", error) if isinstance(error, dict) else error
            raise ChainNodeError(f"{method} at {where.host}:{where.port}: {text}"
                                 + (f" (code {code})" if isinstance(code, int) else ""),
                                 code if isinstance(code, int) else None)
        return doc["result"]

    def close(self) -> None:
        self._http.close()


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], name: str,
                *logs: Path) -> None:
    """Poll ``ready`` (a failing RPC counts as not ready) until the deadline."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ChainNodeError(f"{name} exited with {proc.returncode} while starting:\n"
                                 f"{_tail(*logs)}")
        with contextlib.suppress(ChainNodeError):
            if ready():
                return
        time.sleep(0.1)
    raise ChainNodeError(f"{name} not ready within {START_TIMEOUT_S}s:\n{_tail(*logs)}")


def _start(args: list[str], output: Path) -> subprocess.Popen[bytes]:
    with output.open("ab") as out:
        # Own session: a Ctrl-C in the terminal reaches our parent, which stops us in
        # order. A parent killed with -9 leaves no node behind holding its ports and data
        # folder: the node gets SIGTERM (it flushes its chain) when its parent dies.
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=die_with_parent(signal.SIGTERM))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _port(wanted: int) -> int:
    """``wanted`` if it is a port free now, else one the OS picks."""
    return wanted if 0 < wanted < 65536 and port_is_free(wanted) else free_port()


# ======================================================================================
# Litecoin
# ======================================================================================


@dataclass
class LitecoinNode:
    """A running ``litecoind -regtest``: RPC at ``url`` with ``user``/``password``."""

    url: str
    user: str
    password: str = field(repr=False)
    folder: Path
    wallet: str = "hot"
    payer_wallet: str = "payer"
    _rpc: dict[str, _Rpc] = field(default_factory=dict, repr=False)
    _payer_address: str = ""

    @property
    def log(self) -> Path:
        return self.folder / "regtest" / "debug.log"

    def rpc(self, method: str, *params: Any, wallet: str | None = None, **named: Any) -> Any:
        """Call ``method`` with positional or named parameters, on the node
        (``wallet=None``) or on a wallet's endpoint.

        Raises:
            ChainNodeUnavailable: the node does not answer.
            ChainNodeError: the node answered with an error.
        """
        key = wallet or ""
        if key not in self._rpc:
            url = f"{self.url}/wallet/{wallet}" if wallet else self.url
            self._rpc[key] = _Rpc(url, auth=httpx.BasicAuth(self.user, self.password),
                                  version="1.0")
        return self._rpc[key](method, named if named else list(params))

    def mine(self, n: int = 1, *, to: str | None = None) -> list[str]:
        """Mine ``n`` blocks to ``to`` (default: the payer); returns their hashes. After
        an ``invalidate``, mine the other branch to another address: the same address
        in the same second makes the very block that was invalidated."""
        return [str(h) for h in self.rpc("generatetoaddress", n, to or self.payer_address)]

    @property
    def payer_address(self) -> str:
        if not self._payer_address:
            self._payer_address = str(self.rpc("getnewaddress", wallet=self.payer_wallet))
        return self._payer_address

    def pay(self, address: str, amount: int) -> str:
        """Pay ``amount`` units from the payer's wallet to ``address``; returns the txid."""
        return str(self.rpc("sendtoaddress", wallet=self.payer_wallet, address=address,
                            amount=fmt_units(amount), fee_rate=PAYER_FEE_RATE))

    def height(self) -> int:
        return int(self.rpc("getblockcount"))

    def block_hash(self, height: int) -> str:
        return str(self.rpc("getblockhash", height))

    def invalidate(self, block_hash: str) -> None:
        """Orphan ``block_hash`` and everything after it (its transactions go back to
        the mempool). Undo with :meth:`reconsider`."""
        self.rpc("invalidateblock", block_hash)

    def reconsider(self, block_hash: str) -> None:
        self.rpc("reconsiderblock", block_hash)

    def create_wallet(self, name: str | None = None) -> str:
        """A new, empty wallet on the node; returns its name (random unless given)."""
        name = name or f"w{secrets.token_hex(4)}"
        self.rpc("createwallet", name)
        return name

    def open_wallet(self, name: str) -> None:
        """Load wallet ``name``, creating it if the node has none of that name."""
        if name in self.rpc("listwallets"):
            return
        try:
            self.rpc("loadwallet", name)
        except ChainNodeError as e:
            if e.code != _RPC_WALLET_NOT_FOUND:
                raise
            self.rpc("createwallet", name)

    def config(self, *, wallet: str | None = None, **overrides: Any) -> BitcoinRpcConfig:
        """The adapter's settings for ``wallet`` (default ``hot``) on this node."""
        return BitcoinRpcConfig(url=self.url, username=self.user,
                                password=SecretStr(self.password),
                                wallet=wallet or self.wallet, **overrides)

    def adapter(self, *, wallet: str | None = None, **overrides: Any) -> BitcoinRpc:
        """A :class:`BitcoinRpc` on ``wallet`` (default ``hot``); close it after use."""
        return BitcoinRpc(self.config(wallet=wallet, **overrides))

    def copy(self) -> LitecoinNode:
        """The same node with its own HTTP connections (one per thread)."""
        return LitecoinNode(self.url, self.user, self.password, self.folder, self.wallet,
                            self.payer_wallet)

    def close(self) -> None:
        for rpc in self._rpc.values():
            rpc.close()
        self._rpc.clear()


class LitecoindProcess:
    """One ``litecoind -regtest`` on ``folder``, started and stopped, or killed and started
    again on the same folder and ports (``tradeplane chaos``' chain-node-down): wallets
    ``hot`` and ``payer`` are loaded at each start, and unless ``peer`` is given at least
    120 blocks are mined to the payer at the first.

    Alone it listens to no peer. With ``p2p_port`` it accepts peers on that port of the
    loopback; with ``peer`` (``host:port``) it connects to that node only and takes its
    chain from it (a node killed with -9 forgets the blocks it had not flushed, as any
    node does, and gets them again from its peer, as on a real network). Loopback peers
    relay transactions at once (``noban``: no trickle delay).
    """

    def __init__(self, folder: Path, *, rpc_port: int = 0, user: str = "tradeplane",
                 password: str = "", p2p_port: int | None = None,
                 peer: str | None = None) -> None:
        self.binary = find_binary("litecoind", LITECOIN_PACKAGE)
        self.folder = folder
        self.user = user
        self.password = password or secrets.token_hex(16)
        self.rpc_port = _port(rpc_port)
        self.p2p_port = p2p_port
        self.peer = peer
        self.proc: subprocess.Popen[bytes] | None = None
        self.node = LitecoinNode(url=f"http://{HOST}:{self.rpc_port}", user=self.user,
                                 password=self.password, folder=folder)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None or self.proc.poll() is not None else self.proc.pid

    def start(self) -> LitecoinNode:
        """Start it (it must not be running) and wait until it answers with its wallets
        loaded; returns its node.

        Raises:
            ChainNodeError: it did not start.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary, "-regtest", f"-datadir={self.folder}", "-server=1", "-listen=0",
            "-dnsseed=0", "-discover=0", "-upnp=0", "-printtoconsole=0", "-txindex=0",
            f"-rpcbind={HOST}", f"-rpcallowip={HOST}", f"-rpcport={self.rpc_port}",
            f"-rpcuser={self.user}", f"-rpcpassword={self.password}", "-vbparams=mweb:-2:0",
        ]
        if self.p2p_port is not None:
            args[args.index("-listen=0")] = "-listen=1"
            args += [f"-bind={HOST}", f"-port={self.p2p_port}"]
        if self.peer is not None:
            args.append(f"-connect={self.peer}")
        if self.p2p_port is not None or self.peer is not None:
            args += [f"-whitelist=noban@{HOST}", "-debug=mempoolrej"]
        self.proc = proc = _start(args, self.folder / "litecoind.out")
        node = self.node
        node.close()  # connections to a previous process
        _wait_until(lambda: node.rpc("getblockchaininfo") is not None, proc, "litecoind",
                    self.folder / "litecoind.out", node.log)
        node.open_wallet(node.wallet)
        node.open_wallet(node.payer_wallet)
        missing = LITECOIN_START_BLOCKS - node.height()
        if missing > 0 and self.peer is None:
            node.mine(missing)
        return node

    def kill(self) -> None:
        """kill -9, and wait for it to be gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.node.close()

    def stop(self) -> None:
        """Stop it cleanly (it flushes its chain and wallets); killed if it takes more
        than STOP_TIMEOUT_S."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ChainNodeError):
                self.node.rpc("stop")
        self.node.close()
        if self.proc is not None:
            _stop(self.proc)


@contextlib.contextmanager
def running_litecoind(folder: Path, *, rpc_port: int = 0, user: str = "tradeplane",
                      password: str = "") -> Iterator[LitecoinNode]:
    """litecoind in ``-regtest`` on ``folder`` with wallets ``hot`` and ``payer`` and at
    least 120 blocks mined to the payer; RPC on ``rpc_port`` if it is free (else any
    free port), with ``user`` and ``password`` (random unless given).

    Raises:
        ChainNodeError: litecoind missing, or it did not start.
    """
    process = LitecoindProcess(folder, rpc_port=rpc_port, user=user, password=password)
    try:
        yield process.start()
    finally:
        process.stop()


# ======================================================================================
# Monero
# ======================================================================================


@dataclass
class MoneroNodes:
    """monerod in regtest plus two monero-wallet-rpc: ``hot`` (the exchange's, RPC login
    ``wallet_user``/``wallet_password``) and ``payer`` (mines, pays deposits)."""

    daemon_url: str
    wallet_url: str
    wallet_user: str
    wallet_password: str = field(repr=False)
    payer_url: str
    folder: Path
    payer_address: str = ""
    _daemon: _Rpc | None = field(default=None, repr=False)
    _hot: _Rpc | None = field(default=None, repr=False)
    _payer: _Rpc | None = field(default=None, repr=False)

    def daemon(self, method: str, **params: Any) -> Any:
        """Call monerod's JSON-RPC ``method``."""
        if self._daemon is None:
            self._daemon = _Rpc(f"{self.daemon_url}/json_rpc")
        return self._daemon(method, params)

    def hot(self, method: str, **params: Any) -> Any:
        """Call the exchange's wallet (what the adapter uses)."""
        if self._hot is None:
            self._hot = _Rpc(f"{self.wallet_url}/json_rpc",
                             auth=httpx.DigestAuth(self.wallet_user, self.wallet_password))
        return self._hot(method, params)

    def payer(self, method: str, **params: Any) -> Any:
        """Call the payer's wallet."""
        if self._payer is None:
            self._payer = _Rpc(f"{self.payer_url}/json_rpc")
        return self._payer(method, params)

    def mine(self, n: int = 1) -> int:
        """Mine ``n`` blocks to the payer; returns the new chain height (block count)."""
        res = self.daemon("generateblocks", amount_of_blocks=n,
                          wallet_address=self.payer_address)
        return int(res["height"]) + 1

    def height(self) -> int:
        """monerod's block count (top block height + 1)."""
        return int(self.daemon("get_block_count")["count"])

    def pay(self, address: str, amount: int) -> str:
        """Pay ``amount`` units from the payer to ``address``; returns the txid."""
        return self.pay_piconero(address, amount * PICONERO_PER_UNIT)

    def pay_piconero(self, address: str, piconero: int) -> str:
        """Pay exactly ``piconero`` from the payer to ``address``; returns the txid."""
        self.payer("refresh")
        res = self.payer("transfer", destinations=[{"address": address, "amount": piconero}],
                         priority=1)
        return str(res["tx_hash"])

    def create_account(self, label: str = "") -> int:
        """A new account in the hot wallet (its own subaddresses and balance); returns
        its index, for ``MoneroRpcConfig.account_index``."""
        return int(self.hot("create_account", label=label)["account_index"])

    def config(self, **overrides: Any) -> MoneroRpcConfig:
        """The adapter's settings for the hot wallet (account 0 unless overridden)."""
        return MoneroRpcConfig(wallet_url=self.wallet_url, daemon_url=self.daemon_url,
                               username=self.wallet_user,
                               password=SecretStr(self.wallet_password), **overrides)

    def adapter(self, **overrides: Any) -> MoneroWalletRpc:
        """A :class:`MoneroWalletRpc` on the hot wallet; close it after use."""
        return MoneroWalletRpc(self.config(**overrides))

    def copy(self) -> MoneroNodes:
        """The same processes with their own HTTP connections (one per thread)."""
        return MoneroNodes(self.daemon_url, self.wallet_url, self.wallet_user,
                           self.wallet_password, self.payer_url, self.folder,
                           self.payer_address)

    def close(self) -> None:
        for rpc in (self._daemon, self._hot, self._payer):
            if rpc is not None:
                rpc.close()
        self._daemon = self._hot = self._payer = None


@contextlib.contextmanager
def running_monero(folder: Path, *, ports: tuple[int, int, int] = (0, 0, 0),
                   user: str = "tradeplane", password: str = "", durable: bool = False
                   ) -> Iterator[MoneroNodes]:
    """monerod (regtest, offline, difficulty 1) on ``folder``, the hot and the payer
    wallet-rpc (their wallets made on first start, opened after), and at least 80 blocks
    mined to the payer. ``ports`` (monerod, hot, payer RPC) are used if free (else any
    free port); the hot wallet's login is ``user`` and ``password`` (random unless given).
    ``durable``: every block is on disk before the next (a chain kept across restarts);
    otherwise blocks are synced lazily and the last ones may be lost at the stop.

    Raises:
        ChainNodeError: a binary missing, or a process did not start.
    """
    monerod = find_binary("monerod", MONERO_PACKAGE)
    wallet_rpc = find_binary("monero-wallet-rpc", MONERO_PACKAGE)
    folder.mkdir(parents=True, exist_ok=True)
    password = password or secrets.token_hex(16)
    daemon_port = _port(ports[0])
    daemon_args = [
        monerod, "--regtest", "--offline", "--fixed-difficulty", "1",
        "--data-dir", str(folder / "monerod"), "--non-interactive", "--no-igd", "--no-zmq",
        "--rpc-bind-ip", HOST, "--rpc-bind-port", str(daemon_port),
        "--p2p-bind-ip", HOST, "--p2p-bind-port", str(free_port()),
        "--log-file", str(folder / "monerod.log"), "--log-level", "0",
        "--disable-dns-checkpoints", "--check-updates", "disabled",
        "--db-sync-mode", "safe:sync" if durable else "fastest",
        "--max-concurrency", "2",
        # Regtest is a "fakechain": monerod deletes its database at start unless told.
        *(["--keep-fakechain"] if durable else []),
    ]
    procs: list[subprocess.Popen[bytes]] = []
    nodes: MoneroNodes | None = None
    try:
        procs.append(_start(daemon_args, folder / "monerod.out"))
        daemon = _Rpc(f"http://{HOST}:{daemon_port}/json_rpc")
        try:
            _wait_until(lambda: daemon("get_info")["status"] == "OK", procs[0], "monerod",
                        folder / "monerod.out", folder / "monerod.log")
        finally:
            daemon.close()

        def wallet_args(name: str, port: int, login: str | None) -> list[str]:
            (folder / name).mkdir(exist_ok=True)
            return [
                wallet_rpc, "--daemon-address", f"{HOST}:{daemon_port}", "--trusted-daemon",
                "--wallet-dir", str(folder / name), "--non-interactive",
                "--rpc-bind-ip", HOST, "--rpc-bind-port", str(port),
                "--shared-ringdb-dir", str(folder / name / "ringdb"),
                "--log-file", str(folder / f"{name}-rpc.log"), "--log-level", "0",
                "--max-concurrency", "2",
                *(["--rpc-login", login] if login else ["--disable-rpc-login"]),
            ]

        hot_port = _port(ports[1])
        payer_port = _port(ports[2])
        procs.append(_start(wallet_args("hot", hot_port, f"{user}:{password}"),
                            folder / "hot-rpc.out"))
        procs.append(_start(wallet_args("payer", payer_port, None), folder / "payer-rpc.out"))
        nodes = MoneroNodes(daemon_url=f"http://{HOST}:{daemon_port}",
                            wallet_url=f"http://{HOST}:{hot_port}", wallet_user=user,
                            wallet_password=password, payer_url=f"http://{HOST}:{payer_port}",
                            folder=folder)
        n = nodes
        _wait_until(lambda: n.hot("get_version") is not None, procs[1], "monero-wallet-rpc hot",
                    folder / "hot-rpc.out", folder / "hot-rpc.log")
        _wait_until(lambda: n.payer("get_version") is not None, procs[2],
                    "monero-wallet-rpc payer", folder / "payer-rpc.out", folder / "payer-rpc.log")
        # Creating a wallet derives its keys slowly (~3 s): make (or open) both at once.
        with httpx.Client(timeout=120.0) as plain, httpx.Client(
                timeout=120.0, auth=httpx.DigestAuth(user, password)) as digest:
            _open_wallets([(digest, nodes.wallet_url, folder / "hot"),
                           (plain, nodes.payer_url, folder / "payer")])
        nodes.payer_address = str(nodes.payer("get_address", account_index=0)["address"])
        missing = MONERO_START_BLOCKS + 1 - nodes.height()
        if missing > 0:
            nodes.mine(missing)
        nodes.payer("refresh")
        yield nodes
    finally:
        if nodes is not None:
            for call in (nodes.hot, nodes.payer):
                with contextlib.suppress(ChainNodeError):
                    call("stop_wallet")
            nodes.close()
        for proc in reversed(procs):
            _stop(proc)


_MONERO_WALLET_FILE = "wallet"


def _open_wallets(targets: list[tuple[httpx.Client, str, Path]]) -> None:
    """``open_wallet`` (or ``create_wallet`` the first time) named ``wallet``, no
    password, on each wallet-rpc, concurrently."""

    def open_one(target: tuple[httpx.Client, str, Path]) -> None:
        client, url, wallet_dir = target
        exists = (wallet_dir / f"{_MONERO_WALLET_FILE}.keys").exists()
        params: dict[str, Any] = {"filename": _MONERO_WALLET_FILE, "password": ""}
        if not exists:
            params["language"] = "English"
        body = {"jsonrpc": "2.0", "id": 1,
                "method": "open_wallet" if exists else "create_wallet", "params": params}
        doc = client.post(f"{url}/json_rpc", json=body).json()
        if doc.get("error"):
            raise ChainNodeError(f"{body['method']} at {url}: {doc['error']}")

    with ThreadPoolExecutor(len(targets)) as pool:
        list(pool.map(open_one, targets))


# ======================================================================================
# The local platform's chains (tradeplane up) and its faucet
# ======================================================================================

#: Where ``up`` keeps its chains, under its data folder, and what it records of them.
CHAINS_FOLDER = "chains"
CHAINS_FILE = "chains.json"
#: Seconds between two blocks ``up`` mines on each of its chains.
BLOCK_INTERVAL_S = 5.0
#: The local wallets: name -> (asset, Wallet spec without its rpc part).
LOCAL_WALLETS: dict[str, tuple[str, dict[str, Any]]] = {
    "ltc-regtest": ("LTC", {
        "chain": "litecoin", "network": "regtest", "asset": "LTC", "confirmations": 2,
        "withdrawals": {"fee": "0.001", "min": "0.002", "approvalThreshold": "1"}}),
    "xmr-regtest": ("XMR", {
        "chain": "monero", "network": "regtest", "asset": "XMR", "confirmations": 2,
        "withdrawals": {"fee": "0.01", "min": "0.1", "approvalThreshold": "1"}}),
}


@dataclass
class LocalChains:
    """What ``up`` runs: the nodes it could start, the packages it could not, and the
    one RPC login every node of it shares (so one ``TRADEPLANE_CHAIN_RPC_*`` pair serves
    every watcher and ``check-wallets --live``)."""

    folder: Path
    user: str
    password: str = field(repr=False)
    litecoin: LitecoinNode | None = None
    monero: MoneroNodes | None = None
    missing: dict[str, str] = field(default_factory=dict)
    """Asset -> the Debian package that would run its node."""

    def wallet_specs(self) -> dict[str, dict[str, Any]]:
        """Wallet name -> its Wallet spec (as ``wallet-add`` writes it), for the running
        nodes."""
        out: dict[str, dict[str, Any]] = {}
        if self.litecoin is not None:
            out["ltc-regtest"] = {**LOCAL_WALLETS["ltc-regtest"][1],
                                  "rpc": {"url": f"{self.litecoin.url}/wallet/hot"}}
        if self.monero is not None:
            out["xmr-regtest"] = {**LOCAL_WALLETS["xmr-regtest"][1],
                                  "rpc": {"url": self.monero.wallet_url,
                                          "daemonUrl": self.monero.daemon_url}}
        return out

    def login_env(self) -> dict[str, str]:
        """The watchers' node login (environment, never argv)."""
        return {"TRADEPLANE_CHAIN_RPC_USERNAME": self.user,
                "TRADEPLANE_CHAIN_RPC_PASSWORD": self.password}

    def record(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"username": self.user, "password": self.password}
        if self.litecoin is not None:
            doc["litecoin"] = {"url": self.litecoin.url}
        if self.monero is not None:
            doc["monero"] = {"daemon_url": self.monero.daemon_url,
                             "wallet_url": self.monero.wallet_url,
                             "payer_url": self.monero.payer_url,
                             "payer_address": self.monero.payer_address}
        return doc


def read_record(data_dir: Path) -> dict[str, Any]:
    """What ``up`` recorded of its chains under ``data_dir`` (empty: none).

    Raises:
        ChainNodeError: the record is unreadable.
    """
    path = data_dir / CHAINS_FOLDER / CHAINS_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ChainNodeError(f"{path}: unreadable: {e}") from e
    if not isinstance(doc, dict):
        raise ChainNodeError(f"{path}: not a JSON object")
    return doc


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def _port_of(url: object) -> int:
    """The port of a recorded URL (0: none)."""
    if not isinstance(url, str):
        return 0
    try:
        return httpx.URL(url).port or 0
    except httpx.InvalidURL:
        return 0


class _BlockMaker(threading.Thread):
    """Mines one block on each chain every ``interval_s`` (to the payer), so deposits
    confirm and withdrawals complete as on a live chain."""

    def __init__(self, chains: LocalChains, interval_s: float) -> None:
        super().__init__(name="regtest-blocks", daemon=True)
        self._litecoin = chains.litecoin.copy() if chains.litecoin else None
        self._monero = chains.monero.copy() if chains.monero else None
        self._interval_s = interval_s
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            while not self.halt.wait(self._interval_s):
                for mine in (self._litecoin and self._litecoin.mine,
                             self._monero and self._monero.mine):
                    if mine:
                        # A node stopping under us: the next round (or the exit) tells.
                        with contextlib.suppress(ChainNodeError):
                            mine(1)
        finally:
            for node in (self._litecoin, self._monero):
                if node is not None:
                    node.close()


class LocalChainNodes:
    """The local platform's regtest nodes under ``data_dir/chains``, for ``tradeplane up``:
    litecoind when Debian's ``litecoind`` is installed, monerod and monero-wallet-rpc when
    ``monero`` is (the missing ones are named in ``chains.missing``). :meth:`start`
    records their ports and login in ``chains/chains.json`` (mode 0600) for ``tradeplane
    faucet`` and ``check-wallets --live`` and mines a block on each every
    ``block_interval_s``; :meth:`stop` stops them (their data is kept)."""

    def __init__(self, data_dir: Path, *, block_interval_s: float = BLOCK_INTERVAL_S) -> None:
        self.folder = data_dir / CHAINS_FOLDER
        self.data_dir = data_dir
        self.block_interval_s = block_interval_s
        self._stack = contextlib.ExitStack()
        self._miner: _BlockMaker | None = None
        self.chains: LocalChains | None = None

    def start(self) -> LocalChains:
        """Start whatever is installed.

        Raises:
            ChainNodeError: an installed node did not start (those started are stopped).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            old = read_record(self.data_dir)
        except ChainNodeError:
            old = {}
        user = str(old.get("username") or "tradeplane")
        password = str(old.get("password") or secrets.token_hex(16))
        chains = LocalChains(self.folder, user, password)
        try:
            try:
                find_binary("litecoind", LITECOIN_PACKAGE)
            except ChainNodeError:
                chains.missing["LTC"] = LITECOIN_PACKAGE
            else:
                ltc = old.get("litecoin") or {}
                chains.litecoin = self._stack.enter_context(running_litecoind(
                    self.folder / "litecoin", rpc_port=_port_of(ltc.get("url")), user=user,
                    password=password))
            try:
                find_binary("monerod", MONERO_PACKAGE)
                find_binary("monero-wallet-rpc", MONERO_PACKAGE)
            except ChainNodeError:
                chains.missing["XMR"] = MONERO_PACKAGE
            else:
                xmr = old.get("monero") or {}
                chains.monero = self._stack.enter_context(running_monero(
                    self.folder / "monero", ports=(_port_of(xmr.get("daemon_url")),
                                                   _port_of(xmr.get("wallet_url")),
                                                   _port_of(xmr.get("payer_url"))),
                    user=user, password=password, durable=True))
        except BaseException:
            self._stack.close()
            raise
        _write_private(self.folder / CHAINS_FILE, json.dumps(chains.record(), indent=2) + "\n")
        if chains.litecoin or chains.monero:
            self._miner = _BlockMaker(chains, self.block_interval_s)
            self._miner.start()
        self.chains = chains
        return chains

    def stop(self) -> None:
        """Stop mining, then the nodes (a no-op when nothing runs)."""
        if self._miner is not None:
            self._miner.halt.set()
            self._miner.join(STOP_TIMEOUT_S)
            self._miner = None
        self._stack.close()
        self.chains = None


@contextlib.contextmanager
def local_chains(data_dir: Path, *, block_interval_s: float = BLOCK_INTERVAL_S
                 ) -> Iterator[LocalChains]:
    """:class:`LocalChainNodes` as a context.

    Raises:
        ChainNodeError: an installed node did not start.
    """
    nodes = LocalChainNodes(data_dir, block_interval_s=block_interval_s)
    try:
        yield nodes.start()
    finally:
        nodes.stop()


#: What the market maker is given on each local chain, by real deposits (so that every
#: coin the ledger owes is on the chain and reconciliation stays exactly 0).
MARKET_MAKER_COINS = {"LTC": "200", "XMR": "40"}


async def provision_custody(dsn: str, chains: LocalChains, market_maker: int | None
                            ) -> list[str]:
    """The local wallets in the ``wallets`` table (``wallet-add``'s row, the nodes' current
    ports), the markets of their coins, and the market maker's coins: paid once by the
    payer to its deposit address and confirmed at once (its watcher credits them on its
    first scan). Returns the wallet names.

    Raises:
        ChainNodeError: a node refused; ChainError: the hot wallet did not give an address.
    """
    from tradeplane.adapters import db, wallets_db
    from tradeplane.domain.custody import wallet_from_spec
    from tradeplane.domain.money import to_units
    from tradeplane.domain.pairs import CUSTODY_DEMO_PAIRS
    from tradeplane.wallets.service import connect_chain
    from tradeplane.wallets.settings import NodeLogin

    pool = await db.create_pool(dsn, 2)
    names = []
    try:
        for name, doc in chains.wallet_specs().items():
            spec = wallet_from_spec(name, doc)
            await wallets_db.upsert_wallet(pool, spec)
            names.append(name)
            for pair in CUSTODY_DEMO_PAIRS:
                if pair.base == spec.asset:
                    await db.upsert_pair(pool, pair)
            if market_maker is None or await wallets_db.deposit_address(
                    pool, name, market_maker) is not None:
                continue
            chain = connect_chain(spec, NodeLogin(spec.rpc_url, chains.user,
                                                  SecretStr(chains.password)))
            try:
                address = await chain.deposit_address(market_maker, spec.asset)
            finally:
                await chain.close()
            await wallets_db.save_deposit_address(pool, name, market_maker, address)
            amount = to_units(MARKET_MAKER_COINS[spec.asset])
            if spec.asset == "LTC" and chains.litecoin is not None:
                chains.litecoin.pay(address, amount)
                chains.litecoin.mine(spec.confirmations)
            elif spec.asset == "XMR" and chains.monero is not None:
                chains.monero.pay(address, amount)
                chains.monero.mine(spec.confirmations)
    finally:
        await pool.close()
    return names


def custody_pairs(chains: LocalChains) -> list[str]:
    """The names (``LTC-USDT``) of the markets for the coins whose nodes run."""
    from tradeplane.domain.pairs import CUSTODY_DEMO_PAIRS

    assets = {doc["asset"] for doc in chains.wallet_specs().values()}
    return [p.name for p in CUSTODY_DEMO_PAIRS if p.base in assets]


@dataclass(frozen=True)
class LocalCustody:
    """What ``tradeplane up`` adds for custody: the watchers to run, their markets and
    environment, and what its banner says."""

    wallets: list[str]
    """Wallet names, one ``tradeplane wallet-watcher --wallet NAME`` each."""
    pairs: list[str]
    """Markets of their coins (``LTC-USDT``...), one engine each."""
    env: dict[str, str] = field(repr=False)
    """The watchers' extra environment (the nodes' login, the reconciliation interval)."""
    missing: dict[str, str]
    """Asset -> the Debian package that would run it."""

    def banner(self) -> str:
        """The banner's custody lines."""
        lines = []
        if self.wallets:
            lines.append(f"  wallets       {', '.join(self.wallets)} (regtest; coins: "
                         "tradeplane faucet ASSET ADDRESS AMOUNT)")
        for asset, package in self.missing.items():
            lines.append(f"  no {asset} wallet  install Debian's {package!r} package "
                         f"(apt-get install {package}) for {asset} deposits and withdrawals")
        return "".join(f"{line}\n" for line in lines)


#: ``tradeplane up --no-chains``: no nodes, no wallets, nothing said about packages.
NO_CUSTODY = LocalCustody(wallets=[], pairs=[], env={}, missing={})
#: Seconds between two reconciliations of a local wallet.
LOCAL_RECONCILE_INTERVAL_S = 30


def start_custody(nodes: LocalChainNodes, dsn: str, market_maker: int | None
                  ) -> LocalCustody:
    """Start the local nodes, register their wallets and markets, fund the market maker
    (:func:`provision_custody`); stops the nodes again if that fails.

    Raises:
        ChainNodeError, ChainError: a node did not start or refused.
    """
    chains = nodes.start()
    try:
        wallets = asyncio.run(provision_custody(dsn, chains, market_maker))
    except BaseException:
        nodes.stop()
        raise
    return LocalCustody(
        wallets=wallets, pairs=custody_pairs(chains),
        env={**chains.login_env(),
             "TRADEPLANE_WALLET_RECONCILE_INTERVAL_S": str(LOCAL_RECONCILE_INTERVAL_S)},
        missing=dict(chains.missing))


@dataclass(frozen=True, slots=True)
class Payment:
    txid: str
    mined: int


#: Assets the faucet pays, and the chain record each needs.
FAUCET_ASSETS = {"LTC": "litecoin", "XMR": "monero"}


def faucet(data_dir: Path, asset: str, address: str, amount: int, *, confirm: int = 0
           ) -> Payment:
    """Pay ``amount`` units of ``asset`` from the payer of ``up``'s regtest node under
    ``data_dir`` to ``address``, then mine ``confirm`` blocks (0: leave it to the blocks
    ``up`` mines every few seconds).

    Raises:
        ChainNodeUnavailable: no such node is recorded or it does not answer.
        ChainNodeError: the node refused (bad address, not enough coins, ...).
    """
    chain = FAUCET_ASSETS[asset]
    doc = read_record(data_dir)
    node_doc = doc.get(chain)
    if not isinstance(node_doc, dict):
        package = LITECOIN_PACKAGE if chain == "litecoin" else MONERO_PACKAGE
        raise ChainNodeUnavailable(
            f"no regtest {asset} node recorded under {data_dir / CHAINS_FOLDER}: run "
            f"`tradeplane up --data-dir {data_dir}` with Debian's {package!r} package "
            "installed")
    user, password = str(doc.get("username", "")), str(doc.get("password", ""))
    try:
        return _pay(chain, node_doc, user, password, data_dir, address, amount, confirm)
    except ChainNodeUnavailable as e:
        raise ChainNodeUnavailable(
            f"the regtest {asset} node of {data_dir} does not answer ({e}): is "
            f"`tradeplane up --data-dir {data_dir}` running?") from e


def _pay(chain: str, node_doc: dict[str, Any], user: str, password: str, data_dir: Path,
         address: str, amount: int, confirm: int) -> Payment:
    if chain == "litecoin":
        ltc = LitecoinNode(str(node_doc.get("url", "")), user, password, data_dir)
        try:
            txid = ltc.pay(address, amount)
            if confirm:
                ltc.mine(confirm)
        finally:
            ltc.close()
        return Payment(txid, confirm)
    xmr = MoneroNodes(str(node_doc.get("daemon_url", "")), str(node_doc.get("wallet_url", "")),
                      user, password, str(node_doc.get("payer_url", "")), data_dir,
                      str(node_doc.get("payer_address", "")))
    try:
        txid = xmr.pay(address, amount)
        if confirm:
            xmr.mine(confirm)
    finally:
        xmr.close()
    return Payment(txid, confirm)
