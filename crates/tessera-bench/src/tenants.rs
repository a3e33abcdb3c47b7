//! Tenants (issue 9) at scale: a server seeded with 100 000 team tenants and 1 000 000
//! memberships (100 000 users, each in 10 tenants), on SQLite and on PostgreSQL.
//!
//! Scenarios, each at concurrency 1, 16 and 64, with 64 benchmark users who are each in 11
//! tenants (their personal one and 10 seeded ones, as admin):
//! - `GET /tenants` (the caller's tenants with their roles): p99;
//! - AuthZEN `POST /access/v1/evaluation` (a user asking about themselves in one of their
//!   tenants): evaluations per server CPU-second, target >= 20 000 at concurrency 64;
//! - API-key-authenticated `GET /tenants/{id}` (`Authorization: Bearer tsk_…`, the tenant's rate
//!   raised out of reach by a plan override): requests per server CPU-second, same target;
//! - `POST /auth/switch-tenant` (a new session and token pair in another tenant): p99.
//!
//! The limit next to them is a bare axum route (`GET /` answering `{}`) on the same runtime in
//! a child process, measured in the same run.

use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use reqwest::header::HeaderValue;

use crate::{
    Api, Creds, LEVELS, Length, Load, Options, Report, Results, Server, Task, USERS,
    login_sessions, progress, register_users, run_load, send,
};

/// Seeded team tenants.
pub const TENANTS: u64 = 100_000;
/// Seeded memberships (10 per tenant).
pub const MEMBERSHIPS: u64 = 1_000_000;
/// Seeded users (each in 10 tenants).
const SEEDED_USERS: u64 = 100_000;
/// Seeded tenants each benchmark user is an admin of.
const PER_BENCH_USER: usize = 10;
/// The first seeded tenant given to benchmark users.
const BENCH_FIRST: usize = 50_000;
/// The target of the AuthZEN and API-key scenarios, per server CPU-second at concurrency 64.
pub const TARGET_PER_CPU_SECOND: f64 = 20_000.0;

pub struct TenantRun {
    pub backend: &'static str,
    pub seed_time: Duration,
    pub loads: Vec<Load>,
}

pub struct TenantResults {
    pub runs: Vec<TenantRun>,
    /// The bare axum route at concurrency 64.
    pub bare: Load,
}

pub async fn run(
    client: &reqwest::Client,
    options: &Options,
    results: &mut Results,
) -> anyhow::Result<()> {
    let seconds = Length::Seconds(options.measure);
    let bare_server = Server::start("bare axum route", &[("TESSERA_BENCH_BARE", "1")]).await?;
    let bare_api = Api::new(client, &bare_server);
    let tasks = (0..64).map(|_| Task::Bare).collect();
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

    let mut runs = Vec::new();
    let sqlite = Server::start("tenants (SQLite)", &[]).await?;
    let url = format!(
        "sqlite://{}?mode=rw",
        sqlite.data_dir.join("tessera.db").display()
    );
    runs.push(scenarios(client, options, &sqlite, &url, false, "SQLite").await?);
    results.logs.push(sqlite.stop().await?);

    let database = crate::shared::fresh_schema().await?;
    let postgres = Server::start(
        "tenants (PostgreSQL)",
        &[("TESSERA_DATABASE_URL", database.as_str())],
    )
    .await?;
    runs.push(scenarios(client, options, &postgres, &database, true, "PostgreSQL").await?);
    results.logs.push(postgres.stop().await?);
    results.tenants = Some(TenantResults { runs, bare });
    Ok(())
}

async fn scenarios(
    client: &reqwest::Client,
    options: &Options,
    server: &Server,
    database: &str,
    postgres: bool,
    backend: &'static str,
) -> anyhow::Result<TenantRun> {
    let seconds = Length::Seconds(options.measure);
    let api = Api::new(client, server);
    register_users(&api, USERS).await?;
    let seed_time = seed(database, postgres).await?;
    let sessions = login_sessions(&api, USERS, USERS).await?;
    let users: Vec<(usize, String, String)> = sessions
        .iter()
        .map(|(creds, pair)| {
            let index = creds
                .email
                .trim_start_matches("bench-user-")
                .trim_end_matches("@example.com")
                .parse::<usize>()
                .unwrap_or(0);
            (index, pair.access.clone(), subject_of(&pair.access))
        })
        .collect();
    let bearer = |token: &str| HeaderValue::from_str(&format!("Bearer {token}"));

    let mut loads = Vec::new();
    for c in LEVELS {
        let tasks = users
            .iter()
            .cycle()
            .take(c)
            .map(|(_, token, _)| {
                Ok(Task::Get {
                    path: "/tenants".into(),
                    authorization: bearer(token)?,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        loads.push(run_load("GET /tenants", server, &api, tasks, options.warmup, seconds).await?);
    }
    for c in LEVELS {
        let tasks = users
            .iter()
            .cycle()
            .take(c)
            .map(|(index, token, sub)| {
                let body = serde_json::json!({
                    "subject": {"type": "user", "id": sub},
                    "action": {"name": "members:read"},
                    "resource": {"type": "tenant", "id": seeded_of(*index, 0)},
                });
                Ok(Task::Evaluate {
                    authorization: bearer(token)?,
                    body: body.to_string().into(),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        loads.push(run_load("AuthZEN eval", server, &api, tasks, options.warmup, seconds).await?);
    }
    let key = api_key(&api).await?;
    for c in LEVELS {
        let tasks = (0..c)
            .map(|_| {
                Ok(Task::Get {
                    path: format!("/tenants/{}", seeded_of(0, 0)),
                    authorization: bearer(&key)?,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        loads.push(run_load("API key GET", server, &api, tasks, options.warmup, seconds).await?);
    }
    for c in LEVELS {
        let tasks = users
            .iter()
            .cycle()
            .take(c)
            .map(|(index, token, _)| {
                Ok(Task::Switch {
                    authorization: bearer(token)?,
                    bodies: [1, 2].map(|j| {
                        serde_json::json!({"tenant": seeded_of(*index, j)})
                            .to_string()
                            .into()
                    }),
                    next: 0,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        loads.push(
            run_load(
                "switch-tenant",
                server,
                &api,
                tasks,
                options.warmup,
                seconds,
            )
            .await?,
        );
    }
    Ok(TenantRun {
        backend,
        seed_time,
        loads,
    })
}

/// The `j`-th seeded tenant of benchmark user `index`.
fn seeded_of(index: usize, j: usize) -> String {
    format!("seed-t-{}", BENCH_FIRST + index * PER_BENCH_USER + j)
}

/// The `sub` of a JWT (not verified: the server issued it to us).
fn subject_of(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["sub"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Seeds the tenants, users and memberships in one transaction, and makes every benchmark user
/// an admin of 10 seeded tenants (benchmark user 0 also a system administrator).
async fn seed(database: &str, postgres: bool) -> anyhow::Result<Duration> {
    use sqlx::Connection;
    progress(&format!(
        "seeding {TENANTS} tenants, {SEEDED_USERS} users and {MEMBERSHIPS} memberships"
    ));
    sqlx::any::install_default_drivers();
    let started = Instant::now();
    let mut conn = sqlx::AnyConnection::connect(database)
        .await
        .with_context(|| format!("connecting to {database} to seed it"))?;
    // Rows 0..n: a recursive CTE on SQLite, generate_series on PostgreSQL.
    let series = |n: u64, insert: &str, select: &str| {
        if postgres {
            format!(
                "{insert} {select} FROM generate_series(0, {}) AS n(i)",
                n - 1
            )
        } else {
            format!(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {}) \
                 {insert} {select} FROM n",
                n - 1
            )
        }
    };
    let statements = [
        series(
            SEEDED_USERS,
            "INSERT INTO users (id, email, email_normalized, status, created_at, updated_at)",
            "SELECT 'seed-u-' || i, 'seed-' || i || '@example.com', \
             'seed-' || i || '@example.com', 'active', 1, 1",
        ),
        series(
            TENANTS,
            "INSERT INTO tenants (id, slug, name, type, status, created_at, updated_at)",
            "SELECT 'seed-t-' || i, 'seed-' || i, 'Seeded tenant ' || i, 'team', 'active', 1, 1",
        ),
        // Tenant i / 10 takes user i mod 100 000: 10 members each, every user in 10 tenants.
        series(
            MEMBERSHIPS,
            "INSERT INTO memberships (tenant_id, user_id, created_at)",
            "SELECT 'seed-t-' || (i / 10), 'seed-u-' || (i % 100000), 1",
        ),
        series(
            MEMBERSHIPS,
            "INSERT INTO member_roles (tenant_id, user_id, role)",
            "SELECT 'seed-t-' || (i / 10), 'seed-u-' || (i % 100000), \
             CASE WHEN i % 10 = 0 THEN 'owner' ELSE 'member' END",
        ),
    ];
    let mut tx = conn.begin().await?;
    for sql in statements {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .context("seeding")?;
    }
    for index in 0..USERS {
        let email = Creds::user(index).email;
        let (id,): (String,) = sqlx::query_as("SELECT id FROM users WHERE email_normalized = $1")
            .bind(&email)
            .fetch_one(&mut *tx)
            .await
            .with_context(|| format!("finding {email}"))?;
        for j in 0..PER_BENCH_USER {
            let tenant = seeded_of(index, j);
            sqlx::query(
                "INSERT INTO memberships (tenant_id, user_id, created_at) VALUES ($1, $2, 1)",
            )
            .bind(&tenant)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO member_roles (tenant_id, user_id, role) VALUES ($1, $2, 'admin')",
            )
            .bind(&tenant)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        }
        if index == 0 {
            sqlx::query(
                "INSERT INTO user_roles (user_id, role, created_at) VALUES ($1, 'admin', 1)",
            )
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    // Fresh statistics, as a production database would have.
    sqlx::query("ANALYZE").execute(&mut conn).await?;
    Ok(started.elapsed())
}

/// An API key of benchmark user 0's first seeded tenant, with that tenant's API-key rate raised
/// out of reach by a system administrator's plan override.
async fn api_key(api: &Api) -> anyhow::Result<String> {
    let tenant = seeded_of(0, 0);
    // Benchmark user 0 became a system administrator in the seed: a new login carries the role.
    let admin = api
        .login(&Creds::user(0))
        .await
        .map_err(|e| anyhow::anyhow!("admin login: {e}"))?;
    let auth = format!("Bearer {}", admin.access);
    send(
        api.client
            .patch(api.url(&format!("/tenants/{tenant}/plan")))
            .header(reqwest::header::AUTHORIZATION, &auth)
            .json(&serde_json::json!({"limits": {"api_key_requests_per_minute": 10_000_000}})),
    )
    .await
    .map_err(|e| anyhow::anyhow!("raising the tenant's API-key rate: {e}"))?;
    let switched = send(
        api.client
            .post(api.url("/auth/switch-tenant"))
            .header(reqwest::header::AUTHORIZATION, &auth)
            .json(&serde_json::json!({"tenant": tenant})),
    )
    .await
    .map_err(|e| anyhow::anyhow!("switching into {tenant}: {e}"))?;
    let pair = crate::parse_pair(&switched).map_err(|e| anyhow::anyhow!(e))?;
    let created = send(
        api.client
            .post(api.url(&format!("/tenants/{tenant}/api-keys")))
            .header(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", pair.access),
            )
            .json(&serde_json::json!({"name": "bench", "permissions": ["tenant:read"]})),
    )
    .await
    .map_err(|e| anyhow::anyhow!("creating an API key: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&created)?;
    v["key"]
        .as_str()
        .map(str::to_string)
        .context("no key in the answer")
}

pub fn loads(r: &Results) -> impl Iterator<Item = &Load> {
    r.tenants.iter().flat_map(|t| {
        t.runs
            .iter()
            .flat_map(|run| run.loads.iter())
            .chain([&t.bare])
    })
}

pub fn render(rep: &mut Report, r: &Results) {
    let Some(t) = &r.tenants else {
        return;
    };
    let bare = t.bare.ok_per_server_cpu_second();
    for run in &t.runs {
        rep.section(&format!(
            "Tenants on {}: {TENANTS} tenants, {MEMBERSHIPS} memberships (seeded in {:.1} s)",
            run.backend,
            run.seed_time.as_secs_f64()
        ));
        rep.load_header();
        for load in &run.loads {
            let per_cpu = load.ok_per_server_cpu_second();
            let target = (load.concurrency == 64
                && (load.label.starts_with("AuthZEN") || load.label.starts_with("API key")))
            .then(|| {
                (
                    format!(
                        ">= 20000/CPU-s: {per_cpu:.0} ({:.0}% bare)",
                        per_cpu / bare * 100.0
                    ),
                    per_cpu >= TARGET_PER_CPU_SECOND,
                )
            });
            rep.load_row(load, target);
        }
    }
    rep.section("Limit: a bare axum route (GET / answering {}), same runtime, concurrency 64");
    rep.load_header();
    rep.load_row(&t.bare, None);
    rep.line(&format!(
        "Targets: AuthZEN evaluations and API-key requests >= {TARGET_PER_CPU_SECOND:.0} per server CPU-second at concurrency 64; GET /tenants and switch: p99 shown."
    ));
}
