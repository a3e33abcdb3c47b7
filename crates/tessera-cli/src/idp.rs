//! `tessera idp …`: the upstream identity providers users may sign in with (docs/federation.md).

use std::io::Read;

use anyhow::Context;
use clap::Subcommand;
use tessera::Config;
use tessera::authz::Principal;
use tessera::federation::{self, Preset, ProviderSpec, ProviderView, Providers};

#[derive(Subcommand)]
pub enum IdpCommand {
    /// Add an OpenID Connect provider. Register `<issuer>/auth/federated/NAME/callback` as the
    /// redirect URI at the provider.
    Add {
        /// Lower-case letters, digits, '-' and '_' (in the callback URL).
        name: String,
        /// The provider's issuer, pinned (https; http only on loopback).
        #[arg(long)]
        issuer: Option<String>,
        /// google, gitlab, microsoft or github: fills in the issuer (not for microsoft: give the
        /// directory's own; for GitHub Enterprise Server, give its base URL) and the display name.
        #[arg(long, value_parser = parse_preset)]
        preset: Option<Preset>,
        #[arg(long)]
        client_id: String,
        /// Read the client secret from standard input (never from the command line).
        #[arg(long)]
        client_secret_stdin: bool,
        /// Shown on the sign-in page.
        #[arg(long)]
        display_name: Option<String>,
        /// A scope to ask for (repeatable; openid is always asked). Default: openid email profile.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Create an account at a first sign-in whose address the provider has verified.
        #[arg(long)]
        jit: bool,
        #[arg(long)]
        json: bool,
    },
    /// List the providers.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change a provider (only what is given).
    Update {
        name: String,
        #[arg(long)]
        issuer: Option<String>,
        #[arg(long)]
        client_id: Option<String>,
        /// Read a new client secret from standard input.
        #[arg(long)]
        client_secret_stdin: bool,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Turn just-in-time creation on (true) or off (false).
        #[arg(long)]
        jit: Option<bool>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a provider and the identities linked through it (the accounts stay).
    Remove { name: String },
}

fn parse_preset(s: &str) -> Result<Preset, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| "one of google, gitlab, microsoft, github".to_string())
}

fn secret_from_stdin(wanted: bool) -> anyhow::Result<Option<String>> {
    if !wanted {
        return Ok(None);
    }
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the client secret")?;
    Ok(Some(input.trim_end_matches(['\r', '\n']).to_string()))
}

fn print(p: &ProviderView, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(p)?);
    } else {
        println!(
            "{:<16} {:<20} {} client_id={} jit={}\n  redirect URI: {}",
            p.name, p.display_name, p.issuer, p.client_id, p.jit, p.redirect_uri
        );
    }
    Ok(())
}

pub async fn run(cmd: IdpCommand, config: &Config, now: i64) -> anyhow::Result<()> {
    let store = tessera::app::open_store(config).await?;
    let master = tessera::app::load_master_key(config)?;
    let providers = Providers {
        store: &store,
        master: &master,
        issuer: &config.issuer,
    };
    let ctx = tessera::context::RequestContext::system();
    let by = tessera::audit::By::system(&ctx);
    let fail = |e: tessera::Error| anyhow::anyhow!("{}", crate::describe(&e));
    let some = |v: Vec<String>| (!v.is_empty()).then_some(v);
    match cmd {
        IdpCommand::Add {
            name,
            issuer,
            preset,
            client_id,
            client_secret_stdin,
            display_name,
            scopes,
            jit,
            json,
        } => {
            let spec = ProviderSpec {
                name: Some(name),
                preset,
                display_name,
                issuer,
                client_id: Some(client_id),
                client_secret: secret_from_stdin(client_secret_stdin)?,
                scopes: some(scopes),
                claims: None,
                jit: Some(jit),
            };
            let view = federation::add(providers, spec, by, now)
                .await
                .map_err(fail)?;
            print(&view, json)
        }
        IdpCommand::List { json } => {
            let list = federation::list(providers, &Principal::System)
                .await
                .map_err(fail)?;
            for p in &list.providers {
                print(p, json)?;
            }
            Ok(())
        }
        IdpCommand::Update {
            name,
            issuer,
            client_id,
            client_secret_stdin,
            display_name,
            scopes,
            jit,
            json,
        } => {
            let spec = ProviderSpec {
                issuer,
                client_id,
                client_secret: secret_from_stdin(client_secret_stdin)?,
                display_name,
                scopes: some(scopes),
                jit,
                ..Default::default()
            };
            let view = federation::update(providers, &name, spec, by, now)
                .await
                .map_err(fail)?;
            print(&view, json)
        }
        IdpCommand::Remove { name } => {
            federation::remove(providers, &name, by, now)
                .await
                .map_err(fail)?;
            println!("removed {name}");
            Ok(())
        }
    }
}
