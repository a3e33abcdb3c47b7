//! OpenTelemetry traces, end to end: `tessera serve` exports its spans over OTLP/HTTP to a local
//! receiver, joins the trace of an incoming W3C `traceparent`, and writes that trace id into its
//! logs, the audit entry and the event envelope; the webhook delivery carries the `traceparent`
//! on. The receiver decodes the protobuf export requests as a collector would.
#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on an unexpected result"
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use prost::Message as _;
use serde_json::{Value, json};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

/// A child process killed when the test ends, passing or panicking.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the receiver was sent: (path, headers in lower case, body).
type Received = Arc<Mutex<Vec<(String, Vec<(String, String)>, Vec<u8>)>>>;

/// One loopback HTTP/1.1 server for both the OTLP export (`/v1/traces`) and the webhook
/// (`/hook`), answering 200 to everything.
async fn receiver() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen: Received = Arc::default();
    let all = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let all = Arc::clone(&all);
            tokio::spawn(async move {
                use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
                let mut stream = tokio::io::BufReader::new(stream);
                loop {
                    let mut request_line = String::new();
                    if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = request_line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_string();
                    let (mut headers, mut length) = (Vec::new(), 0usize);
                    loop {
                        let mut line = String::new();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            let (name, value) = (name.to_ascii_lowercase(), value.trim());
                            if name == "content-length" {
                                length = value.parse().unwrap_or(0);
                            }
                            headers.push((name, value.to_string()));
                        }
                    }
                    let mut body = vec![0; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    all.lock().unwrap().push((path, headers, body));
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if stream.get_mut().write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (base, seen)
}

fn tessera(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TESSERA_PASSWORD__ARGON2_MEMORY_KIB", "64")
        .env("TESSERA_PASSWORD__ARGON2_ITERATIONS", "1");
    cmd
}

fn cli(dir: &std::path::Path, args: &[&str]) -> Vec<Value> {
    let out = tessera(dir)
        .env("TESSERA_LOG", "warn")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tessera {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<AnyValue> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.clone())
        .and_then(|v| v.value)
}

async fn until(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_reach_an_otlp_receiver_and_the_trace_id_reaches_logs_audit_events_and_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let (base, received) = receiver().await;
    cli(
        dir.path(),
        &[
            "webhooks",
            "add",
            &format!("{base}/hook"),
            "--events",
            "identity.user.registered.v1",
            "--json",
        ],
    );
    let mut child = Running(
        tessera(dir.path())
            .env("TESSERA_LISTEN", "127.0.0.1:0")
            .env("TESSERA_LOG", "info,tessera=debug")
            .env("TESSERA_LOG_FORMAT", "json")
            .env("TESSERA_TRACES__ENDPOINT", format!("{base}/v1/traces"))
            .env("TESSERA_TRACES__SERVICE_NAME", "tessera-under-test")
            .arg("serve")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if let Some(addr) = v["addr"].as_str() {
            break addr.to_string();
        }
    };
    let log: Arc<Mutex<Vec<Value>>> = Arc::default();
    let logged = Arc::clone(&log);
    let reader = std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                logged.lock().unwrap().push(v);
            }
        }
    });

    let http = reqwest::Client::new();
    let res = http
        .post(format!("http://{addr}/auth/register"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN}-01"))
        .json(&json!({"email": "traced@example.com", "password": "a long quiet passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    // A request without a traceparent starts a trace of its own.
    let res = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // The webhook delivery carries the trace on, and its envelope names it.
    until(30, "the webhook was delivered", || {
        received
            .lock()
            .unwrap()
            .iter()
            .any(|(p, _, _)| p == "/hook")
    })
    .await;
    let (headers, body) = received
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _, _)| p == "/hook")
        .map(|(_, h, b)| (h.clone(), b.clone()))
        .unwrap();
    let traceparent = headers
        .iter()
        .find(|(n, _)| n == "traceparent")
        .map(|(_, v)| v.clone())
        .expect("the webhook delivery has a traceparent header");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts[..2], ["00", TRACE_ID], "{traceparent}");
    assert_ne!(
        parts[2], PARENT_SPAN,
        "the request's own span is the parent"
    );
    let envelope: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(envelope["trace_id"], TRACE_ID, "{envelope}");
    assert_eq!(envelope["traceparent"], traceparent.as_str());

    // SIGTERM: the drain ends with the exporter flushing what it holds.
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap();

    let exports: Vec<ExportTraceServiceRequest> = received
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _, _)| p == "/v1/traces")
        .map(|(_, headers, body)| {
            assert!(
                headers
                    .iter()
                    .any(|(n, v)| n == "content-type" && v == "application/x-protobuf"),
                "{headers:?}"
            );
            ExportTraceServiceRequest::decode(body.as_slice()).unwrap()
        })
        .collect();
    assert!(!exports.is_empty(), "no OTLP export reached the receiver");
    let service_names: Vec<Option<AnyValue>> = exports
        .iter()
        .flat_map(|e| &e.resource_spans)
        .filter_map(|r| r.resource.as_ref())
        .flat_map(|r| &r.attributes)
        .filter(|a| a.key == "service.name")
        .map(|a| a.value.clone().and_then(|v| v.value))
        .collect();
    assert!(
        service_names
            .iter()
            .all(|v| *v == Some(AnyValue::StringValue("tessera-under-test".into()))),
        "{service_names:?}"
    );
    let spans: Vec<Span> = exports
        .into_iter()
        .flat_map(|e| e.resource_spans)
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let register = spans
        .iter()
        .find(|s| s.name == "POST /auth/register")
        .unwrap_or_else(|| panic!("no POST /auth/register span in {names:?}"));
    assert_eq!(hex(&register.trace_id), TRACE_ID);
    assert_eq!(hex(&register.parent_span_id), PARENT_SPAN);
    assert_eq!(register.kind, SpanKind::Server as i32);
    assert_eq!(hex(&register.span_id), parts[2]);
    assert_eq!(
        attribute(register, "http.response.status_code"),
        Some(AnyValue::IntValue(201))
    );
    assert_eq!(
        attribute(register, "http.route"),
        Some(AnyValue::StringValue("/auth/register".into()))
    );
    // The domain function's span is a child of the request's.
    assert!(
        spans
            .iter()
            .any(|s| s.parent_span_id == register.span_id && s.trace_id == register.trace_id),
        "no child span of the request in {names:?}"
    );
    let health = spans
        .iter()
        .find(|s| s.name == "GET /healthz")
        .unwrap_or_else(|| panic!("no GET /healthz span in {names:?}"));
    assert!(health.parent_span_id.is_empty(), "a root span");
    assert_ne!(hex(&health.trace_id), TRACE_ID);

    // The request's log lines name the trace.
    let log = log.lock().unwrap();
    assert!(
        log.iter()
            .any(|l| l["span"]["trace_id"] == TRACE_ID && l["span"]["path"] == "/auth/register"),
        "no log line of the request with its trace id"
    );
    // So does the audit entry of the registration.
    let audit = cli(dir.path(), &["audit", "list", "--json"]);
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "user.register" && e["trace_id"] == TRACE_ID),
        "{audit:?}"
    );
}
