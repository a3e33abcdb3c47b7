-- The emailed proof of ownership before an upstream identity is joined to an existing account
-- (docs/federation.md): a one-time link sent to the account's address, stored only as its
-- SHA-256 digest, usable only in the browser that asked for it.
CREATE TABLE identity_link_tokens (
    token_hash     TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider       TEXT NOT NULL REFERENCES identity_providers (name) ON DELETE CASCADE,
    -- the upstream identity to join, and the address the upstream gave
    subject        TEXT NOT NULL,
    upstream_email TEXT NOT NULL,
    -- the account's normalized address the link was sent to: it proves that address only
    email          TEXT NOT NULL,
    -- the digest of the cookie of the browser that asked for the link
    browser        TEXT NOT NULL,
    -- the hosted authorization request the sign-in continues (form-encoded)
    request        TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    -- set when the link is used or superseded by a newer one
    consumed_at    BIGINT
);
CREATE INDEX identity_link_tokens_user_idx ON identity_link_tokens (user_id);
-- housekeeping deletes expired links through it
CREATE INDEX identity_link_tokens_expires_idx ON identity_link_tokens (expires_at);
