//! Deleting rows nothing will ever read again, so tables do not grow without bound.

use sqlx::{Any, Executor};

/// How long ended sessions stay listed (and their ids resolvable) before they are deleted.
pub const ENDED_SESSION_RETENTION: i64 = 30 * 24 * 3600;

/// What one housekeeping pass deletes, in the order it deletes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// Authorization codes an hour past their expiry.
    Codes,
    /// Refresh tokens past their expiry.
    RefreshTokens,
    /// Revoked token ids past their tokens' expiry.
    RevokedTokens,
    /// Sessions ended more than [`ENDED_SESSION_RETENTION`] ago (their refresh tokens go with
    /// them).
    Sessions,
    /// Emailed links that join an upstream identity, past their expiry (used or not).
    LinkTokens,
    /// Verification and password-reset tokens past their expiry (used or not).
    EmailTokens,
}

impl Expired {
    pub const ALL: [Expired; 6] = [
        Expired::Codes,
        Expired::RefreshTokens,
        Expired::RevokedTokens,
        Expired::Sessions,
        Expired::LinkTokens,
        Expired::EmailTokens,
    ];

    /// The statement deleting at most `$2` rows older than `$1`, each found through an index
    /// (migrations 0014, 0019 and 0020), and that cutoff at `now`.
    fn statement(self, now: i64) -> (&'static str, i64) {
        match self {
            Expired::Codes => (
                "DELETE FROM oauth_codes WHERE code_hash IN \
                 (SELECT code_hash FROM oauth_codes WHERE expires_at < $1 LIMIT $2)",
                now - 3600,
            ),
            Expired::RefreshTokens => (
                "DELETE FROM refresh_tokens WHERE token_hash IN \
                 (SELECT token_hash FROM refresh_tokens WHERE expires_at < $1 LIMIT $2)",
                now,
            ),
            Expired::RevokedTokens => (
                "DELETE FROM revoked_tokens WHERE jti IN \
                 (SELECT jti FROM revoked_tokens WHERE expires_at < $1 LIMIT $2)",
                now,
            ),
            Expired::Sessions => (
                "DELETE FROM sessions WHERE id IN \
                 (SELECT id FROM sessions WHERE revoked_at < $1 OR expires_at < $1 LIMIT $2)",
                now - ENDED_SESSION_RETENTION,
            ),
            Expired::LinkTokens => (
                "DELETE FROM identity_link_tokens WHERE token_hash IN \
                 (SELECT token_hash FROM identity_link_tokens WHERE expires_at < $1 LIMIT $2)",
                now,
            ),
            Expired::EmailTokens => (
                "DELETE FROM email_tokens WHERE token_hash IN \
                 (SELECT token_hash FROM email_tokens WHERE expires_at < $1 LIMIT $2)",
                now,
            ),
        }
    }
}

/// Deletes at most `limit` expired rows of one kind; returns how many it deleted (fewer than
/// `limit`: none of that kind is left).
pub async fn purge_batch(
    tx: &mut super::Tx,
    kind: Expired,
    now: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let (sql, cutoff) = kind.statement(now);
    Ok(sqlx::query(sql)
        .bind(cutoff)
        .bind(limit)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

/// Whether [`crate::app::purge_expired`] has anything to do (a read, so idle replicas take no write lock).
pub async fn anything_expired<'e>(
    db: impl Executor<'e, Database = Any>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM oauth_codes WHERE expires_at < $1 \
         UNION ALL SELECT 1 FROM refresh_tokens WHERE expires_at < $2 \
         UNION ALL SELECT 1 FROM revoked_tokens WHERE expires_at < $2 \
         UNION ALL SELECT 1 FROM sessions WHERE revoked_at < $3 OR expires_at < $3 \
         UNION ALL SELECT 1 FROM identity_link_tokens WHERE expires_at < $2 \
         UNION ALL SELECT 1 FROM email_tokens WHERE expires_at < $2 LIMIT 1",
    )
    .bind(now - 3600)
    .bind(now)
    .bind(now - ENDED_SESSION_RETENTION)
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}
