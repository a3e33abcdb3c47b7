//! Second factors: TOTP enrolment and confirmation, the challenge on every password path (JSON
//! login, password grant, hosted login), replay and skew, recovery codes, lockout, and the
//! recent-sign-in rule for changing factors.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp, Tokens, assert_error, event_types_of, events_of};
use crate::oauth::{browse, field, param, register_client, token};
use crate::on_both_backends;
use crate::tenants::claims;

on_both_backends!(
    a_confirmed_factor_is_asked_for_on_every_password_path,
    a_code_is_accepted_once_within_one_step_of_skew,
    recovery_codes_work_once_and_can_be_replaced,
    changing_factors_needs_a_recent_sign_in,
    wrong_codes_lock_out_like_passwords,
    a_challenge_cannot_be_forged_or_kept,
    the_hosted_login_asks_for_the_second_factor_on_its_own_page,
    acr_values_make_a_weaker_session_sign_in_again,
    sensitive_actions_ask_for_a_step_up,
    a_tenant_can_require_a_second_factor,
    a_client_can_require_more_than_a_password,
);

const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// The code an authenticator app with `secret` (base32) shows at Unix time `at`.
pub(crate) fn code_at(secret: &str, at: i64) -> String {
    let secret = totp_rs::Secret::try_from_base32(secret).unwrap();
    let totp = totp_rs::Builder::new().with_secret(secret).build().unwrap();
    totp.generate(u64::try_from(at).unwrap()).to_string()
}

pub(crate) struct Enrolled {
    pub user_id: String,
    pub tokens: Tokens,
    pub factor_id: String,
    pub secret: String,
    pub recovery_codes: Vec<String>,
}

/// Registers `email`, signs in, enrols and confirms an authenticator app. The clock moves on one
/// step afterwards, so the next code is fresh.
pub(crate) async fn enrolled(app: &TestApp, email: &str) -> Enrolled {
    let tokens = app.signed_in(email).await;
    let me = app.get("/identity/me", &tokens.access).await;
    let user_id = me.body["id"].as_str().unwrap().to_string();
    let res = app
        .request(
            reqwest::Method::POST,
            "/identity/mfa/totp",
            Some(&tokens.access),
            Some(json!({ "name": "Phone" })),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    assert_eq!(res.headers["cache-control"], "no-store");
    let factor_id = res.body["id"].as_str().unwrap().to_string();
    let secret = res.body["secret"].as_str().unwrap().to_string();
    let uri = res.body["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    // Not yet confirmed: the password alone still signs in.
    assert_eq!(app.login(email, PASSWORD).await.status, StatusCode::OK);
    let confirm = format!("/identity/mfa/totp/{factor_id}/confirm");
    let wrong = app
        .request(
            reqwest::Method::POST,
            &confirm,
            Some(&tokens.access),
            Some(json!({ "code": "000000" })),
        )
        .await;
    assert_error(
        &wrong,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let code = code_at(&secret, app.clock.now());
    let res = app
        .request(
            reqwest::Method::POST,
            &confirm,
            Some(&tokens.access),
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body["factor"]["type"], "totp");
    assert_eq!(res.body["factor"]["name"], "Phone");
    let recovery_codes: Vec<String> = res.body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(recovery_codes.len(), 10);
    app.clock.advance(30);
    Enrolled {
        user_id,
        tokens,
        factor_id,
        secret,
        recovery_codes,
    }
}

/// `POST /auth/login` for a user with a factor: the challenge.
async fn challenge(app: &TestApp, email: &str) -> String {
    let res = app.login(email, PASSWORD).await;
    assert_error(&res, StatusCode::UNAUTHORIZED, "mfa_required");
    assert_eq!(res.headers["cache-control"], "no-store");
    assert_eq!(res.body["methods"], json!(["totp", "recovery_code"]));
    assert!(res.body.get("access_token").is_none());
    let token = res.body["mfa_token"].as_str().unwrap().to_string();
    assert!(token.starts_with("tsr_mfa_"), "{token}");
    token
}

async fn second_factor(app: &TestApp, mfa_token: &str, method: &str, code: &str) -> Value {
    let res = app
        .post(
            "/auth/mfa",
            json!({ "mfa_token": mfa_token, "method": method, "code": code }),
        )
        .await;
    json!({ "status": res.status.as_u16(), "body": res.body })
}

async fn a_confirmed_factor_is_asked_for_on_every_password_path(b: Backend) {
    let app = TestApp::spawn(b).await;
    let alice = enrolled(&app, "alice@example.com").await;
    let confirm = format!("/identity/mfa/totp/{}/confirm", alice.factor_id);
    let again = app
        .request(
            reqwest::Method::POST,
            &confirm,
            Some(&alice.tokens.access),
            Some(json!({ "code": code_at(&alice.secret, app.clock.now()) })),
        )
        .await;
    assert_error(&again, StatusCode::CONFLICT, "already_confirmed");

    // The JSON login: the password alone gets no tokens; the code completes it.
    let mfa_token = challenge(&app, "alice@example.com").await;
    let wrong = second_factor(&app, &mfa_token, "totp", "123456").await;
    assert_eq!(wrong["status"], 401, "{wrong}");
    assert_eq!(wrong["body"]["error"], "invalid_mfa_code");
    let code = code_at(&alice.secret, app.clock.now());
    let done = second_factor(&app, &mfa_token, "totp", &code).await;
    assert_eq!(done["status"], 200, "{done}");
    let access = done["body"]["access_token"].as_str().unwrap();
    assert_eq!(app.get("/identity/me", access).await.status, StatusCode::OK);
    // RFC 8176 in the tokens: how each session's user proved who they are.
    assert_eq!(claims(access)["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(claims(&alice.tokens.access)["amr"], json!(["pwd"]));
    let refreshed = app
        .refresh(done["body"]["refresh_token"].as_str().unwrap())
        .await;
    let again = refreshed.body["access_token"].as_str().unwrap();
    assert_eq!(
        claims(again)["amr"],
        json!(["pwd", "otp", "mfa"]),
        "kept on refresh"
    );
    let bad_method = second_factor(&app, &mfa_token, "sms", &code).await;
    assert_eq!(bad_method["status"], 422, "{bad_method}");

    // The OAuth password grant (RFC 6749 §5.2) has no second step: invalid_grant.
    let client = register_client(&app, false, &["password"], &["openid"]).await;
    let (status, _, body) = token(
        &app,
        Some((&client.id, client.secret.as_deref().unwrap())),
        &[
            ("grant_type", "password"),
            ("username", "alice@example.com"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    assert!(body.get("access_token").is_none());

    // Listed without its secret; the secret is sealed at rest.
    let list = app.get("/identity/mfa", &alice.tokens.access).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.body["factors"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["factors"][0]["id"], alice.factor_id.as_str());
    assert_eq!(list.body["recovery_codes_left"], 10);
    assert!(!list.text.contains(&alice.secret));
    let (stored,): (Vec<u8>,) = sqlx::query_as("SELECT secret FROM mfa_factors WHERE id = $1")
        .bind(&alice.factor_id)
        .fetch_one(app.state.store.pool())
        .await
        .unwrap();
    let raw = totp_rs::Secret::try_from_base32(&alice.secret).unwrap();
    let raw = raw.as_bytes();
    assert!(
        !stored.windows(raw.len()).any(|w| w == raw),
        "the secret is stored sealed"
    );
    let (hashes,): (String,) = sqlx::query_as(
        "SELECT MIN(code_hash) FROM mfa_recovery_codes WHERE user_id = $1 GROUP BY user_id",
    )
    .bind(&alice.user_id)
    .fetch_one(app.state.store.pool())
    .await
    .unwrap();
    assert!(
        alice
            .recovery_codes
            .iter()
            .all(|c| !hashes.contains(c.as_str())),
        "recovery codes are stored as digests"
    );
    let types = event_types_of(&app, &alice.user_id).await;
    for t in [
        "identity.mfa.enrolled.v1",
        "identity.mfa.challenge_failed.v1",
    ] {
        assert!(types.iter().any(|x| x == t), "{t} in {types:?}");
    }
    let events = events_of(&app, &alice.user_id).await;
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(&alice.secret) && !text.contains(&mfa_token));
}

async fn a_code_is_accepted_once_within_one_step_of_skew(b: Backend) {
    let app = TestApp::spawn(b).await;
    let bob = enrolled(&app, "bob@example.com").await;
    let now = app.clock.now();
    // The step confirmed at enrolment (one step back) is used up.
    let used = code_at(&bob.secret, now - 30);
    let t = challenge(&app, "bob@example.com").await;
    assert_eq!(second_factor(&app, &t, "totp", &used).await["status"], 401);
    // Two steps either side is too far.
    for far in [now - 60, now + 60] {
        let res = second_factor(&app, &t, "totp", &code_at(&bob.secret, far)).await;
        assert_eq!(res["status"], 401, "{far}: {res}");
    }
    // One step ahead (a fast phone) is accepted, and then it and everything before it is used.
    let ahead = code_at(&bob.secret, now + 30);
    assert_eq!(second_factor(&app, &t, "totp", &ahead).await["status"], 200);
    let t = challenge(&app, "bob@example.com").await;
    assert_eq!(second_factor(&app, &t, "totp", &ahead).await["status"], 401);
    let current = code_at(&bob.secret, now);
    assert_eq!(
        second_factor(&app, &t, "totp", &current).await["status"],
        401
    );
    // The next step works once.
    app.clock.advance(60);
    let next = code_at(&bob.secret, app.clock.now());
    assert_eq!(second_factor(&app, &t, "totp", &next).await["status"], 200);
    let t = challenge(&app, "bob@example.com").await;
    assert_eq!(second_factor(&app, &t, "totp", &next).await["status"], 401);
}

async fn recovery_codes_work_once_and_can_be_replaced(b: Backend) {
    let app = TestApp::spawn(b).await;
    let carol = enrolled(&app, "carol@example.com").await;
    let first = carol.recovery_codes[0].clone();
    let t = challenge(&app, "carol@example.com").await;
    // As typed: upper case, spaces instead of dashes.
    let typed = first.to_uppercase().replace('-', " ");
    let done = second_factor(&app, &t, "recovery_code", &typed).await;
    assert_eq!(done["status"], 200, "{done}");
    let again = second_factor(&app, &t, "recovery_code", &first).await;
    assert_eq!(again["status"], 401);
    assert_eq!(again["body"]["error"], "invalid_mfa_code");
    let list = app.get("/identity/mfa", &carol.tokens.access).await;
    assert_eq!(list.body["recovery_codes_left"], 9);
    let used: Vec<Value> = events_of(&app, &carol.user_id)
        .await
        .into_iter()
        .filter(|e| e["event_type"] == "identity.mfa.recovery_code_used.v1")
        .collect();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0]["data"]["remaining"], 9);

    // New codes replace the old ones. They need a recent sign-in with a second factor: the
    // session from before the enrolment (the password alone) is refused, recent as it is.
    let regenerate = |token: String| {
        let app = &app;
        async move {
            app.request(
                reqwest::Method::POST,
                "/identity/mfa/recovery-codes",
                Some(&token),
                None,
            )
            .await
        }
    };
    let res = regenerate(carol.tokens.access.clone()).await;
    assert_error(
        &res,
        StatusCode::UNAUTHORIZED,
        "insufficient_user_authentication",
    );
    let res = regenerate(done["body"]["access_token"].as_str().unwrap().into()).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let fresh = res.body["recovery_codes"][0].as_str().unwrap().to_string();
    let old = second_factor(&app, &t, "recovery_code", &carol.recovery_codes[1]).await;
    assert_eq!(old["status"], 401, "old codes stop working");
    let new = second_factor(&app, &t, "recovery_code", &fresh).await;
    assert_eq!(new["status"], 200, "{new}");

    // Without a factor there are no recovery codes to make.
    let dave = app.signed_in("dave@example.com").await;
    let res = app
        .request(
            reqwest::Method::POST,
            "/identity/mfa/recovery-codes",
            Some(&dave.access),
            None,
        )
        .await;
    assert_error(&res, StatusCode::CONFLICT, "no_second_factor");
}

async fn changing_factors_needs_a_recent_sign_in(b: Backend) {
    let app = TestApp::spawn(b).await;
    let erin = enrolled(&app, "erin@example.com").await;
    let path = format!("/identity/mfa/{}", erin.factor_id);
    // The session that enrolled signed in with the password alone: recent, but not strong
    // enough to take the factor away.
    let res = app
        .request(
            reqwest::Method::DELETE,
            &path,
            Some(&erin.tokens.access),
            None,
        )
        .await;
    assert_error(
        &res,
        StatusCode::UNAUTHORIZED,
        "insufficient_user_authentication",
    );
    app.clock.advance(600);
    // The access token is still valid, but its sign-in is ten minutes old.
    let refreshed = app.refresh(&erin.tokens.refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text);
    let access = refreshed.body["access_token"].as_str().unwrap().to_string();
    let res = app
        .request(reqwest::Method::DELETE, &path, Some(&access), None)
        .await;
    assert_error(
        &res,
        StatusCode::UNAUTHORIZED,
        "insufficient_user_authentication",
    );
    // Switching tenant starts a session, but not a sign-in: it stays ten minutes old.
    let tid = claims(&access)["tid"].as_str().unwrap().to_string();
    let switched = app
        .request(
            reqwest::Method::POST,
            "/auth/switch-tenant",
            Some(&access),
            Some(json!({ "tenant": tid })),
        )
        .await;
    assert_eq!(switched.status, StatusCode::OK, "{}", switched.text);
    let switched = switched.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        claims(&switched)["amr"],
        json!(["pwd"]),
        "carried from the session"
    );
    let res = app
        .request(reqwest::Method::DELETE, &path, Some(&switched), None)
        .await;
    assert_error(
        &res,
        StatusCode::UNAUTHORIZED,
        "insufficient_user_authentication",
    );
    let challenge_header = res.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge_header.contains(r#"error="insufficient_user_authentication""#)
            && challenge_header.contains(r#"acr_values="urn:tessera:acr:mfa""#)
            && challenge_header.contains(r#"max_age="300""#),
        "{challenge_header}"
    );
    let app = &app;
    let enrol = |token: String, body: Value| async move {
        app.request(
            reqwest::Method::POST,
            "/identity/mfa/totp",
            Some(&token),
            Some(body),
        )
        .await
    };
    // Adding another factor from a session without one: refused even with the password, which
    // stands in for recency, never for a factor.
    let res = enrol(access.clone(), json!({ "current_password": PASSWORD })).await;
    assert_error(
        &res,
        StatusCode::UNAUTHORIZED,
        "insufficient_user_authentication",
    );

    // A sign-in with the factor, ten minutes old: the current password makes up for the age.
    let t = challenge(app, "erin@example.com").await;
    let done = second_factor(app, &t, "totp", &code_at(&erin.secret, app.clock.now())).await;
    assert_eq!(done["status"], 200, "{done}");
    app.clock.advance(600);
    let refresh = done["body"]["refresh_token"].as_str().unwrap();
    let refreshed = app.refresh(refresh).await;
    let strong = refreshed.body["access_token"].as_str().unwrap().to_string();
    let res = enrol(strong.clone(), json!({})).await;
    assert_error(
        &res,
        StatusCode::UNAUTHORIZED,
        "insufficient_user_authentication",
    );
    let res = enrol(
        strong.clone(),
        json!({ "current_password": "wrong password!" }),
    )
    .await;
    assert_error(&res, StatusCode::FORBIDDEN, "invalid_current_password");
    let res = enrol(strong.clone(), json!({ "current_password": PASSWORD })).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    let res = enrol(strong, json!({ "current_password": PASSWORD, "name": "" })).await;
    assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");

    // A fresh sign-in (with the factor) may remove it; with the last one the codes go too.
    let t = challenge(app, "erin@example.com").await;
    let done = second_factor(app, &t, "totp", &code_at(&erin.secret, app.clock.now())).await;
    assert_eq!(done["status"], 200, "{done}");
    let fresh = done["body"]["access_token"].as_str().unwrap().to_string();
    let res = app
        .request(reqwest::Method::DELETE, &path, Some(&fresh), None)
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    let res = app
        .request(reqwest::Method::DELETE, &path, Some(&fresh), None)
        .await;
    assert_error(&res, StatusCode::NOT_FOUND, "not_found");
    let list = app.get("/identity/mfa", &fresh).await;
    assert_eq!(list.body["factors"], json!([]));
    assert_eq!(list.body["recovery_codes_left"], 0);
    assert_eq!(
        app.login("erin@example.com", PASSWORD).await.status,
        StatusCode::OK,
        "without a factor the password alone signs in again"
    );
    let types = event_types_of(app, &erin.user_id).await;
    assert!(
        types.iter().any(|t| t == "identity.mfa.removed.v1"),
        "{types:?}"
    );
}

async fn wrong_codes_lock_out_like_passwords(b: Backend) {
    let app = TestApp::spawn(b).await;
    let frank = enrolled(&app, "frank@example.com").await;
    let t = challenge(&app, "frank@example.com").await;
    for _ in 0..5 {
        let res = second_factor(&app, &t, "totp", "000000").await;
        assert_eq!(res["status"], 401, "{res}");
    }
    // Locked: even the right code waits.
    let right = code_at(&frank.secret, app.clock.now());
    let res = app
        .post(
            "/auth/mfa",
            json!({ "mfa_token": t, "method": "totp", "code": right }),
        )
        .await;
    assert_error(&res, StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
    let wait: i64 = res.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let types = event_types_of(&app, &frank.user_id).await;
    assert!(
        types.iter().any(|t| t == "identity.account.locked.v1"),
        "{types:?}"
    );
    app.clock.advance(wait + 1);
    let res = second_factor(&app, &t, "totp", &code_at(&frank.secret, app.clock.now())).await;
    assert_eq!(res["status"], 200, "{res}");
}

async fn a_challenge_cannot_be_forged_or_kept(b: Backend) {
    let app = TestApp::spawn(b).await;
    let grace = enrolled(&app, "grace@example.com").await;
    let t = challenge(&app, "grace@example.com").await;
    let code = code_at(&grace.secret, app.clock.now());
    let mut forged = t.clone();
    forged.pop();
    forged.push(if t.ends_with('A') { 'B' } else { 'A' });
    for bad in [forged.as_str(), "tsr_mfa_", "nonsense", ""] {
        let res = second_factor(&app, bad, "totp", &code).await;
        assert_eq!(res["status"], 401, "{bad}: {res}");
        assert_eq!(res["body"]["error"], "invalid_mfa_token");
    }
    app.clock.advance(301);
    let code = code_at(&grace.secret, app.clock.now());
    let res = second_factor(&app, &t, "totp", &code).await;
    assert_eq!(res["body"]["error"], "invalid_mfa_token", "expired: {res}");
}

async fn the_hosted_login_asks_for_the_second_factor_on_its_own_page(b: Backend) {
    let app = TestApp::spawn(b).await;
    let heidi = enrolled(&app, "heidi@example.com").await;
    let client = register_client(&app, false, &["authorization_code"], &["openid"]).await;
    let url = format!(
        "{}/oauth2/authorize?response_type=code&client_id={}&redirect_uri={REDIRECT}&scope=openid",
        app.base, client.id
    );
    let page = app
        .client
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = [
        ("csrf_token", field(&page, "csrf_token")),
        ("request", field(&page, "request")),
        ("email", "heidi@example.com".to_string()),
        ("password", PASSWORD.to_string()),
    ];
    let res = app
        .client
        .post(format!("{}/oauth2/login", app.base))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let page = res.text().await.unwrap();
    assert!(page.contains(r#"action="/oauth2/mfa""#), "{page}");
    let submit = |code: String, page: &str| {
        let form = [
            ("csrf_token", field(page, "csrf_token")),
            ("request", field(page, "request")),
            ("mfa_token", field(page, "mfa_token")),
            ("code", code),
        ];
        app.client
            .post(format!("{}/oauth2/mfa", app.base))
            .form(&form)
            .send()
    };
    let res = submit("111111".into(), &page).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let page = res.text().await.unwrap();
    assert!(page.contains("did not work"), "{page}");
    // No browser session yet: the authorization endpoint still asks to sign in.
    let again = app.client.get(&url).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert!(
        again
            .text()
            .await
            .unwrap()
            .contains(r#"action="/oauth2/login""#)
    );
    let code = code_at(&heidi.secret, app.clock.now());
    let res = submit(code, &page).await.unwrap();
    // Consent, then the redirect with a code.
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"action="/oauth2/consent""#), "{html}");
    let redirect = browse(&app, &url, "heidi@example.com", "allow").await;
    let code = param(&redirect, "code").expect("an authorization code");
    let (status, _, body) = token(
        &app,
        Some((&client.id, client.secret.as_deref().unwrap())),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id_token = claims(body["id_token"].as_str().unwrap());
    assert_eq!(id_token["amr"], json!(["pwd", "otp", "mfa"]), "{id_token}");
    assert_eq!(id_token["acr"], "urn:tessera:acr:mfa", "{id_token}");
    let access = claims(body["access_token"].as_str().unwrap());
    assert_eq!(access["amr"], id_token["amr"]);
    assert_eq!(access["acr"], id_token["acr"]);
    // Introspection says the same (RFC 7662 with RFC 8176 `amr`).
    let res = app
        .client
        .post(format!("{}/oauth2/introspect", app.base))
        .basic_auth(&client.id, client.secret.as_deref())
        .form(&[("token", body["access_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    let introspected: Value = res.json().await.unwrap();
    assert_eq!(
        introspected["amr"],
        json!(["pwd", "otp", "mfa"]),
        "{introspected}"
    );
    assert_eq!(introspected["acr"], "urn:tessera:acr:mfa", "{introspected}");
}

/// OIDC Core §3.1.2.1 `acr_values` and RFC 9470 §4: a browser session signed in with the
/// password alone is asked to sign in again when a client asks for more than one factor
/// (`prompt=none`: `login_required`); unknown values are ignored; the classes are in discovery.
async fn acr_values_make_a_weaker_session_sign_in_again(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.signed_in("ivan@example.com").await;
    let client = register_client(&app, false, &["authorization_code"], &["openid"]).await;
    let url = format!(
        "{}/oauth2/authorize?response_type=code&client_id={}&redirect_uri={REDIRECT}&scope=openid&state=x",
        app.base, client.id
    );
    let redirect = browse(&app, &url, "ivan@example.com", "allow").await;
    let code = param(&redirect, "code").expect("an authorization code");
    let (status, _, body) = token(
        &app,
        Some((&client.id, client.secret.as_deref().unwrap())),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id_token = claims(body["id_token"].as_str().unwrap());
    assert_eq!(id_token["acr"], "urn:tessera:acr:pwd", "{id_token}");

    let get = |extra: &str| app.client.get(format!("{url}{extra}")).send();
    // Unknown classes are ignored: the session goes on to a code.
    let res = get("&acr_values=urn%3Aexample%3Agold").await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(
        res.headers()["location"]
            .to_str()
            .unwrap()
            .contains("code=")
    );
    // More than one factor asked for: sign in again, or `login_required` without a page.
    let res = get("&acr_values=urn%3Atessera%3Aacr%3Amfa").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains(r#"action="/oauth2/login""#)
    );
    let res = get("&acr_values=phr%20urn%3Atessera%3Aacr%3Amfa&prompt=none")
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(param(&location, "error").as_deref(), Some("login_required"));
    // The password class is met by the session as it is.
    let res = get("&acr_values=urn%3Atessera%3Aacr%3Apwd").await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    let discovery = app
        .client
        .get(format!("{}/.well-known/openid-configuration", app.base))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        discovery["acr_values_supported"],
        json!(["urn:tessera:acr:pwd", "urn:tessera:acr:mfa", "phr"])
    );
    assert!(
        discovery["claims_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("acr"))
    );
}

/// RFC 9470 on Tessera's own sensitive actions: a password change from a session without the
/// account's second factor, an API key from a sign-in older than five minutes, and an admin
/// change from a sign-in older than an hour are refused with `insufficient_user_authentication`
/// and a `WWW-Authenticate` saying what would do (`acr_values`, `max_age`); reading is not.
async fn sensitive_actions_ask_for_a_step_up(b: Backend) {
    let app = TestApp::spawn(b).await;
    let challenge_of = |res: &crate::helpers::Response| {
        res.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string()
    };

    // Password change: the session that enrolled used the password alone.
    let grace = enrolled(&app, "grace@example.com").await;
    let change = json!({ "current_password": PASSWORD, "new_password": "another long passphrase" });
    let res = app
        .request(
            reqwest::Method::POST,
            "/identity/password",
            Some(&grace.tokens.access),
            Some(change.clone()),
        )
        .await;
    assert_error(
        &res,
        StatusCode::UNAUTHORIZED,
        "insufficient_user_authentication",
    );
    let header = challenge_of(&res);
    assert!(
        header.contains(r#"acr_values="urn:tessera:acr:mfa""#),
        "{header}"
    );
    assert!(!header.contains("max_age"), "any age will do: {header}");
    let t = challenge(&app, "grace@example.com").await;
    let done = second_factor(&app, &t, "totp", &code_at(&grace.secret, app.clock.now())).await;
    let strong = done["body"]["access_token"].as_str().unwrap().to_string();
    let res = app
        .request(
            reqwest::Method::POST,
            "/identity/password",
            Some(&strong),
            Some(change),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);

    // API keys: a sign-in within five minutes.
    let ada = app.signed_in("ada@example.com").await;
    crate::audit::admin_token(&app).await;
    let tid = claims(&ada.access)["tid"].as_str().unwrap().to_string();
    let create_key = |token: String| {
        let path = format!("/tenants/{tid}/api-keys");
        let app = &app;
        async move {
            app.request(
                reqwest::Method::POST,
                &path,
                Some(&token),
                Some(json!({ "name": "ci", "permissions": ["tenant:read"] })),
            )
            .await
        }
    };
    assert_eq!(
        create_key(ada.access.clone()).await.status,
        StatusCode::CREATED
    );
    app.clock.advance(600);
    let ada_later = app.refresh(&ada.refresh).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let res = create_key(ada_later.clone()).await;
    assert_error(
        &res,
        StatusCode::UNAUTHORIZED,
        "insufficient_user_authentication",
    );
    let header = challenge_of(&res);
    assert!(
        header.contains(r#"acr_values="urn:tessera:acr:pwd""#)
            && header.contains(r#"max_age="300""#),
        "{header}"
    );
    let listed = app
        .get(&format!("/tenants/{tid}/api-keys"), &ada_later)
        .await;
    assert_eq!(listed.status, StatusCode::OK, "reading needs no step-up");

    // Admin changes: a sign-in within the hour; reading is not a change.
    let root_refresh =
        crate::helpers::Tokens::from(&app.login("root@example.com", PASSWORD).await.body);
    let new_user = |token: String, email: &'static str| {
        let app = &app;
        async move {
            app.request(
                reqwest::Method::POST,
                "/admin/users",
                Some(&token),
                Some(json!({ "email": email })),
            )
            .await
        }
    };
    let res = new_user(root_refresh.access.clone(), "one@example.com").await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    app.clock.advance(3601);
    let later = app.refresh(&root_refresh.refresh).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let res = new_user(later.clone(), "two@example.com").await;
    assert_error(
        &res,
        StatusCode::UNAUTHORIZED,
        "insufficient_user_authentication",
    );
    assert!(challenge_of(&res).contains(r#"max_age="3600""#));
    assert_eq!(app.get("/admin/users", &later).await.status, StatusCode::OK);
}

/// A tenant's MFA policy: once on (which needs a sign-in with a factor), a member without a
/// factor gets no token for it (login naming it, switching to it, refreshing a token of it),
/// while their personal tenant still works; a member signed in with a factor goes on.
async fn a_tenant_can_require_a_second_factor(b: Backend) {
    use crate::tenants::{add_member, team, user_id};
    let app = TestApp::spawn(b).await;
    let olga = enrolled(&app, "olga@example.com").await;
    let acme = team(&app, &olga.tokens.access, "Acme", "acme").await;
    let mallory = app.signed_in("mallory@example.com").await;
    add_member(&app, &acme, &user_id(&mallory), &["member"]).await;
    let switch = |token: String| {
        let (app, acme) = (&app, acme.clone());
        async move {
            app.request(
                reqwest::Method::POST,
                "/auth/switch-tenant",
                Some(&token),
                Some(json!({ "tenant": acme })),
            )
            .await
        }
    };
    let in_acme = switch(mallory.access.clone()).await;
    assert_eq!(in_acme.status, StatusCode::OK, "{}", in_acme.text);
    let acme_refresh = in_acme.body["refresh_token"].as_str().unwrap().to_string();

    let path = format!("/tenants/{acme}/mfa-policy");
    let put = |token: String, required: bool| {
        let (app, path) = (&app, path.clone());
        async move {
            app.request(
                reqwest::Method::PUT,
                &path,
                Some(&token),
                Some(json!({ "required": required })),
            )
            .await
        }
    };
    // Olga's session signed in with the password alone: she could lock herself out.
    let olga_in_acme = switch(olga.tokens.access.clone()).await;
    let olga_in_acme = olga_in_acme.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let res = put(olga_in_acme, true).await;
    assert_error(
        &res,
        StatusCode::UNAUTHORIZED,
        "insufficient_user_authentication",
    );
    let t = challenge(&app, "olga@example.com").await;
    let done = second_factor(&app, &t, "totp", &code_at(&olga.secret, app.clock.now())).await;
    let strong = done["body"]["access_token"].as_str().unwrap().to_string();
    let strong_in_acme = switch(strong.clone()).await;
    let strong_in_acme = strong_in_acme.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let res = put(strong_in_acme, true).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body, json!({ "required": true }));
    let read = app
        .get(&path, in_acme.body["access_token"].as_str().unwrap())
        .await;
    assert_eq!(read.body, json!({ "required": true }), "{}", read.text);

    // Mallory has no factor: no new token for Acme, by any path.
    assert_error(
        &switch(mallory.access.clone()).await,
        StatusCode::FORBIDDEN,
        "tenant_requires_mfa",
    );
    let res = app
        .post(
            "/auth/login",
            json!({ "email": "mallory@example.com", "password": PASSWORD, "tenant": "acme" }),
        )
        .await;
    assert_error(&res, StatusCode::FORBIDDEN, "tenant_requires_mfa");
    let res = app.refresh(&acme_refresh).await;
    assert_error(&res, StatusCode::FORBIDDEN, "tenant_requires_mfa");
    // Her personal tenant is unaffected (a login without a tenant lands there).
    let res = app.login("mallory@example.com", PASSWORD).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let personal = claims(res.body["access_token"].as_str().unwrap());
    assert_ne!(personal["tid"], json!(acme));

    // Olga: from the sign-in with her factor, yes; from the password-only session, no.
    assert_eq!(switch(strong).await.status, StatusCode::OK);
    assert_error(
        &switch(olga.tokens.access.clone()).await,
        StatusCode::FORBIDDEN,
        "tenant_requires_mfa",
    );
}

/// A client registered with `require_acr: urn:tessera:acr:mfa`: a user without a factor is sent
/// back with `unmet_authentication_requirements` after signing in, one with a factor goes on
/// through the second-factor page, and the password grant never gives such a client tokens.
async fn a_client_can_require_more_than_a_password(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.signed_in("peggy@example.com").await;
    let quinn = enrolled(&app, "quinn@example.com").await;
    let client = crate::oauth::create_client(
        &app,
        tessera::oauth::clients::ClientSpec {
            name: Some("Bank".into()),
            redirect_uris: Some(vec![REDIRECT.into()]),
            grant_types: Some(vec!["authorization_code".into(), "password".into()]),
            scopes: Some(vec!["openid".into()]),
            require_acr: Some(Some("urn:tessera:acr:mfa".into())),
            ..Default::default()
        },
    )
    .await;
    let url = format!(
        "{}/oauth2/authorize?response_type=code&client_id={}&redirect_uri={REDIRECT}&scope=openid&state=b",
        app.base, client.id
    );
    let back = browse(&app, &url, "peggy@example.com", "allow").await;
    assert_eq!(
        param(&back, "error").as_deref(),
        Some("unmet_authentication_requirements"),
        "{back}"
    );
    assert_eq!(param(&back, "state").as_deref(), Some("b"));

    // Quinn has an app: the password leads to the second-factor page, then on to consent.
    let other = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = other.get(&url).send().await.unwrap().text().await.unwrap();
    let res = other
        .post(format!("{}/oauth2/login", app.base))
        .form(&[
            ("csrf_token", field(&page, "csrf_token")),
            ("request", field(&page, "request")),
            ("email", "quinn@example.com".into()),
            ("password", PASSWORD.into()),
        ])
        .send()
        .await
        .unwrap();
    let page = res.text().await.unwrap();
    assert!(page.contains(r#"action="/oauth2/mfa""#), "{page}");
    let res = other
        .post(format!("{}/oauth2/mfa", app.base))
        .form(&[
            ("csrf_token", field(&page, "csrf_token")),
            ("request", field(&page, "request")),
            ("mfa_token", field(&page, "mfa_token")),
            ("code", code_at(&quinn.secret, app.clock.now())),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains(r#"action="/oauth2/consent""#)
    );

    // The password grant: one factor, never enough for this client.
    let (status, _, body) = token(
        &app,
        Some((&client.id, client.secret.as_deref().unwrap())),
        &[
            ("grant_type", "password"),
            ("username", "peggy@example.com"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");

    // Only known classes can be required.
    let root = crate::audit::admin_token(&app).await;
    let res = app
        .request(
            reqwest::Method::PATCH,
            &format!("/admin/clients/{}", client.id),
            Some(&root),
            Some(json!({ "require_acr": "urn:example:gold" })),
        )
        .await;
    assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let res = app
        .request(
            reqwest::Method::PATCH,
            &format!("/admin/clients/{}", client.id),
            Some(&root),
            Some(json!({ "require_acr": null })),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert!(res.body["require_acr"].is_null(), "{}", res.text);
}
