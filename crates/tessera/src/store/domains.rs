//! Email domains claimed by enterprise tenants (`tenant_domains`).

use sqlx::{Any, Executor};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DomainRow {
    pub domain: String,
    pub tenant_id: String,
    pub default_role: String,
    pub created_at: i64,
    pub verified_at: Option<i64>,
    pub verified_by: Option<String>,
    /// The identity provider the domain's users sign in at (enterprise routing).
    pub idp: Option<String>,
    pub passwords_disabled: i64,
}

/// Claims a domain; a domain claimed by any tenant already is a unique violation.
pub async fn insert<'e>(
    db: impl Executor<'e, Database = Any>,
    domain: &str,
    tenant_id: &str,
    default_role: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tenant_domains (domain, tenant_id, default_role, created_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(domain)
    .bind(tenant_id)
    .bind(default_role)
    .bind(now)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn of_tenant<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
) -> Result<Vec<DomainRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT domain, tenant_id, default_role, created_at, verified_at, verified_by, \
         idp, passwords_disabled FROM tenant_domains WHERE tenant_id = $1 ORDER BY domain",
    )
    .bind(tenant_id)
    .fetch_all(db)
    .await
}

pub async fn find<'e>(
    db: impl Executor<'e, Database = Any>,
    domain: &str,
) -> Result<Option<DomainRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT domain, tenant_id, default_role, created_at, verified_at, verified_by, \
         idp, passwords_disabled FROM tenant_domains WHERE domain = $1",
    )
    .bind(domain)
    .fetch_optional(db)
    .await
}

/// Removes a tenant's claim; false when it had none on `domain`.
pub async fn delete<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
    domain: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM tenant_domains WHERE tenant_id = $1 AND domain = $2")
        .bind(tenant_id)
        .bind(domain)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks a tenant's claim verified (once); false when it had none on `domain`.
pub async fn verify<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
    domain: &str,
    by: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE tenant_domains SET verified_at = COALESCE(verified_at, $1), \
         verified_by = COALESCE(verified_by, $2) WHERE tenant_id = $3 AND domain = $4",
    )
    .bind(now)
    .bind(by)
    .bind(tenant_id)
    .bind(domain)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
