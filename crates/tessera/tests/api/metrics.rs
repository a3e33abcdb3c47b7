//! `/metrics`: who may scrape it, and what a scripted flow leaves in it.

use std::collections::HashMap;

use reqwest::{Method, StatusCode};

use crate::authz::create_admin;
use crate::helpers::{Backend, PASSWORD, TestApp, Tokens};
use crate::on_both_backends;

on_both_backends!(
    metrics_count_a_scripted_flow_and_are_only_for_scrapers,
    metrics_are_served_without_a_credential_on_their_own_address,
);

const SCRAPE_TOKEN: &str = "scrape-0123456789abcdef0123456789abcdef";

/// `name{labels}` → value, from the Prometheus text format.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(app: &TestApp, token: &str) -> (String, HashMap<String, f64>) {
    let res = app
        .client
        .get(format!("{}/metrics", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = res.text().await.unwrap();
    let values = parse(&text);
    (text, values)
}

/// How much `series` grew between two scrapes (the recorder is the process's: other tests add
/// to it too, so growth is at least what this test did).
fn grew(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    let a = after
        .get(series)
        .copied()
        .unwrap_or_else(|| panic!("{series} is not in the scrape"));
    a - before.get(series).copied().unwrap_or(0.0)
}

async fn metrics_count_a_scripted_flow_and_are_only_for_scrapers(b: Backend) {
    let app = TestApp::spawn_with(b, |c| {
        c.metrics.token = Some(SCRAPE_TOKEN.to_string().into());
    })
    .await;
    create_admin(&app, "root@example.com").await;
    let admin = Tokens::from(&app.login("root@example.com", PASSWORD).await.body).access;
    let user = app.signed_in("user@example.com").await;
    assert_eq!(
        app.request(Method::GET, "/metrics", None, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/metrics", &user.access).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/metrics", "scrape-wrong").await.status,
        StatusCode::UNAUTHORIZED
    );
    let (_, before) = scrape(&app, SCRAPE_TOKEN).await;
    assert_eq!(app.get("/metrics", &admin).await.status, StatusCode::OK);

    // The script: a good and a bad login, a refresh, a reused refresh token, an admin read.
    let t = app.login("user@example.com", PASSWORD).await;
    assert_eq!(t.status, StatusCode::OK);
    let t = Tokens::from(&t.body);
    assert_eq!(
        app.login("user@example.com", "wrong password!")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.refresh(&t.refresh).await.status, StatusCode::OK);
    assert_eq!(
        app.refresh(&t.refresh).await.status,
        StatusCode::UNAUTHORIZED,
        "reuse"
    );
    let id = app.get("/identity/me", &user.access).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app.get(&format!("/admin/users/{id}"), &admin).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);

    let (text, after) = scrape(&app, SCRAPE_TOKEN).await;
    for (series, at_least) in [
        (
            r#"tessera_http_requests_total{method="POST",route="/auth/login",status="200"}"#,
            1.0,
        ),
        (
            r#"tessera_http_requests_total{method="POST",route="/auth/login",status="401"}"#,
            1.0,
        ),
        (
            r#"tessera_http_requests_total{method="GET",route="/admin/users/{id}",status="200"}"#,
            1.0,
        ),
        (
            r#"tessera_http_request_duration_seconds_count{method="POST",route="/auth/refresh"}"#,
            2.0,
        ),
        (
            r#"tessera_logins_total{method="password",result="success"}"#,
            1.0,
        ),
        (
            r#"tessera_logins_total{method="password",result="failure"}"#,
            1.0,
        ),
        (r#"tessera_tokens_issued_total{grant="tessera_login"}"#, 1.0),
        (
            r#"tessera_tokens_issued_total{grant="tessera_refresh"}"#,
            1.0,
        ),
        ("tessera_refresh_token_reuse_total", 1.0),
        // Two logins: each waited (a little) for a hashing thread.
        ("tessera_password_hash_wait_seconds_count", 2.0),
    ] {
        let g = grew(&before, &after, series);
        assert!(
            g >= at_least,
            "{series} grew by {g}, expected at least {at_least}"
        );
    }
    // Route templates, never concrete paths: an id never becomes a label.
    assert!(!text.contains(&id), "a user id in the metrics");
    assert!(!text.contains(SCRAPE_TOKEN) && !text.contains(&admin));
    for gauge in [
        r#"tessera_outbox_events{status="pending"}"#,
        "tessera_outbox_relay_lag_seconds",
        "tessera_signing_key_age_seconds",
        r#"tessera_db_pool_connections{state="idle"}"#,
        "tessera_password_hash_queue_depth",
    ] {
        assert!(after.contains_key(gauge), "{gauge} missing:\n{text}");
    }
    assert!(after[r#"tessera_outbox_events{status="pending"}"#] >= 1.0);
    // Buckets, not a summary.
    assert!(text.contains(r#"tessera_http_request_duration_seconds_bucket{method="POST",route="/auth/login",le="0.005"}"#), "{text}");
}

async fn metrics_are_served_without_a_credential_on_their_own_address(b: Backend) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let app = TestApp::spawn_with(b, |c| c.metrics.listen = Some(addr.clone())).await;
    app.signed_in("user@example.com").await;
    let url = format!("http://{addr}/metrics");
    let mut text = String::new();
    for _ in 0..50 {
        if let Ok(res) = app.client.get(&url).send().await {
            assert_eq!(res.status(), StatusCode::OK);
            text = res.text().await.unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(text.contains("tessera_http_requests_total"), "{text}");
    // Only /metrics there.
    let res = app
        .client
        .get(format!("http://{addr}/identity/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // The main listener still wants a credential.
    assert_eq!(
        app.request(Method::GET, "/metrics", None, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}
