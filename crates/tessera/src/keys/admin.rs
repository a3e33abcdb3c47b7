//! Signing keys for operators: the list with each key's state, rotation and emergency
//! revocation, for `/admin/keys` and `tessera keys` alike. Authorized through
//! [`crate::authz`] (`Permission::ManageKeys`) and audited with the acting principal.

use serde::{Deserialize, Serialize};

use super::{Alg, Keys, PREPUBLISH};
use crate::audit::By;
use crate::authz::{self, Permission, Principal};
use crate::clock::rfc3339;
use crate::core::Core;
use crate::error::{Error, Result};
use crate::store::keys::{self as key_store, KeyState};

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Signs new tokens.
    Current,
    /// Published ahead of use; becomes current at `current_from`.
    Next,
    /// No longer signs; published and trusted until `published_until`.
    Retired,
    /// Withdrawn in an emergency: its tokens are refused.
    Revoked,
    /// Retired long enough that no token it signed can still be valid.
    Expired,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub kid: String,
    pub alg: String,
    pub state: Stage,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published_until: Option<String>,
}

/// Every signing key, newest first.
pub async fn list(core: &Core, principal: &Principal, now: i64) -> Result<Vec<KeyView>> {
    authz::require(principal, Permission::ManageKeys)?;
    let retention = core.keys.config().retention;
    let rows = key_store::list_all_keys(core.store.pool()).await?;
    Ok(rows
        .into_iter()
        .map(|k| {
            let (state, current_from, published_until) = match (k.state(), k.retired_at) {
                (Some(KeyState::Active), _) => (Stage::Current, None, None),
                (Some(KeyState::Next), _) => {
                    (Stage::Next, Some(rfc3339(k.created_at + PREPUBLISH)), None)
                }
                (Some(KeyState::Revoked), _) => (Stage::Revoked, None, None),
                (_, Some(at)) if at + retention > now => {
                    (Stage::Retired, None, Some(rfc3339(at + retention)))
                }
                _ => (Stage::Expired, None, None),
            };
            KeyView {
                kid: k.kid,
                alg: k.alg,
                state,
                created_at: rfc3339(k.created_at),
                current_from,
                published_until,
            }
        })
        .collect())
}

/// `POST /admin/keys/rotate`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// Switch at once instead of publishing the new key an hour ahead.
    #[serde(default)]
    pub now: bool,
    /// `RS256`, `ES256` or `EdDSA`; the configured algorithm when absent.
    pub alg: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rotated {
    pub kid: String,
    pub alg: &'static str,
    pub state: Stage,
    pub current_from: String,
}

/// Rotates: by default the new key is published now and current an hour later (caches of the
/// JWKS have it first); `now` switches at once. Either way the previous key stays published
/// until every token it signed has expired. 409 when a key is already scheduled (without `now`).
pub async fn rotate(core: &Core, input: Rotation, by: By<'_>, now: i64) -> Result<Rotated> {
    authz::require(by.principal, Permission::ManageKeys)?;
    let alg = match input.alg.as_deref() {
        None => core.keys.config().alg,
        Some(name) => Alg::parse(name)
            .filter(|a| *a != Alg::Hs256)
            .ok_or_else(|| Error::invalid("alg", "must be RS256, ES256 or EdDSA"))?,
    };
    if alg == Alg::Hs256 {
        return Err(Error::invalid(
            "alg",
            "HS256 keys come from the configuration and are not rotated here",
        ));
    }
    let master = &core.master;
    let rotated = if input.now {
        let kid = Keys::rotate_now(&core.store, master, alg, by, now)
            .await
            .map_err(Error::Internal)?;
        Rotated {
            kid,
            alg: alg.as_str(),
            state: Stage::Current,
            current_from: rfc3339(now),
        }
    } else {
        let scheduled = key_store::list_keys(core.store.pool(), now)
            .await?
            .iter()
            .any(|k| k.state() == Some(KeyState::Next));
        if scheduled {
            return Err(Error::Conflict {
                code: crate::error::Code::KeyScheduled,
                message: "a key is already scheduled; rotate with \"now\": true to switch to it at once",
            });
        }
        let kid = Keys::schedule(&core.store, master, alg, by, now)
            .await
            .map_err(Error::Internal)?;
        Rotated {
            kid,
            alg: alg.as_str(),
            state: Stage::Next,
            current_from: rfc3339(now + PREPUBLISH),
        }
    };
    reload(core, now).await;
    Ok(rotated)
}

/// Withdraws a key at once (see [`Keys::revoke`]); 404 for an unknown kid.
pub async fn revoke(core: &Core, kid: &str, by: By<'_>, now: i64) -> Result<()> {
    authz::require(by.principal, Permission::ManageKeys)?;
    if !crate::store::storable(kid) {
        return Err(Error::NotFound);
    }
    let alg = match core.keys.config().alg {
        Alg::Hs256 => Alg::Rs256,
        alg => alg,
    };
    Keys::revoke(&core.store, &core.master, alg, kid, by, now)
        .await
        .map_err(Error::Internal)?
        .ok_or(Error::NotFound)?;
    reload(core, now).await;
    Ok(())
}

/// This replica sees the change at once; others on their next reload.
async fn reload(core: &Core, now: i64) {
    if let Err(e) = core.keys.reload(now).await {
        tracing::warn!(error = ?e, "reloading signing keys after an operator change");
    }
}
