//! Users and profiles.

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
            "SELECT id, email, email_verified_at, password_hash, status, created_at, updated_at FROM users ",
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
