"""FakeChain: an in-memory stand-in for a chain node behind the chain port, for fast tests of
the custody state machines (the proofs against real nodes use litecoind and monerod, see
tests/support/chains.py).

It keeps a main chain of block hashes, a mempool, and one wallet: labelled deposit
addresses, received outputs, sends tagged with their intent. Tests drive it: ``pay``,
``mine``, ``reorg`` (the last blocks leave the main chain; their transactions go back to
the mempool unless dropped), ``unavailable`` (every call raises ChainUnavailable),
``fail_next_send`` (the next send raises the given error, before or after it is made).
Scanning follows the port's contract: payments since the cursor, everything within the
last ``horizon`` blocks and the mempool reported again; never from genesis once a cursor
exists.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
from dataclasses import dataclass, field

from tradeplane.wallets.chain import (
    ChainUnavailable,
    Incoming,
    InsufficientFunds,
    InvalidAddress,
    Outgoing,
    Scan,
    Tip,
)

_ids = itertools.count(1)


@dataclass
class FakeTx:
    txid: str
    outputs: list[tuple[str, int]]  # (address, units)
    fee: int = 0
    intent: str = ""  # set on our sends
    spent: int = 0  # units our wallet paid (amount + fee) for a send


@dataclass
class FakeChain:
    chain: str = "litecoin"
    asset: str = "LTC"
    fee: int = 2_000  # units per send
    blocks: list[str] = field(default_factory=lambda: ["genesis"])
    block_txs: dict[str, list[str]] = field(default_factory=dict)
    mempool: list[str] = field(default_factory=list)
    txs: dict[str, FakeTx] = field(default_factory=dict)
    addresses: dict[int, str] = field(default_factory=dict)
    hot_address: str = "fake1hot"
    unavailable: bool = False
    sends: list[str] = field(default_factory=list)  # txids of every send made, in order
    scans: list[str | None] = field(default_factory=list)  # cursors asked for
    rebroadcasts: list[str] = field(default_factory=list)  # txids handed to it again
    untracked: set[str] = field(default_factory=set)  # confirmed, reported unconfirmed
    rescans: list[str] = field(default_factory=list)  # blocks the wallet rescanned from
    _fail_next_send: tuple[Exception, bool] | None = None

    # ------------------------------------------------------------------ test controls
    def pay(self, address: str, amount: int) -> str:
        """Someone outside pays ``amount`` to ``address`` (into the mempool)."""
        txid = f"tx{next(_ids):06d}"
        self.txs[txid] = FakeTx(txid, [(address, amount)])
        self.mempool.append(txid)
        return txid

    def fund(self, amount: int) -> str:
        """Coins for the hot wallet that belong to nobody in the ledger."""
        return self.pay(self.hot_address, amount)

    def mine(self, n: int = 1) -> list[str]:
        made = []
        for _ in range(n):
            h = f"blk{next(_ids):06d}"
            self.blocks.append(h)
            self.block_txs[h] = list(self.mempool)
            self.mempool.clear()
            made.append(h)
        return made

    def reorg(self, depth: int, *, drop: Collection[str] = ()) -> list[str]:
        """The last ``depth`` blocks leave the main chain; their transactions go back to
        the mempool, except those in ``drop`` (gone for good). Returns the orphans."""
        orphans = self.blocks[-depth:]
        del self.blocks[-depth:]
        for h in orphans:
            for txid in self.block_txs.get(h, []):
                if txid in drop:
                    del self.txs[txid]
                else:
                    self.mempool.append(txid)
        return orphans

    def fail_next_send(self, error: Exception, *, after_sending: bool = False) -> None:
        """The next ``send`` raises ``error``: before making the transaction, or after
        (the node made it, the answer got lost)."""
        self._fail_next_send = (error, after_sending)

    def lose_track(self, txid: str) -> None:
        """The node's wallet reports ``txid`` unconfirmed though its block is on the main
        chain (litecoind killed -9 can come back so), until it is made to rescan."""
        self.untracked.add(txid)

    def forget(self, txid: str) -> None:
        """The node loses ``txid`` from its mempool, its wallet keeps it (a node killed
        before relaying it, resubmitting it before it caught up with the chain)."""
        self.mempool.remove(txid)

    def height_of(self, txid: str) -> int | None:
        for height, h in enumerate(self.blocks):
            if txid in self.block_txs.get(h, []):
                return height
        return None

    # ------------------------------------------------------------------ the port
    def _up(self) -> None:
        if self.unavailable:
            raise ChainUnavailable("fake node is down")

    async def tip(self) -> Tip:
        self._up()
        return Tip(len(self.blocks) - 1, self.blocks[-1])

    async def deposit_address(self, account: int, asset: str) -> str:
        self._up()
        return self.addresses.setdefault(account, f"fake1acct{account}")

    async def incoming_since(self, cursor: str | None, horizon: int) -> Scan:
        self._up()
        self.scans.append(cursor)
        top = len(self.blocks) - 1
        since = -1 if cursor is None else int(cursor) - horizon
        ours = set(self.addresses.values())
        found = []
        for txid, tx in self.txs.items():
            height = self.height_of(txid)
            if height is None and txid not in self.mempool:
                continue
            if height is not None and height <= since:
                continue
            if txid in self.untracked:
                height = None
            for index, (address, amount) in enumerate(tx.outputs):
                if address not in ours:
                    continue
                confs = 0 if height is None else top - height + 1
                found.append(Incoming(txid, index, address, amount, confs,
                                      None if height is None else self.blocks[height], height))
        return Scan(found, str(top))

    async def in_main_chain(self, block_hash: str) -> bool:
        self._up()
        return block_hash in self.blocks

    async def validate_address(self, address: str) -> bool:
        self._up()
        return address.startswith("fake1")

    async def estimate_fee(self, amount: int) -> int:
        self._up()
        return self.fee

    async def send(self, address: str, amount: int, intent: str) -> str:
        self._up()
        failing, self._fail_next_send = self._fail_next_send, None
        if failing is not None and not failing[1]:
            raise failing[0]
        if not address.startswith("fake1"):
            raise InvalidAddress(f"not a fake address: {address}")
        if await self.balance() < amount + self.fee:
            raise InsufficientFunds("fake wallet cannot pay")
        txid = f"tx{next(_ids):06d}"
        self.txs[txid] = FakeTx(txid, [(address, amount)], self.fee, intent, amount + self.fee)
        self.mempool.append(txid)
        self.sends.append(txid)
        if failing is not None:
            raise failing[0]
        return txid

    async def find_sent(self, intent: str) -> str | None:
        self._up()
        return next((t.txid for t in self.txs.values() if t.intent == intent), None)

    async def outgoing(self, txid: str) -> Outgoing | None:
        self._up()
        tx = self.txs.get(txid)
        if tx is None or not tx.intent:
            return None
        height = self.height_of(txid)
        confs = 0 if height is None else len(self.blocks) - height
        return Outgoing(txid, confs, tx.fee, None if height is None else self.blocks[height])

    async def rescan(self, block_hash: str) -> bool:
        self._up()
        self.rescans.append(block_hash)
        self.untracked.clear()
        return True

    async def rebroadcast(self, txid: str) -> bool:
        self._up()
        if self.height_of(txid) is not None or txid in self.mempool:
            return False
        self.mempool.append(txid)
        self.rebroadcasts.append(txid)
        return True

    async def balance(self) -> int:
        """Confirmed receipts to our addresses minus everything our sends spent."""
        self._up()
        ours = {*self.addresses.values(), self.hot_address}
        total = 0
        for txid, tx in self.txs.items():
            confirmed = self.height_of(txid) is not None
            if confirmed:
                total += sum(a for addr, a in tx.outputs if addr in ours)
            if tx.intent and (confirmed or txid in self.mempool):
                total -= tx.spent
        return total

    async def close(self) -> None:
        return None
