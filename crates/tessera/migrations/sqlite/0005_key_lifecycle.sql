-- Key lifecycle: a key can be published ahead of use ('next') and revoked in an emergency.
-- SQLite cannot alter a CHECK constraint: rebuild the table.
CREATE TABLE signing_keys_new (
    kid          TEXT PRIMARY KEY,
    alg          TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('next', 'active', 'retired', 'revoked')),
    private_key  BLOB NOT NULL,
    public_jwk   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    activated_at BIGINT,
    retired_at   BIGINT
);
INSERT INTO signing_keys_new (kid, alg, state, private_key, public_jwk, created_at, activated_at, retired_at)
    SELECT kid, alg, state, private_key, public_jwk, created_at, activated_at, retired_at FROM signing_keys;
DROP TABLE signing_keys;
ALTER TABLE signing_keys_new RENAME TO signing_keys;
CREATE UNIQUE INDEX signing_keys_one_active_idx ON signing_keys (state) WHERE state = 'active';
CREATE UNIQUE INDEX signing_keys_one_next_idx ON signing_keys (state) WHERE state = 'next';
