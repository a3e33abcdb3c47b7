//! Domain events through a transactional outbox.
//!
//! Every state change that other services care about appends one event to the `outbox` table in
//! the same database transaction as the change ([`append`]), so an event exists if and only if its
//! change committed. The [`relay`] publishes pending events to NATS JetStream in order per subject
//! (the user id), [`webhooks`] delivers them to operator-registered URLs, and both retry with
//! backoff. Nothing here carries a password, a hash or a raw token, except the `link` of the
//! `…requested` events when the operator chose event-driven mail (`TESSERA_MAIL__TRANSPORT=events`).

pub mod relay;
pub mod types;
pub mod webhooks;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::authz::{self, Permission, Principal};
use crate::clock::rfc3339;
use crate::context::RequestContext;
use crate::error::Result;
use crate::store::Tx;
use crate::store::outbox::{self as store_outbox, EventRow, NewEvent};

pub use types::*;

/// The wire shape of every event: on NATS, in webhooks, in `GET /admin/events`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Envelope<T> {
    /// UUIDv7, unique per event: the JetStream `Nats-Msg-Id`, for de-duplication.
    pub event_id: String,
    /// `identity.<aggregate>.<what happened>.v<version>`.
    pub event_type: String,
    /// When the change committed (RFC 3339, UTC, seconds).
    pub occurred_at: String,
    /// The `X-Correlation-ID` of the request that caused the change.
    pub correlation_id: String,
    /// The W3C trace id of that request, when it had one (32 lowercase hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The W3C `traceparent` of that request's span: NATS messages and webhook deliveries carry
    /// it as their `traceparent` header, so a consumer's span joins the trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The aggregate: the user id (empty for a failed login naming no known account), or the
    /// tenant id for tenant events.
    pub subject: String,
    /// The tenant the event happened in, for tenant events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// The event's own fields.
    pub data: T,
}

/// An event type: its name and the aggregate it belongs to.
pub trait DomainEvent: Serialize + JsonSchema {
    /// The `event_type`, such as `identity.user.registered.v1`.
    const TYPE: &'static str;
    /// The aggregate id (the user id, or the tenant id).
    fn subject(&self) -> &str;
    /// The tenant the event belongs to, if any.
    fn tenant(&self) -> Option<&str> {
        None
    }
}

/// Appends `event` to the outbox inside `tx`, and a delivery row for every webhook that
/// subscribed to its type. Commit `tx` to publish it; roll back and it never existed.
pub async fn append<E: DomainEvent>(
    tx: &mut Tx,
    ctx: &RequestContext,
    event: &E,
    now: i64,
) -> Result<()> {
    let event_id = uuid::Uuid::now_v7().to_string();
    let envelope = Envelope {
        event_id: event_id.clone(),
        event_type: E::TYPE.to_string(),
        occurred_at: rfc3339(now),
        correlation_id: ctx.correlation_id.clone(),
        trace_id: ctx.trace.as_ref().map(|t| t.trace_id.clone()),
        traceparent: ctx
            .trace
            .as_ref()
            .map(crate::telemetry::TraceParent::header),
        subject: event.subject().to_string(),
        tenant_id: event.tenant().map(str::to_string),
        data: event,
    };
    let json = serde_json::to_string(&envelope).map_err(crate::Error::internal)?;
    store_outbox::insert(
        tx,
        &NewEvent {
            event_id: &event_id,
            event_type: E::TYPE,
            subject: event.subject(),
            correlation_id: &ctx.correlation_id,
            occurred_at: now,
            envelope: &json,
        },
    )
    .await?;
    Ok(())
}

/// The `traceparent` an envelope carries (see [`Envelope::traceparent`]), for the header of its
/// NATS message. Reads that one field, and only a well-formed value.
pub(crate) fn traceparent_of(envelope: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Head {
        #[serde(default)]
        traceparent: Option<String>,
    }
    let head: Head = serde_json::from_str(envelope).ok()?;
    crate::telemetry::TraceParent::parse(head.traceparent.as_deref()?).map(|t| t.header())
}

/// Which events to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    All,
    Pending,
    Published,
    /// Parked after too many failed publish attempts.
    Failed,
}

impl Filter {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "all" => Self::All,
            "pending" => Self::Pending,
            "published" => Self::Published,
            "failed" | "parked" => Self::Failed,
            _ => return None,
        })
    }

    fn status(self) -> Option<&'static str> {
        match self {
            Self::All => None,
            Self::Pending => Some("pending"),
            Self::Published => Some("published"),
            Self::Failed => Some("parked"),
        }
    }
}

/// An outbox row as operators see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub seq: i64,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub published_at: Option<String>,
    pub envelope: serde_json::Value,
}

/// One page of outbox events and the cursor of the next (none on the last page).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub events: Vec<EventView>,
    pub next_cursor: Option<String>,
}

impl From<EventRow> for EventView {
    fn from(r: EventRow) -> Self {
        Self {
            seq: r.seq,
            status: r.status,
            attempts: r.attempts,
            last_error: r.last_error,
            published_at: r.published_at.map(rfc3339),
            envelope: redact_links(
                serde_json::from_str(&r.envelope).unwrap_or(serde_json::Value::Null),
            ),
        }
    }
}

/// With event-driven mail (`TESSERA_MAIL__TRANSPORT=events`) the request events carry the
/// verification or reset link, a live token: operators' views of the outbox never show it.
fn redact_links(mut envelope: serde_json::Value) -> serde_json::Value {
    if let Some(link) = envelope.pointer_mut("/data/link")
        && link.is_string()
    {
        *link = serde_json::Value::from("<redacted>");
    }
    envelope
}

/// A page of events in outbox order, after the cursor `after` (a `seq`).
pub async fn list(
    store: &crate::store::Store,
    principal: &Principal,
    filter: Filter,
    after: Option<i64>,
    limit: i64,
) -> Result<(Vec<EventView>, Option<i64>)> {
    authz::require(principal, Permission::ReadEvents)?;
    let limit = limit.clamp(1, 1000);
    let rows = store_outbox::list(store.pool(), filter.status(), after.unwrap_or(0), limit).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    Ok((rows.into_iter().map(Into::into).collect(), next))
}

/// Outbox rows per status, for operators and logs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub pending: i64,
    pub published: i64,
    pub parked: i64,
}

/// How many parked items [`retry_parked`] put back.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Retried {
    pub events: u64,
    pub webhook_deliveries: u64,
}

/// `POST /admin/events/retry` and `tessera events retry-failed`: every parked event and webhook
/// delivery goes back in its queue, due now, with its attempts reset.
pub async fn retry_parked(
    store: &crate::store::Store,
    by: crate::audit::By<'_>,
    now: i64,
) -> Result<Retried> {
    use crate::store::jobs;
    authz::require(by.principal, Permission::ManageEvents)?;
    let mut tx = store.begin().await?;
    let events = jobs::unpark(&mut *tx, jobs::OUTBOX, now).await?;
    let webhook_deliveries = jobs::unpark(&mut *tx, jobs::WEBHOOKS, now).await?;
    let entry = crate::audit::Entry::success(by.actor(), crate::audit::action::RETRY_PARKED);
    crate::audit::record(&mut *tx, by.ctx, &entry, now).await?;
    tx.commit().await?;
    Ok(Retried {
        events,
        webhook_deliveries,
    })
}

/// `GET /admin/events/stats`: outbox and mail queue counts per status.
pub async fn stats(
    store: &crate::store::Store,
    principal: &Principal,
) -> Result<serde_json::Value> {
    authz::require(principal, Permission::ReadEvents)?;
    let outbox = counts(store).await?;
    let mail: serde_json::Map<String, serde_json::Value> =
        crate::store::jobs::count_by_status(store.pool(), crate::store::jobs::MAIL)
            .await?
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
    Ok(serde_json::json!({ "outbox": outbox, "mail": mail }))
}

/// Outbox rows per status (for jobs and tests; operators read [`stats`]).
pub async fn counts(store: &crate::store::Store) -> Result<Counts> {
    let mut c = Counts::default();
    use crate::store::jobs::{self, Status};
    for (status, n) in jobs::count_by_status(store.pool(), jobs::OUTBOX).await? {
        match Status::parse(jobs::OUTBOX, &status) {
            Some(Status::Pending) => c.pending = n,
            Some(Status::Done) => c.published = n,
            Some(Status::Parked) => c.parked = n,
            None => {}
        }
    }
    Ok(c)
}

/// Backoff after `attempts` failures: 2, 4, 8 … seconds, at most an hour.
pub fn backoff(attempts: i64) -> i64 {
    let exp = attempts.clamp(1, 12) as u32;
    (1_i64 << exp).min(3600)
}

#[cfg(test)]
mod redaction_tests {
    #[test]
    fn operator_views_never_show_a_mail_link() {
        let envelope = serde_json::json!({"event_type": "x", "data": {"link": "https://id/reset?token=tsp_live", "email": "a@b.c"}});
        let shown = super::redact_links(envelope);
        assert_eq!(shown["data"]["link"], "<redacted>");
        assert_eq!(shown["data"]["email"], "a@b.c");
        let without = super::redact_links(serde_json::json!({"data": {"user_id": "u"}}));
        assert!(without["data"].get("link").is_none());
    }
}
