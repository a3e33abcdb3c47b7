//! `/admin/clients`: OAuth client management (operator permissions, see [`crate::authz`]).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::extract::{Caller, Context, Json};
use crate::app::AppState;
use crate::audit::By;
use crate::authz::Permission;
use crate::error::Result;
use crate::oauth::clients::{self, ClientSpec};

pub fn router() -> super::Routes {
    super::Routes::default()
        .guarded(
            "/admin/clients",
            get(list_clients).post(create_client),
            Permission::ManageClients,
        )
        .guarded(
            "/admin/clients/{id}",
            get(get_client).patch(update_client),
            Permission::ManageClients,
        )
        .guarded(
            "/admin/clients/{id}/rotate-secret",
            post(rotate_secret),
            Permission::ManageClients,
        )
        .guarded(
            "/admin/clients/{id}/deactivate",
            post(deactivate),
            Permission::ManageClients,
        )
}

async fn create_client(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Json(spec): Json<ClientSpec>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    let registered = clients::create(&state.store, spec, by, state.clock.now()).await?;
    Ok(super::no_store(
        (StatusCode::CREATED, axum::Json(registered)).into_response(),
    ))
}

#[derive(Deserialize)]
struct Page {
    after: Option<String>,
    limit: Option<i64>,
}

async fn list_clients(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Query(page): Query<Page>,
) -> Result<Response> {
    let list = clients::list(
        &state.store,
        &principal,
        page.after.as_deref(),
        page.limit.unwrap_or(100),
    )
    .await?;
    Ok(axum::Json(serde_json::json!({ "clients": list })).into_response())
}

async fn get_client(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(axum::Json(clients::get(&state.store, &principal, &id).await?).into_response())
}

async fn update_client(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
    Json(spec): Json<ClientSpec>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    let client = clients::update(
        &state.store,
        &state.clients,
        &id,
        spec,
        by,
        state.clock.now(),
    )
    .await?;
    Ok(axum::Json(client).into_response())
}

async fn rotate_secret(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    let registered =
        clients::rotate_secret(&state.store, &state.clients, &id, by, state.clock.now()).await?;
    Ok(super::no_store(axum::Json(registered).into_response()))
}

async fn deactivate(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    let client =
        clients::deactivate(&state.store, &state.clients, &id, by, state.clock.now()).await?;
    Ok(axum::Json(client).into_response())
}
