//! Issue 4 scenarios: the OAuth 2.0 / OpenID Connect endpoints.
//!
//! Clients are registered before the load by opening the child server's SQLite file from this
//! process (`tessera::app::open_store` on its `TESSERA_DATA_DIR`; WAL lets two processes share
//! it) and calling `tessera::oauth::clients::create`, which returns the secret once.
//!
//! The code flow runs the whole browser dance per iteration: `GET /oauth2/authorize` (PKCE S256)
//! → login page → `POST /oauth2/login` (CSRF token and `request` from the page's hidden fields)
//! → consent page the first time for a user → `POST /oauth2/consent decision=allow` → `303` to
//! the redirect URI with the code → `POST /oauth2/token` with the code verifier. Each concurrent
//! client has its own cookie jar, emptied before every flow, so every flow signs in again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderValue, LOCATION};
use tessera::clock::Clock;
use tessera::oauth::clients::{self, ClientSpec};

use crate::{
    Api, Baselines, CHEAP_ARGON2, Creds, Hardware, ISSUER, LEVELS, Length, Load, Options, Report,
    Results, Server, Task, progress, register_users, run_load, send,
};

pub(crate) const FORM: &str = "application/x-www-form-urlencoded";
const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";
/// Users of the code-flow scenario.
const FLOW_USERS: usize = 64;

/// A confidential client registered in a server's store.
pub(crate) struct OAuthClient {
    id: String,
    /// `Basic base64(id:secret)`.
    pub(crate) basic: HeaderValue,
}

/// Registers a confidential client allowed every grant the scenarios use.
pub(crate) async fn create_client(server: &Server) -> anyhow::Result<OAuthClient> {
    create_client_in(server, None).await
}

/// [`create_client`] for a server whose database is `database` rather than its data
/// directory's SQLite file.
pub(crate) async fn create_client_in(
    server: &Server,
    database: Option<&str>,
) -> anyhow::Result<OAuthClient> {
    let mut env = vec![
        (
            "TESSERA_DATA_DIR".to_string(),
            server.data_dir.display().to_string(),
        ),
        ("TESSERA_ISSUER".to_string(), ISSUER.to_string()),
    ];
    if let Some(url) = database {
        env.push(("TESSERA_DATABASE_URL".to_string(), url.to_string()));
    }
    let config = tessera::Config::load_from(None, &env)?;
    let store = tessera::app::open_store(&config)
        .await
        .context("opening the server's store")?;
    let spec = ClientSpec {
        name: Some("tessera-bench".into()),
        public: false,
        redirect_uris: Some(vec![REDIRECT_URI.into()]),
        grant_types: Some(
            ["authorization_code", "refresh_token", "client_credentials"]
                .map(String::from)
                .to_vec(),
        ),
        scopes: Some(
            ["openid", "profile", "email", "offline_access", "api.read"]
                .map(String::from)
                .to_vec(),
        ),
        ..ClientSpec::default()
    };
    let ctx = tessera::context::RequestContext::system();
    let by = tessera::audit::By {
        principal: &tessera::authz::Principal::System,
        ctx: &ctx,
    };
    let registered = clients::create(&store, spec, by, Clock::System.now())
        .await
        .map_err(|e| anyhow::anyhow!("registering the OAuth client: {e}"))?;
    store.close().await;
    let secret = registered
        .client_secret
        .context("a confidential client without a secret")?;
    let id = registered.client.client_id;
    let basic = HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    ))?;
    Ok(OAuthClient { id, basic })
}

/// A cookie jar that can be emptied (one browser, signed out between flows).
#[derive(Default)]
struct FlowJar(Mutex<Vec<(String, String)>>);

impl FlowJar {
    fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl reqwest::cookie::CookieStore for FlowJar {
    fn set_cookies(&self, headers: &mut dyn Iterator<Item = &HeaderValue>, _url: &reqwest::Url) {
        let mut jar = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for header in headers {
            let Some((name, value)) = header
                .to_str()
                .ok()
                .and_then(|s| s.split(';').next())
                .and_then(|pair| pair.split_once('='))
            else {
                continue;
            };
            let (name, value) = (name.trim().to_string(), value.trim().to_string());
            jar.retain(|(n, _)| *n != name);
            if !value.is_empty() {
                jar.push((name, value));
            }
        }
    }

    fn cookies(&self, _url: &reqwest::Url) -> Option<HeaderValue> {
        let jar = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if jar.is_empty() {
            return None;
        }
        let line = jar
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        HeaderValue::from_str(&line).ok()
    }
}

/// One browser doing complete code-flow logins in a loop.
pub(crate) struct CodeFlow {
    http: reqwest::Client,
    jar: Arc<FlowJar>,
    client_id: String,
    basic: HeaderValue,
    creds: Creds,
    /// Consent pages answered, shared by the flows of one load.
    consents: Arc<AtomicU64>,
}

impl CodeFlow {
    fn new(client: &OAuthClient, creds: Creds, consents: &Arc<AtomicU64>) -> anyhow::Result<Self> {
        let jar = Arc::new(FlowJar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(Arc::clone(&jar))
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            http,
            jar,
            client_id: client.id.clone(),
            basic: client.basic.clone(),
            creds,
            consents: Arc::clone(consents),
        })
    }

    /// A flow for the confidential client `id`/`secret` and the user `creds` (for the
    /// instruction counts, which register their own client).
    pub(crate) fn for_client(id: &str, secret: &str, creds: Creds) -> anyhow::Result<Self> {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        let client = OAuthClient {
            id: id.to_string(),
            basic: HeaderValue::from_str(&format!("Basic {basic}"))?,
        };
        Self::new(&client, creds, &Arc::new(AtomicU64::new(0)))
    }

    pub(crate) async fn step(&mut self, api: &Api) -> Result<(), String> {
        self.jar.clear();
        let verifier = tessera::crypto::new_token("");
        let challenge = tessera::crypto::token_hash(&verifier);
        let state = tessera::crypto::new_token("");
        let nonce = tessera::crypto::new_token("");
        let page = self
            .http
            .get(api.url("/oauth2/authorize"))
            .query(&[
                ("response_type", "code"),
                ("client_id", self.client_id.as_str()),
                ("redirect_uri", REDIRECT_URI),
                ("scope", "openid email"),
                ("state", state.as_str()),
                ("nonce", nonce.as_str()),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await
            .map_err(|e| format!("authorize: transport error: {e}"))?;
        let html = page_text("authorize", page).await?;
        let (csrf, request) = form_fields("login page", &html)?;
        let answer = self
            .http
            .post(api.url("/oauth2/login"))
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("request", request.as_str()),
                ("email", self.creds.email.as_str()),
                ("password", self.creds.password.as_str()),
            ])
            .send()
            .await
            .map_err(|e| format!("login: transport error: {e}"))?;
        let location = match redirect_location(&answer) {
            Some(l) => l,
            None => {
                let html = page_text("login", answer).await?;
                let (csrf, request) = form_fields("consent page", &html)?;
                self.consents.fetch_add(1, Ordering::Relaxed);
                let answer = self
                    .http
                    .post(api.url("/oauth2/consent"))
                    .form(&[
                        ("csrf_token", csrf.as_str()),
                        ("request", request.as_str()),
                        ("decision", "allow"),
                    ])
                    .send()
                    .await
                    .map_err(|e| format!("consent: transport error: {e}"))?;
                redirect_location(&answer).ok_or_else(|| {
                    format!("consent: HTTP {} instead of 303", answer.status().as_u16())
                })?
            }
        };
        let url =
            reqwest::Url::parse(&location).map_err(|e| format!("bad redirect {location}: {e}"))?;
        let param = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        if let Some(error) = param("error") {
            return Err(format!("authorization error {error}"));
        }
        if param("state").as_deref() != Some(state.as_str()) {
            return Err("redirect without the state".into());
        }
        let code = param("code").ok_or("redirect without a code")?;
        let body = send(
            self.http
                .post(api.url("/oauth2/token"))
                .header(AUTHORIZATION, self.basic.clone())
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", REDIRECT_URI),
                    ("code_verifier", verifier.as_str()),
                ]),
        )
        .await
        .map_err(|e| format!("token: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("token: bad response: {e}"))?;
        if v["access_token"].is_string() && v["id_token"].is_string() {
            Ok(())
        } else {
            Err("token: response without access_token or id_token".into())
        }
    }
}

async fn page_text(step: &str, response: reqwest::Response) -> Result<String, String> {
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("{step}: reading the page: {e}"))?;
    if status.as_u16() == 200 {
        Ok(text)
    } else {
        Err(format!("{step}: HTTP {}", status.as_u16()))
    }
}

fn redirect_location(response: &reqwest::Response) -> Option<String> {
    (response.status().as_u16() == 303)
        .then(|| response.headers().get(LOCATION)?.to_str().ok())
        .flatten()
        .map(str::to_string)
}

/// The `csrf_token` and `request` hidden fields of a hosted form.
fn form_fields(page: &str, html: &str) -> Result<(String, String), String> {
    let field =
        |name: &str| hidden_field(html, name).ok_or_else(|| format!("{page}: no {name} field"));
    Ok((field("csrf_token")?, field("request")?))
}

pub(crate) fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = start + html[start..].find('"')?;
    Some(unescape_html(&html[start..end]))
}

/// Undoes the template engine's HTML escaping (`&amp;` last).
fn unescape_html(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&#x2f;", "/")
        .replace("&#x2F;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The OAuth group's figures.
pub(crate) struct OAuthResults {
    loads: Vec<Load>,
    /// Consent pages answered per code-flow load (label, concurrency) → count, warm-up included.
    consents: Vec<(String, usize, u64)>,
}

pub(crate) async fn run(
    client: &reqwest::Client,
    options: &Options,
    _baselines: &Baselines,
    results: &mut Results,
) -> anyhow::Result<()> {
    let seconds = Length::Seconds(options.measure);
    let mut out = OAuthResults {
        loads: Vec::new(),
        consents: Vec::new(),
    };

    // RS256, cheap Argon2id: client credentials, introspection, discovery, the code flow.
    let server = Server::start("RS256, cheap Argon2id (OAuth)", &CHEAP_ARGON2).await?;
    let api = Api::new(client, &server);
    let oc = create_client(&server).await?;
    register_users(&api, FLOW_USERS).await?;
    for c in LEVELS {
        out.loads.push(
            run_load(
                "cc RS256",
                &server,
                &api,
                cc_tasks(&oc, c),
                options.warmup,
                seconds,
            )
            .await?,
        );
    }
    let token = client_credentials_token(&api, &oc).await?;
    let body = bytes::Bytes::from(format!("token={token}"));
    for c in LEVELS {
        let tasks = (0..c)
            .map(|_| Task::Introspect {
                authorization: oc.basic.clone(),
                body: body.clone(),
            })
            .collect();
        out.loads
            .push(run_load("introspect", &server, &api, tasks, options.warmup, seconds).await?);
    }
    for c in LEVELS {
        let tasks = (0..c).map(|_| Task::Discovery).collect();
        out.loads
            .push(run_load("discovery", &server, &api, tasks, options.warmup, seconds).await?);
    }
    for c in LEVELS {
        code_flow_load(
            "code flow cheap",
            &server,
            &api,
            &oc,
            c,
            FLOW_USERS,
            options,
            &mut out,
        )
        .await?;
    }
    results.logs.push(server.stop().await?);

    // ES256: client credentials.
    let server = Server::start("ES256 (OAuth)", &[("TESSERA_SIGNING_ALG", "ES256")]).await?;
    let api = Api::new(client, &server);
    let oc = create_client(&server).await?;
    for c in LEVELS {
        out.loads.push(
            run_load(
                "cc ES256",
                &server,
                &api,
                cc_tasks(&oc, c),
                options.warmup,
                seconds,
            )
            .await?,
        );
    }
    results.logs.push(server.stop().await?);

    // The default server (OWASP Argon2id): the code flow once, at concurrency 16.
    let server = Server::start("RS256 (default, OAuth code flow)", &[]).await?;
    let api = Api::new(client, &server);
    let oc = create_client(&server).await?;
    register_users(&api, 16).await?;
    code_flow_load(
        "code flow OWASP",
        &server,
        &api,
        &oc,
        16,
        16,
        options,
        &mut out,
    )
    .await?;
    results.logs.push(server.stop().await?);

    results.oauth = Some(out);
    Ok(())
}

fn cc_tasks(oc: &OAuthClient, c: usize) -> Vec<Task> {
    (0..c)
        .map(|_| Task::ClientCredentials {
            authorization: oc.basic.clone(),
        })
        .collect()
}

pub(crate) async fn client_credentials_token(
    api: &Api,
    oc: &OAuthClient,
) -> anyhow::Result<String> {
    let body = send(
        api.client
            .post(api.url("/oauth2/token"))
            .header(AUTHORIZATION, oc.basic.clone())
            .header(reqwest::header::CONTENT_TYPE, FORM)
            .body("grant_type=client_credentials"),
    )
    .await
    .map_err(|e| anyhow::anyhow!("client-credentials token: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    v["access_token"]
        .as_str()
        .map(str::to_string)
        .context("client-credentials response without access_token")
}

#[expect(clippy::too_many_arguments, reason = "scenario parameters")]
async fn code_flow_load(
    label: &str,
    server: &Server,
    api: &Api,
    oc: &OAuthClient,
    c: usize,
    users: usize,
    options: &Options,
    out: &mut OAuthResults,
) -> anyhow::Result<()> {
    let consents = Arc::new(AtomicU64::new(0));
    let tasks = (0..c)
        .map(|i| {
            CodeFlow::new(oc, Creds::user(i % users), &consents)
                .map(|f| Task::CodeFlow(Box::new(f)))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    progress(&format!("{label}: {c} browsers, each its own cookie jar"));
    let load = run_load(
        label,
        server,
        api,
        tasks,
        options.warmup,
        Length::Seconds(options.measure),
    )
    .await?;
    out.consents
        .push((label.to_string(), c, consents.load(Ordering::Relaxed)));
    out.loads.push(load);
    Ok(())
}

pub(crate) fn loads(r: &Results) -> impl Iterator<Item = &Load> {
    r.oauth.iter().flat_map(|o| o.loads.iter())
}

pub(crate) fn render(rep: &mut Report, r: &Results, b: &Baselines, hw: &Hardware) {
    let Some(o) = &r.oauth else { return };
    let rs256 = b
        .signing
        .iter()
        .find(|(alg, _, _)| *alg == "RS256")
        .map_or(f64::NAN, |(_, sign, _)| 1e6 / sign);
    rep.section(&format!(
        "OAuth 2.0 / OpenID Connect (server in a child process; {} cores shared with the load generator)",
        hw.cores
    ));
    rep.line(&format!(
        "RS256 signing limit (baseline above): {rs256:.0} signatures per CPU-second; 80% = {:.0} per CPU-second (the issue estimates ~1000).",
        rs256 * 0.8
    ));
    rep.line("cc = POST /oauth2/token grant_type=client_credentials with HTTP Basic (JWT access token signed per request).");
    rep.line("introspect = POST /oauth2/introspect of a live client-credentials JWT, HTTP Basic (answers active:true).");
    rep.line("discovery = GET /.well-known/openid-configuration.");
    rep.line("code flow = one whole login: authorize (PKCE S256) -> login page -> POST login (+ consent the first time) -> 303 ->");
    rep.line("  token (authorization_code + code_verifier); 4-5 requests per flow, counted once. \"code flow cheap\" runs on a server with");
    rep.line("  CHEAP Argon2id (m=8 KiB, t=1; otherwise it measures Argon2 only); \"code flow OWASP\" on the default server (m=19456 KiB, t=2).");
    rep.line("Targets are per second of server CPU and apply at every concurrency (node-oidc-provider 9.13 on this hardware, per the");
    rep.line("issue: ~640 cc RS256, ~1400 cc ES256, ~2550 introspections, ~4000 discovery per core-second).");
    rep.load_header();
    for load in &o.loads {
        let per_cpu = load.ok_per_server_cpu_second();
        let target = match load.label.as_str() {
            "cc RS256" => {
                let ratio = per_cpu / rs256 * 100.0;
                Some((format!(">=80% RS256: {ratio:.0}%"), ratio >= 80.0))
            }
            "cc ES256" => Some((">= 7500 /CPU-s".to_string(), per_cpu >= 7500.0)),
            "introspect" => Some((">= 10000 /CPU-s".to_string(), per_cpu >= 10_000.0)),
            "discovery" => Some((">= 30000 /CPU-s".to_string(), per_cpu >= 30_000.0)),
            _ => None,
        };
        rep.load_row(load, target);
    }
    for (label, max_ms) in [("cc ES256", 25.0), ("introspect", 10.0)] {
        if let Some(load) = o
            .loads
            .iter()
            .find(|l| l.label == label && l.concurrency == 64)
        {
            let p99 = load.stats.percentile_ms(0.99);
            rep.check(
                &format!("{label} p99 at concurrency 64"),
                &format!("{p99:.2} ms"),
                &format!("<= {max_ms} ms"),
                p99 <= max_ms,
            );
        }
    }
    for (label, c, n) in &o.consents {
        rep.line(&format!(
            "{label} x{c}: {n} consent pages answered (first flow of each user, warm-up included); other flows skipped consent."
        ));
    }
    rep.line("No target in the issue for the code flow.");
}
