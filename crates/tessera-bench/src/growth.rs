//! Cost as data grows (issue 11): the hot paths on a database that holds 1 000, 100 000 and
//! 1 000 000 users, each with 10 sessions and one refresh token per session (10 000 000 of
//! each at the top), next to the same scenarios on the empty database, on SQLite and on
//! PostgreSQL. Then housekeeping purges the 2 000 000 expired rows while `/identity/me` and
//! refresh run, and their p99 is compared with the same load undisturbed.
//!
//! Scenarios at each step (64 benchmark users registered through the API before any seeding):
//! - `login` at concurrency 16 (OWASP Argon2id; the user is found by email among all of them);
//! - `refresh` (RS256) at 64: each rotation inserts into a table of 10 000 000 tokens;
//! - `introspect` of a client-credentials token at 64;
//! - `me` at 64.
//!
//! Target: each within 90% of its empty-database figure (per server CPU-second).
//!
//! The seeded rows are written straight into the database by this process (a recursive CTE on
//! SQLite, `generate_series` on PostgreSQL), in chunks of 100 000 users, while the server runs.
//! Of each seeded user's 10 sessions, 9 are live and one ended 40 days ago, its refresh token
//! expired 10 days ago: what housekeeping deletes. PostgreSQL's tables are analysed after each
//! step, as autovacuum would; SQLite is left as a production database would be (Tessera does not
//! run `ANALYZE`).

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::{
    Api, Creds, Length, Load, Options, Report, Results, Server, Task, USERS, login_sessions,
    me_tasks, progress, refresh_load, refresh_tasks, register_users, run_load,
};
use tessera::clock::Clock;

/// Seeded users after each step.
pub const STEPS: [u64; 3] = [1_000, 100_000, 1_000_000];
/// Sessions of each seeded user, each with one refresh token; the last one has ended.
const SESSIONS_PER_USER: u64 = 10;
/// Users seeded per statement (and transaction).
const CHUNK: u64 = 100_000;
/// Each figure at the largest step, against the empty database.
pub const TARGET_SHARE: f64 = 0.9;
const DAY: i64 = 24 * 3600;

pub struct Step {
    /// Seeded users (0: the empty database, only the benchmark's own).
    pub users: u64,
    pub seed_time: Duration,
    pub loads: Vec<Load>,
}

pub struct Purge {
    pub deleted: u64,
    pub took: Duration,
    /// Whether the purge was still running when the measured window ended.
    pub outlasted_window: bool,
    /// `me` x16 and `refresh` x16 together, before the purge.
    pub quiet: [Load; 2],
    /// The same, while the purge runs.
    pub during: [Load; 2],
}

pub struct GrowthRun {
    pub backend: &'static str,
    pub steps: Vec<Step>,
    pub purge: Purge,
}

pub struct GrowthResults {
    pub runs: Vec<GrowthRun>,
}

pub async fn run(
    client: &reqwest::Client,
    options: &Options,
    results: &mut Results,
) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    let sqlite = Server::start("growth (SQLite)", &[]).await?;
    let url = format!(
        "sqlite://{}?mode=rw",
        sqlite.data_dir.join("tessera.db").display()
    );
    runs.push(backend(client, options, &sqlite, &url, false, "SQLite").await?);
    results.logs.push(sqlite.stop().await?);

    let database = crate::shared::fresh_schema().await?;
    let postgres = Server::start(
        "growth (PostgreSQL)",
        &[("TESSERA_DATABASE_URL", database.as_str())],
    )
    .await?;
    let run = backend(client, options, &postgres, &database, true, "PostgreSQL").await;
    results.logs.push(postgres.stop().await?);
    // Ten million rows are not left behind in the test database.
    drop_schema(&database).await?;
    runs.push(run?);
    results.growth = Some(GrowthResults { runs });
    Ok(())
}

async fn backend(
    client: &reqwest::Client,
    options: &Options,
    server: &Server,
    database: &str,
    postgres: bool,
    name: &'static str,
) -> anyhow::Result<GrowthRun> {
    let api = Api::new(client, server);
    register_users(&api, USERS).await?;
    let oc = crate::oauth::create_client_in(server, postgres.then_some(database)).await?;
    let token = crate::oauth::client_credentials_token(&api, &oc).await?;
    let introspect = bytes::Bytes::from(format!("token={token}"));
    let mut steps = Vec::new();
    let mut seeded = 0;
    for users in [0].into_iter().chain(STEPS) {
        let seed_time = seed(database, postgres, seeded, users).await?;
        seeded = users;
        let seconds = Length::Seconds(options.measure);
        let mut loads = Vec::new();
        let logins = (0..16)
            .map(|i| Task::Login {
                body: Creds::user(i % USERS).login_body(),
            })
            .collect();
        loads.push(run_load("login", server, &api, logins, options.warmup, seconds).await?);
        loads.push(refresh_load("refresh", server, &api, 64, USERS, options).await?);
        let tasks = (0..64)
            .map(|_| Task::Introspect {
                authorization: oc.basic.clone(),
                body: introspect.clone(),
            })
            .collect();
        loads.push(run_load("introspect", server, &api, tasks, options.warmup, seconds).await?);
        let sessions = login_sessions(&api, 16, USERS).await?;
        loads.push(
            run_load(
                "me",
                server,
                &api,
                me_tasks(&sessions, 64)?,
                options.warmup,
                seconds,
            )
            .await?,
        );
        steps.push(Step {
            users,
            seed_time,
            loads,
        });
    }
    let purge = purge(&api, server, options).await?;
    Ok(GrowthRun {
        backend: name,
        steps,
        purge,
    })
}

/// `me` x16 and `refresh` x16 at once, for the window.
async fn mixed(
    label: &str,
    api: &Api,
    server: &Server,
    options: &Options,
) -> anyhow::Result<[Load; 2]> {
    let sessions = login_sessions(api, 16, USERS).await?;
    let refresh = refresh_tasks(api, 16, USERS).await?;
    let seconds = || Length::Seconds(options.measure);
    let (me_label, refresh_label) = (format!("{label}: me"), format!("{label}: refresh"));
    let (me, refresh) = tokio::join!(
        run_load(
            &me_label,
            server,
            api,
            me_tasks(&sessions, 16)?,
            options.warmup,
            seconds()
        ),
        run_load(
            &refresh_label,
            server,
            api,
            refresh,
            options.warmup,
            seconds()
        ),
    );
    Ok([me?, refresh?])
}

/// The purge, run inside the server process (its own housekeeping pass, on its own store and
/// writer queue, as the hourly pass runs in production), while `me` and `refresh` load it.
async fn purge(api: &Api, server: &Server, options: &Options) -> anyhow::Result<Purge> {
    let quiet = mixed("quiet", api, server, options).await?;
    progress("housekeeping: the server purges the expired rows while me and refresh run");
    let started = Instant::now();
    let purging = async {
        let purged = server.purge().await;
        (purged, started.elapsed())
    };
    let window = async {
        // Let the purge take its first batches before the window opens.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let during = mixed("purge", api, server, options).await;
        (during, started.elapsed())
    };
    let ((purged, purge_ended), (during, window_ended)) = tokio::join!(purging, window);
    let (deleted, took) = purged.context("purging")?;
    Ok(Purge {
        deleted,
        took,
        outlasted_window: purge_ended > window_ended,
        quiet,
        during: during?,
    })
}

/// Seeds users `from..to` with their sessions and refresh tokens; returns how long it took.
async fn seed(database: &str, postgres: bool, from: u64, to: u64) -> anyhow::Result<Duration> {
    use sqlx::Connection;
    let started = Instant::now();
    if to <= from {
        return Ok(Duration::ZERO);
    }
    progress(&format!(
        "seeding users {from}..{to} with {SESSIONS_PER_USER} sessions and refresh tokens each"
    ));
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(database)
        .await
        .with_context(|| format!("connecting to {database} to seed it"))?;
    let now = Clock::System.now();
    let (live, ended, expired) = (now + 30 * DAY, now - 40 * DAY, now - 10 * DAY);
    let last = SESSIONS_PER_USER - 1;
    // Rows a..=b: a recursive CTE on SQLite, generate_series on PostgreSQL.
    let series = |a: u64, b: u64, insert: &str, select: &str| {
        if postgres {
            format!("{insert} {select} FROM generate_series({a}, {b}) AS n(i)")
        } else {
            format!(
                "WITH RECURSIVE n(i) AS (SELECT {a} UNION ALL SELECT i + 1 FROM n WHERE i < {b}) \
                 {insert} {select} FROM n"
            )
        }
    };
    // A refresh token's digest is 64 hex digits spread over the key space, like SHA-256's.
    let digest = if postgres {
        "md5('a' || i) || md5('b' || i)"
    } else {
        "lower(hex(randomblob(32)))"
    };
    let mut a = from;
    while a < to {
        let b = (a + CHUNK).min(to);
        let (s0, s1) = (a * SESSIONS_PER_USER, b * SESSIONS_PER_USER - 1);
        let statements = [
            series(
                a,
                b - 1,
                "INSERT INTO users (id, email, email_normalized, status, created_at, updated_at)",
                "SELECT 'grow-u-' || i, 'grow-' || i || '@example.com', \
                 'grow-' || i || '@example.com', 'active', 1, 1",
            ),
            series(
                s0,
                s1,
                "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, \
                 revoked_at, revoked_reason)",
                &format!(
                    "SELECT 'grow-s-' || i, 'grow-u-' || (i / {SESSIONS_PER_USER}), {c}, {c}, \
                     CASE WHEN i % {SESSIONS_PER_USER} = {last} THEN {expired} ELSE {live} END, \
                     CASE WHEN i % {SESSIONS_PER_USER} = {last} THEN {ended} END, \
                     CASE WHEN i % {SESSIONS_PER_USER} = {last} THEN 'logout' END",
                    c = now - 50 * DAY,
                ),
            ),
            series(
                s0,
                s1,
                "INSERT INTO refresh_tokens (token_hash, session_id, issued_at, expires_at)",
                &format!(
                    "SELECT {digest}, 'grow-s-' || i, {c}, \
                     CASE WHEN i % {SESSIONS_PER_USER} = {last} THEN {expired} ELSE {live} END",
                    c = now - 50 * DAY,
                ),
            ),
        ];
        let mut tx = conn.begin().await?;
        for sql in statements {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .context("seeding")?;
        }
        tx.commit().await?;
        a = b;
    }
    if postgres {
        for table in ["users", "sessions", "refresh_tokens"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {table}")))
                .execute(&mut conn)
                .await?;
        }
    }
    conn.close().await?;
    Ok(started.elapsed())
}

async fn drop_schema(database: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let Some(schema) = database.split("search_path]=").nth(1) else {
        return Ok(());
    };
    let mut conn = sqlx::AnyConnection::connect(crate::shared::DATABASE_URL).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut conn)
        .await?;
    Ok(())
}

pub fn loads(r: &Results) -> impl Iterator<Item = &Load> {
    r.growth.iter().flat_map(|g| {
        g.runs.iter().flat_map(|run| {
            run.steps
                .iter()
                .flat_map(|s| s.loads.iter())
                .chain(run.purge.quiet.iter())
                .chain(run.purge.during.iter())
        })
    })
}

pub fn render(rep: &mut Report, r: &Results) {
    let Some(g) = &r.growth else {
        return;
    };
    for run in &g.runs {
        rep.section(&format!(
            "Cost as data grows on {}: seeded users x {SESSIONS_PER_USER} sessions and refresh tokens",
            run.backend
        ));
        for step in &run.steps {
            rep.line(&format!(
                "-- {} seeded users, {} sessions (seeded in {:.1} s)",
                step.users,
                step.users * SESSIONS_PER_USER,
                step.seed_time.as_secs_f64()
            ));
            rep.load_header();
            for load in &step.loads {
                rep.load_row(load, None);
            }
        }
        let Some(empty) = run.steps.first() else {
            continue;
        };
        rep.line(&format!(
            "Per server CPU-second against the empty database (target: >= {:.0}% at every step):",
            TARGET_SHARE * 100.0
        ));
        for (i, base) in empty.loads.iter().enumerate() {
            for step in &run.steps[1..] {
                let Some(load) = step.loads.get(i) else {
                    continue;
                };
                let share = load.ok_per_server_cpu_second() / base.ok_per_server_cpu_second();
                rep.check(
                    &format!(
                        "{} x{} at {} users",
                        load.label, load.concurrency, step.users
                    ),
                    &format!(
                        "{:.0} ({:.0}%)",
                        load.ok_per_server_cpu_second(),
                        share * 100.0
                    ),
                    &format!(
                        ">= {:.0}% of {:.0}",
                        TARGET_SHARE * 100.0,
                        base.ok_per_server_cpu_second()
                    ),
                    share >= TARGET_SHARE,
                );
            }
        }
        let p = &run.purge;
        rep.line(&format!(
            "-- housekeeping on {}: {} rows deleted in {:.1} s ({:.0} rows/s, batches of {} to {} rows, about {} ms each){}",
            run.backend,
            p.deleted,
            p.took.as_secs_f64(),
            p.deleted as f64 / p.took.as_secs_f64().max(1e-9),
            tessera::app::PURGE_BATCH_MIN,
            tessera::app::PURGE_BATCH,
            tessera::app::PURGE_BATCH_BUDGET.as_millis(),
            if p.outlasted_window {
                "; the window below lies inside the purge"
            } else {
                "; the purge ended inside the window below"
            }
        ));
        rep.load_header();
        for load in p.quiet.iter().chain(p.during.iter()) {
            rep.load_row(load, None);
        }
        for (quiet, during) in p.quiet.iter().zip(p.during.iter()) {
            rep.check(
                &format!("{} p99 during the purge", during.label),
                &format!(
                    "{:.2} ms (quiet {:.2})",
                    during.stats.percentile_ms(0.99),
                    quiet.stats.percentile_ms(0.99)
                ),
                "< 10 ms",
                during.stats.percentile_ms(0.99) < 10.0,
            );
        }
    }
}
