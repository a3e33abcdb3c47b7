//! OpenID Connect on top of the OAuth server: discovery (OIDC Discovery §3, RFC 8414), the
//! browser (SSO) session of the hosted pages, UserInfo (OIDC Core §5.3) and RP-Initiated Logout.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::authz::{self, Permission, Principal};
use crate::config::Config;
use crate::context::RequestContext;
use crate::core::Core;
use crate::crypto::{new_token, token_hash};
use crate::error::Result;
use crate::oauth::authorize::BrowserSession;
use crate::oauth::clients::{self, Client};
use crate::oauth::scope;
use crate::store::oauth as store;
use crate::store::sessions::NewSession;
use crate::store::users;

/// The browser session cookie.
pub const SESSION_COOKIE: &str = "tessera_session";
const BROWSER_TOKEN_PREFIX: &str = "tsb_";

/// Claims UserInfo can return.
pub const CLAIMS: &[&str] = &[
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "amr",
    "acr",
    "nonce",
    "at_hash",
    "sid",
    "tid",
    "azp",
    "email",
    "email_verified",
    "name",
    "given_name",
    "family_name",
    "locale",
    "zoneinfo",
    "updated_at",
];

/// The provider metadata, serialised once at start-up. It lists exactly what is implemented.
pub fn discovery(config: &Config) -> Bytes {
    let iss = &config.issuer;
    let algs = [config.signing_alg.as_str()];
    let doc = json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/oauth2/authorize"),
        "token_endpoint": format!("{iss}/oauth2/token"),
        "userinfo_endpoint": format!("{iss}/oauth2/userinfo"),
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{iss}/oauth2/introspect"),
        "revocation_endpoint": format!("{iss}/oauth2/revoke"),
        "end_session_endpoint": format!("{iss}/oauth2/logout"),
        "scopes_supported": scope::OIDC_SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": clients::GrantType::names(),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": CLAIMS,
        "prompt_values_supported": ["none", "login", "consent"],
        // OIDC Discovery §3: the classes `acr` takes and `acr_values` asks for, weakest first.
        "acr_values_supported": crate::mfa::acr::Acr::ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
        "access_token_signing_alg_values_supported": algs,
    });
    Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
}

/// Starts a browser session after a sign-in on the hosted pages (`amr`: how the user proved who
/// they are; `via`: the upstream provider of a federated sign-in); returns it and the cookie token (stored only as a digest).
pub async fn start_browser_session(
    state: &Core,
    user_id: &str,
    amr: &str,
    via: Option<&str>,
    ctx: &RequestContext,
    now: i64,
) -> Result<(BrowserSession, String)> {
    let token = new_token(BROWSER_TOKEN_PREFIX);
    let id = uuid::Uuid::now_v7().to_string();
    let mut tx = state.store.begin().await?;
    crate::sessions::open_in(
        &mut tx,
        &NewSession {
            id: &id,
            user_id,
            now,
            expires_at: now + state.config.browser_session_ttl as i64,
            user_agent: ctx.user_agent.as_deref(),
            ip: ctx.ip.as_deref(),
            client_id: None,
            scope: None,
            audience: None,
            parent_id: None,
            auth_time: Some(now),
            browser_token_hash: Some(&token_hash(&token)),
            tenant_id: None,
            amr: Some(amr),
        },
        None,
    )
    .await?;
    let method = crate::sessions::login_method(amr, via);
    crate::sessions::record_login(&mut tx, user_id, &id, &method, ctx, now).await?;
    tx.commit().await?;
    Ok((
        BrowserSession {
            id,
            user_id: user_id.to_string(),
            auth_time: now,
            amr: Some(amr.to_string()),
        },
        token,
    ))
}

/// The live browser session a cookie token names.
pub async fn find_browser_session(
    state: &Core,
    token: &str,
    now: i64,
) -> Result<Option<BrowserSession>> {
    if !(token.starts_with(BROWSER_TOKEN_PREFIX) && token.len() == BROWSER_TOKEN_PREFIX.len() + 43)
    {
        return Ok(None);
    }
    let found = store::find_browser_session(state.store.pool(), &token_hash(token)).await?;
    Ok(
        found.and_then(|(id, user_id, auth_time, expires_at, revoked_at, amr)| {
            (revoked_at.is_none() && expires_at > now).then_some(BrowserSession {
                id,
                user_id,
                auth_time,
                amr,
            })
        }),
    )
}

/// Ends a browser session and the token families granted from it, except offline ones.
pub async fn end_browser_session(
    state: &Core,
    session: &BrowserSession,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    let children = store::online_children(state.store.pool(), &session.id).await?;
    crate::sessions::revoke(
        &state.store,
        &state.sessions,
        &session.id,
        crate::sessions::RevocationReason::Logout,
        ctx,
        now,
    )
    .await?;
    for id in children {
        crate::sessions::revoke(
            &state.store,
            &state.sessions,
            &id,
            crate::sessions::RevocationReason::Logout,
            ctx,
            now,
        )
        .await?;
    }
    Ok(())
}

/// OIDC Core §5.3: the claims the access token's scopes allow. Forbidden when the token was not
/// issued to a user for `openid` (RFC 6750 `insufficient_scope`); invalid when its user is gone.
pub async fn userinfo(state: &Core, principal: &Principal) -> Result<Value> {
    let caller = authz::require_user(principal, Permission::ReadUserInfo)?;
    let granted = caller.scopes.join(" ");
    let granted = granted.as_str();
    let Some(user) = users::find_by_id(state.store.pool(), &caller.user_id).await? else {
        return Err(crate::Error::invalid_token());
    };
    let mut out = json!({ "sub": user.id });
    if scope::contains(granted, "email") {
        out["email"] = json!(user.email);
        out["email_verified"] = json!(user.email_verified_at.is_some());
    }
    if scope::contains(granted, "profile")
        && let Some(p) = users::find_profile(state.store.pool(), &user.id).await?
    {
        for (k, v) in [
            ("name", p.display_name),
            ("given_name", p.given_name),
            ("family_name", p.family_name),
            ("locale", p.locale),
            ("zoneinfo", p.timezone),
        ] {
            if let Some(v) = v {
                out[k] = json!(v);
            }
        }
        out["updated_at"] = json!(p.updated_at);
    }
    Ok(out)
}

/// A validated RP-Initiated Logout request.
#[derive(Debug, Clone, Default)]
pub struct LogoutRequest {
    pub client: Option<Arc<Client>>,
    pub post_logout_redirect_uri: Option<String>,
    pub state: Option<String>,
}

/// OIDC RP-Initiated Logout §2-§3: `post_logout_redirect_uri` must be registered for the client
/// named by `id_token_hint` (or `client_id`); `Err` carries a message for the error page.
pub async fn validate_logout(
    state: &Core,
    params: &crate::oauth::Params,
    now: i64,
) -> Result<LogoutRequest, String> {
    let hinted = match params.get("id_token_hint") {
        Some(hint) => {
            let claims = state
                .keys
                .verify_id_token_hint(hint, now)
                .await
                .map_err(|_| "The logout request carries an invalid id_token_hint.".to_string())?;
            let aud = match &claims["aud"] {
                Value::String(s) => Some(s.clone()),
                Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_string),
                _ => None,
            };
            Some(aud.ok_or("The id_token_hint names no client.")?)
        }
        None => None,
    };
    let client_id = match (hinted, params.get("client_id")) {
        (Some(h), Some(c)) if h != c => {
            return Err("client_id does not match the id_token_hint.".into());
        }
        (Some(h), _) => Some(h),
        (None, c) => c.map(str::to_string),
    };
    let client = match &client_id {
        Some(id) => Some(
            clients::find_active(&state.store, &state.clients, id)
                .await
                .map_err(|_| "The logout request could not be checked.".to_string())?
                .ok_or("The application that sent you here is not registered.")?,
        ),
        None => None,
    };
    let post_logout_redirect_uri =
        match (params.get("post_logout_redirect_uri"), &client) {
            (Some(uri), Some(c)) if c.post_logout_redirect_uris.iter().any(|u| u == uri) => {
                Some(uri.to_string())
            }
            (Some(_), _) => return Err(
                "The application asked to send you to an address it has not registered for logout."
                    .into(),
            ),
            (None, _) => None,
        };
    Ok(LogoutRequest {
        client,
        post_logout_redirect_uri,
        state: params.get("state").map(str::to_string),
    })
}
