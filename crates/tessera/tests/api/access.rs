//! The AuthZEN decision point (`/access/v1/*`): decisions from live memberships, who may ask
//! about whom, batches and their semantics, explanations, features, and bad input.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, assert_error};
use crate::on_both_backends;
use crate::tenants::{add_member, api_key, send, switch, team, user_id};

on_both_backends!(
    a_member_asks_about_themselves_and_gets_decisions_from_their_roles,
    asking_about_others_needs_access_evaluate_in_that_tenant,
    api_keys_and_resource_servers_ask_within_their_reach,
    batches_take_defaults_and_stop_as_their_semantic_says,
    decisions_follow_membership_changes_and_suspension_at_once,
    malformed_evaluations_are_422_naming_the_field,
);

fn ask(subject: &str, action: &str, tenant: &str) -> Value {
    json!({
        "subject": {"type": "user", "id": subject},
        "action": {"name": action},
        "resource": {"type": "tenant", "id": tenant},
    })
}

async fn evaluate(app: &TestApp, token: &str, body: Value) -> crate::helpers::Response {
    send(app, Method::POST, "/access/v1/evaluation", token, body).await
}

async fn decision(app: &TestApp, token: &str, body: Value) -> Value {
    let res = evaluate(app, token, body).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    res.body
}

async fn a_member_asks_about_themselves_and_gets_decisions_from_their_roles(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let bob = app.signed_in("bob@example.com").await;
    let (ada_id, bob_id) = (user_id(&ada), user_id(&bob));
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    add_member(&app, &acme, &bob_id, &["viewer"]).await;

    // The owner holds every built-in permission; features of the plan come along.
    let d = decision(&app, &ada.access, ask(&ada_id, "members:manage", &acme)).await;
    assert_eq!(d["decision"], true, "{d}");
    assert_eq!(d["context"]["reason"], "granted");
    assert_eq!(d["context"]["tenant_id"], acme.as_str());
    assert!(d["context"]["features"].is_array(), "{d}");
    assert!(
        d["context"].get("roles").is_none(),
        "no explanation unasked: {d}"
    );

    // A viewer asking about themselves, by email and by the tenant's slug.
    let d = decision(
        &app,
        &bob.access,
        ask("bob@example.com", "tenant:read", "acme"),
    )
    .await;
    assert_eq!(d["decision"], true, "{d}");
    let mut q = ask(&bob_id, "members:read", &acme);
    q["context"] = json!({"explain": true});
    let d = decision(&app, &bob.access, q).await;
    assert_eq!(d["decision"], false, "{d}");
    assert_eq!(d["context"]["reason"], "permission_missing");
    assert_eq!(d["context"]["roles"], json!(["viewer"]));
    assert_eq!(d["context"]["granted_by"], json!([]));
    assert_eq!(d["context"]["permissions"], json!(["tenant:read"]));

    // An application permission through a custom role, explained.
    let res = send(
        &app,
        Method::POST,
        &format!("/tenants/{acme}/permissions"),
        &switch(&app, &ada.access, &acme).await.access,
        json!({"name": "invoices:approve"}),
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    let ada_in = switch(&app, &ada.access, &acme).await;
    let res = send(
        &app,
        Method::PUT,
        &format!("/tenants/{acme}/roles/approver"),
        &ada_in.access,
        json!({"permissions": ["invoices:approve"]}),
    )
    .await;
    assert!(res.status.is_success(), "{}", res.text);
    add_member(&app, &acme, &bob_id, &["viewer", "approver"]).await;
    let invoice = json!({
        "subject": {"type": "user", "id": bob_id},
        "action": {"name": "invoices:approve"},
        "resource": {"type": "invoice", "id": "inv-42", "properties": {"tenant": acme}},
        "context": {"explain": true},
    });
    let d = decision(&app, &bob.access, invoice).await;
    assert_eq!(d["decision"], true, "{d}");
    assert_eq!(d["context"]["granted_by"], json!(["approver"]));

    // Not a member, or no such tenant: the same answer.
    let d = decision(
        &app,
        &ada.access,
        ask(&ada_id, "tenant:read", "no-such-tenant"),
    )
    .await;
    assert_eq!(d["decision"], false);
    assert_eq!(d["context"]["reason"], "not_a_member");
    let bob_personal = crate::tenants::claims(&bob.access)["tid"]
        .as_str()
        .unwrap()
        .to_string();
    let d = decision(
        &app,
        &ada.access,
        ask(&ada_id, "tenant:read", &bob_personal),
    )
    .await;
    assert_eq!(d["decision"], false);
    assert_eq!(d["context"]["reason"], "not_a_member");
    assert!(
        d["context"].get("features").is_none(),
        "nothing about a stranger's tenant: {d}"
    );
}

async fn asking_about_others_needs_access_evaluate_in_that_tenant(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let bob = app.signed_in("bob@example.com").await;
    let bob_id = user_id(&bob);
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    add_member(&app, &acme, &bob_id, &["member"]).await;
    let ada_id = user_id(&ada);

    // Bob (a member, no access:evaluate) may not ask about Ada.
    let bob_in = switch(&app, &bob.access, &acme).await;
    let res = evaluate(&app, &bob_in.access, ask(&ada_id, "tenant:read", &acme)).await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
    // Ada owns Acme, but her token is for her personal tenant: switch first.
    let res = evaluate(&app, &ada.access, ask(&bob_id, "tenant:read", &acme)).await;
    assert_error(&res, StatusCode::FORBIDDEN, "tenant_mismatch");
    let ada_in = switch(&app, &ada.access, &acme).await;
    let d = decision(&app, &ada_in.access, ask(&bob_id, "members:read", &acme)).await;
    assert_eq!(d["decision"], true, "{d}");
    // Asking about a tenant she is not in reveals nothing.
    let bob_personal = crate::tenants::claims(&bob.access)["tid"]
        .as_str()
        .unwrap()
        .to_string();
    let res = evaluate(
        &app,
        &ada_in.access,
        ask(&bob_id, "tenant:read", &bob_personal),
    )
    .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.text);
    // Without a token, 401; a third-party-style client-credentials token without the
    // introspection permission, 403 (tested with the access matrix).
    let res = app
        .request(
            Method::POST,
            "/access/v1/evaluation",
            None,
            Some(ask(&bob_id, "tenant:read", &acme)),
        )
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
}

async fn resource_server(app: &TestApp, may_introspect: bool) -> String {
    let spec = tessera::oauth::clients::ClientSpec {
        name: Some("Resource server".into()),
        grant_types: Some(vec!["client_credentials".into()]),
        may_introspect: Some(may_introspect),
        ..Default::default()
    };
    let rs = crate::oauth::create_client(app, spec).await;
    let secret = rs.secret.clone().unwrap();
    let (status, _, body) = crate::oauth::token(
        app,
        Some((&rs.id, &secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

async fn api_keys_and_resource_servers_ask_within_their_reach(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let bob = app.signed_in("bob@example.com").await;
    let bob_id = user_id(&bob);
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    let globex = team(&app, &ada.access, "Globex", "globex").await;
    add_member(&app, &acme, &bob_id, &["member"]).await;
    add_member(&app, &globex, &bob_id, &["member"]).await;
    let ada_in = switch(&app, &ada.access, &acme).await;
    let pep = api_key(&app, &ada_in.access, &acme, &["access:evaluate"]).await;
    let pep = pep["key"].as_str().unwrap().to_string();
    let reader = api_key(&app, &ada_in.access, &acme, &["tenant:read"]).await;
    let reader = reader["key"].as_str().unwrap().to_string();

    // The key's tenant is the default resource tenant.
    let default_tenant = json!({
        "subject": {"type": "user", "id": bob_id},
        "action": {"name": "members:read"},
        "resource": {"type": "document", "id": "d1"},
    });
    let d = decision(&app, &pep, default_tenant.clone()).await;
    assert_eq!(d["decision"], true, "{d}");
    assert_eq!(d["context"]["tenant_id"], acme.as_str());
    // Another tenant does not exist for the key; a key without access:evaluate may not ask.
    let res = evaluate(&app, &pep, ask(&bob_id, "members:read", &globex)).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.text);
    let res = evaluate(&app, &reader, default_tenant.clone()).await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");

    // A resource server with the introspection permission asks about any tenant; without it,
    // not at all. Its token has no tenant of its own: the resource must name one.
    let rs = resource_server(&app, true).await;
    let d = decision(&app, &rs, ask(&bob_id, "members:read", &globex)).await;
    assert_eq!(d["decision"], true, "{d}");
    let res = evaluate(&app, &rs, default_tenant).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);
    let plain = resource_server(&app, false).await;
    let res = evaluate(&app, &plain, ask(&bob_id, "members:read", &globex)).await;
    assert_error(&res, StatusCode::FORBIDDEN, "insufficient_scope");
}

async fn batches_take_defaults_and_stop_as_their_semantic_says(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let bob = app.signed_in("bob@example.com").await;
    let (ada_id, bob_id) = (user_id(&ada), user_id(&bob));
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    add_member(&app, &acme, &bob_id, &["member"]).await;
    let bob_in = switch(&app, &bob.access, &acme).await;
    let batch = |semantic: Option<&str>| {
        let mut body = json!({
            "subject": {"type": "user", "id": bob_id},
            "resource": {"type": "tenant", "id": acme},
            "evaluations": [
                {"action": {"name": "tenant:read"}},
                {"action": {"name": "members:manage"}},
                {"action": {"name": "members:read"}},
                // About someone else: denied in place, with the reason.
                {"subject": {"type": "user", "id": ada_id}, "action": {"name": "tenant:read"}},
            ],
        });
        if let Some(s) = semantic {
            body["options"] = json!({"evaluations_semantic": s});
        }
        body
    };
    let post = |body: Value| {
        send(
            &app,
            Method::POST,
            "/access/v1/evaluations",
            &bob_in.access,
            body,
        )
    };
    let res = post(batch(None)).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let got: Vec<&Value> = res.body["evaluations"].as_array().unwrap().iter().collect();
    let decisions: Vec<bool> = got
        .iter()
        .map(|d| d["decision"].as_bool().unwrap())
        .collect();
    assert_eq!(decisions, [true, false, true, false], "{}", res.text);
    assert_eq!(got[3]["context"]["reason"], "not_allowed_to_ask");
    assert_eq!(got[3]["context"]["error"]["status"], 403);

    let res = post(batch(Some("deny_on_first_deny"))).await;
    assert_eq!(
        res.body["evaluations"].as_array().unwrap().len(),
        2,
        "{}",
        res.text
    );
    let res = post(batch(Some("permit_on_first_permit"))).await;
    assert_eq!(
        res.body["evaluations"].as_array().unwrap().len(),
        1,
        "{}",
        res.text
    );
    let res = post(batch(Some("sometimes"))).await;
    assert!(res.status.is_client_error(), "{}", res.text);

    // Without `evaluations` the batch endpoint answers as the single one (AuthZEN §7.1).
    let res = post(ask(&bob_id, "tenant:read", &acme)).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body["decision"], true, "{}", res.text);

    // At most 100 evaluations; an entry missing what the top level does not give is named.
    let mut big = batch(None);
    big["evaluations"] = Value::Array(vec![json!({"action": {"name": "tenant:read"}}); 101]);
    let res = post(big).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);
    let res = post(json!({"evaluations": [{"action": {"name": "tenant:read"}}]})).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);
    assert_eq!(
        res.body["fields"][0]["field"], "evaluations[0].subject",
        "{}",
        res.text
    );
}

async fn decisions_follow_membership_changes_and_suspension_at_once(b: Backend) {
    let app = TestApp::spawn(b).await;
    let root = crate::tenant_keys::system_admin(&app).await;
    let ada = app.signed_in("ada@example.com").await;
    let bob = app.signed_in("bob@example.com").await;
    let bob_id = user_id(&bob);
    let acme = team(&app, &ada.access, "Acme", "acme").await;
    add_member(&app, &acme, &bob_id, &["admin"]).await;
    let ada_in = switch(&app, &ada.access, &acme).await;
    let q = ask(&bob_id, "members:manage", &acme);
    assert_eq!(
        decision(&app, &ada_in.access, q.clone()).await["decision"],
        true
    );
    // Lowered to viewer: the next decision says no.
    let res = send(
        &app,
        Method::PATCH,
        &format!("/tenants/{acme}/members/{bob_id}"),
        &ada_in.access,
        json!({"roles": ["viewer"]}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(
        decision(&app, &ada_in.access, q.clone()).await["decision"],
        false
    );
    // Removed: not a member.
    let res = send(
        &app,
        Method::DELETE,
        &format!("/tenants/{acme}/members/{bob_id}"),
        &ada_in.access,
        json!({}),
    )
    .await;
    assert!(res.status.is_success(), "{}", res.text);
    let d = decision(&app, &ada_in.access, q).await;
    assert_eq!(d["context"]["reason"], "not_a_member", "{d}");
    // Suspended: a resource server asking gets a denial that says why.
    let rs = resource_server(&app, true).await;
    let ada_id = user_id(&ada);
    let own = ask(&ada_id, "tenant:read", &acme);
    assert_eq!(decision(&app, &rs, own.clone()).await["decision"], true);
    let res = send(
        &app,
        Method::POST,
        &format!("/tenants/{acme}/suspend"),
        &root,
        json!({}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let d = decision(&app, &rs, own).await;
    assert_eq!(d["decision"], false, "{d}");
    assert_eq!(d["context"]["reason"], "tenant_suspended");
}

async fn malformed_evaluations_are_422_naming_the_field(b: Backend) {
    let app = TestApp::spawn(b).await;
    let ada = app.signed_in("ada@example.com").await;
    let ada_id = user_id(&ada);
    let cases = [
        (
            json!({"subject": {"type": "group", "id": "g"}, "action": {"name": "x"}, "resource": {"type": "tenant", "id": "t"}}),
            "subject.type",
        ),
        (
            json!({"subject": {"type": "user", "id": ""}, "action": {"name": "x"}, "resource": {"type": "tenant", "id": "t"}}),
            "subject.id",
        ),
        (
            json!({"subject": {"type": "user", "id": ada_id}, "action": {"name": "x".repeat(400)}, "resource": {"type": "tenant", "id": "t"}}),
            "action.name",
        ),
        (
            json!({"subject": {"type": "user", "id": ada_id}, "action": {"name": "x"}, "resource": {"type": "doc", "id": "1", "properties": {"tenant": 5}}}),
            "resource.properties.tenant",
        ),
        (
            json!({"subject": {"type": "user", "id": ada_id}, "action": {"name": "x"}, "resource": {"type": "tenant", "id": "t"}, "context": {"explain": "yes"}}),
            "context.explain",
        ),
    ];
    for (body, field) in cases {
        let res = evaluate(&app, &ada.access, body).await;
        assert_eq!(
            res.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {}",
            res.text
        );
        assert_eq!(res.body["fields"][0]["field"], field, "{}", res.text);
    }
    // Missing members and wrong types: 422 too, never a 5xx.
    for body in [json!({}), json!({"subject": 1}), json!([])] {
        let res = evaluate(&app, &ada.access, body).await;
        assert!(res.status.is_client_error(), "{}", res.text);
    }
    // The PDP metadata names both endpoints.
    let res = app
        .client
        .get(format!("{}/.well-known/authzen-configuration", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let meta: Value = res.json().await.unwrap();
    assert_eq!(
        meta["access_evaluation_endpoint"],
        format!("{}/access/v1/evaluation", app.base)
    );
    assert_eq!(
        meta["access_evaluations_endpoint"],
        format!("{}/access/v1/evaluations", app.base)
    );
}
