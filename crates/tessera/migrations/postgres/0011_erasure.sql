-- Erasure (`DELETE /admin/users/{id}`): the audit log stays append-only, except that an erased
-- user's id may be replaced by a pseudonym and the IP address and user agent of what they did
-- cleared. An update that names any other column still fails, whatever the values.
DROP TRIGGER audit_log_append_only ON audit_log;
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OF id, occurred_at, actor_type, action, target_type, result, reason, correlation_id,
    tenant_id
    ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
