//! The password policy (NIST SP 800-63B) at every place a password is set: registration, change
//! and reset. Breached passwords and the user's own email name are refused with a 422 naming
//! the rule, and nothing changes.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Backend, PASSWORD, TestApp, assert_error, events_of};
use crate::on_both_backends;

on_both_backends!(
    register_refuses_breached_passwords_and_the_email_name,
    password_change_refuses_breached_passwords,
    password_reset_refuses_breached_passwords,
);

const BREACHED: &str = "Password123";
const BREACHED_MESSAGE: &str = "password: is too common (found in a list of breached passwords)";

async fn register_refuses_breached_passwords_and_the_email_name(b: Backend) {
    let app = TestApp::spawn(b).await;
    for (email, password, message) in [
        ("ann@example.com", BREACHED, BREACHED_MESSAGE),
        ("ann@example.com", "iloveyou2", BREACHED_MESSAGE),
        (
            "Margaret@example.com",
            "margaret-1815-london",
            "password: must not contain your email address",
        ),
    ] {
        let res = app
            .post(
                "/auth/register",
                json!({ "email": email, "password": password }),
            )
            .await;
        assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(res.body["message"], message, "{password}");
        assert_eq!(res.body["fields"][0]["field"], "password");
    }
    // Nothing was created; a good password then works.
    let users = tessera::store::users::list(app.state.store.pool(), None, 10)
        .await
        .unwrap();
    assert!(users.is_empty());
    assert_eq!(
        app.register("ann@example.com").await.status,
        StatusCode::CREATED
    );
}

async fn password_change_refuses_breached_passwords(b: Backend) {
    let app = TestApp::spawn(b).await;
    let tokens = app.signed_in("cid@example.com").await;
    for (new, message) in [
        (
            BREACHED,
            "new_password: is too common (found in a list of breached passwords)",
        ),
        (
            "cid-secret-words",
            "new_password: must not contain your email address",
        ),
    ] {
        let res = app
            .request(
                Method::POST,
                "/identity/password",
                Some(&tokens.access),
                Some(json!({ "current_password": PASSWORD, "new_password": new })),
            )
            .await;
        assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(res.body["message"], message);
    }
    // The old password still works, the session is still live.
    assert_eq!(
        app.login("cid@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/identity/me", &tokens.access).await.status,
        StatusCode::OK
    );
}

async fn password_reset_refuses_breached_passwords(b: Backend) {
    let app = TestApp::spawn_with(b, |c| c.mail.transport = "events".into()).await;
    app.register("dee@example.com").await;
    let id = tessera::store::users::find_by_email(app.state.store.pool(), "dee@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    app.post(
        "/auth/request-password-reset",
        json!({ "email": "dee@example.com" }),
    )
    .await;
    let events = events_of(&app, &id).await;
    let link = events
        .iter()
        .rev()
        .find(|e| e["event_type"] == "identity.password.reset_requested.v1")
        .and_then(|e| e["data"]["link"].as_str())
        .unwrap()
        .to_string();
    let token = link.split("token=").nth(1).unwrap();
    let res = app
        .post(
            "/auth/reset-password",
            json!({ "token": token, "new_password": BREACHED }),
        )
        .await;
    assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(
        res.body["message"],
        "new_password: is too common (found in a list of breached passwords)"
    );
    let res = app
        .post(
            "/auth/reset-password",
            json!({ "token": token, "new_password": "dee.is.me.again" }),
        )
        .await;
    assert_eq!(
        res.body["message"],
        "new_password: must not contain your email address"
    );
    // The token was not used up: a good password still goes through.
    let res = app
        .post(
            "/auth/reset-password",
            json!({ "token": token, "new_password": "a brand new passphrase" }),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert_eq!(
        app.login("dee@example.com", "a brand new passphrase")
            .await
            .status,
        StatusCode::OK
    );
}
