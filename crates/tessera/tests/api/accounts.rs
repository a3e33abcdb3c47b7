//! Registration, login, profile, password change.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tessera::store::users;

use crate::helpers::{Backend, PASSWORD, TestApp, assert_error};
use crate::on_both_backends;

on_both_backends!(
    register_returns_the_user_without_secrets,
    register_rejects_duplicate_email_case_insensitively,
    register_names_each_invalid_field,
    login_returns_a_bearer_token_pair_that_is_not_cached,
    login_failures_are_indistinguishable,
    login_rehashes_weaker_argon2_hashes,
    login_upgrades_imported_bcrypt_hashes,
    me_returns_the_account,
    profile_can_be_read_and_patched,
    profile_patch_validates_fields,
    password_change_revokes_other_sessions,
    password_change_requires_the_current_password,
);

async fn register_returns_the_user_without_secrets(b: Backend) {
    let app = TestApp::spawn(b).await;
    let res = app
        .post(
            "/auth/register",
            json!({"email": "Ada@Example.com", "password": PASSWORD, "display_name": "Ada"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    assert_eq!(res.body["email"], "Ada@Example.com");
    assert_eq!(res.body["email_verified"], false);
    assert_eq!(res.body["status"], "active");
    assert_eq!(res.body["roles"], json!([]));
    assert!(res.body["id"].as_str().is_some_and(|id| id.len() == 36));
    assert!(
        res.body["created_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("2027-"))
    );
    assert!(
        !res.text.contains("argon2") && !res.text.contains(PASSWORD) && !res.text.contains("hash")
    );
    let stored = users::find_by_email(app.state.store.pool(), "ada@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(stored.password_hash.unwrap().starts_with("$argon2id$"));
}

async fn register_rejects_duplicate_email_case_insensitively(b: Backend) {
    let app = TestApp::spawn(b).await;
    assert_eq!(
        app.register("bob@example.com").await.status,
        StatusCode::CREATED
    );
    let res = app.register("BOB@example.COM").await;
    assert_error(&res, StatusCode::CONFLICT, "email_taken");
}

async fn register_names_each_invalid_field(b: Backend) {
    let app = TestApp::spawn(b).await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": PASSWORD}),
            vec!["email"],
        ),
        (
            json!({"email": "a@example.com", "password": "short"}),
            vec!["password"],
        ),
        (
            json!({"email": "a@example.com", "password": "x".repeat(257)}),
            vec!["password"],
        ),
        (
            json!({"email": "", "password": ""}),
            vec!["email", "password"],
        ),
        (
            json!({"email": "a@example.com", "password": PASSWORD, "display_name": "x".repeat(101)}),
            vec!["display_name"],
        ),
    ];
    for (body, fields) in cases {
        let res = app.post("/auth/register", body.clone()).await;
        assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        let named: Vec<&str> = res.body["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap())
            .collect();
        assert_eq!(named, fields, "{body}");
    }
    assert!(
        users::list(app.state.store.pool(), None, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing written"
    );
}

async fn login_returns_a_bearer_token_pair_that_is_not_cached(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("c@example.com").await;
    let res = app.login("C@EXAMPLE.com", PASSWORD).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body["token_type"], "Bearer");
    assert_eq!(res.body["expires_in"], 900);
    assert_eq!(res.body["refresh_expires_in"], 7 * 24 * 3600);
    assert!(
        res.body["access_token"]
            .as_str()
            .unwrap()
            .split('.')
            .count()
            == 3
    );
    assert!(
        res.body["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("tsr_")
    );
    assert_eq!(res.headers["cache-control"], "no-store");
    assert_eq!(res.headers["pragma"], "no-cache");
}

async fn login_failures_are_indistinguishable(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("d@example.com").await;
    app.register("gone@example.com").await;
    sqlx::query(
        "UPDATE users SET status = 'deactivated' WHERE email_normalized = 'gone@example.com'",
    )
    .execute(app.state.store.writer())
    .await
    .unwrap();
    let wrong_password = app.login("d@example.com", "not the password").await;
    let unknown = app.login("nobody@example.com", PASSWORD).await;
    let deactivated = app.login("gone@example.com", PASSWORD).await;
    for res in [&wrong_password, &unknown, &deactivated] {
        assert_error(res, StatusCode::UNAUTHORIZED, "invalid_credentials");
        assert_eq!(res.body["message"], wrong_password.body["message"]);
    }
}

async fn login_rehashes_weaker_argon2_hashes(b: Backend) {
    let app = TestApp::spawn(b).await;
    let weak = tessera::passwords::Passwords::new(&tessera::config::PasswordConfig {
        argon2_memory_kib: 32,
        argon2_iterations: 1,
        ..Default::default()
    })
    .unwrap();
    let hash = weak.hash(PASSWORD).await.unwrap();
    tessera::accounts::create(
        &app.state.store,
        "e@example.com",
        Some(&hash),
        None,
        &[],
        None,
        1,
    )
    .await
    .unwrap();
    assert_eq!(
        app.login("e@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
    let stored = users::find_by_email(app.state.store.pool(), "e@example.com")
        .await
        .unwrap()
        .unwrap()
        .password_hash
        .unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=64,t=1,p=1$"),
        "rehashed to the configured parameters: {stored}"
    );
    assert_eq!(
        app.login("e@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
}

async fn login_upgrades_imported_bcrypt_hashes(b: Backend) {
    let app = TestApp::spawn(b).await;
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    tessera::accounts::create(
        &app.state.store,
        "f@example.com",
        Some(&hash),
        None,
        &[],
        None,
        1,
    )
    .await
    .unwrap();
    assert_error(
        &app.login("f@example.com", "wrong password!").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    assert_eq!(
        app.login("f@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
    let stored = users::find_by_email(app.state.store.pool(), "f@example.com")
        .await
        .unwrap()
        .unwrap()
        .password_hash
        .unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert_eq!(
        app.login("f@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
}

async fn me_returns_the_account(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.signed_in("g@example.com").await;
    let res = app.get("/identity/me", &t.access).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    for key in [
        "id",
        "email",
        "email_verified",
        "roles",
        "status",
        "created_at",
    ] {
        assert!(res.body.get(key).is_some(), "{key} missing in {}", res.text);
    }
    assert_eq!(res.body["email"], "g@example.com");
    let res = app.request(Method::GET, "/identity/me", None, None).await;
    assert_error(&res, StatusCode::UNAUTHORIZED, "unauthenticated");
    assert!(
        res.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
}

async fn profile_can_be_read_and_patched(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.signed_in("h@example.com").await;
    let res = app.get("/identity/profile", &t.access).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body["preferences"], json!({}));
    let patch = json!({"display_name": "Hilda", "given_name": "Hilda", "locale": "en-GB", "timezone": "Europe/London", "preferences": {"theme": "dark"}});
    let res = app
        .request(
            Method::PATCH,
            "/identity/profile",
            Some(&t.access),
            Some(patch),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let res = app
        .request(
            Method::PATCH,
            "/identity/profile",
            Some(&t.access),
            Some(json!({"given_name": null})),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let res = app.get("/identity/profile", &t.access).await;
    assert_eq!(res.body["display_name"], "Hilda", "absent fields stay");
    assert_eq!(res.body["given_name"], json!(null), "null clears");
    assert_eq!(res.body["locale"], "en-GB");
    assert_eq!(res.body["preferences"], json!({"theme": "dark"}));
}

async fn profile_patch_validates_fields(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.signed_in("i@example.com").await;
    let big = json!({ "blob": "x".repeat(17 * 1024) });
    for (patch, field) in [
        (json!({"preferences": [1, 2]}), "preferences"),
        (json!({"preferences": big}), "preferences"),
        (json!({"locale": "en GB<script>"}), "locale"),
        (json!({"display_name": "x".repeat(101)}), "display_name"),
        (json!({"timezone": "a\u{0}b"}), "timezone"),
    ] {
        let res = app
            .request(
                Method::PATCH,
                "/identity/profile",
                Some(&t.access),
                Some(patch),
            )
            .await;
        assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(res.body["fields"][0]["field"], field);
    }
    let res = app
        .request(
            Method::PATCH,
            "/identity/profile",
            Some(&t.access),
            Some(json!({"nickname": "x"})),
        )
        .await;
    assert_eq!(
        res.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown fields are refused: {}",
        res.text
    );
    assert_eq!(
        app.get("/identity/profile", &t.access).await.body["preferences"],
        json!({}),
        "nothing changed"
    );
}

async fn password_change_revokes_other_sessions(b: Backend) {
    let app = TestApp::spawn(b).await;
    let first = app.signed_in("j@example.com").await;
    let second = crate::helpers::Tokens::from(&app.login("j@example.com", PASSWORD).await.body);
    let body = json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"});
    let res = app
        .request(
            Method::POST,
            "/identity/password",
            Some(&first.access),
            Some(body),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert_eq!(
        app.get("/identity/me", &first.access).await.status,
        StatusCode::OK,
        "the current session stays"
    );
    assert_error(
        &app.get("/identity/me", &second.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    assert_error(
        &app.refresh(&second.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    );
    assert_error(
        &app.login("j@example.com", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    assert_eq!(
        app.login("j@example.com", "a brand new passphrase")
            .await
            .status,
        StatusCode::OK
    );
}

async fn password_change_requires_the_current_password(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.signed_in("k@example.com").await;
    let res = app
        .request(
            Method::POST,
            "/identity/password",
            Some(&t.access),
            Some(json!({"current_password": "wrong one!", "new_password": "another passphrase"})),
        )
        .await;
    assert_error(&res, StatusCode::FORBIDDEN, "invalid_current_password");
    let res = app
        .request(
            Method::POST,
            "/identity/password",
            Some(&t.access),
            Some(json!({"current_password": PASSWORD, "new_password": "short"})),
        )
        .await;
    assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(res.body["fields"][0]["field"], "new_password");
    assert_eq!(
        app.login("k@example.com", PASSWORD).await.status,
        StatusCode::OK,
        "unchanged"
    );
    // Guessing the current password is throttled like logins (each try costs two hashes).
    let wrong = json!({"current_password": "guess guess", "new_password": "another passphrase"});
    // Two attempts above already drew from the bucket.
    for _ in 0..app.config.rate_limit.login_account.burst - 2 {
        let res = app
            .request(
                Method::POST,
                "/identity/password",
                Some(&t.access),
                Some(wrong.clone()),
            )
            .await;
        assert_eq!(res.status, StatusCode::FORBIDDEN);
    }
    let res = app
        .request(
            Method::POST,
            "/identity/password",
            Some(&t.access),
            Some(wrong),
        )
        .await;
    assert_error(&res, StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
}
