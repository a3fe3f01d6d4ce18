-- Convert: the desk's hedge of each conversion (issue 15, items 5 and 7).
--
-- One row per conversion, written in the acceptance's own transaction: it is both the
-- conversion's routing state (PENDING -> ROUTING -> ROUTING_COMPLETE -> CONFIRMED, or
-- FAILED) and the outbox of the hedge queue (enqueued = false until the job was stored
-- on CONVERT_HEDGE; the hedger re-sends rows left false). Conversions accepted before this
-- migration have no row: nothing was hedged for them, and they read as CONFIRMED.
CREATE TABLE convert_hedges (
    order_id    BIGINT PRIMARY KEY REFERENCES convert_orders(id),
    status      TEXT NOT NULL CHECK (status IN ('PENDING', 'ROUTING', 'ROUTING_COMPLETE',
                                                'CONFIRMED', 'FAILED')),
    enqueued    BOOLEAN NOT NULL DEFAULT false,
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL,
    error       TEXT NOT NULL DEFAULT '' CHECK (length(error) <= 500)
);
CREATE INDEX convert_hedges_unsent ON convert_hedges (created_ms) WHERE NOT enqueued;
-- The hedge lag: the oldest conversion whose hedge has not ended.
CREATE INDEX convert_hedges_open ON convert_hedges (created_ms)
    WHERE status IN ('PENDING', 'ROUTING', 'ROUTING_COMPLETE');
