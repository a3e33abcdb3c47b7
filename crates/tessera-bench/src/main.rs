//! Tessera benchmark: what the service costs in CPU and memory, measured on this machine.
//!
//! Run it with `cargo run --release -p tessera-bench` (about ten minutes on 2 cores);
//! `-- --quick` gives a short smoke run, `-- --seconds N` sets the measured seconds per scenario,
//! `-- --only foundation,events,oauth,abuse,shared,tenants,telemetry,growth,mfa` runs a subset of the scenario groups
//! (default: all).
//!
//! It measures:
//! - **Cost baselines**, in this process: one Argon2id hash at the default (OWASP) parameters, and
//!   one access-token signature (RS256, ES256, EdDSA) and verification with a key held by a real
//!   [`tessera::AppState`].
//! - **HTTP scenarios** against a Tessera server running as a *child process* (this binary
//!   re-executed with the hidden argument `serve-child`), so that the server's CPU time
//!   (`/proc/<pid>/stat`) and resident memory (`VmRSS`) are measured apart from the load
//!   generator: login, refresh-token rotation (RS256 and ES256), `GET /identity/me`, the JWKS,
//!   `/identity/me` during a login storm, idle memory and memory per session, and bare axum routes
//!   serving the JWKS's and the discovery document's bytes as the hot paths' limits (group
//!   `foundation`; the hot-path targets are checked in [`hot`]);
//! - registrations (user, verification token, mail job and outbox events in one transaction) and
//!   the outbox relay to a local NATS JetStream: events/s and the lag to delivery (group `events`,
//!   see [`events`]);
//! - OAuth 2.0 / OpenID Connect: client-credentials tokens (RS256, ES256), introspection,
//!   discovery and a full authorization-code + PKCE login through the hosted pages (group
//!   `oauth`, see [`oauth`]);
//! - abuse protection: the overhead of the rate limiter on `GET /identity/me` and on login, and a
//!   credential-stuffing attack from one IP against default limits while legitimate users log in
//!   (group `abuse`, see [`abuse`]);
//! - shared state: login, refresh and `/identity/me` with Redis on, and a login storm over two
//!   replicas sharing one PostgreSQL database and one Redis (group `shared`, see [`shared`]);
//! - tenants at scale: 100 000 tenants and 1 000 000 memberships seeded on SQLite and on
//!   PostgreSQL, `GET /tenants`, AuthZEN evaluations, API-key requests and tenant switching, next
//!   to a bare axum route in a child process (group `tenants`, see [`tenants`]);
//! - the price of telemetry: `/identity/me`, the JWKS and introspection with metrics off,
//!   metrics on, and metrics with traces exported at 100% sampling to an OTLP sink in this
//!   process (group `telemetry`, see [`telemetry`]);
//! - cost as data grows: login, refresh, introspection and `/identity/me` at 1 000, 100 000 and
//!   1 000 000 seeded users with 10 sessions each, on SQLite and PostgreSQL, and their p99
//!   while the server's housekeeping purges 2 000 000 expired rows (group `growth`, see
//!   [`growth`]);
//! - second factors: TOTP checks in this process, and a login with an authenticator app next to
//!   one without, a login with a passkey as the second step, and a passwordless passkey
//!   sign-in, per server CPU-second, next to TOTP and WebAuthn limits (group `mfa`, see [`mfa`]).
//!
//! Every scenario has a warm-up that is not recorded, then a measured window. Throughput counts
//! 2xx responses only; any other status or transport error is counted and shown. "Per server
//! CPU-second" divides the successful requests by the CPU time the server process used in the
//! window, which makes the figure independent of the load generator sharing the same cores.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use tessera::clock::Clock;
use tessera::config::PasswordConfig;
use tessera::keys::jwt::AccessClaims;
use tessera::passwords::Passwords;
use tokio::io::AsyncBufReadExt;
use tokio::task::JoinSet;

mod abuse;
mod events;
mod federation;
mod growth;
mod hot;
mod instructions;
mod mfa;
mod oauth;
mod shared;
mod telemetry;
mod tenants;

/// Hidden first argument: run as the server under test.
const CHILD_ARG: &str = "serve-child";
const ISSUER: &str = "http://localhost:7005";
const MIB: f64 = 1024.0 * 1024.0;
/// Users registered on each server for the login scenarios.
const USERS: usize = 64;
const LEVELS: [usize; 3] = [1, 16, 64];
/// Other work on the machine above which a figure is flagged as less reliable, cores.
const NOISY_OTHER_CORES: f64 = 0.25;
/// `/proc` reports CPU times in USER_HZ ticks, which Linux fixes at 100 for user space.
const TICKS_PER_SECOND: u64 = 100;
/// Rate-limit classes of the service. Every request of this load generator comes from
/// 127.0.0.1, so each server runs with these limits raised out of reach: the limiter still runs
/// (its cost is measured), it just never refuses.
const RATE_LIMIT_CLASSES: [&str; 10] = [
    "LOGIN_IP",
    "LOGIN_ACCOUNT",
    "REGISTER_IP",
    "RECOVERY_IP",
    "RECOVERY_ACCOUNT",
    "REGISTER_GLOBAL",
    "RECOVERY_GLOBAL",
    "TOKEN_IP",
    "TOKEN_CLIENT",
    "INTROSPECT_CLIENT",
];
const RAISED_LIMIT: &str = "1000000000";
/// Cheap Argon2id parameters for the memory-per-session server (see [`memory_scenario`]).
const CHEAP_ARGON2: [(&str, &str); 2] = [
    ("TESSERA_PASSWORD__ARGON2_MEMORY_KIB", "8"),
    ("TESSERA_PASSWORD__ARGON2_ITERATIONS", "1"),
];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.first().map(String::as_str) == Some(CHILD_ARG) {
        return runtime.block_on(serve_child());
    }
    let options = Options::parse(&args)?;
    if let Some(count) = &options.instructions {
        let binary = match &count.server {
            Some(path) => path.clone(),
            None => instructions::default_server_binary()?,
        };
        let report = runtime.block_on(instructions::run(&binary, count.compare.as_deref()))?;
        print!("{report}");
        return Ok(());
    }
    let report = runtime.block_on(run(&options))?;
    print!("{report}");
    Ok(())
}

/// The server under test: configuration from the environment the parent set.
async fn serve_child() -> anyhow::Result<()> {
    if std::env::var_os("TESSERA_BENCH_BARE").is_some() {
        return serve_bare().await;
    }
    let config = tessera::Config::load(None)?;
    tessera::telemetry::init(&config.log_format, &config.traces)?;
    let app = tessera::App::build(config, Clock::System).await?;
    // The parent holds our stdin open; end of file means it is gone, so no server outlives it.
    // A `PURGE` line runs one housekeeping pass in this process, through the server's own store
    // (and so its writer queue), as the hourly pass would: `PURGED <rows> <ms>` answers it.
    let store = app.state().store.clone();
    let runtime = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if line.trim() != "PURGE" {
                continue;
            }
            let store = store.clone();
            runtime.spawn(async move {
                let started = Instant::now();
                let deleted = tessera::app::purge_expired(&store, Clock::System.now()).await;
                let answer = match deleted {
                    Ok(n) => format!("PURGED {n} {}", started.elapsed().as_millis()),
                    Err(e) => format!("PURGE FAILED {e:#}"),
                };
                let mut stdout = std::io::stdout();
                let _ = writeln!(stdout, "{answer}").and_then(|()| stdout.flush());
            });
        }
        std::process::exit(0);
    });
    let mut stdout = std::io::stdout();
    writeln!(stdout, "LISTENING {}", app.local_addr())?;
    stdout.flush()?;
    app.run().await
}

/// The limit of the HTTP scenarios: one axum route answering `{}` on the same runtime and
/// listener setup, nothing else.
async fn serve_bare() -> anyhow::Result<()> {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    // `{}`, or the bytes a Tessera route serves (the hot-path limits: the same body, nothing else).
    let body =
        Bytes::from(std::env::var("TESSERA_BENCH_BARE_BODY").unwrap_or_else(|_| "{}".into()));
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let body = body.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "LISTENING {}", listener.local_addr()?)?;
    stdout.flush()?;
    axum::serve(listener, router).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Options and machine facts

struct Options {
    warmup: Duration,
    measure: Duration,
    /// Logins in the memory-per-session scenario.
    sessions: u64,
    hashes: u32,
    signatures: u32,
    quick: bool,
    /// Scenario groups to run.
    groups: Vec<Group>,
    /// `--instructions`: count instructions per request under callgrind instead.
    instructions: Option<InstructionCount>,
}

/// `--instructions [--server BIN] [--compare OLD_BIN]`.
#[derive(Default)]
struct InstructionCount {
    server: Option<PathBuf>,
    compare: Option<PathBuf>,
}

/// A group of scenarios, selected with `--only`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Group {
    /// Login, refresh, me, JWKS, storm, memory.
    Foundation,
    /// Registrations and the outbox relay to NATS.
    Events,
    /// The OAuth 2.0 / OIDC endpoints.
    OAuth,
    /// Rate-limiter overhead and a credential-stuffing attack.
    Abuse,
    /// Login, refresh and me with Redis; a login storm over two replicas.
    Shared,
    /// 100 000 tenants, 1 000 000 memberships: tenant list, AuthZEN, API keys, switching.
    Tenants,
    /// Metrics off, metrics on, metrics + traces: `/identity/me`, JWKS, introspection.
    Telemetry,
    /// 1 000 to 1 000 000 users with 10 sessions each: the hot paths, and a purge.
    Growth,
    /// TOTP checks, and a login with a second factor against one without.
    Mfa,
    /// A sign-in through an upstream OpenID Connect provider (a second Tessera).
    Federation,
}

impl Group {
    const ALL: [Self; 10] = [
        Self::Foundation,
        Self::Events,
        Self::OAuth,
        Self::Abuse,
        Self::Shared,
        Self::Tenants,
        Self::Telemetry,
        Self::Growth,
        Self::Mfa,
        Self::Federation,
    ];

    fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "foundation" => Self::Foundation,
            "events" => Self::Events,
            "oauth" => Self::OAuth,
            "abuse" => Self::Abuse,
            "shared" => Self::Shared,
            "tenants" => Self::Tenants,
            "telemetry" => Self::Telemetry,
            "growth" => Self::Growth,
            "mfa" => Self::Mfa,
            "federation" => Self::Federation,
            other => {
                bail!(
                    "unknown group {other:?} (groups: foundation, events, oauth, abuse, shared, tenants, telemetry, growth, mfa, federation)"
                )
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Foundation => "foundation",
            Self::Events => "events",
            Self::OAuth => "oauth",
            Self::Abuse => "abuse",
            Self::Shared => "shared",
            Self::Tenants => "tenants",
            Self::Telemetry => "telemetry",
            Self::Growth => "growth",
            Self::Mfa => "mfa",
            Self::Federation => "federation",
        }
    }
}

impl Options {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut quick = false;
        let mut seconds = None;
        let mut groups = Group::ALL.to_vec();
        let mut instructions: Option<InstructionCount> = None;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--instructions" => {
                    instructions.get_or_insert_with(InstructionCount::default);
                }
                "--server" | "--compare" => {
                    let value = it.next().with_context(|| format!("{arg} needs a binary"))?;
                    let count = instructions.get_or_insert_with(InstructionCount::default);
                    let path = Some(PathBuf::from(value));
                    if arg == "--server" {
                        count.server = path;
                    } else {
                        count.compare = path;
                    }
                }
                "--seconds" => {
                    let value = it.next().context("--seconds needs a value")?;
                    let s: f64 = value
                        .parse()
                        .with_context(|| format!("--seconds {value:?}"))?;
                    if !(0.1..=600.0).contains(&s) {
                        bail!("--seconds must be between 0.1 and 600");
                    }
                    seconds = Some(Duration::from_secs_f64(s));
                }
                "--only" => {
                    let value = it.next().context("--only needs a value")?;
                    groups = value
                        .split(',')
                        .map(|g| Group::parse(g.trim()))
                        .collect::<anyhow::Result<_>>()?;
                }
                "-h" | "--help" => {
                    println!("usage: {USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?} (usage: {USAGE})"),
            }
        }
        let mut options = if quick {
            Self {
                warmup: Duration::from_millis(500),
                measure: Duration::from_secs(2),
                sessions: 10_000,
                hashes: 5,
                signatures: 200,
                quick,
                groups,
                instructions: None,
            }
        } else {
            Self {
                warmup: Duration::from_secs(1),
                measure: Duration::from_secs(5),
                sessions: 100_000,
                hashes: 20,
                signatures: 2000,
                quick,
                groups,
                instructions: None,
            }
        };
        options.instructions = instructions;
        if let Some(s) = seconds {
            options.measure = s;
        }
        Ok(options)
    }

    fn runs(&self, group: Group) -> bool {
        self.groups.contains(&group)
    }
}

const USAGE: &str = "tessera-bench [--quick] [--seconds N] [--only foundation,events,oauth,abuse,shared,tenants,telemetry,growth,mfa]\n   \
     or: tessera-bench --instructions [--server TESSERA_BIN] [--compare OLD_TESSERA_BIN]";

struct Hardware {
    cores: usize,
    model: String,
    kernel: String,
    memory: String,
}

impl Hardware {
    fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown CPU".to_string(), |(_, m)| m.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or_else(|| "?".into(), |kib| format!("{:.1} GiB", kib / MIB));
        Self {
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            memory,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CPU and memory accounting from /proc

/// User + system CPU time of a whole process, threads that already exited included (Argon2
/// runs on tokio's blocking threads, which exit when idle: summing the live threads'
/// `schedstat` would lose their time). Resolution 10 ms, small against a scenario's CPU.
fn process_cpu(pid: &str) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name start at field 3; utime and stime are 14, 15.
    let rest = stat
        .rsplit_once(')')
        .context("malformed /proc/<pid>/stat")?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i - 3)
            .context("short /proc/<pid>/stat")?
            .parse()?)
    };
    Ok(ticks_to_duration(ticks(14)? + ticks(15)?))
}

/// CPU time of the live threads of this process, to the nanosecond (`schedstat`). Used for the
/// in-process baselines, which run before any thread of this process could have exited.
fn threads_cpu() -> anyhow::Result<Duration> {
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let path = entry?.path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(&path) {
            total += text
                .split_whitespace()
                .next()
                .unwrap_or("0")
                .parse::<u64>()
                .unwrap_or(0);
        }
    }
    Ok(Duration::from_nanos(total))
}

/// CPU time of the calling thread, to the nanosecond.
fn thread_cpu() -> anyhow::Result<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    Ok(Duration::from_nanos(
        text.split_whitespace()
            .next()
            .context("empty schedstat")?
            .parse()?,
    ))
}

/// Busy CPU time of the whole machine (all processes), from `/proc/stat`.
fn machine_busy() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice, already counted in user]
    let busy = v.iter().take(8).sum::<u64>()
        - v.get(3).copied().unwrap_or(0)
        - v.get(4).copied().unwrap_or(0);
    Ok(ticks_to_duration(busy))
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// A numeric field of `/proc/<pid>/status` (`VmRSS` in kB, `Threads`).
fn status_field(pid: u32, name: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
        .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
    Ok(value.trim().trim_end_matches("kB").trim().parse()?)
}

/// Resident set size of a process, bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    Ok(status_field(pid, "VmRSS")? * 1024)
}

/// A snapshot of the clocks a measurement window is bounded by.
#[derive(Clone, Copy)]
struct Meter {
    at: Instant,
    server: Duration,
    client: Duration,
    machine: Duration,
}

/// CPU used in a window: by the server, by this load generator, and by everything else.
#[derive(Clone, Copy, Debug)]
struct Usage {
    wall: Duration,
    server: Duration,
    client: Duration,
    machine: Duration,
}

impl Meter {
    fn read(server_pid: u32) -> anyhow::Result<Self> {
        Ok(Self {
            at: Instant::now(),
            server: process_cpu(&server_pid.to_string())?,
            client: process_cpu("self")?,
            machine: machine_busy()?,
        })
    }

    fn since(&self, start: &Self) -> Usage {
        Usage {
            wall: self.at - start.at,
            server: self.server.saturating_sub(start.server),
            client: self.client.saturating_sub(start.client),
            machine: self.machine.saturating_sub(start.machine),
        }
    }
}

impl Usage {
    fn server_cores(&self) -> f64 {
        self.server.as_secs_f64() / self.wall.as_secs_f64()
    }

    /// Cores busy with neither the server nor the load generator (other work on the machine).
    fn other_cores(&self) -> f64 {
        let other =
            self.machine.as_secs_f64() - self.server.as_secs_f64() - self.client.as_secs_f64();
        (other / self.wall.as_secs_f64()).max(0.0)
    }
}

/// Samples a process's RSS and thread count every 100 ms and keeps the peaks.
struct PeakSampler {
    rss: Arc<AtomicU64>,
    threads: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakSampler {
    fn start(pid: u32) -> Self {
        let rss_peak = Arc::new(AtomicU64::new(0));
        let threads_peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, t, s) = (
            Arc::clone(&rss_peak),
            Arc::clone(&threads_peak),
            Arc::clone(&stop),
        );
        let task = tokio::spawn(async move {
            loop {
                if let Ok(v) = rss(pid) {
                    r.fetch_max(v, Ordering::Relaxed);
                }
                if let Ok(v) = status_field(pid, "Threads") {
                    t.fetch_max(v, Ordering::Relaxed);
                }
                if s.load(Ordering::Relaxed) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self {
            rss: rss_peak,
            threads: threads_peak,
            stop,
            task,
        }
    }

    /// Peak RSS (bytes) and peak thread count.
    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        (
            self.rss.load(Ordering::Relaxed),
            self.threads.load(Ordering::Relaxed),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The server under test

/// A Tessera server in a child process, on a fresh SQLite data directory. Killed when dropped.
struct Server {
    name: String,
    // Declared before `dir`: the process is killed before its data directory is removed.
    child: tokio::process::Child,
    pid: u32,
    base: String,
    /// RSS half a second after it started listening, before any request.
    idle_rss: u64,
    log: PathBuf,
    /// `TESSERA_DATA_DIR` of the server (its SQLite file).
    data_dir: PathBuf,
    /// The child's stdin and stdout: held open (the child exits when stdin closes), and the
    /// channel of [`Server::purge`].
    control: tokio::sync::Mutex<Control>,
    _dir: tempfile::TempDir,
}

struct Control {
    stdin: Option<tokio::process::ChildStdin>,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Server {
    /// Starts a server with the default configuration plus `env`, its rate limits raised out of
    /// reach (see [`RATE_LIMIT_CLASSES`]).
    async fn start(name: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::launch(name, env, true).await
    }

    /// Starts a server with the default configuration plus `env`, rate limits included.
    async fn start_with_default_limits(name: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::launch(name, env, false).await
    }

    async fn launch(name: &str, env: &[(&str, &str)], raise_limits: bool) -> anyhow::Result<Self> {
        progress(&format!("starting server {name}"));
        let dir = tempfile::Builder::new()
            .prefix("tessera-bench-")
            .tempdir()?;
        let log = dir.path().join("server.log");
        let data_dir = dir.path().join("data");
        let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
        cmd.arg(CHILD_ARG);
        for (key, _) in
            std::env::vars().filter(|(k, _)| k.starts_with("TESSERA_") || k == "RUST_LOG")
        {
            cmd.env_remove(key);
        }
        cmd.env("TESSERA_LISTEN", "127.0.0.1:0")
            .env("TESSERA_DATA_DIR", &data_dir)
            .env("TESSERA_ISSUER", ISSUER)
            // A master key from the environment: no generated key file, no warning about it.
            .env(
                "TESSERA_MASTER_KEY",
                tessera::crypto::MasterKey::generate().to_base64(),
            )
            .env("TESSERA_LOG", "warn")
            .env("NO_COLOR", "1");
        if raise_limits {
            // The bounded hash queue answers 429 past it: out of reach too.
            cmd.env("TESSERA_PASSWORD__MAX_QUEUED_HASHES", RAISED_LIMIT);
            // So is the lockout's bound on checks in flight per account (the memory scenario
            // logs one account in from 64 clients at once).
            cmd.env("TESSERA_RATE_LIMIT__LOCKOUT_THRESHOLD", RAISED_LIMIT);
            cmd.env(
                "TESSERA_RATE_LIMIT__LOCKOUT_ACCOUNT_THRESHOLD",
                RAISED_LIMIT,
            );
        }
        for class in RATE_LIMIT_CLASSES.iter().filter(|_| raise_limits) {
            for field in ["BURST", "PER_MINUTE"] {
                cmd.env(
                    format!("TESSERA_RATE_LIMIT__{class}__{field}"),
                    RAISED_LIMIT,
                );
            }
        }
        cmd.envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("spawning the server process")?;
        let pid = child.id().context("the server exited at once")?;
        let stdin = child.stdin.take();
        let mut stdout =
            tokio::io::BufReader::new(child.stdout.take().context("no stdout pipe")?).lines();
        let line = tokio::time::timeout(Duration::from_secs(120), stdout.next_line())
            .await
            .context("the server did not start listening within 120 s")??;
        let Some(addr) = line.as_deref().and_then(|l| l.strip_prefix("LISTENING ")) else {
            bail!(
                "server {name} did not start: {:?}\n{}",
                line,
                log_tail(&log)
            );
        };
        let base = format!("http://{addr}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle_rss = rss(pid)?;
        Ok(Self {
            name: name.into(),
            child,
            pid,
            base,
            idle_rss,
            log,
            data_dir,
            control: tokio::sync::Mutex::new(Control { stdin, stdout }),
            _dir: dir,
        })
    }

    fn rss(&self) -> anyhow::Result<u64> {
        rss(self.pid)
    }

    /// One housekeeping pass run inside the server process (`tessera::app::purge_expired` on
    /// its own store); returns the rows deleted and how long the server says it took.
    async fn purge(&self) -> anyhow::Result<(u64, Duration)> {
        use tokio::io::AsyncWriteExt as _;
        let mut control = self.control.lock().await;
        let stdin = control
            .stdin
            .as_mut()
            .context("the server's stdin is closed")?;
        stdin.write_all(b"PURGE\n").await?;
        stdin.flush().await?;
        let line = control
            .stdout
            .next_line()
            .await?
            .context("the server closed its stdout during the purge")?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("PURGED"), Some(rows), Some(ms)) => Ok((
                rows.parse().context("purged rows")?,
                Duration::from_millis(ms.parse().context("purge time")?),
            )),
            _ => bail!("server {}: {line}\n{}", self.name, log_tail(&self.log)),
        }
    }

    /// Kills the server and summarises its log.
    async fn stop(mut self) -> anyhow::Result<LogSummary> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!(
                "server {} died during the run ({status})\n{}",
                self.name,
                log_tail(&self.log)
            );
        }
        self.child.start_kill()?;
        self.child.wait().await?;
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut summary = LogSummary {
            server: self.name.clone(),
            ..LogSummary::default()
        };
        for line in text.lines() {
            if line.contains(" ERROR ") {
                summary.errors += 1;
            } else if line.contains(" WARN ") {
                summary.warnings += 1;
            } else {
                continue;
            }
            if summary.samples.len() < 3 {
                summary.samples.push(line.chars().take(220).collect());
            }
        }
        Ok(summary)
    }
}

#[derive(Default)]
struct LogSummary {
    server: String,
    errors: usize,
    warnings: usize,
    samples: Vec<String>,
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn progress(message: &str) {
    eprintln!("[tessera-bench] {message}");
}

// ---------------------------------------------------------------------------------------------
// HTTP client side

#[derive(Clone)]
struct Creds {
    email: String,
    password: String,
}

impl Creds {
    fn user(i: usize) -> Self {
        Self {
            email: format!("bench-user-{i}@example.com"),
            password: format!("bench-password-{i}-correct-horse"),
        }
    }

    fn login_body(&self) -> String {
        serde_json::json!({ "email": self.email, "password": self.password }).to_string()
    }
}

/// One server's API through a shared connection pool.
#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    base: Arc<str>,
}

struct TokenPair {
    access: String,
    refresh: String,
}

impl Api {
    fn new(client: &reqwest::Client, server: &Server) -> Self {
        Self {
            client: client.clone(),
            base: server.base.as_str().into(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post_json(&self, path: &str, body: String) -> Result<Bytes, String> {
        send(
            self.client
                .post(self.url(path))
                .header(CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await
    }

    async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let body = send(self.client.get(self.url(path)))
            .await
            .map_err(|e| anyhow::anyhow!("GET {path}: {e}"))?;
        Ok(String::from_utf8(body.to_vec())?)
    }

    async fn register(&self, creds: &Creds) -> anyhow::Result<()> {
        let body =
            serde_json::json!({ "email": creds.email, "password": creds.password }).to_string();
        self.post_json("/auth/register", body)
            .await
            .map_err(|e| anyhow::anyhow!("registering {}: {e}", creds.email))?;
        Ok(())
    }

    async fn login(&self, creds: &Creds) -> Result<TokenPair, String> {
        let body = self.post_json("/auth/login", creds.login_body()).await?;
        parse_pair(&body)
    }
}

fn parse_pair(body: &[u8]) -> Result<TokenPair, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("bad token response: {e}"))?;
    let field = |name: &str| {
        v[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("token response without {name}"))
    };
    Ok(TokenPair {
        access: field("access_token")?,
        refresh: field("refresh_token")?,
    })
}

/// Sends a request and reads the whole body; a non-2xx status is an error named by its status
/// and the API's error code.
async fn send(request: reqwest::RequestBuilder) -> Result<Bytes, String> {
    let response = request
        .send()
        .await
        .map_err(|e| format!("transport error: {e}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    if status.is_success() {
        return Ok(body);
    }
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    Err(format!("HTTP {} {code}", status.as_u16()))
}

/// Registers users `0..n` concurrently.
async fn register_users(api: &Api, n: usize) -> anyhow::Result<()> {
    progress(&format!("registering {n} users"));
    let mut set = JoinSet::new();
    for i in 0..n {
        let api = api.clone();
        set.spawn(async move { api.register(&Creds::user(i)).await });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

/// Logs in `n` sessions, cycling over users `0..users`, concurrently.
async fn login_sessions(
    api: &Api,
    n: usize,
    users: usize,
) -> anyhow::Result<Vec<(Creds, TokenPair)>> {
    let mut set = JoinSet::new();
    for i in 0..n {
        let api = api.clone();
        let creds = Creds::user(i % users);
        set.spawn(async move {
            let pair = api.login(&creds).await;
            pair.map(|p| (creds, p))
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        out.push(r?.map_err(|e| anyhow::anyhow!("setup login: {e}"))?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Load generation

/// What one concurrent client does in a loop.
enum Task {
    Login {
        body: String,
    },
    /// Rotates its own refresh-token chain; logs in again if the chain breaks.
    Refresh {
        token: String,
        creds: Creds,
    },
    Me {
        authorization: HeaderValue,
    },
    Jwks,
    /// `POST /auth/register` with a new email each time.
    Register {
        seq: Arc<events::EmailSeq>,
    },
    /// `POST /oauth2/token` with `grant_type=client_credentials` and HTTP Basic.
    ClientCredentials {
        authorization: HeaderValue,
    },
    /// `POST /oauth2/introspect` of a live access token, HTTP Basic.
    Introspect {
        authorization: HeaderValue,
        body: Bytes,
    },
    Discovery,
    /// A whole authorization-code + PKCE login through the hosted pages.
    CodeFlow(Box<oauth::CodeFlow>),
    /// A bearer-authenticated GET (a token or an API key).
    Get {
        path: String,
        authorization: HeaderValue,
    },
    /// `POST /access/v1/evaluation`; only a permit counts as a success.
    Evaluate {
        authorization: HeaderValue,
        body: Bytes,
    },
    /// `POST /auth/switch-tenant`, alternating between two tenants.
    Switch {
        authorization: HeaderValue,
        bodies: [Bytes; 2],
        next: usize,
    },
    /// `GET /` of the bare axum server.
    Bare,
    /// A password login answered `mfa_required`, then `POST /auth/mfa`; each user once.
    MfaLogin(mfa::Queue),
    /// A password login answered `mfa_required` with WebAuthn options, then the assertion.
    PasskeyMfaLogin(mfa::KeyRing),
    /// `POST /auth/passkey/start`, a soft passkey signs, `POST /auth/passkey/finish`.
    PasskeyLogin(mfa::KeyRing),
}

impl Task {
    async fn step(&mut self, api: &Api) -> Result<(), String> {
        match self {
            Self::Login { body } => api.post_json("/auth/login", body.clone()).await.map(drop),
            Self::Refresh { token, .. } => {
                let body = serde_json::json!({ "refresh_token": token }).to_string();
                let pair = parse_pair(&api.post_json("/auth/refresh", body).await?)?;
                *token = pair.refresh;
                Ok(())
            }
            Self::Me { authorization } => send(
                api.client
                    .get(api.url("/identity/me"))
                    .header(AUTHORIZATION, authorization.clone()),
            )
            .await
            .map(drop),
            Self::Jwks => send(api.client.get(api.url("/.well-known/jwks.json")))
                .await
                .map(drop),
            Self::Register { seq } => seq.register(api).await,
            Self::ClientCredentials { authorization } => send(
                api.client
                    .post(api.url("/oauth2/token"))
                    .header(AUTHORIZATION, authorization.clone())
                    .header(CONTENT_TYPE, oauth::FORM)
                    .body("grant_type=client_credentials"),
            )
            .await
            .map(drop),
            Self::Introspect {
                authorization,
                body,
            } => {
                let answer = send(
                    api.client
                        .post(api.url("/oauth2/introspect"))
                        .header(AUTHORIZATION, authorization.clone())
                        .header(CONTENT_TYPE, oauth::FORM)
                        .body(body.clone()),
                )
                .await?;
                let v: serde_json::Value = serde_json::from_slice(&answer)
                    .map_err(|e| format!("bad introspection response: {e}"))?;
                if v["active"] == serde_json::Value::Bool(true) {
                    Ok(())
                } else {
                    Err("introspection answered active:false".into())
                }
            }
            Self::Discovery => send(api.client.get(api.url("/.well-known/openid-configuration")))
                .await
                .map(drop),
            Self::CodeFlow(flow) => flow.step(api).await,
            Self::Get {
                path,
                authorization,
            } => send(
                api.client
                    .get(api.url(path))
                    .header(AUTHORIZATION, authorization.clone()),
            )
            .await
            .map(drop),
            Self::Evaluate {
                authorization,
                body,
            } => {
                let answer = send(
                    api.client
                        .post(api.url("/access/v1/evaluation"))
                        .header(AUTHORIZATION, authorization.clone())
                        .header(CONTENT_TYPE, "application/json")
                        .body(body.clone()),
                )
                .await?;
                let v: serde_json::Value = serde_json::from_slice(&answer)
                    .map_err(|e| format!("bad evaluation response: {e}"))?;
                if v["decision"] == serde_json::Value::Bool(true) {
                    Ok(())
                } else {
                    Err("evaluation answered decision:false".into())
                }
            }
            Self::Switch {
                authorization,
                bodies,
                next,
            } => {
                let body = bodies[*next].clone();
                *next = 1 - *next;
                send(
                    api.client
                        .post(api.url("/auth/switch-tenant"))
                        .header(AUTHORIZATION, authorization.clone())
                        .header(CONTENT_TYPE, "application/json")
                        .body(body),
                )
                .await
                .map(drop)
            }
            Self::Bare => send(api.client.get(api.url("/"))).await.map(drop),
            Self::MfaLogin(queue) => mfa::mfa_login(api, queue).await,
            Self::PasskeyMfaLogin(ring) => mfa::passkey_mfa_login(api, ring).await,
            Self::PasskeyLogin(ring) => mfa::passkey_login(api, ring).await,
        }
    }

    /// After a failed request: a refresh chain starts again from a new login (not timed).
    async fn recover(&mut self, api: &Api) {
        if let Self::Refresh { token, creds } = self {
            match api.login(creds).await {
                Ok(pair) => *token = pair.refresh,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn run(mut self, api: Api, window: Arc<Window>) -> Stats {
        let mut stats = Stats::default();
        while window.admit() {
            let started = Instant::now();
            let result = self.step(&api).await;
            let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
            let failed = result.is_err();
            if started >= window.measure_from {
                match result {
                    Ok(()) => stats.latencies_us.push(micros),
                    Err(e) => *stats.errors.entry(e).or_default() += 1,
                }
            }
            if failed {
                self.recover(&api).await;
            }
        }
        stats
    }
}

/// When requests are recorded, and when the load stops.
struct Window {
    measure_from: Instant,
    until: Option<Instant>,
    /// With a request budget: requests started so far, and the budget.
    budget: Option<(AtomicU64, u64)>,
}

impl Window {
    fn admit(&self) -> bool {
        if let Some(until) = self.until {
            return Instant::now() < until;
        }
        self.budget
            .as_ref()
            .is_some_and(|(started, limit)| started.fetch_add(1, Ordering::Relaxed) < *limit)
    }
}

#[derive(Clone, Copy)]
enum Length {
    Seconds(Duration),
    Requests(u64),
}

#[derive(Default)]
struct Stats {
    /// Latencies of successful requests, µs.
    latencies_us: Vec<u32>,
    /// Failed requests by status and error code.
    errors: BTreeMap<String, u64>,
}

impl Stats {
    fn merge(&mut self, other: Self) {
        self.latencies_us.extend(other.latencies_us);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    fn ok(&self) -> usize {
        self.latencies_us.len()
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The `p`-quantile latency in ms (nearest rank); call after sorting.
    fn percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies_us, p)
    }
}

/// The `p`-quantile in ms (nearest rank) of sorted µs values; NaN when empty.
fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[rank - 1]) / 1000.0
}

/// The outcome of one load run.
struct Load {
    label: String,
    concurrency: usize,
    stats: Stats,
    usage: Usage,
    /// Start of the measured window.
    from: Instant,
}

impl Load {
    fn ok_per_second(&self) -> f64 {
        self.stats.ok() as f64 / self.usage.wall.as_secs_f64()
    }

    fn ok_per_server_cpu_second(&self) -> f64 {
        self.stats.ok() as f64 / self.usage.server.as_secs_f64().max(1e-9)
    }
}

/// Runs `tasks` concurrently against `server`: a warm-up that is not recorded, then the
/// measured window, bracketed by CPU readings of the server, this process and the machine.
async fn run_load(
    label: &str,
    server: &Server,
    api: &Api,
    tasks: Vec<Task>,
    warmup: Duration,
    length: Length,
) -> anyhow::Result<Load> {
    let concurrency = tasks.len();
    progress(&format!("{label}: concurrency {concurrency}"));
    let measure_from = Instant::now() + warmup;
    let window = Arc::new(match length {
        Length::Seconds(d) => Window {
            measure_from,
            until: Some(measure_from + d),
            budget: None,
        },
        Length::Requests(n) => Window {
            measure_from,
            until: None,
            budget: Some((AtomicU64::new(0), n)),
        },
    });
    let mut set = JoinSet::new();
    for task in tasks {
        set.spawn(task.run(api.clone(), Arc::clone(&window)));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let start = Meter::read(server.pid)?;
    let mut stats = Stats::default();
    while let Some(r) = set.join_next().await {
        stats.merge(r.context("a load task panicked")?);
    }
    let usage = Meter::read(server.pid)?.since(&start);
    stats.latencies_us.sort_unstable();
    Ok(Load {
        label: label.into(),
        concurrency,
        stats,
        usage,
        from: start.at,
    })
}

// ---------------------------------------------------------------------------------------------
// Cost baselines (in this process)

struct Baselines {
    argon2_cpu_ms: f64,
    argon2_wall_ms: f64,
    hashes: u32,
    /// (algorithm, µs per signature, µs per verification)
    signing: Vec<(&'static str, f64, f64)>,
    signatures: u32,
    /// Cores busy with other work on the machine while the baselines ran.
    other_cores: f64,
}

impl Baselines {
    fn hashes_per_cpu_second(&self) -> f64 {
        1000.0 / self.argon2_cpu_ms
    }
}

async fn baselines(options: &Options) -> anyhow::Result<Baselines> {
    progress("baseline: Argon2id at the default parameters");
    let (machine0, own0, wall_start) = (machine_busy()?, process_cpu("self")?, Instant::now());
    let passwords = Passwords::new(&PasswordConfig::default())?;
    passwords
        .hash("warm-up password")
        .await
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    let (cpu0, wall0) = (threads_cpu()?, Instant::now());
    for i in 0..options.hashes {
        passwords
            .hash(&format!("bench-password-{i}"))
            .await
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    }
    let per = f64::from(options.hashes);
    let argon2_wall_ms = wall0.elapsed().as_secs_f64() * 1000.0 / per;
    let argon2_cpu_ms = (threads_cpu()? - cpu0).as_secs_f64() * 1000.0 / per;

    let mut signing = Vec::new();
    for alg in ["RS256", "ES256", "EdDSA"] {
        progress(&format!("baseline: {alg} signatures"));
        let dir = tempfile::tempdir()?;
        let env: Vec<(String, String)> = [
            ("TESSERA_DATA_DIR", dir.path().display().to_string()),
            ("TESSERA_SIGNING_ALG", alg.to_string()),
            ("TESSERA_ISSUER", ISSUER.to_string()),
            (
                "TESSERA_MASTER_KEY",
                tessera::crypto::MasterKey::generate().to_base64(),
            ),
            (CHEAP_ARGON2[0].0, CHEAP_ARGON2[0].1.to_string()),
            (CHEAP_ARGON2[1].0, CHEAP_ARGON2[1].1.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let config = tessera::Config::load_from(None, &env)?;
        let state = tessera::AppState::new(config, Clock::System).await?;
        let now = Clock::System.now();
        // Built through serde so that optional claims added to the struct later need no change here.
        let claims: AccessClaims = serde_json::from_value(serde_json::json!({
            "iss": ISSUER,
            "sub": "01900000-0000-7000-8000-000000000001",
            "aud": ISSUER,
            "exp": now + 900,
            "iat": now,
            "nbf": now,
            "jti": "01900000-0000-7000-8000-000000000002",
            "sid": "01900000-0000-7000-8000-000000000003",
            "client_id": "tessera",
            "roles": [],
            "email_verified": true,
        }))
        .context("building access-token claims")?;
        let token = state.keys.sign_access_token(&claims)?;
        // Signing and (uncontended) verification never yield, so this task stays on one thread
        // and that thread's CPU clock measures them exactly.
        let cpu0 = thread_cpu()?;
        for _ in 0..options.signatures {
            std::hint::black_box(state.keys.sign_access_token(&claims)?);
        }
        let cpu1 = thread_cpu()?;
        for _ in 0..options.signatures {
            std::hint::black_box(
                state
                    .keys
                    .verify_access_token(&token, now)
                    .await
                    .map_err(|e| anyhow::anyhow!("verify: {e}"))?,
            );
        }
        let cpu2 = thread_cpu()?;
        let n = f64::from(options.signatures);
        signing.push((
            alg,
            (cpu1 - cpu0).as_secs_f64() * 1e6 / n,
            (cpu2 - cpu1).as_secs_f64() * 1e6 / n,
        ));
        state.store.close().await;
    }
    let own = process_cpu("self")?.saturating_sub(own0).as_secs_f64();
    let busy = machine_busy()?.saturating_sub(machine0).as_secs_f64() - own;
    let other_cores = (busy / wall_start.elapsed().as_secs_f64()).max(0.0);
    Ok(Baselines {
        argon2_cpu_ms,
        argon2_wall_ms,
        hashes: options.hashes,
        signing,
        signatures: options.signatures,
        other_cores,
    })
}

// ---------------------------------------------------------------------------------------------
// Scenarios

struct Storm {
    logins: Load,
    me: Load,
    undisturbed_me: Option<(f64, f64)>,
    peak_rss: u64,
    rss_before: u64,
    threads_before: u64,
    peak_threads: u64,
}

struct Memory {
    /// Idle RSS of the cheap-Argon2 server, as started.
    idle_rss: u64,
    /// RSS after a warm-up of logins, idle for 2 s.
    warm_rss: u64,
    warm_logins: u64,
    after_rss: u64,
    peak_rss: u64,
    load: Load,
}

struct Results {
    loads: Vec<Load>,
    storm: Option<Storm>,
    memory: Option<Memory>,
    /// Idle RSS of a fresh server with the default configuration (foundation group).
    default_idle_rss: Option<u64>,
    registrations: Option<events::Registrations>,
    relays: Vec<events::RelayOutcome>,
    oauth: Option<oauth::OAuthResults>,
    abuse: Option<abuse::AbuseResults>,
    shared: Option<shared::SharedResults>,
    tenants: Option<tenants::TenantResults>,
    telemetry: Option<telemetry::TelemetryResults>,
    growth: Option<growth::GrowthResults>,
    mfa: Option<mfa::MfaResults>,
    federation: Option<federation::FederationResults>,
    logs: Vec<LogSummary>,
}

async fn run(options: &Options) -> anyhow::Result<String> {
    let started = Instant::now();
    let hardware = Hardware::read();
    progress(&format!("{} cores, {}", hardware.cores, hardware.model));
    let baselines = baselines(options).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut results = Results {
        loads: Vec::new(),
        storm: None,
        memory: None,
        default_idle_rss: None,
        registrations: None,
        relays: Vec::new(),
        oauth: None,
        abuse: None,
        shared: None,
        tenants: None,
        telemetry: None,
        growth: None,
        mfa: None,
        federation: None,
        logs: Vec::new(),
    };
    if options.runs(Group::Foundation) {
        foundation(&client, options, &mut results).await?;
    }
    if options.runs(Group::Events) {
        events::run(&client, options, &mut results).await?;
    }
    if options.runs(Group::OAuth) {
        oauth::run(&client, options, &baselines, &mut results).await?;
    }
    if options.runs(Group::Abuse) {
        abuse::run(&client, options, &baselines, &hardware, &mut results).await?;
    }
    if options.runs(Group::Shared) {
        shared::run(&client, options, &mut results).await?;
    }
    if options.runs(Group::Tenants) {
        tenants::run(&client, options, &mut results).await?;
    }
    if options.runs(Group::Telemetry) {
        telemetry::run(&client, options, &mut results).await?;
    }
    if options.runs(Group::Growth) {
        growth::run(&client, options, &mut results).await?;
    }
    if options.runs(Group::Mfa) {
        mfa::run(&client, options, &mut results).await?;
    }
    if options.runs(Group::Federation) {
        federation::run(options, &mut results).await?;
    }
    progress(&format!("done in {:.0} s", started.elapsed().as_secs_f64()));
    Ok(render(
        &hardware,
        options,
        &baselines,
        &results,
        started.elapsed(),
    ))
}

/// The foundation scenarios: login, refresh, me, JWKS, the storm, memory.
async fn foundation(
    client: &reqwest::Client,
    options: &Options,
    results: &mut Results,
) -> anyhow::Result<()> {
    let seconds = Length::Seconds(options.measure);

    // The default server: RS256, OWASP Argon2id.
    let server = Server::start("RS256 (default)", &[]).await?;
    results.default_idle_rss = Some(server.idle_rss);
    let api = Api::new(client, &server);
    register_users(&api, USERS).await?;
    for c in LEVELS {
        let tasks = (0..c)
            .map(|i| Task::Login {
                body: Creds::user(i % USERS).login_body(),
            })
            .collect();
        results
            .loads
            .push(run_load("login RS256", &server, &api, tasks, options.warmup, seconds).await?);
    }
    for c in LEVELS {
        results
            .loads
            .push(refresh_load("refresh RS256", &server, &api, c, USERS, options).await?);
    }
    let me_tokens = login_sessions(&api, 16, USERS).await?;
    let me_tasks = |c: usize| me_tasks(&me_tokens, c);
    for c in LEVELS {
        results.loads.push(
            run_load(
                "me RS256",
                &server,
                &api,
                me_tasks(c)?,
                options.warmup,
                seconds,
            )
            .await?,
        );
    }
    for c in LEVELS {
        let tasks = (0..c).map(|_| Task::Jwks).collect();
        results
            .loads
            .push(run_load("jwks RS256", &server, &api, tasks, options.warmup, seconds).await?);
    }

    // The limits of the hot-path targets: a bare axum route serving the same bytes as the JWKS
    // and the discovery document, at concurrency 64 (see [`hot`]).
    for (path, label) in [
        ("/.well-known/jwks.json", hot::BARE_JWKS),
        ("/.well-known/openid-configuration", hot::BARE_DISCOVERY),
    ] {
        let body = api.get_text(path).await?;
        let bare = Server::start(
            label,
            &[
                ("TESSERA_BENCH_BARE", "1"),
                ("TESSERA_BENCH_BARE_BODY", &body),
            ],
        )
        .await?;
        let bare_api = Api::new(client, &bare);
        let tasks = (0..64).map(|_| Task::Bare).collect();
        results
            .loads
            .push(run_load(label, &bare, &bare_api, tasks, options.warmup, seconds).await?);
        results.logs.push(bare.stop().await?);
    }

    // Storm: logins at concurrency 64 while /identity/me runs at 16.
    progress("storm: login x64 with me x16");
    let rss_before = server.rss()?;
    let threads_before = status_field(server.pid, "Threads")?;
    let sampler = PeakSampler::start(server.pid);
    let storm_logins = (0..64)
        .map(|i| Task::Login {
            body: Creds::user(i % USERS).login_body(),
        })
        .collect();
    let storm_me = me_tasks(16)?;
    let (logins, me) = tokio::join!(
        run_load(
            "storm: login",
            &server,
            &api,
            storm_logins,
            options.warmup,
            seconds
        ),
        run_load(
            "storm: me",
            &server,
            &api,
            storm_me,
            options.warmup,
            seconds
        ),
    );
    let (peak_rss, peak_threads) = sampler.finish().await;
    let undisturbed_me = results
        .loads
        .iter()
        .find(|l| l.label == "me RS256" && l.concurrency == 16)
        .map(|l| (l.ok_per_second(), l.stats.percentile_ms(0.99)));
    results.storm = Some(Storm {
        logins: logins?,
        me: me?,
        undisturbed_me,
        peak_rss,
        rss_before,
        threads_before,
        peak_threads,
    });
    results.logs.push(server.stop().await?);

    // Refresh with ES256 signatures.
    let server = Server::start("ES256", &[("TESSERA_SIGNING_ALG", "ES256")]).await?;
    let api = Api::new(client, &server);
    register_users(&api, 16).await?;
    for c in LEVELS {
        results
            .loads
            .push(refresh_load("refresh ES256", &server, &api, c, 16, options).await?);
    }
    results.logs.push(server.stop().await?);

    let (memory, log) = memory_scenario(client, options).await?;
    results.memory = Some(memory);
    results.logs.push(log);
    Ok(())
}

/// `GET /identity/me` tasks at concurrency `c`, cycling over the signed-in `sessions`.
fn me_tasks(sessions: &[(Creds, TokenPair)], c: usize) -> anyhow::Result<Vec<Task>> {
    (0..c)
        .map(|i| {
            let authorization = HeaderValue::from_str(&format!(
                "Bearer {}",
                sessions[i % sessions.len()].1.access
            ))?;
            Ok(Task::Me { authorization })
        })
        .collect()
}

/// Refresh-token rotation at concurrency `c`: each client rotates its own chain, started from
/// its own login (users are cycled when there are fewer users than clients).
async fn refresh_load(
    label: &str,
    server: &Server,
    api: &Api,
    c: usize,
    users: usize,
    options: &Options,
) -> anyhow::Result<Load> {
    run_load(
        label,
        server,
        api,
        refresh_tasks(api, c, users).await?,
        options.warmup,
        Length::Seconds(options.measure),
    )
    .await
}

/// `c` refresh-token chains, each started from its own login (users cycled).
async fn refresh_tasks(api: &Api, c: usize, users: usize) -> anyhow::Result<Vec<Task>> {
    let sessions = login_sessions(api, c, users).await?;
    Ok(sessions
        .into_iter()
        .map(|(creds, pair)| Task::Refresh {
            token: pair.refresh,
            creds,
        })
        .collect())
}

/// Memory per session. 100 000 logins at OWASP parameters would take over half an hour of CPU,
/// so this server hashes with cheap Argon2id parameters (m = 8 KiB, t = 1): a session row costs
/// the same whatever the password hash cost.
async fn memory_scenario(
    client: &reqwest::Client,
    options: &Options,
) -> anyhow::Result<(Memory, LogSummary)> {
    let server = Server::start("RS256, cheap Argon2id (memory)", &CHEAP_ARGON2).await?;
    let api = Api::new(client, &server);
    register_users(&api, 1).await?;
    let task = || Task::Login {
        body: Creds::user(0).login_body(),
    };
    // Warm-up: connections, pools and caches reach their working size before the baseline.
    let warm_logins = (options.sessions / 100).max(500);
    let warm = run_load(
        "memory warm-up logins",
        &server,
        &api,
        (0..64).map(|_| task()).collect(),
        Duration::ZERO,
        Length::Requests(warm_logins),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let warm_rss = server.rss()?;
    let sampler = PeakSampler::start(server.pid);
    let mut load = run_load(
        "memory: logins",
        &server,
        &api,
        (0..64).map(|_| task()).collect(),
        Duration::ZERO,
        Length::Requests(options.sessions),
    )
    .await?;
    let (peak_rss, _) = sampler.finish().await;
    progress("memory: idle for 2 s");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_rss = server.rss()?;
    load.stats.merge(Stats {
        latencies_us: Vec::new(),
        errors: warm.stats.errors,
    });
    let idle_rss = server.idle_rss;
    let log = server.stop().await?;
    Ok((
        Memory {
            idle_rss,
            warm_rss,
            warm_logins,
            after_rss,
            peak_rss,
            load,
        },
        log,
    ))
}

// ---------------------------------------------------------------------------------------------
// The report

struct Report {
    out: String,
    passed: usize,
    failed: usize,
}

impl Report {
    fn section(&mut self, title: &str) {
        let _ = writeln!(self.out, "\n== {title} ==");
    }

    fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    fn verdict(&mut self, pass: bool) -> &'static str {
        if pass {
            self.passed += 1;
            "PASS"
        } else {
            self.failed += 1;
            "FAIL"
        }
    }

    /// A target line: the figure, the target and PASS/FAIL.
    fn check(&mut self, what: &str, figure: &str, target: &str, pass: bool) {
        let verdict = self.verdict(pass);
        let _ = writeln!(
            self.out,
            "  {what:<44} {figure:>16}   target {target:<22} {verdict}"
        );
    }

    fn load_header(&mut self) {
        self.line(&format!(
            "{:<15} {:>4} {:>9} {:>11} {:>8} {:>8} {:>7} {:>6} {:>6} {:>6}   {:<18} {}",
            "scenario",
            "conc",
            "ok/s",
            "ok/srv-CPUs",
            "p50 ms",
            "p99 ms",
            "errors",
            "srv",
            "gen",
            "other",
            "target",
            "verdict"
        ));
    }

    fn load_row(&mut self, load: &Load, target: Option<(String, bool)>) {
        let (target, verdict) = match target {
            Some((t, pass)) => (t, self.verdict(pass)),
            None => (String::new(), ""),
        };
        let u = &load.usage;
        let wall = u.wall.as_secs_f64();
        self.line(&format!(
            "{:<15} {:>4} {:>9.0} {:>11.0} {:>8.2} {:>8.2} {:>7} {:>6.2} {:>6.2} {:>6.2}   {:<18} {}{}",
            load.label,
            load.concurrency,
            load.ok_per_second(),
            load.ok_per_server_cpu_second(),
            load.stats.percentile_ms(0.50),
            load.stats.percentile_ms(0.99),
            load.stats.error_count(),
            u.server_cores(),
            u.client.as_secs_f64() / wall,
            u.other_cores(),
            target,
            verdict,
            if u.other_cores() > NOISY_OTHER_CORES { " *" } else { "" },
        ));
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

fn render(
    hw: &Hardware,
    options: &Options,
    b: &Baselines,
    r: &Results,
    elapsed: Duration,
) -> String {
    let mut rep = Report {
        out: String::new(),
        passed: 0,
        failed: 0,
    };
    rep.line("Tessera benchmark");
    rep.line(&format!(
        "Hardware: nproc = {} | CPU: {} | RAM {} | Linux {}",
        hw.cores, hw.model, hw.memory, hw.kernel
    ));
    rep.line(&format!(
        "Every figure below was measured on this hardware. Load generator and server share the {} cores.",
        hw.cores
    ));
    rep.line(&format!(
        "Per scenario: {:.1} s warm-up (not recorded), then {:.1} s measured{}.",
        options.warmup.as_secs_f64(),
        options.measure.as_secs_f64(),
        if options.quick {
            " (--quick: a smoke run, not for comparison)"
        } else {
            ""
        }
    ));

    rep.section("Cost baselines (in-process, one thread, CPU time)");
    let hash_rate = b.hashes_per_cpu_second();
    rep.line(&format!(
        "Argon2id m=19456 KiB t=2 p=1 (default): {:.1} ms CPU per hash ({:.1} ms wall), {:.1} hashes per CPU-second  [{} hashes]",
        b.argon2_cpu_ms, b.argon2_wall_ms, hash_rate, b.hashes
    ));
    for (alg, sign, verify) in &b.signing {
        rep.line(&format!(
            "{alg:<6} access token: sign {sign:>7.1} µs, verify {verify:>6.1} µs  ({:.0} signatures per CPU-second)  [{} each]",
            1e6 / sign,
            b.signatures
        ));
    }

    rep.line(&format!(
        "(other work on the machine meanwhile: {:.2} cores)",
        b.other_cores
    ));

    rep.section("HTTP scenarios (server in a child process; figures count 2xx responses)");
    rep.line("ok/srv-CPUs = successful requests per second of server CPU time; srv/gen/other = cores used by the");
    rep.line(
        "server, by this load generator, and by anything else on the machine during the window.",
    );
    rep.line(&format!(
        "* = other work used more than {NOISY_OTHER_CORES} cores during the window: that figure is less reliable."
    ));
    rep.line(&format!(
        "Every server runs with its rate limits raised to {RAISED_LIMIT} (the limiter runs, never refuses): all load comes from 127.0.0.1"
    ));
    rep.line("(except in the abuse group: a server with the limiter off, and the credential-stuffing servers with the default limits).");
    rep.line(&format!(
        "Groups run: {} (select with --only).",
        options
            .groups
            .iter()
            .map(|g| g.name())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if !r.loads.is_empty() {
        render_foundation_loads(&mut rep, r, hash_rate);
    }
    if let (Some(s), Some(idle)) = (&r.storm, r.default_idle_rss) {
        render_storm(&mut rep, s, idle, hw);
    }
    if let Some(idle) = r.default_idle_rss {
        render_memory(&mut rep, r, idle);
    }
    events::render(&mut rep, r, hw);
    oauth::render(&mut rep, r, b, hw);
    abuse::render(&mut rep, r, b, hw);
    shared::render(&mut rep, r, hash_rate);
    tenants::render(&mut rep, r);
    telemetry::render(&mut rep, r);
    growth::render(&mut rep, r);
    mfa::render(&mut rep, r);
    federation::render(&mut rep, r, b);
    hot::render(&mut rep, r, b);

    rep.section("Errors");
    let mut any = false;
    let all = r
        .loads
        .iter()
        .chain(r.storm.iter().flat_map(|s| [&s.logins, &s.me]))
        .chain(r.memory.iter().map(|m| &m.load))
        .chain(events::loads(r))
        .chain(oauth::loads(r))
        .chain(abuse::loads(r))
        .chain(shared::loads(r))
        .chain(tenants::loads(r))
        .chain(telemetry::loads(r))
        .chain(growth::loads(r))
        .chain(mfa::loads(r));
    for load in all {
        for (kind, n) in &load.stats.errors {
            any = true;
            rep.line(&format!(
                "{} x{}: {n} x {kind}",
                load.label, load.concurrency
            ));
        }
    }
    if !any {
        rep.line("No failed requests.");
    }
    for log in &r.logs {
        rep.line(&format!(
            "server {}: {} ERROR and {} WARN lines in its log",
            log.server, log.errors, log.warnings
        ));
        for sample in &log.samples {
            rep.line(&format!("    {sample}"));
        }
    }

    rep.section("Summary");
    rep.line(&format!(
        "{} targets met, {} missed. Total run time {:.0} s on {} x {} (nproc = {}).",
        rep.passed,
        rep.failed,
        elapsed.as_secs_f64(),
        hw.cores,
        hw.model,
        hw.cores
    ));
    rep.out
}

fn render_foundation_loads(rep: &mut Report, r: &Results, hash_rate: f64) {
    rep.load_header();
    for load in &r.loads {
        let per_cpu = load.ok_per_server_cpu_second();
        let target = if load.label.starts_with("login") {
            let ratio = per_cpu / hash_rate * 100.0;
            Some((format!(">=90% argon2: {ratio:.0}%"), ratio >= 90.0))
        } else {
            let min = match load.label.as_str() {
                "refresh RS256" => 600.0,
                "refresh ES256" => 1200.0,
                "me RS256" => 10_000.0,
                "jwks RS256" => 45_000.0,
                _ => 0.0,
            };
            (min > 0.0).then(|| (format!(">= {min:.0} /CPU-s"), per_cpu >= min))
        };
        rep.load_row(load, target);
    }
    rep.line(&format!(
        "Login target: logins per server CPU-second as a share of Argon2id hashes per CPU-second ({hash_rate:.1}, baseline above)."
    ));
}

fn render_storm(rep: &mut Report, s: &Storm, default_idle_rss: u64, hw: &Hardware) {
    rep.section("Storm: GET /identity/me x16 during a login storm x64 (RS256 server)");
    rep.load_header();
    rep.load_row(&s.logins, None);
    rep.load_row(&s.me, None);
    if let Some((rate, p99)) = s.undisturbed_me {
        let during = s.me.ok_per_second();
        rep.line(&format!(
            "Undisturbed me x16 (table above): {rate:.0} ok/s, p99 {p99:.2} ms"
        ));
        rep.check(
            "me throughput during the storm",
            &format!("{:.0}% of undisturbed", during / rate * 100.0),
            ">= 50%",
            during >= rate * 0.5,
        );
    }
    let p99 = s.me.stats.percentile_ms(0.99);
    rep.check(
        "me p99 during the storm",
        &format!("{p99:.2} ms"),
        "< 20 ms",
        p99 < 20.0,
    );
    let limit = default_idle_rss as f64 + (hw.cores as f64 * 19.0 + 16.0) * MIB;
    rep.check(
        "server peak RSS during the storm",
        &format!("{:.1} MiB", mib(s.peak_rss)),
        &format!("<= {:.1} MiB", limit / MIB),
        (s.peak_rss as f64) <= limit,
    );
    rep.line(&format!(
        "  (limit = idle RSS at start {:.1} MiB + {} cores x 19 MiB + 16 MiB; RSS just before the storm {:.1} MiB;",
        mib(default_idle_rss),
        hw.cores,
        mib(s.rss_before)
    ));
    rep.line(&format!(
        "   server threads: {} before the storm, {} at the peak)",
        s.threads_before, s.peak_threads
    ));
}

fn render_memory(rep: &mut Report, r: &Results, default_idle_rss: u64) {
    rep.section("Memory");
    rep.check(
        "idle RSS, fresh default server",
        &format!("{:.1} MiB", mib(default_idle_rss)),
        "<= 20 MiB",
        mib(default_idle_rss) <= 20.0,
    );
    if let Some(m) = &r.memory {
        let sessions = m.load.stats.ok() as f64;
        rep.line(&format!(
            "Sessions were created on a separate server with CHEAP Argon2id parameters (m=8 KiB, t=1): {} logins at",
            m.load.stats.ok()
        ));
        rep.line("OWASP cost would take over half an hour of CPU, and a session row does not depend on the hash cost.");
        rep.load_header();
        rep.load_row(&m.load, None);
        rep.line(&format!(
            "RSS: idle {:.1} MiB -> after {} warm-up logins and 2 s idle {:.1} MiB -> peak during load {:.1} MiB -> after load and 2 s idle {:.1} MiB",
            mib(m.idle_rss),
            m.warm_logins,
            mib(m.warm_rss),
            mib(m.peak_rss),
            mib(m.after_rss)
        ));
        let growth = m.after_rss.saturating_sub(m.warm_rss) as f64 / sessions.max(1.0);
        let from_idle = m.after_rss.saturating_sub(m.idle_rss) as f64 / sessions.max(1.0);
        rep.check(
            "RSS growth per session (from warm baseline)",
            &format!("{growth:.0} B"),
            "<= 256 B",
            growth <= 256.0,
        );
        rep.line(&format!(
            "  (growth per session counted from the idle server instead: {from_idle:.0} B)"
        ));
    }
}
