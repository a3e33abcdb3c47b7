//! Health and readiness.

use reqwest::{Method, StatusCode};

use crate::helpers::{Backend, TestApp, assert_error};
use crate::on_both_backends;

on_both_backends!(health_and_readiness_report_the_database);

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
