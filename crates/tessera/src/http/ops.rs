//! Operations and discovery: health, readiness, the JWKS.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::routes;

use super::Access;
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::keys::JWKS_CACHE_CONTROL;

/// `{"status": "ok"}` or `{"status": "ready"}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Status {
    #[schema(example = "ok")]
    status: &'static str,
}

pub fn router() -> super::Routes {
    super::Routes::default()
        .api(routes!(healthz), Access::Public)
        .api(routes!(readyz), Access::Public)
        .api(routes!(jwks), Access::Public)
        .api(routes!(metrics), Access::Scraper)
}

/// Prometheus metrics (`docs/operations.md` lists them).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "The Prometheus text format", content_type = "text/plain; version=0.0.4")))]
async fn metrics(State(state): State<AppState>, _: super::extract::Scraper) -> Result<Response> {
    metrics_response(&state).await
}

/// The `/metrics` answer, also served without a credential on `TESSERA_METRICS__LISTEN`.
pub async fn metrics_response(state: &AppState) -> Result<Response> {
    if !state.config.metrics.enabled {
        return Err(Error::NotFound);
    }
    let text = crate::metrics::render(&state.core)
        .await
        .ok_or(Error::Unavailable(
            "metrics are not recorded in this process",
        ))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Up", body = Status)))]
async fn healthz() -> Response {
    axum::Json(Status { status: "ok" }).into_response()
}

/// Ready for traffic: the database answers within two seconds.
///
/// 503 otherwise, and from the start of a graceful shutdown.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Status),
        (status = 503, description = "Not ready, or shutting down", body = super::openapi::ErrorDoc)))]
async fn readyz(State(state): State<AppState>) -> Result<Response> {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Error::Unavailable("shutting down"));
    }
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => Ok(axum::Json(Status { status: "ready" }).into_response()),
        Ok(Err(e)) => {
            tracing::warn!(error = ?e, "readiness: database error");
            Err(Error::Unavailable("the database is unreachable"))
        }
        Err(_) => Err(Error::Unavailable("the database did not answer in time")),
    }
}

/// The public signing keys (a JWK Set, RFC 7517 §5).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "oauth",
    responses((status = 200, description = "The JWK Set of the keys that sign tokens", body = serde_json::Value)))]
async fn jwks(State(state): State<AppState>) -> Response {
    let body = state.keys.current().jwks.clone();
    let mut res = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(JWKS_CACHE_CONTROL),
    );
    res
}
