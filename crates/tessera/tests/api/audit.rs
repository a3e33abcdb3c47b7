//! The audit log: which actions are recorded (exactly, in order), that no secret ever reaches it
//! (nor the outbox), the admin API's filters and cursor, append-only storage, and retention.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, SmtpSink, TestApp, Tokens, assert_error, find_link};
use crate::on_both_backends;

on_both_backends!(
    audit_completeness_for_a_scripted_sequence,
    no_password_token_or_secret_reaches_the_audit_log_or_the_outbox,
    admin_lists_the_audit_log_with_filters_and_a_cursor,
    audit_rows_cannot_be_updated_and_old_ones_are_purged,
    an_incoming_traceparent_names_the_trace_in_audit_entries_and_events,
);

const ROOT: &str = "root@example.com";

/// An administrator created at the command line (one `user.create` entry), logged in (one
/// `user.login`).
pub async fn admin_token(app: &TestApp) -> String {
    let hash = app.state.passwords.hash(PASSWORD).await.unwrap();
    let now = app.clock.now();
    tessera::accounts::create(
        &app.state.store,
        ROOT,
        Some(&hash),
        Some(now),
        &[tessera::authz::Role::Admin],
        None,
        now,
    )
    .await
    .unwrap();
    Tokens::from(&app.login(ROOT, PASSWORD).await.body).access
}

async fn user_id(app: &TestApp, email: &str) -> String {
    tessera::store::users::find_by_email(app.state.store.pool(), email)
        .await
        .unwrap()
        .unwrap()
        .id
}

/// Every audit entry, oldest first, through the admin API (following the cursor).
async fn all_entries(app: &TestApp, admin: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = "/admin/audit?limit=7".to_string();
    loop {
        let res = app.get(&path, admin).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        out.extend(res.body["entries"].as_array().unwrap().iter().cloned());
        match res.body["next_cursor"].as_str() {
            Some(c) => path = format!("/admin/audit?limit=7&after={c}"),
            None => return out,
        }
    }
}

/// `action result actor_type reason` of each entry, for exact comparison.
fn lines(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["action"].as_str().unwrap(),
                e["result"].as_str().unwrap(),
                e["actor_type"].as_str().unwrap(),
                e["reason"].as_str().unwrap_or("-"),
            )
        })
        .collect()
}

async fn audit_completeness_for_a_scripted_sequence(b: Backend) {
    let app = TestApp::spawn(b).await;
    let admin = admin_token(&app).await;
    // A user registers, fails to log in twice (wrong password, then an unknown address), logs in.
    assert_eq!(
        app.register("eve@example.com").await.status,
        StatusCode::CREATED
    );
    let eve = user_id(&app, "eve@example.com").await;
    assert_eq!(
        app.login("eve@example.com", "wrong password!").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("nobody@example.com", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    let first = Tokens::from(&app.login("eve@example.com", PASSWORD).await.body);
    // A refresh is not an audit event; replaying the rotated token after the grace window is.
    let rotated = Tokens::from(&app.refresh(&first.refresh).await.body);
    app.clock.advance(60);
    assert_eq!(
        app.refresh(&first.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&rotated.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Two new sessions; a wrong and a right password change from one ends the other.
    let second = Tokens::from(&app.login("eve@example.com", PASSWORD).await.body);
    let _third = Tokens::from(&app.login("eve@example.com", PASSWORD).await.body);
    let change = |current: &'static str| json!({ "current_password": current, "new_password": "a different passphrase" });
    let res = app
        .request(
            Method::POST,
            "/identity/password",
            Some(&second.access),
            Some(change("not it at all")),
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let res = app
        .request(
            Method::POST,
            "/identity/password",
            Some(&second.access),
            Some(change(PASSWORD)),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    // Logout, then an administrator deactivates the account.
    let res = app
        .request(Method::POST, "/auth/logout", Some(&second.access), None)
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let _fourth = app.login("eve@example.com", "a different passphrase").await;
    let res = app
        .request(
            Method::POST,
            &format!("/admin/users/{eve}/deactivate"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);

    let entries = all_entries(&app, &admin).await;
    assert_eq!(
        lines(&entries),
        [
            "key.rotate success system initial",
            "user.create success system -",
            "user.login success user -",
            "user.register success user -",
            "user.login failure user invalid_password",
            "user.login failure none unknown_account",
            "user.login success user -",
            "refresh_token.reuse failure none refresh_token_reuse",
            "session.revoke success system refresh_token_reuse",
            "user.login success user -",
            "user.login success user -",
            "user.password_change failure user invalid_current_password",
            "user.password_change success user -",
            "session.revoke success user password_changed",
            "user.logout success user logout",
            "user.login success user -",
            "user.deactivate success user -",
            "session.revoke success system user_deactivated",
        ]
    );
    // Who and what: the failed login of an unknown address names nobody and no target.
    let unknown = &entries[5];
    assert!(unknown["actor_id"].is_null() && unknown["target_id"].is_null());
    let root = user_id(&app, ROOT).await;
    let deactivation = &entries[16];
    assert_eq!(deactivation["actor_id"], root.as_str());
    assert_eq!(deactivation["target_type"], "user");
    assert_eq!(deactivation["target_id"], eve.as_str());
    for e in &entries[3..] {
        if e["actor_type"] == "user" && e["action"] != "user.deactivate" {
            assert_eq!(e["actor_id"], eve.as_str(), "{e}");
        }
    }
    // Request facts are recorded with every HTTP-caused entry.
    let login = &entries[6];
    assert_eq!(login["ip"], "127.0.0.1");
    assert!(
        login["correlation_id"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    assert_eq!(
        login["occurred_at"],
        tessera::clock::rfc3339(crate::helpers::START)
    );
}

/// A full flow touching every secret Tessera handles: passwords (right, wrong, changed, reset),
/// access and refresh tokens (used, rotated, replayed), verification and reset tokens, an
/// OAuth client's secrets and its password-grant tokens. Returns every one of them.
pub async fn full_flow(app: &TestApp, sink: &SmtpSink, admin: &str) -> Vec<String> {
    let mut secrets: Vec<String> = vec![PASSWORD.into(), admin.to_string()];
    let wrong = "a wrong guess at it";
    let new_password = "the changed passphrase";
    let reset_password = "the passphrase after reset";
    secrets.extend([wrong, new_password, reset_password].map(String::from));

    // Register (verification mail), verify, log in right and wrong.
    assert_eq!(
        app.register("kim@example.com").await.status,
        StatusCode::CREATED
    );
    let (_, verify) = find_link(&sink.next_message().await, "verify-email");
    assert_eq!(
        app.post("/auth/verify-email", json!({ "token": verify }))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    secrets.push(verify);
    app.login("kim@example.com", wrong).await;
    app.login("kim+typo@example.com", PASSWORD).await;
    let first = Tokens::from(&app.login("kim@example.com", PASSWORD).await.body);
    // Refresh, then reuse detection.
    let rotated = Tokens::from(&app.refresh(&first.refresh).await.body);
    app.clock.advance(60);
    app.refresh(&first.refresh).await;
    secrets.extend(
        [&first, &rotated]
            .iter()
            .flat_map(|t| [t.access.clone(), t.refresh.clone()]),
    );
    // Password change.
    let second = Tokens::from(&app.login("kim@example.com", PASSWORD).await.body);
    let res = app
        .request(
            Method::POST,
            "/identity/password",
            Some(&second.access),
            Some(json!({ "current_password": PASSWORD, "new_password": new_password })),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    // Reset by email.
    app.post(
        "/auth/request-password-reset",
        json!({ "email": "kim@example.com" }),
    )
    .await;
    let (_, reset) = find_link(&sink.next_message().await, "reset-password");
    let res = app
        .post(
            "/auth/reset-password",
            json!({ "token": reset, "new_password": reset_password }),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    secrets.push(reset);
    // An OAuth client created and its secret rotated through the admin API.
    let spec = json!({
        "name": "Backend", "grant_types": ["client_credentials", "password"], "scopes": ["openid"]
    });
    let created = app
        .request(Method::POST, "/admin/clients", Some(admin), Some(spec))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let client_id = created.body["client_id"].as_str().unwrap().to_string();
    secrets.push(created.body["client_secret"].as_str().unwrap().into());
    let rotated_secret = app
        .request(
            Method::POST,
            &format!("/admin/clients/{client_id}/rotate-secret"),
            Some(admin),
            None,
        )
        .await;
    let client_secret = rotated_secret.body["client_secret"]
        .as_str()
        .unwrap()
        .to_string();
    secrets.push(client_secret.clone());
    // The OAuth password grant, right and wrong.
    for password in [reset_password, wrong] {
        let res = app
            .client
            .post(format!("{}/oauth2/token", app.base))
            .basic_auth(&client_id, Some(&client_secret))
            .form(&[
                ("grant_type", "password"),
                ("username", "kim@example.com"),
                ("password", password),
            ])
            .send()
            .await
            .unwrap();
        if password == reset_password {
            assert_eq!(res.status(), StatusCode::OK);
            let body: Value = res.json().await.unwrap();
            assert!(body["access_token"].is_string(), "{body}");
            for key in ["access_token", "refresh_token", "id_token"] {
                if let Some(t) = body[key].as_str() {
                    secrets.push(t.into());
                }
            }
        }
    }
    // Logout.
    let third = Tokens::from(&app.login("kim@example.com", reset_password).await.body);
    app.request(Method::POST, "/auth/logout", Some(&third.access), None)
        .await;
    secrets.extend([third.access, third.refresh]);
    secrets
}

async fn no_password_token_or_secret_reaches_the_audit_log_or_the_outbox(b: Backend) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with(b, |c| sink.configure(c)).await;
    let admin = admin_token(&app).await;
    let secrets = full_flow(&app, &sink, &admin).await;
    let entries = all_entries(&app, &admin).await;
    assert!(entries.len() >= 15, "{entries:?}");
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in [
        "user.email_verify",
        "user.password_reset",
        "client.rotate_secret",
        "user.logout",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    // Logins of every channel are recorded: admin, three JSON logins and the password grant.
    let logins = entries
        .iter()
        .filter(|e| e["action"] == "user.login" && e["result"] == "success")
        .count();
    assert_eq!(logins, 5);
    let audit_text = serde_json::to_string(&entries).unwrap();
    let outbox = tessera::store::outbox::list(app.state.store.pool(), None, 0, 10_000)
        .await
        .unwrap();
    assert!(!outbox.is_empty());
    let outbox_text: String = outbox
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {:?}\n",
                r.event_id, r.event_type, r.subject, r.envelope, r.last_error
            )
        })
        .collect();
    for secret in &secrets {
        assert!(secret.len() >= 16, "too short to search for: {secret}");
        assert!(
            !audit_text.contains(secret.as_str()),
            "a secret is in the audit log: {secret}"
        );
        assert!(
            !outbox_text.contains(secret.as_str()),
            "a secret is in the outbox: {secret}"
        );
        // Nor any long piece of it (a token cut short, a password inside other text).
        let head: String = secret.chars().take(12).collect();
        assert!(
            !audit_text.contains(&head),
            "a piece of a secret is in the audit log: {head}"
        );
    }
    // Nor the email addresses: the audit log names users by id only.
    assert!(!audit_text.contains("kim@example.com") && !audit_text.contains("kim+typo"));
}

async fn admin_lists_the_audit_log_with_filters_and_a_cursor(b: Backend) {
    let app = TestApp::spawn(b).await;
    let admin = admin_token(&app).await;
    let user = app.signed_in("lee@example.com").await;
    let lee = user_id(&app, "lee@example.com").await;
    app.clock.advance(100);
    app.login("lee@example.com", "not the password").await;
    app.login("lee@example.com", "not the password").await;

    // Operators only.
    assert_error(
        &app.get("/admin/audit", &user.access).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let list = |query: String| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let res = app.get(&format!("/admin/audit?{query}"), &admin).await;
            assert_eq!(res.status, StatusCode::OK, "{}", res.text);
            res.body
        }
    };
    let failures = list("result=failure".into()).await;
    assert_eq!(failures["entries"].as_array().unwrap().len(), 2);
    let by_lee = list(format!("actor={lee}&action=user.login")).await;
    assert_eq!(
        lines(by_lee["entries"].as_array().unwrap()),
        [
            "user.login success user -",
            "user.login failure user invalid_password",
            "user.login failure user invalid_password",
        ]
    );
    let on_lee = list(format!("target={lee}&action=user.register")).await;
    assert_eq!(on_lee["entries"].as_array().unwrap().len(), 1);
    // Time range: `from` inclusive, `to` exclusive, RFC 3339 or Unix seconds.
    let later = crate::helpers::START + 100;
    let recent = list(format!("from={later}")).await;
    assert_eq!(recent["entries"].as_array().unwrap().len(), 2);
    let to = tessera::clock::rfc3339(later).replace('+', "%2B");
    let earlier = list(format!("to={to}&actor={lee}")).await;
    assert_eq!(
        lines(earlier["entries"].as_array().unwrap()),
        ["user.register success user -", "user.login success user -",]
    );
    // Cursor pagination: pages of 2 cover everything once, in order.
    let all = all_entries(&app, &admin).await;
    let mut seen = Vec::new();
    let mut query = "limit=2".to_string();
    loop {
        let page = list(query.clone()).await;
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= 2);
        seen.extend(entries.iter().map(|e| e["id"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("limit=2&after={c}"),
            None => break,
        }
    }
    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(seen, ids);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    // Bad filters are 422s naming the field.
    for (query, field) in [
        ("result=maybe", "result"),
        ("from=yesterday", "from"),
        ("after=x", "after"),
    ] {
        let res = app.get(&format!("/admin/audit?{query}"), &admin).await;
        assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(res.body["fields"][0]["field"], field);
    }
}

async fn audit_rows_cannot_be_updated_and_old_ones_are_purged(b: Backend) {
    let app = TestApp::spawn(b).await;
    let admin = admin_token(&app).await;
    app.signed_in("max@example.com").await;
    // Append-only: the database refuses to change a row.
    let update =
        sqlx::query("UPDATE audit_log SET result = 'success' WHERE result = 'failure' OR 1 = 1")
            .execute(app.state.store.writer())
            .await;
    assert!(update.is_err(), "an audit row was updated");
    let before = all_entries(&app, &admin).await;
    // key.rotate (first start), user.create, user.login (admin), user.register, user.login.
    assert_eq!(before.len(), 5, "{before:?}");

    // Within retention nothing goes; past it, everything older does, and the purge says so.
    let ctx = tessera::context::RequestContext::system();
    let store = &app.state.store;
    let now = app.clock.now();
    assert_eq!(
        tessera::audit::purge(store, 365, &ctx, now + 364 * 86_400)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        tessera::audit::purge(store, 0, &ctx, now + 9_999 * 86_400)
            .await
            .unwrap(),
        0
    );
    app.clock.advance(366 * 86_400);
    let purged = tessera::audit::purge(store, 365, &ctx, app.clock.now())
        .await
        .unwrap();
    assert_eq!(purged, 5);
    let rows = tessera::store::audit::list(
        store.pool(),
        &tessera::store::audit::AuditQuery {
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].action.as_str(), rows[0].actor_type.as_str()),
        ("audit.purge", "system")
    );
}

/// Traces are off in this process (no exporter), yet a caller's W3C `traceparent` still names
/// the trace of what it caused: the audit entry and the event envelope carry its trace id. A
/// malformed or all-zero `traceparent` is ignored (W3C Trace Context §3.2.2.3), never an error.
async fn an_incoming_traceparent_names_the_trace_in_audit_entries_and_events(b: Backend) {
    let app = TestApp::spawn(b).await;
    let admin = admin_token(&app).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let cases = [
        (
            "traced@example.com",
            format!("00-{trace}-b7ad6b7169203331-01"),
        ),
        (
            "zero@example.com",
            format!("00-{}-b7ad6b7169203331-01", "0".repeat(32)),
        ),
        (
            "short@example.com",
            "00-0af7651916cd43dd-b7ad6b7169203331-01".into(),
        ),
        ("bare@example.com", String::new()),
    ];
    for (email, traceparent) in &cases {
        let mut req = app
            .client
            .post(format!("{}/auth/register", app.base))
            .json(&json!({ "email": email, "password": PASSWORD }));
        if !traceparent.is_empty() {
            req = req.header("traceparent", traceparent);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED, "{traceparent}");
    }
    let entries = all_entries(&app, &admin).await;
    for (i, (email, _)) in cases.iter().enumerate() {
        let id = user_id(&app, email).await;
        let entry = entries
            .iter()
            .find(|e| e["action"] == "user.register" && e["target_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no user.register entry for {email}"));
        let event = &crate::helpers::events_of(&app, &id).await[0];
        if i == 0 {
            assert_eq!(entry["trace_id"], trace, "{entry}");
            assert_eq!(event["trace_id"], trace, "{event}");
            assert_eq!(
                event["traceparent"],
                format!("00-{trace}-b7ad6b7169203331-01"),
                "passed through as the caller sent it"
            );
        } else {
            assert!(entry.get("trace_id").is_none(), "{email}: {entry}");
            assert!(event.get("trace_id").is_none(), "{email}: {event}");
        }
    }
}
