-- tradeplane ledger schema v11: one index fewer to maintain per order written.
--
-- orders_open (account_id, symbol) WHERE status IN (0, 1, 2) is the leading part of
-- orders_open_client_id (account_id, symbol, client_order_id) under the same predicate
-- (v5): every query it served (an account's open orders, of one symbol or all) is served
-- by the unique index as well. Each order's insert and each settlement update that keeps it
-- open (a status change is never a HOT update: status is in the indexes' predicates)
-- wrote an entry into both.
DROP INDEX IF EXISTS orders_open;
