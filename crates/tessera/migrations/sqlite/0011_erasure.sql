-- Erasure (`DELETE /admin/users/{id}`): the audit log stays append-only, except that an erased
-- user's id may be replaced by a pseudonym and the IP address and user agent of what they did
-- cleared. Every other column still refuses an update.
DROP TRIGGER audit_log_append_only;
CREATE TRIGGER audit_log_append_only
BEFORE UPDATE OF id, occurred_at, actor_type, action, target_type, result, reason, correlation_id,
    tenant_id
ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

