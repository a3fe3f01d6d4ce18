-- Custody: wallets, deposit addresses, deposits, withdrawals, reorganisation adjustments.
-- Amounts are BIGINT units (10^-8). Written by the wallet watcher (one process per wallet)
-- and the gateway (withdrawal requests, whose hold is taken in the same transaction).

-- One row per Wallet: the spec (as the Wallet custom resource holds it). The watcher
-- upserts it from its mounted config; `tradeplane wallet-add` writes it locally. The
-- gateway reads it (which coin is served by which wallet, fees, minimums).
CREATE TABLE wallets (
    name        TEXT PRIMARY KEY,
    chain       TEXT NOT NULL,
    asset       TEXT NOT NULL,
    spec        JSONB NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX wallets_asset ON wallets (asset);

-- Where the watcher's scan continues (opaque to us, the adapter's), and the tip it saw.
CREATE TABLE wallet_cursors (
    wallet      TEXT PRIMARY KEY REFERENCES wallets(name),
    cursor      TEXT NOT NULL,
    height      BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The one receive address of each account on each wallet (stored before it is shown).
CREATE TABLE deposit_addresses (
    wallet      TEXT NOT NULL REFERENCES wallets(name),
    account_id  BIGINT NOT NULL REFERENCES accounts(id),
    address     TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (wallet, account_id),
    UNIQUE (wallet, address)
);

-- One row per paid output: PENDING -> CONFIRMED -> CREDITED (or DROPPED when it left the
-- chain before crediting). `published` is the last status announced on the bus (outbox).
CREATE TABLE deposits (
    id              BIGSERIAL PRIMARY KEY,
    wallet          TEXT NOT NULL REFERENCES wallets(name),
    chain           TEXT NOT NULL,
    txid            TEXT NOT NULL,
    idx             INT NOT NULL,
    account_id      BIGINT NOT NULL REFERENCES accounts(id),
    asset           TEXT NOT NULL,
    address         TEXT NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount > 0),
    status          TEXT NOT NULL
                    CHECK (status IN ('PENDING', 'CONFIRMED', 'CREDITED', 'DROPPED')),
    confirmations   INT NOT NULL DEFAULT 0,
    block_hash      TEXT,
    height          BIGINT,
    credited_hash   TEXT,
    published       TEXT,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    credited_ms     BIGINT,
    UNIQUE (chain, txid, idx),
    CHECK ((status = 'CREDITED') = (credited_ms IS NOT NULL))
);
CREATE INDEX deposits_account ON deposits (account_id, created_ms);
CREATE INDEX deposits_open ON deposits (wallet) WHERE status IN ('PENDING', 'CONFIRMED');
CREATE INDEX deposits_unpublished ON deposits (wallet) WHERE published IS DISTINCT FROM status;

-- A credited deposit whose block left the main chain: never a silent balance change, an
-- alert and this row; RESOLVED when the payment is confirmed again on the new chain,
-- otherwise an operator decides.
CREATE TABLE wallet_adjustments (
    id          BIGSERIAL PRIMARY KEY,
    wallet      TEXT NOT NULL REFERENCES wallets(name),
    kind        TEXT NOT NULL CHECK (kind IN ('reorg_after_credit')),
    deposit_id  BIGINT NOT NULL REFERENCES deposits(id),
    account_id  BIGINT NOT NULL REFERENCES accounts(id),
    asset       TEXT NOT NULL,
    amount      BIGINT NOT NULL,
    detail      TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'RESOLVED')),
    resolution  TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX wallet_adjustments_one_open ON wallet_adjustments (deposit_id, kind)
    WHERE status = 'OPEN';

-- Per-user withdrawal address whitelist: once a user has an entry for an asset (or the
-- wallet requires it), withdrawals of that asset go only to listed addresses.
CREATE TABLE withdraw_whitelist (
    account_id  BIGINT NOT NULL REFERENCES accounts(id),
    asset       TEXT NOT NULL,
    address     TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, asset, address)
);

-- PENDING (approval) -> APPROVED -> PROCESSING (intent written) -> ON_CHAIN -> COMPLETED,
-- or FAILED / REJECTED (hold released). `hold` = amount + fee stays locked while open.
CREATE SEQUENCE withdrawal_ids START 1;
CREATE TABLE withdrawals (
    id              BIGINT PRIMARY KEY,
    wallet          TEXT NOT NULL REFERENCES wallets(name),
    account_id      BIGINT NOT NULL REFERENCES accounts(id),
    asset           TEXT NOT NULL,
    address         TEXT NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount > 0),
    fee             BIGINT NOT NULL CHECK (fee >= 0),
    hold            BIGINT NOT NULL,
    client_id       TEXT,
    status          TEXT NOT NULL CHECK (status IN ('PENDING', 'APPROVED', 'PROCESSING',
                        'ON_CHAIN', 'COMPLETED', 'FAILED', 'REJECTED')),
    intent          TEXT NOT NULL UNIQUE,
    txid            TEXT,
    network_fee     BIGINT,
    confirmations   INT NOT NULL DEFAULT 0,
    attempts        INT NOT NULL DEFAULT 0,
    info            TEXT NOT NULL DEFAULT '',
    published       TEXT,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    completed_ms    BIGINT,
    CHECK (hold = amount + fee),
    CHECK (status NOT IN ('ON_CHAIN', 'COMPLETED') OR txid IS NOT NULL),
    UNIQUE (account_id, client_id)
);
CREATE INDEX withdrawals_open ON withdrawals (wallet, id)
    WHERE status IN ('PENDING', 'APPROVED', 'PROCESSING', 'ON_CHAIN');
CREATE INDEX withdrawals_account ON withdrawals (account_id, created_ms);
CREATE INDEX withdrawals_unpublished ON withdrawals (wallet)
    WHERE published IS DISTINCT FROM status;

-- The watcher's last reconciliation of each wallet (tradeplane check-wallets prints it).
CREATE TABLE wallet_reconciliations (
    wallet       TEXT PRIMARY KEY REFERENCES wallets(name),
    asset        TEXT NOT NULL,
    holdings     BIGINT NOT NULL,
    liabilities  BIGINT NOT NULL,
    difference   BIGINT NOT NULL,
    ok           BOOLEAN NOT NULL,
    detail       JSONB NOT NULL,
    checked_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
