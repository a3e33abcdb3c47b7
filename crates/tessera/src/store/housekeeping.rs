//! Deleting rows nothing will ever read again, so tables do not grow without bound.

use sqlx::{Any, Executor};

/// How long ended sessions stay listed (and their ids resolvable) before they are deleted.
pub const ENDED_SESSION_RETENTION: i64 = 30 * 24 * 3600;

/// Deletes expired authorization codes (an hour after expiry), expired refresh tokens, revoked
/// token ids past their tokens' expiry, and sessions ended more than
/// [`ENDED_SESSION_RETENTION`] ago (their refresh tokens go with them). Returns the rows deleted.
pub async fn purge_expired(tx: &mut super::Tx, now: i64) -> Result<u64, sqlx::Error> {
    let ended_before = now - ENDED_SESSION_RETENTION;
    let mut deleted = 0;
    for (sql, cutoff) in [
        ("DELETE FROM oauth_codes WHERE expires_at < $1", now - 3600),
        ("DELETE FROM refresh_tokens WHERE expires_at < $1", now),
        ("DELETE FROM revoked_tokens WHERE expires_at < $1", now),
        (
            "DELETE FROM sessions WHERE revoked_at < $1 OR expires_at < $1",
            ended_before,
        ),
    ] {
        deleted += sqlx::query(sql)
            .bind(cutoff)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    }
    Ok(deleted)
}

/// Whether [`purge_expired`] has anything to do (a read, so idle replicas take no write lock).
pub async fn anything_expired<'e>(
    db: impl Executor<'e, Database = Any>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM oauth_codes WHERE expires_at < $1 \
         UNION ALL SELECT 1 FROM refresh_tokens WHERE expires_at < $2 \
         UNION ALL SELECT 1 FROM revoked_tokens WHERE expires_at < $2 \
         UNION ALL SELECT 1 FROM sessions WHERE revoked_at < $3 OR expires_at < $3 LIMIT 1",
    )
    .bind(now - 3600)
    .bind(now)
    .bind(now - ENDED_SESSION_RETENTION)
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}
