//! API keys of tenants: the secret only as its SHA-256, with permissions, an optional CIDR
//! list, expiry, revocation and rotation.

use sqlx::{Any, Executor};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub hint: String,
    pub secret_hash: String,
    /// Space-separated.
    pub permissions: String,
    /// Space-separated CIDRs.
    pub allowed_cidrs: Option<String>,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub rotated_to: Option<String>,
    pub last_used_at: Option<i64>,
    pub last_used_ip: Option<String>,
}

impl ApiKeyRow {
    /// Neither revoked nor expired at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

macro_rules! select_keys {
    ($rest:literal) => {
        concat!(
            "SELECT id, tenant_id, name, hint, secret_hash, permissions, allowed_cidrs, \
             created_by, created_at, expires_at, revoked_at, rotated_to, last_used_at, \
             last_used_ip FROM api_keys ",
            $rest
        )
    };
}

pub struct NewApiKey<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub name: &'a str,
    pub hint: &'a str,
    pub secret_hash: &'a str,
    pub permissions: &'a str,
    pub allowed_cidrs: Option<&'a str>,
    pub created_by: Option<&'a str>,
    pub now: i64,
    pub expires_at: Option<i64>,
}

pub async fn insert<'e>(
    db: impl Executor<'e, Database = Any>,
    k: &NewApiKey<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, name, hint, secret_hash, permissions, \
         allowed_cidrs, created_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(k.id)
    .bind(k.tenant_id)
    .bind(k.name)
    .bind(k.hint)
    .bind(k.secret_hash)
    .bind(k.permissions)
    .bind(k.allowed_cidrs)
    .bind(k.created_by)
    .bind(k.now)
    .bind(k.expires_at)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn find_by_hash<'e>(
    db: impl Executor<'e, Database = Any>,
    secret_hash: &str,
) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(select_keys!("WHERE secret_hash = $1"))
        .bind(secret_hash)
        .fetch_optional(db)
        .await
}

pub async fn find<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
    id: &str,
) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(select_keys!("WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The keys of a tenant that are neither revoked nor expired, newest first.
pub async fn live_of<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
    now: i64,
) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(select_keys!(
        "WHERE tenant_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2) \
         ORDER BY created_at DESC, id DESC"
    ))
    .bind(tenant_id)
    .bind(now)
    .fetch_all(db)
    .await
}

/// The live keys a user created, in every tenant.
pub async fn live_created_by<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: &str,
    now: i64,
) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(select_keys!(
        "WHERE created_by = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2) \
         ORDER BY created_at, id"
    ))
    .bind(user_id)
    .bind(now)
    .fetch_all(db)
    .await
}

pub async fn count_active<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
    now: i64,
) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(tenant_id)
    .bind(now)
    .fetch_one(db)
    .await?;
    Ok(n)
}

/// Revokes a live key; false when there is none by that id.
pub async fn revoke<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
    id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE api_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 \
         AND revoked_at IS NULL",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(now)
    .execute(db)
    .await
    .map(|r| r.rows_affected() > 0)
}

/// Marks a key rotated: it expires at `expires_at` (the end of the overlap) and names its
/// successor. False when it was already rotated or revoked (two rotations cannot both win).
pub async fn mark_rotated<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
    successor: &str,
    expires_at: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE api_keys SET rotated_to = $2, \
         expires_at = CASE WHEN expires_at IS NULL OR expires_at > $3 THEN $3 ELSE expires_at END \
         WHERE id = $1 AND rotated_to IS NULL AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(successor)
    .bind(expires_at)
    .execute(db)
    .await
    .map(|r| r.rows_affected() > 0)
}

/// Records a use (written at most once a minute per key and address by the caller).
pub async fn touch<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
    now: i64,
    ip: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE api_keys SET last_used_at = $2, last_used_ip = $3 WHERE id = $1")
        .bind(id)
        .bind(now)
        .bind(ip)
        .execute(db)
        .await
        .map(|_| ())
}
