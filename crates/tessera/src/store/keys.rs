//! Signing keys. The private key is stored sealed under the master key.
//!
//! States: `next` (published in the JWKS ahead of use), `active` (signs), `retired` (published
//! until every token it signed has expired), `revoked` (withdrawn at once).

use sqlx::{Any, Executor};

/// Where a signing key is in its lifecycle; stored as text in `signing_keys.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published in the JWKS ahead of use.
    Next,
    /// Signs new tokens (at most one: a unique index).
    Active,
    /// Published until every token it signed has expired.
    Retired,
    /// Withdrawn at once.
    Revoked,
}

impl KeyState {
    pub const ALL: [Self; 4] = [Self::Next, Self::Active, Self::Retired, Self::Revoked];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

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

impl SigningKeyRow {
    /// The stored state; `None` for text this version does not know.
    pub fn state(&self) -> Option<KeyState> {
        KeyState::parse(&self.state)
    }
}

/// Keys that may verify tokens: next, active, and those retired after `retired_since`.
pub async fn list_keys<'e>(
    db: impl Executor<'e, Database = Any>,
    retired_since: i64,
) -> Result<Vec<SigningKeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kid, alg, state, private_key, public_jwk, created_at, activated_at, retired_at \
         FROM signing_keys WHERE state IN ('active', 'next') OR (state = 'retired' AND retired_at >= $1) \
         ORDER BY created_at DESC, kid",
    )
    .bind(retired_since)
    .fetch_all(db)
    .await
}

/// Every key, newest first, for `tessera keys list`.
pub async fn list_all_keys<'e>(
    db: impl Executor<'e, Database = Any>,
) -> Result<Vec<SigningKeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kid, alg, state, private_key, public_jwk, created_at, activated_at, retired_at \
         FROM signing_keys ORDER BY created_at DESC, kid",
    )
    .fetch_all(db)
    .await
}

/// The states of all keys, cheap to compare between reloads.
pub async fn fingerprint<'e>(db: impl Executor<'e, Database = Any>) -> Result<String, sqlx::Error> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT kid, state FROM signing_keys ORDER BY kid")
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().map(|(k, s)| format!("{k}:{s};")).collect())
}

async fn insert(
    tx: &mut super::Tx,
    new: &SigningKeyRow,
    state: KeyState,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, alg, state, private_key, public_jwk, created_at, activated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&new.kid)
    .bind(&new.alg)
    .bind(state.as_str())
    .bind(&new.private_key)
    .bind(&new.public_jwk)
    .bind(now)
    .bind((state == KeyState::Active).then_some(now))
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

/// Retires the current key and inserts `new` as the active one.
pub async fn rotate(tx: &mut super::Tx, new: &SigningKeyRow, now: i64) -> Result<(), sqlx::Error> {
    retire_active(tx, now).await?;
    insert(tx, new, KeyState::Active, now).await
}

/// Publishes `new` ahead of use (at most one such key: a unique index).
pub async fn prepublish(
    tx: &mut super::Tx,
    new: &SigningKeyRow,
    now: i64,
) -> Result<(), sqlx::Error> {
    insert(tx, new, KeyState::Next, now).await
}

async fn retire_active(tx: &mut super::Tx, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE signing_keys SET state = 'retired', retired_at = $1 WHERE state = 'active'")
        .bind(now)
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

/// Makes the published `next` key current and retires the active one. False without a next key.
pub async fn promote_next(tx: &mut super::Tx, now: i64) -> Result<bool, sqlx::Error> {
    let next: Option<(String,)> =
        sqlx::query_as("SELECT kid FROM signing_keys WHERE state = 'next'")
            .fetch_optional(&mut **tx)
            .await?;
    let Some((kid,)) = next else { return Ok(false) };
    retire_active(tx, now).await?;
    sqlx::query("UPDATE signing_keys SET state = 'active', activated_at = $1 WHERE kid = $2")
        .bind(now)
        .bind(&kid)
        .execute(&mut **tx)
        .await?;
    Ok(true)
}

/// Withdraws a key at once; returns its previous state (`None`: no such key).
pub async fn revoke(
    tx: &mut super::Tx,
    kid: &str,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    let state: Option<(String,)> = sqlx::query_as("SELECT state FROM signing_keys WHERE kid = $1")
        .bind(kid)
        .fetch_optional(&mut **tx)
        .await?;
    let Some((state,)) = state else {
        return Ok(None);
    };
    sqlx::query("UPDATE signing_keys SET state = 'revoked', retired_at = COALESCE(retired_at, $1) WHERE kid = $2")
        .bind(now)
        .bind(kid)
        .execute(&mut **tx)
        .await?;
    Ok(Some(state))
}

#[cfg(test)]
mod tests {
    use super::KeyState;

    #[test]
    fn key_states_round_trip_and_unknown_text_is_no_state() {
        for state in KeyState::ALL {
            assert_eq!(KeyState::parse(state.as_str()), Some(state));
        }
        assert_eq!(KeyState::parse("current"), None);
    }
}
