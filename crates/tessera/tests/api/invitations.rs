//! Invitations (mailed single-use `tsi_` links), custom roles and application permissions.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Backend, SmtpSink, TestApp, assert_error, event_types_of, events_of, find_link,
};
use crate::on_both_backends;
use crate::tenants::{add_member, claims, send, switch, team, user_id};

on_both_backends!(
    an_invitation_mails_a_single_use_link_for_the_invited_address,
    invitations_expire_are_revoked_superseded_and_checked,
    event_driven_mail_carries_the_invitation_link_in_the_event,
    custom_roles_and_application_permissions_decide_at_the_next_request,
);

const DAY: i64 = 24 * 3600;

async fn invite(app: &TestApp, token: &str, tenant: &str, email: &str, roles: &[&str]) -> Value {
    let res = send(
        app,
        Method::POST,
        &format!("/tenants/{tenant}/invitations"),
        token,
        json!({"email": email, "roles": roles}),
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    assert!(
        !res.text.contains("tsi_"),
        "the inviter never sees the link: {}",
        res.text
    );
    res.body
}

async fn accept(app: &TestApp, token: &str, invitation: &str) -> crate::helpers::Response {
    send(
        app,
        Method::POST,
        "/invitations/accept",
        token,
        json!({"token": invitation}),
    )
    .await
}

async fn an_invitation_mails_a_single_use_link_for_the_invited_address(b: Backend) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with(b, |c| sink.configure(c)).await;
    let ada = app.signed_in("ada@example.com").await;
    // Registration mails a verification first: take it out of the way.
    let _ = sink.next_message().await;
    let acme = team(&app, &ada.access, "Acme Rockets", "acme").await;
    let ada_in = switch(&app, &ada.access, &acme).await;
    let sent = invite(&app, &ada_in.access, &acme, "Bob@Example.com", &["member"]).await;
    assert_eq!(sent["roles"], json!(["member"]));
    let mail = sink.next_message().await;
    assert!(
        crate::helpers::decode_qp(&mail).contains("Acme Rockets"),
        "the mail names the tenant:\n{mail}"
    );
    let (_, token) = find_link(&mail, "accept-invitation");
    assert!(token.starts_with("tsi_"), "{token}");
    let pending = app
        .get(&format!("/tenants/{acme}/invitations"), &ada_in.access)
        .await;
    assert_eq!(pending.body["invitations"].as_array().unwrap().len(), 1);
    assert!(!pending.text.contains(&token));

    // Someone else holding the link cannot use it.
    let eve = app.signed_in("eve@example.com").await;
    let _ = sink.next_message().await;
    let res = accept(&app, &eve.access, &token).await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
    // The invited address, right after registering (its case does not matter).
    let bob = app.signed_in("bob@example.com").await;
    let res = accept(&app, &bob.access, &token).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body["id"], acme.as_str());
    assert_eq!(res.body["roles"], json!(["member"]));
    let bob_in = switch(&app, &bob.access, &acme).await;
    assert_eq!(claims(&bob_in.access)["tenant_roles"], json!(["member"]));
    // Once only.
    let res = accept(&app, &bob.access, &token).await;
    assert_error(&res, StatusCode::BAD_REQUEST, "invalid_token");
    let pending = app
        .get(&format!("/tenants/{acme}/invitations"), &ada_in.access)
        .await;
    assert_eq!(pending.body["invitations"], json!([]), "{}", pending.text);
    // Events of the tenant, none holding the token.
    let types = event_types_of(&app, &acme).await;
    for t in [
        "identity.tenant.invitation_sent.v1",
        "identity.tenant.invitation_accepted.v1",
        "identity.tenant.member_added.v1",
    ] {
        assert!(types.iter().any(|x| x == t), "{t} in {types:?}");
    }
    let all = serde_json::to_string(&events_of(&app, &acme).await).unwrap();
    assert!(!all.contains(&token), "no event holds the link");
    // Audit: the tenant's log shows the invitation and the new member.
    let log = app
        .get(&format!("/tenants/{acme}/audit"), &ada_in.access)
        .await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.text);
    let actions: Vec<&str> = log.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"invitation.create"), "{actions:?}");
    assert!(actions.contains(&"member.add"), "{actions:?}");
    assert!(
        log.body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["tenant_id"] == acme.as_str()),
        "{}",
        log.text
    );
    // A member may not read it (audit:read).
    let res = app
        .get(&format!("/tenants/{acme}/audit"), &bob_in.access)
        .await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
}

/// The link tokens of every invitation mail to `to` so far, from the file transport.
fn mailed_tokens(app: &TestApp, to: &str) -> Vec<String> {
    let dir = app.config.data_dir.join("mail");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        let decoded = crate::helpers::decode_qp(&text);
        if decoded.contains(&format!("To: {to}")) && decoded.contains("/accept-invitation?token=") {
            out.push(find_link(&text, "accept-invitation").1);
        }
    }
    out
}

/// Waits for an invitation mail to `to` whose token is not in `seen`; returns its token.
async fn next_mailed(app: &TestApp, to: &str, seen: &[String]) -> String {
    for _ in 0..200 {
        if let Some(t) = mailed_tokens(app, to)
            .into_iter()
            .find(|t| !seen.contains(t))
        {
            return t;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no new invitation mail to {to} within 10 s");
}

async fn relogin(app: &TestApp, email: &str) -> crate::helpers::Tokens {
    let res = app.login(email, crate::helpers::PASSWORD).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    crate::helpers::Tokens::from(&res.body)
}

async fn invitations_expire_are_revoked_superseded_and_checked(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let personal = claims(&ada.access)["tid"].as_str().unwrap().to_string();
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    let ada_in = switch(&app, &ada.access, &acme).await;
    app.signed_in("bob@example.com").await;

    // Expired after the configured lifetime (7 days by default).
    invite(&app, &ada_in.access, &acme, "bob@example.com", &["viewer"]).await;
    let expired = next_mailed(&app, "bob@example.com", &[]).await;
    app.clock.advance(7 * DAY + 1);
    let ada_in = switch(&app, &relogin(&app, "ada@example.com").await.access, &acme).await;
    let bob = relogin(&app, "bob@example.com").await;
    let res = accept(&app, &bob.access, &expired).await;
    assert_error(&res, StatusCode::BAD_REQUEST, "invalid_token");

    // Superseded by a newer invitation of the same address.
    invite(&app, &ada_in.access, &acme, "bob@example.com", &["viewer"]).await;
    let first = next_mailed(&app, "bob@example.com", std::slice::from_ref(&expired)).await;
    invite(&app, &ada_in.access, &acme, "bob@example.com", &["member"]).await;
    let second = next_mailed(&app, "bob@example.com", &[expired, first.clone()]).await;
    let res = accept(&app, &bob.access, &first).await;
    assert_error(&res, StatusCode::BAD_REQUEST, "invalid_token");

    // Revoked.
    let list = app
        .get(&format!("/tenants/{acme}/invitations"), &ada_in.access)
        .await;
    let pending = list.body["invitations"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{}", list.text);
    assert_eq!(pending[0]["roles"], json!(["member"]));
    let id = pending[0]["id"].as_str().unwrap();
    let res = send(
        &app,
        Method::DELETE,
        &format!("/tenants/{acme}/invitations/{id}"),
        &ada_in.access,
        json!({}),
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    let res = accept(&app, &bob.access, &second).await;
    assert_error(&res, StatusCode::BAD_REQUEST, "invalid_token");

    // Malformed tokens are refused before any look-up, with the same answer.
    for bad in [
        "",
        "tsi_short",
        "tsk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let res = accept(&app, &bob.access, bad).await;
        assert_error(&res, StatusCode::BAD_REQUEST, "invalid_token");
    }
    // Bad input: a clear 422.
    for body in [
        json!({"email": "not an address", "roles": ["viewer"]}),
        json!({"email": "x@example.com", "roles": ["no-such-role"]}),
        json!({"email": "x@example.com"}),
    ] {
        let res = send(
            &app,
            Method::POST,
            &format!("/tenants/{acme}/invitations"),
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
    // Someone already in: 409. A personal tenant takes no one.
    let res = send(
        &app,
        Method::POST,
        &format!("/tenants/{acme}/invitations"),
        &ada_in.access,
        json!({"email": "ada@example.com", "roles": ["viewer"]}),
    )
    .await;
    assert_error(&res, StatusCode::CONFLICT, "already_member");
    let ada_personal = switch(&app, &ada_in.access, &personal).await;
    let res = send(
        &app,
        Method::POST,
        &format!("/tenants/{personal}/invitations"),
        &ada_personal.access,
        json!({"email": "bob@example.com", "roles": ["viewer"]}),
    )
    .await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
    // An admin cannot invite an owner (no one grants more than they hold).
    let carol = app.signed_in("carol@example.com").await;
    add_member(&app, &acme, &user_id(&carol), &["admin"]).await;
    let carol_in = switch(&app, &carol.access, &acme).await;
    let res = send(
        &app,
        Method::POST,
        &format!("/tenants/{acme}/invitations"),
        &carol_in.access,
        json!({"email": "dan@example.com", "roles": ["owner"]}),
    )
    .await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
    // Plan limits count members and pending invitations.
    let root = crate::tenant_keys::system_admin(&app).await;
    let res = send(
        &app,
        Method::PATCH,
        &format!("/tenants/{acme}/plan"),
        &root,
        json!({"limits": {"max_members": 3}}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    invite(&app, &ada_in.access, &acme, "dan@example.com", &["viewer"]).await;
    let res = send(
        &app,
        Method::POST,
        &format!("/tenants/{acme}/invitations"),
        &ada_in.access,
        json!({"email": "erin@example.com", "roles": ["viewer"]}),
    )
    .await;
    assert_error(&res, StatusCode::CONFLICT, "limit_reached");
}

async fn event_driven_mail_carries_the_invitation_link_in_the_event(b: Backend) {
    let app = TestApp::spawn_with(b, |c| c.mail.transport = "events".into()).await;
    let ada = app.signed_in("ada@example.com").await;
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    let ada_in = switch(&app, &ada.access, &acme).await;
    invite(&app, &ada_in.access, &acme, "bob@example.com", &["member"]).await;
    let sent: Vec<Value> = events_of(&app, &acme)
        .await
        .into_iter()
        .filter(|e| e["event_type"] == "identity.tenant.invitation_sent.v1")
        .collect();
    assert_eq!(sent.len(), 1);
    let link = sent[0]["data"]["link"]
        .as_str()
        .expect("a link in the event");
    let token = link.split("token=").nth(1).unwrap();
    assert!(token.starts_with("tsi_"), "{link}");
    let bob = app.signed_in("bob@example.com").await;
    let res = accept(&app, &bob.access, token).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
}

async fn custom_roles_and_application_permissions_decide_at_the_next_request(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    let ada_in = switch(&app, &ada.access, &acme).await;
    let at = |p: &str| format!("/tenants/{acme}{p}");
    // An application permission, registered once (201), then found (200).
    let res = send(
        &app,
        Method::POST,
        &at("/permissions"),
        &ada_in.access,
        json!({"name": "invoices:approve"}),
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    let res = send(
        &app,
        Method::POST,
        &at("/permissions"),
        &ada_in.access,
        json!({"name": "invoices:approve"}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    for bad in ["Invoices:Approve", "invoices", "tenant:read", "a:b:c", ""] {
        let res = send(
            &app,
            Method::POST,
            &at("/permissions"),
            &ada_in.access,
            json!({"name": bad}),
        )
        .await;
        assert!(
            res.status.is_client_error(),
            "{bad}: {} {}",
            res.status,
            res.text
        );
        assert!(res.body["error"].is_string(), "{}", res.text);
    }
    let list = app.get(&at("/permissions"), &ada_in.access).await;
    assert!(list.text.contains("invoices:approve"), "{}", list.text);

    // A custom role from built-in and application permissions.
    let res = send(
        &app,
        Method::PUT,
        &at("/roles/accountant"),
        &ada_in.access,
        json!({"permissions": ["members:read", "invoices:approve"]}),
    )
    .await;
    assert!(res.status.is_success(), "{}", res.text);
    for (name, perms) in [
        ("owner", json!(["tenant:read"])),
        ("Bad Name", json!(["tenant:read"])),
        ("clerk", json!(["no:such"])),
    ] {
        let res = send(
            &app,
            Method::PUT,
            &at(&format!("/roles/{name}")),
            &ada_in.access,
            json!({"permissions": perms}),
        )
        .await;
        assert!(
            res.status.is_client_error(),
            "{name}: {} {}",
            res.status,
            res.text
        );
    }
    let vic = app.signed_in("vic@example.com").await;
    add_member(&app, &acme, &user_id(&vic), &["viewer"]).await;
    let res = send(
        &app,
        Method::PATCH,
        &at(&format!("/members/{}", user_id(&vic))),
        &ada_in.access,
        json!({"roles": ["accountant"]}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let vic_in = switch(&app, &vic.access, &acme).await;
    assert_eq!(
        claims(&vic_in.access)["tenant_roles"],
        json!(["accountant"])
    );
    let members = app.get(&at("/members"), &vic_in.access).await;
    assert_eq!(members.status, StatusCode::OK, "{}", members.text);
    // The role changes: vic's next request sees it, with the same token.
    let res = send(
        &app,
        Method::PUT,
        &at("/roles/accountant"),
        &ada_in.access,
        json!({"permissions": ["invoices:approve"]}),
    )
    .await;
    assert!(res.status.is_success(), "{}", res.text);
    let members = app.get(&at("/members"), &vic_in.access).await;
    assert_error(&members, StatusCode::FORBIDDEN, "forbidden");
    // Deleted: vic holds nothing of it any more.
    let res = send(
        &app,
        Method::DELETE,
        &at("/roles/accountant"),
        &ada_in.access,
        json!({}),
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    let roles = app.get(&at("/roles"), &ada_in.access).await;
    assert!(!roles.text.contains("accountant"), "{}", roles.text);
    // Custom roles count against the plan.
    let root = crate::tenant_keys::system_admin(&app).await;
    let res = send(
        &app,
        Method::PATCH,
        &at("/plan"),
        &root,
        json!({"limits": {"max_custom_roles": 1}}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let res = send(
        &app,
        Method::PUT,
        &at("/roles/one"),
        &ada_in.access,
        json!({"permissions": ["tenant:read"]}),
    )
    .await;
    assert!(res.status.is_success(), "{}", res.text);
    let res = send(
        &app,
        Method::PUT,
        &at("/roles/two"),
        &ada_in.access,
        json!({"permissions": ["tenant:read"]}),
    )
    .await;
    assert_error(&res, StatusCode::CONFLICT, "limit_reached");
    let usage = app.get(&at("/usage"), &ada_in.access).await;
    assert_eq!(
        usage.body["custom_roles"],
        json!({"used": 1, "limit": 1}),
        "{}",
        usage.text
    );
}
