-- tradeplane ledger schema v6: account snapshots (the portfolio, Binance's accountSnapshot)
-- and the ledger invariant verdict settlement last reached (the admin health view).

-- One row per account and time bucket: taken at most once per bucket (the worker's
-- inserts do nothing on conflict, so a retried or doubled round changes nothing).
-- ``period`` is 'day' (UTC days, as Binance's accountSnapshot) or 'interval' (the
-- configurable period the portfolio page draws). Amounts are BIGINT units (10^-8).
CREATE TABLE account_snapshots (
    account_id  BIGINT NOT NULL REFERENCES accounts(id),
    period      TEXT NOT NULL CHECK (period IN ('day', 'interval')),
    bucket_ms   BIGINT NOT NULL,
    taken_ms    BIGINT NOT NULL,
    quote       TEXT NOT NULL,
    -- The account's value in ``quote`` at the books' last prices, and in BTC.
    value       BIGINT NOT NULL,
    value_btc   BIGINT NOT NULL,
    -- Net deposits minus withdrawals so far, each valued at the prices of the first
    -- snapshot that saw it: P&L between two snapshots is the change in value minus the
    -- change in ``invested``.
    invested    BIGINT NOT NULL,
    -- [[asset, free, locked], ...] and {asset: net external units so far}.
    balances    JSONB NOT NULL,
    flows       JSONB NOT NULL,
    PRIMARY KEY (account_id, period, bucket_ms)
);

-- The last ledger invariant check (settlement writes it after each check).
CREATE TABLE ledger_verdict (
    id          SMALLINT PRIMARY KEY CHECK (id = 1),
    checked_ms  BIGINT NOT NULL,
    ok          BOOLEAN NOT NULL,
    problems    JSONB NOT NULL
);
