"""Real regtest nodes for the wallet tests: litecoind, and monerod with two
monero-wallet-rpc processes, from Debian's ``litecoind`` and ``monero`` packages.

The node running code is the platform's own (``tradeplane.platform.chains``, which
``tradeplane up`` uses too); each test session starts its nodes on free ports in a
throw-away folder and stops them (then kills them, if need be) when the context exits. A
missing binary is an error that says which package to install (``bash .ci/run``
installs both), never a skip.

* :class:`LitecoinNode`: wallet ``hot`` is the exchange's (what the adapter uses unless
  a test makes its own with :meth:`LitecoinNode.create_wallet`); wallet ``payer`` holds
  the mined coins and pays deposits; blocks are mined on demand, never on their own.
* :class:`MoneroNodes`: monerod, the exchange's wallet (``hot``, behind an RPC login, so
  the adapter's digest auth is exercised) and the payer's wallet, which mines. A test
  that wants its own deposits and balance uses its own account of the hot wallet
  (:meth:`MoneroNodes.create_account`).
"""

from __future__ import annotations

from tradeplane.platform.chains import (
    LITECOIN_START_BLOCKS,
    MONERO_START_BLOCKS,
    PAYER_FEE_RATE,
    ChainNodeError,
    LitecoinNode,
    MoneroNodes,
    find_binary,
    running_litecoind,
    running_monero,
)

__all__ = [
    "LITECOIN_START_BLOCKS",
    "MONERO_START_BLOCKS",
    "PAYER_FEE_RATE",
    "ChainNodeError",
    "LitecoinNode",
    "MoneroNodes",
    "find_binary",
    "running_litecoind",
    "running_monero",
]
