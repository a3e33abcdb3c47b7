//! Email verification and password reset: one-time tokens sent by email.
//!
//! A token is `tsv_` (verification) or `tsp_` (reset) plus 256 random bits in base64url, stored
//! only as its SHA-256 digest, single use, expiring, and issuing a new one supersedes the user's
//! older ones of the same purpose. The email itself is a mail job written in the same transaction
//! as the token and its event, and sent later by the mail worker (or, with event-driven mail, the
//! link travels in the event). Requests about an address answer the same whether or not an account
//! exists, and do the same database round trips.

use crate::audit::{self, Actor, Entry, action};
use crate::clock::rfc3339;
use crate::context::RequestContext;
use crate::core::Core;
use crate::crypto::{new_token, token_hash};
use crate::error::{Error, Result};
use crate::events::PasswordResetRequestedV1;
use crate::events::{self, EmailVerificationRequestedV1, EmailVerifiedV1, PasswordChangedV1};
use crate::mail::{self, Template};
use crate::sessions;
use crate::store::Tx;
use crate::store::tokens::{self, NewToken};
use crate::store::users::{self, User, normalize_email};

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
        }
    }

    /// The recognisable prefix of its tokens.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::VerifyEmail => "tsv_",
            Self::ResetPassword => "tsp_",
        }
    }

    fn ttl(self, state: &Core) -> i64 {
        match self {
            Self::VerifyEmail => state.config.verification_token_ttl as i64,
            Self::ResetPassword => state.config.reset_token_ttl as i64,
        }
    }
}

/// A token of the shape Tessera issues for `purpose`: checked before any lookup.
pub fn well_formed(purpose: Purpose, token: &str) -> bool {
    crate::crypto::is_token_of(purpose.prefix(), token)
}

/// 400 `invalid_token`: unknown, used, superseded, expired or malformed.
pub fn invalid_token() -> Error {
    Error::bad_request(
        crate::error::Code::InvalidToken,
        "the token is invalid, expired or already used",
    )
}

/// Issues a token of `purpose` for `user` in `tx` (superseding older ones), and either a mail job
/// or, with event-driven mail, nothing but the link in the event. Returns the link's expiry.
async fn issue_in(
    tx: &mut Tx,
    state: &Core,
    user: &User,
    purpose: Purpose,
    now: i64,
) -> Result<(Option<String>, i64)> {
    let token = new_token(purpose.prefix());
    let expires_at = now + purpose.ttl(state);
    tokens::supersede(tx, &user.id, purpose.as_str(), now).await?;
    tokens::insert(
        tx,
        &NewToken {
            token_hash: &token_hash(&token),
            user_id: &user.id,
            purpose: purpose.as_str(),
            email: &normalize_email(&user.email),
            now,
            expires_at,
        },
    )
    .await?;
    let link = state.mail.link(purpose, &token);
    if state.mail.event_driven() {
        return Ok((Some(link), expires_at));
    }
    let template = match purpose {
        Purpose::VerifyEmail => Template::VerifyEmail,
        Purpose::ResetPassword => Template::ResetPassword,
    };
    mail::enqueue(
        tx,
        &state.mail,
        template,
        &user.email,
        &link,
        expires_at,
        now,
    )
    .await?;
    Ok((None, expires_at))
}

/// For an address without a (suitable) account: the statements and the sealing a known address
/// costs, writing nothing, so the answer takes as long either way.
async fn decoy_in(
    tx: &mut Tx,
    state: &Core,
    purpose: Purpose,
    audited: bool,
    now: i64,
) -> Result<()> {
    tokens::supersede(tx, "", purpose.as_str(), now).await?;
    let _ = token_hash(&new_token(purpose.prefix()));
    let sealed = mail::decoy_payload(&state.mail, now + purpose.ttl(state))?;
    tokens::decoy_insert(tx, sealed.as_deref(), audited, now).await?;
    Ok(())
}

/// Issues a verification token and its email for `user`, with `EmailVerificationRequestedV1`.
pub async fn request_verification_in(
    tx: &mut Tx,
    state: &Core,
    user: &User,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    let (link, expires_at) = issue_in(tx, state, user, Purpose::VerifyEmail, now).await?;
    let event = EmailVerificationRequestedV1 {
        user_id: user.id.clone(),
        email: user.email.clone(),
        expires_at: rfc3339(expires_at),
        link,
    };
    events::append(tx, ctx, &event, now).await
}

/// Sends a new verification email if `email` belongs to an active, unverified account. The
/// caller answers 202 whatever happened.
#[tracing::instrument(skip_all)]
pub async fn resend_verification(
    state: &Core,
    email: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    let email = super::validate_email("email", email)?;
    let mut tx = state.store.begin().await?;
    let user = users::find_by_email(&mut *tx, &email).await?;
    match user.filter(|u| u.is_active() && u.email_verified_at.is_none()) {
        Some(user) => request_verification_in(&mut tx, state, &user, ctx, now).await?,
        None => decoy_in(&mut tx, state, Purpose::VerifyEmail, false, now).await?,
    }
    tx.commit().await?;
    Ok(())
}

/// Uses a verification token: the address it was sent to is verified (`EmailVerifiedV1`).
#[tracing::instrument(skip_all)]
pub async fn verify_email(state: &Core, token: &str, ctx: &RequestContext, now: i64) -> Result<()> {
    if !well_formed(Purpose::VerifyEmail, token) {
        return Err(invalid_token());
    }
    let mut tx = state.store.begin().await?;
    let Some(live) = tokens::consume(
        &mut tx,
        &token_hash(token),
        Purpose::VerifyEmail.as_str(),
        now,
    )
    .await?
    else {
        return Err(invalid_token());
    };
    if !users::set_email_verified(&mut tx, &live.user_id, &live.email, now).await? {
        // The account's address changed since the token was sent.
        return Err(invalid_token());
    }
    record_verified_in(&mut tx, &live.user_id, &live.email, ctx, now).await?;
    tx.commit().await?;
    state.users.invalidate(&live.user_id).await;
    Ok(())
}

/// The audit entry and `EmailVerifiedV1` of an address its holder just proved.
pub async fn record_verified_in(
    tx: &mut Tx,
    user_id: &str,
    email: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    let entry = Entry::success(Actor::User(user_id), action::VERIFY_EMAIL).target("user", user_id);
    audit::record(&mut **tx, ctx, &entry, now).await?;
    let event = EmailVerifiedV1 {
        user_id: user_id.to_string(),
        email: email.to_string(),
    };
    events::append(tx, ctx, &event, now).await
}

/// Sends a password-reset email if `email` belongs to an active account. The caller answers
/// 202 whatever happened; unknown addresses take the same database round trips.
#[tracing::instrument(skip_all)]
pub async fn request_password_reset(
    state: &Core,
    email: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    let email = super::validate_email("email", email)?;
    let mut tx = state.store.begin().await?;
    let user = users::find_by_email(&mut *tx, &email).await?;
    match user.filter(User::is_active) {
        Some(user) => {
            let (link, expires_at) =
                issue_in(&mut tx, state, &user, Purpose::ResetPassword, now).await?;
            // Anyone can ask for a reset link for any address: the requester is nobody known.
            let entry = Entry::success(Actor::None, action::REQUEST_PASSWORD_RESET)
                .target("user", &user.id);
            audit::record(&mut *tx, ctx, &entry, now).await?;
            let event = PasswordResetRequestedV1 {
                user_id: user.id.clone(),
                email: user.email.clone(),
                expires_at: rfc3339(expires_at),
                link,
            };
            events::append(&mut tx, ctx, &event, now).await?;
        }
        None => decoy_in(&mut tx, state, Purpose::ResetPassword, true, now).await?,
    }
    tx.commit().await?;
    Ok(())
}

/// Sets a new password with a reset token: the policy applies, the token is used up, every
/// session of the user ends, and `PasswordChangedV1` (method `reset`) plus one
/// `SessionRevokedV1` per session are recorded, all in one transaction.
#[tracing::instrument(skip_all)]
pub async fn reset_password(
    state: &Core,
    token: &str,
    new_password: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    if !well_formed(Purpose::ResetPassword, token) {
        return Err(invalid_token());
    }
    state
        .passwords
        .check_policy("new_password", new_password, None)?;
    let hash = token_hash(token);
    // Look before hashing, so a stream of bad tokens costs no Argon2 run.
    let Some(live) = tokens::find_live(
        state.store.pool(),
        &hash,
        Purpose::ResetPassword.as_str(),
        now,
    )
    .await?
    else {
        return Err(invalid_token());
    };
    // Now that the account is known, the rule about its email applies too.
    state
        .passwords
        .check_policy("new_password", new_password, Some(&live.email))?;
    let password_hash = state.passwords.hash(new_password).await?;
    let mut tx = state.store.begin().await?;
    let Some(live) = tokens::consume(&mut tx, &hash, Purpose::ResetPassword.as_str(), now).await?
    else {
        return Err(invalid_token());
    };
    let user = users::find_by_id(&mut *tx, &live.user_id).await?;
    if !user.is_some_and(|u| u.is_active() && normalize_email(&u.email) == live.email) {
        return Err(invalid_token());
    }
    users::set_password_hash(&mut *tx, &live.user_id, &password_hash, now).await?;
    let entry = Entry::success(Actor::User(&live.user_id), action::RESET_PASSWORD)
        .target("user", &live.user_id);
    audit::record(&mut *tx, ctx, &entry, now).await?;
    let revoked = sessions::revoke_all_in(
        &mut tx,
        &live.user_id,
        None,
        sessions::RevocationReason::PasswordReset,
        ctx,
        now,
    )
    .await?;
    let event = PasswordChangedV1 {
        user_id: live.user_id.clone(),
        method: "reset".into(),
    };
    events::append(&mut tx, ctx, &event, now).await?;
    tx.commit().await?;
    state.sessions.mark_all_revoked(&revoked).await;
    state.users.invalidate(&live.user_id).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape_is_checked_per_purpose() {
        let v = new_token(Purpose::VerifyEmail.prefix());
        assert!(well_formed(Purpose::VerifyEmail, &v));
        assert!(!well_formed(Purpose::ResetPassword, &v));
        assert!(!well_formed(Purpose::VerifyEmail, &v[..v.len() - 1]));
        assert!(!well_formed(Purpose::VerifyEmail, &format!("{v}A")));
        assert!(!well_formed(
            Purpose::VerifyEmail,
            &format!("tsv_{}", "%".repeat(43))
        ));
        assert!(!well_formed(Purpose::VerifyEmail, ""));
    }
}
