//! Who is asking, for the record: the request's correlation id and trace, the client's IP and
//! user agent.
//! Domain functions that write sessions, events or audit entries take a [`RequestContext`].

/// Facts about the request a change is made for.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The request's `X-Correlation-ID` (accepted or generated); empty outside a request.
    pub correlation_id: String,
    /// The W3C trace context the request runs in (its span's, or the caller's `traceparent`).
    pub trace: Option<crate::telemetry::TraceParent>,
    /// The client's IP address (from the socket).
    pub ip: Option<String>,
    /// The client's `User-Agent`, truncated to 256 characters.
    pub user_agent: Option<String>,
}

impl RequestContext {
    /// A context for work that no HTTP request started (CLI, background jobs).
    pub fn system() -> Self {
        Self {
            correlation_id: uuid::Uuid::now_v7().to_string(),
            trace: None,
            ip: None,
            user_agent: None,
        }
    }
}
