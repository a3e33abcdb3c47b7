//! Abuse protection: token-bucket rate limits per route class and key (client IP, submitted
//! account identifier, OAuth client), and per-account brute-force protection with progressive
//! lockout. The state lives in [`crate::shared`] (in-process, or Redis for several replicas).
//!
//! Everything is keyed by what the caller submitted, whether or not an account exists, so a
//! throttled or locked answer reveals nothing.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::shared::{Backoff, Held, Refusal, Shared};

/// A bucket: `burst` requests at once, refilled at `per_minute`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Limit {
    pub burst: u32,
    pub per_minute: u32,
}

impl Limit {
    pub const fn new(burst: u32, per_minute: u32) -> Self {
        Self { burst, per_minute }
    }
}

/// Limits per route class (see docs/security.md for the defaults and their reasoning).
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
    /// Requests authenticated by a tenant's API keys (the plan's rate, per tenant).
    ApiKeyTenant,
}

impl Class {
    fn is_per_ip(self) -> bool {
        matches!(
            self,
            Class::LoginIp | Class::RegisterIp | Class::RecoveryIp | Class::TokenIp
        )
    }
}

impl Class {
    /// The class's name in shared-state keys.
    fn as_str(self) -> &'static str {
        match self {
            Class::LoginIp => "login_ip",
            Class::LoginAccount => "login_account",
            Class::RegisterIp => "register_ip",
            Class::RecoveryIp => "recovery_ip",
            Class::RecoveryAccount => "recovery_account",
            Class::RegisterGlobal => "register_global",
            Class::RecoveryGlobal => "recovery_global",
            Class::TokenIp => "token_ip",
            Class::TokenClient => "token_client",
            Class::IntrospectClient => "introspect_client",
            Class::ApiKeyTenant => "api_key_tenant",
        }
    }
}

/// Token buckets per (class, key), kept in [`Shared`] (in-process, or Redis for several
/// replicas).
#[derive(Clone)]
pub struct Limiter {
    config: Arc<RateLimitConfig>,
    shared: Shared,
}

impl Limiter {
    pub fn new(config: RateLimitConfig, shared: Shared) -> Self {
        Self {
            config: Arc::new(config),
            shared,
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
            Class::ApiKeyTenant => Limit::new(600, 600),
        }
    }

    /// Takes one token from the bucket of `class` and `key` at `now`, or says how many seconds
    /// until one is available (the `Retry-After`).
    pub async fn check(&self, class: Class, key: &str, now: i64) -> Result<(), Error> {
        self.check_with(class, key, None, now).await
    }

    /// [`Self::check`] with `limit` instead of the class's configured one (a client's own
    /// limit).
    pub async fn check_with(
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
        let bucket = format!("{}:{key}", class.as_str());
        self.shared
            .take(&bucket, limit, now)
            .await
            .map_err(|retry_after| {
                crate::metrics::throttled(class.as_str());
                Error::TooManyRequests { retry_after }
            })
    }
}

/// An attempt let through by [`LoginGuard::reserve`]: counted as in flight until dropped, so
/// concurrent guesses cannot all pass before the first failure is recorded.
#[must_use]
pub struct Reservation {
    shared: Shared,
    held: Vec<Held>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        for held in self.held.drain(..) {
            self.shared.release(held);
        }
    }
}

/// Brute-force protection for password logins.
///
/// Two tiers: failures of one account from one IP lock that pair after `lockout_threshold`
/// (exponential backoff); failures of one account from all IPs lock it account-wide after
/// `lockout_account_threshold`, except from a known device (an IP where the account signed in
/// successfully), so an attacker elsewhere cannot lock a user out of their usual place.
/// Counters live in [`Shared`]; with Redis they hold across replicas, and the checks fail
/// closed while Redis is unreachable.
#[derive(Clone)]
pub struct LoginGuard {
    config: Arc<RateLimitConfig>,
    shared: Shared,
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
    pub fn new(limiter: &Limiter) -> Self {
        Self {
            config: Arc::clone(&limiter.config),
            shared: limiter.shared.clone(),
        }
    }

    fn pair_key(&self, account: &str, ip: &str) -> String {
        let account: String = account.chars().take(256).collect();
        format!("pair:{account}\u{0}{}", self.config.ip_key(ip))
    }

    fn account_key(account: &str) -> String {
        let account: String = account.chars().take(256).collect();
        format!("account:{account}")
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            base_secs: self.config.lockout_base_secs,
            max_secs: self.config.lockout_max_secs,
        }
    }

    /// Reserves an attempt: refused while the pair, or the account (for unknown devices), is
    /// locked, or while as many attempts are already in flight as failures could still be made
    /// before the lock (at least one). The check and the reservation are one atomic step, so N
    /// concurrent wrong guesses never get more password checks than the threshold allows.
    pub async fn reserve(&self, account: &str, ip: &str, now: i64) -> Result<Reservation, Error> {
        let known = self.is_known(account, ip).await;
        self.reserve_known(account, ip, known, now).await
    }

    /// [`Self::reserve`] when the caller has already asked [`Self::is_known`] (one shared-state
    /// read per login, not two).
    pub async fn reserve_known(
        &self,
        account: &str,
        ip: &str,
        known: bool,
        now: i64,
    ) -> Result<Reservation, Error> {
        let mut reservation = Reservation {
            shared: self.shared.clone(),
            held: Vec::new(),
        };
        if !self.config.enabled {
            return Ok(reservation);
        }
        let pair = self.pair_key(account, ip);
        let mut tiers = vec![(pair, self.config.lockout_threshold)];
        if !known {
            tiers.push((
                Self::account_key(account),
                self.config.lockout_account_threshold,
            ));
        }
        for (key, threshold) in tiers {
            match self.shared.reserve(&key, threshold, now).await? {
                Ok(held) => reservation.held.push(held),
                Err(Refusal::Locked { retry_after }) => {
                    crate::metrics::login("password", "locked");
                    crate::metrics::throttled("lockout");
                    return Err(Error::TooManyRequests { retry_after });
                }
                Err(Refusal::Busy) => return Err(Error::TooManyRequests { retry_after: 1 }),
            }
        }
        Ok(reservation)
    }

    /// Records a failed attempt.
    pub async fn failed(&self, account: &str, ip: &str, now: i64) -> Result<Outcome, Error> {
        if !self.config.enabled {
            return Ok(Outcome::Counted);
        }
        let backoff = self.backoff();
        let pair = self
            .shared
            .fail(
                &self.pair_key(account, ip),
                self.config.lockout_threshold,
                backoff,
                now,
            )
            .await?;
        let wide = self
            .shared
            .fail(
                &Self::account_key(account),
                self.config.lockout_account_threshold,
                backoff,
                now,
            )
            .await?;
        // Report the longer of the two locks.
        Ok(match (pair, wide) {
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
        })
    }

    /// Whether this IP signed in to this account before (a known device).
    pub async fn is_known(&self, account: &str, ip: &str) -> bool {
        self.shared.is_known(&self.pair_key(account, ip)).await
    }

    /// Records a success: the pair's failures are forgotten and the IP becomes a known device.
    pub async fn succeeded(&self, account: &str, ip: &str) {
        let pair = self.pair_key(account, ip);
        self.shared.clear(&pair).await;
        self.shared.mark_known(&pair).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
