//! OAuth clients, authorization codes, remembered consent and revoked token ids.

use sqlx::{Any, Executor};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClientRow {
    pub id: String,
    pub name: String,
    pub secret_hash: Option<String>,
    pub redirect_uris: String,
    pub post_logout_redirect_uris: String,
    pub grant_types: String,
    pub scopes: String,
    pub resources: String,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// 1: first-party (see `authz`).
    pub first_party: i64,
    pub refresh_reuse_grace: i64,
    pub rate_limit_per_minute: Option<i64>,
    pub rate_limit_burst: Option<i64>,
    pub may_introspect: i64,
    /// The class every sign-in for this client must reach (`crate::mfa::acr`).
    pub require_acr: Option<String>,
}

macro_rules! select_clients {
    ($rest:literal) => {
        concat!(
            "SELECT id, name, secret_hash, redirect_uris, post_logout_redirect_uris, grant_types, scopes, \
             resources, status, created_at, updated_at, first_party, refresh_reuse_grace, \
             rate_limit_per_minute, rate_limit_burst, may_introspect, require_acr FROM oauth_clients ",
            $rest
        )
    };
}

pub async fn insert_client<'e>(
    db: impl Executor<'e, Database = Any>,
    c: &ClientRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO oauth_clients (id, name, secret_hash, redirect_uris, post_logout_redirect_uris, \
         grant_types, scopes, resources, status, created_at, updated_at, first_party, \
         refresh_reuse_grace, rate_limit_per_minute, rate_limit_burst, may_introspect, require_acr) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(&c.id)
    .bind(&c.name)
    .bind(&c.secret_hash)
    .bind(&c.redirect_uris)
    .bind(&c.post_logout_redirect_uris)
    .bind(&c.grant_types)
    .bind(&c.scopes)
    .bind(&c.resources)
    .bind(&c.status)
    .bind(c.created_at)
    .bind(c.updated_at)
    .bind(c.first_party)
    .bind(c.refresh_reuse_grace)
    .bind(c.rate_limit_per_minute)
    .bind(c.rate_limit_burst)
    .bind(c.may_introspect)
    .bind(&c.require_acr)
    .execute(db)
    .await
    .map(|_| ())
}

/// Writes every mutable column of a client.
pub async fn update_client<'e>(
    db: impl Executor<'e, Database = Any>,
    c: &ClientRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE oauth_clients SET name = $1, secret_hash = $2, redirect_uris = $3, \
         post_logout_redirect_uris = $4, grant_types = $5, scopes = $6, resources = $7, status = $8, \
         updated_at = $9, first_party = $10, refresh_reuse_grace = $11, rate_limit_per_minute = $12, \
         rate_limit_burst = $13, may_introspect = $14, require_acr = $15 WHERE id = $16",
    )
    .bind(&c.name)
    .bind(&c.secret_hash)
    .bind(&c.redirect_uris)
    .bind(&c.post_logout_redirect_uris)
    .bind(&c.grant_types)
    .bind(&c.scopes)
    .bind(&c.resources)
    .bind(&c.status)
    .bind(c.updated_at)
    .bind(c.first_party)
    .bind(c.refresh_reuse_grace)
    .bind(c.rate_limit_per_minute)
    .bind(c.rate_limit_burst)
    .bind(c.may_introspect)
    .bind(&c.require_acr)
    .bind(&c.id)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn find_client<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
) -> Result<Option<ClientRow>, sqlx::Error> {
    if !super::storable(id) {
        return Ok(None);
    }
    sqlx::query_as(select_clients!("WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn list_clients<'e>(
    db: impl Executor<'e, Database = Any>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ClientRow>, sqlx::Error> {
    sqlx::query_as(select_clients!("WHERE id > $1 ORDER BY id LIMIT $2"))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(db)
        .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CodeRow {
    pub code_hash: String,
    pub client_id: String,
    pub user_id: String,
    pub browser_session_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub resource: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub auth_time: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub token_session_id: Option<String>,
    /// The tenant the tokens are for.
    pub tenant_id: Option<String>,
    /// How the user signed in to the browser session (RFC 8176, space-separated).
    pub amr: Option<String>,
}

pub async fn insert_code<'e>(
    db: impl Executor<'e, Database = Any>,
    c: &CodeRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO oauth_codes (code_hash, client_id, user_id, browser_session_id, redirect_uri, scope, \
         resource, nonce, code_challenge, auth_time, created_at, expires_at, tenant_id, amr) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&c.code_hash)
    .bind(&c.client_id)
    .bind(&c.user_id)
    .bind(&c.browser_session_id)
    .bind(&c.redirect_uri)
    .bind(&c.scope)
    .bind(&c.resource)
    .bind(&c.nonce)
    .bind(&c.code_challenge)
    .bind(c.auth_time)
    .bind(c.created_at)
    .bind(c.expires_at)
    .bind(&c.tenant_id)
    .bind(&c.amr)
    .execute(db)
    .await
    .map(|_| ())
}

/// The columns of a [`CodeRow`], for `SELECT` and `RETURNING`.
macro_rules! code_columns {
    () => {
        "code_hash, client_id, user_id, browser_session_id, redirect_uri, scope, resource, nonce, \
         code_challenge, auth_time, created_at, expires_at, used_at, token_session_id, tenant_id, \
         amr"
    };
}

pub async fn find_code<'e>(
    db: impl Executor<'e, Database = Any>,
    code_hash: &str,
) -> Result<Option<CodeRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        code_columns!(),
        " FROM oauth_codes WHERE code_hash = $1"
    ))
    .bind(code_hash)
    .fetch_optional(db)
    .await
}

/// Redeems a code in one statement: marks it used by `client_id` and links it to the token
/// family `session_id` that the redemption starts (in the same transaction), so a replay finds
/// what to revoke even while this redemption has not committed yet. `None` when the code is
/// unknown, of another client, expired or used already (single use, even under concurrency:
/// a racing redemption waits for this row and then no longer matches `used_at IS NULL`).
pub async fn redeem_code(
    tx: &mut super::Tx,
    code_hash: &str,
    client_id: &str,
    session_id: &str,
    now: i64,
) -> Result<Option<CodeRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE oauth_codes SET used_at = $1, token_session_id = $2 \
         WHERE code_hash = $3 AND client_id = $4 AND used_at IS NULL AND expires_at > $1 \
         RETURNING ",
        code_columns!()
    ))
    .bind(now)
    .bind(session_id)
    .bind(code_hash)
    .bind(client_id)
    .fetch_optional(&mut **tx)
    .await
}

pub async fn find_consent<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: &str,
    client_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT scope FROM oauth_consents WHERE user_id = $1 AND client_id = $2")
            .bind(user_id)
            .bind(client_id)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(s,)| s))
}

/// Forgets every client's remembered consent of a user, and their authorization codes.
pub async fn forget_grants_of(tx: &mut super::Tx, user_id: &str) -> Result<(), sqlx::Error> {
    for table in ["oauth_consents", "oauth_codes"] {
        let sql = format!("DELETE FROM {table} WHERE user_id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Remembers the scopes a user granted a client (replacing the previous grant).
pub async fn save_consent(
    tx: &mut super::Tx,
    user_id: &str,
    client_id: &str,
    scope: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    // One upsert: two concurrent "Allow" answers cannot collide on the primary key.
    sqlx::query(
        "INSERT INTO oauth_consents (user_id, client_id, scope, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, client_id) DO UPDATE SET scope = excluded.scope, created_at = excluded.created_at",
    )
    .bind(user_id)
    .bind(client_id)
    .bind(scope)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

/// Records a revoked access token id; a repeat is a no-op.
pub async fn revoke_jti<'e>(
    db: impl Executor<'e, Database = Any>,
    jti: &str,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
    )
    .bind(jti)
    .bind(expires_at)
    .execute(db)
    .await
    .map(|_| ())
}

/// Revoked token ids that have not expired yet.
pub async fn live_revoked_jtis<'e>(
    db: impl Executor<'e, Database = Any>,
    now: i64,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > $1")
        .bind(now)
        .fetch_all(db)
        .await
}

/// A browser session: id, user, auth time, expiry, revocation, methods (`amr`).
pub type BrowserSessionRow = (String, String, i64, i64, Option<i64>, Option<String>);

/// The browser (SSO) session a cookie token belongs to.
pub async fn find_browser_session<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
) -> Result<Option<BrowserSessionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, user_id, COALESCE(auth_time, created_at), expires_at, revoked_at, amr \
         FROM sessions WHERE browser_token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(db)
    .await
}

/// Live token families granted from a browser session, except those holding `offline_access`.
pub async fn online_children<'e>(
    db: impl Executor<'e, Database = Any>,
    parent_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT id, scope FROM sessions WHERE parent_id = $1 AND revoked_at IS NULL",
    )
    .bind(parent_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|(_, scope)| {
            !scope
                .as_deref()
                .is_some_and(|s| crate::oauth::scope::contains(s, "offline_access"))
        })
        .map(|(id, _)| id)
        .collect())
}
