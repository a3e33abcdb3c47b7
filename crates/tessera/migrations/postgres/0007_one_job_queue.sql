-- Mail jobs park like outbox events and webhook deliveries (one leased queue, store/jobs.rs):
-- the final status of a job given up is 'parked', not 'failed'.
ALTER TABLE mail_jobs DROP CONSTRAINT mail_jobs_status_check;
UPDATE mail_jobs SET status = 'parked' WHERE status = 'failed';
ALTER TABLE mail_jobs ADD CONSTRAINT mail_jobs_status_check
    CHECK (status IN ('pending', 'sent', 'parked'));
