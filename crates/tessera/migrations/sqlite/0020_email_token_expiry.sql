-- Housekeeping deletes expired verification and reset tokens (used or not) through this index,
-- so email_tokens does not grow without bound.
CREATE INDEX email_tokens_expires_idx ON email_tokens (expires_at);
