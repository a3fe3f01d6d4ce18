-- tradeplane schema v4: accounts and security. Users and their sessions (argon2 password
-- hashes, email verification, rotating refresh tokens, TOTP 2FA with recovery codes, login
-- history), API-key controls (signature type, IP allow-list, expiry), frozen accounts,
-- admin identities with a role, the append-only audit log and platform-wide flags (the
-- kill switch). Every token and code is stored as a SHA-256 hash, never in clear.

-- A frozen account's keys may read but neither trade nor withdraw.
ALTER TABLE accounts
    ADD COLUMN frozen_at      TIMESTAMPTZ,
    ADD COLUMN frozen_reason  TEXT;

-- HMAC_SHA256 keys keep their secret encrypted (secret_enc); ED25519 keys keep only the
-- public key the user registered (public_key, 32 raw bytes). ip_allow: CIDR texts; empty
-- = any address. expires_at NULL = never.
ALTER TABLE api_keys
    ALTER COLUMN secret_enc DROP NOT NULL,
    ADD COLUMN key_type    TEXT NOT NULL DEFAULT 'HMAC_SHA256'
        CHECK (key_type IN ('HMAC_SHA256', 'ED25519')),
    ADD COLUMN public_key  BYTEA,
    ADD COLUMN ip_allow    TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN expires_at  TIMESTAMPTZ,
    ADD COLUMN label       TEXT NOT NULL DEFAULT '',
    ADD CONSTRAINT api_keys_material CHECK (
        (key_type = 'HMAC_SHA256' AND secret_enc IS NOT NULL)
        OR (key_type = 'ED25519' AND public_key IS NOT NULL AND octet_length(public_key) = 32)),
    ADD CONSTRAINT api_keys_perms CHECK (
        cardinality(perms) > 0 AND perms <@ ARRAY['read', 'trade', 'withdraw']::TEXT[]);

CREATE TABLE users (
    id                 BIGSERIAL PRIMARY KEY,
    email              TEXT NOT NULL,
    password_hash      TEXT NOT NULL,
    account_id         BIGINT NOT NULL UNIQUE REFERENCES accounts(id),
    email_verified_at  TIMESTAMPTZ,
    -- Pending until totp_enabled_at is set (setup, then a first valid code enables it).
    totp_secret_enc    BYTEA,
    totp_enabled_at    TIMESTAMPTZ,
    -- The last TOTP time step accepted: a code is good once.
    totp_last_step     BIGINT NOT NULL DEFAULT 0,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email ON users (lower(email));

CREATE TABLE email_tokens (
    token_hash  BYTEA PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id),
    purpose     TEXT NOT NULL CHECK (purpose IN ('verify_email')),
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ
);

-- A login starts a session (one refresh-token family); each refresh replaces the token
-- with a new one of the same family. A token presented twice revokes its whole family.
CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    user_id         BIGINT NOT NULL REFERENCES users(id),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at      TIMESTAMPTZ,
    revoked_reason  TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash  BYTEA PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions(id),
    issued_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE recovery_codes (
    user_id    BIGINT NOT NULL REFERENCES users(id),
    code_hash  BYTEA NOT NULL,
    used_at    TIMESTAMPTZ,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE login_history (
    id          BIGSERIAL PRIMARY KEY,
    user_id     BIGINT REFERENCES users(id),
    email       TEXT NOT NULL,
    ip          TEXT NOT NULL,
    user_agent  TEXT NOT NULL,
    success     BOOLEAN NOT NULL,
    reason      TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX login_history_user ON login_history (user_id, id DESC);

CREATE TABLE admin_users (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL CHECK (role IN ('SuperAdmin', 'Operator', 'Support', 'Auditor')),
    token_hash   BYTEA NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled_at  TIMESTAMPTZ
);

-- Every privileged action, once: who (actor and role), what (action, target, the state
-- before and after), when and from where. Append-only: the triggers below refuse UPDATE,
-- DELETE and TRUNCATE for every role, and no API writes anything but INSERTs.
CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor   TEXT NOT NULL,
    role    TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    before  JSONB,
    after   JSONB,
    ip      TEXT NOT NULL
);
CREATE INDEX audit_log_action ON audit_log (action, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Platform-wide switches, e.g. kill_switch = {"on": true}.
CREATE TABLE platform_flags (
    name        TEXT PRIMARY KEY,
    value       JSONB NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
