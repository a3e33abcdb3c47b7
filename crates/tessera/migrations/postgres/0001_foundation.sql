-- Foundation: users, profiles, sessions with refresh-token families, signing keys.
-- One schema on SQLite and PostgreSQL: TEXT ids (UUIDv7), BIGINT Unix seconds, TEXT JSON,
-- no booleans (a nullable timestamp says more: email_verified_at, revoked_at).

CREATE TABLE users (
    id                TEXT PRIMARY KEY,
    email             TEXT NOT NULL,
    -- lower-cased email: uniqueness is case-insensitive
    email_normalized  TEXT NOT NULL UNIQUE,
    email_verified_at BIGINT,
    -- Argon2id PHC string, or an imported bcrypt hash upgraded at the next login
    password_hash     TEXT,
    -- space-separated global roles (tenant roles come with tenants)
    roles             TEXT NOT NULL DEFAULT '',
    status            TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deactivated')),
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

CREATE TABLE profiles (
    user_id      TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    display_name TEXT,
    given_name   TEXT,
    family_name  TEXT,
    locale       TEXT,
    timezone     TEXT,
    preferences  TEXT NOT NULL DEFAULT '{}',
    updated_at   BIGINT NOT NULL
);

-- A session is one login on one device; its refresh tokens form one family.
CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- the active tenant (filled in once tenants exist)
    tenant_id      TEXT,
    created_at     BIGINT NOT NULL,
    last_used_at   BIGINT NOT NULL,
    -- absolute end of the session: no refresh extends it
    expires_at     BIGINT NOT NULL,
    revoked_at     BIGINT,
    revoked_reason TEXT,
    user_agent     TEXT,
    ip             TEXT
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);

-- Refresh tokens are stored only as SHA-256 digests.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    -- set when the token is rotated; presenting it again after the grace window is reuse
    used_at    BIGINT
);
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);

-- Signing keys; private keys sealed with AES-256-GCM under the master key (kid as associated data).
CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    alg          TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('active', 'retired')),
    private_key  BYTEA NOT NULL,
    public_jwk   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    activated_at BIGINT,
    retired_at   BIGINT
);
-- At most one current signing key, even when several replicas start at once.
CREATE UNIQUE INDEX signing_keys_one_active_idx ON signing_keys (state) WHERE state = 'active';
