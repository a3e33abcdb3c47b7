//! The in-process implementation of the ephemeral state: token buckets and lockout counters in
//! bounded caches. The default, and the fallback for rate limits when Redis is unreachable.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Backoff, Limit, Refusal};

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: i64,
}

#[derive(Debug, Default)]
struct Failures {
    count: u32,
    locked_until: i64,
    /// Attempts let through and not yet decided (their password check is running).
    pending: u32,
}

/// Token buckets, failure counters and known devices of this process.
#[derive(Clone)]
pub struct Local {
    buckets: moka::sync::Cache<String, Arc<Mutex<Bucket>>>,
    failures: moka::sync::Cache<String, Arc<Mutex<Failures>>>,
    known: moka::sync::Cache<String, ()>,
    /// Values kept for one taker (ceremony state), at most [`super::STASH_MAX_SECS`].
    stash: moka::sync::Cache<String, Arc<[u8]>>,
}

impl Default for Local {
    fn default() -> Self {
        Self {
            buckets: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            failures: moka::sync::Cache::builder()
                .max_capacity(400_000)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
            known: moka::sync::Cache::builder()
                .max_capacity(500_000)
                .time_to_idle(Duration::from_secs(super::KNOWN_DEVICE_SECS))
                .build(),
            // Bounded by bytes (a sealed ceremony is 1 to 3 KiB): abandoned ceremonies cannot
            // grow the process past 32 MiB, whatever the rate of starts.
            stash: moka::sync::Cache::builder()
                .weigher(|k: &String, v: &Arc<[u8]>| {
                    u32::try_from(k.len() + v.len()).unwrap_or(u32::MAX)
                })
                .max_capacity(32 * 1024 * 1024)
                .time_to_live(Duration::from_secs(super::STASH_MAX_SECS))
                .build(),
        }
    }
}

impl Local {
    /// Takes one token from bucket `key`; `Err` holds the seconds until one is available.
    pub fn take(&self, key: &str, limit: Limit, now: i64) -> Result<(), u64> {
        let bucket = self.buckets.get_with_by_ref(key, || {
            Arc::new(Mutex::new(Bucket {
                tokens: f64::from(limit.burst),
                at: now,
            }))
        });
        let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
        let rate = f64::from(limit.per_minute) / 60.0;
        let elapsed = (now - b.at).max(0) as f64;
        b.tokens = (b.tokens + elapsed * rate).min(f64::from(limit.burst));
        b.at = now.max(b.at);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = if rate > 0.0 {
            ((1.0 - b.tokens) / rate).ceil() as u64
        } else {
            3600
        };
        Err(wait.max(1))
    }

    /// See [`super::Shared::reserve`].
    pub fn reserve(&self, key: &str, threshold: u32, now: i64) -> Result<(), Refusal> {
        let entry = self.entry(key);
        let mut f = entry.lock().unwrap_or_else(|e| e.into_inner());
        if f.locked_until > now {
            return Err(Refusal::Locked {
                retry_after: (f.locked_until - now) as u64,
            });
        }
        if f.pending >= threshold.saturating_sub(f.count).max(1) {
            return Err(Refusal::Busy);
        }
        f.pending += 1;
        Ok(())
    }

    pub fn release(&self, key: &str) {
        if let Some(entry) = self.failures.get(key) {
            let mut f = entry.lock().unwrap_or_else(|e| e.into_inner());
            f.pending = f.pending.saturating_sub(1);
        }
    }

    /// See [`super::Shared::fail`].
    pub fn fail(&self, key: &str, threshold: u32, backoff: Backoff, now: i64) -> Option<u64> {
        let entry = self.entry(key);
        let mut f = entry.lock().unwrap_or_else(|e| e.into_inner());
        f.count += 1;
        let secs = backoff.lock_secs(f.count, threshold)?;
        f.locked_until = now + secs as i64;
        Some(secs)
    }

    pub fn clear(&self, key: &str) {
        self.failures.invalidate(key);
    }

    pub fn mark_known(&self, key: &str) {
        self.known.insert(key.to_string(), ());
    }

    pub fn is_known(&self, key: &str) -> bool {
        self.known.contains_key(key)
    }

    pub fn stash(&self, key: &str, value: &[u8]) {
        self.stash.insert(key.to_string(), value.into());
    }

    pub fn take_stashed(&self, key: &str) -> Option<Vec<u8>> {
        self.stash.remove(key).map(|v| v.to_vec())
    }

    fn entry(&self, key: &str) -> Arc<Mutex<Failures>> {
        self.failures
            .get_with_by_ref(key, || Arc::new(Mutex::new(Failures::default())))
    }
}
