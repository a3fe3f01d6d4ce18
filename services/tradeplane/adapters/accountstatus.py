"""Whether an account is frozen, read from the accounts table: the user streams' port
(``gateway.userstream.AccountStatus``), built by the gateway's composition root."""

from __future__ import annotations

from tradeplane.adapters import accounts_db, db


class PgAccountStatus:
    """Raises ``DatabaseUnavailable`` (an ``Unavailable``) when PostgreSQL did not answer."""

    def __init__(self, pool: db.Pool) -> None:
        self.pool = pool

    async def frozen(self, account: int) -> bool:
        """True for a frozen account; False for a live or unknown one."""
        doc = await accounts_db.account_doc(self.pool, account)
        return doc is not None and bool(doc.get("frozen"))
