-- tradeplane ledger schema v5: a client order id is unique among an account's OPEN orders
-- of a symbol only, as on Binance: once an order is no longer open (FILLED, CANCELED,
-- REJECTED, EXPIRED...) its clientOrderId may be used again. A query by client order id
-- answers the newest order that has it (the open one, when there is one: it is newer
-- than every closed order with that id).

ALTER TABLE orders DROP CONSTRAINT orders_account_id_symbol_client_order_id_key;
CREATE UNIQUE INDEX orders_open_client_id ON orders (account_id, symbol, client_order_id)
    WHERE status IN (0, 1, 2);
CREATE INDEX orders_client_id ON orders (account_id, symbol, client_order_id, id);

-- Order entry as in v2, refusing a client order id only while an order with it is open.
CREATE OR REPLACE FUNCTION place_orders(
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
        ON CONFLICT (account_id, symbol, client_order_id) WHERE status IN (0, 1, 2)
            DO NOTHING
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
