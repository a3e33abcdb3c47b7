//! Custom roles and application permissions of a tenant. An application registers its own
//! permissions (`invoices:approve`); a tenant defines roles from built-in and registered
//! permissions; members hold them like built-in roles, and `authz` decides from them.

use serde::{Deserialize, Serialize};

use super::policy::limit_reached;
use super::{info, require};
use crate::audit::{self, Entry, action};
use crate::authz::{Principal, TenantPermission, TenantRole};
use crate::context::RequestContext;
use crate::core::Core;
use crate::error::{Error, Result};
use crate::store::tenants as store;

/// A role as listed: built-in ones with `builtin: true`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RoleView {
    pub name: String,
    pub builtin: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub permissions: Vec<String>,
}

/// `GET /tenants/{id}/roles` (`tenant:read`): built-in and custom roles with their permissions.
pub async fn list(core: &Core, principal: &Principal, tenant_id: &str) -> Result<Vec<RoleView>> {
    require(core, principal, tenant_id, TenantPermission::TenantRead).await?;
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    let mut out: Vec<RoleView> = TenantRole::ALL
        .iter()
        .map(|r| RoleView {
            name: r.as_str().to_string(),
            builtin: true,
            description: None,
            permissions: super::permissions_of(&tenant, &[r.as_str().to_string()])
                .into_iter()
                .collect(),
        })
        .collect();
    let mut descriptions = std::collections::HashMap::new();
    for (role, description, _) in store::custom_roles(core.store.pool(), tenant_id).await? {
        descriptions.insert(role, description);
    }
    let mut custom: Vec<_> = tenant.custom_roles.iter().collect();
    custom.sort();
    for (name, permissions) in custom {
        out.push(RoleView {
            name: name.clone(),
            builtin: false,
            description: descriptions.remove(name).flatten(),
            permissions: permissions.clone(),
        });
    }
    Ok(out)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRole {
    pub permissions: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A custom role's name: 2 to 32 of `a-z`, `0-9`, `_` and `-`, starting with a letter, and not
/// a built-in role.
fn validate_role_name(name: &str) -> Result<()> {
    let ok = (2..=32).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        return Err(Error::invalid(
            "name",
            "must be 2 to 32 of a-z, 0-9, '_' and '-', starting with a letter",
        ));
    }
    if TenantRole::parse(name).is_some() {
        return Err(Error::invalid("name", "is a built-in role"));
    }
    Ok(())
}

/// An application permission's name: `resource:action`, each part 1 to 32 of `a-z`, `0-9`,
/// `_`, `-` and `.`, and not a built-in permission.
pub fn validate_permission_name(name: &str) -> Result<()> {
    let part = |p: &str| {
        (1..=32).contains(&p.len())
            && p.as_bytes()[0].is_ascii_lowercase()
            && p.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' || b == b'.'
            })
    };
    let ok = matches!(name.split_once(':'), Some((a, b)) if part(a) && part(b));
    if !ok {
        return Err(Error::invalid(
            "name",
            "must be resource:action, such as invoices:approve (a-z, 0-9, '_', '-', '.')",
        ));
    }
    if TenantPermission::parse(name).is_some() {
        return Err(Error::invalid("name", "is a built-in permission"));
    }
    Ok(())
}

/// `PUT /tenants/{id}/roles/{name}` `{permissions, description?}` (`roles:manage`): creates or
/// replaces a custom role. Its permissions are built-in or registered ones, and all held by the
/// caller (nobody builds a role stronger than themselves).
pub async fn put(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    name: &str,
    input: PutRole,
    ctx: &RequestContext,
    now: i64,
) -> Result<RoleView> {
    let caller = require(core, principal, tenant_id, TenantPermission::RolesManage).await?;
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    validate_role_name(name)?;
    if let Some(d) = &input.description {
        crate::accounts::validate_text("description", d, 200)?;
    }
    let mut permissions = input.permissions.clone();
    permissions.sort();
    permissions.dedup();
    if permissions.len() > 100 {
        return Err(Error::invalid("permissions", "at most 100"));
    }
    for p in &permissions {
        let known = TenantPermission::parse(p).is_some() || tenant.app_permissions.contains(p);
        if !known {
            return Err(Error::invalid(
                "permissions",
                format!(
                    "unknown permission {p:?}: register it first (POST /tenants/{{id}}/permissions)"
                ),
            ));
        }
        if !caller.has(p) {
            return Err(Error::Forbidden {
                code: crate::error::Code::Forbidden,
                message: "you cannot build a role with a permission you do not hold",
            });
        }
    }
    let is_new = !tenant.custom_roles.contains_key(name);
    if is_new && tenant.custom_roles.len() as i64 >= tenant.limits().max_custom_roles {
        return Err(limit_reached(
            "the tenant's plan allows no more custom roles",
        ));
    }
    let mut tx = core.store.begin().await?;
    store::put_custom_role(
        &mut tx,
        tenant_id,
        name,
        input.description.as_deref(),
        &permissions,
        now,
    )
    .await?;
    let entry = Entry::success(principal.actor(), action::PUT_ROLE)
        .target("role", name)
        .tenant(tenant_id);
    audit::record(&mut *tx, ctx, &entry, now).await?;
    tx.commit().await?;
    core.tenants.tenant_changed(tenant_id).await;
    Ok(RoleView {
        name: name.to_string(),
        builtin: false,
        description: input.description,
        permissions,
    })
}

/// `DELETE /tenants/{id}/roles/{name}` (`roles:manage`): members lose the role at once.
pub async fn delete(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    name: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    require(core, principal, tenant_id, TenantPermission::RolesManage).await?;
    if TenantRole::parse(name).is_some() {
        return Err(Error::invalid("name", "built-in roles cannot be deleted"));
    }
    let holders: Vec<String> = store::roles_in(core.store.pool(), tenant_id)
        .await?
        .into_iter()
        .filter(|(_, r)| r == name)
        .map(|(u, _)| u)
        .collect();
    let mut tx = core.store.begin().await?;
    if !store::delete_custom_role(&mut tx, tenant_id, name).await? {
        return Err(Error::NotFound);
    }
    let entry = Entry::success(principal.actor(), action::DELETE_ROLE)
        .target("role", name)
        .tenant(tenant_id);
    audit::record(&mut *tx, ctx, &entry, now).await?;
    tx.commit().await?;
    core.tenants.tenant_changed(tenant_id).await;
    for user in holders {
        core.tenants.member_changed(tenant_id, &user).await;
    }
    Ok(())
}

/// An application permission as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PermissionView {
    pub name: String,
    pub builtin: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `GET /tenants/{id}/permissions` (`tenant:read`): built-in and registered permissions.
pub async fn permissions(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
) -> Result<Vec<PermissionView>> {
    require(core, principal, tenant_id, TenantPermission::TenantRead).await?;
    let mut out: Vec<PermissionView> = TenantPermission::ALL
        .iter()
        .map(|p| PermissionView {
            name: p.as_str().to_string(),
            builtin: true,
            description: None,
        })
        .collect();
    for (name, description) in store::app_permissions(core.store.pool(), tenant_id).await? {
        out.push(PermissionView {
            name,
            builtin: false,
            description,
        });
    }
    Ok(out)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddPermission {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// `POST /tenants/{id}/permissions` `{name, description?}` (`roles:manage`): registers an
/// application permission (owners hold it at once; others through custom roles). 201 when
/// new, 200 when it was registered already.
pub async fn add_permission(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    input: AddPermission,
    ctx: &RequestContext,
    now: i64,
) -> Result<(bool, PermissionView)> {
    require(core, principal, tenant_id, TenantPermission::RolesManage).await?;
    validate_permission_name(&input.name)?;
    if let Some(d) = &input.description {
        crate::accounts::validate_text("description", d, 200)?;
    }
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    if !tenant.app_permissions.contains(&input.name) && tenant.app_permissions.len() >= 1000 {
        return Err(limit_reached("a tenant registers at most 1000 permissions"));
    }
    let mut tx = core.store.begin().await?;
    let new = store::add_app_permission(
        &mut *tx,
        tenant_id,
        &input.name,
        input.description.as_deref(),
        now,
    )
    .await?;
    if new {
        let entry = Entry::success(principal.actor(), action::ADD_PERMISSION)
            .target("permission", &input.name)
            .tenant(tenant_id);
        audit::record(&mut *tx, ctx, &entry, now).await?;
    }
    tx.commit().await?;
    core.tenants.tenant_changed(tenant_id).await;
    Ok((
        new,
        PermissionView {
            name: input.name,
            builtin: false,
            description: input.description,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_role_name("approver").is_ok());
        assert!(validate_role_name("billing_admin-2").is_ok());
        for bad in ["a", "owner", "Admin", "2fa", "ab cd", &"x".repeat(33)] {
            assert!(validate_role_name(bad).is_err(), "{bad}");
        }
        assert!(validate_permission_name("invoices:approve").is_ok());
        assert!(validate_permission_name("billing.v2:read").is_ok());
        for bad in [
            "invoices",
            "members:read",
            ":x",
            "x:",
            "a:b:c",
            "Inv:x",
            "a :b",
        ] {
            assert!(validate_permission_name(bad).is_err(), "{bad}");
        }
    }
}
