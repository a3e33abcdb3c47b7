//! The emailed proof of ownership (docs/federation.md): when an upstream identity meets an
//! account at its address and the rules of [`super::signin::resolve`] ask for proof, the
//! holder may ask for a link sent to the account's address ([`send`]) instead of giving its
//! password, or because the account has none.
//!
//! The link is `tsl_` plus 256 random bits, stored only as its digest, single use, valid for
//! [`LINK_TTL_SECS`], and a newer one supersedes it. It works only in the browser that asked
//! for it (a cookie whose digest the link's row holds): someone who signs in upstream with a
//! victim's address cannot have the victim confirm the link for them. Opening the link shows a
//! page ([`describe`]); only its form confirms ([`confirm`]), so mail scanners following links
//! change nothing. Confirming links, and does not sign in: the page continues the sign-in at the
//! provider, which now finds the link.
//!
//! An account whose address was never verified may have been set up by someone else before its
//! real holder came (pre-account takeover): confirming the link proves the address, and
//! everything set up without that proof goes (the `reclaim_in` list); the page says so before the
//! holder confirms.

use crate::abuse::Class;
use crate::accounts::recovery::invalid_token;
use crate::audit::{self, Actor, Entry, action};
use crate::clock::rfc3339;
use crate::context::RequestContext;
use crate::core::Core;
use crate::crypto::{b64url, ct_eq, new_token, random_bytes, token_hash};
use crate::error::{Error, Result};
use crate::events::PasswordChangedV1;
use crate::events::{self, ApiKeyRevokedV1, IdentityLinkRequestedV1, IdentityUnlinkedV1};
use crate::mail::{self, Template};
use crate::sessions::{self, RevocationReason};
use crate::store::federation::{self as store, LinkToken};
use crate::store::users::{self, User, normalize_email};

use super::signin::{NewLink, link_expired, link_in, pending_link};

/// How long an emailed link works.
pub const LINK_TTL_SECS: i64 = 1800;
const PREFIX: &str = "tsl_";

/// A link of the shape Tessera sends: checked before any lookup.
fn well_formed(token: &str) -> bool {
    crate::crypto::is_token_of(PREFIX, token)
}

/// A link sent: where to, for which provider, and the cookie that binds it to this browser
/// (no `Debug`: the cookie is a secret).
pub struct Sent {
    pub email: String,
    pub provider: String,
    pub browser_token: String,
}

/// Sends the link for the pending link `pending` (from the linking page) to the account's
/// address, continuing authorization request `request` once confirmed. Throttled like the
/// other recovery mail (per IP, per address and overall). An expired or forged `pending` is
/// 401 `invalid_mfa_token`.
pub async fn send(
    state: &Core,
    pending: &str,
    request: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<Sent> {
    let (p, provider) = pending_link(state, pending, now).await?;
    let ip = ctx.ip.as_deref().unwrap_or("");
    state.limiter.check(Class::RecoveryIp, ip, now).await?;
    state.limiter.check(Class::RecoveryGlobal, "*", now).await?;
    let user = users::find_by_id(state.store.pool(), &p.user_id)
        .await?
        .filter(User::is_active)
        .ok_or_else(link_expired)?;
    let email = normalize_email(&user.email);
    state
        .limiter
        .check(Class::RecoveryAccount, &email, now)
        .await?;
    let token = new_token(PREFIX);
    let browser_token = b64url(&random_bytes::<32>());
    let row = LinkToken {
        token_hash: token_hash(&token),
        user_id: user.id.clone(),
        provider: provider.name.clone(),
        subject: p.subject,
        upstream_email: p.email,
        email,
        browser: token_hash(&browser_token),
        request: request.to_string(),
        created_at: now,
        expires_at: now + LINK_TTL_SECS,
    };
    let link = state.mail.identity_link(&token);
    let mut tx = state.store.begin().await?;
    store::insert_link_token(&mut tx, &row).await?;
    if !state.mail.event_driven() {
        let about = Some(provider.display_name.as_str());
        let to = &user.email;
        let exp = row.expires_at;
        let template = Template::LinkIdentity;
        mail::enqueue_about(&mut tx, &state.mail, template, to, &link, about, exp, now).await?;
    }
    let event = IdentityLinkRequestedV1 {
        user_id: user.id.clone(),
        email: user.email.clone(),
        provider: provider.name.clone(),
        provider_name: provider.display_name.clone(),
        expires_at: rfc3339(row.expires_at),
        link: state.mail.event_driven().then_some(link),
    };
    events::append(&mut tx, ctx, &event, now).await?;
    tx.commit().await?;
    Ok(Sent {
        email: user.email,
        provider: provider.display_name,
        browser_token,
    })
}

/// What the page of a link shows before it is confirmed.
#[derive(Debug)]
pub struct Request {
    /// The account's address.
    pub email: String,
    /// The provider's display name.
    pub provider: String,
    /// The account's address was never verified: confirming removes what was set up without
    /// it (see the module's documentation).
    pub reclaims: bool,
    /// The page is open in the browser that asked for the link.
    pub same_browser: bool,
}

/// The link's request, if the link is live (a lookup only: nothing is used up).
pub async fn describe(
    state: &Core,
    token: &str,
    browser_token: Option<&str>,
    now: i64,
) -> Result<Option<Request>> {
    if !well_formed(token) {
        return Ok(None);
    }
    let Some(row) = store::find_link_token(state.store.pool(), &token_hash(token), now).await?
    else {
        return Ok(None);
    };
    let Some(user) = users::find_by_id(state.store.pool(), &row.user_id)
        .await?
        .filter(|u| u.is_active() && normalize_email(&u.email) == row.email)
    else {
        return Ok(None);
    };
    let provider = store::find_provider(state.store.pool(), &row.provider).await?;
    Ok(provider.map(|p| Request {
        email: user.email,
        provider: p.display_name,
        reclaims: user.email_verified_at.is_none(),
        same_browser: same_browser(&row, browser_token),
    }))
}

fn same_browser(row: &LinkToken, browser_token: Option<&str>) -> bool {
    browser_token.is_some_and(|t| ct_eq(token_hash(t).as_bytes(), row.browser.as_bytes()))
}

/// How confirming a link ended.
#[derive(Debug)]
pub enum Confirmed {
    /// Linked (now, or before): the sign-in goes on at provider `provider` with authorization
    /// request `request`.
    Linked {
        provider: String,
        request: String,
        /// It was linked to this account already.
        before: bool,
    },
    /// The upstream identity is linked to another account: nothing was changed.
    LinkedElsewhere,
    /// The page is not open in the browser that asked for the link; the link still works there.
    OtherBrowser,
}

/// Confirms a link (the page's form): in one transaction the link is used up and the identity
/// joined to the account (`IdentityLinkedV1`, via `email`). When the account's address was
/// never verified, it is now, and what was set up without that proof goes (see the module). An
/// unknown, used, superseded or expired link, or an account whose address changed since, is
/// 400 `invalid_token`.
pub async fn confirm(
    state: &Core,
    token: &str,
    browser_token: Option<&str>,
    ctx: &RequestContext,
    now: i64,
) -> Result<Confirmed> {
    if !well_formed(token) {
        return Err(invalid_token());
    }
    let hash = token_hash(token);
    // Another browser's page uses nothing up: the link still works where it was asked for.
    match store::find_link_token(state.store.pool(), &hash, now).await? {
        Some(row) if !same_browser(&row, browser_token) => return Ok(Confirmed::OtherBrowser),
        Some(_) => {}
        None => return Err(invalid_token()),
    }
    let mut tx = state.store.begin().await?;
    let row = store::consume_link_token(&mut tx, &hash, now)
        .await?
        .ok_or_else(invalid_token)?;
    let user = users::find_by_id(&mut *tx, &row.user_id)
        .await?
        .filter(|u| u.is_active() && normalize_email(&u.email) == row.email)
        .ok_or_else(invalid_token)?;
    let linked = store::find_identity(&mut *tx, &row.provider, &row.subject).await?;
    if linked.as_ref().is_some_and(|l| l.user_id != user.id) {
        tx.commit().await?;
        return Ok(Confirmed::LinkedElsewhere);
    }
    // Decided by the write itself (which locks the row): verified by this link, or before.
    let reclaims = users::verify_unverified_email(&mut tx, &user.id, &row.email, now).await?;
    if !reclaims && user.email_verified_at.is_none() {
        // Changed between the read and the write: verified meanwhile (then nothing is
        // reclaimed), or another address (then the link proves nothing).
        let still = users::find_by_id(&mut *tx, &user.id).await?;
        if !still.is_some_and(|u| {
            u.email_verified_at.is_some() && normalize_email(&u.email) == row.email
        }) {
            return Err(invalid_token());
        }
    }
    let before = linked.is_some();
    let kept = match linked {
        Some(l) => l.id,
        None => {
            let link = NewLink {
                provider: &row.provider,
                subject: &row.subject,
                email: &row.upstream_email,
            };
            match link_in(&mut tx, &user.id, &link, "email", ctx, now).await {
                Ok(id) => id,
                // Linked meanwhile (another tab's password, say): nothing here is kept, and the
                // link is still unused; once more, it finds the identity.
                Err(Error::Database(e)) if crate::store::is_unique_violation(&e) => {
                    drop(tx);
                    return Box::pin(confirm(state, token, browser_token, ctx, now)).await;
                }
                Err(e) => return Err(e),
            }
        }
    };
    let reclaimed = if reclaims {
        reclaim_in(&mut tx, &user, &row.email, &kept, ctx, now).await?
    } else {
        Reclaimed::default()
    };
    tx.commit().await?;
    state.sessions.mark_all_revoked(&reclaimed.sessions).await;
    for hash in &reclaimed.key_hashes {
        state.tenants.key_changed(hash).await;
    }
    state.users.invalidate(&user.id).await;
    Ok(Confirmed::Linked {
        provider: row.provider,
        request: row.request,
        before,
    })
}

/// What a reclaim ended, for the caches once it is committed.
#[derive(Debug, Default)]
struct Reclaimed {
    sessions: Vec<String>,
    key_hashes: Vec<String>,
}

/// The address is proven now, and was not before: what was set up on the account without that
/// proof goes (someone else may have registered the address first): its password, second
/// factors and recovery codes, the identities linked but `kept`, the API keys it created, the
/// consents it gave and its authorization codes, and every session. Tenant memberships stay
/// (docs/federation.md).
async fn reclaim_in(
    tx: &mut crate::store::Tx,
    user: &User,
    email: &str,
    kept: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<Reclaimed> {
    let user_id = user.id.as_str();
    crate::accounts::recovery::record_verified_in(tx, user_id, email, ctx, now).await?;
    let reason = RevocationReason::AccountReclaimed;
    if user.password_hash.is_some() {
        users::clear_password(tx, user_id, now).await?;
        let entry = Entry::success(Actor::User(user_id), action::CHANGE_PASSWORD)
            .target("user", user_id)
            .reason(reason.as_str());
        audit::record(&mut **tx, ctx, &entry, now).await?;
        let event = PasswordChangedV1 {
            user_id: user_id.to_string(),
            method: "removed".into(),
        };
        events::append(tx, ctx, &event, now).await?;
    }
    for factor in crate::store::mfa::delete_all(tx, user_id).await? {
        crate::mfa::record_removed_in(tx, user_id, factor, Some(reason.as_str()), ctx, now).await?;
    }
    for identity in store::unlink_all_but(tx, user_id, kept).await? {
        let entry = Entry::success(Actor::User(user_id), action::UNLINK_IDENTITY)
            .target("user", user_id)
            .reason(&identity.provider);
        audit::record(&mut **tx, ctx, &entry, now).await?;
        let event = IdentityUnlinkedV1 {
            user_id: user_id.to_string(),
            identity_id: identity.id,
            provider: identity.provider,
        };
        events::append(tx, ctx, &event, now).await?;
    }
    let mut key_hashes = Vec::new();
    for key in crate::store::api_keys::live_created_by(&mut **tx, user_id, now).await? {
        if !crate::store::api_keys::revoke(&mut **tx, &key.tenant_id, &key.id, now).await? {
            continue;
        }
        let entry = Entry::success(Actor::User(user_id), action::REVOKE_API_KEY)
            .target("api_key", &key.id)
            .tenant(&key.tenant_id)
            .reason(reason.as_str());
        audit::record(&mut **tx, ctx, &entry, now).await?;
        let event = ApiKeyRevokedV1 {
            tenant_id: key.tenant_id.clone(),
            key_id: key.id.clone(),
        };
        events::append(tx, ctx, &event, now).await?;
        key_hashes.push(key.secret_hash);
    }
    crate::store::oauth::forget_grants_of(tx, user_id).await?;
    let sessions = sessions::revoke_all_in(tx, user_id, None, reason, ctx, now).await?;
    Ok(Reclaimed {
        sessions,
        key_hashes,
    })
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_tokens_are_checked_by_shape() {
        let t = new_token(PREFIX);
        assert!(well_formed(&t));
        assert!(!well_formed(&t[..t.len() - 1]));
        assert!(!well_formed(&format!("tsv_{}", &t[4..])));
        assert!(!well_formed(&format!("tsl_{}", "%".repeat(43))));
    }
}
