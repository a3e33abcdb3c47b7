//! OAuth 2.0 / OpenID Connect, driven by maintained third-party relying-party code (the
//! `openidconnect` crate) through the hosted login and consent pages with a cookie jar.

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IntrospectionUrl,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, ResourceOwnerPassword,
    ResourceOwnerUsername, RevocationUrl, Scope, TokenIntrospectionResponse, TokenResponse,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera::oauth::clients::{self, ClientSpec};

use crate::helpers::{Backend, PASSWORD, TestApp};
use crate::on_both_backends;

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const LOGOUT_REDIRECT: &str = "http://127.0.0.1:9/signed-out";

on_both_backends!(
    code_flow_with_pkce_through_hosted_pages_works_with_an_off_the_shelf_client,
    client_credentials_password_introspection_and_revocation,
    authorization_errors_redirect_only_to_validated_uris,
    token_endpoint_errors_follow_rfc_6749,
    reused_authorization_code_revokes_its_tokens,
    consent_is_remembered_and_prompt_none_works,
    rp_initiated_logout_ends_the_browser_session,
    admin_api_manages_clients,
);

pub(crate) struct Registered {
    pub id: String,
    pub secret: Option<String>,
}

pub(crate) async fn register_client(
    app: &TestApp,
    public: bool,
    grants: &[&str],
    scopes: &[&str],
) -> Registered {
    let spec = ClientSpec {
        name: Some("Test App".into()),
        public,
        redirect_uris: Some(vec![REDIRECT.into()]),
        post_logout_redirect_uris: Some(vec![LOGOUT_REDIRECT.into()]),
        grant_types: Some(grants.iter().map(|s| s.to_string()).collect()),
        scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
        resources: Some(vec!["https://api.example.com".into()]),
        ..Default::default()
    };
    create_client(app, spec).await
}

/// Registers `spec` as the operator would (`tessera client create`).
pub(crate) async fn create_client(app: &TestApp, spec: ClientSpec) -> Registered {
    let ctx = tessera::context::RequestContext::system();
    let by = tessera::audit::By {
        principal: &tessera::authz::Principal::System,
        ctx: &ctx,
    };
    let r = clients::create(&app.state.store, spec, by, app.clock.now())
        .await
        .unwrap();
    Registered {
        id: r.client.client_id,
        secret: r.client_secret,
    }
}

fn http() -> openidconnect::reqwest::Client {
    openidconnect::reqwest::Client::builder()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub(crate) fn unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of a hidden form field in a page.
pub(crate) fn field(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in {html}"))
        + marker.len();
    unescape(&html[start..start + html[start..].find('"').unwrap()])
}

fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no redirect: {}", res.status()))
        .to_str()
        .unwrap()
        .to_string()
}

fn query(url: &str) -> Vec<(String, String)> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded_pairs(q)
}

fn form_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
    url_decode_pairs(q)
}

fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{q}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(crate) fn param(url: &str, name: &str) -> Option<String> {
    query(url)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Walks the hosted pages as a browser: login (if asked), consent (if asked). Returns the final
/// redirect to the client.
pub(crate) async fn browse(app: &TestApp, url: &str, email: &str, consent: &str) -> String {
    let mut res = app.client.get(url).send().await.unwrap();
    for _ in 0..3 {
        if res.status() != StatusCode::OK {
            break;
        }
        let html = res.text().await.unwrap();
        let (action, form) = if html.contains(r#"action="/oauth2/login""#) {
            (
                "login",
                [
                    ("csrf_token", field(&html, "csrf_token")),
                    ("request", field(&html, "request")),
                    ("email", email.into()),
                    ("password", PASSWORD.into()),
                ]
                .to_vec(),
            )
        } else if html.contains(r#"action="/oauth2/consent""#) {
            (
                "consent",
                [
                    ("csrf_token", field(&html, "csrf_token")),
                    ("request", field(&html, "request")),
                    ("decision", consent.into()),
                ]
                .to_vec(),
            )
        } else {
            panic!("unexpected page: {html}");
        };
        res = app
            .client
            .post(format!("{}/oauth2/{action}", app.base))
            .form(&form)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    location(&res)
}

async fn code_flow_with_pkce_through_hosted_pages_works_with_an_off_the_shelf_client(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("ada@example.com").await;
    let reg = register_client(
        &app,
        false,
        &["authorization_code", "refresh_token"],
        &["openid", "profile", "email", "offline_access"],
    )
    .await;
    let http = http();
    let meta =
        CoreProviderMetadata::discover_async(IssuerUrl::new(app.base.clone()).unwrap(), &http)
            .await
            .expect("discovery");
    let client = CoreClient::from_provider_metadata(
        meta,
        ClientId::new(reg.id.clone()),
        reg.secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap())
    .set_introspection_url(
        IntrospectionUrl::new(format!("{}/oauth2/introspect", app.base)).unwrap(),
    )
    .set_revocation_url(RevocationUrl::new(format!("{}/oauth2/revoke", app.base)).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("offline_access".into()))
        .set_pkce_challenge(challenge)
        .url();
    let redirect = browse(&app, url.as_str(), "ada@example.com", "allow").await;
    assert!(redirect.starts_with(REDIRECT), "{redirect}");
    assert_eq!(
        param(&redirect, "state").as_deref(),
        Some(csrf.secret().as_str())
    );
    assert_eq!(
        param(&redirect, "iss").as_deref(),
        Some(app.base.as_str()),
        "RFC 9207 iss"
    );
    let code = param(&redirect, "code").unwrap();

    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    let id_token = tokens.id_token().expect("id_token");
    let claims = id_token
        .claims(&client.id_token_verifier(), &nonce)
        .expect("id_token validates");
    assert!(claims.auth_time().is_some());
    let at_hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&client.id_token_verifier()).unwrap(),
    )
    .unwrap();
    assert_eq!(claims.access_token_hash(), Some(&at_hash));
    assert!(
        tokens.refresh_token().is_some(),
        "offline_access gives a refresh token"
    );

    let info: CoreUserInfoClaims = client
        .user_info(tokens.access_token().clone(), None)
        .unwrap()
        .request_async(&http)
        .await
        .expect("userinfo");
    assert_eq!(info.email().map(|e| e.as_str()), Some("ada@example.com"));
    assert_eq!(info.subject(), claims.subject());
    // UserInfo by POST with the token in the body (RFC 6750 §2.2).
    let res = app
        .client
        .post(format!("{}/oauth2/userinfo", app.base))
        .form(&[("access_token", tokens.access_token().secret())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let intro = client
        .introspect(tokens.access_token())
        .request_async(&http)
        .await
        .unwrap();
    assert!(intro.active());
    assert_eq!(intro.client_id().map(|c| c.as_str()), Some(reg.id.as_str()));

    let refreshed = client
        .exchange_refresh_token(tokens.refresh_token().unwrap())
        .unwrap()
        .request_async(&http)
        .await
        .expect("refresh");
    assert_ne!(
        refreshed.refresh_token().unwrap().secret(),
        tokens.refresh_token().unwrap().secret()
    );
    // Reuse of the rotated refresh token after the grace window revokes the family.
    app.clock.advance(app.config.refresh_reuse_grace as i64 + 1);
    let reuse = client
        .exchange_refresh_token(tokens.refresh_token().unwrap())
        .unwrap()
        .request_async(&http)
        .await;
    assert!(reuse.is_err());
    let intro = client
        .introspect(refreshed.access_token())
        .request_async(&http)
        .await
        .unwrap();
    assert!(!intro.active(), "the family was revoked");
}

pub(crate) async fn token(
    app: &TestApp,
    auth: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = app
        .client
        .post(format!("{}/oauth2/token", app.base))
        .form(form);
    if let Some((id, secret)) = auth {
        req = req.basic_auth(id, Some(secret));
    }
    let res = req.send().await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    (status, headers, res.json().await.unwrap_or(Value::Null))
}

async fn client_credentials_password_introspection_and_revocation(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("bob@example.com").await;
    let svc = register_client(
        &app,
        false,
        &["client_credentials"],
        &["reports.read", "reports.write"],
    )
    .await;
    let pw = register_client(
        &app,
        false,
        &["password", "refresh_token"],
        &["openid", "email", "offline_access"],
    )
    .await;
    let (id, secret) = (svc.id.as_str(), svc.secret.as_deref().unwrap());
    // The service is a resource server: it may introspect every token (RFC 7662 §4).
    let spec = ClientSpec {
        may_introspect: Some(true),
        ..Default::default()
    };
    let ctx = tessera::context::RequestContext::system();
    let by = tessera::audit::By {
        principal: &tessera::authz::Principal::System,
        ctx: &ctx,
    };
    clients::update(&app.state.store, &app.state.clients, id, spec, by, 1)
        .await
        .unwrap();
    let (status, headers, body) = token(
        &app,
        Some((id, secret)),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "reports.read"),
            ("resource", "https://api.example.com"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["pragma"], "no-cache");
    assert_eq!(body["scope"], "reports.read");
    assert!(body.get("refresh_token").is_none());
    let access = body["access_token"].as_str().unwrap().to_string();
    let payload: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            access.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            payload["sub"].as_str(),
            payload["client_id"].as_str(),
            payload["aud"].as_str()
        ),
        (Some(id), Some(id), Some("https://api.example.com"))
    );

    // Password grant through the off-the-shelf client.
    let http = http();
    let meta =
        CoreProviderMetadata::discover_async(IssuerUrl::new(app.base.clone()).unwrap(), &http)
            .await
            .unwrap();
    let client = CoreClient::from_provider_metadata(
        meta,
        ClientId::new(pw.id.clone()),
        pw.secret.clone().map(ClientSecret::new),
    )
    .set_introspection_url(
        IntrospectionUrl::new(format!("{}/oauth2/introspect", app.base)).unwrap(),
    )
    .set_revocation_url(RevocationUrl::new(format!("{}/oauth2/revoke", app.base)).unwrap());
    let user = ResourceOwnerUsername::new("bob@example.com".into());
    let tokens = client
        .exchange_password(&user, &ResourceOwnerPassword::new(PASSWORD.into()))
        .unwrap()
        .add_scope(Scope::new("openid".into()))
        .add_scope(Scope::new("email".into()))
        .request_async(&http)
        .await
        .expect("password grant");
    let wrong = client
        .exchange_password(&user, &ResourceOwnerPassword::new("wrong password".into()))
        .unwrap()
        .request_async(&http)
        .await;
    assert!(wrong.is_err());

    // Introspection by the resource server (the service client) of the user's token.
    let introspect = |tok: String| {
        let app = &app;
        async move {
            let res = app
                .client
                .post(format!("{}/oauth2/introspect", app.base))
                .basic_auth(id, Some(secret))
                .form(&[("token", tok)])
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            res.json::<Value>().await.unwrap()
        }
    };
    let live = introspect(tokens.access_token().secret().clone()).await;
    assert_eq!(live["active"], true, "{live}");
    // Any other client learns nothing about a token that is neither its own nor for it.
    let outsider = register_client(&app, false, &["client_credentials"], &["x"]).await;
    let res = app
        .client
        .post(format!("{}/oauth2/introspect", app.base))
        .basic_auth(&outsider.id, outsider.secret.as_deref())
        .form(&[("token", tokens.access_token().secret().as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"active": false}));
    // The client the token was issued to may introspect it.
    let res = app
        .client
        .post(format!("{}/oauth2/introspect", app.base))
        .basic_auth(&pw.id, pw.secret.as_deref())
        .form(&[("token", tokens.access_token().secret().as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["active"], true);
    assert_eq!(live["token_type"], "Bearer");
    assert!(live["scope"].as_str().unwrap().contains("email"));
    for inactive in [
        "garbage",
        "a.b.c",
        &format!("{}x", tokens.access_token().secret()),
    ] {
        assert_eq!(
            introspect(inactive.to_string()).await,
            json!({"active": false})
        );
    }
    // Revocation (RFC 7009): refresh token ends the family, at once.
    // (The oauth2 crate refuses to revoke over plain http, so this one is a plain POST.)
    let res = app
        .client
        .post(format!("{}/oauth2/revoke", app.base))
        .basic_auth(&pw.id, pw.secret.as_deref())
        .form(&[
            ("token", tokens.refresh_token().unwrap().secret().as_str()),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        introspect(tokens.access_token().secret().clone()).await,
        json!({"active": false})
    );
    // Revoking an access token by jti; unknown tokens answer 200 too.
    assert_eq!(introspect(access.clone()).await["active"], true);
    let res = app
        .client
        .post(format!("{}/oauth2/revoke", app.base))
        .basic_auth(id, Some(secret))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(introspect(access.clone()).await, json!({"active": false}));
    let res = app
        .client
        .post(format!("{}/oauth2/revoke", app.base))
        .basic_auth(id, Some(secret))
        .form(&[("token", "unknown")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Expired tokens are inactive.
    let (_, _, fresh) = token(
        &app,
        Some((id, secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    app.clock.advance(app.config.access_token_ttl as i64);
    assert_eq!(
        introspect(fresh["access_token"].as_str().unwrap().to_string()).await,
        json!({"active": false})
    );
}

async fn authorization_errors_redirect_only_to_validated_uris(b: Backend) {
    let app = TestApp::spawn(b).await;
    let public = register_client(&app, true, &["authorization_code"], &["openid", "email"]).await;
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let base = |extra: &str| {
        format!(
            "{}/oauth2/authorize?response_type=code&client_id={}&redirect_uri={}&state=xyz&scope=openid{extra}",
            app.base, public.id, REDIRECT
        )
    };
    // Never redirect for an unknown client or an unregistered redirect URI.
    for url in [
        format!(
            "{}/oauth2/authorize?response_type=code&client_id=nope&redirect_uri={REDIRECT}",
            app.base
        ),
        format!(
            "{}/oauth2/authorize?response_type=code&client_id={}&redirect_uri=https://evil.example/cb",
            app.base, public.id
        ),
        // OIDC requires redirect_uri (RFC 6749 §3.1.2.3 would allow omitting the only one).
        format!(
            "{}/oauth2/authorize?response_type=code&client_id={}&scope=openid",
            app.base, public.id
        ),
        format!(
            "{}/oauth2/authorize?client_id={}&client_id={}",
            app.base, public.id, public.id
        ),
    ] {
        let res = app.client.get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{url}");
        assert!(res.headers().get("location").is_none());
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(
            res.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
    }
    // After validation, errors go back to the client with error, state and iss.
    for (extra, error) in [
        ("", "invalid_request"), // public client without PKCE
        (
            &format!("&code_challenge={challenge}&code_challenge_method=plain") as &str,
            "invalid_request",
        ),
        (
            &format!("&code_challenge={challenge}&code_challenge_method=S256&scope=admin") as &str,
            "invalid_request",
        ), // duplicated scope parameter
        (
            &format!("&code_challenge={challenge}&code_challenge_method=S256&prompt=none") as &str,
            "login_required",
        ),
        (
            &format!(
                "&code_challenge={challenge}&code_challenge_method=S256&resource=https://other.example"
            ) as &str,
            "invalid_target",
        ),
    ] {
        let url = base(extra);
        let res = app.client.get(&url).send().await.unwrap();
        if error == "invalid_request" && extra.contains("&scope=admin") {
            // A repeated parameter makes the whole request untrustworthy: shown as a page.
            assert_eq!(res.status(), StatusCode::BAD_REQUEST);
            continue;
        }
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{url}");
        let to = location(&res);
        assert!(to.starts_with(REDIRECT), "{to}");
        assert_eq!(param(&to, "error").as_deref(), Some(error), "{url} -> {to}");
        assert_eq!(param(&to, "state").as_deref(), Some("xyz"));
        assert_eq!(param(&to, "iss").as_deref(), Some(app.base.as_str()));
    }
    let res = app
        .client
        .get(format!(
            "{}/oauth2/authorize?response_type=token&client_id={}&redirect_uri={REDIRECT}&state=s",
            app.base, public.id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        param(&location(&res), "error").as_deref(),
        Some("unsupported_response_type")
    );
    let scope = format!(
        "{}/oauth2/authorize?response_type=code&client_id={}&redirect_uri={REDIRECT}&scope=openid%20admin&code_challenge={challenge}&code_challenge_method=S256",
        app.base, public.id
    );
    assert_eq!(
        param(
            &location(&app.client.get(&scope).send().await.unwrap()),
            "error"
        )
        .as_deref(),
        Some("invalid_scope")
    );
}

/// name, client authentication, form, expected status, expected error.
type TokenCase<'a> = (
    &'a str,
    Option<(&'a str, &'a str)>,
    Vec<(&'a str, &'a str)>,
    StatusCode,
    &'a str,
);

async fn token_endpoint_errors_follow_rfc_6749(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("eve@example.com").await;
    let conf = register_client(
        &app,
        false,
        &["authorization_code", "client_credentials"],
        &["openid", "email", "reports.read"],
    )
    .await;
    let other = register_client(&app, false, &["authorization_code"], &["openid"]).await;
    let (id, secret) = (conf.id.as_str(), conf.secret.as_deref().unwrap());
    // A real code for `conf`, to misuse below.
    let (challenge, verifier) = (
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
    );
    let url = format!(
        "{}/oauth2/authorize?response_type=code&client_id={id}&redirect_uri={REDIRECT}&scope=openid&code_challenge={challenge}&code_challenge_method=S256",
        app.base
    );
    let code = param(
        &browse(&app, &url, "eve@example.com", "allow").await,
        "code",
    )
    .unwrap();
    let (long_scope, bad_verifier) = ("x".repeat(5000), "a".repeat(43));
    let cases: Vec<TokenCase<'_>> = vec![
        (
            "no client authentication",
            None,
            vec![("grant_type", "client_credentials")],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "wrong secret",
            Some((id, "tcs_wrong")),
            vec![("grant_type", "client_credentials")],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "unknown client",
            Some(("tc_nobody", "x")),
            vec![("grant_type", "client_credentials")],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "unsupported grant",
            Some((id, secret)),
            vec![("grant_type", "urn:ietf:params:oauth:grant-type:device_code")],
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            "grant not registered",
            Some((id, secret)),
            vec![
                ("grant_type", "password"),
                ("username", "eve@example.com"),
                ("password", PASSWORD),
            ],
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
        ),
        (
            "scope beyond the client's",
            Some((id, secret)),
            vec![
                ("grant_type", "client_credentials"),
                ("scope", "reports.delete"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            "missing grant_type",
            Some((id, secret)),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "duplicated parameter",
            Some((id, secret)),
            vec![
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "oversized parameter",
            Some((id, secret)),
            vec![
                ("grant_type", "client_credentials"),
                ("scope", long_scope.as_str()),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "code from another client",
            Some((other.id.as_str(), other.secret.as_deref().unwrap())),
            vec![
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            "wrong redirect_uri",
            Some((id, secret)),
            vec![
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", "http://127.0.0.1:9/other"),
                ("code_verifier", verifier),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            "missing PKCE verifier",
            Some((id, secret)),
            vec![
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            "invalid PKCE verifier",
            Some((id, secret)),
            vec![
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", bad_verifier.as_str()),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            "malformed code",
            Some((id, secret)),
            vec![
                ("grant_type", "authorization_code"),
                ("code", "nope"),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
    ];
    for (name, auth, form, status, error) in cases {
        let (got, headers, body) = token(&app, auth, &form).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(error)),
            "{name}: {body}"
        );
        assert!(body["error_description"].is_string(), "{name}");
        assert_eq!(headers["cache-control"], "no-store", "{name}");
        if error == "invalid_client" {
            assert!(
                headers["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Basic"),
                "{name}"
            );
        }
    }
    // Both authentication methods at once.
    let (got, _, body) = token(
        &app,
        Some((id, secret)),
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", secret),
        ],
    )
    .await;
    assert_eq!(
        (got, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    // Wrong content type.
    let res = app
        .client
        .post(format!("{}/oauth2/token", app.base))
        .basic_auth(id, Some(secret))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // The misuse above did not consume the code; a correct exchange still works once...
    let good = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
    ];
    assert_eq!(
        token(&app, Some((id, secret)), &good).await.0,
        StatusCode::OK
    );
    // ...and an expired one does not.
    let code2 = param(
        &browse(&app, &url, "eve@example.com", "allow").await,
        "code",
    )
    .unwrap();
    app.clock.advance(app.config.authorization_code_ttl as i64);
    let expired = [
        ("grant_type", "authorization_code"),
        ("code", code2.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
    ];
    let (got, _, body) = token(&app, Some((id, secret)), &expired).await;
    assert_eq!(
        (got, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    insta::assert_json_snapshot!("token_error_invalid_grant", body);
}

async fn reused_authorization_code_revokes_its_tokens(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("carol@example.com").await;
    let reg = register_client(&app, false, &["authorization_code"], &["openid"]).await;
    let (id, secret) = (reg.id.as_str(), reg.secret.as_deref().unwrap());
    let url = format!(
        "{}/oauth2/authorize?response_type=code&client_id={id}&redirect_uri={REDIRECT}&scope=openid",
        app.base
    );
    let code = param(
        &browse(&app, &url, "carol@example.com", "allow").await,
        "code",
    )
    .unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    let (status, _, first) = token(&app, Some((id, secret)), &form).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(
        first.get("refresh_token").is_none(),
        "no offline_access, no refresh token"
    );
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(
        app.get("/oauth2/userinfo", access).await.status,
        StatusCode::OK
    );
    let (status, _, again) = token(&app, Some((id, secret)), &form).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let res = app.get("/oauth2/userinfo", access).await;
    assert_eq!(
        res.status,
        StatusCode::UNAUTHORIZED,
        "tokens from a reused code are revoked"
    );
    assert!(
        res.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
}

async fn consent_is_remembered_and_prompt_none_works(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("dan@example.com").await;
    let reg = register_client(
        &app,
        false,
        &["authorization_code"],
        &["openid", "email", "profile"],
    )
    .await;
    let url = |extra: &str| {
        format!(
            "{}/oauth2/authorize?response_type=code&client_id={}&redirect_uri={REDIRECT}&scope=openid%20email&state=s{extra}",
            app.base, reg.id
        )
    };
    // Deny first: access_denied, nothing remembered.
    let denied = browse(&app, &url(""), "dan@example.com", "deny").await;
    assert_eq!(param(&denied, "error").as_deref(), Some("access_denied"));
    // The browser session exists now; prompt=none needs consent still.
    let res = app.client.get(url("&prompt=none")).send().await.unwrap();
    assert_eq!(
        param(&location(&res), "error").as_deref(),
        Some("consent_required")
    );
    // Allow once; then the same scopes go straight through, even with prompt=none.
    let allowed = browse(&app, &url(""), "dan@example.com", "allow").await;
    assert!(param(&allowed, "code").is_some());
    let res = app.client.get(url("&prompt=none")).send().await.unwrap();
    assert!(
        param(&location(&res), "code").is_some(),
        "remembered consent"
    );
    // More scopes than granted ask again; prompt=consent always asks.
    let more = format!(
        "{}/oauth2/authorize?response_type=code&client_id={}&redirect_uri={REDIRECT}&scope=openid%20email%20profile",
        app.base, reg.id
    );
    assert_eq!(
        app.client.get(&more).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        app.client
            .get(url("&prompt=consent"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // prompt=login shows the login page although a session exists; max_age=0 likewise.
    let html = app
        .client
        .get(url("&prompt=login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Sign in"));
    app.clock.advance(10);
    let html = app
        .client
        .get(url("&max_age=5&login_hint=dan%40example.com"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("Sign in") && html.contains("dan@example.com"),
        "{html}"
    );
    // A wrong password on the hosted page shows the form again, with an error.
    let form = [
        ("csrf_token", field(&html, "csrf_token")),
        ("request", field(&html, "request")),
        ("email", "dan@example.com".into()),
        ("password", "wrong password".into()),
    ];
    let res = app
        .client
        .post(format!("{}/oauth2/login", app.base))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("Invalid email or password")
    );
    // With verified email required, the right password for an unverified account explains
    // itself on the page (403), rather than failing.
    let strict = TestApp::spawn_with(b, |c| c.require_verified_email = true).await;
    strict.register("eve@example.com").await;
    let reg2 = register_client(&strict, false, &["authorization_code"], &["openid"]).await;
    let url2 = format!(
        "{}/oauth2/authorize?response_type=code&client_id={}&redirect_uri={REDIRECT}&scope=openid",
        strict.base, reg2.id
    );
    let page = strict
        .client
        .get(&url2)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = [
        ("csrf_token", field(&page, "csrf_token")),
        ("request", field(&page, "request")),
        ("email", "eve@example.com".into()),
        ("password", PASSWORD.into()),
    ];
    let res = strict
        .client
        .post(format!("{}/oauth2/login", strict.base))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("Confirm your email address")
    );
    // A forged form without the CSRF cookie's value is refused.
    let forged = [
        ("csrf_token", "x".repeat(43)),
        ("request", field(&html, "request")),
        ("email", "dan@example.com".into()),
        ("password", PASSWORD.into()),
    ];
    let res = app
        .client
        .post(format!("{}/oauth2/login", app.base))
        .form(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

async fn rp_initiated_logout_ends_the_browser_session(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("fay@example.com").await;
    let reg = register_client(&app, false, &["authorization_code"], &["openid"]).await;
    let (id, secret) = (reg.id.as_str(), reg.secret.as_deref().unwrap());
    let url = format!(
        "{}/oauth2/authorize?response_type=code&client_id={id}&redirect_uri={REDIRECT}&scope=openid&nonce=n1",
        app.base
    );
    let code = param(
        &browse(&app, &url, "fay@example.com", "allow").await,
        "code",
    )
    .unwrap();
    let (_, _, tokens) = token(
        &app,
        Some((id, secret)),
        &[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    let id_token = tokens["id_token"].as_str().unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    // An unregistered post-logout URI is refused with a page.
    let bad = app.client.get(format!("{}/oauth2/logout?id_token_hint={id_token}&post_logout_redirect_uri=https://evil.example/", app.base)).send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let res = app.client.get(format!("{}/oauth2/logout?id_token_hint={id_token}&post_logout_redirect_uri={LOGOUT_REDIRECT}&state=bye", app.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    assert!(html.contains("Sign out"));
    let form = [
        ("csrf_token", field(&html, "csrf_token")),
        ("request", field(&html, "request")),
        ("decision", "logout".into()),
    ];
    let res = app
        .client
        .post(format!("{}/oauth2/logout", app.base))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), format!("{LOGOUT_REDIRECT}?state=bye"));
    // The browser session is over (prompt=none says login_required) and its tokens are revoked.
    let res = app
        .client
        .get(format!("{url}&prompt=none"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        param(&location(&res), "error").as_deref(),
        Some("login_required")
    );
    assert_eq!(
        app.get("/oauth2/userinfo", access).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn admin_api_manages_clients(b: Backend) {
    let app = TestApp::spawn(b).await;
    let admin_hash = tessera::passwords::Passwords::new(&app.config.password)
        .unwrap()
        .hash(PASSWORD)
        .await
        .unwrap();
    tessera::accounts::create(
        &app.state.store,
        "root@example.com",
        Some(&admin_hash),
        Some(1),
        &[tessera::authz::Role::Admin],
        None,
        1,
    )
    .await
    .unwrap();
    let admin = crate::helpers::Tokens::from(&app.login("root@example.com", PASSWORD).await.body);
    let user = app.signed_in("user@example.com").await;
    let spec = json!({"name": "Billing", "redirect_uris": ["https://billing.example.com/cb"], "grant_types": ["authorization_code", "refresh_token"], "scopes": ["openid", "email"]});
    let res = app
        .request(
            reqwest::Method::POST,
            "/admin/clients",
            Some(&user.access),
            Some(spec.clone()),
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let res = app
        .request(
            reqwest::Method::POST,
            "/admin/clients",
            Some(&admin.access),
            Some(spec),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    let id = res.body["client_id"].as_str().unwrap().to_string();
    let secret = res.body["client_secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("tcs_"));
    let (stored,): (String,) =
        sqlx::query_as("SELECT secret_hash FROM oauth_clients WHERE id = $1")
            .bind(&id)
            .fetch_one(app.state.store.pool())
            .await
            .unwrap();
    assert_ne!(stored, secret);
    let res = app
        .get(&format!("/admin/clients/{id}"), &admin.access)
        .await;
    assert!(res.body.get("client_secret").is_none() && !res.text.contains(&stored));
    let bad = json!({"redirect_uris": ["http://billing.example.com/cb"]});
    let res = app
        .request(
            reqwest::Method::PATCH,
            &format!("/admin/clients/{id}"),
            Some(&admin.access),
            Some(bad),
        )
        .await;
    assert_eq!(
        res.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "http only on loopback: {}",
        res.text
    );
    let res = app
        .request(
            reqwest::Method::POST,
            &format!("/admin/clients/{id}/rotate-secret"),
            Some(&admin.access),
            None,
        )
        .await;
    let new_secret = res.body["client_secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    // Deactivated clients cannot authenticate.
    let res = app
        .request(
            reqwest::Method::POST,
            &format!("/admin/clients/{id}/deactivate"),
            Some(&admin.access),
            None,
        )
        .await;
    assert_eq!(res.body["status"], "deactivated");
    let (status, _, body) = token(
        &app,
        Some((&id, &new_secret)),
        &[("grant_type", "refresh_token"), ("refresh_token", "x")],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let list = app.get("/admin/clients", &admin.access).await;
    assert_eq!(list.body["clients"].as_array().unwrap().len(), 1);
    // Discovery lists what is implemented, issuer exactly as configured.
    let doc = app
        .request(
            reqwest::Method::GET,
            "/.well-known/openid-configuration",
            None,
            None,
        )
        .await
        .body;
    assert_eq!(doc["issuer"], app.config.issuer.as_str());
    assert_eq!(
        doc,
        app.request(
            reqwest::Method::GET,
            "/.well-known/oauth-authorization-server",
            None,
            None
        )
        .await
        .body
    );
    let doc: Value = serde_json::from_str(&doc.to_string().replace(&app.base, "[issuer]")).unwrap();
    insta::assert_json_snapshot!("discovery", doc);
}
