//! Tenants at sign-in through OAuth (`tenant` at the authorization endpoint, the hosted tenant
//! picker for `scope=tenant`, the password grant, re-scoping refresh, `tid` in ID tokens), email
//! domains of enterprise tenants with just-in-time membership, and purging deleted tenants.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp, Tokens, assert_error, events_of};
use crate::oauth::{browse, param, register_client, token};
use crate::on_both_backends;
use crate::tenants::{add_member, claims, send, switch, team, user_id};

on_both_backends!(
    authorization_code_tokens_carry_the_named_or_default_tenant,
    scope_tenant_lets_a_user_in_several_tenants_pick_one,
    refresh_re_scopes_a_family_to_another_tenant_of_the_user,
    password_grant_takes_a_tenant,
    verified_domains_of_enterprise_tenants_take_users_in_at_sign_in,
    deleted_tenants_are_purged_with_their_members,
);

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

fn authorize_url(app: &TestApp, client_id: &str, scope: &str, extra: &str) -> String {
    format!(
        "{}/oauth2/authorize?response_type=code&client_id={client_id}&redirect_uri={REDIRECT}&scope={scope}&code_challenge={CHALLENGE}&code_challenge_method=S256{extra}",
        app.base
    )
}

async fn redeem(app: &TestApp, id: &str, secret: &str, redirect: &str) -> Value {
    let code = param(redirect, "code").unwrap_or_else(|| panic!("no code in {redirect}"));
    let (status, _, body) = token(
        app,
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
    body
}

async fn authorization_code_tokens_carry_the_named_or_default_tenant(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let personal = claims(&ada.access)["tid"].as_str().unwrap().to_string();
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    let c = register_client(
        &app,
        false,
        &["authorization_code", "refresh_token"],
        &["openid", "offline_access"],
    )
    .await;
    let (id, secret) = (c.id.as_str(), c.secret.as_deref().unwrap());

    // Named by slug: the access token and the ID token say which tenant, with the roles.
    let url = authorize_url(&app, id, "openid%20offline_access", "&tenant=acme");
    let got = redeem(
        &app,
        id,
        secret,
        &browse(&app, &url, "ada@example.com", "allow").await,
    )
    .await;
    let access = claims(got["access_token"].as_str().unwrap());
    assert_eq!(access["tid"], acme.as_str(), "{access}");
    assert_eq!(access["tenant_roles"], json!(["owner"]));
    assert_eq!(
        claims(got["id_token"].as_str().unwrap())["tid"],
        acme.as_str()
    );
    // Its refresh keeps the tenant.
    let (status, _, refreshed) = token(
        &app,
        Some((id, secret)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", got["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(
        claims(refreshed["access_token"].as_str().unwrap())["tid"],
        acme.as_str()
    );

    // Named now, the tenant is the user's last: without `tenant` the default is Acme.
    let url = authorize_url(&app, id, "openid", "");
    let got = redeem(
        &app,
        id,
        secret,
        &browse(&app, &url, "ada@example.com", "allow").await,
    )
    .await;
    assert_eq!(
        claims(got["access_token"].as_str().unwrap())["tid"],
        acme.as_str()
    );
    let url = authorize_url(&app, id, "openid", &format!("&tenant={personal}"));
    let got = redeem(
        &app,
        id,
        secret,
        &browse(&app, &url, "ada@example.com", "allow").await,
    )
    .await;
    assert_eq!(
        claims(got["access_token"].as_str().unwrap())["tid"],
        personal.as_str()
    );

    // A tenant the user is not in: the client hears access_denied, with no code.
    let bob = app.signed_in("bob@example.com").await;
    let bobs = team(&app, &bob.access, "Bob's", "bobs").await;
    let url = authorize_url(&app, id, "openid", &format!("&tenant={bobs}"));
    let back = browse(&app, &url, "ada@example.com", "allow").await;
    assert_eq!(
        param(&back, "error").as_deref(),
        Some("access_denied"),
        "{back}"
    );
    assert!(param(&back, "code").is_none());
    // A malformed one is refused before any page.
    let url = authorize_url(&app, id, "openid", &format!("&tenant={}", "x".repeat(400)));
    let res = app.client.get(&url).send().await.unwrap();
    let back = res.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        param(&back, "error").as_deref(),
        Some("invalid_request"),
        "{back}"
    );
}

async fn scope_tenant_lets_a_user_in_several_tenants_pick_one(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let acme = team(&app, &ada.access, "Acme Widgets", "acme").await;
    let c = register_client(&app, false, &["authorization_code"], &["openid", "tenant"]).await;
    let (id, secret) = (c.id.as_str(), c.secret.as_deref().unwrap());
    let url = authorize_url(&app, id, "openid%20tenant", "");
    // Sign in and consent; the next page is the picker, listing both tenants as links.
    let res = app.client.get(&url).send().await.unwrap();
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"action="/oauth2/login""#), "{html}");
    let form = [
        ("csrf_token", crate::oauth::field(&html, "csrf_token")),
        ("request", crate::oauth::field(&html, "request")),
        ("email", "ada@example.com".to_string()),
        ("password", PASSWORD.to_string()),
    ];
    let res = app
        .client
        .post(format!("{}/oauth2/login", app.base))
        .form(&form)
        .send()
        .await
        .unwrap();
    let html = res.text().await.unwrap();
    let form = [
        ("csrf_token", crate::oauth::field(&html, "csrf_token")),
        ("request", crate::oauth::field(&html, "request")),
        ("decision", "allow".to_string()),
    ];
    let res = app
        .client
        .post(format!("{}/oauth2/consent", app.base))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'none'") || csp.contains("default-src 'none'"),
        "{csp}"
    );
    let html = res.text().await.unwrap();
    assert!(html.contains("Choose a workspace"), "{html}");
    assert!(html.contains("Acme Widgets"), "{html}");
    let links: Vec<String> = html
        .match_indices(r#"class="tenant" href=""#)
        .map(|(i, m)| {
            let start = i + m.len();
            let end = start + html[start..].find('"').unwrap();
            html[start..end]
                .replace("&#x2f;", "/")
                .replace("&amp;", "&")
        })
        .collect();
    assert_eq!(links.len(), 2, "{html}");
    let pick = links
        .iter()
        .find(|l| l.contains(&format!("tenant={acme}")))
        .unwrap_or_else(|| panic!("no link for Acme in {links:?}"));
    // Following the link issues the code for Acme (consent is remembered).
    let res = app
        .client
        .get(format!("{}{pick}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let back = res.headers()["location"].to_str().unwrap().to_string();
    let got = redeem(&app, id, secret, &back).await;
    assert_eq!(
        claims(got["access_token"].as_str().unwrap())["tid"],
        acme.as_str()
    );
    assert_eq!(
        claims(got["id_token"].as_str().unwrap())["tid"],
        acme.as_str()
    );
    // prompt=none cannot show the picker: the default tenant (now Acme, the last picked).
    let url = authorize_url(&app, id, "openid%20tenant", "&prompt=none");
    let res = app.client.get(&url).send().await.unwrap();
    let back = res.headers()["location"].to_str().unwrap().to_string();
    let got = redeem(&app, id, secret, &back).await;
    assert_eq!(
        claims(got["access_token"].as_str().unwrap())["tid"],
        acme.as_str()
    );
    // `tenant` needs a user: client credentials may not ask for it.
    let svc = register_client(&app, false, &["client_credentials"], &["tenant"]).await;
    let (status, _, body) = token(
        &app,
        Some((&svc.id, svc.secret.as_deref().unwrap())),
        &[("grant_type", "client_credentials"), ("scope", "tenant")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_scope");
}

async fn refresh_re_scopes_a_family_to_another_tenant_of_the_user(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    let bob = app.signed_in("bob@example.com").await;
    let bobs = team(&app, &bob.access, "Bob's", "bobs").await;
    let c = register_client(
        &app,
        false,
        &["password", "refresh_token"],
        &["openid", "offline_access"],
    )
    .await;
    let (id, secret) = (c.id.as_str(), c.secret.as_deref().unwrap());
    let (status, _, first) = token(
        &app,
        Some((id, secret)),
        &[
            ("grant_type", "password"),
            ("username", "ada@example.com"),
            ("password", PASSWORD),
            ("scope", "openid offline_access"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let personal = claims(&ada.access)["tid"].as_str().unwrap().to_string();
    assert_eq!(
        claims(first["access_token"].as_str().unwrap())["tid"],
        personal.as_str()
    );
    let refresh = |rt: String, tenant: Option<String>| {
        let app = &app;
        async move {
            let mut form = vec![
                ("grant_type", "refresh_token".to_string()),
                ("refresh_token", rt),
            ];
            if let Some(t) = tenant {
                form.push(("tenant", t));
            }
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            token(app, Some((id, secret)), &form).await
        }
    };
    let rt = first["refresh_token"].as_str().unwrap().to_string();
    // Another user's tenant: refused, and the refresh token still works (nothing committed).
    let (status, _, body) = refresh(rt.clone(), Some(bobs)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "access_denied", "{body}");
    let (status, _, body) = refresh(rt.clone(), Some("nope".into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Acme by slug: the new access token is for Acme, and so is every later refresh.
    let (status, _, moved) = refresh(rt, Some("acme".into())).await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    let moved_claims = claims(moved["access_token"].as_str().unwrap());
    assert_eq!(moved_claims["tid"], acme.as_str());
    assert_eq!(moved_claims["tenant_roles"], json!(["owner"]));
    let (status, _, later) = refresh(moved["refresh_token"].as_str().unwrap().into(), None).await;
    assert_eq!(status, StatusCode::OK, "{later}");
    assert_eq!(
        claims(later["access_token"].as_str().unwrap())["tid"],
        acme.as_str()
    );
    // The old tenant's access token still stands for the old tenant only.
    let old = first["access_token"].as_str().unwrap();
    let res = app.get(&format!("/tenants/{acme}/members"), old).await;
    assert_error(&res, StatusCode::FORBIDDEN, "insufficient_scope");
}

async fn password_grant_takes_a_tenant(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    let c = register_client(&app, false, &["password"], &["openid"]).await;
    let (id, secret) = (c.id.as_str(), c.secret.as_deref().unwrap());
    let grant = |tenant: &'static str| {
        let app = &app;
        async move {
            token(
                app,
                Some((id, secret)),
                &[
                    ("grant_type", "password"),
                    ("username", "ada@example.com"),
                    ("password", PASSWORD),
                    ("tenant", tenant),
                ],
            )
            .await
        }
    };
    let (status, _, body) = grant("acme").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        acme.as_str()
    );
    assert_eq!(
        claims(body["id_token"].as_str().unwrap())["tid"],
        acme.as_str()
    );
    let (status, _, body) = grant("no-such-tenant").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "access_denied");
}

async fn verified_user(app: &TestApp, email: &str) -> Tokens {
    assert_eq!(app.register(email).await.status, StatusCode::CREATED);
    let user = tessera::store::users::find_by_email(app.state.store.pool(), email)
        .await
        .unwrap()
        .unwrap();
    let mut tx = app.state.store.begin().await.unwrap();
    tessera::store::users::set_email_verified(&mut tx, &user.id, email, 1)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let res = app.login(email, PASSWORD).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    Tokens::from(&res.body)
}

async fn verified_domains_of_enterprise_tenants_take_users_in_at_sign_in(b: Backend) {
    let app = TestApp::spawn(b).await;
    let root = crate::tenant_keys::system_admin(&app).await;
    let res = send(
        &app,
        Method::POST,
        "/tenants",
        &root,
        json!({"name": "Corp", "slug": "corp", "type": "enterprise"}),
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    let corp = res.body["id"].as_str().unwrap().to_string();
    let owner = switch(&app, &root, &corp).await;
    let domains = format!("/tenants/{corp}/domains");

    // Claims: enterprise only, a real domain, an existing role other than owner, one tenant.
    let ada = app.signed_in("ada@example.com").await;
    let team_id = team(&app, &ada.access, "Team", "team").await;
    let ada_in = switch(&app, &ada.access, &team_id).await;
    let res = send(
        &app,
        Method::POST,
        &format!("/tenants/{team_id}/domains"),
        &ada_in.access,
        json!({"domain": "team.example"}),
    )
    .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);
    for (body, field) in [
        (json!({"domain": "not a domain"}), "domain"),
        (json!({"domain": "localhost"}), "domain"),
        (json!({"domain": "10.0.0.1"}), "domain"),
        (
            json!({"domain": "corp.example", "default_role": "owner"}),
            "default_role",
        ),
        (
            json!({"domain": "corp.example", "default_role": "wizard"}),
            "default_role",
        ),
    ] {
        let res = send(&app, Method::POST, &domains, &owner.access, body).await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);
        assert_eq!(res.body["fields"][0]["field"], field, "{}", res.text);
    }
    let res = send(
        &app,
        Method::POST,
        &domains,
        &owner.access,
        json!({"domain": "Corp.Example"}),
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    assert_eq!(res.body["domain"], "corp.example");
    assert_eq!(res.body["default_role"], "member");
    assert_eq!(res.body["verified"], false);
    let res = send(
        &app,
        Method::POST,
        &domains,
        &owner.access,
        json!({"domain": "corp.example"}),
    )
    .await;
    assert_error(&res, StatusCode::CONFLICT, "domain_taken");

    // Before verification nobody joins.
    let early = verified_user(&app, "early@corp.example").await;
    let res = send(
        &app,
        Method::POST,
        "/auth/login",
        &early.access,
        json!({"email": "early@corp.example", "password": PASSWORD, "tenant": "corp"}),
    )
    .await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
    // Nobody but a system administrator verifies a claim.
    let verify = format!("{domains}/corp.example/verify");
    let res = send(&app, Method::POST, &verify, &ada_in.access, json!({})).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.text);
    let res = send(&app, Method::POST, &verify, &root, json!({})).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body["verified"], true);

    // A verified address at the domain joins at sign-in, with the default role, evented.
    let res = app
        .request(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": "early@corp.example", "password": PASSWORD, "tenant": "corp"})),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let c = claims(res.body["access_token"].as_str().unwrap());
    assert_eq!(c["tid"], corp.as_str());
    assert_eq!(c["tenant_roles"], json!(["member"]));
    let mut all = events_of(&app, &corp).await;
    all.extend(events_of(&app, &user_id(&early)).await);
    let types: Vec<Value> = all
        .into_iter()
        .filter(|e| e["event_type"] == "identity.tenant.member_added.v1")
        .collect();
    assert_eq!(types.len(), 1, "{types:?}");
    assert_eq!(types[0]["data"]["user_id"], user_id(&early).as_str());
    // Signing in again adds nothing; an unverified address at the domain never joins.
    app.login("early@corp.example", PASSWORD).await;
    let members = app
        .get(&format!("/tenants/{corp}/members"), &owner.access)
        .await;
    assert_eq!(
        members.body["members"].as_array().unwrap().len(),
        2,
        "{}",
        members.text
    );
    let unverified = app.signed_in("late@corp.example").await;
    let res = app.get("/tenants", &unverified.access).await;
    assert_eq!(
        res.body["tenants"].as_array().unwrap().len(),
        1,
        "{}",
        res.text
    );

    // Released: nobody new joins; members who joined stay.
    let res = send(
        &app,
        Method::DELETE,
        &format!("{domains}/corp.example"),
        &owner.access,
        json!({}),
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    let later = verified_user(&app, "later@corp.example").await;
    let res = app.get("/tenants", &later.access).await;
    assert_eq!(
        res.body["tenants"].as_array().unwrap().len(),
        1,
        "{}",
        res.text
    );
    let res = app.get(&domains, &owner.access).await;
    assert_eq!(res.body, json!([]), "{}", res.text);
}

async fn deleted_tenants_are_purged_with_their_members(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let bob = app.signed_in("bob@example.com").await;
    let gone = team(&app, &ada.access, "Gone", "gone").await;
    let kept = team(&app, &ada.access, "Kept", "kept").await;
    add_member(&app, &gone, &user_id(&bob), &["member"]).await;
    let ada_in = switch(&app, &ada.access, &gone).await;
    let res = send(
        &app,
        Method::DELETE,
        &format!("/tenants/{gone}"),
        &ada_in.access,
        json!({}),
    )
    .await;
    assert!(res.status.is_success(), "{}", res.text);
    let ctx = tessera::context::RequestContext::system();
    let store = &app.state.store;
    let now = app.clock.now();
    // Deleted just now: a 30-day purge keeps it, a purge of everything deleted removes it.
    assert_eq!(
        tessera::tenants::purge(store, 30 * 86_400, &ctx, now)
            .await
            .unwrap(),
        0
    );
    assert!(
        tessera::store::tenants::find(store.pool(), &gone)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        tessera::tenants::purge(store, 0, &ctx, now + 1)
            .await
            .unwrap(),
        1
    );
    assert!(
        tessera::store::tenants::find(store.pool(), &gone)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        tessera::store::tenants::member_roles(store.pool(), &gone, &user_id(&bob))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        tessera::store::tenants::find(store.pool(), &kept)
            .await
            .unwrap()
            .is_some()
    );
    // The purge is audited; the tenant's own audit entries stay.
    let audited: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'tenant.purge'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(audited, 1);
    let kept_entries: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE tenant_id = $1")
            .bind(&gone)
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(kept_entries > 0);
}
