//! Abuse protection: rate limits, brute-force lockout, key lifecycle, CORS, trusted proxies.
//! The service trusts 127.0.0.1 as a proxy here, so `X-Forwarded-For` plays the client IP.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera::keys::{Alg, Keys, PREPUBLISH};

use crate::helpers::{Backend, PASSWORD, TestApp, Tokens};
use crate::on_both_backends;

on_both_backends!(
    credential_stuffing_from_one_ip_is_throttled_and_users_elsewhere_still_log_in,
    password_spraying_from_many_ips_trips_per_account_limits_but_spares_known_devices,
    lockout_backs_off_with_exact_retry_after_and_reveals_nothing,
    oauth_token_endpoint_is_throttled_per_client_with_an_rfc_6749_body,
    scheduled_rotation_prepublishes_keys_and_revocation_is_immediate,
    master_key_rotation_reseals_every_secret,
    cors_is_off_by_default_and_allows_only_configured_origins,
    forwarded_for_is_believed_only_from_trusted_proxies,
);

async fn behind_proxy(b: Backend) -> TestApp {
    TestApp::spawn_with(b, |c| c.trusted_proxies = "127.0.0.1".into()).await
}

async fn login_from(
    app: &TestApp,
    ip: &str,
    email: &str,
    password: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let res = app
        .client
        .post(format!("{}/auth/login", app.base))
        .header("x-forwarded-for", ip)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    (status, headers, res.json().await.unwrap_or(Value::Null))
}

/// Creates users directly (registration has its own per-IP limit).
async fn users(app: &TestApp, n: usize) -> Vec<String> {
    let hash = app.state.passwords.hash(PASSWORD).await.unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let email = format!("user{i}@example.com");
        tessera::accounts::create(&app.state.store, &email, Some(&hash), Some(1), &[], None, 1)
            .await
            .unwrap();
        out.push(email);
    }
    out
}

fn without_correlation(mut v: Value) -> Value {
    v.as_object_mut().map(|o| o.remove("correlation_id"));
    v
}

async fn credential_stuffing_from_one_ip_is_throttled_and_users_elsewhere_still_log_in(b: Backend) {
    let app = behind_proxy(b).await;
    let accounts = users(&app, 100).await;
    let mut statuses = std::collections::BTreeMap::new();
    for attempt in 0..1000 {
        let email = &accounts[attempt % accounts.len()];
        let (status, headers, body) = login_from(&app, "203.0.113.66", email, "Winter2026!").await;
        assert!(
            status.is_client_error(),
            "attempt {attempt}: {status} {body}"
        );
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(
                headers["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    >= 1
            );
            assert_eq!(body["error"], "too_many_requests");
        }
        *statuses.entry(status.as_u16()).or_insert(0) += 1;
    }
    let limit = app.config.rate_limit.login_ip.burst;
    assert_eq!(
        statuses.get(&401).copied(),
        Some(limit),
        "{statuses:?}: only the per-IP burst reaches a password check"
    );
    assert_eq!(
        statuses.get(&429).copied(),
        Some(1000 - limit),
        "{statuses:?}"
    );
    // A legitimate user on another IP is not affected.
    let (status, _, body) = login_from(&app, "198.51.100.7", &accounts[0], PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn password_spraying_from_many_ips_trips_per_account_limits_but_spares_known_devices(
    b: Backend,
) {
    let app = behind_proxy(b).await;
    let accounts = users(&app, 20).await;
    // Ada signed in from home before the attack: a known device.
    assert_eq!(
        login_from(&app, "192.0.2.10", &accounts[0], PASSWORD)
            .await
            .0,
        StatusCode::OK
    );
    let mut throttled = 0;
    for ip in 0..50 {
        for email in &accounts {
            let (status, _, body) =
                login_from(&app, &format!("203.0.113.{ip}"), email, "Spring2026!").await;
            assert!(
                status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS,
                "{status} {body}"
            );
            throttled += usize::from(status == StatusCode::TOO_MANY_REQUESTS);
        }
    }
    let per_account = app.config.rate_limit.login_account.burst as usize;
    assert!(
        throttled >= 1000 - 20 * per_account - 1,
        "per-account limits trip: {throttled} of 1000 throttled"
    );
    // Ada at home is not locked out by the spray...
    assert_eq!(
        login_from(&app, "192.0.2.10", &accounts[0], PASSWORD)
            .await
            .0,
        StatusCode::OK
    );
    // ...a new device waits for the documented refill (Retry-After), then gets in.
    let (status, headers, _) = login_from(&app, "198.51.100.9", &accounts[1], PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let wait: i64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    app.clock.advance(wait);
    assert_eq!(
        login_from(&app, "198.51.100.9", &accounts[1], PASSWORD)
            .await
            .0,
        StatusCode::OK
    );
}

async fn lockout_backs_off_with_exact_retry_after_and_reveals_nothing(b: Backend) {
    let app = TestApp::spawn_with(b, |c| {
        c.trusted_proxies = "127.0.0.1".into();
        c.rate_limit.login_ip = tessera::abuse::Limit::new(1000, 1000);
        c.rate_limit.login_account = tessera::abuse::Limit::new(1000, 1000);
    })
    .await;
    let accounts = users(&app, 1).await;
    let (real, ghost) = (accounts[0].as_str(), "nobody@example.com");
    let mut bodies = Vec::new();
    for email in [real, ghost] {
        let threshold = app.config.rate_limit.lockout_threshold;
        for i in 1..=threshold {
            let (status, _, _) = login_from(&app, "203.0.113.5", email, "wrong password").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{email} attempt {i}");
        }
        // Locked now, even with the right password, for exactly the base time.
        let (status, headers, body) = login_from(&app, "203.0.113.5", email, PASSWORD).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers["retry-after"], "30");
        bodies.push(without_correlation(body));
        app.clock.advance(29);
        assert_eq!(
            login_from(&app, "203.0.113.5", email, PASSWORD).await.1["retry-after"],
            "1"
        );
        app.clock.advance(1);
        // One more failure doubles the lock.
        assert_eq!(
            login_from(&app, "203.0.113.5", email, "wrong again")
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
        let (_, headers, body) = login_from(&app, "203.0.113.5", email, PASSWORD).await;
        assert_eq!(headers["retry-after"], "60");
        bodies.push(without_correlation(body));
        app.clock.advance(60);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "locked answers are identical for real and unknown accounts: {bodies:?}"
    );
    // The lock is per account and IP: the user elsewhere signs in.
    assert_eq!(
        login_from(&app, "198.51.100.1", real, PASSWORD).await.0,
        StatusCode::OK
    );
    let (locks,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM outbox WHERE event_type = 'identity.account.locked.v1'",
    )
    .fetch_one(app.state.store.pool())
    .await
    .unwrap();
    assert_eq!(locks, 4, "an AccountLockedV1 per lock");
    let (audited,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE action = 'user.lock'")
            .fetch_one(app.state.store.pool())
            .await
            .unwrap();
    assert_eq!(audited, 4, "an audit entry per lock");
}

async fn oauth_token_endpoint_is_throttled_per_client_with_an_rfc_6749_body(b: Backend) {
    let app = TestApp::spawn_with(b, |c| {
        c.rate_limit.token_client = tessera::abuse::Limit::new(3, 60)
    })
    .await;
    let spec = tessera::oauth::clients::ClientSpec {
        name: Some("svc".into()),
        grant_types: Some(vec!["client_credentials".into()]),
        scopes: Some(vec!["reports.read".into()]),
        ..Default::default()
    };
    let r = tessera::oauth::clients::create(
        &app.state.store,
        spec,
        tessera::audit::By {
            principal: &tessera::authz::Principal::System,
            ctx: &tessera::context::RequestContext::system(),
        },
        1,
    )
    .await
    .unwrap();
    let (id, secret) = (r.client.client_id, r.client_secret.unwrap());
    let mut last = None;
    for _ in 0..4 {
        let res = app
            .client
            .post(format!("{}/oauth2/token", app.base))
            .basic_auth(&id, Some(&secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        last = Some((
            res.status(),
            res.headers().clone(),
            res.json::<Value>().await.unwrap(),
        ));
    }
    let (status, headers, body) = last.unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(body["error_description"].is_string());
}

fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_string()
}

async fn jwks_kids(app: &TestApp) -> Vec<String> {
    let body = app
        .request(reqwest::Method::GET, "/.well-known/jwks.json", None, None)
        .await
        .body;
    body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

async fn scheduled_rotation_prepublishes_keys_and_revocation_is_immediate(b: Backend) {
    let app = TestApp::spawn_with(b, |c| {
        c.key_rotation_days = 1;
        c.access_token_ttl = 2 * 24 * 3600;
    })
    .await;
    let before = app.signed_in("a@example.com").await;
    let old = kid_of(&before.access);
    let day = 24 * 3600;
    // Not due yet: nothing changes.
    app.clock.advance(day - PREPUBLISH - 1);
    app.state.keys.maintain(app.clock.now()).await.unwrap();
    app.state.keys.reload(app.clock.now()).await.unwrap();
    assert_eq!(jwks_kids(&app).await, vec![old.clone()]);
    // An hour before it is due, the next key is published but does not sign yet.
    app.clock.advance(1);
    app.state.keys.maintain(app.clock.now()).await.unwrap();
    app.state.keys.reload(app.clock.now()).await.unwrap();
    let published = jwks_kids(&app).await;
    assert_eq!(published.len(), 2, "{published:?}");
    let next = published.iter().find(|k| **k != old).unwrap().clone();
    let during = Tokens::from(&app.login("a@example.com", PASSWORD).await.body);
    assert_eq!(kid_of(&during.access), old);
    // When due, it becomes current.
    app.clock.advance(PREPUBLISH);
    app.state.keys.maintain(app.clock.now()).await.unwrap();
    app.state.keys.reload(app.clock.now()).await.unwrap();
    let after = Tokens::from(&app.login("a@example.com", PASSWORD).await.body);
    assert_eq!(kid_of(&after.access), next);
    for t in [&before, &during, &after] {
        assert_eq!(
            app.get("/identity/me", &t.access).await.status,
            StatusCode::OK,
            "valid until expiry"
        );
    }
    // Emergency revocation: the old key's tokens are rejected at once and it leaves the JWKS.
    let master = tessera::app::load_master_key(&app.config).unwrap();
    assert_eq!(
        Keys::revoke(
            &app.state.store,
            &master,
            Alg::Rs256,
            &old,
            tessera::audit::By::system(&tessera::context::RequestContext::system()),
            app.clock.now()
        )
        .await
        .unwrap()
        .as_deref(),
        Some("retired")
    );
    app.state.keys.reload(app.clock.now()).await.unwrap();
    assert_eq!(
        app.get("/identity/me", &before.access).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/identity/me", &during.access).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/identity/me", &after.access).await.status,
        StatusCode::OK
    );
    assert_eq!(jwks_kids(&app).await, vec![next.clone()]);
    // Revoking the current key replaces it.
    Keys::revoke(
        &app.state.store,
        &master,
        Alg::Rs256,
        &next,
        tessera::audit::By::system(&tessera::context::RequestContext::system()),
        app.clock.now(),
    )
    .await
    .unwrap();
    app.state.keys.reload(app.clock.now()).await.unwrap();
    assert_eq!(
        app.get("/identity/me", &after.access).await.status,
        StatusCode::UNAUTHORIZED
    );
    let fresh = Tokens::from(&app.login("a@example.com", PASSWORD).await.body);
    assert!(![old, next].contains(&kid_of(&fresh.access)));
    assert_eq!(
        app.get("/identity/me", &fresh.access).await.status,
        StatusCode::OK
    );
}

async fn master_key_rotation_reseals_every_secret(b: Backend) {
    // No mail worker racing the rotation: mail goes out as events.
    let app = TestApp::spawn_with(b, |c| c.mail.transport = "events".into()).await;
    let t = app.signed_in("m@example.com").await;
    let old = tessera::app::load_master_key(&app.config).unwrap();
    let (hook, secret) = tessera::events::webhooks::add(
        &app.state.store,
        &old,
        "http://127.0.0.1:9/hook",
        &["*".to_string()],
        tessera::audit::By::system(&tessera::context::RequestContext::system()),
        1,
    )
    .await
    .unwrap();
    let new_b64 = tessera::crypto::MasterKey::generate().to_base64();
    let new = tessera::crypto::MasterKey::from_base64(&new_b64).unwrap();
    let moved = tessera::keys::master::rotate(&app.state.store, &old, &new, app.clock.now())
        .await
        .unwrap();
    assert_eq!(moved, 2, "the signing key and the webhook secret");
    let (sealed,): (Vec<u8>,) = sqlx::query_as("SELECT secret FROM webhooks WHERE id = $1")
        .bind(&hook.id)
        .fetch_one(app.state.store.pool())
        .await
        .unwrap();
    let context = format!("webhook:{}", hook.id);
    assert_eq!(new.open(&context, &sealed).unwrap(), secret.as_bytes());
    assert!(old.open(&context, &sealed).is_err());
    let config = tessera::keys::KeyConfig::from_config(&app.config);
    let now = app.clock.now();
    let with_new = Keys::load(
        app.state.store.clone(),
        std::sync::Arc::new(tessera::crypto::MasterKey::from_base64(&new_b64).unwrap()),
        config.clone(),
        now,
    )
    .await;
    assert!(with_new.is_ok(), "the new key opens everything");
    let old_again = tessera::app::load_master_key(&app.config).unwrap();
    assert!(
        Keys::load(
            app.state.store.clone(),
            std::sync::Arc::new(old_again),
            config.clone(),
            now
        )
        .await
        .is_err(),
        "the old key no longer does"
    );
    // During a change-over the new key with the old as previous opens both old and new seals.
    let changeover = tessera::crypto::MasterKey::from_base64(&new_b64)
        .unwrap()
        .with_previous(tessera::app::load_master_key(&app.config).unwrap());
    assert!(
        Keys::load(
            app.state.store.clone(),
            std::sync::Arc::new(changeover),
            config,
            now
        )
        .await
        .is_ok()
    );
    // The running service keeps its parsed keys: its tokens still validate.
    assert_eq!(
        app.get("/identity/me", &t.access).await.status,
        StatusCode::OK
    );
}

async fn cors_is_off_by_default_and_allows_only_configured_origins(b: Backend) {
    let preflight = |app: &TestApp, origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, format!("{}/auth/login", app.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let off = TestApp::spawn(b).await;
    assert!(
        preflight(&off, "https://app.example.com")
            .await
            .unwrap()
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let on = TestApp::spawn_with(b, |c| c.cors_origins = "https://app.example.com".into()).await;
    let res = preflight(&on, "https://app.example.com").await.unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        res.headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    let res = preflight(&on, "https://evil.example").await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

async fn forwarded_for_is_believed_only_from_trusted_proxies(b: Backend) {
    for (trusted, expected) in [("127.0.0.1", "198.51.100.23"), ("", "127.0.0.1")] {
        let app = TestApp::spawn_with(b, |c| c.trusted_proxies = trusted.into()).await;
        users(&app, 1).await;
        let (_, _, body) = login_from(&app, "198.51.100.23", "user0@example.com", PASSWORD).await;
        let t = Tokens::from(&body);
        let sessions = app.get("/identity/sessions", &t.access).await.body;
        assert_eq!(
            sessions["sessions"][0]["ip"], expected,
            "trusted proxies {trusted:?}"
        );
    }
}
