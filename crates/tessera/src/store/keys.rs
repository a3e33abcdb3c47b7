//! Signing keys. The private key is stored sealed under the master key.

use sqlx::{Any, Executor};

#[derive(Clone, sqlx::FromRow)]
pub struct SigningKeyRow {
    pub kid: String,
    pub alg: String,
    pub state: String,
    pub private_key: Vec<u8>,
    pub public_jwk: String,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub retired_at: Option<i64>,
}

/// Keys that may still verify tokens: the active one and those retired after `retired_since`.
pub async fn list_keys<'e>(
    db: impl Executor<'e, Database = Any>,
    retired_since: i64,
) -> Result<Vec<SigningKeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kid, alg, state, private_key, public_jwk, created_at, activated_at, retired_at \
         FROM signing_keys WHERE state = 'active' OR retired_at >= $1 ORDER BY created_at DESC, kid",
    )
    .bind(retired_since)
    .fetch_all(db)
    .await
}

/// Every key, for `tessera keys list`.
pub async fn list_all_keys<'e>(
    db: impl Executor<'e, Database = Any>,
) -> Result<Vec<SigningKeyRow>, sqlx::Error> {
    list_keys(db, i64::MIN).await.map(|mut v| {
        v.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.kid.cmp(&b.kid)));
        v
    })
}

/// Retires the current key and inserts `new` as the active one, in one transaction.
pub async fn rotate(tx: &mut super::Tx, new: &SigningKeyRow, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE signing_keys SET state = 'retired', retired_at = $1 WHERE state = 'active'",
    )
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO signing_keys (kid, alg, state, private_key, public_jwk, created_at, activated_at) \
         VALUES ($1, $2, 'active', $3, $4, $5, $5)",
    )
    .bind(&new.kid)
    .bind(&new.alg)
    .bind(&new.private_key)
    .bind(&new.public_jwk)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
