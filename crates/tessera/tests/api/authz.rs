//! The access matrix: every route of the router × every kind of caller → the expected answer.
//!
//! The routes come from `tessera::http::paths()` and their methods from the router's own `Allow`
//! header, so a new route is in the matrix the day it is added. `/admin/*` and `/identity/*`
//! are classified by prefix; every other route must be named in [`class_of`], or the test fails
//! asking for it.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Backend, PASSWORD, TestApp, Tokens};
use crate::oauth::{browse, param, register_client, token};
use crate::on_both_backends;

on_both_backends!(
    every_route_answers_each_kind_of_caller_as_the_authorization_model_says,
    third_party_token_of_an_admin_cannot_use_account_or_admin_apis,
    first_party_scopes_are_only_for_first_party_clients,
);

const REDIRECT: &str = "http://127.0.0.1:9/callback";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Operator API: admin users (own login, or a first-party client with `tessera:admin`).
    Admin,
    /// The user's own account: own login, or a first-party client with `tessera:account`.
    Account,
    /// `/auth/logout`: as Account, and also open without a token (with a refresh token).
    Logout,
    /// OIDC UserInfo: user tokens with `openid`.
    UserInfo,
    /// Client-authenticated OAuth endpoints and public pages: a bearer token changes nothing.
    Unaffected,
    /// Inside one tenant (`/tenants/{id}/…`): as Account for users, and open to the tenant's own
    /// API keys (what a member or key may do there is the tenant matrix's business,
    /// tests/api/tenants.rs); the matrix's tenant is not the key's, so a key gets 404.
    Tenant,
    /// The AuthZEN decision point: users (first-party), API keys, and resource servers with the
    /// introspection permission (whom each may ask about: tests/api/access.rs).
    Access,
}

fn class_of(method: &Method, path: &str) -> Option<Class> {
    if path.starts_with("/admin/") || path == "/metrics" {
        return Some(Class::Admin);
    }
    if path.starts_with("/identity/") {
        return Some(Class::Account);
    }
    // Suspension and plan overrides are for system administrators.
    if path.starts_with("/tenants/{id}/suspend")
        || path.starts_with("/tenants/{id}/reactivate")
        || path.ends_with("/domains/{domain}/verify")
        || (path == "/tenants/{id}/plan" && *method == Method::PATCH)
    {
        return Some(Class::Admin);
    }
    if path.starts_with("/tenants/{id}") {
        return Some(Class::Tenant);
    }
    if path == "/tenants" || path == "/auth/switch-tenant" || path == "/invitations/accept" {
        return Some(Class::Account);
    }
    if path.starts_with("/access/v1/") {
        return Some(Class::Access);
    }
    Some(match path {
        "/auth/logout" => Class::Logout,
        "/oauth2/userinfo" => Class::UserInfo,
        "/auth/register"
        | "/auth/login"
        | "/auth/mfa"
        | "/auth/passkey/start"
        | "/auth/passkey/finish"
        | "/auth/refresh"
        | "/auth/verify-email"
        | "/auth/resend-verification"
        | "/auth/request-password-reset"
        | "/auth/reset-password"
        | "/oauth2/authorize"
        | "/oauth2/login"
        | "/oauth2/mfa"
        | "/oauth2/passkey"
        | "/oauth2/passkeys"
        | "/oauth2/consent"
        | "/oauth2/token"
        | "/oauth2/introspect"
        | "/oauth2/revoke"
        | "/oauth2/logout"
        | "/.well-known/openid-configuration"
        | "/.well-known/oauth-authorization-server"
        | "/.well-known/jwks.json"
        | "/.well-known/authzen-configuration"
        | "/healthz"
        | "/readyz"
        | "/verify-email"
        | "/reset-password"
        | "/link-identity"
        | "/assets/tessera.css"
        | "/assets/logo.svg"
        | "/assets/passkey.js"
        | "/auth/federated/{idp}/start"
        | "/auth/federated/{idp}/callback"
        | "/auth/federated/link"
        | "/auth/federated/link/email"
        | "/auth/federated/token"
        | "/openapi.json"
        | "/docs"
        | "/docs/"
        | "/docs/{*file}" => Class::Unaffected,
        _ => return None,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    Nobody,
    User,
    Admin,
    /// An admin's token from a third-party client registered for `openid` only.
    ThirdPartyOfAdmin,
    /// A client-credentials token.
    Machine,
    /// An admin's token from a first-party client granted `tessera:admin` only.
    FirstPartyAdminScope,
    /// A user's token from a first-party client granted `openid tessera:account`.
    FirstPartyAccountScope,
    /// An API key (`tsk_…`) of the user's personal tenant.
    ApiKey,
    /// That API key exchanged for a JWT (RFC 8693): acts as the key.
    ExchangedApiKey,
}

const CALLERS: &[Caller] = &[
    Caller::Nobody,
    Caller::User,
    Caller::Admin,
    Caller::ThirdPartyOfAdmin,
    Caller::Machine,
    Caller::FirstPartyAdminScope,
    Caller::FirstPartyAccountScope,
    Caller::ApiKey,
    Caller::ExchangedApiKey,
];

/// What a caller should get: allowed (anything but 401/403/5xx), or exactly this status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Allowed,
    Status(StatusCode),
    /// Exactly what the same request without a token gets.
    SameAsNobody,
}

fn expect(class: Class, caller: Caller) -> Expect {
    use Caller::*;
    const UNAUTHORIZED: Expect = Expect::Status(StatusCode::UNAUTHORIZED);
    const FORBIDDEN: Expect = Expect::Status(StatusCode::FORBIDDEN);
    match (class, caller) {
        (Class::Unaffected, _) => Expect::SameAsNobody,
        // `{}` without a refresh token.
        (Class::Logout, Nobody) => Expect::Status(StatusCode::UNPROCESSABLE_ENTITY),
        (_, Nobody) => UNAUTHORIZED,
        // An API key is no user and no OAuth token: only its own tenant's routes take it.
        (Class::Tenant, ApiKey | ExchangedApiKey) => Expect::Status(StatusCode::NOT_FOUND),
        // RFC 6750 §3.1: not an access token UserInfo or logout can use.
        (Class::UserInfo | Class::Logout, ApiKey) => UNAUTHORIZED,
        // A valid access token, but for no user (RFC 6750 §3.1 insufficient_scope).
        (Class::UserInfo | Class::Logout, ExchangedApiKey) => FORBIDDEN,
        (Class::Access, User | Admin | FirstPartyAccountScope | ApiKey | ExchangedApiKey) => {
            Expect::Allowed
        }
        (Class::Access, _) => FORBIDDEN,
        (Class::Tenant, User | Admin | FirstPartyAccountScope) => Expect::Allowed,
        (Class::Tenant, _) => FORBIDDEN,
        (Class::Admin, Admin | FirstPartyAdminScope) => Expect::Allowed,
        (Class::Admin, _) => FORBIDDEN,
        (Class::Account | Class::Logout, User | Admin | FirstPartyAccountScope) => Expect::Allowed,
        (Class::Account | Class::Logout, _) => FORBIDDEN,
        (Class::UserInfo, ThirdPartyOfAdmin | FirstPartyAccountScope) => Expect::Allowed,
        (Class::UserInfo, _) => FORBIDDEN,
    }
}

struct Callers {
    user: String,
    admin: String,
    third_party: String,
    machine: String,
    first_party_admin: String,
    first_party_account: String,
    api_key: String,
    exchanged_api_key: String,
}

impl Callers {
    fn token(&self, caller: Caller) -> Option<&str> {
        Some(match caller {
            Caller::Nobody => return None,
            Caller::User => &self.user,
            Caller::Admin => &self.admin,
            Caller::ThirdPartyOfAdmin => &self.third_party,
            Caller::Machine => &self.machine,
            Caller::FirstPartyAdminScope => &self.first_party_admin,
            Caller::FirstPartyAccountScope => &self.first_party_account,
            Caller::ApiKey => &self.api_key,
            Caller::ExchangedApiKey => &self.exchanged_api_key,
        })
    }
}

pub(crate) async fn create_admin(app: &TestApp, email: &str) {
    let hash = tessera::passwords::Passwords::new(&app.config.password)
        .unwrap()
        .hash(PASSWORD)
        .await
        .unwrap();
    tessera::accounts::create(
        &app.state.store,
        email,
        Some(&hash),
        Some(1),
        &[tessera::authz::Role::Admin],
        None,
        1,
    )
    .await
    .unwrap();
}

/// The admin signs in through the hosted pages to a third-party client registered for
/// `openid` only, as the security review did; returns the client's access token.
async fn third_party_token_via_hosted_login(app: &TestApp, email: &str) -> String {
    let client = register_client(app, false, &["authorization_code"], &["openid"]).await;
    let id = client.id.clone();
    let secret = client.secret.clone().unwrap();
    let url = format!(
        "{}/oauth2/authorize?response_type=code&client_id={id}&redirect_uri={REDIRECT}&scope=openid&state=s1",
        app.base
    );
    let back = browse(app, &url, email, "allow").await;
    let code = param(&back, "code").expect("a code");
    let (status, _, body) = token(
        app,
        Some((&id, &secret)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["access_token"].as_str().is_some(),
        "an access token: {body}"
    );
    body["access_token"].as_str().unwrap().to_string()
}

/// A first-party client using the password grant with `scope`; returns the access token.
async fn first_party_token(app: &TestApp, email: &str, scope: &str) -> String {
    let spec = tessera::oauth::clients::ClientSpec {
        name: Some("First-party app".into()),
        grant_types: Some(vec!["password".into()]),
        scopes: Some(
            ["openid", "tessera:account", "tessera:admin"]
                .map(String::from)
                .to_vec(),
        ),
        first_party: Some(true),
        ..Default::default()
    };
    let ctx = tessera::context::RequestContext::system();
    let by = tessera::audit::By {
        principal: &tessera::authz::Principal::System,
        ctx: &ctx,
    };
    let r = tessera::oauth::clients::create(&app.state.store, spec, by, 1)
        .await
        .unwrap();
    let (status, _, body) = token(
        app,
        Some((&r.client.client_id, r.client_secret.as_deref().unwrap())),
        &[
            ("grant_type", "password"),
            ("username", email),
            ("password", PASSWORD),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

async fn machine_token(app: &TestApp) -> String {
    let client = register_client(app, false, &["client_credentials"], &["api.read"]).await;
    let (status, _, body) = token(
        app,
        Some((&client.id, client.secret.as_deref().unwrap())),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

/// An API key of the user's personal tenant, with every permission the owner holds.
async fn api_key_of_personal_tenant(app: &TestApp, user_token: &str) -> String {
    let tid = crate::tenants::claims(user_token)["tid"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .request(
            Method::POST,
            &format!("/tenants/{tid}/api-keys"),
            Some(user_token),
            Some(json!({"name": "matrix", "permissions": ["tenant:read", "members:read"]})),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    res.body["key"].as_str().unwrap().to_string()
}

async fn callers(app: &TestApp) -> Callers {
    create_admin(app, "root@example.com").await;
    let admin = Tokens::from(&app.login("root@example.com", PASSWORD).await.body).access;
    let user = app.signed_in("user@example.com").await.access;
    let api_key = api_key_of_personal_tenant(app, &user).await;
    Callers {
        exchanged_api_key: crate::token_exchange::jwt_for_key(app, &api_key).await,
        api_key,
        third_party: third_party_token_via_hosted_login(app, "root@example.com").await,
        machine: machine_token(app).await,
        first_party_admin: first_party_token(app, "root@example.com", "tessera:admin").await,
        first_party_account: first_party_token(app, "user@example.com", "openid tessera:account")
            .await,
        user,
        admin,
    }
}

/// The methods a path answers, from the `Allow` header of a 405.
async fn methods_of(app: &TestApp, path: &str) -> Vec<Method> {
    let res = app
        .client
        .request(
            Method::from_bytes(b"PROPFIND").unwrap(),
            format!("{}{path}", app.base),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
    let allow = res
        .headers()
        .get("allow")
        .unwrap_or_else(|| panic!("{path}: 405 without Allow"))
        .to_str()
        .unwrap()
        .to_string();
    allow
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty() && *m != "HEAD")
        .map(|m| Method::from_bytes(m.as_bytes()).unwrap())
        .collect()
}

async fn send(app: &TestApp, method: &Method, path: &str, token: Option<&str>) -> StatusCode {
    let body = (*method != Method::GET).then(|| json!({}));
    app.request(method.clone(), path, token, body).await.status
}

async fn every_route_answers_each_kind_of_caller_as_the_authorization_model_says(b: Backend) {
    let app = TestApp::spawn(b).await;
    let who = callers(&app).await;
    let mut paths = tessera::http::paths();
    assert!(paths.len() >= 30, "the router lists its routes: {paths:?}");
    // Logout ends the callers' sessions: last.
    paths.sort_by_key(|p| p == "/auth/logout");
    let mut checked = 0;
    let mut failures = Vec::new();
    for path in paths {
        let path = path.as_str();
        let concrete = path
            .replace("{id}", "00000000-0000-7000-8000-000000000000")
            .replace("{user_id}", "00000000-0000-7000-8000-000000000001")
            .replace("{invitation_id}", "00000000-0000-7000-8000-000000000002")
            .replace("{key_id}", "00000000-0000-7000-8000-000000000003")
            .replace("{name}", "custom")
            .replace("{domain}", "example.com")
            .replace("{*file}", "index.html");
        for method in methods_of(&app, &concrete).await {
            let class = class_of(&method, path).unwrap_or_else(|| {
                panic!(
                    "{method} {path} is not in the access matrix: add it to class_of in tests/api/authz.rs"
                )
            });
            let nobody = send(&app, &method, &concrete, None).await;
            for &caller in CALLERS {
                let status = match caller {
                    Caller::Nobody => nobody,
                    _ => send(&app, &method, &concrete, who.token(caller)).await,
                };
                let ok = match expect(class, caller) {
                    Expect::Allowed => {
                        status != StatusCode::UNAUTHORIZED
                            && status != StatusCode::FORBIDDEN
                            && !status.is_server_error()
                    }
                    Expect::Status(s) => status == s,
                    Expect::SameAsNobody => status == nobody && !status.is_server_error(),
                };
                checked += 1;
                if !ok {
                    failures.push(format!(
                        "{method} {path} as {caller:?} ({class:?}): got {status}, expected {:?} (nobody: {nobody})",
                        expect(class, caller)
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 200, "{checked} cells");
}

/// The security review's finding, step by step: a client registered for `openid` only, an
/// administrator signs in through the hosted page, and the client's token is refused by the
/// account and admin APIs (it could create a client with a foreign redirect URI before).
async fn third_party_token_of_an_admin_cannot_use_account_or_admin_apis(b: Backend) {
    let app = TestApp::spawn(b).await;
    create_admin(&app, "root@example.com").await;
    let token = third_party_token_via_hosted_login(&app, "root@example.com").await;
    let claims: serde_json::Value = {
        use base64::Engine;
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        claims["roles"],
        json!([]),
        "third-party tokens carry no roles"
    );
    let me = app.get("/identity/me", &token).await;
    assert_eq!(me.status, StatusCode::FORBIDDEN, "{}", me.text);
    assert_eq!(me.body["error"], "insufficient_scope");
    let audit = app.get("/admin/audit", &token).await;
    assert_eq!(audit.status, StatusCode::FORBIDDEN);
    let created = app
        .request(
            Method::POST,
            "/admin/clients",
            Some(&token),
            Some(json!({
                "name": "evil",
                "redirect_uris": ["https://evil.example/cb"],
                "grant_types": ["password"],
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::FORBIDDEN, "{}", created.text);
    let list = tessera::oauth::clients::list(
        &app.state.store,
        &tessera::authz::Principal::System,
        None,
        100,
    )
    .await
    .unwrap();
    assert!(
        list.iter().all(|c| c.name != "evil"),
        "no client was created"
    );
    // UserInfo is what the token is for.
    let info = app.get("/oauth2/userinfo", &token).await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.text);
}

async fn first_party_scopes_are_only_for_first_party_clients(b: Backend) {
    let app = TestApp::spawn(b).await;
    create_admin(&app, "root@example.com").await;
    let admin = Tokens::from(&app.login("root@example.com", PASSWORD).await.body).access;
    let third = app
        .request(
            Method::POST,
            "/admin/clients",
            Some(&admin),
            Some(json!({
                "name": "not ours",
                "grant_types": ["client_credentials"],
                "scopes": ["tessera:admin"],
            })),
        )
        .await;
    assert_eq!(
        third.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        third.text
    );
    assert_eq!(third.body["fields"][0]["field"], "scopes");
    let ours = app
        .request(
            Method::POST,
            "/admin/clients",
            Some(&admin),
            Some(json!({
                "name": "ours",
                "grant_types": ["password"],
                "scopes": ["openid", "tessera:admin"],
                "first_party": true,
            })),
        )
        .await;
    assert_eq!(ours.status, StatusCode::CREATED, "{}", ours.text);
    assert_eq!(ours.body["first_party"], true);
    // Turning a client third-party again with tessera:* scopes is refused too.
    let id = ours.body["client_id"].as_str().unwrap();
    let back = app
        .request(
            Method::PATCH,
            &format!("/admin/clients/{id}"),
            Some(&admin),
            Some(json!({ "first_party": false })),
        )
        .await;
    assert_eq!(
        back.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        back.text
    );
}
