//! The examples against a live Tessera (in process, on a fresh SQLite database): the relying
//! party signs a user in through the hosted pages, and the resource server accepts and refuses
//! access tokens as RFC 9068 and RFC 6750 say.
#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on an unexpected result"
)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera::audit::By;
use tessera::authz::Principal;
use tessera::context::RequestContext;
use tessera::oauth::clients::{self, ClientSpec, Registered};

const PASSWORD: &str = "a long example passphrase 7";
const API: &str = "https://api.example.com";

struct Tessera {
    base: String,
    state: tessera::AppState,
    _dir: tempfile::TempDir,
}

async fn tessera() -> Tessera {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = tessera::Config::load_from(None, &[]).unwrap();
    config.issuer = base.clone();
    config.data_dir = dir.path().to_path_buf();
    config.database_url = Some(format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("tessera.db").display()
    ));
    config.password.argon2_memory_kib = 64;
    config.password.argon2_iterations = 1;
    let app = tessera::App::with_listener(config, tessera::clock::Clock::System, listener)
        .await
        .unwrap();
    let state = app.state().clone();
    tokio::spawn(app.run_until(std::future::pending()));
    Tessera {
        base,
        state,
        _dir: dir,
    }
}

impl Tessera {
    async fn client(&self, spec: ClientSpec) -> Registered {
        let ctx = RequestContext::system();
        let by = By {
            principal: &Principal::System,
            ctx: &ctx,
        };
        clients::create(&self.state.store, spec, by, now())
            .await
            .unwrap()
    }
}

fn now() -> i64 {
    tessera::clock::Clock::System.now()
}

/// An example binary, killed when the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(bin: &str, port: u16, env: &[(&str, &str)]) -> Running {
    let child = Command::new(bin)
        .envs(env.iter().copied())
        .env("LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return running;
        }
        if let Some(status) = running.0.try_wait().unwrap() {
            panic!("{bin} exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{bin} did not listen on {port}");
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(res: &reqwest::Response) -> String {
    res.headers()["location"].to_str().unwrap().to_string()
}

/// A hidden form field of a hosted page.
fn field(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html.find(&marker).unwrap() + marker.len();
    html[start..start + html[start..].find('"').unwrap()]
        .replace("&#x2f;", "/")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relying_party_signs_a_user_in() {
    let idp = tessera().await;
    let browser = browser();
    let res = browser
        .post(format!("{}/auth/register", idp.base))
        .json(&json!({ "email": "ada@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let port = free_port();
    let app = format!("http://127.0.0.1:{port}");
    let reg = idp
        .client(ClientSpec {
            name: Some("Example app".into()),
            redirect_uris: Some(vec![format!("{app}/callback")]),
            grant_types: Some(vec!["authorization_code".into()]),
            scopes: Some(vec!["openid".into(), "email".into()]),
            ..ClientSpec::default()
        })
        .await;
    let secret = reg.client_secret.clone().unwrap();
    let _rp = start(
        env!("CARGO_BIN_EXE_relying-party"),
        port,
        &[
            ("TESSERA_ISSUER", &idp.base),
            ("CLIENT_ID", &reg.client.client_id),
            ("CLIENT_SECRET", &secret),
        ],
    )
    .await;

    // The app sends the browser to Tessera; the user signs in and allows the app.
    let res = browser.get(format!("{app}/")).send().await.unwrap();
    assert!(res.status().is_redirection(), "{}", res.status());
    let authorize = location(&res);
    assert!(authorize.starts_with(&format!("{}/oauth2/authorize?", idp.base)));
    assert!(
        authorize.contains("code_challenge_method=S256"),
        "{authorize}"
    );
    let login = browser
        .get(&authorize)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let res = browser
        .post(format!("{}/oauth2/login", idp.base))
        .form(&[
            ("csrf_token", field(&login, "csrf_token")),
            ("request", field(&login, "request")),
            ("email", "ada@example.com".into()),
            ("password", PASSWORD.into()),
        ])
        .send()
        .await
        .unwrap();
    let consent = res.text().await.unwrap();
    assert!(consent.contains(r#"action="/oauth2/consent""#), "{consent}");
    let res = browser
        .post(format!("{}/oauth2/consent", idp.base))
        .form(&[
            ("csrf_token", field(&consent, "csrf_token")),
            ("request", field(&consent, "request")),
            ("decision", "allow".into()),
        ])
        .send()
        .await
        .unwrap();
    let back = location(&res);
    assert!(back.starts_with(&format!("{app}/callback?")), "{back}");

    // Back at the app: it redeemed the code, checked the ID token and asked UserInfo.
    let res = browser.get(&back).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let who: Value = res.json().await.unwrap();
    assert_eq!(who["signed_in"], true, "{who}");
    assert_eq!(who["email"], "ada@example.com");
    assert_eq!(who["issuer"], idp.base.as_str());
    assert!(who["sub"].as_str().is_some_and(|s| !s.is_empty()));

    // The same callback again: the state was used up.
    let res = browser.get(&back).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

async fn client_credentials(
    idp: &Tessera,
    reg: &Registered,
    scope: &str,
    resource: &str,
) -> String {
    let res = reqwest::Client::new()
        .post(format!("{}/oauth2/token", idp.base))
        .basic_auth(&reg.client.client_id, reg.client_secret.as_deref())
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("resource", resource),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resource_server_checks_access_tokens_through_the_jwks() {
    let idp = tessera().await;
    let reg = idp
        .client(ClientSpec {
            name: Some("Report builder".into()),
            grant_types: Some(vec!["client_credentials".into()]),
            scopes: Some(vec!["reports:read".into(), "reports:write".into()]),
            resources: Some(vec![API.into(), "https://other.example.com".into()]),
            ..ClientSpec::default()
        })
        .await;
    let port = free_port();
    let _rs = start(
        env!("CARGO_BIN_EXE_resource-server"),
        port,
        &[
            ("TESSERA_ISSUER", &idp.base),
            ("AUDIENCE", API),
            ("REQUIRED_SCOPE", "reports:read"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/reports");
    let call = |token: Option<String>| {
        let mut req = http.get(&url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };

    let token = client_credentials(&idp, &reg, "reports:read", API).await;
    let res = call(Some(token.clone())).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["client_id"], reg.client.client_id.as_str());

    // No token, a broken one, a token for another API, one with a signature that is not the
    // key's: 401 invalid_token (RFC 6750 §3.1).
    let res = call(None).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers().contains_key("www-authenticate"));
    let other = client_credentials(&idp, &reg, "reports:read", "https://other.example.com").await;
    let mut forged = token.clone();
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    for bad in ["not.a.jwt".to_string(), other, forged] {
        let res = call(Some(bad)).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(
            res.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains(r#"error="invalid_token""#)
        );
    }

    // A valid token without the scope: 403 insufficient_scope (RFC 6750 §3.1).
    let write_only = client_credentials(&idp, &reg, "reports:write", API).await;
    let res = call(Some(write_only)).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
}
