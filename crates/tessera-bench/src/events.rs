//! Issue 3 scenarios: registrations per second, and the transactional outbox relayed to a local
//! NATS JetStream while registrations run.
//!
//! A registration hashes the password (Argon2id) and writes, in one transaction, the user, a
//! verification token, a mail job and two outbox events (`identity.user.registered.v1`,
//! `identity.email.verification_requested.v1`).
//!
//! Relay lag: the envelope's `occurred_at` has whole-second precision, too coarse for a lag, so
//! the lag is measured as the time this process received the event on NATS minus the time it got
//! the `201 Created` of the registration that caused it (matched by the email in the event's
//! `data`). Both instants come from this process's monotonic clock. A second figure uses the
//! millisecond timestamp inside the event's UUIDv7 `event_id`, taken inside the transaction just
//! before the commit, against the wall clock at receipt.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;

use crate::{
    Api, CHEAP_ARGON2, Hardware, LEVELS, Length, Load, LogSummary, NOISY_OTHER_CORES, Options,
    Report, Results, Server, Task, percentile_ms, progress, run_load,
};

/// The local broker the relay scenario publishes to.
const NATS_URL: &str = "nats://127.0.0.1:4222";
const PASSWORD: &str = "bench-password-correct-horse-battery";
/// Events each registration writes to the outbox.
const EVENTS_PER_REGISTRATION: u64 = 2;
/// Relay lag target, p99.
const LAG_P99_TARGET_MS: f64 = 1000.0;

/// Unique emails for registration load; optionally records when each `201` arrived.
pub(crate) struct EmailSeq {
    prefix: String,
    next: AtomicU64,
    ok: AtomicU64,
    created: Option<Mutex<HashMap<String, Instant>>>,
}

impl EmailSeq {
    fn new(prefix: String, record: bool) -> Arc<Self> {
        Arc::new(Self {
            prefix,
            next: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            created: record.then(|| Mutex::new(HashMap::new())),
        })
    }

    pub(crate) async fn register(&self, api: &Api) -> Result<(), String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let email = format!("{}-{n}@example.com", self.prefix);
        let body = serde_json::json!({ "email": email, "password": PASSWORD }).to_string();
        api.post_json("/auth/register", body).await?;
        let at = Instant::now();
        self.ok.fetch_add(1, Ordering::Relaxed);
        if let Some(created) = &self.created {
            created
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(email, at);
        }
        Ok(())
    }

    fn tasks(self: &Arc<Self>, c: usize) -> Vec<Task> {
        (0..c)
            .map(|_| Task::Register {
                seq: Arc::clone(self),
            })
            .collect()
    }
}

/// Registrations on the default server (OWASP Argon2id, file mail transport).
pub(crate) struct Registrations {
    loads: Vec<Load>,
    /// Successful registrations in all three runs, warm-ups included.
    total: u64,
    /// `.eml` files the mail worker had written 2 s after the last run.
    mails: usize,
}

/// One relay run: registrations at concurrency 16 with the relay publishing to NATS.
pub(crate) struct RelayOutcome {
    label: String,
    result: Result<Relay, String>,
}

struct Relay {
    load: Load,
    stream: String,
    subject_prefix: String,
    /// Successful registrations, warm-up included.
    registrations: u64,
    /// Events received (first copies), and by the end of the measured window.
    received: usize,
    received_in_window: usize,
    duplicates: usize,
    /// Received events naming no registration of this run.
    unmatched: usize,
    /// From the end of the load to the last event received.
    drain: Duration,
    /// Lag to receipt from the 201, µs, sorted: events of registrations answered in the window.
    lag_201_us: Vec<u32>,
    /// Events that arrived before this process had read the 201 (counted as 0 lag).
    before_201: usize,
    /// Lag to receipt from the UUIDv7 timestamp of `event_id`, µs, sorted.
    lag_v7_us: Vec<u32>,
    stream_deleted: Result<(), String>,
}

struct Received {
    event_id: String,
    email: String,
    at: Instant,
    wall: SystemTime,
}

pub(crate) async fn run(
    client: &reqwest::Client,
    options: &Options,
    results: &mut Results,
) -> anyhow::Result<()> {
    let (registrations, log) = registrations(client, options).await?;
    results.registrations = Some(registrations);
    results.logs.push(log);
    for (label, env) in [
        ("relay, default Argon2id", &[][..]),
        ("relay, cheap Argon2id", &CHEAP_ARGON2[..]),
    ] {
        let (outcome, log) = relay(client, options, label, env).await;
        results.relays.push(outcome);
        results.logs.extend(log);
    }
    Ok(())
}

async fn registrations(
    client: &reqwest::Client,
    options: &Options,
) -> anyhow::Result<(Registrations, LogSummary)> {
    let server = Server::start("RS256 (default), registrations", &[]).await?;
    let api = Api::new(client, &server);
    let seq = EmailSeq::new("bench-register".into(), false);
    let mut loads = Vec::new();
    for c in LEVELS {
        loads.push(
            run_load(
                "register",
                &server,
                &api,
                seq.tasks(c),
                options.warmup,
                Length::Seconds(options.measure),
            )
            .await?,
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails = count_files(&server.data_dir.join("mail"), "eml");
    let total = seq.ok.load(Ordering::Relaxed);
    let log = server.stop().await?;
    Ok((
        Registrations {
            loads,
            total,
            mails,
        },
        log,
    ))
}

fn count_files(dir: &std::path::Path, ext: &str) -> usize {
    fn walk(dir: &std::path::Path, ext: &str, n: &mut usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, ext, n);
            } else if path.extension().is_some_and(|e| e == ext) {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(dir, ext, &mut n);
    n
}

fn random_id() -> String {
    tessera::crypto::random_bytes::<6>()
        .iter()
        .fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

async fn relay(
    client: &reqwest::Client,
    options: &Options,
    label: &str,
    env: &[(&str, &str)],
) -> (RelayOutcome, Option<LogSummary>) {
    progress(&format!("{label}: connecting to NATS at {NATS_URL}"));
    let nats = match connect_nats().await {
        Ok(n) => n,
        Err(e) => {
            return (
                RelayOutcome {
                    label: label.into(),
                    result: Err(e),
                },
                None,
            );
        }
    };
    let (result, log) = relay_with(client, options, label, env, &nats).await;
    nats.drain().await.ok();
    (
        RelayOutcome {
            label: label.into(),
            result: result.map_err(|e| format!("{e:#}")),
        },
        log,
    )
}

async fn connect_nats() -> Result<async_nats::Client, String> {
    let hint = "start it with `nats-server -a 127.0.0.1 -p 4222 -js` (as .ci/run does)";
    let connect = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .connect(NATS_URL);
    let nats = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            return Err(format!("NATS is not reachable at {NATS_URL} ({e}): {hint}"));
        }
        Err(_) => return Err(format!("NATS at {NATS_URL} did not answer in 5 s: {hint}")),
    };
    // No JetStream account query here: its reply format changed between server versions, and
    // the relay creates the stream itself (a missing JetStream shows as no event delivered).
    nats.flush()
        .await
        .map_err(|e| format!("NATS at {NATS_URL} does not answer ({e}): {hint}"))?;
    Ok(nats)
}

async fn relay_with(
    client: &reqwest::Client,
    options: &Options,
    label: &str,
    env: &[(&str, &str)],
    nats: &async_nats::Client,
) -> (anyhow::Result<Relay>, Option<LogSummary>) {
    let id = random_id();
    let subject_prefix = format!("tessera-bench.{id}");
    let stream = format!("TESSERA_BENCH_{id}");
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let collector = match nats.subscribe(format!("{subject_prefix}.>")).await {
        Ok(mut sub) => {
            let received = Arc::clone(&received);
            tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    let (at, wall) = (Instant::now(), wall_clock());
                    let v: serde_json::Value =
                        serde_json::from_slice(&msg.payload).unwrap_or_default();
                    received
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Received {
                            event_id: v["event_id"].as_str().unwrap_or_default().into(),
                            email: v["data"]["email"].as_str().unwrap_or_default().into(),
                            at,
                            wall,
                        });
                }
            })
        }
        Err(e) => return (Err(anyhow::anyhow!("subscribing on NATS: {e}")), None),
    };
    let _ = nats.flush().await;
    let mut server_env: Vec<(&str, &str)> = env.to_vec();
    server_env.extend([
        ("TESSERA_EVENTS__NATS_URL", NATS_URL),
        ("TESSERA_EVENTS__SUBJECT_PREFIX", subject_prefix.as_str()),
        ("TESSERA_EVENTS__STREAM", stream.as_str()),
    ]);
    let server = match Server::start(label, &server_env).await {
        Ok(s) => s,
        Err(e) => {
            collector.abort();
            return (Err(e), None);
        }
    };
    let api = Api::new(client, &server);
    let seq = EmailSeq::new(format!("bench-relay-{id}"), true);
    let load = run_load(
        "relay: register",
        &server,
        &api,
        seq.tasks(16),
        options.warmup,
        Length::Seconds(options.measure),
    )
    .await;
    let load_end = Instant::now();
    // Drain: wait for every event, or until nothing arrived for 5 s (30 s at most).
    progress(&format!("{label}: waiting for the relay to drain"));
    let expected = seq.ok.load(Ordering::Relaxed) * EVENTS_PER_REGISTRATION;
    let mut last = (0usize, Instant::now());
    loop {
        let n = received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        if n as u64 >= expected
            || last.1.elapsed() > Duration::from_secs(5)
            || load_end.elapsed() > Duration::from_secs(30)
        {
            break;
        }
        if n != last.0 {
            last = (n, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    collector.abort();
    let log = server.stop().await;
    let stream_deleted = async_nats::jetstream::new(nats.clone())
        .delete_stream(&stream)
        .await
        .map(drop)
        .map_err(|e| e.to_string());
    let load = match (load, log) {
        (Ok(l), Ok(log)) => (l, log),
        (Err(e), log) => return (Err(e), log.ok()),
        (_, Err(e)) => return (Err(e), None),
    };
    let received = std::mem::take(&mut *received.lock().unwrap_or_else(PoisonError::into_inner));
    let created = seq
        .created
        .as_ref()
        .map(|m| std::mem::take(&mut *m.lock().unwrap_or_else(PoisonError::into_inner)))
        .unwrap_or_default();
    let (load, log) = load;
    let relay = analyse(
        load,
        &received,
        &created,
        load_end,
        stream,
        subject_prefix,
        seq.ok.load(Ordering::Relaxed),
        stream_deleted,
    );
    (Ok(relay), Some(log))
}

#[expect(clippy::too_many_arguments, reason = "one call site, all distinct")]
fn analyse(
    load: Load,
    received: &[Received],
    created: &HashMap<String, Instant>,
    load_end: Instant,
    stream: String,
    subject_prefix: String,
    registrations: u64,
    stream_deleted: Result<(), String>,
) -> Relay {
    let window_end = load.from + load.usage.wall;
    let mut seen = HashSet::new();
    let (mut duplicates, mut unmatched, mut before_201, mut in_window) = (0, 0, 0, 0);
    let (mut lag_201_us, mut lag_v7_us) = (Vec::new(), Vec::new());
    let mut last_at = load_end;
    for r in received {
        if !seen.insert(r.event_id.as_str()) {
            duplicates += 1;
            continue;
        }
        last_at = last_at.max(r.at);
        if r.at >= load.from && r.at <= window_end {
            in_window += 1;
        }
        let Some(&answered) = created.get(&r.email) else {
            unmatched += 1;
            continue;
        };
        if answered < load.from || answered > window_end {
            continue;
        }
        let lag = match r.at.checked_duration_since(answered) {
            Some(d) => d,
            None => {
                before_201 += 1;
                Duration::ZERO
            }
        };
        lag_201_us.push(u32::try_from(lag.as_micros()).unwrap_or(u32::MAX));
        if let (Some(ms), Ok(wall)) = (uuid_v7_ms(&r.event_id), r.wall.duration_since(UNIX_EPOCH)) {
            let lag = wall.as_micros().saturating_sub(u128::from(ms) * 1000);
            lag_v7_us.push(u32::try_from(lag).unwrap_or(u32::MAX));
        }
    }
    lag_201_us.sort_unstable();
    lag_v7_us.sort_unstable();
    Relay {
        load,
        stream,
        subject_prefix,
        registrations,
        received: seen.len(),
        received_in_window: in_window,
        duplicates,
        unmatched,
        drain: last_at.saturating_duration_since(load_end),
        lag_201_us,
        before_201,
        lag_v7_us,
        stream_deleted,
    }
}

/// The wall clock to the µs, to compare with the millisecond timestamp of a UUIDv7 written by
/// the server (`tessera::clock::Clock` has whole seconds only).
#[expect(
    clippy::disallowed_methods,
    reason = "sub-second wall time of an event's receipt, compared with its UUIDv7 timestamp"
)]
fn wall_clock() -> SystemTime {
    SystemTime::now()
}

/// The Unix time in ms in the first 48 bits of a UUIDv7.
fn uuid_v7_ms(id: &str) -> Option<u64> {
    let hex: String = id.chars().filter(|c| *c != '-').take(12).collect();
    (hex.len() == 12)
        .then(|| u64::from_str_radix(&hex, 16).ok())
        .flatten()
}

pub(crate) fn loads(r: &Results) -> impl Iterator<Item = &Load> {
    r.registrations.iter().flat_map(|g| g.loads.iter()).chain(
        r.relays
            .iter()
            .filter_map(|o| o.result.as_ref().ok().map(|x| &x.load)),
    )
}

pub(crate) fn render(rep: &mut Report, r: &Results, hw: &Hardware) {
    if let Some(g) = &r.registrations {
        rep.section(&format!(
            "Registrations (POST /auth/register; default server: OWASP Argon2id, file mail transport; {} cores)",
            hw.cores
        ));
        rep.line("Each registration: one Argon2id hash, then user + verification token + mail job + 2 outbox events in one transaction.");
        rep.load_header();
        for load in &g.loads {
            rep.load_row(load, None);
        }
        rep.line(&format!(
            "No target in the issue. Mail worker (file transport): {} .eml files written for {} registrations, 2 s after the last run.",
            g.mails, g.total
        ));
    }
    if r.relays.is_empty() {
        return;
    }
    rep.section(&format!(
        "Outbox relay to NATS JetStream at {NATS_URL} (registrations x16 while the relay publishes; {} cores)",
        hw.cores
    ));
    rep.line("lag from 201 = time this process received the event on NATS (core subscription on <prefix>.>) minus the time");
    rep.line("it read the 201 of the registration that caused it (occurred_at has whole seconds only); events of registrations");
    rep.line("answered in the measured window. lag from event_id = receipt wall clock minus the ms timestamp of the UUIDv7");
    rep.line("event_id (taken in the transaction, just before commit). Relay polls every 200 ms when idle (default).");
    for outcome in &r.relays {
        match &outcome.result {
            Err(e) => {
                rep.check(
                    &format!("{}: relay lag p99", outcome.label),
                    "not measured",
                    "< 1 s",
                    false,
                );
                rep.line(&format!("  FAIL: {e}"));
            }
            Ok(x) => render_relay(rep, &outcome.label, x),
        }
    }
}

fn render_relay(rep: &mut Report, label: &str, x: &Relay) {
    rep.line(&format!(
        "-- {label}: stream {}, subjects {}.>",
        x.stream, x.subject_prefix
    ));
    rep.load_header();
    rep.load_row(&x.load, None);
    let wall = x.load.usage.wall.as_secs_f64();
    let expected = x.registrations * EVENTS_PER_REGISTRATION;
    rep.line(&format!(
        "  events delivered in the window: {:.0}/s ({} events in {:.1} s); total {} of {} expected ({} registrations x {}),",
        x.received_in_window as f64 / wall,
        x.received_in_window,
        wall,
        x.received,
        expected,
        x.registrations,
        EVENTS_PER_REGISTRATION
    ));
    rep.line(&format!(
        "  {} duplicates, {} not from this run; drain after the load stopped: {:.2} s (0 = all arrived during the load)",
        x.duplicates,
        x.unmatched,
        x.drain.as_secs_f64()
    ));
    rep.line(&format!(
        "  lag from 201: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} events ({} arrived before the 201 was read, counted 0)",
        percentile_ms(&x.lag_201_us, 0.50),
        percentile_ms(&x.lag_201_us, 0.99),
        percentile_ms(&x.lag_201_us, 1.0),
        x.lag_201_us.len(),
        x.before_201
    ));
    rep.line(&format!(
        "  lag from event_id: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile_ms(&x.lag_v7_us, 0.50),
        percentile_ms(&x.lag_v7_us, 0.99),
        percentile_ms(&x.lag_v7_us, 1.0),
    ));
    let p99 = percentile_ms(&x.lag_201_us, 0.99);
    let complete = x.received as u64 >= expected && x.duplicates == 0;
    rep.check(
        &format!("{label}: relay lag p99 (from 201)"),
        &format!("{p99:.1} ms"),
        "< 1 s",
        p99 < LAG_P99_TARGET_MS,
    );
    rep.check(
        &format!("{label}: every event once"),
        &format!("{}/{}", x.received, expected),
        "all, no duplicates",
        complete,
    );
    if x.received == 0 {
        rep.line("  no event arrived: is JetStream enabled on the broker (`nats-server -js`)? See the server log summary below.");
    }
    if x.load.usage.other_cores() > NOISY_OTHER_CORES {
        rep.line("  (* other work on the machine during this window)");
    }
    if let Err(e) = &x.stream_deleted {
        rep.line(&format!(
            "  deleting stream {} failed: {e} (delete it by hand: nats stream rm {})",
            x.stream, x.stream
        ));
    } else {
        rep.line(&format!("  stream {} deleted afterwards", x.stream));
    }
}
