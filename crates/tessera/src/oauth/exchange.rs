//! RFC 8693 token exchange at the token endpoint
//! (`grant_type=urn:ietf:params:oauth:grant-type:token-exchange`).
//!
//! Two subject tokens are taken:
//! - an access token Tessera issued **to the requesting client** for a user: the new access
//!   token is for the same user and token family (`sid`), in the tenant named by `tenant`
//!   (default: the subject token's), with the same or a narrower scope, and never outlives the
//!   subject token;
//! - a tenant API key (`tsk_…`): the new token is a short-lived JWT for the key (`sub` = the
//!   key's id, `tid`, `permissions`, `api_key: true`), which resource servers verify with the
//!   JWKS and which stands only while the key does.
//!
//! No refresh token is issued, and delegation (`actor_token`, §2.1) is not offered.

use super::clients::Client;
use super::token::TokenResponse;
use super::{OAuthError, Params, scope};
use crate::context::RequestContext;
use crate::core::Core;
use crate::keys::jwt::AccessClaims;

/// RFC 8693 §3 token type identifiers.
pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Tessera's own identifier for a tenant API key as a subject token (an API key is also
/// accepted as `access_token`, which it is on Tessera's API).
pub const API_KEY: &str = "urn:tessera:params:oauth:token-type:api_key";

/// The longest life of a JWT exchanged for an API key, in seconds (also capped by the access
/// token lifetime and the key's own expiry).
pub const API_KEY_TOKEN_TTL: i64 = 300;

pub async fn exchange(
    state: &Core,
    client: &Client,
    params: &Params,
    ctx: &RequestContext,
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    let subject = params.require("subject_token")?;
    let subject_type = params.require("subject_token_type")?;
    // §2.1: `actor_token` asks for delegation, which Tessera does not issue.
    if params.get("actor_token").is_some() || params.get("actor_token_type").is_some() {
        return Err(OAuthError::invalid_request(
            "delegation (actor_token) is not supported",
        ));
    }
    // §2.1 `requested_token_type`: an access token, which is a JWT here.
    let issued_type = match params.get("requested_token_type") {
        None | Some(ACCESS_TOKEN) => ACCESS_TOKEN,
        Some(JWT) => JWT,
        Some(_) => {
            return Err(OAuthError::invalid_request(
                "requested_token_type must be an access token or a JWT",
            ));
        }
    };
    let audience = target(client, params)?;
    let is_key = crate::tenants::api_keys::is_api_key(subject);
    let claims = match subject_type {
        API_KEY | ACCESS_TOKEN if is_key => {
            for_api_key(state, client, subject, params, audience, ctx, now).await?
        }
        ACCESS_TOKEN | JWT if !is_key => {
            for_user_token(state, client, subject, params, audience, ctx, now).await?
        }
        API_KEY | ACCESS_TOKEN | JWT => return Err(invalid_subject()),
        _ => {
            return Err(OAuthError::invalid_request(
                "subject_token_type is not supported",
            ));
        }
    };
    let access_token = state
        .keys
        .sign_access_token(&claims)
        .map_err(|e| OAuthError::from(crate::Error::Internal(e)))?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: claims.exp - now,
        refresh_token: None,
        scope: claims.scope.clone(),
        id_token: None,
        issued_token_type: Some(issued_type),
    })
}

/// §2.2.2: a subject token that is invalid, or unacceptable by policy, is `invalid_request`.
fn invalid_subject() -> OAuthError {
    OAuthError::invalid_request("the subject token is invalid, expired, revoked or not yours")
}

/// §2.1 `resource` (RFC 8707) or `audience`: one target, registered for the client.
fn target(client: &Client, params: &Params) -> Result<Option<String>, OAuthError> {
    let resource = super::token::resource(client, params)?;
    let audience = match params.get("audience") {
        Some(a) if client.allows_resource(a) => Some(a.to_string()),
        Some(_) => {
            return Err(OAuthError::new(
                super::ErrorCode::InvalidTarget,
                "the audience is not registered for this client",
            ));
        }
        None => None,
    };
    match (resource, audience) {
        (Some(r), Some(a)) if r != a => Err(OAuthError::new(
            super::ErrorCode::InvalidTarget,
            "resource and audience name different targets",
        )),
        (r, a) => Ok(r.or(a)),
    }
}

/// A user's access token, issued to this client, for another tenant or a narrower grant.
async fn for_user_token(
    state: &Core,
    client: &Client,
    token: &str,
    params: &Params,
    audience: Option<String>,
    ctx: &RequestContext,
    now: i64,
) -> Result<AccessClaims, OAuthError> {
    let subject = state
        .keys
        .verify_access_token_for(token, now, None)
        .await
        .map_err(|_| invalid_subject())?;
    if subject.client_id != client.client_id || subject.sid.is_none() || subject.api_key {
        return Err(invalid_subject());
    }
    if !super::revocation::is_live(state, &subject, now).await? {
        return Err(invalid_subject());
    }
    let scope = match params.get("scope") {
        None => subject.scope.clone(),
        Some(s) => {
            let wanted =
                scope::parse(s).ok_or_else(|| OAuthError::invalid_scope("malformed scope"))?;
            if !scope::is_subset(s, subject.scope.as_deref().unwrap_or("")) {
                return Err(OAuthError::invalid_scope(
                    "the scope exceeds the subject token's",
                ));
            }
            Some(scope::normalize(&wanted))
        }
    };
    // The tenant named (id or slug), else the subject token's; the user must be a member now,
    // from this address.
    let wanted = params.get("tenant").or(subject.tid.as_deref());
    let (tid, tenant_roles) = match wanted {
        Some(t) => {
            // An API key's token is the tenant's own, not a person's sign-in.
            let amr = subject.amr.join(" ");
            let amr = (!subject.api_key).then_some(amr.as_str());
            let (id, roles) =
                crate::tenants::choose_named(state, &subject.sub, t, ctx.ip.as_deref(), amr)
                    .await?;
            (Some(id), roles)
        }
        None => (None, Vec::new()),
    };
    Ok(AccessClaims {
        iss: state.settings.issuer.clone(),
        aud: audience.unwrap_or_else(|| subject.aud.clone()),
        // Never longer than the token it was exchanged for.
        exp: (now + state.settings.access_ttl).min(subject.exp),
        iat: now,
        nbf: now,
        jti: uuid::Uuid::now_v7().to_string(),
        client_id: client.client_id.clone(),
        scope,
        // Roles only ever reach first-party clients' tokens (see `crate::authz`).
        roles: if client.first_party {
            subject.roles.clone()
        } else {
            Vec::new()
        },
        tid,
        tenant_roles,
        api_key: false,
        permissions: Vec::new(),
        ..subject
    })
}

/// A tenant API key for a short-lived JWT: checked exactly as on Tessera's API (live key of a
/// live tenant, allowed address, the tenant's request rate). `scope` narrows the permissions.
async fn for_api_key(
    state: &Core,
    client: &Client,
    token: &str,
    params: &Params,
    audience: Option<String>,
    ctx: &RequestContext,
    now: i64,
) -> Result<AccessClaims, OAuthError> {
    let key =
        match crate::tenants::api_keys::authenticate(state, token, ctx.ip.as_deref(), now).await {
            Ok(key) => key,
            Err(crate::Error::Unauthenticated { .. }) => return Err(invalid_subject()),
            Err(e) => return Err(e.into()),
        };
    let permissions = match params.get("scope") {
        None => key.permissions.clone(),
        Some(s) => {
            let wanted =
                scope::parse(s).ok_or_else(|| OAuthError::invalid_scope("malformed scope"))?;
            if !wanted
                .iter()
                .all(|w| key.permissions.iter().any(|p| p == w))
            {
                return Err(OAuthError::invalid_scope(
                    "the scope names permissions the API key does not have",
                ));
            }
            wanted.iter().map(|w| (*w).to_string()).collect()
        }
    };
    // The key's row, from the cache `authenticate` just filled.
    let expires_at = crate::tenants::api_keys::live_key(state, token, now)
        .await?
        .and_then(|row| row.expires_at);
    let exp = (now + state.settings.access_ttl.min(API_KEY_TOKEN_TTL))
        .min(expires_at.unwrap_or(i64::MAX));
    Ok(AccessClaims {
        iss: state.settings.issuer.clone(),
        sub: key.key_id,
        aud: audience.unwrap_or_else(|| state.settings.audience.clone()),
        exp,
        iat: now,
        nbf: now,
        jti: uuid::Uuid::now_v7().to_string(),
        sid: None,
        client_id: client.client_id.clone(),
        scope: None,
        roles: Vec::new(),
        email_verified: None,
        tid: Some(key.tenant_id),
        tenant_roles: Vec::new(),
        api_key: true,
        permissions,
        // No user signed in: a key is not an authentication method of RFC 8176.
        amr: Vec::new(),
        acr: None,
    })
}
