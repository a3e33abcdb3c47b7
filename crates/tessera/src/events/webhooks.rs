//! Webhooks: operator-registered URLs that receive events as signed HTTP POSTs.
//!
//! Each delivery posts the event envelope (JSON) with
//! `Tessera-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//! `Tessera-Event-Id` and `Tessera-Event-Type`. A 2xx answer is success; anything else is retried
//! with backoff and the delivery is parked after `webhook_max_attempts`. Secrets are shown once
//! at creation and stored sealed with the master key (the webhook id as associated data).

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::audit::{self, By, Entry, action};
use crate::authz::{self, Permission, Principal};
use crate::clock::rfc3339;
use crate::core::Core;
use crate::crypto::{MasterKey, new_token};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::webhooks::{self as store_webhooks, Webhook};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "tessera-signature";

/// Every event type a webhook can subscribe to.
pub fn known_event_types() -> Vec<&'static str> {
    super::types::schemas()
        .into_iter()
        .map(|(t, _)| t)
        .collect()
}

/// A webhook as operators see it (never the secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: String,
}

/// `{"webhooks": […]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

/// A new webhook with its signing secret, shown only in this answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewWebhookView {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// The HMAC secret the receiver checks signatures with (`whsec_…`).
    pub secret: String,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> Self {
        Self {
            id: w.id,
            url: w.url,
            events: w
                .event_types
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            created_at: rfc3339(w.created_at),
        }
    }
}

/// Registers a webhook for `events` (event types, or `*`). Returns it with its secret, which is
/// not stored in the clear and cannot be shown again.
pub async fn add(
    store: &Store,
    master: &MasterKey,
    url: &str,
    events: &[String],
    by: By<'_>,
    now: i64,
) -> Result<(WebhookView, String)> {
    authz::require(by.principal, Permission::ManageWebhooks)?;
    let url = url.trim();
    if url.len() > 2048 {
        return Err(Error::invalid("url", "must be at most 2048 characters"));
    }
    crate::urls::https_or_loopback(url).map_err(|problem| Error::invalid("url", problem))?;
    let known = known_event_types();
    let mut types: Vec<String> = Vec::new();
    for e in events.iter().flat_map(|e| e.split(',')).map(str::trim) {
        if e.is_empty() {
            continue;
        }
        if e != "*" && !known.contains(&e) {
            return Err(Error::invalid(
                "events",
                format!("unknown event type {e:?}; known: * {}", known.join(" ")),
            ));
        }
        if !types.iter().any(|t| t == e) {
            types.push(e.to_string());
        }
    }
    if types.is_empty() {
        return Err(Error::invalid(
            "events",
            "name at least one event type, or *",
        ));
    }
    let event_types = if types.iter().any(|t| t == "*") {
        "*".to_string()
    } else {
        types.join(" ")
    };
    let secret = new_token("whsec_");
    let hook = Webhook {
        id: uuid::Uuid::now_v7().to_string(),
        url: url.to_string(),
        event_types,
        created_at: now,
    };
    let sealed = master.seal(&format!("webhook:{}", hook.id), secret.as_bytes());
    let mut tx = store.begin().await?;
    store_webhooks::insert(&mut *tx, &hook, &sealed).await?;
    let entry = Entry::success(by.actor(), action::CREATE_WEBHOOK).target("webhook", &hook.id);
    audit::record(&mut *tx, by.ctx, &entry, now).await?;
    tx.commit().await?;
    Ok((hook.into(), secret))
}

pub async fn list(store: &Store, principal: &Principal) -> Result<Vec<WebhookView>> {
    authz::require(principal, Permission::ManageWebhooks)?;
    Ok(store_webhooks::list(store.pool())
        .await?
        .into_iter()
        .map(Into::into)
        .collect())
}

/// Removes a webhook and its pending deliveries; 404 when unknown.
pub async fn remove(store: &Store, id: &str, by: By<'_>, now: i64) -> Result<()> {
    authz::require(by.principal, Permission::ManageWebhooks)?;
    if !crate::store::storable(id) {
        return Err(Error::NotFound);
    }
    let mut tx = store.begin().await?;
    if !store_webhooks::delete(&mut tx, id).await? {
        return Err(Error::NotFound);
    }
    let entry = Entry::success(by.actor(), action::DELETE_WEBHOOK).target("webhook", id);
    audit::record(&mut *tx, by.ctx, &entry, now).await?;
    tx.commit().await?;
    Ok(())
}

/// The event type of a test delivery; no domain event has it.
pub const TEST_EVENT_TYPE: &str = "tessera.webhook.test.v1";

/// What a test delivery got back.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestOutcome {
    pub delivered: bool,
    /// The endpoint's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why it failed (never the URL, which may carry a credential).
    pub error: Option<String>,
}

/// Sends one signed test event (`tessera.webhook.test.v1`, `data: {}`) to the webhook now,
/// outside the queue, and says what the endpoint answered: a way to check the URL and the
/// receiver's signature check. 404 for an unknown webhook.
pub async fn send_test(core: &Core, id: &str, by: By<'_>, now: i64) -> Result<TestOutcome> {
    authz::require(by.principal, Permission::ManageWebhooks)?;
    let (url, secret) = store_webhooks::find_with_secret(core.store.pool(), id)
        .await?
        .ok_or(Error::NotFound)?;
    let envelope = serde_json::json!({
        "event_id": uuid::Uuid::now_v7().to_string(),
        "event_type": TEST_EVENT_TYPE,
        "occurred_at": rfc3339(now),
        "correlation_id": by.ctx.correlation_id,
        "subject": "",
        "data": {},
    });
    let delivery = store_webhooks::Delivery {
        id: String::new(),
        webhook_id: id.to_string(),
        event_seq: 0,
        attempts: 0,
        url,
        secret,
        envelope: envelope.to_string(),
        lease_owner: String::new(),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(core.config.events.webhook_timeout_secs))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("tessera-webhooks/1")
        .build()
        .map_err(|e| Error::Internal(e.into()))?;
    let outcome = match deliver(&client, &core.master, &delivery, now).await {
        Ok(status) => TestOutcome {
            delivered: true,
            status: Some(status),
            error: None,
        },
        Err(e) => TestOutcome {
            delivered: false,
            status: e.downcast_ref::<Refused>().map(|r| r.0),
            error: Some(format!("{e:#}")),
        },
    };
    let mut tx = core.store.begin().await?;
    let entry = if outcome.delivered {
        Entry::success(by.actor(), action::TEST_WEBHOOK)
    } else {
        Entry::failure(by.actor(), action::TEST_WEBHOOK, "not_delivered")
    }
    .target("webhook", id);
    audit::record(&mut *tx, by.ctx, &entry, now).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// The endpoint answered with a status other than 2xx.
#[derive(Debug)]
struct Refused(u16);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the endpoint answered {}", self.0)
    }
}

impl std::error::Error for Refused {}

/// The signature header value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// Runs until aborted: delivers due webhook deliveries, up to `webhook_concurrency` at once.
///
/// Deliveries are claimed as slots free up, so one slow or dead endpoint holds one slot for at
/// most its timeout and never delays the others. A claim's lease is the request timeout plus
/// `lease_secs`, longer than any delivery can take, so no other replica re-sends a delivery
/// that is still in flight here.
/// Delivers due webhooks until `stopping`; then waits for the deliveries in flight and records
/// them (bounded by the caller's grace).
pub async fn run(state: Core, master: Arc<MasterKey>, stopping: CancellationToken) {
    let owner: Arc<str> = format!("webhooks-{}", uuid::Uuid::now_v7()).into();
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(
            state.config.events.webhook_timeout_secs,
        ))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("tessera-webhooks/1")
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = ?e, "webhook client could not be built; webhooks are off");
            return;
        }
    };
    let poll = Duration::from_millis(state.config.events.poll_interval_ms.max(100));
    let limit = state.config.events.webhook_concurrency.max(1) as usize;
    let mut in_flight = tokio::task::JoinSet::new();
    while !stopping.is_cancelled() {
        let free = limit - in_flight.len();
        let mut claimed = 0;
        if free > 0 {
            match claim(&state, &owner, free).await {
                Ok(deliveries) => {
                    claimed = deliveries.len();
                    for d in deliveries {
                        in_flight.spawn(deliver_and_record(
                            state.clone(),
                            client.clone(),
                            Arc::clone(&master),
                            d,
                        ));
                    }
                }
                Err(e) => tracing::warn!(error = ?e, "claiming webhook deliveries failed"),
            }
        }
        if in_flight.is_empty() {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = stopping.cancelled() => {}
            }
        } else if claimed == 0 || in_flight.len() == limit {
            // Wait for a slot, or for the next look at newly due work.
            tokio::select! {
                _ = in_flight.join_next() => {}
                () = tokio::time::sleep(poll) => {}
                () = stopping.cancelled() => {}
            }
        }
    }
    // Each claim is one delivery, already started: finish and record them all.
    while in_flight.join_next().await.is_some() {}
}

/// Claims up to `limit` due deliveries for `owner`.
async fn claim(
    state: &Core,
    owner: &str,
    limit: usize,
) -> anyhow::Result<Vec<store_webhooks::Delivery>> {
    let now = state.clock.now();
    if !crate::store::jobs::any_due(state.store.pool(), crate::store::jobs::WEBHOOKS, now).await? {
        return Ok(Vec::new());
    }
    let e = &state.config.events;
    let lease = (e.webhook_timeout_secs + e.lease_secs) as i64;
    Ok(store_webhooks::claim(state.store.writer(), owner, now, now + lease, limit as i64).await?)
}

/// Posts one delivery and records the outcome (delivered, retry later, or parked).
async fn deliver_and_record(
    state: Core,
    client: reqwest::Client,
    master: Arc<MasterKey>,
    d: store_webhooks::Delivery,
) {
    let owner = d.lease_owner.as_str();
    let outcome = deliver(&client, &master, &d, state.clock.now()).await;
    let now = state.clock.now();
    let max_attempts = i64::from(state.config.events.webhook_max_attempts);
    let recorded = match outcome {
        Ok(_) => store_webhooks::mark_delivered(state.store.writer(), owner, &d.id, now)
            .await
            .map(|_| ()),
        Err(e) => {
            crate::metrics::delivery_failed("webhooks");
            let attempts = d.attempts + 1;
            let parked = crate::store::jobs::mark_failed(
                state.store.writer(),
                crate::store::jobs::WEBHOOKS,
                owner,
                &d.id,
                &format!("{e:#}"),
                now + 5 * super::backoff(attempts),
                max_attempts,
            )
            .await;
            match parked {
                Ok(true) => {
                    tracing::error!(webhook = %d.webhook_id, delivery = %d.id, attempts, error = %format!("{e:#}"), "webhook delivery parked after too many failures")
                }
                Ok(false) => {
                    tracing::warn!(webhook = %d.webhook_id, delivery = %d.id, attempts, error = %format!("{e:#}"), "webhook delivery failed; will retry")
                }
                Err(_) => {}
            }
            parked.map(|_| ())
        }
    };
    if let Err(e) = recorded {
        tracing::warn!(error = ?e, delivery = %d.id, "recording a webhook delivery failed; its lease will expire and it is retried");
    }
}

async fn deliver(
    client: &reqwest::Client,
    master: &MasterKey,
    d: &store_webhooks::Delivery,
    now: i64,
) -> anyhow::Result<u16> {
    let secret =
        zeroize::Zeroizing::new(master.open(&format!("webhook:{}", d.webhook_id), &d.secret)?);
    let envelope: serde_json::Value = serde_json::from_str(&d.envelope)?;
    let body = d.envelope.as_bytes().to_vec();
    let mut request = client.post(&d.url);
    // The trace of the request that caused the event (W3C Trace Context, `traceparent`).
    if let Some(trace) = envelope["traceparent"]
        .as_str()
        .and_then(crate::telemetry::TraceParent::parse)
    {
        request = request.header("traceparent", trace.header());
    }
    let res = request
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, sign(&secret, now, &body))
        .header(
            "tessera-event-id",
            envelope["event_id"].as_str().unwrap_or_default(),
        )
        .header(
            "tessera-event-type",
            envelope["event_type"].as_str().unwrap_or_default(),
        )
        .body(body)
        .send()
        .await
        // The URL may carry a credential in its query: keep it out of logs and `last_error`.
        .map_err(reqwest::Error::without_url)?;
    if !res.status().is_success() {
        return Err(Refused(res.status().as_u16()).into());
    }
    Ok(res.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Cross-checked with: printf '1700000000.{}' | openssl dgst -sha256 -hmac whsec_test
        let sig = sign(b"whsec_test", 1_700_000_000, b"{}");
        assert_eq!(
            sig,
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
        assert_ne!(sig, sign(b"whsec_test", 1_700_000_001, b"{}"));
        assert_ne!(sig, sign(b"whsec_other", 1_700_000_000, b"{}"));
    }
}
