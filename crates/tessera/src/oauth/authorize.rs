//! The authorization endpoint's decisions (RFC 6749 §4.1, OIDC Core §3.1.2).
//!
//! [`validate`] checks a request: an unknown client or an unregistered redirect URI is shown on
//! an error page and never redirected to (RFC 6749 §4.1.2.1); every later problem is sent back
//! to the validated redirect URI with `error`, `state` and `iss` (RFC 9207). [`decide`] then says
//! what comes next: the login page, the consent page, or a redirect with a code.

use std::sync::Arc;

use super::clients::{self, Client, GrantType};
use super::{ErrorCode, OAuthError, Params, scope};
use crate::core::Core;
use crate::crypto::{new_token, token_hash};
use crate::error::Result;
use crate::store::oauth::{self as store, CodeRow};
use crate::store::users::{self, User};

pub const CODE_PREFIX: &str = "tac_";

/// A validated authorization request.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client: Arc<Client>,
    pub redirect_uri: String,
    pub state: Option<String>,
    /// Requested scopes, normalised (sorted, de-duplicated).
    pub scope: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub prompt: Vec<String>,
    pub max_age: Option<i64>,
    /// OIDC Core §3.1.2.1 `acr_values`: the weakest known class asked for (`None`: no known
    /// value was asked for).
    pub acr: Option<crate::mfa::acr::Acr>,
    pub login_hint: Option<String>,
    pub resource: Option<String>,
    /// The tenant the tokens are for (id or slug), when the client names one.
    pub tenant: Option<String>,
    /// The original parameters, carried through the login and consent pages.
    pub params: Params,
}

/// Why a request was refused.
#[derive(Debug)]
pub enum Refusal {
    /// The client or redirect URI cannot be trusted: show a page, never redirect.
    Page(String),
    /// Redirect back to the client with an error.
    Redirect(String),
}

impl From<crate::Error> for Refusal {
    fn from(e: crate::Error) -> Self {
        Self::Page(OAuthError::from(e).description.into_owned())
    }
}

/// The redirect URI with `params` appended to its query.
pub fn redirect_to(uri: &str, params: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{}", s.finish())
}

fn error_redirect(issuer: &str, redirect_uri: &str, state: Option<&str>, e: &OAuthError) -> String {
    let mut p = vec![
        ("error", e.code.as_str()),
        ("error_description", e.description.as_ref()),
        ("iss", issuer),
    ];
    if let Some(s) = state {
        p.push(("state", s));
    }
    redirect_to(redirect_uri, &p)
}

/// Validates an authorization request.
pub async fn validate(state: &Core, params: Params) -> Result<AuthorizationRequest, Refusal> {
    let client_id = params.get("client_id").ok_or_else(|| {
        Refusal::Page("The request names no client (client_id is missing).".into())
    })?;
    let client = clients::find_active(&state.store, &state.clients, client_id)
        .await?
        .ok_or_else(|| {
            Refusal::Page(
                "The application that sent you here is not registered or has been disabled.".into(),
            )
        })?;
    let redirect_uri = match params.get("redirect_uri") {
        Some(uri) if client.has_redirect_uri(uri) => uri.to_string(),
        Some(_) => {
            return Err(Refusal::Page(
                "The application asked to send you to an address it has not registered.".into(),
            ));
        }
        // RFC 6749 §3.1.2.3: optional only when exactly one is registered (OIDC requires it).
        None if client.redirect_uris.len() == 1
            && params
                .get("scope")
                .is_none_or(|s| !scope::contains(s, "openid")) =>
        {
            client.redirect_uris[0].clone()
        }
        None => return Err(Refusal::Page("The request has no redirect_uri.".into())),
    };
    let state_param = params.get("state").map(str::to_string);
    let fail = |e: OAuthError| {
        Refusal::Redirect(error_redirect(
            &state.settings.issuer,
            &redirect_uri,
            state_param.as_deref(),
            &e,
        ))
    };

    match params.get("response_type") {
        Some("code") => {}
        Some(_) => {
            return Err(fail(OAuthError::new(
                ErrorCode::UnsupportedResponseType,
                "only response_type=code is supported",
            )));
        }
        None => {
            return Err(fail(OAuthError::invalid_request(
                "missing parameter response_type",
            )));
        }
    }
    // OAuth 2.0 Multiple Response Type Encoding Practices §2.1: only `query` is implemented,
    // so any other mode is refused rather than silently answered in the query.
    match params.get("response_mode") {
        None | Some("query") => {}
        Some(_) => {
            return Err(fail(OAuthError::invalid_request(
                "response_mode is not supported; only query is",
            )));
        }
    }
    if !client.allows_grant(GrantType::AuthorizationCode) {
        return Err(fail(OAuthError::unauthorized_client(
            "the client may not use the authorization code grant",
        )));
    }
    if params.get("request").is_some() || params.get("request_uri").is_some() {
        return Err(fail(OAuthError::new(
            ErrorCode::RequestNotSupported,
            "request objects are not supported",
        )));
    }
    let asked = params.get("scope").unwrap_or("openid");
    let Some(tokens) = scope::parse(asked) else {
        return Err(fail(OAuthError::invalid_scope("malformed scope")));
    };
    let scope = scope::normalize(&tokens);
    if !client.allows_scope(&scope) {
        return Err(fail(OAuthError::invalid_scope(
            "the client may not request these scopes",
        )));
    }
    // PKCE (RFC 7636, RFC 9700 §2.1.1): S256 only; required for public clients.
    let code_challenge = match (
        params.get("code_challenge"),
        params.get("code_challenge_method"),
    ) {
        (Some(c), Some("S256")) if super::pkce::well_formed(c) => Some(c.to_string()),
        (Some(_), Some("S256")) => {
            return Err(fail(OAuthError::invalid_request(
                "malformed code_challenge",
            )));
        }
        (Some(_), Some(_) | None) => {
            return Err(fail(OAuthError::invalid_request(
                "code_challenge_method must be S256 (plain is not accepted)",
            )));
        }
        (None, Some(_)) => {
            return Err(fail(OAuthError::invalid_request(
                "code_challenge_method without code_challenge",
            )));
        }
        (None, None) if client.public => {
            return Err(fail(OAuthError::invalid_request(
                "PKCE with S256 is required for public clients",
            )));
        }
        (None, None) => None,
    };
    let prompt: Vec<String> = params
        .get("prompt")
        .map(|p| {
            p.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if prompt
        .iter()
        .any(|p| !matches!(p.as_str(), "none" | "login" | "consent"))
    {
        return Err(fail(OAuthError::invalid_request(
            "prompt may contain only none, login and consent",
        )));
    }
    if prompt.iter().any(|p| p == "none") && prompt.len() > 1 {
        return Err(fail(OAuthError::invalid_request(
            "prompt=none cannot be combined with other values",
        )));
    }
    let max_age = match params.get("max_age") {
        Some(m) => Some(m.parse::<i64>().ok().filter(|m| *m >= 0).ok_or_else(|| {
            fail(OAuthError::invalid_request(
                "max_age must be a non-negative integer",
            ))
        })?),
        None => None,
    };
    let acr = match params.get("acr_values") {
        Some(v) if v.len() > 1024 => {
            return Err(fail(OAuthError::invalid_request("acr_values too long")));
        }
        Some(v) => crate::mfa::acr::Acr::needed(v),
        None => None,
    };
    let resource = match params.get("resource") {
        Some(r) if client.allows_resource(r) => Some(r.to_string()),
        Some(_) => {
            return Err(fail(OAuthError::new(
                ErrorCode::InvalidTarget,
                "the resource is not registered for this client",
            )));
        }
        None => None,
    };
    let nonce = params.get("nonce").map(str::to_string);
    if nonce.as_ref().is_some_and(|n| n.len() > 512)
        || state_param.as_ref().is_some_and(|s| s.len() > 2048)
    {
        return Err(fail(OAuthError::invalid_request("nonce or state too long")));
    }
    let tenant = params.get("tenant").map(str::to_string);
    if tenant
        .as_ref()
        .is_some_and(|t| t.is_empty() || t.len() > 320)
    {
        return Err(fail(OAuthError::invalid_request(
            "tenant must be a tenant id or slug",
        )));
    }
    Ok(AuthorizationRequest {
        login_hint: params
            .get("login_hint")
            .map(|h| h.chars().take(254).collect()),
        client,
        redirect_uri,
        state: state_param,
        scope,
        nonce,
        code_challenge,
        prompt,
        max_age,
        acr,
        resource,
        tenant,
        params,
    })
}

/// The browser (SSO) session of the hosted pages.
#[derive(Debug, Clone)]
pub struct BrowserSession {
    pub id: String,
    pub user_id: String,
    pub auth_time: i64,
    /// How the user signed in (RFC 8176, space-separated).
    pub amr: Option<String>,
}

/// What the user did on a page in this round trip.
#[derive(Debug, Clone, Default)]
pub struct Interaction {
    /// The user who has just entered their password (read for that check a moment ago: the
    /// decision does not read them again).
    pub signed_in: Option<User>,
    /// The user has just answered the consent page.
    pub consent: Option<bool>,
}

/// What to show or where to go next.
#[derive(Debug)]
pub enum Next {
    Login(AuthorizationRequest),
    Consent(AuthorizationRequest, User),
    /// The request asks for the scope `tenant`, names none, and the user is in several: they
    /// pick one (each choice is this request again with `tenant`).
    PickTenant(AuthorizationRequest, Vec<crate::store::tenants::TenantRow>),
    Redirect(String),
}

/// Decides the next step of a validated request for the browser session (if any).
pub async fn decide(
    state: &Core,
    req: AuthorizationRequest,
    browser: Option<&BrowserSession>,
    interaction: Interaction,
    ip: Option<&str>,
    now: i64,
) -> Result<Next> {
    let issuer = &state.settings.issuer;
    let fail = |e: OAuthError| {
        Next::Redirect(error_redirect(
            issuer,
            &req.redirect_uri,
            req.state.as_deref(),
            &e,
        ))
    };
    let has = |p: &str| req.prompt.iter().any(|x| x == p);
    let fresh_login = interaction.signed_in.is_some();
    let user = match (interaction.signed_in, browser) {
        (Some(u), Some(b)) if u.id == b.user_id => Some(u).filter(User::is_active),
        (_, Some(b)) => users::find_by_id(state.store.pool(), &b.user_id)
            .await?
            .filter(User::is_active),
        (_, None) => None,
    };
    let stale = browser.is_some_and(|b| req.max_age.is_some_and(|m| now - b.auth_time > m));
    // OIDC Core §3.1.2.1 / RFC 9470 §4: a session weaker than the `acr_values` asked for signs
    // in again (the hosted login then asks for every factor the account has). After that sign-in
    // the code carries what was achieved: `acr` is a voluntary claim, and the client checks it.
    // A class the client requires (`require_acr`) is asked for too, and is not voluntary.
    let needed = [req.acr, req.client.require_acr]
        .into_iter()
        .flatten()
        .max_by_key(|a| a.rank());
    let class_of =
        |b: &BrowserSession| crate::mfa::acr::Acr::of_amr(b.amr.as_deref().unwrap_or_default());
    let weak = browser.is_some_and(|b| needed.is_some_and(|n| !class_of(b).satisfies(n)));
    let (Some(user), Some(browser)) = (user, browser) else {
        return Ok(if has("none") {
            fail(OAuthError::new(
                ErrorCode::LoginRequired,
                "the user is not logged in",
            ))
        } else {
            Next::Login(req)
        });
    };
    if !fresh_login && (has("login") || stale || weak) {
        return Ok(if has("none") {
            fail(OAuthError::new(
                ErrorCode::LoginRequired,
                "the user must log in again",
            ))
        } else {
            Next::Login(req)
        });
    }
    // Signed in just now and still short of what the client requires: the account cannot
    // reach it (no such factor), and the client said it will not take less.
    if let Some(required) = req.client.require_acr
        && !class_of(browser).satisfies(required)
    {
        return Ok(fail(OAuthError::new(
            ErrorCode::UnmetAuthenticationRequirements,
            "this application requires a stronger sign-in than the account can give",
        )));
    }
    match interaction.consent {
        Some(false) => {
            return Ok(fail(OAuthError::new(
                ErrorCode::AccessDenied,
                "the user denied the request",
            )));
        }
        Some(true) => {
            let mut tx = state.store.begin().await?;
            store::save_consent(&mut tx, &user.id, &req.client.client_id, &req.scope, now).await?;
            tx.commit().await?;
        }
        None => {
            let remembered =
                store::find_consent(state.store.pool(), &user.id, &req.client.client_id).await?;
            let covered = remembered.is_some_and(|granted| scope::is_subset(&req.scope, &granted));
            if !covered || has("consent") {
                return Ok(if has("none") {
                    fail(OAuthError::new(
                        ErrorCode::ConsentRequired,
                        "the user has not consented",
                    ))
                } else {
                    Next::Consent(req, user)
                });
            }
        }
    }
    // The tokens' tenant: the one named (it must take the user, from this address), else a
    // pick on the hosted page for `scope=tenant`, else the user's default (the last used, else
    // the personal one; none if neither takes them).
    if req.tenant.is_none() && scope::contains(&req.scope, scope::TENANT) && !has("none") {
        let mine: Vec<_> = crate::store::tenants::of_user(state.store.pool(), &user.id)
            .await?
            .into_iter()
            .filter(|t| t.status == crate::tenants::TenantStatus::Active.as_str())
            .collect();
        if mine.len() > 1 {
            return Ok(Next::PickTenant(req, mine));
        }
    }
    let amr = Some(browser.amr.as_deref().unwrap_or_default());
    let wanted = req.tenant.as_deref();
    let tenant_id = match crate::tenants::choose(state, &user, wanted, ip, amr).await {
        Ok((tenant_id, _)) => Some(tenant_id),
        Err(crate::Error::Forbidden { message, .. }) if req.tenant.is_some() => {
            return Ok(fail(OAuthError::new(ErrorCode::AccessDenied, message)));
        }
        Err(crate::Error::Forbidden { .. }) => None,
        Err(e) => return Err(e),
    };
    if let (Some(t), Some(_)) = (&tenant_id, &req.tenant) {
        crate::tenants::remember(state, &user.id, t).await?;
    }
    let code = new_token(CODE_PREFIX);
    let row = CodeRow {
        code_hash: token_hash(&code),
        client_id: req.client.client_id.clone(),
        user_id: user.id.clone(),
        browser_session_id: browser.id.clone(),
        redirect_uri: req.redirect_uri.clone(),
        scope: req.scope.clone(),
        resource: req.resource.clone(),
        nonce: req.nonce.clone(),
        code_challenge: req.code_challenge.clone(),
        auth_time: browser.auth_time,
        created_at: now,
        expires_at: now + state.config.authorization_code_ttl as i64,
        used_at: None,
        token_session_id: None,
        tenant_id,
        amr: browser.amr.clone(),
    };
    store::insert_code(state.store.writer(), &row).await?;
    let mut p = vec![("code", code.as_str()), ("iss", issuer.as_str())];
    if let Some(s) = &req.state {
        p.push(("state", s));
    }
    Ok(Next::Redirect(redirect_to(&req.redirect_uri, &p)))
}
