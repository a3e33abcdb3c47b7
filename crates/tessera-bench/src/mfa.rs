//! Second factors (issue 12): what one TOTP check and one WebAuthn assertion verification cost
//! in this process (the limits), and what a second step adds to a password login on a server
//! with cheap Argon2id (so that the hash does not hide it), next to a passwordless passkey
//! sign-in.
//!
//! Scenarios at concurrency 16:
//! - `login`: `POST /auth/login` of users without a factor (a token pair);
//! - `login + TOTP`: `POST /auth/login` of a user with an authenticator app (`mfa_required`),
//!   then `POST /auth/mfa` with the app's code (a token pair). Each enrolled user signs in once
//!   (a code is accepted once per 30-second step), so the run enrols more users than it needs;
//! - `login + passkey`: the same with a passkey (`webauthn-authenticator-rs`' soft passkey in
//!   the load generator answers the challenge's options);
//! - `passkey`: `POST /auth/passkey/start`, the soft passkey signs, `POST /auth/passkey/finish`
//!   (no password: no Argon2id at all).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use tokio::task::JoinSet;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use crate::{
    Api, CHEAP_ARGON2, Creds, Length, Load, Options, Report, Results, Server, Task, USERS,
    process_cpu, progress, register_users, run_load, send,
};

const CONCURRENCY: usize = 16;

pub struct MfaResults {
    /// TOTP checks of a wrong code (three HMAC-SHA-1, the most a check does) per CPU-second.
    pub checks_per_cpu_second: f64,
    /// WebAuthn assertion verifications (ES256, webauthn-rs) per CPU-second.
    pub assertions_per_cpu_second: f64,
    pub login: Load,
    pub mfa_login: Load,
    pub passkey_mfa_login: Load,
    pub passkey_login: Load,
    pub enrolled: usize,
}

/// A user with a soft passkey (its signing happens in the load generator).
pub struct Keyed {
    login_body: String,
    user_handle: String,
    credential_id: String,
    key: SoftPasskey,
}

/// Users with passkeys, reused (a passkey signs in any number of times): a task takes one,
/// signs, and gives it back.
pub type KeyRing = Arc<Mutex<VecDeque<Keyed>>>;

/// One enrolled user, signed in at most once.
pub struct Enrolled {
    login_body: String,
    secret: Vec<u8>,
}

/// Enrolled users not yet used, shared by the load tasks.
pub type Queue = Arc<Mutex<VecDeque<Enrolled>>>;

pub async fn run(
    client: &reqwest::Client,
    options: &Options,
    results: &mut Results,
) -> anyhow::Result<()> {
    let checks_per_cpu_second = totp_limit()?;
    let assertions_per_cpu_second = webauthn_limit()?;
    let server = Server::start("second factors, cheap Argon2id", &CHEAP_ARGON2).await?;
    let api = Api::new(client, &server);
    register_users(&api, USERS).await?;
    let seconds = Length::Seconds(options.measure);
    let tasks = (0..CONCURRENCY)
        .map(|i| Task::Login {
            body: Creds::user(i % USERS).login_body(),
        })
        .collect();
    let login = run_load("login", &server, &api, tasks, options.warmup, seconds).await?;
    // Enough users for the same rate with one more request each, whatever the window.
    let wall = (options.warmup + options.measure).as_secs_f64();
    let needed = (login.ok_per_second() * wall * 1.5) as usize + 200;
    let queue: Queue = Arc::new(Mutex::new(enrol(&api, needed).await?));
    let tasks = (0..CONCURRENCY)
        .map(|_| Task::MfaLogin(Arc::clone(&queue)))
        .collect();
    let mfa_login = run_load(
        "login + TOTP",
        &server,
        &api,
        tasks,
        options.warmup,
        seconds,
    )
    .await?;
    let ring: KeyRing = Arc::new(Mutex::new(enrol_passkeys(&api, CONCURRENCY * 4).await?));
    let tasks = (0..CONCURRENCY)
        .map(|_| Task::PasskeyMfaLogin(Arc::clone(&ring)))
        .collect();
    let passkey_mfa_login = run_load(
        "login + passkey",
        &server,
        &api,
        tasks,
        options.warmup,
        seconds,
    )
    .await?;
    let tasks = (0..CONCURRENCY)
        .map(|_| Task::PasskeyLogin(Arc::clone(&ring)))
        .collect();
    let passkey_login = run_load("passkey", &server, &api, tasks, options.warmup, seconds).await?;
    results.logs.push(server.stop().await?);
    results.mfa = Some(MfaResults {
        checks_per_cpu_second,
        assertions_per_cpu_second,
        login,
        mfa_login,
        passkey_mfa_login,
        passkey_login,
        enrolled: needed,
    });
    Ok(())
}

/// The in-process limit: checks of a code that matches none of the three steps.
fn totp_limit() -> anyhow::Result<f64> {
    progress("baseline: TOTP checks");
    let secret = [7u8; 20];
    let now = 1_700_000_000;
    let wrong = (0..1_000_000)
        .map(|c| format!("{c:06}"))
        .find(|c| tessera::mfa::check_totp(&secret, c, now).is_none())
        .context("every code matched")?;
    let n = 2_000_000;
    let before = process_cpu("self")?;
    for _ in 0..n {
        std::hint::black_box(tessera::mfa::check_totp(&secret, &wrong, now));
    }
    let cpu = process_cpu("self")?.saturating_sub(before);
    Ok(f64::from(n) / cpu.as_secs_f64().max(1e-9))
}

/// The in-process limit: verifications of one soft passkey's assertion against its ceremony
/// (what `POST /auth/mfa` and `/auth/passkey/finish` do besides reading and writing rows).
fn webauthn_limit() -> anyhow::Result<f64> {
    progress("baseline: WebAuthn assertion verifications");
    let rp = tessera::mfa::webauthn::relying_party(crate::ISSUER)
        .context("the bench issuer is no WebAuthn relying party")?;
    let origin = url::Url::parse(crate::ISSUER)?;
    let user = uuid::Uuid::new_v4();
    let (options, registration) = rp.start_passkey_registration(user, "bench", "bench", None)?;
    let mut key = SoftPasskey::new(true);
    let credential = key
        .do_registration(origin.clone(), options)
        .map_err(|e| anyhow::anyhow!("soft passkey registration: {e:?}"))?;
    let passkey = rp.finish_passkey_registration(&credential, &registration)?;
    let (options, authentication) = rp.start_passkey_authentication(&[passkey])?;
    let assertion = key
        .do_authentication(origin, options)
        .map_err(|e| anyhow::anyhow!("soft passkey assertion: {e:?}"))?;
    rp.finish_passkey_authentication(&assertion, &authentication)
        .context("the assertion does not verify")?;
    let n = 20_000;
    let before = process_cpu("self")?;
    for _ in 0..n {
        std::hint::black_box(rp.finish_passkey_authentication(&assertion, &authentication))
            .context("the assertion stopped verifying")?;
    }
    let cpu = process_cpu("self")?.saturating_sub(before);
    Ok(f64::from(n) / cpu.as_secs_f64().max(1e-9))
}

/// Registers `n` users, each with a soft passkey (8 at a time).
async fn enrol_passkeys(api: &Api, n: usize) -> anyhow::Result<VecDeque<Keyed>> {
    progress(&format!("enrolling {n} users with a passkey"));
    let mut set = JoinSet::new();
    let mut out = VecDeque::with_capacity(n);
    for i in 0..n {
        if set.len() >= 8 {
            out.push_back(set.join_next().await.context("enrolment")???);
        }
        let api = api.clone();
        set.spawn(async move { enrol_passkey(&api, i).await });
    }
    while let Some(r) = set.join_next().await {
        out.push_back(r??);
    }
    Ok(out)
}

async fn enrol_passkey(api: &Api, i: usize) -> anyhow::Result<Keyed> {
    let creds = Creds {
        email: format!("bench-passkey-{i}@example.com"),
        password: format!("bench-passkey-password-{i}-correct-horse"),
    };
    api.register(&creds).await?;
    let pair = crate::parse_pair(
        &api.post_json("/auth/login", creds.login_body())
            .await
            .map_err(|e| anyhow::anyhow!("login: {e}"))?,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let bearer = format!("Bearer {}", pair.access);
    let me: serde_json::Value = serde_json::from_slice(
        &send(
            api.client
                .get(api.url("/identity/me"))
                .header(AUTHORIZATION, &bearer),
        )
        .await
        .map_err(|e| anyhow::anyhow!("me: {e}"))?,
    )?;
    let user_id = uuid::Uuid::parse_str(me["id"].as_str().context("no user id")?)?;
    let started: serde_json::Value = serde_json::from_slice(
        &send(
            api.client
                .post(api.url("/identity/mfa/webauthn/register/start"))
                .header(AUTHORIZATION, &bearer)
                .json(&serde_json::json!({})),
        )
        .await
        .map_err(|e| anyhow::anyhow!("registration start: {e}"))?,
    )?;
    let mut key = SoftPasskey::new(true);
    let credential = key
        .do_registration(
            url::Url::parse(crate::ISSUER)?,
            serde_json::from_value(started["options"].clone())?,
        )
        .map_err(|e| anyhow::anyhow!("soft passkey registration: {e:?}"))?;
    let credential_id = credential.id.clone();
    send(
        api.client
            .post(api.url("/identity/mfa/webauthn/register/finish"))
            .header(AUTHORIZATION, &bearer)
            .json(
                &serde_json::json!({ "ceremony": started["ceremony"], "credential": credential }),
            ),
    )
    .await
    .map_err(|e| anyhow::anyhow!("registration finish: {e}"))?;
    Ok(Keyed {
        login_body: creds.login_body(),
        user_handle: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(user_id.as_bytes()),
        credential_id,
        key,
    })
}

/// Signs `options` with a user's passkey from the ring (given back after).
fn sign(
    ring: &KeyRing,
    pick: Option<Keyed>,
    options: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let mut user = match pick {
        Some(u) => u,
        None => ring
            .lock()
            .map_err(|_| "the ring is poisoned".to_string())?
            .pop_front()
            .ok_or("no passkey user free: enrol more")?,
    };
    let mut options = options.clone();
    options["publicKey"]["allowCredentials"] =
        serde_json::json!([{ "type": "public-key", "id": user.credential_id }]);
    let signed = serde_json::from_value(options)
        .map_err(|e| format!("options: {e}"))
        .and_then(|o| {
            let origin = url::Url::parse(crate::ISSUER).map_err(|e| e.to_string())?;
            user.key
                .do_authentication(origin, o)
                .map_err(|e| format!("soft passkey: {e:?}"))
        });
    let handle = user.user_handle.clone();
    ring.lock()
        .map_err(|_| "the ring is poisoned".to_string())?
        .push_back(user);
    let mut assertion = serde_json::to_value(signed?).map_err(|e| e.to_string())?;
    assertion["response"]["userHandle"] = serde_json::json!(handle);
    Ok(assertion)
}

/// One `passkey` iteration: start, sign, finish (a token pair, no password).
pub async fn passkey_login(api: &Api, ring: &KeyRing) -> Result<(), String> {
    let started: serde_json::Value =
        serde_json::from_slice(&send(api.client.post(api.url("/auth/passkey/start"))).await?)
            .map_err(|e| e.to_string())?;
    let assertion = sign(ring, None, &started["options"])?;
    let body = serde_json::json!({ "ceremony": started["ceremony"], "assertion": assertion });
    api.post_json("/auth/passkey/finish", body.to_string())
        .await
        .map(drop)
}

/// One `login + passkey` iteration: the password step's `mfa_required` with WebAuthn options,
/// then the assertion.
pub async fn passkey_mfa_login(api: &Api, ring: &KeyRing) -> Result<(), String> {
    let user = ring
        .lock()
        .map_err(|_| "the ring is poisoned".to_string())?
        .pop_front()
        .ok_or("no passkey user free: enrol more")?;
    let response = api
        .client
        .post(api.url("/auth/login"))
        .header(CONTENT_TYPE, "application/json")
        .body(user.login_body.clone())
        .send()
        .await;
    let answer = match response {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.bytes().await.unwrap_or_default();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            (status == 401 && v["mfa_token"].is_string())
                .then_some(v)
                .ok_or(format!("HTTP {status}"))
        }
        Err(e) => Err(format!("transport error: {e}")),
    };
    let v = match answer {
        Ok(v) => v,
        Err(e) => {
            if let Ok(mut r) = ring.lock() {
                r.push_back(user);
            }
            return Err(e);
        }
    };
    let assertion = sign(ring, Some(user), &v["webauthn"])?;
    let body = serde_json::json!({
        "mfa_token": v["mfa_token"],
        "method": "webauthn",
        "assertion": assertion,
    });
    api.post_json("/auth/mfa", body.to_string()).await.map(drop)
}

/// The code an app with `secret` shows one step from now (one step of skew is accepted, and it
/// is later than the step the enrolment used).
fn next_code(secret: &[u8]) -> String {
    let totp = totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::new(secret.to_vec().into_boxed_slice()))
        .build()
        .expect("a 160-bit secret builds");
    let now = tessera::clock::Clock::System.now();
    totp.generate(u64::try_from(now + 30).unwrap_or_default())
        .to_string()
}

/// Registers `n` users and enrols and confirms an authenticator app for each (32 at a time).
async fn enrol(api: &Api, n: usize) -> anyhow::Result<VecDeque<Enrolled>> {
    progress(&format!("enrolling {n} users with an authenticator app"));
    let started = Instant::now();
    let mut set = JoinSet::new();
    let mut out = VecDeque::with_capacity(n);
    for i in 0..n {
        if set.len() >= 32 {
            out.push_back(set.join_next().await.context("enrolment")???);
        }
        let api = api.clone();
        set.spawn(async move { enrol_one(&api, i).await });
    }
    while let Some(r) = set.join_next().await {
        out.push_back(r??);
    }
    progress(&format!(
        "enrolled {n} in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(out)
}

async fn enrol_one(api: &Api, i: usize) -> anyhow::Result<Enrolled> {
    let creds = Creds {
        email: format!("bench-mfa-{i}@example.com"),
        password: format!("bench-mfa-password-{i}-correct-horse"),
    };
    api.register(&creds).await?;
    let pair = crate::parse_pair(
        &api.post_json("/auth/login", creds.login_body())
            .await
            .map_err(|e| anyhow::anyhow!("login: {e}"))?,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let bearer = format!("Bearer {}", pair.access);
    let started = send(
        api.client
            .post(api.url("/identity/mfa/totp"))
            .header(AUTHORIZATION, &bearer)
            .header(CONTENT_TYPE, "application/json")
            .body("{}"),
    )
    .await
    .map_err(|e| anyhow::anyhow!("enrolling: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&started)?;
    let (id, secret) = (
        v["id"].as_str().context("no factor id")?,
        v["secret"].as_str().context("no secret")?,
    );
    let secret = totp_rs::Secret::try_from_base32(secret)
        .map_err(|e| anyhow::anyhow!("secret: {e:?}"))?
        .as_bytes()
        .to_vec();
    // The current step confirms; the sign-in later uses the next one.
    let totp = totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::new(secret.clone().into_boxed_slice()))
        .build()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let now = tessera::clock::Clock::System.now();
    let code = totp.generate(u64::try_from(now)?).to_string();
    send(
        api.client
            .post(api.url(&format!("/identity/mfa/totp/{id}/confirm")))
            .header(AUTHORIZATION, &bearer)
            .json(&serde_json::json!({ "code": code })),
    )
    .await
    .map_err(|e| anyhow::anyhow!("confirming: {e}"))?;
    Ok(Enrolled {
        login_body: creds.login_body(),
        secret,
    })
}

/// One `login + TOTP` iteration: the password step's `mfa_required`, then the code.
pub async fn mfa_login(api: &Api, queue: &Queue) -> Result<(), String> {
    let user = queue
        .lock()
        .map_err(|_| "the queue is poisoned".to_string())?
        .pop_front()
        .ok_or("out of enrolled users: enrol more")?;
    let response = api
        .client
        .post(api.url("/auth/login"))
        .header(CONTENT_TYPE, "application/json")
        .body(user.login_body)
        .send()
        .await
        .map_err(|e| format!("transport error: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(token) = v["mfa_token"].as_str().filter(|_| status == 401) else {
        return Err(format!("HTTP {status} {}", v["error"]));
    };
    let body = serde_json::json!({
        "mfa_token": token,
        "method": "totp",
        "code": next_code(&user.secret),
    });
    api.post_json("/auth/mfa", body.to_string()).await.map(drop)
}

pub fn loads(r: &Results) -> impl Iterator<Item = &Load> {
    r.mfa.iter().flat_map(|m| {
        [
            &m.login,
            &m.mfa_login,
            &m.passkey_mfa_login,
            &m.passkey_login,
        ]
    })
}

pub fn render(rep: &mut Report, r: &Results) {
    let Some(m) = &r.mfa else {
        return;
    };
    rep.section("Second factors: TOTP and passkeys (cheap Argon2id server, so the hash does not hide the step)");
    rep.line(&format!(
        "Limits, in this process: {:.0} TOTP checks per CPU-second (a wrong code: three HMAC-SHA-1); {:.0} WebAuthn assertion verifications per CPU-second (ES256, webauthn-rs)",
        m.checks_per_cpu_second, m.assertions_per_cpu_second
    ));
    rep.load_header();
    rep.load_row(&m.login, None);
    rep.load_row(&m.mfa_login, None);
    rep.load_row(&m.passkey_mfa_login, None);
    rep.load_row(&m.passkey_login, None);
    let (plain, mfa) = (
        m.login.ok_per_server_cpu_second(),
        m.mfa_login.ok_per_server_cpu_second(),
    );
    let added_us = 1e6 / mfa.max(1e-9) - 1e6 / plain.max(1e-9);
    rep.line(&format!(
        "The second step adds {added_us:.0} µs of server CPU per login ({:.0}% of a password login's); {} users enrolled, each signed in once.",
        added_us / (1e6 / plain.max(1e-9)) * 100.0,
        m.enrolled
    ));
    let with_key = m.passkey_mfa_login.ok_per_server_cpu_second();
    let added_key = 1e6 / with_key.max(1e-9) - 1e6 / plain.max(1e-9);
    rep.line(&format!(
        "A passkey as the second step adds {added_key:.0} µs of server CPU per login ({:.0}% of a password login's); a passwordless passkey sign-in costs {:.0} µs.",
        added_key / (1e6 / plain.max(1e-9)) * 100.0,
        1e6 / m.passkey_login.ok_per_server_cpu_second().max(1e-9)
    ));
}
