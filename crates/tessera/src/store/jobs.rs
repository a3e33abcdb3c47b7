//! The one leased work queue, shared by mail (`mail_jobs`), the outbox relay (`outbox`) and
//! webhook deliveries (`webhook_deliveries`). All three have the same columns for it (`status`,
//! `attempts`, `next_attempt_at`, `lease_owner`, `lease_until`, `last_error`), and the same
//! rules, written once here: a row is claimable while pending, due, and not leased; a claim sets
//! a lease with `UPDATE … RETURNING` (both backends, no `SKIP LOCKED`), re-checked on the row
//! being updated so two workers never both get it; a failed attempt is retried at its backoff
//! or parked after `max_attempts`; parked rows wait for an operator.

use sqlx::{Any, Executor};

/// One queue: its table, its key column and the status of a finished row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    pub table: &'static str,
    pub key: &'static str,
    /// The status of a row whose work is done (`sent`, `published`, `delivered`).
    pub done: &'static str,
}

pub const MAIL: Queue = Queue {
    table: "mail_jobs",
    key: "id",
    done: "sent",
};

pub const OUTBOX: Queue = Queue {
    table: "outbox",
    key: "seq",
    done: "published",
};

pub const WEBHOOKS: Queue = Queue {
    table: "webhook_deliveries",
    key: "id",
    done: "delivered",
};

/// Where a row is. Stored as text: `pending`, the queue's own done status, `parked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Done,
    /// Given up after too many failed attempts, until an operator retries it.
    Parked,
}

impl Status {
    pub fn as_str(self, queue: Queue) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Done => queue.done,
            Self::Parked => "parked",
        }
    }

    pub fn parse(queue: Queue, s: &str) -> Option<Self> {
        [Self::Pending, Self::Done, Self::Parked]
            .into_iter()
            .find(|st| st.as_str(queue) == s)
    }
}

/// The condition on a claimable row of table alias `t` (`$3` is now).
fn claimable(t: &str) -> String {
    format!(
        "{t}status = 'pending' AND ({t}lease_until IS NULL OR {t}lease_until < $3) \
         AND {t}next_attempt_at <= $3"
    )
}

/// The claim statement of `queue`: binds `$1` lease owner, `$2` lease end, `$3` now, `$4` the
/// most rows; `also` narrows the candidates (alias `c`), `order` orders them.
pub fn claim_sql(queue: Queue, also: &str, order: &str, returning: &str) -> String {
    let Queue { table, key, .. } = queue;
    format!(
        "UPDATE {table} SET lease_owner = $1, lease_until = $2 WHERE {} AND {key} IN ( \
         SELECT c.{key} FROM {table} c WHERE {} {also} ORDER BY {order} LIMIT $4) \
         RETURNING {returning}",
        claimable(""),
        claimable("c.")
    )
}

/// A lease token for one claim: `owner` and a claim id. Outcomes are recorded against it, so a
/// worker that claims again while earlier rows are in flight never mixes the two.
pub fn lease_token(owner: &str) -> String {
    format!("{owner}.{}", uuid::Uuid::new_v4().simple())
}

/// Whether any row is due (a read, so idle workers never take SQLite's write lock).
pub async fn any_due<'e>(
    db: impl Executor<'e, Database = Any>,
    queue: Queue,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT 1 FROM {} WHERE status = 'pending' AND next_attempt_at <= $1 LIMIT 1",
        queue.table
    )))
    .bind(now)
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}

/// Rows per status.
pub async fn count_by_status<'e>(
    db: impl Executor<'e, Database = Any>,
    queue: Queue,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT status, COUNT(*) FROM {} GROUP BY status",
        queue.table
    )))
    .fetch_all(db)
    .await
}

/// Records a failed attempt on the row `key` leased by `owner`: retry at `next_attempt_at`, or
/// park it once `attempts` reaches `max_attempts`. Returns true when it was parked.
pub async fn mark_failed<'e, 'q, K>(
    db: impl Executor<'e, Database = Any>,
    queue: Queue,
    owner: &'q str,
    key: K,
    error: &'q str,
    next_attempt_at: i64,
    max_attempts: i64,
) -> Result<bool, sqlx::Error>
where
    K: 'q + sqlx::Encode<'q, Any> + sqlx::Type<Any> + Send,
{
    let row: Option<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE {} SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, \
         lease_owner = NULL, lease_until = NULL, \
         status = CASE WHEN attempts + 1 >= $3 THEN 'parked' ELSE 'pending' END \
         WHERE {} = $4 AND lease_owner = $5 RETURNING status",
        queue.table, queue.key
    )))
    .bind(error)
    .bind(next_attempt_at)
    .bind(max_attempts)
    .bind(key)
    .bind(owner)
    .fetch_optional(db)
    .await?;
    Ok(row.is_some_and(|(s,)| s == Status::Parked.as_str(queue)))
}

/// Gives back the rows of the claim `lease` that are still pending (a worker stopping before it
/// started them), so another worker can take them at once instead of when the lease expires.
pub async fn release<'e>(
    db: impl Executor<'e, Database = Any>,
    queue: Queue,
    lease: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {} SET lease_owner = NULL, lease_until = NULL \
         WHERE lease_owner = $1 AND status = 'pending'",
        queue.table
    )))
    .bind(lease)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Puts every parked row of `queue` back in it, due now.
pub async fn unpark<'e>(
    db: impl Executor<'e, Database = Any>,
    queue: Queue,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {} SET status = 'pending', attempts = 0, next_attempt_at = $1 \
         WHERE status = 'parked'",
        queue.table
    )))
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_per_queue() {
        for queue in [MAIL, OUTBOX, WEBHOOKS] {
            for status in [Status::Pending, Status::Done, Status::Parked] {
                assert_eq!(Status::parse(queue, status.as_str(queue)), Some(status));
            }
        }
        assert_eq!(
            Status::parse(MAIL, "failed"),
            None,
            "mail parks like the others"
        );
        assert_eq!(Status::parse(OUTBOX, "sent"), None);
    }
}
