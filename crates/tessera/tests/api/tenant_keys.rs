//! Tenant API keys (`tsk_…`), IP allow-lists, plans and limits, and introspection of tenant
//! tokens. The service trusts 127.0.0.1 as a proxy here, so `X-Forwarded-For` plays the client.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp, Tokens, assert_error, events_of};
use crate::on_both_backends;
use crate::tenants::{api_key, claims, send, switch, team};

on_both_backends!(
    api_keys_authenticate_hold_to_their_permissions_and_revoke_at_once,
    rotation_keeps_the_old_key_for_the_overlap_only,
    introspection_shows_the_tenant_of_tokens_and_keys,
    allow_lists_refuse_logins_switches_refreshes_and_keys_from_elsewhere,
    plan_limits_are_enforced_and_shown_in_usage,
);

/// A system administrator's access token (`root@example.com`).
pub(crate) async fn system_admin(app: &TestApp) -> String {
    crate::authz::create_admin(app, "root@example.com").await;
    Tokens::from(&app.login("root@example.com", PASSWORD).await.body).access
}

/// A request from `ip` (as the trusted proxy reports it).
async fn from(
    app: &TestApp,
    ip: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> crate::helpers::Response {
    let mut req = app
        .client
        .request(method, format!("{}{path}", app.base))
        .header("x-forwarded-for", ip);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    crate::helpers::Response {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

async fn api_keys_authenticate_hold_to_their_permissions_and_revoke_at_once(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    let ada_in = switch(&app, &ada.access, &acme).await;
    let created = api_key(&app, &ada_in.access, &acme, &["members:read"]).await;
    let key = created["key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    // Recognisable: the prefix, 192 random bits and a checksum (base64url).
    assert!(key.starts_with("tsk_") && key.len() >= 4 + 22 + 6, "{key}");
    assert!(
        key[4..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    );
    assert_eq!(created["permissions"], json!(["members:read"]));

    // It authenticates as itself, with its own permissions only.
    let members = app.get(&format!("/tenants/{acme}/members"), &key).await;
    assert_eq!(members.status, StatusCode::OK, "{}", members.text);
    let keys = app.get(&format!("/tenants/{acme}/api-keys"), &key).await;
    assert_error(&keys, StatusCode::FORBIDDEN, "forbidden");
    // Never a user: not on the account API.
    let me = app.get("/identity/me", &key).await;
    assert_eq!(me.status, StatusCode::FORBIDDEN, "{}", me.text);
    // A changed character breaks the checksum: refused before any look-up.
    let mut bad = key.clone().into_bytes();
    let last = bad.len() - 1;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).unwrap();
    let res = app.get(&format!("/tenants/{acme}/members"), &bad).await;
    assert_error(&res, StatusCode::UNAUTHORIZED, "invalid_token");

    // Listed without the secret, with its last use.
    crate::helpers::eventually(10, "the last use is recorded", || async {
        let list = app
            .get(&format!("/tenants/{acme}/api-keys"), &ada_in.access)
            .await;
        list.body["api_keys"][0]["last_used_at"].is_string()
    })
    .await;
    let list = app
        .get(&format!("/tenants/{acme}/api-keys"), &ada_in.access)
        .await;
    assert!(!list.text.contains(&key), "never the secret: {}", list.text);
    assert_eq!(list.body["api_keys"][0]["last_used_ip"], "127.0.0.1");
    assert!(key.starts_with(list.body["api_keys"][0]["hint"].as_str().unwrap()));

    // A key's permissions are a subset of its creator's, and known in the tenant.
    let bob = app.signed_in("bob@example.com").await;
    crate::tenants::add_member(&app, &acme, &crate::tenants::user_id(&bob), &["admin"]).await;
    let bob_in = switch(&app, &bob.access, &acme).await;
    for (perms, code) in [
        (json!(["tenant:delete"]), StatusCode::FORBIDDEN),
        (
            json!(["invoices:approve"]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!([]), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let res = send(
            &app,
            Method::POST,
            &format!("/tenants/{acme}/api-keys"),
            &bob_in.access,
            json!({"name": "k", "permissions": perms}),
        )
        .await;
        assert_eq!(res.status, code, "{perms}: {}", res.text);
    }
    for body in [
        json!({"name": "k", "permissions": ["tenant:read"], "expires_at": "yesterday"}),
        json!({"name": "k", "permissions": ["tenant:read"], "expires_at": 1}),
        json!({"name": "k", "permissions": ["tenant:read"], "allowed_cidrs": ["10.0.0.0/33"]}),
        json!({"name": "", "permissions": ["tenant:read"]}),
    ] {
        let res = send(
            &app,
            Method::POST,
            &format!("/tenants/{acme}/api-keys"),
            &ada_in.access,
            body.clone(),
        )
        .await;
        assert_eq!(
            res.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            res.text
        );
    }

    // Revoked: refused at the next request.
    let res = send(
        &app,
        Method::DELETE,
        &format!("/tenants/{acme}/api-keys/{id}"),
        &ada_in.access,
        json!({}),
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    let res = app.get(&format!("/tenants/{acme}/members"), &key).await;
    assert_error(&res, StatusCode::UNAUTHORIZED, "invalid_token");
    // Events name the key, never its secret.
    let events = events_of(&app, &acme).await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"identity.tenant.api_key_created.v1"),
        "{types:?}"
    );
    assert!(
        types.contains(&"identity.tenant.api_key_revoked.v1"),
        "{types:?}"
    );
    assert!(!serde_json::to_string(&events).unwrap().contains(&key));

    // A suspended tenant's keys stop at once.
    let other = api_key(&app, &ada_in.access, &acme, &["tenant:read"]).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        app.get(&format!("/tenants/{acme}"), &other).await.status,
        StatusCode::OK
    );
    let root = system_admin(&app).await;
    let res = send(
        &app,
        Method::POST,
        &format!("/tenants/{acme}/suspend"),
        &root,
        json!({}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let res = app.get(&format!("/tenants/{acme}"), &other).await;
    assert_error(&res, StatusCode::UNAUTHORIZED, "invalid_token");
}

async fn rotation_keeps_the_old_key_for_the_overlap_only(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    let ada_in = switch(&app, &ada.access, &acme).await;
    let old = api_key(&app, &ada_in.access, &acme, &["tenant:read"]).await;
    let old_key = old["key"].as_str().unwrap();
    let path = format!(
        "/tenants/{acme}/api-keys/{}/rotate",
        old["id"].as_str().unwrap()
    );
    let res = send(
        &app,
        Method::POST,
        &path,
        &ada_in.access,
        json!({"overlap_seconds": 31 * 86400}),
    )
    .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);
    let res = send(
        &app,
        Method::POST,
        &path,
        &ada_in.access,
        json!({"overlap_seconds": 600}),
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    let new_key = res.body["key"].as_str().unwrap().to_string();
    assert_ne!(new_key, old_key);
    assert_eq!(res.body["permissions"], json!(["tenant:read"]));
    // Both work during the overlap; a rotated key is not rotated twice.
    let tenant = format!("/tenants/{acme}");
    assert_eq!(app.get(&tenant, old_key).await.status, StatusCode::OK);
    assert_eq!(app.get(&tenant, &new_key).await.status, StatusCode::OK);
    let res = send(&app, Method::POST, &path, &ada_in.access, json!({})).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.text);
    // After it, only the new one.
    app.clock.advance(601);
    let res = app.get(&tenant, old_key).await;
    assert_error(&res, StatusCode::UNAUTHORIZED, "invalid_token");
    assert_eq!(app.get(&tenant, &new_key).await.status, StatusCode::OK);
}

pub(crate) async fn introspect(app: &TestApp, id: &str, secret: &str, token: &str) -> Value {
    let res = app
        .client
        .post(format!("{}/oauth2/introspect", app.base))
        .basic_auth(id, Some(secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

async fn introspection_shows_the_tenant_of_tokens_and_keys(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    let ada_in = switch(&app, &ada.access, &acme).await;
    let key = api_key(&app, &ada_in.access, &acme, &["members:read"]).await;
    let secret = key["key"].as_str().unwrap();
    // A resource server allowed to introspect every token.
    let spec = tessera::oauth::clients::ClientSpec {
        name: Some("Resource server".into()),
        grant_types: Some(vec!["client_credentials".into()]),
        may_introspect: Some(true),
        ..Default::default()
    };
    let rs = crate::oauth::create_client(&app, spec).await;
    let (rs_id, rs_secret) = (rs.id.clone(), rs.secret.clone().unwrap());

    let got = introspect(&app, &rs_id, &rs_secret, secret).await;
    assert_eq!(got["active"], true, "{got}");
    assert_eq!(got["token_type"], "api_key");
    assert_eq!(got["tid"], acme.as_str());
    assert_eq!(got["permissions"], json!(["members:read"]));
    assert_eq!(
        got["features"],
        json!(["audit_export"]),
        "a team plan's features"
    );
    let got = introspect(&app, &rs_id, &rs_secret, &ada_in.access).await;
    assert_eq!(got["active"], true, "{got}");
    assert_eq!(got["tid"], acme.as_str());
    assert_eq!(got["tenant_roles"], json!(["owner"]));
    // A client that may not introspect others' tokens learns nothing of a key.
    let plain =
        crate::oauth::register_client(&app, false, &["client_credentials"], &["api.read"]).await;
    let got = introspect(&app, &plain.id, plain.secret.as_deref().unwrap(), secret).await;
    assert_eq!(got, json!({"active": false}));
    // Revoked: inactive at once.
    let res = send(
        &app,
        Method::DELETE,
        &format!("/tenants/{acme}/api-keys/{}", key["id"].as_str().unwrap()),
        &ada_in.access,
        json!({}),
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let got = introspect(&app, &rs_id, &rs_secret, secret).await;
    assert_eq!(got, json!({"active": false}));
}

async fn allow_lists_refuse_logins_switches_refreshes_and_keys_from_elsewhere(b: Backend) {
    // Many logins of one account from a few addresses: the login limits are not under test.
    let app = TestApp::spawn_with(b, |c| {
        c.trusted_proxies = "127.0.0.1".into();
        c.rate_limit.enabled = false;
    })
    .await;
    let root = system_admin(&app).await;
    // A team tenant has no allow-lists (an enterprise feature).
    let ada = app.signed_in("ada@example.com").await;
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    let ada_in = switch(&app, &ada.access, &acme).await;
    let res = send(
        &app,
        Method::PUT,
        &format!("/tenants/{acme}/ip-allowlist"),
        &ada_in.access,
        json!({"allowed_cidrs": ["10.0.0.0/8"]}),
    )
    .await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");

    let res = send(
        &app,
        Method::POST,
        "/tenants",
        &root,
        json!({"name": "Big Corp", "slug": "big", "type": "enterprise"}),
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    let big = res.body["id"].as_str().unwrap().to_string();
    let owner = Tokens::from(
        &from(
            &app,
            "127.0.0.1",
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": "root@example.com", "password": PASSWORD, "tenant": "big"})),
        )
        .await
        .body,
    );
    let list = format!("/tenants/{big}/ip-allowlist");
    // Malformed entries are named; a list that shuts out the caller is refused.
    for bad in [
        json!(["10.0.0.0/33"]),
        json!(["not-an-ip"]),
        json!(["2001:db8::/129"]),
        json!([""]),
        json!("10.0.0.0/8"),
    ] {
        let res = from(
            &app,
            "127.0.0.1",
            Method::PUT,
            &list,
            Some(&owner.access),
            Some(json!({"allowed_cidrs": bad})),
        )
        .await;
        assert_eq!(
            res.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            res.text
        );
        assert_eq!(res.body["error"], "validation_failed", "{}", res.text);
    }
    let res = from(
        &app,
        "127.0.0.1",
        Method::PUT,
        &list,
        Some(&owner.access),
        Some(json!({"allowed_cidrs": ["10.0.0.0/8"]})),
    )
    .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);
    // The office's IPv4 network, one IPv6 host (/128) and an IPv6 network; hosts are truncated
    // to their network.
    let res = from(
        &app,
        "127.0.0.1",
        Method::PUT,
        &list,
        Some(&owner.access),
        Some(json!({"allowed_cidrs": ["127.0.0.1/32", "198.51.100.77/24", "2001:db8::1", "2001:db8:aa::/48"]})),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(
        res.body["allowed_cidrs"],
        json!([
            "127.0.0.1/32",
            "198.51.100.0/24",
            "2001:db8::1/128",
            "2001:db8:aa::/48"
        ])
    );
    let key = api_key(&app, &owner.access, &big, &["tenant:read"]).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let tenant = format!("/tenants/{big}");
    let login = json!({"email": "root@example.com", "password": PASSWORD, "tenant": "big"});
    for (ip, admitted) in [
        ("127.0.0.1", true),
        ("198.51.100.200", true),
        ("::ffff:198.51.100.1", true),
        ("2001:db8::1", true),
        ("2001:db8:aa:ffff::5", true),
        ("198.51.101.1", false),
        ("2001:db8::2", false),
        ("203.0.113.9", false),
    ] {
        let res = from(
            &app,
            ip,
            Method::POST,
            "/auth/login",
            None,
            Some(login.clone()),
        )
        .await;
        let key_res = from(&app, ip, Method::GET, &tenant, Some(&key), None).await;
        let switched = from(
            &app,
            ip,
            Method::POST,
            "/auth/switch-tenant",
            Some(&root),
            Some(json!({"tenant": big})),
        )
        .await;
        // A session in the tenant, opened from the office, refreshed from `ip`.
        let session = from(
            &app,
            "127.0.0.1",
            Method::POST,
            "/auth/login",
            None,
            Some(login.clone()),
        )
        .await;
        let refresh = json!({"refresh_token": session.body["refresh_token"]});
        let refreshed = from(&app, ip, Method::POST, "/auth/refresh", None, Some(refresh)).await;
        for (what, r) in [
            ("login", &res),
            ("key", &key_res),
            ("switch", &switched),
            ("refresh", &refreshed),
        ] {
            if admitted {
                assert_eq!(r.status, StatusCode::OK, "{what} from {ip}: {}", r.text);
            } else {
                assert_eq!(
                    r.status,
                    StatusCode::FORBIDDEN,
                    "{what} from {ip}: {}",
                    r.text
                );
                assert_eq!(
                    r.body["error"], "ip_not_allowed",
                    "{what} from {ip}: {}",
                    r.text
                );
            }
        }
    }
    // Without a tenant asked for, a login from elsewhere falls back to the personal tenant.
    let res = from(
        &app,
        "203.0.113.9",
        Method::POST,
        "/auth/login",
        None,
        Some(json!({"email": "root@example.com", "password": PASSWORD})),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_ne!(
        claims(res.body["access_token"].as_str().unwrap())["tid"],
        big.as_str()
    );
    // A key's own CIDRs narrow the tenant's.
    let narrow = send(
        &app,
        Method::POST,
        &format!("/tenants/{big}/api-keys"),
        &owner.access,
        json!({"name": "office only", "permissions": ["tenant:read"], "allowed_cidrs": ["198.51.100.0/25"]}),
    )
    .await;
    assert_eq!(narrow.status, StatusCode::CREATED, "{}", narrow.text);
    let narrow = narrow.body["key"].as_str().unwrap();
    assert_eq!(
        from(
            &app,
            "198.51.100.1",
            Method::GET,
            &tenant,
            Some(narrow),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    let res = from(
        &app,
        "198.51.100.200",
        Method::GET,
        &tenant,
        Some(narrow),
        None,
    )
    .await;
    assert_error(&res, StatusCode::FORBIDDEN, "ip_not_allowed");
    // An empty list admits everyone again; /0 nets too.
    let res = from(
        &app,
        "127.0.0.1",
        Method::PUT,
        &list,
        Some(&owner.access),
        Some(json!({"allowed_cidrs": ["0.0.0.0/0", "::/0"]})),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(
        from(&app, "203.0.113.9", Method::GET, &tenant, Some(&key), None)
            .await
            .status,
        StatusCode::OK
    );
}

async fn plan_limits_are_enforced_and_shown_in_usage(b: Backend) {
    let app = TestApp::spawn(b).await;
    let root = system_admin(&app).await;
    let ada = app.signed_in("ada@example.com").await;
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    let ada_in = switch(&app, &ada.access, &acme).await;
    let plan = format!("/tenants/{acme}/plan");
    // Only a system administrator changes a plan; bad overrides are a clear 422.
    let res = send(
        &app,
        Method::PATCH,
        &plan,
        &ada_in.access,
        json!({"limits": {"max_api_keys": 1000}}),
    )
    .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.text);
    for bad in [
        json!({"limits": {"max_api_keys": -1}}),
        json!({"limits": {"nope": 1}}),
        json!({"features": ["Not A Feature!"]}),
    ] {
        let res = send(&app, Method::PATCH, &plan, &root, bad.clone()).await;
        assert_eq!(
            res.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            res.text
        );
    }
    let res = send(
        &app,
        Method::PATCH,
        &plan,
        &root,
        json!({"limits": {"max_api_keys": 1, "api_key_requests_per_minute": 3}, "features": ["sso"]}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let key = api_key(&app, &ada_in.access, &acme, &["tenant:read"]).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let res = send(
        &app,
        Method::POST,
        &format!("/tenants/{acme}/api-keys"),
        &ada_in.access,
        json!({"name": "second", "permissions": ["tenant:read"]}),
    )
    .await;
    assert_error(&res, StatusCode::CONFLICT, "limit_reached");
    let usage = app
        .get(&format!("/tenants/{acme}/usage"), &ada_in.access)
        .await;
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.text);
    assert_eq!(usage.body["api_keys"], json!({"used": 1, "limit": 1}));
    assert_eq!(usage.body["members"], json!({"used": 1, "limit": 100}));
    assert_eq!(usage.body["api_key_requests_per_minute"], 3);
    assert_eq!(usage.body["features"], json!(["sso"]));
    // The tenant's keys share its per-minute budget, through the shared limiter.
    let tenant = format!("/tenants/{acme}");
    for _ in 0..3 {
        assert_eq!(app.get(&tenant, &key).await.status, StatusCode::OK);
    }
    let res = app.get(&tenant, &key).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{}", res.text);
    assert!(res.headers.contains_key("retry-after"));
    app.clock.advance(61);
    assert_eq!(app.get(&tenant, &key).await.status, StatusCode::OK);
}
