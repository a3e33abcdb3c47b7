//! `tessera keys …` and `tessera master-key …`: signing-key lifecycle and master-key rotation.

use std::io::Read;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::json;
use tessera::Config;
use tessera::audit::By;
use tessera::clock::rfc3339;
use tessera::crypto::MasterKey;
use tessera::keys::{Alg, KeyConfig, Keys, PREPUBLISH};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// List signing keys and their state.
    List {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Rotate the signing key. By default the new key is published in the JWKS first and
    /// becomes current an hour later (so caches have it); `--now` switches at once. Either way
    /// the previous key stays published until every token it signed has expired.
    Rotate {
        /// Make the new key current immediately.
        #[arg(long)]
        now: bool,
        /// Algorithm of the new key (default: the configured TESSERA_SIGNING_ALG).
        #[arg(long)]
        alg: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Emergency: withdraw a key at once. It leaves the JWKS and every token it signed is
    /// rejected (running servers within 10 seconds). A revoked current key is replaced.
    Revoke {
        /// The key id. Ids are base64url and may begin with `-`, so one is taken as it is.
        #[arg(allow_hyphen_values = true)]
        kid: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum MasterKeyCommand {
    /// Print a new random master key (base64 of 32 bytes).
    Generate,
    /// Re-encrypt every secret under a new master key (read from stdin), in one transaction.
    /// The current key comes from the configuration as usual. Afterwards set TESSERA_MASTER_KEY
    /// to the new key (with the old one in TESSERA_MASTER_KEY_PREVIOUS while replicas restart);
    /// a development key file in the data directory is replaced for you.
    Rotate {
        /// Read the new key from standard input.
        #[arg(long)]
        new_key_stdin: bool,
    },
}

fn alg_or_default(alg: Option<String>, config: &Config) -> anyhow::Result<Alg> {
    let name = alg.unwrap_or_else(|| config.signing_alg.clone());
    Alg::parse(&name)
        .filter(|a| *a != Alg::Hs256)
        .context("--alg must be RS256, ES256 or EdDSA")
}

pub async fn run(cmd: KeysCommand, config: &Config, now: i64) -> anyhow::Result<()> {
    let store = tessera::app::open_store(config).await?;
    let retention = KeyConfig::from_config(config).retention;
    let ctx = tessera::context::RequestContext::system();
    match cmd {
        KeysCommand::List { json } => {
            for k in tessera::store::keys::list_all_keys(store.pool()).await? {
                use tessera::store::keys::KeyState;
                let state = match (k.state(), k.retired_at) {
                    (Some(KeyState::Active), _) => "current".to_string(),
                    (Some(KeyState::Next), _) => format!(
                        "published, current from {}",
                        rfc3339(k.created_at + PREPUBLISH)
                    ),
                    (Some(KeyState::Revoked), _) => "revoked".to_string(),
                    (_, Some(at)) if at + retention > now => {
                        format!("retired, published until {}", rfc3339(at + retention))
                    }
                    _ => "expired".to_string(),
                };
                if json {
                    println!(
                        "{}",
                        json!({"kid": k.kid, "alg": k.alg, "state": state, "created_at": rfc3339(k.created_at)})
                    );
                } else {
                    println!(
                        "{}  {:<6} {:<44} created {}",
                        k.kid,
                        k.alg,
                        state,
                        rfc3339(k.created_at)
                    );
                }
            }
            Ok(())
        }
        KeysCommand::Rotate {
            now: immediately,
            alg,
            json,
        } => {
            let alg = alg_or_default(alg, config)?;
            let master = tessera::app::load_master_key(config)?;
            let (kid, what) = if immediately {
                (
                    Keys::rotate_now(&store, &master, alg, By::system(&ctx), now).await?,
                    "current now".to_string(),
                )
            } else {
                let kid = Keys::schedule(&store, &master, alg, By::system(&ctx), now).await.context(
                    "a key is already scheduled; use `keys rotate --now` to switch to it at once",
                )?;
                (
                    kid,
                    format!("published now, current from {}", rfc3339(now + PREPUBLISH)),
                )
            };
            if json {
                println!(
                    "{}",
                    json!({"kid": kid, "alg": alg.as_str(), "state": what})
                );
            } else {
                println!("key {kid} ({}): {what}", alg.as_str());
            }
            Ok(())
        }
        KeysCommand::Revoke { kid, json } => {
            let alg = alg_or_default(None, config)?;
            let master = tessera::app::load_master_key(config)?;
            let Some(previous) =
                Keys::revoke(&store, &master, alg, &kid, By::system(&ctx), now).await?
            else {
                bail!("no signing key {kid}");
            };
            if json {
                println!(
                    "{}",
                    json!({"kid": kid, "was": previous, "state": "revoked"})
                );
            } else {
                println!(
                    "key {kid} revoked (it was {previous}); its tokens are rejected from now on"
                );
            }
            Ok(())
        }
    }
}

pub async fn master_key(cmd: MasterKeyCommand, config: &Config, now: i64) -> anyhow::Result<()> {
    match cmd {
        MasterKeyCommand::Generate => {
            println!("{}", MasterKey::generate().to_base64());
            Ok(())
        }
        MasterKeyCommand::Rotate { new_key_stdin } => {
            if !new_key_stdin {
                bail!(
                    "pass the new key on standard input with --new-key-stdin (`tessera master-key generate` makes one)"
                );
            }
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("reading the new key")?;
            let new = MasterKey::from_base64(input.trim()).context("the new master key")?;
            let old = tessera::app::load_master_key(config)?;
            let store = tessera::app::open_store(config).await?;
            let moved = tessera::keys::master::rotate(&store, &old, &new, now).await?;
            if config.master_key.is_none() {
                let path = config.data_dir.join("master.key");
                std::fs::write(&path, new.to_base64())
                    .with_context(|| format!("writing {}", path.display()))?;
                println!(
                    "re-encrypted {moved} secrets; {} now holds the new key",
                    path.display()
                );
            } else {
                println!(
                    "re-encrypted {moved} secrets. Now set TESSERA_MASTER_KEY to the new key (keep the old one in \
                     TESSERA_MASTER_KEY_PREVIOUS until every replica has restarted)"
                );
            }
            Ok(())
        }
    }
}
