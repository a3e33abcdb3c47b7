//! The AuthZEN decision point (`/access/v1/*`) and its metadata; the decisions are
//! `crate::access`'s.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::extract::{Caller, Json};
use crate::access::{self, Evaluation, Evaluations};
use crate::app::AppState;
use crate::authz::Permission;
use crate::error::Result;

pub fn router() -> super::Routes {
    super::Routes::default()
        .guarded(
            "/access/v1/evaluation",
            post(evaluation),
            Permission::EvaluateAccess,
        )
        .guarded(
            "/access/v1/evaluations",
            post(evaluations),
            Permission::EvaluateAccess,
        )
        .route("/.well-known/authzen-configuration", get(metadata))
}

/// AuthZEN 1.0 §6: one decision.
async fn evaluation(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Json(input): Json<Evaluation>,
) -> Result<Response> {
    let decision = access::evaluate(&state, &principal, input).await?;
    Ok(axum::Json(decision).into_response())
}

/// AuthZEN 1.0 §7: several decisions with shared defaults.
async fn evaluations(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Json(input): Json<Evaluations>,
) -> Result<Response> {
    let answer = access::evaluate_many(&state, &principal, input).await?;
    Ok(axum::Json(answer).into_response())
}

/// AuthZEN 1.0 §9.1: the PDP's metadata.
async fn metadata(State(state): State<AppState>) -> Response {
    axum::Json(access::metadata(&state.config.issuer)).into_response()
}
