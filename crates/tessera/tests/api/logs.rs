//! No secret in the logs: the service's log output, captured at TRACE level during a full flow,
//! contains none of the passwords or tokens used.
//!
//! The subscriber is installed with `set_default` for this test's thread only (a global one can
//! be set once per test binary), so the test runs on a current-thread runtime: the server's
//! tasks, the mail worker and every other background task then run on that same thread and log
//! into the buffer.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::audit::{admin_token, full_flow};
use crate::helpers::{Backend, SmtpSink, TestApp};

#[tokio::test(flavor = "current_thread")]
async fn logs_contain_no_password_or_token_sqlite() {
    no_secret_in_the_logs(Backend::Sqlite).await;
}

#[tokio::test(flavor = "current_thread")]
async fn logs_contain_no_password_or_token_postgres() {
    no_secret_in_the_logs(Backend::Postgres).await;
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn no_secret_in_the_logs(b: Backend) {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with(b, |c| sink.configure(c)).await;
    let admin = admin_token(&app).await;
    let secrets = full_flow(&app, &sink, &admin).await;

    let logs = String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned();
    // The capture works: the service's own request spans and events are in it.
    assert!(logs.contains("correlation_id"), "nothing captured");
    assert!(
        logs.contains("refresh token reuse detected"),
        "service events missing"
    );
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret is in the logs: {secret}"
        );
        let head: String = secret.chars().take(12).collect();
        assert!(
            !logs.contains(&head),
            "a piece of a secret is in the logs: {head}"
        );
    }
}
