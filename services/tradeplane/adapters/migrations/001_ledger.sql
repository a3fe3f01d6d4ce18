-- tradeplane ledger schema v1. Amounts are BIGINT units (10^-8); prices ticks, quantities lots.

CREATE TABLE accounts (
    id          BIGINT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('external', 'fees', 'user')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE SEQUENCE account_ids START 1000;
INSERT INTO accounts (id, name, kind) VALUES (0, 'external', 'external'), (1, 'fees', 'fees');

CREATE TABLE api_keys (
    api_key     TEXT PRIMARY KEY,
    account_id  BIGINT NOT NULL REFERENCES accounts(id),
    secret_enc  BYTEA NOT NULL,
    perms       TEXT[] NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX api_keys_account ON api_keys (account_id);

CREATE TABLE pairs (
    symbol          TEXT PRIMARY KEY,
    base            TEXT NOT NULL,
    quote           TEXT NOT NULL,
    tick            BIGINT NOT NULL CHECK (tick > 0),
    lot             BIGINT NOT NULL CHECK (lot > 0),
    min_qty         BIGINT NOT NULL,
    max_qty         BIGINT NOT NULL,
    min_notional    BIGINT NOT NULL,
    price_band_bps  INT NOT NULL,
    maker_fee_ppm   INT NOT NULL,
    taker_fee_ppm   INT NOT NULL,
    trading         TEXT NOT NULL DEFAULT 'enabled'
);

-- Every balance is the sum of its postings; neither bucket may go negative.
CREATE TABLE balances (
    account_id  BIGINT NOT NULL REFERENCES accounts(id),
    asset       TEXT NOT NULL,
    available   BIGINT NOT NULL DEFAULT 0 CHECK (available >= 0),
    locked      BIGINT NOT NULL DEFAULT 0 CHECK (locked >= 0),
    PRIMARY KEY (account_id, asset)
);

-- Double entry: the postings of one tx_ref sum to zero per asset.
CREATE TABLE postings (
    id          BIGSERIAL PRIMARY KEY,
    tx_ref      TEXT NOT NULL,
    account_id  BIGINT NOT NULL,
    asset       TEXT NOT NULL,
    bucket      CHAR(1) NOT NULL CHECK (bucket IN ('a', 'l', 'x')),
    amount      BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- No secondary indexes: postings are written ~6 per order and read only by audits and
-- the invariant check (full scans). Credits keep their idempotency key in `credits`.

CREATE TABLE credits (
    ref         TEXT PRIMARY KEY,
    account_id  BIGINT NOT NULL REFERENCES accounts(id),
    asset       TEXT NOT NULL,
    amount      BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE SEQUENCE order_ids START 1;
CREATE TABLE orders (
    id              BIGINT PRIMARY KEY,
    account_id      BIGINT NOT NULL REFERENCES accounts(id),
    symbol          TEXT NOT NULL,
    client_order_id TEXT NOT NULL,
    side            SMALLINT NOT NULL,
    type            SMALLINT NOT NULL,
    tif             SMALLINT NOT NULL,
    price           BIGINT NOT NULL,
    qty             BIGINT NOT NULL,
    quote_qty       BIGINT NOT NULL,
    by_quote        BOOLEAN NOT NULL,
    status          SMALLINT NOT NULL,
    executed        BIGINT NOT NULL DEFAULT 0,
    cum_quote       BIGINT NOT NULL DEFAULT 0,
    hold_asset      TEXT NOT NULL,
    hold_amount     BIGINT NOT NULL,
    hold_remaining  BIGINT NOT NULL CHECK (hold_remaining >= 0),
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    UNIQUE (account_id, symbol, client_order_id)
);
CREATE INDEX orders_open ON orders (account_id, symbol) WHERE status IN (0, 1, 2);
CREATE INDEX orders_pending ON orders (created_ms) WHERE status = 0;

CREATE TABLE trades (
    symbol          TEXT NOT NULL,
    trade_id        BIGINT NOT NULL,
    price           BIGINT NOT NULL,
    qty             BIGINT NOT NULL,
    quote_qty       BIGINT NOT NULL,
    buyer_order     BIGINT NOT NULL,
    seller_order    BIGINT NOT NULL,
    buyer_account   BIGINT NOT NULL,
    seller_account  BIGINT NOT NULL,
    buyer_is_maker  BOOLEAN NOT NULL,
    buyer_fee       BIGINT NOT NULL,
    seller_fee      BIGINT NOT NULL,
    ts              BIGINT NOT NULL,
    PRIMARY KEY (symbol, trade_id)
);
CREATE INDEX trades_buyer ON trades (buyer_account, symbol, trade_id);
CREATE INDEX trades_seller ON trades (seller_account, symbol, trade_id);

-- Settlement's idempotency: the last engine command sequence applied per symbol.
CREATE TABLE settlement_cursor (
    symbol    TEXT PRIMARY KEY,
    last_seq  BIGINT NOT NULL
);

-- Where each event consumer stands in the EVENTS stream (moved with its own writes).
CREATE TABLE consumer_positions (
    consumer    TEXT PRIMARY KEY,
    stream_seq  BIGINT NOT NULL
);

-- Market data (owned by the marketdata service).
CREATE TABLE klines (
    symbol        TEXT NOT NULL,
    interval      TEXT NOT NULL,
    open_time     BIGINT NOT NULL,
    open          BIGINT NOT NULL,
    high          BIGINT NOT NULL,
    low           BIGINT NOT NULL,
    close         BIGINT NOT NULL,
    volume        BIGINT NOT NULL,
    quote_volume  BIGINT NOT NULL,
    trades        BIGINT NOT NULL,
    taker_buy_volume BIGINT NOT NULL,
    taker_buy_quote_volume BIGINT NOT NULL,
    PRIMARY KEY (symbol, interval, open_time)
);

-- Order entry for a whole batch of requests in one round trip and one commit. Each
-- request succeeds or fails on its own: result 0 = placed, 1 = insufficient balance,
-- 2 = duplicate client order id (nothing of a failed request remains).
CREATE FUNCTION place_orders(
    p_account BIGINT[], p_symbol TEXT[], p_client_id TEXT[], p_side SMALLINT[],
    p_type SMALLINT[], p_tif SMALLINT[], p_price BIGINT[], p_qty BIGINT[],
    p_quote_qty BIGINT[], p_by_quote BOOLEAN[], p_hold_asset TEXT[], p_hold BIGINT[],
    p_ts BIGINT[]
) RETURNS TABLE (order_id BIGINT, result SMALLINT)
LANGUAGE plpgsql AS $$
DECLARE
    i INT;
    oid BIGINT;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_account, 1), 0) LOOP
        oid := NULL;
        UPDATE balances SET available = available - p_hold[i], locked = locked + p_hold[i]
        WHERE account_id = p_account[i] AND asset = p_hold_asset[i]
          AND available >= p_hold[i];
        IF NOT FOUND THEN
            order_id := NULL; result := 1; RETURN NEXT; CONTINUE;
        END IF;
        INSERT INTO orders (id, account_id, symbol, client_order_id, side, type, tif, price,
            qty, quote_qty, by_quote, status, hold_asset, hold_amount, hold_remaining,
            created_ms, updated_ms)
        VALUES (nextval('order_ids'), p_account[i], p_symbol[i], p_client_id[i], p_side[i],
            p_type[i], p_tif[i], p_price[i], p_qty[i], p_quote_qty[i], p_by_quote[i], 0,
            p_hold_asset[i], p_hold[i], p_hold[i], p_ts[i], p_ts[i])
        ON CONFLICT (account_id, symbol, client_order_id) DO NOTHING
        RETURNING id INTO oid;
        IF oid IS NULL THEN
            UPDATE balances SET available = available + p_hold[i], locked = locked - p_hold[i]
            WHERE account_id = p_account[i] AND asset = p_hold_asset[i];
            order_id := NULL; result := 2; RETURN NEXT; CONTINUE;
        END IF;
        INSERT INTO postings (tx_ref, account_id, asset, bucket, amount) VALUES
            ('hold:' || oid, p_account[i], p_hold_asset[i], 'a', -p_hold[i]),
            ('hold:' || oid, p_account[i], p_hold_asset[i], 'l', p_hold[i]);
        order_id := oid; result := 0; RETURN NEXT;
    END LOOP;
END;
$$;
