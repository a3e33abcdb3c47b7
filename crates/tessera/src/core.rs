//! The domain's dependencies in one type that knows nothing of HTTP: [`Core`]. The HTTP layer
//! wraps it in [`crate::app::AppState`] with what only HTTP needs (pages, trusted proxies, the
//! discovery document); dependencies point one way, `http` -> `app` -> domain -> `core`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;

use crate::accounts::{self, UserCache};
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::MasterKey;
use crate::keys::{KeyConfig, Keys};
use crate::mail::Mailer;
use crate::oauth::clients::{self, ClientCache};
use crate::oauth::revocation::RevokedTokens;
use crate::passwords::Passwords;
use crate::sessions::{SessionCache, Settings};
use crate::shared::Shared;
use crate::store::Store;

/// What the domain needs, and nothing of HTTP: the store, keys, clock, passwords, mail, the master
/// key, settings, caches and the shared state. Domain functions and background jobs take `&Core`.
/// Cheap to clone.
#[derive(Clone)]
pub struct Core {
    pub config: Arc<Config>,
    pub store: Store,
    pub keys: Keys,
    pub passwords: Passwords,
    pub sessions: SessionCache,
    pub users: UserCache,
    pub settings: Arc<Settings>,
    pub clock: Clock,
    pub clients: ClientCache,
    pub revoked: RevokedTokens,
    /// Ephemeral state: in-process, or Redis shared by every replica.
    pub shared: Shared,
    /// Links, templates and sealing for outgoing mail.
    pub mail: Arc<Mailer>,
    /// The master key (sealed mail jobs, webhook secrets).
    pub master: Arc<MasterKey>,
    /// Rate limits per route class.
    pub limiter: crate::abuse::Limiter,
    /// Brute-force protection for password logins.
    pub guard: crate::abuse::LoginGuard,
    /// Tenants and memberships read per request.
    pub tenants: crate::tenants::TenantCaches,
    /// The WebAuthn relying party (the issuer), unless the issuer's host is an IP address.
    pub webauthn: Option<Arc<webauthn_rs::Webauthn>>,
    /// The upstream identity providers' HTTP client and discovery cache.
    pub federation: crate::federation::upstream::Upstreams,
}

impl Core {
    /// Connects, migrates and loads keys: everything but the listener.
    pub async fn new(config: Config, clock: Clock) -> anyhow::Result<Self> {
        let master = Arc::new(load_master_key(&config)?);
        let store = open_store(&config).await?;
        let mail = Arc::new(Mailer::new(&config, Arc::clone(&master))?);
        let keys = Keys::load(
            store.clone(),
            Arc::clone(&master),
            KeyConfig::from_config(&config),
            clock.now(),
        )
        .await?;
        let passwords = Passwords::new(&config.password)?;
        let shared = Shared::from_config(&config).await?;
        let revoked = RevokedTokens::new(&shared);
        revoked.reload(&store, clock.now()).await?;
        let limiter = crate::abuse::Limiter::new(config.rate_limit.clone(), shared.clone());
        Ok(Self {
            guard: crate::abuse::LoginGuard::new(&limiter),
            limiter,
            clients: clients::client_cache(&shared),
            revoked,
            sessions: SessionCache::new(config.access_token_ttl as i64, &shared),
            users: accounts::user_cache(&shared),
            tenants: crate::tenants::TenantCaches::new(&shared),
            webauthn: crate::mfa::webauthn::relying_party(&config.issuer).map(Arc::new),
            federation: crate::federation::upstream::Upstreams::new(),
            shared,
            settings: Arc::new(Settings::from_config(&config)),
            config: Arc::new(config),
            store,
            keys,
            passwords,
            clock,
            mail,
            master,
        })
    }
}

/// Connects to the configured database and applies pending migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(&config.database_url(), config.database_max_connections).await?;
    store.migrate().await?;
    Ok(store)
}

/// The master key: `TESSERA_MASTER_KEY`, or else `<data_dir>/master.key`, generated with mode
/// 0600 on first start (development only; a loud warning says so).
pub fn load_master_key(config: &Config) -> anyhow::Result<MasterKey> {
    let key = load_current_master_key(config)?;
    Ok(match &config.master_key_previous {
        Some(previous) => key.with_previous(
            MasterKey::from_base64(previous.expose_secret())
                .context("TESSERA_MASTER_KEY_PREVIOUS")?,
        ),
        None => key,
    })
}

fn load_current_master_key(config: &Config) -> anyhow::Result<MasterKey> {
    if let Some(key) = &config.master_key {
        return MasterKey::from_base64(key.expose_secret()).context("TESSERA_MASTER_KEY");
    }
    let path = config.data_dir.join("master.key");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let key = MasterKey::from_base64(&text)
            .with_context(|| format!("{} is not a valid master key", path.display()))?;
        warn_dev_key(&path);
        return Ok(key);
    }
    crate::files::private_dir(&config.data_dir)?;
    let key = MasterKey::generate();
    crate::files::write_private(&path, key.to_base64().as_bytes())?;
    warn_dev_key(&path);
    Ok(key)
}

fn warn_dev_key(path: &Path) {
    tracing::warn!(
        path = %path.display(),
        "USING A MASTER KEY FROM A FILE NEXT TO THE DATA. Fine for development; in production set \
         TESSERA_MASTER_KEY (base64 of 32 random bytes) from a secret store."
    );
}
