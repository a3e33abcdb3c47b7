//! Token introspection (RFC 7662) and revocation (RFC 7009).

use serde::Serialize;

use super::clients::Client;
use crate::core::Core;
use crate::crypto::token_hash;
use crate::error::Result;
use crate::sessions;
use crate::store::sessions as store_sessions;

/// RFC 7662 §2.2. Inactive tokens answer `{"active": false}` and nothing else.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The token's tenant (Tessera's `tid` claim; RFC 7662 §2.2 allows further members).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// The tenant's roles of the user, for an access token in a tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_roles: Option<Vec<String>>,
    /// An API key's permissions in its tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    /// The tenant's features (plan entitlements such as `sso`), so that resource servers can
    /// gate tenant-specific functions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// RFC 8176: how the user proved who they are in the token's session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amr: Option<Vec<String>>,
    /// OIDC Core §2 / RFC 9470: the class of that sign-in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
}

/// Introspects an access token or a refresh token (only the owning client's). Expired, revoked
/// and malformed tokens are inactive, and so is an access token the asking client may not see
/// (RFC 7662 §4: see [`Client::may_introspect`]), so nothing leaks to other clients.
pub async fn introspect(
    state: &Core,
    client: &Client,
    token: &str,
    now: i64,
) -> Result<Introspection> {
    if sessions::well_formed(token) {
        let Some(t) =
            store_sessions::find_refresh_token(state.store.pool(), &token_hash(token)).await?
        else {
            return Ok(Introspection::default());
        };
        let live = t.used_at.is_none()
            && t.token_expires_at > now
            && t.session_expires_at > now
            && crate::store::users::AccountStatus::parse(&t.user_status)
                == crate::store::users::AccountStatus::Active
            && t.client_id.as_deref() == Some(client.client_id.as_str())
            // The same query read the session: no second look-up.
            && t.session_revoked_at.is_none();
        if !live {
            return Ok(Introspection::default());
        }
        return Ok(Introspection {
            active: true,
            scope: t.scope,
            client_id: t.client_id,
            token_type: Some("refresh_token"),
            exp: Some(t.token_expires_at),
            sub: Some(t.user_id),
            iss: Some(state.settings.issuer.clone()),
            sid: Some(t.session_id),
            acr: crate::mfa::acr::claim(t.amr.as_deref()),
            amr: t.amr.map(|a| crate::sessions::amr_claim(Some(&a))),
            ..Default::default()
        });
    }
    if crate::tenants::api_keys::is_api_key(token) {
        return api_key(state, client, token, now).await;
    }
    let Ok(claims) = state.keys.verify_access_token_for(token, now, None).await else {
        return Ok(Introspection::default());
    };
    if !client.may_introspect_token(&claims.client_id, &claims.aud) {
        return Ok(Introspection::default());
    }
    if !super::revocation::is_live(state, &claims, now).await? {
        return Ok(Introspection::default());
    }
    let features = match &claims.tid {
        Some(tid) => crate::tenants::info(state, tid)
            .await?
            .map(|t| t.features()),
        None => None,
    };
    Ok(Introspection {
        active: true,
        tenant_roles: (claims.tid.is_some() && !claims.api_key)
            .then(|| claims.tenant_roles.clone()),
        permissions: claims.api_key.then(|| claims.permissions.clone()),
        tid: claims.tid,
        features,
        scope: claims.scope,
        client_id: Some(claims.client_id),
        token_type: Some("Bearer"),
        exp: Some(claims.exp),
        iat: Some(claims.iat),
        nbf: Some(claims.nbf),
        sub: Some(claims.sub),
        aud: Some(claims.aud),
        iss: Some(claims.iss),
        jti: Some(claims.jti),
        sid: claims.sid,
        amr: (!claims.amr.is_empty()).then_some(claims.amr),
        acr: claims.acr,
    })
}

/// A tenant API key (`tsk_…`): active while neither revoked nor expired and its tenant active.
/// Only resource-server clients (`may_introspect`) see keys, which belong to no client.
async fn api_key(state: &Core, client: &Client, token: &str, now: i64) -> Result<Introspection> {
    if !client.may_introspect {
        return Ok(Introspection::default());
    }
    let Some((key, features)) = crate::tenants::api_keys::introspect(state, token, now).await?
    else {
        return Ok(Introspection::default());
    };
    Ok(Introspection {
        active: true,
        token_type: Some("api_key"),
        sub: Some(key.id.clone()),
        iat: Some(key.created_at),
        exp: key.expires_at,
        iss: Some(state.settings.issuer.clone()),
        tid: Some(key.tenant_id.clone()),
        permissions: Some(
            key.permissions
                .split_whitespace()
                .map(String::from)
                .collect(),
        ),
        features: Some(features),
        ..Default::default()
    })
}

/// RFC 7009: revokes a refresh token (ending its whole family) or an access token (by `jti`)
/// that belongs to `client`. Unknown, invalid or other clients' tokens are ignored: the answer
/// is the same 200 either way.
pub async fn revoke(
    state: &Core,
    client: &Client,
    token: &str,
    ctx: &crate::context::RequestContext,
    now: i64,
) -> Result<()> {
    if sessions::well_formed(token) {
        if let Some(t) =
            store_sessions::find_refresh_token(state.store.pool(), &token_hash(token)).await?
            && t.client_id.as_deref() == Some(client.client_id.as_str())
        {
            sessions::revoke(
                &state.store,
                &state.sessions,
                &t.session_id,
                sessions::RevocationReason::RevokedByClient,
                ctx,
                now,
            )
            .await?;
        }
        return Ok(());
    }
    if let Ok(claims) = state.keys.verify_access_token_for(token, now, None).await
        && claims.client_id == client.client_id
    {
        state
            .revoked
            .revoke(&state.store, &claims.jti, claims.exp)
            .await?;
    }
    Ok(())
}
