//! The OpenAPI document: generated from the router (each route declared once, in its handler),
//! committed as `docs/openapi.json`, served at `/openapi.json`, and true to the router: every
//! route and method is in it, and what it says of security is what the server does.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{Backend, TestApp};

fn committed_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let generated = tessera::http::openapi_json();
    let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json differs from the document the code generates: \
         run `cargo run -q -p tessera-cli -- openapi > docs/openapi.json` and commit it"
    );
}

fn document() -> Value {
    serde_json::from_str(tessera::http::openapi_json()).unwrap()
}

#[test]
fn every_route_of_the_router_is_in_the_document() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented = doc["paths"].as_object().unwrap();
    let undocumented = tessera::http::undocumented();
    let mut missing = Vec::new();
    for path in tessera::http::paths() {
        if !documented.contains_key(&path) && !undocumented.contains(&path.as_str()) {
            missing.push(path);
        }
    }
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    // Only the documentation UI's files and the hosted pages' assets are left out.
    assert!(
        undocumented
            .iter()
            .all(|p| p.starts_with("/docs") || p.starts_with("/assets/")),
        "{undocumented:?}"
    );
    for path in documented.keys() {
        assert!(
            tessera::http::paths().contains(path),
            "{path} is documented but not routed"
        );
    }
}

#[test]
fn every_operation_has_a_unique_id_a_success_response_and_an_error_body() {
    let doc = document();
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default().to_string();
            assert!(
                ids.insert(id.clone()),
                "{method} {path}: operationId {id} repeats"
            );
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses
                    .keys()
                    .any(|s| s.starts_with('2') || s.starts_with('3')),
                "{method} {path}: no success response"
            );
            assert!(
                responses.keys().any(|s| s.starts_with('4')),
                "{method} {path}: no error response"
            );
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path}: no summary"
            );
        }
    }
    // Every `$ref` points at a schema the document has.
    let text = tessera::http::openapi_json();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for piece in text.split("\"#/components/schemas/").skip(1) {
        let name = &piece[..piece.find('"').unwrap()];
        assert!(
            schemas.contains_key(name),
            "a $ref to the unknown schema {name}"
        );
    }
}

/// The methods the router answers on `path` (from the `Allow` of a 405).
async fn methods_of(app: &TestApp, path: &str) -> Vec<String> {
    let res = app
        .client
        .request(
            Method::from_bytes(b"PROPFIND").unwrap(),
            format!("{}{path}", app.base),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
    res.headers()["allow"]
        .to_str()
        .unwrap()
        .split(',')
        .map(|m| m.trim().to_ascii_lowercase())
        .filter(|m| !m.is_empty() && m != "head")
        .collect()
}

fn concrete(path: &str) -> String {
    let mut out = String::new();
    for segment in path.split('/').skip(1) {
        out.push('/');
        if segment.starts_with('{') {
            out.push_str("00000000-0000-7000-8000-000000000000");
        } else {
            out.push_str(segment);
        }
    }
    out
}

/// The served document is the committed one; each documented operation is a method the router
/// answers and the router answers no undocumented method; an operation the document says needs
/// a bearer token refuses a request without one with 401, and one it calls open never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_true_to_the_router() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let res = app.request(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.headers["content-type"], "application/json");
    assert_eq!(res.text, tessera::http::openapi_json());

    let doc = document();
    let mut failures = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url = concrete(path);
        let mut documented: Vec<String> = item.as_object().unwrap().keys().cloned().collect();
        let mut routed = methods_of(&app, &url).await;
        documented.sort();
        routed.sort();
        if documented != routed {
            failures.push(format!(
                "{path}: documented {documented:?}, routed {routed:?}"
            ));
        }
        for (method, op) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let bearer_only = op["security"].as_array().is_some_and(|list| {
                !list.is_empty() && list.iter().all(|r| r.get("bearer").is_some())
            });
            let open = op.get("security").is_none();
            let body = (method != Method::GET).then(|| serde_json::json!({}));
            let status = app.request(method.clone(), &url, None, body).await.status;
            if status.is_server_error()
                || (bearer_only && status != StatusCode::UNAUTHORIZED)
                || (open && status == StatusCode::UNAUTHORIZED && path != "/auth/logout")
            {
                failures.push(format!(
                    "{method} {path} without a token: {status} (security: {})",
                    op.get("security").unwrap_or(&Value::Null)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The documentation UI is served from the binary, under a CSP that allows scripts from this
/// origin only, and points at `/openapi.json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documentation_ui_is_served_offline() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let res = app.request(Method::GET, "/docs/", None, None).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(
        res.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = res.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert!(
        !res.text.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    let init = app
        .request(Method::GET, "/docs/swagger-initializer.js", None, None)
        .await;
    assert_eq!(init.status, StatusCode::OK);
    assert!(init.text.contains("/openapi.json"), "{}", init.text);
    let bundle = app
        .request(Method::GET, "/docs/swagger-ui-bundle.js", None, None)
        .await;
    assert_eq!(bundle.status, StatusCode::OK);
    assert!(bundle.text.len() > 100_000);
    let missing = app.request(Method::GET, "/docs/nope.js", None, None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body["error"], "not_found");
}
