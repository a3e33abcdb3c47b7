//! Users and profiles.

use futures_util::TryStreamExt as _;
use sqlx::{Any, Executor};

/// A row of `users`. The password hash is kept out of `Debug`.
#[derive(Clone, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub email: String,
    pub email_verified_at: Option<i64>,
    pub password_hash: Option<String>,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// The tenant the user last signed in to or switched to (the default of the next login).
    #[sqlx(default)]
    pub last_tenant_id: Option<String>,
    /// The user's personal tenant (the default when the last one no longer takes them).
    #[sqlx(default)]
    pub personal_tenant_id: Option<String>,
    /// How many confirmed second factors the user has: any, and every password sign-in needs
    /// one of them too (no default: a query without the column fails instead of skipping it).
    pub second_factors: i64,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Whether a user or an OAuth client may act; stored as text in their `status` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Active,
    Deactivated,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Deactivated => "deactivated",
        }
    }

    /// The stored text; anything unknown counts as deactivated (fail closed).
    pub fn parse(s: &str) -> Self {
        if s == Self::Active.as_str() {
            Self::Active
        } else {
            Self::Deactivated
        }
    }
}

impl User {
    pub fn is_active(&self) -> bool {
        AccountStatus::parse(&self.status) == AccountStatus::Active
    }
}

/// Input for [`insert`].
pub struct NewUser<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub email_verified_at: Option<i64>,
    pub password_hash: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub now: i64,
}

/// `SELECT <user columns> FROM users <rest>` as one static string.
macro_rules! select_users {
    ($rest:literal) => {
        concat!(
            "SELECT id, email, email_verified_at, password_hash, status, created_at, updated_at, \
             last_tenant_id, (SELECT t.id FROM tenants t WHERE t.personal_of = users.id) \
             AS personal_tenant_id, (SELECT COUNT(*) FROM mfa_factors f WHERE f.user_id = \
             users.id AND f.confirmed_at IS NOT NULL) AS second_factors FROM users ",
            $rest
        )
    };
}

/// Inserts a user and an empty profile. Run it in a transaction; a duplicate email fails with a
/// unique violation (see [`super::is_unique_violation`]).
pub async fn insert(tx: &mut super::Tx, u: &NewUser<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (id, email, email_normalized, email_verified_at, password_hash, \
         status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'active', $6, $6)",
    )
    .bind(u.id)
    .bind(u.email)
    .bind(normalize_email(u.email))
    .bind(u.email_verified_at)
    .bind(u.password_hash)
    .bind(u.now)
    .execute(&mut **tx)
    .await?;
    sqlx::query("INSERT INTO profiles (user_id, display_name, preferences, updated_at) VALUES ($1, $2, '{}', $3)")
        .bind(u.id)
        .bind(u.display_name)
        .bind(u.now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The form under which emails are compared and kept unique.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

pub async fn find_by_email<'e>(
    db: impl Executor<'e, Database = Any>,
    email: &str,
) -> Result<Option<User>, sqlx::Error> {
    if !super::storable(email) {
        return Ok(None);
    }
    sqlx::query_as(select_users!("WHERE email_normalized = $1"))
        .bind(normalize_email(email))
        .fetch_optional(db)
        .await
}

pub async fn find_by_id<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
) -> Result<Option<User>, sqlx::Error> {
    if !super::storable(id) {
        return Ok(None);
    }
    sqlx::query_as(select_users!("WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Users ordered by creation, after the `after` id (keyset pagination).
pub async fn list<'e>(
    db: impl Executor<'e, Database = Any>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query_as(select_users!("WHERE id > $1 ORDER BY id LIMIT $2"))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(db)
        .await
}

pub async fn set_password_hash<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
    hash: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(hash)
        .bind(now)
        .bind(id)
        .execute(db)
        .await
        .map(|_| ())
}

/// Marks the email verified only if nobody had: true when this call verified it (the row is
/// then locked for the rest of `tx`), false when it was verified already or the user's
/// normalized email is no longer `email`.
pub async fn verify_unverified_email(
    tx: &mut super::Tx,
    id: &str,
    email: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET email_verified_at = $1, updated_at = $1 \
         WHERE id = $2 AND email_normalized = $3 AND email_verified_at IS NULL",
    )
    .bind(now)
    .bind(id)
    .bind(email)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes the account's password (it signs in another way from now on).
pub async fn clear_password(tx: &mut super::Tx, id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = NULL, updated_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

/// Marks the email verified (keeps an earlier verification time). False when the user's
/// normalized email is no longer `email`.
pub async fn set_email_verified(
    tx: &mut super::Tx,
    id: &str,
    email: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $1), updated_at = $1 \
         WHERE id = $2 AND email_normalized = $3",
    )
    .bind(now)
    .bind(id)
    .bind(email)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deactivates a user. False when there is no such active user.
pub async fn deactivate(tx: &mut super::Tx, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET status = 'deactivated', updated_at = $1 WHERE id = $2 AND status = 'active'",
    )
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What `GET /admin/users` looks for; every filter is optional.
#[derive(Debug, Default)]
pub struct UserQuery<'a> {
    /// The start of the (normalised) email address.
    pub email_prefix: Option<&'a str>,
    pub status: Option<AccountStatus>,
    /// The name of a global role the user must hold.
    pub role: Option<&'a str>,
    /// Keyset cursor: users after this id (ids are time-ordered UUIDv7).
    pub after: Option<&'a str>,
    pub limit: i64,
}

/// Users matching `q`, by id.
pub async fn search<'e>(
    db: impl Executor<'e, Database = Any>,
    q: &UserQuery<'_>,
) -> Result<Vec<User>, sqlx::Error> {
    let prefix = q.email_prefix.map(normalize_email).unwrap_or_default();
    // LIKE with `\` escaping, so `%` and `_` in the prefix match themselves.
    let pattern = format!("{}%", like_escaped(&prefix));
    sqlx::query_as(select_users!(
        "WHERE id > $1 AND ($2 = '' OR email_normalized LIKE $3 ESCAPE '\\') \
         AND ($4 = '' OR status = $4) \
         AND ($5 = '' OR EXISTS (SELECT 1 FROM user_roles r WHERE r.user_id = users.id AND r.role = $5)) \
         ORDER BY id LIMIT $6"
    ))
    .bind(q.after.unwrap_or(""))
    .bind(&prefix)
    .bind(pattern)
    .bind(q.status.map(AccountStatus::as_str).unwrap_or(""))
    .bind(q.role.unwrap_or(""))
    .bind(q.limit)
    .fetch_all(db)
    .await
}

/// Changes the address; `verified_at` is the new address's verification time (or none). A
/// duplicate fails with a unique violation.
pub async fn set_email(
    tx: &mut super::Tx,
    id: &str,
    email: &str,
    verified_at: Option<i64>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET email = $1, email_normalized = $2, email_verified_at = $3, \
         updated_at = $4 WHERE id = $5",
    )
    .bind(email)
    .bind(normalize_email(email))
    .bind(verified_at)
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

/// Sets or clears the verification time (keeps an earlier one when setting).
pub async fn set_verified(
    tx: &mut super::Tx,
    id: &str,
    verified: bool,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET email_verified_at = CASE WHEN $1 = 1 THEN COALESCE(email_verified_at, $2) \
         ELSE NULL END, updated_at = $2 WHERE id = $3",
    )
    .bind(i64::from(verified))
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

/// Reactivates a user. False when there is no such deactivated user.
pub async fn reactivate(tx: &mut super::Tx, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET status = 'active', updated_at = $1 WHERE id = $2 AND status = 'deactivated'",
    )
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Serialises the changes that could leave Tessera without an administrator, until `tx` ends.
/// Counting the others and then changing one user is only safe when no such change runs
/// beside it: SQLite's `BEGIN IMMEDIATE` already admits one writer at a time; on PostgreSQL
/// (read committed) two removals could each count the other, so they take one
/// transaction-scoped advisory lock.
pub async fn lock_admin_changes(
    tx: &mut super::Tx,
    backend: super::Backend,
) -> Result<(), sqlx::Error> {
    /// The advisory lock's key: any constant no other part of Tessera uses.
    const ADMIN_CHANGES: i64 = 0x7e55_e4a0_0001;
    if backend == super::Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(ADMIN_CHANGES)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Active users holding `role`, other than `except`.
pub async fn count_active_with_role<'e>(
    db: impl Executor<'e, Database = Any>,
    role: &str,
    except: &str,
) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM users u JOIN user_roles r ON r.user_id = u.id \
         WHERE r.role = $1 AND u.status = 'active' AND u.id <> $2",
    )
    .bind(role)
    .bind(except)
    .fetch_one(db)
    .await?;
    Ok(n)
}

/// Team and enterprise tenants (not deleted) whose only owner is `user_id`.
pub async fn sole_owner_of<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT r.tenant_id FROM member_roles r JOIN tenants t ON t.id = r.tenant_id \
         WHERE r.user_id = $1 AND r.role = 'owner' AND t.personal_of IS NULL \
         AND t.status <> 'deleted' AND (SELECT COUNT(*) FROM member_roles o \
         WHERE o.tenant_id = r.tenant_id AND o.role = 'owner') = 1 ORDER BY r.tenant_id",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(t,)| t).collect())
}

/// What an erasure must drop from caches: the user's memberships, their personal tenant, and
/// the digests of that tenant's API keys (which go with it).
#[derive(Debug, Default)]
pub struct ErasureScope {
    pub tenants: Vec<String>,
    pub personal_tenant: Option<String>,
    pub personal_key_hashes: Vec<String>,
}

pub async fn erasure_scope(tx: &mut super::Tx, user_id: &str) -> Result<ErasureScope, sqlx::Error> {
    let tenants: Vec<(String,)> =
        sqlx::query_as("SELECT tenant_id FROM memberships WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&mut **tx)
            .await?;
    let personal: Option<(String,)> =
        sqlx::query_as("SELECT id FROM tenants WHERE personal_of = $1")
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?;
    let hashes: Vec<(String,)> = sqlx::query_as(
        "SELECT k.secret_hash FROM api_keys k JOIN tenants t ON t.id = k.tenant_id \
         WHERE t.personal_of = $1",
    )
    .bind(user_id)
    .fetch_all(&mut **tx)
    .await?;
    Ok(ErasureScope {
        tenants: tenants.into_iter().map(|(t,)| t).collect(),
        personal_tenant: personal.map(|(t,)| t),
        personal_key_hashes: hashes.into_iter().map(|(h,)| h).collect(),
    })
}

/// Erases a user: the row and everything that cascades from it (profile, sessions and refresh
/// tokens, roles, memberships, the personal tenant with its keys, consents, codes, mail
/// tokens). The audit log keeps its entries with `pseudonym` in place of the id, and drops the
/// IP address and user agent of what the user did. Invitations to the address go. Published
/// events that name the user (by id or address) leave the outbox; those still pending, or owed
/// to a webhook, stay (consumers need them to erase too). False when there is no such user.
pub async fn erase(tx: &mut super::Tx, id: &str, pseudonym: &str) -> Result<bool, sqlx::Error> {
    let email: Option<(String,)> =
        sqlx::query_as("SELECT email_normalized FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
    let Some((email_normalized,)) = email else {
        return Ok(false);
    };
    sqlx::query(
        "UPDATE audit_log SET actor_id = $1, ip = NULL, user_agent = NULL \
         WHERE actor_type = 'user' AND actor_id = $2",
    )
    .bind(pseudonym)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE audit_log SET target_id = $1 WHERE target_type = 'user' AND target_id = $2",
    )
    .bind(pseudonym)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE invitations SET invited_by = NULL WHERE invited_by = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE api_keys SET created_by = NULL WHERE created_by = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    // Invitations to the address, and those the user accepted, hold the address.
    sqlx::query("DELETE FROM invitations WHERE email_normalized = $1 OR accepted_by = $2")
        .bind(&email_normalized)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    // Published events that name the user: those about the user, and tenant events that carry
    // the id or the address in their data (a member added, an invitation sent), unless a
    // webhook is still owed them. Candidates come from SQL: the subject, the id as a JSON
    // string, or the address's longest ASCII run, lower-cased (ASCII case folding is the same
    // on both backends; their Unicode folding is not). Each is then confirmed by comparing the
    // envelope's strings as `normalize_email` does. A scan of the outbox: erasure is rare.
    let id_pattern = format!(
        "%{}%",
        like_escaped(&serde_json::Value::from(id).to_string())
    );
    let email_pattern = format!("%{}%", like_escaped(longest_ascii_run(&email_normalized)));
    // Streamed: only the seqs to delete are kept, however many events name the user.
    let mut erased: Vec<i64> = Vec::new();
    {
        let mut candidates = sqlx::query_as::<_, (i64, String, String)>(
            "SELECT seq, subject, envelope FROM outbox WHERE status = 'published' \
             AND (subject = $1 OR envelope LIKE $2 ESCAPE '\\' OR lower(envelope) LIKE $3 ESCAPE '\\') \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d \
             WHERE d.event_seq = outbox.seq AND d.status <> 'delivered')",
        )
        .bind(id)
        .bind(&id_pattern)
        .bind(&email_pattern)
        .fetch(&mut **tx);
        while let Some((seq, subject, envelope)) = candidates.try_next().await? {
            if subject == id
                || serde_json::from_str(&envelope)
                    .is_ok_and(|v: serde_json::Value| names(&v, id, &email_normalized))
            {
                erased.push(seq);
            }
        }
    }
    for chunk in erased.chunks(500) {
        let list = chunk
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        // Integers only: nothing of the list comes from outside.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM webhook_deliveries WHERE event_seq IN ({list})"
        )))
        .execute(&mut **tx)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM outbox WHERE seq IN ({list})"
        )))
        .execute(&mut **tx)
        .await?;
    }
    let done = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether a string anywhere in `value` is `id`, or an address that normalises to
/// `email_normalized`.
fn names(value: &serde_json::Value, id: &str, email_normalized: &str) -> bool {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::String(s)
                if s == id || (s.contains('@') && normalize_email(s) == email_normalized) =>
            {
                return true;
            }
            serde_json::Value::Array(items) => stack.extend(items),
            serde_json::Value::Object(fields) => stack.extend(fields.values()),
            _ => {}
        }
    }
    false
}

/// The longest run of ASCII characters in `text`: what an ASCII-only `lower()` keeps intact.
fn longest_ascii_run(text: &str) -> &str {
    text.split(|c: char| !c.is_ascii())
        .max_by_key(|part| part.len())
        .unwrap_or_default()
}

/// `text` with the LIKE pattern characters escaped by `\` (for `LIKE … ESCAPE '\'`).
fn like_escaped(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Profile {
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
    pub preferences: String,
    pub updated_at: i64,
}

pub async fn find_profile<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: &str,
) -> Result<Option<Profile>, sqlx::Error> {
    sqlx::query_as(
        "SELECT display_name, given_name, family_name, locale, timezone, preferences, updated_at \
         FROM profiles WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await
}

pub async fn update_profile<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: &str,
    p: &Profile,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE profiles SET display_name = $1, given_name = $2, family_name = $3, locale = $4, \
         timezone = $5, preferences = $6, updated_at = $7 WHERE user_id = $8",
    )
    .bind(&p.display_name)
    .bind(&p.given_name)
    .bind(&p.family_name)
    .bind(&p.locale)
    .bind(&p.timezone)
    .bind(&p.preferences)
    .bind(p.updated_at)
    .bind(user_id)
    .execute(db)
    .await
    .map(|_| ())
}

#[cfg(test)]
mod status_tests {
    use super::AccountStatus;

    #[test]
    fn only_active_is_active_and_unknown_text_fails_closed() {
        for status in [AccountStatus::Active, AccountStatus::Deactivated] {
            assert_eq!(AccountStatus::parse(status.as_str()), status);
        }
        assert_eq!(AccountStatus::parse("Active"), AccountStatus::Deactivated);
        assert_eq!(AccountStatus::parse(""), AccountStatus::Deactivated);
    }
}

#[cfg(test)]
mod erasure_tests {
    use super::{longest_ascii_run, names, normalize_email};
    use serde_json::json;

    #[test]
    fn an_envelope_names_the_user_by_id_or_by_any_casing_of_the_address() {
        let id = "0190-user";
        let email = normalize_email("ünal@example.com");
        let invited = json!({"data": {"email": "ÜNAL@Example.com", "roles": ["viewer"]}});
        assert!(
            names(&invited, id, &email),
            "non-ASCII letters fold as at sign-up"
        );
        let added = json!({"data": {"members": [{"user_id": "0190-user"}]}});
        assert!(names(&added, id, &email));
        let other = json!({"data": {"email": "nal@example.com", "user_id": "0190-user-2"}});
        assert!(
            !names(&other, id, &email),
            "a longer id or a shorter address is someone else"
        );
        // The SQL prefilter looks for this run in the ASCII-lower-cased envelope: it is there
        // whatever the address's casing.
        assert_eq!(longest_ascii_run(&email), "nal@example.com");
        assert!(
            r#"{"email":"ÜNAL@Example.com"}"#
                .to_ascii_lowercase()
                .contains(longest_ascii_run(&email))
        );
    }
}
