"""The port every chain adapter implements: the little the custody services need of a node.

Bitcoin-family nodes (``adapters/chain_bitcoin.py``: Bitcoin Core's JSON-RPC, which
litecoind speaks too) and Monero (``adapters/chain_monero.py``: monero-wallet-rpc next to
monerod) answer the same questions; the watcher, withdrawals and reconciliation
(``wallets/``) only ever see this Protocol. Amounts are integer units of the asset
(10**-8, like every amount in tradeplane); an adapter converts its chain's native unit
(satoshi-like for Bitcoin-family, piconero for Monero) exactly, or refuses.

Deposits are identified by ``(chain, txid, index)``: the output index for Bitcoin-family
chains, the transfer's index within its transaction for Monero (see the adapter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tradeplane.domain.errors import InvalidInput, TradeplaneError, Unavailable


class ChainError(TradeplaneError):
    """The node failed or answered something unexpected (the adapter says which)."""


class ChainUnavailable(ChainError, Unavailable):
    """The node cannot be reached right now: retry later."""


class InvalidAddress(ChainError, InvalidInput):
    """An address that is not valid for this chain and network."""


class InsufficientFunds(ChainError):
    """The hot wallet cannot pay a send (amount plus network fee)."""


@dataclass(frozen=True, slots=True)
class Tip:
    height: int
    block_hash: str


@dataclass(frozen=True, slots=True)
class Incoming:
    """A payment to one of our deposit addresses, as the node currently sees it."""

    txid: str
    index: int  # output index (Bitcoin-family) or transfer index (Monero)
    address: str
    amount: int  # units (10**-8)
    confirmations: int  # 0 while unconfirmed
    block_hash: str | None  # None while unconfirmed
    height: int | None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What the node knows of a send we made."""

    txid: str
    confirmations: int
    fee: int  # units actually paid to the network
    block_hash: str | None


@dataclass(frozen=True, slots=True)
class Scan:
    """The result of ``incoming_since``: what arrived, and where to continue from."""

    incoming: list[Incoming]
    cursor: str  # opaque to callers: persist it and pass it back


class ChainAdapter(Protocol):
    """One wallet's view of its chain. Every method raises ``ChainUnavailable`` when the
    node is unreachable and ``ChainError`` on anything else unexpected."""

    chain: str  # e.g. "litecoin", "monero"
    asset: str  # e.g. "LTC", "XMR"

    async def tip(self) -> Tip:
        """The node's best block."""
        ...

    async def deposit_address(self, account: int, asset: str) -> str:
        """A receive address for ``account`` (labelled / tagged with it), new or the one
        already issued to it: the same account always gets the same address."""
        ...

    async def incoming_since(self, cursor: str | None, horizon: int) -> Scan:
        """Payments to our deposit addresses seen since ``cursor`` (None: from the
        start), re-reporting everything within the last ``horizon`` blocks so that the
        caller can follow confirmations and notice reorganisations. Never rescans from
        genesis once a cursor exists."""
        ...

    async def in_main_chain(self, block_hash: str) -> bool:
        """Whether ``block_hash`` is still on the best chain (False: orphaned)."""
        ...

    async def validate_address(self, address: str) -> bool:
        """Whether ``address`` can be paid on this chain and network."""
        ...

    async def estimate_fee(self, amount: int) -> int:
        """The network fee in units a send of ``amount`` would cost now (an estimate)."""
        ...

    async def send(self, address: str, amount: int, intent: str) -> str:
        """Pay ``amount`` units to ``address``, tagging the transaction with ``intent``
        (so that ``find_sent`` can find it after a crash); returns the txid.

        Raises:
            InvalidAddress, InsufficientFunds, ChainError.
        """
        ...

    async def find_sent(self, intent: str) -> str | None:
        """The txid of a send tagged ``intent``, if the wallet made one."""
        ...

    async def outgoing(self, txid: str) -> Outgoing | None:
        """Confirmations and fee of a send; None when the node no longer knows it."""
        ...

    async def rebroadcast(self, txid: str) -> bool:
        """Hand an unconfirmed send of ours to the network again, as the network may not
        have it: not in the node's mempool (a node killed before it relayed the send
        forgets its mempool, and one that resubmits its wallet's sends while it catches
        up with the chain finds their inputs missing: the send then waits in the wallet
        only), or in it but not relayed (a restarted node puts its wallet's sends back
        in its mempool without announcing them to its peers). True when it was handed
        again; False when there was nothing to do (confirmed, just sent) or the adapter
        cannot.

        Raises:
            ChainError: the node refused it (an input missing or spent elsewhere).
        """
        ...

    async def rescan(self, block_hash: str) -> bool:
        """Have the node's wallet read the chain again from ``block_hash`` on (a node
        killed with -9 may come back with a wallet that holds a confirmed payment as
        unconfirmed, though its block is on the main chain). True when it did; False
        when the adapter cannot.

        Raises:
            ChainError: the node refused (an unknown block).
        """
        ...

    async def balance(self) -> int:
        """The wallet's confirmed spendable balance in units."""
        ...

    async def close(self) -> None:
        ...
