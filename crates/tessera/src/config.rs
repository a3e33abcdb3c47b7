//! Configuration: defaults, then an optional TOML file, then `TESSERA_*` environment variables
//! (`__` for nesting: `TESSERA_PASSWORD__MIN_LENGTH`). The environment wins. [`Config::load`]
//! validates everything up front so a bad value stops start-up with a message naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Environment variables that belong to Tessera but are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &["TESSERA_CONFIG", "TESSERA_LOG", "TESSERA_TEST_DATABASE_URL"];

/// Every configuration key, as its environment variable without `TESSERA_` (the rate-limit
/// classes, `RATE_LIMIT__*`, are open-ended). A test holds this list, `check-config`'s output and
/// docs/configuration.md to one another.
const KNOWN_ENV_KEYS: &[&str] = &[
    "LISTEN",
    "ISSUER",
    "AUDIENCE",
    "DATA_DIR",
    "DATABASE_URL",
    "DATABASE_MAX_CONNECTIONS",
    "MASTER_KEY",
    "ACCESS_TOKEN_TTL",
    "REFRESH_TOKEN_TTL",
    "SESSION_MAX_AGE",
    "REFRESH_REUSE_GRACE",
    "SIGNING_ALG",
    "HS256_SECRET",
    "BODY_LIMIT",
    "LOG_FORMAT",
    "AUTHORIZATION_CODE_TTL",
    "BROWSER_SESSION_TTL",
    "TEMPLATES_DIR",
    "PASSWORD__ARGON2_MEMORY_KIB",
    "PASSWORD__ARGON2_ITERATIONS",
    "PASSWORD__ARGON2_PARALLELISM",
    "PASSWORD__MIN_LENGTH",
    "PASSWORD__MAX_CONCURRENT_HASHES",
    "PASSWORD__MAX_QUEUED_HASHES",
    "PUBLIC_URL",
    "VERIFY_EMAIL_URL",
    "RESET_PASSWORD_URL",
    "INVITATION_URL",
    "INVITATION_TTL",
    "REQUIRE_VERIFIED_EMAIL",
    "VERIFICATION_TOKEN_TTL",
    "RESET_TOKEN_TTL",
    "MAIL__TRANSPORT",
    "MAIL__FROM",
    "MAIL__SMTP_HOST",
    "MAIL__SMTP_PORT",
    "MAIL__SMTP_TLS",
    "MAIL__SMTP_USERNAME",
    "MAIL__SMTP_PASSWORD",
    "MAIL__TEMPLATES_DIR",
    "MAIL__MAX_ATTEMPTS",
    "MAIL__POLL_INTERVAL_MS",
    "EVENTS__NATS_URL",
    "EVENTS__SUBJECT_PREFIX",
    "EVENTS__STREAM",
    "EVENTS__MAX_ATTEMPTS",
    "EVENTS__LEASE_SECS",
    "EVENTS__BATCH_SIZE",
    "EVENTS__POLL_INTERVAL_MS",
    "EVENTS__WEBHOOK_MAX_ATTEMPTS",
    "EVENTS__WEBHOOK_TIMEOUT_SECS",
    "EVENTS__WEBHOOK_CONCURRENCY",
    "TRUSTED_PROXIES",
    "MASTER_KEY_PREVIOUS",
    "CORS_ORIGINS",
    "KEY_ROTATION_DAYS",
    "AUDIT__RETENTION_DAYS",
    "AUDIT__PURGE_INTERVAL_SECS",
    "REDIS_URL",
    "REDIS_PREFIX",
    "REDIS_CA_FILE",
    "METRICS__TOKEN",
    "METRICS__LISTEN",
    "SHUTDOWN__DRAIN_DELAY_SECS",
    "SHUTDOWN__DRAIN_DEADLINE_SECS",
    "METRICS__ENABLED",
    "TRACES__ENDPOINT",
    "TRACES__SAMPLE_RATIO",
    "TRACES__SERVICE_NAME",
];

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address and port to listen on.
    pub listen: String,
    /// The issuer (`iss`) of every token: the public base URL of this service.
    pub issuer: String,
    /// The audience (`aud`) of first-party access tokens; defaults to the issuer.
    pub audience: Option<String>,
    /// Where the SQLite file, the generated master key and the mail outbox live.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; defaults to `sqlite://<data_dir>/tessera.db`.
    pub database_url: Option<String>,
    /// Maximum connections in the database pool.
    pub database_max_connections: u32,
    /// Base64 of 32 bytes. Without it a key file is generated in `data_dir` (development only).
    pub master_key: Option<SecretString>,
    /// The previous master key during a master-key change-over: still opens secrets sealed
    /// under it (run `tessera master-key rotate` to re-seal them, then remove this).
    pub master_key_previous: Option<SecretString>,
    /// Access-token lifetime, seconds.
    pub access_token_ttl: u64,
    /// Refresh-token lifetime, seconds (sliding: each rotation issues a token with this lifetime).
    pub refresh_token_ttl: u64,
    /// Absolute session lifetime, seconds: no refresh extends a session past it.
    pub session_max_age: u64,
    /// Seconds after a rotation in which the previous refresh token of a first-party session
    /// still rotates (concurrent refreshes from one app) instead of counting as reuse. 0 (the
    /// default, RFC 9700 §4.14.2): any reuse revokes the family. At most 60. OAuth clients have
    /// their own setting.
    pub refresh_reuse_grace: u64,
    /// RS256 (default), ES256, EdDSA, or HS256 (only with `hs256_secret`, never published).
    pub signing_alg: String,
    /// Shared secret for HS256, at least 32 bytes. Only read when `signing_alg = "HS256"`.
    pub hs256_secret: Option<SecretString>,
    /// Largest accepted request body, bytes.
    pub body_limit: usize,
    /// Lifetime of OAuth authorization codes, seconds.
    pub authorization_code_ttl: u64,
    /// Lifetime of the hosted pages' login (SSO) session, seconds.
    pub browser_session_ttl: u64,
    /// A directory whose files override the built-in page templates, stylesheet and logo.
    pub templates_dir: Option<PathBuf>,
    /// Log format: `text` or `json`.
    pub log_format: String,
    pub password: PasswordConfig,
    /// Public base URL of the pages in emails (`<public_url>/verify-email?token=…`); defaults to
    /// the issuer.
    pub public_url: Option<String>,
    /// Link template of verification emails, with `{token}` (a front end's page); overrides
    /// `public_url` for that flow.
    pub verify_email_url: Option<String>,
    /// Link template of password-reset emails, with `{token}`.
    pub reset_password_url: Option<String>,
    /// Link template of invitation emails, with `{token}` (the application's page that calls
    /// `POST /invitations/accept`).
    pub invitation_url: Option<String>,
    /// Seconds an invitation stays valid (default 7 days).
    pub invitation_ttl: u64,
    /// Refuse login (403 `email_not_verified`) until the email is verified.
    pub require_verified_email: bool,
    /// Lifetime of email-verification tokens, seconds.
    pub verification_token_ttl: u64,
    /// Lifetime of password-reset tokens, seconds.
    pub reset_token_ttl: u64,
    pub mail: MailConfig,
    pub events: EventsConfig,
    /// Rate limits and brute-force lockout (`TESSERA_RATE_LIMIT__LOGIN_IP__BURST`, …).
    pub rate_limit: crate::abuse::RateLimitConfig,
    /// Proxies whose `X-Forwarded-For` is believed (comma-separated IPs or CIDRs). Empty: the
    /// client IP is the socket's peer.
    pub trusted_proxies: String,
    /// Browser origins allowed to call the JSON API (comma-separated). Empty: CORS off.
    pub cors_origins: String,
    /// Days between automatic signing-key rotations; 0 turns them off.
    pub key_rotation_days: u64,
    pub audit: AuditConfig,
    /// `redis://…` or `rediss://…`: keep rate limits, lockout counters and cache invalidation in
    /// Redis, shared by every replica. Unset: in-process (one replica).
    pub redis_url: Option<SecretString>,
    /// Prefix of every Redis key and channel (several deployments on one Redis).
    pub redis_prefix: String,
    /// PEM file of the certificate authorities that sign a `rediss://` server's certificate.
    /// Unset: the system's trust store.
    pub redis_ca_file: Option<PathBuf>,
    pub metrics: MetricsConfig,
    pub traces: TracesConfig,
    pub shutdown: ShutdownConfig,
}

/// Graceful shutdown on SIGTERM or Ctrl-C.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ShutdownConfig {
    /// Seconds to keep taking new requests after the signal, with readiness already 503.
    pub drain_delay_secs: u64,
    /// Seconds in-flight requests then get to finish before the process exits anyway.
    pub drain_deadline_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_delay_secs: 0,
            drain_deadline_secs: 30,
        }
    }
}

/// OpenTelemetry traces over OTLP/HTTP (protobuf).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct TracesConfig {
    /// The collector's OTLP/HTTP traces URL, used as given (for example
    /// `http://127.0.0.1:4318/v1/traces`). Unset: no spans are exported.
    pub endpoint: Option<String>,
    /// The share of new traces that are sampled, 0.0 to 1.0; a request that arrives with a
    /// `traceparent` follows its sampled flag.
    pub sample_ratio: f64,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            sample_ratio: 1.0,
            service_name: "tessera".into(),
        }
    }
}

/// `/metrics` (Prometheus text format).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct MetricsConfig {
    /// Record metrics at all. `false`: nothing is recorded and `/metrics` answers 404 (for
    /// measuring what recording costs, or a deployment that does not scrape).
    pub enabled: bool,
    /// A bearer credential that may scrape `/metrics` (besides administrators' tokens).
    pub token: Option<SecretString>,
    /// Also serve `/metrics`, without a credential, on this address (for example
    /// `127.0.0.1:9464`, reachable only by the scraper).
    pub listen: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            token: None,
            listen: None,
        }
    }
}

/// The audit log's retention.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct AuditConfig {
    /// Entries older than this many days are deleted by the purge job; 0 keeps them forever.
    pub retention_days: u32,
    /// How often `tessera serve` purges, seconds.
    pub purge_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention_days: 365,
            purge_interval_secs: 3600,
        }
    }
}

/// Outgoing mail.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct MailConfig {
    /// `file` (writes .eml files to `<data_dir>/mail/`), `smtp`, or `events` (no mail: the link
    /// travels in the `…requested` events for an event-driven mailer).
    pub transport: String,
    /// The `From:` address.
    pub from: String,
    pub smtp_host: Option<String>,
    /// Defaults to 587 (starttls), 465 (tls) or 25 (none).
    pub smtp_port: Option<u16>,
    /// `starttls` (default), `tls` (implicit TLS) or `none` (plain text; local relays only).
    pub smtp_tls: String,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<SecretString>,
    /// Directory of templates overriding the built-in ones (`verify_email.subject`,
    /// `verify_email.txt`, `verify_email.html`, same for `reset_password`).
    pub templates_dir: Option<PathBuf>,
    /// Delivery attempts before a mail job is given up.
    pub max_attempts: u32,
    /// How often the mail worker looks for work, milliseconds.
    pub poll_interval_ms: u64,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            transport: "file".into(),
            from: "Tessera <no-reply@localhost>".into(),
            smtp_host: None,
            smtp_port: None,
            smtp_tls: "starttls".into(),
            smtp_username: None,
            smtp_password: None,
            templates_dir: None,
            max_attempts: 10,
            poll_interval_ms: 1000,
        }
    }
}

/// Domain events: the outbox relay to NATS JetStream and webhooks.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct EventsConfig {
    /// `nats://host:4222`; without it no relay runs and events stay queryable in the outbox.
    pub nats_url: Option<String>,
    /// Subjects are `<subject_prefix>.<event_type>`.
    pub subject_prefix: String,
    /// The JetStream stream (created if missing) covering `<subject_prefix>.>`.
    pub stream: String,
    /// Failed publish attempts before an event is parked.
    pub max_attempts: u32,
    /// Seconds a relay owns the rows it claimed.
    pub lease_secs: u64,
    /// Events claimed per round.
    pub batch_size: u32,
    /// How often the relay and the webhook dispatcher look for work, milliseconds.
    pub poll_interval_ms: u64,
    /// Failed attempts before a webhook delivery is parked.
    pub webhook_max_attempts: u32,
    /// Timeout of one webhook request, seconds.
    pub webhook_timeout_secs: u64,
    /// Webhook requests in flight at most (per replica).
    pub webhook_concurrency: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            nats_url: None,
            subject_prefix: "tessera".into(),
            stream: "TESSERA".into(),
            max_attempts: 10,
            lease_secs: 30,
            batch_size: 100,
            poll_interval_ms: 200,
            webhook_max_attempts: 12,
            webhook_timeout_secs: 10,
            webhook_concurrency: 16,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct PasswordConfig {
    /// Argon2id memory cost in KiB (OWASP: 19456).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations (OWASP: 2).
    pub argon2_iterations: u32,
    /// Argon2id lanes (OWASP: 1).
    pub argon2_parallelism: u32,
    /// Minimum password length in characters (NIST SP 800-63B: 8).
    pub min_length: usize,
    /// Hashes computed at once; defaults to the number of CPU cores.
    pub max_concurrent_hashes: Option<usize>,
    /// Hashes running or waiting at most; beyond it, logins and registrations get 429 at once.
    /// Defaults to 32 per hashing thread (about 0.6 s of waiting at OWASP parameters).
    pub max_queued_hashes: Option<usize>,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            min_length: 8,
            max_concurrent_hashes: None,
            max_queued_hashes: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:7005".into(),
            issuer: "http://localhost:7005".into(),
            audience: None,
            data_dir: PathBuf::from("tessera-data"),
            database_url: None,
            database_max_connections: 8,
            master_key: None,
            master_key_previous: None,
            access_token_ttl: 900,
            refresh_token_ttl: 7 * 24 * 3600,
            session_max_age: 30 * 24 * 3600,
            refresh_reuse_grace: 0,
            signing_alg: "RS256".into(),
            hs256_secret: None,
            body_limit: 64 * 1024,
            authorization_code_ttl: 60,
            browser_session_ttl: 12 * 3600,
            templates_dir: None,
            log_format: "text".into(),
            password: PasswordConfig::default(),
            public_url: None,
            verify_email_url: None,
            reset_password_url: None,
            invitation_url: None,
            invitation_ttl: 7 * 24 * 3600,
            require_verified_email: false,
            verification_token_ttl: 24 * 3600,
            reset_token_ttl: 3600,
            mail: MailConfig::default(),
            events: EventsConfig::default(),
            rate_limit: crate::abuse::RateLimitConfig::default(),
            trusted_proxies: String::new(),
            cors_origins: String::new(),
            key_rotation_days: 30,
            redis_url: None,
            redis_prefix: "tessera:".into(),
            redis_ca_file: None,
            audit: AuditConfig::default(),
            metrics: MetricsConfig::default(),
            traces: TracesConfig::default(),
            shutdown: ShutdownConfig::default(),
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        problem: problem.into(),
    }
}

pub const SIGNING_ALGS: &[&str] = &["RS256", "ES256", "EdDSA", "HS256"];

impl Config {
    /// Loads defaults, then `file` (if any), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    /// Like [`Config::load`] with an explicit environment (used by tests).
    pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.exists() {
                return Err(invalid(
                    "config file",
                    format!("{} does not exist", path.display()),
                ));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let vars: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("TESSERA_") && !NON_CONFIG_ENV.contains(&k.as_str()))
            .cloned()
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("TESSERA")
                .prefix_separator("_")
                .separator("__")
                .source(Some(vars)),
        );
        let raw = builder
            .build()
            .map_err(|e| invalid("config", e.to_string()))?;
        let cfg: Config = raw.try_deserialize().map_err(|e| {
            let text = e.to_string();
            let key = text
                .split("for key `")
                .nth(1)
                .and_then(|s| s.split('`').next())
                .map(|k| format!("TESSERA_{}", k.replace('.', "__").to_uppercase()))
                .unwrap_or_else(|| "config".into());
            invalid(&key, text)
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// `TESSERA_*` variables that name no configuration key (typos), for a start-up warning.
    pub fn unknown_env_keys(env: &[(String, String)]) -> Vec<String> {
        env.iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with("TESSERA_") && !NON_CONFIG_ENV.contains(&k.as_str()))
            .filter(|k| {
                !KNOWN_ENV_KEYS.contains(&&k["TESSERA_".len()..])
                    && !k.starts_with("TESSERA_RATE_LIMIT__")
            })
            .cloned()
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.redis_url {
            let url = url.expose_secret();
            if !(url.starts_with("redis://") || url.starts_with("rediss://"))
                || crate::urls::canonical(url).is_err()
            {
                return Err(invalid(
                    "TESSERA_REDIS_URL",
                    "must be a redis:// or rediss:// URL",
                ));
            }
        }
        if self.redis_ca_file.is_some()
            && !self
                .redis_url
                .as_ref()
                .is_some_and(|u| u.expose_secret().starts_with("rediss://"))
        {
            return Err(invalid(
                "TESSERA_REDIS_CA_FILE",
                "needs a rediss:// TESSERA_REDIS_URL (the file is only used for TLS)",
            ));
        }
        for net in self
            .trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            if crate::http::client_ip::parse_net(net).is_none() {
                return Err(invalid(
                    "TESSERA_TRUSTED_PROXIES",
                    format!("{net:?} is not an IP address or CIDR"),
                ));
            }
        }
        for origin in self
            .cors_origins
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            if !(origin.starts_with("https://") || origin.starts_with("http://"))
                || origin.ends_with('/')
                || origin == "*"
            {
                return Err(invalid(
                    "TESSERA_CORS_ORIGINS",
                    format!("{origin:?} must be an origin like https://app.example.com"),
                ));
            }
        }
        if self.key_rotation_days > 3650 {
            return Err(invalid("TESSERA_KEY_ROTATION_DAYS", "must be at most 3650"));
        }
        self.listen_addr()?;
        for (key, url) in [
            ("TESSERA_ISSUER", Some(&self.issuer)),
            ("TESSERA_AUDIENCE", self.audience.as_ref()),
            ("TESSERA_PUBLIC_URL", self.public_url.as_ref()),
        ] {
            let Some(url) = url else { continue };
            if let Err(problem) = crate::urls::http_url(url) {
                return Err(invalid(key, format!("{problem}, got {url:?}")));
            }
            if url.ends_with('/') || url.contains(['?', '#']) {
                return Err(invalid(
                    key,
                    "must have no trailing slash, query or fragment",
                ));
            }
        }
        let url = self.database_url();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "TESSERA_DATABASE_URL",
                "must start with sqlite: or postgres://",
            ));
        }
        if self.database_max_connections == 0 {
            return Err(invalid(
                "TESSERA_DATABASE_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        if let Some(key) = &self.master_key_previous {
            crate::crypto::MasterKey::from_base64(key.expose_secret())
                .map_err(|e| invalid("TESSERA_MASTER_KEY_PREVIOUS", e.to_string()))?;
        }
        if let Some(key) = &self.master_key {
            crate::crypto::MasterKey::from_base64(key.expose_secret())
                .map_err(|e| invalid("TESSERA_MASTER_KEY", e.to_string()))?;
        }
        for (key, v) in [
            ("TESSERA_ACCESS_TOKEN_TTL", self.access_token_ttl),
            ("TESSERA_REFRESH_TOKEN_TTL", self.refresh_token_ttl),
            ("TESSERA_SESSION_MAX_AGE", self.session_max_age),
        ] {
            if v == 0 || v > 10 * 365 * 24 * 3600 {
                return Err(invalid(key, "must be between 1 second and 10 years"));
            }
        }
        if !(1..=600).contains(&self.authorization_code_ttl) {
            return Err(invalid(
                "TESSERA_AUTHORIZATION_CODE_TTL",
                "must be between 1 and 600 seconds",
            ));
        }
        if !(60..=30 * 24 * 3600).contains(&self.browser_session_ttl) {
            return Err(invalid(
                "TESSERA_BROWSER_SESSION_TTL",
                "must be between 60 seconds and 30 days",
            ));
        }
        if let Some(dir) = &self.templates_dir
            && !dir.is_dir()
        {
            return Err(invalid(
                "TESSERA_TEMPLATES_DIR",
                format!("{} is not a directory", dir.display()),
            ));
        }
        if self.refresh_reuse_grace > 60 {
            return Err(invalid(
                "TESSERA_REFRESH_REUSE_GRACE",
                "must be at most 60 seconds",
            ));
        }
        if !SIGNING_ALGS.contains(&self.signing_alg.as_str()) {
            return Err(invalid(
                "TESSERA_SIGNING_ALG",
                format!("must be one of {SIGNING_ALGS:?}"),
            ));
        }
        if self.signing_alg == "HS256" {
            match &self.hs256_secret {
                Some(s) if s.expose_secret().len() >= 32 => {}
                _ => {
                    return Err(invalid(
                        "TESSERA_HS256_SECRET",
                        "HS256 needs a shared secret of at least 32 bytes",
                    ));
                }
            }
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.body_limit) {
            return Err(invalid(
                "TESSERA_BODY_LIMIT",
                "must be between 1024 and 16777216 bytes",
            ));
        }
        if !["text", "json"].contains(&self.log_format.as_str()) {
            return Err(invalid("TESSERA_LOG_FORMAT", "must be text or json"));
        }
        let p = &self.password;
        if p.argon2_memory_kib < 8 * p.argon2_parallelism.max(1)
            || p.argon2_memory_kib > 4 * 1024 * 1024
        {
            return Err(invalid(
                "TESSERA_PASSWORD__ARGON2_MEMORY_KIB",
                "must be between 8×parallelism and 4194304",
            ));
        }
        if !(1..=64).contains(&p.argon2_iterations) {
            return Err(invalid(
                "TESSERA_PASSWORD__ARGON2_ITERATIONS",
                "must be between 1 and 64",
            ));
        }
        if !(1..=16).contains(&p.argon2_parallelism) {
            return Err(invalid(
                "TESSERA_PASSWORD__ARGON2_PARALLELISM",
                "must be between 1 and 16",
            ));
        }
        if !(8..=256).contains(&p.min_length) {
            return Err(invalid(
                "TESSERA_PASSWORD__MIN_LENGTH",
                "must be between 8 and 256",
            ));
        }
        if p.max_concurrent_hashes == Some(0) {
            return Err(invalid(
                "TESSERA_PASSWORD__MAX_CONCURRENT_HASHES",
                "must be at least 1",
            ));
        }
        if self.shutdown.drain_delay_secs > 300 {
            return Err(invalid(
                "TESSERA_SHUTDOWN__DRAIN_DELAY_SECS",
                "must be at most 300",
            ));
        }
        if self.shutdown.drain_deadline_secs > 3600 {
            return Err(invalid(
                "TESSERA_SHUTDOWN__DRAIN_DEADLINE_SECS",
                "must be at most 3600",
            ));
        }
        if self.metrics.listen.is_some() && !self.metrics.enabled {
            return Err(invalid(
                "TESSERA_METRICS__LISTEN",
                "is set while TESSERA_METRICS__ENABLED is false",
            ));
        }
        if let Some(addr) = &self.metrics.listen
            && addr.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "TESSERA_METRICS__LISTEN",
                "must be an address and port such as 127.0.0.1:9464",
            ));
        }
        if let Some(endpoint) = &self.traces.endpoint {
            let ok = url::Url::parse(endpoint)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(invalid(
                    "TESSERA_TRACES__ENDPOINT",
                    "must be an http(s) URL such as http://127.0.0.1:4318/v1/traces",
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.traces.sample_ratio) {
            return Err(invalid(
                "TESSERA_TRACES__SAMPLE_RATIO",
                "must be between 0.0 and 1.0",
            ));
        }
        if self.traces.service_name.trim().is_empty() {
            return Err(invalid("TESSERA_TRACES__SERVICE_NAME", "must not be empty"));
        }
        if self.audit.retention_days > 100 * 365 {
            return Err(invalid(
                "TESSERA_AUDIT__RETENTION_DAYS",
                "must be at most 36500 (0 keeps entries forever)",
            ));
        }
        if !(60..=7 * 24 * 3600).contains(&self.audit.purge_interval_secs) {
            return Err(invalid(
                "TESSERA_AUDIT__PURGE_INTERVAL_SECS",
                "must be between 60 seconds and 7 days",
            ));
        }
        self.validate_mail_and_events()
    }

    fn validate_mail_and_events(&self) -> Result<(), ConfigError> {
        for (key, url) in [
            ("TESSERA_VERIFY_EMAIL_URL", &self.verify_email_url),
            ("TESSERA_RESET_PASSWORD_URL", &self.reset_password_url),
            ("TESSERA_INVITATION_URL", &self.invitation_url),
        ] {
            let Some(url) = url else { continue };
            if crate::urls::http_url(&url.replace("{token}", "TOKEN")).is_err()
                || url.matches("{token}").count() != 1
            {
                return Err(invalid(
                    key,
                    "must be an absolute http(s) URL containing {token} once",
                ));
            }
        }
        for (key, v) in [
            (
                "TESSERA_VERIFICATION_TOKEN_TTL",
                self.verification_token_ttl,
            ),
            ("TESSERA_RESET_TOKEN_TTL", self.reset_token_ttl),
            ("TESSERA_INVITATION_TTL", self.invitation_ttl),
        ] {
            if !(60..=30 * 24 * 3600).contains(&v) {
                return Err(invalid(key, "must be between 60 seconds and 30 days"));
            }
        }
        let m = &self.mail;
        if !["file", "smtp", "events"].contains(&m.transport.as_str()) {
            return Err(invalid(
                "TESSERA_MAIL__TRANSPORT",
                "must be file, smtp or events",
            ));
        }
        if m.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(invalid(
                "TESSERA_MAIL__FROM",
                format!(
                    "must be an address like `Name <user@host>`, got {:?}",
                    m.from
                ),
            ));
        }
        if !["starttls", "tls", "none"].contains(&m.smtp_tls.as_str()) {
            return Err(invalid(
                "TESSERA_MAIL__SMTP_TLS",
                "must be starttls, tls or none",
            ));
        }
        if m.transport == "smtp" && m.smtp_host.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                "TESSERA_MAIL__SMTP_HOST",
                "is required with TESSERA_MAIL__TRANSPORT=smtp",
            ));
        }
        if m.smtp_password.is_some() && m.smtp_username.is_none() {
            return Err(invalid(
                "TESSERA_MAIL__SMTP_USERNAME",
                "is required with TESSERA_MAIL__SMTP_PASSWORD",
            ));
        }
        if let Some(dir) = &m.templates_dir
            && !dir.is_dir()
        {
            return Err(invalid(
                "TESSERA_MAIL__TEMPLATES_DIR",
                format!("{} is not a directory", dir.display()),
            ));
        }
        for (key, v) in [
            ("TESSERA_MAIL__MAX_ATTEMPTS", m.max_attempts),
            ("TESSERA_EVENTS__MAX_ATTEMPTS", self.events.max_attempts),
            (
                "TESSERA_EVENTS__WEBHOOK_MAX_ATTEMPTS",
                self.events.webhook_max_attempts,
            ),
        ] {
            if !(1..=100).contains(&v) {
                return Err(invalid(key, "must be between 1 and 100"));
            }
        }
        let e = &self.events;
        if let Some(url) = &e.nats_url
            && !(url.starts_with("nats://") || url.starts_with("tls://"))
        {
            return Err(invalid(
                "TESSERA_EVENTS__NATS_URL",
                "must start with nats:// or tls://",
            ));
        }
        let token_ok = |s: &str, dots: bool| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (dots && b == b'.')
                })
                && !s.starts_with('.')
                && !s.ends_with('.')
        };
        if !token_ok(&e.subject_prefix, true) {
            return Err(invalid(
                "TESSERA_EVENTS__SUBJECT_PREFIX",
                "must be 1-64 characters of letters, digits, _ - and inner dots",
            ));
        }
        if !token_ok(&e.stream, false) {
            return Err(invalid(
                "TESSERA_EVENTS__STREAM",
                "must be 1-64 characters of letters, digits, _ and -",
            ));
        }
        if !(5..=3600).contains(&e.lease_secs) {
            return Err(invalid(
                "TESSERA_EVENTS__LEASE_SECS",
                "must be between 5 and 3600",
            ));
        }
        if !(1..=1000).contains(&e.batch_size) {
            return Err(invalid(
                "TESSERA_EVENTS__BATCH_SIZE",
                "must be between 1 and 1000",
            ));
        }
        for (key, v) in [
            ("TESSERA_EVENTS__POLL_INTERVAL_MS", e.poll_interval_ms),
            ("TESSERA_MAIL__POLL_INTERVAL_MS", m.poll_interval_ms),
        ] {
            if !(10..=60_000).contains(&v) {
                return Err(invalid(key, "must be between 10 and 60000"));
            }
        }
        if !(1..=256).contains(&e.webhook_concurrency) {
            return Err(invalid(
                "TESSERA_EVENTS__WEBHOOK_CONCURRENCY",
                "must be between 1 and 256",
            ));
        }
        if !(1..=120).contains(&e.webhook_timeout_secs) {
            return Err(invalid(
                "TESSERA_EVENTS__WEBHOOK_TIMEOUT_SECS",
                "must be between 1 and 120",
            ));
        }
        Ok(())
    }

    /// The base URL of the pages linked from emails.
    pub fn public_url(&self) -> &str {
        self.public_url.as_deref().unwrap_or(&self.issuer)
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            invalid(
                "TESSERA_LISTEN",
                format!("must be address:port, got {:?}", self.listen),
            )
        })
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("tessera.db").display()
            )
        })
    }

    pub fn audience(&self) -> &str {
        self.audience.as_deref().unwrap_or(&self.issuer)
    }

    /// The effective configuration as JSON, secrets redacted (for `tessera check-config`).
    pub fn redacted(&self) -> serde_json::Value {
        let secret = |s: &Option<SecretString>| match s {
            Some(_) => serde_json::Value::from("<redacted>"),
            None => serde_json::Value::Null,
        };
        serde_json::json!({
            "listen": self.listen,
            "issuer": self.issuer,
            "audience": self.audience(),
            "data_dir": self.data_dir,
            "database_url": redact_url(&self.database_url()),
            "database_max_connections": self.database_max_connections,
            "master_key": match &self.master_key {
                Some(_) => "<redacted>".to_string(),
                None => format!("<generated file {}>", self.data_dir.join("master.key").display()),
            },
            "access_token_ttl": self.access_token_ttl,
            "refresh_token_ttl": self.refresh_token_ttl,
            "session_max_age": self.session_max_age,
            "refresh_reuse_grace": self.refresh_reuse_grace,
            "signing_alg": self.signing_alg,
            "hs256_secret": secret(&self.hs256_secret),
            "body_limit": self.body_limit,
            "authorization_code_ttl": self.authorization_code_ttl,
            "browser_session_ttl": self.browser_session_ttl,
            "templates_dir": self.templates_dir,
            "log_format": self.log_format,
            "password": self.password,
            "rate_limit": self.rate_limit,
            "trusted_proxies": self.trusted_proxies,
            "cors_origins": self.cors_origins,
            "key_rotation_days": self.key_rotation_days,
            "master_key_previous": secret(&self.master_key_previous),
            "public_url": self.public_url(),
            "verify_email_url": self.verify_email_url,
            "reset_password_url": self.reset_password_url,
            "invitation_url": self.invitation_url,
            "invitation_ttl": self.invitation_ttl,
            "require_verified_email": self.require_verified_email,
            "verification_token_ttl": self.verification_token_ttl,
            "reset_token_ttl": self.reset_token_ttl,
            "mail": {
                "transport": self.mail.transport,
                "from": self.mail.from,
                "smtp_host": self.mail.smtp_host,
                "smtp_port": self.mail.smtp_port,
                "smtp_tls": self.mail.smtp_tls,
                "smtp_username": self.mail.smtp_username,
                "smtp_password": secret(&self.mail.smtp_password),
                "templates_dir": self.mail.templates_dir,
                "max_attempts": self.mail.max_attempts,
                "poll_interval_ms": self.mail.poll_interval_ms,
            },
            "events": {
                "nats_url": self.events.nats_url.as_deref().map(redact_url),
                "subject_prefix": self.events.subject_prefix,
                "stream": self.events.stream,
                "max_attempts": self.events.max_attempts,
                "lease_secs": self.events.lease_secs,
                "batch_size": self.events.batch_size,
                "poll_interval_ms": self.events.poll_interval_ms,
                "webhook_max_attempts": self.events.webhook_max_attempts,
                "webhook_timeout_secs": self.events.webhook_timeout_secs,
                "webhook_concurrency": self.events.webhook_concurrency,
            },
            "audit": self.audit,
            "redis": {
                "url": self.redis_url.as_ref().map(|u| redact_url(u.expose_secret())),
                "prefix": self.redis_prefix,
                "ca_file": self.redis_ca_file,
            },
            "shutdown": self.shutdown,
            "metrics": {
                "enabled": self.metrics.enabled,
                "token": self.metrics.token.as_ref().map(|_| "[redacted]"),
                "listen": self.metrics.listen,
            },
            "traces": {
                "endpoint": self.traces.endpoint.as_deref().map(redact_url),
                "sample_ratio": self.traces.sample_ratio,
                "service_name": self.traces.service_name,
            },
        })
    }
}

/// Hides credentials in a URL: the password (or a token-only userinfo, as in `nats://TOKEN@host`)
/// and `password`/`token` query values.
pub fn redact_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let mut out = url[..start].to_string();
    match url[start..end].rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => out.push_str(&format!("{user}:<redacted>@{host}")),
            None => out.push_str(&format!("<redacted>@{host}")),
        },
        None => out.push_str(&url[start..end]),
    }
    let rest = &url[end..];
    match rest.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _))
                        if ["password", "sslpassword", "token", "pass"]
                            .contains(&k.to_ascii_lowercase().as_str()) =>
                    {
                        format!("{k}=<redacted>")
                    }
                    _ => kv.to_string(),
                })
                .collect();
            out.push_str(&format!("{path}?{}", query.join("&")));
        }
        None => out.push_str(rest),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys `check-config` prints, as environment variables without `TESSERA_`.
    fn printed_keys(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        let serde_json::Value::Object(map) = v else {
            out.push(prefix.to_string());
            return;
        };
        for (k, child) in map {
            let name = match prefix {
                "" => k.to_uppercase(),
                // `redis_url`, `redis_prefix`, `redis_ca_file` are printed as one object.
                "REDIS" => format!("REDIS_{}", k.to_uppercase()),
                p => format!("{p}__{}", k.to_uppercase()),
            };
            if name == "RATE_LIMIT" {
                continue;
            }
            printed_keys(&name, child, out);
        }
    }

    /// packaging/tessera.toml is a configuration Tessera accepts, and means what it says.
    #[test]
    fn the_example_configuration_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/tessera.toml");
        let cfg = Config::load_from(Some(&path), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.issuer, "https://id.example.com");
        assert!(cfg.database_url().starts_with("postgres://"));
        assert_eq!(cfg.password.min_length, 10);
        assert_eq!(cfg.mail.transport, "smtp");
        assert_eq!(
            cfg.events.nats_url.as_deref(),
            Some("nats://nats.internal:4222")
        );
        assert_eq!(cfg.audit.retention_days, 730);
        // Every key of the file is a configuration key (a typo would be silently ignored).
        let text = std::fs::read_to_string(&path).unwrap();
        let mut table = String::new();
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                table = format!("{}__", name.to_uppercase());
            } else if let Some((key, _)) = line.split_once(" = ")
                && !line.starts_with('#')
            {
                let key = format!("{table}{}", key.to_uppercase());
                assert!(KNOWN_ENV_KEYS.contains(&key.as_str()), "{key} in {path:?}");
            }
        }
    }

    #[test]
    fn every_key_is_known_printed_and_documented() {
        let docs = include_str!("../../../docs/configuration.md");
        let documented: std::collections::BTreeSet<&str> = docs
            .split('`')
            .filter_map(|t| t.strip_prefix("TESSERA_"))
            .filter(|t| {
                !t.is_empty()
                    && t.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            })
            .filter(|t| !t.starts_with("RATE_LIMIT__"))
            .filter(|t| !NON_CONFIG_ENV.contains(&format!("TESSERA_{t}").as_str()))
            .collect();
        let known: std::collections::BTreeSet<&str> = KNOWN_ENV_KEYS.iter().copied().collect();
        let undocumented: Vec<_> = known.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "not in docs/configuration.md: {undocumented:?}"
        );
        let unknown: Vec<_> = documented.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "documented but not configuration keys: {unknown:?}"
        );

        let mut printed = Vec::new();
        printed_keys("", &Config::default().redacted(), &mut printed);
        let printed: std::collections::BTreeSet<&str> =
            printed.iter().map(String::as_str).collect();
        let missing: Vec<_> = known.difference(&printed).collect();
        assert!(missing.is_empty(), "not shown by check-config: {missing:?}");
        let extra: Vec<_> = printed.difference(&known).collect();
        assert!(
            extra.is_empty(),
            "shown by check-config but not a key: {extra:?}"
        );
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_zero_config() {
        let cfg = Config::load_from(None, &[]).unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:7005");
        assert_eq!(cfg.issuer, "http://localhost:7005");
        assert_eq!(cfg.access_token_ttl, 900);
        assert!(
            cfg.database_url()
                .starts_with("sqlite://tessera-data/tessera.db")
        );
    }

    #[test]
    fn audit_retention_is_configurable_and_checked() {
        let cfg = Config::load_from(None, &[]).unwrap();
        assert_eq!(cfg.audit.retention_days, 365);
        let cfg =
            Config::load_from(None, &env(&[("TESSERA_AUDIT__RETENTION_DAYS", "30")])).unwrap();
        assert_eq!(cfg.audit.retention_days, 30);
        assert!(
            Config::unknown_env_keys(&env(&[("TESSERA_AUDIT__RETENTION_DAYS", "30")])).is_empty()
        );
        let err = Config::load_from(None, &env(&[("TESSERA_AUDIT__RETENTION_DAYS", "99999")]))
            .unwrap_err();
        assert_eq!(err.key, "TESSERA_AUDIT__RETENTION_DAYS");
        let err = Config::load_from(None, &env(&[("TESSERA_AUDIT__PURGE_INTERVAL_SECS", "1")]))
            .unwrap_err();
        assert_eq!(err.key, "TESSERA_AUDIT__PURGE_INTERVAL_SECS");
        assert_eq!(cfg.redacted()["audit"]["retention_days"], 30);
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(
            &file,
            "access_token_ttl = 60\nsigning_alg = \"ES256\"\n[password]\nmin_length = 12\n",
        )
        .unwrap();
        let cfg =
            Config::load_from(Some(&file), &env(&[("TESSERA_ACCESS_TOKEN_TTL", "120")])).unwrap();
        assert_eq!(cfg.access_token_ttl, 120);
        assert_eq!(cfg.signing_alg, "ES256");
        assert_eq!(cfg.password.min_length, 12);
        let cfg = Config::load_from(None, &env(&[("TESSERA_PASSWORD__MIN_LENGTH", "10")])).unwrap();
        assert_eq!(cfg.password.min_length, 10);
    }

    #[test]
    fn invalid_values_name_the_key() {
        for (k, v, key) in [
            (
                "TESSERA_ACCESS_TOKEN_TTL",
                "abc",
                "TESSERA_ACCESS_TOKEN_TTL",
            ),
            ("TESSERA_ACCESS_TOKEN_TTL", "0", "TESSERA_ACCESS_TOKEN_TTL"),
            ("TESSERA_SIGNING_ALG", "none", "TESSERA_SIGNING_ALG"),
            ("TESSERA_SIGNING_ALG", "HS256", "TESSERA_HS256_SECRET"),
            ("TESSERA_MASTER_KEY", "short", "TESSERA_MASTER_KEY"),
            ("TESSERA_LISTEN", "nowhere", "TESSERA_LISTEN"),
            ("TESSERA_ISSUER", "localhost", "TESSERA_ISSUER"),
            ("TESSERA_DATABASE_URL", "mysql://x", "TESSERA_DATABASE_URL"),
            (
                "TESSERA_MAIL__TRANSPORT",
                "pigeon",
                "TESSERA_MAIL__TRANSPORT",
            ),
            ("TESSERA_MAIL__TRANSPORT", "smtp", "TESSERA_MAIL__SMTP_HOST"),
            ("TESSERA_MAIL__FROM", "nobody", "TESSERA_MAIL__FROM"),
            (
                "TESSERA_VERIFY_EMAIL_URL",
                "https://x.test/v",
                "TESSERA_VERIFY_EMAIL_URL",
            ),
            ("TESSERA_RESET_TOKEN_TTL", "5", "TESSERA_RESET_TOKEN_TTL"),
            (
                "TESSERA_EVENTS__NATS_URL",
                "http://x",
                "TESSERA_EVENTS__NATS_URL",
            ),
            (
                "TESSERA_EVENTS__SUBJECT_PREFIX",
                "a b",
                "TESSERA_EVENTS__SUBJECT_PREFIX",
            ),
            ("TESSERA_EVENTS__STREAM", "a.b", "TESSERA_EVENTS__STREAM"),
        ] {
            let err = Config::load_from(None, &env(&[(k, v)])).unwrap_err();
            assert_eq!(err.key, key, "{k}={v}: {err}");
        }
    }

    #[test]
    fn unknown_env_keys_are_reported() {
        let unknown = Config::unknown_env_keys(&env(&[
            ("TESSERA_ISSUR", "x"),
            ("TESSERA_ISSUER", "x"),
            ("TESSERA_LOG", "debug"),
        ]));
        assert_eq!(unknown, vec!["TESSERA_ISSUR".to_string()]);
    }

    #[test]
    fn url_redaction_covers_tokens_and_query_passwords() {
        assert_eq!(
            redact_url("nats://s3cr3t@nats:4222"),
            "nats://<redacted>@nats:4222"
        );
        assert_eq!(
            redact_url("postgres://db/x?user=u&password=p&sslmode=require"),
            "postgres://db/x?user=u&password=<redacted>&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u:p@db/x?q=a@b"),
            "postgres://u:<redacted>@db/x?q=a@b"
        );
        assert_eq!(
            redact_url("sqlite://data/tessera.db?mode=rwc"),
            "sqlite://data/tessera.db?mode=rwc"
        );
    }

    #[test]
    fn redaction_hides_secrets() {
        let cfg = Config::load_from(
            None,
            &env(&[
                ("TESSERA_DATABASE_URL", "postgres://u:hunter2@db/x"),
                ("TESSERA_MAIL__SMTP_USERNAME", "mailer"),
                ("TESSERA_MAIL__SMTP_PASSWORD", "smtp-s3cret"),
                ("TESSERA_EVENTS__NATS_URL", "nats://n:natspw@nats:4222"),
                (
                    "TESSERA_MASTER_KEY",
                    &crate::crypto::MasterKey::generate().to_base64(),
                ),
            ]),
        )
        .unwrap();
        let text = cfg.redacted().to_string();
        assert!(!text.contains("hunter2"));
        assert!(!text.contains("smtp-s3cret"));
        assert!(!text.contains("natspw"));
        assert!(text.contains("u:<redacted>@db/x"));
        assert!(!text.contains(cfg.master_key.as_ref().unwrap().expose_secret()));
    }
}
