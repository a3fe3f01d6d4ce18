-- Convert: the house convert desk, firm quotes and convert orders.

-- The desk takes the other side of every conversion; its balances are its inventory.
ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check
    CHECK (kind IN ('external', 'fees', 'user', 'desk'));
INSERT INTO accounts (id, name, kind) VALUES (2, 'convert-desk', 'desk');

-- A key may carry the permission to convert (POST /sapi/v1/convert/getQuote, acceptQuote).
ALTER TABLE api_keys DROP CONSTRAINT api_keys_perms;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_perms CHECK (
    cardinality(perms) > 0 AND perms <@ ARRAY['read', 'trade', 'withdraw', 'convert']::TEXT[]);

CREATE SEQUENCE convert_quote_ids START 1;
CREATE SEQUENCE convert_order_ids START 1;

-- A quote is firm until valid_until_ms and accepted at most once (order_id set once).
CREATE TABLE convert_quotes (
    id              BIGINT PRIMARY KEY,
    account_id      BIGINT NOT NULL REFERENCES accounts(id),
    from_asset      TEXT NOT NULL,
    to_asset        TEXT NOT NULL,
    from_amount     BIGINT NOT NULL CHECK (from_amount > 0),
    to_amount       BIGINT NOT NULL CHECK (to_amount > 0),
    created_ms      BIGINT NOT NULL,
    valid_until_ms  BIGINT NOT NULL,
    route           JSONB NOT NULL,
    impact_ppm      BIGINT NOT NULL,
    fee             BIGINT NOT NULL,
    order_id        BIGINT UNIQUE
);
CREATE INDEX convert_quotes_expiry ON convert_quotes (valid_until_ms) WHERE order_id IS NULL;

CREATE TABLE convert_orders (
    id           BIGINT PRIMARY KEY,
    quote_id     BIGINT NOT NULL UNIQUE REFERENCES convert_quotes(id),
    account_id   BIGINT NOT NULL REFERENCES accounts(id),
    status       TEXT NOT NULL CHECK (status IN ('PROCESS', 'ACCEPT_SUCCESS', 'SUCCESS', 'FAIL')),
    from_asset   TEXT NOT NULL,
    to_asset     TEXT NOT NULL,
    from_amount  BIGINT NOT NULL,
    to_amount    BIGINT NOT NULL,
    created_ms   BIGINT NOT NULL
);
CREATE INDEX convert_orders_account ON convert_orders (account_id, created_ms);
