//! `/admin/*`: operator endpoints (admin role).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::extract::{Admin, Json};
use crate::app::AppState;
use crate::error::Result;
use crate::oauth::clients::{self, ClientSpec};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/clients", get(list_clients).post(create_client))
        .route("/admin/clients/{id}", get(get_client).patch(update_client))
        .route("/admin/clients/{id}/rotate-secret", post(rotate_secret))
        .route("/admin/clients/{id}/deactivate", post(deactivate))
}

async fn create_client(
    State(state): State<AppState>,
    _: Admin,
    Json(spec): Json<ClientSpec>,
) -> Result<Response> {
    let registered = clients::create(&state.store, spec, state.clock.now()).await?;
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
    _: Admin,
    Query(page): Query<Page>,
) -> Result<Response> {
    let list = clients::list(
        &state.store,
        page.after.as_deref(),
        page.limit.unwrap_or(100),
    )
    .await?;
    Ok(axum::Json(serde_json::json!({ "clients": list })).into_response())
}

async fn get_client(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(axum::Json(clients::get(&state.store, &id).await?).into_response())
}

async fn update_client(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Json(spec): Json<ClientSpec>,
) -> Result<Response> {
    Ok(axum::Json(
        clients::update(&state.store, &state.clients, &id, spec, state.clock.now()).await?,
    )
    .into_response())
}

async fn rotate_secret(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response> {
    let registered =
        clients::rotate_secret(&state.store, &state.clients, &id, state.clock.now()).await?;
    Ok(super::no_store(axum::Json(registered).into_response()))
}

async fn deactivate(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(
        axum::Json(
            clients::deactivate(&state.store, &state.clients, &id, state.clock.now()).await?,
        )
        .into_response(),
    )
}
