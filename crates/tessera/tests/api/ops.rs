//! Health and readiness.

use reqwest::{Method, StatusCode};

use crate::helpers::{Backend, TestApp, assert_error};
use crate::on_both_backends;

on_both_backends!(
    health_and_readiness_report_the_database,
    shutdown_turns_readiness_off_then_drains,
    shutdown_lets_a_webhook_delivery_in_hand_finish,
);

async fn health_and_readiness_report_the_database(b: Backend) {
    let app = TestApp::spawn(b).await;
    let res = app.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (res.status, res.body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let res = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (res.status, res.body["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );
    // The database goes away: the process is still healthy but not ready.
    app.state.store.close().await;
    assert_eq!(
        app.request(Method::GET, "/healthz", None, None)
            .await
            .status,
        StatusCode::OK
    );
    assert_error(
        &app.request(Method::GET, "/readyz", None, None).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
}

/// SIGTERM (here: the shutdown future) turns readiness to 503 at once, keeps serving for the
/// drain delay, then stops taking connections and returns once requests are done.
async fn shutdown_turns_readiness_off_then_drains(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::helpers::database_url(b, dir.path()).await;
    let mut config = crate::helpers::test_config(dir.path(), url);
    config.shutdown.drain_delay_secs = 1;
    config.shutdown.drain_deadline_secs = 5;
    let (app, base) = on_a_port(config).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    stop.send(()).unwrap();
    let began = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["error"], "unavailable", "{body}");
    // Still serving during the delay.
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let result = tokio::time::timeout(std::time::Duration::from_secs(10), running)
        .await
        .expect("the server stops within the drain deadline")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        began.elapsed() >= std::time::Duration::from_millis(900),
        "the drain delay was kept: {:?}",
        began.elapsed()
    );
    assert!(
        reqwest::Client::new()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err(),
        "no connection is taken after the drain"
    );
}

/// A webhook delivery in flight when the signal comes is finished and recorded before the
/// process exits: it is not left leased (to be sent again once the lease expires).
async fn shutdown_lets_a_webhook_delivery_in_hand_finish(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::helpers::database_url(b, dir.path()).await;
    let config = crate::helpers::test_config(dir.path(), url.clone());
    // An endpoint that takes a second to answer, and says when a delivery has arrived.
    let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let endpoint = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let arrived_tx = arrived_tx.clone();
            async move {
                let _ = arrived_tx.send(());
                tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", hook_listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(hook_listener, endpoint).await });

    let (app, base) = on_a_port(config).await;
    tessera::events::webhooks::add(
        &app.state().store,
        &app.state().master,
        &hook,
        &["identity.user.registered.v1".to_string()],
        tessera::audit::By::system(&tessera::context::RequestContext::system()),
        crate::helpers::START,
    )
    .await
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let res = reqwest::Client::new()
        .post(format!("{base}/auth/register"))
        .json(
            &serde_json::json!({"email": "ivy@example.com", "password": crate::helpers::PASSWORD}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let mut arrived = arrived;
    tokio::time::timeout(std::time::Duration::from_secs(10), arrived.recv())
        .await
        .expect("the delivery reaches the endpoint");

    // The signal comes while the endpoint is still answering.
    stop.send(()).unwrap();
    let result = tokio::time::timeout(std::time::Duration::from_secs(20), running)
        .await
        .expect("the server stops")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    // The service closed its pool on the way out.
    let store = tessera::store::Store::connect(&url, 1).await.unwrap();
    let rows: Vec<(String, Option<String>, i64)> =
        sqlx::query_as("SELECT status, lease_owner, attempts FROM webhook_deliveries")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(rows, vec![("delivered".to_string(), None, 1)]);
}

/// The service built on a free loopback port (not yet running), and its base URL.
async fn on_a_port(config: tessera::Config) -> (tessera::App, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = tessera::App::with_listener(
        config,
        tessera::clock::Clock::fixed(crate::helpers::START),
        listener,
    )
    .await
    .unwrap();
    (app, base)
}
