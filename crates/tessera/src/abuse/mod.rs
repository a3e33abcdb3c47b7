//! Abuse protection: token-bucket rate limits per route class and key (client IP, submitted
//! account identifier, OAuth client), and per-account brute-force protection with progressive
//! lockout.
//!
//! Everything is keyed by what the caller submitted, whether or not an account exists, so a
//! throttled or locked answer reveals nothing. State is in-process behind [`Limiter`] and
//! [`LoginGuard`]; buckets and counters live in bounded caches.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A bucket: `burst` requests at once, refilled at `per_minute`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
pub struct Limit {
    pub burst: u32,
    pub per_minute: u32,
}

impl Limit {
    pub const fn new(burst: u32, per_minute: u32) -> Self {
        Self { burst, per_minute }
    }
}

/// Limits per route class (see the README for the defaults and their reasoning).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Logins (JSON and hosted page) per client IP.
    pub login_ip: Limit,
    /// Logins per submitted account identifier (all IPs).
    pub login_account: Limit,
    /// Registrations per client IP.
    pub register_ip: Limit,
    /// Password-reset and verification-resend requests per client IP.
    pub recovery_ip: Limit,
    /// The same per submitted email address.
    pub recovery_account: Limit,
    /// Registrations from everyone together (a ceiling on account creation and its mail).
    pub register_global: Limit,
    /// Recovery mail requests from everyone together (protects the mail relay's reputation).
    pub recovery_global: Limit,
    /// Token endpoint requests per client IP.
    pub token_ip: Limit,
    /// Token endpoint requests per OAuth client.
    pub token_client: Limit,
    /// Introspection requests per OAuth client.
    pub introspect_client: Limit,
    /// Failed logins per account and IP before the first lockout.
    pub lockout_threshold: u32,
    /// Failed logins per account from all IPs before an account-wide lockout (known devices,
    /// where the account signed in before, are not blocked by it).
    pub lockout_account_threshold: u32,
    /// First lockout, seconds; doubles with each further failure, up to `lockout_max_secs`.
    pub lockout_base_secs: u64,
    pub lockout_max_secs: u64,
    /// Per-IP limits and lockouts key IPv4 addresses by this prefix length (32: each address).
    pub ipv4_prefix: u8,
    /// ... and IPv6 addresses by this one (64: one customer network, which a single host can
    /// fill with addresses at will).
    pub ipv6_prefix: u8,
}

impl RateLimitConfig {
    /// The key of a client IP for per-IP limits: its network at the configured prefix length,
    /// with IPv4-mapped IPv6 addresses as IPv4. Text that is no IP is kept as it is.
    pub fn ip_key(&self, ip: &str) -> String {
        let Ok(addr) = ip.parse::<std::net::IpAddr>() else {
            return ip.to_string();
        };
        let addr = addr.to_canonical();
        let prefix = if addr.is_ipv4() {
            self.ipv4_prefix.min(32)
        } else {
            self.ipv6_prefix.min(128)
        };
        match ipnet::IpNet::new(addr, prefix) {
            Ok(net) => net.trunc().to_string(),
            Err(_) => addr.to_string(),
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            login_ip: Limit::new(30, 30),
            login_account: Limit::new(10, 10),
            register_ip: Limit::new(10, 5),
            recovery_ip: Limit::new(10, 5),
            recovery_account: Limit::new(3, 1),
            register_global: Limit::new(200, 600),
            recovery_global: Limit::new(200, 600),
            token_ip: Limit::new(600, 6000),
            token_client: Limit::new(300, 3000),
            introspect_client: Limit::new(2000, 60_000),
            lockout_threshold: 5,
            lockout_account_threshold: 20,
            lockout_base_secs: 30,
            lockout_max_secs: 15 * 60,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }
}

/// The route classes that are limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    LoginIp,
    LoginAccount,
    RegisterIp,
    RecoveryIp,
    RecoveryAccount,
    RegisterGlobal,
    RecoveryGlobal,
    TokenIp,
    TokenClient,
    IntrospectClient,
}

impl Class {
    fn is_per_ip(self) -> bool {
        matches!(
            self,
            Class::LoginIp | Class::RegisterIp | Class::RecoveryIp | Class::TokenIp
        )
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: i64,
}

/// Token buckets per (class, key). One small interface, so a shared store can replace it.
#[derive(Clone)]
pub struct Limiter {
    config: Arc<RateLimitConfig>,
    buckets: moka::sync::Cache<(Class, String), Arc<Mutex<Bucket>>>,
}

impl Limiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config: Arc::new(config),
            buckets: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        }
    }

    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    fn limit(&self, class: Class) -> Limit {
        let c = &self.config;
        match class {
            Class::LoginIp => c.login_ip,
            Class::LoginAccount => c.login_account,
            Class::RegisterIp => c.register_ip,
            Class::RecoveryIp => c.recovery_ip,
            Class::RecoveryAccount => c.recovery_account,
            Class::RegisterGlobal => c.register_global,
            Class::RecoveryGlobal => c.recovery_global,
            Class::TokenIp => c.token_ip,
            Class::TokenClient => c.token_client,
            Class::IntrospectClient => c.introspect_client,
        }
    }

    /// Takes one token from the bucket of `class` and `key` at `now`, or says how many seconds
    /// until one is available (the `Retry-After`).
    pub fn check(&self, class: Class, key: &str, now: i64) -> Result<(), Error> {
        self.check_with(class, key, None, now)
    }

    /// [`Self::check`] with `limit` instead of the class's configured one (a client's own
    /// limit).
    pub fn check_with(
        &self,
        class: Class,
        key: &str,
        limit: Option<Limit>,
        now: i64,
    ) -> Result<(), Error> {
        if !self.config.enabled || key.is_empty() {
            return Ok(());
        }
        let limit = limit.unwrap_or_else(|| self.limit(class));
        let key = if class.is_per_ip() {
            self.config.ip_key(key)
        } else {
            key.chars().take(256).collect::<String>()
        };
        let key = (class, key);
        let bucket = self.buckets.get_with(key, || {
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
        Err(Error::TooManyRequests {
            retry_after: wait.max(1),
        })
    }
}

#[derive(Debug, Default)]
struct Failures {
    count: u32,
    locked_until: i64,
    /// Attempts let through and not yet decided (their password check is running).
    pending: u32,
}

type Counters = moka::sync::Cache<String, Arc<Mutex<Failures>>>;

/// An attempt let through by [`LoginGuard::reserve`]: counted as in flight until dropped, so
/// concurrent guesses cannot all pass before the first failure is recorded.
#[must_use]
pub struct Reservation {
    held: Vec<Arc<Mutex<Failures>>>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        for entry in &self.held {
            let mut f = entry.lock().unwrap_or_else(|e| e.into_inner());
            f.pending = f.pending.saturating_sub(1);
        }
    }
}

/// Brute-force protection for password logins.
///
/// Two tiers: failures of one account from one IP lock that pair after `lockout_threshold`
/// (exponential backoff); failures of one account from all IPs lock it account-wide after
/// `lockout_account_threshold`, except from a known device (an IP where the account signed in
/// successfully), so an attacker elsewhere cannot lock a user out of their usual place.
#[derive(Clone)]
pub struct LoginGuard {
    config: Arc<RateLimitConfig>,
    pairs: moka::sync::Cache<String, Arc<Mutex<Failures>>>,
    accounts: moka::sync::Cache<String, Arc<Mutex<Failures>>>,
    known: moka::sync::Cache<String, ()>,
}

/// What a failed attempt led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Counted,
    /// This failure locked the pair or the account, for this many seconds.
    Locked {
        secs: u64,
        account_wide: bool,
    },
}

impl LoginGuard {
    pub fn new(config: &Limiter) -> Self {
        let cache = || {
            moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build()
        };
        Self {
            config: Arc::clone(&config.config),
            pairs: cache(),
            accounts: cache(),
            known: moka::sync::Cache::builder()
                .max_capacity(500_000)
                .time_to_idle(Duration::from_secs(30 * 24 * 3600))
                .build(),
        }
    }

    fn pair_key(&self, account: &str, ip: &str) -> String {
        format!("{account}\u{0}{}", self.config.ip_key(ip))
    }

    /// Reserves an attempt: refused while the pair, or the account (for unknown devices), is
    /// locked, or while as many attempts are already in flight as failures could still be made
    /// before the lock (at least one). The check and the reservation are one step under the
    /// counter's lock, so N concurrent wrong guesses never get more password checks than the
    /// threshold allows.
    pub fn reserve(&self, account: &str, ip: &str, now: i64) -> Result<Reservation, Error> {
        let mut reservation = Reservation { held: Vec::new() };
        if !self.config.enabled {
            return Ok(reservation);
        }
        let pair = self.pair_key(account, ip);
        let known = self.known.contains_key(&pair);
        self.take(
            &self.pairs,
            pair,
            self.config.lockout_threshold,
            now,
            &mut reservation,
        )?;
        if !known {
            self.take(
                &self.accounts,
                account.to_string(),
                self.config.lockout_account_threshold,
                now,
                &mut reservation,
            )?;
        }
        Ok(reservation)
    }

    fn take(
        &self,
        cache: &Counters,
        key: String,
        threshold: u32,
        now: i64,
        reservation: &mut Reservation,
    ) -> Result<(), Error> {
        let entry = cache.get_with(key, || Arc::new(Mutex::new(Failures::default())));
        {
            let mut f = entry.lock().unwrap_or_else(|e| e.into_inner());
            if f.locked_until > now {
                return Err(Error::TooManyRequests {
                    retry_after: (f.locked_until - now) as u64,
                });
            }
            if f.pending >= threshold.saturating_sub(f.count).max(1) {
                return Err(Error::TooManyRequests { retry_after: 1 });
            }
            f.pending += 1;
        }
        reservation.held.push(entry);
        Ok(())
    }

    /// Records a failed attempt.
    pub fn failed(&self, account: &str, ip: &str, now: i64) -> Outcome {
        if !self.config.enabled {
            return Outcome::Counted;
        }
        let bump = |cache: &moka::sync::Cache<String, Arc<Mutex<Failures>>>,
                    key: String,
                    threshold: u32| {
            let entry = cache.get_with(key, || Arc::new(Mutex::new(Failures::default())));
            let mut f = entry.lock().unwrap_or_else(|e| e.into_inner());
            f.count += 1;
            if f.count >= threshold {
                let doublings = (f.count - threshold).min(20);
                let secs = self
                    .config
                    .lockout_base_secs
                    .saturating_mul(1 << doublings)
                    .min(self.config.lockout_max_secs);
                f.locked_until = now + secs as i64;
                Some(secs)
            } else {
                None
            }
        };
        let pair = bump(
            &self.pairs,
            self.pair_key(account, ip),
            self.config.lockout_threshold,
        );
        let wide = bump(
            &self.accounts,
            account.to_string(),
            self.config.lockout_account_threshold,
        );
        // Report the longer of the two locks.
        match (pair, wide) {
            (Some(p), Some(w)) if p > w => Outcome::Locked {
                secs: p,
                account_wide: false,
            },
            (_, Some(secs)) => Outcome::Locked {
                secs,
                account_wide: true,
            },
            (Some(secs), None) => Outcome::Locked {
                secs,
                account_wide: false,
            },
            (None, None) => Outcome::Counted,
        }
    }

    /// Whether this IP signed in to this account before (a known device).
    pub fn is_known(&self, account: &str, ip: &str) -> bool {
        self.known.contains_key(&self.pair_key(account, ip))
    }

    /// Records a success: the pair's failures are forgotten and the IP becomes a known device.
    pub fn succeeded(&self, account: &str, ip: &str) {
        let pair = self.pair_key(account, ip);
        self.pairs.invalidate(&pair);
        self.known.insert(pair, ());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let l = Limiter::new(RateLimitConfig {
            login_ip: Limit::new(3, 60),
            ..Default::default()
        });
        for _ in 0..3 {
            assert!(l.check(Class::LoginIp, "1.2.3.4", 100).is_ok());
        }
        match l.check(Class::LoginIp, "1.2.3.4", 100) {
            Err(Error::TooManyRequests { retry_after }) => assert_eq!(retry_after, 1),
            other => panic!("{other:?}"),
        }
        assert!(
            l.check(Class::LoginIp, "5.6.7.8", 100).is_ok(),
            "other keys have their own bucket"
        );
        assert!(
            l.check(Class::LoginIp, "1.2.3.4", 101).is_ok(),
            "refilled one per second"
        );
        let off = Limiter::new(RateLimitConfig {
            enabled: false,
            ..Default::default()
        });
        for _ in 0..1000 {
            assert!(off.check(Class::LoginIp, "x", 0).is_ok());
        }
    }

    #[test]
    fn per_ip_limits_key_ipv6_by_network_and_mapped_ipv4_as_ipv4() {
        let cfg = RateLimitConfig::default();
        assert_eq!(cfg.ip_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            cfg.ip_key("2001:db8:1:2:ffff::9"),
            cfg.ip_key("2001:db8:1:2::1")
        );
        assert_ne!(cfg.ip_key("2001:db8:1:3::1"), cfg.ip_key("2001:db8:1:2::1"));
        assert_eq!(cfg.ip_key("::ffff:192.0.2.7"), cfg.ip_key("192.0.2.7"));
        assert_eq!(cfg.ip_key("192.0.2.7"), "192.0.2.7/32");
        let wide = RateLimitConfig {
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            ..Default::default()
        };
        assert_eq!(wide.ip_key("192.0.2.7"), "192.0.2.0/24");
        assert_eq!(wide.ip_key("2001:db8:1:2::1"), "2001:db8:1::/48");
        // A whole /64 shares one bucket: rotating addresses in it does not escape the limit.
        let l = Limiter::new(RateLimitConfig {
            login_ip: Limit::new(2, 1),
            ..Default::default()
        });
        assert!(l.check(Class::LoginIp, "2001:db8::1", 0).is_ok());
        assert!(l.check(Class::LoginIp, "2001:db8::2", 0).is_ok());
        assert!(l.check(Class::LoginIp, "2001:db8::3", 0).is_err());
    }

    #[test]
    fn concurrent_attempts_reserve_no_more_checks_than_the_threshold() {
        let g = LoginGuard::new(&Limiter::new(RateLimitConfig {
            lockout_threshold: 3,
            ..Default::default()
        }));
        let held: Vec<Reservation> = (0..3).map(|_| g.reserve("ada", "ip", 0).unwrap()).collect();
        assert!(g.reserve("ada", "ip", 0).is_err(), "a fourth in flight");
        // Two fail: one more check is left before the lock.
        assert_eq!(g.failed("ada", "ip", 0), Outcome::Counted);
        assert_eq!(g.failed("ada", "ip", 0), Outcome::Counted);
        drop(held);
        let last = g.reserve("ada", "ip", 0).unwrap();
        assert!(g.reserve("ada", "ip", 0).is_err());
        drop(last);
        assert!(g.reserve("ada", "ip", 0).is_ok(), "released when dropped");
    }

    #[test]
    fn lockout_backs_off_exponentially_and_spares_known_devices() {
        let cfg = RateLimitConfig {
            lockout_threshold: 3,
            lockout_account_threshold: 6,
            lockout_base_secs: 10,
            lockout_max_secs: 40,
            ..Default::default()
        };
        let g = LoginGuard::new(&Limiter::new(cfg));
        g.succeeded("ada", "home");
        assert_eq!(g.failed("ada", "evil", 0), Outcome::Counted);
        assert_eq!(g.failed("ada", "evil", 0), Outcome::Counted);
        assert_eq!(
            g.failed("ada", "evil", 0),
            Outcome::Locked {
                secs: 10,
                account_wide: false
            }
        );
        assert!(g.reserve("ada", "evil", 5).is_err());
        assert!(g.reserve("ada", "evil", 10).is_ok());
        assert_eq!(
            g.failed("ada", "evil", 10),
            Outcome::Locked {
                secs: 20,
                account_wide: false
            }
        );
        assert_eq!(
            g.failed("ada", "evil", 10),
            Outcome::Locked {
                secs: 40,
                account_wide: false
            }
        );
        assert_eq!(
            g.failed("ada", "evil2", 10),
            Outcome::Locked {
                secs: 10,
                account_wide: true
            }
        );
        assert!(
            g.reserve("ada", "cafe", 11).is_err(),
            "account-wide lock for unknown devices"
        );
        assert!(
            g.reserve("ada", "home", 11).is_ok(),
            "the known device still signs in"
        );
        assert_eq!(
            g.failed("ada", "evil", 60),
            Outcome::Locked {
                secs: 40,
                account_wide: false
            },
            "capped"
        );
    }
}
