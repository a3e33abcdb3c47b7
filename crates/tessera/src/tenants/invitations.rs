//! Invitations: a member with `members:invite` invites an address with roles; Tessera mails a
//! single-use, expiring link (`tsi_…`, kept only as a hash) through the mail queue, in the
//! transaction that records the invitation. The invited person accepts it with a bearer token
//! of an account with that address (`POST /invitations/accept`), right after registering if
//! need be: holding the mailed token and an account of the address together is the proof.

use serde::{Deserialize, Serialize};

use super::members::check_grantable;
use super::policy::limit_reached;
use super::{TenantType, TenantView, info, require};
use crate::audit::{self, Entry, action};
use crate::authz::{self, Permission, Principal, TenantPermission};
use crate::clock::rfc3339;
use crate::context::RequestContext;
use crate::core::Core;
use crate::crypto::{new_token, token_hash};
use crate::error::{Code, Error, Result};
use crate::events::{self, InvitationAcceptedV1, InvitationSentV1, MemberAddedV1};
use crate::mail::{self, Template};
use crate::store::invitations::{self as store, InvitationRow, NewInvitation};
use crate::store::tenants as tenants_store;
use crate::store::users::normalize_email;

/// The recognisable prefix of invitation tokens.
pub const PREFIX: &str = "tsi_";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Invite {
    pub email: String,
    pub roles: Vec<String>,
}

/// An invitation as listed (never the token).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InvitationView {
    pub id: String,
    pub email: String,
    pub roles: Vec<String>,
    pub invited_by: Option<String>,
    pub created_at: String,
    pub expires_at: String,
}

impl From<InvitationRow> for InvitationView {
    fn from(r: InvitationRow) -> Self {
        Self {
            id: r.id,
            email: r.email,
            roles: r.roles.split_whitespace().map(str::to_string).collect(),
            invited_by: r.invited_by,
            created_at: rfc3339(r.created_at),
            expires_at: rfc3339(r.expires_at),
        }
    }
}

/// `POST /tenants/{id}/invitations` `{email, roles}` (`members:invite`; the roles must be
/// grantable by the caller). A pending invitation of the same address is superseded. The
/// answer never holds the link: the inviter must not be able to accept in the invitee's place.
pub async fn create(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    input: Invite,
    ctx: &RequestContext,
    now: i64,
) -> Result<InvitationView> {
    let caller = require(core, principal, tenant_id, TenantPermission::MembersInvite).await?;
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    if tenant.kind == TenantType::Personal {
        return Err(Error::Forbidden {
            code: Code::Forbidden,
            message: "a personal tenant has no other members; create a team tenant",
        });
    }
    let email = crate::accounts::validate_email("email", &input.email)?;
    let normalized = normalize_email(&email);
    let roles = check_grantable(&tenant, &caller, &input.roles, "roles")?;
    let db = core.store.pool();
    if let Some(user) = crate::store::users::find_by_email(db, &email).await?
        && tenants_store::member_roles(db, tenant_id, &user.id)
            .await?
            .is_some()
    {
        return Err(Error::Conflict {
            code: Code::AlreadyMember,
            message: "this address already belongs to a member",
        });
    }
    let max = tenant.limits().max_members;
    let members = tenants_store::count_members(db, tenant_id).await?;
    let pending = store::count_pending(db, tenant_id, now).await?;
    if members + pending >= max {
        return Err(limit_reached(
            "the tenant's plan allows no more members (pending invitations count)",
        ));
    }
    let token = new_token(PREFIX);
    let id = uuid::Uuid::now_v7().to_string();
    let expires_at = now + core.config.invitation_ttl as i64;
    let joined = roles.join(" ");
    let inviter = principal.user().map(|u| u.user_id.as_str());
    let mut tx = core.store.begin().await?;
    store::supersede(&mut *tx, tenant_id, &normalized, now).await?;
    store::insert(
        &mut *tx,
        &NewInvitation {
            id: &id,
            tenant_id,
            email: &email,
            email_normalized: &normalized,
            roles: &joined,
            token_hash: &token_hash(&token),
            invited_by: inviter,
            now,
            expires_at,
        },
    )
    .await?;
    let link = core.mail.invitation_link(&token);
    let event_link = if core.mail.event_driven() {
        Some(link)
    } else {
        mail::enqueue_about(
            &mut tx,
            &core.mail,
            Template::Invitation,
            &email,
            &link,
            Some(&tenant.row.name),
            expires_at,
            now,
        )
        .await?;
        None
    };
    let entry = Entry::success(principal.actor(), action::INVITE_MEMBER)
        .target("invitation", &id)
        .tenant(tenant_id);
    audit::record(&mut *tx, ctx, &entry, now).await?;
    events::append(
        &mut tx,
        ctx,
        &InvitationSentV1 {
            tenant_id: tenant_id.to_string(),
            invitation_id: id.clone(),
            email: email.clone(),
            roles: roles.clone(),
            invited_by: inviter.map(str::to_string),
            expires_at: rfc3339(expires_at),
            link: event_link,
        },
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(InvitationView {
        id,
        email,
        roles,
        invited_by: inviter.map(str::to_string),
        created_at: rfc3339(now),
        expires_at: rfc3339(expires_at),
    })
}

/// `GET /tenants/{id}/invitations` (`members:invite`): the pending ones.
pub async fn list(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
) -> Result<Vec<InvitationView>> {
    require(core, principal, tenant_id, TenantPermission::MembersInvite).await?;
    let now = core.clock.now();
    Ok(store::pending(core.store.pool(), tenant_id, now)
        .await?
        .into_iter()
        .map(Into::into)
        .collect())
}

/// `DELETE /tenants/{id}/invitations/{invitation_id}` (`members:invite`).
pub async fn revoke(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    invitation_id: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    require(core, principal, tenant_id, TenantPermission::MembersInvite).await?;
    let mut tx = core.store.begin().await?;
    if !store::revoke(&mut *tx, tenant_id, invitation_id, now).await? {
        return Err(Error::NotFound);
    }
    let entry = Entry::success(principal.actor(), action::REVOKE_INVITATION)
        .target("invitation", invitation_id)
        .tenant(tenant_id);
    audit::record(&mut *tx, ctx, &entry, now).await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Accept {
    pub token: String,
}

fn invalid_invitation() -> Error {
    Error::bad_request(
        Code::InvalidToken,
        "the invitation is invalid, expired, revoked or already used",
    )
}

/// Whether `token` has the shape of an invitation token (checked before any lookup).
fn well_formed(token: &str) -> bool {
    crate::crypto::is_token_of(PREFIX, token)
}

/// `POST /invitations/accept` `{token}` with the invited account's bearer token: joins the
/// tenant with the invitation's roles (a member already there keeps their roles). The token
/// works once; unknown, expired, revoked and used tokens get the same 400.
pub async fn accept(
    core: &Core,
    principal: &Principal,
    input: Accept,
    ctx: &RequestContext,
    now: i64,
) -> Result<TenantView> {
    let user = authz::require_user(principal, Permission::UseTenants)?;
    let token = input.token.trim();
    if !well_formed(token) {
        return Err(invalid_invitation());
    }
    let db = core.store.pool();
    let invitation = store::find_by_token(db, &token_hash(token))
        .await?
        .filter(|i| i.accepted_at.is_none() && i.revoked_at.is_none() && i.expires_at > now)
        .ok_or_else(invalid_invitation)?;
    let account = crate::store::users::find_by_id(db, &user.user_id)
        .await?
        .ok_or_else(Error::invalid_token)?;
    if normalize_email(&account.email) != invitation.email_normalized {
        return Err(Error::Forbidden {
            code: Code::Forbidden,
            message: "this invitation is for another email address",
        });
    }
    let tenant_id = invitation.tenant_id.clone();
    let tenant = info(core, &tenant_id)
        .await?
        .ok_or_else(invalid_invitation)?;
    match tenant.status {
        super::TenantStatus::Active => {}
        super::TenantStatus::Suspended => return Err(super::suspended()),
        super::TenantStatus::Deleted => return Err(invalid_invitation()),
    }
    if !tenant.admits(ctx.ip.as_deref()) {
        return Err(super::policy::ip_not_allowed());
    }
    let roles: Vec<String> = invitation
        .roles
        .split_whitespace()
        .filter(|r| {
            crate::authz::TenantRole::parse(r).is_some() || tenant.custom_roles.contains_key(*r)
        })
        .map(str::to_string)
        .collect();
    let mut tx = core.store.begin().await?;
    tenants_store::lock(&mut tx, core.store.backend(), &tenant_id).await?;
    if !store::accept(&mut *tx, &invitation.id, &user.user_id, now).await? {
        return Err(invalid_invitation());
    }
    let already = tenants_store::member_roles(&mut *tx, &tenant_id, &user.user_id)
        .await?
        .is_some();
    if !already {
        if tenants_store::count_members(&mut *tx, &tenant_id).await? >= tenant.limits().max_members
        {
            return Err(limit_reached("the tenant's plan allows no more members"));
        }
        let roles = if roles.is_empty() {
            vec![crate::authz::TenantRole::Viewer.as_str().to_string()]
        } else {
            roles
        };
        tenants_store::add_member(&mut tx, &tenant_id, &user.user_id, &roles, now).await?;
        let entry = Entry::success(principal.actor(), action::ADD_MEMBER)
            .target("user", &user.user_id)
            .tenant(&tenant_id)
            .reason("invitation");
        audit::record(&mut *tx, ctx, &entry, now).await?;
        events::append(
            &mut tx,
            ctx,
            &MemberAddedV1 {
                tenant_id: tenant_id.clone(),
                user_id: user.user_id.clone(),
                roles,
            },
            now,
        )
        .await?;
    }
    events::append(
        &mut tx,
        ctx,
        &InvitationAcceptedV1 {
            tenant_id: tenant_id.clone(),
            invitation_id: invitation.id.clone(),
            user_id: user.user_id.clone(),
        },
        now,
    )
    .await?;
    tx.commit().await?;
    core.tenants.member_changed(&tenant_id, &user.user_id).await;
    let roles = tenants_store::member_roles(db, &tenant_id, &user.user_id)
        .await?
        .unwrap_or_default();
    let row = tenants_store::find(db, &tenant_id)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(TenantView {
        roles: Some(roles),
        ..TenantView::from(&row)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_recognisable_and_checked_for_shape() {
        let t = crate::crypto::new_token(super::PREFIX);
        assert!(super::well_formed(&t));
        assert!(!super::well_formed("tsv_abc"));
        assert!(!super::well_formed(&t.replace("tsi_", "tsp_")));
        assert!(!super::well_formed(&format!("{t}x")));
    }
}
