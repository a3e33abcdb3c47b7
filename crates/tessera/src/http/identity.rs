//! `/identity/*`: the signed-in user's own account, profile, password and sessions.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};

use super::extract::{Authenticated, Context, Json};
use super::no_content;
use crate::accounts::profile::{self, ProfilePatch};
use crate::accounts::{self, UserView};
use crate::app::AppState;
use crate::clock::rfc3339;
use crate::error::{Error, Result};
use crate::sessions;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/identity/me", get(me))
        .route("/identity/profile", get(get_profile).patch(patch_profile))
        .route("/identity/password", post(change_password))
        .route("/identity/sessions", get(list_sessions))
        .route("/identity/sessions/{id}", delete(revoke_session))
}

async fn me(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
) -> Result<Response> {
    let user = accounts::find_user(&state, &claims.sub)
        .await?
        .ok_or_else(Error::invalid_token)?;
    Ok(axum::Json(UserView::from(&user)).into_response())
}

async fn get_profile(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
) -> Result<Response> {
    Ok(axum::Json(profile::get(&state.store, &claims.sub).await?).into_response())
}

async fn patch_profile(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Json(patch): Json<ProfilePatch>,
) -> Result<Response> {
    let view = profile::update(&state.store, &claims.sub, patch, state.clock.now()).await?;
    Ok(axum::Json(view).into_response())
}

#[derive(Deserialize)]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Context(ctx): Context,
    Json(body): Json<PasswordBody>,
) -> Result<Response> {
    let now = state.clock.now();
    accounts::change_password(
        &state,
        &claims.sub,
        claims.sid.as_deref().unwrap_or_default(),
        &body.current_password,
        &body.new_password,
        &ctx,
        now,
    )
    .await?;
    Ok(no_content())
}

#[derive(Serialize)]
struct SessionView {
    id: String,
    created_at: String,
    last_used_at: String,
    expires_at: String,
    user_agent: Option<String>,
    ip: Option<String>,
    current: bool,
}

async fn list_sessions(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
) -> Result<Response> {
    let list = sessions::list(&state.store, &claims.sub, state.clock.now()).await?;
    let views: Vec<SessionView> = list
        .into_iter()
        .map(|s| SessionView {
            current: claims.sid.as_deref() == Some(s.id.as_str()),
            id: s.id,
            created_at: rfc3339(s.created_at),
            last_used_at: rfc3339(s.last_used_at),
            expires_at: rfc3339(s.expires_at),
            user_agent: s.user_agent,
            ip: s.ip,
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "sessions": views })).into_response())
}

async fn revoke_session(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    sessions::revoke_own(
        &state.store,
        &state.sessions,
        &claims.sub,
        &id,
        &ctx,
        state.clock.now(),
    )
    .await?;
    Ok(no_content())
}
