-- Escrowed deals (issue 15, item 8): the escrow account, deals and their transitions.

-- Every funded deal's asset sits in the escrow account's locked bucket until it is
-- released to the buyer or refunded to the seller (domain/escrow.py).
ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check
    CHECK (kind IN ('external', 'fees', 'user', 'desk', 'escrow'));
INSERT INTO accounts (id, name, kind) VALUES (3, 'escrow', 'escrow');

-- A key may carry the permission to make and move escrowed deals (/sapi/v1/escrow):
-- releasing a deal gives funds to another account, which neither `trade` nor `convert`
-- allows.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_perms;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_perms CHECK (
    cardinality(perms) > 0
    AND perms <@ ARRAY['read', 'trade', 'withdraw', 'convert', 'escrow']::TEXT[]);

CREATE SEQUENCE escrow_deal_ids START 1;

CREATE TABLE escrow_deals (
    id              BIGINT PRIMARY KEY,
    seller_id       BIGINT NOT NULL REFERENCES accounts(id),
    buyer_id        BIGINT NOT NULL REFERENCES accounts(id),
    client_deal_id  TEXT NOT NULL,
    asset           TEXT NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount > 0),
    price_asset     TEXT NOT NULL,
    price           BIGINT NOT NULL CHECK (price > 0),
    fund_window_ms  BIGINT NOT NULL,
    pay_window_ms   BIGINT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('CREATED', 'FUNDED', 'PAID', 'RELEASED',
                        'CANCELLED', 'EXPIRED', 'DISPUTED', 'RESOLVED_RELEASE',
                        'RESOLVED_REFUND')),
    -- When the timer expires the deal (CREATED, FUNDED); NULL in every other state.
    deadline_ms     BIGINT,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    CHECK (seller_id <> buyer_id),
    CHECK ((deadline_ms IS NOT NULL) = (state IN ('CREATED', 'FUNDED'))),
    -- A retried creation (the same clientDealId) answers the same deal.
    UNIQUE (buyer_id, client_deal_id)
);
CREATE INDEX escrow_deals_due ON escrow_deals (deadline_ms) WHERE deadline_ms IS NOT NULL;
CREATE INDEX escrow_deals_seller ON escrow_deals (seller_id, id);
CREATE INDEX escrow_deals_buyer ON escrow_deals (buyer_id, id);
CREATE INDEX escrow_deals_open ON escrow_deals (state, id)
    WHERE state IN ('CREATED', 'FUNDED', 'PAID', 'DISPUTED');

-- Each transition once: the deal's history, and what makes a repeated request (the same
-- requestId) answer the same result without moving anything again.
CREATE TABLE escrow_transitions (
    deal_id      BIGINT NOT NULL REFERENCES escrow_deals(id),
    seq          INT NOT NULL,
    action       TEXT NOT NULL,
    party        TEXT NOT NULL,
    actor        TEXT NOT NULL,
    from_state   TEXT NOT NULL,
    to_state     TEXT NOT NULL,
    request_id   TEXT,
    note         TEXT NOT NULL DEFAULT '',
    at_ms        BIGINT NOT NULL,
    PRIMARY KEY (deal_id, seq),
    UNIQUE (deal_id, request_id)
);
