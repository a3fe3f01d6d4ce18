"""Monero chain adapter: monero-wallet-rpc for the wallet, monerod for the chain.

One :class:`MoneroWalletRpc` is one account (``account_index``, 0 by default) of the wallet
that a monero-wallet-rpc process has open, and implements
:class:`tradeplane.wallets.chain.ChainAdapter`:

* deposit addresses: one subaddress per exchange account, made with ``create_address``
  and labelled ``acct:<id>``; the wallet file keeps the label (we ``store`` right after),
  so the same account finds its subaddress again through ``get_address``.
* scanning: ``refresh`` (every call that reads the wallet refreshes it first), then
  ``get_transfers`` (``in`` and ``pool``) of our labelled subaddresses. The cursor is the
  wallet's top block height; the next scan asks for heights above ``cursor - horizon``
  (``min_height``), never from genesis. Confirmations come from the wallet; block hashes
  from monerod (``get_block_headers_range``). A deposit is identified by ``(txid,
  subaddress index)``: monero-wallet-rpc sums all outputs of a transaction that go to one
  subaddress into one transfer, so ``Incoming.index`` is the subaddress's minor index.
* reorganisations: monerod's ``get_block_header_by_hash`` (``orphan_status``); the wallet
  RPC has no such call, hence the monerod URL.
* sends: ``transfer`` with ``do_not_relay``, then the intent as the transaction's note
  (``set_tx_notes``) and ``store``, and only then ``relay_tx``. A crash before the relay
  leaves nothing on the network (and ``find_sent`` finds nothing, so the caller may send
  again); after it, the note is already on disk, so ``find_sent`` (``get_transfers`` out
  and pending, by note) finds the transaction. Sends are serialised per adapter: two
  unrelayed transactions could otherwise pick the same inputs.

Units: 1 XMR = 10**12 piconero = 10**8 units, so 1 unit = 10**4 piconero. A send of units
is exact. An incoming amount that is not a multiple of 10**4 piconero is credited rounded
DOWN to whole units (the dust stays in the hot wallet, the ledger never owes more than
arrived); a fee is rounded UP (never charge less than was paid).
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from tradeplane.adapters import jsonrpc
from tradeplane.adapters.jsonrpc import RpcError
from tradeplane.wallets.chain import (
    ChainError,
    ChainUnavailable,
    Incoming,
    InsufficientFunds,
    InvalidAddress,
    Outgoing,
    Scan,
    Tip,
)

#: Label prefix of deposit subaddresses: ``acct:<account id>``.
LABEL_PREFIX = "acct:"
#: Piconero per unit (10**12 piconero per XMR, 10**8 units per XMR).
PICONERO_PER_UNIT = 10**4

# monero-wallet-rpc error codes (src/wallet/wallet_rpc_server_error_codes.h).
WALLET_WRONG_ADDRESS = -2
WALLET_DAEMON_IS_BUSY = -3
WALLET_WRONG_TXID = -8
WALLET_NOT_ENOUGH_MONEY = -17
WALLET_NOT_ENOUGH_UNLOCKED_MONEY = -37
WALLET_NO_DAEMON_CONNECTION = -38
# monerod: "can't get block by hash" (CORE_RPC_ERROR_CODE_INTERNAL_ERROR).
DAEMON_INTERNAL_ERROR = -5

_HEADERS_RANGE_MAX = 1000


@dataclass(frozen=True, slots=True)
class MoneroRpcConfig:
    """Where monero-wallet-rpc and monerod listen, and how to pay fees."""

    wallet_url: str
    """monero-wallet-rpc's root, e.g. ``http://127.0.0.1:18083`` (``/json_rpc`` is added)."""
    daemon_url: str
    """monerod's RPC root, e.g. ``http://127.0.0.1:18081``."""
    username: str = ""
    """monero-wallet-rpc's ``--rpc-login`` user (HTTP digest); empty: no login."""
    password: SecretStr = field(default_factory=lambda: SecretStr(""), repr=False)
    daemon_username: str = ""
    """monerod's ``--rpc-login`` user (HTTP digest); empty: no login."""
    daemon_password: SecretStr = field(default_factory=lambda: SecretStr(""), repr=False)
    chain: str = "monero"
    asset: str = "XMR"
    account_index: int = 0
    """The wallet account whose subaddresses are the deposit addresses and which pays."""
    priority: int = 1
    """``transfer`` priority 1..4 (fee multiplier level); the estimate uses the same."""
    typical_weight: int = 2200
    """Weight of a typical send (two inputs at most, two outputs), for ``estimate_fee``."""
    timeout_s: float = 60.0
    """Per call; ``transfer`` builds proofs and ``refresh`` may scan many blocks."""


class MoneroWalletRpc:
    """A Monero wallet account over monero-wallet-rpc plus monerod (httpx, optional
    digest auth). Implements :class:`~tradeplane.wallets.chain.ChainAdapter`; every
    method raises ``ChainUnavailable`` when either process cannot be reached or the
    wallet has lost its daemon, and ``ChainError`` (an :class:`RpcError` for JSON-RPC
    errors) on anything else."""

    def __init__(self, cfg: MoneroRpcConfig, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.cfg = cfg
        self.chain = cfg.chain
        self.asset = cfg.asset
        wallet = httpx.URL(cfg.wallet_url.rstrip("/"))
        daemon = httpx.URL(cfg.daemon_url.rstrip("/"))
        # Never the URLs as given in messages: they may carry a user:password part.
        self._wallet_where = f"monero-wallet-rpc {wallet.host}:{wallet.port or ''}"
        self._daemon_where = f"monerod {daemon.host}:{daemon.port or ''}"
        self._wallet_url = httpx.URL(f"{wallet}/json_rpc")
        self._daemon_url = httpx.URL(f"{daemon}/json_rpc")
        self._wallet_http = httpx.AsyncClient(
            auth=_digest(cfg.username, cfg.password), timeout=cfg.timeout_s,
            transport=transport)
        self._daemon_http = httpx.AsyncClient(
            auth=_digest(cfg.daemon_username, cfg.daemon_password), timeout=cfg.timeout_s,
            transport=transport)
        self._ids = itertools.count(1)
        self._address_lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        self._by_account: dict[int, str] = {}  # exchange account -> its subaddress
        self._deposit_minors: dict[int, bool] = {}  # subaddress minor -> labelled acct:?

    def __repr__(self) -> str:
        return (f"MoneroWalletRpc({self._wallet_where}, {self._daemon_where}, "
                f"account_index={self.cfg.account_index})")

    # ------------------------------------------------------------------ JSON-RPC
    async def wallet_call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call monero-wallet-rpc's ``method``; returns its result.

        Raises:
            ChainUnavailable: no connection or timeout; the wallet has no daemon or the
                daemon is busy.
            RpcError: any other JSON-RPC error.
            ChainError: credentials refused, or an answer that is not JSON-RPC.
        """
        try:
            return await self._call(self._wallet_http, self._wallet_url, self._wallet_where,
                                    method, params)
        except RpcError as e:
            if e.code in (WALLET_NO_DAEMON_CONNECTION, WALLET_DAEMON_IS_BUSY):
                raise ChainUnavailable(f"{self._wallet_where}: {e}") from e
            raise

    async def daemon_call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call monerod's JSON-RPC ``method``; raises as :meth:`wallet_call`."""
        return await self._call(self._daemon_http, self._daemon_url, self._daemon_where,
                                method, params)

    async def _call(self, http: httpx.AsyncClient, url: httpx.URL, where: str, method: str,
                    params: dict[str, Any] | None) -> Any:
        result = await jsonrpc.call(http, url, where, method, params or {}, version="2.0",
                                    request_id=next(self._ids),
                                    unavailable=lambda status: status >= 500)
        if not isinstance(result, dict):
            raise ChainError(f"{where}: {method}: not a JSON-RPC answer")
        return result

    # ------------------------------------------------------------------ the port
    async def tip(self) -> Tip:
        header = (await self.daemon_call("get_last_block_header"))["block_header"]
        return Tip(height=int(header["height"]), block_hash=str(header["hash"]))

    async def deposit_address(self, account: int, asset: str) -> str:
        """The subaddress labelled ``acct:<account>`` (the lowest index, should there ever
        be two), created and stored on first use.

        Raises:
            ChainError: ``asset`` is not this wallet's asset; as :meth:`wallet_call`.
        """
        if asset != self.asset:
            raise ChainError(f"{self._wallet_where}: this wallet holds {self.asset}, "
                             f"not {asset}")
        async with self._address_lock:
            if account not in self._by_account:
                await self._load_labels()
            if account not in self._by_account:
                made = await self.wallet_call("create_address", {
                    "account_index": self.cfg.account_index, "label": f"{LABEL_PREFIX}{account}"})
                # Persist the label now: a wallet-rpc crash must not forget whose it is.
                await self.wallet_call("store")
                self._by_account[account] = str(made["address"])
                self._deposit_minors[int(made["address_index"])] = True
            return self._by_account[account]

    async def incoming_since(self, cursor: str | None, horizon: int) -> Scan:
        """Transfers into our labelled subaddresses: in the pool, and in blocks above
        ``cursor - horizon`` (all of them without a cursor). The new cursor is the
        wallet's top block height after a ``refresh``.

        Raises:
            ValueError: ``horizon`` is negative or ``cursor`` is not one of ours.
        """
        if horizon < 0:
            raise ValueError(f"horizon must be >= 0, not {horizon}")
        await self._refresh()
        top = int((await self.wallet_call("get_height"))["height"]) - 1
        params: dict[str, Any] = {"in": True, "pool": True,
                                  "account_index": self.cfg.account_index}
        if cursor:
            params |= {"filter_by_height": True,
                       "min_height": max(0, int(cursor) - horizon)}  # heights above it
        res = await self.wallet_call("get_transfers", params)
        entries = [*res.get("in", []), *res.get("pool", [])]
        minors = {int(e["subaddr_index"]["minor"]) for e in entries
                  if int(e["subaddr_index"]["major"]) == self.cfg.account_index}
        ours = await self._labelled(minors)
        transfers = [e for e in entries
                     if int(e["subaddr_index"]["major"]) == self.cfg.account_index
                     and int(e["subaddr_index"]["minor"]) in ours]
        hashes = await self._block_hashes(
            int(e["height"]) for e in transfers if _confirmations(e) > 0)
        incoming = []
        for e in transfers:
            confirmations = _confirmations(e)
            height = int(e["height"]) if confirmations > 0 else None
            incoming.append(Incoming(
                txid=str(e["txid"]), index=int(e["subaddr_index"]["minor"]),
                address=str(e["address"]), amount=int(e["amount"]) // PICONERO_PER_UNIT,
                confirmations=confirmations, height=height,
                block_hash=hashes[height] if height is not None else None,
            ))
        return Scan(incoming=incoming, cursor=str(top))

    async def in_main_chain(self, block_hash: str) -> bool:
        try:
            res = await self.daemon_call("get_block_header_by_hash", {"hash": block_hash})
        except RpcError as e:
            if e.code == DAEMON_INTERNAL_ERROR:  # can't get block by hash: unknown
                return False
            raise
        return not bool(res["block_header"].get("orphan_status", False))

    async def validate_address(self, address: str) -> bool:
        """An address of the wallet's network (a regtest wallet uses mainnet addresses),
        standard, integrated or subaddress; no OpenAlias."""
        res = await self.wallet_call("validate_address", {
            "address": address, "any_net_type": False, "allow_openalias": False})
        return bool(res.get("valid"))

    async def estimate_fee(self, amount: int) -> int:
        """monerod's per-byte fee at ``priority`` times ``typical_weight``, quantised as
        the wallet does, rounded up to units; ``amount`` does not change it."""
        res = await self.daemon_call("get_fee_estimate")
        fees = res.get("fees") or []
        per_byte = int(fees[self.cfg.priority - 1]) if len(fees) >= self.cfg.priority \
            else int(res["fee"])
        mask = int(res.get("quantization_mask") or 1)
        piconero = math.ceil(per_byte * self.cfg.typical_weight / mask) * mask
        return -(-piconero // PICONERO_PER_UNIT)

    async def send(self, address: str, amount: int, intent: str) -> str:
        if amount <= 0:
            raise ChainError(f"{self._wallet_where}: send of {amount} units: must be positive")
        async with self._send_lock:
            await self._refresh()
            try:
                made = await self.wallet_call("transfer", {
                    "destinations": [{"address": address,
                                      "amount": amount * PICONERO_PER_UNIT}],
                    "account_index": self.cfg.account_index, "priority": self.cfg.priority,
                    "do_not_relay": True, "get_tx_metadata": True,
                })
            except RpcError as e:
                if e.code == WALLET_WRONG_ADDRESS:
                    raise InvalidAddress(f"{self._wallet_where}: {e.message}") from e
                if e.code in (WALLET_NOT_ENOUGH_MONEY, WALLET_NOT_ENOUGH_UNLOCKED_MONEY):
                    raise InsufficientFunds(f"{self._wallet_where}: {e.message}") from e
                raise
            txid = str(made["tx_hash"])
            await self.wallet_call("set_tx_notes", {"txids": [txid], "notes": [intent]})
            await self.wallet_call("store")
            relayed = await self.wallet_call("relay_tx", {"hex": made["tx_metadata"]})
            return str(relayed.get("tx_hash") or txid)

    async def find_sent(self, intent: str) -> str | None:
        await self._refresh()
        res = await self.wallet_call("get_transfers", {
            "out": True, "pending": True, "account_index": self.cfg.account_index})
        for e in [*res.get("pending", []), *res.get("out", [])]:
            if e.get("note") == intent:
                return str(e["txid"])
        return None

    async def outgoing(self, txid: str) -> Outgoing | None:
        """``get_transfer_by_txid``: None for a txid the wallet does not know or whose
        transaction failed (the daemon refused it).

        Raises:
            ChainError: ``txid`` is not a send of this wallet; as :meth:`wallet_call`.
        """
        await self._refresh()
        try:
            res = await self.wallet_call("get_transfer_by_txid", {
                "txid": txid, "account_index": self.cfg.account_index})
        except RpcError as e:
            if e.code == WALLET_WRONG_TXID:
                return None
            raise
        t = res["transfer"]
        kind = t.get("type")
        if kind == "failed":
            return None
        if kind not in ("out", "pending"):
            raise ChainError(f"{self._wallet_where}: {txid} is not a send of this wallet")
        confirmations = _confirmations(t)
        block_hash = None
        if confirmations > 0:
            block_hash = (await self._block_hashes([int(t["height"])]))[int(t["height"])]
        return Outgoing(txid=txid, confirmations=confirmations,
                        fee=-(-int(t["fee"]) // PICONERO_PER_UNIT), block_hash=block_hash)

    async def rebroadcast(self, txid: str) -> bool:
        """Not done: monero-wallet-rpc has no call that relays a transaction it already
        sent (``relay_tx`` takes the metadata a ``do_not_relay`` transfer returns, which
        is not kept). Always False: a send the daemon lost stays ON_CHAIN with no
        confirmations, which the withdrawal processor logs."""
        return False

    async def rescan(self, block_hash: str) -> bool:
        """Not done: monero-wallet-rpc rescans only from the wallet's restore height
        (``rescan_blockchain``, every block since), too heavy to run from the watcher.
        Always False."""
        return False

    async def balance(self) -> int:
        """The account's balance, rounded down to units: every confirmed output, locked
        or not, plus the change of our own pending sends. Monero locks received outputs
        and change for 10 blocks; counting them keeps holdings comparable with the ledger
        right after a send (as Bitcoin's trusted balance is). What can be spent right now
        is :meth:`unlocked_balance`."""
        await self._refresh()
        res = await self.wallet_call("get_balance", {"account_index": self.cfg.account_index})
        return int(res["balance"]) // PICONERO_PER_UNIT

    async def unlocked_balance(self) -> int:
        """What the account can spend right now, rounded down to units."""
        await self._refresh()
        res = await self.wallet_call("get_balance", {"account_index": self.cfg.account_index})
        return int(res["unlocked_balance"]) // PICONERO_PER_UNIT

    async def close(self) -> None:
        await self._wallet_http.aclose()
        await self._daemon_http.aclose()

    # ------------------------------------------------------------------ helpers
    async def _refresh(self) -> None:
        """Bring the wallet up to monerod's tip first: monero-wallet-rpc refreshes by
        itself only every 20 s, and every answer here should be as of now."""
        await self.wallet_call("refresh")

    async def _load_labels(self) -> None:
        res = await self.wallet_call("get_address", {"account_index": self.cfg.account_index})
        for a in sorted(res.get("addresses", []), key=lambda a: int(a["address_index"]),
                        reverse=True):  # lowest index wins
            minor, label = int(a["address_index"]), str(a.get("label", ""))
            self._deposit_minors[minor] = label.startswith(LABEL_PREFIX)
            account = _account_of(label)
            if account is not None:
                self._by_account[account] = str(a["address"])

    async def _labelled(self, minors: set[int]) -> set[int]:
        """Which of these subaddress indices are deposit addresses (labelled ``acct:``)."""
        unknown = sorted(m for m in minors if m not in self._deposit_minors)
        if unknown:
            res = await self.wallet_call("get_address", {
                "account_index": self.cfg.account_index, "address_index": unknown})
            for a in res.get("addresses", []):
                self._deposit_minors[int(a["address_index"])] = str(
                    a.get("label", "")).startswith(LABEL_PREFIX)
        return {m for m in minors if self._deposit_minors.get(m)}

    async def _block_hashes(self, heights: Iterable[int]) -> dict[int, str]:
        """Main-chain block hash at each height, from monerod."""
        wanted = sorted(set(heights))
        found: dict[int, str] = {}
        if not wanted:
            return found
        if wanted[-1] - wanted[0] < _HEADERS_RANGE_MAX:
            res = await self.daemon_call("get_block_headers_range", {
                "start_height": wanted[0], "end_height": wanted[-1]})
            found = {int(h["height"]): str(h["hash"]) for h in res["headers"]}
        else:
            for height in wanted:
                res = await self.daemon_call("get_block_header_by_height", {"height": height})
                found[height] = str(res["block_header"]["hash"])
        missing = [h for h in wanted if h not in found]
        if missing:
            raise ChainError(f"{self._daemon_where}: no block header at height {missing[0]}")
        return found


def _digest(username: str, password: SecretStr) -> httpx.DigestAuth | None:
    return httpx.DigestAuth(username, password.get_secret_value()) if username else None


def _confirmations(entry: dict[str, Any]) -> int:
    """A transfer's confirmations: 0 in the pool or pending (height 0)."""
    if int(entry.get("height", 0)) <= 0:
        return 0
    return max(0, int(entry.get("confirmations", 0)))


def _account_of(label: str) -> int | None:
    if not label.startswith(LABEL_PREFIX):
        return None
    try:
        return int(label[len(LABEL_PREFIX):])
    except ValueError:
        return None
