//! Members of a tenant and their roles: listing, changing roles, removal (and leaving), with
//! two rules that hold under concurrency: a tenant always keeps an owner, and nobody grants a
//! role that gives more than they hold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{TenantInfo, info, permissions_of, require};
use crate::audit::{self, Entry, action};
use crate::authz::{Principal, TenantAccess, TenantPermission, TenantRole};
use crate::context::RequestContext;
use crate::core::Core;
use crate::error::{Code, Error, Result};
use crate::events::{self, MemberRemovedV1, MemberRolesChangedV1};
use crate::store::tenants as store;

/// A member as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MemberView {
    pub user_id: String,
    pub email: String,
    pub display_name: Option<String>,
    pub roles: Vec<String>,
    pub joined_at: i64,
}

/// `GET /tenants/{id}/members` (`members:read`).
pub async fn list(core: &Core, principal: &Principal, tenant_id: &str) -> Result<Vec<MemberView>> {
    require(core, principal, tenant_id, TenantPermission::MembersRead).await?;
    let db = core.store.pool();
    let mut roles: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (user, role) in store::roles_in(db, tenant_id).await? {
        roles.entry(user).or_default().push(role);
    }
    Ok(store::members(db, tenant_id)
        .await?
        .into_iter()
        .map(|m| MemberView {
            roles: roles.remove(&m.user_id).unwrap_or_default(),
            user_id: m.user_id,
            email: m.email,
            display_name: m.display_name,
            joined_at: m.joined_at,
        })
        .collect())
}

/// Checks role names against the tenant (built-in or its custom roles), and that the caller
/// holds every permission they give (no escalation). Owner is granted only by owners.
pub(crate) fn check_grantable(
    tenant: &TenantInfo,
    caller: &TenantAccess,
    roles: &[String],
    field: &str,
) -> Result<Vec<String>> {
    let mut clean: Vec<String> = Vec::new();
    for role in roles {
        let known = TenantRole::parse(role).is_some() || tenant.custom_roles.contains_key(role);
        if !known {
            return Err(Error::invalid(
                field,
                format!(
                    "unknown role {role:?} (built-in: owner, admin, member, viewer, or a custom role)"
                ),
            ));
        }
        if !clean.contains(role) {
            clean.push(role.clone());
        }
    }
    if clean.is_empty() {
        return Err(Error::invalid(field, "give at least one role"));
    }
    clean.sort();
    let owner = TenantRole::Owner.as_str();
    if clean.iter().any(|r| r == owner) && !caller.roles.iter().any(|r| r == owner) {
        return Err(only_owners());
    }
    let wanted = permissions_of(tenant, &clean);
    if !wanted.is_subset(&caller.permissions) {
        return Err(Error::Forbidden {
            code: Code::Forbidden,
            message: "you cannot grant a role that gives more than your own roles",
        });
    }
    Ok(clean)
}

fn only_owners() -> Error {
    Error::Forbidden {
        code: Code::Forbidden,
        message: "only an owner can grant or take the owner role",
    }
}

fn last_owner() -> Error {
    Error::Conflict {
        code: Code::LastOwner,
        message: "a tenant must keep at least one owner",
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRoles {
    pub roles: Vec<String>,
}

/// `PATCH /tenants/{id}/members/{user_id}` `{roles}` (`members:manage`).
pub async fn set_roles(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    user_id: &str,
    input: SetRoles,
    ctx: &RequestContext,
    now: i64,
) -> Result<MemberView> {
    let caller = require(core, principal, tenant_id, TenantPermission::MembersManage).await?;
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    let roles = check_grantable(&tenant, &caller, &input.roles, "roles")?;
    let owner = TenantRole::Owner.as_str();
    let mut tx = core.store.begin().await?;
    store::lock(&mut tx, core.store.backend(), tenant_id).await?;
    let Some(before) = store::member_roles(&mut *tx, tenant_id, user_id).await? else {
        return Err(Error::NotFound);
    };
    let was_owner = before.iter().any(|r| r == owner);
    let stays_owner = roles.iter().any(|r| r == owner);
    if was_owner && !stays_owner {
        if !caller.roles.iter().any(|r| r == owner) {
            return Err(only_owners());
        }
        if store::count_with_role(&mut *tx, tenant_id, owner).await? <= 1 {
            return Err(last_owner());
        }
    }
    store::set_roles(&mut tx, tenant_id, user_id, &roles).await?;
    let entry = Entry::success(principal.actor(), action::CHANGE_MEMBER_ROLES)
        .target("user", user_id)
        .tenant(tenant_id);
    audit::record(&mut *tx, ctx, &entry, now).await?;
    events::append(
        &mut tx,
        ctx,
        &MemberRolesChangedV1 {
            tenant_id: tenant_id.to_string(),
            user_id: user_id.to_string(),
            roles: roles.clone(),
            previous_roles: before,
        },
        now,
    )
    .await?;
    tx.commit().await?;
    core.tenants.member_changed(tenant_id, user_id).await;
    list(core, principal, tenant_id)
        .await?
        .into_iter()
        .find(|m| m.user_id == user_id)
        .ok_or(Error::NotFound)
}

/// `DELETE /tenants/{id}/members/{user_id}`: removing someone needs `members:manage` (and
/// being an owner to remove an owner); anyone may leave. Never the last owner.
pub async fn remove(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    user_id: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    let leaving = principal.user().is_some_and(|me| me.user_id == user_id);
    let needed = if leaving {
        TenantPermission::TenantRead
    } else {
        TenantPermission::MembersManage
    };
    let caller = require(core, principal, tenant_id, needed).await?;
    let owner = TenantRole::Owner.as_str();
    let mut tx = core.store.begin().await?;
    store::lock(&mut tx, core.store.backend(), tenant_id).await?;
    let Some(before) = store::member_roles(&mut *tx, tenant_id, user_id).await? else {
        return Err(Error::NotFound);
    };
    if before.iter().any(|r| r == owner) {
        if !leaving && !caller.roles.iter().any(|r| r == owner) {
            return Err(only_owners());
        }
        if store::count_with_role(&mut *tx, tenant_id, owner).await? <= 1 {
            return Err(last_owner());
        }
    }
    store::remove_member(&mut tx, tenant_id, user_id).await?;
    let entry = Entry::success(principal.actor(), action::REMOVE_MEMBER)
        .target("user", user_id)
        .tenant(tenant_id)
        .reason(if leaving { "left" } else { "removed" });
    audit::record(&mut *tx, ctx, &entry, now).await?;
    events::append(
        &mut tx,
        ctx,
        &MemberRemovedV1 {
            tenant_id: tenant_id.to_string(),
            user_id: user_id.to_string(),
            left: leaving,
        },
        now,
    )
    .await?;
    tx.commit().await?;
    core.tenants.member_changed(tenant_id, user_id).await;
    Ok(())
}
