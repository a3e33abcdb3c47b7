//! Logging and traces. Logs: `tracing` to stderr as text or JSON, level from `TESSERA_LOG` or
//! `RUST_LOG` (default `info`). Traces: OpenTelemetry over OTLP/HTTP (protobuf), off unless
//! `TESSERA_TRACES__ENDPOINT` is set. Request spans carry the correlation id and the W3C trace
//! id; secrets are never logged nor put on a span.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::TracesConfig;

/// Whether spans are exported (set once by [`init`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The installed tracer provider, flushed by [`shutdown`].
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber: logs, and the OTLP exporter when `traces.endpoint` is set.
/// Safe to call more than once (later calls do nothing). Fails only when the exporter cannot
/// be built from the configuration.
pub fn init(format: &str, traces: &TracesConfig) -> anyhow::Result<()> {
    let filter = std::env::var("TESSERA_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info,sqlx=warn".into());
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let layer = || tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if format == "json" {
        let json = layer().json().flatten_event(true).with_current_span(true);
        json.boxed()
    } else {
        layer().compact().boxed()
    };
    let otel = match &traces.endpoint {
        Some(endpoint) if PROVIDER.get().is_none() => {
            let provider = provider(endpoint, traces)?;
            let tracer = provider.tracer("tessera");
            let _ = PROVIDER.set(provider);
            EXPORTING.store(true, Ordering::Relaxed);
            // Tessera's own spans at info and above, whatever the log level: the exporter's
            // HTTP client (and sqlx, hyper) stay out, or exporting would trace itself.
            let ours = Targets::new().with_target("tessera", Level::INFO);
            Some(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(ours),
            )
        }
        _ => None,
    };
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(otel)
        .try_init();
    Ok(())
}

/// The OTLP/HTTP exporter behind a batch processor (its own thread, so the blocking client),
/// sampling `traces.sample_ratio` of the traces that do not arrive with a decision of their own
/// (a `traceparent`'s sampled flag is followed: `ParentBased`).
fn provider(endpoint: &str, traces: &TracesConfig) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(10))
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(traces.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            traces.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// Whether spans are exported: the HTTP layer adds the OpenTelemetry fields only then.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Sends the spans still buffered and stops the exporter. Blocking (the exporter's client is):
/// call it from `spawn_blocking` or after the runtime.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.shutdown()
    {
        eprintln!("tessera: flushing traces failed: {e}");
    }
}

/// The trace a request arrived in: its W3C `traceparent` (and `tracestate`), if valid.
pub fn remote_parent(headers: &dyn Extractor) -> Option<opentelemetry::Context> {
    if !well_formed(headers.get("traceparent")?) {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(headers);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The shape of a `traceparent` (W3C Trace Context §3.2.2): `version-trace_id-parent_id-flags`
/// in lowercase hex of 2, 32, 16 and 2 digits, version `ff` forbidden, and nothing after the
/// flags in version 00 (a later version may add fields, §3.2.4). The propagator alone would
/// take a short trace id and pad it with zeros: a different trace.
fn well_formed(value: &str) -> bool {
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let parts: Vec<&str> = value.trim().split('-').collect();
    match parts.as_slice() {
        [version, trace_id, parent_id, flags, rest @ ..] => {
            hex(version, 2)
                && *version != "ff"
                && (rest.is_empty() || *version != "00")
                && hex(trace_id, 32)
                && hex(parent_id, 16)
                && hex(flags, 2)
        }
        _ => false,
    }
}

/// Makes `span` a child of `parent` and returns the W3C trace context the request runs in:
/// the exported span's own when traces are on, else the caller's `traceparent` passed through
/// (so logs, audit entries and events still name the caller's trace).
pub fn join(span: &tracing::Span, parent: Option<opentelemetry::Context>) -> Option<TraceParent> {
    if let Some(cx) = &parent {
        // Only fails when no OpenTelemetry layer is installed (traces off).
        let _ = span.set_parent(cx.clone());
    }
    if exporting() {
        let own = span.context().span().span_context().clone();
        if own.is_valid() {
            return Some(TraceParent::of(&own));
        }
    }
    parent.map(|cx| TraceParent::of(cx.span().span_context()))
}

/// A W3C trace context (`traceparent`): the trace id, the span to parent on, the sampled flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    pub sampled: bool,
}

impl TraceParent {
    fn of(cx: &SpanContext) -> Self {
        Self {
            trace_id: cx.trace_id().to_string(),
            span_id: cx.span_id().to_string(),
            sampled: cx.is_sampled(),
        }
    }

    /// The `traceparent` header value (W3C Trace Context §3.2, version 00).
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id,
            self.span_id,
            if self.sampled { "01" } else { "00" }
        )
    }

    /// Parses a `traceparent` value (as stored with an event).
    pub fn parse(value: &str) -> Option<Self> {
        struct One<'a>(&'a str);
        impl Extractor for One<'_> {
            fn get(&self, key: &str) -> Option<&str> {
                (key == "traceparent").then_some(self.0)
            }
            fn keys(&self) -> Vec<&str> {
                vec!["traceparent"]
            }
        }
        remote_parent(&One(value)).map(|cx| Self::of(cx.span().span_context()))
    }
}

#[cfg(test)]
mod tests {
    use super::TraceParent;

    #[test]
    fn a_traceparent_is_taken_only_in_its_exact_shape() {
        let id = "0af7651916cd43dd8448eb211c80319c";
        let good = format!("00-{id}-b7ad6b7169203331-01");
        let parsed = TraceParent::parse(&good).expect("valid");
        assert_eq!(parsed.trace_id, id);
        assert_eq!(parsed.span_id, "b7ad6b7169203331");
        assert!(parsed.sampled);
        assert_eq!(parsed.header(), good);
        let unsampled = TraceParent::parse(&format!("00-{id}-b7ad6b7169203331-00")).unwrap();
        assert!(!unsampled.sampled);
        // A later version may carry more fields after the flags (§3.2.4).
        assert!(TraceParent::parse(&format!("01-{id}-b7ad6b7169203331-01-extra")).is_some());
        for bad in [
            "00-0af7651916cd43dd-b7ad6b7169203331-01".to_string(),
            format!("00-{}-b7ad6b7169203331-01", "0".repeat(32)),
            format!("00-{id}-{}-01", "0".repeat(16)),
            format!("00-{}-b7ad6b7169203331-01", id.to_uppercase()),
            format!("ff-{id}-b7ad6b7169203331-01"),
            format!("00-{id}-b7ad6b7169203331-01-extra"),
            format!("00-{id}-b7ad6b716920333-01"),
            format!("00-{id}-b7ad6b7169203331"),
            "garbage".into(),
            String::new(),
        ] {
            assert!(TraceParent::parse(&bad).is_none(), "{bad}");
        }
    }
}
