//! `/identity/*`: the signed-in user's own account, profile, password and sessions.

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
