-- Mail jobs park like outbox events and webhook deliveries (one leased queue, store/jobs.rs):
-- the final status of a job given up is 'parked', not 'failed'. SQLite cannot change a CHECK
-- constraint in place, so the table is rebuilt.
CREATE TABLE mail_jobs_new (
    id              TEXT PRIMARY KEY,
    template        TEXT NOT NULL,
    payload         BLOB,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'parked')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    done_at         BIGINT
);
INSERT INTO mail_jobs_new (id, template, payload, status, attempts, next_attempt_at, lease_owner,
                           lease_until, last_error, created_at, done_at)
    SELECT id, template, payload, CASE WHEN status = 'failed' THEN 'parked' ELSE status END,
           attempts, next_attempt_at, lease_owner, lease_until, last_error, created_at, done_at
    FROM mail_jobs;
DROP TABLE mail_jobs;
ALTER TABLE mail_jobs_new RENAME TO mail_jobs;
CREATE INDEX mail_jobs_due_idx ON mail_jobs (status, next_attempt_at);
