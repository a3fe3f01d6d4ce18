"""Reconciliation: does the wallet hold on chain what the ledger owes for its asset?

    holdings    = the node's confirmed balance
                  - deposits it already counts but the ledger has not credited yet
    liabilities = every ledger balance of the asset (users and the fee account, available
                  + locked)
                  - withdrawals already paid on chain but not completed (amount + network
                    fee: still locked in the ledger)
    difference  = holdings - liabilities

Zero when everything that moved on chain moved in the ledger; positive is a surplus (e.g.
the operator topped the hot wallet up); negative means the exchange owes more than it
holds: ERROR logged every run and ``tradeplane_wallet_reconciliation_ok`` 0 until it is
fixed. One wallet per asset is assumed (the ledger's liabilities are per asset).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass

from prometheus_client import Gauge

from tradeplane.domain.custody import WalletSpec
from tradeplane.domain.money import fmt_units
from tradeplane.wallets.chain import ChainAdapter
from tradeplane.wallets.loop import run_passes
from tradeplane.wallets.ports import WalletStore

log = logging.getLogger("tradeplane.wallets.reconcile")

DIFFERENCE = Gauge("tradeplane_wallet_reconciliation_difference_units",
                   "On-chain holdings minus ledger liabilities (negative: a shortfall)",
                   ["wallet", "asset"])
RECONCILED_OK = Gauge("tradeplane_wallet_reconciliation_ok",
                      "1 when the wallet holds at least the ledger's liabilities",
                      ["wallet", "asset"])


@dataclass(frozen=True, slots=True)
class Reconciliation:
    wallet: str
    asset: str
    chain_balance: int
    uncredited: int
    ledger_total: int
    sent_unfinished: int

    @property
    def holdings(self) -> int:
        return self.chain_balance - self.uncredited

    @property
    def liabilities(self) -> int:
        return self.ledger_total - self.sent_unfinished

    @property
    def difference(self) -> int:
        return self.holdings - self.liabilities

    @property
    def ok(self) -> bool:
        return self.difference >= 0

    def describe(self) -> str:
        return (f"{self.wallet} {self.asset}: holdings {fmt_units(self.holdings)} "
                f"(chain {fmt_units(self.chain_balance)} - uncredited "
                f"{fmt_units(self.uncredited)}), liabilities {fmt_units(self.liabilities)} "
                f"(ledger {fmt_units(self.ledger_total)} - sent "
                f"{fmt_units(self.sent_unfinished)}), difference "
                f"{fmt_units(self.difference)} {'ok' if self.ok else 'SHORTFALL'}")


async def reconcile(spec: WalletSpec, chain: ChainAdapter, store: WalletStore, *,
                    save: bool = True) -> Reconciliation:
    """Compare once, export the metrics, store the result (``wallet_reconciliations``) and
    log an ERROR on a shortfall.

    Raises:
        ChainError: the node could not answer.
        Unavailable: the database did not.
    """
    # The ledger is read after the chain: a deposit credited in between shows as a
    # transient surplus, never as a false shortfall.
    balance = await chain.balance()
    side = await store.ledger_side(spec.name, spec.asset)
    r = Reconciliation(spec.name, spec.asset, balance, side.uncredited, side.ledger_total,
                       side.sent_unfinished)
    DIFFERENCE.labels(spec.name, spec.asset).set(r.difference)
    RECONCILED_OK.labels(spec.name, spec.asset).set(1 if r.ok else 0)
    if save:
        await store.save_reconciliation(spec.name, spec.asset, r.holdings,
                                             r.liabilities, r.difference, r.ok, asdict(r))
    if r.ok:
        log.info("reconciliation %s", r.describe())
    else:
        log.error("RECONCILIATION SHORTFALL: liabilities exceed holdings: %s", r.describe(),
                  extra={"fields": {"wallet": spec.name, "asset": spec.asset,
                                    "difference_units": r.difference}})
    return r


async def run_reconciliation(spec: WalletSpec, chain: ChainAdapter, store: WalletStore,
                             stop: asyncio.Event, interval_s: float) -> None:
    """Reconcile every ``interval_s`` until ``stop`` (failures logged, retried)."""
    async def one_pass() -> None:
        await reconcile(spec, chain, store)

    await run_passes(f"reconciliation of {spec.name}", one_pass, stop, interval_s, log)
