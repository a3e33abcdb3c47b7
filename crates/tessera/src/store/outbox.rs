//! The outbox table: domain events appended in the transaction of their change, claimed by relays
//! with a lease (`UPDATE … RETURNING`, no `SKIP LOCKED`: the same SQL on SQLite and PostgreSQL).

use sqlx::{Any, Executor};

pub struct NewEvent<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub subject: &'a str,
    pub correlation_id: &'a str,
    pub occurred_at: i64,
    pub envelope: &'a str,
}

/// Inserts an event and a delivery row for each webhook subscribed to its type.
pub async fn insert(tx: &mut super::Tx, e: &NewEvent<'_>) -> Result<i64, sqlx::Error> {
    let (seq,): (i64,) = sqlx::query_as(
        "INSERT INTO outbox (event_id, event_type, subject, correlation_id, occurred_at, envelope, \
         next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $5) RETURNING seq",
    )
    .bind(e.event_id)
    .bind(e.event_type)
    .bind(e.subject)
    .bind(e.correlation_id)
    .bind(e.occurred_at)
    .bind(e.envelope)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, event_seq, next_attempt_at) \
         SELECT $1 || '.' || id, id, $2, $3 FROM webhooks \
         WHERE event_types = '*' OR (' ' || event_types || ' ') LIKE $4",
    )
    .bind(e.event_id)
    .bind(seq)
    .bind(e.occurred_at)
    .bind(format!("% {} %", e.event_type))
    .execute(&mut **tx)
    .await?;
    Ok(seq)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub seq: i64,
    pub event_id: String,
    pub event_type: String,
    pub subject: String,
    pub envelope: String,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub published_at: Option<i64>,
}

const COLUMNS: &str =
    "seq, event_id, event_type, subject, envelope, status, attempts, last_error, published_at";

/// Events in outbox order after `after`; `status` `None` lists all.
pub async fn list<'e>(
    db: impl Executor<'e, Database = Any>,
    status: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM outbox WHERE ($1 = '' OR status = $1) AND seq > $2 \
         ORDER BY seq LIMIT $3"
    )))
    .bind(status.unwrap_or(""))
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Events of one subject, in order (tests and diagnostics).
pub async fn list_for_subject<'e>(
    db: impl Executor<'e, Database = Any>,
    subject: &str,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM outbox WHERE subject = $1 ORDER BY seq"
    )))
    .bind(subject)
    .fetch_all(db)
    .await
}

/// Claims up to `limit` due events for `owner` until `lease_until`, oldest first, skipping any
/// whose subject has an earlier pending event that is leased by someone else or waiting for a
/// retry (so a subject's events go out in order). The outer conditions are checked again on the
/// row being updated, so two relays claiming at once never both get a row.
pub async fn claim<'e>(
    db: impl Executor<'e, Database = Any>,
    owner: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    let mut rows: Vec<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(super::jobs::claim_sql(
        super::jobs::OUTBOX,
        "AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.subject = c.subject \
             AND p.seq < c.seq AND p.status = 'pending' \
             AND ((p.lease_until IS NOT NULL AND p.lease_until >= $3) \
                  OR p.next_attempt_at > $3))",
        "c.seq",
        COLUMNS,
    )))
    .bind(owner)
    .bind(lease_until)
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.sort_by_key(|r| r.seq);
    Ok(rows)
}

/// Of the rows `owner` holds, those with an earlier pending event of the same subject that it
/// does not hold (another relay claimed it a moment before): they must wait.
pub async fn blocked_claims<'e>(
    db: impl Executor<'e, Database = Any>,
    owner: &str,
) -> Result<Vec<i64>, sqlx::Error> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT c.seq FROM outbox c WHERE c.lease_owner = $1 AND c.status = 'pending' \
         AND EXISTS (SELECT 1 FROM outbox p WHERE p.subject = c.subject AND p.seq < c.seq \
             AND p.status = 'pending' AND (p.lease_owner IS NULL OR p.lease_owner <> $1))",
    )
    .bind(owner)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(s,)| s).collect())
}

fn seq_list(seqs: &[i64]) -> String {
    seqs.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Marks events published (only rows `owner` still holds).
pub async fn mark_published<'e>(
    db: impl Executor<'e, Database = Any>,
    owner: &str,
    seqs: &[i64],
    now: i64,
) -> Result<u64, sqlx::Error> {
    if seqs.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE outbox SET status = 'published', published_at = $1, lease_owner = NULL, \
         lease_until = NULL WHERE lease_owner = $2 AND seq IN ({})",
        seq_list(seqs)
    )))
    .bind(now)
    .bind(owner)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Gives claimed rows back untouched.
pub async fn release<'e>(
    db: impl Executor<'e, Database = Any>,
    owner: &str,
    seqs: &[i64],
) -> Result<(), sqlx::Error> {
    if seqs.is_empty() {
        return Ok(());
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE outbox SET lease_owner = NULL, lease_until = NULL \
         WHERE lease_owner = $1 AND seq IN ({})",
        seq_list(seqs)
    )))
    .bind(owner)
    .execute(db)
    .await
    .map(|_| ())
}

/// When the oldest event still waiting for the relay happened (the relay's lag).
pub async fn oldest_pending<'e>(
    db: impl Executor<'e, Database = Any>,
) -> Result<Option<i64>, sqlx::Error> {
    let (at,): (Option<i64>,) =
        sqlx::query_as("SELECT MIN(occurred_at) FROM outbox WHERE status = 'pending'")
            .fetch_one(db)
            .await?;
    Ok(at)
}
