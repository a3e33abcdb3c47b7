//! Password hashing: Argon2id (OWASP parameters by default) on a bounded pool of blocking
//! threads, so a storm of logins never occupies the async workers that validate tokens, and
//! memory stays at most `max_concurrent_hashes × m_cost`.
//!
//! Unknown accounts are verified against a dummy hash so timing does not reveal which emails exist.
//! Hashes weaker than the configured parameters, and imported bcrypt hashes, are flagged for a
//! transparent rehash on the next successful login.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::config::PasswordConfig;
use crate::error::{Error, FieldError};

/// Longest accepted password, in characters (longer is refused before any hashing).
pub const MAX_LENGTH: usize = 256;

#[derive(Clone)]
pub struct Passwords {
    inner: Arc<Inner>,
}

struct Inner {
    params: Params,
    min_length: usize,
    permits: Arc<Semaphore>,
    dummy_hash: String,
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    Invalid,
    /// Valid; `rehash` when the stored hash is bcrypt or weaker than the configured parameters.
    Valid {
        rehash: bool,
    },
}

impl Passwords {
    /// Builds the hasher and computes the dummy hash once (one Argon2id run).
    pub fn new(cfg: &PasswordConfig) -> anyhow::Result<Self> {
        let params = Params::new(
            cfg.argon2_memory_kib,
            cfg.argon2_iterations,
            cfg.argon2_parallelism,
            None,
        )
        .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let workers = cfg.max_concurrent_hashes.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let dummy_hash = hash_blocking(&params, b"tessera-dummy-password")?;
        Ok(Self {
            inner: Arc::new(Inner {
                params,
                min_length: cfg.min_length,
                permits: Arc::new(Semaphore::new(workers)),
                dummy_hash,
            }),
        })
    }

    /// Length rules (NIST SP 800-63B: no composition rules). Counts characters, not bytes.
    pub fn check_policy(&self, field: &str, password: &str) -> Result<(), Error> {
        let n = password.chars().count();
        if n < self.inner.min_length {
            return Err(Error::Validation(vec![FieldError::new(
                field,
                format!("must be at least {} characters long", self.inner.min_length),
            )]));
        }
        if n > MAX_LENGTH {
            return Err(Error::Validation(vec![FieldError::new(
                field,
                format!("must be at most {MAX_LENGTH} characters long"),
            )]));
        }
        Ok(())
    }

    /// Hashes a password with Argon2id on the bounded pool.
    pub async fn hash(&self, password: &str) -> Result<String, Error> {
        let password = Zeroizing::new(password.as_bytes().to_vec());
        let params = self.inner.params.clone();
        self.run(move || hash_blocking(&params, &password)).await
    }

    /// Verifies `password` against `stored`; with `None` (unknown account) it verifies against
    /// the dummy hash and always answers [`Verification::Invalid`], at the same cost.
    pub async fn verify(
        &self,
        password: &str,
        stored: Option<&str>,
    ) -> Result<Verification, Error> {
        if password.chars().count() > MAX_LENGTH {
            return Ok(Verification::Invalid);
        }
        let password = Zeroizing::new(password.as_bytes().to_vec());
        let known = stored.is_some();
        let stored = stored.unwrap_or(&self.inner.dummy_hash).to_string();
        let params = self.inner.params.clone();
        let outcome = self
            .run(move || Ok(verify_blocking(&params, &password, &stored)))
            .await?;
        Ok(if known {
            outcome
        } else {
            Verification::Invalid
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(Error::internal)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(Error::internal)?
        .map_err(Error::Internal)
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_blocking(params: &Params, password: &[u8]) -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(&crate::crypto::random_bytes::<16>())
        .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = argon2(params)
        .hash_password(password, &salt)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(hash.to_string())
}

fn verify_blocking(params: &Params, password: &[u8], stored: &str) -> Verification {
    if stored.starts_with("$2a$") || stored.starts_with("$2b$") || stored.starts_with("$2y$") {
        return match bcrypt::verify(password, stored) {
            Ok(true) => Verification::Valid { rehash: true },
            _ => Verification::Invalid,
        };
    }
    let Ok(parsed) = PasswordHash::new(stored) else {
        tracing::warn!("stored password hash is in an unknown format");
        return Verification::Invalid;
    };
    // The verifier uses the algorithm and parameters recorded in the hash itself.
    if argon2(params).verify_password(password, &parsed).is_err() {
        return Verification::Invalid;
    }
    let weaker = match Params::try_from(&parsed) {
        Ok(p) => {
            parsed.algorithm.as_str() != "argon2id"
                || p.m_cost() < params.m_cost()
                || p.t_cost() < params.t_cost()
                || p.p_cost() != params.p_cost()
        }
        Err(_) => true,
    };
    Verification::Valid { rehash: weaker }
}

/// Whether a string looks like a hash Tessera can verify (for `user create --password-hash`).
pub fn is_supported_hash(stored: &str) -> bool {
    if stored.starts_with("$2a$") || stored.starts_with("$2b$") || stored.starts_with("$2y$") {
        return stored.len() == 60;
    }
    PasswordHash::new(stored).is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordConfig {
        PasswordConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            ..PasswordConfig::default()
        }
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let p = Passwords::new(&cheap()).unwrap();
        let h = p.hash("correct horse").await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert_eq!(
            p.verify("correct horse", Some(&h)).await.unwrap(),
            Verification::Valid { rehash: false }
        );
        assert_eq!(
            p.verify("wrong horse", Some(&h)).await.unwrap(),
            Verification::Invalid
        );
        assert_eq!(
            p.verify("correct horse", None).await.unwrap(),
            Verification::Invalid
        );
    }

    #[tokio::test]
    async fn weaker_parameters_ask_for_rehash() {
        let weak = Passwords::new(&cheap()).unwrap();
        let h = weak.hash("correct horse").await.unwrap();
        let strong = Passwords::new(&PasswordConfig {
            argon2_memory_kib: 128,
            ..cheap()
        })
        .unwrap();
        assert_eq!(
            strong.verify("correct horse", Some(&h)).await.unwrap(),
            Verification::Valid { rehash: true }
        );
    }

    #[tokio::test]
    async fn bcrypt_hashes_verify_and_ask_for_upgrade() {
        let p = Passwords::new(&cheap()).unwrap();
        let h = bcrypt::hash("imported pw", 4).unwrap();
        assert!(is_supported_hash(&h));
        assert_eq!(
            p.verify("imported pw", Some(&h)).await.unwrap(),
            Verification::Valid { rehash: true }
        );
        assert_eq!(
            p.verify("imported px", Some(&h)).await.unwrap(),
            Verification::Invalid
        );
    }

    #[test]
    fn policy_counts_characters() {
        let p = Passwords::new(&cheap()).unwrap();
        assert!(p.check_policy("password", "short").is_err());
        assert!(p.check_policy("password", "ééééééé").is_err());
        assert!(p.check_policy("password", "éééééééé").is_ok());
        assert!(p.check_policy("password", &"x".repeat(257)).is_err());
        assert!(p.check_policy("password", &"x".repeat(256)).is_ok());
        assert!(!is_supported_hash("plaintext"));
    }
}
