//! Outgoing mail: templates, the queue and the worker that delivers it.
//!
//! A domain function that wants an email writes a mail job with [`enqueue`] inside its own
//! transaction; nothing is sent there. The [`worker`] claims due jobs with a lease, renders the
//! templates, sends through the configured transport (SMTP or `.eml` files) and retries with
//! backoff. A job's payload carries the recipient and the link with its raw token, so it is
//! sealed with the master key and wiped once the job is done.

pub mod worker;

use std::sync::Arc;

use anyhow::Context;
use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};

use crate::accounts::recovery::Purpose;
use crate::config::Config;
use crate::crypto::MasterKey;
use crate::error::Result;
use crate::store::Tx;

/// The emails Tessera sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    VerifyEmail,
    ResetPassword,
    Invitation,
    /// The proof of ownership before an upstream identity joins an existing account.
    LinkIdentity,
}

impl Template {
    pub fn name(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
            Self::Invitation => "invitation",
            Self::LinkIdentity => "link_identity",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "verify_email" => Some(Self::VerifyEmail),
            "reset_password" => Some(Self::ResetPassword),
            "invitation" => Some(Self::Invitation),
            "link_identity" => Some(Self::LinkIdentity),
            _ => None,
        }
    }
}

const DEFAULTS: &[(&str, &str)] = &[
    ("verify_email.subject", "Confirm your email address"),
    (
        "verify_email.txt",
        "Hello,\n\nplease confirm that {{ email }} is your email address by opening this link:\n\n\
         {{ link }}\n\nThe link works once and expires at {{ expires_at }}.\n\
         If you did not create an account, you can ignore this message.\n",
    ),
    (
        "verify_email.html",
        "<!doctype html>\n<html><body>\n<p>Hello,</p>\n<p>please confirm that {{ email }} is your \
         email address:</p>\n<p><a href=\"{{ link }}\">Confirm my email address</a></p>\n<p>The \
         link works once and expires at {{ expires_at }}. If you did not create an account, you \
         can ignore this message.</p>\n</body></html>\n",
    ),
    ("reset_password.subject", "Reset your password"),
    (
        "reset_password.txt",
        "Hello,\n\nsomeone asked to reset the password of the account {{ email }}. To choose a new \
         password, open this link:\n\n{{ link }}\n\nThe link works once and expires at \
         {{ expires_at }}. Resetting signs you out everywhere.\n\
         If you did not ask for this, you can ignore this message.\n",
    ),
    (
        "reset_password.html",
        "<!doctype html>\n<html><body>\n<p>Hello,</p>\n<p>someone asked to reset the password of \
         the account {{ email }}.</p>\n<p><a href=\"{{ link }}\">Choose a new password</a></p>\n\
         <p>The link works once and expires at {{ expires_at }}. Resetting signs you out \
         everywhere. If you did not ask for this, you can ignore this message.</p>\n\
         </body></html>\n",
    ),
    ("invitation.subject", "You are invited to {{ tenant }}"),
    (
        "invitation.txt",
        "Hello,\n\nyou are invited to join {{ tenant }} as {{ email }}. To accept, open this \
         link and sign in (or create an account) with this address:\n\n{{ link }}\n\n\
         The link works once and expires at {{ expires_at }}.\n\
         If you did not expect this invitation, you can ignore this message.\n",
    ),
    (
        "invitation.html",
        "<!doctype html>\n<html><body>\n<p>Hello,</p>\n<p>you are invited to join {{ tenant }} \
         as {{ email }}.</p>\n<p><a href=\"{{ link }}\">Accept the invitation</a></p>\n<p>Sign \
         in (or create an account) with this address. The link works once and expires at \
         {{ expires_at }}. If you did not expect this invitation, you can ignore this \
         message.</p>\n</body></html>\n",
    ),
    (
        "link_identity.subject",
        "Link {{ provider }} to your account",
    ),
    (
        "link_identity.txt",
        "Hello,\n\nsomeone signing in with {{ provider }} asked to link it to the account \
         {{ email }}. If that was you, open this link in the same browser to confirm:\n\n\
         {{ link }}\n\nThe link works once and expires at {{ expires_at }}.\n\
         If you did not ask for this, ignore this message: nothing is linked without it.\n",
    ),
    (
        "link_identity.html",
        "<!doctype html>\n<html><body>\n<p>Hello,</p>\n<p>someone signing in with {{ provider }} \
         asked to link it to the account {{ email }}. If that was you, open this link in the \
         same browser to confirm:</p>\n<p><a href=\"{{ link }}\">Link {{ provider }}</a></p>\n\
         <p>The link works once and expires at {{ expires_at }}. If you did not ask for this, \
         ignore this message: nothing is linked without it.</p>\n</body></html>\n",
    ),
];

/// Links, templates and the sealing key: what request handlers need to queue mail.
pub struct Mailer {
    master: Arc<MasterKey>,
    from: Mailbox,
    templates: minijinja::Environment<'static>,
    public_url: String,
    /// Where the hosted pages are (the link-identity page must be on their host: its cookie is).
    issuer: String,
    verify_url: Option<String>,
    reset_url: Option<String>,
    invitation_url: Option<String>,
    event_driven: bool,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .field("event_driven", &self.event_driven)
            .finish_non_exhaustive()
    }
}

/// A rendered email.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The sealed part of a mail job.
#[derive(Serialize, Deserialize)]
struct Payload {
    to: String,
    link: String,
    expires_at: i64,
    /// The tenant's name, for invitations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
}

impl Mailer {
    /// Loads the templates: a file in `mail.templates_dir` overrides the built-in one of the same
    /// name. Every template is compiled now, so a broken override stops start-up.
    pub fn new(config: &Config, master: Arc<MasterKey>) -> anyhow::Result<Self> {
        let mut templates = minijinja::Environment::new();
        templates.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, default) in DEFAULTS {
            let source = match &config.mail.templates_dir {
                Some(dir) if dir.join(name).is_file() => {
                    let path = dir.join(name);
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("reading mail template {}", path.display()))?
                }
                _ => (*default).to_string(),
            };
            templates
                .add_template_owned(*name, source)
                .with_context(|| format!("mail template {name}"))?;
        }
        let from = config
            .mail
            .from
            .parse()
            .context("TESSERA_MAIL__FROM is not an address")?;
        let mailer = Self {
            master,
            from,
            templates,
            public_url: config.public_url().to_string(),
            issuer: config.issuer.trim_end_matches('/').to_string(),
            verify_url: config.verify_email_url.clone(),
            reset_url: config.reset_password_url.clone(),
            invitation_url: config.invitation_url.clone(),
            event_driven: config.mail.transport == "events",
        };
        for t in [
            Template::VerifyEmail,
            Template::ResetPassword,
            Template::Invitation,
            Template::LinkIdentity,
        ] {
            mailer
                .render(
                    t,
                    "user@example.com",
                    "https://example.com/x?token=t",
                    Some("Acme"),
                    0,
                )
                .with_context(|| format!("rendering the {} templates", t.name()))?;
        }
        Ok(mailer)
    }

    /// The link for a token: the per-flow template, or Tessera's own page under `public_url`.
    pub fn link(&self, purpose: Purpose, token: &str) -> String {
        let (template, page) = match purpose {
            Purpose::VerifyEmail => (&self.verify_url, "verify-email"),
            Purpose::ResetPassword => (&self.reset_url, "reset-password"),
        };
        match template {
            Some(t) => t.replace("{token}", token),
            None => format!("{}/{page}?token={token}", self.public_url),
        }
    }

    /// The link of an invitation: `TESSERA_INVITATION_URL`, else Tessera's own
    /// `/accept-invitation` page under `public_url`.
    pub fn invitation_link(&self, token: &str) -> String {
        match &self.invitation_url {
            Some(t) => t.replace("{token}", token),
            None => format!("{}/accept-invitation?token={token}", self.public_url),
        }
    }

    /// The link that confirms joining an upstream identity: Tessera's own `/link-identity`
    /// page at the issuer, beside the hosted sign-in pages (it opens in the browser that asked
    /// for it, with the cookie they set).
    pub fn identity_link(&self, token: &str) -> String {
        format!("{}/link-identity?token={token}", self.issuer)
    }

    /// True when links travel in events instead of emails (`TESSERA_MAIL__TRANSPORT=events`).
    pub fn event_driven(&self) -> bool {
        self.event_driven
    }

    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// Renders subject, text and HTML bodies.
    pub fn render(
        &self,
        template: Template,
        to: &str,
        link: &str,
        tenant: Option<&str>,
        expires_at: i64,
    ) -> anyhow::Result<Rendered> {
        let ctx = minijinja::context! {
            email => to,
            link => link,
            tenant => tenant.unwrap_or(""),
            // What the mail is about: the tenant of an invitation, the provider of a link.
            provider => tenant.unwrap_or(""),
            expires_at => crate::clock::rfc3339(expires_at),
        };
        let get = |ext: &str| -> anyhow::Result<String> {
            let name = format!("{}.{ext}", template.name());
            Ok(self.templates.get_template(&name)?.render(&ctx)?)
        };
        Ok(Rendered {
            subject: get("subject")?.trim().to_string(),
            text: get("txt")?,
            html: get("html")?,
        })
    }

    fn seal(&self, job_id: &str, payload: &Payload) -> Result<Vec<u8>> {
        let json =
            zeroize::Zeroizing::new(serde_json::to_vec(payload).map_err(crate::Error::internal)?);
        Ok(self.master.seal(&format!("mail_job:{job_id}"), &json))
    }

    fn open(&self, job_id: &str, sealed: &[u8]) -> anyhow::Result<Payload> {
        let json =
            zeroize::Zeroizing::new(self.master.open(&format!("mail_job:{job_id}"), sealed)?);
        Ok(serde_json::from_slice(&json)?)
    }
}

/// Queues an email in `tx`: it goes out only if `tx` commits.
/// The sealed payload [`enqueue`] would store, for a request that must cost the same when no
/// mail is sent (an unknown address); `None` when mail goes out as events.
pub fn decoy_payload(mailer: &Mailer, expires_at: i64) -> Result<Option<Vec<u8>>> {
    if mailer.event_driven() {
        return Ok(None);
    }
    let id = uuid::Uuid::now_v7().to_string();
    let payload = Payload {
        to: "nobody@invalid".into(),
        link: mailer.link(Purpose::ResetPassword, &"x".repeat(47)),
        expires_at,
        tenant: None,
    };
    Ok(Some(mailer.seal(&id, &payload)?))
}

pub async fn enqueue(
    tx: &mut Tx,
    mailer: &Mailer,
    template: Template,
    to: &str,
    link: &str,
    expires_at: i64,
    now: i64,
) -> Result<()> {
    enqueue_about(tx, mailer, template, to, link, None, expires_at, now).await
}

/// [`enqueue`] with the name the mail is about: the tenant of an invitation, the provider of
/// an identity link (the templates' `tenant` and `provider`).
#[allow(clippy::too_many_arguments)]
pub async fn enqueue_about(
    tx: &mut Tx,
    mailer: &Mailer,
    template: Template,
    to: &str,
    link: &str,
    tenant: Option<&str>,
    expires_at: i64,
    now: i64,
) -> Result<()> {
    let id = uuid::Uuid::now_v7().to_string();
    let sealed = mailer.seal(
        &id,
        &Payload {
            to: to.to_string(),
            link: link.to_string(),
            expires_at,
            tenant: tenant.map(str::to_string),
        },
    )?;
    crate::store::mail::insert(tx, &id, template.name(), &sealed, now).await?;
    Ok(())
}
