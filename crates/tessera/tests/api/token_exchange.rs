//! RFC 8693 token exchange: a client's own user token for a token in another tenant (or with a
//! narrower scope or audience), and a tenant API key for a short-lived JWT.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp};
use crate::oauth::token;
use crate::on_both_backends;
use crate::tenants::{add_member, api_key, claims, send, switch, team, user_id};

on_both_backends!(
    user_tokens_are_exchanged_for_another_tenant_of_the_user,
    exchanged_user_tokens_fall_with_their_family_and_membership,
    api_keys_are_exchanged_for_short_lived_jwts,
    malformed_or_foreign_exchanges_are_refused_with_rfc_6749_errors,
);

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const API_KEY: &str = "urn:tessera:params:oauth:token-type:api_key";
const RESOURCE: &str = "https://api.example.com";

/// A confidential client with its secret.
struct Client {
    id: String,
    secret: String,
}

async fn client(app: &TestApp, grants: &[&str], scopes: &[&str], may_introspect: bool) -> Client {
    let spec = tessera::oauth::clients::ClientSpec {
        name: Some("Exchanging app".into()),
        grant_types: Some(grants.iter().map(|s| s.to_string()).collect()),
        scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
        resources: Some(vec![RESOURCE.into()]),
        may_introspect: Some(may_introspect),
        ..Default::default()
    };
    let r = crate::oauth::create_client(app, spec).await;
    Client {
        id: r.id,
        secret: r.secret.expect("a confidential client"),
    }
}

/// `key` exchanged for a JWT by a client registered for the grant (RFC 8693).
pub(crate) async fn jwt_for_key(app: &TestApp, key: &str) -> String {
    let c = client(app, &[GRANT], &[], false).await;
    let (status, body) = exchange(
        app,
        &c,
        &[("subject_token", key), ("subject_token_type", API_KEY)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

async fn password_grant(app: &TestApp, c: &Client, email: &str, scope: &str) -> Value {
    let (status, _, body) = token(
        app,
        Some((&c.id, &c.secret)),
        &[
            ("grant_type", "password"),
            ("username", email),
            ("password", PASSWORD),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn exchange(app: &TestApp, c: &Client, extra: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut form = vec![("grant_type", GRANT)];
    form.extend_from_slice(extra);
    let (status, headers, body) = token(app, Some((&c.id, &c.secret)), &form).await;
    assert_eq!(headers["cache-control"], "no-store", "RFC 6749 §5.1");
    (status, body)
}

async fn introspect(app: &TestApp, c: &Client, token: &str) -> Value {
    crate::tenant_keys::introspect(app, &c.id, &c.secret, token).await
}

/// Who asks, with which form, and the status and `error` expected.
type Case<'a> = (&'a Client, Vec<(&'a str, &'a str)>, StatusCode, &'a str);

fn oauth_error(status: StatusCode, body: &Value, want_status: StatusCode, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
}

async fn user_tokens_are_exchanged_for_another_tenant_of_the_user(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let personal = claims(&ada.access)["tid"].as_str().unwrap().to_string();
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    // The personal tenant is the last one used, so the password grant lands there.
    switch(&app, &ada.access, &personal).await;
    let c = client(
        &app,
        &["password", "refresh_token", GRANT],
        &["openid", "email", "offline_access"],
        false,
    )
    .await;
    let got = password_grant(&app, &c, "ada@example.com", "openid email offline_access").await;
    let subject = got["access_token"].as_str().unwrap();
    let before = claims(subject);
    assert_eq!(before["tid"], personal.as_str());

    // RFC 8693 §2.2.1: the new token is for the same user and family, in Acme, as owner.
    let (status, body) = exchange(
        &app,
        &c,
        &[
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("tenant", "acme"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(body["scope"], "email offline_access openid");
    let after = claims(body["access_token"].as_str().unwrap());
    assert_eq!(after["tid"], acme.as_str(), "{after}");
    assert_eq!(after["tenant_roles"], json!(["owner"]));
    assert_eq!(after["sub"], before["sub"]);
    assert_eq!(after["sid"], before["sid"]);
    assert_eq!(after["client_id"], c.id.as_str());
    assert_ne!(after["jti"], before["jti"]);
    assert!(after["exp"].as_i64() <= before["exp"].as_i64());
    let seen = introspect(&app, &c, body["access_token"].as_str().unwrap()).await;
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["tid"], acme.as_str());
    // The subject token is untouched: still for the personal tenant.
    assert_eq!(
        introspect(&app, &c, subject).await["tid"],
        personal.as_str()
    );

    // A narrower scope and a registered audience; back to the personal tenant by id.
    let (status, body) = exchange(
        &app,
        &c,
        &[
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("scope", "openid"),
            ("audience", RESOURCE),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:jwt",
            ),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:jwt"
    );
    let narrow = claims(body["access_token"].as_str().unwrap());
    assert_eq!(narrow["scope"], "openid");
    assert_eq!(narrow["aud"], RESOURCE);
    assert_eq!(narrow["tid"], personal.as_str());

    // A wider scope, an unregistered audience, a tenant the user is not in: refused.
    let (status, body) = exchange(
        &app,
        &c,
        &[
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("scope", "openid profile"),
        ],
    )
    .await;
    oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_scope");
    let (status, body) = exchange(
        &app,
        &c,
        &[
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("audience", "https://elsewhere.example.com"),
        ],
    )
    .await;
    oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_target");
    let bob = app.signed_in("bob@example.com").await;
    team(&app, &bob.access, "Bob's", "bobs").await;
    for tenant in ["bobs", "no-such-tenant"] {
        let (status, body) = exchange(
            &app,
            &c,
            &[
                ("subject_token", subject),
                ("subject_token_type", ACCESS_TOKEN),
                ("tenant", tenant),
            ],
        )
        .await;
        oauth_error(status, &body, StatusCode::BAD_REQUEST, "access_denied");
    }
}

async fn exchanged_user_tokens_fall_with_their_family_and_membership(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    let ada_in = switch(&app, &ada.access, &acme).await;
    let bob = app.signed_in("bob@example.com").await;
    let bob_id = user_id(&bob);
    add_member(&app, &acme, &bob_id, &["member"]).await;
    let c = client(
        &app,
        &["password", "refresh_token", GRANT],
        &["openid", "offline_access"],
        false,
    )
    .await;

    // Removing Bob from Acme ends his exchanged token at its next use.
    let got = password_grant(&app, &c, "bob@example.com", "openid").await;
    let subject = got["access_token"].as_str().unwrap().to_string();
    let (status, body) = exchange(
        &app,
        &c,
        &[
            ("subject_token", &subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("tenant", &acme),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let in_acme = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(claims(&in_acme)["tenant_roles"], json!(["member"]));
    assert_eq!(introspect(&app, &c, &in_acme).await["active"], true);
    let res = send(
        &app,
        Method::DELETE,
        &format!("/tenants/{acme}/members/{bob_id}"),
        &ada_in.access,
        json!({}),
    )
    .await;
    assert!(res.status.is_success(), "{}", res.text);
    assert_eq!(introspect(&app, &c, &in_acme).await["active"], false);
    // ... and he cannot exchange into it again.
    let (status, body) = exchange(
        &app,
        &c,
        &[
            ("subject_token", &subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("tenant", &acme),
        ],
    )
    .await;
    oauth_error(status, &body, StatusCode::BAD_REQUEST, "access_denied");

    // Revoking the family (RFC 7009, its refresh token) ends the exchanged token too, and a
    // revoked token cannot be exchanged.
    let got = password_grant(&app, &c, "ada@example.com", "openid offline_access").await;
    let subject = got["access_token"].as_str().unwrap().to_string();
    let (status, body) = exchange(
        &app,
        &c,
        &[
            ("subject_token", &subject),
            ("subject_token_type", ACCESS_TOKEN),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let exchanged = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(claims(&exchanged)["tid"], acme.as_str(), "the last used");
    let res = app
        .client
        .post(format!("{}/oauth2/revoke", app.base))
        .basic_auth(&c.id, Some(&c.secret))
        .form(&[("token", got["refresh_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(introspect(&app, &c, &exchanged).await["active"], false);
    let (status, body) = exchange(
        &app,
        &c,
        &[
            ("subject_token", &subject),
            ("subject_token_type", ACCESS_TOKEN),
        ],
    )
    .await;
    oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
}

async fn api_keys_are_exchanged_for_short_lived_jwts(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    let ada_in = switch(&app, &ada.access, &acme).await;
    let bob = app.signed_in("bob@example.com").await;
    let bobs = team(&app, &bob.access, "Bob's", "bobs").await;
    let key = api_key(&app, &ada_in.access, &acme, &["members:read", "audit:read"]).await;
    let secret = key["key"].as_str().unwrap();
    let key_id = key["id"].as_str().unwrap();
    let rs = client(&app, &[GRANT], &[], true).await;

    for subject_type in [API_KEY, ACCESS_TOKEN] {
        let (status, body) = exchange(
            &app,
            &rs,
            &[
                ("subject_token", secret),
                ("subject_token_type", subject_type),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["issued_token_type"], ACCESS_TOKEN);
        assert!(body.get("refresh_token").is_none());
        let expires_in = body["expires_in"].as_i64().unwrap();
        assert!((1..=300).contains(&expires_in), "{body}");
        let jwt = claims(body["access_token"].as_str().unwrap());
        assert_eq!(jwt["sub"], key_id);
        assert_eq!(jwt["tid"], acme.as_str());
        assert_eq!(jwt["api_key"], true);
        assert_eq!(jwt["permissions"], json!(["audit:read", "members:read"]));
        assert!(jwt.get("sid").is_none());
        assert!(jwt.get("roles").is_none_or(|r| r == &json!([])));
    }

    // Narrowed to one permission; it acts as the key on Tessera's API, within that permission
    // and its tenant only.
    let (status, body) = exchange(
        &app,
        &rs,
        &[
            ("subject_token", secret),
            ("subject_token_type", API_KEY),
            ("scope", "members:read"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let jwt = body["access_token"].as_str().unwrap().to_string();
    let members = app
        .request(
            Method::GET,
            &format!("/tenants/{acme}/members"),
            Some(&jwt),
            None,
        )
        .await;
    assert_eq!(members.status, StatusCode::OK, "{}", members.text);
    let audit = app
        .request(
            Method::GET,
            &format!("/tenants/{acme}/audit"),
            Some(&jwt),
            None,
        )
        .await;
    assert_eq!(audit.status, StatusCode::FORBIDDEN, "{}", audit.text);
    let other = app
        .request(
            Method::GET,
            &format!("/tenants/{bobs}/members"),
            Some(&jwt),
            None,
        )
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.text);
    let me = app
        .request(Method::GET, "/identity/me", Some(&jwt), None)
        .await;
    assert_eq!(me.status, StatusCode::FORBIDDEN, "{}", me.text);
    let seen = introspect(&app, &rs, &jwt).await;
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["tid"], acme.as_str());
    assert_eq!(seen["permissions"], json!(["members:read"]));

    // More than the key holds: refused.
    let (status, body) = exchange(
        &app,
        &rs,
        &[
            ("subject_token", secret),
            ("subject_token_type", API_KEY),
            ("scope", "members:manage"),
        ],
    )
    .await;
    oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_scope");

    // Revoking the key ends its JWTs at once, and the key exchanges no more.
    let res = send(
        &app,
        Method::DELETE,
        &format!("/tenants/{acme}/api-keys/{key_id}"),
        &ada_in.access,
        json!({}),
    )
    .await;
    assert!(res.status.is_success(), "{}", res.text);
    assert_eq!(introspect(&app, &rs, &jwt).await["active"], false);
    let members = app
        .request(
            Method::GET,
            &format!("/tenants/{acme}/members"),
            Some(&jwt),
            None,
        )
        .await;
    assert_eq!(members.status, StatusCode::UNAUTHORIZED, "{}", members.text);
    let (status, body) = exchange(
        &app,
        &rs,
        &[("subject_token", secret), ("subject_token_type", API_KEY)],
    )
    .await;
    oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(!body.to_string().contains(secret), "no secret in errors");
}

async fn malformed_or_foreign_exchanges_are_refused_with_rfc_6749_errors(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.signed_in("ada@example.com").await;
    let c = client(&app, &["password", GRANT], &["openid"], false).await;
    let other = client(&app, &["password", GRANT], &["openid"], false).await;
    let without = client(&app, &["password"], &["openid"], false).await;
    let got = password_grant(&app, &c, "ada@example.com", "openid").await;
    let subject = got["access_token"].as_str().unwrap();
    let tessera_login = app.signed_in("bob@example.com").await;

    let cases: Vec<Case<'_>> = vec![
        // §2.1: subject_token and subject_token_type are required.
        (
            &c,
            vec![("subject_token_type", ACCESS_TOKEN)],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            &c,
            vec![("subject_token", subject)],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            &c,
            vec![
                ("subject_token", subject),
                ("subject_token_type", "urn:x:unknown"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            &c,
            vec![
                ("subject_token", subject),
                ("subject_token_type", ACCESS_TOKEN),
                (
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:refresh_token",
                ),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        // No delegation.
        (
            &c,
            vec![
                ("subject_token", subject),
                ("subject_token_type", ACCESS_TOKEN),
                ("actor_token", subject),
                ("actor_token_type", ACCESS_TOKEN),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        // Garbage, another client's token, Tessera's own login token.
        (
            &c,
            vec![
                ("subject_token", "not.a.jwt"),
                ("subject_token_type", ACCESS_TOKEN),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            &other,
            vec![
                ("subject_token", subject),
                ("subject_token_type", ACCESS_TOKEN),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            &c,
            vec![
                ("subject_token", &tessera_login.access),
                ("subject_token_type", ACCESS_TOKEN),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        // A key with a bad checksum; a user token named as an API key.
        (
            &c,
            vec![
                (
                    "subject_token",
                    "tsk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                ),
                ("subject_token_type", API_KEY),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            &c,
            vec![("subject_token", subject), ("subject_token_type", API_KEY)],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        // A client not registered for the grant.
        (
            &without,
            vec![
                ("subject_token", subject),
                ("subject_token_type", ACCESS_TOKEN),
            ],
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
        ),
    ];
    for (who, form, status, code) in cases {
        let (got_status, body) = exchange(&app, who, &form).await;
        oauth_error(got_status, &body, status, code);
    }
    // The grant is advertised (RFC 8414 §2).
    let meta: Value = app
        .client
        .get(format!("{}/.well-known/openid-configuration", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        meta["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(GRANT)),
        "{meta}"
    );
}
