//! Tenants: personal tenants at registration, team tenants, switching, members and roles,
//! last-owner protection, suspension, and the tenant-isolation matrix generated from the router.

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp, Tokens, assert_error, event_types_of, events_of};
use crate::on_both_backends;

on_both_backends!(
    registration_creates_a_personal_tenant_and_tokens_carry_it,
    team_tenants_are_created_switched_into_and_renamed,
    a_token_for_one_tenant_is_not_a_token_for_another,
    removing_a_member_or_lowering_roles_takes_effect_at_the_next_request,
    a_tenant_keeps_an_owner_and_nobody_grants_more_than_they_hold,
    suspension_stops_every_token_of_the_tenant_at_once,
    login_picks_the_requested_then_the_last_then_the_personal_tenant,
    every_tenant_route_refuses_other_tenants_and_insufficient_roles,
);

pub(crate) fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

pub(crate) async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Value,
) -> crate::helpers::Response {
    app.request(method, path, Some(token), Some(body)).await
}

/// Creates a team tenant as `owner`; returns its id.
pub(crate) async fn team(app: &TestApp, owner: &str, name: &str, slug: &str) -> String {
    let res = send(
        app,
        Method::POST,
        "/tenants",
        owner,
        json!({"name": name, "slug": slug}),
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    res.body["id"].as_str().unwrap().to_string()
}

/// A token pair for `tenant`.
pub(crate) async fn switch(app: &TestApp, token: &str, tenant: &str) -> Tokens {
    let res = send(
        app,
        Method::POST,
        "/auth/switch-tenant",
        token,
        json!({"tenant": tenant}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    Tokens::from(&res.body)
}

/// Adds `user_id` to `tenant` with `roles`, as an accepted invitation would.
pub(crate) async fn add_member(app: &TestApp, tenant: &str, user_id: &str, roles: &[&str]) {
    let mut tx = app.state.store.begin().await.unwrap();
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    tessera::store::tenants::add_member(&mut tx, tenant, user_id, &roles, 1)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    app.state
        .tenants
        .forget_member(&format!("{tenant}:{user_id}"));
}

pub(crate) fn user_id(tokens: &Tokens) -> String {
    claims(&tokens.access)["sub"].as_str().unwrap().to_string()
}

async fn registration_creates_a_personal_tenant_and_tokens_carry_it(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let c = claims(&ada.access);
    let tid = c["tid"].as_str().expect("tid").to_string();
    assert_eq!(c["tenant_roles"], json!(["owner"]));
    let mine = app.get("/tenants", &ada.access).await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.text);
    let list = mine.body["tenants"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{}", mine.text);
    assert_eq!(list[0]["id"], tid.as_str());
    assert_eq!(list[0]["type"], "personal");
    assert_eq!(list[0]["status"], "active");
    assert_eq!(list[0]["roles"], json!(["owner"]));
    // The event names the tenant in its envelope.
    let created = events_of(&app, &tid).await;
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0]["event_type"], "identity.tenant.created.v1");
    assert_eq!(created[0]["tenant_id"], tid.as_str());
    // The refreshed token keeps the tenant.
    let refreshed = Tokens::from(&app.refresh(&ada.refresh).await.body);
    assert_eq!(claims(&refreshed.access)["tid"], tid.as_str());
    // Nobody deletes a personal tenant or makes a second one.
    let res = send(
        &app,
        Method::DELETE,
        &format!("/tenants/{tid}"),
        &ada.access,
        json!({}),
    )
    .await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
    let res = send(
        &app,
        Method::POST,
        "/tenants",
        &ada.access,
        json!({"name": "x", "type": "personal"}),
    )
    .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);
}

async fn team_tenants_are_created_switched_into_and_renamed(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let res = send(
        &app,
        Method::POST,
        "/tenants",
        &ada.access,
        json!({"name": "Acme Rockets"}),
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    assert_eq!(res.body["slug"], "acme-rockets");
    assert_eq!(res.body["type"], "team");
    assert_eq!(res.body["roles"], json!(["owner"]));
    let acme = res.body["id"].as_str().unwrap().to_string();
    // Same slug again; bad slugs; enterprise is for system administrators.
    let res = send(
        &app,
        Method::POST,
        "/tenants",
        &ada.access,
        json!({"name": "Other", "slug": "acme-rockets"}),
    )
    .await;
    assert_error(&res, StatusCode::CONFLICT, "slug_taken");
    for slug in ["A", "-x-", "no spaces", "ab"] {
        let res = send(
            &app,
            Method::POST,
            "/tenants",
            &ada.access,
            json!({"name": "Other", "slug": slug}),
        )
        .await;
        assert_eq!(
            res.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{slug}: {}",
            res.text
        );
    }
    let res = send(
        &app,
        Method::POST,
        "/tenants",
        &ada.access,
        json!({"name": "Big", "type": "enterprise"}),
    )
    .await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
    let res = send(
        &app,
        Method::POST,
        "/tenants",
        &ada.access,
        json!({"name": "Big", "type": "galactic"}),
    )
    .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);

    // Switching by slug gives tokens for the team; the listing shows both tenants.
    let in_acme = switch(&app, &ada.access, "acme-rockets").await;
    assert_eq!(claims(&in_acme.access)["tid"], acme.as_str());
    let got = app.get(&format!("/tenants/{acme}"), &in_acme.access).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
    assert_eq!(got.body["name"], "Acme Rockets");
    let res = send(
        &app,
        Method::PATCH,
        &format!("/tenants/{acme}"),
        &in_acme.access,
        json!({"name": "Acme", "slug": "acme"}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body["slug"], "acme");
    let mine = app.get("/tenants", &ada.access).await;
    assert_eq!(
        mine.body["tenants"].as_array().unwrap().len(),
        2,
        "{}",
        mine.text
    );
    let audit: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT action, tenant_id FROM audit_log WHERE action LIKE 'tenant.%' ORDER BY id",
    )
    .fetch_all(app.state.store.pool())
    .await
    .unwrap();
    let actions: Vec<&str> = audit.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["tenant.create", "tenant.switch", "tenant.update"]);
    assert!(
        audit
            .iter()
            .all(|(_, t)| t.as_deref() == Some(acme.as_str())),
        "{audit:?}"
    );
    // Deleting the team: its tokens stop at once, the listing forgets it.
    let res = send(
        &app,
        Method::DELETE,
        &format!("/tenants/{acme}"),
        &in_acme.access,
        json!({}),
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert_error(
        &app.get("/identity/me", &in_acme.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    let mine = app.get("/tenants", &ada.access).await;
    assert_eq!(
        mine.body["tenants"].as_array().unwrap().len(),
        1,
        "{}",
        mine.text
    );
    let types = event_types_of(&app, &acme).await;
    assert_eq!(
        types,
        ["identity.tenant.created.v1", "identity.tenant.deleted.v1"]
    );
}

async fn a_token_for_one_tenant_is_not_a_token_for_another(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let personal = claims(&ada.access)["tid"].as_str().unwrap().to_string();
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    // Ada owns both, but her personal token does not act in Acme.
    let res = app
        .get(&format!("/tenants/{acme}/members"), &ada.access)
        .await;
    assert_error(&res, StatusCode::FORBIDDEN, "tenant_mismatch");
    let in_acme = switch(&app, &ada.access, &acme).await;
    let res = app
        .get(&format!("/tenants/{personal}"), &in_acme.access)
        .await;
    assert_error(&res, StatusCode::FORBIDDEN, "tenant_mismatch");
    // Someone else's tenant does not exist for her, whatever her token; nor can she switch in.
    let bob = app.signed_in("bob@example.com").await;
    let bobs = claims(&bob.access)["tid"].as_str().unwrap().to_string();
    assert_error(
        &app.get(&format!("/tenants/{bobs}"), &ada.access).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let res = send(
        &app,
        Method::POST,
        "/auth/switch-tenant",
        &ada.access,
        json!({"tenant": bobs}),
    )
    .await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
    let res = send(
        &app,
        Method::POST,
        "/auth/switch-tenant",
        &ada.access,
        json!({"tenant": "no-such-tenant"}),
    )
    .await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
    // The switch keeps the old session: both tokens work, each for its own tenant.
    assert_eq!(
        app.get("/identity/me", &ada.access).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/identity/me", &in_acme.access).await.status,
        StatusCode::OK
    );
}

async fn removing_a_member_or_lowering_roles_takes_effect_at_the_next_request(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    let ada = switch(&app, &ada.access, &acme).await;
    let bob = app.signed_in("bob@example.com").await;
    add_member(&app, &acme, &user_id(&bob), &["admin"]).await;
    let bob = switch(&app, &bob.access, &acme).await;
    assert_eq!(claims(&bob.access)["tenant_roles"], json!(["admin"]));
    let members = app
        .get(&format!("/tenants/{acme}/members"), &bob.access)
        .await;
    assert_eq!(members.status, StatusCode::OK, "{}", members.text);
    assert_eq!(members.body["members"].as_array().unwrap().len(), 2);

    // Lowered to viewer: the same token can no longer list members.
    let path = format!("/tenants/{acme}/members/{}", user_id(&bob));
    let res = send(
        &app,
        Method::PATCH,
        &path,
        &ada.access,
        json!({"roles": ["viewer"]}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body["roles"], json!(["viewer"]));
    let res = app
        .get(&format!("/tenants/{acme}/members"), &bob.access)
        .await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(
        app.get(&format!("/tenants/{acme}"), &bob.access)
            .await
            .status,
        StatusCode::OK
    );
    // A refresh carries the roles held now.
    let refreshed = Tokens::from(&app.refresh(&bob.refresh).await.body);
    assert_eq!(claims(&refreshed.access)["tenant_roles"], json!(["viewer"]));

    // Removed: the token and the refresh token stop working.
    let res = send(&app, Method::DELETE, &path, &ada.access, json!({})).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert_error(
        &app.get("/identity/me", &refreshed.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    assert_error(
        &app.refresh(&refreshed.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    );
    let types = event_types_of(&app, &acme).await;
    assert!(
        types.contains(&"identity.tenant.member_roles_changed.v1".to_string()),
        "{types:?}"
    );
    assert!(
        types.contains(&"identity.tenant.member_removed.v1".to_string()),
        "{types:?}"
    );
}

async fn a_tenant_keeps_an_owner_and_nobody_grants_more_than_they_hold(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    let ada = switch(&app, &ada.access, &acme).await;
    let ada_path = format!("/tenants/{acme}/members/{}", user_id(&ada));
    // The only owner cannot step down or leave.
    let res = send(
        &app,
        Method::PATCH,
        &ada_path,
        &ada.access,
        json!({"roles": ["admin"]}),
    )
    .await;
    assert_error(&res, StatusCode::CONFLICT, "last_owner");
    let res = send(&app, Method::DELETE, &ada_path, &ada.access, json!({})).await;
    assert_error(&res, StatusCode::CONFLICT, "last_owner");

    let bob = app.signed_in("bob@example.com").await;
    add_member(&app, &acme, &user_id(&bob), &["admin"]).await;
    let bob = switch(&app, &bob.access, &acme).await;
    let bob_path = format!("/tenants/{acme}/members/{}", user_id(&bob));
    // An admin cannot make themselves owner, nor demote or remove the owner.
    let res = send(
        &app,
        Method::PATCH,
        &bob_path,
        &bob.access,
        json!({"roles": ["owner"]}),
    )
    .await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
    let res = send(
        &app,
        Method::PATCH,
        &ada_path,
        &bob.access,
        json!({"roles": ["viewer"]}),
    )
    .await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
    let res = send(&app, Method::DELETE, &ada_path, &bob.access, json!({})).await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
    // Unknown and empty role lists are refused by name.
    let res = send(
        &app,
        Method::PATCH,
        &bob_path,
        &ada.access,
        json!({"roles": ["wizard"]}),
    )
    .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);
    let res = send(
        &app,
        Method::PATCH,
        &bob_path,
        &ada.access,
        json!({"roles": []}),
    )
    .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);
    // With a second owner, the first may step down; then the last may not.
    let res = send(
        &app,
        Method::PATCH,
        &bob_path,
        &ada.access,
        json!({"roles": ["owner"]}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let res = send(
        &app,
        Method::PATCH,
        &ada_path,
        &ada.access,
        json!({"roles": ["member"]}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let res = send(&app, Method::DELETE, &bob_path, &bob.access, json!({})).await;
    assert_error(&res, StatusCode::CONFLICT, "last_owner");
    // A member may leave.
    let res = send(&app, Method::DELETE, &ada_path, &ada.access, json!({})).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
}

async fn suspension_stops_every_token_of_the_tenant_at_once(b: Backend) {
    let app = TestApp::spawn(b).await;
    crate::authz::create_admin(&app, "root@example.com").await;
    let root = Tokens::from(&app.login("root@example.com", PASSWORD).await.body);
    let ada = app.signed_in("ada@example.com").await;
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    let in_acme = switch(&app, &ada.access, &acme).await;
    // Only a system administrator suspends.
    let res = send(
        &app,
        Method::POST,
        &format!("/tenants/{acme}/suspend"),
        &in_acme.access,
        json!({}),
    )
    .await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
    let res = send(
        &app,
        Method::POST,
        &format!("/tenants/{acme}/suspend"),
        &root.access,
        json!({}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body["status"], "suspended");
    assert_error(
        &app.get("/identity/me", &in_acme.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    assert_error(
        &app.refresh(&in_acme.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    );
    let res = send(
        &app,
        Method::POST,
        "/auth/switch-tenant",
        &ada.access,
        json!({"tenant": acme}),
    )
    .await;
    assert_error(&res, StatusCode::FORBIDDEN, "tenant_suspended");
    let res = app
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": PASSWORD, "tenant": "acme"}),
        )
        .await;
    assert_error(&res, StatusCode::FORBIDDEN, "tenant_suspended");
    // Her personal tenant's token is unaffected.
    assert_eq!(
        app.get("/identity/me", &ada.access).await.status,
        StatusCode::OK
    );
    let res = send(
        &app,
        Method::POST,
        &format!("/tenants/{acme}/reactivate"),
        &root.access,
        json!({}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let again = switch(&app, &ada.access, &acme).await;
    assert_eq!(
        app.get("/identity/me", &again.access).await.status,
        StatusCode::OK
    );
    let types = event_types_of(&app, &acme).await;
    assert!(
        types.contains(&"identity.tenant.suspended.v1".to_string()),
        "{types:?}"
    );
}

async fn login_picks_the_requested_then_the_last_then_the_personal_tenant(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let personal = claims(&ada.access)["tid"].as_str().unwrap().to_string();
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    let login = |tenant: Option<&str>| {
        let mut body = json!({"email": "ada@example.com", "password": PASSWORD});
        if let Some(t) = tenant {
            body["tenant"] = t.into();
        }
        app.post("/auth/login", body)
    };
    let res = login(Some("acme")).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(
        claims(res.body["access_token"].as_str().unwrap())["tid"],
        acme.as_str()
    );
    // Without one: the last used.
    let res = login(None).await;
    assert_eq!(
        claims(res.body["access_token"].as_str().unwrap())["tid"],
        acme.as_str()
    );
    // The last one gone: the personal tenant.
    let in_acme = switch(&app, &ada.access, &acme).await;
    send(
        &app,
        Method::DELETE,
        &format!("/tenants/{acme}"),
        &in_acme.access,
        json!({}),
    )
    .await;
    let res = login(None).await;
    assert_eq!(
        claims(res.body["access_token"].as_str().unwrap())["tid"],
        personal.as_str()
    );
    // A tenant she is not in: refused after the password check, saying so.
    let res = login(Some("acme")).await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
}

/// Every route under `/tenants/{id}`, from the router, with every method it answers.
async fn tenant_routes(app: &TestApp) -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for path in tessera::http::paths() {
        if !path.starts_with("/tenants/{id}") {
            continue;
        }
        let concrete = concrete(&path, "00000000-0000-7000-8000-000000000000", "x");
        let res = app
            .client
            .request(
                Method::from_bytes(b"PROPFIND").unwrap(),
                format!("{}{concrete}", app.base),
            )
            .send()
            .await
            .unwrap();
        let allow = res.headers()["allow"].to_str().unwrap().to_string();
        for m in allow
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty() && *m != "HEAD")
        {
            out.push((Method::from_bytes(m.as_bytes()).unwrap(), path.clone()));
        }
    }
    assert!(out.len() >= 7, "{out:?}");
    out
}

fn concrete(path: &str, tenant: &str, user: &str) -> String {
    path.replace("{id}", tenant)
        .replace("{user_id}", user)
        .replace("{invitation_id}", "00000000-0000-7000-8000-00000000000a")
        .replace("{key_id}", "00000000-0000-7000-8000-00000000000b")
        .replace("{name}", "auditor")
        .replace("{domain}", "b.example")
}

/// What a tenant route needs: a tenant permission, or a system administrator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Needs {
    Tenant(&'static str),
    System,
}

/// The documented permission of every tenant route (docs/tenants.md). A route the router has and
/// this table lacks fails the test until it is classified.
fn needs(method: &Method, path: &str) -> Needs {
    use Needs::*;
    match (method.as_str(), path.trim_start_matches("/tenants/{id}")) {
        ("GET", "") => Tenant("tenant:read"),
        ("PATCH", "") => Tenant("tenant:manage"),
        ("DELETE", "") => Tenant("tenant:delete"),
        ("POST", "/suspend" | "/reactivate" | "/domains/{domain}/verify") | ("PATCH", "/plan") => {
            System
        }
        ("GET", "/members") => Tenant("members:read"),
        ("PATCH" | "DELETE", "/members/{user_id}") => Tenant("members:manage"),
        ("GET" | "POST", "/invitations") | ("DELETE", "/invitations/{invitation_id}") => {
            Tenant("members:invite")
        }
        (
            "GET",
            "/roles" | "/permissions" | "/ip-allowlist" | "/mfa-policy" | "/plan" | "/usage"
            | "/domains",
        ) => Tenant("tenant:read"),
        ("POST", "/domains")
        | ("DELETE", "/domains/{domain}")
        | ("PUT", "/domains/{domain}/sign-in") => Tenant("tenant:manage"),
        ("PUT" | "DELETE", "/roles/{name}") | ("POST", "/permissions") => Tenant("roles:manage"),
        ("GET" | "POST", "/api-keys")
        | ("DELETE", "/api-keys/{key_id}")
        | ("POST", "/api-keys/{key_id}/rotate") => Tenant("api_keys:manage"),
        ("PUT", "/ip-allowlist" | "/mfa-policy") => Tenant("tenant:manage"),
        ("GET", "/audit") => Tenant("audit:read"),
        _ => panic!(
            "{method} {path} is not in the tenant matrix: add its permission to `needs` in tests/api/tenants.rs"
        ),
    }
}

/// A valid body for the route, so that only authorization can refuse it.
fn body_for(method: &Method, path: &str) -> Value {
    match (method.as_str(), path.trim_start_matches("/tenants/{id}")) {
        (_, "/members/{user_id}") => json!({"roles": ["viewer"]}),
        ("PATCH", "") => json!({"name": "renamed"}),
        ("POST", "/invitations") => json!({"email": "new@example.com", "roles": ["viewer"]}),
        ("PUT", "/roles/{name}") => json!({"permissions": ["tenant:read"]}),
        ("POST", "/permissions") => json!({"name": "invoices:approve"}),
        ("POST", "/api-keys") => json!({"name": "k", "permissions": ["tenant:read"]}),
        ("PUT", "/ip-allowlist") => json!({"allowed_cidrs": ["0.0.0.0/0", "::/0"]}),
        ("PUT", "/mfa-policy") => json!({"required": false}),
        ("PATCH", "/plan") => json!({"limits": {"max_members": 5}}),
        ("POST", "/domains") => json!({"domain": "b.example"}),
        ("PUT", "/domains/{domain}/sign-in") => json!({"idp": null}),
        _ => json!({}),
    }
}

/// Creates an API key in `tenant` with `permissions`; returns the secret.
pub(crate) async fn api_key(
    app: &TestApp,
    token: &str,
    tenant: &str,
    permissions: &[&str],
) -> Value {
    let res = send(
        app,
        Method::POST,
        &format!("/tenants/{tenant}/api-keys"),
        token,
        json!({"name": "test key", "permissions": permissions}),
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    res.body
}

async fn every_tenant_route_refuses_other_tenants_and_insufficient_roles(b: Backend) {
    let app = TestApp::spawn(b).await;
    crate::authz::create_admin(&app, "root@example.com").await;
    let ada = app.signed_in("ada@example.com").await;
    let a = team(&app, &ada.access, "Tenant A", "tenant-a").await;
    let ada_in_a = switch(&app, &ada.access, &a).await;
    // A's key with every permission its owner holds.
    let every = [
        "tenant:read",
        "tenant:manage",
        "tenant:delete",
        "members:read",
        "members:invite",
        "members:manage",
        "roles:manage",
        "api_keys:manage",
        "audit:read",
    ];
    let key_of_a = api_key(&app, &ada_in_a.access, &a, &every).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    // The same key exchanged for a JWT (RFC 8693) acts as the key.
    let jwt_of_a = crate::token_exchange::jwt_for_key(&app, &key_of_a).await;
    let bob = app.signed_in("bob@example.com").await;
    let b_id = team(&app, &bob.access, "Tenant B", "tenant-b").await;
    let bob_in_b = switch(&app, &bob.access, &b_id).await;
    let bob_id = user_id(&bob);
    // A key of B that may only read the tenant: it is held to that, like a viewer.
    let reader_key_of_b = api_key(&app, &bob_in_b.access, &b_id, &["tenant:read"]).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let reader_jwt_of_b = crate::token_exchange::jwt_for_key(&app, &reader_key_of_b).await;
    // Vic is a viewer in B.
    let vic = app.signed_in("vic@example.com").await;
    add_member(&app, &b_id, &user_id(&vic), &["viewer"]).await;
    let vic_in_b = switch(&app, &vic.access, &b_id).await;

    let mut failures = Vec::new();
    let mut cells = 0;
    let mut check =
        |what: &str, method: &Method, path: &str, res: &crate::helpers::Response, ok: bool| {
            cells += 1;
            if !ok || res.status.is_server_error() {
                failures.push(format!(
                    "{method} {path} as {what}: {} {}",
                    res.status, res.text
                ));
            }
        };
    for (method, path) in tenant_routes(&app).await {
        let path = path.as_str();
        let needs = needs(&method, path);
        let system_only = needs == Needs::System;
        let target = concrete(path, &b_id, &bob_id);
        let body = body_for(&method, path);
        let outsider = if system_only {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::NOT_FOUND
        };
        // A user of tenant A, with a token for A: tenant B does not exist for them.
        let res = send(
            &app,
            method.clone(),
            &target,
            &ada_in_a.access,
            body.clone(),
        )
        .await;
        check("a member of A", &method, path, &res, res.status == outsider);
        // A's API key, whatever it holds, and its exchanged JWT: the same.
        for (what, token) in [
            ("an API key of A", &key_of_a),
            ("A's key as a JWT", &jwt_of_a),
        ] {
            let res = send(&app, method.clone(), &target, token, body.clone()).await;
            check(what, &method, path, &res, res.status == outsider);
        }
        // B's own owner with a token for another tenant (their personal one): tenant_mismatch.
        if !system_only {
            let res = send(&app, method.clone(), &target, &bob.access, body.clone()).await;
            let ok = res.status == StatusCode::FORBIDDEN && res.body["error"] == "tenant_mismatch";
            check("B's owner with a personal token", &method, path, &res, ok);
        }
        // A viewer of B, and B's reading key: only what tenant:read allows.
        let may = needs == Needs::Tenant("tenant:read");
        for (what, token) in [
            ("a viewer of B", &vic_in_b.access),
            ("B's tenant:read key", &reader_key_of_b),
            ("B's tenant:read key as a JWT", &reader_jwt_of_b),
        ] {
            let res = send(&app, method.clone(), &target, token, body.clone()).await;
            let refused = res.status == StatusCode::FORBIDDEN;
            check(what, &method, path, &res, may != refused);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(cells >= 20, "{cells}");
    // Nothing changed in B.
    let got = app.get(&format!("/tenants/{b_id}"), &bob_in_b.access).await;
    assert_eq!(got.body["name"], "Tenant B", "{}", got.text);
    assert_eq!(got.body["status"], "active");
}
