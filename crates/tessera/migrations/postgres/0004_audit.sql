-- The audit log: an append-only record of security-relevant actions. Rows are never updated
-- (a trigger refuses it); only the retention purge deletes old rows. Same schema on SQLite and
-- PostgreSQL (only the auto-increment key and the trigger syntax differ).
CREATE TABLE audit_log (
    id             BIGSERIAL PRIMARY KEY,
    occurred_at    BIGINT NOT NULL,
    -- who: user, client, system, or none (an unknown account at login)
    actor_type     TEXT NOT NULL CHECK (actor_type IN ('user', 'client', 'system', 'none')),
    actor_id       TEXT,
    -- what: `user.login`, `session.revoke`, `client.create`, ...
    action         TEXT NOT NULL,
    -- on what: user, session, client, key, webhook, audit_log
    target_type    TEXT,
    target_id      TEXT,
    result         TEXT NOT NULL CHECK (result IN ('success', 'failure')),
    -- a reason code (`invalid_password`, `logout`, ...), never free text from a request
    reason         TEXT,
    ip             TEXT,
    user_agent     TEXT,
    correlation_id TEXT NOT NULL
);
CREATE INDEX audit_log_time_idx ON audit_log (occurred_at);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, id);
CREATE INDEX audit_log_target_idx ON audit_log (target_id, id);
CREATE INDEX audit_log_action_idx ON audit_log (action, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
