//! Security behaviours of the authorization issue: logout rules, per-client limits, emails that
//! lower-case into ASCII, owner-only files.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Backend, PASSWORD, TestApp, Tokens, assert_error};
use crate::oauth::{browse, field, param, register_client, token};
use crate::on_both_backends;

on_both_backends!(
    logout_with_a_rotated_out_refresh_token_is_reuse,
    logout_with_a_refresh_token_cannot_end_every_session,
    logout_ignores_refresh_tokens_of_oauth_clients,
    a_client_with_its_own_limit_is_held_to_that_limit,
    emails_that_lower_case_into_ascii_are_refused_at_registration,
    concurrent_wrong_passwords_get_no_more_checks_than_the_lockout_allows,
    a_code_replayed_while_it_is_redeemed_revokes_what_was_issued,
    hosted_form_posts_from_another_site_are_refused,
    unsupported_response_modes_are_refused,
    hosted_cookies_use_the_host_prefix_on_https,
    every_login_path_writes_the_same_event_and_audit_entry,
    registration_and_recovery_mail_have_global_ceilings,
    near_miss_redirect_uris_get_an_error_page_not_a_redirect,
    a_code_issued_without_a_challenge_refuses_a_verifier,
    a_refresh_token_works_only_for_its_own_client,
    forged_or_missing_csrf_is_refused_on_consent_and_logout,
    recovery_requests_for_unknown_addresses_write_nothing,
);

#[tokio::test]
async fn zero_config_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.mail.transport = "file".into()).await;
    app.register("files@example.com").await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = app.config.data_dir.clone();
    assert_eq!(mode(&dir), 0o700, "data dir");
    assert_eq!(mode(&dir.join("master.key")), 0o600, "master key");
    assert_eq!(mode(&dir.join("tessera.db")), 0o600, "database");
    let mail = dir.join("mail");
    assert_eq!(mode(&mail), 0o700, "mail dir");
    crate::helpers::eventually(10, "a mail file", || {
        let mail = mail.clone();
        async move { std::fs::read_dir(&mail).unwrap().next().is_some() }
    })
    .await;
    for f in std::fs::read_dir(&mail).unwrap() {
        assert_eq!(mode(&f.unwrap().path()), 0o600, "mail file");
    }
}

async fn logout_with_a_rotated_out_refresh_token_is_reuse(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t0 = app.signed_in("a@example.com").await;
    let t1 = Tokens::from(&app.refresh(&t0.refresh).await.body);
    let user_id = app.get("/identity/me", &t1.access).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .post("/auth/logout", json!({ "refresh_token": t0.refresh }))
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    // The family is gone: the live successor and its access token no longer work.
    assert_error(
        &app.refresh(&t1.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    );
    assert_error(
        &app.get("/identity/me", &t1.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    let types = crate::helpers::event_types_of(&app, &user_id).await;
    assert!(
        types.iter().any(|t| t == "identity.session.revoked.v1"),
        "revocation event: {types:?}"
    );
}

async fn logout_with_a_refresh_token_cannot_end_every_session(b: Backend) {
    let app = TestApp::spawn(b).await;
    let first = app.signed_in("b@example.com").await;
    let second = Tokens::from(&app.login("b@example.com", PASSWORD).await.body);
    let res = app
        .post(
            "/auth/logout?all=true",
            json!({ "refresh_token": first.refresh }),
        )
        .await;
    assert_error(&res, StatusCode::UNAUTHORIZED, "unauthenticated");
    // Nothing ended.
    assert_eq!(
        app.get("/identity/me", &first.access).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/identity/me", &second.access).await.status,
        StatusCode::OK
    );
    // With a bearer token, all=true ends both.
    let res = app
        .request(
            Method::POST,
            "/auth/logout?all=true",
            Some(&second.access),
            None,
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    for t in [&first, &second] {
        assert_error(
            &app.get("/identity/me", &t.access).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        );
    }
}

async fn logout_ignores_refresh_tokens_of_oauth_clients(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("c@example.com").await;
    let client = register_client(
        &app,
        false,
        &["password", "refresh_token"],
        &["openid", "offline_access"],
    )
    .await;
    let (status, _, body) = token(
        &app,
        Some((&client.id, client.secret.as_deref().unwrap())),
        &[
            ("grant_type", "password"),
            ("username", "c@example.com"),
            ("password", PASSWORD),
            ("scope", "openid offline_access"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refresh = body["refresh_token"].as_str().unwrap();
    let res = app
        .post("/auth/logout", json!({ "refresh_token": refresh }))
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "the same answer");
    // Not first-party: the client's family is untouched.
    let (status, _, body) = token(
        &app,
        Some((&client.id, client.secret.as_deref().unwrap())),
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn set_rate_limit(app: &TestApp, id: &str, burst: u32, per_minute: u32) {
    let spec = tessera::oauth::clients::ClientSpec {
        rate_limit: Some(Some(tessera::abuse::Limit::new(burst, per_minute))),
        ..Default::default()
    };
    let ctx = tessera::context::RequestContext::system();
    let by = tessera::audit::By {
        principal: &tessera::authz::Principal::System,
        ctx: &ctx,
    };
    tessera::oauth::clients::update(&app.state.store, &app.state.clients, id, spec, by, 1)
        .await
        .unwrap();
}

async fn a_client_with_its_own_limit_is_held_to_that_limit(b: Backend) {
    let app = TestApp::spawn(b).await;
    let default_burst = app.config.rate_limit.token_client.burst;
    let busy = register_client(&app, false, &["client_credentials"], &["x"]).await;
    set_rate_limit(&app, &busy.id, default_burst + 100, 60_000).await;
    let form = [("grant_type", "client_credentials")];
    for i in 0..default_burst + 50 {
        let (status, _, body) = token(
            &app,
            Some((&busy.id, busy.secret.as_deref().unwrap())),
            &form,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
    }
    let small = register_client(&app, false, &["client_credentials"], &["x"]).await;
    set_rate_limit(&app, &small.id, 2, 1).await;
    let secret = small.secret.as_deref().unwrap();
    for _ in 0..2 {
        assert_eq!(
            token(&app, Some((&small.id, secret)), &form).await.0,
            StatusCode::OK
        );
    }
    let (status, headers, body) = token(&app, Some((&small.id, secret)), &form).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(headers.contains_key("retry-after"));
}

async fn emails_that_lower_case_into_ascii_are_refused_at_registration(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("kim@example.com").await;
    let res = app
        .post(
            "/auth/register",
            json!({ "email": "\u{212A}im@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);
    assert_eq!(res.body["fields"][0]["field"], "email");
    let reset = app
        .post(
            "/auth/request-password-reset",
            json!({ "email": "\u{212A}im@example.com" }),
        )
        .await;
    assert_eq!(reset.status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn concurrent_wrong_passwords_get_no_more_checks_than_the_lockout_allows(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("d@example.com").await;
    let threshold = app.config.rate_limit.lockout_threshold as usize;
    let attempts = (0..20).map(|_| app.login("d@example.com", "wrong password, surely"));
    let answers = futures_util::future::join_all(attempts).await;
    let checked = answers
        .iter()
        .filter(|r| r.status == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = answers
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(checked + throttled, 20, "only 401 and 429");
    assert!(
        (1..=threshold).contains(&checked),
        "{checked} password checks for a threshold of {threshold}"
    );
    // The audit log agrees: no more failed logins than the threshold.
    let failures = tessera::audit::list(
        &app.state.store,
        &tessera::authz::Principal::System,
        &tessera::audit::Filter {
            action: Some("user.login".into()),
            result: Some("failure".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .0;
    assert!(failures.len() <= threshold, "{} failures", failures.len());
}

async fn a_code_replayed_while_it_is_redeemed_revokes_what_was_issued(b: Backend) {
    const REDIRECT: &str = "http://127.0.0.1:9/callback";
    let app = TestApp::spawn(b).await;
    app.register("e@example.com").await;
    let client = register_client(&app, false, &["authorization_code"], &["openid"]).await;
    let secret = client.secret.clone().unwrap();
    let url = format!(
        "{}/oauth2/authorize?response_type=code&client_id={}&redirect_uri={REDIRECT}&scope=openid&state=s",
        app.base, client.id
    );
    let back = browse(&app, &url, "e@example.com", "allow").await;
    let code = param(&back, "code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    let auth = Some((client.id.as_str(), secret.as_str()));
    let (a, b2) = tokio::join!(token(&app, auth, &form), token(&app, auth, &form));
    let winners: Vec<_> = [&a, &b2]
        .into_iter()
        .filter(|r| r.0 == StatusCode::OK)
        .collect();
    assert_eq!(winners.len(), 1, "one redemption: {a:?} {b2:?}");
    let loser = if a.0 == StatusCode::OK { &b2 } else { &a };
    assert_eq!(loser.2["error"], "invalid_grant");
    let access = winners[0].2["access_token"].as_str().unwrap();
    let info = app.get("/oauth2/userinfo", access).await;
    assert_eq!(
        info.status,
        StatusCode::UNAUTHORIZED,
        "the replay revoked the first redemption's tokens: {}",
        info.text
    );
    let user = tessera::store::users::find_by_email(app.state.store.pool(), "e@example.com")
        .await
        .unwrap()
        .unwrap();
    let types = crate::helpers::event_types_of(&app, &user.id).await;
    assert!(
        types.iter().any(|t| t == "identity.session.revoked.v1"),
        "SessionRevokedV1: {types:?}"
    );
}

const CALLBACK: &str = "http://127.0.0.1:9/callback";

async fn authorize_url(app: &TestApp, extra: &str) -> (String, String) {
    let client = register_client(app, false, &["authorization_code"], &["openid"]).await;
    let url = format!(
        "{}/oauth2/authorize?response_type=code&client_id={}&redirect_uri={CALLBACK}&scope=openid&state=s{extra}",
        app.base, client.id
    );
    (url, client.id)
}

async fn hosted_form_posts_from_another_site_are_refused(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("f@example.com").await;
    let (url, _) = authorize_url(&app, "").await;
    let html = app
        .client
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = [
        ("csrf_token", field(&html, "csrf_token")),
        ("request", field(&html, "request")),
        ("email", "f@example.com".to_string()),
        ("password", PASSWORD.to_string()),
    ];
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let res = app
            .client
            .post(format!("{}/oauth2/login", app.base))
            .header(name, value)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{name}: {value}");
    }
    // The same form from our own origin signs in.
    let res = app
        .client
        .post(format!("{}/oauth2/login", app.base))
        .header("origin", app.base.as_str())
        .header("sec-fetch-site", "same-origin")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_ne!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.status().is_success() || res.status().is_redirection());
}

async fn unsupported_response_modes_are_refused(b: Backend) {
    let app = TestApp::spawn(b).await;
    for mode in ["fragment", "form_post", "jwt"] {
        let (url, _) = authorize_url(&app, &format!("&response_mode={mode}")).await;
        let res = app.client.get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{mode}");
        let location = res.headers()["location"].to_str().unwrap().to_string();
        assert!(location.starts_with(CALLBACK), "{location}");
        assert_eq!(
            param(&location, "error").as_deref(),
            Some("invalid_request")
        );
        assert_eq!(param(&location, "state").as_deref(), Some("s"));
    }
    let (url, _) = authorize_url(&app, "&response_mode=query").await;
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "query is the supported mode");
}

async fn hosted_cookies_use_the_host_prefix_on_https(b: Backend) {
    let app = TestApp::spawn_with(b, |c| c.issuer = "https://id.example.test".into()).await;
    let (url, _) = authorize_url(&app, "").await;
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cookies: Vec<String> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(!cookies.is_empty());
    for c in &cookies {
        assert!(c.starts_with("__Host-"), "{c}");
        assert!(c.contains("; Secure") && c.contains("Path=/"), "{c}");
        assert!(!c.to_ascii_lowercase().contains("domain="), "{c}");
    }
    let plain = TestApp::spawn(b).await;
    let (url, _) = authorize_url(&plain, "").await;
    let res = plain.client.get(&url).send().await.unwrap();
    let c = res.headers()["set-cookie"].to_str().unwrap();
    assert!(
        c.starts_with("tessera_csrf="),
        "plain http keeps the bare name: {c}"
    );
}

/// JSON login, hosted login and the password grant each write `LoginSucceededV1` and a
/// `user.login` audit entry.
async fn every_login_path_writes_the_same_event_and_audit_entry(b: Backend) {
    let app = TestApp::spawn(b).await;
    let user_id = |email: &'static str| {
        let app = &app;
        async move {
            tessera::store::users::find_by_email(app.state.store.pool(), email)
                .await
                .unwrap()
                .unwrap()
                .id
        }
    };
    let logins = |id: String| {
        let app = &app;
        async move {
            let events = crate::helpers::event_types_of(app, &id)
                .await
                .into_iter()
                .filter(|t| t == "identity.login.succeeded.v1")
                .count();
            let audit = tessera::audit::list(
                &app.state.store,
                &tessera::authz::Principal::System,
                &tessera::audit::Filter {
                    action: Some("user.login".into()),
                    result: Some("success".into()),
                    actor: Some(id),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .0
            .len();
            (events, audit)
        }
    };
    // JSON login.
    app.signed_in("json@example.com").await;
    assert_eq!(logins(user_id("json@example.com").await).await, (1, 1));
    // Hosted login.
    app.register("hosted@example.com").await;
    let (url, _) = authorize_url(&app, "").await;
    browse(&app, &url, "hosted@example.com", "allow").await;
    assert_eq!(logins(user_id("hosted@example.com").await).await, (1, 1));
    // Password grant.
    app.register("grant@example.com").await;
    let client = register_client(&app, false, &["password"], &["openid"]).await;
    let (status, _, body) = token(
        &app,
        Some((&client.id, client.secret.as_deref().unwrap())),
        &[
            ("grant_type", "password"),
            ("username", "grant@example.com"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(logins(user_id("grant@example.com").await).await, (1, 1));
}

async fn registration_and_recovery_mail_have_global_ceilings(b: Backend) {
    let app = TestApp::spawn_with(b, |c| {
        c.rate_limit.register_global = tessera::abuse::Limit::new(2, 1);
        c.rate_limit.recovery_global = tessera::abuse::Limit::new(2, 1);
    })
    .await;
    for i in 0..2 {
        assert_eq!(
            app.register(&format!("g{i}@example.com")).await.status,
            StatusCode::CREATED
        );
    }
    let res = app.register("g2@example.com").await;
    assert_error(&res, StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
    assert!(res.headers.contains_key("retry-after"));
    for i in 0..2 {
        let res = app
            .post(
                "/auth/request-password-reset",
                json!({ "email": format!("r{i}@example.com") }),
            )
            .await;
        assert_eq!(res.status, StatusCode::ACCEPTED);
    }
    let res = app
        .post(
            "/auth/request-password-reset",
            json!({ "email": "r9@example.com" }),
        )
        .await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
}

async fn near_miss_redirect_uris_get_an_error_page_not_a_redirect(b: Backend) {
    let app = TestApp::spawn(b).await;
    let client = register_client(&app, false, &["authorization_code"], &["openid"]).await;
    for uri in [
        "http://127.0.0.1:9/callback/",
        "http://127.0.0.1:9/callback?x=1",
        "http://127.0.0.1:10/callback",
        "http://localhost:9/callback",
        "http://127.0.0.1:9/Callback",
        "http://127.0.0.1:9/callback#f",
    ] {
        let url = format!(
            "{}/oauth2/authorize?response_type=code&client_id={}&scope=openid&redirect_uri={}",
            app.base,
            client.id,
            urlencode(uri)
        );
        let res = app.client.get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            res.headers().get("location").is_none(),
            "no redirect for {uri}"
        );
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn a_code_issued_without_a_challenge_refuses_a_verifier(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("h@example.com").await;
    let client = register_client(&app, false, &["authorization_code"], &["openid"]).await;
    let (url, _) = (
        format!(
            "{}/oauth2/authorize?response_type=code&client_id={}&redirect_uri={CALLBACK}&scope=openid&state=s",
            app.base, client.id
        ),
        (),
    );
    let back = browse(&app, &url, "h@example.com", "allow").await;
    let code = param(&back, "code").unwrap();
    let (status, _, body) = token(
        &app,
        Some((&client.id, client.secret.as_deref().unwrap())),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            (
                "code_verifier",
                "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            ),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
}

async fn a_refresh_token_works_only_for_its_own_client(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("i@example.com").await;
    let grants = ["password", "refresh_token"];
    let scopes = ["openid", "offline_access"];
    let owner = register_client(&app, false, &grants, &scopes).await;
    let other = register_client(&app, false, &grants, &scopes).await;
    let (_, _, body) = token(
        &app,
        Some((&owner.id, owner.secret.as_deref().unwrap())),
        &[
            ("grant_type", "password"),
            ("username", "i@example.com"),
            ("password", PASSWORD),
            ("scope", "openid offline_access"),
        ],
    )
    .await;
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
    ];
    let (status, _, body) = token(
        &app,
        Some((&other.id, other.secret.as_deref().unwrap())),
        &form,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    // A first-party refresh at /auth/refresh refuses it as well.
    assert_error(
        &app.refresh(&refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    );
    // The owner still can.
    let (status, _, body) = token(
        &app,
        Some((&owner.id, owner.secret.as_deref().unwrap())),
        &form,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn forged_or_missing_csrf_is_refused_on_consent_and_logout(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("j@example.com").await;
    let (url, _) = authorize_url(&app, "").await;
    let res = app.client.get(&url).send().await.unwrap();
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let html = res.text().await.unwrap();
    let request = field(&html, "request");
    let forged = "A".repeat(43);
    for (path, extra) in [
        ("/oauth2/consent", ("decision", "allow")),
        ("/oauth2/logout", ("decision", "yes")),
    ] {
        for csrf in [Some(forged.as_str()), None] {
            let mut form = vec![("request", request.as_str()), extra];
            if let Some(c) = csrf {
                form.push(("csrf_token", c));
            }
            let res = app
                .client
                .post(format!("{}{path}", app.base))
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path} csrf={csrf:?}");
        }
    }
}

/// Unknown addresses run the known path's statements with conditions that insert nothing
/// (`recovery::decoy_in`): the answers match and no row is written.
async fn recovery_requests_for_unknown_addresses_write_nothing(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("known@example.com").await;
    let count = |table: &'static str| {
        let app = &app;
        async move {
            let (n,): (i64,) =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                    .fetch_one(app.state.store.pool())
                    .await
                    .unwrap();
            n
        }
    };
    let tables = ["email_tokens", "mail_jobs", "outbox", "audit_log"];
    let mut before = Vec::new();
    for t in tables {
        before.push(count(t).await);
    }
    let mut answers = Vec::new();
    for path in ["/auth/request-password-reset", "/auth/resend-verification"] {
        let res = app
            .post(path, json!({ "email": "nobody@example.com" }))
            .await;
        answers.push((res.status, res.body["message"].clone()));
    }
    for (i, t) in tables.iter().enumerate() {
        assert_eq!(count(t).await, before[i], "{t}");
    }
    for path in ["/auth/request-password-reset", "/auth/resend-verification"] {
        let res = app
            .post(path, json!({ "email": "known@example.com" }))
            .await;
        let (status, message) = answers.remove(0);
        assert_eq!((res.status, res.body["message"].clone()), (status, message));
    }
    assert!(
        count("email_tokens").await > before[0],
        "known addresses do get a token"
    );
}
