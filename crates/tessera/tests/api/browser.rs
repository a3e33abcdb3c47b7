//! Hosted pages used by a real browser: Debian's Chromium, driven by `playwright-core` from
//! `tests/browser/` (installed with `npm ci` there on first use).
//!
//! Needs `/usr/bin/chromium` (`apt-get install -y chromium`); without it the test fails and says
//! so. It is never skipped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, PASSWORD, TestApp};
use crate::oauth::{param, register_client, token};
use crate::tenants::{claims, team};

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("TESSERA_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    assert!(
        path.exists(),
        "the browser tests need Debian's Chromium at {}: install it with \
         `apt-get install -y chromium` (or set TESSERA_TEST_CHROMIUM)",
        path.display()
    );
    path
}

/// `npm ci` in `tests/browser` once, when `playwright-core` is not installed yet.
async fn install_playwright() {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        if scripts().join("node_modules/playwright-core").exists() {
            return;
        }
        let out = tokio::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(scripts())
            .output()
            .await
            .expect("the browser tests need Node.js and npm (`apt-get install -y nodejs npm`)");
        assert!(
            out.status.success(),
            "`npm ci` in {} failed (the npm registry must be reachable): {}",
            scripts().display(),
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
}

/// Runs `script` with `env`; returns the JSON line it prints.
/// The `titles` a script printed: the pages it went through.
fn titles_of(got: &Value) -> Vec<&str> {
    got["titles"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

async fn run(script: &str, env: &[(&str, &str)]) -> Value {
    let chromium = chromium();
    install_playwright().await;
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(script)
        .current_dir(scripts())
        .env("CHROMIUM", chromium)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 120 s"))
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{script} printed {stdout:?}: {e}"))
}

#[tokio::test]
async fn hosted_tenant_picker_in_a_real_browser() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let ada = app.signed_in("ada@example.com").await;
    let acme = team(&app, &ada.access, "Acme Widgets", "acme").await;
    team(&app, &ada.access, "Beta Labs", "beta").await;
    let c = register_client(&app, false, &["authorization_code"], &["openid", "tenant"]).await;
    let (id, secret) = (c.id.as_str(), c.secret.as_deref().unwrap());
    let authorize = format!(
        "{}/oauth2/authorize?response_type=code&client_id={id}&redirect_uri={REDIRECT}&scope=openid%20tenant&state=s1&code_challenge={CHALLENGE}&code_challenge_method=S256",
        app.base
    );
    let got = run(
        "tenant_picker.mjs",
        &[
            ("AUTHORIZE_URL", &authorize),
            ("CALLBACK", REDIRECT),
            ("EMAIL", "ada@example.com"),
            ("PASSWORD", PASSWORD),
            ("PICK", "Acme Widgets"),
        ],
    )
    .await;

    // Login, consent, then the picker listing all three workspaces (personal, Acme, Beta).
    let titles = titles_of(&got);
    assert_eq!(titles.len(), 3, "{got}");
    assert!(titles[0].starts_with("Sign in"), "{got}");
    assert!(titles[2].starts_with("Choose a workspace"), "{got}");
    let tenants = got["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 3, "{got}");
    for name in ["Acme Widgets", "Beta Labs"] {
        assert!(tenants.iter().any(|t| t == name), "{name} missing: {got}");
    }
    // The pages run no script and break no policy of their own: Chromium logged no error.
    assert_eq!(got["console_errors"], serde_json::json!([]), "{got}");

    // The click sent the browser back with a code (and the state) for Acme.
    let back = got["callback"].as_str().unwrap_or_else(|| panic!("{got}"));
    assert_eq!(param(back, "state").as_deref(), Some("s1"), "{back}");
    let code = param(back, "code").unwrap_or_else(|| panic!("no code in {back}"));
    let (status, _, body) = token(
        &app,
        Some((id, secret)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = claims(body["access_token"].as_str().unwrap());
    assert_eq!(access["tid"], acme.as_str(), "{access}");
    assert_eq!(access["tenant_roles"], serde_json::json!(["owner"]));
}

/// The hosted second-factor page in a real browser: an account with a confirmed authenticator
/// app signs in through an OAuth code flow; a wrong code is shown as an error on the page, the
/// right one goes on to consent and back to the client with a code that redeems.
#[tokio::test]
async fn hosted_second_factor_in_a_real_browser() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let ada = crate::mfa::enrolled(&app, "ada@example.com").await;
    let c = register_client(&app, false, &["authorization_code"], &["openid"]).await;
    let (id, secret) = (c.id.as_str(), c.secret.as_deref().unwrap());
    let authorize = format!(
        "{}/oauth2/authorize?response_type=code&client_id={id}&redirect_uri={REDIRECT}&scope=openid&state=s2&code_challenge={CHALLENGE}&code_challenge_method=S256",
        app.base
    );
    let code = crate::mfa::code_at(&ada.secret, app.clock.now());
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let got = run(
        "mfa_sign_in.mjs",
        &[
            ("AUTHORIZE_URL", &authorize),
            ("CALLBACK", REDIRECT),
            ("EMAIL", "ada@example.com"),
            ("PASSWORD", PASSWORD),
            ("WRONG_CODE", wrong),
            ("CODE", &code),
        ],
    )
    .await;
    let titles = titles_of(&got);
    assert_eq!(titles.len(), 3, "{got}");
    assert!(titles[0].starts_with("Sign in"), "{got}");
    assert!(titles[1].starts_with("Second factor"), "{got}");
    assert!(
        got["mfa_error"]
            .as_str()
            .is_some_and(|e| e.contains("did not work")),
        "{got}"
    );
    // Chromium logs the wrong code's 401 page as a failed load; nothing else (no refused
    // script or style) may appear.
    let errors = got["console_errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .filter_map(Value::as_str)
            .all(|e| e.contains("401")),
        "{got}"
    );
    let back = got["callback"].as_str().unwrap_or_else(|| panic!("{got}"));
    assert_eq!(param(back, "state").as_deref(), Some("s2"), "{back}");
    let code = param(back, "code").unwrap_or_else(|| panic!("no code in {back}"));
    let (status, _, body) = token(
        &app,
        Some((id, secret)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["id_token"].is_string(), "{body}");
    let types = crate::helpers::event_types_of(&app, &ada.user_id).await;
    assert!(
        types
            .iter()
            .any(|t| t == "identity.mfa.challenge_failed.v1"),
        "the wrong code was recorded: {types:?}"
    );
}

/// Passkeys on the hosted pages in a real browser, with Chromium's virtual authenticator: the
/// user signs in with the password through a code flow, adds a passkey on the passkeys page
/// (the first factor: recovery codes are shown), and after signing out signs in through a second
/// code flow with the passkey button alone, and through a third with the browser's autofill
/// (conditional UI); the ID tokens say how (`amr`).
#[tokio::test]
async fn hosted_passkey_in_a_real_browser() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.issuer = crate::helpers::LOCALHOST_ISSUER.into();
    })
    .await;
    let issuer = app.config.issuer.clone();
    app.signed_in("ada@example.com").await;
    // The client comes back to a page that loads (Tessera's health check): the browser lands.
    let callback = format!("{issuer}/healthz");
    let c = crate::oauth::create_client(
        &app,
        tessera::oauth::clients::ClientSpec {
            name: Some("Test App".into()),
            redirect_uris: Some(vec![callback.clone()]),
            grant_types: Some(vec!["authorization_code".into()]),
            scopes: Some(vec!["openid".into()]),
            ..Default::default()
        },
    )
    .await;
    let (id, secret) = (c.id.as_str(), c.secret.as_deref().unwrap());
    let authorize = |state: &str| {
        format!(
            "{issuer}/oauth2/authorize?response_type=code&client_id={id}&redirect_uri={callback}&scope=openid&state={state}&code_challenge={CHALLENGE}&code_challenge_method=S256"
        )
    };
    let got = run(
        "passkey_sign_in.mjs",
        &[
            ("ISSUER", &issuer),
            ("AUTHORIZE_URL", &authorize("p1")),
            ("AUTHORIZE_URL_2", &authorize("p2")),
            ("AUTHORIZE_URL_3", &authorize("p3")),
            ("CALLBACK", &callback),
            ("EMAIL", "ada@example.com"),
            ("PASSWORD", PASSWORD),
        ],
    )
    .await;
    let titles = titles_of(&got);
    assert_eq!(titles.len(), 3, "{got}");
    assert!(titles[0].starts_with("Sign in"), "{got}");
    assert!(titles[1].starts_with("Passkeys"), "{got}");
    assert!(titles[2].starts_with("Sign in"), "{got}");
    let added = got["added"].as_str().unwrap_or_else(|| panic!("{got}"));
    assert!(added.contains("recovery codes"), "{added}");
    // The authenticator holds one discoverable credential for this relying party.
    assert_eq!(
        got["credentials"],
        serde_json::json!([{ "resident": true, "rp": "localhost" }]),
        "{got}"
    );
    // The script ran under the page's CSP: Chromium refused nothing. (The health check the
    // client lands on has no favicon: Chromium logs its 404, which is no page's resource.)
    let errors = got["console_errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .filter_map(Value::as_str)
            .all(|e| e.starts_with("Failed to load resource") && e.contains("404")),
        "{got}"
    );

    let callbacks = got["callbacks"].as_array().unwrap();
    assert_eq!(callbacks.len(), 3, "{got}");
    let mut amrs = Vec::new();
    for (back, state) in callbacks.iter().zip(["p1", "p2", "p3"]) {
        let back = back.as_str().unwrap();
        assert_eq!(param(back, "state").as_deref(), Some(state), "{back}");
        let code = param(back, "code").unwrap_or_else(|| panic!("no code in {back}"));
        let (status, _, body) = token(
            &app,
            Some((id, secret)),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &callback),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        amrs.push(claims(body["id_token"].as_str().unwrap())["amr"].clone());
    }
    assert_eq!(amrs[0], serde_json::json!(["pwd"]));
    assert_eq!(amrs[1], serde_json::json!(["hwk", "user", "mfa"]));
    assert_eq!(amrs[2], serde_json::json!(["hwk", "user", "mfa"]));
}

#[tokio::test]
async fn email_link_pages_in_a_real_browser() {
    let sink = crate::helpers::SmtpSink::start().await;
    let app = TestApp::spawn_with(Backend::Sqlite, |c| sink.configure(c)).await;
    assert_eq!(
        app.register("ada@example.com").await.status,
        StatusCode::CREATED
    );
    let (verify, _) = crate::helpers::find_link(&sink.next_message().await, "verify-email");
    let res = app
        .post(
            "/auth/request-password-reset",
            serde_json::json!({ "email": "ada@example.com" }),
        )
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text);
    let (reset, _) = crate::helpers::find_link(&sink.next_message().await, "reset-password");
    let on_app = |link: &str| link.replace(crate::helpers::ISSUER, &app.base);
    let new_password = "a brand new passphrase 42";
    let got = run(
        "email_links.mjs",
        &[
            ("VERIFY_URL", &on_app(&verify)),
            ("RESET_URL", &on_app(&reset)),
            ("NEW_PASSWORD", new_password),
        ],
    )
    .await;
    assert_eq!(got["verified"], "Email address confirmed", "{got}");
    assert_eq!(got["console_errors"], serde_json::json!([]), "{got}");
    let user = tessera::store::users::find_by_email(app.state.store.pool(), "ada@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(user.email_verified_at.is_some(), "{got}");
    // The new password signs in; the old one no longer does.
    assert_eq!(
        app.login("ada@example.com", new_password).await.status,
        StatusCode::OK,
        "{got}"
    );
    assert_eq!(
        app.login("ada@example.com", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// The documentation UI in a real browser: Swagger UI, served from the binary, renders every
/// operation of `/openapi.json` under its CSP (a refused script or style is a console error)
/// and "Try it out" reaches the API.
#[tokio::test]
async fn documentation_ui_in_a_real_browser() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let got = run("docs_ui.mjs", &[("BASE", &app.base)]).await;
    let doc: Value = serde_json::from_str(tessera::http::openapi_json()).unwrap();
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert!(
        got["title"].as_str().unwrap().starts_with("Tessera"),
        "{got}"
    );
    assert_eq!(got["operations"], operations, "{got}");
    assert_eq!(got["healthz"], "200", "{got}");
    assert_eq!(got["console_errors"], serde_json::json!([]), "{got}");
}

#[tokio::test]
async fn federated_sign_in_in_a_real_browser() {
    use crate::federation::{self, Federation};
    let f: Federation = federation::setup(Backend::Sqlite, false).await;
    // An account at Tessera that never verified its address, and the same address verified at
    // the upstream: the link needs the account's password.
    f.app.register("ada@corp.example").await;
    federation::upstream_user(&f.upstream, "ada@corp.example", true).await;
    let got = run(
        "federated_sign_in.mjs",
        &[
            ("AUTHORIZE_URL", &f.authorize_url("")),
            ("CALLBACK", federation::REDIRECT),
            ("PROVIDER", "Upstream"),
            ("EMAIL", "ada@corp.example"),
            ("PASSWORD", PASSWORD),
        ],
    )
    .await;
    let titles = titles_of(&got);
    assert_eq!(titles.len(), 4, "{got}");
    assert!(titles[0].starts_with("Sign in"), "{got}");
    assert!(titles[1].starts_with("Sign in"), "{got}");
    assert!(titles[2].starts_with("Link your account"), "{got}");
    // No refused script, style or request on any page.
    assert_eq!(got["console_errors"], serde_json::json!([]), "{got}");
    let back = got["callback"].as_str().unwrap_or_else(|| panic!("{got}"));
    let code = param(back, "code").unwrap_or_else(|| panic!("no code in {back}"));
    let tokens = f.redeem(&code).await;
    let id_token = claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(id_token["amr"], serde_json::json!(["pwd"]), "{id_token}");
    let user = tessera::store::users::find_by_email(f.app.state.store.pool(), "ada@corp.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id_token["sub"], user.id.as_str());
    let linked = tessera::store::federation::identities_of(f.app.state.store.pool(), &user.id)
        .await
        .unwrap();
    assert_eq!(linked.len(), 1);
}

#[tokio::test]
async fn federated_link_by_email_in_a_real_browser() {
    use crate::federation::{self, Federation};
    let f: Federation = federation::setup(Backend::Sqlite, false).await;
    // An account at Tessera with a verified address and no password; the upstream has not
    // verified the address: only an emailed link can show the account is the user's.
    let now = f.app.clock.now();
    let email = "ada@corp.example";
    let store = &f.app.state.store;
    let user = tessera::accounts::create(store, email, None, Some(now), &[], None, now)
        .await
        .unwrap();
    federation::upstream_user(&f.upstream, email, false).await;
    let mail_dir = f.app.config.data_dir.join("mail");
    let got = run(
        "federated_link_by_email.mjs",
        &[
            ("AUTHORIZE_URL", &f.authorize_url("")),
            ("CALLBACK", federation::REDIRECT),
            ("PROVIDER", "Upstream"),
            ("EMAIL", email),
            ("PASSWORD", PASSWORD),
            ("MAIL_DIR", mail_dir.to_str().unwrap()),
        ],
    )
    .await;
    let titles = titles_of(&got);
    assert_eq!(
        titles,
        [
            "Link your account · App",
            "Check your email",
            "Link Upstream",
            "Linked"
        ],
        "{got}"
    );
    assert_eq!(got["console_errors"], serde_json::json!([]), "{got}");
    let back = got["callback"].as_str().unwrap_or_else(|| panic!("{got}"));
    let code = param(back, "code").unwrap_or_else(|| panic!("no code in {back}"));
    let tokens = f.redeem(&code).await;
    let id_token = claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(id_token["sub"], user.id.as_str());
    assert_eq!(id_token["amr"], serde_json::json!(["fed"]), "{id_token}");
}
