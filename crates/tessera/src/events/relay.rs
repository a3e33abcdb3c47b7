//! The relay: publishes pending outbox events to NATS JetStream.
//!
//! Each round claims a batch with a lease (`lease_owner` = this relay, `lease_until`), publishes
//! the events in outbox order on subject `<prefix>.<event_type>` with `Nats-Msg-Id = event_id`
//! (the stream's duplicate window drops a re-publish after a crash between publish and mark),
//! waits for each acknowledgement, and marks them published. A failed publish counts an attempt,
//! sets a backoff, and after `max_attempts` parks the event (`tessera events list --failed`);
//! the rest of the batch is given back untouched, so a subject's later events never overtake it.
//! When the broker is unreachable the relay reconnects with backoff and counts no attempts.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::store::Store;
use crate::store::outbox as store_outbox;

/// What the relay needs from the configuration.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub nats_url: String,
    pub subject_prefix: String,
    pub stream: String,
    pub max_attempts: i64,
    pub lease_secs: i64,
    pub batch_size: i64,
    pub poll_interval: Duration,
}

impl RelayConfig {
    /// `None` when no broker is configured.
    pub fn from_config(cfg: &Config) -> Option<Self> {
        let e = &cfg.events;
        Some(Self {
            nats_url: e.nats_url.clone()?,
            subject_prefix: e.subject_prefix.clone(),
            stream: e.stream.clone(),
            max_attempts: i64::from(e.max_attempts),
            lease_secs: e.lease_secs as i64,
            batch_size: i64::from(e.batch_size),
            poll_interval: Duration::from_millis(e.poll_interval_ms),
        })
    }
}

/// Connects and makes sure the stream exists, covering `<prefix>.>`.
pub async fn connect(cfg: &RelayConfig) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(cfg.nats_url.as_str())
        .await
        .with_context(|| {
            format!(
                "connecting to NATS at {}",
                crate::config::redact_url(&cfg.nats_url)
            )
        })?;
    let js = jetstream::new(client);
    js.get_or_create_stream(stream::Config {
        name: cfg.stream.clone(),
        subjects: vec![format!("{}.>", cfg.subject_prefix)],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating the JetStream stream {}", cfg.stream))?;
    Ok(js)
}

/// Publishes the outbox until `stopping`, then ends after the round in hand.
pub async fn run(store: Store, clock: Clock, cfg: RelayConfig, stopping: CancellationToken) {
    let owner = format!("relay-{}", uuid::Uuid::now_v7());
    let mut backoff = Duration::from_millis(500);
    // Every wait ends early when the service stops; a round in hand is finished (its batch
    // published and recorded, or given back).
    let pause = |d: Duration| {
        let stopping = stopping.clone();
        async move {
            tokio::select! {
                () = tokio::time::sleep(d) => {}
                () = stopping.cancelled() => {}
            }
        }
    };
    while !stopping.is_cancelled() {
        let connected = tokio::select! {
            c = connect(&cfg) => c,
            () = stopping.cancelled() => return,
        };
        let js = match connected {
            Ok(js) => {
                tracing::info!(stream = %cfg.stream, "event relay connected to NATS JetStream");
                backoff = Duration::from_millis(500);
                js
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "event relay cannot reach NATS; events stay in the outbox");
                pause(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        while !stopping.is_cancelled() {
            match round(&store, &clock, &js, &cfg, &owner).await {
                Ok(Round { published, failed }) => {
                    if failed {
                        pause(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    } else {
                        backoff = Duration::from_millis(500);
                        if published == 0 {
                            pause(cfg.poll_interval).await;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "event relay round failed");
                    pause(cfg.poll_interval.max(Duration::from_secs(1))).await;
                }
            }
        }
    }
}

/// The outcome of one round.
#[derive(Debug, Default, Clone, Copy)]
pub struct Round {
    pub published: usize,
    /// A publish failed (the broker is likely down): back off before the next round.
    pub failed: bool,
}

/// Claims one batch and publishes it.
pub async fn round(
    store: &Store,
    clock: &Clock,
    js: &jetstream::Context,
    cfg: &RelayConfig,
    owner: &str,
) -> anyhow::Result<Round> {
    let now = clock.now();
    let (pool, writer) = (store.pool(), store.writer());
    if !crate::store::jobs::any_due(pool, crate::store::jobs::OUTBOX, now).await? {
        return Ok(Round::default());
    }
    let rows =
        store_outbox::claim(writer, owner, now, now + cfg.lease_secs, cfg.batch_size).await?;
    if rows.is_empty() {
        return Ok(Round::default());
    }
    let blocked: HashSet<i64> = store_outbox::blocked_claims(pool, owner)
        .await?
        .into_iter()
        .collect();
    let mut give_back: Vec<i64> = blocked.iter().copied().collect();
    let mut published = Vec::with_capacity(rows.len());
    let mut failed = false;
    for row in rows.iter().filter(|r| !blocked.contains(&r.seq)) {
        if failed {
            give_back.push(row.seq);
            continue;
        }
        let subject = format!("{}.{}", cfg.subject_prefix, row.event_type);
        let outcome = async {
            let mut message = PublishMessage::build()
                .payload(row.envelope.clone().into())
                .message_id(&row.event_id);
            if let Some(traceparent) = super::traceparent_of(&row.envelope) {
                message = message.header("traceparent", traceparent.as_str());
            }
            let ack = js.send_publish(subject, message).await?;
            ack.await?;
            Ok::<_, anyhow::Error>(())
        }
        .await;
        match outcome {
            Ok(()) => published.push(row.seq),
            Err(e) => {
                failed = true;
                let attempts = row.attempts + 1;
                let now = clock.now();
                let parked = crate::store::jobs::mark_failed(
                    writer,
                    crate::store::jobs::OUTBOX,
                    owner,
                    row.seq,
                    &format!("{e:#}"),
                    now + super::backoff(attempts),
                    cfg.max_attempts,
                )
                .await?;
                if parked {
                    let parked_total = super::counts(store).await.map(|c| c.parked).unwrap_or(-1);
                    tracing::error!(event_id = %row.event_id, attempts, parked_total, error = %format!("{e:#}"), "event parked after too many failed publish attempts; see `tessera events list --failed`");
                } else {
                    tracing::warn!(event_id = %row.event_id, attempts, error = %format!("{e:#}"), "publishing an event failed; will retry");
                }
            }
        }
    }
    store_outbox::mark_published(writer, owner, &published, clock.now()).await?;
    store_outbox::release(writer, owner, &give_back).await?;
    Ok(Round {
        published: published.len(),
        failed,
    })
}
