//! Issue 5 scenarios: what abuse protection costs, and what it does under a credential-stuffing
//! attack.
//!
//! - **Overhead**: the same load on two servers, one with `TESSERA_RATE_LIMIT__ENABLED=false` and
//!   one with the limiter on but every limit raised out of reach (it runs, never refuses).
//!   `GET /identity/me` (not a limited class: what every request pays) and `POST /auth/login`
//!   (per-IP and per-account buckets, the lockout guard), both at concurrency 16, run alternately
//!   off, on, on, off (an ABBA order cancels a linear drift such as a growing session table), and
//!   the two runs of each side are averaged.
//! - **Credential stuffing**: a server with the default limits, trusting `X-Forwarded-For` from
//!   127.0.0.1 so that one load generator plays many client IPs. An attacker at concurrency 32
//!   sends wrong passwords for random victim accounts from one IP while legitimate users at
//!   concurrency 4 log in with their correct passwords, each from their own IP. Two variants: the
//!   legitimate users are other accounts, or they are the attacked accounts themselves, from the
//!   IP they signed in from once before the attack (a known device).
//!
//! Legitimate users are paced: each signs in at most once per `(warm-up + measured) / 24`
//! seconds, at most 26 times in the whole scenario (setup login included), within their per-IP
//! burst of 30. A user who signs in 30 times in a few seconds is rightly throttled; that is not
//! what "legitimate" means here. Enough users are registered to keep 4 clients busy.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use tokio::task::JoinSet;

use crate::{
    Api, Baselines, Creds, Hardware, Length, Load, Meter, NOISY_OTHER_CORES, Options, Report,
    Results, Server, Stats, Task, Usage, login_sessions, percentile_ms, progress, register_users,
    run_load,
};

/// Concurrency of the overhead scenarios.
const OVERHEAD_CONCURRENCY: usize = 16;
/// `/identity/me` throughput overhead target, percent.
const ME_OVERHEAD_TARGET: f64 = 5.0;
/// The order of the overhead runs: limiter on?
const OVERHEAD_ORDER: [bool; 4] = [false, true, true, false];
const ATTACKER_IP: &str = "203.0.113.66";
const ATTACKERS: usize = 32;
const VICTIMS: usize = 20;
const LEGIT_CONCURRENCY: usize = 4;
/// Logins per legitimate user in one scenario (warm-up and measured window): the pace is set
/// from it. One more is the setup login before the attack.
const LEGIT_LOGINS_PER_USER: u32 = 24;

/// The abuse group's figures.
pub(crate) struct AbuseResults {
    /// Overhead runs: (scenario, limiter on, load).
    overhead: Vec<(&'static str, bool, Load)>,
    stuffing: Vec<Stuffing>,
}

/// One credential-stuffing variant.
struct Stuffing {
    variant: &'static str,
    /// Legitimate logins while the attack runs.
    legit: Load,
    /// Failures of the legitimate users before the attack (setup logins and warm-up).
    legit_before: BTreeMap<String, u64>,
    legit_users: usize,
    pace: Duration,
    /// The attacker while legitimate users log in, then alone.
    with_legit: AttackWindow,
    alone: AttackWindow,
    /// Every attacker request, from the first.
    total: AttackWindow,
    /// Attacker requests that were not answered 429: seconds after the start of the attack and
    /// outcome.
    not_throttled: Vec<(f64, String)>,
    /// Length of the whole attack.
    attack: Duration,
    /// When the answers to the attacker's initial burst (the non-429 answers to requests sent in
    /// the first second) were all in, seconds after the start of the attack.
    burst_end: f64,
    /// Latencies of the legitimate logins started before and after `burst_end`, µs, sorted.
    legit_in_burst_us: Vec<u32>,
    legit_after_burst_us: Vec<u32>,
}

#[derive(Default)]
struct AttackWindow {
    /// Outcomes: `HTTP <status>` or a transport error.
    outcomes: BTreeMap<String, u64>,
    throttled: u64,
    /// 429 answers without a `Retry-After` header.
    no_retry_after: u64,
    server_errors: u64,
    /// Latencies of the 429 answers, µs, sorted.
    throttled_us: Vec<u32>,
    usage: Option<Usage>,
}

impl AttackWindow {
    fn add(&mut self, hit: &Hit) {
        *self.outcomes.entry(hit.outcome.clone()).or_default() += 1;
        if hit.status == Some(429) {
            self.throttled += 1;
            self.throttled_us.push(hit.micros);
            if !hit.retry_after {
                self.no_retry_after += 1;
            }
        }
        if hit.status.is_some_and(|s| s >= 500) {
            self.server_errors += 1;
        }
    }

    fn requests(&self) -> u64 {
        self.outcomes.values().sum()
    }

    fn not_throttled(&self) -> u64 {
        self.requests() - self.throttled
    }
}

/// One attacker request.
struct Hit {
    at: Instant,
    status: Option<u16>,
    outcome: String,
    micros: u32,
    retry_after: bool,
}

pub(crate) async fn run(
    client: &reqwest::Client,
    options: &Options,
    baselines: &Baselines,
    hw: &Hardware,
    results: &mut Results,
) -> anyhow::Result<()> {
    let mut out = AbuseResults {
        overhead: Vec::new(),
        stuffing: Vec::new(),
    };
    overhead(client, options, results, &mut out).await?;
    // Logins per second the machine could do at most (every core hashing), to size the pool of
    // legitimate users so that pacing does not starve the 4 clients.
    let max_logins = hw.cores as f64 * baselines.hashes_per_cpu_second();
    for others in [true, false] {
        let (stuffing, log) = stuffing(client, options, others, max_logins).await?;
        out.stuffing.push(stuffing);
        results.logs.push(log);
    }
    results.abuse = Some(out);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Overhead

async fn overhead(
    client: &reqwest::Client,
    options: &Options,
    results: &mut Results,
    out: &mut AbuseResults,
) -> anyhow::Result<()> {
    let off = Server::start("limiter off", &[("TESSERA_RATE_LIMIT__ENABLED", "false")]).await?;
    let on = Server::start("limiter on, limits raised", &[]).await?;
    let mut sides = Vec::new();
    for server in [&off, &on] {
        let api = Api::new(client, server);
        register_users(&api, OVERHEAD_CONCURRENCY).await?;
        let sessions = login_sessions(&api, OVERHEAD_CONCURRENCY, OVERHEAD_CONCURRENCY).await?;
        let bearers = sessions
            .iter()
            .map(|(_, pair)| HeaderValue::from_str(&format!("Bearer {}", pair.access)))
            .collect::<Result<Vec<_>, _>>()?;
        sides.push((server, api, bearers));
    }
    let seconds = Length::Seconds(options.measure);
    for scenario in ["me", "login"] {
        for limiter in OVERHEAD_ORDER {
            let (server, api, bearers) = &sides[usize::from(limiter)];
            let tasks = (0..OVERHEAD_CONCURRENCY)
                .map(|i| match scenario {
                    "me" => Task::Me {
                        authorization: bearers[i].clone(),
                    },
                    _ => Task::Login {
                        body: Creds::user(i).login_body(),
                    },
                })
                .collect();
            let label = format!("{scenario} {}", if limiter { "on" } else { "off" });
            let load = run_load(&label, server, api, tasks, options.warmup, seconds).await?;
            out.overhead.push((scenario, limiter, load));
        }
    }
    results.logs.push(off.stop().await?);
    results.logs.push(on.stop().await?);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Credential stuffing

fn victim(i: usize) -> Creds {
    Creds {
        email: format!("stuffing-victim-{i}@example.com"),
        password: format!("victim-{i}-pass-correct-horse-battery"),
    }
}

fn regular(i: usize) -> Creds {
    Creds {
        email: format!("regular-user-{i}@example.com"),
        password: format!("regular-{i}-pass-correct-horse-battery"),
    }
}

/// The IP a victim signed in from before the attack (its known device).
fn victim_ip(i: usize) -> String {
    format!("198.51.100.{}", i + 1)
}

/// The IP of a legitimate user who is not attacked (RFC 2544 benchmarking range).
fn regular_ip(i: usize) -> String {
    format!("198.18.{}.{}", i / 250, i % 250 + 1)
}

/// A distinct IP per registration (registrations are limited to 10 per IP).
fn registration_ip(i: usize) -> String {
    format!("10.66.{}.{}", i / 250, i % 250 + 1)
}

/// `POST /auth/login` from `ip` (as `X-Forwarded-For`): status, `Retry-After` present, and an
/// error description when the status is not 200.
async fn login_from(api: &Api, ip: &HeaderValue, body: String) -> (Option<u16>, bool, String) {
    let response = match api
        .client
        .post(api.url("/auth/login"))
        .header(CONTENT_TYPE, "application/json")
        .header("x-forwarded-for", ip.clone())
        .body(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return (None, false, format!("transport error: {e}")),
    };
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key(RETRY_AFTER);
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(e) => return (None, false, format!("reading the body: {e}")),
    };
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    (Some(status), retry_after, format!("HTTP {status} {code}"))
}

async fn register_from(api: &Api, creds: &Creds, ip: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({ "email": creds.email, "password": creds.password }).to_string();
    crate::send(
        api.client
            .post(api.url("/auth/register"))
            .header(CONTENT_TYPE, "application/json")
            .header("x-forwarded-for", ip)
            .body(body),
    )
    .await
    .map_err(|e| anyhow::anyhow!("registering {}: {e}", creds.email))?;
    Ok(())
}

/// Legitimate users, each with its own IP, taken in turn by the clients, each at most once per
/// `pace`.
struct Pacer {
    queue: Mutex<VecDeque<(usize, Instant)>>,
    users: Vec<(String, HeaderValue)>,
    pace: Duration,
}

/// One legitimate login: start, latency, outcome.
type LegitRecord = (Instant, u32, Result<(), String>);

impl Pacer {
    fn next(&self) -> Option<(usize, Instant)> {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    fn put_back(&self, user: usize, next: Instant) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back((user, next));
    }

    /// One client: logs users in until `end`.
    async fn client(self: Arc<Self>, api: Api, end: Instant) -> Vec<LegitRecord> {
        let mut records = Vec::new();
        loop {
            let Some((user, next)) = self.next() else {
                if Instant::now() >= end {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            if next >= end {
                self.put_back(user, next);
                break;
            }
            tokio::time::sleep_until(next.into()).await;
            let started = Instant::now();
            let (body, ip) = &self.users[user];
            let (status, _, outcome) = login_from(&api, ip, body.clone()).await;
            let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
            self.put_back(user, started + self.pace);
            let result = if status == Some(200) {
                Ok(())
            } else {
                Err(outcome)
            };
            records.push((started, micros, result));
        }
        records
    }
}

/// Small, fast, good enough to pick victims (splitmix64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % n as u64) as usize
    }
}

/// One attacker client: wrong passwords for random victims from [`ATTACKER_IP`] until `stop`.
async fn attacker(api: Api, seed: u64, stop: Arc<AtomicBool>) -> Vec<Hit> {
    let ip = HeaderValue::from_static(ATTACKER_IP);
    let mut rng = Rng(seed);
    let mut hits = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let target = victim(rng.below(VICTIMS));
        n += 1;
        let body = serde_json::json!({
            "email": target.email,
            "password": format!("leaked-password-{seed}-{n}"),
        })
        .to_string();
        let at = Instant::now();
        let (status, retry_after, outcome) = login_from(&api, &ip, body).await;
        hits.push(Hit {
            at,
            status,
            outcome,
            micros: u32::try_from(at.elapsed().as_micros()).unwrap_or(u32::MAX),
            retry_after,
        });
    }
    hits
}

/// One variant: `others` = the legitimate users are not the attacked accounts; otherwise they
/// are the victims, from their known IPs.
async fn stuffing(
    client: &reqwest::Client,
    options: &Options,
    others: bool,
    max_logins_per_second: f64,
) -> anyhow::Result<(Stuffing, crate::LogSummary)> {
    let variant = if others {
        "legitimate users are other accounts"
    } else {
        "legitimate users are the attacked accounts, from known IPs"
    };
    let server = Server::start_with_default_limits(
        &format!("default limits, stuffing ({variant})"),
        &[("TESSERA_TRUSTED_PROXIES", "127.0.0.1")],
    )
    .await?;
    let api = Api::new(client, &server);
    let pace = (options.warmup + options.measure) / LEGIT_LOGINS_PER_USER;
    let legit: Vec<(Creds, String)> = if others {
        // Enough users that paced clients stay busy at the machine's best login rate.
        let n = (1.5 * max_logins_per_second * pace.as_secs_f64()).ceil() as usize;
        let n = n.clamp(32, 5000);
        (0..n).map(|i| (regular(i), regular_ip(i))).collect()
    } else {
        (0..VICTIMS).map(|i| (victim(i), victim_ip(i))).collect()
    };
    progress(&format!(
        "stuffing: registering {VICTIMS} victims{}",
        if others {
            format!(" and {} legitimate users", legit.len())
        } else {
            String::new()
        }
    ));
    let mut all: Vec<Creds> = (0..VICTIMS).map(victim).collect();
    if others {
        all.extend(legit.iter().map(|(c, _)| c.clone()));
    }
    // At most 16 at a time: this server keeps the default bound on queued password hashes
    // (32 per hashing thread), which answers 429 past it.
    let gate = Arc::new(tokio::sync::Semaphore::new(16));
    let mut set = JoinSet::new();
    for (i, creds) in all.into_iter().enumerate() {
        let api = api.clone();
        let gate = Arc::clone(&gate);
        set.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            register_from(&api, &creds, &registration_ip(i)).await
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }

    let users = legit
        .iter()
        .map(|(c, ip)| Ok((c.login_body(), HeaderValue::from_str(ip)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Setup: every legitimate user signs in once from its IP before the attack (for victims,
    // this makes the IP a known device).
    progress("stuffing: one login per legitimate user before the attack");
    let mut legit_before: BTreeMap<String, u64> = BTreeMap::new();
    let mut set = JoinSet::new();
    for (body, ip) in users.iter().cloned() {
        let api = api.clone();
        set.spawn(async move { login_from(&api, &ip, body).await });
    }
    while let Some(r) = set.join_next().await {
        let (status, _, outcome) = r?;
        if status != Some(200) {
            *legit_before.entry(format!("setup: {outcome}")).or_default() += 1;
        }
    }

    let legit_users = users.len();
    let start = Instant::now();
    let pacer = Arc::new(Pacer {
        queue: Mutex::new((0..legit_users).map(|u| (u, start)).collect()),
        users,
        pace,
    });
    let attack_from = start + options.warmup;
    let legit_until = attack_from + options.measure;
    progress(&format!(
        "stuffing ({variant}): legitimate logins x{LEGIT_CONCURRENCY} from {legit_users} IPs; attack x{ATTACKERS} from {ATTACKER_IP} after {:.1} s",
        options.warmup.as_secs_f64()
    ));
    let mut legit_set = JoinSet::new();
    for _ in 0..LEGIT_CONCURRENCY {
        legit_set.spawn(Arc::clone(&pacer).client(api.clone(), legit_until));
    }
    tokio::time::sleep_until(attack_from.into()).await;
    let m0 = Meter::read(server.pid)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut attack_set = JoinSet::new();
    for i in 0..ATTACKERS {
        let seed = 0x5EED_0000 + i as u64 + u64::from(others) * 1000;
        attack_set.spawn(attacker(api.clone(), seed, Arc::clone(&stop)));
    }
    tokio::time::sleep_until(legit_until.into()).await;
    let m1 = Meter::read(server.pid)?;
    let mut legit_records = Vec::new();
    while let Some(r) = legit_set.join_next().await {
        legit_records.extend(r?);
    }
    // The attack alone, once the last legitimate login has been answered.
    progress("stuffing: the attack alone");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m2 = Meter::read(server.pid)?;
    tokio::time::sleep(options.measure).await;
    let m3 = Meter::read(server.pid)?;
    stop.store(true, Ordering::Relaxed);
    let mut hits = Vec::new();
    while let Some(r) = attack_set.join_next().await {
        hits.extend(r?);
    }
    let attack = Instant::now() - m0.at;
    let log = server.stop().await?;

    let burst_end = hits
        .iter()
        .filter(|h| h.status != Some(429) && h.at < m0.at + Duration::from_secs(1))
        .map(|h| h.at + Duration::from_micros(u64::from(h.micros)))
        .max()
        .unwrap_or(m0.at);
    let (mut legit_in_burst_us, mut legit_after_burst_us) = (Vec::new(), Vec::new());
    for (at, micros, result) in &legit_records {
        if result.is_ok() && *at >= m0.at {
            if *at < burst_end {
                legit_in_burst_us.push(*micros);
            } else {
                legit_after_burst_us.push(*micros);
            }
        }
    }
    legit_in_burst_us.sort_unstable();
    legit_after_burst_us.sort_unstable();
    let mut stats = Stats::default();
    for (at, micros, result) in legit_records {
        match (at >= m0.at, result) {
            (true, Ok(())) => stats.latencies_us.push(micros),
            (true, Err(e)) => *stats.errors.entry(e).or_default() += 1,
            (false, Ok(())) => {}
            (false, Err(e)) => *legit_before.entry(format!("warm-up: {e}")).or_default() += 1,
        }
    }
    stats.latencies_us.sort_unstable();
    let legit = Load {
        label: "legit login".into(),
        concurrency: LEGIT_CONCURRENCY,
        stats,
        usage: m1.since(&m0),
        from: m0.at,
    };

    hits.sort_by_key(|h| h.at);
    let mut with_legit = AttackWindow {
        usage: Some(m1.since(&m0)),
        ..AttackWindow::default()
    };
    let mut alone = AttackWindow {
        usage: Some(m3.since(&m2)),
        ..AttackWindow::default()
    };
    let mut total = AttackWindow::default();
    let mut not_throttled = Vec::new();
    for hit in &hits {
        total.add(hit);
        if hit.at < m1.at {
            with_legit.add(hit);
        } else if hit.at >= m2.at && hit.at < m3.at {
            alone.add(hit);
        }
        if hit.status != Some(429) {
            not_throttled.push((
                hit.at.saturating_duration_since(m0.at).as_secs_f64(),
                hit.outcome.clone(),
            ));
        }
    }
    for w in [&mut with_legit, &mut alone, &mut total] {
        w.throttled_us.sort_unstable();
    }
    Ok((
        Stuffing {
            variant,
            legit,
            legit_before,
            legit_users,
            pace,
            with_legit,
            alone,
            total,
            not_throttled,
            attack,
            burst_end: burst_end.saturating_duration_since(m0.at).as_secs_f64(),
            legit_in_burst_us,
            legit_after_burst_us,
        },
        log,
    ))
}

// ---------------------------------------------------------------------------------------------
// Report

pub(crate) fn loads(r: &Results) -> impl Iterator<Item = &Load> {
    r.abuse.iter().flat_map(|a| {
        a.overhead
            .iter()
            .map(|(_, _, load)| load)
            .chain(a.stuffing.iter().map(|s| &s.legit))
    })
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn list(values: impl Iterator<Item = f64>, decimals: usize) -> String {
    values
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn render(rep: &mut Report, r: &Results, b: &Baselines, hw: &Hardware) {
    let Some(a) = &r.abuse else { return };
    render_overhead(rep, a, hw);
    let defaults = tessera::abuse::RateLimitConfig::default();
    for s in &a.stuffing {
        render_stuffing(rep, s, &defaults, b, hw);
    }
}

fn render_overhead(rep: &mut Report, a: &AbuseResults, hw: &Hardware) {
    rep.section(&format!(
        "Abuse protection: rate-limiter overhead (nproc = {}, {})",
        hw.cores, hw.model
    ));
    rep.line("off = TESSERA_RATE_LIMIT__ENABLED=false; on = limiter and lockout guard enabled, every limit raised to 1e9");
    rep.line("(runs, never refuses). Two servers side by side, each with 16 users; runs in the order off, on, on, off,");
    rep.line("same warm-up and window each; the two runs of a side are averaged. GET /identity/me is not a limited class");
    rep.line("(it pays only what every request pays); login checks the per-IP and per-account buckets and the lockout guard.");
    rep.line("Login runs on both servers use the default (OWASP) Argon2id.");
    rep.load_header();
    for (_, _, load) in &a.overhead {
        rep.load_row(load, None);
    }
    for scenario in ["me", "login"] {
        let side = |on: bool| {
            a.overhead
                .iter()
                .filter(move |(s, l, _)| *s == scenario && *l == on)
                .map(|(_, _, load)| load)
        };
        let rate = |on: bool| mean(side(on).map(Load::ok_per_second));
        let per_cpu = |on: bool| mean(side(on).map(Load::ok_per_server_cpu_second));
        let p50 = |on: bool| mean(side(on).map(|l| l.stats.percentile_ms(0.50)));
        let p99 = |on: bool| mean(side(on).map(|l| l.stats.percentile_ms(0.99)));
        let (off_rate, on_rate) = (rate(false), rate(true));
        let overhead = (off_rate - on_rate) / off_rate * 100.0;
        let cpu_overhead = (per_cpu(false) - per_cpu(true)) / per_cpu(false) * 100.0;
        rep.line(&format!(
            "{scenario} x{OVERHEAD_CONCURRENCY}: ok/s off [{}] mean {off_rate:.0}; on [{}] mean {on_rate:.0}",
            list(side(false).map(Load::ok_per_second), 0),
            list(side(true).map(Load::ok_per_second), 0),
        ));
        rep.line(&format!(
            "    ok/srv-CPUs off [{}] mean {:.0}; on [{}] mean {:.0}  -> {cpu_overhead:+.1}% per CPU-second",
            list(side(false).map(Load::ok_per_server_cpu_second), 0),
            per_cpu(false),
            list(side(true).map(Load::ok_per_server_cpu_second), 0),
            per_cpu(true),
        ));
        rep.line(&format!(
            "    p50 off {:.2} ms, on {:.2} ms; p99 off [{}] mean {:.2} ms, on [{}] mean {:.2} ms",
            p50(false),
            p50(true),
            list(side(false).map(|l| l.stats.percentile_ms(0.99)), 2),
            p99(false),
            list(side(true).map(|l| l.stats.percentile_ms(0.99)), 2),
            p99(true),
        ));
        if scenario == "me" {
            rep.check(
                "me x16 throughput overhead of the limiter",
                &format!("{overhead:+.1}%"),
                &format!("<= {ME_OVERHEAD_TARGET}%"),
                overhead <= ME_OVERHEAD_TARGET,
            );
        } else {
            let (p99_off, p99_on) = (p99(false), p99(true));
            rep.line(&format!(
                "  login x16 with the limiter: throughput {:+.1}%, logins per CPU-second {:+.1}%, p99 {:+.2} ms ({:+.1}%)  (no target; + = slower/costlier)",
                overhead,
                cpu_overhead,
                p99_on - p99_off,
                (p99_on - p99_off) / p99_off * 100.0
            ));
        }
    }
    if a.overhead
        .iter()
        .any(|(_, _, l)| l.usage.other_cores() > NOISY_OTHER_CORES)
    {
        rep.line(
            "  (* other work on the machine during some runs: those figures are less reliable)",
        );
    }
}

fn render_stuffing(
    rep: &mut Report,
    s: &Stuffing,
    d: &tessera::abuse::RateLimitConfig,
    b: &Baselines,
    hw: &Hardware,
) {
    rep.section(&format!(
        "Abuse protection: credential stuffing, {} (nproc = {}, {})",
        s.variant, hw.cores, hw.model
    ));
    rep.line(&format!(
        "Server with the default limits (login per IP: burst {}, {}/min; per account: burst {}, {}/min, skipped on known devices;",
        d.login_ip.burst, d.login_ip.per_minute, d.login_account.burst, d.login_account.per_minute
    ));
    rep.line(&format!(
        "lockout after {} failures per account+IP, {} per account), TESSERA_TRUSTED_PROXIES=127.0.0.1 (X-Forwarded-For sets the client IP).",
        d.lockout_threshold, d.lockout_account_threshold
    ));
    rep.line(&format!(
        "Attacker: x{ATTACKERS}, wrong passwords for {VICTIMS} random registered victims, all from {ATTACKER_IP}."
    ));
    let ips = if s.variant.contains("attacked") {
        "the victims themselves, each from 198.51.100.<n>, the IP it signed in from once before the attack"
    } else {
        "other accounts, each from its own IP 198.18.x.y (signed in once before the attack)"
    };
    rep.line(&format!(
        "Legitimate: x{LEGIT_CONCURRENCY}, correct passwords, {} users: {ips};",
        s.legit_users
    ));
    rep.line(&format!(
        "  each user at most once per {:.0} ms (<= {} logins per user in the scenario, setup included, within its per-IP burst).",
        s.pace.as_secs_f64() * 1000.0,
        LEGIT_LOGINS_PER_USER + 2
    ));
    rep.line("Legitimate logins warm up alone, then the attack starts and both run for the window; then the attack runs alone");
    rep.line("for another window (server CPU per 429 comes from that one).");
    rep.line("Legitimate logins during the attack (ok/srv-CPUs: server CPU includes the attack):");
    rep.load_header();
    rep.load_row(&s.legit, None);
    if !s.legit_before.is_empty() {
        rep.line("  legitimate failures BEFORE the attack (setup login, warm-up):");
        for (k, n) in &s.legit_before {
            rep.line(&format!("    {n} x {k}"));
        }
    }
    for (name, w) in [
        ("with legitimate logins", &s.with_legit),
        ("alone", &s.alone),
    ] {
        let Some(u) = &w.usage else { continue };
        let wall = u.wall.as_secs_f64();
        rep.line(&format!(
            "Attacker {name}: {} requests in {wall:.1} s, {:.0} 429/s served; 429 latency p50 {:.2} ms, p99 {:.2} ms;",
            w.requests(),
            w.throttled as f64 / wall,
            percentile_ms(&w.throttled_us, 0.50),
            percentile_ms(&w.throttled_us, 0.99),
        ));
        rep.line(&format!(
            "  server {:.2} cores, load generator {:.2}, other {:.2}{}; outcomes: {}",
            u.server_cores(),
            u.client.as_secs_f64() / wall,
            u.other_cores(),
            if u.other_cores() > NOISY_OTHER_CORES {
                " *"
            } else {
                ""
            },
            outcomes(&w.outcomes)
        ));
    }
    if let Some(u) = &s.alone.usage
        && s.alone.throttled > 0
    {
        let cpu_us = u.server.as_secs_f64() * 1e6;
        let per = cpu_us / s.alone.throttled as f64;
        let others = s.alone.not_throttled();
        let hash_us = b.argon2_cpu_ms * 1000.0;
        let adjusted = (cpu_us - others as f64 * hash_us).max(0.0) / s.alone.throttled as f64;
        rep.line(&format!(
            "  server CPU per 429 (attack alone): {per:.1} µs ({:.0} 429s per server CPU-second); without the {others} non-429 answers",
            1e6 / per
        ));
        rep.line(&format!(
            "  in that window, counted at one Argon2id hash each ({:.1} ms): {adjusted:.1} µs per 429",
            b.argon2_cpu_ms
        ));
    }
    let attack = s.attack.as_secs_f64();
    let allowance = f64::from(d.login_ip.burst) + f64::from(d.login_ip.per_minute) / 60.0 * attack;
    let in_first = s.not_throttled.iter().filter(|(t, _)| *t < 1.0).count();
    rep.line(&format!(
        "Whole attack ({attack:.1} s, {} requests): {}",
        s.total.requests(),
        outcomes(&s.total.outcomes)
    ));
    rep.line(&format!(
        "  not throttled: {} ({in_first} in the first second, {} later; the per-IP bucket allows {} + {}/min = {allowance:.0} in {attack:.1} s){}",
        s.not_throttled.len(),
        s.not_throttled.len() - in_first,
        d.login_ip.burst,
        d.login_ip.per_minute,
        if s.not_throttled.len() as f64 <= allowance + 1.0 {
            ""
        } else {
            "  MORE THAN THE BUCKET ALLOWS"
        }
    ));
    let later: Vec<String> = s
        .not_throttled
        .iter()
        .filter(|(t, _)| *t >= 1.0)
        .map(|(t, o)| format!("{t:.1} s {}", o.trim()))
        .collect();
    if !later.is_empty() {
        rep.line(&format!("  later non-429 answers: {}", later.join("; ")));
    }
    if s.total.no_retry_after > 0 {
        rep.line(&format!(
            "  {} 429 answers WITHOUT a Retry-After header",
            s.total.no_retry_after
        ));
    } else {
        rep.line("  every 429 carried a Retry-After header");
    }
    let errors = s.legit.stats.error_count();
    rep.check(
        "legitimate logins during the attack succeed",
        &format!("{} ok, {errors} errors", s.legit.stats.ok()),
        "0 errors",
        errors == 0 && s.legit.stats.ok() > 0,
    );
    let legit_5xx: u64 = s
        .legit
        .stats
        .errors
        .iter()
        .chain(&s.legit_before)
        .filter(|(k, _)| k.contains("HTTP 5"))
        .map(|(_, n)| n)
        .sum();
    let server_errors = s.total.server_errors + legit_5xx;
    rep.check(
        "5xx answers (attacker and legitimate)",
        &server_errors.to_string(),
        "0",
        server_errors == 0,
    );
    rep.line(&format!(
        "  legitimate login p50 {:.2} ms, p99 {:.2} ms during the attack ({} logins);",
        s.legit.stats.percentile_ms(0.50),
        s.legit.stats.percentile_ms(0.99),
        s.legit.stats.ok()
    ));
    rep.line(&format!(
        "    started while the attacker's initial burst was being verified (first {:.2} s): {} logins, p50 {:.2} ms, p99 {:.2} ms;",
        s.burst_end,
        s.legit_in_burst_us.len(),
        percentile_ms(&s.legit_in_burst_us, 0.50),
        percentile_ms(&s.legit_in_burst_us, 0.99)
    ));
    rep.line(&format!(
        "    started after it (only 429s and the refill's rare 401s for the attacker): {} logins, p50 {:.2} ms, p99 {:.2} ms",
        s.legit_after_burst_us.len(),
        percentile_ms(&s.legit_after_burst_us, 0.50),
        percentile_ms(&s.legit_after_burst_us, 0.99)
    ));
}

fn outcomes(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, n)| format!("{n} x {}", k.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}
