//! The clock. Read once at the edge (a handler, a job) and pass `now` down, so tests can fix it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Seconds since the Unix epoch.
pub type UnixTime = i64;

/// Where "now" comes from: the system clock in production, a settable one in tests.
#[derive(Clone, Debug)]
pub enum Clock {
    System,
    Fixed(Arc<AtomicI64>),
}

impl Clock {
    /// A fixed clock starting at `start`; move it with [`Clock::advance`].
    pub fn fixed(start: UnixTime) -> Self {
        Self::Fixed(Arc::new(AtomicI64::new(start)))
    }

    pub fn now(&self) -> UnixTime {
        match self {
            #[expect(
                clippy::disallowed_methods,
                reason = "the one place that reads the system clock"
            )]
            Self::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default(),
            Self::Fixed(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a fixed clock forward by `secs`. No effect on the system clock.
    pub fn advance(&self, secs: i64) {
        if let Self::Fixed(t) = self {
            t.fetch_add(secs, Ordering::SeqCst);
        }
    }
}

/// RFC 3339 rendering of a Unix time, for API responses.
pub fn rfc3339(t: UnixTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
