-- Housekeeping deletes expired rows in bounded batches (docs/operations.md, "Housekeeping"):
-- each batch finds its rows through these indexes instead of scanning the table, so a purge
-- costs the same per row at 1 000 rows as at 10 000 000. Revoked sessions are the few, hence a
-- partial index.
CREATE INDEX refresh_tokens_expires_at_idx ON refresh_tokens (expires_at);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX oauth_codes_expires_at_idx ON oauth_codes (expires_at);
CREATE INDEX revoked_tokens_expires_at_idx ON revoked_tokens (expires_at);
