//! `/tenants/*`: tenants, members and roles. Handlers extract, call `crate::tenants` and
//! respond; what a caller may do is decided there, through `authz`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};

use super::extract::{Caller, Context, Json};
use crate::app::AppState;
use crate::authz::Permission;
use crate::error::Result;
use crate::tenants::{self, CreateTenant, UpdateTenant, members};

pub fn router() -> super::Routes {
    super::Routes::default()
        .guarded("/tenants", get(list).post(create), Permission::UseTenants)
        .guarded(
            "/tenants/{id}",
            get(get_one).patch(update).delete(delete),
            Permission::UseTenants,
        )
        .guarded(
            "/tenants/{id}/suspend",
            post(suspend),
            Permission::ManageTenants,
        )
        .guarded(
            "/tenants/{id}/reactivate",
            post(reactivate),
            Permission::ManageTenants,
        )
        .guarded(
            "/tenants/{id}/members",
            get(list_members),
            Permission::UseTenants,
        )
        .guarded(
            "/tenants/{id}/members/{user_id}",
            patch(set_member_roles).delete(remove_member),
            Permission::UseTenants,
        )
}

async fn create(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Json(input): Json<CreateTenant>,
) -> Result<Response> {
    let tenant = tenants::create(&state, &principal, input, &ctx, state.clock.now()).await?;
    Ok((StatusCode::CREATED, axum::Json(tenant)).into_response())
}

async fn list(State(state): State<AppState>, Caller(principal): Caller) -> Result<Response> {
    let mine = tenants::list_mine(&state, &principal).await?;
    Ok(axum::Json(serde_json::json!({ "tenants": mine })).into_response())
}

async fn get_one(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(axum::Json(tenants::get(&state, &principal, &id).await?).into_response())
}

async fn update(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
    Json(input): Json<UpdateTenant>,
) -> Result<Response> {
    let now = state.clock.now();
    let tenant = tenants::update(&state, &principal, &id, input, &ctx, now).await?;
    Ok(axum::Json(tenant).into_response())
}

async fn delete(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    tenants::delete(&state, &principal, &id, &ctx, state.clock.now()).await?;
    Ok(super::no_content())
}

async fn suspend(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    let now = state.clock.now();
    let tenant = tenants::set_suspended(&state, &principal, &id, true, &ctx, now).await?;
    Ok(axum::Json(tenant).into_response())
}

async fn reactivate(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    let now = state.clock.now();
    let tenant = tenants::set_suspended(&state, &principal, &id, false, &ctx, now).await?;
    Ok(axum::Json(tenant).into_response())
}

async fn list_members(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let list = members::list(&state, &principal, &id).await?;
    Ok(axum::Json(serde_json::json!({ "members": list })).into_response())
}

async fn set_member_roles(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path((id, user_id)): Path<(String, String)>,
    Json(input): Json<members::SetRoles>,
) -> Result<Response> {
    let now = state.clock.now();
    let member = members::set_roles(&state, &principal, &id, &user_id, input, &ctx, now).await?;
    Ok(axum::Json(member).into_response())
}

async fn remove_member(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<Response> {
    members::remove(&state, &principal, &id, &user_id, &ctx, state.clock.now()).await?;
    Ok(super::no_content())
}
