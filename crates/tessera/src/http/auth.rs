//! `/auth/*`: register, login (and its second factor), refresh, logout.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::routes;

use super::extract::{Caller, Context, Json, bearer_token};
use super::{Access, no_content, no_store};
use crate::abuse::Class;
use crate::accounts::recovery;
use crate::accounts::{self, Registration, UserView};
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::sessions::{self, LogoutWith};

pub fn router() -> super::Routes {
    super::Routes::default()
        .api(routes!(register), Access::Public)
        .api(routes!(login), Access::Public)
        .api(routes!(second_factor), Access::Public)
        .api(routes!(passkey_start), Access::Public)
        .api(routes!(passkey_finish), Access::Public)
        .api(routes!(refresh), Access::Public)
        .api(routes!(logout), Access::Public)
        .api(
            routes!(switch_tenant),
            Access::Permission(crate::authz::Permission::UseTenants),
        )
        .api(routes!(verify_email), Access::Public)
        .api(routes!(resend_verification), Access::Public)
        .api(routes!(request_password_reset), Access::Public)
        .api(routes!(reset_password), Access::Public)
}

/// `{"status": "accepted", "message"}`: the same answer whether or not an account exists.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Accepted {
    #[schema(example = "accepted")]
    status: &'static str,
    message: &'static str,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct RegisterBody {
    email: String,
    password: String,
    display_name: Option<String>,
}

/// Registers an account (a verification mail follows).
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = RegisterBody,
    responses((status = 201, description = "The new user", body = UserView)))]
async fn register(
    State(state): State<AppState>,
    Context(ctx): Context,
    Json(body): Json<RegisterBody>,
) -> Result<Response> {
    let input = Registration {
        email: body.email,
        password: body.password,
        display_name: body.display_name,
    };
    let now = state.clock.now();
    state
        .limiter
        .check(Class::RegisterIp, ctx.ip.as_deref().unwrap_or(""), now)
        .await?;
    state.limiter.check(Class::RegisterGlobal, "*", now).await?;
    let user = accounts::register(&state, input, &ctx, now).await?;
    Ok((StatusCode::CREATED, axum::Json(UserView::new(&user, &[]))).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
struct LoginBody {
    email: String,
    password: String,
    /// The tenant (id or slug) the tokens are for.
    tenant: Option<String>,
}

/// Signs in with email and password: a token pair. An account with a second factor answers
/// 401 `mfa_required` with an `mfa_token` to complete at `POST /auth/mfa`.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginBody,
    responses((status = 200, description = "An access and a refresh token", body = sessions::TokenPair)))]
async fn login(
    State(state): State<AppState>,
    Context(ctx): Context,
    Json(body): Json<LoginBody>,
) -> Result<Response> {
    let now = state.clock.now();
    let tenant = body.tenant.as_deref();
    let pair = accounts::login(&state, &body.email, &body.password, tenant, &ctx, now).await?;
    crate::metrics::token_issued("tessera_login");
    Ok(no_store(axum::Json(pair).into_response()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SecondFactorBody {
    /// From the `mfa_required` answer of `POST /auth/login`.
    mfa_token: String,
    /// `totp`, `recovery_code` or `webauthn`: one of the answer's `methods`.
    method: String,
    /// `totp` and `recovery_code`: the app's six digits, or one recovery code.
    code: Option<String>,
    /// `webauthn`: what `navigator.credentials.get` returned for the answer's `webauthn`
    /// options, as JSON (`PublicKeyCredential.toJSON()`).
    #[schema(value_type = Option<Object>)]
    assertion: Option<serde_json::Value>,
}

/// Completes a login that answered `mfa_required`: a token pair once the second factor accepts
/// the code. Wrong codes are throttled and lock out like wrong passwords.
#[utoipa::path(post, path = "/auth/mfa", tag = "auth", request_body = SecondFactorBody,
    responses((status = 200, description = "An access and a refresh token", body = sessions::TokenPair)))]
async fn second_factor(
    State(state): State<AppState>,
    Context(ctx): Context,
    Json(body): Json<SecondFactorBody>,
) -> Result<Response> {
    use crate::mfa::{Method, Proof};
    let method = Method::parse(&body.method)
        .ok_or_else(|| Error::invalid("method", "must be totp, recovery_code or webauthn"))?;
    let proof = match (method, &body.code, &body.assertion) {
        (Method::Webauthn, _, Some(assertion)) => Proof::Assertion(assertion),
        (Method::Webauthn, _, None) => {
            return Err(Error::invalid(
                "assertion",
                "is required with method webauthn",
            ));
        }
        (_, Some(code), _) => Proof::Code(code),
        (_, None, _) => return Err(Error::invalid("code", "is required with this method")),
    };
    let now = state.clock.now();
    let token = &body.mfa_token;
    let pair = accounts::login_second_factor(&state, token, method, proof, &ctx, now).await?;
    crate::metrics::token_issued("tessera_login");
    Ok(no_store(axum::Json(pair).into_response()))
}

/// Starts a passwordless sign-in with a passkey: the options for `navigator.credentials.get`
/// (no allowed credentials: the browser offers the discoverable ones it holds for this site),
/// and the ceremony to finish within five minutes. Throttled per IP.
#[utoipa::path(post, path = "/auth/passkey/start", tag = "auth",
    responses((status = 200, description = "The ceremony and its options", body = crate::mfa::webauthn::Started)))]
async fn passkey_start(State(state): State<AppState>, Context(ctx): Context) -> Result<Response> {
    let now = state.clock.now();
    let started = crate::mfa::webauthn::passkey_start(&state, &ctx, now).await?;
    Ok(no_store(axum::Json(started).into_response()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PasskeyBody {
    /// From `POST /auth/passkey/start`.
    ceremony: String,
    /// What `navigator.credentials.get` returned, as JSON (`PublicKeyCredential.toJSON()`).
    #[schema(value_type = Object)]
    assertion: serde_json::Value,
    /// The tenant (id or slug) the tokens are for.
    tenant: Option<String>,
}

/// Signs in with a passkey, no password: a token pair whose `amr` says a key with user
/// verification was used (`hwk`/`swk`, `user`, `mfa`).
#[utoipa::path(post, path = "/auth/passkey/finish", tag = "auth", request_body = PasskeyBody,
    responses((status = 200, description = "An access and a refresh token", body = sessions::TokenPair)))]
async fn passkey_finish(
    State(state): State<AppState>,
    Context(ctx): Context,
    Json(body): Json<PasskeyBody>,
) -> Result<Response> {
    let now = state.clock.now();
    let tenant = body.tenant.as_deref();
    let pair =
        accounts::login_passkey(&state, &body.ceremony, &body.assertion, tenant, &ctx, now).await?;
    crate::metrics::token_issued("tessera_login");
    Ok(no_store(axum::Json(pair).into_response()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SwitchBody {
    tenant: String,
}

/// `POST /auth/switch-tenant` `{tenant}`: a new token pair for another tenant of the caller.
#[utoipa::path(post, path = "/auth/switch-tenant", tag = "auth", request_body = SwitchBody,
    responses((status = 200, description = "A token pair for the tenant", body = sessions::TokenPair)))]
async fn switch_tenant(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Json(body): Json<SwitchBody>,
) -> Result<Response> {
    let now = state.clock.now();
    let pair = crate::tenants::switch(&state, &principal, &body.tenant, &ctx, now).await?;
    Ok(no_store(axum::Json(pair).into_response()))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct RefreshBody {
    refresh_token: String,
}

/// Trades a refresh token for a new pair; the old refresh token stops working.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshBody,
    responses((status = 200, description = "A new token pair", body = sessions::TokenPair)))]
async fn refresh(
    State(state): State<AppState>,
    Context(ctx): Context,
    Json(body): Json<RefreshBody>,
) -> Result<Response> {
    let now = state.clock.now();
    let pair = sessions::refresh(
        &state,
        &body.refresh_token,
        sessions::RefreshRequest {
            first_party: true,
            reuse_grace: state.settings.reuse_grace,
            ..Default::default()
        },
        &ctx,
        now,
    )
    .await?;
    crate::metrics::token_issued("tessera_refresh");
    Ok(no_store(axum::Json(pair).into_response()))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LogoutQuery {
    #[serde(default)]
    all: bool,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct LogoutBody {
    refresh_token: Option<String>,
}

/// Ends the caller's session (bearer token, or `{refresh_token}` in the body); `?all=true` ends
/// every session of the user. An unknown refresh token is answered like a known one (204).
#[utoipa::path(post, path = "/auth/logout", tag = "auth", params(LogoutQuery),
    request_body(content = Option<LogoutBody>, description = "Without a bearer token: the session's refresh token"),
    security((), ("bearer" = [])),
    responses((status = 204, description = "Signed out")))]
async fn logout(
    State(state): State<AppState>,
    Query(query): Query<LogoutQuery>,
    Context(ctx): Context,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let now = state.clock.now();
    let principal;
    let refresh_token;
    let with = if let Some(token) = bearer_token(&headers)? {
        principal = super::extract::principal(&state, token).await?;
        LogoutWith::Bearer(&principal)
    } else if !body.is_empty() {
        let body: LogoutBody = serde_json::from_slice(&body)
            .map_err(|e| Error::bad_request(crate::error::Code::MalformedJson, e.to_string()))?;
        let Some(token) = body.refresh_token else {
            return Err(Error::invalid(
                "refresh_token",
                "is required without a bearer token",
            ));
        };
        refresh_token = token;
        LogoutWith::RefreshToken(&refresh_token)
    } else {
        return Err(Error::Unauthenticated {
            code: crate::error::Code::Unauthenticated,
            message: "send a bearer access token or a refresh_token",
            bearer: true,
        });
    };
    sessions::logout(&state.store, &state.sessions, with, query.all, &ctx, now).await?;
    Ok(no_content())
}

#[derive(Deserialize, utoipa::ToSchema)]
struct TokenBody {
    token: String,
}

/// Marks the email verified; 400 `invalid_token` for an unknown, used or expired token.
#[utoipa::path(post, path = "/auth/verify-email", tag = "auth", request_body = TokenBody,
    responses((status = 204, description = "Verified")))]
async fn verify_email(
    State(state): State<AppState>,
    Context(ctx): Context,
    Json(body): Json<TokenBody>,
) -> Result<Response> {
    recovery::verify_email(&state, &body.token, &ctx, state.clock.now()).await?;
    Ok(no_content())
}

#[derive(Deserialize, utoipa::ToSchema)]
struct EmailBody {
    email: String,
}

/// The one answer of the endpoints that take an address: whether or not an account exists.
fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(Accepted {
            status: "accepted",
            message: "if an account with this address exists, an email is on its way",
        }),
    )
        .into_response()
}

/// Sends a new verification link, if an unverified account has this address.
#[utoipa::path(post, path = "/auth/resend-verification", tag = "auth", request_body = EmailBody,
    responses((status = 202, description = "Accepted (whether or not the account exists)", body = Accepted)))]
async fn resend_verification(
    State(state): State<AppState>,
    Context(ctx): Context,
    Json(body): Json<EmailBody>,
) -> Result<Response> {
    let now = state.clock.now();
    throttle_recovery(&state, &ctx, &body.email, now).await?;
    recovery::resend_verification(&state, &body.email, &ctx, now).await?;
    Ok(accepted())
}

/// Sends a password reset link, if an account has this address.
#[utoipa::path(post, path = "/auth/request-password-reset", tag = "auth", request_body = EmailBody,
    responses((status = 202, description = "Accepted (whether or not the account exists)", body = Accepted)))]
async fn request_password_reset(
    State(state): State<AppState>,
    Context(ctx): Context,
    Json(body): Json<EmailBody>,
) -> Result<Response> {
    let now = state.clock.now();
    throttle_recovery(&state, &ctx, &body.email, now).await?;
    recovery::request_password_reset(&state, &body.email, &ctx, now).await?;
    Ok(accepted())
}

/// Recovery mail requests: per client IP and per submitted address (existing or not).
async fn throttle_recovery(
    state: &AppState,
    ctx: &crate::context::RequestContext,
    email: &str,
    now: i64,
) -> Result<()> {
    state
        .limiter
        .check(Class::RecoveryIp, ctx.ip.as_deref().unwrap_or(""), now)
        .await?;
    state.limiter.check(Class::RecoveryGlobal, "*", now).await?;
    state
        .limiter
        .check(
            Class::RecoveryAccount,
            &crate::store::users::normalize_email(email),
            now,
        )
        .await
}

#[derive(Deserialize, utoipa::ToSchema)]
struct ResetBody {
    token: String,
    new_password: String,
}

/// Sets a new password with a reset token and ends every session of the user.
#[utoipa::path(post, path = "/auth/reset-password", tag = "auth", request_body = ResetBody,
    responses((status = 204, description = "The password is set")))]
async fn reset_password(
    State(state): State<AppState>,
    Context(ctx): Context,
    Json(body): Json<ResetBody>,
) -> Result<Response> {
    recovery::reset_password(
        &state,
        &body.token,
        &body.new_password,
        &ctx,
        state.clock.now(),
    )
    .await?;
    Ok(no_content())
}
