-- The W3C trace id of the request an entry was written for (docs/operations.md, "Traces"),
-- next to its correlation id. Append-only like the other columns that erasure does not touch.
ALTER TABLE audit_log ADD COLUMN trace_id TEXT;
DROP TRIGGER audit_log_append_only;
CREATE TRIGGER audit_log_append_only
BEFORE UPDATE OF id, occurred_at, actor_type, action, target_type, result, reason, correlation_id,
    tenant_id, trace_id
ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
