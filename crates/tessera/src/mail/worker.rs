//! The mail worker: claims due jobs with a lease, sends them, retries with backoff.

use std::time::Duration;

use anyhow::Context;
use lettre::message::{MultiPart, SinglePart, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use super::{Mailer, Rendered, Template};
use crate::config::MailConfig;
use crate::core::Core;
use crate::store::mail as store_mail;

/// Where mail goes.
pub enum Transport {
    /// `.eml` files in this folder, each created owner-only (0600) before a byte is written.
    File(std::path::PathBuf),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

impl Transport {
    /// The configured transport; `None` with event-driven mail.
    pub fn from_config(
        cfg: &MailConfig,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Option<Self>> {
        match cfg.transport.as_str() {
            "file" => {
                let dir = data_dir.join("mail");
                crate::files::private_dir(&dir)?;
                Ok(Some(Self::File(dir)))
            }
            "smtp" => {
                let host = cfg.smtp_host.clone().unwrap_or_default();
                let (tls, default_port) = match cfg.smtp_tls.as_str() {
                    "tls" => (Tls::Wrapper(TlsParameters::new(host.clone())?), 465),
                    "none" => (Tls::None, 25),
                    _ => (Tls::Required(TlsParameters::new(host.clone())?), 587),
                };
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                    .port(cfg.smtp_port.unwrap_or(default_port))
                    .tls(tls)
                    .timeout(Some(Duration::from_secs(20)));
                if let Some(user) = &cfg.smtp_username {
                    let password = cfg
                        .smtp_password
                        .as_ref()
                        .map(|p| p.expose_secret().to_string())
                        .unwrap_or_default();
                    builder = builder.credentials(Credentials::new(user.clone(), password));
                }
                Ok(Some(Self::Smtp(builder.build())))
            }
            _ => Ok(None),
        }
    }

    async fn send(&self, message: Message) -> anyhow::Result<()> {
        match self {
            Self::File(dir) => {
                let path = dir.join(format!("{}.eml", uuid::Uuid::new_v4()));
                let bytes = message.formatted();
                tokio::task::spawn_blocking(move || {
                    crate::files::write_private_atomically(&path, &bytes)
                })
                .await?
            }
            Self::Smtp(t) => t.send(message).await.map(|_| ()).map_err(Into::into),
        }
    }
}

fn build_message(mailer: &Mailer, to: &str, r: Rendered) -> anyhow::Result<Message> {
    let part = |ct: ContentType, body: String| -> anyhow::Result<SinglePart> {
        let body = lettre::message::Body::new_with_encoding(
            body,
            lettre::message::header::ContentTransferEncoding::QuotedPrintable,
        )
        .map_err(|_| anyhow::anyhow!("encoding the body"))?;
        Ok(SinglePart::builder().header(ct).body(body))
    };
    Ok(Message::builder()
        .from(mailer.from().clone())
        .to(to.parse().context("recipient address")?)
        .subject(r.subject)
        .multipart(
            MultiPart::alternative()
                .singlepart(part(ContentType::TEXT_PLAIN, r.text)?)
                .singlepart(part(ContentType::TEXT_HTML, r.html)?),
        )?)
}

/// Runs until aborted: claims due jobs every `poll_interval_ms` and delivers them.
/// Sends the queued mail until `stopping`; then finishes the message in hand and gives back the
/// rest of its claim.
pub async fn run(state: Core, transport: Transport, stopping: CancellationToken) {
    let owner = uuid::Uuid::now_v7().to_string();
    let cfg = state.config.mail.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.poll_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopping.cancelled() => return,
        }
        if let Err(e) = round(&state, &transport, &owner, &cfg, &stopping).await {
            tracing::warn!(error = ?e, "mail worker round failed");
        }
    }
}

/// One round: claim, send, record. Returns the number of jobs handled. Once `stopping`, the
/// jobs of the claim not yet started are released for another worker.
pub async fn round(
    state: &Core,
    transport: &Transport,
    owner: &str,
    cfg: &MailConfig,
    stopping: &CancellationToken,
) -> anyhow::Result<usize> {
    let now = state.clock.now();
    if !crate::store::jobs::any_due(state.store.pool(), crate::store::jobs::MAIL, now).await? {
        return Ok(0);
    }
    let jobs = store_mail::claim(state.store.writer(), owner, now, now + 120, 20).await?;
    for (handled, job) in jobs.iter().enumerate() {
        if stopping.is_cancelled() {
            crate::store::jobs::release(
                state.store.writer(),
                crate::store::jobs::MAIL,
                &job.lease_owner,
            )
            .await?;
            return Ok(handled);
        }
        let outcome = send_job(state, transport, job).await;
        let now = state.clock.now();
        match outcome {
            Ok(()) => {
                store_mail::mark_sent(state.store.writer(), &job.lease_owner, &job.id, now).await?
            }
            Err(e) => {
                crate::metrics::delivery_failed("mail");
                let attempts = job.attempts + 1;
                let next = now + 30 * crate::events::backoff(attempts).min(120);
                let gave_up = store_mail::mark_failed(
                    state.store.writer(),
                    &job.lease_owner,
                    &job.id,
                    &format!("{e:#}"),
                    now,
                    next,
                    i64::from(cfg.max_attempts),
                )
                .await?;
                if gave_up {
                    tracing::error!(job = %job.id, error = %format!("{e:#}"), attempts, "mail job parked after too many failures");
                } else {
                    tracing::warn!(job = %job.id, error = %format!("{e:#}"), attempts, "mail delivery failed; will retry");
                }
            }
        }
    }
    Ok(jobs.len())
}

async fn send_job(
    state: &Core,
    transport: &Transport,
    job: &store_mail::MailJob,
) -> anyhow::Result<()> {
    let template = Template::parse(&job.template).context("unknown mail template")?;
    let sealed = job.payload.as_deref().context("mail job without payload")?;
    let payload = state.mail.open(&job.id, sealed)?;
    let rendered = state.mail.render(
        template,
        &payload.to,
        &payload.link,
        payload.tenant.as_deref(),
        payload.expires_at,
    )?;
    let message = build_message(&state.mail, &payload.to, rendered)?;
    transport.send(message).await
}
