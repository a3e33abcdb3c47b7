-- Email verification and password reset tokens, the mail queue, the domain-event outbox and
-- webhooks. Same schema on SQLite and PostgreSQL (only the auto-increment key and BLOB/BYTEA
-- differ).

-- One-time tokens sent by email, stored only as SHA-256 digests.
CREATE TABLE email_tokens (
    token_hash  TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose     TEXT NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    -- the normalized address the token was sent to: it proves that address only
    email       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    -- set when the token is used or superseded by a newer one
    consumed_at BIGINT
);
CREATE INDEX email_tokens_user_idx ON email_tokens (user_id, purpose);

-- Emails waiting for delivery. The payload (recipient, link with its raw token) is sealed with
-- the master key (job id as associated data) and wiped once the job is done.
CREATE TABLE mail_jobs (
    id              TEXT PRIMARY KEY,
    template        TEXT NOT NULL,
    payload         BYTEA,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    done_at         BIGINT
);
CREATE INDEX mail_jobs_due_idx ON mail_jobs (status, next_attempt_at);

-- The transactional outbox: one row per domain event, written in the transaction of the change.
CREATE TABLE outbox (
    seq             BIGSERIAL PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    event_type      TEXT NOT NULL,
    subject         TEXT NOT NULL,
    correlation_id  TEXT NOT NULL,
    occurred_at     BIGINT NOT NULL,
    -- the whole envelope as JSON, exactly as published
    envelope        TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'published', 'parked')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    published_at    BIGINT
);
CREATE INDEX outbox_status_idx ON outbox (status, seq);
CREATE INDEX outbox_subject_idx ON outbox (subject, seq);

-- Webhook endpoints; the signing secret is sealed with the master key (webhook id as AAD).
CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    -- space-separated event types, or '*'
    event_types TEXT NOT NULL,
    secret      BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

-- One row per (webhook, event), written with the event.
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_seq       BIGINT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'parked')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    delivered_at    BIGINT
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (status, event_seq);
