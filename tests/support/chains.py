"""Real regtest nodes for the wallet tests: litecoind, and monerod with two
monero-wallet-rpc processes, from Debian's ``litecoind`` and ``monero`` packages.

Each starts on free ports in a throw-away folder, as a child process in its own session,
and is stopped (then killed, if need be) when the context exits. A missing binary is an
error that says which package to install (``bash .ci/run`` installs both), never a skip.

The helpers here are synchronous (plain HTTP JSON-RPC with httpx): call them from tests
and fixtures alike. Amounts are integer units (10**-8), as everywhere in tradeplane.

* :class:`LitecoinNode`: wallet ``hot`` is the exchange's (what the adapter uses unless
  a test makes its own with :meth:`LitecoinNode.create_wallet`); wallet ``payer`` is a
  customer's, holds the mined coins and pays deposits (:meth:`LitecoinNode.pay`); blocks
  are mined on demand (:meth:`LitecoinNode.mine`, to the payer). MWEB is switched off
  (``-vbparams=mweb:-2:0``): with it, litecoind 0.21 cannot mine past its activation
  height (432) on regtest.
* :class:`MoneroNodes`: monerod (``--regtest --offline --fixed-difficulty 1``), the
  exchange's wallet (``hot``, behind an RPC login, so the adapter's digest auth is
  exercised) and the payer's wallet, which mines. Start-up mines 80 blocks to the payer:
  coinbase outputs unlock after 60 blocks, and a transfer needs 16 unlocked outputs on
  the chain for its ring. Monero locks received outputs for 10 blocks: mine 10 after a
  payment before the hot wallet can spend it. A test that wants its own deposits and
  balance uses its own account of the hot wallet (:meth:`MoneroNodes.create_account`).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import signal
import subprocess
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
from tradeplane.domain.money import fmt_units
from tradeplane.platform.servers import free_port

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


class ChainNodeError(RuntimeError):
    """A regtest node could not be started or answered an error; the message ends with
    the tail of its log when there is one."""


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
        body = {"jsonrpc": self.version, "id": 1, "method": method,
                "params": {} if params is None and self.version == "2.0" else params or []}
        resp = self._http.post(self.url, content=json.dumps(body),
                               headers={"content-type": "application/json"})
        try:
            doc = json.loads(resp.content, parse_float=Decimal)
        except ValueError as e:
            raise ChainNodeError(f"{method} at {self.url}: HTTP {resp.status_code}: "
                                 f"{resp.text[:200]}") from e
        if doc.get("error"):
            raise ChainNodeError(f"{method} at {self.url}: {doc['error']}")
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
        with contextlib.suppress(httpx.TransportError, ChainNodeError):
            if ready():
                return
        time.sleep(0.1)
    raise ChainNodeError(f"{name} not ready within {START_TIMEOUT_S}s:\n{_tail(*logs)}")


def _start(args: list[str], output: Path) -> subprocess.Popen[bytes]:
    with output.open("ab") as out:
        # Own session: a Ctrl-C in the terminal reaches pytest, which stops us in order.
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ======================================================================================
# Litecoin
# ======================================================================================


@dataclass
class LitecoinNode:
    """A running ``litecoind -regtest``: RPC at ``url`` with ``user``/``password``."""

    url: str
    user: str
    password: str
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

    def config(self, *, wallet: str | None = None, **overrides: Any) -> BitcoinRpcConfig:
        """The adapter's settings for ``wallet`` (default ``hot``) on this node."""
        return BitcoinRpcConfig(url=self.url, username=self.user,
                                password=SecretStr(self.password),
                                wallet=wallet or self.wallet, **overrides)

    def adapter(self, *, wallet: str | None = None, **overrides: Any) -> BitcoinRpc:
        """A :class:`BitcoinRpc` on ``wallet`` (default ``hot``); close it after use."""
        return BitcoinRpc(self.config(wallet=wallet, **overrides))

    def close(self) -> None:
        for rpc in self._rpc.values():
            rpc.close()
        self._rpc.clear()


@contextlib.contextmanager
def running_litecoind(folder: Path) -> Iterator[LitecoinNode]:
    """litecoind in ``-regtest`` with wallets ``hot`` and ``payer`` and 120 blocks mined
    to the payer.

    Raises:
        ChainNodeError: litecoind missing, or it did not start.
    """
    binary = find_binary("litecoind", "litecoind")
    user, password = "tradeplane", secrets.token_hex(16)
    rpc_port = free_port()
    args = [
        binary, "-regtest", f"-datadir={folder}", "-server=1", "-listen=0", "-dnsseed=0",
        "-discover=0", "-upnp=0", "-printtoconsole=0", "-txindex=0",
        f"-rpcbind={HOST}", f"-rpcallowip={HOST}", f"-rpcport={rpc_port}",
        f"-rpcuser={user}", f"-rpcpassword={password}", "-vbparams=mweb:-2:0",
    ]
    proc = _start(args, folder / "litecoind.out")
    node = LitecoinNode(url=f"http://{HOST}:{rpc_port}", user=user, password=password,
                        folder=folder)
    try:
        _wait_until(lambda: node.rpc("getblockchaininfo") is not None, proc, "litecoind",
                    folder / "litecoind.out", node.log)
        node.rpc("createwallet", node.wallet)
        node.rpc("createwallet", node.payer_wallet)
        node.mine(LITECOIN_START_BLOCKS)
        yield node
    finally:
        with contextlib.suppress(Exception):
            node.rpc("stop")
        node.close()
        _stop(proc)


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
    wallet_password: str
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

    def close(self) -> None:
        for rpc in (self._daemon, self._hot, self._payer):
            if rpc is not None:
                rpc.close()


@contextlib.contextmanager
def running_monero(folder: Path) -> Iterator[MoneroNodes]:
    """monerod (regtest, offline, difficulty 1), the hot and the payer wallet-rpc with
    fresh wallets, and 80 blocks mined to the payer.

    Raises:
        ChainNodeError: a binary missing, or a process did not start.
    """
    monerod = find_binary("monerod", "monero")
    wallet_rpc = find_binary("monero-wallet-rpc", "monero")
    daemon_port = free_port()
    daemon_args = [
        monerod, "--regtest", "--offline", "--fixed-difficulty", "1",
        "--data-dir", str(folder / "monerod"), "--non-interactive", "--no-igd", "--no-zmq",
        "--rpc-bind-ip", HOST, "--rpc-bind-port", str(daemon_port),
        "--p2p-bind-ip", HOST, "--p2p-bind-port", str(free_port()),
        "--log-file", str(folder / "monerod.log"), "--log-level", "0",
        "--disable-dns-checkpoints", "--check-updates", "disabled", "--db-sync-mode", "fastest",
        "--max-concurrency", "2",
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
            (folder / name).mkdir()
            return [
                wallet_rpc, "--daemon-address", f"{HOST}:{daemon_port}", "--trusted-daemon",
                "--wallet-dir", str(folder / name), "--non-interactive",
                "--rpc-bind-ip", HOST, "--rpc-bind-port", str(port),
                "--shared-ringdb-dir", str(folder / name / "ringdb"),
                "--log-file", str(folder / f"{name}-rpc.log"), "--log-level", "0",
                "--max-concurrency", "2",
                *(["--rpc-login", login] if login else ["--disable-rpc-login"]),
            ]

        user, password = "tradeplane", secrets.token_hex(16)
        hot_port, payer_port = free_port(), free_port()
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
        # Creating a wallet derives its keys slowly (~3 s): make both at once.
        with httpx.Client(timeout=120.0) as plain, httpx.Client(
                timeout=120.0, auth=httpx.DigestAuth(user, password)) as digest:
            _create_wallets([(digest, nodes.wallet_url), (plain, nodes.payer_url)])
        nodes.payer_address = str(nodes.payer("get_address", account_index=0)["address"])
        nodes.mine(MONERO_START_BLOCKS)
        nodes.payer("refresh")
        yield nodes
    finally:
        if nodes is not None:
            for call in (nodes.hot, nodes.payer):
                with contextlib.suppress(Exception):
                    call("stop_wallet")
            nodes.close()
        for proc in reversed(procs):
            _stop(proc)


def _create_wallets(targets: list[tuple[httpx.Client, str]]) -> None:
    """``create_wallet`` named ``wallet`` (no password) on each wallet-rpc, concurrently."""

    def create(target: tuple[httpx.Client, str]) -> None:
        client, url = target
        body = {"jsonrpc": "2.0", "id": 1, "method": "create_wallet",
                "params": {"filename": "wallet", "language": "English"}}
        resp = client.post(f"{url}/json_rpc", json=body)
        doc = resp.json()
        if doc.get("error"):
            raise ChainNodeError(f"create_wallet at {url}: {doc['error']}")

    with ThreadPoolExecutor(len(targets)) as pool:
        list(pool.map(create, targets))
