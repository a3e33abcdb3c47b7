//! The `audit_log` table: appended to (inside the caller's transaction where there is one),
//! listed with filters and an id cursor, and purged past the retention period. Never updated.

use sqlx::{Any, Executor};

/// A row to append.
pub struct NewAuditRow<'a> {
    pub occurred_at: i64,
    pub actor_type: &'a str,
    pub actor_id: Option<&'a str>,
    pub action: &'a str,
    pub target_type: Option<&'a str>,
    pub target_id: Option<&'a str>,
    pub result: &'a str,
    pub reason: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub correlation_id: &'a str,
    pub trace_id: Option<&'a str>,
    pub tenant_id: Option<&'a str>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub occurred_at: i64,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub result: String,
    pub reason: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub correlation_id: String,
    pub trace_id: Option<String>,
    pub tenant_id: Option<String>,
}

/// Filters of a listing; empty strings and `None` match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery<'a> {
    pub actor_id: Option<&'a str>,
    pub action: Option<&'a str>,
    pub target_id: Option<&'a str>,
    pub result: Option<&'a str>,
    /// Inclusive lower bound on `occurred_at`.
    pub from: Option<i64>,
    /// Exclusive upper bound on `occurred_at`.
    pub to: Option<i64>,
    /// Only rows with a larger id.
    pub after: i64,
    pub limit: i64,
    /// Only entries of this tenant.
    pub tenant_id: Option<&'a str>,
}

pub async fn insert<'e>(
    db: impl Executor<'e, Database = Any>,
    row: &NewAuditRow<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (occurred_at, actor_type, actor_id, action, target_type, \
         target_id, result, reason, ip, user_agent, correlation_id, tenant_id, trace_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(row.occurred_at)
    .bind(row.actor_type)
    .bind(row.actor_id)
    .bind(row.action)
    .bind(row.target_type)
    .bind(row.target_id)
    .bind(row.result)
    .bind(row.reason)
    .bind(row.ip)
    .bind(row.user_agent)
    .bind(row.correlation_id)
    .bind(row.tenant_id)
    .bind(row.trace_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Rows matching `q`, oldest first (by id), after the cursor `q.after`.
pub async fn list<'e>(
    db: impl Executor<'e, Database = Any>,
    q: &AuditQuery<'_>,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, occurred_at, actor_type, actor_id, action, target_type, target_id, result, \
         reason, ip, user_agent, correlation_id, trace_id, tenant_id FROM audit_log \
         WHERE id > $1 AND ($9 = '' OR tenant_id = $9) AND ($2 = '' OR actor_id = $2) AND ($3 = '' OR action = $3) \
           AND ($4 = '' OR target_id = $4) AND ($5 = '' OR result = $5) \
           AND occurred_at >= $6 AND occurred_at < $7 \
         ORDER BY id LIMIT $8",
    )
    .bind(q.after)
    .bind(q.actor_id.unwrap_or(""))
    .bind(q.action.unwrap_or(""))
    .bind(q.target_id.unwrap_or(""))
    .bind(q.result.unwrap_or(""))
    .bind(q.from.unwrap_or(i64::MIN))
    .bind(q.to.unwrap_or(i64::MAX))
    .bind(q.limit)
    .bind(q.tenant_id.unwrap_or(""))
    .fetch_all(db)
    .await
}

/// Deletes rows that occurred before `before`; returns how many.
pub async fn purge<'e>(
    db: impl Executor<'e, Database = Any>,
    before: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM audit_log WHERE occurred_at < $1")
        .bind(before)
        .execute(db)
        .await?
        .rows_affected())
}
