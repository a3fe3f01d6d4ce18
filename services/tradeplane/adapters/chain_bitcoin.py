"""Bitcoin-family chain adapter: Bitcoin Core's JSON-RPC, as litecoind 0.21 speaks it.

One :class:`BitcoinRpc` is one loaded wallet of one node (``/wallet/<name>``) and
implements :class:`tradeplane.wallets.chain.ChainAdapter`:

* deposit addresses: ``getnewaddress`` labelled ``acct:<id>``; an account that already
  has one gets it back (``getaddressesbylabel``), so the label in the node's wallet is the
  only record needed.
* scanning: ``listsinceblock(cursor, target_confirmations=horizon + 1)``. The cursor is
  the ``lastblock`` it answers, the block ``horizon`` below the tip, so the next scan
  re-reports exactly the payments with up to ``horizon`` confirmations (and the mempool).
  If the cursor block was orphaned meanwhile, the node lists from the fork point.
* reorganisations: ``getblockheader``: ``confirmations == -1`` means off the best chain.
* fees: ``estimatesmartfee``; regtest (and a fresh node) has no estimate, then the
  configured ``fallback_fee_rate`` is used, for the estimate and passed as ``fee_rate`` to
  the send, so the node needs no ``-fallbackfee``.
* sends: ``sendtoaddress`` with ``comment`` = the intent. Bitcoin Core writes the comment
  into the wallet transaction in the same step that commits it, so a send is never
  untagged: ``find_sent`` searches ``listtransactions`` for it after a crash. With
  ``spend_min_conf``, the coins with fewer confirmations are locked (``lockunspent``)
  for the send's duration, so that it spends none a reorganisation can take away.
* rebroadcast: an unconfirmed send handed to the node again (``sendrawtransaction``),
  as a restarted node neither relays its wallet's sends nor keeps those it could not
  put back in its mempool.

Amounts: JSON numbers are parsed as Decimal (never float); a coin has 8 decimals like our
units, so conversion is exact and an amount with more decimals is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from tradeplane.adapters import jsonrpc
from tradeplane.adapters.jsonrpc import RpcError
from tradeplane.domain.money import AmountError, fmt_units, to_units
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

#: Label prefix of deposit addresses: ``acct:<account id>``.
LABEL_PREFIX = "acct:"

# Bitcoin Core's RPC error codes (src/rpc/protocol.h) that mean something to us.
RPC_INVALID_ADDRESS_OR_KEY = -5  # also "Block not found", "Invalid or non-wallet txid"
RPC_WALLET_ERROR = -4
RPC_WALLET_INSUFFICIENT_FUNDS = -6
RPC_WALLET_INVALID_LABEL_NAME = -11  # getaddressesbylabel: no address has the label yet
RPC_IN_WARMUP = -28
RPC_VERIFY_ALREADY_IN_CHAIN = -27

_LISTTRANSACTIONS_PAGE = 500
#: Seconds a send stays in the mempool before :meth:`BitcoinRpc.rebroadcast` announces
#: it to the node's peers again.
UNBROADCAST_GRACE_S = 5
_SATS_PER_COIN = Decimal(10) ** 8


@dataclass(frozen=True, slots=True)
class BitcoinRpcConfig:
    """How to reach one wallet of a Bitcoin-family node and how to pay its fees."""

    url: str
    """The node's RPC root, e.g. ``http://127.0.0.1:19443`` (no ``/wallet/`` part)."""
    username: str
    password: SecretStr = field(repr=False)
    wallet: str = ""
    """The loaded wallet's name; empty: the node's only (default) wallet."""
    chain: str = "litecoin"
    asset: str = "LTC"
    conf_target: int = 6
    """Blocks within which a send should confirm (``estimatesmartfee``'s target)."""
    fallback_fee_rate: int = 10
    """sat/vB used when the node has no estimate (regtest, a fresh node). Litecoin's
    wallet refuses less than 10 (its ``-mintxfee`` of 0.0001 LTC/kvB)."""
    typical_vsize: int = 141
    """vbytes of a typical send (one P2WPKH input, two outputs), for ``estimate_fee``."""
    address_type: str = ""
    """``getnewaddress``'s address type; empty: the node's ``-addresstype`` (bech32)."""
    spend_min_conf: int = 0
    """Sends spend only coins with at least this many confirmations (the wallet's
    deposit confirmations): a coin in a block a reorganisation can still take away (a
    deposit not credited yet, which may be spent again elsewhere; the change of a send
    in such a block) would leave the send invalid, or an orphan no peer relays, and the
    withdrawal never confirmed. 0: whatever the node's wallet chooses."""
    timeout_s: float = 30.0


class BitcoinRpc:
    """A Bitcoin-family wallet over JSON-RPC (httpx, basic auth). Implements
    :class:`~tradeplane.wallets.chain.ChainAdapter`; every method raises
    ``ChainUnavailable`` when the node cannot be reached (or is warming up) and
    ``ChainError`` (an :class:`RpcError` for JSON-RPC errors) on anything else."""

    def __init__(self, cfg: BitcoinRpcConfig, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.cfg = cfg
        self.chain = cfg.chain
        self.asset = cfg.asset
        root = httpx.URL(cfg.url.rstrip("/"))
        # Never the URL as given in messages: it may carry a user:password part.
        self._where = f"{cfg.chain} node {root.host}:{root.port or ''}"
        self._node_url = root
        self._wallet_url = (httpx.URL(f"{root}/wallet/{quote(cfg.wallet, safe='')}")
                            if cfg.wallet else root)
        self._http = httpx.AsyncClient(
            auth=httpx.BasicAuth(cfg.username, cfg.password.get_secret_value()),
            timeout=cfg.timeout_s, transport=transport,
        )
        self._ids = itertools.count(1)
        # One deposit address per account: look-up-then-create must not interleave.
        self._address_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"BitcoinRpc({self._where}, wallet={self.cfg.wallet!r})"

    # ------------------------------------------------------------------ JSON-RPC
    async def call(self, method: str, params: dict[str, Any] | list[Any] | None = None, *,
                   wallet: bool = True) -> Any:
        """Call ``method`` (on the wallet endpoint unless ``wallet=False``) and return its
        result, JSON numbers as Decimal.

        Raises:
            ChainUnavailable: no connection, timeout, node warming up or overloaded.
            RpcError: the node answered with a JSON-RPC error.
            ChainError: credentials refused, or an answer that is not JSON-RPC.
        """
        try:
            return await jsonrpc.call(
                self._http, self._wallet_url if wallet else self._node_url, self._where,
                method, [] if params is None else params, version="1.0",
                request_id=next(self._ids), unavailable=lambda status: status == 503,
            )
        except RpcError as e:
            if e.code == RPC_IN_WARMUP:
                raise ChainUnavailable(f"{self._where}: {method}: warming up: {e.message}") \
                    from e
            raise

    # ------------------------------------------------------------------ the port
    async def tip(self) -> Tip:
        info = await self.call("getblockchaininfo", wallet=False)
        return Tip(height=int(info["blocks"]), block_hash=str(info["bestblockhash"]))

    async def deposit_address(self, account: int, asset: str) -> str:
        """The address labelled ``acct:<account>`` (the smallest one, should there ever
        be two), created with ``getnewaddress`` on first use.

        Raises:
            ChainError: ``asset`` is not this wallet's asset; as :meth:`call`.
        """
        self._check_asset(asset)
        label = f"{LABEL_PREFIX}{account}"
        async with self._address_lock:
            try:
                found = await self.call("getaddressesbylabel", {"label": label})
            except RpcError as e:
                if e.code != RPC_WALLET_INVALID_LABEL_NAME:
                    raise
                found = {}
            receive = sorted(a for a, info in found.items() if info.get("purpose") == "receive")
            if receive:
                return str(receive[0])
            params: dict[str, Any] = {"label": label}
            if self.cfg.address_type:
                params["address_type"] = self.cfg.address_type
            return str(await self.call("getnewaddress", params))

    async def incoming_since(self, cursor: str | None, horizon: int) -> Scan:
        """Receipts to ``acct:`` addresses in blocks after ``cursor`` (and in the
        mempool); the new cursor is the block ``horizon`` below the tip. A transaction
        that conflicts with one in the chain (negative confirmations) can never confirm
        and is left out."""
        if horizon < 0:
            raise ValueError(f"horizon must be >= 0, not {horizon}")
        params: dict[str, Any] = {"target_confirmations": horizon + 1,
                                  "include_removed": False}
        if cursor:
            params["blockhash"] = cursor
        res = await self.call("listsinceblock", params)
        incoming = []
        for tx in res["transactions"]:
            if tx.get("category") != "receive":
                continue
            if not str(tx.get("label", "")).startswith(LABEL_PREFIX):
                continue
            confirmations = int(tx.get("confirmations", 0))
            if confirmations < 0:
                continue
            confirmed = confirmations > 0
            incoming.append(Incoming(
                txid=str(tx["txid"]), index=int(tx["vout"]), address=str(tx["address"]),
                amount=self._units(tx["amount"]), confirmations=confirmations,
                block_hash=str(tx["blockhash"]) if confirmed else None,
                height=int(tx["blockheight"]) if confirmed else None,
            ))
        return Scan(incoming=incoming, cursor=str(res["lastblock"]))

    async def in_main_chain(self, block_hash: str) -> bool:
        try:
            header = await self.call("getblockheader", {"blockhash": block_hash,
                                                        "verbose": True}, wallet=False)
        except RpcError as e:
            if e.code == RPC_INVALID_ADDRESS_OR_KEY:  # Block not found
                return False
            raise
        return int(header["confirmations"]) >= 0

    async def validate_address(self, address: str) -> bool:
        """``validateaddress``; a Litecoin MWEB address is refused (our sends are plain
        transactions and the regtest nodes run without MWEB)."""
        res = await self.call("validateaddress", {"address": address}, wallet=False)
        return bool(res.get("isvalid")) and not res.get("ismweb", False)

    async def estimate_fee(self, amount: int) -> int:
        """Fee rate (``estimatesmartfee`` or the fallback) times ``typical_vsize``,
        rounded up; ``amount`` does not change it (one input is assumed)."""
        rate = await self._fee_rate()
        sat_per_vb = rate if rate is not None else Decimal(self.cfg.fallback_fee_rate)
        return math.ceil(sat_per_vb * self.cfg.typical_vsize)

    async def send(self, address: str, amount: int, intent: str) -> str:
        if amount <= 0:
            raise ChainError(f"{self._where}: send of {amount} units: must be positive")
        params: dict[str, Any] = {"address": address, "amount": fmt_units(amount),
                                  "comment": intent}
        if await self._fee_rate() is None:
            params["fee_rate"] = self.cfg.fallback_fee_rate
        else:
            params["conf_target"] = self.cfg.conf_target
        young = await self._lock_young()
        try:
            return str(await self.call("sendtoaddress", params))
        except RpcError as e:
            if e.code == RPC_INVALID_ADDRESS_OR_KEY:
                raise InvalidAddress(f"{self._where}: {e.message}: {address!r}") from e
            if e.code == RPC_WALLET_INSUFFICIENT_FUNDS or (
                    e.code == RPC_WALLET_ERROR and "insufficient funds" in e.message.lower()):
                raise InsufficientFunds(f"{self._where}: {e.message}") from e
            raise
        finally:
            if young:
                # Locks live in the node's memory only: a node that died took them along.
                with contextlib.suppress(ChainUnavailable):
                    await self.call("lockunspent", {"unlock": True, "transactions": young})

    async def _lock_young(self) -> list[dict[str, Any]]:
        """Lock the wallet's coins with fewer than ``spend_min_conf`` confirmations
        (so that the next send cannot choose them); the locked outpoints."""
        if self.cfg.spend_min_conf <= 0:
            return []
        unspent = await self.call("listunspent", {
            "minconf": 0, "maxconf": self.cfg.spend_min_conf - 1})
        young = [{"txid": str(u["txid"]), "vout": int(u["vout"])} for u in unspent]
        if young:
            await self.call("lockunspent", {"unlock": False, "transactions": young})
        return young

    async def find_sent(self, intent: str) -> str | None:
        """Newest first through ``listtransactions``, a page at a time."""
        skip = 0
        while True:
            page = await self.call("listtransactions", {
                "label": "*", "count": _LISTTRANSACTIONS_PAGE, "skip": skip})
            for tx in reversed(page):
                if tx.get("category") == "send" and tx.get("comment") == intent:
                    return str(tx["txid"])
            if len(page) < _LISTTRANSACTIONS_PAGE:
                return None
            skip += _LISTTRANSACTIONS_PAGE

    async def outgoing(self, txid: str) -> Outgoing | None:
        """``gettransaction``: None for a txid the wallet does not know. A send that a
        conflicting transaction displaced (negative confirmations) reports 0.

        Raises:
            ChainError: ``txid`` is not a send of this wallet; as :meth:`call`.
        """
        try:
            tx = await self.call("gettransaction", {"txid": txid})
        except RpcError as e:
            if e.code == RPC_INVALID_ADDRESS_OR_KEY:
                return None
            raise
        if "fee" not in tx:
            raise ChainError(f"{self._where}: {txid} is not a send of this wallet")
        confirmations = int(tx.get("confirmations", 0))
        return Outgoing(txid=txid, confirmations=max(0, confirmations),
                        fee=-self._units(tx["fee"]),
                        block_hash=str(tx["blockhash"]) if confirmations > 0 else None)

    async def rebroadcast(self, txid: str) -> bool:
        """Unconfirmed, and not in the mempool or in it for UNBROADCAST_GRACE_S:
        ``sendrawtransaction`` of the wallet's copy, which (re)enters the mempool and
        announces it to every peer connected now that is not known to have it. Why: a
        restarted node puts its wallet's unconfirmed sends back in its mempool without
        relaying them (Bitcoin Core's wallet relays them again only after 30 minutes
        or more), and leaves out those whose inputs it has not caught up with.

        Raises:
            ChainError: the node refused it; ``txid`` is not this wallet's.
        """
        try:
            entry = await self.call("getmempoolentry", {"txid": txid}, wallet=False)
        except RpcError as e:
            if e.code != RPC_INVALID_ADDRESS_OR_KEY:  # Transaction not in mempool
                raise
        else:
            if time.time() - int(entry.get("time", 0)) < UNBROADCAST_GRACE_S:
                return False
        tx = await self.call("gettransaction", {"txid": txid})
        if int(tx.get("confirmations", 0)) != 0:
            return False
        try:
            await self.call("sendrawtransaction", {"hexstring": tx["hex"]}, wallet=False)
        except RpcError as e:
            if e.code == RPC_VERIFY_ALREADY_IN_CHAIN:  # confirmed meanwhile
                return False
            raise ChainError(f"{self._where}: {txid} refused again: {e.message}") from e
        return True

    async def rescan(self, block_hash: str) -> bool:
        """``rescanblockchain`` from the block's height to the tip (it waits for the
        end: quick from a recent block; ``timeout_s`` bounds it).

        Raises:
            ChainError: an unknown block; as :meth:`call`.
        """
        header = await self.call("getblockheader", {"blockhash": block_hash, "verbose": True},
                                 wallet=False)
        await self.call("rescanblockchain", {"start_height": int(header["height"])})
        return True

    async def balance(self) -> int:
        """``getbalances``' trusted balance: confirmed coins plus the change of our own
        unconfirmed sends (spendable by Bitcoin Core); not unconfirmed receipts."""
        res = await self.call("getbalances")
        return self._units(res["mine"]["trusted"])

    async def close(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ helpers
    async def _fee_rate(self) -> Decimal | None:
        """The node's estimate in sat/vB, or None when it has none."""
        res = await self.call("estimatesmartfee", {"conf_target": self.cfg.conf_target},
                              wallet=False)
        per_kvb = res.get("feerate")
        if per_kvb is None or per_kvb <= 0:
            return None
        return Decimal(per_kvb) * _SATS_PER_COIN / 1000

    def _units(self, amount: Any) -> int:
        if not isinstance(amount, Decimal | int):
            raise ChainError(f"{self._where}: amount {amount!r} is not a number")
        try:
            return to_units(Decimal(amount))
        except AmountError as e:
            raise ChainError(f"{self._where}: amount {amount}: {e}") from e

    def _check_asset(self, asset: str) -> None:
        if asset != self.asset:
            raise ChainError(f"{self._where}: this wallet holds {self.asset}, not {asset}")
