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

use crate::app::AppState;
use crate::audit::{self, Actor, Entry, action};
use crate::clock::rfc3339;
use crate::context::RequestContext;
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
#[derive(Debug, Clone, Serialize)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: String,
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
    now: i64,
) -> Result<(WebhookView, String)> {
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
    // Webhooks are managed at the command line: the actor is the operator (`system`).
    let mut tx = store.begin().await?;
    store_webhooks::insert(&mut *tx, &hook, &sealed).await?;
    let entry = Entry::success(Actor::System, action::CREATE_WEBHOOK).target("webhook", &hook.id);
    audit::record(&mut *tx, &RequestContext::system(), &entry, now).await?;
    tx.commit().await?;
    Ok((hook.into(), secret))
}

pub async fn list(store: &Store) -> Result<Vec<WebhookView>> {
    Ok(store_webhooks::list(store.pool())
        .await?
        .into_iter()
        .map(Into::into)
        .collect())
}

/// Removes a webhook and its pending deliveries; 404 when unknown.
pub async fn remove(store: &Store, id: &str, now: i64) -> Result<()> {
    let mut tx = store.begin().await?;
    if !store_webhooks::delete(&mut tx, id).await? {
        return Err(Error::NotFound);
    }
    let entry = Entry::success(Actor::System, action::DELETE_WEBHOOK).target("webhook", id);
    audit::record(&mut *tx, &RequestContext::system(), &entry, now).await?;
    tx.commit().await?;
    Ok(())
}

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

/// Runs until aborted: delivers due webhook deliveries.
pub async fn run(state: AppState, master: Arc<MasterKey>) {
    let owner = format!("webhooks-{}", uuid::Uuid::now_v7());
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
    loop {
        match round(&state, &client, &master, &owner).await {
            Ok(n) if n > 0 => {}
            Ok(_) => tokio::time::sleep(poll).await,
            Err(e) => {
                tracing::warn!(error = ?e, "webhook round failed");
                tokio::time::sleep(poll.max(Duration::from_secs(1))).await;
            }
        }
    }
}

/// One round: claims due deliveries and posts them. Returns how many were attempted.
pub async fn round(
    state: &AppState,
    client: &reqwest::Client,
    master: &MasterKey,
    owner: &str,
) -> anyhow::Result<usize> {
    let now = state.clock.now();
    let lease = state.config.events.lease_secs as i64;
    if !store_webhooks::any_due(state.store.pool(), now).await? {
        return Ok(0);
    }
    let deliveries = store_webhooks::claim(state.store.pool(), owner, now, now + lease, 20).await?;
    let max_attempts = i64::from(state.config.events.webhook_max_attempts);
    for d in &deliveries {
        let outcome = deliver(client, master, d, state.clock.now()).await;
        let now = state.clock.now();
        match outcome {
            Ok(()) => {
                store_webhooks::mark_delivered(state.store.pool(), owner, &d.id, now).await?;
            }
            Err(e) => {
                let attempts = d.attempts + 1;
                let parked = store_webhooks::mark_failed(
                    state.store.pool(),
                    owner,
                    &d.id,
                    &format!("{e:#}"),
                    now + 5 * super::backoff(attempts),
                    max_attempts,
                )
                .await?;
                if parked {
                    tracing::error!(webhook = %d.webhook_id, delivery = %d.id, attempts, error = %format!("{e:#}"), "webhook delivery parked after too many failures");
                } else {
                    tracing::warn!(webhook = %d.webhook_id, delivery = %d.id, attempts, error = %format!("{e:#}"), "webhook delivery failed; will retry");
                }
            }
        }
    }
    Ok(deliveries.len())
}

async fn deliver(
    client: &reqwest::Client,
    master: &MasterKey,
    d: &store_webhooks::Delivery,
    now: i64,
) -> anyhow::Result<()> {
    let secret =
        zeroize::Zeroizing::new(master.open(&format!("webhook:{}", d.webhook_id), &d.secret)?);
    let envelope: serde_json::Value = serde_json::from_str(&d.envelope)?;
    let body = d.envelope.as_bytes().to_vec();
    let res = client
        .post(&d.url)
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
        anyhow::bail!("the endpoint answered {}", res.status());
    }
    Ok(())
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
