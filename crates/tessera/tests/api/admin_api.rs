//! The HTTP admin API next to the CLI: users (create, search with cursor paging, read,
//! change, deactivate and reactivate, erasure, sessions), signing keys, webhooks and parked
//! events. Each action is audited with the administrator as its actor.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::authz::create_admin;
use crate::helpers::{Backend, PASSWORD, TestApp, Tokens, assert_error, event_types_of};
use crate::on_both_backends;

on_both_backends!(
    users_are_created_searched_page_by_page_and_changed,
    the_last_administrator_cannot_be_demoted_deactivated_or_erased,
    two_administrators_demoted_or_deactivated_at_once_leave_one,
    erasure_removes_the_account_and_leaves_a_pseudonym_in_the_audit_log,
    an_administrator_lists_and_ends_a_users_sessions_and_reactivates_them,
    signing_keys_are_listed_rotated_and_revoked_over_http,
    webhooks_are_managed_and_tested_over_http,
);

async fn admin(app: &TestApp) -> String {
    create_admin(app, "root@example.com").await;
    Tokens::from(&app.login("root@example.com", PASSWORD).await.body).access
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> crate::helpers::Response {
    app.request(method, path, Some(token), body).await
}

/// The audit entries of `action`, oldest first.
async fn audit_of(app: &TestApp, token: &str, action: &str) -> Vec<Value> {
    let res = app
        .get(&format!("/admin/audit?action={action}&limit=500"), token)
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    res.body["entries"].as_array().unwrap().clone()
}

async fn users_are_created_searched_page_by_page_and_changed(b: Backend) {
    let app = TestApp::spawn(b).await;
    let root = admin(&app).await;
    let root_id = app.get("/identity/me", &root).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Create: validation, unknown role, duplicate, then five users.
    let res = call(
        &app,
        Method::POST,
        "/admin/users",
        &root,
        Some(json!({"email": "nope"})),
    )
    .await;
    assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let res = call(
        &app,
        Method::POST,
        "/admin/users",
        &root,
        Some(json!({"email": "x@example.com", "roles": ["superuser"]})),
    )
    .await;
    assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert!(res.text.contains("known roles: admin"), "{}", res.text);
    let res = call(
        &app,
        Method::POST,
        "/admin/users",
        &root,
        Some(json!({"email": "x@example.com", "password": "short"})),
    )
    .await;
    assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert!(
        !res.text.contains("short"),
        "no password echoed: {}",
        res.text
    );
    let mut ids = Vec::new();
    for (i, email) in [
        "ann@corp.example",
        "bob@corp.example",
        "cy@corp.example",
        "dee@other.example",
        "ed_x@corp.example",
    ]
    .iter()
    .enumerate()
    {
        let body = if i == 0 {
            json!({"email": email, "password": PASSWORD, "email_verified": true, "display_name": "Ann"})
        } else {
            json!({"email": email})
        };
        let res = call(&app, Method::POST, "/admin/users", &root, Some(body)).await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
        assert_eq!(res.body["email"], *email);
        assert_eq!(res.body["email_verified"], i == 0);
        assert!(res.body.get("password_hash").is_none() && !res.text.contains("argon2"));
        ids.push(res.body["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        res_status(&app.login("ann@corp.example", PASSWORD).await),
        StatusCode::OK
    );
    let res = call(
        &app,
        Method::POST,
        "/admin/users",
        &root,
        Some(json!({"email": "ANN@corp.example"})),
    )
    .await;
    assert_error(&res, StatusCode::CONFLICT, "email_taken");

    // Search by prefix, paging two at a time: every match once, in id order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = "/admin/users?limit=2".to_string();
        if let Some(c) = &cursor {
            url.push_str(&format!("&after={c}"));
        }
        let res = app.get(&url, &root).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        let page = res.body["users"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|u| u["id"].as_str().unwrap().to_string()));
        match res.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut all = ids.clone();
    all.push(root_id.clone());
    all.sort();
    assert_eq!(seen, all, "every user exactly once, in id order");
    let emails = |res: &crate::helpers::Response| -> Vec<String> {
        res.body["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["email"].as_str().unwrap().to_string())
            .collect()
    };
    let res = app.get("/admin/users?email=B", &root).await;
    assert_eq!(emails(&res), vec!["bob@corp.example"]);
    // `_` is a literal, not a LIKE wildcard.
    let res = app.get("/admin/users?email=ed_", &root).await;
    assert_eq!(emails(&res), vec!["ed_x@corp.example"]);
    let res = app.get("/admin/users?email=e_", &root).await;
    assert!(emails(&res).is_empty(), "{}", res.text);
    let res = app.get("/admin/users?role=admin", &root).await;
    assert_eq!(emails(&res), vec!["root@example.com"]);
    for bad in [
        "status=gone",
        "role=superuser",
        "limit=0",
        "limit=201",
        "after=%00",
    ] {
        let res = app.get(&format!("/admin/users?{bad}"), &root).await;
        assert_eq!(
            res.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            res.text
        );
    }

    // Change: email (unverified again), profile, roles; one audit entry and one event.
    let bob = &ids[1];
    let res = call(
        &app,
        Method::PATCH,
        &format!("/admin/users/{bob}"),
        &root,
        Some(json!({"email": "robert@corp.example", "roles": ["admin"], "profile": {"given_name": "Robert", "locale": "en-GB"}})),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body["email"], "robert@corp.example");
    assert_eq!(res.body["roles"], json!(["admin"]));
    assert_eq!(res.body["profile"]["given_name"], "Robert");
    let res = call(
        &app,
        Method::PATCH,
        &format!("/admin/users/{bob}"),
        &root,
        Some(json!({"email": "ann@corp.example"})),
    )
    .await;
    assert_error(&res, StatusCode::CONFLICT, "email_taken");
    let res = call(
        &app,
        Method::PATCH,
        &format!("/admin/users/{bob}"),
        &root,
        Some(json!({"email_verified": true, "password": "x"})),
    )
    .await;
    assert_eq!(
        res.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown field: {}",
        res.text
    );
    let res = call(
        &app,
        Method::PATCH,
        &format!("/admin/users/{bob}"),
        &root,
        Some(json!({"email_verified": true})),
    )
    .await;
    assert_eq!(res.body["email_verified"], true, "{}", res.text);
    let res = app.get(&format!("/admin/users/{bob}"), &root).await;
    assert_eq!(res.body["email"], "robert@corp.example");
    assert_eq!(res.body["profile"]["locale"], "en-GB");
    let updates = audit_of(&app, &root, "user.update").await;
    assert_eq!(updates.len(), 2, "{updates:?}");
    assert_eq!(updates[0]["actor_id"], root_id.as_str());
    assert_eq!(updates[0]["target_id"], bob.as_str());
    assert_eq!(updates[0]["reason"], "email,roles,profile");
    let types = event_types_of(&app, bob).await;
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "identity.user.updated.v1")
            .count(),
        2,
        "{types:?}"
    );
    let creates = audit_of(&app, &root, "user.create").await;
    assert!(
        creates
            .iter()
            .filter(|e| e["actor_id"] == root_id.as_str())
            .count()
            == 5
    );
    let res = app
        .get("/admin/users/00000000-0000-7000-8000-00000000dead", &root)
        .await;
    assert_error(&res, StatusCode::NOT_FOUND, "not_found");
}

/// Two demotions at once, each of which alone would be fine, must not both succeed: each
/// counts the other administrator, so they are serialised (an advisory lock on PostgreSQL).
async fn two_administrators_demoted_or_deactivated_at_once_leave_one(b: Backend) {
    let app = TestApp::spawn(b).await;
    let root = admin(&app).await;
    create_admin(&app, "second@example.com").await;
    let id_of = |token: String| {
        let app = &app;
        async move {
            app.get("/identity/me", &token).await.body["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let root_id = id_of(root.clone()).await;
    let second = Tokens::from(&app.login("second@example.com", PASSWORD).await.body).access;
    let second_id = id_of(second).await;
    // Demoted, then (with both administrators again) deactivated, each pair at once.
    let demote = |id: String| {
        (
            format!("/admin/users/{id}"),
            Method::PATCH,
            Some(json!({"roles": []})),
        )
    };
    both_at_once_leave_one_admin(&app, &root, [&root_id, &second_id], demote).await;
    let mut tx = app.state.store.begin().await.unwrap();
    for id in [&root_id, &second_id] {
        tessera::store::roles::set(&mut tx, id, &[tessera::authz::Role::Admin], 1)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let root = Tokens::from(&app.login("root@example.com", PASSWORD).await.body).access;
    let deactivate = |id: String| (format!("/admin/users/{id}/deactivate"), Method::POST, None);
    both_at_once_leave_one_admin(&app, &root, [&root_id, &second_id], deactivate).await;
}

/// Runs `change` on both users at once as `root`: one administrator must remain, and one of
/// the two changes must have gone through.
async fn both_at_once_leave_one_admin(
    app: &TestApp,
    root: &str,
    ids: [&String; 2],
    change: impl Fn(String) -> (String, Method, Option<Value>),
) {
    let run = |id: &String| {
        let (path, method, body) = change(id.clone());
        async move { call(app, method, &path, root, body).await }
    };
    let (a, b) = tokio::join!(run(ids[0]), run(ids[1]));
    let (admins,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM user_roles r JOIN users u ON u.id = r.user_id \
         WHERE r.role = 'admin' AND u.status = 'active'",
    )
    .fetch_one(app.state.store.pool())
    .await
    .unwrap();
    assert_eq!(
        admins, 1,
        "one administrator remains ({} / {}; {} / {})",
        a.status, a.text, b.status, b.text
    );
    assert!(
        [a.status, b.status].iter().any(|s| s.is_success()),
        "one change went through: {} / {}",
        a.text,
        b.text
    );
}

fn res_status(res: &crate::helpers::Response) -> StatusCode {
    res.status
}

async fn the_last_administrator_cannot_be_demoted_deactivated_or_erased(b: Backend) {
    let app = TestApp::spawn(b).await;
    let root = admin(&app).await;
    let root_id = app.get("/identity/me", &root).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/admin/users/{root_id}");
    let res = call(
        &app,
        Method::PATCH,
        &path,
        &root,
        Some(json!({"roles": []})),
    )
    .await;
    assert_error(&res, StatusCode::CONFLICT, "last_admin");
    let res = call(
        &app,
        Method::POST,
        &format!("{path}/deactivate"),
        &root,
        None,
    )
    .await;
    assert_error(&res, StatusCode::CONFLICT, "last_admin");
    let res = call(&app, Method::DELETE, &path, &root, None).await;
    assert_error(&res, StatusCode::CONFLICT, "last_admin");
    // With a second administrator, the first may step down.
    let res = call(
        &app,
        Method::POST,
        "/admin/users",
        &root,
        Some(json!({"email": "second@example.com", "roles": ["admin"]})),
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    let res = call(
        &app,
        Method::PATCH,
        &path,
        &root,
        Some(json!({"roles": []})),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body["roles"], json!([]));
    // No longer an administrator: the sessions carrying the role have ended.
    assert_eq!(
        app.get("/admin/users", &root).await.status,
        StatusCode::UNAUTHORIZED
    );
    let again = Tokens::from(&app.login("root@example.com", PASSWORD).await.body).access;
    assert_eq!(
        app.get("/admin/users", &again).await.status,
        StatusCode::FORBIDDEN
    );
}

async fn erasure_removes_the_account_and_leaves_a_pseudonym_in_the_audit_log(b: Backend) {
    let app = TestApp::spawn(b).await;
    let root = admin(&app).await;
    let eve = app.signed_in("eve@example.com").await;
    let eve_id = app.get("/identity/me", &eve.access).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let personal = crate::tenants::claims(&eve.access)["tid"]
        .as_str()
        .unwrap()
        .to_string();
    // The only owner of a team cannot be erased until the team has another owner.
    let team = crate::tenants::team(&app, &eve.access, "Eve's team", "eve-team").await;
    let path = format!("/admin/users/{eve_id}");
    let res = call(&app, Method::DELETE, &path, &root, None).await;
    assert_error(&res, StatusCode::CONFLICT, "last_owner");
    let in_team = crate::tenants::switch(&app, &eve.access, &team).await;
    let res = call(
        &app,
        Method::DELETE,
        &format!("/tenants/{team}"),
        &in_team.access,
        None,
    )
    .await;
    assert!(res.status.is_success(), "{}", res.text);

    // Another team has invited her address; and the relay has published every event so far.
    let other = crate::tenants::team(&app, &root, "Root's team", "root-team").await;
    let root_in = crate::tenants::switch(&app, &root, &other).await;
    let res = call(
        &app,
        Method::POST,
        &format!("/tenants/{other}/invitations"),
        &root_in.access,
        Some(json!({"email": "Eve@Example.com", "roles": ["viewer"]})),
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    let pool = app.state.store.writer();
    sqlx::query("UPDATE outbox SET status = 'published'")
        .execute(pool)
        .await
        .unwrap();
    let by_address = "%\"eve@example.com\"%";
    let by_id = &format!("%\"{eve_id}\"%");
    assert!(
        published_mentioning(&app, by_address).await > 0,
        "the invitation event names her"
    );
    assert!(published_mentioning(&app, by_id).await > 0);

    let res = call(&app, Method::DELETE, &path, &root, None).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    // No published event names her any more, by id or by address; nor does any invitation.
    assert_eq!(published_mentioning(&app, by_address).await, 0);
    assert_eq!(published_mentioning(&app, by_id).await, 0);
    let (invited,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM invitations WHERE email_normalized = $1")
            .bind("eve@example.com")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(invited, 0, "the invitation to her address went with her");
    assert_error(
        &app.get(&path, &root).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &app.get("/identity/me", &eve.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    assert_error(
        &app.refresh(&eve.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    );
    assert_error(
        &app.login("eve@example.com", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    assert_eq!(
        app.get(&format!("/tenants/{personal}"), &root).await.status,
        StatusCode::NOT_FOUND
    );
    // The audit log keeps what happened, under a pseudonym, without her address or browser.
    let (mentions,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE actor_id = $1 OR target_id = $1")
            .bind(&eve_id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(mentions, 0, "the id is gone from the audit log");
    let deleted = audit_of(&app, &root, "user.delete").await;
    assert_eq!(deleted.len(), 1);
    let pseudonym = deleted[0]["target_id"].as_str().unwrap().to_string();
    assert!(pseudonym.starts_with("erased:"), "{pseudonym}");
    let registered = audit_of(&app, &root, "user.register").await;
    let hers: Vec<&Value> = registered
        .iter()
        .filter(|e| e["actor_id"] == pseudonym.as_str())
        .collect();
    assert_eq!(hers.len(), 1, "{registered:?}");
    assert!(
        hers[0]["ip"].is_null() && hers[0]["user_agent"].is_null(),
        "{:?}",
        hers[0]
    );
    // The rest of the log is still append-only.
    let refused = sqlx::query("UPDATE audit_log SET action = 'x'")
        .execute(pool)
        .await;
    assert!(refused.is_err(), "audit_log stays append-only");
    // And the columns erasure rewrites change only as erasure changes them.
    for forged in [
        "UPDATE audit_log SET actor_id = 'someone-else' WHERE actor_type = 'user'",
        "UPDATE audit_log SET target_id = 'someone-else' WHERE target_type = 'user'",
        "UPDATE audit_log SET ip = '192.0.2.1'",
        "UPDATE audit_log SET user_agent = 'forged'",
    ] {
        let refused = sqlx::query(forged).execute(pool).await;
        assert!(refused.is_err(), "{forged} must be refused");
    }
    // A pseudonym is given once.
    let refused = sqlx::query("UPDATE audit_log SET actor_id = 'erased:other' WHERE actor_id = $1")
        .bind(&pseudonym)
        .execute(pool)
        .await;
    assert!(refused.is_err(), "a pseudonym is not replaced");
    // Consumers hear of it with the real id, so they can erase too.
    let types = event_types_of(&app, &eve_id).await;
    assert_eq!(
        types.last().map(String::as_str),
        Some("identity.user.deleted.v1"),
        "{types:?}"
    );
    let events = crate::helpers::events_of(&app, &eve_id).await;
    assert_eq!(
        events.last().unwrap()["data"]["personal_tenant_id"],
        personal.as_str()
    );
    // Nothing of her is left in the tables that cascade from the account.
    for table in ["sessions", "profiles", "memberships", "user_roles"] {
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {table} WHERE user_id = $1"
        )))
        .bind(&eve_id)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    // The address is free again.
    assert_eq!(
        app.register("eve@example.com").await.status,
        StatusCode::CREATED
    );
    let res = call(&app, Method::DELETE, &path, &root, None).await;
    assert_error(&res, StatusCode::NOT_FOUND, "not_found");
}

/// Published events whose envelope, lower-cased, is LIKE `pattern`.
async fn published_mentioning(app: &TestApp, pattern: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM outbox WHERE status = 'published' AND lower(envelope) LIKE $1",
    )
    .bind(pattern)
    .fetch_one(app.state.store.pool())
    .await
    .unwrap();
    n
}

async fn an_administrator_lists_and_ends_a_users_sessions_and_reactivates_them(b: Backend) {
    let app = TestApp::spawn(b).await;
    let root = admin(&app).await;
    let gus = app.signed_in("gus@example.com").await;
    let _second = app.login("gus@example.com", PASSWORD).await;
    let id = app.get("/identity/me", &gus.access).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/admin/users/{id}/sessions");
    let res = app.get(&path, &root).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(
        res.body["sessions"].as_array().unwrap().len(),
        2,
        "{}",
        res.text
    );
    let res = call(&app, Method::DELETE, &path, &root, None).await;
    assert_eq!(res.body["revoked"], 2, "{}", res.text);
    assert_error(
        &app.get("/identity/me", &gus.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    assert!(
        app.get(&path, &root).await.body["sessions"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let types = event_types_of(&app, &id).await;
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "identity.session.revoked.v1")
            .count(),
        2
    );
    // Deactivate (idempotent), reactivate: signing in works again.
    for _ in 0..2 {
        let res = call(
            &app,
            Method::POST,
            &format!("/admin/users/{id}/deactivate"),
            &root,
            None,
        )
        .await;
        assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    }
    assert_eq!(
        app.login("gus@example.com", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    let res = app.get("/admin/users?status=deactivated", &root).await;
    assert_eq!(res.body["users"][0]["id"], id.as_str(), "{}", res.text);
    let res = call(
        &app,
        Method::POST,
        &format!("/admin/users/{id}/reactivate"),
        &root,
        None,
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert_eq!(
        app.login("gus@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
    assert!(
        event_types_of(&app, &id)
            .await
            .contains(&"identity.user.reactivated.v1".to_string())
    );
    assert_eq!(audit_of(&app, &root, "user.reactivate").await.len(), 1);
    assert_eq!(audit_of(&app, &root, "user.sessions_revoke").await.len(), 1);
}

async fn signing_keys_are_listed_rotated_and_revoked_over_http(b: Backend) {
    let app = TestApp::spawn(b).await;
    let root = admin(&app).await;
    let root_id = app.get("/identity/me", &root).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app.get("/admin/keys", &root).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let keys = res.body["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["state"], "current");
    assert!(!res.text.contains("private"), "{}", res.text);
    let first = keys[0]["kid"].as_str().unwrap().to_string();

    let res = call(
        &app,
        Method::POST,
        "/admin/keys/rotate",
        &root,
        Some(json!({"alg": "HS256"})),
    )
    .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);
    let res = call(
        &app,
        Method::POST,
        "/admin/keys/rotate",
        &root,
        Some(json!({})),
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    assert_eq!(res.body["state"], "next");
    let next = res.body["kid"].as_str().unwrap().to_string();
    let res = call(
        &app,
        Method::POST,
        "/admin/keys/rotate",
        &root,
        Some(json!({})),
    )
    .await;
    assert_error(&res, StatusCode::CONFLICT, "key_scheduled");
    let res = call(
        &app,
        Method::POST,
        "/admin/keys/rotate",
        &root,
        Some(json!({"now": true})),
    )
    .await;
    assert_eq!(
        res.body["kid"],
        next.as_str(),
        "the scheduled key becomes current: {}",
        res.text
    );
    // Tokens are signed by the new key at once on this replica.
    let t = Tokens::from(&app.login("root@example.com", PASSWORD).await.body).access;
    assert_eq!(crate::tenants::claims(&t)["sub"], root_id.as_str());
    let header: Value = {
        use base64::Engine;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(header["kid"], next.as_str());

    let res = call(&app, Method::POST, "/admin/keys/nope/revoke", &root, None).await;
    assert_error(&res, StatusCode::NOT_FOUND, "not_found");
    // Revoking the retired first key ends the first admin token.
    let res = call(
        &app,
        Method::POST,
        &format!("/admin/keys/{first}/revoke"),
        &root,
        None,
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert_eq!(
        app.get("/admin/keys", &root).await.status,
        StatusCode::UNAUTHORIZED
    );
    let res = app.get("/admin/keys", &t).await;
    let states: Vec<(String, String)> = res.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().to_string(),
                k["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        states.contains(&(first.clone(), "revoked".into())),
        "{states:?}"
    );
    assert!(
        states.contains(&(next.clone(), "current".into())),
        "{states:?}"
    );
    for action in ["key.schedule", "key.promote", "key.revoke"] {
        let entries = audit_of(&app, &t, action).await;
        assert!(
            entries.iter().any(|e| e["actor_id"] == root_id.as_str()),
            "{action}: {entries:?}"
        );
    }
}

async fn webhooks_are_managed_and_tested_over_http(b: Backend) {
    let app = TestApp::spawn(b).await;
    let root = admin(&app).await;
    let (url, seen) = crate::events::receiver(vec![]).await;
    let res = call(
        &app,
        Method::POST,
        "/admin/webhooks",
        &root,
        Some(json!({"url": url, "events": ["nope.v1"]})),
    )
    .await;
    assert_error(&res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let res = call(
        &app,
        Method::POST,
        "/admin/webhooks",
        &root,
        Some(json!({"url": url, "events": ["identity.user.deleted.v1"]})),
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    let id = res.body["id"].as_str().unwrap().to_string();
    let secret = res.body["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let res = app.get("/admin/webhooks", &root).await;
    assert_eq!(res.body["webhooks"][0]["id"], id.as_str());
    assert!(!res.text.contains(&secret), "the secret is shown once only");

    let res = call(
        &app,
        Method::POST,
        &format!("/admin/webhooks/{id}/test"),
        &root,
        None,
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body["delivered"], true, "{}", res.text);
    assert_eq!(res.body["status"], 204);
    {
        let got = seen.lock().unwrap();
        assert_eq!(got.len(), 1);
        let (headers, body) = &got[0];
        assert_eq!(headers["tessera-event-type"], "tessera.webhook.test.v1");
        assert!(
            crate::events::verify_signature(&secret, &headers["tessera-signature"], body),
            "a test event is signed like any other"
        );
    }
    // An endpoint that refuses: said, not a server error.
    let (refusing, _) = crate::events::receiver(vec![500]).await;
    let res = call(
        &app,
        Method::POST,
        "/admin/webhooks",
        &root,
        Some(json!({"url": refusing, "events": ["*"]})),
    )
    .await;
    let other = res.body["id"].as_str().unwrap().to_string();
    let res = call(
        &app,
        Method::POST,
        &format!("/admin/webhooks/{other}/test"),
        &root,
        None,
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body["delivered"], false);
    assert_eq!(res.body["status"], 500);
    let res = call(&app, Method::POST, "/admin/webhooks/nope/test", &root, None).await;
    assert_error(&res, StatusCode::NOT_FOUND, "not_found");

    let res = call(
        &app,
        Method::DELETE,
        &format!("/admin/webhooks/{other}"),
        &root,
        None,
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = call(
        &app,
        Method::DELETE,
        &format!("/admin/webhooks/{other}"),
        &root,
        None,
    )
    .await;
    assert_error(&res, StatusCode::NOT_FOUND, "not_found");
    for bad in ["%00", "x%00y"] {
        let res = call(
            &app,
            Method::DELETE,
            &format!("/admin/webhooks/{bad}"),
            &root,
            None,
        )
        .await;
        assert_error(&res, StatusCode::NOT_FOUND, "not_found");
    }
    let res = call(&app, Method::POST, "/admin/events/retry", &root, None).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body["events"], 0);
    assert_eq!(res.body["webhook_deliveries"], 0);
    for action in [
        "webhook.create",
        "webhook.test",
        "webhook.delete",
        "events.retry_parked",
    ] {
        assert!(!audit_of(&app, &root, action).await.is_empty(), "{action}");
    }
    let tests = audit_of(&app, &root, "webhook.test").await;
    assert_eq!(tests.len(), 2);
    assert_eq!(tests[1]["result"], "failure");
}
