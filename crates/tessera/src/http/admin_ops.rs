//! `/admin/keys`, `/admin/webhooks` and `/admin/events/retry`: what `tessera keys`, `tessera
//! webhooks` and `tessera events retry-failed` do, over HTTP, audited with the administrator as
//! the actor.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::routes;

use super::extract::{Caller, Context, Json};
use super::{Access, no_content};
use crate::app::AppState;
use crate::audit::By;
use crate::authz::Permission;
use crate::error::Result;
use crate::events::webhooks::{NewWebhookView, TestOutcome, WebhookList};
use crate::events::{self, webhooks};
use crate::keys::admin::{self as keys, Rotation};

pub fn router() -> super::Routes {
    use Permission::{ManageEvents, ManageKeys, ManageWebhooks};
    super::Routes::default()
        .api(routes!(list_keys), Access::Permission(ManageKeys))
        .api(routes!(rotate_key), Access::Permission(ManageKeys))
        .api(routes!(revoke_key), Access::Permission(ManageKeys))
        .api(
            routes!(list_webhooks, add_webhook),
            Access::Permission(ManageWebhooks),
        )
        .api(routes!(remove_webhook), Access::Permission(ManageWebhooks))
        .api(routes!(test_webhook), Access::Permission(ManageWebhooks))
        .api(routes!(retry_parked), Access::Permission(ManageEvents))
}

/// `{"keys": […]}`: every signing key and where it is in its life.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct KeyList {
    keys: Vec<keys::KeyView>,
}

/// The signing keys: current, next, retired, revoked and expired.
#[utoipa::path(get, path = "/admin/keys", tag = "admin",
    responses((status = 200, description = "The keys", body = KeyList)))]
async fn list_keys(State(state): State<AppState>, Caller(principal): Caller) -> Result<Response> {
    let list = keys::list(&state.core, &principal, state.clock.now()).await?;
    Ok(axum::Json(KeyList { keys: list }).into_response())
}

/// Creates a signing key: published an hour ahead of use, or current at once with `now`.
#[utoipa::path(post, path = "/admin/keys/rotate", tag = "admin", request_body = Rotation,
    responses((status = 201, description = "The new key", body = keys::Rotated)))]
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

/// Revokes a key in an emergency: tokens it signed are refused at once.
#[utoipa::path(post, path = "/admin/keys/{kid}/revoke", tag = "admin",
    params(("kid" = String, Path, description = "The key's `kid`")),
    responses((status = 204, description = "Revoked")))]
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

/// `POST /admin/webhooks`: where to deliver, and which event types (`*` for all).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewWebhook {
    url: String,
    events: Vec<String>,
}

/// Adds a webhook; its signing secret is in this answer only.
#[utoipa::path(post, path = "/admin/webhooks", tag = "admin", request_body = NewWebhook,
    responses((status = 201, description = "The webhook and its secret", body = NewWebhookView)))]
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
    let body = NewWebhookView {
        webhook: hook,
        secret,
    };
    Ok(super::no_store(
        (StatusCode::CREATED, axum::Json(body)).into_response(),
    ))
}

/// The webhooks (never their secrets).
#[utoipa::path(get, path = "/admin/webhooks", tag = "admin",
    responses((status = 200, description = "The webhooks", body = WebhookList)))]
async fn list_webhooks(
    State(state): State<AppState>,
    Caller(principal): Caller,
) -> Result<Response> {
    let list = webhooks::list(&state.store, &principal).await?;
    Ok(axum::Json(WebhookList { webhooks: list }).into_response())
}

/// Removes a webhook and its pending deliveries.
#[utoipa::path(delete, path = "/admin/webhooks/{id}", tag = "admin",
    params(("id" = String, Path, description = "The webhook's id")),
    responses((status = 204, description = "Removed")))]
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

/// Sends a signed test event now and says what the endpoint answered.
#[utoipa::path(post, path = "/admin/webhooks/{id}/test", tag = "admin",
    params(("id" = String, Path, description = "The webhook's id")),
    responses((status = 200, description = "What the endpoint answered", body = TestOutcome)))]
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

/// Puts every parked event and webhook delivery back in its queue.
#[utoipa::path(post, path = "/admin/events/retry", tag = "admin",
    responses((status = 200, description = "How many were put back", body = events::Retried)))]
async fn retry_parked(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    let retried = events::retry_parked(&state.store, by, state.clock.now()).await?;
    Ok(axum::Json(retried).into_response())
}
