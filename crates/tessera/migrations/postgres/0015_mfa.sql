-- Second factors (docs/accounts.md, "Second factors"). A user with a confirmed factor must
-- present it after the password on every sign-in path.
CREATE TABLE mfa_factors (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind         TEXT NOT NULL CHECK (kind IN ('totp')),
    name         TEXT NOT NULL,
    -- the factor's secret, sealed with AES-256-GCM under the master key ('mfa_factor:' || id
    -- as associated data)
    secret       BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    -- NULL until a first code confirms the enrolment; only confirmed factors count
    confirmed_at BIGINT,
    last_used_at BIGINT,
    -- the last TOTP time step accepted: each code is accepted once (RFC 6238 §5.2)
    last_step    BIGINT
);
CREATE INDEX mfa_factors_user_id_idx ON mfa_factors (user_id);

-- Single-use recovery codes, stored only as SHA-256 digests (80 random bits each).
CREATE TABLE mfa_recovery_codes (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

-- How the user proved who they are, RFC 8176 values, space-separated: `pwd`, or `pwd otp mfa`
-- after a second factor. A session's tokens carry it (`amr`); a code carries it from the
-- browser session to the token family. NULL for sessions from before this column.
ALTER TABLE sessions ADD COLUMN amr TEXT;
ALTER TABLE oauth_codes ADD COLUMN amr TEXT;
