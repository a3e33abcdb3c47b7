//! Prometheus metrics: the stable `tessera_*` set documented in `docs/operations.md`.
//!
//! Counters and histograms are recorded where things happen ([`http_request`], [`login`],
//! [`token_issued`], …); gauges of state (queues, keys, the pool) are read at scrape time by
//! [`render`]. One recorder serves the process (installed on first use), rendered on
//! `/metrics` in the Prometheus text format.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use ::metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::core::Core;

/// Seconds; from a cached token check to an Argon2id login.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first call. `None` when another recorder was
/// installed first (a host embedding the library): then `/metrics` says 503.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            ::metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

/// Folds the histograms' pending samples into their buckets every 5 seconds. A recorder made
/// with `build_recorder` has no upkeep task of its own: without this one every latency sample
/// stays in memory until the next scrape, which grows without bound where nobody scrapes.
pub async fn upkeep() {
    let Some(handle) = handle() else { return };
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

/// One HTTP request: `route` is the route template (`/admin/users/{id}`), never the path.
///
/// The series of each route and method are registered once and kept here, so a request costs
/// a map lookup and two atomic updates rather than building its label strings and looking the
/// series up in the recorder. Only once a recorder is installed: a handle taken before would
/// record nowhere for good.
pub fn http_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    if !matches!(HANDLE.get(), Some(Some(_))) {
        return;
    }
    let m = method_index(method);
    let seconds = elapsed.as_secs_f64();
    if let Ok(routes) = ROUTES.read()
        && let Some(series) = routes.get(route).and_then(|methods| methods[m].as_ref())
    {
        series.record(m, route, status, seconds);
        return;
    }
    let Ok(mut routes) = ROUTES.write() else {
        return;
    };
    let series = routes.entry(route.to_string()).or_default()[m].get_or_insert_with(|| {
        RouteSeries {
            duration: histogram!("tessera_http_request_duration_seconds", "method" => METHODS[m], "route" => route.to_string()),
            by_status: std::sync::RwLock::new(Vec::new()),
        }
    });
    series.record(m, route, status, seconds);
}

/// The standard methods, and `other` for anything else: a client can send any token as a
/// method, and each would otherwise become a series of its own.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

fn method_index(method: &str) -> usize {
    METHODS[..7].iter().position(|m| *m == method).unwrap_or(7)
}

/// Route template → per method index of [`METHODS`], the route's series. Bounded: templates are
/// the router's (unmatched requests share one), statuses are three digits.
static ROUTES: LazyLock<std::sync::RwLock<HashMap<String, [Option<RouteSeries>; 8]>>> =
    LazyLock::new(Default::default);

/// The latency histogram of one route and method, and its request counter per status.
struct RouteSeries {
    duration: Histogram,
    by_status: std::sync::RwLock<Vec<(u16, Counter)>>,
}

impl RouteSeries {
    fn record(&self, m: usize, route: &str, status: u16, seconds: f64) {
        self.duration.record(seconds);
        if let Ok(counters) = self.by_status.read()
            && let Some((_, counter)) = counters.iter().find(|(s, _)| *s == status)
        {
            counter.increment(1);
            return;
        }
        if let Ok(mut counters) = self.by_status.write() {
            // Another request with this status may have registered it since the read.
            if let Some((_, counter)) = counters.iter().find(|(s, _)| *s == status) {
                counter.increment(1);
                return;
            }
            let counter = counter!("tessera_http_requests_total", "method" => METHODS[m], "route" => route.to_string(), "status" => status.to_string());
            counter.increment(1);
            counters.push((status, counter));
        }
    }
}

/// A sign-in attempt: `method` `password`; `result` `success`, `failure` or `locked`.
pub fn login(method: &'static str, result: &'static str) {
    counter!("tessera_logins_total", "method" => method, "result" => result).increment(1);
}

/// Tokens issued, by grant (`password`, `authorization_code`, `refresh_token`, …).
pub fn token_issued(grant: &'static str) {
    counter!("tessera_tokens_issued_total", "grant" => grant).increment(1);
}

/// A rotated-out refresh token presented again (its session is revoked).
pub fn refresh_token_reuse() {
    counter!("tessera_refresh_token_reuse_total").increment(1);
}

/// A request refused with 429, by limit class (`login_ip`, `token_client`, …; `lockout` for
/// an account lock).
pub fn throttled(class: &'static str) {
    counter!("tessera_throttled_total", "class" => class).increment(1);
}

/// How long a password hash or check waited for a hashing thread (queue and hand-over).
pub fn hash_wait(waited: Duration) {
    histogram!("tessera_password_hash_wait_seconds").record(waited.as_secs_f64());
}

/// A failed delivery attempt of a mail job or a webhook (it is retried, or parked at the last
/// attempt).
pub fn delivery_failed(queue: &'static str) {
    counter!("tessera_delivery_failures_total", "queue" => queue).increment(1);
}

/// The gauges of state, read now, then everything in the text format.
pub async fn render(core: &Core) -> Option<String> {
    let handle = handle()?;
    let now = core.clock.now();
    if let Ok(c) = crate::events::counts(&core.store).await {
        gauge!("tessera_outbox_events", "status" => "pending").set(c.pending as f64);
        gauge!("tessera_outbox_events", "status" => "parked").set(c.parked as f64);
    }
    if let Ok(oldest) = crate::store::outbox::oldest_pending(core.store.pool()).await {
        gauge!("tessera_outbox_relay_lag_seconds")
            .set(oldest.map_or(0, |at| (now - at).max(0)) as f64);
    }
    for (queue, name, statuses) in [
        (
            crate::store::jobs::MAIL,
            "tessera_mail_jobs",
            ["pending", "sent", "parked"],
        ),
        (
            crate::store::jobs::WEBHOOKS,
            "tessera_webhook_deliveries",
            ["pending", "delivered", "parked"],
        ),
    ] {
        if let Ok(counts) = crate::store::jobs::count_by_status(core.store.pool(), queue).await {
            // A status with no rows is absent from the counts: it must read 0, not its last value.
            for status in statuses {
                gauge!(name, "status" => status).set(0.0);
            }
            for (status, n) in counts {
                gauge!(name, "status" => status).set(n as f64);
            }
        }
    }
    let age = core.keys.current_age(now);
    gauge!("tessera_signing_key_age_seconds").set(age as f64);
    let (size, idle) = core.store.pools().fold((0.0, 0.0), |(size, idle), pool| {
        (size + f64::from(pool.size()), idle + pool.num_idle() as f64)
    });
    gauge!("tessera_db_pool_connections", "state" => "in_use").set(size - idle);
    gauge!("tessera_db_pool_connections", "state" => "idle").set(idle);
    let (queued, running) = core.passwords.load();
    gauge!("tessera_password_hash_queue_depth").set(queued as f64);
    gauge!("tessera_password_hashes_running").set(running as f64);
    Some(handle.render())
}

#[cfg(test)]
mod tests {
    #[test]
    fn unknown_methods_share_one_label() {
        let label = |m: &str| super::METHODS[super::method_index(m)];
        assert_eq!(label("GET"), "GET");
        assert_eq!(label("PATCH"), "PATCH");
        assert_eq!(label("OPTIONS"), "OPTIONS");
        assert_eq!(label("PROPFIND"), "other");
        assert_eq!(label("X-RANDOM-1234"), "other");
    }
}
