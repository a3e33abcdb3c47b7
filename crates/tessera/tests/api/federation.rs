//! Sign-in through another identity provider: a second Tessera, on its own port with its own
//! database and keys, is the upstream (real HTTP, discovery, JWKS, hosted pages); one cookie
//! jar plays the browser across both, following every redirect and form as a person would.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera::oauth::clients::ClientSpec;

use crate::helpers::{Backend, LOCALHOST_ISSUER, PASSWORD, TestApp, event_types_of, events_of};
use crate::oauth::{create_client, field, param, unescape};
use crate::on_both_backends;
use crate::tenants::claims;

on_both_backends!(
    a_first_sign_in_creates_the_account_just_in_time_and_signs_in_again,
    without_just_in_time_creation_no_account_is_made,
    linking_needs_proof_when_either_side_has_not_verified_the_address,
    linking_is_automatic_only_when_both_sides_verified_the_address,
    a_local_second_factor_is_still_required,
    a_wrong_issuer_a_wrong_nonce_or_an_expired_id_token_is_refused,
    a_callback_cannot_be_replayed_or_used_by_another_browser,
    a_tenant_routes_its_domain_to_its_provider,
    a_single_page_app_signs_in_with_a_login_code,
    the_admin_api_manages_providers,
    an_emailed_link_proves_an_account_without_a_password,
    an_emailed_link_reclaims_an_account_whose_address_nobody_verified,
    an_emailed_link_to_a_verified_account_keeps_what_it_has,
    github_signs_in_through_oauth_and_its_user_api,
);

pub(crate) const REDIRECT: &str = "http://127.0.0.1:9/callback";
const IDP: &str = "up";

/// The downstream Tessera, its upstream, and the downstream client the test signs in to.
pub(crate) struct Federation {
    pub app: TestApp,
    pub upstream: TestApp,
    pub client_id: String,
    client_secret: String,
    browser: reqwest::Client,
}

/// Where a walk through the pages stopped.
#[derive(Debug)]
enum End {
    /// Back at the client with this URL (`code` or `error`).
    Client(String),
    /// A page that needs the test: status, HTML and the URL it was at.
    Page(StatusCode, String, String),
}

impl End {
    fn code(&self) -> String {
        match self {
            End::Client(url) => param(url, "code").unwrap_or_else(|| panic!("no code in {url}")),
            End::Page(status, html, url) => panic!("stopped at {url} ({status}): {html}"),
        }
    }

    fn page(&self) -> (StatusCode, &str) {
        match self {
            End::Page(status, html, _) => (*status, html),
            End::Client(url) => panic!("expected a page, got back to the client: {url}"),
        }
    }
}

pub(crate) async fn setup(b: Backend, jit: bool) -> Federation {
    setup_with(b, jit, |_| {}).await
}

/// [`setup`] with the downstream's configuration changed by `tweak`.
async fn setup_with(b: Backend, jit: bool, tweak: impl FnOnce(&mut tessera::Config)) -> Federation {
    let upstream = TestApp::spawn_with(b, |c| c.issuer = LOCALHOST_ISSUER.into()).await;
    let app = TestApp::spawn_with(b, tweak).await;
    add_provider(&app, &upstream, IDP, jit).await;
    // The application signing in at the downstream: first-party, so its token may read the
    // account API.
    let client = create_client(
        &app,
        ClientSpec {
            name: Some("App".into()),
            redirect_uris: Some(vec![REDIRECT.into()]),
            scopes: Some(
                ["openid", "email", "tessera:account"]
                    .map(String::from)
                    .to_vec(),
            ),
            first_party: Some(true),
            ..Default::default()
        },
    )
    .await;
    Federation {
        app,
        upstream,
        client_id: client.id,
        client_secret: client.secret.unwrap(),
        browser: new_browser(),
    }
}

/// Registers the downstream at the upstream as a confidential client with the callback of
/// provider `name`, and adds that provider at the downstream.
async fn add_provider(app: &TestApp, upstream: &TestApp, name: &str, jit: bool) {
    let callback = format!("{}/auth/federated/{name}/callback", app.config.issuer);
    let at_upstream = create_client(
        upstream,
        ClientSpec {
            name: Some("Downstream".into()),
            redirect_uris: Some(vec![callback.clone()]),
            scopes: Some(["openid", "email", "profile"].map(String::from).to_vec()),
            ..Default::default()
        },
    )
    .await;
    let ctx = tessera::context::RequestContext::system();
    let spec = tessera::federation::ProviderSpec {
        name: Some(name.into()),
        display_name: Some("Upstream".into()),
        issuer: Some(upstream.config.issuer.clone()),
        client_id: Some(at_upstream.id),
        client_secret: at_upstream.secret,
        jit: Some(jit),
        ..Default::default()
    };
    let view = tessera::federation::add(
        (&*app.state).into(),
        spec,
        tessera::audit::By::system(&ctx),
        app.clock.now(),
    )
    .await
    .unwrap();
    assert_eq!(view.redirect_uri, callback);
}

/// An account at the upstream with its address verified or not.
pub(crate) async fn upstream_user(up: &TestApp, email: &str, verified: bool) {
    let hash = up.state.passwords.hash(PASSWORD).await.unwrap();
    let verified_at = verified.then_some(up.clock.now());
    tessera::accounts::create(
        &up.state.store,
        email,
        Some(&hash),
        verified_at,
        &[],
        None,
        1,
    )
    .await
    .unwrap();
}

const VERIFIER: &str = "federation-test-code-verifier-0123456789-abcdefghijklmnop";

impl Federation {
    /// The same servers and client, seen from another browser (an empty cookie jar).
    pub(crate) fn in_a_new_browser(self) -> Self {
        Self {
            browser: new_browser(),
            ..self
        }
    }

    /// The authorization request of the downstream app (`extra`: more parameters).
    pub(crate) fn authorize_url(&self, extra: &str) -> String {
        use base64::Engine as _;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, VERIFIER.as_bytes());
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
        format!(
            "{}/oauth2/authorize?response_type=code&client_id={}&redirect_uri={}&scope=openid%20email%20tessera%3Aaccount&state=s1&code_challenge={challenge}&code_challenge_method=S256{extra}",
            self.app.base, self.client_id, REDIRECT
        )
    }

    /// Follows redirects and the upstream's sign-in and consent forms (as `email`), and the
    /// downstream's consent form, until back at the client or at a page the test must read.
    async fn walk(&self, url: &str, email: &str) -> End {
        self.walk_until(url, email, |_| false).await
    }

    /// [`Self::walk`], stopping (without following) at the first redirect `stop` picks.
    async fn walk_until(&self, url: &str, email: &str, stop: impl Fn(&str) -> bool) -> End {
        self.walk_from(url, None, email, stop).await
    }

    /// Goes on from `res`, the answer at `url` (or from fetching `url`).
    async fn walk_from(
        &self,
        url: &str,
        res: Option<reqwest::Response>,
        email: &str,
        stop: impl Fn(&str) -> bool,
    ) -> End {
        let mut url = url.to_string();
        let mut res = res;
        for _ in 0..12 {
            let answer = match res.take() {
                Some(r) => r,
                None => {
                    if url.starts_with(REDIRECT) || stop(&url) {
                        return End::Client(url);
                    }
                    self.browser.get(&url).send().await.unwrap()
                }
            };
            if answer.status() == StatusCode::SEE_OTHER || answer.status() == StatusCode::FOUND {
                url = absolute(&url, answer.headers()["location"].to_str().unwrap());
                continue;
            }
            let status = answer.status();
            let html = answer.text().await.unwrap();
            let origin = origin_of(&url);
            let at_upstream = origin == origin_of(&self.upstream.config.issuer);
            let (action, mut form) = if at_upstream && html.contains(r#"action="/oauth2/login""#) {
                let creds = vec![
                    ("email", email.to_string()),
                    ("password", PASSWORD.to_string()),
                ];
                ("login", creds)
            } else if html.contains(r#"action="/oauth2/consent""#) {
                ("consent", vec![("decision", "allow".to_string())])
            } else {
                return End::Page(status, html, url);
            };
            form.push(("csrf_token", field(&html, "csrf_token")));
            form.push(("request", field(&html, "request")));
            let posted = self
                .browser
                .post(format!("{origin}/oauth2/{action}"))
                .form(&form)
                .send()
                .await
                .unwrap();
            res = Some(posted);
        }
        panic!("too many steps, at {url}");
    }

    /// Posts the linking page's form with `password`.
    async fn link(&self, html: &str, password: &str) -> End {
        let form = [
            ("csrf_token", field(html, "csrf_token")),
            ("request", field(html, "request")),
            ("pending", field(html, "pending")),
            ("password", password.to_string()),
        ];
        let url = format!("{}/auth/federated/link", self.app.base);
        let res = self.browser.post(&url).form(&form).send().await.unwrap();
        self.walk_from(&url, Some(res), "", |_| false).await
    }

    /// Posts the linking page's other form: a link to the account's address, instead of its
    /// password. The page it answers.
    async fn ask_for_link(&self, html: &str) -> (StatusCode, String) {
        assert!(
            html.contains(r#"action="/auth/federated/link/email""#),
            "{html}"
        );
        let form = [
            ("csrf_token", field(html, "csrf_token")),
            ("request", field(html, "request")),
            ("pending", field(html, "pending")),
        ];
        let url = format!("{}/auth/federated/link/email", self.app.base);
        let res = self.browser.post(&url).form(&form).send().await.unwrap();
        (res.status(), res.text().await.unwrap())
    }

    /// Asks for a link on the linking page `html` (answered 200) and returns the
    /// `IdentityLinkRequestedV1` event it recorded for `user_id`.
    async fn link_requested(&self, html: &str, user_id: &str) -> Value {
        let (status, sent) = self.ask_for_link(html).await;
        assert_eq!(status, StatusCode::OK, "{sent}");
        events_of(&self.app, user_id)
            .await
            .into_iter()
            .find(|e| e["event_type"] == "identity.federation.link_requested.v1")
            .expect("an IdentityLinkRequestedV1 event")
    }

    /// Opens an emailed link in this browser, then posts its page's form: the two pages.
    async fn open_link(&self, link: &str) -> ((StatusCode, String), (StatusCode, String)) {
        open_link_in(&self.browser, &self.app.base, link).await
    }

    /// Follows "Continue signing in" on the page of a confirmed link back to the client, and
    /// redeems the code: the signed-in subject.
    async fn continue_after_link(&self, page: &str, email: &str) -> String {
        let href = page.split("href=\"").nth(1).unwrap().split('"').next();
        let url = absolute(&self.app.base, &unescape(href.unwrap()));
        let end = self.walk(&url, email).await;
        let tokens = self.redeem(&end.code()).await;
        claims(tokens["id_token"].as_str().unwrap())["sub"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Redeems a code at the downstream: its token response.
    pub(crate) async fn redeem(&self, code: &str) -> Value {
        let res = self
            .browser
            .post(format!("{}/oauth2/token", self.app.base))
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }

    async fn user_id(&self, email: &str) -> Option<String> {
        tessera::store::users::find_by_email(self.app.state.store.pool(), email)
            .await
            .unwrap()
            .map(|u| u.id)
    }

    async fn identities(&self, user_id: &str) -> Vec<tessera::store::federation::IdentityRow> {
        tessera::store::federation::identities_of(self.app.state.store.pool(), user_id)
            .await
            .unwrap()
    }
}

/// Opens an emailed link in `browser`, then posts its page's form: the two pages.
async fn open_link_in(
    browser: &reqwest::Client,
    base: &str,
    link: &str,
) -> ((StatusCode, String), (StatusCode, String)) {
    let page = browser.get(link).send().await.unwrap();
    let page = (page.status(), page.text().await.unwrap());
    let token = link.split("token=").nth(1).unwrap();
    let done = browser
        .post(format!("{base}/link-identity"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    (page, (done.status(), done.text().await.unwrap()))
}

fn new_browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn origin_of(url: &str) -> String {
    let u = reqwest::Url::parse(url).unwrap();
    u.origin().ascii_serialization()
}

fn absolute(base: &str, location: &str) -> String {
    reqwest::Url::parse(base)
        .unwrap()
        .join(location)
        .unwrap()
        .to_string()
}

async fn a_first_sign_in_creates_the_account_just_in_time_and_signs_in_again(b: Backend) {
    let f = setup(b, true).await;
    upstream_user(&f.upstream, "ada@corp.example", true).await;
    // The sign-in page lists the provider; its link starts the upstream sign-in.
    let login = f.walk(&f.authorize_url(""), "").await;
    let (status, html) = login.page();
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Continue with Upstream"), "{html}");
    let html = unescape(html);
    let marker = r#"href="/auth/federated/up/start?request="#;
    let start = html.find(marker).expect("a link to the provider") + r#"href=""#.len();
    let href = &html[start..start + html[start..].find('"').unwrap()];
    let end = f
        .walk(&format!("{}{href}", f.app.base), "ada@corp.example")
        .await;
    let tokens = f.redeem(&end.code()).await;
    // The account was created with the upstream's verified address, and no password.
    let user_id = f
        .user_id("ada@corp.example")
        .await
        .expect("created just in time");
    let id_token = claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(id_token["sub"], user_id);
    assert_eq!(id_token["amr"], json!(["fed"]));
    assert_eq!(id_token["acr"], "urn:tessera:acr:pwd");
    let user = tessera::store::users::find_by_id(f.app.state.store.pool(), &user_id)
        .await
        .unwrap()
        .unwrap();
    assert!(user.email_verified_at.is_some());
    assert!(user.password_hash.is_none());
    let types = event_types_of(&f.app, &user_id).await;
    for t in [
        "identity.user.registered.v1",
        "identity.federation.linked.v1",
        "identity.login.succeeded.v1",
    ] {
        assert!(types.iter().any(|x| x == t), "{t} in {types:?}");
    }
    let events = events_of(&f.app, &user_id).await;
    let linked = events
        .iter()
        .find(|e| e["event_type"] == "identity.federation.linked.v1")
        .unwrap();
    assert_eq!(linked["data"]["via"], "created");
    let login = events
        .iter()
        .find(|e| e["event_type"] == "identity.login.succeeded.v1")
        .unwrap();
    assert_eq!(login["data"]["method"], "federated:up");
    // The user sees the identity; it is their only way in, so it cannot be unlinked.
    let access = tokens["access_token"].as_str().unwrap();
    let list = f.app.get("/identity/identities", access).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let ids = list.body["identities"].as_array().unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0]["provider"], "up");
    assert_eq!(ids[0]["email"], "ada@corp.example");
    let id = ids[0]["id"].as_str().unwrap();
    let res = f
        .app
        .request(
            reqwest::Method::DELETE,
            &format!("/identity/identities/{id}"),
            Some(access),
            None,
        )
        .await;
    assert_eq!(res.status, StatusCode::CONFLICT, "{}", res.text);
    assert_eq!(res.body["error"], "last_sign_in_method");
    // Signing in again (a new browser: `idp=` goes straight to the provider) finds the link:
    // the same account, no second one.
    let f2 = f.in_a_new_browser();
    let end = f2
        .walk(&f2.authorize_url("&idp=up"), "ada@corp.example")
        .await;
    let tokens = f2.redeem(&end.code()).await;
    assert_eq!(claims(tokens["id_token"].as_str().unwrap())["sub"], user_id);
    assert_eq!(f2.identities(&user_id).await.len(), 1);
}

async fn without_just_in_time_creation_no_account_is_made(b: Backend) {
    let f = setup(b, false).await;
    upstream_user(&f.upstream, "bob@corp.example", true).await;
    let end = f
        .walk(&f.authorize_url("&idp=up"), "bob@corp.example")
        .await;
    let (status, html) = end.page();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        html.contains("No account uses this email address"),
        "{html}"
    );
    assert!(f.user_id("bob@corp.example").await.is_none());
}

async fn linking_needs_proof_when_either_side_has_not_verified_the_address(b: Backend) {
    let f = setup(b, true).await;
    // The local account registered itself and never verified its address; the upstream has.
    f.app.register("cy@corp.example").await;
    upstream_user(&f.upstream, "cy@corp.example", true).await;
    let user_id = f.user_id("cy@corp.example").await.unwrap();
    let end = f.walk(&f.authorize_url("&idp=up"), "cy@corp.example").await;
    let (status, html) = end.page();
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"action="/auth/federated/link""#), "{html}");
    assert!(
        f.identities(&user_id).await.is_empty(),
        "not linked without proof"
    );
    // A wrong password links nothing.
    let again = f.link(html, "not the password").await;
    let (status, again_html) = again.page();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(again_html.contains("That password is not right"));
    assert!(f.identities(&user_id).await.is_empty());
    // The right one links, and signs in.
    let end = f.link(html, PASSWORD).await;
    let tokens = f.redeem(&end.code()).await;
    assert_eq!(claims(tokens["id_token"].as_str().unwrap())["sub"], user_id);
    let linked = f.identities(&user_id).await;
    assert_eq!(linked.len(), 1);
    let events = events_of(&f.app, &user_id).await;
    let event = events
        .iter()
        .find(|e| e["event_type"] == "identity.federation.linked.v1")
        .unwrap();
    assert_eq!(event["data"]["via"], "password");

    // The other way round: Tessera verified the address, the upstream did not.
    let f = setup(b, true).await;
    crate::authz::create_admin(&f.app, "dee@corp.example").await;
    upstream_user(&f.upstream, "dee@corp.example", false).await;
    let user_id = f.user_id("dee@corp.example").await.unwrap();
    let end = f
        .walk(&f.authorize_url("&idp=up"), "dee@corp.example")
        .await;
    let (status, html) = end.page();
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"action="/auth/federated/link""#), "{html}");
    assert!(f.identities(&user_id).await.is_empty());
    // Nor does an unverified upstream address create an account.
    upstream_user(&f.upstream, "eve@corp.example", false).await;
    let fresh = f.in_a_new_browser();
    let end = fresh
        .walk(&fresh.authorize_url("&idp=up"), "eve@corp.example")
        .await;
    let (status, html) = end.page();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        html.contains("has not verified your email address"),
        "{html}"
    );
    assert!(fresh.user_id("eve@corp.example").await.is_none());
}

async fn linking_is_automatic_only_when_both_sides_verified_the_address(b: Backend) {
    let f = setup(b, false).await;
    crate::authz::create_admin(&f.app, "fay@corp.example").await;
    upstream_user(&f.upstream, "fay@corp.example", true).await;
    let user_id = f.user_id("fay@corp.example").await.unwrap();
    let end = f
        .walk(&f.authorize_url("&idp=up"), "fay@corp.example")
        .await;
    let tokens = f.redeem(&end.code()).await;
    assert_eq!(claims(tokens["id_token"].as_str().unwrap())["sub"], user_id);
    let events = events_of(&f.app, &user_id).await;
    let event = events
        .iter()
        .find(|e| e["event_type"] == "identity.federation.linked.v1")
        .expect("linked");
    assert_eq!(event["data"]["via"], "verified_email");
    assert_eq!(event["data"]["provider"], "up");
    // The account has a password too, so the identity can be unlinked.
    let access = tokens["access_token"].as_str().unwrap();
    let id = &f.identities(&user_id).await[0].id;
    let res = f
        .app
        .request(
            reqwest::Method::DELETE,
            &format!("/identity/identities/{id}"),
            Some(access),
            None,
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert!(f.identities(&user_id).await.is_empty());
    let types = event_types_of(&f.app, &user_id).await;
    assert!(types.iter().any(|t| t == "identity.federation.unlinked.v1"));
}

async fn a_local_second_factor_is_still_required(b: Backend) {
    let f = setup(b, false).await;
    let enrolled = crate::mfa::enrolled(&f.app, "gus@corp.example").await;
    let user_id = enrolled.user_id.clone();
    let mut tx = f.app.state.store.begin().await.unwrap();
    tessera::store::users::set_verified(&mut tx, &user_id, true, f.app.clock.now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    upstream_user(&f.upstream, "gus@corp.example", true).await;
    let end = f
        .walk(&f.authorize_url("&idp=up"), "gus@corp.example")
        .await;
    let (status, html) = end.page();
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"action="/oauth2/mfa""#), "{html}");
    // The link was made (both verified); the sign-in waits for the factor.
    assert_eq!(f.identities(&user_id).await.len(), 1);
    let code = crate::mfa::code_at(&enrolled.secret, f.app.clock.now());
    let res = f
        .browser
        .post(format!("{}/oauth2/mfa", f.app.base))
        .form(&[
            ("csrf_token", field(html, "csrf_token")),
            ("request", field(html, "request")),
            ("mfa_token", field(html, "mfa_token")),
            ("code", code),
        ])
        .send()
        .await
        .unwrap();
    let url = format!("{}/oauth2/mfa", f.app.base);
    let end = f.walk_from(&url, Some(res), "", |_| false).await;
    let tokens = f.redeem(&end.code()).await;
    let id_token = claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(id_token["amr"], json!(["fed", "otp", "mfa"]));
    assert_eq!(id_token["acr"], "urn:tessera:acr:mfa");
}

async fn a_wrong_issuer_a_wrong_nonce_or_an_expired_id_token_is_refused(b: Backend) {
    let f = setup(b, true).await;
    upstream_user(&f.upstream, "hal@corp.example", true).await;
    let callback = format!("{}/auth/federated/{IDP}/callback", f.app.base);
    let at_callback = |u: &str| u.starts_with(&callback);
    // RFC 9207: an `iss` other than the provider's (a mix-up) is refused.
    let back = f
        .walk_until(&f.authorize_url("&idp=up"), "hal@corp.example", at_callback)
        .await;
    let End::Client(url) = back else {
        panic!("{back:?}")
    };
    assert_eq!(
        param(&url, "iss").as_deref(),
        Some(f.upstream.config.issuer.as_str())
    );
    let forged = url.replace(
        &format!("iss={}", urlencode(&f.upstream.config.issuer)),
        "iss=https%3A%2F%2Fevil.example",
    );
    assert_ne!(forged, url);
    let end = f.walk(&forged, "").await;
    let (status, html) = end.page();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        html.contains("did not come from the identity provider"),
        "{html}"
    );
    assert!(f.user_id("hal@corp.example").await.is_none());
    // A nonce altered on its way to the upstream comes back in the ID token, and is refused.
    let at_upstream = |u: &str| u.contains("/oauth2/authorize") && u.contains("nonce=");
    let to_upstream = f
        .walk_until(&f.authorize_url("&idp=up"), "hal@corp.example", at_upstream)
        .await;
    let End::Client(url) = to_upstream else {
        panic!("{to_upstream:?}")
    };
    let nonce = param(&url, "nonce").unwrap();
    let altered = url.replace(&format!("nonce={nonce}"), "nonce=another-nonce");
    let end = f.walk(&altered, "hal@corp.example").await;
    let (status, html) = end.page();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("could not be verified"), "{html}");
    assert!(f.user_id("hal@corp.example").await.is_none());
    // An ID token that has expired by Tessera's clock: the downstream is a day ahead of the
    // upstream that signs it.
    f.app.clock.advance(24 * 3600);
    let end = f
        .walk(&f.authorize_url("&idp=up"), "hal@corp.example")
        .await;
    let (status, html) = end.page();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("could not be verified"), "{html}");
    assert!(f.user_id("hal@corp.example").await.is_none());
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Signs in at the upstream, stopping at the downstream's callback: its URL.
async fn callback_url(f: &Federation, email: &str) -> String {
    let callback = format!("{}/auth/federated/{IDP}/callback", f.app.base);
    let at_callback = |u: &str| u.starts_with(&callback);
    match f
        .walk_until(&f.authorize_url("&idp=up"), email, at_callback)
        .await
    {
        End::Client(url) => url,
        other => panic!("{other:?}"),
    }
}

async fn a_callback_cannot_be_replayed_or_used_by_another_browser(b: Backend) {
    let f = setup(b, true).await;
    upstream_user(&f.upstream, "ivy@corp.example", true).await;
    // Another browser cannot use the callback (login CSRF): one without a flow cookie...
    let url = callback_url(&f, "ivy@corp.example").await;
    let res = new_browser().get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("expired or was used already")
    );
    // (that used the flow up: the right browser's callback now fails too)
    assert_eq!(f.walk(&url, "").await.page().0, StatusCode::BAD_REQUEST);
    // ...nor one with a flow of its own.
    let url = callback_url(&f, "ivy@corp.example").await;
    let other = f.in_a_new_browser();
    let at_upstream = |u: &str| u.contains("/oauth2/authorize") && u.contains("nonce=");
    let started = other
        .walk_until(&other.authorize_url("&idp=up"), "", at_upstream)
        .await;
    assert!(matches!(started, End::Client(_)), "{started:?}");
    let end = other.walk(&url, "").await;
    let (status, html) = end.page();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("expired or was used already"), "{html}");
    assert!(other.user_id("ivy@corp.example").await.is_none());
    // A sign-in's own callback works once; replayed, it fails.
    let f = other.in_a_new_browser();
    let url = callback_url(&f, "ivy@corp.example").await;
    f.walk(&url, "").await.code();
    let again = f.walk(&url, "").await;
    let (status, html) = again.page();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("expired or was used already"), "{html}");
}

async fn a_tenant_routes_its_domain_to_its_provider(b: Backend) {
    use crate::tenants::{send, switch};
    use reqwest::Method;
    // Provider `up` without just-in-time creation; `other`, the same upstream, with it.
    let mut f = setup(b, false).await;
    add_provider(&f.app, &f.upstream, "other", true).await;
    let root = crate::tenant_keys::system_admin(&f.app).await;
    let res = send(
        &f.app,
        Method::POST,
        "/tenants",
        &root,
        json!({"name": "Corp", "slug": "corp", "type": "enterprise"}),
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    let corp = res.body["id"].as_str().unwrap().to_string();
    let owner = switch(&f.app, &root, &corp).await;
    let domains = format!("/tenants/{corp}/domains");
    let res = send(
        &f.app,
        Method::POST,
        &domains,
        &owner.access,
        json!({"domain": "corp.example"}),
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    let sign_in = format!("{domains}/corp.example/sign-in");
    // Only a verified domain is routed, only to a configured provider, and passwords go only
    // with a provider to go to.
    let res = send(
        &f.app,
        Method::PUT,
        &sign_in,
        &owner.access,
        json!({"idp": "up"}),
    )
    .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);
    let verify = format!("{domains}/corp.example/verify");
    let res = send(&f.app, Method::POST, &verify, &root, json!({})).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    for (body, field) in [
        (json!({"idp": "nope"}), "idp"),
        (
            json!({"idp": null, "disable_passwords": true}),
            "disable_passwords",
        ),
    ] {
        let res = send(&f.app, Method::PUT, &sign_in, &owner.access, body).await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);
        assert_eq!(res.body["fields"][0]["field"], field, "{}", res.text);
    }
    // An account at the domain that signed up with a password before the binding.
    crate::authz::create_admin(&f.app, "lee@corp.example").await;
    let res = send(
        &f.app,
        Method::PUT,
        &sign_in,
        &owner.access,
        json!({"idp": "up", "disable_passwords": true}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body["idp"], "up");
    assert_eq!(res.body["passwords_disabled"], true);
    // Passwords are refused for the domain on every path, for accounts and non-accounts alike.
    for email in ["lee@corp.example", "nobody@corp.example"] {
        let res = f.app.login(email, PASSWORD).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.text);
        assert_eq!(res.body["error"], "password_sign_in_disabled");
    }
    // Identifier-first: the address alone, on the hosted sign-in page, goes to the provider
    // (which, bound to the domain, vouches for its addresses: the upstream never verified it,
    // and `up` creates no accounts elsewhere); the account is made and joins the tenant.
    upstream_user(&f.upstream, "kim@corp.example", false).await;
    let login = f.walk(&f.authorize_url(""), "").await;
    let (_, html) = login.page();
    let form = [
        ("csrf_token", field(html, "csrf_token")),
        ("request", field(html, "request")),
        ("email", "kim@corp.example".to_string()),
        ("password", String::new()),
    ];
    let url = format!("{}/oauth2/login", f.app.base);
    let res = f.browser.post(&url).form(&form).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with("/auth/federated/up/start?"),
        "{location}"
    );
    let at_upstream = |u: &str| u.contains("/oauth2/authorize") && u.contains("nonce=");
    let start = absolute(&url, &location);
    let End::Client(to_upstream) = f.walk_until(&start, "", at_upstream).await else {
        panic!("not sent to the upstream")
    };
    assert_eq!(
        param(&to_upstream, "login_hint").as_deref(),
        Some("kim@corp.example")
    );
    let end = f.walk(&to_upstream, "kim@corp.example").await;
    let tokens = f.redeem(&end.code()).await;
    let kim = f
        .user_id("kim@corp.example")
        .await
        .expect("created for the domain");
    assert_eq!(claims(tokens["id_token"].as_str().unwrap())["sub"], kim);
    let roles = tessera::store::tenants::member_roles(f.app.state.store.pool(), &corp, &kim)
        .await
        .unwrap();
    assert_eq!(roles, Some(vec!["member".to_string()]));
    // Another provider may neither create an account at the domain nor link one there.
    upstream_user(&f.upstream, "max@corp.example", true).await;
    upstream_user(&f.upstream, "lee@corp.example", true).await;
    for email in ["max@corp.example", "lee@corp.example"] {
        f = f.in_a_new_browser();
        let end = f.walk(&f.authorize_url("&idp=other"), email).await;
        let (status, html) = end.page();
        assert_eq!(status, StatusCode::FORBIDDEN, "{email}");
        assert!(html.contains("through their organisation"), "{html}");
    }
    assert!(f.user_id("max@corp.example").await.is_none());
    let lee = f.user_id("lee@corp.example").await.unwrap();
    assert!(f.identities(&lee).await.is_empty());
}

async fn a_single_page_app_signs_in_with_a_login_code(b: Backend) {
    use base64::Engine as _;
    let f = setup(b, false).await;
    crate::authz::create_admin(&f.app, "ned@corp.example").await;
    upstream_user(&f.upstream, "ned@corp.example", true).await;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, VERIFIER.as_bytes());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
    let base = f.app.base.clone();
    let start = |client_id: &str, return_to: &str, challenge: &str| {
        format!(
            "{base}/auth/federated/up/start?client_id={client_id}&return_to={}&code_challenge={challenge}&state=app-state",
            urlencode(return_to)
        )
    };
    // The client must be first-party, `return_to` one of its redirect URIs, PKCE S256: else a
    // page, and no redirect anywhere.
    let third_party = create_client(
        &f.app,
        ClientSpec {
            name: Some("Third".into()),
            redirect_uris: Some(vec![REDIRECT.into()]),
            ..Default::default()
        },
    )
    .await;
    for url in [
        start(&third_party.id, REDIRECT, &challenge),
        start(&f.client_id, "http://127.0.0.1:9/elsewhere", &challenge),
        start(&f.client_id, REDIRECT, "short"),
    ] {
        let res = f.browser.get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{url}");
        assert!(res.headers().get("location").is_none());
    }
    let end = f
        .walk(
            &start(&f.client_id, REDIRECT, &challenge),
            "ned@corp.example",
        )
        .await;
    let End::Client(back) = end else {
        panic!("{end:?}")
    };
    assert_eq!(param(&back, "state").as_deref(), Some("app-state"));
    assert_eq!(
        param(&back, "iss").as_deref(),
        Some(f.app.config.issuer.as_str())
    );
    let code = param(&back, "login_code").expect("a login code");
    let redeem = |code: String, verifier: &'static str| {
        let app = &f.app;
        async move {
            app.post(
                "/auth/federated/token",
                json!({ "login_code": code, "code_verifier": verifier }),
            )
            .await
        }
    };
    // A wrong verifier fails, and uses the code up.
    let res = redeem(
        code.clone(),
        "wrong-verifier-wrong-verifier-wrong-verifier-0",
    )
    .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.text);
    assert_eq!(res.body["error"], "invalid_grant");
    let res = redeem(code, VERIFIER).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.text);
    // A new sign-in's code with its verifier: Tessera's own tokens, once.
    let end = f
        .walk(
            &start(&f.client_id, REDIRECT, &challenge),
            "ned@corp.example",
        )
        .await;
    let End::Client(back) = end else {
        panic!("{end:?}")
    };
    let code = param(&back, "login_code").unwrap();
    let res = redeem(code.clone(), VERIFIER).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.headers["cache-control"], "no-store");
    let access = claims(res.body["access_token"].as_str().unwrap());
    assert_eq!(access["sub"], f.user_id("ned@corp.example").await.unwrap());
    assert_eq!(access["amr"], json!(["fed"]));
    assert_eq!(
        redeem(code, VERIFIER).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A refusal goes back to the application as an error.
    upstream_user(&f.upstream, "oz@corp.example", true).await;
    let other = f.in_a_new_browser();
    let end = other
        .walk(
            &start(&other.client_id, REDIRECT, &challenge),
            "oz@corp.example",
        )
        .await;
    let End::Client(back) = end else {
        panic!("{end:?}")
    };
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"));
    assert!(param(&back, "login_code").is_none());
}

async fn the_admin_api_manages_providers(b: Backend) {
    let f = setup(b, false).await;
    let admin = crate::audit::admin_token(&f.app).await;
    let list = f.app.get("/admin/idps", &admin).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.body["providers"][0]["name"], "up");
    assert!(!list.text.contains("client_secret"), "{}", list.text);
    let post = |body: Value| {
        let app = &f.app;
        let admin = admin.clone();
        async move {
            app.request(
                reqwest::Method::POST,
                "/admin/idps",
                Some(&admin),
                Some(body),
            )
            .await
        }
    };
    let res = post(json!({ "name": "up", "issuer": "https://idp.example", "client_id": "x", "client_secret": "y" })).await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.body["error"], "provider_exists");
    let res =
        post(json!({ "name": "Bad Name", "issuer": "http://idp.example", "client_id": "x" })).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);
    let fields: Vec<&str> = res.body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    for field in ["name", "client_secret", "issuer"] {
        assert!(fields.contains(&field), "{field} in {fields:?}");
    }
    let res = post(json!({ "name": "google", "preset": "google", "client_id": "x", "client_secret": "s3cret-value" })).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    assert_eq!(res.body["issuer"], "https://accounts.google.com");
    assert_eq!(res.body["display_name"], "Google");
    assert!(!res.text.contains("s3cret-value"));
    // The secret is sealed at rest.
    let row = tessera::store::federation::find_provider(f.app.state.store.pool(), "google")
        .await
        .unwrap()
        .unwrap();
    assert!(!String::from_utf8_lossy(&row.client_secret).contains("s3cret-value"));
    let res = f
        .app
        .request(
            reqwest::Method::PATCH,
            "/admin/idps/google",
            Some(&admin),
            Some(json!({ "jit": true, "display_name": "Google Workspace" })),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body["jit"], true);
    let res = f
        .app
        .request(
            reqwest::Method::DELETE,
            "/admin/idps/google",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = f.app.get("/admin/idps/google", &admin).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    let audit: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE target_id = 'google' ORDER BY id")
            .fetch_all(f.app.state.store.pool())
            .await
            .unwrap();
    assert_eq!(audit, ["idp.create", "idp.update", "idp.delete"]);
}

async fn an_emailed_link_proves_an_account_without_a_password(b: Backend) {
    let sink = crate::helpers::SmtpSink::start().await;
    let f = setup_with(b, false, |c| sink.configure(c)).await;
    // The account has no password (made by an operator, say), and its address is verified;
    // the upstream has not verified it, so the link needs proof, and only mail can give it.
    let now = f.app.clock.now();
    let store = &f.app.state.store;
    let email = "gil@corp.example";
    let user = tessera::accounts::create(store, email, None, Some(now), &[], None, now)
        .await
        .unwrap();
    upstream_user(&f.upstream, email, false).await;
    let end = f.walk(&f.authorize_url("&idp=up"), email).await;
    let (status, html) = end.page();
    assert_eq!(status, StatusCode::OK);
    assert!(
        !html.contains(r#"name="password""#),
        "no password to give: {html}"
    );
    let (status, sent) = f.ask_for_link(html).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    assert!(
        sent.contains("We sent a link to gil@corp.example"),
        "{sent}"
    );
    let message = sink.next_message().await;
    assert!(crate::helpers::decode_qp(&message).contains("Link Upstream"));
    let (link, _) = crate::helpers::find_link(&message, "link-identity");
    let types = event_types_of(&f.app, &user.id).await;
    assert!(
        types
            .iter()
            .any(|t| t == "identity.federation.link_requested.v1")
    );

    // Another browser (the victim's, say, if someone else asked) cannot confirm it, and uses
    // nothing up.
    let ((status, html), (posted, _)) = open_link_in(&new_browser(), &f.app.base, &link).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
    assert!(
        html.contains("only in the browser where you asked"),
        "{html}"
    );
    assert_eq!(posted, StatusCode::FORBIDDEN);
    assert!(f.identities(&user.id).await.is_empty(), "nothing linked");

    // The browser that asked confirms it: linked (via `email`), and the page goes on with the
    // sign-in, which the link now signs in.
    let ((status, html), (posted, done)) = f.open_link(&link).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Sign in to <strong>gil@corp.example</strong> with Upstream"),
        "{html}"
    );
    assert!(!html.contains("never confirmed"), "{html}");
    assert_eq!(posted, StatusCode::OK, "{done}");
    assert_eq!(f.identities(&user.id).await.len(), 1);
    let events = events_of(&f.app, &user.id).await;
    let linked = events
        .iter()
        .find(|e| e["event_type"] == "identity.federation.linked.v1")
        .expect("linked");
    assert_eq!(linked["data"]["via"], "email");
    let sub = f.continue_after_link(&done, email).await;
    assert_eq!(sub, user.id);

    // Used once: a second confirmation is refused.
    let (_, (again, _)) = f.open_link(&link).await;
    assert_eq!(again, StatusCode::BAD_REQUEST);
    // Housekeeping deletes the link once it has expired.
    let count = || async {
        let n: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM identity_link_tokens")
            .fetch_one(f.app.state.store.pool())
            .await
            .unwrap();
        n.0
    };
    assert_eq!(count().await, 1);
    f.app
        .clock
        .advance(tessera::federation::email_proof::LINK_TTL_SECS + 1);
    tessera::app::purge_expired(&f.app.state.store, f.app.clock.now())
        .await
        .unwrap();
    assert_eq!(count().await, 0);
}

async fn an_emailed_link_reclaims_an_account_whose_address_nobody_verified(b: Backend) {
    // Links travel in events here (`TESSERA_MAIL__TRANSPORT=events`).
    let f = setup_with(b, false, |c| c.mail.transport = "events".into()).await;
    // Someone registered the address without owning it, keeps a session, made an API key in a
    // team of theirs, and set up an authenticator app.
    let email = "hal@corp.example";
    f.app.register(email).await;
    let squatter = crate::helpers::Tokens::from(&f.app.login(email, PASSWORD).await.body);
    let user_id = f.user_id(email).await.unwrap();
    let team = crate::tenants::team(&f.app, &squatter.access, "Squat", "squat").await;
    let in_team = crate::tenants::switch(&f.app, &squatter.access, &team).await;
    let key = crate::tenants::api_key(&f.app, &in_team.access, &team, &["members:read"]).await;
    let key = key["key"].as_str().unwrap().to_string();
    let members = format!("/tenants/{team}/members");
    assert_eq!(f.app.get(&members, &key).await.status, StatusCode::OK);
    let totp = f
        .app
        .request(
            reqwest::Method::POST,
            "/identity/mfa/totp",
            Some(&squatter.access),
            Some(json!({ "name": "Phone" })),
        )
        .await;
    let secret = totp.body["secret"].as_str().unwrap();
    let code = crate::mfa::code_at(secret, f.app.clock.now());
    let confirm = format!(
        "/identity/mfa/totp/{}/confirm",
        totp.body["id"].as_str().unwrap()
    );
    let body = Some(json!({ "code": code }));
    let confirmed = f
        .app
        .request(
            reqwest::Method::POST,
            &confirm,
            Some(&squatter.access),
            body,
        )
        .await;
    assert!(confirmed.status.is_success(), "{}", confirmed.text);
    // The address's real holder signs in upstream, which verified it.
    upstream_user(&f.upstream, email, true).await;
    let end = f.walk(&f.authorize_url("&idp=up"), email).await;
    let (_, html) = end.page();
    assert!(html.contains(r#"name="password""#), "{html}");
    let requested = f.link_requested(html, &user_id).await;
    assert_eq!(requested["data"]["provider_name"], "Upstream");
    let link = requested["data"]["link"].as_str().unwrap().to_string();
    let ((status, html), (posted, done)) = f.open_link(&link).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("never confirmed"),
        "the page says what goes: {html}"
    );
    assert_eq!(posted, StatusCode::OK, "{done}");

    // The address is proven; the squatter's password and session are gone.
    let user = tessera::store::users::find_by_id(f.app.state.store.pool(), &user_id)
        .await
        .unwrap()
        .unwrap();
    assert!(user.email_verified_at.is_some());
    assert!(user.password_hash.is_none());
    assert_eq!(
        f.app.login(email, PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    let factors = tessera::store::mfa::confirmed(f.app.state.store.pool(), &user_id)
        .await
        .unwrap();
    assert!(
        factors.is_empty(),
        "the squatter's authenticator app is gone"
    );
    let refreshed = f.app.refresh(&squatter.refresh).await;
    assert_eq!(
        refreshed.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        refreshed.text
    );
    let listed = f.app.get(&members, &key).await;
    assert_eq!(
        listed.status,
        StatusCode::UNAUTHORIZED,
        "the key is revoked: {}",
        listed.text
    );
    let events = events_of(&f.app, &user_id).await;
    let of = |t: &str| {
        events
            .iter()
            .filter(|e| e["event_type"] == t)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of("identity.password.changed.v1")[0]["data"]["method"],
        "removed"
    );
    assert_eq!(
        of("identity.session.revoked.v1")[0]["data"]["reason"],
        "account_reclaimed"
    );
    assert_eq!(of("identity.email.verified.v1").len(), 1);
    assert_eq!(
        of("identity.federation.linked.v1")[0]["data"]["via"],
        "email"
    );
    // The upstream identity is now how the account signs in.
    let sub = f.continue_after_link(&done, email).await;
    assert_eq!(sub, user_id);
}

async fn an_emailed_link_to_a_verified_account_keeps_what_it_has(b: Backend) {
    let f = setup_with(b, false, |c| c.mail.transport = "events".into()).await;
    // Tessera verified the address and the account has a password and a session; the upstream
    // has not verified the address, so the link needs proof, here by mail.
    let email = "ivy@corp.example";
    crate::authz::create_admin(&f.app, email).await;
    let session = crate::helpers::Tokens::from(&f.app.login(email, PASSWORD).await.body);
    let user_id = f.user_id(email).await.unwrap();
    upstream_user(&f.upstream, email, false).await;
    let end = f.walk(&f.authorize_url("&idp=up"), email).await;
    let (_, html) = end.page();
    let requested = f.link_requested(html, &user_id).await;
    let link = requested["data"]["link"].as_str().unwrap().to_string();
    let ((status, html), (posted, done)) = f.open_link(&link).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        !html.contains("never confirmed"),
        "nothing to reclaim: {html}"
    );
    assert_eq!(posted, StatusCode::OK, "{done}");
    assert_eq!(f.identities(&user_id).await.len(), 1);
    // The link proved nothing the verification had not: the password and the session stay.
    assert_eq!(f.app.login(email, PASSWORD).await.status, StatusCode::OK);
    let refreshed = f.app.refresh(&session.refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text);
    let types = event_types_of(&f.app, &user_id).await;
    assert!(
        !types.iter().any(|t| t == "identity.password.changed.v1"),
        "{types:?}"
    );
    assert!(
        !types.iter().any(|t| t == "identity.session.revoked.v1"),
        "{types:?}"
    );
}

/// A stand-in for GitHub on a local port: its OAuth 2.0 endpoints (checking the client secret
/// and the PKCE verifier) and its REST user API, under `/api/v3` as on GitHub Enterprise Server.
struct GitHub {
    base: String,
    /// The primary address `/user/emails` gives, and whether it is verified.
    primary: std::sync::Arc<std::sync::Mutex<(String, bool)>>,
}

const GITHUB_SECRET: &str = "github-client-secret";

impl GitHub {
    async fn start(callback: String) -> Self {
        use axum::extract::{Form, Query, State};
        use axum::http::HeaderMap;
        use axum::response::{IntoResponse, Redirect};
        use std::collections::HashMap;
        type Shared = std::sync::Arc<std::sync::Mutex<HashMap<String, String>>>;
        let codes: Shared = Default::default();
        let primary = std::sync::Arc::new(std::sync::Mutex::new((String::new(), false)));
        let authorize = {
            let codes = codes.clone();
            move |Query(q): Query<HashMap<String, String>>| async move {
                assert_eq!(q["redirect_uri"], callback);
                assert_eq!(q["code_challenge_method"], "S256");
                assert_eq!(q["scope"], "read:user user:email");
                let code = format!("code{}", codes.lock().unwrap().len());
                codes
                    .lock()
                    .unwrap()
                    .insert(code.clone(), q["code_challenge"].clone());
                Redirect::to(&format!("{callback}?code={code}&state={}", q["state"]))
            }
        };
        let token = move |Form(f): Form<HashMap<String, String>>| async move {
            use base64::Engine as _;
            let challenge = codes.lock().unwrap().remove(&f["code"]);
            let digest = aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                f.get("code_verifier").map_or("", |v| v).as_bytes(),
            );
            let derived = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
            // GitHub answers an error with 200 and an `error` member.
            if f.get("client_secret").map(String::as_str) != Some(GITHUB_SECRET)
                || challenge.as_deref() != Some(derived.as_str())
            {
                return axum::Json(json!({"error": "bad_verification_code"}));
            }
            axum::Json(
                json!({"access_token": "gho_test", "token_type": "bearer", "scope": "read:user,user:email"}),
            )
        };
        let authorized = |h: &HeaderMap| {
            h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer gho_test")
                && h.contains_key("user-agent")
        };
        let user = move |h: HeaderMap| async move {
            if !authorized(&h) {
                return axum::http::StatusCode::UNAUTHORIZED.into_response();
            }
            axum::Json(json!({"id": 4242, "login": "octo", "name": "Octo Cat", "email": null}))
                .into_response()
        };
        let emails = move |State(p): State<std::sync::Arc<std::sync::Mutex<(String, bool)>>>,
                           h: HeaderMap| async move {
            if !authorized(&h) {
                return axum::http::StatusCode::UNAUTHORIZED.into_response();
            }
            let (email, verified) = p.lock().unwrap().clone();
            axum::Json(json!([
                {"email": "octo@users.noreply.example", "primary": false, "verified": true},
                {"email": email, "primary": true, "verified": verified},
            ]))
            .into_response()
        };
        let router = axum::Router::new()
            .route("/login/oauth/authorize", axum::routing::get(authorize))
            .route("/login/oauth/access_token", axum::routing::post(token))
            .route("/api/v3/user", axum::routing::get(user))
            .route("/api/v3/user/emails", axum::routing::get(emails))
            .with_state(primary.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { base, primary }
    }
}

async fn github_signs_in_through_oauth_and_its_user_api(b: Backend) {
    let f = setup(b, true).await;
    let callback = format!("{}/auth/federated/gh/callback", f.app.config.issuer);
    let github = GitHub::start(callback).await;
    let ctx = tessera::context::RequestContext::system();
    let spec = tessera::federation::ProviderSpec {
        name: Some("gh".into()),
        preset: Some(tessera::federation::Preset::Github),
        // A GitHub Enterprise Server's base URL (here, the stand-in's).
        issuer: Some(github.base.clone()),
        client_id: Some("Iv1.test".into()),
        client_secret: Some(GITHUB_SECRET.into()),
        jit: Some(true),
        ..Default::default()
    };
    let by = tessera::audit::By::system(&ctx);
    let view = tessera::federation::add((&*f.app.state).into(), spec, by, f.app.clock.now())
        .await
        .unwrap();
    assert_eq!(view.display_name, "GitHub");
    assert_eq!(
        view.scopes,
        ["read:user", "user:email"],
        "no openid for GitHub"
    );

    // A verified primary address: the account is made just in time, with GitHub's numeric id
    // as the subject.
    *github.primary.lock().unwrap() = ("octo@corp.example".into(), true);
    let end = f.walk(&f.authorize_url("&idp=gh"), "").await;
    let tokens = f.redeem(&end.code()).await;
    let user_id = f.user_id("octo@corp.example").await.expect("created");
    assert_eq!(claims(tokens["id_token"].as_str().unwrap())["sub"], user_id);
    let linked = f.identities(&user_id).await;
    assert_eq!(
        (linked[0].provider.as_str(), linked[0].subject.as_str()),
        ("gh", "4242")
    );
    // Subjects are unique only per issuer: with identities linked, the issuer stays.
    let by = tessera::audit::By::system(&ctx);
    let moved = tessera::federation::ProviderSpec {
        issuer: Some("https://ghe.example.com".into()),
        ..Default::default()
    };
    let now = f.app.clock.now();
    let refused = tessera::federation::update((&*f.app.state).into(), "gh", moved, by, now).await;
    assert!(
        matches!(&refused, Err(tessera::Error::Conflict { code, .. }) if code.as_str() == "provider_in_use"),
        "{:?}",
        refused.err()
    );
    let profile = tessera::store::users::find_profile(f.app.state.store.pool(), &user_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(profile.display_name.as_deref(), Some("Octo Cat"));

    // An unverified primary address creates nothing (another GitHub user, fresh browser).
    tessera::store::federation::unlink(f.app.state.store.writer(), &user_id, &linked[0].id)
        .await
        .unwrap();
    *github.primary.lock().unwrap() = ("nobody@corp.example".into(), false);
    let fresh = f.in_a_new_browser();
    let end = fresh.walk(&fresh.authorize_url("&idp=gh"), "").await;
    let (status, html) = end.page();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        html.contains("has not verified your email address"),
        "{html}"
    );
    assert!(fresh.user_id("nobody@corp.example").await.is_none());
}
