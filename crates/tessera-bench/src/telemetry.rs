//! Telemetry overhead (issue 10): what metrics and traces cost on every request.
//!
//! Three servers of the same build run side by side: metrics off
//! (`TESSERA_METRICS__ENABLED=false`), metrics on (the default; traces off), and metrics on with
//! traces exported at 100% sampling (`TESSERA_TRACES__ENDPOINT` pointing at an OTLP/HTTP sink in
//! this process, which decodes every export request and counts its spans, so a figure bought by
//! dropping spans would show). `GET /identity/me`, the JWKS and introspection run on each, the
//! three servers taking turns within each scenario so that drift on the machine falls on all of
//! them alike. The limit next to them is the bare axum route.
//!
//! The overhead is the extra server CPU per request against metrics off: `off / on - 1`, from
//! the per-CPU-second figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::bail;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

use crate::oauth::{client_credentials_token, create_client};
use crate::{
    Api, CHEAP_ARGON2, Length, Load, Options, Report, Results, Server, Task, USERS, login_sessions,
    me_tasks, register_users, run_load,
};

/// Concurrency levels of the telemetry scenarios.
const LEVELS: [usize; 2] = [1, 16];
/// Extra CPU per request that metrics may cost against metrics off.
const METRICS_BUDGET: f64 = 5.0;
/// Extra CPU per request that metrics and traces at 100% sampling may cost.
const TRACES_BUDGET: f64 = 25.0;

/// The three configurations, in the order they take turns.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    MetricsOff,
    MetricsOn,
    Traced,
}

impl Variant {
    const ALL: [Self; 3] = [Self::MetricsOff, Self::MetricsOn, Self::Traced];

    fn suffix(self) -> &'static str {
        match self {
            Self::MetricsOff => "off",
            Self::MetricsOn => "metrics",
            Self::Traced => "m+traces",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::MetricsOff => "metrics off, traces off",
            Self::MetricsOn => "metrics on, traces off (the default)",
            Self::Traced => "metrics on, traces on at 100% sampling",
        }
    }
}

/// The scenarios measured on each server.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Me,
    Jwks,
    Introspect,
}

impl Scenario {
    const ALL: [Self; 3] = [Self::Me, Self::Jwks, Self::Introspect];

    fn name(self) -> &'static str {
        match self {
            Self::Me => "me",
            Self::Jwks => "jwks",
            Self::Introspect => "introspect",
        }
    }
}

pub struct Measured {
    pub variant: Variant,
    pub scenario: Scenario,
    pub load: Load,
}

pub struct TelemetryResults {
    pub runs: Vec<Measured>,
    pub bare: Load,
    /// What the OTLP sink received from the traced server.
    pub exports: u64,
    pub spans: u64,
    pub bytes: u64,
    /// 2xx responses the traced server gave during the measured windows and warm-ups (each is a
    /// server span), and during the set-up.
    pub traced_requests: u64,
}

/// One prepared server: its requests ready to be sent.
struct Prepared {
    variant: Variant,
    server: Server,
    api: Api,
    me: Vec<(crate::Creds, crate::TokenPair)>,
    introspect: (reqwest::header::HeaderValue, bytes::Bytes),
}

impl Prepared {
    fn tasks(&self, scenario: Scenario, c: usize) -> anyhow::Result<Vec<Task>> {
        Ok(match scenario {
            Scenario::Me => me_tasks(&self.me, c)?,
            Scenario::Jwks => (0..c).map(|_| Task::Jwks).collect(),
            Scenario::Introspect => (0..c)
                .map(|_| Task::Introspect {
                    authorization: self.introspect.0.clone(),
                    body: self.introspect.1.clone(),
                })
                .collect(),
        })
    }
}

/// Counts of what the sink was sent.
#[derive(Default)]
struct Sink {
    exports: AtomicU64,
    spans: AtomicU64,
    bytes: AtomicU64,
    malformed: AtomicU64,
}

/// An OTLP/HTTP receiver on loopback: decodes each `POST /v1/traces` as a collector does and
/// answers an empty `ExportTraceServiceResponse`.
async fn sink() -> anyhow::Result<(String, Arc<Sink>)> {
    let counts = Arc::new(Sink::default());
    let state = Arc::clone(&counts);
    let router = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: bytes::Bytes| {
            let state = Arc::clone(&state);
            async move {
                state.exports.fetch_add(1, Ordering::Relaxed);
                state.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                match ExportTraceServiceRequest::decode(body) {
                    Ok(request) => {
                        let spans: usize = request
                            .resource_spans
                            .iter()
                            .flat_map(|r| &r.scope_spans)
                            .map(|s| s.spans.len())
                            .sum();
                        state.spans.fetch_add(spans as u64, Ordering::Relaxed);
                    }
                    Err(_) => {
                        state.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (
                    [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                    bytes::Bytes::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/traces", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((url, counts))
}

pub async fn run(
    client: &reqwest::Client,
    options: &Options,
    results: &mut Results,
) -> anyhow::Result<()> {
    let seconds = Length::Seconds(options.measure);
    let bare_server = Server::start("bare axum route", &[("TESSERA_BENCH_BARE", "1")]).await?;
    let bare_api = Api::new(client, &bare_server);
    let tasks = (0..16).map(|_| Task::Bare).collect();
    let bare = run_load(
        "bare axum route",
        &bare_server,
        &bare_api,
        tasks,
        options.warmup,
        seconds,
    )
    .await?;
    results.logs.push(bare_server.stop().await?);

    let (endpoint, counts) = sink().await?;
    let mut prepared = Vec::new();
    for variant in Variant::ALL {
        let mut env: Vec<(&str, &str)> = CHEAP_ARGON2.to_vec();
        match variant {
            Variant::MetricsOff => env.push(("TESSERA_METRICS__ENABLED", "false")),
            Variant::MetricsOn => {}
            Variant::Traced => {
                env.push(("TESSERA_TRACES__ENDPOINT", endpoint.as_str()));
                env.push(("TESSERA_TRACES__SAMPLE_RATIO", "1"));
            }
        }
        let server = Server::start(&format!("telemetry: {}", variant.describe()), &env).await?;
        let api = Api::new(client, &server);
        register_users(&api, USERS).await?;
        let me = login_sessions(&api, 16, USERS).await?;
        let oc = create_client(&server).await?;
        let token = client_credentials_token(&api, &oc).await?;
        let body = bytes::Bytes::from(format!("token={token}"));
        prepared.push(Prepared {
            variant,
            server,
            api,
            me,
            introspect: (oc.basic.clone(), body),
        });
    }

    let mut runs = Vec::new();
    let mut traced_requests: u64 = 0;
    for scenario in Scenario::ALL {
        for c in LEVELS {
            for p in &prepared {
                let label = format!("{} {}", scenario.name(), p.variant.suffix());
                let load = run_load(
                    &label,
                    &p.server,
                    &p.api,
                    p.tasks(scenario, c)?,
                    options.warmup,
                    seconds,
                )
                .await?;
                if p.variant == Variant::Traced {
                    traced_requests += load.stats.ok() as u64;
                }
                runs.push(Measured {
                    variant: p.variant,
                    scenario,
                    load,
                });
            }
        }
    }
    // The batch processor exports every 5 s at the latest; wait for the last batch.
    let before = counts.spans.load(Ordering::Relaxed);
    for _ in 0..70 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if counts.spans.load(Ordering::Relaxed) > before {
            break;
        }
    }
    for p in prepared {
        results.logs.push(p.server.stop().await?);
    }
    if counts.malformed.load(Ordering::Relaxed) > 0 {
        bail!("the OTLP sink received export requests it could not decode");
    }
    let spans = counts.spans.load(Ordering::Relaxed);
    if spans == 0 {
        bail!("the traced server exported no span: traces were not on");
    }
    results.telemetry = Some(TelemetryResults {
        runs,
        bare,
        exports: counts.exports.load(Ordering::Relaxed),
        spans,
        bytes: counts.bytes.load(Ordering::Relaxed),
        traced_requests,
    });
    Ok(())
}

pub fn loads(r: &Results) -> impl Iterator<Item = &Load> {
    r.telemetry
        .iter()
        .flat_map(|t| t.runs.iter().map(|m| &m.load).chain([&t.bare]))
}

pub fn render(rep: &mut Report, r: &Results) {
    let Some(t) = &r.telemetry else {
        return;
    };
    rep.section("Telemetry overhead: metrics off, metrics on, metrics + traces at 100% (same build, servers taking turns)");
    rep.load_header();
    rep.load_row(&t.bare, None);
    for m in &t.runs {
        let target = (m.variant != Variant::MetricsOff)
            .then(|| base_of(t, m))
            .flatten()
            .map(|base| {
                let extra = extra_cpu_percent(base, &m.load);
                let budget = budget(m.variant);
                (
                    format!("<=+{budget:.0}% CPU: {extra:+.1}%"),
                    extra <= budget,
                )
            });
        rep.load_row(&m.load, target);
    }
    rep.line("Target: extra server CPU per request against metrics off (off / on - 1, per CPU-second), at most");
    rep.line(&format!(
        "+{METRICS_BUDGET:.0}% with metrics on and +{TRACES_BUDGET:.0}% with traces exported at 100% sampling."
    ));
    rep.line(&format!(
        "OTLP sink: {} export requests, {} spans ({:.1} KiB of protobuf) for {} measured 2xx responses of the traced server",
        t.exports,
        t.spans,
        t.bytes as f64 / 1024.0,
        t.traced_requests
    ));
    rep.line("(the warm-ups and the set-up requests are spans too; fewer spans than responses means the exporter dropped some).");
}

fn budget(variant: Variant) -> f64 {
    match variant {
        Variant::MetricsOff => 0.0,
        Variant::MetricsOn => METRICS_BUDGET,
        Variant::Traced => TRACES_BUDGET,
    }
}

/// The metrics-off run of the same scenario and concurrency.
fn base_of<'a>(t: &'a TelemetryResults, m: &Measured) -> Option<&'a Load> {
    t.runs
        .iter()
        .find(|b| {
            b.variant == Variant::MetricsOff
                && b.scenario == m.scenario
                && b.load.concurrency == m.load.concurrency
        })
        .map(|b| &b.load)
}

/// Extra server CPU per request of `load` against `base`, in percent.
fn extra_cpu_percent(base: &Load, load: &Load) -> f64 {
    (base.ok_per_server_cpu_second() / load.ok_per_server_cpu_second().max(1e-9) - 1.0) * 100.0
}
