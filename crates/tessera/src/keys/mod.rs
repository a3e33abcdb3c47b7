//! Signing keys: generation (RS256, ES256, EdDSA), sealed storage, rotation, the JWKS, and JWT
//! signing and validation (see [`jwt`]).
//!
//! Key pairs are parsed once when the key set is loaded; signing assembles the JWS directly with
//! aws-lc-rs. Validation goes through `jsonwebtoken`. The set is reloaded from the store every
//! [`RELOAD_INTERVAL`] seconds and when a token names an unknown `kid`, so a rotation made by
//! `tessera keys rotate` (another process) reaches every replica.

pub mod admin;
pub mod jwt;
pub mod master;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use aws_lc_rs::{encoding::AsDer, hmac, rsa};
use bytes::Bytes;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::audit::By;
use crate::crypto::{MasterKey, b64url};
use crate::store::Store;
use crate::store::keys::{self as key_store, KeyState, SigningKeyRow};

/// Seconds between background reloads of the key set.
pub const RELOAD_INTERVAL: i64 = 10;
/// How long a scheduled key is published in the JWKS before it signs anything, seconds: well
/// over [`JWKS_MAX_AGE`], so every cache has picked it up by then.
pub const PREPUBLISH: i64 = 3600;
/// `Cache-Control: max-age` of the JWKS, seconds.
pub const JWKS_MAX_AGE: i64 = 300;
/// The JWKS `Cache-Control` header: [`JWKS_MAX_AGE`], as a constant header value.
pub const JWKS_CACHE_CONTROL: &str = "public, max-age=300";
// Caches must see a pre-published key before it signs: the max-age stays inside the window.
const _: () = assert!(JWKS_MAX_AGE < PREPUBLISH);

/// The signing algorithms Tessera supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
    EdDsa,
    Hs256,
}

impl Alg {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            "HS256" => Some(Self::Hs256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Hs256 => "HS256",
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
            Self::EdDsa => Algorithm::EdDSA,
            Self::Hs256 => Algorithm::HS256,
        }
    }
}

enum Signer {
    Rs256(rsa::KeyPair),
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
    Hs256(Box<hmac::Key>),
}

/// The current signing key, parsed once.
pub struct SigningKey {
    pub kid: String,
    pub alg: Alg,
    /// When it became current (Unix seconds; for HS256, when the key set was built).
    pub since: i64,
    signer: Signer,
}

impl SigningKey {
    fn sign(&self, msg: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(match &self.signer {
            Signer::Rs256(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    msg,
                    &mut sig,
                )
                .map_err(|_| anyhow::anyhow!("RSA signing failed"))?;
                sig
            }
            Signer::Es256(k) => k
                .sign(&aws_lc_rs::rand::SystemRandom::new(), msg)
                .map_err(|_| anyhow::anyhow!("ECDSA signing failed"))?
                .as_ref()
                .to_vec(),
            Signer::EdDsa(k) => k.sign(msg).as_ref().to_vec(),
            Signer::Hs256(k) => hmac::sign(k, msg).as_ref().to_vec(),
        })
    }
}

/// A key that verifies tokens.
pub(crate) struct VerifyKey {
    pub(crate) alg: Alg,
    pub(crate) key: DecodingKey,
    pub(crate) validation: Validation,
}

/// One consistent snapshot of the keys.
pub struct KeySet {
    pub(crate) current: SigningKey,
    pub(crate) verify: HashMap<String, VerifyKey>,
    /// `{"keys": [...]}`, serialised once.
    pub jwks: Bytes,
}

impl KeySet {
    /// The key new tokens are signed with.
    pub fn signing_key(&self) -> &SigningKey {
        &self.current
    }
}

/// Settings the key set needs from the configuration.
#[derive(Clone)]
pub struct KeyConfig {
    pub alg: Alg,
    pub hs256_secret: Option<SecretString>,
    pub issuer: String,
    pub audience: String,
    /// How long a retired key stays published and trusted: every token it signed must have
    /// expired by then (access-token lifetime plus the reload interval of other replicas).
    pub retention: i64,
    /// Seconds between automatic rotations; 0: never.
    pub rotation_period: i64,
}

impl KeyConfig {
    pub fn from_config(cfg: &crate::Config) -> Self {
        Self {
            alg: Alg::parse(&cfg.signing_alg).unwrap_or(Alg::Rs256),
            hs256_secret: cfg.hs256_secret.clone(),
            issuer: cfg.issuer.clone(),
            audience: cfg.audience().to_string(),
            retention: cfg.access_token_ttl as i64 + 2 * RELOAD_INTERVAL + 60,
            rotation_period: cfg.key_rotation_days as i64 * 24 * 3600,
        }
    }
}

/// The shared, reloadable key set.
#[derive(Clone)]
pub struct Keys {
    inner: Arc<Inner>,
}

struct Inner {
    set: RwLock<Arc<KeySet>>,
    store: Store,
    master: Arc<MasterKey>,
    config: KeyConfig,
    last_reload: AtomicI64,
    /// Key states at the last load, to reload only when they changed.
    fingerprint: std::sync::Mutex<String>,
    /// Access tokens whose signature was verified, by the SHA-256 of the whole token: see
    /// [`Keys::verify_access_token_for`].
    verified: moka::sync::Cache<[u8; 32], Arc<jwt::Verified>>,
}

impl Keys {
    /// Loads the keys, generating (or switching to) a key for the configured algorithm first.
    pub async fn load(
        store: Store,
        master: Arc<MasterKey>,
        config: KeyConfig,
        now: i64,
    ) -> anyhow::Result<Self> {
        if config.alg != Alg::Hs256 {
            ensure_active_key(&store, &master, config.alg, now).await?;
        }
        let set = build_set(&store, &master, &config, now).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                set: RwLock::new(Arc::new(set)),
                store,
                master,
                config,
                last_reload: AtomicI64::new(now),
                fingerprint: std::sync::Mutex::new(String::new()),
                verified: jwt::verified_cache(),
            }),
        })
    }

    /// Seconds the current signing key has been current.
    pub fn current_age(&self, now: i64) -> i64 {
        (now - self.current().current.since).max(0)
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.inner.set.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Re-reads the keys from the store.
    pub async fn reload(&self, now: i64) -> anyhow::Result<()> {
        self.inner.last_reload.store(now, Ordering::Relaxed);
        let set = build_set(
            &self.inner.store,
            &self.inner.master,
            &self.inner.config,
            now,
        )
        .await?;
        *self.inner.set.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        Ok(())
    }

    /// Reloads if any key changed state since the last load (cheap: one small query), or if
    /// the last full load is a minute old (retired keys age out of the JWKS).
    pub async fn reload_if_changed(&self, now: i64) -> anyhow::Result<()> {
        let fingerprint = key_store::fingerprint(self.inner.store.pool()).await?;
        let changed = *self
            .inner
            .fingerprint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            != fingerprint;
        if changed || now - self.inner.last_reload.load(Ordering::Relaxed) >= 60 {
            self.reload(now).await?;
            *self
                .inner
                .fingerprint
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = fingerprint;
        }
        Ok(())
    }

    /// Scheduled rotation: publishes the next key [`PREPUBLISH`] seconds before the current one
    /// is due, then makes it current. Safe to run on every replica at once.
    pub async fn maintain(&self, now: i64) -> anyhow::Result<()> {
        let cfg = &self.inner.config;
        if cfg.rotation_period <= 0 || cfg.alg == Alg::Hs256 {
            return Ok(());
        }
        let rows = key_store::list_keys(self.inner.store.pool(), now).await?;
        let next = rows.iter().find(|r| r.state() == Some(KeyState::Next));
        let due = rows
            .iter()
            .find(|r| r.state() == Some(KeyState::Active))
            .map(|r| r.activated_at.unwrap_or(r.created_at) + cfg.rotation_period)
            .unwrap_or(now);
        match next {
            Some(n) if n.created_at + PREPUBLISH <= now => {
                let mut tx = self.inner.store.begin().await?;
                if key_store::promote_next(&mut tx, now).await? {
                    audit_key(
                        &mut tx,
                        crate::audit::action::PROMOTE_KEY,
                        &n.kid,
                        "scheduled",
                        By::system(&crate::context::RequestContext::system()),
                        now,
                    )
                    .await?;
                    tracing::info!(kid = %n.kid, "scheduled key rotation: the published next key is now current");
                }
                tx.commit().await?;
            }
            Some(_) => {}
            None if due - PREPUBLISH <= now => {
                let ctx = crate::context::RequestContext::system();
                let by = By::system(&ctx);
                match Keys::schedule(&self.inner.store, &self.inner.master, cfg.alg, by, now).await
                {
                    Ok(kid) => {
                        tracing::info!(%kid, "scheduled key rotation: next key published ahead of use")
                    }
                    Err(e)
                        if e.downcast_ref::<sqlx::Error>()
                            .is_some_and(crate::store::is_unique_violation) => {}
                    Err(e) => return Err(e),
                }
            }
            None => {}
        }
        Ok(())
    }

    /// Publishes a new key now; it becomes current [`PREPUBLISH`] seconds later (by a running
    /// server's scheduler). Fails if one is already scheduled.
    pub async fn schedule(
        store: &Store,
        master: &MasterKey,
        alg: Alg,
        by: By<'_>,
        now: i64,
    ) -> anyhow::Result<String> {
        let row = generate(master, alg, now)?;
        let mut tx = store.begin().await?;
        key_store::prepublish(&mut tx, &row, now).await?;
        audit_key(
            &mut tx,
            crate::audit::action::SCHEDULE_KEY,
            &row.kid,
            "scheduled",
            by,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(row.kid)
    }

    /// Rotates at once: the scheduled next key if there is one (it is already published),
    /// otherwise a new key. Returns the new current kid.
    pub async fn rotate_now(
        store: &Store,
        master: &MasterKey,
        alg: Alg,
        by: By<'_>,
        now: i64,
    ) -> anyhow::Result<String> {
        let mut tx = store.begin().await?;
        let next = key_store::list_keys(&mut *tx, now)
            .await?
            .into_iter()
            .find(|r| r.state() == Some(KeyState::Next));
        if let Some(next) = next {
            key_store::promote_next(&mut tx, now).await?;
            audit_key(
                &mut tx,
                crate::audit::action::PROMOTE_KEY,
                &next.kid,
                "operator",
                by,
                now,
            )
            .await?;
            tx.commit().await?;
            return Ok(next.kid);
        }
        tx.commit().await?;
        Keys::rotate_by(store, master, alg, "operator", by, now).await
    }

    /// Emergency: withdraws a key at once (gone from the JWKS, its tokens rejected on the next
    /// reload, within [`RELOAD_INTERVAL`] seconds everywhere). If it was current, another key
    /// takes over. `Ok(None)` when no key has that id.
    pub async fn revoke(
        store: &Store,
        master: &MasterKey,
        alg: Alg,
        kid: &str,
        by: By<'_>,
        now: i64,
    ) -> anyhow::Result<Option<String>> {
        let mut tx = store.begin().await?;
        let Some(previous) = key_store::revoke(&mut tx, kid, now).await? else {
            return Ok(None);
        };
        audit_key(
            &mut tx,
            crate::audit::action::REVOKE_KEY,
            kid,
            "operator",
            by,
            now,
        )
        .await?;
        if KeyState::parse(&previous) == Some(KeyState::Active)
            && !key_store::promote_next(&mut tx, now).await?
        {
            let row = generate(master, alg, now)?;
            key_store::rotate(&mut tx, &row, now).await?;
            audit_key(
                &mut tx,
                crate::audit::action::ROTATE_KEY,
                &row.kid,
                "revoked_current",
                by,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(previous))
    }

    /// Reloads when a token names an unknown key, at most once every 10 seconds.
    async fn reload_for_unknown_kid(&self, now: i64) -> bool {
        let last = self.inner.last_reload.load(Ordering::Relaxed);
        if now - last < 10 {
            return false;
        }
        self.reload(now)
            .await
            .map_err(|e| tracing::warn!(error = ?e, "reloading signing keys"))
            .is_ok()
    }

    pub fn config(&self) -> &KeyConfig {
        &self.inner.config
    }

    /// Generates a new key for `alg`, makes it current and retires the previous one. The
    /// previous key stays in the JWKS until every token it signed has expired. The audit log
    /// records it (actor `system`) with `reason`: `operator`, `initial`, `algorithm_changed`.
    pub async fn rotate(
        store: &Store,
        master: &MasterKey,
        alg: Alg,
        reason: &str,
        now: i64,
    ) -> anyhow::Result<String> {
        let ctx = crate::context::RequestContext::system();
        Keys::rotate_by(store, master, alg, reason, By::system(&ctx), now).await
    }

    /// [`Keys::rotate`] done by `by` (an administrator over HTTP, or the operator).
    pub async fn rotate_by(
        store: &Store,
        master: &MasterKey,
        alg: Alg,
        reason: &str,
        by: By<'_>,
        now: i64,
    ) -> anyhow::Result<String> {
        let row = generate(master, alg, now)?;
        let mut tx = store.begin().await?;
        key_store::rotate(&mut tx, &row, now)
            .await
            .context("storing the new signing key")?;
        audit_key(
            &mut tx,
            crate::audit::action::ROTATE_KEY,
            &row.kid,
            reason,
            by,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(row.kid)
    }
}

/// Records a key-lifecycle step in the audit log, inside its transaction.
async fn audit_key(
    tx: &mut crate::store::Tx,
    action: &'static str,
    kid: &str,
    reason: &str,
    by: By<'_>,
    now: i64,
) -> anyhow::Result<()> {
    let entry = crate::audit::Entry::success(by.actor(), action)
        .target("key", kid)
        .reason(reason);
    crate::audit::record(&mut **tx, by.ctx, &entry, now)
        .await
        .context("recording a key change")?;
    Ok(())
}

async fn ensure_active_key(
    store: &Store,
    master: &MasterKey,
    alg: Alg,
    now: i64,
) -> anyhow::Result<()> {
    let rows = key_store::list_keys(store.pool(), now).await?;
    let active = rows.iter().find(|r| r.state() == Some(KeyState::Active));
    if active.is_some_and(|r| r.alg == alg.as_str()) {
        return Ok(());
    }
    let reason = match active {
        None => {
            tracing::info!(alg = alg.as_str(), "generating the first signing key");
            "initial"
        }
        Some(r) => {
            tracing::info!(from = %r.alg, to = alg.as_str(), "signing algorithm changed: rotating to a new key");
            "algorithm_changed"
        }
    };
    match Keys::rotate(store, master, alg, reason, now).await {
        Ok(_) => Ok(()),
        // Another replica created the key at the same moment: use theirs.
        Err(e)
            if e.downcast_ref::<sqlx::Error>()
                .is_some_and(crate::store::is_unique_violation) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn build_set(
    store: &Store,
    master: &MasterKey,
    config: &KeyConfig,
    now: i64,
) -> anyhow::Result<KeySet> {
    let rows = key_store::list_keys(store.pool(), now - config.retention).await?;
    let mut verify = HashMap::new();
    let mut jwks = Vec::new();
    let mut current = None;
    for row in &rows {
        let Some(alg) = Alg::parse(&row.alg) else {
            continue;
        };
        let jwk: serde_json::Value =
            serde_json::from_str(&row.public_jwk).context("parsing a stored JWK")?;
        verify.insert(row.kid.clone(), verify_key(alg, &jwk, config)?);
        jwks.push(jwk);
        if row.state() == Some(KeyState::Active) {
            current = Some(open_signing_key(master, row, alg)?);
        }
    }
    if let (Alg::Hs256, Some(secret)) = (config.alg, &config.hs256_secret) {
        let secret = secret.expose_secret().as_bytes();
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        // A stable id that reveals nothing about the secret: HMAC(secret, label), truncated.
        let kid = format!(
            "hs256-{}",
            &b64url(hmac::sign(&key, b"tessera key id").as_ref())[..12]
        );
        let mut validation = Validation::new(Algorithm::HS256);
        configure(&mut validation, config);
        verify.insert(
            kid.clone(),
            VerifyKey {
                alg: Alg::Hs256,
                key: DecodingKey::from_secret(secret),
                validation,
            },
        );
        current = Some(SigningKey {
            kid,
            alg: Alg::Hs256,
            since: now,
            signer: Signer::Hs256(Box::new(key)),
        });
    }
    let current = current.context("no active signing key in the store")?;
    let jwks = Bytes::from(serde_json::to_vec(&json!({ "keys": jwks }))?);
    Ok(KeySet {
        current,
        verify,
        jwks,
    })
}

fn configure(v: &mut Validation, config: &KeyConfig) {
    // exp and nbf are checked against Tessera's clock in `jwt::verify`, not the crate's.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    v.required_spec_claims.clear();
    v.set_issuer(&[&config.issuer]);
    // The audience is checked by `jwt::verify` (introspection accepts any audience).
    v.validate_aud = false;
}

fn verify_key(alg: Alg, jwk: &serde_json::Value, config: &KeyConfig) -> anyhow::Result<VerifyKey> {
    let s = |name: &str| {
        jwk[name]
            .as_str()
            .with_context(|| format!("JWK member {name} missing"))
    };
    let key = match alg {
        Alg::Rs256 => DecodingKey::from_rsa_components(s("n")?, s("e")?)?,
        Alg::Es256 => DecodingKey::from_ec_components(s("x")?, s("y")?)?,
        Alg::EdDsa => DecodingKey::from_ed_components(s("x")?)?,
        Alg::Hs256 => anyhow::bail!("HS256 keys are never stored"),
    };
    let mut validation = Validation::new(alg.jwt());
    configure(&mut validation, config);
    Ok(VerifyKey {
        alg,
        key,
        validation,
    })
}

fn open_signing_key(
    master: &MasterKey,
    row: &SigningKeyRow,
    alg: Alg,
) -> anyhow::Result<SigningKey> {
    let der = master.open(&row.kid, &row.private_key).with_context(|| {
        format!(
            "decrypting signing key {}: is TESSERA_MASTER_KEY the key it was created with?",
            row.kid
        )
    })?;
    let bad = |_| anyhow::anyhow!("signing key {} is corrupt", row.kid);
    let signer = match alg {
        Alg::Rs256 => Signer::Rs256(rsa::KeyPair::from_pkcs8(&der).map_err(bad)?),
        Alg::Es256 => Signer::Es256(
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                .map_err(bad)?,
        ),
        Alg::EdDsa => Signer::EdDsa(Ed25519KeyPair::from_pkcs8(&der).map_err(bad)?),
        Alg::Hs256 => anyhow::bail!("HS256 keys are never stored"),
    };
    Ok(SigningKey {
        kid: row.kid.clone(),
        alg,
        since: row.activated_at.unwrap_or(row.created_at),
        signer,
    })
}

/// Generates a key pair; returns the row to store (private key sealed, kid = RFC 7638 thumbprint).
pub fn generate(master: &MasterKey, alg: Alg, now: i64) -> anyhow::Result<SigningKeyRow> {
    let unspecified = |_| anyhow::anyhow!("key generation failed");
    let (pkcs8, mut jwk, thumb_input) = match alg {
        Alg::Rs256 => {
            let k = rsa::KeyPair::generate(rsa::KeySize::Rsa2048).map_err(unspecified)?;
            let der =
                AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'_>>::as_der(&k).map_err(unspecified)?;
            let n = b64url(k.public_key().modulus().big_endian_without_leading_zero());
            let e = b64url(k.public_key().exponent().big_endian_without_leading_zero());
            let thumb = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
            (
                der.as_ref().to_vec(),
                json!({"kty": "RSA", "n": n, "e": e}),
                thumb,
            )
        }
        Alg::Es256 => {
            let k = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                .map_err(unspecified)?;
            let der = k.to_pkcs8v1().map_err(unspecified)?;
            let point = k.public_key().as_ref();
            anyhow::ensure!(
                point.len() == 65 && point[0] == 4,
                "unexpected P-256 public key encoding"
            );
            let (x, y) = (b64url(&point[1..33]), b64url(&point[33..]));
            let thumb = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
            (
                der.as_ref().to_vec(),
                json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
                thumb,
            )
        }
        Alg::EdDsa => {
            let k = Ed25519KeyPair::generate().map_err(unspecified)?;
            let der = k.to_pkcs8().map_err(unspecified)?;
            let x = b64url(k.public_key().as_ref());
            let thumb = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
            (
                der.as_ref().to_vec(),
                json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
                thumb,
            )
        }
        Alg::Hs256 => {
            anyhow::bail!("HS256 uses the configured shared secret; there is no key to generate")
        }
    };
    let kid = b64url(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, thumb_input.as_bytes()).as_ref(),
    );
    jwk["kid"] = json!(kid);
    jwk["alg"] = json!(alg.as_str());
    jwk["use"] = json!("sig");
    Ok(SigningKeyRow {
        private_key: master.seal(&kid, &pkcs8),
        kid,
        alg: alg.as_str().into(),
        state: KeyState::Active.as_str().into(),
        public_jwk: jwk.to_string(),
        created_at: now,
        activated_at: Some(now),
        retired_at: None,
    })
}

#[cfg(test)]
mod cache_tests {
    #[test]
    fn jwks_cache_control_says_the_max_age() {
        assert_eq!(
            super::JWKS_CACHE_CONTROL,
            format!("public, max-age={}", super::JWKS_MAX_AGE)
        );
    }
}
