//! The OAuth 2.0 authorization server: clients and their authentication, the authorization
//! endpoint's decisions, the token endpoint's grants, introspection and revocation.
//!
//! Protocol errors are [`OAuthError`]s, rendered by the HTTP layer as RFC 6749 §5.2 bodies
//! (`{"error", "error_description"}`).

pub mod authorize;
pub mod clients;
pub mod exchange;
pub mod introspect;
pub mod pkce;
pub mod revocation;
pub mod scope;
pub mod token;

use std::borrow::Cow;

crate::error::wire_codes! {
/// The `error` codes of the OAuth endpoints (RFC 6749 §5.2 bodies and redirects), each from
/// the section that defines it; listed in `docs/errors.md`.
pub enum ErrorCode {
    /// RFC 6749 §4.1.2.1, §5.2.
    InvalidRequest => "invalid_request",
    /// RFC 6749 §5.2: client authentication failed (401).
    InvalidClient => "invalid_client",
    /// RFC 6749 §5.2.
    InvalidGrant => "invalid_grant",
    /// RFC 6749 §4.1.2.1, §5.2.
    UnauthorizedClient => "unauthorized_client",
    /// RFC 6749 §5.2.
    UnsupportedGrantType => "unsupported_grant_type",
    /// RFC 6749 §4.1.2.1, §5.2.
    InvalidScope => "invalid_scope",
    /// RFC 6749 §4.1.2.1.
    AccessDenied => "access_denied",
    /// RFC 6749 §4.1.2.1.
    UnsupportedResponseType => "unsupported_response_type",
    /// RFC 6749 §4.1.2.1 (500 at the token-style endpoints).
    ServerError => "server_error",
    /// RFC 6749 §4.1.2.1 (503, or 429 with `Retry-After` when throttled).
    TemporarilyUnavailable => "temporarily_unavailable",
    /// RFC 8707 §2.
    InvalidTarget => "invalid_target",
    /// RFC 6750 §3.1 (401).
    InvalidToken => "invalid_token",
    /// RFC 6750 §3.1 (403).
    InsufficientScope => "insufficient_scope",
    /// OIDC Core §3.1.2.6.
    LoginRequired => "login_required",
    /// OIDC Core §3.1.2.6.
    ConsentRequired => "consent_required",
    /// OIDC Core §3.1.2.6.
    RequestNotSupported => "request_not_supported",
    /// OpenID Connect Core Error Code unmet_authentication_requirements 1.0 §2: the sign-in
    /// cannot reach the class the client requires.
    UnmetAuthenticationRequirements => "unmet_authentication_requirements",
}
}

/// An RFC 6749 §5.2 error (plus RFC 8707 `invalid_target`, RFC 6750 bearer errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: Cow<'static, str>,
    /// Seconds to wait, for a throttled request (429 with `Retry-After`).
    pub retry_after: Option<u64>,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            description: description.into(),
            retry_after: None,
        }
    }

    pub fn invalid_request(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, d)
    }

    /// Client authentication failed (RFC 6749 §5.2): answered with 401.
    pub fn invalid_client() -> Self {
        Self::new(ErrorCode::InvalidClient, "client authentication failed")
    }

    pub fn invalid_grant(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidGrant, d)
    }

    pub fn invalid_scope(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidScope, d)
    }

    pub fn unauthorized_client(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::UnauthorizedClient, d)
    }

    pub fn server_error() -> Self {
        Self::new(
            ErrorCode::ServerError,
            "the authorization server encountered an error",
        )
    }

    /// The HTTP status for this error at the token-style endpoints.
    pub fn status(&self) -> u16 {
        use ErrorCode as C;
        match self.code {
            C::InvalidClient | C::InvalidToken => 401,
            _ if self.retry_after.is_some() => 429,
            C::InsufficientScope => 403,
            C::ServerError => 500,
            C::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.description)
    }
}

impl From<crate::Error> for OAuthError {
    fn from(e: crate::Error) -> Self {
        use crate::Error as E;
        match e {
            E::Unauthenticated {
                code: crate::error::Code::InvalidGrant | crate::error::Code::InvalidCredentials,
                ..
            } => Self::invalid_grant("the grant is invalid, expired or revoked"),
            E::Unauthenticated { .. } => Self::new(ErrorCode::InvalidToken, "the token is invalid"),
            E::BadRequest {
                code: crate::error::Code::InvalidScope,
                message,
            } => Self::invalid_scope(message),
            E::BadRequest { message, .. } => Self::invalid_request(message),
            E::Validation(fields) => Self::invalid_request(
                fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            // RFC 6749 §5.2: the resource owner's credentials alone do not grant access; the
            // password grant has no step for a second factor (docs/oauth.md).
            E::StepUp(_) => Self::new(ErrorCode::AccessDenied, "a stronger sign-in is required"),
            E::MfaRequired(_) => Self::invalid_grant(
                "the account needs a second factor: sign in through the authorization endpoint",
            ),
            E::Forbidden { message, .. } => Self::new(ErrorCode::AccessDenied, message),
            E::NotFound | E::Conflict { .. } => Self::invalid_request("invalid request"),
            E::PayloadTooLarge => Self::invalid_request("the request is too large"),
            // RFC 6749 has no code for throttling; `temporarily_unavailable` with 429 and
            // `Retry-After` is what clients retry on.
            E::TooManyRequests { retry_after } => Self {
                retry_after: Some(retry_after),
                ..Self::new(
                    ErrorCode::TemporarilyUnavailable,
                    "too many requests; retry later",
                )
            },
            E::UnsupportedMediaType(m) => Self::invalid_request(m),
            E::Unavailable(m) => Self::new(ErrorCode::TemporarilyUnavailable, m),
            e @ (E::Database(_) | E::Internal(_)) => {
                tracing::error!(error = ?e, "OAuth request failed with an internal error");
                Self::server_error()
            }
        }
    }
}

impl From<sqlx::Error> for OAuthError {
    fn from(e: sqlx::Error) -> Self {
        crate::Error::from(e).into()
    }
}

/// Parses `application/x-www-form-urlencoded` parameters, refusing repeated ones
/// (RFC 6749 §3.1 and §3.2: "Request and response parameters MUST NOT be included more than
/// once") and empty values, which count as omitted.
pub fn parse_params(input: &[u8]) -> Result<Params, OAuthError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(input) {
        // Far more than any request of this server has; also keeps the duplicate check cheap.
        if out.len() >= MAX_PARAMS {
            return Err(OAuthError::invalid_request("too many parameters"));
        }
        // NUL and other control characters belong in no OAuth parameter (and PostgreSQL
        // refuses NUL in text).
        if k.chars()
            .chain(v.chars())
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(OAuthError::invalid_request(
                "parameters must not contain control characters",
            ));
        }
        if k.len() > 64 || v.len() > 4096 {
            return Err(OAuthError::invalid_request(format!(
                "parameter {} is too long",
                truncate(&k, 64)
            )));
        }
        if out.iter().any(|(name, _)| *name == k) {
            return Err(OAuthError::invalid_request(format!(
                "parameter {k} is repeated"
            )));
        }
        if !v.is_empty() {
            out.push((k.into_owned(), v.into_owned()));
        }
    }
    Ok(Params(out))
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Most parameters accepted in one request.
pub const MAX_PARAMS: usize = 64;

/// Request parameters, each at most once.
#[derive(Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

/// Parameter names only: values can be passwords, secrets, codes and tokens.
impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A required parameter, or `invalid_request` naming it.
    pub fn require(&self, name: &'static str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {name}")))
    }

    /// Re-encodes the parameters (for carrying an authorization request through the login page).
    pub fn encode(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.0 {
            s.append_pair(k, v);
        }
        s.finish()
    }

    pub fn without(&self, name: &str) -> Self {
        Self(self.0.iter().filter(|(k, _)| k != name).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused_and_empty_ones_ignored() {
        assert!(parse_params(b"a=1&a=2").is_err());
        let p = parse_params(b"a=1&b=&c=x%20y").unwrap();
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), None);
        assert_eq!(p.get("c"), Some("x y"));
        assert!(parse_params(format!("a={}", "x".repeat(5000)).as_bytes()).is_err());
        let many: String = (0..65).map(|i| format!("p{i}=x&")).collect();
        assert!(parse_params(many.as_bytes()).is_err());
        let enough: String = (0..64).map(|i| format!("p{i}=x&")).collect();
        assert!(parse_params(enough.as_bytes()).is_ok());
    }
}
