//! `/identity/*`: the signed-in user's own account, profile, password, sessions and second
//! factors.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::routes;

use super::extract::{Caller, Context, Json};
use super::{Access, no_content};
use crate::accounts;
use crate::accounts::UserView;
use crate::accounts::profile::{self, ProfilePatch, ProfileView};
use crate::app::AppState;
use crate::authz::Permission;
use crate::error::Result;
use crate::mfa;
use crate::sessions::{self, SessionList};

pub fn router() -> super::Routes {
    use Permission::{ManageOwnAccount, ReadOwnAccount};
    super::Routes::default()
        .api(routes!(me), Access::Permission(ReadOwnAccount))
        .api(
            routes!(get_profile, patch_profile),
            Access::Permission(ReadOwnAccount),
        )
        .api(
            routes!(change_password),
            Access::Permission(ManageOwnAccount),
        )
        .api(routes!(list_sessions), Access::Permission(ReadOwnAccount))
        .api(
            routes!(revoke_session),
            Access::Permission(ManageOwnAccount),
        )
        .api(routes!(list_factors), Access::Permission(ReadOwnAccount))
        .api(routes!(enrol_totp), Access::Permission(ManageOwnAccount))
        .api(routes!(confirm_totp), Access::Permission(ManageOwnAccount))
        .api(
            routes!(webauthn_register_start),
            Access::Permission(ManageOwnAccount),
        )
        .api(
            routes!(webauthn_register_finish),
            Access::Permission(ManageOwnAccount),
        )
        .api(routes!(remove_factor), Access::Permission(ManageOwnAccount))
        .api(
            routes!(regenerate_recovery_codes),
            Access::Permission(ManageOwnAccount),
        )
}

/// The signed-in user's confirmed second factors and how many recovery codes are left.
#[utoipa::path(get, path = "/identity/mfa", tag = "identity",
    responses((status = 200, description = "The factors", body = mfa::FactorList)))]
async fn list_factors(
    State(state): State<AppState>,
    Caller(principal): Caller,
) -> Result<Response> {
    Ok(axum::Json(mfa::list(&state, &principal).await?).into_response())
}

/// `POST /identity/mfa/totp`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EnrolBody {
    /// What the user calls it (default `Authenticator app`).
    name: Option<String>,
    /// Needed unless the session signed in within the last five minutes.
    current_password: Option<String>,
}

/// Starts enrolling an authenticator app (RFC 6238): its secret, shown once. Confirm it with a
/// first code; until then nothing changes at sign-in.
#[utoipa::path(post, path = "/identity/mfa/totp", tag = "identity", request_body = EnrolBody,
    responses((status = 201, description = "The secret and its `otpauth://` URI", body = mfa::TotpEnrolment)))]
async fn enrol_totp(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Json(body): Json<EnrolBody>,
) -> Result<Response> {
    let now = state.clock.now();
    let name = body.name.as_deref();
    let password = body.current_password.as_deref();
    let enrolment = mfa::enrol_totp(&state, &principal, name, password, now).await?;
    let res = (axum::http::StatusCode::CREATED, axum::Json(enrolment)).into_response();
    Ok(super::no_store(res))
}

/// `POST /identity/mfa/totp/{id}/confirm`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    /// The app's current six digits.
    code: String,
}

/// Confirms an enrolment with the app's current code. From then on every password sign-in needs
/// a second factor; the first factor comes with ten recovery codes, shown once.
#[utoipa::path(post, path = "/identity/mfa/totp/{id}/confirm", tag = "identity",
    params(("id" = String, Path, description = "The factor's id")), request_body = ConfirmBody,
    responses((status = 200, description = "Confirmed", body = mfa::Confirmed)))]
async fn confirm_totp(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
    Json(body): Json<ConfirmBody>,
) -> Result<Response> {
    let now = state.clock.now();
    let confirmed = mfa::confirm_totp(&state, &principal, &id, &body.code, &ctx, now).await?;
    Ok(super::no_store(axum::Json(confirmed).into_response()))
}

/// Starts adding a passkey or security key (WebAuthn): the options for
/// `navigator.credentials.create`, and the ceremony to finish within five minutes. Needs a
/// sign-in within the last five minutes or the current password.
#[utoipa::path(post, path = "/identity/mfa/webauthn/register/start", tag = "identity",
    request_body = EnrolBody,
    responses((status = 200, description = "The ceremony and its options", body = mfa::webauthn::Started)))]
async fn webauthn_register_start(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Json(body): Json<EnrolBody>,
) -> Result<Response> {
    let now = state.clock.now();
    let name = body.name.as_deref();
    let password = body.current_password.as_deref();
    let started = mfa::webauthn::register_start(&state, &principal, name, password, now).await?;
    Ok(super::no_store(axum::Json(started).into_response()))
}

/// `POST /identity/mfa/webauthn/register/finish`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterFinishBody {
    /// From the start.
    ceremony: String,
    /// What `navigator.credentials.create` returned, as JSON (`PublicKeyCredential.toJSON()`).
    #[schema(value_type = Object)]
    credential: serde_json::Value,
}

/// Finishes adding a passkey or security key: a confirmed second factor at once (the first
/// factor comes with ten recovery codes, shown once). A discoverable one also signs in without
/// a password (`POST /auth/passkey/start`).
#[utoipa::path(post, path = "/identity/mfa/webauthn/register/finish", tag = "identity",
    request_body = RegisterFinishBody,
    responses((status = 201, description = "Registered", body = mfa::Confirmed)))]
async fn webauthn_register_finish(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Json(body): Json<RegisterFinishBody>,
) -> Result<Response> {
    let now = state.clock.now();
    let (ceremony, credential) = (&body.ceremony, &body.credential);
    let confirmed =
        mfa::webauthn::register_finish(&state, &principal, ceremony, credential, &ctx, now).await?;
    let res = (axum::http::StatusCode::CREATED, axum::Json(confirmed)).into_response();
    Ok(super::no_store(res))
}

/// Removes a second factor; needs a sign-in within the last five minutes that used a second
/// factor (RFC 9470 `insufficient_user_authentication` otherwise). With the last one the
/// recovery codes go too.
#[utoipa::path(delete, path = "/identity/mfa/{id}", tag = "identity",
    params(("id" = String, Path, description = "The factor's id")),
    responses((status = 204, description = "Removed")))]
async fn remove_factor(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    mfa::remove(&state, &principal, &id, &ctx, state.clock.now()).await?;
    Ok(no_content())
}

/// Replaces the recovery codes (the old ones stop working); needs a second factor and a sign-in
/// within the last five minutes that used one.
#[utoipa::path(post, path = "/identity/mfa/recovery-codes", tag = "identity",
    responses((status = 200, description = "Ten new codes, shown once", body = mfa::RecoveryCodes)))]
async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
) -> Result<Response> {
    let now = state.clock.now();
    let codes = mfa::regenerate_recovery_codes(&state, &principal, &ctx, now).await?;
    Ok(super::no_store(axum::Json(codes).into_response()))
}

/// The signed-in user.
#[utoipa::path(get, path = "/identity/me", tag = "identity",
    responses((status = 200, description = "The caller's account", body = UserView)))]
async fn me(State(state): State<AppState>, Caller(principal): Caller) -> Result<Response> {
    Ok(axum::Json(accounts::me(&state, &principal).await?).into_response())
}

/// The signed-in user's profile.
#[utoipa::path(get, path = "/identity/profile", tag = "identity",
    responses((status = 200, description = "The profile", body = ProfileView)))]
async fn get_profile(State(state): State<AppState>, Caller(principal): Caller) -> Result<Response> {
    Ok(axum::Json(profile::get(&state.store, &principal).await?).into_response())
}

/// Changes the profile: an absent field stays as it is, `null` clears it.
#[utoipa::path(patch, path = "/identity/profile", tag = "identity", request_body = ProfilePatch,
    responses((status = 200, description = "The profile as changed", body = ProfileView)))]
async fn patch_profile(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Json(patch): Json<ProfilePatch>,
) -> Result<Response> {
    let view = profile::update(&state.store, &principal, patch, state.clock.now()).await?;
    Ok(axum::Json(view).into_response())
}

/// `POST /identity/password`.
#[derive(Deserialize, utoipa::ToSchema)]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

/// Changes the password; the caller's other sessions end.
#[utoipa::path(post, path = "/identity/password", tag = "identity", request_body = PasswordBody,
    responses((status = 204, description = "Changed")))]
async fn change_password(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Json(body): Json<PasswordBody>,
) -> Result<Response> {
    let now = state.clock.now();
    accounts::change_password(
        &state,
        &principal,
        &body.current_password,
        &body.new_password,
        &ctx,
        now,
    )
    .await?;
    Ok(no_content())
}

/// The signed-in user's live sessions, the current one marked.
#[utoipa::path(get, path = "/identity/sessions", tag = "identity",
    responses((status = 200, description = "The sessions", body = SessionList)))]
async fn list_sessions(
    State(state): State<AppState>,
    Caller(principal): Caller,
) -> Result<Response> {
    let list = sessions::list(&state.store, &principal, state.clock.now()).await?;
    let current = principal.user().map(|u| u.session_id.as_str());
    let views: Vec<_> = list
        .into_iter()
        .map(|s| sessions::SessionView::new(s, current))
        .collect();
    Ok(axum::Json(sessions::SessionList { sessions: views }).into_response())
}

/// Ends one of the signed-in user's sessions.
#[utoipa::path(delete, path = "/identity/sessions/{id}", tag = "identity",
    params(("id" = String, Path, description = "The session's id")),
    responses((status = 204, description = "Ended")))]
async fn revoke_session(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    sessions::revoke_own(
        &state.store,
        &state.sessions,
        &principal,
        &id,
        &ctx,
        state.clock.now(),
    )
    .await?;
    Ok(no_content())
}
