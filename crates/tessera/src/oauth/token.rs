//! The token endpoint's grants (RFC 6749 §4.1.3, §4.3, §4.4, §6) and the ID token
//! (OIDC Core §2, §3.1.3.6).

use aws_lc_rs::digest;
use serde::Serialize;

use super::clients::{Client, GrantType};
use super::{ErrorCode, OAuthError, Params, scope};
use crate::authz::Role;
use crate::context::RequestContext;
use crate::core::Core;
use crate::crypto::{b64url, token_hash};
use crate::keys::{Alg, jwt};
use crate::sessions::{self, Grant, RefreshRequest, Subject};
use crate::store::oauth as store;
use crate::store::sessions::NewSession;
use crate::store::users::{self, User};

/// RFC 6749 §5.1.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// RFC 8693 §2.2.1: what a token exchange issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
}

/// Runs the grant named by `grant_type` for an authenticated client.
pub async fn exchange(
    state: &Core,
    client: &Client,
    params: &Params,
    ctx: &RequestContext,
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    let Ok(grant_type) = params.require("grant_type")?.parse::<GrantType>() else {
        return Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "the grant type is not supported",
        ));
    };
    if !client.allows_grant(grant_type) {
        return Err(OAuthError::unauthorized_client(format!(
            "the client may not use the {} grant",
            grant_type.as_str()
        )));
    }
    let issued = match grant_type {
        GrantType::AuthorizationCode => authorization_code(state, client, params, ctx, now).await,
        GrantType::RefreshToken => refresh(state, client, params, ctx, now).await,
        GrantType::ClientCredentials => client_credentials(state, client, params, now),
        GrantType::Password => password(state, client, params, ctx, now).await,
        GrantType::TokenExchange => {
            super::exchange::exchange(state, client, params, ctx, now).await
        }
    };
    if issued.is_ok() {
        crate::metrics::token_issued(grant_type.metric_label());
    }
    issued
}

/// RFC 6749 §4.1.3 with PKCE (RFC 7636 §4.6). A code is single-use; presenting it again revokes
/// the tokens issued from it (RFC 6749 §4.1.2).
async fn authorization_code(
    state: &Core,
    client: &Client,
    params: &Params,
    ctx: &RequestContext,
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    let code = params.require("code")?;
    let bad = || OAuthError::invalid_grant("the authorization code is invalid, expired or used");
    if !(code.len() == super::authorize::CODE_PREFIX.len() + 43
        && code.starts_with(super::authorize::CODE_PREFIX))
    {
        return Err(bad());
    }
    let hash = token_hash(code);
    // The token family's id is chosen first: the redemption links the code to it (one
    // statement, see `redeem_code`), and `start_family` opens it in the same transaction.
    let session_id = sessions::new_session_id();
    let mut tx = state.store.begin().await?;
    let Some(row) = store::redeem_code(&mut tx, &hash, &client.client_id, &session_id, now).await?
    else {
        // Unknown, another client's, expired, or used. Read it inside this transaction: a
        // redemption racing this one has committed by now (the UPDATE above waited for it). A
        // used code presented again by its client is a replay (RFC 6749 §4.1.2): the token
        // family of the first redemption is revoked too.
        let first = store::find_code(&mut *tx, &hash).await?;
        let replayed = first
            .filter(|r| r.client_id == client.client_id && r.used_at.is_some())
            .and_then(|r| r.token_session_id);
        if let Some(sid) = replayed.as_ref() {
            sessions::revoke_in(
                &mut tx,
                sid,
                sessions::RevocationReason::AuthorizationCodeReuse,
                ctx,
                now,
            )
            .await?;
            let entry = crate::audit::Entry::failure(
                crate::audit::Actor::Client(&client.client_id),
                crate::audit::action::AUTHORIZATION_CODE_REUSE,
                "authorization_code_reuse",
            )
            .target("session", sid);
            crate::audit::record(&mut *tx, ctx, &entry, now).await?;
            tx.commit().await?;
            state.sessions.mark_revoked(sid).await;
            tracing::warn!(client_id = %client.client_id, "authorization code reuse: its tokens were revoked");
        }
        return Err(bad());
    };
    match params.get("redirect_uri") {
        Some(uri) if uri == row.redirect_uri => {}
        None if client.redirect_uris.len() == 1 && client.redirect_uris[0] == row.redirect_uri => {}
        _ => {
            return Err(OAuthError::invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
    }
    match (&row.code_challenge, params.get("code_verifier")) {
        (Some(challenge), Some(verifier)) if super::pkce::verify_s256(verifier, challenge) => {}
        (None, None) => {}
        _ => return Err(OAuthError::invalid_grant("PKCE verification failed")),
    }
    if let Some(r) = params.get("resource")
        && row.resource.as_deref() != Some(r)
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            "the resource differs from the authorized one",
        ));
    }
    let user = users::find_by_id(&mut *tx, &row.user_id)
        .await?
        .filter(User::is_active)
        .ok_or_else(bad)?;
    let offline = scope::contains(&row.scope, "offline_access")
        && client.allows_grant(GrantType::RefreshToken);
    let family = Family {
        parent_id: Some(&row.browser_session_id),
        auth_time: row.auth_time,
        amr: row.amr.as_deref(),
        refresh: offline,
        tenant_id: row.tenant_id.as_deref(),
    };
    let grant = Grant {
        client_id: Some(&client.client_id),
        scope: Some(&row.scope),
        audience: row.resource.as_deref(),
    };
    let roles = roles_for(&mut tx, client, &user).await?;
    let issued = start_family(
        state, &mut tx, session_id, &user, roles, grant, family, ctx, now,
    )
    .await?;
    tx.commit().await?;
    let id_token = scope::contains(&row.scope, "openid").then(|| IdTokenInput {
        user: &user,
        client_id: &client.client_id,
        nonce: row.nonce.as_deref(),
        auth_time: row.auth_time,
        sid: &row.browser_session_id,
    });
    respond(state, issued, &row.scope, id_token, now)
}

/// RFC 6749 §6: rotation, reuse detection and family revocation as for first-party sessions.
async fn refresh(
    state: &Core,
    client: &Client,
    params: &Params,
    ctx: &RequestContext,
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    let token = params.require("refresh_token")?;
    let request = RefreshRequest {
        client_id: Some(&client.client_id),
        scope: params.get("scope"),
        first_party: client.first_party,
        reuse_grace: client.refresh_reuse_grace,
        tenant: params.get("tenant"),
    };
    let pair = sessions::refresh(state, token, request, ctx, now).await?;
    Ok(TokenResponse {
        access_token: pair.access_token,
        token_type: "Bearer",
        expires_in: pair.expires_in,
        refresh_token: Some(pair.refresh_token),
        scope: params.get("scope").map(str::to_string),
        id_token: None,
        issued_token_type: None,
    })
}

/// RFC 6749 §4.4: a token for the client itself, within its registered scopes.
fn client_credentials(
    state: &Core,
    client: &Client,
    params: &Params,
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    if client.public {
        return Err(OAuthError::unauthorized_client(
            "a public client cannot use client_credentials",
        ));
    }
    let scope = match params.get("scope") {
        Some(s) => {
            let tokens =
                scope::parse(s).ok_or_else(|| OAuthError::invalid_scope("malformed scope"))?;
            if tokens.iter().any(|t| scope::OIDC_SCOPES.contains(t)) || !client.allows_scope(s) {
                return Err(OAuthError::invalid_scope(
                    "the scope is not registered for this client or needs a user",
                ));
            }
            Some(scope::normalize(&tokens))
        }
        None => {
            let own: Vec<&str> = client
                .scopes
                .iter()
                .map(String::as_str)
                .filter(|s| !scope::OIDC_SCOPES.contains(s))
                .collect();
            (!own.is_empty()).then(|| scope::normalize(&own))
        }
    };
    let audience = resource(client, params)?;
    let subject = Subject {
        user_id: &client.client_id,
        roles: Vec::new(),
        email_verified: false,
        tenant_id: None,
        tenant_roles: Vec::new(),
        amr: None,
    };
    let grant = Grant {
        client_id: Some(&client.client_id),
        scope: scope.as_deref(),
        audience: audience.as_deref(),
    };
    let mut claims = sessions::access_claims(&state.settings, &subject, None, grant, now);
    claims.email_verified = None;
    let access_token = state
        .keys
        .sign_access_token(&claims)
        .map_err(|e| crate::Error::Internal(e).into_oauth())?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: state.settings.access_ttl,
        refresh_token: None,
        scope,
        id_token: None,
        issued_token_type: None,
    })
}

/// RFC 6749 §4.3, only for clients explicitly registered for it.
async fn password(
    state: &Core,
    client: &Client,
    params: &Params,
    ctx: &RequestContext,
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    let username = params.require("username")?;
    let password = params.require("password")?;
    let scope = match params.get("scope") {
        Some(s) => {
            let tokens =
                scope::parse(s).ok_or_else(|| OAuthError::invalid_scope("malformed scope"))?;
            if !client.allows_scope(s) {
                return Err(OAuthError::invalid_scope(
                    "the client may not request these scopes",
                ));
            }
            scope::normalize(&tokens)
        }
        None => "openid".to_string(),
    };
    let audience = resource(client, params)?;
    // A password is one factor: a client that requires more never gets tokens from one.
    if client
        .require_acr
        .is_some_and(|acr| !crate::mfa::acr::Acr::Pwd.satisfies(acr))
    {
        return Err(OAuthError::invalid_grant(
            "this client requires a sign-in with more than a password: use the authorization endpoint",
        ));
    }
    let user = match crate::accounts::authenticate(state, username, password, None, ctx, now).await
    {
        Ok(u) => u,
        Err(crate::Error::Unauthenticated { .. } | crate::Error::Validation(_)) => {
            return Err(OAuthError::invalid_grant("invalid username or password"));
        }
        Err(e) => return Err(e.into()),
    };
    // The tenant as at the JSON login: the one named, else the last used, else the personal
    // one; a named tenant that does not take the user (or this address) is refused.
    let wanted = params.get("tenant");
    let amr = Some(crate::mfa::AMR_PASSWORD);
    let tenant_id = match crate::tenants::choose(state, &user, wanted, ctx.ip.as_deref(), amr).await
    {
        Ok((tenant_id, _)) => Some(tenant_id),
        Err(crate::Error::Forbidden { .. }) if wanted.is_none() => None,
        Err(e) => return Err(e.into()),
    };
    let mut tx = state.store.begin().await?;
    let family = Family {
        parent_id: None,
        auth_time: now,
        amr: Some(crate::mfa::AMR_PASSWORD),
        refresh: client.allows_grant(GrantType::RefreshToken),
        tenant_id: tenant_id.as_deref(),
    };
    let grant = Grant {
        client_id: Some(&client.client_id),
        scope: Some(&scope),
        audience: audience.as_deref(),
    };
    let roles = roles_for(&mut tx, client, &user).await?;
    let session_id = sessions::new_session_id();
    let issued = start_family(
        state, &mut tx, session_id, &user, roles, grant, family, ctx, now,
    )
    .await?;
    let method = "password";
    sessions::record_login(&mut tx, &user.id, &issued.session_id, method, ctx, now).await?;
    tx.commit().await?;
    let sid = issued.session_id.clone();
    let id_token = scope::contains(&scope, "openid").then(|| IdTokenInput {
        user: &user,
        client_id: &client.client_id,
        nonce: None,
        auth_time: now,
        sid: &sid,
    });
    respond(state, issued, &scope, id_token, now)
}

/// RFC 8707 at the token endpoint: the resource must be registered for the client.
pub(super) fn resource(client: &Client, params: &Params) -> Result<Option<String>, OAuthError> {
    match params.get("resource") {
        Some(r) if client.allows_resource(r) => Ok(Some(r.to_string())),
        Some(_) => Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            "the resource is not registered for this client",
        )),
        None => Ok(None),
    }
}

struct Family<'a> {
    parent_id: Option<&'a str>,
    auth_time: i64,
    /// How the user signed in (RFC 8176, space-separated).
    amr: Option<&'a str>,
    refresh: bool,
    /// The tenant the family is scoped to (`tid`); the user must still be a member.
    tenant_id: Option<&'a str>,
}

/// A token family just created; its access token is signed after the commit.
struct Issued {
    session_id: String,
    claims: crate::keys::jwt::AccessClaims,
    refresh_token: Option<String>,
}

/// The roles a token for `user` carries: none unless the client is first-party (see
/// [`crate::authz`]).
async fn roles_for(
    tx: &mut crate::store::Tx,
    client: &Client,
    user: &User,
) -> Result<Vec<Role>, OAuthError> {
    if !client.first_party {
        return Ok(Vec::new());
    }
    Ok(crate::store::roles::roles_of(&mut **tx, &user.id).await?)
}

/// Creates a token family (a session row) for a user and client, with its first tokens.
#[expect(
    clippy::too_many_arguments,
    reason = "who, with which roles, under which grant, in which family, for which request"
)]
async fn start_family(
    state: &Core,
    tx: &mut crate::store::Tx,
    session_id: String,
    user: &User,
    roles: Vec<Role>,
    grant: Grant<'_>,
    family: Family<'_>,
    ctx: &RequestContext,
    now: i64,
) -> Result<Issued, OAuthError> {
    let settings = &state.settings;
    let expires_at = if family.refresh {
        now + settings.max_age
    } else {
        now + settings.access_ttl
    };
    let refresh_expires = family
        .refresh
        .then(|| (now + settings.refresh_ttl).min(expires_at));
    let refresh_token = sessions::open_in(
        tx,
        &NewSession {
            id: &session_id,
            user_id: &user.id,
            now,
            expires_at,
            user_agent: ctx.user_agent.as_deref(),
            ip: ctx.ip.as_deref(),
            client_id: grant.client_id,
            scope: grant.scope,
            audience: grant.audience,
            parent_id: family.parent_id,
            auth_time: Some(family.auth_time),
            browser_token_hash: None,
            tenant_id: family.tenant_id,
            amr: family.amr,
        },
        refresh_expires,
    )
    .await?;
    let tenant_roles = match family.tenant_id {
        Some(tid) => crate::tenants::roles_in(state, tx, tid, &user.id)
            .await?
            .ok_or_else(|| OAuthError::invalid_grant("the user has left the tenant"))?
            .as_ref()
            .clone(),
        None => Vec::new(),
    };
    let subject = Subject {
        user_id: &user.id,
        roles,
        email_verified: user.email_verified_at.is_some(),
        tenant_id: family.tenant_id.map(str::to_string),
        tenant_roles,
        amr: family.amr,
    };
    let claims = sessions::access_claims(settings, &subject, Some(&session_id), grant, now);
    Ok(Issued {
        session_id,
        claims,
        refresh_token,
    })
}

struct IdTokenInput<'a> {
    user: &'a User,
    client_id: &'a str,
    nonce: Option<&'a str>,
    auth_time: i64,
    sid: &'a str,
}

/// OIDC Core §2 ID token claims.
#[derive(Serialize)]
struct IdTokenClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    azp: &'a str,
    exp: i64,
    iat: i64,
    auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    at_hash: String,
    sid: &'a str,
    /// The token's tenant, as in the access token.
    #[serde(skip_serializing_if = "Option::is_none")]
    tid: Option<&'a str>,
    /// OIDC Core §2 / RFC 8176: how the user proved who they are, as in the access token.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    amr: &'a [String],
    /// OIDC Core §2: the class of that sign-in (`crate::mfa::acr`).
    #[serde(skip_serializing_if = "Option::is_none")]
    acr: Option<&'a str>,
}

fn respond(
    state: &Core,
    issued: Issued,
    scope: &str,
    id_token: Option<IdTokenInput<'_>>,
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    // One key-set snapshot signs both tokens, so `at_hash` uses the access token's algorithm
    // even if a rotation lands in between.
    let keys = state.keys.current();
    let key = keys.signing_key();
    let internal = |e: anyhow::Error| crate::Error::Internal(e).into_oauth();
    let access_token = jwt::sign(key, jwt::ACCESS_TOKEN_TYP, &issued.claims).map_err(internal)?;
    let id_token = match id_token {
        Some(input) => {
            let claims = IdTokenClaims {
                iss: &state.settings.issuer,
                sub: &input.user.id,
                aud: input.client_id,
                azp: input.client_id,
                exp: now + state.settings.access_ttl,
                iat: now,
                auth_time: input.auth_time,
                nonce: input.nonce,
                at_hash: at_hash(key.alg, &access_token),
                sid: input.sid,
                tid: issued.claims.tid.as_deref(),
                amr: &issued.claims.amr,
                acr: issued.claims.acr.as_deref(),
            };
            Some(jwt::sign(key, "JWT", &claims).map_err(internal)?)
        }
        None => None,
    };
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: state.settings.access_ttl,
        refresh_token: issued.refresh_token,
        scope: Some(scope.to_string()),
        id_token,
        issued_token_type: None,
    })
}

/// OIDC Core §3.1.3.6: base64url of the left half of the hash of the access token, with the
/// hash of the signing algorithm (SHA-256; SHA-512 for Ed25519).
pub fn at_hash(alg: Alg, access_token: &str) -> String {
    let algorithm = if alg == Alg::EdDsa {
        &digest::SHA512
    } else {
        &digest::SHA256
    };
    let d = digest::digest(algorithm, access_token.as_bytes());
    let bytes = d.as_ref();
    b64url(&bytes[..bytes.len() / 2])
}

impl crate::Error {
    fn into_oauth(self) -> OAuthError {
        self.into()
    }
}
