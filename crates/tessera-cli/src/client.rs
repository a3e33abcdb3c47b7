//! `tessera client …`: OAuth client registration and management.

use clap::Subcommand;
use tessera::Config;
use tessera::authz::Principal;
use tessera::oauth::clients::{self, Client, ClientSpec};

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Register a client. Prints its client_id and, for confidential clients, its client_secret
    /// (shown once; only a hash is stored).
    Create {
        /// A name shown on the consent page.
        #[arg(long)]
        name: String,
        /// A public client (browser or native app): no secret, PKCE required.
        #[arg(long)]
        public: bool,
        /// Exact redirect URI (repeatable). https, or http only on loopback.
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// Allowed post-logout redirect URI (repeatable).
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// Grant type (repeatable): authorization_code, refresh_token, client_credentials, password.
        #[arg(long = "grant", default_value = "authorization_code")]
        grants: Vec<String>,
        /// Allowed scope (repeatable). Default: openid profile email.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Allowed RFC 8707 resource indicator (repeatable).
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// A first-party application: may hold the tessera:account and tessera:admin scopes.
        #[arg(long)]
        first_party: bool,
        /// Seconds a rotated-out refresh token is still honoured (0 to 60; default 0).
        #[arg(long)]
        refresh_reuse_grace: Option<i64>,
        /// The sign-in class every user must reach for this client (urn:tessera:acr:pwd,
        /// urn:tessera:acr:mfa or phr).
        #[arg(long)]
        require_acr: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List clients.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one client.
    Get {
        client_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Replace a client's redirect URIs, grants, scopes or resources (only those given).
    Update {
        client_id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        #[arg(long = "grant")]
        grants: Vec<String>,
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// Mark the client first-party (true) or third-party (false).
        #[arg(long)]
        first_party: Option<bool>,
        /// Seconds a rotated-out refresh token is still honoured (0 to 60).
        #[arg(long)]
        refresh_reuse_grace: Option<i64>,
        /// The sign-in class every user must reach (`none` to require none beyond the request).
        #[arg(long)]
        require_acr: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Issue a new client secret; the old one stops working.
    RotateSecret {
        client_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Deactivate a client: it can no longer authenticate or start authorizations.
    Deactivate {
        client_id: String,
        #[arg(long)]
        json: bool,
    },
}

fn some(v: Vec<String>) -> Option<Vec<String>> {
    (!v.is_empty()).then_some(v)
}

fn describe(e: &tessera::Error) -> String {
    match e {
        tessera::Error::Validation(fields) => fields
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect::<Vec<_>>()
            .join("; "),
        tessera::Error::NotFound => "no such client".into(),
        other => other.to_string(),
    }
}

fn print(client: &Client, secret: Option<&str>, json: bool) -> anyhow::Result<()> {
    if json {
        let mut v = serde_json::to_value(client)?;
        if let Some(s) = secret {
            v["client_secret"] = s.into();
        }
        println!("{v}");
    } else {
        println!(
            "{}  {:<24} {:<11} {} grants={} scopes={}",
            client.client_id,
            client.name,
            client.status,
            if client.public {
                "public"
            } else {
                "confidential"
            },
            client
                .grant_types
                .iter()
                .map(|g| g.as_str())
                .collect::<Vec<_>>()
                .join(","),
            client.scopes.join(",")
        );
        if let Some(s) = secret {
            println!("client_secret: {s}\n(shown once: store it now)");
        }
    }
    Ok(())
}

pub async fn run(cmd: ClientCommand, config: &Config, now: i64) -> anyhow::Result<()> {
    let store = tessera::app::open_store(config).await?;
    let shared = tessera::shared::Shared::from_config(config).await?;
    let cache = clients::client_cache(&shared);
    // An operator at the command line: actor `system` in the audit log.
    let ctx = tessera::context::RequestContext::system();
    let by = |ctx| tessera::audit::By {
        principal: &Principal::System,
        ctx,
    };
    let fail = |e: tessera::Error| anyhow::anyhow!("{}", describe(&e));
    match cmd {
        ClientCommand::Create {
            name,
            public,
            redirect_uris,
            post_logout_redirect_uris,
            grants,
            scopes,
            resources,
            first_party,
            refresh_reuse_grace,
            require_acr,
            json,
        } => {
            let spec = ClientSpec {
                name: Some(name),
                public,
                redirect_uris: Some(redirect_uris),
                post_logout_redirect_uris: Some(post_logout_redirect_uris),
                grant_types: Some(grants),
                scopes: some(scopes),
                resources: Some(resources),
                first_party: Some(first_party),
                refresh_reuse_grace,
                rate_limit: None,
                may_introspect: None,
                require_acr: require_acr.map(Some),
            };
            let r = clients::create(&store, spec, by(&ctx), now)
                .await
                .map_err(fail)?;
            print(&r.client, r.client_secret.as_deref(), json)
        }
        ClientCommand::List { json } => {
            for c in clients::list(&store, &Principal::System, None, 500)
                .await
                .map_err(fail)?
            {
                print(&c, None, json)?;
            }
            Ok(())
        }
        ClientCommand::Get { client_id, json } => print(
            &clients::get(&store, &Principal::System, &client_id)
                .await
                .map_err(fail)?,
            None,
            json,
        ),
        ClientCommand::Update {
            client_id,
            name,
            redirect_uris,
            post_logout_redirect_uris,
            grants,
            scopes,
            resources,
            first_party,
            refresh_reuse_grace,
            require_acr,
            json,
        } => {
            let spec = ClientSpec {
                name,
                public: false,
                redirect_uris: some(redirect_uris),
                post_logout_redirect_uris: some(post_logout_redirect_uris),
                grant_types: some(grants),
                scopes: some(scopes),
                resources: some(resources),
                first_party,
                refresh_reuse_grace,
                rate_limit: None,
                may_introspect: None,
                require_acr: require_acr.map(|a| (a != "none").then_some(a)),
            };
            print(
                &clients::update(&store, &cache, &client_id, spec, by(&ctx), now)
                    .await
                    .map_err(fail)?,
                None,
                json,
            )
        }
        ClientCommand::RotateSecret { client_id, json } => {
            let r = clients::rotate_secret(&store, &cache, &client_id, by(&ctx), now)
                .await
                .map_err(fail)?;
            print(&r.client, r.client_secret.as_deref(), json)
        }
        ClientCommand::Deactivate { client_id, json } => print(
            &clients::deactivate(&store, &cache, &client_id, by(&ctx), now)
                .await
                .map_err(fail)?,
            None,
            json,
        ),
    }
}
