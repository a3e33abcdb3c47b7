//! The domain error type. Every domain function returns [`Error`]; `http::errors` maps it to a
//! status and a JSON body in one place. Server faults never turn into a 4xx, and their cause is
//! logged, not sent.

use serde::Serialize;

/// Declares a closed set of wire codes, each variant's string written once, with `ALL`,
/// `as_str`, `Display` and `Serialize` (as the string).
macro_rules! wire_codes {
    ($(#[$meta:meta])* pub enum $name:ident {
        $($(#[$doc:meta])* $variant:ident => $text:literal,)*
    }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$doc])* $variant,)*
        }

        impl $name {
            /// Every code, for the documentation test.
            pub const ALL: &[$name] = &[$($name::$variant,)*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        /// In the OpenAPI document: a string, one of [`Self::ALL`].
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some($name::ALL.iter().map(|c| c.as_str())))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}
pub(crate) use wire_codes;

wire_codes! {
/// The `error` member of a JSON API error body: a closed set, listed in `docs/errors.md`,
/// that clients may match on.
pub enum Code {
    /// 422: one or more fields break a rule (`fields` lists them).
    ValidationFailed => "validation_failed",
    /// 400: the body is not valid JSON.
    MalformedJson => "malformed_json",
    /// 400: the body is JSON of the wrong shape.
    InvalidBody => "invalid_body",
    /// 400: any other request the server cannot understand.
    BadRequest => "bad_request",
    /// 401: wrong email or password, or an account that cannot sign in.
    InvalidCredentials => "invalid_credentials",
    /// 401: the current password given to confirm a change is wrong.
    InvalidCurrentPassword => "invalid_current_password",
    /// 401: the password was right, and the account needs a second factor too: complete the
    /// sign-in at `POST /auth/mfa` with the body's `mfa_token` and one of its `methods`.
    MfaRequired => "mfa_required",
    /// 401: the `mfa_token` is invalid or expired (five minutes): sign in again.
    InvalidMfaToken => "invalid_mfa_token",
    /// 401: the second-factor code is wrong, expired or used already.
    InvalidMfaCode => "invalid_mfa_code",
    /// 401: the WebAuthn ceremony is unknown, used or expired (five minutes): start again.
    InvalidCeremony => "invalid_ceremony",
    /// 401 (RFC 9470): the session's sign-in is too old or too weak for this action; sign in
    /// again (or give the current password where the route takes one). `WWW-Authenticate`
    /// carries `acr_values` and `max_age`.
    InsufficientUserAuthentication => "insufficient_user_authentication",
    /// 401: a refresh token that is unknown, expired, revoked or reused.
    InvalidGrant => "invalid_grant",
    /// 401 (access tokens, RFC 6750 §3.1) or 400 (single-use mail tokens).
    InvalidToken => "invalid_token",
    /// 401: no credential was sent.
    Unauthenticated => "unauthenticated",
    /// 400: a scope beyond what was granted.
    InvalidScope => "invalid_scope",
    /// 403: the token lacks a scope the route needs (RFC 6750 §3.1).
    InsufficientScope => "insufficient_scope",
    /// 403: the principal may not do this.
    Forbidden => "forbidden",
    /// 403: the address must be verified first.
    EmailNotVerified => "email_not_verified",
    /// 403: the token's active tenant (`tid`) is not the tenant of the route.
    TenantMismatch => "tenant_mismatch",
    /// 403: the tenant is suspended.
    TenantSuspended => "tenant_suspended",
    /// 403: the tenant requires a second factor, and the sign-in did not use one (or the account
    /// has none: add one, then sign in with it).
    TenantRequiresMfa => "tenant_requires_mfa",
    /// 403: addresses at this domain sign in through their organisation's identity provider, not
    /// with a password (docs/federation.md, "Enterprise routing").
    PasswordSignInDisabled => "password_sign_in_disabled",
    /// 403: the tenant (or the API key) does not allow the caller's address.
    IpNotAllowed => "ip_not_allowed",
    /// 404.
    NotFound => "not_found",
    /// 405.
    MethodNotAllowed => "method_not_allowed",
    /// 409: the address belongs to another account.
    EmailTaken => "email_taken",
    /// 409: the slug belongs to another tenant.
    SlugTaken => "slug_taken",
    /// 409: the email domain is claimed by a tenant already.
    DomainTaken => "domain_taken",
    /// 409: the change would leave the tenant without an owner.
    LastOwner => "last_owner",
    /// 409: the change would leave Tessera without an active administrator.
    LastAdmin => "last_admin",
    /// 409: a signing key is scheduled already (rotate with `now` to switch to it).
    KeyScheduled => "key_scheduled",
    /// 409: the address already belongs to a member of the tenant.
    AlreadyMember => "already_member",
    /// 409: the tenant's plan allows no more of this (members, API keys, custom roles).
    LimitReached => "limit_reached",
    /// 409: the second factor is confirmed already.
    AlreadyConfirmed => "already_confirmed",
    /// 409: the account has no second factor (recovery codes come with one).
    NoSecondFactor => "no_second_factor",
    /// 409: the WebAuthn credential is registered already (to this or another account).
    CredentialInUse => "credential_in_use",
    /// 409: passkeys need the issuer to be a domain name (not an IP address).
    WebauthnUnavailable => "webauthn_unavailable",
    /// 409: an identity provider of this name exists already.
    ProviderExists => "provider_exists",
    /// 409: the provider's issuer or kind cannot change while identities are linked through it.
    ProviderInUse => "provider_in_use",
    /// 409: removing this would leave the account with no way to sign in.
    LastSignInMethod => "last_sign_in_method",
    /// 413.
    PayloadTooLarge => "payload_too_large",
    /// 415.
    UnsupportedMediaType => "unsupported_media_type",
    /// 429: throttled or locked; `Retry-After` says for how long.
    TooManyRequests => "too_many_requests",
    /// 503: a dependency (database, shared state) is unreachable.
    Unavailable => "unavailable",
    /// 500: the cause is logged under the body's `correlation_id`, never sent.
    InternalError => "internal_error",
}
}

/// One invalid field of a request.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
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
    BadRequest { code: Code, message: String },
    /// 401: credentials or token missing or wrong. `bearer` adds RFC 6750 `WWW-Authenticate`.
    #[error("{message}")]
    Unauthenticated {
        code: Code,
        message: &'static str,
        bearer: bool,
    },
    /// 401 (RFC 9470): the session's sign-in is too old or too weak for this action
    /// (`insufficient_user_authentication`, with what it needs in `WWW-Authenticate`).
    #[error("a more recent or stronger sign-in is required")]
    StepUp(crate::mfa::step_up::Needed),
    /// 401: the password was right; the sign-in needs a second factor (`mfa_required`).
    #[error("a second factor is required")]
    MfaRequired(Box<crate::mfa::Challenge>),
    /// 403: authenticated but not allowed.
    #[error("{message}")]
    Forbidden { code: Code, message: &'static str },
    /// 404.
    #[error("not found")]
    NotFound,
    /// 409: conflicts with existing state (`email_taken`).
    #[error("{message}")]
    Conflict { code: Code, message: &'static str },
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

    pub fn bad_request(code: Code, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The one answer for every failed login: wrong password, unknown email, deactivated account.
    pub fn invalid_credentials() -> Self {
        Self::Unauthenticated {
            code: Code::InvalidCredentials,
            message: "invalid email or password",
            bearer: false,
        }
    }

    /// A refresh token that is unknown, expired, revoked or reused.
    pub fn invalid_grant() -> Self {
        Self::Unauthenticated {
            code: Code::InvalidGrant,
            message: "the refresh token is invalid, expired or revoked",
            bearer: false,
        }
    }

    /// RFC 6750 §3.1 `invalid_token`.
    pub fn invalid_token() -> Self {
        Self::Unauthenticated {
            code: Code::InvalidToken,
            message: "the access token is invalid, expired or revoked",
            bearer: true,
        }
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The codes in the first column of the table under `heading` in `docs/errors.md`.
    fn documented(heading: &str) -> BTreeSet<String> {
        let doc = include_str!("../../../docs/errors.md");
        let section = doc
            .split("\n## ")
            .find(|s| s.starts_with(heading))
            .unwrap_or_else(|| panic!("docs/errors.md has no section {heading:?}"));
        section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`').map(|(code, _)| code.to_string()))
            .collect()
    }

    #[test]
    fn every_api_error_code_is_documented_and_no_other() {
        let codes: BTreeSet<String> = super::Code::ALL
            .iter()
            .map(|c| c.as_str().to_string())
            .collect();
        assert_eq!(
            codes.len(),
            super::Code::ALL.len(),
            "a wire string is used twice"
        );
        assert_eq!(codes, documented("JSON API"));
    }

    #[test]
    fn every_oauth_error_code_is_documented_and_no_other() {
        let codes: BTreeSet<String> = crate::oauth::ErrorCode::ALL
            .iter()
            .map(|c| c.as_str().to_string())
            .collect();
        assert_eq!(codes.len(), crate::oauth::ErrorCode::ALL.len());
        assert_eq!(codes, documented("OAuth 2.0"));
    }

    #[test]
    fn codes_serialize_as_their_wire_string() {
        assert_eq!(
            serde_json::to_value(super::Code::InvalidCredentials).unwrap(),
            "invalid_credentials"
        );
        assert_eq!(
            serde_json::to_value(crate::oauth::ErrorCode::InvalidTarget).unwrap(),
            "invalid_target"
        );
    }
}
