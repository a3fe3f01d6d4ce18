"""Custody rules: what a Wallet spec means, deposit and withdrawal states, and the ledger
postings of a withdrawal. Pure: the watcher, the withdrawal processor and the gateway all
decide with these, the adapters only store what they return.

A Wallet spec is the ``spec`` of the ``Wallet`` custom resource (``operator/
tradeplane_operator/crds.py``), as the operator mounts it for the watcher
(``TRADEPLANE_WALLET_CONFIG``) or as ``tradeplane wallet-add`` stores it. Amounts in it are
decimal strings of the asset; here they are integer units (10**-8).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tradeplane.domain.errors import InvalidInput
from tradeplane.domain.ledger import EXTERNAL_ACCOUNT, FEE_ACCOUNT, Posting
from tradeplane.domain.money import AmountError, fmt_units, to_units

#: Chains and the node protocol family that serves each (bitcoind-style JSON-RPC or
#: monero-wallet-rpc).
CHAIN_FAMILIES = {"bitcoin": "bitcoin", "litecoin": "bitcoin", "monero": "monero"}
NETWORKS = ("mainnet", "testnet", "regtest")
#: A wallet's name is one NATS subject token and one Kubernetes DNS label.
WALLET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
ASSET = re.compile(r"^[A-Z0-9]{2,10}$")

# Withdrawal settings a spec may omit (spec.withdrawals), in the asset.
DEFAULT_WITHDRAW_FEE = "0.001"
DEFAULT_WITHDRAW_MIN = "0.002"
DEFAULT_APPROVAL_THRESHOLD = "10"


class WalletSpecError(InvalidInput, ValueError):
    """A Wallet spec that cannot be run (the message names the field)."""


@dataclass(frozen=True, slots=True)
class WalletSpec:
    """One hot wallet: its chain, node, confirmation count and withdrawal rules."""

    name: str
    chain: str  # bitcoin | litecoin | monero
    family: str  # bitcoin | monero
    network: str  # mainnet | testnet | regtest
    asset: str
    rpc_url: str
    vault_path: str  # where Vault keeps the node's credentials ("" = none given)
    confirmations: int  # a deposit is credited at this many confirmations
    hot_min: int  # units: never send below this balance (0 = no floor)
    hot_max: int  # units: above this the excess belongs in cold storage (0 = no ceiling)
    withdraw_fee: int  # units charged per withdrawal (the network fee is paid from it)
    withdraw_min: int  # units: smallest withdrawal amount
    approval_threshold: int  # units: withdrawals above it wait for an admin's approval
    whitelist_required: bool  # every withdrawal address must be whitelisted for the user
    # Node details beyond the URL: the bitcoind wallet (``rpc.wallet``, or the URL's
    # ``/wallet/<name>``), Monero's daemon (``rpc.daemonUrl``) and account
    # (``rpc.accountIndex``).
    rpc_wallet: str = ""
    daemon_url: str = ""
    account_index: int = 0

    @property
    def network_code(self) -> str:
        """The ``network`` of Binance's wallet API: the chain's own coin, as Binance names
        native networks (BTC, LTC, XMR)."""
        return self.asset

    def accepts_network(self, network: str | None) -> bool:
        """Whether an API ``network`` parameter names this wallet's network (absent = the
        coin's default network, which is this one)."""
        if not network:
            return True
        return network.upper() in {self.asset, self.chain.upper(), self.name.upper()}

    @property
    def horizon(self) -> int:
        """How many recent blocks every scan re-reads: comfortably more than a deposit
        needs to be credited, so confirmations are followed and reorganisations of any
        block a deposit sits in are seen (also shortly after crediting)."""
        return max(2 * self.confirmations, self.confirmations + 6)

    def needs_approval(self, amount: int) -> bool:
        return amount > self.approval_threshold

    def to_spec(self) -> dict[str, Any]:
        """The spec document this was read from (canonical form, amounts as decimals)."""
        doc: dict[str, Any] = {
            "chain": self.chain, "family": self.family, "network": self.network,
            "asset": self.asset,
            "rpc": {"url": self.rpc_url,
                    **({"vaultPath": self.vault_path} if self.vault_path else {}),
                    **({"wallet": self.rpc_wallet} if self.rpc_wallet else {}),
                    **({"daemonUrl": self.daemon_url} if self.daemon_url else {}),
                    **({"accountIndex": self.account_index} if self.account_index else {})},
            "confirmations": self.confirmations,
            "hotWallet": {"minBalance": fmt_units(self.hot_min),
                          **({"maxBalance": fmt_units(self.hot_max)} if self.hot_max else {})},
            "withdrawals": {"fee": fmt_units(self.withdraw_fee),
                            "min": fmt_units(self.withdraw_min),
                            "approvalThreshold": fmt_units(self.approval_threshold),
                            "whitelistRequired": self.whitelist_required},
        }
        return doc


def wallet_from_spec(name: str, spec: Mapping[str, Any]) -> WalletSpec:
    """Read a Wallet spec.

    Raises:
        WalletSpecError: a required field is missing or a value is invalid.
    """
    if not WALLET_NAME.fullmatch(name):
        raise WalletSpecError(f"wallet name {name!r} must be a DNS label (a-z, 0-9, -)")
    chain = str(spec.get("chain") or "")
    if chain not in CHAIN_FAMILIES:
        raise WalletSpecError(f"spec.chain must be one of {sorted(CHAIN_FAMILIES)}")
    family = str(spec.get("family") or CHAIN_FAMILIES[chain])
    if family != CHAIN_FAMILIES[chain]:
        raise WalletSpecError(f"spec.family {family!r} does not serve chain {chain!r}")
    network = str(spec.get("network") or "")
    if network not in NETWORKS:
        raise WalletSpecError(f"spec.network must be one of {list(NETWORKS)}")
    asset = str(spec.get("asset") or "")
    if not ASSET.fullmatch(asset):
        raise WalletSpecError("spec.asset must be 2-10 of A-Z, 0-9")
    rpc = _section(spec, "rpc")
    url = str(rpc.get("url") or "")
    if not re.match(r"^https?://[^\s/?#]+\S*$", url):
        raise WalletSpecError("spec.rpc.url must be an http(s) URL")
    rpc_wallet = str(rpc.get("wallet") or "")
    if family == "bitcoin" and not rpc_wallet:
        # bitcoind's multiwallet endpoint: http://node:port/wallet/<name>
        root, sep, rest = url.partition("/wallet/")
        if sep and rest and "/" not in rest:
            url, rpc_wallet = root, rest
    daemon_url = str(rpc.get("daemonUrl") or "")
    if family == "monero" and not re.match(r"^https?://[^\s/?#]+\S*$", daemon_url):
        raise WalletSpecError("spec.rpc.daemonUrl (monerod's RPC URL) is required for monero")
    account_index = rpc.get("accountIndex", 0)
    if not isinstance(account_index, int) or isinstance(account_index, bool) \
            or account_index < 0:
        raise WalletSpecError("spec.rpc.accountIndex must be an integer >= 0")
    confirmations = spec.get("confirmations")
    if not isinstance(confirmations, int) or isinstance(confirmations, bool) \
            or confirmations < 1:
        raise WalletSpecError("spec.confirmations must be an integer >= 1")
    hot = _section(spec, "hotWallet")
    wd = _section(spec, "withdrawals")
    fee = _amount(wd.get("fee", DEFAULT_WITHDRAW_FEE), "spec.withdrawals.fee")
    minimum = _amount(wd.get("min", DEFAULT_WITHDRAW_MIN), "spec.withdrawals.min")
    if minimum <= 0:
        raise WalletSpecError("spec.withdrawals.min must be positive")
    whitelist = wd.get("whitelistRequired", False)
    if not isinstance(whitelist, bool):
        raise WalletSpecError("spec.withdrawals.whitelistRequired must be a boolean")
    return WalletSpec(
        name=name, chain=chain, family=family, network=network, asset=asset, rpc_url=url,
        vault_path=str(rpc.get("vaultPath") or ""), confirmations=confirmations,
        hot_min=_amount(hot.get("minBalance", "0"), "spec.hotWallet.minBalance"),
        hot_max=_amount(hot.get("maxBalance", "0"), "spec.hotWallet.maxBalance"),
        withdraw_fee=fee, withdraw_min=minimum,
        approval_threshold=_amount(wd.get("approvalThreshold", DEFAULT_APPROVAL_THRESHOLD),
                                   "spec.withdrawals.approvalThreshold"),
        whitelist_required=whitelist, rpc_wallet=rpc_wallet, daemon_url=daemon_url,
        account_index=account_index,
    )


def _section(spec: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = spec.get(key) or {}
    if not isinstance(value, Mapping):
        raise WalletSpecError(f"spec.{key} must be an object")
    return value


def _amount(value: Any, where: str) -> int:
    try:
        return to_units(str(value))
    except AmountError as exc:
        raise WalletSpecError(f"{where}: {exc}") from exc


# --------------------------------------------------------------------------- deposits
class DepositStatus(StrEnum):
    PENDING = "PENDING"  # seen, not yet confirmed enough (or back after a reorganisation)
    CONFIRMED = "CONFIRMED"  # confirmed enough: the credit is due (and is made next)
    CREDITED = "CREDITED"  # the ledger holds it: credited exactly once
    DROPPED = "DROPPED"  # left the chain before crediting; revived if it comes back


#: Binance's deposit ``status``: 0 pending, 1 success (6, credited but not withdrawable, is
#: never used: a credit is withdrawable at once).
DEPOSIT_API_STATUS = {DepositStatus.PENDING: 0, DepositStatus.CONFIRMED: 0,
                      DepositStatus.CREDITED: 1}


def deposit_ref(chain: str, txid: str, index: int) -> str:
    """The credit's idempotency key: one credit per chain output, ever."""
    return f"deposit:{chain}:{txid}:{index}"



@dataclass(frozen=True, slots=True)
class DepositRow:
    """A deposit as recorded (one chain output credited at most once)."""

    id: int
    wallet: str
    chain: str
    txid: str
    index: int
    account: int
    asset: str
    address: str
    amount: int
    status: DepositStatus
    confirmations: int
    block_hash: str | None
    height: int | None
    credited_hash: str | None
    created_ms: int
    updated_ms: int
    credited_ms: int | None

    @property
    def key(self) -> tuple[str, int]:
        return (self.txid, self.index)


@dataclass(frozen=True, slots=True)
class DepositChange:
    """What a scan decided for one deposit (see ``wallets/deposits.py``)."""

    key: tuple[str, int]
    existing: int | None  # the row's id; None = a new deposit
    account: int
    address: str
    amount: int
    status: DepositStatus
    confirmations: int
    block_hash: str | None
    height: int | None
    credited_hash: str | None = None  # a credited deposit confirmed again: its new block
    open_adjustment: str = ""  # non-empty: record a reorg-after-credit adjustment (detail)
    resolve_adjustment: str = ""  # non-empty: resolve the open adjustment (resolution)

# --------------------------------------------------------------------------- withdrawals
class WithdrawalStatus(StrEnum):
    PENDING = "PENDING"  # waits for an admin's approval (above the threshold)
    APPROVED = "APPROVED"  # will be sent (by the processor in the watcher process)
    PROCESSING = "PROCESSING"  # intent written; the send is being (or was) made
    ON_CHAIN = "ON_CHAIN"  # sent (txid known), waiting for confirmations
    COMPLETED = "COMPLETED"  # confirmed: the funds left the ledger
    FAILED = "FAILED"  # could not be sent: funds released
    REJECTED = "REJECTED"  # refused by an admin: funds released


#: States in which the amount plus fee stay locked on the user's balance.
HOLDING = frozenset({WithdrawalStatus.PENDING, WithdrawalStatus.APPROVED,
                     WithdrawalStatus.PROCESSING, WithdrawalStatus.ON_CHAIN})

#: Binance's withdraw ``status``: 0 email sent, 1 cancelled, 2 awaiting approval,
#: 3 rejected, 4 processing, 5 failure, 6 completed.
WITHDRAW_API_STATUS = {
    WithdrawalStatus.PENDING: 2, WithdrawalStatus.APPROVED: 4,
    WithdrawalStatus.PROCESSING: 4, WithdrawalStatus.ON_CHAIN: 4,
    WithdrawalStatus.COMPLETED: 6, WithdrawalStatus.FAILED: 5,
    WithdrawalStatus.REJECTED: 3,
}
API_WITHDRAW_STATUSES = {code: [s for s, c in WITHDRAW_API_STATUS.items() if c == code]
                         for code in set(WITHDRAW_API_STATUS.values())}


def lock_postings(withdrawal: int, account: int, asset: str, hold: int) -> list[Posting]:
    """Request: the amount plus fee move from available to locked."""
    ref = f"withdraw:{withdrawal}:lock"
    return [(ref, account, asset, "a", -hold), (ref, account, asset, "l", hold)]


def release_postings(withdrawal: int, account: int, asset: str, hold: int) -> list[Posting]:
    """Rejected or failed: the hold goes back to available, all of it."""
    ref = f"withdraw:{withdrawal}:release"
    return [(ref, account, asset, "l", -hold), (ref, account, asset, "a", hold)]


def complete_postings(withdrawal: int, account: int, asset: str, amount: int, fee: int,
                      network_fee: int) -> list[Posting]:
    """Confirmed on chain: the hold leaves the user; the amount and the network fee the
    chain actually took go to the outside world, what remains of the charged fee is the
    exchange's (fee account). A network fee above the charged one is paid by the fee
    account (its posting is then negative).

    Raises:
        ValueError: negative amounts.
    """
    if amount <= 0 or fee < 0 or network_fee < 0:
        raise ValueError("withdrawal amounts must be positive, fees non-negative")
    ref = f"withdraw:{withdrawal}:complete"
    out: list[Posting] = [
        (ref, account, asset, "l", -(amount + fee)),
        (ref, EXTERNAL_ACCOUNT, asset, "x", amount + network_fee),
    ]
    if fee != network_fee:
        out.append((ref, FEE_ACCOUNT, asset, "a", fee - network_fee))
    return out


def withdrawal_intent(withdrawal: int, nonce: str) -> str:
    """The tag a send carries so that it can be found after a crash: unique per withdrawal
    and per database (the nonce), so a node shared with another deployment, or a restored
    database, never mistakes someone else's send for this one."""
    return f"tpwd-{withdrawal}-{nonce}"
