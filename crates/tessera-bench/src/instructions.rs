//! Instructions per request, counted by callgrind: the figure that does not move with the
//! machine's noise (two runs of one binary on the same inputs agree to a fraction of a percent,
//! whatever else the machine is doing, where CPU-seconds move by ±20% on a 2-core VM).
//!
//! `tessera-bench --instructions [--compare OLD_TESSERA_BINARY]` runs `tessera serve` (the CLI
//! binary built next to this one, or the one given) under `valgrind --tool=callgrind`, sets it
//! up over HTTP and the CLI, then for each scenario warms up, zeroes the counters, sends a fixed
//! number of sequential requests, dumps, and reads the server's instruction total. With `--compare` the same is done with an older binary and the
//! table shows new / old per scenario. Every server thread counts (Tokio workers, blocking
//! Argon2id threads, background jobs, whose polling is slowed down to keep it out of the
//! window).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

use crate::{CHEAP_ARGON2, ISSUER, RAISED_LIMIT, RATE_LIMIT_CLASSES, progress};

const PASSWORD: &str = "correct horse battery staple";

/// A scenario: a name, the requests counted, and what one request is.
#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    count: u32,
    what: &'static str,
}

const SCENARIOS: [Scenario; 9] = [
    Scenario {
        name: "discovery",
        // Cheap requests: many, so that background tasks' instructions stay below 1%.
        count: 2000,
        what: "GET /.well-known/openid-configuration",
    },
    Scenario {
        name: "jwks",
        // Cheap requests: many, so that background tasks' instructions stay below 1%.
        count: 2000,
        what: "GET /.well-known/jwks.json",
    },
    Scenario {
        name: "me",
        count: 300,
        what: "GET /identity/me with a first-party RS256 access token",
    },
    Scenario {
        name: "introspect",
        count: 200,
        what: "POST /oauth2/introspect of a client-credentials JWT, HTTP Basic",
    },
    Scenario {
        name: "cc RS256",
        count: 100,
        what: "POST /oauth2/token grant_type=client_credentials (one RS256 signature)",
    },
    Scenario {
        name: "refresh",
        count: 100,
        what: "POST /auth/refresh, rotating (one RS256 signature)",
    },
    Scenario {
        name: "login",
        count: 50,
        what: "POST /auth/login, cheap Argon2id (8 KiB, t=1)",
    },
    Scenario {
        name: "register",
        count: 50,
        what: "POST /auth/register, cheap Argon2id, outbox event and mail job",
    },
    Scenario {
        name: "code flow",
        count: 30,
        what: "one authorization-code + PKCE login through the hosted pages (authorize, login, token; consent remembered), cheap Argon2id",
    },
];

/// `tessera` next to this executable (`target/release/tessera`).
pub(crate) fn default_server_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name("tessera");
    if !path.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p tessera-cli`",
            path.display()
        );
    }
    Ok(path)
}

pub(crate) async fn run(binary: &Path, compare: Option<&Path>) -> anyhow::Result<String> {
    check_valgrind()?;
    let new = count_all(binary).await?;
    let old = match compare {
        Some(old) => Some(count_all(old).await?),
        None => None,
    };
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(out, "\n== instructions per request (callgrind) ==");
    let _ = writeln!(out, "server: {}", binary.display());
    if let Some(old_bin) = compare {
        let _ = writeln!(out, "compared with: {}", old_bin.display());
        let _ = writeln!(
            out,
            "| scenario | requests | instructions / request | before | after / before |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    } else {
        let _ = writeln!(out, "| scenario | requests | instructions / request |");
        let _ = writeln!(out, "| --- | --- | --- |");
    }
    for (i, s) in SCENARIOS.iter().enumerate() {
        let per = new[i] as f64 / f64::from(s.count);
        match &old {
            Some(old) => {
                let before = old[i] as f64 / f64::from(s.count);
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.0} | {:.0} | {:.1}% |",
                    s.name,
                    s.count,
                    per,
                    before,
                    100.0 * per / before
                );
            }
            None => {
                let _ = writeln!(out, "| {} | {} | {:.0} |", s.name, s.count, per);
            }
        }
    }
    for s in SCENARIOS {
        let _ = writeln!(out, "{} = {}.", s.name, s.what);
    }
    let _ = writeln!(
        out,
        "Counted over every server thread, requests one at a time after a warm-up; background \
         jobs poll once a minute during the run. Lower is better."
    );
    Ok(out)
}

fn check_valgrind() -> anyhow::Result<()> {
    for tool in ["valgrind", "callgrind_control"] {
        let ok = std::process::Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!("{tool} is not installed: install Debian's valgrind package");
        }
    }
    Ok(())
}

/// The server under callgrind, its data folder and its address.
struct Counted {
    child: tokio::process::Child,
    pid: u32,
    dir: tempfile::TempDir,
    base: String,
    binary: PathBuf,
}

impl Counted {
    fn env(dir: &Path, port: u16) -> Vec<(String, String)> {
        let mut env = vec![
            ("TESSERA_LISTEN".into(), format!("127.0.0.1:{port}")),
            (
                "TESSERA_DATA_DIR".into(),
                dir.join("data").display().to_string(),
            ),
            ("TESSERA_ISSUER".into(), ISSUER.into()),
            ("TESSERA_SIGNING_ALG".into(), "RS256".into()),
            ("TESSERA_LOG".into(), "warn".into()),
            ("TESSERA_MAIL__POLL_INTERVAL_MS".into(), "60000".into()),
            ("TESSERA_EVENTS__POLL_INTERVAL_MS".into(), "60000".into()),
            (
                "TESSERA_PASSWORD__MAX_QUEUED_HASHES".into(),
                RAISED_LIMIT.into(),
            ),
            (
                "TESSERA_RATE_LIMIT__LOCKOUT_THRESHOLD".into(),
                RAISED_LIMIT.into(),
            ),
            (
                "TESSERA_RATE_LIMIT__LOCKOUT_ACCOUNT_THRESHOLD".into(),
                RAISED_LIMIT.into(),
            ),
            ("NO_COLOR".into(), "1".into()),
        ];
        for (k, v) in CHEAP_ARGON2 {
            env.push((k.into(), v.into()));
        }
        for class in RATE_LIMIT_CLASSES {
            for field in ["BURST", "PER_MINUTE"] {
                env.push((
                    format!("TESSERA_RATE_LIMIT__{class}__{field}"),
                    RAISED_LIMIT.into(),
                ));
            }
        }
        env
    }

    async fn start(binary: &Path) -> anyhow::Result<Self> {
        progress(&format!("starting {} under callgrind", binary.display()));
        let dir = tempfile::Builder::new()
            .prefix("tessera-callgrind-")
            .tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cmd = tokio::process::Command::new("valgrind");
        cmd.arg("--tool=callgrind")
            .arg(format!(
                "--callgrind-out-file={}/callgrind.out",
                dir.path().display()
            ))
            .arg(binary)
            .arg("serve");
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("TESSERA_")) {
            cmd.env_remove(key);
        }
        cmd.envs(Self::env(dir.path(), port))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("server.log"))?)
            .kill_on_drop(true);
        let child = cmd.spawn().context("spawning valgrind")?;
        let pid = child.id().context("valgrind exited at once")?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if http
                .get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(300) {
                let log =
                    std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                bail!("the server under callgrind did not answer /healthz in 300 s:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(Self {
            child,
            pid,
            dir,
            base,
            binary: binary.to_path_buf(),
        })
    }

    fn control(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = std::process::Command::new("callgrind_control")
            .args(args)
            .arg(self.pid.to_string())
            .output()
            .context("running callgrind_control")?;
        if !out.status.success() {
            bail!(
                "callgrind_control {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Instructions the server executes while `work` runs.
    async fn count<F, Fut>(&self, work: F) -> anyhow::Result<u64>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        self.control(&["--zero"])?;
        let result = work().await;
        let before = self.dumps()?;
        self.control(&["--dump"])?;
        result?;
        let dump = self
            .dumps()?
            .into_iter()
            .find(|p| !before.contains(p))
            .context("callgrind wrote no dump")?;
        let text = std::fs::read_to_string(&dump)?;
        text.lines()
            .find_map(|l| {
                l.strip_prefix("summary:")
                    .or_else(|| l.strip_prefix("totals:"))
            })
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no instruction total in {}", dump.display()))
    }

    fn dumps(&self) -> anyhow::Result<Vec<PathBuf>> {
        Ok(std::fs::read_dir(self.dir.path())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("callgrind.out"))
            })
            .collect())
    }

    /// `tessera client create` on the server's data folder: `(client_id, client_secret)`.
    fn create_client(&self, args: &[&str]) -> anyhow::Result<(String, String)> {
        let port = self
            .base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let out = std::process::Command::new(&self.binary)
            .args(["client", "create", "--name", "callgrind", "--json"])
            .args(args)
            .envs(Self::env(self.dir.path(), port))
            .output()
            .context("running tessera client create")?;
        if !out.status.success() {
            bail!(
                "tessera client create: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: Value = serde_json::from_slice(&out.stdout).context("client create --json")?;
        let field = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .with_context(|| format!("no {k} in {v}"))
        };
        Ok((field("client_id")?, field("client_secret")?))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Per scenario, the server's instructions over `count` requests.
async fn count_all(binary: &Path) -> anyhow::Result<Vec<u64>> {
    let server = Counted::start(binary).await?;
    let http = reqwest::Client::new();
    let base = server.base.clone();
    let post = |path: &str, body: Value| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let res = http.post(url).json(&body).send().await?;
            let status = res.status();
            let v: Value = res.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("{status}: {v}");
            }
            anyhow::Ok(v)
        }
    };
    let get = |path: &str, token: Option<String>| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let mut req = http.get(url);
            if let Some(t) = token {
                req = req.header(AUTHORIZATION, format!("Bearer {t}"));
            }
            let res = req.send().await?;
            if !res.status().is_success() {
                bail!("{}", res.status());
            }
            res.bytes().await?;
            anyhow::Ok(())
        }
    };
    let (client_id, secret) =
        server.create_client(&["--grant", "client_credentials", "--scope", "api.read"])?;
    let (web_id, web_secret) = server.create_client(&[
        "--redirect-uri",
        "http://127.0.0.1:9/callback",
        "--grant",
        "authorization_code",
        "--scope",
        "openid",
        "--scope",
        "email",
    ])?;
    let mut flow = crate::oauth::CodeFlow::for_client(
        &web_id,
        &web_secret,
        crate::Creds {
            email: "ada@example.com".into(),
            password: PASSWORD.into(),
        },
    )?;
    let api = crate::Api {
        client: http.clone(),
        base: base.as_str().into(),
    };
    let cc = |http: reqwest::Client| {
        let url = format!("{base}/oauth2/token");
        let (id, secret) = (client_id.clone(), secret.clone());
        async move {
            let res = http
                .post(url)
                .basic_auth(id, Some(secret))
                .form(&[("grant_type", "client_credentials"), ("scope", "api.read")])
                .send()
                .await?;
            let v: Value = res.json().await?;
            v["access_token"]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("client credentials: {v}"))
        }
    };
    post(
        "/auth/register",
        json!({"email": "ada@example.com", "password": PASSWORD}),
    )
    .await?;
    let login = || {
        post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
    };
    let pair = login().await?;
    let access = pair["access_token"]
        .as_str()
        .context("access_token")?
        .to_string();
    let mut refresh = pair["refresh_token"]
        .as_str()
        .context("refresh_token")?
        .to_string();
    let cc_token = cc(http.clone()).await?;

    let mut totals = Vec::new();
    let mut registered = 0u32;
    for s in SCENARIOS {
        progress(&format!("callgrind: {} × {}", s.name, s.count));
        // Warm-up: a few requests first, uncounted (caches, connection pool, lazy statics).
        let rounds = [5, s.count];
        let mut total = 0;
        for (round, n) in rounds.into_iter().enumerate() {
            let counted = round == 1;
            let work = async {
                for _ in 0..n {
                    match s.name {
                        "discovery" => get("/.well-known/openid-configuration", None).await?,
                        "jwks" => get("/.well-known/jwks.json", None).await?,
                        "me" => get("/identity/me", Some(access.clone())).await?,
                        "introspect" => {
                            let res = http
                                .post(format!("{base}/oauth2/introspect"))
                                .basic_auth(&client_id, Some(&secret))
                                .form(&[("token", cc_token.as_str())])
                                .send()
                                .await?;
                            let v: Value = res.json().await?;
                            if v["active"] != true {
                                bail!("introspection: {v}");
                            }
                        }
                        "cc RS256" => {
                            cc(http.clone()).await?;
                        }
                        "refresh" => {
                            let pair =
                                post("/auth/refresh", json!({"refresh_token": refresh})).await?;
                            refresh = pair["refresh_token"]
                                .as_str()
                                .context("refresh_token")?
                                .to_string();
                        }
                        "login" => {
                            login().await?;
                        }
                        "register" => {
                            registered += 1;
                            post(
                                "/auth/register",
                                json!({"email": format!("user{registered}@example.com"),
                                       "password": PASSWORD}),
                            )
                            .await?;
                        }
                        "code flow" => flow.step(&api).await.map_err(anyhow::Error::msg)?,
                        other => bail!("unknown scenario {other}"),
                    }
                }
                anyhow::Ok(())
            };
            if counted {
                total = server.count(|| work).await?;
            } else {
                work.await?;
            }
        }
        totals.push(total);
    }
    Ok(totals)
}
