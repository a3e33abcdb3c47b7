//! Configuration: defaults, then an optional TOML file, then `TESSERA_*` environment variables
//! (`__` for nesting: `TESSERA_PASSWORD__MIN_LENGTH`). The environment wins. [`Config::load`]
//! validates everything up front so a bad value stops start-up with a message naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Environment variables that belong to Tessera but are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &["TESSERA_CONFIG", "TESSERA_LOG", "TESSERA_TEST_DATABASE_URL"];

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
    /// Access-token lifetime, seconds.
    pub access_token_ttl: u64,
    /// Refresh-token lifetime, seconds (sliding: each rotation issues a token with this lifetime).
    pub refresh_token_ttl: u64,
    /// Absolute session lifetime, seconds: no refresh extends a session past it.
    pub session_max_age: u64,
    /// Seconds after a rotation in which the previous refresh token still rotates (concurrent
    /// refreshes from one client) instead of counting as reuse.
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
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            min_length: 8,
            max_concurrent_hashes: None,
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
            access_token_ttl: 900,
            refresh_token_ttl: 7 * 24 * 3600,
            session_max_age: 30 * 24 * 3600,
            refresh_reuse_grace: 5,
            signing_alg: "RS256".into(),
            hs256_secret: None,
            body_limit: 64 * 1024,
            authorization_code_ttl: 60,
            browser_session_ttl: 12 * 3600,
            templates_dir: None,
            log_format: "text".into(),
            password: PasswordConfig::default(),
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
        const KNOWN: &[&str] = &[
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
        ];
        env.iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with("TESSERA_") && !NON_CONFIG_ENV.contains(&k.as_str()))
            .filter(|k| !KNOWN.contains(&&k["TESSERA_".len()..]))
            .cloned()
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        for (key, url) in [
            ("TESSERA_ISSUER", Some(&self.issuer)),
            ("TESSERA_AUDIENCE", self.audience.as_ref()),
        ] {
            let Some(url) = url else { continue };
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() < 10 {
                return Err(invalid(
                    key,
                    format!("must be an absolute http(s) URL, got {url:?}"),
                ));
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
        if self.refresh_reuse_grace > 300 {
            return Err(invalid(
                "TESSERA_REFRESH_REUSE_GRACE",
                "must be at most 300 seconds",
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
        Ok(())
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
        })
    }
}

/// Hides the password in a database URL.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:<redacted>{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn redaction_hides_secrets() {
        let cfg = Config::load_from(
            None,
            &env(&[
                ("TESSERA_DATABASE_URL", "postgres://u:hunter2@db/x"),
                (
                    "TESSERA_MASTER_KEY",
                    &crate::crypto::MasterKey::generate().to_base64(),
                ),
            ]),
        )
        .unwrap();
        let text = cfg.redacted().to_string();
        assert!(!text.contains("hunter2"));
        assert!(text.contains("u:<redacted>@db/x"));
        assert!(!text.contains(cfg.master_key.as_ref().unwrap().expose_secret()));
    }
}
