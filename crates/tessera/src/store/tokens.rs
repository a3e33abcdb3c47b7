//! One-time email tokens (verification, password reset), stored only as SHA-256 digests.

use sqlx::{Any, Executor};

/// Supersedes the user's unused tokens of `purpose`.
pub async fn supersede(
    tx: &mut super::Tx,
    user_id: &str,
    purpose: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE email_tokens SET consumed_at = $1 \
         WHERE user_id = $2 AND purpose = $3 AND consumed_at IS NULL",
    )
    .bind(now)
    .bind(user_id)
    .bind(purpose)
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

pub struct NewToken<'a> {
    pub token_hash: &'a str,
    pub user_id: &'a str,
    pub purpose: &'a str,
    pub email: &'a str,
    pub now: i64,
    pub expires_at: i64,
}

pub async fn insert(tx: &mut super::Tx, t: &NewToken<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO email_tokens (token_hash, user_id, purpose, email, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(t.token_hash)
    .bind(t.user_id)
    .bind(t.purpose)
    .bind(t.email)
    .bind(t.now)
    .bind(t.expires_at)
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

/// A usable token: its user and the address it was sent to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LiveToken {
    pub user_id: String,
    pub email: String,
}

/// The token if it exists, has this purpose, is unused and unexpired.
pub async fn find_live<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
    purpose: &str,
    now: i64,
) -> Result<Option<LiveToken>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, email FROM email_tokens WHERE token_hash = $1 AND purpose = $2 \
         AND consumed_at IS NULL AND expires_at > $3",
    )
    .bind(token_hash)
    .bind(purpose)
    .bind(now)
    .fetch_optional(db)
    .await
}

/// Uses a live token once: the first caller gets it, every later one gets `None`.
pub async fn consume(
    tx: &mut super::Tx,
    token_hash: &str,
    purpose: &str,
    now: i64,
) -> Result<Option<LiveToken>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE email_tokens SET consumed_at = $1 WHERE token_hash = $2 AND purpose = $3 \
         AND consumed_at IS NULL AND expires_at > $1 RETURNING user_id, email",
    )
    .bind(now)
    .bind(token_hash)
    .bind(purpose)
    .fetch_optional(&mut **tx)
    .await
}

/// The statements a token request for a known address runs (token, mail job, event, audit
/// entry), run for an unknown one with a condition that inserts nothing: the database does the
/// same kind of work either way, so timing does not tell which addresses have accounts.
pub async fn decoy_insert(
    tx: &mut super::Tx,
    sealed_mail: Option<&[u8]>,
    audited: bool,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO email_tokens (token_hash, user_id, purpose, email, created_at, expires_at) \
         SELECT $1, $2, $3, $4, $5, $6 WHERE 1 = 0",
    )
    .bind("")
    .bind("")
    .bind("")
    .bind("")
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    if let Some(payload) = sealed_mail {
        sqlx::query(
            "INSERT INTO mail_jobs (id, template, payload, next_attempt_at, created_at) \
             SELECT $1, $2, $3, $4, $4 WHERE 1 = 0",
        )
        .bind("")
        .bind("")
        .bind(payload)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    if audited {
        sqlx::query(
            "INSERT INTO audit_log (correlation_id, occurred_at, actor_type, action, result) \
             SELECT $1, $2, $3, $4, $5 WHERE 1 = 0",
        )
        .bind("")
        .bind(now)
        .bind("none")
        .bind("")
        .bind("success")
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, subject, correlation_id, occurred_at, envelope, \
         next_attempt_at) SELECT $1, $2, $3, $4, $5, $6, $5 WHERE 1 = 0",
    )
    .bind("")
    .bind("")
    .bind("")
    .bind("")
    .bind(now)
    .bind("")
    .execute(&mut **tx)
    .await
    .map(|_| ())
}
