-- Sign-in through other identity providers (docs/federation.md): the upstream providers, the
-- upstream identities linked to local accounts, and the provider an enterprise tenant's
-- verified domain signs in with.
CREATE TABLE identity_providers (
    name          TEXT PRIMARY KEY,
    -- 'oidc' (discovery from the issuer) or 'github' (OAuth 2.0 and GitHub's user API)
    kind          TEXT NOT NULL CHECK (kind IN ('oidc', 'github')),
    display_name  TEXT NOT NULL,
    issuer        TEXT NOT NULL,
    client_id     TEXT NOT NULL,
    -- sealed under the master key, bound to the provider's name
    client_secret BLOB NOT NULL,
    scopes        TEXT NOT NULL,
    -- JSON: which upstream claim gives email, email_verified, name, picture
    claims        TEXT NOT NULL,
    jit           INTEGER NOT NULL DEFAULT 0 CHECK (jit IN (0, 1)),
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE federated_identities (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider     TEXT NOT NULL REFERENCES identity_providers (name) ON DELETE CASCADE,
    -- the upstream's subject (`sub`, or GitHub's numeric id)
    subject      TEXT NOT NULL,
    email        TEXT,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE UNIQUE INDEX federated_identities_subject_idx ON federated_identities (provider, subject);
CREATE INDEX federated_identities_user_id_idx ON federated_identities (user_id);

-- Enterprise routing: a verified domain's users sign in at this provider; with
-- passwords_disabled = 1 they cannot sign in with a password at all.
ALTER TABLE tenant_domains ADD COLUMN idp TEXT REFERENCES identity_providers (name) ON DELETE SET NULL;
ALTER TABLE tenant_domains ADD COLUMN passwords_disabled INTEGER NOT NULL DEFAULT 0 CHECK (passwords_disabled IN (0, 1));
