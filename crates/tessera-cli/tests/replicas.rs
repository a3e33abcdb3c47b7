//! Two `tessera serve` processes on one PostgreSQL database, one Redis and one NATS, as a
//! deployment with two replicas runs them: a logout on one is refused on the other at once,
//! the per-IP login limit and the lockout are shared, a key rotated through the CLI is
//! published by both, every event is relayed once and every webhook delivered once.
#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on an unexpected result"
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const PASSWORD: &str = "correct horse battery staple";
/// How long a key rotation may take to reach a replica: its reload interval, and some slack.
const KEY_RELOAD: Duration = Duration::from_secs(tessera::keys::RELOAD_INTERVAL as u64 + 5);

/// A child process killed when the test ends, passing or panicking.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn reachable(what: &str, addr: &str, how: &str) {
    if let Err(e) = std::net::TcpStream::connect(addr) {
        panic!(
            "{what} is unreachable at {addr} ({e}); the replica test needs it. Start it with:\n  {how}"
        );
    }
}

/// A fresh schema on the test PostgreSQL server, as a database URL.
async fn fresh_schema() -> String {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let base = std::env::var("TESSERA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut conn = sqlx::AnyConnection::connect(&base)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is unreachable at {base} ({e}). Start it with `pg_ctlcluster <version> \
             main start`, or point TESSERA_TEST_DATABASE_URL at a server you can use."
            )
        });
    let schema = format!("tessera_r_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .unwrap();
    format!("{base}?options[search_path]={schema}")
}

struct Deployment {
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl Deployment {
    fn command(&self, data: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TESSERA_DATA_DIR", self.dir.path().join(data))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    fn cli(&self, args: &[&str]) -> Value {
        let out = self.command("cli").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "tessera {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Starts a replica and returns it with its base URL.
    fn serve(&self, name: &str) -> (Running, String) {
        let mut child = Running(
            self.command(name)
                .env("TESSERA_LISTEN", "127.0.0.1:0")
                .env("TESSERA_LOG", "info")
                .env("TESSERA_LOG_FORMAT", "json")
                .arg("serve")
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            assert!(Instant::now() < deadline, "replica {name} did not start");
            let line = lines
                .next()
                .expect("serve exited before listening")
                .unwrap();
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if let Some(addr) = v["addr"].as_str() {
                break addr.to_string();
            }
        };
        // Keep reading its log, or the pipe fills and the replica blocks.
        std::thread::spawn(move || for _ in lines {});
        (child, format!("http://{addr}"))
    }
}

/// A webhook endpoint counting deliveries per event id.
async fn webhook_receiver() -> (String, Arc<Mutex<HashMap<String, u32>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let counts = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counts = Arc::clone(&counts);
            tokio::spawn(async move {
                use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
                let mut stream = tokio::io::BufReader::new(stream);
                loop {
                    let (mut id, mut length) = (String::new(), 0usize);
                    loop {
                        let mut line = String::new();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end().to_ascii_lowercase();
                        if line.is_empty() {
                            break;
                        }
                        if let Some(v) = line.strip_prefix("tessera-event-id:") {
                            id = v.trim().to_string();
                        }
                        if let Some(v) = line.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    *counts.lock().unwrap().entry(id).or_insert(0) += 1;
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if stream.get_mut().write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, seen)
}

async fn until(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(http: &reqwest::Client, url: String, ip: &str, body: Value) -> reqwest::Response {
    http.post(url)
        .header("x-forwarded-for", ip)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn kids(http: &reqwest::Client, base: &str) -> Vec<String> {
    let jwks: Value = http
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_revocations_limits_lockouts_keys_events_and_webhooks() {
    reachable(
        "Redis",
        "127.0.0.1:6379",
        "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no",
    );
    reachable(
        "NATS",
        "127.0.0.1:4222",
        "nats-server -a 127.0.0.1 -p 4222 -js (in the background)",
    );
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (stream, subjects) = (format!("R_{id}"), format!("r{id}"));
    let env = [
        ("TESSERA_DATABASE_URL", fresh_schema().await),
        ("TESSERA_MASTER_KEY", MASTER_KEY.into()),
        ("TESSERA_ISSUER", "http://tessera.replicas.test".into()),
        ("TESSERA_REDIS_URL", "redis://127.0.0.1:6379".into()),
        ("TESSERA_REDIS_PREFIX", format!("tessera-replicas:{id}:")),
        ("TESSERA_EVENTS__NATS_URL", "nats://127.0.0.1:4222".into()),
        ("TESSERA_EVENTS__STREAM", stream.clone()),
        ("TESSERA_EVENTS__SUBJECT_PREFIX", subjects.clone()),
        ("TESSERA_EVENTS__POLL_INTERVAL_MS", "50".into()),
        ("TESSERA_MAIL__TRANSPORT", "events".into()),
        ("TESSERA_TRUSTED_PROXIES", "127.0.0.1".into()),
        ("TESSERA_RATE_LIMIT__LOGIN_IP__BURST", "6".into()),
        ("TESSERA_RATE_LIMIT__LOGIN_IP__PER_MINUTE", "1".into()),
        ("TESSERA_RATE_LIMIT__LOCKOUT_THRESHOLD", "3".into()),
        ("TESSERA_PASSWORD__ARGON2_MEMORY_KIB", "64".into()),
        ("TESSERA_PASSWORD__ARGON2_ITERATIONS", "1".into()),
        ("TESSERA_LOG", "warn".into()),
    ];
    let deployment = Deployment {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        dir: tempfile::tempdir().unwrap(),
    };
    let (hook_url, deliveries) = webhook_receiver().await;
    deployment.cli(&["migrate"]);
    deployment.cli(&["webhooks", "add", &hook_url, "--events", "*", "--json"]);
    let store = tessera::store::Store::connect(&env[0].1, 2).await.unwrap();
    let event_ids = async || -> Vec<String> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT event_id FROM outbox ORDER BY seq")
            .fetch_all(store.pool())
            .await
            .unwrap();
        rows.into_iter().map(|(id,)| id).collect()
    };
    let before_replicas = event_ids().await;
    let (_a, a) = deployment.serve("a");
    let (_b, b) = deployment.serve("b");
    let http = reqwest::Client::new();

    // A logout on B is refused on A at once (A saw the token live a moment before).
    let ip = "192.0.2.1";
    let res = post(
        &http,
        format!("{a}/auth/register"),
        ip,
        json!({"email": "ada@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let login = json!({"email": "ada@example.com", "password": PASSWORD});
    let tokens: Value = post(&http, format!("{b}/auth/login"), ip, login.clone())
        .await
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let me = |base: &str| {
        http.get(format!("{base}/identity/me"))
            .bearer_auth(&access)
            .send()
    };
    assert_eq!(me(&a).await.unwrap().status(), 200);
    let res = http
        .post(format!("{b}/auth/logout"))
        .bearer_auth(&access)
        .json(&json!({"refresh_token": tokens["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "logout: {}", res.status());
    assert_eq!(me(&a).await.unwrap().status(), 401, "refused on A at once");

    // The per-IP login limit is one bucket: six attempts spread over both, the seventh refused
    // on either.
    let ip = "192.0.2.2";
    for (n, base) in [&a, &b, &a, &b, &a, &b].into_iter().enumerate() {
        let wrong = json!({"email": format!("nobody{n}@example.com"), "password": PASSWORD});
        let res = post(&http, format!("{base}/auth/login"), ip, wrong).await;
        assert_eq!(res.status(), 401, "attempt {n}");
    }
    for base in [&a, &b] {
        let res = post(&http, format!("{base}/auth/login"), ip, login.clone()).await;
        assert_eq!(res.status(), 429, "the shared bucket is empty");
    }

    // A lockout earned on A holds on B, even for the right password.
    let ip = "192.0.2.3";
    let wrong = json!({"email": "ada@example.com", "password": "not the password at all"});
    for _ in 0..3 {
        let res = post(&http, format!("{a}/auth/login"), ip, wrong.clone()).await;
        assert_eq!(res.status(), 401);
    }
    let res = post(&http, format!("{b}/auth/login"), ip, login.clone()).await;
    assert_eq!(res.status(), 429, "locked on B too");

    // A key rotated through the CLI is published by both within the reload interval.
    let rotated = deployment.cli(&["keys", "rotate", "--json"]);
    let kid = rotated["kid"].as_str().unwrap().to_string();
    for base in [&a, &b] {
        until(
            KEY_RELOAD.as_secs(),
            "the rotated key in the JWKS",
            async || kids(&http, base).await.contains(&kid),
        )
        .await;
    }

    // Every event relayed once and delivered to the webhook once, whichever replica ran it.
    until(30, "the outbox to drain", async || {
        let c = tessera::events::counts(&store).await.unwrap();
        c.pending == 0 && c.published > 0
    })
    .await;
    let ids = event_ids().await;
    assert!(
        ids.len() >= before_replicas.len() + 3,
        "the scenarios above emitted events"
    );
    let nats = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(&stream)
        .await
        .unwrap()
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut relayed: HashMap<String, u32> = HashMap::new();
    let mut batch = consumer
        .fetch()
        .max_messages(10_000)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    while let Some(message) = batch.next().await {
        let message = message.unwrap();
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        *relayed
            .entry(event["event_id"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    let mut expected: Vec<&String> = ids.iter().collect();
    expected.sort();
    let mut got: Vec<&String> = relayed.keys().collect();
    got.sort();
    assert_eq!(got, expected, "every event on NATS");
    assert!(relayed.values().all(|&n| n == 1), "each once: {relayed:?}");
    // The webhook hears every event emitted after it was added.
    let mut expected: Vec<&String> = ids
        .iter()
        .filter(|id| !before_replicas.contains(id))
        .collect();
    expected.sort();
    until(30, "every webhook delivery", async || {
        deliveries.lock().unwrap().len() >= expected.len()
    })
    .await;
    let deliveries = deliveries.lock().unwrap().clone();
    let mut delivered: Vec<&String> = deliveries.keys().collect();
    delivered.sort();
    assert_eq!(delivered, expected, "every event delivered");
    assert!(
        deliveries.values().all(|&n| n == 1),
        "each once: {deliveries:?}"
    );
}
