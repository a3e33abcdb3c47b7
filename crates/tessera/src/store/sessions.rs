//! Sessions and their refresh-token families.

use sqlx::{Any, Executor};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub tenant_id: Option<String>,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
}

pub struct NewSession<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub now: i64,
    pub expires_at: i64,
    pub user_agent: Option<&'a str>,
    pub ip: Option<&'a str>,
    /// The OAuth client of a token family; `None` for first-party logins.
    pub client_id: Option<&'a str>,
    pub scope: Option<&'a str>,
    /// The `aud` of its access tokens when not the default (RFC 8707 resource).
    pub audience: Option<&'a str>,
    /// The browser session a token family was granted from.
    pub parent_id: Option<&'a str>,
    pub auth_time: Option<i64>,
    /// Set for browser (SSO) sessions of the hosted pages: digest of the cookie token.
    pub browser_token_hash: Option<&'a str>,
    /// The active tenant of the session's tokens.
    pub tenant_id: Option<&'a str>,
    /// How the user proved who they are (RFC 8176 values, space-separated).
    pub amr: Option<&'a str>,
}

pub async fn insert_session(tx: &mut super::Tx, s: &NewSession<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, user_agent, ip, \
         client_id, scope, audience, parent_id, auth_time, browser_token_hash, tenant_id, amr) \
         VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(s.id)
    .bind(s.user_id)
    .bind(s.now)
    .bind(s.expires_at)
    .bind(s.user_agent)
    .bind(s.ip)
    .bind(s.client_id)
    .bind(s.scope)
    .bind(s.audience)
    .bind(s.parent_id)
    .bind(s.auth_time)
    .bind(s.browser_token_hash)
    .bind(s.tenant_id)
    .bind(s.amr)
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

pub async fn insert_refresh_token(
    tx: &mut super::Tx,
    token_hash: &str,
    session_id: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, issued_at, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(token_hash)
        .bind(session_id)
        .bind(now)
        .bind(expires_at)
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

/// A refresh token with what is needed to decide on a rotation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshLookup {
    pub session_id: String,
    pub token_expires_at: i64,
    pub used_at: Option<i64>,
    pub session_expires_at: i64,
    pub session_revoked_at: Option<i64>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
    pub audience: Option<String>,
    /// How the user signed in to the session (RFC 8176, space-separated).
    pub amr: Option<String>,
    pub user_id: String,
    pub user_status: String,
    pub email_verified_at: Option<i64>,
    /// The user's roles (Tessera-wide), for first-party tokens.
    #[sqlx(skip)]
    pub roles: Vec<crate::authz::Role>,
}

#[derive(sqlx::FromRow)]
struct RefreshRow {
    #[sqlx(flatten)]
    lookup: RefreshLookup,
    role: Option<String>,
}

/// A refresh token, its session, its user and the user's roles, in one round trip (a row per
/// role: a rotation is a hot path).
pub async fn find_refresh_token<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
) -> Result<Option<RefreshLookup>, sqlx::Error> {
    let rows: Vec<RefreshRow> = sqlx::query_as(FIND_REFRESH_TOKEN)
        .bind(token_hash)
        .fetch_all(db)
        .await?;
    let roles = crate::authz::parse_roles(rows.iter().filter_map(|r| r.role.as_deref()));
    Ok(rows
        .into_iter()
        .next()
        .map(|r| RefreshLookup { roles, ..r.lookup }))
}

/// Whether a refresh token issued to `session_id` when `token_hash` was rotated (at `used_at`)
/// or later has itself been used: the rotated-out token's successor is in use.
pub async fn successor_used<'e>(
    db: impl Executor<'e, Database = Any>,
    session_id: &str,
    token_hash: &str,
    used_at: i64,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM refresh_tokens WHERE session_id = $1 AND token_hash <> $2 \
         AND issued_at >= $3 AND used_at IS NOT NULL LIMIT 1",
    )
    .bind(session_id)
    .bind(token_hash)
    .bind(used_at)
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}

/// The columns of a [`RefreshLookup`] row (`r`: the token, `s`: its session, `u`: the user,
/// `ur`: one of the user's roles), and the joins they come from: macros, so that the
/// statements below are `&'static str`s built at compile time.
macro_rules! refresh_columns {
    () => {
        "r.session_id, r.expires_at AS token_expires_at, r.used_at, \
         s.expires_at AS session_expires_at, s.revoked_at AS session_revoked_at, s.tenant_id, \
         s.client_id, s.scope, s.audience, s.amr, \
         u.id AS user_id, u.status AS user_status, u.email_verified_at, ur.role"
    };
}
macro_rules! refresh_joins {
    () => {
        "FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id \
         JOIN users u ON u.id = s.user_id LEFT JOIN user_roles ur ON ur.user_id = u.id"
    };
}

const FIND_REFRESH_TOKEN: &str = concat!(
    "SELECT ",
    refresh_columns!(),
    " ",
    refresh_joins!(),
    " WHERE r.token_hash = $1 ORDER BY ur.role"
);

/// [`rotate_refresh_token`] on PostgreSQL: data-modifying `WITH`s, whose final `SELECT` sees the
/// rows as the statement found them.
const ROTATE_REFRESH_TOKEN_POSTGRES: &str = concat!(
    "WITH used AS (UPDATE refresh_tokens SET used_at = $1 \
                   WHERE token_hash = $2 AND used_at IS NULL RETURNING session_id), \
          added AS (INSERT INTO refresh_tokens (token_hash, session_id, issued_at, expires_at) \
                    SELECT $3, s.id, $1, LEAST($4, s.expires_at) \
                    FROM used JOIN sessions s ON s.id = used.session_id \
                    RETURNING session_id), \
          touched AS (UPDATE sessions SET last_used_at = $1 \
                      WHERE id IN (SELECT session_id FROM added) RETURNING id) \
     SELECT ",
    refresh_columns!(),
    ", (SELECT COUNT(*) FROM touched) AS rotated ",
    refresh_joins!(),
    " WHERE r.token_hash = $2 ORDER BY ur.role"
);

/// [`rotate_refresh_token`] on SQLite: four statements in one call, each write done only when the
/// one before it changed a row (`changes()`), the final `SELECT` telling whether the last did.
const ROTATE_REFRESH_TOKEN_SQLITE: &str = concat!(
    "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL; \
     INSERT INTO refresh_tokens (token_hash, session_id, issued_at, expires_at) \
     SELECT $3, s.id, $1, MIN($4, s.expires_at) \
     FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id \
     WHERE r.token_hash = $2 AND changes() = 1; \
     UPDATE sessions SET last_used_at = $1 \
     WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $3) \
     AND changes() = 1; \
     SELECT ",
    refresh_columns!(),
    ", changes() AS rotated ",
    refresh_joins!(),
    " WHERE r.token_hash = $2 ORDER BY ur.role"
);

#[derive(sqlx::FromRow)]
struct RotatedRow {
    #[sqlx(flatten)]
    row: RefreshRow,
    rotated: i64,
}

/// Rotates refresh token `old` optimistically and reads what decides on the rotation, in one
/// round trip: when `old` was unused it is marked used, `new` joins its family (expiring at
/// `expires_at` or with the session, whichever is first) and the session is touched. Returns the
/// token as it was before (`used_at` unset when this call rotated it) and whether it rotated it.
///
/// The caller decides afterwards, in the same transaction, and rolls the rotation back when it
/// refuses (client, expiry, status, scope, tenant): a refused refresh writes nothing.
pub async fn rotate_refresh_token(
    tx: &mut super::Tx,
    old: &str,
    new: &str,
    now: i64,
    expires_at: i64,
) -> Result<Option<(RefreshLookup, bool)>, sqlx::Error> {
    let sql = match super::Backend::of(tx) {
        super::Backend::Postgres => ROTATE_REFRESH_TOKEN_POSTGRES,
        super::Backend::Sqlite => ROTATE_REFRESH_TOKEN_SQLITE,
    };
    let rows: Vec<RotatedRow> = sqlx::query_as(sql)
        .bind(now)
        .bind(old)
        .bind(new)
        .bind(expires_at)
        .fetch_all(&mut **tx)
        .await?;
    let roles = crate::authz::parse_roles(rows.iter().filter_map(|r| r.row.role.as_deref()));
    Ok(rows.into_iter().next().map(|r| {
        let rotated = r.rotated > 0;
        let mut lookup = RefreshLookup {
            roles,
            ..r.row.lookup
        };
        if rotated {
            // SQLite's SELECT ran after the UPDATE; the caller sees the token as it was.
            lookup.used_at = None;
        }
        (lookup, rotated)
    }))
}

pub async fn touch_session(tx: &mut super::Tx, id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

/// Moves a session (token family) to another tenant (a re-scoping refresh).
pub async fn set_tenant(tx: &mut super::Tx, id: &str, tenant_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET tenant_id = $1 WHERE id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

/// Revokes one session; returns its user when it was live (`None`: already revoked or unknown).
pub async fn revoke_session<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
    reason: &str,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
         WHERE id = $3 AND revoked_at IS NULL RETURNING user_id",
    )
    .bind(now)
    .bind(reason)
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(u,)| u))
}

/// Revokes every live session of a user except `keep`; returns the ids revoked.
pub async fn revoke_user_sessions(
    tx: &mut super::Tx,
    user_id: &str,
    keep: Option<&str>,
    reason: &str,
    now: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let ids: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND id <> $2",
    )
    .bind(user_id)
    .bind(keep.unwrap_or(""))
    .fetch_all(&mut **tx)
    .await?;
    sqlx::query("UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE user_id = $3 AND revoked_at IS NULL AND id <> $4")
        .bind(now)
        .bind(reason)
        .bind(user_id)
        .bind(keep.unwrap_or(""))
        .execute(&mut **tx)
        .await?;
    Ok(ids.into_iter().map(|(id,)| id).collect())
}

pub async fn find_session<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
) -> Result<Option<Session>, sqlx::Error> {
    if !super::storable(id) {
        return Ok(None);
    }
    sqlx::query_as(
        "SELECT id, user_id, tenant_id, created_at, last_used_at, expires_at, revoked_at, user_agent, ip, client_id, scope \
         FROM sessions WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

/// A user's sessions that are neither revoked nor past their absolute end, newest first.
pub async fn list_active_sessions<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: &str,
    now: i64,
) -> Result<Vec<Session>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, user_id, tenant_id, created_at, last_used_at, expires_at, revoked_at, user_agent, ip, client_id, scope \
         FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
         ORDER BY created_at DESC, id DESC LIMIT 500",
    )
    .bind(user_id)
    .bind(now)
    .fetch_all(db)
    .await
}

/// When and how the user proved who they are in a session: its `auth_time` (its start when the
/// column is empty) and `amr`.
pub async fn authentication_of<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
) -> Result<Option<(i64, Option<String>)>, sqlx::Error> {
    if !super::storable(id) {
        return Ok(None);
    }
    sqlx::query_as("SELECT COALESCE(auth_time, created_at), amr FROM sessions WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}
