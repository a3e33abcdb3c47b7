//! Whether an access token is still live beyond its signature and expiry: its session (token
//! family) must be live, and its `jti` must not have been revoked (RFC 7009).
//!
//! Revoked ids are kept in memory (loaded at start, refreshed every few seconds from the store
//! so other replicas' revocations arrive) and persisted until the token would have expired.

use std::time::Duration;

use crate::core::Core;
use crate::error::Result;
use crate::keys::jwt::AccessClaims;
use crate::shared::{Invalidation, Shared};
use crate::store::Store;
use crate::store::oauth as store;

/// Seconds between reloads of revoked token ids from the store.
pub const RELOAD_INTERVAL: u64 = 5;

/// Revoked access-token ids of every replica: this one's at once, others' through [`Shared`]
/// (at once with Redis) and the periodic reload from the store (the backstop).
#[derive(Clone)]
pub struct RevokedTokens {
    ids: moka::sync::Cache<String, ()>,
    shared: Shared,
}

impl RevokedTokens {
    pub fn new(shared: &Shared) -> Self {
        Self {
            ids: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
            shared: shared.clone(),
        }
    }

    pub fn contains(&self, jti: &str) -> bool {
        self.ids.contains_key(jti)
    }

    /// Revokes one access token until `expires_at`.
    pub async fn revoke(&self, store: &Store, jti: &str, expires_at: i64) -> Result<()> {
        store::revoke_jti(store.writer(), jti, expires_at).await?;
        self.ids.insert(jti.to_string(), ());
        self.shared
            .publish(&Invalidation::Token(jti.to_string()))
            .await;
        Ok(())
    }

    /// A revocation made by another replica.
    pub fn heard(&self, jti: &str) {
        self.ids.insert(jti.to_string(), ());
    }

    /// Loads the revoked ids of other processes.
    pub async fn reload(&self, store: &Store, now: i64) -> Result<()> {
        for (jti, _) in store::live_revoked_jtis(store.pool(), now).await? {
            self.ids.insert(jti, ());
        }
        Ok(())
    }
}

/// Whether a validly signed, unexpired access token has been revoked in any way.
pub async fn is_live(state: &Core, claims: &AccessClaims, now: i64) -> Result<bool> {
    if state.revoked.contains(&claims.jti) {
        return Ok(false);
    }
    let session_live = match &claims.sid {
        Some(sid) => state.sessions.is_live(&state.store, sid, now).await?,
        None => true,
    };
    if !session_live {
        return Ok(false);
    }
    // A JWT exchanged for an API key (RFC 8693) stands only while the key does.
    if claims.api_key {
        let Some(tid) = &claims.tid else {
            return Ok(false);
        };
        let key = crate::store::api_keys::find(state.store.pool(), tid, &claims.sub).await?;
        if !key.is_some_and(|k| k.is_live(now)) {
            return Ok(false);
        }
    }
    // A token scoped to a tenant stands only while the tenant is active and, for a user, while
    // they are still a member (at once on every replica: the caches are invalidated).
    match &claims.tid {
        Some(tid) => {
            let user = claims.sid.as_ref().map(|_| claims.sub.as_str());
            crate::tenants::token_tenant_live(state, tid, user).await
        }
        None => Ok(true),
    }
}
