//! The mail queue: jobs written in the transaction that wants the email, delivered later by the
//! mail worker with a lease, retried with backoff. Payloads are sealed and wiped when done.

use sqlx::{Any, Executor};

pub async fn insert(
    tx: &mut super::Tx,
    id: &str,
    template: &str,
    sealed_payload: &[u8],
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO mail_jobs (id, template, payload, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(id)
    .bind(template)
    .bind(sealed_payload)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MailJob {
    pub id: String,
    pub template: String,
    pub payload: Option<Vec<u8>>,
    pub attempts: i64,
}

/// Claims up to `limit` due jobs for `owner`.
pub async fn claim<'e>(
    db: impl Executor<'e, Database = Any>,
    owner: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> Result<Vec<MailJob>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE mail_jobs SET lease_owner = $1, lease_until = $2 \
         WHERE status = 'pending' AND (lease_until IS NULL OR lease_until < $3) \
           AND next_attempt_at <= $3 AND id IN ( \
             SELECT id FROM mail_jobs WHERE status = 'pending' \
               AND (lease_until IS NULL OR lease_until < $3) AND next_attempt_at <= $3 \
             ORDER BY next_attempt_at, id LIMIT $4) \
         RETURNING id, template, payload, attempts",
    )
    .bind(owner)
    .bind(lease_until)
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Marks a job sent and wipes its payload.
pub async fn mark_sent<'e>(
    db: impl Executor<'e, Database = Any>,
    owner: &str,
    id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE mail_jobs SET status = 'sent', payload = NULL, done_at = $1, lease_owner = NULL, \
         lease_until = NULL, attempts = attempts + 1 WHERE id = $2 AND lease_owner = $3",
    )
    .bind(now)
    .bind(id)
    .bind(owner)
    .execute(db)
    .await
    .map(|_| ())
}

/// Records a failed attempt; after `max_attempts` the job fails for good and its payload is
/// wiped. Returns true when it failed for good.
pub async fn mark_failed<'e>(
    db: impl Executor<'e, Database = Any>,
    owner: &str,
    id: &str,
    error: &str,
    now: i64,
    next_attempt_at: i64,
    max_attempts: i64,
) -> Result<bool, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "UPDATE mail_jobs SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, \
         lease_owner = NULL, lease_until = NULL, \
         status = CASE WHEN attempts + 1 >= $3 THEN 'failed' ELSE 'pending' END, \
         payload = CASE WHEN attempts + 1 >= $3 THEN NULL ELSE payload END, \
         done_at = CASE WHEN attempts + 1 >= $3 THEN $4 ELSE NULL END \
         WHERE id = $5 AND lease_owner = $6 RETURNING status",
    )
    .bind(error)
    .bind(next_attempt_at)
    .bind(max_attempts)
    .bind(now)
    .bind(id)
    .bind(owner)
    .fetch_optional(db)
    .await?;
    Ok(row.is_some_and(|(s,)| s == "failed"))
}

/// Job counts per status.
pub async fn count_by_status<'e>(
    db: impl Executor<'e, Database = Any>,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT status, COUNT(*) FROM mail_jobs GROUP BY status")
        .fetch_all(db)
        .await
}

/// Whether any row is due (a read, so idle workers never take SQLite's write lock).
pub async fn any_due<'e>(
    db: impl Executor<'e, Database = Any>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM mail_jobs WHERE status = 'pending' AND next_attempt_at <= $1 LIMIT 1",
    )
    .bind(now)
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}
