//! `/admin/*`: operator endpoints (bearer token with the `admin` role).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::extract::Caller;
use crate::app::AppState;
use crate::audit;
use crate::authz::Permission;
use crate::error::{Error, Result};
use crate::events::{self, Filter};

pub fn router() -> super::Routes {
    super::Routes::default()
        .guarded("/admin/events", get(list_events), Permission::ReadEvents)
        .guarded(
            "/admin/events/stats",
            get(event_stats),
            Permission::ReadEvents,
        )
        .guarded("/admin/audit", get(list_audit), Permission::ReadAuditLog)
}

#[derive(Deserialize)]
struct EventsQuery {
    status: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

/// Outbox events in order, `?status=pending|published|failed`, `?after=<next_cursor>`.
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
    Ok(axum::Json(serde_json::json!({
        "events": events,
        "next_cursor": next.map(|n| n.to_string()),
    }))
    .into_response())
}

#[derive(Deserialize)]
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

/// Audit entries, oldest first: `?actor=&action=&target=&result=&from=&to=&after=&limit=`.
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
    Ok(axum::Json(serde_json::json!({ "entries": entries, "next_cursor": next })).into_response())
}

/// Outbox and mail queue counts per status (`parked` events need an operator).
async fn event_stats(State(state): State<AppState>, Caller(principal): Caller) -> Result<Response> {
    Ok(axum::Json(events::stats(&state.store, &principal).await?).into_response())
}
