//! Operations and discovery: health, readiness, the JWKS.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::keys::JWKS_CACHE_CONTROL;

pub fn router() -> super::Routes {
    super::Routes::default()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/metrics", get(metrics))
}

/// Prometheus text format (`docs/operations.md` lists the metrics).
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
async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// The database answers within two seconds; 503 otherwise, and from the start of shutdown.
async fn readyz(State(state): State<AppState>) -> Result<Response> {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Error::Unavailable("shutting down"));
    }
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => Ok(axum::Json(serde_json::json!({ "status": "ready" })).into_response()),
        Ok(Err(e)) => {
            tracing::warn!(error = ?e, "readiness: database error");
            Err(Error::Unavailable("the database is unreachable"))
        }
        Err(_) => Err(Error::Unavailable("the database did not answer in time")),
    }
}

/// The public signing keys (RFC 7517), serialised once per key-set load.
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
