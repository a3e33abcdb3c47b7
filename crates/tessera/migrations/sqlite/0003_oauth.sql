-- OAuth 2.0 / OpenID Connect: clients, authorization codes, remembered consent, revoked JWT ids.

CREATE TABLE oauth_clients (
    id                        TEXT PRIMARY KEY,
    name                      TEXT NOT NULL,
    -- SHA-256 of the client secret (base64url); NULL for public clients
    secret_hash               TEXT,
    -- space-separated lists
    redirect_uris             TEXT NOT NULL DEFAULT '',
    post_logout_redirect_uris TEXT NOT NULL DEFAULT '',
    grant_types               TEXT NOT NULL,
    scopes                    TEXT NOT NULL,
    -- RFC 8707 resource indicators the client may ask for; empty: only the default audience
    resources                 TEXT NOT NULL DEFAULT '',
    status                    TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deactivated')),
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL
);

-- Authorization codes, stored only as SHA-256 digests; single use.
CREATE TABLE oauth_codes (
    code_hash             TEXT PRIMARY KEY,
    client_id             TEXT NOT NULL,
    user_id               TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- the browser (SSO) session the user authorised from
    browser_session_id    TEXT NOT NULL,
    redirect_uri          TEXT NOT NULL,
    scope                 TEXT NOT NULL,
    resource              TEXT,
    nonce                 TEXT,
    code_challenge        TEXT,
    auth_time             BIGINT NOT NULL,
    created_at            BIGINT NOT NULL,
    expires_at            BIGINT NOT NULL,
    used_at               BIGINT,
    -- the token family issued from this code, revoked if the code is presented again
    token_session_id      TEXT
);

CREATE TABLE oauth_consents (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    -- space-separated, sorted
    scope      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- Access tokens revoked before their expiry (RFC 7009), by JWT id.
CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

-- A session is now either a first-party login (client_id NULL), a browser (SSO) session of the
-- hosted pages (browser_token_hash set), or a token family granted to an OAuth client.
ALTER TABLE sessions ADD COLUMN client_id TEXT;
ALTER TABLE sessions ADD COLUMN scope TEXT;
ALTER TABLE sessions ADD COLUMN audience TEXT;
ALTER TABLE sessions ADD COLUMN parent_id TEXT;
ALTER TABLE sessions ADD COLUMN auth_time BIGINT;
ALTER TABLE sessions ADD COLUMN browser_token_hash TEXT;
CREATE UNIQUE INDEX sessions_browser_token_hash_idx ON sessions (browser_token_hash);
CREATE INDEX sessions_parent_id_idx ON sessions (parent_id);
