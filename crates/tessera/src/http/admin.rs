//! `/admin/clients`: OAuth client management (operator permissions, see [`crate::authz`]).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::routes;

use super::Access;
use super::extract::{Caller, Context, Json};
use crate::app::AppState;
use crate::audit::By;
use crate::authz::Permission;
use crate::error::Result;
use crate::oauth::clients::{self, Client, ClientList, ClientSpec, Registered};

pub fn router() -> super::Routes {
    let access = Access::Permission(Permission::ManageClients);
    super::Routes::default()
        .api(routes!(list_clients, create_client), access)
        .api(routes!(get_client, update_client), access)
        .api(routes!(rotate_secret), access)
        .api(routes!(deactivate), access)
}

/// The `{id}` of a client.
const ID: &str = "The client's `client_id`";

/// Registers an OAuth client; a confidential client's secret is in this answer only.
#[utoipa::path(post, path = "/admin/clients", tag = "admin", request_body = ClientSpec,
    responses((status = 201, description = "The client, with its secret if confidential", body = Registered)))]
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

/// `?after=<client_id>&limit=`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Page {
    after: Option<String>,
    limit: Option<i64>,
}

/// The registered clients, a page at a time.
#[utoipa::path(get, path = "/admin/clients", tag = "admin", params(Page),
    responses((status = 200, description = "One page of clients", body = ClientList)))]
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
    Ok(axum::Json(ClientList { clients: list }).into_response())
}

/// One client.
#[utoipa::path(get, path = "/admin/clients/{id}", tag = "admin", params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "The client", body = Client)))]
async fn get_client(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(axum::Json(clients::get(&state.store, &principal, &id).await?).into_response())
}

/// Changes a client; an absent field stays as it is.
#[utoipa::path(patch, path = "/admin/clients/{id}", tag = "admin", params(("id" = String, Path, description = ID)),
    request_body = ClientSpec,
    responses((status = 200, description = "The client as changed", body = Client)))]
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

/// Gives a confidential client a new secret (shown this once); the old one stops working.
#[utoipa::path(post, path = "/admin/clients/{id}/rotate-secret", tag = "admin", params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "The client with its new secret", body = Registered)))]
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

/// Deactivates a client: its tokens stop working.
#[utoipa::path(post, path = "/admin/clients/{id}/deactivate", tag = "admin", params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "The client as deactivated", body = Client)))]
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
