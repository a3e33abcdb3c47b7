-- Authorization: global roles in their own table (a user may hold several), first-party OAuth
-- clients, and per-client refresh-token reuse grace and token-endpoint limits.

CREATE TABLE user_roles (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('admin')),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, role)
);

INSERT INTO user_roles (user_id, role, created_at)
    SELECT id, 'admin', created_at FROM users WHERE ' ' || roles || ' ' LIKE '% admin %';

ALTER TABLE users DROP COLUMN roles;

-- 1: a first-party application of the operator's; its tokens may carry the tessera:* scopes
-- (the account and admin APIs) and the user's roles. 0: a third-party client.
ALTER TABLE oauth_clients ADD COLUMN first_party INTEGER NOT NULL DEFAULT 0 CHECK (first_party IN (0, 1));
-- Seconds during which a rotated-out refresh token is still honoured (RFC 9700 §4.14.2 allows
-- none; 0 is the default, at most 60).
ALTER TABLE oauth_clients ADD COLUMN refresh_reuse_grace BIGINT NOT NULL DEFAULT 0 CHECK (refresh_reuse_grace BETWEEN 0 AND 60);
-- Token-endpoint and introspection limits for this client; NULL: the configured defaults.
ALTER TABLE oauth_clients ADD COLUMN rate_limit_per_minute BIGINT;
ALTER TABLE oauth_clients ADD COLUMN rate_limit_burst BIGINT;
-- RFC 7662 §4: 1 lets this client introspect any token; otherwise only its own tokens and
-- those whose audience is its client id.
ALTER TABLE oauth_clients ADD COLUMN may_introspect INTEGER NOT NULL DEFAULT 0 CHECK (may_introspect IN (0, 1));
