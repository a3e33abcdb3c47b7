//! Webhook endpoints and their deliveries (one row per webhook and event, written with the event).

use sqlx::{Any, Executor};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub event_types: String,
    pub created_at: i64,
}

pub async fn insert<'e>(
    db: impl Executor<'e, Database = Any>,
    w: &Webhook,
    sealed_secret: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhooks (id, url, event_types, secret, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&w.id)
    .bind(&w.url)
    .bind(&w.event_types)
    .bind(sealed_secret)
    .bind(w.created_at)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn list<'e>(db: impl Executor<'e, Database = Any>) -> Result<Vec<Webhook>, sqlx::Error> {
    sqlx::query_as("SELECT id, url, event_types, created_at FROM webhooks ORDER BY created_at, id")
        .fetch_all(db)
        .await
}

/// One webhook with its sealed secret.
pub async fn find_with_secret<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
) -> Result<Option<(String, Vec<u8>)>, sqlx::Error> {
    if !super::storable(id) {
        return Ok(None);
    }
    sqlx::query_as("SELECT url, secret FROM webhooks WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Deletes a webhook and its deliveries. False when there was none.
pub async fn delete(tx: &mut super::Tx, id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A claimed delivery with what is needed to send it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: String,
    pub webhook_id: String,
    pub event_seq: i64,
    pub attempts: i64,
    pub url: String,
    pub secret: Vec<u8>,
    pub envelope: String,
    /// This claim's lease token (`owner` and a claim id), for recording the outcome.
    pub lease_owner: String,
}

/// Claims up to `limit` due deliveries for `owner`, oldest event first. Each claim has a token
/// of its own, so a worker that claims again while earlier deliveries are in flight gets only
/// the new ones (never a second copy of what it is still sending).
pub async fn claim(
    pool: &sqlx::AnyPool,
    owner: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let token = super::jobs::lease_token(owner);
    let ids: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(super::jobs::claim_sql(
        super::jobs::WEBHOOKS,
        "",
        "c.event_seq",
        "id",
    )))
    .bind(&token)
    .bind(lease_until)
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "SELECT d.id, d.webhook_id, d.event_seq, d.attempts, w.url, w.secret, o.envelope, \
         d.lease_owner FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
         JOIN outbox o ON o.seq = d.event_seq \
         WHERE d.lease_owner = $1 AND d.status = 'pending' ORDER BY d.event_seq",
    )
    .bind(&token)
    .fetch_all(pool)
    .await
}

pub async fn mark_delivered<'e>(
    db: impl Executor<'e, Database = Any>,
    owner: &str,
    id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = $1, \
         attempts = attempts + 1, lease_owner = NULL, lease_until = NULL \
         WHERE id = $2 AND lease_owner = $3",
    )
    .bind(now)
    .bind(id)
    .bind(owner)
    .execute(db)
    .await
    .map(|_| ())
}

/// Delivery counts per status for one webhook.
pub async fn delivery_counts<'e>(
    db: impl Executor<'e, Database = Any>,
    webhook_id: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT status, COUNT(*) FROM webhook_deliveries WHERE webhook_id = $1 GROUP BY status",
    )
    .bind(webhook_id)
    .fetch_all(db)
    .await
}
