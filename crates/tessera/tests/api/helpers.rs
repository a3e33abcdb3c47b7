//! `TestApp`: the real service, in-process on 127.0.0.1:0, over a fresh database (a SQLite file
//! in a temp dir, or a fresh schema on the PostgreSQL server at `TESSERA_TEST_DATABASE_URL`),
//! with a fixed clock and cheap Argon2 parameters. Driven over HTTP with reqwest.

use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;
use tessera::clock::Clock;
use tessera::config::PasswordConfig;
use tessera::{App, AppState, Config};

pub const START: i64 = 1_800_000_000;
pub const ISSUER: &str = "http://tessera.test";
/// An issuer to be replaced by `http://localhost:<port>`: WebAuthn needs a domain name.
pub const LOCALHOST_ISSUER: &str = "http://localhost";
pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per backend for each listed scenario `async fn name(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::helpers::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::helpers::Backend::Postgres).await } )*
        }
    };
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub clock: Clock,
    pub config: Config,
    _dir: tempfile::TempDir,
}

pub struct Response {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

/// The test configuration: cheap hashing, fixed issuer, a fresh data dir.
pub fn test_config(dir: &std::path::Path, database_url: String) -> Config {
    let mut config = Config::load_from(None, &[]).expect("default config");
    config.listen = "127.0.0.1:0".into();
    config.issuer = ISSUER.into();
    config.data_dir = dir.to_path_buf();
    config.database_url = Some(database_url);
    config.database_max_connections = 4;
    config.password = PasswordConfig {
        argon2_memory_kib: 64,
        argon2_iterations: 1,
        ..PasswordConfig::default()
    };
    config.mail.poll_interval_ms = 20;
    config.events.poll_interval_ms = 20;
    config
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Spawns with the configuration adjusted by `tweak`.
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = database_url(backend, dir.path()).await;
        let mut config = test_config(dir.path(), url);
        tweak(&mut config);
        Self::start(config, dir).await
    }

    async fn start(config: Config, dir: tempfile::TempDir) -> Self {
        let clock = Clock::fixed(START);
        // The issuer is the listener's own address, so OIDC discovery validates.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a port");
        let base = format!("http://{}", listener.local_addr().expect("local address"));
        let mut config = config;
        if config.issuer == ISSUER {
            config.issuer = base.clone();
        } else if config.issuer == LOCALHOST_ISSUER {
            let port = base.rsplit(':').next().unwrap_or_default();
            config.issuer = format!("http://localhost:{port}");
        }
        let app = App::with_listener(config.clone(), clock.clone(), listener)
            .await
            .expect("building the app");
        let state = app.state().clone();
        tokio::spawn(app.run_until(std::future::pending()));
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        Self {
            base,
            client,
            state,
            clock,
            config,
            _dir: dir,
        }
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        into_response(req.send().await.expect("request sent")).await
    }

    /// Sends raw bytes with the given content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Response {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        into_response(req.send().await.expect("request sent")).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.request(Method::POST, path, None, Some(body)).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn register(&self, email: &str) -> Response {
        self.post(
            "/auth/register",
            json!({ "email": email, "password": PASSWORD }),
        )
        .await
    }

    /// Registers `email` (owned, for concurrent use).
    pub async fn register_as(&self, email: String) -> Response {
        self.register(&email).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post(
            "/auth/login",
            json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Registers `email` and logs in; returns the token response.
    pub async fn signed_in(&self, email: &str) -> Tokens {
        assert_eq!(self.register(email).await.status, StatusCode::CREATED);
        let res = self.login(email, PASSWORD).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        Tokens::from(&res.body)
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post("/auth/refresh", json!({ "refresh_token": refresh_token }))
            .await
    }
}

#[derive(Clone, Debug)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl From<&Value> for Tokens {
    fn from(v: &Value) -> Self {
        Self {
            access: v["access_token"]
                .as_str()
                .expect("access_token")
                .to_string(),
            refresh: v["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_string(),
        }
    }
}

async fn into_response(res: reqwest::Response) -> Response {
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Response {
        status,
        headers,
        body,
        text,
    }
}

static SCHEMA_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh database for one test.
pub async fn database_url(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.join("tessera.db").display()),
        Backend::Postgres => fresh_postgres_schema().await,
    }
}

/// Creates a new schema on the test PostgreSQL server and returns a URL whose `search_path`
/// points at it. An unreachable server fails the test with instructions, never a skip.
pub async fn fresh_postgres_schema() -> String {
    sqlx::any::install_default_drivers();
    let base = std::env::var("TESSERA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut conn = match sqlx::AnyConnection::connect(&base).await {
        Ok(c) => c,
        Err(e) => panic!(
            "PostgreSQL is unreachable at {base} ({e}).\nThe API suite runs on PostgreSQL as well as SQLite. Start it with \
             `pg_ctlcluster <version> main start` (the version is the folder under /etc/postgresql), or point \
             TESSERA_TEST_DATABASE_URL at a server you can use."
        ),
    };
    #[expect(
        clippy::disallowed_methods,
        reason = "schema names carry the real time so stale ones can be dropped"
    )]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let schema = format!(
        "tessera_t_{now}_{}_{}",
        std::process::id(),
        SCHEMA_SEQ.fetch_add(1, Ordering::SeqCst)
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("creating a test schema");
    drop_stale_schemas(&mut conn, now).await;
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options[search_path]={schema}")
}

/// Drops test schemas left by runs that ended more than two hours ago.
async fn drop_stale_schemas(conn: &mut sqlx::AnyConnection, now: u64) {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tessera_t_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for (name,) in rows {
        let started: u64 = name
            .split('_')
            .nth(2)
            .and_then(|t| t.parse().ok())
            .unwrap_or(u64::MAX);
        if started + 7200 < now {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
}

/// Asserts an error response: status, `error` code, JSON body with a correlation id.
#[track_caller]
pub fn assert_error(res: &Response, status: StatusCode, code: &str) {
    assert_eq!(res.status, status, "body: {}", res.text);
    assert_eq!(res.body["error"], code, "body: {}", res.text);
    assert!(
        res.body["message"].is_string(),
        "message missing: {}",
        res.text
    );
    assert!(
        res.body["correlation_id"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "correlation_id missing: {}",
        res.text
    );
    assert_eq!(
        res.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "content type of {}",
        res.text
    );
}

/// A minimal SMTP server on 127.0.0.1:0 that accepts every message (no TLS, no auth) and hands
/// the raw DATA of each to the test.
pub struct SmtpSink {
    pub port: u16,
    messages: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<String>>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read);
                    let _ = write.write_all(b"220 sink.test ESMTP\r\n").await;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" => b"250-sink.test\r\n250 8BITMIME\r\n",
                            "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 OK\r\n",
                            "QUIT" => {
                                let _ = write.write_all(b"221 bye\r\n").await;
                                return;
                            }
                            "DATA" => {
                                let _ = write.write_all(b"354 go ahead\r\n").await;
                                let mut data = String::new();
                                loop {
                                    line.clear();
                                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                                        return;
                                    }
                                    if line == ".\r\n" {
                                        break;
                                    }
                                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                                }
                                let _ = tx.send(data);
                                b"250 queued\r\n"
                            }
                            _ => b"502 not implemented\r\n",
                        };
                        if write.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            port,
            messages: tokio::sync::Mutex::new(rx),
        }
    }

    /// The next message, or a failure after 15 seconds.
    pub async fn next_message(&self) -> String {
        let mut rx = self.messages.lock().await;
        tokio::time::timeout(std::time::Duration::from_secs(15), rx.recv())
            .await
            .expect("no email arrived at the SMTP sink within 15 s")
            .expect("SMTP sink closed")
    }

    /// Points Tessera's mail at this sink.
    pub fn configure(&self, config: &mut Config) {
        config.mail.transport = "smtp".into();
        config.mail.smtp_host = Some("127.0.0.1".into());
        config.mail.smtp_port = Some(self.port);
        config.mail.smtp_tls = "none".into();
    }
}

/// Undoes quoted-printable soft line breaks and `=XX` escapes (enough for our ASCII mails).
pub fn decode_qp(raw: &str) -> String {
    let joined = raw.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first link in a message to `page` (`verify-email` or `reset-password`) and its token.
pub fn find_link(message: &str, page: &str) -> (String, String) {
    let text = decode_qp(message);
    let path = text
        .find(&format!("/{page}?token="))
        .unwrap_or_else(|| panic!("no {page} link in the message:\n{text}"));
    let start = text[..path]
        .rfind("http")
        .unwrap_or_else(|| panic!("the {page} link is not absolute:\n{text}"));
    let link: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '<')
        .collect();
    let token = link.split("token=").nth(1).unwrap().to_string();
    (link, token)
}

/// Every event of a subject, in outbox order.
pub async fn events_of(app: &TestApp, subject: &str) -> Vec<Value> {
    tessera::store::outbox::list_for_subject(app.state.store.pool(), subject)
        .await
        .unwrap()
        .into_iter()
        .map(|r| serde_json::from_str(&r.envelope).unwrap())
        .collect()
}

/// Event types of a subject, in order.
pub async fn event_types_of(app: &TestApp, subject: &str) -> Vec<String> {
    events_of(app, subject)
        .await
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect()
}

/// Number of rows in the outbox.
pub async fn outbox_len(app: &TestApp) -> i64 {
    let c = tessera::events::counts(&app.state.store).await.unwrap();
    c.pending + c.published + c.parked
}

/// The local NATS server; an unreachable one fails the test with how to start it.
pub async fn nats_url() -> String {
    let url =
        std::env::var("TESSERA_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let addr = url.trim_start_matches("nats://").to_string();
    if let Err(e) = tokio::net::TcpStream::connect(&addr).await {
        panic!(
            "NATS (JetStream) is unreachable at {addr} ({e}). The event tests publish to a real \
             NATS JetStream server. Start it with:\n  start-stop-daemon --start --oknodo --background \
             --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l \
             /var/log/nats-server.log\nor point TESSERA_TEST_NATS_URL at one."
        );
    }
    url
}

/// A stream name and subject prefix no other test uses.
pub fn unique_stream() -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    (format!("T_{id}"), format!("t{id}"))
}

/// Polls `check` every 20 ms until it returns true; fails after `secs` seconds with `what`.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The local Redis server; an unreachable one fails the test with how to start it.
pub async fn redis_url() -> String {
    let url =
        std::env::var("TESSERA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let addr = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string();
    if let Err(e) = tokio::net::TcpStream::connect(&addr).await {
        panic!(
            "Redis is unreachable at {addr} ({e}). The shared-state tests talk to a real Redis \
             server. Start it with:\n  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 \
             --save \"\" --appendonly no\nor point TESSERA_TEST_REDIS_URL at one."
        );
    }
    url
}

/// A key prefix no other test uses, so tests share one Redis without meeting.
pub fn unique_redis_prefix() -> String {
    format!("tessera-test:{}:", uuid::Uuid::new_v4().simple())
}

/// A Redis server of the test's own (to stop and start it), on a free port; killed on drop.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<std::process::Child>,
    /// With TLS: the folder holding `ca.pem` and the server's certificate and key.
    tls: Option<std::path::PathBuf>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Self {
            port,
            child: None,
            tls: None,
        };
        redis.restart().await;
        redis
    }

    /// A redis-server that speaks only TLS, with a certificate for `localhost` signed by a
    /// fresh certificate authority (made with the openssl command) at [`Self::ca_file`].
    pub async fn start_tls(dir: &std::path::Path) -> Self {
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap_or_else(|e| panic!("cannot run openssl ({e}): install Debian's openssl"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.pem"],
                &["-subj", "/CN=tessera test CA", "-days", "1"],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"],
                &ec[..],
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Self {
            port,
            child: None,
            tls: Some(dir.to_path_buf()),
        };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(_) => format!("rediss://localhost:{}", self.port),
        }
    }

    /// The certificate authority of a TLS server.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.tls.as_ref().expect("a TLS redis").join("ca.pem")
    }

    /// Starts (again) on the same port.
    pub async fn restart(&mut self) {
        let port = self.port.to_string();
        let mut cmd = std::process::Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        match &self.tls {
            None => cmd.args(["--port", &port]),
            Some(dir) => cmd
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(dir.join("server.pem"))
                .arg("--tls-key-file")
                .arg(dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(dir.join("ca.pem")),
        };
        let child = cmd
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install Debian's redis-server package")
            });
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        eventually(10, "the private redis-server to listen", || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
        })
        .await;
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
