//! The composition root: [`App::build`] turns a [`Config`] into a bound listener and a router
//! over one [`AppState`]. `tessera serve`, the API tests and the benchmark all start Tessera
//! through it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::accounts::UserCache;
use crate::clock::Clock;
use crate::config::Config;
use crate::core::Core;
use crate::http::pages::Pages;
use crate::keys::RELOAD_INTERVAL;
use crate::oauth::clients::ClientCache;
use crate::oauth::revocation::RevokedTokens;
use crate::sessions::SessionCache;
use crate::shared::{Invalidation, Listener};
use crate::store::Store;
use bytes::Bytes;

/// What a request handler needs: the domain's [`Core`] and what only HTTP adds. Cheap to clone;
/// dereferences to the [`Core`], which is what domain functions take.
#[derive(Clone)]
pub struct AppState {
    /// Behind an `Arc`: axum clones the state for every request (and every middleware), and a
    /// clone of the core itself would bump every one of its caches' and pools' counters.
    pub core: Arc<Core>,
    /// The OpenID Provider metadata, serialised once.
    pub discovery: Bytes,
    pub pages: Arc<Pages>,
    /// Whose `X-Forwarded-For` to believe.
    pub proxies: Arc<crate::http::client_ip::TrustedProxies>,
    /// Set when shutdown began: `/readyz` answers 503 so load balancers stop sending traffic.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

impl std::ops::Deref for AppState {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

impl AppState {
    /// Connects, migrates and loads keys: everything but the listener.
    pub async fn new(config: Config, clock: Clock) -> anyhow::Result<Self> {
        // Recording starts with the process, not with the first scrape.
        if config.metrics.enabled && crate::metrics::handle().is_none() {
            tracing::warn!("another metrics recorder is installed: /metrics answers 503");
        }
        let pages = Arc::new(Pages::new(config.templates_dir.as_deref())?);
        let proxies = Arc::new(crate::http::client_ip::TrustedProxies::parse(
            &config.trusted_proxies,
        ));
        let discovery = crate::oidc::discovery(&config);
        Ok(Self {
            core: Arc::new(Core::new(config, clock).await?),
            discovery,
            pages,
            proxies,
            draining: Arc::default(),
        })
    }
}

/// A built, bound, not yet running service.
pub struct App {
    listener: TcpListener,
    state: AppState,
}

impl App {
    /// Builds the state and binds `config.listen` (port 0 picks a free port).
    pub async fn build(config: Config, clock: Clock) -> anyhow::Result<Self> {
        let addr = config.listen_addr()?;
        let state = AppState::new(config, clock).await?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        Ok(Self { listener, state })
    }

    /// Builds the state around a listener bound beforehand (tests that need the issuer to be
    /// the listener's own address).
    pub async fn with_listener(
        config: Config,
        clock: Clock,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        let state = AppState::new(config, clock).await?;
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // Background jobs get the domain's core, nothing of HTTP.
        let state: &Core = &self.state.core;
        // Whatever can fail is done before any task starts, so a failed start leaves nothing
        // running behind it.
        let mail = crate::mail::worker::Transport::from_config(
            &state.config.mail,
            &state.config.data_dir,
        )?;
        let metrics_listener = match &state.config.metrics.listen {
            Some(addr) => Some((
                addr.clone(),
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the metrics address {addr}"))?,
            )),
            None => None,
        };
        // The workers that lease queued work (mail, the relay, webhooks) are told to stop and
        // finish the item in hand, giving back what they had claimed but not started; the other
        // tasks only read or tidy, and are aborted.
        let stopping = CancellationToken::new();
        let mut workers = tokio::task::JoinSet::new();
        if let Some(transport) = mail {
            workers.spawn(crate::mail::worker::run(
                state.clone(),
                transport,
                stopping.clone(),
            ));
        }
        if let Some(relay) = crate::events::relay::RelayConfig::from_config(&state.config) {
            workers.spawn(crate::events::relay::run(
                state.store.clone(),
                state.clock.clone(),
                relay,
                stopping.clone(),
            ));
        }
        workers.spawn(crate::events::webhooks::run(
            state.clone(),
            Arc::clone(&state.master),
            stopping.clone(),
        ));
        let mut tasks = vec![tokio::spawn(reload_keys(state.clone()))];
        tasks.push(tokio::spawn(reload_revocations(state.clone())));
        tasks.push(tokio::spawn(state.shared.clone().listen(Arc::new(
            Caches {
                sessions: state.sessions.clone(),
                revoked: state.revoked.clone(),
                users: state.users.clone(),
                clients: state.clients.clone(),
                tenants: state.tenants.clone(),
            },
        ))));
        tasks.push(tokio::spawn(housekeeping(state.clone())));
        tasks.push(tokio::spawn(checkpoints(state.clone())));
        tasks.push(tokio::spawn(crate::audit::run_purge(state.clone())));
        if state.config.metrics.enabled {
            tasks.push(tokio::spawn(crate::metrics::upkeep()));
        }
        if let Some((addr, listener)) = metrics_listener {
            let metrics = crate::http::metrics_router(self.state.clone());
            tracing::info!(%addr, "serving /metrics");
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, metrics).await {
                    tracing::error!(error = ?e, "the metrics listener stopped");
                }
            }));
        }
        let router = crate::http::router(self.state.clone());
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        // Shutdown: readiness turns 503 at once; new connections are still taken for the drain
        // delay (while load balancers notice), then in-flight requests get until the drain
        // deadline to finish.
        let draining = Arc::clone(&self.state.draining);
        let (delay, deadline) = (
            Duration::from_secs(state.config.shutdown.drain_delay_secs),
            Duration::from_secs(state.config.shutdown.drain_deadline_secs),
        );
        let (begun_tx, begun_rx) = tokio::sync::oneshot::channel::<()>();
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<Instant>();
        let workers_stop = stopping.clone();
        let stop = async move {
            shutdown.await;
            let _ = signalled_tx.send(Instant::now());
            draining.store(true, std::sync::atomic::Ordering::SeqCst);
            // The workers finish what they hold while the requests drain.
            workers_stop.cancel();
            tracing::info!(?delay, ?deadline, "draining: readiness is 503");
            tokio::time::sleep(delay).await;
            let _ = begun_tx.send(());
        };
        let serving = axum::serve(self.listener, service).with_graceful_shutdown(stop);
        let result = tokio::select! {
            r = serving => r,
            () = async {
                let _ = begun_rx.await;
                tokio::time::sleep(deadline).await;
            } => {
                tracing::warn!("drain deadline passed: closing the requests still in flight");
                Ok(())
            }
        };
        for task in &tasks {
            task.abort();
        }
        // Serving can also end on its own (an error): the workers are told then.
        stopping.cancel();
        let signalled = signalled_rx.await.unwrap_or_else(|_| Instant::now());
        let finished = tokio::time::timeout_at((signalled + WORKER_GRACE).into(), async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                "background workers still busy 10 s after the signal; their leases expire and \
                 another replica, or the next start, takes the work up"
            );
            workers.abort_all();
        }
        // Closing waits for every connection to come back; the aborted tasks return theirs
        // when they are dropped. Bounded, so a stuck connection cannot hold the exit past the
        // deadline the operator set (the database rolls back whatever it left open).
        if tokio::time::timeout(STORE_CLOSE_TIMEOUT, self.state.store.close())
            .await
            .is_err()
        {
            tracing::warn!("the database pool did not close within 5 s; exiting anyway");
        }
        // The spans of the last requests are still in the exporter's buffer.
        let _ = tokio::task::spawn_blocking(crate::telemetry::shutdown).await;
        result.context("serving HTTP")
    }

    /// Serves until SIGINT or SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }
}

/// How long the background workers have, from the shutdown signal, to finish the item in hand.
const WORKER_GRACE: Duration = Duration::from_secs(10);

/// How long the exit waits for the database pool to close after the drain.
const STORE_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// This replica's read caches, kept honest by other replicas' invalidations.
struct Caches {
    sessions: SessionCache,
    revoked: RevokedTokens,
    users: UserCache,
    clients: ClientCache,
    tenants: crate::tenants::TenantCaches,
}

impl Listener for Caches {
    fn apply(&self, change: &Invalidation) {
        match change {
            Invalidation::Session(sid) => self.sessions.heard_revoked(sid),
            Invalidation::Token(jti) => self.revoked.heard(jti),
            Invalidation::User(id) => self.users.forget(id),
            Invalidation::Client(id) => self.clients.forget(id),
            Invalidation::Tenant(id) => self.tenants.forget_tenant(id),
            Invalidation::Member(key) => self.tenants.forget_member(key),
            Invalidation::ApiKey(hash) => self.tenants.forget_key(hash),
        }
    }

    fn forget_all(&self) {
        self.tenants.forget_all();
        self.sessions.forget_live();
        self.users.forget_all();
        self.clients.forget_all();
    }
}

async fn reload_revocations(state: Core) {
    let period = std::time::Duration::from_secs(crate::oauth::revocation::RELOAD_INTERVAL);
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if let Err(e) = state.revoked.reload(&state.store, state.clock.now()).await {
            tracing::warn!(error = ?e, "reloading revoked tokens failed");
        }
    }
}

/// Hourly: deletes expired codes, refresh tokens, revoked token ids and long-ended sessions.
async fn housekeeping(state: Core) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tick.tick().await;
        if let Err(e) = purge_expired(&state.store, state.clock.now()).await {
            tracing::warn!(error = ?e, "housekeeping failed; will retry");
        }
    }
}

/// SQLite: the WAL copied back into the database beside the writer (see `Store::checkpoint`).
async fn checkpoints(state: Core) {
    if state.store.backend() != crate::store::Backend::Sqlite {
        return;
    }
    let mut tick = tokio::time::interval(crate::store::CHECKPOINT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = state.store.checkpoint().await {
            tracing::warn!(error = ?e, "checkpointing the database failed; will retry");
        }
    }
}

/// The most rows one housekeeping transaction deletes.
pub const PURGE_BATCH: i64 = 500;
/// The fewest rows one housekeeping transaction deletes (so a pass always ends).
pub const PURGE_BATCH_MIN: i64 = 10;
/// How long one housekeeping transaction should hold the writer: requests that write wait at
/// most about this long behind a purge (SQLite has one writer at a time).
pub const PURGE_BATCH_BUDGET: std::time::Duration = std::time::Duration::from_millis(4);

/// The size of the next batch, after `size` rows took `took`: cut in proportion when over
/// [`PURGE_BATCH_BUDGET`], doubled when under half of it, within [`PURGE_BATCH_MIN`] and
/// [`PURGE_BATCH`]. Rows cost more as tables and their indexes grow, and a batch bounded by
/// rows alone held the writer for tens of milliseconds on large tables.
pub fn next_purge_batch(size: i64, took: std::time::Duration) -> i64 {
    let budget = PURGE_BATCH_BUDGET.as_secs_f64();
    let took = took.as_secs_f64();
    let next = if took > budget {
        (size as f64 * budget / took) as i64
    } else if took < budget / 2.0 {
        size.saturating_mul(2)
    } else {
        size
    };
    next.clamp(PURGE_BATCH_MIN, PURGE_BATCH)
}

/// One housekeeping pass; returns the rows deleted.
///
/// Deletes in batches of about [`PURGE_BATCH_BUDGET`] each, each its own transaction, and rests
/// as long as the batch took before the next: millions of expired rows are deleted while the
/// writer stays free at least half the time and no write waits long behind it.
pub async fn purge_expired(store: &Store, now: i64) -> anyhow::Result<u64> {
    use crate::store::housekeeping::{self, Expired};
    if !housekeeping::anything_expired(store.pool(), now).await? {
        return Ok(0);
    }
    let mut deleted = 0;
    let mut size = PURGE_BATCH;
    for kind in Expired::ALL {
        loop {
            let mut tx = store.begin().await?;
            // The time the writer is held, not the time queued for it.
            let started = std::time::Instant::now();
            let n = housekeeping::purge_batch(&mut tx, kind, now, size).await?;
            tx.commit().await?;
            let took = started.elapsed();
            deleted += n;
            if n < size as u64 {
                break;
            }
            size = next_purge_batch(size, took);
            // Writers that queued behind this batch go first.
            tokio::time::sleep(took.max(std::time::Duration::from_millis(2))).await;
        }
    }
    if deleted > 0 {
        tracing::info!(deleted, "housekeeping: expired rows deleted");
    }
    Ok(deleted)
}

/// Key maintenance: scheduled rotation and reloading what other processes changed.
async fn reload_keys(state: Core) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(RELOAD_INTERVAL as u64));
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = state.clock.now();
        if let Err(e) = state.keys.maintain(now).await {
            tracing::warn!(error = ?e, "scheduled key rotation failed; will retry");
        }
        if let Err(e) = state.keys.reload_if_changed(now).await {
            tracing::warn!(error = ?e, "reloading signing keys failed; keeping the current set");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

pub use crate::core::{load_master_key, open_store};

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn purge_batches_follow_their_time_budget_within_bounds() {
        let ms = Duration::from_millis;
        // Over budget: cut in proportion (40 ms for 500 rows is 50 rows for 4 ms).
        assert_eq!(next_purge_batch(500, ms(40)), 50);
        assert_eq!(next_purge_batch(50, ms(4)), 50);
        // Under half of it: doubled, never past the largest batch.
        assert_eq!(next_purge_batch(50, ms(1)), 100);
        assert_eq!(next_purge_batch(400, Duration::ZERO), PURGE_BATCH);
        // However slow, a batch keeps its smallest size, so a pass always ends.
        assert_eq!(
            next_purge_batch(10, Duration::from_secs(5)),
            PURGE_BATCH_MIN
        );
    }
}
