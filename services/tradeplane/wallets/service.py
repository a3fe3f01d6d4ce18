"""The wallet-watcher process: one wallet's deposit watcher, withdrawal processor,
reconciliation and the gateway's requests to its node, in one asyncio loop.

The gateway never talks to a node. What it needs from one comes by NATS request/reply to
this process: ``wallet.<NAME>.address`` (an account's deposit address, created on first
request and stored in ``deposit_addresses`` BEFORE it is answered, so a payment to it is
always attributed) and ``wallet.<NAME>.validate`` (whether a withdrawal address is valid
for the chain). Requests and replies are JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tradeplane.adapters import db
from tradeplane.adapters.bus import Bus
from tradeplane.adapters.custody import NatsWalletBus, PgCustodyStore
from tradeplane.config import Settings
from tradeplane.domain.custody import WalletSpec
from tradeplane.domain.errors import TradeplaneError
from tradeplane.usecases.custody import CustodyCases
from tradeplane.wallets.chain import ChainAdapter, ChainError
from tradeplane.wallets.ports import CredentialSource, WalletBus, WalletStore
from tradeplane.wallets.reconcile import run_reconciliation
from tradeplane.wallets.settings import (
    NodeLogin,
    WalletSettings,
    load_spec,
    node_login,
)
from tradeplane.wallets.watcher import DepositWatcher
from tradeplane.wallets.withdrawals import WithdrawalProcessor

log = logging.getLogger("tradeplane.wallets")


def connect_chain(spec: WalletSpec, login: NodeLogin) -> ChainAdapter:
    """The chain adapter for ``spec``'s family, logged in as ``login``."""
    if spec.family == "monero":
        from tradeplane.adapters.chain_monero import MoneroRpcConfig, MoneroWalletRpc

        return MoneroWalletRpc(MoneroRpcConfig(
            wallet_url=login.url, daemon_url=spec.daemon_url, username=login.username,
            password=login.password, chain=spec.chain, asset=spec.asset,
            account_index=spec.account_index,
        ))
    from tradeplane.adapters.chain_bitcoin import BitcoinRpc, BitcoinRpcConfig

    return BitcoinRpc(BitcoinRpcConfig(
        url=login.url, username=login.username, password=login.password,
        wallet=spec.rpc_wallet, chain=spec.chain, asset=spec.asset,
        # Withdrawals spend only coins as confirmed as a deposit before its credit.
        spend_min_conf=spec.confirmations,
    ))


class ChainAddresses:
    """The node as the custody use cases' ``AddressSource``: the watcher makes deposit
    addresses and validates withdrawal addresses on its own chain."""

    def __init__(self, chain: ChainAdapter) -> None:
        self.chain = chain

    async def new_address(self, wallet: WalletSpec, account: int) -> str:
        """Raises ChainError."""
        return await self.chain.deposit_address(account, wallet.asset)

    async def validate_address(self, wallet: WalletSpec, address: str) -> bool:
        """Raises ChainError."""
        return await self.chain.validate_address(address)


@dataclass
class Custody:
    """Everything one wallet-watcher runs, over its ports (tests build it around a chain
    and a store of their own; :func:`custody_over` wires the production adapters)."""

    spec: WalletSpec
    chain: ChainAdapter
    store: WalletStore
    bus: WalletBus | None
    settings: WalletSettings

    def __post_init__(self) -> None:
        self.watcher = DepositWatcher(self.spec, self.chain, self.store, self.bus)
        self.processor = WithdrawalProcessor(self.spec, self.chain, self.store,
                                             max_attempts=self.settings.wallet_max_send_attempts)
        self.cases = CustodyCases(self.store, ChainAddresses(self.chain))

    async def serve(self) -> list[Callable[[], Awaitable[None]]]:
        """Create the WALLETS stream and answer the gateway's requests (address,
        validation); returns the unsubscribe coroutines."""
        if self.bus is None:
            return []
        await self.bus.ensure_stream()
        return [
            await self.bus.serve(self.spec.name, "address", self.on_address),
            await self.bus.serve(self.spec.name, "validate", self.on_validate),
        ]

    async def run(self, stop: asyncio.Event) -> None:
        """Serve requests and run the three loops until ``stop``, in one task group. Each
        loop retries a failed pass with backoff (``wallets.loop.run_passes``); an error
        that escapes a loop ends them all and ``run`` raises it (the runner logs it on a
        CRITICAL line; the process exits non-zero and is restarted).

        Raises:
            ExceptionGroup: a loop died.
        """
        unsubscribe = await self.serve()
        s = self.settings
        log.info("wallet %s (%s %s on %s) watching", self.spec.name, self.spec.asset,
                 self.spec.network, self.spec.chain)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.watcher.run(stop, s.wallet_scan_interval_s),
                                  name=f"deposit-watcher-{self.spec.name}")
                # The processor announces withdrawal states it changed without waiting for
                # a scan.
                tasks.create_task(self.processor.run(
                    stop, s.wallet_withdraw_interval_s, after_pass=self.watcher.announce),
                    name=f"withdrawal-processor-{self.spec.name}")
                tasks.create_task(run_reconciliation(self.spec, self.chain, self.store, stop,
                                                     s.wallet_reconcile_interval_s),
                                  name=f"reconciliation-{self.spec.name}")
        finally:
            for unsub in unsubscribe:
                await unsub()

    async def on_address(self, data: bytes) -> bytes:
        """``{"account": N}`` -> ``{"address": "..."}`` or ``{"error": "..."}``."""
        try:
            account = int(json.loads(data)["account"])
            address = await self.cases.deposit_address(self.spec, account)
            log.info("wallet %s: deposit address for account %d issued", self.spec.name,
                     account)
            return json.dumps({"address": address}).encode()
        except (ValueError, KeyError, TypeError):
            return json.dumps({"error": "bad request"}).encode()
        except TradeplaneError as exc:  # the node, the database, an unknown account
            log.warning("wallet %s: deposit address not issued: %s", self.spec.name, exc)
            return json.dumps({"error": str(exc)}).encode()

    async def on_validate(self, data: bytes) -> bytes:
        """``{"address": "..."}`` -> ``{"valid": bool}`` or ``{"error": "..."}``."""
        try:
            address = str(json.loads(data)["address"])
            valid = await self.cases.addresses.validate_address(self.spec, address)
            return json.dumps({"valid": valid}).encode()
        except (ValueError, KeyError, TypeError):
            return json.dumps({"error": "bad request"}).encode()
        except ChainError as exc:
            return json.dumps({"error": str(exc)}).encode()


def custody_over(spec: WalletSpec, chain: ChainAdapter, pool: db.Pool, bus: Bus | None,
                 settings: WalletSettings) -> Custody:
    """The watcher's composition: custody's ports over PostgreSQL (``pool``) and NATS
    (``bus``; None: no requests served, no events published)."""
    return Custody(spec, chain, PgCustodyStore(pool),
                   None if bus is None else NatsWalletBus(bus), settings)


async def run_wallet_watcher(settings: Settings, ws: WalletSettings, wallet: str,
                             stop: asyncio.Event,
                             vault: CredentialSource | None = None) -> None:
    """``tradeplane wallet-watcher --wallet NAME``.

    Raises:
        WalletConfigError: no usable spec or credentials.
    """
    pool = await db.create_pool(settings.database_url, 4)
    try:
        spec = await load_spec(PgCustodyStore(pool), wallet, ws)
        chain = connect_chain(spec, await node_login(spec, ws, vault))
        bus = await Bus.connect(settings.nats_url, name=f"wallet-{wallet}",
                                replicas=settings.stream_replicas,
                                dedup_window_s=settings.dedup_window_s)
        try:
            await custody_over(spec, chain, pool, bus, ws).run(stop)
        finally:
            await bus.close()
            await chain.close()
    finally:
        await pool.close()
