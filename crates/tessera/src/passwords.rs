//! Password hashing: Argon2id (OWASP parameters by default) on a fixed pool of hashing threads,
//! one per core by default, so a storm of logins never occupies the async workers that validate
//! tokens. Each thread keeps one Argon2 memory buffer and reuses it, so memory stays at
//! `threads × m_cost` instead of growing with every allocation the C allocator keeps.
//!
//! Unknown accounts are verified against a dummy hash so timing does not reveal which emails exist.
//! Hashes weaker than the configured parameters, and imported bcrypt hashes, are flagged for a
//! transparent rehash on the next successful login.
//!
//! The policy ([`Passwords::check_policy`]) follows NIST SP 800-63B §5.1.1.2: a length range and
//! no composition rules, but no password from a list of breached ones ([`breached`]) and none
//! containing the user's own email name.

pub mod breached;

use std::sync::{Arc, Mutex, mpsc};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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
    /// Hashes running or waiting for a thread; when none is left, a request is refused at once.
    queue: Arc<Semaphore>,
    jobs: Mutex<mpsc::Sender<Job>>,
    dummy_hash: String,
    workers: usize,
    queue_capacity: usize,
}

/// Work for a hashing thread, given that thread's reusable Argon2 memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// The niceness of the hashing threads (Linux: -20 highest to 19 lowest; requests run at 0).
/// A login storm keeps every hashing thread busy; at 10 the scheduler gives a request thread
/// that is ready about nine times the CPU share of a hashing thread (CFS weights 1024 and 110),
/// so the rest of the API keeps answering, while an otherwise idle machine still hashes at full
/// speed. Raising niceness needs no privilege.
const HASHING_NICENESS: u8 = 10;

/// Lowers the calling thread's CPU priority to [`HASHING_NICENESS`] (logged if refused).
fn lower_priority() {
    // `Crossplatform(p)` maps 0..=99 onto niceness 19..=-20: 22 is niceness 10.
    let priority = thread_priority::ThreadPriorityValue::try_from(22u8)
        .map(thread_priority::ThreadPriority::Crossplatform);
    let set = priority
        .map_err(|e| e.to_string())
        .and_then(|p| thread_priority::set_current_thread_priority(p).map_err(|e| e.to_string()));
    if let Err(error) = set {
        tracing::warn!(%error, niceness = HASHING_NICENESS, "could not lower the hashing thread's priority");
    }
}

/// Starts `n` hashing threads sharing one job queue.
fn start_workers(n: usize) -> anyhow::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..n {
        let rx = Arc::clone(&rx);
        std::thread::Builder::new()
            .name(format!("tessera-argon2-{i}"))
            .spawn(move || {
                lower_priority();
                let mut memory: Vec<Block> = Vec::new();
                loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(&mut memory),
                        Err(_) => return, // every sender dropped: the service is shutting down
                    }
                }
            })?;
    }
    Ok(tx)
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
        let dummy_hash = hash_blocking(&params, b"tessera-dummy-password", &mut Vec::new())?;
        let jobs = start_workers(workers)?;
        let queue_capacity = cfg.max_queued_hashes.unwrap_or(workers * 32).max(workers);
        Ok(Self {
            inner: Arc::new(Inner {
                params,
                min_length: cfg.min_length,
                permits: Arc::new(Semaphore::new(workers)),
                queue: Arc::new(Semaphore::new(queue_capacity)),
                jobs: Mutex::new(jobs),
                dummy_hash,
                workers,
                queue_capacity,
            }),
        })
    }

    /// `(waiting, running)` hashes now, for the metrics.
    pub fn load(&self) -> (usize, usize) {
        let i = &self.inner;
        let in_system = i.queue_capacity.saturating_sub(i.queue.available_permits());
        let running = i.workers.saturating_sub(i.permits.available_permits());
        (in_system.saturating_sub(running), running)
    }

    /// The password policy (NIST SP 800-63B §5.1.1.2), first failed rule wins:
    /// `min_length..=256` characters (not bytes); not containing the local part of `email`
    /// (case-insensitive, only when that part has at least 3 characters; with a `+tag`, the
    /// part before the `+` too); not in the bundled list of breached passwords. No composition
    /// rules. Errors are 422s on `field` naming the rule.
    pub fn check_policy(
        &self,
        field: &str,
        password: &str,
        email: Option<&str>,
    ) -> Result<(), Error> {
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
        let lower = password.to_lowercase();
        if email.is_some_and(|e| contains_email_name(&lower, e)) {
            return Err(Error::invalid(field, "must not contain your email address"));
        }
        if breached::bundled().contains(&lower) {
            return Err(Error::invalid(
                field,
                "is too common (found in a list of breached passwords)",
            ));
        }
        Ok(())
    }

    /// Hashes a password with Argon2id on the bounded pool.
    pub async fn hash(&self, password: &str) -> Result<String, Error> {
        let password = Zeroizing::new(password.as_bytes().to_vec());
        let params = self.inner.params.clone();
        self.run(move |memory| hash_blocking(&params, &password, memory))
            .await
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
            .run(move |memory| Ok(verify_blocking(&params, &password, &stored, memory)))
            .await?;
        Ok(if known {
            outcome
        } else {
            Verification::Invalid
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Vec<Block>) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        // A bounded queue: past it, answer 429 with Retry-After at once instead of letting
        // requests pile up behind the hashing threads without limit.
        let Ok(slot) = Arc::clone(&self.inner.queue).try_acquire_owned() else {
            return Err(Error::TooManyRequests { retry_after: 1 });
        };
        let queued = std::time::Instant::now();
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(Error::internal)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            crate::metrics::hash_wait(queued.elapsed());
            let outcome = job(memory);
            // Free the slot and the permit before answering, so a caller that awaits this
            // result and hashes again finds room.
            drop(permit);
            drop(slot);
            let _ = tx.send(outcome);
        });
        self.inner
            .jobs
            .lock()
            .map_err(|_| Error::internal(anyhow::anyhow!("hashing pool poisoned")))?
            .send(job)
            .map_err(|_| Error::internal(anyhow::anyhow!("hashing pool stopped")))?;
        rx.await.map_err(Error::internal)?.map_err(Error::Internal)
    }
}

/// Names shorter than this are not checked: "ann" or "jo" inside a passphrase is coincidence.
const MIN_EMAIL_NAME: usize = 3;

/// Whether `lower` (a lower-cased password) contains the local part of `email`, or the part of it
/// before a `+tag`, when that part has at least [`MIN_EMAIL_NAME`] characters.
fn contains_email_name(lower: &str, email: &str) -> bool {
    let local = email
        .rsplit_once('@')
        .map_or(email, |(l, _)| l)
        .trim()
        .to_lowercase();
    let base = local.split('+').next().unwrap_or_default();
    [local.as_str(), base]
        .iter()
        .any(|name| name.chars().count() >= MIN_EMAIL_NAME && lower.contains(name))
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

/// Grows the thread's buffer to `blocks` if needed and returns that much of it.
fn memory_for(memory: &mut Vec<Block>, blocks: usize) -> &mut [Block] {
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    &mut memory[..blocks]
}

fn hash_blocking(
    params: &Params,
    password: &[u8],
    memory: &mut Vec<Block>,
) -> anyhow::Result<String> {
    let salt = crate::crypto::random_bytes::<16>();
    let mut out = [0u8; 32];
    argon2(params)
        .hash_password_into_with_memory(
            password,
            &salt,
            &mut out,
            memory_for(memory, params.block_count()),
        )
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| anyhow::anyhow!("params: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| anyhow::anyhow!("output: {e}"))?),
    };
    Ok(phc.to_string())
}

fn verify_blocking(
    params: &Params,
    password: &[u8],
    stored: &str,
    memory: &mut Vec<Block>,
) -> Verification {
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
    // The algorithm, version and parameters recorded in the hash itself.
    let (Ok(algorithm), Ok(stored_params), Some(expected), Some(salt)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
        parsed.hash,
        parsed.salt,
    ) else {
        return Verification::Invalid;
    };
    let version = parsed
        .version
        .map(Version::try_from)
        .unwrap_or(Ok(Version::V0x13));
    let mut salt_buf = [0u8; 64];
    let (Ok(version), Ok(salt)) = (version, salt.decode_b64(&mut salt_buf)) else {
        return Verification::Invalid;
    };
    let mut out = vec![0u8; expected.len()];
    let blocks = memory_for(memory, stored_params.block_count());
    let computed = Argon2::new(algorithm, version, stored_params.clone())
        .hash_password_into_with_memory(password, salt, &mut out, blocks);
    if computed.is_err() || !crate::crypto::ct_eq(&out, expected.as_bytes()) {
        return Verification::Invalid;
    }
    let weaker = algorithm != Algorithm::Argon2id
        || stored_params.m_cost() < params.m_cost()
        || stored_params.t_cost() < params.t_cost()
        || stored_params.p_cost() != params.p_cost();
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

    #[tokio::test]
    async fn a_full_hash_queue_answers_at_once() {
        let p = Passwords::new(&PasswordConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            max_concurrent_hashes: Some(1),
            max_queued_hashes: Some(1),
            ..PasswordConfig::default()
        })
        .unwrap();
        let busy = tokio::spawn({
            let p = p.clone();
            async move {
                p.run(|_| {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    Ok(())
                })
                .await
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        match p.hash("another password").await {
            Err(Error::TooManyRequests { retry_after: 1 }) => {}
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(
            started.elapsed() < std::time::Duration::from_millis(200),
            "refused at once"
        );
        assert!(busy.await.unwrap().is_ok(), "the running hash completes");
        assert!(p.hash("now there is room").await.is_ok());
    }

    /// The hashing threads run below the request threads: a login storm must not starve the
    /// rest of the API (the niceness is field 19 of `/proc/thread-self/stat`).
    #[tokio::test]
    async fn hashing_threads_run_at_a_lower_priority() {
        let passwords = Passwords::new(&cheap()).unwrap();
        let niceness = |stat: &str| -> i64 {
            // The command name (field 2) is in parentheses and may hold spaces.
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            after.split(' ').nth(16).unwrap().parse().unwrap()
        };
        let ours = niceness(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
        let theirs = passwords
            .run(|_| Ok(std::fs::read_to_string("/proc/thread-self/stat")?))
            .await
            .unwrap();
        let theirs = niceness(&theirs);
        assert!(theirs >= i64::from(super::HASHING_NICENESS), "{theirs}");
        assert!(theirs > ours, "hashing {theirs}, requests {ours}");
    }

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
    async fn hashes_from_the_standard_argon2_hasher_verify() {
        use argon2::password_hash::PasswordHasher;
        let p = Passwords::new(&cheap()).unwrap();
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let params = Params::new(64, 1, 1, None).unwrap();
        let h = argon2(&params)
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert_eq!(
            p.verify("correct horse", Some(&h)).await.unwrap(),
            Verification::Valid { rehash: false }
        );
        assert_eq!(
            p.verify("correct horsf", Some(&h)).await.unwrap(),
            Verification::Invalid
        );
        // Argon2i from another system verifies and is upgraded.
        let h = Argon2::new(Algorithm::Argon2i, Version::V0x13, params)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert_eq!(
            p.verify("pw", Some(&h)).await.unwrap(),
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
        assert!(p.check_policy("password", "short", None).is_err());
        assert!(p.check_policy("password", "ééééééé", None).is_err());
        assert!(p.check_policy("password", "éééééééé", None).is_ok());
        assert!(p.check_policy("password", &"x".repeat(257), None).is_err());
        assert!(p.check_policy("password", &"x".repeat(256), None).is_ok());
        assert!(!is_supported_hash("plaintext"));
    }

    fn message(e: Error) -> String {
        match e {
            Error::Validation(f) => format!("{}: {}", f[0].field, f[0].message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn policy_refuses_breached_passwords_in_any_case() {
        let p = Passwords::new(&cheap()).unwrap();
        for common in ["password", "Password1", "QWERTYUIOP", "iloveyou2"] {
            assert_eq!(
                message(p.check_policy("password", common, None).unwrap_err()),
                "password: is too common (found in a list of breached passwords)",
                "{common}"
            );
        }
        assert!(
            p.check_policy("password", "correct horse battery staple", None)
                .is_ok()
        );
    }

    #[test]
    fn policy_refuses_the_email_name_from_three_characters() {
        let p = Passwords::new(&cheap()).unwrap();
        let refused = |pw: &str, email: &str| {
            p.check_policy("new_password", pw, Some(email))
                .map_err(message)
                .err()
        };
        let msg = Some("new_password: must not contain your email address".to_string());
        assert_eq!(refused("ada.lovelace", "Ada.Lovelace@example.com"), msg);
        assert_eq!(
            refused("my name is ADA.LOVELACE!", "ada.lovelace@example.com"),
            msg
        );
        assert_eq!(refused("zed-likes-cheese", "zed@example.com"), msg);
        assert_eq!(refused("bob1982 rules ok", "bob+shop@example.com"), msg);
        // Two characters are too short to mean anything.
        assert_eq!(refused("jo-likes-cheese", "jo@example.com"), None);
        assert_eq!(
            refused("correct horse battery staple", "ada@example.com"),
            None
        );
        // The domain alone is fine.
        assert_eq!(refused("example-company-rocks", "ada@example.com"), None);
    }
}
