//! Invitations to a tenant: a single-use, expiring token mailed to an address (only its
//! SHA-256 is kept).

use sqlx::{Any, Executor};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvitationRow {
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    pub email_normalized: String,
    /// Space-separated role names.
    pub roles: String,
    pub invited_by: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub accepted_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

macro_rules! select_invitations {
    ($rest:literal) => {
        concat!(
            "SELECT id, tenant_id, email, email_normalized, roles, invited_by, created_at, \
             expires_at, accepted_at, revoked_at FROM invitations ",
            $rest
        )
    };
}

pub struct NewInvitation<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub email: &'a str,
    pub email_normalized: &'a str,
    pub roles: &'a str,
    pub token_hash: &'a str,
    pub invited_by: Option<&'a str>,
    pub now: i64,
    pub expires_at: i64,
}

pub async fn insert<'e>(
    db: impl Executor<'e, Database = Any>,
    i: &NewInvitation<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO invitations (id, tenant_id, email, email_normalized, roles, token_hash, \
         invited_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(i.id)
    .bind(i.tenant_id)
    .bind(i.email)
    .bind(i.email_normalized)
    .bind(i.roles)
    .bind(i.token_hash)
    .bind(i.invited_by)
    .bind(i.now)
    .bind(i.expires_at)
    .execute(db)
    .await
    .map(|_| ())
}

/// Revokes the pending invitations of `email_normalized` to `tenant_id` (a new invitation
/// supersedes them). Returns how many.
pub async fn supersede<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
    email_normalized: &str,
    now: i64,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE invitations SET revoked_at = $3 WHERE tenant_id = $1 AND email_normalized = $2 \
         AND accepted_at IS NULL AND revoked_at IS NULL",
    )
    .bind(tenant_id)
    .bind(email_normalized)
    .bind(now)
    .execute(db)
    .await
    .map(|r| r.rows_affected())
}

/// The pending (neither accepted, revoked nor expired) invitations of a tenant.
pub async fn pending<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
    now: i64,
) -> Result<Vec<InvitationRow>, sqlx::Error> {
    sqlx::query_as(select_invitations!(
        "WHERE tenant_id = $1 AND accepted_at IS NULL AND revoked_at IS NULL \
         AND expires_at > $2 ORDER BY created_at, id"
    ))
    .bind(tenant_id)
    .bind(now)
    .fetch_all(db)
    .await
}

pub async fn count_pending<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
    now: i64,
) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM invitations WHERE tenant_id = $1 AND accepted_at IS NULL \
         AND revoked_at IS NULL AND expires_at > $2",
    )
    .bind(tenant_id)
    .bind(now)
    .fetch_one(db)
    .await?;
    Ok(n)
}

pub async fn find_by_token<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
) -> Result<Option<InvitationRow>, sqlx::Error> {
    sqlx::query_as(select_invitations!("WHERE token_hash = $1"))
        .bind(token_hash)
        .fetch_optional(db)
        .await
}

/// Revokes a pending invitation of `tenant_id`; false when there is none by that id.
pub async fn revoke<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
    id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE invitations SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 \
         AND accepted_at IS NULL AND revoked_at IS NULL",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(now)
    .execute(db)
    .await
    .map(|r| r.rows_affected() > 0)
}

/// Marks a pending, unexpired invitation accepted by `user_id`. False when it was already
/// used, revoked or expired (so two concurrent acceptances cannot both succeed).
pub async fn accept<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
    user_id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE invitations SET accepted_at = $3, accepted_by = $2 WHERE id = $1 \
         AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $3",
    )
    .bind(id)
    .bind(user_id)
    .bind(now)
    .execute(db)
    .await
    .map(|r| r.rows_affected() > 0)
}
