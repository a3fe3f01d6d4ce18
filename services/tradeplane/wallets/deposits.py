"""The deposit state machine, pure: what one scan's observation of a payment means.

For each deposit the watcher follows, a scan either reports the payment (with its
confirmations and block) or does not; in that case the watcher asks whether the block the
deposit was last seen in is still on the main chain. From that alone:

* PENDING <-> CONFIRMED follows the confirmation count (a reorganisation before the
  credit can take a CONFIRMED deposit back to PENDING);
* a payment that is neither reported nor in a main-chain block left the chain: DROPPED
  before crediting (revived as PENDING should it ever be reported again);
* CONFIRMED -> CREDITED is the watcher's next step (``credit_deposit``), never decided here;
* a CREDITED deposit stays CREDITED whatever happens: if the block it was credited in
  leaves the main chain, the result asks for an adjustment (alert + record), resolved once
  the payment is confirmed enough again on the new chain.
"""

from __future__ import annotations

from tradeplane.domain.custody import DepositChange, DepositRow, DepositStatus
from tradeplane.wallets.chain import Incoming


def observed(dep: DepositRow | None, inc: Incoming, account: int, required: int
             ) -> DepositChange | None:
    """The change for a payment the scan reported (``dep`` None: first seen). None when
    nothing changed."""
    confs = max(inc.confirmations, 0)
    block = inc.block_hash if confs > 0 else None
    height = inc.height if confs > 0 else None
    key = (inc.txid, inc.index)
    by_confs = DepositStatus.CONFIRMED if confs >= required else DepositStatus.PENDING
    if dep is None:
        return DepositChange(key, None, account, inc.address, inc.amount, by_confs, confs,
                             block, height)
    if dep.status != DepositStatus.CREDITED:
        change = DepositChange(key, dep.id, dep.account, dep.address, dep.amount, by_confs,
                               confs, block, height)
        return None if _same(dep, change) else change
    # Credited: the credit stands; only its block is watched. "Off": not in the block it
    # was credited in (orphaned: back in the mempool, or in another block).
    change = DepositChange(key, dep.id, dep.account, dep.address, dep.amount,
                           DepositStatus.CREDITED, confs, block, height)
    off_before = dep.block_hash != dep.credited_hash
    off_now = block != dep.credited_hash
    if off_before and not off_now:  # back in the very block it was credited in
        return DepositChange(
            key, dep.id, dep.account, dep.address, dep.amount, DepositStatus.CREDITED, confs,
            block, height, resolve_adjustment=f"back on the main chain in block {block}")
    if off_now and block is not None and confs >= required:
        return DepositChange(
            key, dep.id, dep.account, dep.address, dep.amount, DepositStatus.CREDITED, confs,
            block, height, credited_hash=block,
            # Opened first if this is the first sight of the move, resolved in the same write.
            open_adjustment=_reorg_detail(dep),
            resolve_adjustment=f"confirmed again ({confs} confirmations) in block {block}",
        )
    if off_now and not _same(dep, change):
        return DepositChange(key, dep.id, dep.account, dep.address, dep.amount,
                             DepositStatus.CREDITED, confs, block, height,
                             open_adjustment=_reorg_detail(dep))
    return None if _same(dep, change) else change


def missing(dep: DepositRow, *, in_main_chain: bool) -> DepositChange | None:
    """The change for a followed deposit the scan did not report. ``in_main_chain``: its
    last block is still on the main chain (the payment is just older than the horizon).
    None when nothing changed."""
    if in_main_chain and dep.block_hash is not None:
        return None
    if dep.status == DepositStatus.CREDITED:
        if dep.block_hash is None:  # off the chain already: its adjustment is recorded
            return None
        return DepositChange(dep.key, dep.id, dep.account, dep.address, dep.amount,
                             DepositStatus.CREDITED, 0, None, None,
                             open_adjustment=_reorg_detail(dep))
    if dep.status == DepositStatus.DROPPED:
        return None
    return DepositChange(dep.key, dep.id, dep.account, dep.address, dep.amount,
                         DepositStatus.DROPPED, 0, None, None)


def _same(dep: DepositRow, ch: DepositChange) -> bool:
    return (dep.status, dep.confirmations, dep.block_hash, dep.height) == (
        ch.status, ch.confirmations, ch.block_hash, ch.height)


def _reorg_detail(dep: DepositRow) -> str:
    return (f"deposit {dep.txid}:{dep.index} of {dep.amount} units to account {dep.account} "
            f"was credited in block {dep.credited_hash}, which left the main chain")
