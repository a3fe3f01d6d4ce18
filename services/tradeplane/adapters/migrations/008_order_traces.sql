-- tradeplane ledger schema v6: the trace context of an order whose request was traced
-- (sampled), stored with the order in the same statement, so the outbox relay's re-send
-- of its command continues the order's trace (settlement/service.py, relay_round). Only
-- sampled orders have a row: with ratio sampling, few.
CREATE TABLE order_traces (
    order_id    BIGINT PRIMARY KEY,
    traceparent TEXT NOT NULL CHECK (length(traceparent) <= 256)
);
