//! `/admin/*`: operator endpoints (bearer token with the `admin` role).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::routes;

use super::Access;
use super::extract::Caller;
use crate::app::AppState;
use crate::audit;
use crate::audit::AuditPage;
use crate::authz::Permission;
use crate::error::{Error, Result};
use crate::events::{self, EventPage, Filter};

pub fn router() -> super::Routes {
    super::Routes::default()
        .api(
            routes!(list_events),
            Access::Permission(Permission::ReadEvents),
        )
        .api(
            routes!(event_stats),
            Access::Permission(Permission::ReadEvents),
        )
        .api(
            routes!(list_audit),
            Access::Permission(Permission::ReadAuditLog),
        )
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// `all`, `pending`, `published` or `failed`.
    status: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

/// Outbox events in order, a page at a time.
#[utoipa::path(get, path = "/admin/events", tag = "admin", params(EventsQuery),
    responses((status = 200, description = "One page of events", body = EventPage)))]
async fn list_events(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Query(q): Query<EventsQuery>,
) -> Result<Response> {
    let filter = match q.status.as_deref() {
        None => Filter::All,
        Some(s) => Filter::parse(s)
            .ok_or_else(|| Error::invalid("status", "must be all, pending, published or failed"))?,
    };
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| Error::invalid("after", "must be a cursor from next_cursor"))?,
        ),
    };
    let (events, next) = events::list(
        &state.store,
        &principal,
        filter,
        after,
        q.limit.unwrap_or(100),
    )
    .await?;
    Ok(axum::Json(events::EventPage {
        events,
        next_cursor: next.map(|n| n.to_string()),
    })
    .into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    result: Option<String>,
    from: Option<String>,
    to: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

/// Audit entries, oldest first, by actor, action, target, result and time.
///
/// `from` and `to` are RFC 3339 times; `after` is the previous page's `next_cursor`.
#[utoipa::path(get, path = "/admin/audit", tag = "admin", params(AuditQuery),
    responses((status = 200, description = "One page of audit entries", body = AuditPage)))]
async fn list_audit(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Response> {
    let filter = audit::Filter {
        actor: q.actor,
        action: q.action,
        target: q.target,
        result: q.result,
        from: q.from,
        to: q.to,
        after: q.after,
        limit: q.limit,
    };
    let (entries, next) = audit::list(&state.store, &principal, &filter).await?;
    Ok(axum::Json(audit::AuditPage {
        entries,
        next_cursor: next,
    })
    .into_response())
}

/// Outbox and mail queue counts per status (`parked` events need an operator).
#[utoipa::path(get, path = "/admin/events/stats", tag = "admin",
    responses((status = 200, description = "`{\"outbox\": {\"pending\", \"published\", \"parked\"}, \"mail\": {status: count}}`", body = serde_json::Value)))]
async fn event_stats(State(state): State<AppState>, Caller(principal): Caller) -> Result<Response> {
    Ok(axum::Json(events::stats(&state.store, &principal).await?).into_response())
}
