//! The domain error type. Every domain function returns [`Error`]; `http::errors` maps it to a
//! status and a JSON body in one place. Server faults never turn into a 4xx, and their cause is
//! logged, not sent.

use serde::Serialize;

/// One invalid field of a request.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 422: the request is well-formed but a field breaks a rule.
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    /// 400: the request cannot be understood (malformed JSON, invalid token format, …).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 401: credentials or token missing or wrong. `bearer` adds RFC 6750 `WWW-Authenticate`.
    #[error("{message}")]
    Unauthenticated {
        code: &'static str,
        message: &'static str,
        bearer: bool,
    },
    /// 403: authenticated but not allowed.
    #[error("{message}")]
    Forbidden {
        code: &'static str,
        message: &'static str,
    },
    /// 404.
    #[error("not found")]
    NotFound,
    /// 409: conflicts with existing state (`email_taken`).
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: &'static str,
    },
    /// 429: throttled or locked; retry after this many seconds.
    #[error("too many requests")]
    TooManyRequests { retry_after: u64 },
    /// 413.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503: a dependency is down.
    #[error("{0}")]
    Unavailable(&'static str),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The one answer for every failed login: wrong password, unknown email, deactivated account.
    pub fn invalid_credentials() -> Self {
        Self::Unauthenticated {
            code: "invalid_credentials",
            message: "invalid email or password",
            bearer: false,
        }
    }

    /// A refresh token that is unknown, expired, revoked or reused.
    pub fn invalid_grant() -> Self {
        Self::Unauthenticated {
            code: "invalid_grant",
            message: "the refresh token is invalid, expired or revoked",
            bearer: false,
        }
    }

    /// RFC 6750 §3.1 `invalid_token`.
    pub fn invalid_token() -> Self {
        Self::Unauthenticated {
            code: "invalid_token",
            message: "the access token is invalid, expired or revoked",
            bearer: true,
        }
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
