//! Upstream identity providers (`identity_providers`, the client secret sealed under the master
//! key) and the upstream identities linked to local accounts (`federated_identities`).

use sqlx::{Any, Executor};

#[derive(Clone, sqlx::FromRow)]
pub struct ProviderRow {
    pub name: String,
    pub kind: String,
    pub display_name: String,
    pub issuer: String,
    pub client_id: String,
    /// Sealed (see `crate::federation::secret_context`).
    pub client_secret: Vec<u8>,
    pub scopes: String,
    /// JSON (`crate::federation::ClaimMap`).
    pub claims: String,
    pub jit: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for ProviderRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderRow")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

const PROVIDER_COLUMNS: &str = "name, kind, display_name, issuer, client_id, client_secret, \
                                scopes, claims, jit, created_at, updated_at";

pub async fn insert_provider<'e>(
    db: impl Executor<'e, Database = Any>,
    p: &ProviderRow,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO identity_providers ({PROVIDER_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    );
    bind_provider(sqlx::query(sqlx::AssertSqlSafe(sql)), p)
        .bind(p.updated_at)
        .execute(db)
        .await
        .map(|_| ())
}

/// Replaces everything but the name and creation time (which the row read must still have);
/// false when there is no such provider.
pub async fn update_provider<'e>(
    db: impl Executor<'e, Database = Any>,
    p: &ProviderRow,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE identity_providers SET kind = $2, display_name = $3, issuer = $4, \
               client_id = $5, client_secret = $6, scopes = $7, claims = $8, jit = $9, \
               updated_at = $11 WHERE name = $1 AND created_at = $10";
    let done = bind_provider(sqlx::query(sql), p)
        .bind(p.updated_at)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Binds `$1`..`$10` of a provider row (every column but `updated_at`, in column order).
fn bind_provider<'q>(
    q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    p: &'q ProviderRow,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    q.bind(&p.name)
        .bind(&p.kind)
        .bind(&p.display_name)
        .bind(&p.issuer)
        .bind(&p.client_id)
        .bind(&p.client_secret)
        .bind(&p.scopes)
        .bind(&p.claims)
        .bind(p.jit)
        .bind(p.created_at)
}

pub async fn find_provider<'e>(
    db: impl Executor<'e, Database = Any>,
    name: &str,
) -> Result<Option<ProviderRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PROVIDER_COLUMNS} FROM identity_providers WHERE name = $1"
    )))
    .bind(name)
    .fetch_optional(db)
    .await
}

pub async fn providers<'e>(
    db: impl Executor<'e, Database = Any>,
) -> Result<Vec<ProviderRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PROVIDER_COLUMNS} FROM identity_providers ORDER BY name"
    )))
    .fetch_all(db)
    .await
}

/// Removes a provider with its links (and unbinds the domains that used it, by the foreign key).
pub async fn delete_provider(tx: &mut super::Tx, name: &str) -> Result<bool, sqlx::Error> {
    for table in ["federated_identities", "identity_link_tokens"] {
        let sql = format!("DELETE FROM {table} WHERE provider = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("UPDATE tenant_domains SET idp = NULL, passwords_disabled = 0 WHERE idp = $1")
        .bind(name)
        .execute(&mut **tx)
        .await?;
    let done = sqlx::query("DELETE FROM identity_providers WHERE name = $1")
        .bind(name)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes the provider's emailed links, used or not.
pub async fn delete_link_tokens(tx: &mut super::Tx, provider: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM identity_link_tokens WHERE provider = $1")
        .bind(provider)
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

/// Whether any identity is linked through the provider.
pub async fn has_identities<'e>(
    db: impl Executor<'e, Database = Any>,
    provider: &str,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM federated_identities WHERE provider = $1 LIMIT 1")
            .bind(provider)
            .fetch_optional(db)
            .await?;
    Ok(row.is_some())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IdentityRow {
    pub id: String,
    pub user_id: String,
    pub provider: String,
    pub subject: String,
    pub email: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

const IDENTITY_COLUMNS: &str = "id, user_id, provider, subject, email, created_at, last_used_at";

/// Links an upstream identity; one already linked (to anyone) is a unique violation.
pub async fn link<'e>(
    db: impl Executor<'e, Database = Any>,
    row: &IdentityRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO federated_identities ({IDENTITY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
    )))
    .bind(&row.id)
    .bind(&row.user_id)
    .bind(&row.provider)
    .bind(&row.subject)
    .bind(&row.email)
    .bind(row.created_at)
    .bind(row.last_used_at)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn find_identity<'e>(
    db: impl Executor<'e, Database = Any>,
    provider: &str,
    subject: &str,
) -> Result<Option<IdentityRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {IDENTITY_COLUMNS} FROM federated_identities WHERE provider = $1 AND subject = $2"
    )))
    .bind(provider)
    .bind(subject)
    .fetch_optional(db)
    .await
}

pub async fn identities_of<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: &str,
) -> Result<Vec<IdentityRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {IDENTITY_COLUMNS} FROM federated_identities WHERE user_id = $1 \
         ORDER BY created_at, id"
    )))
    .bind(user_id)
    .fetch_all(db)
    .await
}

pub async fn touch<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE federated_identities SET last_used_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(db)
        .await
        .map(|_| ())
}

pub async fn unlink<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: &str,
    id: &str,
) -> Result<Option<IdentityRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM federated_identities WHERE user_id = $1 AND id = $2 \
         RETURNING {IDENTITY_COLUMNS}"
    )))
    .bind(user_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The sign-in rule of a verified domain: its tenant, default role, provider and whether
/// passwords are refused.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Route {
    pub domain: String,
    pub tenant_id: String,
    pub default_role: String,
    pub idp: Option<String>,
    pub passwords_disabled: i64,
}

/// The rule of a verified domain, if any.
pub async fn route<'e>(
    db: impl Executor<'e, Database = Any>,
    domain: &str,
) -> Result<Option<Route>, sqlx::Error> {
    sqlx::query_as(
        "SELECT domain, tenant_id, default_role, idp, passwords_disabled FROM tenant_domains \
         WHERE domain = $1 AND verified_at IS NOT NULL",
    )
    .bind(domain)
    .fetch_optional(db)
    .await
}

/// Binds a tenant's domain to a provider (or unbinds it with `None`); false when the tenant has
/// no such domain.
pub async fn bind_domain<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant_id: &str,
    domain: &str,
    idp: Option<&str>,
    passwords_disabled: bool,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE tenant_domains SET idp = $3, passwords_disabled = $4 \
         WHERE tenant_id = $1 AND domain = $2",
    )
    .bind(tenant_id)
    .bind(domain)
    .bind(idp)
    .bind(i64::from(passwords_disabled))
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes every identity linked to the account but `keep`; returns what was removed.
pub async fn unlink_all_but(
    tx: &mut super::Tx,
    user_id: &str,
    keep: &str,
) -> Result<Vec<IdentityRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM federated_identities WHERE user_id = $1 AND id <> $2 \
         RETURNING {IDENTITY_COLUMNS}"
    )))
    .bind(user_id)
    .bind(keep)
    .fetch_all(&mut **tx)
    .await
}

/// An emailed link that joins an upstream identity to an account (`identity_link_tokens`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LinkToken {
    pub token_hash: String,
    pub user_id: String,
    pub provider: String,
    pub subject: String,
    pub upstream_email: String,
    /// The account's normalized address the link was sent to.
    pub email: String,
    /// The digest of the asking browser's cookie.
    pub browser: String,
    pub request: String,
    pub created_at: i64,
    pub expires_at: i64,
}

const LINK_TOKEN_COLUMNS: &str = "token_hash, user_id, provider, subject, upstream_email, email, \
                                  browser, request, created_at, expires_at";

/// Stores a new link, superseding the account's unused ones.
pub async fn insert_link_token(tx: &mut super::Tx, t: &LinkToken) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE identity_link_tokens SET consumed_at = $2 \
         WHERE user_id = $1 AND consumed_at IS NULL",
    )
    .bind(&t.user_id)
    .bind(t.created_at)
    .execute(&mut **tx)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO identity_link_tokens ({LINK_TOKEN_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    )))
    .bind(&t.token_hash)
    .bind(&t.user_id)
    .bind(&t.provider)
    .bind(&t.subject)
    .bind(&t.upstream_email)
    .bind(&t.email)
    .bind(&t.browser)
    .bind(&t.request)
    .bind(t.created_at)
    .bind(t.expires_at)
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

/// The link if it is unused and unexpired (for the page that asks to confirm it).
pub async fn find_link_token<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
    now: i64,
) -> Result<Option<LinkToken>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {LINK_TOKEN_COLUMNS} FROM identity_link_tokens \
         WHERE token_hash = $1 AND consumed_at IS NULL AND expires_at > $2"
    )))
    .bind(token_hash)
    .bind(now)
    .fetch_optional(db)
    .await
}

/// Uses a live link once: the first caller gets it, every later one gets `None`.
pub async fn consume_link_token(
    tx: &mut super::Tx,
    token_hash: &str,
    now: i64,
) -> Result<Option<LinkToken>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE identity_link_tokens SET consumed_at = $2 \
         WHERE token_hash = $1 AND consumed_at IS NULL AND expires_at > $2 \
         RETURNING {LINK_TOKEN_COLUMNS}"
    )))
    .bind(token_hash)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await
}
