//! Issue 13: what a sign-in through another identity provider costs Tessera, without the
//! upstream's own time. Two servers (cheap Argon2id): an upstream Tessera on a port chosen
//! ahead (its issuer must be its address, for discovery to validate) and the downstream under
//! test, with the upstream as provider `up` (just-in-time creation on).
//!
//! Each flow is the whole browser dance with a fresh cookie jar: downstream
//! `/oauth2/authorize?idp=up` → `/auth/federated/up/start` → upstream authorize, sign-in form
//! and (once per user) consent → downstream callback (code redeemed at the upstream, its ID token
//! checked against the cached JWKS) → downstream consent the first time → the code → downstream
//! `/oauth2/token`. The CPU of each process is read from `/proc` around the measured window:
//! the downstream's per flow is what federation costs Tessera; the upstream's is a hosted
//! password sign-in (login, consent, token) on the same build, the natural yardstick.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use reqwest::header::LOCATION;
use tessera::oauth::clients::{self, ClientSpec};

use crate::{
    Baselines, CHEAP_ARGON2, ISSUER, Options, Report, Results, Server, process_cpu, progress,
};

const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";
const PASSWORD: &str = "bench-federation-password-correct-horse";
const VERIFIER: &str = "bench-federation-code-verifier-0123456789-abcdefghijklmnop";
const CONCURRENCY: usize = 4;
const USERS: usize = 16;

pub struct FederationResults {
    pub flows: u64,
    pub errors: u64,
    pub seconds: f64,
    pub downstream_cpu: Duration,
    pub upstream_cpu: Duration,
}

/// The store of a bench server, opened from this process.
async fn store_of(server: &Server, issuer: &str) -> anyhow::Result<tessera::store::Store> {
    let env = [
        (
            "TESSERA_DATA_DIR".to_string(),
            server.data_dir.display().to_string(),
        ),
        ("TESSERA_ISSUER".to_string(), issuer.to_string()),
    ];
    let config = tessera::Config::load_from(None, &env)?;
    tessera::app::open_store(&config).await
}

async fn client_in(
    store: &tessera::store::Store,
    redirect: &str,
    first_party: bool,
) -> anyhow::Result<(String, String)> {
    let spec = ClientSpec {
        name: Some("tessera-bench federation".into()),
        redirect_uris: Some(vec![redirect.into()]),
        scopes: Some(["openid", "email", "profile"].map(String::from).to_vec()),
        first_party: Some(first_party),
        ..ClientSpec::default()
    };
    let ctx = tessera::context::RequestContext::system();
    let by = tessera::audit::By::system(&ctx);
    let now = tessera::clock::Clock::System.now();
    let r = clients::create(store, spec, by, now)
        .await
        .map_err(|e| anyhow::anyhow!("registering a client: {e}"))?;
    let secret = r
        .client_secret
        .context("a confidential client has a secret")?;
    Ok((r.client.client_id, secret))
}

pub async fn run(options: &Options, results: &mut Results) -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let up_issuer = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let mut env: Vec<(&str, &str)> = CHEAP_ARGON2.to_vec();
    env.extend([
        ("TESSERA_LISTEN", listen.as_str()),
        ("TESSERA_ISSUER", up_issuer.as_str()),
    ]);
    let upstream = Server::start("federation upstream, cheap Argon2id", &env).await?;
    let downstream = Server::start("federation downstream, cheap Argon2id", &CHEAP_ARGON2).await?;

    // Upstream: verified users, and the downstream as a confidential client.
    let up_store = store_of(&upstream, &up_issuer).await?;
    let callback = format!("{ISSUER}/auth/federated/up/callback");
    let (up_client, up_secret) = client_in(&up_store, &callback, false).await?;
    let passwords = tessera::passwords::Passwords::new(&tessera::config::PasswordConfig {
        argon2_memory_kib: 8,
        argon2_iterations: 1,
        ..Default::default()
    })?;
    let hash = passwords
        .hash(PASSWORD)
        .await
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    let now = tessera::clock::Clock::System.now();
    for i in 0..USERS {
        tessera::accounts::create(&up_store, &email(i), Some(&hash), Some(now), &[], None, now)
            .await
            .map_err(|e| anyhow::anyhow!("creating an upstream user: {e}"))?;
    }
    // Downstream: an administrator adds the provider through the admin API (the secret is
    // sealed under the downstream's master key), and the application signing in.
    let down_store = store_of(&downstream, ISSUER).await?;
    let (app_client, app_secret) = client_in(&down_store, REDIRECT_URI, true).await?;
    tessera::accounts::create(
        &down_store,
        "bench-admin@example.com",
        Some(&hash),
        Some(now),
        &[tessera::authz::Role::Admin],
        None,
        now,
    )
    .await
    .map_err(|e| anyhow::anyhow!("creating the administrator: {e}"))?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let login: serde_json::Value = http
        .post(format!("{}/auth/login", downstream.base))
        .json(&serde_json::json!({"email": "bench-admin@example.com", "password": PASSWORD}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let admin = login["access_token"].as_str().context("an admin token")?;
    http.post(format!("{}/admin/idps", downstream.base))
        .bearer_auth(admin)
        .json(&serde_json::json!({
            "name": "up", "issuer": up_issuer, "client_id": up_client,
            "client_secret": up_secret, "jit": true,
        }))
        .send()
        .await?
        .error_for_status()
        .context("adding the provider")?;

    let flow = Arc::new(Flow {
        down: downstream.base.clone(),
        up: upstream.base.clone(),
        client_id: app_client,
        client_secret: app_secret,
    });
    // Warm-up: every user's first sign-in (account creation, both consents), then the window.
    progress("federation: first sign-ins");
    for i in 0..USERS {
        flow.sign_in(i)
            .await
            .with_context(|| format!("first sign-in of user {i}"))?;
    }
    let window = options.measure;
    progress(&format!(
        "federation: {CONCURRENCY} browsers for {:.0} s",
        window.as_secs_f64()
    ));
    let (flows, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let down_pid = downstream.pid.to_string();
    let up_pid = upstream.pid.to_string();
    let (down0, up0, started) = (
        process_cpu(&down_pid)?,
        process_cpu(&up_pid)?,
        Instant::now(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..CONCURRENCY {
        let (flow, flows, errors) = (Arc::clone(&flow), Arc::clone(&flows), Arc::clone(&errors));
        tasks.spawn(async move {
            let mut i = t;
            while started.elapsed() < window {
                match flow.sign_in(i % USERS).await {
                    Ok(()) => flows.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
                i += CONCURRENCY;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let seconds = started.elapsed().as_secs_f64();
    let downstream_cpu = process_cpu(&down_pid)?.saturating_sub(down0);
    let upstream_cpu = process_cpu(&up_pid)?.saturating_sub(up0);
    results.logs.push(downstream.stop().await?);
    results.logs.push(upstream.stop().await?);
    results.federation = Some(FederationResults {
        flows: flows.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        seconds,
        downstream_cpu,
        upstream_cpu,
    });
    Ok(())
}

fn email(i: usize) -> String {
    format!("bench-fed-{i}@example.com")
}

struct Flow {
    down: String,
    up: String,
    client_id: String,
    client_secret: String,
}

impl Flow {
    /// One sign-in of user `i` through the upstream, with a fresh cookie jar, ending with the
    /// downstream's token response.
    async fn sign_in(&self, i: usize) -> anyhow::Result<()> {
        let browser = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        // RFC 7636 S256: base64url of SHA-256 of the verifier.
        let challenge = tessera::crypto::token_hash(VERIFIER);
        let mut url = format!(
            "{}/oauth2/authorize?response_type=code&client_id={}&redirect_uri={REDIRECT_URI}&scope=openid%20email&state=b&code_challenge={challenge}&code_challenge_method=S256&idp=up",
            self.down, self.client_id
        );
        let mut res = browser.get(&url).send().await?;
        for _ in 0..12 {
            if res.status().is_redirection() {
                let location = res
                    .headers()
                    .get(LOCATION)
                    .context("a redirect")?
                    .to_str()?;
                let next = reqwest::Url::parse(&url)?.join(location)?.to_string();
                // The upstream sends the browser to the downstream's configured issuer.
                url = next.replacen(ISSUER, &self.down, 1);
                if url.starts_with(REDIRECT_URI) {
                    return self.redeem(&browser, &url).await;
                }
                res = browser.get(&url).send().await?;
                continue;
            }
            let status = res.status();
            let html = res.text().await?;
            let origin = if url.starts_with(&self.up) {
                &self.up
            } else {
                &self.down
            };
            let (action, mut form) = if html.contains(r#"action="/oauth2/login""#) {
                (
                    "login",
                    vec![("email", email(i)), ("password", PASSWORD.to_string())],
                )
            } else if html.contains(r#"action="/oauth2/consent""#) {
                ("consent", vec![("decision", "allow".to_string())])
            } else {
                anyhow::bail!("stopped at {url} ({status})");
            };
            form.push(("csrf_token", field(&html, "csrf_token")?));
            form.push(("request", field(&html, "request")?));
            res = browser
                .post(format!("{origin}/oauth2/{action}"))
                .form(&form)
                .send()
                .await?;
            url = format!("{origin}/oauth2/{action}");
        }
        anyhow::bail!("too many steps")
    }

    async fn redeem(&self, browser: &reqwest::Client, back: &str) -> anyhow::Result<()> {
        let code = reqwest::Url::parse(back)?
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .context("a code")?;
        browser
            .post(format!("{}/oauth2/token", self.down))
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}

fn field(html: &str, name: &str) -> anyhow::Result<String> {
    crate::oauth::hidden_field(html, name).with_context(|| format!("no hidden field {name}"))
}

pub fn render(rep: &mut Report, r: &Results, b: &Baselines) {
    let Some(f) = &r.federation else {
        return;
    };
    rep.section("Federation: a sign-in through an upstream OpenID Connect provider (cheap Argon2id servers)");
    let per = |cpu: Duration| cpu.as_secs_f64() * 1e6 / (f.flows.max(1) as f64);
    let (down, up) = (per(f.downstream_cpu), per(f.upstream_cpu));
    let rs256 = b
        .signing
        .iter()
        .find(|(alg, _, _)| *alg == "RS256")
        .map_or(0.0, |(_, sign, _)| *sign);
    rep.line(&format!(
        "{} flows in {:.1} s at concurrency {CONCURRENCY} ({} failed): {:.1} flows/s",
        f.flows,
        f.seconds,
        f.errors,
        f.flows as f64 / f.seconds.max(1e-9)
    ));
    rep.line(&format!(
        "Tessera (downstream) CPU per federated sign-in: {down:.0} µs = {:.0} sign-ins per CPU-second",
        1e6 / down.max(1e-9)
    ));
    rep.line(&format!(
        "Upstream CPU per sign-in (a hosted password sign-in: login, consent, token): {up:.0} µs (the yardstick)"
    ));
    rep.line(&format!(
        "Limit in the same run: one RS256 signature costs {rs256:.0} µs; the downstream signs an access and an ID token per flow and verifies one upstream RS256 ID token"
    ));
}
