//! Extractors: JSON bodies rejected through our error type, the authenticated caller, and the
//! caller's device.

use std::net::SocketAddr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::authz::{self, Channel, Principal};
use crate::context::RequestContext;
use crate::error::Error;
use crate::keys::jwt::AccessClaims;
use crate::oauth::clients;
use crate::sessions::FIRST_PARTY_CLIENT;

/// `axum::Json` whose rejections are our 4xx errors (400 syntax, 413 size, 415 content type,
/// 422 missing or mistyped fields).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> Error {
    match rejection {
        JsonRejection::JsonDataError(e) => Error::BadRequest {
            code: crate::error::Code::InvalidBody,
            message: e.body_text(),
        }
        .into_validation(),
        JsonRejection::JsonSyntaxError(e) => {
            Error::bad_request(crate::error::Code::MalformedJson, e.body_text())
        }
        JsonRejection::MissingJsonContentType(_) => Error::UnsupportedMediaType(
            "the request body must be JSON with Content-Type: application/json".into(),
        ),
        JsonRejection::BytesRejection(e)
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
        {
            Error::PayloadTooLarge
        }
        other => Error::bad_request(crate::error::Code::InvalidBody, other.body_text()),
    }
}

impl Error {
    /// A JSON body of the wrong shape is a 422 naming the field (serde's path is in the message).
    fn into_validation(self) -> Self {
        match self {
            Error::BadRequest { message, .. } => {
                let detail = message
                    .split_once("target type: ")
                    .map_or(message.as_str(), |(_, d)| d)
                    .to_string();
                let field = detail
                    .split(": ")
                    .next()
                    .filter(|f| !f.contains(' '))
                    .unwrap_or("body")
                    .to_string();
                Error::Validation(vec![crate::error::FieldError::new(field, detail)])
            }
            other => other,
        }
    }
}

/// The caller of a bearer-protected endpoint: the [`Principal`] of a valid access token of a
/// live session. What it may do is decided by the domain function, through [`crate::authz`].
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let Some(token) = bearer_token(&parts.headers)? else {
            return Err(Error::Unauthenticated {
                code: crate::error::Code::Unauthenticated,
                message: "a bearer access token is required",
                bearer: true,
            });
        };
        let principal = if crate::tenants::api_keys::is_api_key(token) {
            let ip = client_ip(parts, state);
            let now = state.clock.now();
            let key = crate::tenants::api_keys::authenticate(state, token, ip.as_deref(), now);
            Principal::ApiKey(key.await?)
        } else {
            principal(state, token).await?
        };
        if let Some(Required(permission)) = parts.extensions.get::<Required>() {
            authz::require(&principal, *permission)?;
            // RFC 9470: a change through the admin API needs a recent, strong enough sign-in
            // of the administrator (reading does not).
            if let (Principal::User(user), Some(authz::Role::Admin)) =
                (&principal, permission.role())
                && !matches!(
                    parts.method,
                    axum::http::Method::GET | axum::http::Method::HEAD
                )
            {
                let recent = Some(crate::mfa::step_up::ADMIN_SECS);
                crate::mfa::step_up::require(state, user, recent, state.clock.now()).await?;
            }
        }
        // A key's tenant is the only one that exists for it: say so before any body is read
        // (the domain function checks again, `tenants::require`).
        if let Principal::ApiKey(key) = &principal {
            let params = axum::extract::RawPathParams::from_request_parts(parts, state)
                .await
                .map_err(|_| Error::NotFound)?;
            if params
                .iter()
                .any(|(name, value)| name == "id" && value != key.tenant_id)
            {
                return Err(Error::NotFound);
            }
        }
        Ok(Caller(principal))
    }
}

/// Who may scrape `/metrics`: the bearer credential of `TESSERA_METRICS__TOKEN` (compared in
/// constant time), or a token whose principal holds `Permission::ReadMetrics` (administrators).
pub struct Scraper;

impl FromRequestParts<AppState> for Scraper {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        use secrecy::ExposeSecret;
        if let Some(expected) = &state.config.metrics.token
            && let Ok(Some(token)) = bearer_token(&parts.headers)
            && crate::crypto::ct_eq(token.as_bytes(), expected.expose_secret().as_bytes())
        {
            return Ok(Scraper);
        }
        parts
            .extensions
            .insert(Required(authz::Permission::ReadMetrics));
        Caller::from_request_parts(parts, state).await?;
        Ok(Scraper)
    }
}

/// The permission a route needs, set by `Routes::guarded` and checked by [`Caller`].
#[derive(Clone, Copy, Debug)]
pub struct Required(pub authz::Permission);

/// The principal of a bearer token: validated, live, and tied to the client it was issued to
/// as that client is registered now (a deactivated client's tokens stop working).
pub async fn principal(state: &AppState, token: &str) -> Result<Principal, Error> {
    let claims = authenticate(state, token).await?;
    let (channel, may_evaluate) = if claims.client_id == FIRST_PARTY_CLIENT {
        (Channel::Tessera, false)
    } else {
        let client = clients::find_active(&state.store, &state.clients, &claims.client_id)
            .await?
            .ok_or_else(Error::invalid_token)?;
        let channel = Channel::Client {
            client_id: claims.client_id.clone(),
            first_party: client.first_party,
        };
        (channel, client.may_introspect)
    };
    Ok(authz::principal_from_claims(claims, channel, may_evaluate))
}

/// Validates an access token and checks that its session is still live.
pub async fn authenticate(state: &AppState, token: &str) -> Result<AccessClaims, Error> {
    let now = state.clock.now();
    let claims = state
        .keys
        .verify_access_token(token, now)
        .await
        .map_err(|e| {
            tracing::debug!(reason = %e, "access token refused");
            Error::invalid_token()
        })?;
    if !crate::oauth::revocation::is_live(state, &claims, now).await? {
        return Err(Error::invalid_token());
    }
    Ok(claims)
}

/// The token of an `Authorization: Bearer …` header (RFC 6750 §2.1); `None` when absent.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Result<Option<&str>, Error> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| Error::invalid_token())?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(Error::invalid_token()),
    }
}

/// The client's address: the socket's, or the trusted proxies' `X-Forwarded-For` hop.
fn client_ip(parts: &Parts, state: &AppState) -> Option<String> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| {
        state
            .proxies
            .client_ip(c.0.ip(), &parts.headers)
            .to_string()
    })
}

/// The request's context: correlation id, user agent (truncated) and socket address.
pub struct Context(pub RequestContext);

impl FromRequestParts<AppState> for Context {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect());
        let ip = client_ip(parts, state);
        let correlation_id = parts
            .extensions
            .get::<super::CorrelationId>()
            .map(|c| c.0.clone())
            .unwrap_or_default();
        let trace = parts
            .extensions
            .get::<super::Trace>()
            .and_then(|t| t.0.clone());
        Ok(Self(RequestContext {
            correlation_id,
            trace,
            user_agent,
            ip,
        }))
    }
}
