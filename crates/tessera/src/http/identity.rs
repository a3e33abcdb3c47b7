//! `/identity/*`: the signed-in user's own account, profile, password and sessions.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;

use super::extract::{Caller, Context, Json};
use super::no_content;
use crate::accounts;
use crate::accounts::profile::{self, ProfilePatch};
use crate::app::AppState;
use crate::authz::Permission;
use crate::error::Result;
use crate::sessions;

pub fn router() -> super::Routes {
    super::Routes::default()
        .guarded("/identity/me", get(me), Permission::ReadOwnAccount)
        .guarded(
            "/identity/profile",
            get(get_profile).patch(patch_profile),
            Permission::ReadOwnAccount,
        )
        .guarded(
            "/identity/password",
            post(change_password),
            Permission::ManageOwnAccount,
        )
        .guarded(
            "/identity/sessions",
            get(list_sessions),
            Permission::ReadOwnAccount,
        )
        .guarded(
            "/identity/sessions/{id}",
            delete(revoke_session),
            Permission::ManageOwnAccount,
        )
}

async fn me(State(state): State<AppState>, Caller(principal): Caller) -> Result<Response> {
    Ok(axum::Json(accounts::me(&state, &principal).await?).into_response())
}

async fn get_profile(State(state): State<AppState>, Caller(principal): Caller) -> Result<Response> {
    Ok(axum::Json(profile::get(&state.store, &principal).await?).into_response())
}

async fn patch_profile(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Json(patch): Json<ProfilePatch>,
) -> Result<Response> {
    let view = profile::update(&state.store, &principal, patch, state.clock.now()).await?;
    Ok(axum::Json(view).into_response())
}

#[derive(Deserialize)]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

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
    Ok(axum::Json(serde_json::json!({ "sessions": views })).into_response())
}

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
