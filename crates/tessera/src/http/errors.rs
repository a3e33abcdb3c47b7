//! The one place where errors become HTTP responses.
//!
//! A handler's [`Error`] becomes a status and an [`ErrorBody`]; the correlation middleware
//! (`super::correlation`) adds the request's `correlation_id` to the body. Responses that did not
//! come from our error type (unknown route, wrong method, a panic) are given the same JSON shape
//! there too.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{Code, Error, FieldError};

/// `{"error", "message", "fields"?}`; `correlation_id` is added by the middleware. An
/// `mfa_required` answer adds `mfa_token` and `methods`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: Code,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
    /// `mfa_required`: the challenge to complete at `POST /auth/mfa` (five minutes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfa_token: Option<String>,
    /// `mfa_required`: the methods `POST /auth/mfa` takes for this account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<crate::mfa::Method>>,
    /// `mfa_required` with a passkey or security key: the options for
    /// `navigator.credentials.get`, to answer with `method` `webauthn`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub webauthn: Option<webauthn_rs::prelude::RequestChallengeResponse>,
}

impl ErrorBody {
    pub fn new(error: Code, message: impl Into<String>) -> Self {
        Self {
            error,
            message: message.into(),
            fields: Vec::new(),
            mfa_token: None,
            methods: None,
            webauthn: None,
        }
    }

    /// Renders the body with the correlation id.
    pub fn render(&self, correlation_id: &str) -> Vec<u8> {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        value["correlation_id"] = correlation_id.into();
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// The generic body for a status produced outside our error type.
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::new(Code::NotFound, "no such resource"),
            StatusCode::METHOD_NOT_ALLOWED => Self::new(
                Code::MethodNotAllowed,
                "this method is not allowed on this resource",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => {
                Self::new(Code::PayloadTooLarge, "the request body is too large")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                Code::UnsupportedMediaType,
                "the request body must be application/json",
            ),
            s if s.is_client_error() => Self::new(
                Code::BadRequest,
                s.canonical_reason().unwrap_or("bad request"),
            ),
            _ => Self::new(Code::InternalError, "an internal error occurred"),
        }
    }
}

/// Builds an error response carrying `body` (rendered by the correlation middleware).
pub fn error_response(status: StatusCode, body: ErrorBody) -> Response {
    let bytes = body.render("");
    let mut res = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response();
    res.extensions_mut().insert(body);
    res
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            Error::Validation(fields) => {
                let message = fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorBody {
                        fields: fields.clone(),
                        ..ErrorBody::new(Code::ValidationFailed, message)
                    },
                )
            }
            Error::BadRequest { code, message } => (
                StatusCode::BAD_REQUEST,
                ErrorBody::new(*code, message.clone()),
            ),
            Error::Unauthenticated { code, message, .. } => {
                (StatusCode::UNAUTHORIZED, ErrorBody::new(*code, *message))
            }
            Error::StepUp(needed) => (
                StatusCode::UNAUTHORIZED,
                ErrorBody::new(
                    Code::InsufficientUserAuthentication,
                    match needed.max_age {
                        Some(_) => {
                            "sign in again (more recently, or with your second factor) to do this"
                        }
                        None => "sign in again with your second factor to do this",
                    },
                ),
            ),
            Error::MfaRequired(challenge) => (
                StatusCode::UNAUTHORIZED,
                ErrorBody {
                    mfa_token: Some(challenge.token.clone()),
                    methods: Some(challenge.methods.clone()),
                    webauthn: challenge.webauthn.clone(),
                    ..ErrorBody::new(
                        Code::MfaRequired,
                        "the password was right; complete the sign-in with a second factor",
                    )
                },
            ),
            Error::Forbidden { code, message } => {
                (StatusCode::FORBIDDEN, ErrorBody::new(*code, *message))
            }
            Error::NotFound => (
                StatusCode::NOT_FOUND,
                ErrorBody::new(Code::NotFound, "no such resource"),
            ),
            Error::Conflict { code, message } => {
                (StatusCode::CONFLICT, ErrorBody::new(*code, *message))
            }
            Error::TooManyRequests { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                ErrorBody::new(Code::TooManyRequests, "too many attempts; try again later"),
            ),
            Error::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorBody::for_status(StatusCode::PAYLOAD_TOO_LARGE),
            ),
            Error::UnsupportedMediaType(m) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorBody::new(Code::UnsupportedMediaType, m.clone()),
            ),
            Error::Unavailable(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorBody::new(Code::Unavailable, *m),
            ),
            Error::Database(_) | Error::Internal(_) => {
                tracing::error!(error = ?self, "request failed with an internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorBody::for_status(StatusCode::INTERNAL_SERVER_ERROR),
                )
            }
        };
        let mut res = error_response(status, body);
        // The challenge is a bearer secret: never kept by a cache (as token responses).
        if let Error::MfaRequired(_) = &self {
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        if let Error::StepUp(needed) = &self
            && let Ok(v) = HeaderValue::from_str(&needed.challenge())
        {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        if let Error::TooManyRequests { retry_after } = &self {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        // RFC 6750 §3: a bearer-protected resource says how to authenticate.
        if let Error::Unauthenticated {
            code, bearer: true, ..
        } = &self
        {
            let value = match code {
                Code::InvalidToken => {
                    r#"Bearer realm="tessera", error="invalid_token", error_description="the access token is invalid, expired or revoked""#
                }
                _ => r#"Bearer realm="tessera""#,
            };
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
        }
        res
    }
}
