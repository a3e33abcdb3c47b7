//! Bad input, as a table: every case is a 4xx JSON error with a correlation id, never a 5xx,
//! and nothing is written.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Backend, PASSWORD, TestApp, assert_error};
use crate::on_both_backends;

on_both_backends!(
    nul_bytes_anywhere_get_a_4xx_not_a_database_error,
    arbitrary_bodies_always_get_a_4xx,
    bad_requests_get_clear_4xx_json_errors_and_write_nothing,
    correlation_id_is_echoed_or_generated
);

/// name, method, path, content type, body, expected status, expected error code.
type Case<'a> = (
    &'a str,
    Method,
    &'a str,
    Option<&'a str>,
    Vec<u8>,
    StatusCode,
    &'a str,
);

async fn bad_requests_get_clear_4xx_json_errors_and_write_nothing(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.signed_in("owner@example.com").await;
    let json_ct = Some("application/json");
    let huge = format!(
        r#"{{"email":"a@example.com","password":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "malformed JSON",
            Method::POST,
            "/auth/register",
            json_ct,
            b"{\"email\":".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "not JSON at all",
            Method::POST,
            "/auth/login",
            json_ct,
            b"email=a&password=b".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "invalid UTF-8",
            Method::POST,
            "/auth/register",
            json_ct,
            b"{\"email\":\"\xff\xfe@x.io\",\"password\":\"abcdefghij\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "wrong content type",
            Method::POST,
            "/auth/register",
            Some("text/plain"),
            br#"{"email":"a@b.c","password":"abcdefghij"}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "no content type",
            Method::POST,
            "/auth/login",
            None,
            br#"{"email":"a@b.c","password":"abcdefghij"}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "missing field",
            Method::POST,
            "/auth/register",
            json_ct,
            br#"{"email":"a@example.com"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "mistyped field",
            Method::POST,
            "/auth/register",
            json_ct,
            br#"{"email":42,"password":"abcdefghij"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "JSON array body",
            Method::POST,
            "/auth/login",
            json_ct,
            b"[1,2,3]".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "empty body",
            Method::POST,
            "/auth/refresh",
            json_ct,
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "body over the limit",
            Method::POST,
            "/auth/register",
            json_ct,
            huge.into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "absurd email",
            Method::POST,
            "/auth/register",
            json_ct,
            json!({"email": format!("{}@example.com", "a".repeat(60_000)), "password": PASSWORD})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "absurd password at login",
            Method::POST,
            "/auth/login",
            json_ct,
            json!({"email": "owner@example.com", "password": "p".repeat(60_000)})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "null password",
            Method::POST,
            "/auth/login",
            json_ct,
            br#"{"email":"owner@example.com","password":null}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "refresh token of wrong length",
            Method::POST,
            "/auth/refresh",
            json_ct,
            br#"{"refresh_token":"tsr_short"}"#.to_vec(),
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
        ),
        (
            "refresh token of wrong charset",
            Method::POST,
            "/auth/refresh",
            json_ct,
            json!({"refresh_token": format!("tsr_{}", "!".repeat(43))})
                .to_string()
                .into_bytes(),
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
        ),
        (
            "refresh token with unicode",
            Method::POST,
            "/auth/refresh",
            json_ct,
            json!({"refresh_token": format!("tsr_{}", "é".repeat(43))})
                .to_string()
                .into_bytes(),
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
        ),
        (
            "unknown route",
            Method::GET,
            "/auth/nothing-here",
            None,
            Vec::new(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "wrong method",
            Method::GET,
            "/auth/login",
            None,
            Vec::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "bad query",
            Method::POST,
            "/auth/logout?all=perhaps",
            None,
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "logout body without token",
            Method::POST,
            "/auth/logout",
            json_ct,
            b"{}".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "logout body malformed",
            Method::POST,
            "/auth/logout",
            json_ct,
            b"{".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
    ];
    for (name, method, path, ct, body, status, code) in cases {
        let res = app.raw(method, path, ct, body).await;
        assert!(
            res.status.is_client_error(),
            "{name}: {} {}",
            res.status,
            res.text
        );
        assert_error(&res, status, code);
    }
    // Bad Authorization headers on a protected route.
    for header in [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer ",
        "bearer x.y.z",
        "Token abc",
    ] {
        let res = app
            .client
            .get(format!("{}/identity/me", app.base))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{header}");
    }
    // A field-level message names the field.
    let res = app
        .raw(
            Method::POST,
            "/auth/register",
            json_ct,
            br#"{"email":"a@example.com"}"#.to_vec(),
        )
        .await;
    assert!(
        res.body["message"].as_str().unwrap().contains("password"),
        "{}",
        res.text
    );
    // Nothing was written: still exactly one user, one session.
    let (users,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
        .fetch_one(app.state.store.pool())
        .await
        .unwrap();
    let (sessions,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sessions")
        .fetch_one(app.state.store.pool())
        .await
        .unwrap();
    assert_eq!((users, sessions), (1, 1));
    assert_eq!(
        app.get("/identity/me", &t.access).await.status,
        StatusCode::OK
    );
}

async fn correlation_id_is_echoed_or_generated(b: Backend) {
    let app = TestApp::spawn(b).await;
    let res = app
        .client
        .get(format!("{}/nowhere", app.base))
        .header("x-correlation-id", "req-12345")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-correlation-id"], "req-12345");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["correlation_id"], "req-12345");
    let res = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    let generated = res.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(generated.len(), 36);
    // An unusable id (too long, control characters) is replaced, not echoed.
    let res = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-correlation-id", "x".repeat(500))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-correlation-id"].len(), 36);
}

/// Property-style: arbitrary bytes (proptest-generated) as JSON or form bodies of every public
/// POST endpoint always get a 4xx, never a 5xx.
async fn arbitrary_bodies_always_get_a_4xx(b: Backend) {
    use proptest::strategy::{Strategy, ValueTree};
    let app = TestApp::spawn_with(b, |c| c.rate_limit.enabled = false).await;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let bodies = proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600);
    let json_like = "\\{\"(email|password|refresh_token|token)\":(\"[^\"]{0,40}\"|[0-9]{1,5}|null|true|\\[\\]),?\"?[a-z]{0,8}\"?:?.{0,20}\\}";
    let texts = proptest::string::string_regex(json_like).unwrap();
    let endpoints = [
        ("/auth/register", "application/json"),
        ("/auth/login", "application/json"),
        ("/auth/refresh", "application/json"),
        ("/auth/logout", "application/json"),
        ("/auth/verify-email", "application/json"),
        ("/auth/reset-password", "application/json"),
        ("/oauth2/token", "application/x-www-form-urlencoded"),
        ("/oauth2/introspect", "application/x-www-form-urlencoded"),
        ("/oauth2/revoke", "application/x-www-form-urlencoded"),
        ("/oauth2/authorize", "application/x-www-form-urlencoded"),
        (
            "/auth/federated/link/email",
            "application/x-www-form-urlencoded",
        ),
        ("/link-identity", "application/x-www-form-urlencoded"),
    ];
    for i in 0..40 {
        let raw = bodies.new_tree(&mut runner).unwrap().current();
        let text = texts.new_tree(&mut runner).unwrap().current().into_bytes();
        for (path, ct) in endpoints {
            for body in [raw.clone(), text.clone()] {
                let res = app.raw(Method::POST, path, Some(ct), body.clone()).await;
                // Logout answers an unknown refresh token like a known one (204).
                let fine = res.status.is_client_error()
                    || (path == "/auth/logout" && res.status == StatusCode::NO_CONTENT);
                assert!(
                    fine,
                    "case {i} {path} {:?}: {} {}",
                    String::from_utf8_lossy(&body),
                    res.status,
                    res.text
                );
            }
        }
    }
}

/// PostgreSQL refuses NUL in text: input carrying one must be a 4xx on both backends, never the
/// database error it would cause as a 500.
async fn nul_bytes_anywhere_get_a_4xx_not_a_database_error(b: Backend) {
    use base64::Engine;
    let app = TestApp::spawn(b).await;
    let t = app.signed_in("nul@example.com").await;
    let res = app
        .post(
            "/auth/login",
            json!({"email": "nul\u{0}@example.com", "password": PASSWORD}),
        )
        .await;
    assert_error(&res, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let res = app
        .post(
            "/auth/register",
            json!({"email": "a\u{0}@example.com", "password": PASSWORD}),
        )
        .await;
    assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let res = app
        .post("/auth/request-password-reset", json!({"email": "\u{0}"}))
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);
    let res = app
        .request(
            Method::DELETE,
            "/identity/sessions/%00",
            Some(&t.access),
            None,
        )
        .await;
    assert_error(&res, StatusCode::NOT_FOUND, "not_found");
    let form = Some("application/x-www-form-urlencoded");
    for path in ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"] {
        let res = app
            .raw(
                Method::POST,
                path,
                form,
                b"grant_type=client_credentials&token=x&client_id=%00".to_vec(),
            )
            .await;
        assert_eq!(
            (res.status, res.body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{path}"
        );
    }
    let basic = base64::engine::general_purpose::STANDARD.encode("tc_\u{0}x:secret");
    let res = app
        .client
        .post(format!("{}/oauth2/token", app.base))
        .header("authorization", format!("Basic {basic}"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app
        .client
        .get(format!(
            "{}/oauth2/authorize?response_type=code&client_id=%00&nonce=%00",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.get("/identity/me", &t.access).await.status,
        StatusCode::OK
    );
}
