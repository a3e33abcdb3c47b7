//! Passkeys and security keys (WebAuthn) with a software authenticator (`webauthn-authenticator-rs`'
//! soft passkey): registration, the second factor after a password, passwordless sign-in with a
//! discoverable credential, single-use ceremonies, the recent-sign-in rule, removal, and an
//! issuer without a domain name.

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use crate::helpers::{Backend, LOCALHOST_ISSUER, PASSWORD, TestApp, Tokens, assert_error};
use crate::on_both_backends;
use crate::tenants::claims;

on_both_backends!(
    a_passkey_is_a_second_factor_after_the_password,
    a_passkey_signs_in_without_a_password,
    registration_needs_a_recent_sign_in_and_its_own_ceremony,
);

/// An app whose issuer is `http://localhost:<port>` (WebAuthn needs a domain name).
async fn app_on_localhost(b: Backend) -> TestApp {
    TestApp::spawn_with(b, |c| c.issuer = LOCALHOST_ISSUER.into()).await
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A software authenticator and the origin it believes it is on.
struct Key {
    soft: SoftPasskey,
    origin: url::Url,
    /// Set once registered.
    credential_id: String,
}

impl Key {
    fn new(app: &TestApp) -> Self {
        Self {
            // `true`: it claims user verification, as a passkey with a PIN or biometric does.
            soft: SoftPasskey::new(true),
            origin: url::Url::parse(&app.config.issuer).unwrap(),
            credential_id: String::new(),
        }
    }

    fn create(&mut self, options: &Value) -> Value {
        let options = serde_json::from_value(options.clone()).expect("creation options");
        let credential = self
            .soft
            .do_registration(self.origin.clone(), options)
            .expect("the soft key registers");
        self.credential_id = credential.id.clone();
        serde_json::to_value(credential).unwrap()
    }

    /// Answers request options; for a discoverable request (no allowed credentials) it names
    /// its own credential, as a resident key does, and returns `user_handle` as its user handle.
    fn get(&mut self, options: &Value, user_handle: Option<&[u8]>) -> Value {
        let mut options = options.clone();
        if options["publicKey"]["allowCredentials"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            options["publicKey"]["allowCredentials"] =
                json!([{ "type": "public-key", "id": self.credential_id }]);
        }
        let options = serde_json::from_value(options).expect("request options");
        let assertion = self
            .soft
            .do_authentication(self.origin.clone(), options)
            .expect("the soft key signs");
        let mut assertion = serde_json::to_value(assertion).unwrap();
        if let Some(handle) = user_handle {
            assertion["response"]["userHandle"] = json!(b64(handle));
        }
        assertion
    }
}

fn user_handle(user_id: &str) -> Vec<u8> {
    uuid::Uuid::parse_str(user_id).unwrap().as_bytes().to_vec()
}

async fn user_id(app: &TestApp, tokens: &Tokens) -> String {
    let me = app.get("/identity/me", &tokens.access).await;
    me.body["id"].as_str().unwrap().to_string()
}

async fn register_start(app: &TestApp, tokens: &Tokens, body: Value) -> crate::helpers::Response {
    app.request(
        reqwest::Method::POST,
        "/identity/mfa/webauthn/register/start",
        Some(&tokens.access),
        Some(body),
    )
    .await
}

async fn register_finish(
    app: &TestApp,
    tokens: &Tokens,
    ceremony: &str,
    credential: Value,
) -> crate::helpers::Response {
    app.request(
        reqwest::Method::POST,
        "/identity/mfa/webauthn/register/finish",
        Some(&tokens.access),
        Some(json!({ "ceremony": ceremony, "credential": credential })),
    )
    .await
}

/// Registers `key` for the signed-in user; returns the finish answer.
async fn register(app: &TestApp, tokens: &Tokens, key: &mut Key) -> Value {
    let res = register_start(app, tokens, json!({ "name": "Laptop" })).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.headers["cache-control"], "no-store");
    let options = &res.body["options"];
    let rp = url::Url::parse(&app.config.issuer).unwrap();
    assert_eq!(options["publicKey"]["rp"]["id"], rp.host_str().unwrap());
    assert_eq!(
        options["publicKey"]["authenticatorSelection"]["residentKey"],
        "preferred"
    );
    assert_eq!(
        options["publicKey"]["authenticatorSelection"]["userVerification"],
        "required"
    );
    let ceremony = res.body["ceremony"].as_str().unwrap().to_string();
    let credential = key.create(options);
    let res = register_finish(app, tokens, &ceremony, credential.clone()).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    // The ceremony is used up: the same answer again is refused.
    let again = register_finish(app, tokens, &ceremony, credential).await;
    assert_error(&again, StatusCode::UNAUTHORIZED, "invalid_ceremony");
    res.body
}

async fn a_passkey_is_a_second_factor_after_the_password(b: Backend) {
    let app = app_on_localhost(b).await;
    let tokens = app.signed_in("ada@example.com").await;
    let mut key = Key::new(&app);
    let done = register(&app, &tokens, &mut key).await;
    assert_eq!(done["factor"]["type"], "webauthn");
    assert_eq!(done["factor"]["name"], "Laptop");
    let codes = done["recovery_codes"].as_array().expect("the first factor");
    assert_eq!(codes.len(), 10);
    let list = app.get("/identity/mfa", &tokens.access).await;
    assert_eq!(list.body["factors"][0]["type"], "webauthn", "{}", list.text);

    // The password alone is no longer enough; the challenge carries request options that
    // allow the registered credential only.
    let res = app.login("ada@example.com", PASSWORD).await;
    assert_error(&res, StatusCode::UNAUTHORIZED, "mfa_required");
    assert_eq!(res.body["methods"], json!(["webauthn", "recovery_code"]));
    let options = res.body["webauthn"].clone();
    assert_eq!(
        options["publicKey"]["allowCredentials"][0]["id"],
        key.credential_id
    );
    let mfa_token = res.body["mfa_token"].as_str().unwrap().to_string();
    let assertion = key.get(&options, None);

    // A code is not an assertion.
    let wrong = app
        .post(
            "/auth/mfa",
            json!({ "mfa_token": mfa_token, "method": "webauthn", "code": "123456" }),
        )
        .await;
    assert_error(
        &wrong,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    let body = json!({ "mfa_token": mfa_token, "method": "webauthn", "assertion": assertion });
    let res = app.post("/auth/mfa", body.clone()).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let access = claims(res.body["access_token"].as_str().unwrap());
    assert_eq!(access["amr"], json!(["pwd", "hwk", "mfa"]), "{access}");
    assert_eq!(access["acr"], "phr", "{access}");

    // The same assertion again: its ceremony is used up.
    let replay = app.post("/auth/mfa", body).await;
    assert_error(&replay, StatusCode::UNAUTHORIZED, "invalid_ceremony");

    // An assertion for another challenge's ceremony does not verify against this one.
    let first = app.login("ada@example.com", PASSWORD).await;
    let second = app.login("ada@example.com", PASSWORD).await;
    let for_first = key.get(&first.body["webauthn"], None);
    let res = app
        .post(
            "/auth/mfa",
            json!({ "mfa_token": second.body["mfa_token"], "method": "webauthn", "assertion": for_first }),
        )
        .await;
    assert_error(&res, StatusCode::UNAUTHORIZED, "invalid_mfa_code");
    let types = crate::helpers::event_types_of(&app, &user_id(&app, &tokens).await).await;
    assert!(
        types.iter().any(|t| t == "identity.mfa.enrolled.v1"),
        "{types:?}"
    );
    assert!(
        types
            .iter()
            .any(|t| t == "identity.mfa.challenge_failed.v1"),
        "{types:?}"
    );
}

async fn passkey_start(app: &TestApp) -> (String, Value) {
    let res = app
        .request(reqwest::Method::POST, "/auth/passkey/start", None, None)
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let options = res.body["options"].clone();
    assert!(
        options["publicKey"]["allowCredentials"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "a discoverable request names no credential: {options}"
    );
    assert!(options.get("mediation").is_none(), "{options}");
    (res.body["ceremony"].as_str().unwrap().to_string(), options)
}

async fn a_passkey_signs_in_without_a_password(b: Backend) {
    let app = app_on_localhost(b).await;
    let tokens = app.signed_in("grace@example.com").await;
    let grace = user_id(&app, &tokens).await;
    let mut key = Key::new(&app);
    register(&app, &tokens, &mut key).await;
    let other = app.signed_in("alan@example.com").await;
    let alan = user_id(&app, &other).await;

    let (ceremony, options) = passkey_start(&app).await;
    let assertion = key.get(&options, Some(&user_handle(&grace)));
    let body = json!({ "ceremony": ceremony, "assertion": assertion });
    let res = app.post("/auth/passkey/finish", body.clone()).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.headers["cache-control"], "no-store");
    let access = claims(res.body["access_token"].as_str().unwrap());
    assert_eq!(access["sub"], grace);
    assert_eq!(access["amr"], json!(["hwk", "user", "mfa"]), "{access}");
    assert_eq!(access["acr"], "phr", "{access}");
    // A passkey sign-in is strong and recent: it may change the factors.
    let pair_access = res.body["access_token"].as_str().unwrap().to_string();
    let codes = app
        .request(
            reqwest::Method::POST,
            "/identity/mfa/recovery-codes",
            Some(&pair_access),
            None,
        )
        .await;
    assert_eq!(codes.status, StatusCode::OK, "{}", codes.text);

    // Used up.
    let replay = app.post("/auth/passkey/finish", body).await;
    assert_error(&replay, StatusCode::UNAUTHORIZED, "invalid_ceremony");

    // The user handle must name the credential's own account.
    let (ceremony, options) = passkey_start(&app).await;
    let assertion = key.get(&options, Some(&user_handle(&alan)));
    let res = app
        .post(
            "/auth/passkey/finish",
            json!({ "ceremony": ceremony, "assertion": assertion }),
        )
        .await;
    assert_error(&res, StatusCode::UNAUTHORIZED, "invalid_credentials");

    // An assertion for another ceremony's challenge does not verify.
    let (first, options) = passkey_start(&app).await;
    let (second, _) = passkey_start(&app).await;
    let assertion = key.get(&options, Some(&user_handle(&grace)));
    let res = app
        .post(
            "/auth/passkey/finish",
            json!({ "ceremony": second, "assertion": assertion.clone() }),
        )
        .await;
    assert_error(&res, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let ok = app
        .post(
            "/auth/passkey/finish",
            json!({ "ceremony": first, "assertion": assertion }),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);

    // Malformed answers are 422, never 500.
    let (ceremony, _) = passkey_start(&app).await;
    let res = app
        .post(
            "/auth/passkey/finish",
            json!({ "ceremony": ceremony, "assertion": { "id": "x" } }),
        )
        .await;
    assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");

    // Once the factor is removed, the passkey signs in no more.
    let factors = app.get("/identity/mfa", &pair_access).await;
    let id = factors.body["factors"][0]["id"].as_str().unwrap();
    let removed = app
        .request(
            reqwest::Method::DELETE,
            &format!("/identity/mfa/{id}"),
            Some(&pair_access),
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.text);
    let (ceremony, options) = passkey_start(&app).await;
    let assertion = key.get(&options, Some(&user_handle(&grace)));
    let res = app
        .post(
            "/auth/passkey/finish",
            json!({ "ceremony": ceremony, "assertion": assertion }),
        )
        .await;
    assert_error(&res, StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(
        app.login("grace@example.com", PASSWORD).await.status,
        StatusCode::OK,
        "without factors the password alone signs in again"
    );
}

async fn registration_needs_a_recent_sign_in_and_its_own_ceremony(b: Backend) {
    let app = app_on_localhost(b).await;
    let tokens = app.signed_in("edsger@example.com").await;
    // The hosted passkeys page needs a browser session (the JSON login starts none).
    let page = app
        .client
        .get(format!("{}/oauth2/passkeys", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    assert!(page.text().await.unwrap().contains("Sign in first"));
    app.clock.advance(600);
    let res = register_start(&app, &tokens, json!({})).await;
    assert_error(
        &res,
        StatusCode::UNAUTHORIZED,
        "insufficient_user_authentication",
    );
    let wrong = register_start(&app, &tokens, json!({ "current_password": "nope" })).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN, "{}", wrong.text);
    let res = register_start(&app, &tokens, json!({ "current_password": PASSWORD })).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let ceremony = res.body["ceremony"].as_str().unwrap().to_string();
    let mut key = Key::new(&app);
    let credential = key.create(&res.body["options"]);

    // Another user cannot finish this user's ceremony.
    let other = app.signed_in("barbara@example.com").await;
    let res = register_finish(&app, &other, &ceremony, credential.clone()).await;
    assert_error(&res, StatusCode::UNAUTHORIZED, "invalid_ceremony");

    // Garbage is 422.
    let res = register_start(&app, &other, json!({})).await;
    let ceremony = res.body["ceremony"].as_str().unwrap().to_string();
    let res = register_finish(&app, &other, &ceremony, json!("not a credential")).await;
    assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");

    // A ceremony expires after five minutes.
    let res = register_start(&app, &other, json!({})).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let late = res.body["ceremony"].as_str().unwrap().to_string();
    let late_credential = key.create(&res.body["options"]);
    app.clock.advance(301);
    let res = register_finish(&app, &other, &late, late_credential).await;
    assert_error(&res, StatusCode::UNAUTHORIZED, "invalid_ceremony");
}

/// An issuer on an IP address cannot be a WebAuthn relying party: the routes say so with a 409
/// (not a 5xx), and password sign-in is unaffected.
#[tokio::test]
async fn without_a_domain_name_there_is_no_webauthn() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    assert!(app.config.issuer.starts_with("http://127.0.0.1:"));
    let tokens = app.signed_in("ken@example.com").await;
    let res = register_start(&app, &tokens, json!({})).await;
    assert_error(&res, StatusCode::CONFLICT, "webauthn_unavailable");
    let res = app
        .request(reqwest::Method::POST, "/auth/passkey/start", None, None)
        .await;
    assert_error(&res, StatusCode::CONFLICT, "webauthn_unavailable");
    let page = app
        .client
        .get(format!("{}/assets/passkey.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
}
