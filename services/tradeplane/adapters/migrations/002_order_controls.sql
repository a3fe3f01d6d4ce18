-- tradeplane ledger schema v2: order controls (stops, icebergs, self-trade prevention,
-- good-till-date, amend, OCO lists). Every new column has a default that keeps the rows
-- of v1 valid and means "no such control".

-- The pair's self-trade prevention mode for orders that do not name one.
ALTER TABLE pairs ADD COLUMN default_stp TEXT NOT NULL DEFAULT 'NONE'
    CHECK (default_stp IN ('NONE', 'EXPIRE_TAKER', 'EXPIRE_MAKER', 'EXPIRE_BOTH'));

-- An OCO list: its orders carry its id in orders.order_list_id. Its one hold sits on the
-- order rows (see domain/ledger.py: a leg that ends hands it to the other leg).
CREATE SEQUENCE order_list_ids START 1;
CREATE TABLE order_lists (
    id                    BIGINT PRIMARY KEY,
    account_id            BIGINT NOT NULL REFERENCES accounts(id),
    symbol                TEXT NOT NULL,
    list_client_order_id  TEXT NOT NULL,
    contingency           TEXT NOT NULL DEFAULT 'OCO' CHECK (contingency IN ('OCO')),
    -- Binance's listOrderStatus: EXECUTING while a leg is open, then ALL_DONE, or REJECT
    -- when the engine refused the list.
    status                TEXT NOT NULL DEFAULT 'EXECUTING'
        CHECK (status IN ('EXECUTING', 'ALL_DONE', 'REJECT')),
    created_ms            BIGINT NOT NULL,
    updated_ms            BIGINT NOT NULL,
    UNIQUE (account_id, list_client_order_id)
);
CREATE INDEX order_lists_open ON order_lists (account_id, symbol) WHERE status = 'EXECUTING';

ALTER TABLE orders
    ADD COLUMN stop_price    BIGINT NOT NULL DEFAULT 0,   -- ticks; stop types only
    ADD COLUMN iceberg_qty   BIGINT NOT NULL DEFAULT 0,   -- visible lots; 0 = not an iceberg
    ADD COLUMN stp           SMALLINT NOT NULL DEFAULT 0, -- StpMode
    ADD COLUMN good_till     BIGINT NOT NULL DEFAULT 0,   -- ms; GTD orders only
    ADD COLUMN working_ms    BIGINT NOT NULL DEFAULT 0,   -- when a stop triggered; 0 = not yet
    ADD COLUMN order_list_id BIGINT NOT NULL DEFAULT 0,   -- order_lists.id; 0 = none
    ADD COLUMN reason        SMALLINT NOT NULL DEFAULT 0; -- Reason of the final Done
CREATE INDEX orders_list ON orders (order_list_id) WHERE order_list_id <> 0;

-- Order entry, as in v1 plus the order controls. Same contract: one round trip and one
-- commit for a whole batch; each request succeeds or fails on its own (0 placed,
-- 1 insufficient balance, 2 duplicate client order id).
DROP FUNCTION place_orders(BIGINT[], TEXT[], TEXT[], SMALLINT[], SMALLINT[], SMALLINT[],
    BIGINT[], BIGINT[], BIGINT[], BOOLEAN[], TEXT[], BIGINT[], BIGINT[]);
CREATE FUNCTION place_orders(
    p_account BIGINT[], p_symbol TEXT[], p_client_id TEXT[], p_side SMALLINT[],
    p_type SMALLINT[], p_tif SMALLINT[], p_price BIGINT[], p_qty BIGINT[],
    p_quote_qty BIGINT[], p_by_quote BOOLEAN[], p_hold_asset TEXT[], p_hold BIGINT[],
    p_ts BIGINT[], p_stop_price BIGINT[], p_iceberg_qty BIGINT[], p_stp SMALLINT[],
    p_good_till BIGINT[]
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
            created_ms, updated_ms, stop_price, iceberg_qty, stp, good_till)
        VALUES (nextval('order_ids'), p_account[i], p_symbol[i], p_client_id[i], p_side[i],
            p_type[i], p_tif[i], p_price[i], p_qty[i], p_quote_qty[i], p_by_quote[i], 0,
            p_hold_asset[i], p_hold[i], p_hold[i], p_ts[i], p_ts[i], p_stop_price[i],
            p_iceberg_qty[i], p_stp[i], p_good_till[i])
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

-- An OCO list: the list row, its two orders and ONE hold (on the first leg; the second
-- holds 0), all or nothing. Returns the list id and the two order ids, or result 1
-- (insufficient balance) / 2 (a duplicate list or order client id) with nothing left.
CREATE FUNCTION place_order_list(
    p_account BIGINT, p_symbol TEXT, p_list_client_id TEXT, p_hold_asset TEXT,
    p_hold BIGINT, p_ts BIGINT, p_client_id TEXT[], p_side SMALLINT, p_type SMALLINT[],
    p_tif SMALLINT[], p_price BIGINT[], p_qty BIGINT[], p_quote_qty BIGINT[],
    p_stop_price BIGINT[], p_iceberg_qty BIGINT[], p_stp SMALLINT
) RETURNS TABLE (list_id BIGINT, order_ids BIGINT[], result SMALLINT)
LANGUAGE plpgsql AS $$
DECLARE
    lid BIGINT;
    oids BIGINT[] := '{}';
    oid BIGINT;
    i INT;
BEGIN
    UPDATE balances SET available = available - p_hold, locked = locked + p_hold
    WHERE account_id = p_account AND asset = p_hold_asset AND available >= p_hold;
    IF NOT FOUND THEN
        list_id := NULL; order_ids := NULL; result := 1; RETURN NEXT; RETURN;
    END IF;
    BEGIN
        lid := nextval('order_list_ids');
        INSERT INTO order_lists (id, account_id, symbol, list_client_order_id, created_ms,
            updated_ms)
        VALUES (lid, p_account, p_symbol, p_list_client_id, p_ts, p_ts);
        FOR i IN 1 .. 2 LOOP
            oid := nextval('order_ids');
            INSERT INTO orders (id, account_id, symbol, client_order_id, side, type, tif,
                price, qty, quote_qty, by_quote, status, hold_asset, hold_amount,
                hold_remaining, created_ms, updated_ms, stop_price, iceberg_qty, stp,
                order_list_id)
            VALUES (oid, p_account, p_symbol, p_client_id[i], p_side, p_type[i], p_tif[i],
                p_price[i], p_qty[i], p_quote_qty[i], false, 0, p_hold_asset,
                CASE WHEN i = 1 THEN p_hold ELSE 0 END,
                CASE WHEN i = 1 THEN p_hold ELSE 0 END, p_ts, p_ts, p_stop_price[i],
                p_iceberg_qty[i], p_stp, lid);
            oids := oids || oid;
        END LOOP;
    EXCEPTION WHEN unique_violation THEN
        -- The block's inserts are undone; give the hold back too.
        UPDATE balances SET available = available + p_hold, locked = locked - p_hold
        WHERE account_id = p_account AND asset = p_hold_asset;
        list_id := NULL; order_ids := NULL; result := 2; RETURN NEXT; RETURN;
    END;
    INSERT INTO postings (tx_ref, account_id, asset, bucket, amount) VALUES
        ('hold:' || oids[1], p_account, p_hold_asset, 'a', -p_hold),
        ('hold:' || oids[1], p_account, p_hold_asset, 'l', p_hold);
    list_id := lid; order_ids := oids; result := 0; RETURN NEXT;
END;
$$;
