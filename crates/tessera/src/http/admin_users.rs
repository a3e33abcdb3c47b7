//! `/admin/users`: operator account management (`Permission::ManageUsers`), see
//! [`crate::accounts::admin`].

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::routes;

use super::extract::{Caller, Context, Json};
use super::{Access, no_content};
use crate::accounts::admin::{self, AccountPatch, NewAccount, Page, Search, UserDetail};
use crate::app::AppState;
use crate::audit::By;
use crate::authz::Permission;
use crate::error::Result;
use crate::sessions::{Revoked, SessionList};

pub fn router() -> super::Routes {
    let access = Access::Permission(Permission::ManageUsers);
    super::Routes::default()
        .api(routes!(search, create), access)
        .api(routes!(read, update, erase), access)
        .api(routes!(deactivate), access)
        .api(routes!(reactivate), access)
        .api(routes!(sessions, end_sessions), access)
}

/// The `{id}` of a user.
const ID: &str = "The user's id";

/// Creates a user. Without a password the user sets one through a password reset.
#[utoipa::path(post, path = "/admin/users", tag = "admin",
    request_body = NewAccount,
    responses((status = 201, description = "The new user", body = UserDetail)))]
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

/// Searches users by email prefix, status and role, a page at a time (`after` = the previous
/// page's `next_cursor`).
#[utoipa::path(get, path = "/admin/users", tag = "admin", params(Search),
    responses((status = 200, description = "One page of users", body = Page)))]
async fn search(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Query(q): Query<Search>,
) -> Result<Response> {
    Ok(axum::Json(admin::search(&state.core, &principal, q).await?).into_response())
}

/// A user with their profile.
#[utoipa::path(get, path = "/admin/users/{id}", tag = "admin", params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "The user", body = UserDetail)))]
async fn read(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(axum::Json(admin::get(&state.core, &principal, &id).await?).into_response())
}

/// Changes a user's email, verification, roles or profile; an absent field stays as it is.
#[utoipa::path(patch, path = "/admin/users/{id}", tag = "admin", params(("id" = String, Path, description = ID)),
    request_body = AccountPatch,
    responses((status = 200, description = "The user as changed", body = UserDetail)))]
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

/// Erases a user: the account and its personal data go, audit entries keep a pseudonymous id,
/// and `UserDeletedV1` is emitted. Afterwards the user is gone (404).
#[utoipa::path(delete, path = "/admin/users/{id}", tag = "admin", params(("id" = String, Path, description = ID)),
    responses((status = 204, description = "Erased")))]
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
#[utoipa::path(post, path = "/admin/users/{id}/deactivate", tag = "admin", params(("id" = String, Path, description = ID)),
    responses((status = 204, description = "Deactivated")))]
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

/// Reactivates a deactivated user.
#[utoipa::path(post, path = "/admin/users/{id}/reactivate", tag = "admin", params(("id" = String, Path, description = ID)),
    responses((status = 204, description = "Reactivated")))]
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

/// A user's live sessions.
#[utoipa::path(get, path = "/admin/users/{id}/sessions", tag = "admin", params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "The user's sessions", body = SessionList)))]
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
    Ok(axum::Json(SessionList { sessions: views }).into_response())
}

/// Ends every session of a user.
#[utoipa::path(delete, path = "/admin/users/{id}/sessions", tag = "admin", params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "How many sessions were ended", body = Revoked)))]
async fn end_sessions(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    let n = admin::end_sessions(&state.core, &id, by, state.clock.now()).await?;
    Ok(axum::Json(Revoked { revoked: n }).into_response())
}
