//! Domain events: the envelope, atomicity with the change, the admin API, webhooks, and the relay
//! to a real NATS JetStream server (outage and crash recovery, exactly once per `event_id`, in
//! per-user order).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera::context::RequestContext;
use tessera::events::relay::{self, RelayConfig};
use tessera::events::{self, UserRegisteredV1};
use tessera::store::users::{self, NewUser};

use crate::helpers::{
    Backend, PASSWORD, TestApp, Tokens, assert_error, event_types_of, events_of, eventually,
    nats_url, outbox_len, unique_stream,
};
use crate::on_both_backends;

on_both_backends!(
    every_change_records_its_event_with_the_envelope_and_no_secrets,
    a_failed_transaction_leaves_neither_row_nor_event,
    admin_pages_through_events_and_deactivates_users,
    webhooks_receive_signed_events_and_retry_failures,
    a_dead_webhook_endpoint_does_not_delay_the_others,
    relay_delivers_every_event_once_in_order_after_a_broker_outage,
    relay_killed_mid_batch_resumes_without_duplicates_or_reordering,
);

async fn every_change_records_its_event_with_the_envelope_and_no_secrets(b: Backend) {
    let app = TestApp::spawn(b).await;
    let res = app
        .client
        .post(format!("{}/auth/register", app.base))
        .header("x-correlation-id", "corr-register-1")
        .json(&json!({ "email": "ann@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let id: String = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .into();
    app.login("ann@example.com", "wrong password!").await;
    let t = Tokens::from(&app.login("ann@example.com", PASSWORD).await.body);
    let res = app
        .request(
            reqwest::Method::POST,
            "/identity/password",
            Some(&t.access),
            Some(
                json!({ "current_password": PASSWORD, "new_password": "another fine passphrase" }),
            ),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let t2 = Tokens::from(
        &app.login("ann@example.com", "another fine passphrase")
            .await
            .body,
    );
    app.request(
        reqwest::Method::POST,
        "/auth/logout",
        Some(&t2.access),
        None,
    )
    .await;
    app.login("nobody@example.com", PASSWORD).await;

    assert_eq!(
        event_types_of(&app, &id).await,
        [
            "identity.user.registered.v1",
            "identity.email.verification_requested.v1",
            "identity.login.failed.v1",
            "identity.login.succeeded.v1",
            "identity.password.changed.v1",
            "identity.login.succeeded.v1",
            "identity.session.revoked.v1",
        ]
    );
    let events = events_of(&app, &id).await;
    let first = &events[0];
    assert_eq!(first["correlation_id"], "corr-register-1");
    assert_eq!(first["subject"], id.as_str());
    assert_eq!(first["data"]["email"], "ann@example.com");
    assert_eq!(
        first["occurred_at"],
        tessera::clock::rfc3339(crate::helpers::START)
    );
    let event_id = uuid::Uuid::parse_str(first["event_id"].as_str().unwrap()).unwrap();
    assert_eq!(event_id.get_version_num(), 7);
    let ids: HashSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), events.len());
    assert_eq!(events[2]["data"]["reason"], "invalid_password");
    assert_eq!(events[4]["data"]["method"], "change");
    assert_eq!(events[6]["data"]["reason"], "logout");
    // An unknown address records a failure without naming anyone.
    let anonymous = events_of(&app, "").await;
    assert_eq!(anonymous.len(), 1);
    assert_eq!(anonymous[0]["data"]["reason"], "unknown_account");
    assert!(!anonymous[0].to_string().contains("nobody@example.com"));

    let text = serde_json::to_string(&events).unwrap();
    for secret in [
        PASSWORD,
        "another fine passphrase",
        "argon2",
        "tsr_",
        "tsv_",
        t.access.as_str(),
    ] {
        assert!(!text.contains(secret), "an event contains {secret:?}");
    }
}

async fn a_failed_transaction_leaves_neither_row_nor_event(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("taken@example.com").await;
    let before = outbox_len(&app).await;

    // Through the API: the duplicate registration writes nothing.
    let res = app.register("TAKEN@example.com").await;
    assert_error(&res, StatusCode::CONFLICT, "email_taken");
    assert_eq!(outbox_len(&app).await, before);

    // One transaction: a user and its event, then a unique violation. Nothing survives.
    let store = &app.state.store;
    let mut tx = store.begin().await.unwrap();
    let new = NewUser {
        id: "01900000-0000-7000-8000-000000000001",
        email: "fresh@example.com",
        email_verified_at: None,
        password_hash: None,
        display_name: None,
        now: 1,
    };
    users::insert(&mut tx, &new).await.unwrap();
    let event = UserRegisteredV1 {
        user_id: new.id.into(),
        email: new.email.into(),
        email_verified: false,
        source: "self".into(),
    };
    events::append(&mut tx, &RequestContext::system(), &event, 1)
        .await
        .unwrap();
    let dup = NewUser {
        id: "01900000-0000-7000-8000-000000000002",
        email: "taken@example.com",
        ..new
    };
    let err = users::insert(&mut tx, &dup).await.unwrap_err();
    assert!(tessera::store::is_unique_violation(&err));
    drop(tx);
    assert!(
        users::find_by_email(store.pool(), "fresh@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(outbox_len(&app).await, before);
    assert!(events_of(&app, new.id).await.is_empty());
}

async fn admin_token(app: &TestApp) -> String {
    tessera::accounts::create(
        &app.state.store,
        "root@example.com",
        Some(&app.state.passwords.hash(PASSWORD).await.unwrap()),
        Some(1),
        &[tessera::authz::Role::Admin],
        None,
        1,
    )
    .await
    .unwrap();
    Tokens::from(&app.login("root@example.com", PASSWORD).await.body).access
}

async fn admin_pages_through_events_and_deactivates_users(b: Backend) {
    let app = TestApp::spawn(b).await;
    let admin = admin_token(&app).await;
    let user = app.signed_in("gus@example.com").await;
    assert_error(
        &app.get("/admin/events", &user.access).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );

    let total = outbox_len(&app).await;
    let mut seen = Vec::new();
    let mut path = "/admin/events?limit=2".to_string();
    loop {
        let res = app.get(&path, &admin).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        for e in res.body["events"].as_array().unwrap() {
            assert_eq!(e["status"], "pending");
            seen.push(e["seq"].as_i64().unwrap());
        }
        match res.body["next_cursor"].as_str() {
            Some(c) => path = format!("/admin/events?limit=2&after={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len() as i64, total);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let failed = app.get("/admin/events?status=failed", &admin).await;
    assert_eq!(failed.body["events"], json!([]));
    assert_error(
        &app.get("/admin/events?status=bogus", &admin).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let stats = app.get("/admin/events/stats", &admin).await;
    assert_eq!(stats.body["outbox"]["pending"].as_i64().unwrap(), total);
    assert_eq!(stats.body["outbox"]["parked"], 0);

    let id = app.get("/identity/me", &user.access).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/admin/users/{id}/deactivate");
    let res = app
        .request(reqwest::Method::POST, &path, Some(&user.access), None)
        .await;
    assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
    let res = app
        .request(reqwest::Method::POST, &path, Some(&admin), None)
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert_error(
        &app.get("/identity/me", &user.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    assert_error(
        &app.login("gus@example.com", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    // Deactivating again changes nothing and emits nothing more.
    let res = app
        .request(reqwest::Method::POST, &path, Some(&admin), None)
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    let types = event_types_of(&app, &id).await;
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "identity.user.deactivated.v1")
            .count(),
        1,
        "{types:?}"
    );
    let tail: Vec<&str> = types.iter().map(String::as_str).skip(3).take(2).collect();
    assert_eq!(
        tail,
        [
            "identity.session.revoked.v1",
            "identity.user.deactivated.v1"
        ]
    );
}

/// Requests a receiver got: headers and body.
type Seen = Arc<Mutex<Vec<(HashMap<String, String>, String)>>>;

/// A webhook receiver: answers with the queued statuses (then 204) and records each request.
pub(crate) async fn receiver(
    statuses: Vec<u16>,
) -> (String, Arc<Mutex<Vec<(HashMap<String, String>, String)>>>) {
    let seen: Seen = Arc::default();
    let queue = Arc::new(Mutex::new(statuses));
    let record = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let record = Arc::clone(&record);
            let queue = Arc::clone(&queue);
            async move {
                let h = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                    .collect();
                record.lock().unwrap().push((h, body));
                let mut q = queue.lock().unwrap();
                let status = if q.is_empty() { 204 } else { q.remove(0) };
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// The README's verification recipe: HMAC-SHA256 over "<t>.<body>", compared in constant time.
pub(crate) fn verify_signature(secret: &str, header: &str, body: &str) -> bool {
    use aws_lc_rs::hmac;
    let mut t = "";
    let mut v1 = "";
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v,
            Some(("v1", v)) => v1 = v,
            _ => {}
        }
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let Ok(tag) = (0..v1.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(v1.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    hmac::verify(&key, format!("{t}.{body}").as_bytes(), &tag).is_ok()
}

async fn webhooks_receive_signed_events_and_retry_failures(b: Backend) {
    // The process's recorder, before the failure it must count.
    let metrics = tessera::metrics::handle().expect("the metrics recorder");
    let app = TestApp::spawn(b).await;
    let (url, seen) = receiver(vec![500]).await;
    let (hook, secret) = tessera::events::webhooks::add(
        &app.state.store,
        &app.state.master,
        &url,
        &["identity.user.registered.v1".to_string()],
        tessera::audit::By::system(&tessera::context::RequestContext::system()),
        crate::helpers::START,
    )
    .await
    .unwrap();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(hook.events, ["identity.user.registered.v1"]);
    let res = app.register("hal@example.com").await;
    let id = res.body["id"].as_str().unwrap().to_string();

    eventually(10, "the first (failing) delivery", || async {
        seen.lock().unwrap().len() == 1
    })
    .await;
    // The failure is recorded (its retry time set from the clock as it was) before the clock
    // moves; then the retry waits for its backoff (the test clock is fixed until we move it).
    let pool = app.state.store.pool().clone();
    eventually(10, "the failed attempt to be recorded", || {
        let pool = pool.clone();
        async move {
            let rows: Vec<(i64,)> =
                sqlx::query_as("SELECT attempts FROM webhook_deliveries WHERE lease_owner IS NULL")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            rows == vec![(1,)]
        }
    })
    .await;
    let text = metrics.render();
    assert!(
        text.lines()
            .any(|l| l.starts_with(r#"tessera_delivery_failures_total{queue="webhooks"} "#)),
        "{text}"
    );
    app.clock.advance(60);
    eventually(10, "the retried delivery", || async {
        seen.lock().unwrap().len() == 2
    })
    .await;
    let (headers, body) = seen.lock().unwrap()[1].clone();
    let envelope: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(envelope["event_type"], "identity.user.registered.v1");
    assert_eq!(envelope["subject"], id.as_str());
    assert_eq!(
        headers["tessera-event-id"],
        envelope["event_id"].as_str().unwrap()
    );
    let signature = &headers["tessera-signature"];
    assert!(verify_signature(&secret, signature, &body), "{signature}");
    assert!(!verify_signature("whsec_wrong", signature, &body));
    assert!(!verify_signature(
        &secret,
        signature,
        &body.replace("hal@", "eve@")
    ));
    // Only the subscribed type was delivered, and nothing more arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen.lock().unwrap().len(), 2);
    tessera::events::webhooks::remove(
        &app.state.store,
        &hook.id,
        tessera::audit::By::system(&tessera::context::RequestContext::system()),
        app.clock.now(),
    )
    .await
    .unwrap();
    assert!(
        tessera::events::webhooks::list(&app.state.store, &tessera::authz::Principal::System)
            .await
            .unwrap()
            .is_empty()
    );
}

fn relay_config(url: &str, stream: &str, prefix: &str) -> RelayConfig {
    RelayConfig {
        nats_url: url.to_string(),
        subject_prefix: prefix.to_string(),
        stream: stream.to_string(),
        max_attempts: 10,
        lease_secs: 30,
        batch_size: 50,
        poll_interval: Duration::from_millis(20),
    }
}

/// Registers `n` users concurrently (8 at a time); returns their ids.
async fn register_many(app: &TestApp, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let futures = chunk
            .iter()
            .map(|i| app.register_as(format!("user{i}@example.com")));
        for res in futures_util::future::join_all(futures).await {
            assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
            ids.push(res.body["id"].as_str().unwrap().to_string());
        }
    }
    ids
}

/// Every message of the stream, as a JetStream consumer sees them: (event_id, subject, type).
async fn consume_all(js: &jetstream::Context, stream: &str, expected: usize) -> Vec<Value> {
    let stream = js.get_stream(stream).await.unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // Keep reading until the stream has been quiet for a second, so duplicates would show.
    while std::time::Instant::now() < deadline {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        let mut got = 0;
        while let Some(m) = batch.next().await {
            let m = m.unwrap();
            let envelope: Value = serde_json::from_slice(&m.payload).unwrap();
            let msg_id = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.to_string())
                .unwrap_or_default();
            assert_eq!(msg_id, envelope["event_id"].as_str().unwrap());
            assert!(
                m.subject
                    .ends_with(envelope["event_type"].as_str().unwrap())
            );
            out.push(envelope);
            got += 1;
        }
        if got == 0 && out.len() >= expected {
            break;
        }
    }
    out
}

/// Each event exactly once, and each user's events in outbox order.
async fn assert_exactly_once_in_order(app: &TestApp, received: &[Value], ids: &[String]) {
    let all = tessera::events::list(
        &app.state.store,
        &tessera::authz::Principal::System,
        tessera::events::Filter::All,
        None,
        1000,
    )
    .await
    .unwrap()
    .0;
    let expected: HashSet<String> = all
        .iter()
        .map(|e| e.envelope["event_id"].as_str().unwrap().to_string())
        .collect();
    let mut seen = HashSet::new();
    for e in received {
        let id = e["event_id"].as_str().unwrap().to_string();
        assert!(seen.insert(id.clone()), "event {id} arrived twice");
    }
    assert_eq!(seen, expected, "the stream and the outbox differ");
    for user in ids {
        let from_stream: Vec<&str> = received
            .iter()
            .filter(|e| e["subject"] == user.as_str())
            .map(|e| e["event_id"].as_str().unwrap())
            .collect();
        let from_outbox: Vec<String> = events_of(app, user)
            .await
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(from_stream, from_outbox, "events of {user} out of order");
    }
}

async fn relay_delivers_every_event_once_in_order_after_a_broker_outage(b: Backend) {
    let url = nats_url().await;
    let (stream, prefix) = unique_stream();
    // The app's own relay points at an address where no broker listens.
    let app = TestApp::spawn_with(b, |c| {
        c.events.nats_url = Some("nats://127.0.0.1:1".into());
        c.events.stream = stream.clone();
        c.events.subject_prefix = prefix.clone();
        // 200 registrations from one test client: this is about the relay, not rate limits.
        c.rate_limit.enabled = false;
    })
    .await;
    // Three events per registration: the user, their personal tenant, the verification mail.
    let ids = register_many(&app, 200).await;
    let counts = tessera::events::counts(&app.state.store).await.unwrap();
    assert_eq!(
        (counts.pending, counts.published, counts.parked),
        (600, 0, 0)
    );

    // The broker "comes back": a relay with the real address.
    let task = tokio::spawn(relay::run(
        app.state.store.clone(),
        app.clock.clone(),
        relay_config(&url, &stream, &prefix),
        tokio_util::sync::CancellationToken::new(),
    ));
    eventually(60, "all 600 events published", || async {
        tessera::events::counts(&app.state.store)
            .await
            .unwrap()
            .published
            == 600
    })
    .await;
    task.abort();
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    let received = consume_all(&js, &stream, 600).await;
    js.delete_stream(&stream).await.unwrap();
    assert_eq!(received.len(), 600);
    assert_exactly_once_in_order(&app, &received, &ids).await;
}

async fn relay_killed_mid_batch_resumes_without_duplicates_or_reordering(b: Backend) {
    let url = nats_url().await;
    let (stream, prefix) = unique_stream();
    let app = TestApp::spawn_with(b, |c| c.rate_limit.enabled = false).await;
    // Three events per registration: the user, their personal tenant, the verification mail.
    let ids = register_many(&app, 200).await;
    let cfg = relay_config(&url, &stream, &prefix);

    // Relay A publishes exactly two batches, deterministically (rounds driven by hand).
    let js = relay::connect(&cfg).await.unwrap();
    for _ in 0..2 {
        let round = relay::round(&app.state.store, &app.clock, &js, &cfg, "relay-a")
            .await
            .unwrap();
        assert_eq!(round.published, 50);
    }
    assert_eq!(
        tessera::events::counts(&app.state.store)
            .await
            .unwrap()
            .published,
        100
    );

    // The crash window: relay B claims the next batch, publishes it, and dies before marking it.
    let now = app.clock.now();
    let claimed = tessera::store::outbox::claim(
        app.state.store.writer(),
        "relay-b",
        now,
        now + cfg.lease_secs,
        20,
    )
    .await
    .unwrap();
    assert_eq!(claimed.len(), 20);
    let pending = tessera::events::list(
        &app.state.store,
        &tessera::authz::Principal::System,
        tessera::events::Filter::Pending,
        None,
        20,
    )
    .await
    .unwrap()
    .0;
    for e in &pending {
        let subject = format!("{prefix}.{}", e.envelope["event_type"].as_str().unwrap());
        js.send_publish(
            subject,
            jetstream::message::PublishMessage::build()
                .payload(e.envelope.to_string().into())
                .message_id(e.envelope["event_id"].as_str().unwrap()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // While B's lease holds, A publishes nothing that would overtake B's events of a subject.
    // Once it expires, A takes over and publishes everything, B's batch again included.
    app.clock.advance(cfg.lease_secs + 1);
    let mut rounds = 0;
    while tessera::events::counts(&app.state.store)
        .await
        .unwrap()
        .published
        < 600
    {
        relay::round(&app.state.store, &app.clock, &js, &cfg, "relay-a")
            .await
            .unwrap();
        rounds += 1;
        assert!(
            rounds <= 20,
            "the outbox drains in a bounded number of rounds"
        );
    }
    let received = consume_all(&js, &stream, 600).await;
    js.delete_stream(&stream).await.unwrap();
    assert_eq!(received.len(), 600);
    assert_exactly_once_in_order(&app, &received, &ids).await;
}

/// A dead endpoint (accepts, never answers) holds one delivery slot until its timeout; the
/// healthy endpoint's deliveries go out meanwhile.
async fn a_dead_webhook_endpoint_does_not_delay_the_others(b: Backend) {
    let app = TestApp::spawn_with(b, |c| {
        c.events.webhook_timeout_secs = 60;
        c.rate_limit.enabled = false;
    })
    .await;
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/hook", dead.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    tokio::spawn(async move {
        while let Ok((socket, _)) = dead.accept().await {
            keep.lock().unwrap().push(socket);
        }
    });
    let types = ["identity.user.registered.v1".to_string()];
    // The dead endpoint is registered first, so its deliveries are the older ones.
    tessera::events::webhooks::add(
        &app.state.store,
        &app.state.master,
        &dead_url,
        &types,
        tessera::audit::By::system(&tessera::context::RequestContext::system()),
        1,
    )
    .await
    .unwrap();
    let (url, seen) = receiver(vec![]).await;
    tessera::events::webhooks::add(
        &app.state.store,
        &app.state.master,
        &url,
        &types,
        tessera::audit::By::system(&tessera::context::RequestContext::system()),
        1,
    )
    .await
    .unwrap();
    for i in 0..5 {
        app.register(&format!("dw{i}@example.com")).await;
    }
    eventually(20, "the healthy endpoint's five deliveries", || async {
        seen.lock().unwrap().len() == 5
    })
    .await;
    assert!(
        !held.lock().unwrap().is_empty(),
        "the dead endpoint was being delivered to at the same time"
    );
}
