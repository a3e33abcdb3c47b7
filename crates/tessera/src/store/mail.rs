//! The mail queue: jobs written in the transaction that wants the email, delivered later by the
//! mail worker with a lease, retried with backoff. Payloads are sealed and wiped when done.

use sqlx::{Any, Executor};

use super::jobs;

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
    /// This claim's lease token (see [`jobs::lease_token`]).
    pub lease_owner: String,
}

/// Claims up to `limit` due jobs for `owner`, oldest due first.
pub async fn claim<'e>(
    db: impl Executor<'e, Database = Any>,
    owner: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> Result<Vec<MailJob>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(jobs::claim_sql(
        jobs::MAIL,
        "",
        "c.next_attempt_at, c.id",
        "id, template, payload, attempts, lease_owner",
    )))
    .bind(jobs::lease_token(owner))
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

/// Records a failed attempt (see [`jobs::mark_failed`]); a job parked after `max_attempts` has
/// its payload wiped. Returns true when it was parked.
pub async fn mark_failed(
    pool: &sqlx::AnyPool,
    owner: &str,
    id: &str,
    error: &str,
    now: i64,
    next_attempt_at: i64,
    max_attempts: i64,
) -> Result<bool, sqlx::Error> {
    let parked = jobs::mark_failed(
        pool,
        jobs::MAIL,
        owner,
        id,
        error,
        next_attempt_at,
        max_attempts,
    )
    .await?;
    if parked {
        sqlx::query(
            "UPDATE mail_jobs SET payload = NULL, done_at = $1 WHERE id = $2 AND status = 'parked'",
        )
        .bind(now)
        .bind(id)
        .execute(pool)
        .await?;
    }
    Ok(parked)
}
