//! The AuthZEN decision point (`/access/v1/*`) and its metadata; the decisions are
//! `crate::access`'s.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use utoipa_axum::routes;

use super::Access;
use super::extract::{Caller, Json};
use crate::access::{self, Evaluation, Evaluations};
use crate::app::AppState;
use crate::authz::Permission;
use crate::error::Result;

pub fn router() -> super::Routes {
    super::Routes::default()
        .api(
            routes!(evaluation),
            Access::Permission(Permission::EvaluateAccess),
        )
        .api(
            routes!(evaluations),
            Access::Permission(Permission::EvaluateAccess),
        )
        .api(routes!(metadata), Access::Public)
}

/// AuthZEN 1.0 §6: one access decision.
#[utoipa::path(post, path = "/access/v1/evaluation", tag = "access", request_body = Evaluation,
    responses((status = 200, description = "The decision", body = access::Decision)))]
async fn evaluation(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Json(input): Json<Evaluation>,
) -> Result<Response> {
    let decision = access::evaluate(&state, &principal, input).await?;
    Ok(axum::Json(decision).into_response())
}

/// AuthZEN 1.0 §7: several access decisions with shared defaults.
#[utoipa::path(post, path = "/access/v1/evaluations", tag = "access", request_body = Evaluations,
    responses((status = 200, description = "The decisions, in order", body = access::BatchAnswer)))]
async fn evaluations(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Json(input): Json<Evaluations>,
) -> Result<Response> {
    let answer = access::evaluate_many(&state, &principal, input).await?;
    Ok(axum::Json(answer).into_response())
}

/// AuthZEN 1.0 §9.1: the decision point's metadata.
#[utoipa::path(get, path = "/.well-known/authzen-configuration", tag = "access",
    responses((status = 200, description = "The PDP metadata (AuthZEN 1.0 §9.1)", body = serde_json::Value)))]
async fn metadata(State(state): State<AppState>) -> Response {
    axum::Json(access::metadata(&state.config.issuer)).into_response()
}
