//! Ephemeral state shared by every replica of Tessera: rate-limit buckets, lockout counters and
//! known devices, and the fan-out that keeps each replica's read caches (live sessions, revoked
//! tokens, users, clients) honest.
//!
//! One interface, [`Shared`], with two implementations: in-process ([`local::Local`], the
//! default, for one replica) and Redis (`TESSERA_REDIS_URL`, for several). Callers never see
//! which one runs.
//!
//! ## When Redis is unreachable
//! Each class of state fails the way that keeps its promise (docs/operations.md says the same):
//! - **Rate limits fail open to in-process buckets**: each replica keeps enforcing the same
//!   limits on what it sees, so an outage multiplies the allowance by the replica count at most
//!   and never turns into an outage of the service.
//! - **Lockout fails closed**: a password check is refused with 503 while the shared counters
//!   cannot be read or written, because a lockout that each replica counts on its own would let
//!   an attacker spread guesses over the replicas. Sessions, refreshes and token validation do
//!   not depend on it and keep working.
//! - **Caches are bypassed**: while the invalidation subscription is down, the live-session,
//!   user and client caches are not consulted (every check reads the database) and they are
//!   emptied when the subscription comes back, so no revocation is missed.

pub mod local;
pub mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use crate::abuse::Limit;
use crate::error::Error;

/// How long a known device (an IP where the account signed in) is remembered, seconds.
pub const KNOWN_DEVICE_SECS: u64 = 30 * 24 * 3600;

/// How long lockout counters are kept after the last failure, seconds.
pub const FAILURE_MEMORY_SECS: u64 = 24 * 3600;

/// The longest a stashed value ([`Shared::stash`]) is kept, seconds.
pub const STASH_MAX_SECS: u64 = 600;

/// A reservation not released (a crashed replica) expires after this many seconds.
pub const RESERVATION_SECS: i64 = 30;

/// Why [`Shared::reserve`] refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The key is locked for this many more seconds.
    Locked { retry_after: u64 },
    /// As many attempts are in flight as failures could still be made before the lock.
    Busy,
}

/// Exponential lockout: `base_secs` at the threshold, doubling per further failure, capped.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base_secs: u64,
    pub max_secs: u64,
}

impl Backoff {
    /// The lock that failure number `count` sets, if it reaches `threshold`.
    pub fn lock_secs(self, count: u32, threshold: u32) -> Option<u64> {
        if count < threshold {
            return None;
        }
        let doublings = (count - threshold).min(20);
        Some(
            self.base_secs
                .saturating_mul(1 << doublings)
                .min(self.max_secs),
        )
    }
}

/// A change another replica must hear of, to drop what it remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// A session (token family) was revoked.
    Session(String),
    /// An access token (`jti`) was revoked (RFC 7009).
    Token(String),
    /// A user changed (roles, status, profile).
    User(String),
    /// An OAuth client changed (secret, status, settings).
    Client(String),
    /// A tenant changed (status, name, custom roles, permissions).
    Tenant(String),
    /// A membership changed: `tenant_id:user_id`.
    Member(String),
    /// An API key changed (revoked, rotated), by the digest of its secret.
    ApiKey(String),
}

impl Invalidation {
    fn encode(&self) -> String {
        match self {
            Self::Session(id) => format!("s:{id}"),
            Self::Token(id) => format!("t:{id}"),
            Self::User(id) => format!("u:{id}"),
            Self::Client(id) => format!("c:{id}"),
            Self::Tenant(id) => format!("n:{id}"),
            Self::Member(key) => format!("m:{key}"),
            Self::ApiKey(hash) => format!("k:{hash}"),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        let (kind, id) = text.split_once(':')?;
        let id = id.to_string();
        Some(match kind {
            "s" => Self::Session(id),
            "t" => Self::Token(id),
            "u" => Self::User(id),
            "c" => Self::Client(id),
            "n" => Self::Tenant(id),
            "m" => Self::Member(id),
            "k" => Self::ApiKey(id),
            _ => return None,
        })
    }
}

/// What a replica does with invalidations: apply one, or forget everything (after a gap in
/// the subscription, when some may have been missed).
pub trait Listener: Send + Sync + 'static {
    fn apply(&self, change: &Invalidation);
    fn forget_all(&self);
}

/// The ephemeral state of this process, in-process or in Redis. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    /// Used by the in-process backend, and by rate limits while Redis is unreachable.
    local: local::Local,
    /// Whether cached reads may be trusted: always with one process; with Redis, only while
    /// the invalidation subscription is up.
    caches_trusted: AtomicBool,
}

enum Backend {
    Local,
    Redis(Box<redis::Redis>),
}

impl Default for Shared {
    fn default() -> Self {
        Self::local()
    }
}

impl Shared {
    /// In-process state (one replica).
    pub fn local() -> Self {
        Self::with(Backend::Local, true)
    }

    /// State in the Redis at `url` (`redis://` or `rediss://`, TLS by rustls on aws-lc-rs,
    /// verified against the PEM authorities in `ca_file` or else the system's trust store), keys
    /// under `prefix`. Fails if the server cannot be reached now (a misconfiguration is caught at
    /// start-up).
    pub async fn connect(
        url: &str,
        prefix: &str,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let redis = redis::Redis::connect(url, prefix, ca_file).await?;
        Ok(Self::with(Backend::Redis(Box::new(redis)), false))
    }

    /// Redis when `redis_url` is set, else in-process.
    pub async fn from_config(config: &crate::config::Config) -> anyhow::Result<Self> {
        use secrecy::ExposeSecret;
        match &config.redis_url {
            Some(url) => {
                Self::connect(
                    url.expose_secret(),
                    &config.redis_prefix,
                    config.redis_ca_file.as_deref(),
                )
                .await
            }
            None => Ok(Self::local()),
        }
    }

    fn with(backend: Backend, trusted: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                local: local::Local::default(),
                caches_trusted: AtomicBool::new(trusted),
            }),
        }
    }

    /// `"in-process"` or `"redis"`.
    pub fn kind(&self) -> &'static str {
        match self.inner.backend {
            Backend::Local => "in-process",
            Backend::Redis(_) => "redis",
        }
    }

    /// Whether read caches may answer (see the module documentation).
    pub fn caches_trusted(&self) -> bool {
        self.inner.caches_trusted.load(Ordering::Acquire)
    }

    /// Takes one token from bucket `key`; `Err` holds the seconds until one is available.
    /// Fails open to an in-process bucket while Redis is unreachable.
    pub async fn take(&self, key: &str, limit: Limit, now: i64) -> Result<(), u64> {
        match &self.inner.backend {
            Backend::Local => self.inner.local.take(key, limit, now),
            Backend::Redis(r) => match r.take(key, limit, now).await {
                Ok(outcome) => outcome,
                Err(()) => self.inner.local.take(key, limit, now),
            },
        }
    }

    /// Reserves one password check on lockout counter `key`: refused while it is locked, or
    /// while as many attempts are in flight as failures could still be made before the lock
    /// (at least one). Check and reservation are one atomic step, so N concurrent wrong
    /// guesses never get more checks than `threshold`. Release with [`Self::release`].
    /// Fails closed (503) while Redis is unreachable.
    pub async fn reserve(
        &self,
        key: &str,
        threshold: u32,
        now: i64,
    ) -> Result<Result<Held, Refusal>, Error> {
        match &self.inner.backend {
            Backend::Local => Ok(self
                .inner
                .local
                .reserve(key, threshold, now)
                .map(|()| Held::new(key, String::new()))),
            Backend::Redis(r) => r
                .reserve(key, threshold, now)
                .await
                .map_err(|()| lockout_unavailable()),
        }
    }

    /// Gives a reservation back (from `Drop`: never blocks).
    pub fn release(&self, held: Held) {
        match &self.inner.backend {
            Backend::Local => self.inner.local.release(&held.key),
            Backend::Redis(r) => r.release(held),
        }
    }

    /// Counts a failure on `key`; returns the lock it set, if any. Fails closed.
    pub async fn fail(
        &self,
        key: &str,
        threshold: u32,
        backoff: Backoff,
        now: i64,
    ) -> Result<Option<u64>, Error> {
        match &self.inner.backend {
            Backend::Local => Ok(self.inner.local.fail(key, threshold, backoff, now)),
            Backend::Redis(r) => r
                .fail(key, threshold, backoff, now)
                .await
                .map_err(|()| lockout_unavailable()),
        }
    }

    /// Forgets the failures of `key` (after a success). Best effort.
    pub async fn clear(&self, key: &str) {
        match &self.inner.backend {
            Backend::Local => self.inner.local.clear(key),
            Backend::Redis(r) => r.clear(key).await,
        }
    }

    /// Remembers `key` as a known device. Best effort.
    pub async fn mark_known(&self, key: &str) {
        match &self.inner.backend {
            Backend::Local => self.inner.local.mark_known(key),
            Backend::Redis(r) => r.mark_known(key).await,
        }
    }

    /// Whether `key` is a known device; while Redis is unreachable, no device is known (the
    /// stricter answer).
    pub async fn is_known(&self, key: &str) -> bool {
        match &self.inner.backend {
            Backend::Local => self.inner.local.is_known(key),
            Backend::Redis(r) => r.is_known(key).await,
        }
    }

    /// Keeps `value` under `key` for one [`Self::take_stashed`], for `ttl_secs` (at most
    /// [`STASH_MAX_SECS`]): the state of a WebAuthn ceremony between its two requests, which
    /// may reach different replicas. Fails closed (503) while Redis is unreachable.
    pub async fn stash(&self, key: &str, value: &[u8], ttl_secs: u64) -> Result<(), Error> {
        match &self.inner.backend {
            Backend::Local => {
                self.inner.local.stash(key, value);
                Ok(())
            }
            Backend::Redis(r) => r
                .stash(key, value, ttl_secs.min(STASH_MAX_SECS))
                .await
                .map_err(|()| stash_unavailable()),
        }
    }

    /// The value stashed under `key`, removed in the same step (so two takers never both get
    /// it). Fails closed.
    pub async fn take_stashed(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        match &self.inner.backend {
            Backend::Local => Ok(self.inner.local.take_stashed(key)),
            Backend::Redis(r) => r.take_stashed(key).await.map_err(|()| stash_unavailable()),
        }
    }

    /// Tells the other replicas of a change; returns once every subscribed replica has
    /// confirmed that it applied it (at most [`redis::ACK_WAIT`]), so a revocation is refused
    /// everywhere before the request that made it answers. With one process, nothing to do (the
    /// caller has changed its own caches). Best effort: a replica that misses it has lost its
    /// subscription and bypasses its caches until it is back.
    pub async fn publish(&self, change: &Invalidation) {
        if let Backend::Redis(r) = &self.inner.backend {
            r.publish(&change.encode()).await;
        }
    }

    /// Applies other replicas' invalidations to `listener` until the process ends. Returns at
    /// once for the in-process backend.
    pub async fn listen(self, listener: Arc<dyn Listener>) {
        let Backend::Redis(r) = &self.inner.backend else {
            return;
        };
        loop {
            let gate = &self.inner.caches_trusted;
            r.subscribe(&mut |message| match message {
                redis::Message::Subscribed => {
                    // Whatever was cached before may have missed changes.
                    listener.forget_all();
                    gate.store(true, Ordering::Release);
                }
                redis::Message::Payload(text) => match Invalidation::decode(text) {
                    Some(change) => listener.apply(&change),
                    None => tracing::warn!("ignoring an unknown invalidation message"),
                },
            })
            .await;
            gate.store(false, Ordering::Release);
            listener.forget_all();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn stash_unavailable() -> Error {
    Error::Unavailable("passkeys are briefly unavailable (the shared state is unreachable)")
}

fn lockout_unavailable() -> Error {
    Error::Unavailable("sign-in is briefly unavailable (the lockout store is unreachable)")
}

/// A reservation on a lockout counter.
#[derive(Debug)]
pub struct Held {
    key: String,
    id: String,
}

impl Held {
    fn new(key: &str, id: String) -> Self {
        Self {
            key: key.to_string(),
            id,
        }
    }
}

/// A read cache whose entries are dropped by invalidations, and not consulted while they
/// cannot arrive (see [`Shared::caches_trusted`]).
#[derive(Clone)]
pub struct Cache<V: Clone + Send + Sync + 'static> {
    entries: moka::sync::Cache<String, V>,
    shared: Shared,
    change: fn(String) -> Invalidation,
}

impl<V: Clone + Send + Sync + 'static> Cache<V> {
    /// A cache of at most `capacity` entries kept `ttl` each; `change` names what an
    /// invalidation of a key tells the other replicas.
    pub fn new(
        shared: &Shared,
        capacity: u64,
        ttl: Duration,
        change: fn(String) -> Invalidation,
    ) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            shared: shared.clone(),
            change,
        }
    }

    /// Drops `key` here and on every other replica.
    pub async fn invalidate(&self, key: &str) {
        self.entries.invalidate(key);
        self.shared.publish(&(self.change)(key.to_string())).await;
    }

    pub fn get(&self, key: &str) -> Option<V> {
        if !self.shared.caches_trusted() {
            return None;
        }
        self.entries.get(key)
    }

    pub fn insert(&self, key: &str, value: V) {
        self.entries.insert(key.to_string(), value);
    }

    /// Drops `key` here only (an invalidation heard from another replica).
    pub fn forget(&self, key: &str) {
        self.entries.invalidate(key);
    }

    pub fn forget_all(&self) {
        self.entries.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidations_round_trip_and_unknown_kinds_are_refused() {
        for change in [
            Invalidation::Session("tss_1:2".into()),
            Invalidation::Token("jti".into()),
            Invalidation::User("u".into()),
            Invalidation::Client("c".into()),
        ] {
            assert_eq!(Invalidation::decode(&change.encode()), Some(change));
        }
        assert_eq!(Invalidation::decode("x:1"), None);
        assert_eq!(Invalidation::decode("nothing"), None);
    }

    #[test]
    fn backoff_doubles_from_the_threshold_and_is_capped() {
        let b = Backoff {
            base_secs: 10,
            max_secs: 40,
        };
        assert_eq!(b.lock_secs(2, 3), None);
        assert_eq!(b.lock_secs(3, 3), Some(10));
        assert_eq!(b.lock_secs(4, 3), Some(20));
        assert_eq!(b.lock_secs(9, 3), Some(40));
        assert_eq!(b.lock_secs(u32::MAX, 3), Some(40));
    }
}
