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
from typing import TYPE_CHECKING

from tradeplane.adapters import db, wallets_db
from tradeplane.adapters.bus import (
    Bus,
    ensure_wallet_stream,
    serve_requests,
    wallet_request_subject,
)
from tradeplane.config import Settings
from tradeplane.domain.custody import WalletSpec
from tradeplane.wallets.chain import ChainAdapter, ChainError
from tradeplane.wallets.reconcile import run_reconciliation
from tradeplane.wallets.settings import (
    NodeLogin,
    WalletSettings,
    load_spec,
    node_login,
)
from tradeplane.wallets.watcher import DepositWatcher
from tradeplane.wallets.withdrawals import WithdrawalProcessor

if TYPE_CHECKING:
    from tradeplane.adapters.vault import VaultSession

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
    ))


@dataclass
class Custody:
    """Everything one wallet-watcher runs (tests build it around a chain of their own)."""

    spec: WalletSpec
    chain: ChainAdapter
    pool: db.Pool
    bus: Bus | None
    settings: WalletSettings

    def __post_init__(self) -> None:
        self.watcher = DepositWatcher(self.spec, self.chain, self.pool, self.bus)
        self.processor = WithdrawalProcessor(self.spec, self.chain, self.pool,
                                             max_attempts=self.settings.wallet_max_send_attempts)

    async def serve(self) -> list[Callable[[], Awaitable[None]]]:
        """Create the WALLETS stream and answer the gateway's requests (address,
        validation); returns the unsubscribe coroutines."""
        if self.bus is None:
            return []
        await ensure_wallet_stream(self.bus)
        return [
            await serve_requests(self.bus, wallet_request_subject(self.spec.name, "address"),
                                 self.on_address),
            await serve_requests(self.bus, wallet_request_subject(self.spec.name, "validate"),
                                 self.on_validate),
        ]

    async def run(self, stop: asyncio.Event) -> None:
        """Serve requests and run the three loops until ``stop``."""
        unsubscribe = await self.serve()
        s = self.settings
        # The processor announces withdrawal states it changed without waiting for a scan.
        tasks = [
            asyncio.create_task(self.watcher.run(stop, s.wallet_scan_interval_s)),
            asyncio.create_task(self.processor.run(
                stop, s.wallet_withdraw_interval_s, after_pass=self.watcher.announce)),
            asyncio.create_task(run_reconciliation(self.spec, self.chain, self.pool, stop,
                                                   s.wallet_reconcile_interval_s)),
        ]
        log.info("wallet %s (%s %s on %s) watching", self.spec.name, self.spec.asset,
                 self.spec.network, self.spec.chain)
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            for unsub in unsubscribe:
                await unsub()

    async def on_address(self, data: bytes) -> bytes:
        """``{"account": N}`` -> ``{"address": "..."}`` or ``{"error": "..."}``."""
        try:
            account = int(json.loads(data)["account"])
            known = await wallets_db.deposit_address(self.pool, self.spec.name, account)
            if known is not None:
                return json.dumps({"address": known}).encode()
            made = await self.chain.deposit_address(account, self.spec.asset)
            stored = await wallets_db.save_deposit_address(self.pool, self.spec.name, account,
                                                           made)
            log.info("wallet %s: deposit address for account %d issued", self.spec.name,
                     account)
            return json.dumps({"address": stored}).encode()
        except (ValueError, KeyError, TypeError):
            return json.dumps({"error": "bad request"}).encode()
        except (ChainError, db.DatabaseError) as exc:
            log.warning("wallet %s: deposit address not issued: %s", self.spec.name, exc)
            return json.dumps({"error": str(exc)}).encode()

    async def on_validate(self, data: bytes) -> bytes:
        """``{"address": "..."}`` -> ``{"valid": bool}`` or ``{"error": "..."}``."""
        try:
            address = str(json.loads(data)["address"])
            return json.dumps({"valid": await self.chain.validate_address(address)}).encode()
        except (ValueError, KeyError, TypeError):
            return json.dumps({"error": "bad request"}).encode()
        except ChainError as exc:
            return json.dumps({"error": str(exc)}).encode()


async def run_wallet_watcher(settings: Settings, ws: WalletSettings, wallet: str,
                             stop: asyncio.Event, vault: VaultSession | None = None) -> None:
    """``tradeplane wallet-watcher --wallet NAME``.

    Raises:
        WalletConfigError: no usable spec or credentials.
    """
    pool = await db.create_pool(settings.database_url, 4)
    try:
        spec = await load_spec(pool, wallet, ws)
        chain = connect_chain(spec, await node_login(spec, ws, vault))
        bus = await Bus.connect(settings.nats_url, name=f"wallet-{wallet}",
                                replicas=settings.stream_replicas,
                                dedup_window_s=settings.dedup_window_s)
        try:
            await Custody(spec, chain, pool, bus, ws).run(stop)
        finally:
            await bus.close()
            await chain.close()
    finally:
        await pool.close()
