//! `/admin/users`: operator account management (`Permission::ManageUsers`), see
//! [`crate::accounts::admin`].

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::extract::{Caller, Context, Json};
use super::no_content;
use crate::accounts::admin::{self, AccountPatch, NewAccount, Search};
use crate::app::AppState;
use crate::audit::By;
use crate::authz::Permission;
use crate::error::Result;

pub fn router() -> super::Routes {
    super::Routes::default()
        .guarded(
            "/admin/users",
            get(search).post(create),
            Permission::ManageUsers,
        )
        .guarded(
            "/admin/users/{id}",
            get(read).patch(update).delete(erase),
            Permission::ManageUsers,
        )
        .guarded(
            "/admin/users/{id}/deactivate",
            post(deactivate),
            Permission::ManageUsers,
        )
        .guarded(
            "/admin/users/{id}/reactivate",
            post(reactivate),
            Permission::ManageUsers,
        )
        .guarded(
            "/admin/users/{id}/sessions",
            get(sessions).delete(end_sessions),
            Permission::ManageUsers,
        )
}

async fn create(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Json(input): Json<NewAccount>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    let user = admin::create(&state.core, input, by, state.clock.now()).await?;
    Ok((StatusCode::CREATED, axum::Json(user)).into_response())
}

/// `?email=<prefix>&status=&role=&after=<next_cursor>&limit=`.
async fn search(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Query(q): Query<Search>,
) -> Result<Response> {
    Ok(axum::Json(admin::search(&state.core, &principal, q).await?).into_response())
}

async fn read(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(axum::Json(admin::get(&state.core, &principal, &id).await?).into_response())
}

async fn update(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
    Json(patch): Json<AccountPatch>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    let user = admin::update(&state.core, &id, patch, by, state.clock.now()).await?;
    Ok(axum::Json(user).into_response())
}

/// Erasure: 204, then the user is gone (404).
async fn erase(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    admin::erase(&state.core, &id, by, state.clock.now()).await?;
    Ok(no_content())
}

/// Deactivates a user and ends their sessions (`UserDeactivatedV1`).
async fn deactivate(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    admin::deactivate(&state.core, &id, by, state.clock.now()).await?;
    Ok(no_content())
}

async fn reactivate(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    admin::reactivate(&state.core, &id, by, state.clock.now()).await?;
    Ok(no_content())
}

async fn sessions(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let list = admin::sessions(&state.core, &principal, &id, state.clock.now()).await?;
    let views: Vec<_> = list
        .into_iter()
        .map(|s| crate::sessions::SessionView::new(s, None))
        .collect();
    Ok(axum::Json(serde_json::json!({ "sessions": views })).into_response())
}

async fn end_sessions(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    let n = admin::end_sessions(&state.core, &id, by, state.clock.now()).await?;
    Ok(axum::Json(serde_json::json!({ "revoked": n })).into_response())
}
