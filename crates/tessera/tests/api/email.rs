//! Email verification and password reset, end to end: mail goes over a real SMTP connection to a
//! sink in the test, the test parses the message and follows the link.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera::store::users;

use crate::helpers::{
    Backend, ISSUER, PASSWORD, SmtpSink, TestApp, Tokens, assert_error, event_types_of, events_of,
    find_link, outbox_len,
};
use crate::on_both_backends;

on_both_backends!(
    verification_email_arrives_over_smtp_and_its_link_verifies,
    password_reset_over_smtp_replaces_the_password_and_ends_every_session,
    reset_request_answers_the_same_for_known_and_unknown_addresses,
    tokens_are_single_use_superseded_and_expire,
    bad_tokens_get_4xx_json_and_change_nothing,
    login_can_require_a_verified_email,
    reset_password_applies_the_password_policy,
    undeliverable_mail_is_parked_like_any_job_and_its_payload_wiped,
    a_stopping_mail_worker_gives_back_the_jobs_it_has_not_started,
);

const NEW_PASSWORD: &str = "a brand new passphrase";

async fn spawn_with_sink(b: Backend) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with(b, |c| sink.configure(c)).await;
    (app, sink)
}

/// Tessera with event-driven mail: links travel in the events, read straight from the outbox.
async fn spawn_event_mail(b: Backend, tweak: impl FnOnce(&mut tessera::Config)) -> TestApp {
    TestApp::spawn_with(b, |c| {
        c.mail.transport = "events".into();
        tweak(c);
    })
    .await
}

async fn user_id(app: &TestApp, email: &str) -> String {
    users::find_by_email(app.state.store.pool(), email)
        .await
        .unwrap()
        .unwrap()
        .id
}

/// The token of the latest `…requested` event of `kind` for the user (event-driven mail).
async fn latest_token(app: &TestApp, user_id: &str, kind: &str) -> String {
    let events = events_of(app, user_id).await;
    let e = events
        .iter()
        .rev()
        .find(|e| e["event_type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event"));
    let link = e["data"]["link"].as_str().expect("link in the event");
    link.split("token=").nth(1).unwrap().to_string()
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn verification_email_arrives_over_smtp_and_its_link_verifies(b: Backend) {
    let (app, sink) = spawn_with_sink(b).await;
    assert_eq!(
        app.register("ada@example.com").await.status,
        StatusCode::CREATED
    );

    let message = sink.next_message().await;
    assert!(message.contains("To: ada@example.com"), "{message}");
    assert!(
        message.contains("Subject: Confirm your email address"),
        "{message}"
    );
    assert!(message.contains("text/plain") && message.contains("text/html"));
    let (link, token) = find_link(&message, "verify-email");
    assert!(token.starts_with("tsv_") && token.len() == 47, "{token}");

    // Following the link shows a confirmation form (a GET never uses the token).
    let page = app
        .client
        .get(link.replace(ISSUER, &app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(header(&page, "content-type").starts_with("text/html"));
    assert!(header(&page, "content-security-policy").contains("default-src 'none'"));
    assert_eq!(header(&page, "referrer-policy"), "same-origin");
    let html = page.text().await.unwrap();
    assert!(html.contains("<form method=\"post\" action=\"verify-email\">"));
    assert!(html.contains(&token) && !html.contains("<script"));
    let id = user_id(&app, "ada@example.com").await;
    let unverified = users::find_by_id(app.state.store.pool(), &id)
        .await
        .unwrap()
        .unwrap();
    assert!(unverified.email_verified_at.is_none());

    // Submitting the form (no JavaScript) verifies the address.
    let done = app
        .client
        .post(format!("{}/verify-email", app.base))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert!(done.text().await.unwrap().contains("confirmed"));
    let t = Tokens::from(&app.login("ada@example.com", PASSWORD).await.body);
    assert_eq!(
        app.get("/identity/me", &t.access).await.body["email_verified"],
        true
    );

    // The link works once.
    let again = app
        .post("/auth/verify-email", json!({ "token": token }))
        .await;
    assert_error(&again, StatusCode::BAD_REQUEST, "invalid_token");

    assert_eq!(
        event_types_of(&app, &id).await,
        [
            "identity.user.registered.v1",
            "identity.email.verification_requested.v1",
            "identity.email.verified.v1",
            "identity.login.succeeded.v1",
        ]
    );
    let all = serde_json::to_string(&events_of(&app, &id).await).unwrap();
    assert!(!all.contains(&token) && !all.contains("tsv_") && !all.contains(PASSWORD));
    assert!(!all.contains("argon2"));
}

async fn password_reset_over_smtp_replaces_the_password_and_ends_every_session(b: Backend) {
    let (app, sink) = spawn_with_sink(b).await;
    let old = app.signed_in("bob@example.com").await;
    let other = Tokens::from(&app.login("bob@example.com", PASSWORD).await.body);
    let _verification = sink.next_message().await;

    let res = app
        .post(
            "/auth/request-password-reset",
            json!({ "email": "Bob@Example.com" }),
        )
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text);
    let message = sink.next_message().await;
    assert!(
        message.contains("Subject: Reset your password"),
        "{message}"
    );
    let (link, token) = find_link(&message, "reset-password");
    assert!(token.starts_with("tsp_"));

    let page = app
        .client
        .get(link.replace(ISSUER, &app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("name=\"new_password\"") && html.contains("action=\"reset-password\""));

    let res = app
        .post(
            "/auth/reset-password",
            json!({ "token": token, "new_password": NEW_PASSWORD }),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);

    // Old password and every old session stop working; the new password works.
    assert_error(
        &app.login("bob@example.com", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    for t in [&old, &other] {
        assert_error(
            &app.get("/identity/me", &t.access).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        );
        assert_error(
            &app.refresh(&t.refresh).await,
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
        );
    }
    assert_eq!(
        app.login("bob@example.com", NEW_PASSWORD).await.status,
        StatusCode::OK
    );

    // The token is used up.
    let replay = app
        .post(
            "/auth/reset-password",
            json!({ "token": token, "new_password": "yet another passphrase" }),
        )
        .await;
    assert_error(&replay, StatusCode::BAD_REQUEST, "invalid_token");
    assert_eq!(
        app.login("bob@example.com", NEW_PASSWORD).await.status,
        StatusCode::OK
    );

    let id = user_id(&app, "bob@example.com").await;
    let types = event_types_of(&app, &id).await;
    let tail: Vec<&str> = types.iter().map(String::as_str).skip(4).take(4).collect();
    assert_eq!(
        tail,
        [
            "identity.password.reset_requested.v1",
            "identity.session.revoked.v1",
            "identity.session.revoked.v1",
            "identity.password.changed.v1",
        ]
    );
    let events = events_of(&app, &id).await;
    let changed = events
        .iter()
        .find(|e| e["event_type"] == "identity.password.changed.v1")
        .unwrap();
    assert_eq!(changed["data"]["method"], "reset");
    assert!(!serde_json::to_string(&events).unwrap().contains("tsp_"));
}

async fn reset_request_answers_the_same_for_known_and_unknown_addresses(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("known@example.com").await;
    let before = outbox_len(&app).await;
    let known = app
        .post(
            "/auth/request-password-reset",
            json!({ "email": "known@example.com" }),
        )
        .await;
    let unknown = app
        .post(
            "/auth/request-password-reset",
            json!({ "email": "nobody@example.com" }),
        )
        .await;
    assert_eq!(known.status, StatusCode::ACCEPTED);
    assert_eq!(unknown.status, known.status);
    assert_eq!(unknown.text, known.text);
    assert_eq!(
        unknown.headers.get("content-type"),
        known.headers.get("content-type")
    );
    // Only the real account got a reset (one event), the unknown address nothing.
    assert_eq!(outbox_len(&app).await, before + 1);
    let resend_known = app
        .post(
            "/auth/resend-verification",
            json!({ "email": "known@example.com" }),
        )
        .await;
    let resend_unknown = app
        .post(
            "/auth/resend-verification",
            json!({ "email": "nobody@example.com" }),
        )
        .await;
    assert_eq!(resend_known.status, StatusCode::ACCEPTED);
    assert_eq!(resend_unknown.text, resend_known.text);
}

async fn tokens_are_single_use_superseded_and_expire(b: Backend) {
    let app = spawn_event_mail(b, |_| {}).await;
    app.register("cy@example.com").await;
    let id = user_id(&app, "cy@example.com").await;
    let kind = "identity.email.verification_requested.v1";
    let first = latest_token(&app, &id, kind).await;

    // A new verification email supersedes the first link.
    let res = app
        .post(
            "/auth/resend-verification",
            json!({ "email": "cy@example.com" }),
        )
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED);
    let second = latest_token(&app, &id, kind).await;
    assert_ne!(first, second);
    assert_error(
        &app.post("/auth/verify-email", json!({ "token": first }))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_token",
    );

    // Expired after 24 hours.
    app.clock.advance(24 * 3600 + 1);
    assert_error(
        &app.post("/auth/verify-email", json!({ "token": second }))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_token",
    );
    app.post(
        "/auth/resend-verification",
        json!({ "email": "cy@example.com" }),
    )
    .await;
    let third = latest_token(&app, &id, kind).await;
    assert_eq!(
        app.post("/auth/verify-email", json!({ "token": third }))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    // Verified: no more verification emails.
    let n = outbox_len(&app).await;
    app.post(
        "/auth/resend-verification",
        json!({ "email": "cy@example.com" }),
    )
    .await;
    assert_eq!(outbox_len(&app).await, n);

    // Reset tokens expire after an hour; a newer one supersedes the older.
    let reset = "identity.password.reset_requested.v1";
    app.post(
        "/auth/request-password-reset",
        json!({ "email": "cy@example.com" }),
    )
    .await;
    let r1 = latest_token(&app, &id, reset).await;
    app.clock.advance(3601);
    assert_error(
        &app.post(
            "/auth/reset-password",
            json!({ "token": r1, "new_password": NEW_PASSWORD }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_token",
    );
    app.post(
        "/auth/request-password-reset",
        json!({ "email": "cy@example.com" }),
    )
    .await;
    let r2 = latest_token(&app, &id, reset).await;
    app.post(
        "/auth/request-password-reset",
        json!({ "email": "cy@example.com" }),
    )
    .await;
    let r3 = latest_token(&app, &id, reset).await;
    assert_error(
        &app.post(
            "/auth/reset-password",
            json!({ "token": r2, "new_password": NEW_PASSWORD }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_token",
    );
    // A verification token is not a reset token.
    assert_error(
        &app.post(
            "/auth/reset-password",
            json!({ "token": third, "new_password": NEW_PASSWORD }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_token",
    );
    assert_eq!(
        app.post(
            "/auth/reset-password",
            json!({ "token": r3, "new_password": NEW_PASSWORD })
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    // No mail jobs with event-driven mail.
    let jobs =
        tessera::store::jobs::count_by_status(app.state.store.pool(), tessera::store::jobs::MAIL)
            .await
            .unwrap();
    assert!(jobs.is_empty(), "{jobs:?}");
}

async fn bad_tokens_get_4xx_json_and_change_nothing(b: Backend) {
    let app = spawn_event_mail(b, |_| {}).await;
    app.register("dee@example.com").await;
    let id = user_id(&app, "dee@example.com").await;
    let good = latest_token(&app, &id, "identity.email.verification_requested.v1").await;
    let before = outbox_len(&app).await;
    let long = format!("{good}A");
    let bad_chars = format!("tsv_{}", "!".repeat(43));
    let wrong_prefix = good.replace("tsv_", "tsp_");
    let unknown = format!("tsv_{}", "A".repeat(43));
    for token in [
        "",
        "x",
        &good[..good.len() - 1],
        long.as_str(),
        bad_chars.as_str(),
        wrong_prefix.as_str(),
        unknown.as_str(),
    ] {
        for path in ["/auth/verify-email", "/auth/reset-password"] {
            let res = app
                .post(
                    path,
                    json!({ "token": token, "new_password": NEW_PASSWORD }),
                )
                .await;
            assert_error(&res, StatusCode::BAD_REQUEST, "invalid_token");
        }
    }
    let huge = format!(r#"{{"token":"{}"}}"#, "A".repeat(100 * 1024));
    let res = app
        .raw(
            Method::POST,
            "/auth/verify-email",
            Some("application/json"),
            huge.into_bytes(),
        )
        .await;
    assert_error(&res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let res = app.post("/auth/verify-email", json!({ "token": 42 })).await;
    assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let res = app
        .post(
            "/auth/request-password-reset",
            json!({ "email": "not an email" }),
        )
        .await;
    assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let res = app
        .raw(
            Method::POST,
            "/auth/reset-password",
            Some("application/json"),
            b"{\"token\":".to_vec(),
        )
        .await;
    assert_error(&res, StatusCode::BAD_REQUEST, "malformed_json");
    // The HTML page refuses a malformed link without a lookup.
    let page = app
        .client
        .get(format!("{}/verify-email?token=%3Cscript%3E", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    assert!(!page.text().await.unwrap().contains("<script>"));

    // Nothing changed: still unverified, the good token still works, no new events.
    assert_eq!(outbox_len(&app).await, before);
    let u = users::find_by_id(app.state.store.pool(), &id)
        .await
        .unwrap()
        .unwrap();
    assert!(u.email_verified_at.is_none());
    assert_eq!(
        app.post("/auth/verify-email", json!({ "token": good }))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &app.post("/auth/verify-email", json!({ "token": good }))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_token",
    );
}

async fn login_can_require_a_verified_email(b: Backend) {
    let app = spawn_event_mail(b, |c| c.require_verified_email = true).await;
    app.register("eve@example.com").await;
    // A wrong password reveals nothing about verification.
    assert_error(
        &app.login("eve@example.com", "not the password").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    assert_error(
        &app.login("eve@example.com", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "email_not_verified",
    );
    let id = user_id(&app, "eve@example.com").await;
    let token = latest_token(&app, &id, "identity.email.verification_requested.v1").await;
    app.post("/auth/verify-email", json!({ "token": token }))
        .await;
    assert_eq!(
        app.login("eve@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
    let failed: Vec<Value> = events_of(&app, &id)
        .await
        .into_iter()
        .filter(|e| e["event_type"] == "identity.login.failed.v1")
        .collect();
    let reasons: Vec<&str> = failed
        .iter()
        .map(|e| e["data"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["invalid_password", "email_not_verified"]);
}

async fn reset_password_applies_the_password_policy(b: Backend) {
    let app = spawn_event_mail(b, |_| {}).await;
    app.register("fay@example.com").await;
    let id = user_id(&app, "fay@example.com").await;
    app.post(
        "/auth/request-password-reset",
        json!({ "email": "fay@example.com" }),
    )
    .await;
    let token = latest_token(&app, &id, "identity.password.reset_requested.v1").await;
    let res = app
        .post(
            "/auth/reset-password",
            json!({ "token": token, "new_password": "short" }),
        )
        .await;
    assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(res.body["fields"][0]["field"], "new_password");
    // The HTML form shows the problem and keeps the token usable.
    let page = app
        .client
        .post(format!("{}/reset-password", app.base))
        .form(&[("token", token.as_str()), ("new_password", "short")])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.text().await.unwrap().contains("at least 8 characters"));
    let page = app
        .client
        .post(format!("{}/reset-password", app.base))
        .form(&[("token", token.as_str()), ("new_password", NEW_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(
        app.login("fay@example.com", NEW_PASSWORD).await.status,
        StatusCode::OK
    );
}

/// Mail is one of the three leased queues (`store/jobs.rs`): a job that cannot be delivered is
/// parked after its attempts, as events and webhook deliveries are, and its sealed payload (the
/// link) is wiped.
async fn undeliverable_mail_is_parked_like_any_job_and_its_payload_wiped(b: Backend) {
    // Port 9 (discard), where nothing listens here: a port picked by binding and closing a
    // listener can be taken by another test's server before the mail worker connects.
    let closed = 9;
    let app = TestApp::spawn_with(b, |c| {
        c.mail.transport = "smtp".into();
        c.mail.smtp_host = Some("127.0.0.1".into());
        c.mail.smtp_port = Some(closed);
        c.mail.smtp_tls = "none".into();
        c.mail.max_attempts = 1;
    })
    .await;
    assert_eq!(
        app.register("lost@example.com").await.status,
        StatusCode::CREATED
    );
    let pool = app.state.store.pool().clone();
    crate::helpers::eventually(20, "the mail job to be parked", || {
        let pool = pool.clone();
        async move {
            let counts = tessera::store::jobs::count_by_status(&pool, tessera::store::jobs::MAIL)
                .await
                .unwrap();
            counts == vec![("parked".to_string(), 1)]
        }
    })
    .await;
    let (payloads,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM mail_jobs WHERE payload IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(payloads, 0, "the parked job's payload is wiped");
}

/// At shutdown the mail worker gives back the jobs of its claim that it has not started: they
/// are pending and unleased at once (no wait for the lease), untouched, and the next round
/// sends them.
async fn a_stopping_mail_worker_gives_back_the_jobs_it_has_not_started(b: Backend) {
    // The service's own worker looks once at start, then not for an hour.
    let app = TestApp::spawn_with(b, |c| c.mail.poll_interval_ms = 3_600_000).await;
    for email in ["one@example.com", "two@example.com"] {
        assert_eq!(app.register(email).await.status, StatusCode::CREATED);
    }
    let cfg = app.state.config.mail.clone();
    let transport = tessera::mail::worker::Transport::from_config(&cfg, &app.state.config.data_dir)
        .unwrap()
        .expect("the file transport");
    let stopping = tokio_util::sync::CancellationToken::new();
    stopping.cancel();
    let handled = tessera::mail::worker::round(&app.state, &transport, "w", &cfg, &stopping)
        .await
        .unwrap();
    assert_eq!(handled, 0);
    let jobs: Vec<(String, Option<String>, Option<i64>, i64)> = sqlx::query_as(
        "SELECT status, lease_owner, lease_until, attempts FROM mail_jobs ORDER BY id",
    )
    .fetch_all(app.state.store.pool())
    .await
    .unwrap();
    assert_eq!(jobs, vec![("pending".to_string(), None, None, 0); 2]);

    let running = tokio_util::sync::CancellationToken::new();
    let handled = tessera::mail::worker::round(&app.state, &transport, "w", &cfg, &running)
        .await
        .unwrap();
    assert_eq!(handled, 2);
    let counts =
        tessera::store::jobs::count_by_status(app.state.store.pool(), tessera::store::jobs::MAIL)
            .await
            .unwrap();
    assert_eq!(counts, vec![("sent".to_string(), 2)]);
}
