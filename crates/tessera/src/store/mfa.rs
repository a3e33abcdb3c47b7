//! Second factors (TOTP keys and WebAuthn credentials, sealed under the master key) and single-use recovery codes (SHA-256
//! digests only).

use sqlx::{Any, Executor};

#[derive(Clone, sqlx::FromRow)]
pub struct FactorRow {
    pub id: String,
    pub user_id: String,
    pub kind: String,
    pub name: String,
    /// Sealed (see `crate::mfa::seal_context`).
    pub secret: Vec<u8>,
    pub created_at: i64,
    pub confirmed_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub last_step: Option<i64>,
    /// WebAuthn: the credential id, base64url.
    pub credential_id: Option<String>,
}

impl std::fmt::Debug for FactorRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FactorRow")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

macro_rules! select_factors {
    ($rest:literal) => {
        concat!(
            "SELECT id, user_id, kind, name, secret, created_at, confirmed_at, last_used_at, \
             last_step, credential_id FROM mfa_factors ",
            $rest
        )
    };
}

pub struct NewFactor<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub secret: &'a [u8],
    pub credential_id: Option<&'a str>,
    pub now: i64,
}

/// Adds an unconfirmed factor, after dropping the user's other unconfirmed ones (an abandoned
/// enrolment leaves nothing behind but the latest).
pub async fn insert_pending(tx: &mut super::Tx, f: &NewFactor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM mfa_factors WHERE user_id = $1 AND confirmed_at IS NULL")
        .bind(f.user_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO mfa_factors (id, user_id, kind, name, secret, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(f.id)
    .bind(f.user_id)
    .bind(f.kind)
    .bind(f.name)
    .bind(f.secret)
    .bind(f.now)
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

/// Adds a factor confirmed at once (a WebAuthn credential: its registration proved it).
pub async fn insert_confirmed(tx: &mut super::Tx, f: &NewFactor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO mfa_factors (id, user_id, kind, name, secret, created_at, confirmed_at, \
         last_used_at, credential_id) VALUES ($1, $2, $3, $4, $5, $6, $6, $6, $7)",
    )
    .bind(f.id)
    .bind(f.user_id)
    .bind(f.kind)
    .bind(f.name)
    .bind(f.secret)
    .bind(f.now)
    .bind(f.credential_id)
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

/// The confirmed factor holding WebAuthn credential `credential_id`, whoever's it is.
pub async fn find_by_credential<'e>(
    db: impl Executor<'e, Database = Any>,
    credential_id: &str,
) -> Result<Option<FactorRow>, sqlx::Error> {
    if credential_id.is_empty() || credential_id.len() > 1400 {
        return Ok(None);
    }
    sqlx::query_as(select_factors!(
        "WHERE credential_id = $1 AND confirmed_at IS NOT NULL"
    ))
    .bind(credential_id)
    .fetch_optional(db)
    .await
}

/// A factor was used: its (re-sealed) secret, after a WebAuthn credential's counter or backup
/// state moved.
pub async fn used<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
    secret: &[u8],
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE mfa_factors SET secret = $2, last_used_at = $3 WHERE id = $1")
        .bind(id)
        .bind(secret)
        .bind(now)
        .execute(db)
        .await
        .map(|_| ())
}

/// One of the user's factors, confirmed or not.
pub async fn find<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: &str,
    id: &str,
) -> Result<Option<FactorRow>, sqlx::Error> {
    if !super::storable(id) {
        return Ok(None);
    }
    sqlx::query_as(select_factors!("WHERE user_id = $1 AND id = $2"))
        .bind(user_id)
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The user's confirmed factors, oldest first.
pub async fn confirmed<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: &str,
) -> Result<Vec<FactorRow>, sqlx::Error> {
    sqlx::query_as(select_factors!(
        "WHERE user_id = $1 AND confirmed_at IS NOT NULL ORDER BY created_at, id"
    ))
    .bind(user_id)
    .fetch_all(db)
    .await
}

/// Accepts TOTP time step `step` for the factor: true only if no step at or after it was
/// accepted before (RFC 6238 §5.2: a code is accepted once), in one atomic update. `confirm`
/// also confirms a pending factor.
pub async fn accept_step<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
    step: i64,
    confirm: bool,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql = if confirm {
        "UPDATE mfa_factors SET last_step = $2, last_used_at = $3, confirmed_at = $3 \
         WHERE id = $1 AND confirmed_at IS NULL AND (last_step IS NULL OR last_step < $2)"
    } else {
        "UPDATE mfa_factors SET last_step = $2, last_used_at = $3 \
         WHERE id = $1 AND confirmed_at IS NOT NULL AND (last_step IS NULL OR last_step < $2)"
    };
    let done = sqlx::query(sql)
        .bind(id)
        .bind(step)
        .bind(now)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes one of the user's factors; returns it if it was there.
pub async fn delete(
    tx: &mut super::Tx,
    user_id: &str,
    id: &str,
) -> Result<Option<FactorRow>, sqlx::Error> {
    let Some(row) = find(&mut **tx, user_id, id).await? else {
        return Ok(None);
    };
    sqlx::query("DELETE FROM mfa_factors WHERE user_id = $1 AND id = $2")
        .bind(user_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(Some(row))
}

/// Removes every factor of the user and their recovery codes; returns the confirmed factors.
pub async fn delete_all(tx: &mut super::Tx, user_id: &str) -> Result<Vec<FactorRow>, sqlx::Error> {
    let rows = confirmed(&mut **tx, user_id).await?;
    sqlx::query("DELETE FROM mfa_factors WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    delete_recovery_codes(tx, user_id).await?;
    Ok(rows)
}

/// How many confirmed factors the user has.
pub async fn count_confirmed<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM mfa_factors WHERE user_id = $1 AND confirmed_at IS NOT NULL",
    )
    .bind(user_id)
    .fetch_one(db)
    .await
}

/// Replaces the user's recovery codes with these digests.
pub async fn replace_recovery_codes(
    tx: &mut super::Tx,
    user_id: &str,
    hashes: &[String],
    now: i64,
) -> Result<(), sqlx::Error> {
    delete_recovery_codes(tx, user_id).await?;
    for hash in hashes {
        sqlx::query(
            "INSERT INTO mfa_recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)",
        )
        .bind(user_id)
        .bind(hash)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub async fn delete_recovery_codes(tx: &mut super::Tx, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

/// Uses an unused recovery code (by its digest): true if it was unused, in one atomic update.
pub async fn use_recovery_code<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: &str,
    hash: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE mfa_recovery_codes SET used_at = $3 \
         WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
    )
    .bind(user_id)
    .bind(hash)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How many of the user's recovery codes are still unused.
pub async fn unused_recovery_codes<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL",
    )
    .bind(user_id)
    .fetch_one(db)
    .await
}
