//! `/admin/keys`, `/admin/webhooks` and `/admin/events/retry`: what `tessera keys`, `tessera
//! webhooks` and `tessera events retry-failed` do, over HTTP, audited with the administrator as
//! the actor.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;

use super::extract::{Caller, Context, Json};
use super::no_content;
use crate::app::AppState;
use crate::audit::By;
use crate::authz::Permission;
use crate::error::Result;
use crate::events::{self, webhooks};
use crate::keys::admin::{self as keys, Rotation};

pub fn router() -> super::Routes {
    super::Routes::default()
        .guarded("/admin/keys", get(list_keys), Permission::ManageKeys)
        .guarded(
            "/admin/keys/rotate",
            post(rotate_key),
            Permission::ManageKeys,
        )
        .guarded(
            "/admin/keys/{kid}/revoke",
            post(revoke_key),
            Permission::ManageKeys,
        )
        .guarded(
            "/admin/webhooks",
            get(list_webhooks).post(add_webhook),
            Permission::ManageWebhooks,
        )
        .guarded(
            "/admin/webhooks/{id}",
            delete(remove_webhook),
            Permission::ManageWebhooks,
        )
        .guarded(
            "/admin/webhooks/{id}/test",
            post(test_webhook),
            Permission::ManageWebhooks,
        )
        .guarded(
            "/admin/events/retry",
            post(retry_parked),
            Permission::ManageEvents,
        )
}

async fn list_keys(State(state): State<AppState>, Caller(principal): Caller) -> Result<Response> {
    let list = keys::list(&state.core, &principal, state.clock.now()).await?;
    Ok(axum::Json(serde_json::json!({ "keys": list })).into_response())
}

async fn rotate_key(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Json(input): Json<Rotation>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    let rotated = keys::rotate(&state.core, input, by, state.clock.now()).await?;
    Ok((StatusCode::CREATED, axum::Json(rotated)).into_response())
}

async fn revoke_key(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(kid): Path<String>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    keys::revoke(&state.core, &kid, by, state.clock.now()).await?;
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWebhook {
    url: String,
    events: Vec<String>,
}

/// 201 with the signing secret, shown only in this answer.
async fn add_webhook(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Json(input): Json<NewWebhook>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    let (hook, secret) = webhooks::add(
        &state.store,
        &state.master,
        &input.url,
        &input.events,
        by,
        state.clock.now(),
    )
    .await?;
    let mut body = serde_json::to_value(&hook).unwrap_or_default();
    body["secret"] = secret.into();
    Ok(super::no_store(
        (StatusCode::CREATED, axum::Json(body)).into_response(),
    ))
}

async fn list_webhooks(
    State(state): State<AppState>,
    Caller(principal): Caller,
) -> Result<Response> {
    let list = webhooks::list(&state.store, &principal).await?;
    Ok(axum::Json(serde_json::json!({ "webhooks": list })).into_response())
}

async fn remove_webhook(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    webhooks::remove(&state.store, &id, by, state.clock.now()).await?;
    Ok(no_content())
}

async fn test_webhook(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    let outcome = webhooks::send_test(&state.core, &id, by, state.clock.now()).await?;
    Ok(axum::Json(outcome).into_response())
}

async fn retry_parked(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    let retried = events::retry_parked(&state.store, by, state.clock.now()).await?;
    Ok(axum::Json(retried).into_response())
}
