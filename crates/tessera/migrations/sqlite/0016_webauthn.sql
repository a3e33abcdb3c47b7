-- WebAuthn credentials (passkeys, security keys) as second factors and for passwordless
-- sign-in (docs/accounts.md, "Passkeys"). A `webauthn` factor's `secret` is the credential
-- (public key, counter, flags) as webauthn-rs serialises it, sealed like a TOTP secret.
-- SQLite cannot change a CHECK constraint: the table is rebuilt.
CREATE TABLE mfa_factors_new (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind          TEXT NOT NULL CHECK (kind IN ('totp', 'webauthn')),
    name          TEXT NOT NULL,
    secret        BLOB NOT NULL,
    created_at    BIGINT NOT NULL,
    confirmed_at  BIGINT,
    last_used_at  BIGINT,
    last_step     BIGINT,
    -- the WebAuthn credential id, base64url: one account per credential
    credential_id TEXT
);
INSERT INTO mfa_factors_new (id, user_id, kind, name, secret, created_at, confirmed_at,
                             last_used_at, last_step)
    SELECT id, user_id, kind, name, secret, created_at, confirmed_at, last_used_at, last_step
    FROM mfa_factors;
DROP TABLE mfa_factors;
ALTER TABLE mfa_factors_new RENAME TO mfa_factors;
CREATE INDEX mfa_factors_user_id_idx ON mfa_factors (user_id);
CREATE UNIQUE INDEX mfa_factors_credential_id_idx ON mfa_factors (credential_id);
