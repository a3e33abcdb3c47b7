-- The columns erasure may change (0011) change only the way erasure changes them: a user's id
-- becomes a pseudonym (`erased:…`, once), an IP address or a user agent becomes NULL. Any other
-- change to them (a forged actor, a rewritten address) fails like every other update.
CREATE TRIGGER audit_log_erasure_only
BEFORE UPDATE OF actor_id, target_id, ip, user_agent
ON audit_log
WHEN NOT (
    (NEW.actor_id IS OLD.actor_id
        OR (OLD.actor_type = 'user'
            AND COALESCE(OLD.actor_id, '') NOT LIKE 'erased:%'
            AND COALESCE(NEW.actor_id, '') LIKE 'erased:%'))
    AND (NEW.target_id IS OLD.target_id
        OR (COALESCE(OLD.target_type, '') = 'user'
            AND COALESCE(OLD.target_id, '') NOT LIKE 'erased:%'
            AND COALESCE(NEW.target_id, '') LIKE 'erased:%'))
    AND (NEW.ip IS OLD.ip OR NEW.ip IS NULL)
    AND (NEW.user_agent IS OLD.user_agent OR NEW.user_agent IS NULL)
)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
