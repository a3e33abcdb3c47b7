//! Shared state (issue 8): the login, refresh and `GET /identity/me` scenarios of the
//! foundation group on a server with `TESSERA_REDIS_URL` set (rate limits, lockout and cache
//! invalidation in the local Redis), and a login storm spread over two replicas that share one
//! PostgreSQL database and one Redis.
//!
//! Each Redis figure is shown next to the same scenario in process (foundation group, same
//! run). The two-replica storm runs 32 clients against each replica; its figure is the logins of
//! both per CPU-second of both server processes, next to the Argon2id limit.

use anyhow::Context;

use crate::{
    Api, Creds, LEVELS, Length, Load, Options, Report, Results, Server, Task, USERS,
    login_sessions, me_tasks, progress, refresh_load, register_users, run_load,
};

const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub(crate) const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Logins per replica in the two-replica storm.
const STORM_PER_REPLICA: usize = 32;

pub struct SharedResults {
    pub loads: Vec<Load>,
    /// The storm's load on replica A and on replica B.
    pub replicas: (Load, Load),
}

fn unique(prefix: &str) -> String {
    let random = tessera::crypto::new_token("");
    let random: String = random
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect();
    format!(
        "{prefix}{}_{}",
        std::process::id(),
        random.to_ascii_lowercase()
    )
}

fn reachable(what: &str, addr: &str, how: &str) -> anyhow::Result<()> {
    std::net::TcpStream::connect(addr)
        .map(|_| ())
        .with_context(|| {
            format!(
                "{what} is unreachable at {addr}; the shared group needs it. Start it with: {how}"
            )
        })
}

/// A fresh schema on the local PostgreSQL server, as a database URL.
pub async fn fresh_schema() -> anyhow::Result<String> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(DATABASE_URL).await.with_context(|| {
        format!("PostgreSQL is unreachable at {DATABASE_URL}; start it with pg_ctlcluster <version> main start")
    })?;
    let schema = unique("tessera_bench_");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await?;
    Ok(format!("{DATABASE_URL}?options[search_path]={schema}"))
}

pub async fn run(
    client: &reqwest::Client,
    options: &Options,
    results: &mut Results,
) -> anyhow::Result<()> {
    reachable(
        "Redis",
        "127.0.0.1:6379",
        "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no",
    )?;
    let seconds = Length::Seconds(options.measure);
    let prefix = unique("tessera-bench:") + ":";
    let redis = [
        ("TESSERA_REDIS_URL", REDIS_URL),
        ("TESSERA_REDIS_PREFIX", prefix.as_str()),
    ];
    let mut loads = Vec::new();
    let server = Server::start("RS256 + Redis", &redis).await?;
    let api = Api::new(client, &server);
    register_users(&api, USERS).await?;
    for c in LEVELS {
        let tasks = (0..c)
            .map(|i| Task::Login {
                body: Creds::user(i % USERS).login_body(),
            })
            .collect();
        loads.push(run_load("login RS256", &server, &api, tasks, options.warmup, seconds).await?);
    }
    for c in LEVELS {
        loads.push(refresh_load("refresh RS256", &server, &api, c, USERS, options).await?);
    }
    let tokens = login_sessions(&api, 16, USERS).await?;
    for c in LEVELS {
        let tasks = me_tasks(&tokens, c)?;
        loads.push(run_load("me RS256", &server, &api, tasks, options.warmup, seconds).await?);
    }
    results.logs.push(server.stop().await?);

    progress("two replicas on one PostgreSQL database and one Redis");
    let database = fresh_schema().await?;
    let master = tessera::crypto::MasterKey::generate().to_base64();
    let prefix = unique("tessera-bench:") + ":";
    let env = [
        ("TESSERA_REDIS_URL", REDIS_URL),
        ("TESSERA_REDIS_PREFIX", prefix.as_str()),
        ("TESSERA_DATABASE_URL", database.as_str()),
        ("TESSERA_MASTER_KEY", master.as_str()),
    ];
    let a = Server::start("replica A (PostgreSQL + Redis)", &env).await?;
    let b = Server::start("replica B (PostgreSQL + Redis)", &env).await?;
    let (api_a, api_b) = (Api::new(client, &a), Api::new(client, &b));
    register_users(&api_a, USERS).await?;
    let storm = |offset: usize| -> Vec<Task> {
        (0..STORM_PER_REPLICA)
            .map(|i| Task::Login {
                body: Creds::user((i + offset) % USERS).login_body(),
            })
            .collect()
    };
    let (on_a, on_b) = tokio::join!(
        run_load("replicas: A", &a, &api_a, storm(0), options.warmup, seconds),
        run_load(
            "replicas: B",
            &b,
            &api_b,
            storm(STORM_PER_REPLICA),
            options.warmup,
            seconds
        ),
    );
    results.logs.push(a.stop().await?);
    results.logs.push(b.stop().await?);
    results.shared = Some(SharedResults {
        loads,
        replicas: (on_a?, on_b?),
    });
    Ok(())
}

pub fn loads(r: &Results) -> impl Iterator<Item = &Load> {
    r.shared
        .iter()
        .flat_map(|s| s.loads.iter().chain([&s.replicas.0, &s.replicas.1]))
}

pub fn render(rep: &mut Report, r: &Results, hash_rate: f64) {
    let Some(s) = &r.shared else {
        return;
    };
    rep.section("Shared state: the same scenarios with TESSERA_REDIS_URL (local Redis)");
    rep.load_header();
    for load in &s.loads {
        let in_process = r
            .loads
            .iter()
            .find(|l| l.label == load.label && l.concurrency == load.concurrency)
            .map(Load::ok_per_server_cpu_second);
        let per_cpu = load.ok_per_server_cpu_second();
        let target = in_process.map(|base| {
            let share = per_cpu / base * 100.0;
            (format!(">=90% in-proc: {share:.0}%"), share >= 90.0)
        });
        rep.load_row(load, target);
    }
    rep.line("Target: per server CPU-second, at least 90% of the same scenario in process (foundation table above).");
    rep.section(
        "Two replicas (one PostgreSQL database, one Redis): login storm, 32 clients on each",
    );
    rep.load_header();
    let (a, b) = &s.replicas;
    rep.load_row(a, None);
    rep.load_row(b, None);
    let ok = (a.stats.ok() + b.stats.ok()) as f64;
    let cpu = a.usage.server.as_secs_f64() + b.usage.server.as_secs_f64();
    let per_cpu = ok / cpu.max(1e-9);
    let share = per_cpu / hash_rate * 100.0;
    rep.check(
        "logins per CPU-second of both replicas",
        &format!("{per_cpu:.1} ({share:.0}% argon2)"),
        ">= 90% of argon2",
        share >= 90.0,
    );
    if let Some(single) = r
        .loads
        .iter()
        .find(|l| l.label == "login RS256" && l.concurrency == 64)
    {
        rep.line(&format!(
            "  one in-process server, login x64: {:.1} per CPU-second; both replicas together {:.0} ok/s",
            single.ok_per_server_cpu_second(),
            ok / a.usage.wall.as_secs_f64().max(1e-9)
        ));
    }
}
