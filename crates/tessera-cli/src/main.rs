//! `tessera`: the Tessera identity service and its admin commands.

mod client;
mod idp;
mod keys;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand};
use tessera::accounts::{self, UserView};
use tessera::audit::By;
use tessera::authz::{Principal, Role};
use tessera::clock::Clock;
use tessera::{App, Config};

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Tessera: identity and access management in one binary"
)]
struct Cli {
    /// TOML configuration file (environment variables TESSERA_* override it).
    #[arg(long, global = true, env = "TESSERA_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (applies pending migrations, generates a signing key on first start).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Rotate the master key that encrypts secrets at rest.
    #[command(subcommand)]
    MasterKey(keys::MasterKeyCommand),
    /// Manage OAuth 2.0 / OpenID Connect clients.
    #[command(subcommand)]
    Client(client::ClientCommand),
    /// Manage the upstream identity providers users may sign in with.
    #[command(subcommand)]
    Idp(idp::IdpCommand),
    /// Inspect the domain-event outbox.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Manage webhooks (signed HTTP POSTs of events).
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Read and purge the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Tenant housekeeping.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig,
    /// Write a consistent copy of the SQLite database to FILE, while the service runs. For
    /// PostgreSQL it says how to use pg_dump instead.
    Backup {
        /// A new file.
        file: PathBuf,
    },
    /// Replace the SQLite database with a backup, after checking it. Stop Tessera first.
    Restore {
        /// A file written by `tessera backup`.
        file: PathBuf,
        /// Replace an existing database.
        #[arg(long)]
        force: bool,
    },
    /// Print a shell completion script: `tessera completions bash > /etc/bash_completion.d/tessera`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `tessera man | man -l -`.
    Man,
    /// Print the OpenAPI 3.1 document of the HTTP API (what `/openapi.json` serves).
    Openapi,
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// Remove for good the tenants deleted more than --older-than-days ago (memberships, roles,
    /// invitations, API keys and domains go with them; audit entries stay).
    Purge {
        /// Keep tenants deleted more recently than this (0: purge every deleted tenant).
        #[arg(long, default_value_t = 30)]
        older_than_days: u32,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// List audit entries, oldest first (JSON lines with --json).
    List {
        /// Only entries whose actor has this id (user id or client id).
        #[arg(long)]
        actor: Option<String>,
        /// Only this action, e.g. user.login.
        #[arg(long)]
        action: Option<String>,
        /// Only entries whose target has this id.
        #[arg(long)]
        target: Option<String>,
        /// Only success or failure.
        #[arg(long)]
        result: Option<String>,
        /// From this time on (RFC 3339 or Unix seconds, inclusive).
        #[arg(long)]
        from: Option<String>,
        /// Before this time (RFC 3339 or Unix seconds, exclusive).
        #[arg(long)]
        to: Option<String>,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Start after this entry id (pagination).
        #[arg(long)]
        after: Option<String>,
    },
    /// Delete entries older than TESSERA_AUDIT__RETENTION_DAYS now.
    Purge,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user (for example the first administrator). Reads the password from stdin.
    Create {
        /// The user's email address.
        #[arg(long)]
        email: String,
        /// Read the password from standard input (first line).
        #[arg(long, conflicts_with = "password_hash")]
        password_stdin: bool,
        /// Import an existing hash (Argon2 PHC string or bcrypt $2b$); upgraded to Argon2id at
        /// the first successful login.
        #[arg(long)]
        password_hash: Option<String>,
        /// Mark the email as verified.
        #[arg(long)]
        verified: bool,
        /// Grant a role (repeatable). Known roles: admin.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Print the user as JSON (stable output for scripts).
        #[arg(long)]
        json: bool,
    },
    /// List users.
    List {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
        /// At most this many users.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Start after this user id (pagination).
        #[arg(long)]
        after: Option<String>,
    },
    /// Deactivate a user: refuses their logins, ends every session, emits UserDeactivatedV1.
    Deactivate {
        /// The user's id.
        #[arg(long, required_unless_present = "email", conflicts_with = "email")]
        id: Option<String>,
        /// The user's email address.
        #[arg(long)]
        email: Option<String>,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// List events in outbox order (JSON lines with --json).
    List {
        /// Only events parked after too many failed publish attempts.
        #[arg(long, conflicts_with = "pending")]
        failed: bool,
        /// Only events not yet published.
        #[arg(long)]
        pending: bool,
        /// Print JSON lines (one event per line, with status and envelope).
        #[arg(long)]
        json: bool,
        /// At most this many events.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Start after this sequence number (pagination).
        #[arg(long)]
        after: Option<i64>,
    },
    /// Put every parked event back in the queue.
    RetryFailed,
}

#[derive(Subcommand)]
enum WebhooksCommand {
    /// Register a URL; prints its signing secret once.
    Add {
        /// The http(s) URL that receives POSTs.
        url: String,
        /// Event types (comma-separated or repeated), or * for all.
        #[arg(long = "events", required = true, num_args = 1..)]
        events: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List webhooks.
    List {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Remove a webhook and its pending deliveries.
    Remove {
        /// The webhook id.
        id: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Neither needs (or should fail on) the configuration.
    match &cli.command {
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(*shell, &mut command, "tessera", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Openapi => {
            print!("{}", tessera::http::openapi_json());
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tessera: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tessera: {e}");
            return ExitCode::from(2);
        }
    };
    // Only `serve` exports traces: the other commands are short and would lose their spans.
    let traces = match cli.command {
        Command::Serve => config.traces.clone(),
        _ => tessera::config::TracesConfig::default(),
    };
    if let Err(e) = tessera::telemetry::init(&config.log_format, &traces) {
        eprintln!("tessera: invalid configuration: TESSERA_TRACES__ENDPOINT: {e}");
        return ExitCode::from(2);
    }
    match run(cli.command, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    let clock = Clock::System;
    match command {
        Command::Serve => {
            let env: Vec<(String, String)> = std::env::vars().collect();
            for key in Config::unknown_env_keys(&env) {
                tracing::warn!(%key, "unknown TESSERA_* environment variable ignored");
            }
            let app = App::build(config, clock).await?;
            tracing::info!(addr = %app.local_addr(), issuer = %app.state().config.issuer, "tessera is listening");
            app.run().await
        }
        Command::Migrate => {
            tessera::app::open_store(&config).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Backup { file } => {
            if tessera::store::backup::sqlite_path(&config.database_url()).is_none() {
                bail!("{}", tessera::store::backup::POSTGRES_ADVICE);
            }
            let store = tessera::app::open_store(&config).await?;
            tessera::store::backup::backup(&store, &file).await?;
            store.close().await;
            println!("backed up to {}", file.display());
            Ok(())
        }
        Command::Restore { file, force } => {
            let Some(database) = tessera::store::backup::sqlite_path(&config.database_url()) else {
                bail!("{}", tessera::store::backup::POSTGRES_ADVICE);
            };
            let version = tessera::store::backup::restore(&file, &database, force).await?;
            // A backup from an older version is brought up to date now.
            let store = tessera::app::open_store(&config).await?;
            store.close().await;
            println!(
                "restored {} (schema version {version}) to {}",
                file.display(),
                database.display()
            );
            Ok(())
        }
        Command::CheckConfig => {
            println!("{}", serde_json::to_string_pretty(&config.redacted())?);
            Ok(())
        }
        Command::User(cmd) => user(cmd, config, clock).await,
        Command::Keys(cmd) => keys::run(cmd, &config, clock.now()).await,
        Command::MasterKey(cmd) => keys::master_key(cmd, &config, clock.now()).await,
        Command::Client(cmd) => client::run(cmd, &config, clock.now()).await,
        Command::Idp(cmd) => idp::run(cmd, &config, clock.now()).await,
        Command::Events(cmd) => events(cmd, config, clock).await,
        Command::Webhooks(cmd) => webhooks(cmd, config, clock).await,
        Command::Audit(cmd) => audit(cmd, config, clock).await,
        Command::Tenants(cmd) => tenants(cmd, config, clock).await,
        // Answered in `main`, before the configuration is read.
        Command::Completions { .. } | Command::Man | Command::Openapi => Ok(()),
    }
}

async fn tenants(cmd: TenantsCommand, config: Config, clock: Clock) -> anyhow::Result<()> {
    let store = tessera::app::open_store(&config).await?;
    match cmd {
        TenantsCommand::Purge {
            older_than_days,
            json,
        } => {
            let ctx = tessera::context::RequestContext::system();
            let older_than = i64::from(older_than_days) * 24 * 3600;
            let n = tessera::tenants::purge(&store, older_than, &ctx, clock.now())
                .await
                .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
            if json {
                println!("{}", serde_json::json!({ "purged": n }));
            } else {
                println!("{n} tenants deleted more than {older_than_days} days ago purged");
            }
            Ok(())
        }
    }
}

async fn audit(cmd: AuditCommand, config: Config, clock: Clock) -> anyhow::Result<()> {
    let store = tessera::app::open_store(&config).await?;
    match cmd {
        AuditCommand::List {
            actor,
            action,
            target,
            result,
            from,
            to,
            json,
            limit,
            after,
        } => {
            let filter = tessera::audit::Filter {
                actor,
                action,
                target,
                result,
                from,
                to,
                after,
                limit: Some(limit),
            };
            let (entries, next) = tessera::audit::list(&store, &Principal::System, &filter)
                .await
                .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
            for e in &entries {
                if json {
                    println!("{}", serde_json::to_string(e)?);
                } else {
                    println!(
                        "{:>8}  {} {:<28} {:<7} actor={}:{} target={}:{} reason={} ip={}",
                        e.id,
                        e.occurred_at,
                        e.action,
                        e.result,
                        e.actor_type,
                        e.actor_id.as_deref().unwrap_or("-"),
                        e.target_type.as_deref().unwrap_or("-"),
                        e.target_id.as_deref().unwrap_or("-"),
                        e.reason.as_deref().unwrap_or("-"),
                        e.ip.as_deref().unwrap_or("-"),
                    );
                }
            }
            if let (Some(next), false) = (next, json) {
                eprintln!("more: --after {next}");
            }
            Ok(())
        }
        AuditCommand::Purge => {
            let days = config.audit.retention_days;
            let ctx = tessera::context::RequestContext::system();
            let n = tessera::audit::purge(&store, days, &ctx, clock.now())
                .await
                .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
            if days == 0 {
                println!("retention is 0 (keep forever): nothing purged");
            } else {
                println!("{n} audit entries older than {days} days deleted");
            }
            Ok(())
        }
    }
}

async fn events(cmd: EventsCommand, config: Config, clock: Clock) -> anyhow::Result<()> {
    use tessera::events::Filter;
    let store = tessera::app::open_store(&config).await?;
    match cmd {
        EventsCommand::List {
            failed,
            pending,
            json,
            limit,
            after,
        } => {
            let filter = match (failed, pending) {
                (true, _) => Filter::Failed,
                (_, true) => Filter::Pending,
                _ => Filter::All,
            };
            let (events, next) =
                tessera::events::list(&store, &Principal::System, filter, after, limit)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
            for e in &events {
                if json {
                    println!("{}", serde_json::to_string(e)?);
                } else {
                    println!(
                        "{:>8}  {:<10} {:<45} {} {} attempts={}{}",
                        e.seq,
                        e.status,
                        e.envelope["event_type"].as_str().unwrap_or_default(),
                        e.envelope["occurred_at"].as_str().unwrap_or_default(),
                        e.envelope["subject"].as_str().unwrap_or_default(),
                        e.attempts,
                        e.last_error
                            .as_deref()
                            .map(|m| format!(" error={m:?}"))
                            .unwrap_or_default()
                    );
                }
            }
            if let (Some(next), false) = (next, json) {
                eprintln!("more: --after {next}");
            }
            Ok(())
        }
        EventsCommand::RetryFailed => {
            let ctx = tessera::context::RequestContext::system();
            let n = tessera::events::retry_parked(&store, By::system(&ctx), clock.now())
                .await
                .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
            println!(
                "{} parked events and {} parked webhook deliveries queued again",
                n.events, n.webhook_deliveries
            );
            Ok(())
        }
    }
}

async fn webhooks(cmd: WebhooksCommand, config: Config, clock: Clock) -> anyhow::Result<()> {
    let store = tessera::app::open_store(&config).await?;
    let ctx = tessera::context::RequestContext::system();
    match cmd {
        WebhooksCommand::Add { url, events, json } => {
            let master = tessera::app::load_master_key(&config)?;
            let (hook, secret) = tessera::events::webhooks::add(
                &store,
                &master,
                &url,
                &events,
                By::system(&ctx),
                clock.now(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
            if json {
                let mut v = serde_json::to_value(&hook)?;
                v["secret"] = secret.into();
                println!("{v}");
            } else {
                println!(
                    "webhook {} -> {} events={:?}",
                    hook.id, hook.url, hook.events
                );
                println!("signing secret (shown only now): {secret}");
            }
            Ok(())
        }
        WebhooksCommand::List { json } => {
            for hook in tessera::events::webhooks::list(&store, &Principal::System)
                .await
                .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?
            {
                if json {
                    println!("{}", serde_json::to_string(&hook)?);
                } else {
                    println!("{}  {}  events={:?}", hook.id, hook.url, hook.events);
                }
            }
            Ok(())
        }
        WebhooksCommand::Remove { id } => {
            tessera::events::webhooks::remove(&store, &id, By::system(&ctx), clock.now())
                .await
                .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
            println!("webhook {id} removed");
            Ok(())
        }
    }
}

async fn user(cmd: UserCommand, config: Config, clock: Clock) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Create {
            email,
            password_stdin,
            password_hash,
            verified,
            roles,
            json,
        } => {
            let roles = roles
                .iter()
                .map(|name| {
                    name.parse::<Role>().map_err(|_| {
                        let known: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
                        anyhow::anyhow!("unknown role {name:?}; known roles: {known:?}")
                    })
                })
                .collect::<anyhow::Result<Vec<Role>>>()?;
            let email = accounts::validate_email("email", &email)
                .map_err(|e| anyhow::anyhow!("--email: {}", describe(&e)))?;
            let hash = match (password_stdin, password_hash) {
                (true, _) => {
                    let mut input = String::new();
                    std::io::stdin()
                        .read_to_string(&mut input)
                        .context("reading the password from stdin")?;
                    let password = input.lines().next().unwrap_or_default().to_string();
                    let passwords = tessera::passwords::Passwords::new(&config.password)?;
                    passwords
                        .check_policy("password", &password, Some(&email))
                        .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
                    Some(
                        passwords
                            .hash(&password)
                            .await
                            .map_err(|e| anyhow::anyhow!("{e}"))?,
                    )
                }
                (false, Some(h)) => {
                    if !tessera::passwords::is_supported_hash(&h) {
                        bail!("--password-hash must be an Argon2 PHC string or a bcrypt hash");
                    }
                    Some(h)
                }
                (false, None) => None,
            };
            let store = tessera::app::open_store(&config).await?;
            let now = clock.now();
            let user = accounts::create(
                &store,
                &email,
                hash.as_deref(),
                verified.then_some(now),
                &roles,
                None,
                now,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
            let view = UserView::new(&user, &roles);
            if json {
                println!("{}", serde_json::to_string(&view)?);
            } else {
                println!(
                    "created user {} <{}> roles={:?}",
                    view.id, view.email, view.roles
                );
            }
            Ok(())
        }
        UserCommand::Deactivate { id, email } => {
            let store = tessera::app::open_store(&config).await?;
            let id = match (id, email) {
                (Some(id), _) => id,
                (None, Some(email)) => {
                    tessera::store::users::find_by_email(store.pool(), &email)
                        .await?
                        .with_context(|| format!("no user with email {email}"))?
                        .id
                }
                (None, None) => bail!("--id or --email is required"),
            };
            // With Redis, the revocation reaches every replica at once.
            let shared = tessera::shared::Shared::from_config(&config).await?;
            let cache = tessera::sessions::SessionCache::new(60, &shared);
            accounts::deactivate(
                &store,
                &cache,
                &id,
                &Principal::System,
                &tessera::context::RequestContext::system(),
                clock.now(),
            )
            .await
            .map_err(|e| match e {
                tessera::Error::NotFound => anyhow::anyhow!("no active user {id}"),
                other => anyhow::anyhow!("{}", describe(&other)),
            })?;
            println!("user {id} deactivated; their sessions are revoked");
            Ok(())
        }
        UserCommand::List { json, limit, after } => {
            let store = tessera::app::open_store(&config).await?;
            let users =
                tessera::store::users::list(store.pool(), after.as_deref(), limit.clamp(1, 10_000))
                    .await?;
            for u in &users {
                let roles = tessera::store::roles::roles_of(store.pool(), &u.id).await?;
                let view = UserView::new(u, &roles);
                if json {
                    println!("{}", serde_json::to_string(&view)?);
                } else {
                    println!(
                        "{}  {:<40} {:<12} verified={} roles={}",
                        view.id,
                        view.email,
                        view.status,
                        view.email_verified,
                        view.roles.join(" ")
                    );
                }
            }
            Ok(())
        }
    }
}

pub(crate) fn describe(e: &tessera::Error) -> String {
    match e {
        tessera::Error::Validation(fields) => fields
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect::<Vec<_>>()
            .join("; "),
        tessera::Error::NotFound => "not found".into(),
        other => other.to_string(),
    }
}
