//! Email domains of enterprise tenants. A tenant claims a domain (`tenant:manage`); a system
//! administrator verifies it (Tessera cannot see who owns a domain; DNS proof is the operator's
//! check); from then on a user whose **verified** address is at that domain joins the tenant just
//! in time at sign-in, with the claim's default role. A domain belongs to one tenant at most.

use serde::{Deserialize, Serialize};

use super::{TenantStatus, TenantType, info, require};
use crate::audit::{self, Actor, Entry, action};
use crate::authz::{self, Permission, Principal, TenantPermission, TenantRole};
use crate::context::RequestContext;
use crate::core::Core;
use crate::error::{Code, Error, Result};
use crate::events::{self, types::MemberAddedV1};
use crate::store::domains as store;
use crate::store::tenants as tenants_store;

/// A claimed domain as listed.
#[derive(Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct DomainView {
    pub domain: String,
    pub default_role: String,
    pub verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<i64>,
    pub created_at: i64,
    /// The identity provider the domain's users sign in at (docs/federation.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    /// Passwords are refused for the domain's addresses.
    pub passwords_disabled: bool,
}

impl From<store::DomainRow> for DomainView {
    fn from(r: store::DomainRow) -> Self {
        Self {
            domain: r.domain,
            default_role: r.default_role,
            verified: r.verified_at.is_some(),
            verified_at: r.verified_at,
            created_at: r.created_at,
            idp: r.idp,
            passwords_disabled: r.passwords_disabled != 0,
        }
    }
}

/// `PUT /tenants/{id}/domains/{domain}/sign-in`: how the domain's users sign in.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainSignIn {
    /// The identity provider (`/admin/idps`) the domain's users are sent to; `null` for none.
    pub idp: Option<String>,
    /// Refuse passwords for the domain's addresses on every path (needs `idp`).
    #[serde(default)]
    pub disable_passwords: bool,
}

/// `POST /tenants/{id}/domains`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimDomain {
    pub domain: String,
    /// The role users of the domain get when they join (default `member`; never `owner`).
    #[serde(default)]
    pub default_role: Option<String>,
}

/// The canonical (lower-case, punycode) form of an email domain; 422 when it is not one.
pub fn canonical_domain(field: &str, input: &str) -> Result<String> {
    let invalid = || Error::invalid(field, "must be a domain name such as example.com");
    if input.is_empty() || input.len() > 253 {
        return Err(invalid());
    }
    match url::Host::parse(input) {
        Ok(url::Host::Domain(d))
            if d.contains('.')
                && !d.starts_with('.')
                && !d.ends_with('.')
                && d.split('.').all(|l| !l.is_empty() && l.len() <= 63) =>
        {
            Ok(d)
        }
        _ => Err(invalid()),
    }
}

/// `GET /tenants/{id}/domains` (`tenant:read`).
pub async fn list(core: &Core, principal: &Principal, tenant_id: &str) -> Result<Vec<DomainView>> {
    require(core, principal, tenant_id, TenantPermission::TenantRead).await?;
    Ok(store::of_tenant(core.store.pool(), tenant_id)
        .await?
        .into_iter()
        .map(DomainView::from)
        .collect())
}

/// `POST /tenants/{id}/domains` (`tenant:manage`, enterprise tenants): an unverified claim.
pub async fn claim(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    input: ClaimDomain,
    ctx: &RequestContext,
    now: i64,
) -> Result<DomainView> {
    require(core, principal, tenant_id, TenantPermission::TenantManage).await?;
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    if tenant.kind != TenantType::Enterprise {
        return Err(Error::invalid(
            "domain",
            "only enterprise tenants claim email domains",
        ));
    }
    let domain = canonical_domain("domain", &input.domain)?;
    let role = input
        .default_role
        .unwrap_or_else(|| TenantRole::Member.as_str().to_string());
    let known = TenantRole::parse(&role).is_some() || tenant.custom_roles.contains_key(&role);
    if !known || role == TenantRole::Owner.as_str() {
        return Err(Error::invalid(
            "default_role",
            "must be an existing role other than owner",
        ));
    }
    let mut tx = core.store.begin().await?;
    if let Err(e) = store::insert(&mut *tx, &domain, tenant_id, &role, now).await {
        return Err(if crate::store::is_unique_violation(&e) {
            Error::Conflict {
                code: Code::DomainTaken,
                message: "this domain is claimed already",
            }
        } else {
            e.into()
        });
    }
    let entry = Entry::success(principal.actor(), action::CHANGE_TENANT_POLICY)
        .target("domain", &domain)
        .tenant(tenant_id)
        .reason("domain_claimed");
    audit::record(&mut *tx, ctx, &entry, now).await?;
    tx.commit().await?;
    Ok(DomainView {
        domain,
        default_role: role,
        verified: false,
        verified_at: None,
        created_at: now,
        idp: None,
        passwords_disabled: false,
    })
}

/// `DELETE /tenants/{id}/domains/{domain}` (`tenant:manage`). Members who joined through it
/// stay members.
pub async fn release(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    domain: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    require(core, principal, tenant_id, TenantPermission::TenantManage).await?;
    let domain = canonical_domain("domain", domain).map_err(|_| Error::NotFound)?;
    let mut tx = core.store.begin().await?;
    if !store::delete(&mut *tx, tenant_id, &domain).await? {
        return Err(Error::NotFound);
    }
    let entry = Entry::success(principal.actor(), action::CHANGE_TENANT_POLICY)
        .target("domain", &domain)
        .tenant(tenant_id)
        .reason("domain_released");
    audit::record(&mut *tx, ctx, &entry, now).await?;
    tx.commit().await?;
    Ok(())
}

/// `POST /tenants/{id}/domains/{domain}/verify` (system administrators): the operator has
/// checked that the tenant owns the domain.
pub async fn verify(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    domain: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<DomainView> {
    authz::require(principal, Permission::ManageTenants)?;
    let domain = canonical_domain("domain", domain).map_err(|_| Error::NotFound)?;
    let by = match principal {
        Principal::User(u) => u.user_id.as_str(),
        _ => "system",
    };
    let mut tx = core.store.begin().await?;
    if !store::verify(&mut *tx, tenant_id, &domain, by, now).await? {
        return Err(Error::NotFound);
    }
    let entry = Entry::success(principal.actor(), action::CHANGE_TENANT_POLICY)
        .target("domain", &domain)
        .tenant(tenant_id)
        .reason("domain_verified");
    audit::record(&mut *tx, ctx, &entry, now).await?;
    let row = store::find(&mut *tx, &domain)
        .await?
        .ok_or(Error::NotFound)?;
    tx.commit().await?;
    Ok(DomainView::from(row))
}

/// `PUT /tenants/{id}/domains/{domain}/sign-in` (`tenant:manage`): binds a verified domain to
/// an identity provider (enterprise routing: the hosted login sends the domain's addresses there,
/// and that provider is trusted for them), optionally refusing passwords for them.
pub async fn set_sign_in(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    domain: &str,
    input: DomainSignIn,
    ctx: &RequestContext,
    now: i64,
) -> Result<DomainView> {
    require(core, principal, tenant_id, TenantPermission::TenantManage).await?;
    let domain = canonical_domain("domain", domain).map_err(|_| Error::NotFound)?;
    let claim = store::find(core.store.pool(), &domain)
        .await?
        .filter(|c| c.tenant_id == tenant_id)
        .ok_or(Error::NotFound)?;
    if claim.verified_at.is_none() {
        return Err(Error::invalid(
            "domain",
            "must be verified before its sign-in is routed",
        ));
    }
    if input.disable_passwords && input.idp.is_none() {
        return Err(Error::invalid(
            "disable_passwords",
            "needs an identity provider (idp) to sign in with instead",
        ));
    }
    if let Some(idp) = &input.idp
        && crate::store::federation::find_provider(core.store.pool(), idp)
            .await?
            .is_none()
    {
        return Err(Error::invalid(
            "idp",
            "is not a configured identity provider",
        ));
    }
    let mut tx = core.store.begin().await?;
    let idp = input.idp.as_deref();
    if !crate::store::federation::bind_domain(
        &mut *tx,
        tenant_id,
        &domain,
        idp,
        input.disable_passwords,
    )
    .await?
    {
        return Err(Error::NotFound);
    }
    let entry = Entry::success(principal.actor(), action::CHANGE_TENANT_POLICY)
        .target("domain", &domain)
        .tenant(tenant_id)
        .reason("domain_sign_in");
    audit::record(&mut *tx, ctx, &entry, now).await?;
    let row = store::find(&mut *tx, &domain)
        .await?
        .ok_or(Error::NotFound)?;
    tx.commit().await?;
    Ok(DomainView::from(row))
}

/// At sign-in: a user whose verified address is at a verified domain of an active tenant joins
/// it with the domain's default role, unless they are a member already. A full tenant (its plan's
/// `max_members`) is skipped with a warning: the sign-in itself never fails for it.
pub async fn join_at_sign_in(
    core: &Core,
    user: &crate::store::users::User,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    if user.email_verified_at.is_none() {
        return Ok(());
    }
    let email = crate::store::users::normalize_email(&user.email);
    let Some(domain) = email
        .rsplit_once('@')
        .and_then(|(_, d)| canonical_domain("email", d).ok())
    else {
        return Ok(());
    };
    let db = core.store.pool();
    let Some(claim) = store::find(db, &domain).await? else {
        return Ok(());
    };
    if claim.verified_at.is_none() {
        return Ok(());
    }
    let Some(tenant) = info(core, &claim.tenant_id).await? else {
        return Ok(());
    };
    if tenant.status != TenantStatus::Active {
        return Ok(());
    }
    let mut tx = core.store.begin().await?;
    tenants_store::lock(&mut tx, core.store.backend(), &claim.tenant_id).await?;
    if tenants_store::member_roles(&mut *tx, &claim.tenant_id, &user.id)
        .await?
        .is_some()
    {
        return Ok(());
    }
    if tenants_store::count_members(&mut *tx, &claim.tenant_id).await?
        >= tenant.limits().max_members
    {
        tracing::warn!(tenant_id = %claim.tenant_id, "domain member not added: the tenant's plan allows no more members");
        return Ok(());
    }
    let roles = vec![claim.default_role.clone()];
    tenants_store::add_member(&mut tx, &claim.tenant_id, &user.id, &roles, now).await?;
    let entry = Entry::success(Actor::System, action::ADD_MEMBER)
        .target("user", &user.id)
        .tenant(&claim.tenant_id)
        .reason("email_domain");
    audit::record(&mut *tx, ctx, &entry, now).await?;
    let event = MemberAddedV1 {
        tenant_id: claim.tenant_id.clone(),
        user_id: user.id.clone(),
        roles,
    };
    events::append(&mut tx, ctx, &event, now).await?;
    tx.commit().await?;
    core.tenants
        .member_changed(&claim.tenant_id, &user.id)
        .await;
    Ok(())
}
