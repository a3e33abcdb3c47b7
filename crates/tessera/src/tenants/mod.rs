//! Tenants: personal, team and enterprise workspaces. A user belongs to several, with roles in
//! each; a token has one active tenant (`tid`). What a member may do is decided by
//! [`authz::require_in_tenant`] from the live membership ([`access`]), so removing a member or
//! lowering their roles takes effect at their next request, and a suspended tenant's tokens stop
//! working at once on every replica (the caches here are dropped by shared invalidations).

pub mod api_keys;
pub mod domains;
pub mod invitations;
pub mod members;
pub mod policy;
pub mod roles;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::{self, Entry, action};
use crate::authz::{self, Permission, Principal, TenantAccess, TenantPermission, TenantRole};
use crate::context::RequestContext;
use crate::core::Core;
use crate::error::{Code, Error, Result};
use crate::events::{self, TenantCreatedV1, TenantDeletedV1, TenantSuspendedV1};
use crate::shared::Invalidation;
use crate::store::is_unique_violation;
use crate::store::tenants::{self as store, NewTenant, TenantRow};
use crate::store::users::User;

crate::error::wire_codes! {
/// What a tenant is for.
pub enum TenantType {
    /// Every user's own, created at registration; one owner, cannot be deleted.
    Personal => "personal",
    /// Created by users.
    Team => "team",
    /// Created (or converted to) only by system administrators; may claim email domains.
    Enterprise => "enterprise",
}
}

crate::error::wire_codes! {
/// Whether a tenant can be used.
pub enum TenantStatus {
    Active => "active",
    /// No sign-in, switch, token or API key for it works.
    Suspended => "suspended",
    /// Soft-deleted; `tessera tenants purge` removes it later.
    Deleted => "deleted",
}
}

impl TenantType {
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.as_str() == s)
    }
}

impl TenantStatus {
    /// The stored text; anything unknown counts as suspended (fail closed).
    pub fn parse(s: &str) -> Self {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .unwrap_or(Self::Suspended)
    }
}

/// A tenant as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TenantView {
    pub id: String,
    pub slug: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: TenantType,
    pub status: TenantStatus,
    pub created_at: i64,
    /// The caller's roles here (in listings of the caller's tenants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

impl From<&TenantRow> for TenantView {
    fn from(t: &TenantRow) -> Self {
        Self {
            id: t.id.clone(),
            slug: t.slug.clone(),
            name: t.name.clone(),
            kind: TenantType::parse(&t.kind).unwrap_or(TenantType::Team),
            status: TenantStatus::parse(&t.status),
            created_at: t.created_at,
            roles: None,
        }
    }
}

/// What the caches hold of a tenant: its status and how its custom roles map to permissions.
#[derive(Debug, Clone)]
pub struct TenantInfo {
    pub row: TenantRow,
    pub kind: TenantType,
    pub status: TenantStatus,
    /// The parsed `settings`: allow-list and plan overrides.
    pub settings: policy::TenantSettings,
    /// Custom role → its permissions.
    pub custom_roles: HashMap<String, Vec<String>>,
    /// Application permissions registered in the tenant.
    pub app_permissions: Vec<String>,
}

/// Tenants and memberships read per request, remembered briefly; every change drops the
/// entry on every replica (and the caches are bypassed while invalidations cannot arrive).
#[derive(Clone)]
pub struct TenantCaches {
    tenants: crate::shared::Cache<Option<Arc<TenantInfo>>>,
    members: crate::shared::Cache<Option<Arc<Vec<String>>>>,
    /// API keys by the digest of their secret.
    pub(crate) keys: crate::shared::Cache<Option<Arc<crate::store::api_keys::ApiKeyRow>>>,
    /// `key id|address` pairs whose last use was written in the last minute.
    pub(crate) touched: moka::sync::Cache<String, ()>,
}

impl TenantCaches {
    pub fn new(shared: &crate::shared::Shared) -> Self {
        Self {
            tenants: crate::shared::Cache::new(
                shared,
                100_000,
                Duration::from_secs(10),
                Invalidation::Tenant,
            ),
            members: crate::shared::Cache::new(
                shared,
                200_000,
                Duration::from_secs(10),
                Invalidation::Member,
            ),
            keys: crate::shared::Cache::new(
                shared,
                100_000,
                Duration::from_secs(10),
                Invalidation::ApiKey,
            ),
            touched: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }

    /// Drops an API key (by secret digest) heard from another replica.
    pub fn forget_key(&self, hash: &str) {
        self.keys.forget(hash);
    }

    pub(crate) async fn key_changed(&self, hash: &str) {
        self.keys.invalidate(hash).await;
    }

    /// Drops a tenant heard from another replica.
    pub fn forget_tenant(&self, id: &str) {
        self.tenants.forget(id);
    }

    /// Drops a membership (`tenant_id:user_id`) heard from another replica.
    pub fn forget_member(&self, key: &str) {
        self.members.forget(key);
    }

    pub fn forget_all(&self) {
        self.tenants.forget_all();
        self.members.forget_all();
        self.keys.forget_all();
    }

    pub(crate) async fn tenant_changed(&self, id: &str) {
        self.tenants.invalidate(id).await;
    }

    pub(crate) async fn member_changed(&self, tenant_id: &str, user_id: &str) {
        self.members
            .invalidate(&member_key(tenant_id, user_id))
            .await;
    }
}

fn member_key(tenant_id: &str, user_id: &str) -> String {
    format!("{tenant_id}:{user_id}")
}

/// The tenant `id` with its roles, through the cache.
pub async fn info(core: &Core, id: &str) -> Result<Option<Arc<TenantInfo>>> {
    if let Some(hit) = core.tenants.tenants.get(id) {
        return Ok(hit);
    }
    let mut conn = core.store.pool().acquire().await?;
    info_in(core, &mut conn, id).await
}

/// [`info`] inside a transaction: a miss is read through `conn`, never from the pool (a
/// transaction waiting for a second connection of an exhausted pool would wait forever).
pub(crate) async fn info_in(
    core: &Core,
    conn: &mut sqlx::AnyConnection,
    id: &str,
) -> Result<Option<Arc<TenantInfo>>> {
    if let Some(hit) = core.tenants.tenants.get(id) {
        return Ok(hit);
    }
    let info = match store::find(&mut *conn, id).await? {
        None => None,
        Some(row) => {
            let mut custom_roles: HashMap<String, Vec<String>> = HashMap::new();
            for (role, _, permission) in store::custom_roles(&mut *conn, id).await? {
                let entry = custom_roles.entry(role).or_default();
                entry.extend(permission);
            }
            let app_permissions = store::app_permissions(&mut *conn, id)
                .await?
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            Some(Arc::new(TenantInfo {
                status: TenantStatus::parse(&row.status),
                kind: TenantType::parse(&row.kind).unwrap_or(TenantType::Team),
                settings: policy::TenantSettings::parse(&row.settings),
                row,
                custom_roles,
                app_permissions,
            }))
        }
    };
    core.tenants.tenants.insert(id, info.clone());
    Ok(info)
}

/// The roles of `user_id` in `tenant_id` (`None`: not a member), through the cache.
async fn roles(core: &Core, tenant_id: &str, user_id: &str) -> Result<Option<Arc<Vec<String>>>> {
    if let Some(hit) = core.tenants.members.get(&member_key(tenant_id, user_id)) {
        return Ok(hit);
    }
    let mut conn = core.store.pool().acquire().await?;
    roles_in(core, &mut conn, tenant_id, user_id).await
}

/// [`roles`] inside a transaction: a miss is read through `conn` (see [`info_in`]).
pub(crate) async fn roles_in(
    core: &Core,
    conn: &mut sqlx::AnyConnection,
    tenant_id: &str,
    user_id: &str,
) -> Result<Option<Arc<Vec<String>>>> {
    let key = member_key(tenant_id, user_id);
    if let Some(hit) = core.tenants.members.get(&key) {
        return Ok(hit);
    }
    let roles = store::member_roles(&mut *conn, tenant_id, user_id)
        .await?
        .map(Arc::new);
    core.tenants.members.insert(&key, roles.clone());
    Ok(roles)
}

/// The permissions that `roles` give in `tenant`.
pub fn permissions_of(tenant: &TenantInfo, roles: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for role in roles {
        match TenantRole::parse(role) {
            Some(builtin) => {
                out.extend(builtin.permissions().iter().map(|p| p.as_str().to_string()));
                if builtin == TenantRole::Owner {
                    out.extend(tenant.app_permissions.iter().cloned());
                }
            }
            None => {
                if let Some(perms) = tenant.custom_roles.get(role) {
                    out.extend(perms.iter().cloned());
                }
            }
        }
    }
    out
}

/// What `user_id` may do in the live tenant `tenant_id`: `None` when the tenant is unknown,
/// deleted, or the user is not a member (the API answers 404 for all three, revealing nothing);
/// 403 `tenant_suspended` when it is suspended.
pub async fn access(core: &Core, tenant_id: &str, user_id: &str) -> Result<Option<TenantAccess>> {
    let Some(tenant) = info(core, tenant_id).await? else {
        return Ok(None);
    };
    let Some(roles) = roles(core, tenant_id, user_id).await? else {
        return Ok(None);
    };
    match tenant.status {
        TenantStatus::Active => {}
        TenantStatus::Deleted => return Ok(None),
        TenantStatus::Suspended => return Err(suspended()),
    }
    Ok(Some(TenantAccess {
        tenant_id: tenant_id.to_string(),
        permissions: permissions_of(&tenant, &roles),
        roles: roles.as_ref().clone(),
    }))
}

pub(crate) fn suspended() -> Error {
    Error::Forbidden {
        code: Code::TenantSuspended,
        message: "this tenant is suspended",
    }
}

/// Whether a token scoped to `tenant_id` still stands: the tenant is active and, for a user's
/// token, the user is still a member. Checked on every authenticated request and introspection.
pub async fn token_tenant_live(
    core: &Core,
    tenant_id: &str,
    user_id: Option<&str>,
) -> Result<bool> {
    let Some(tenant) = info(core, tenant_id).await? else {
        return Ok(false);
    };
    if tenant.status != TenantStatus::Active {
        return Ok(false);
    }
    match user_id {
        Some(user) => Ok(roles(core, tenant_id, user).await?.is_some()),
        None => Ok(true),
    }
}

/// The caller's access to the tenant named in the path, checked for `permission`: 404 when the
/// tenant does not exist for them, 403 when the token is for another tenant or the roles fall
/// short.
pub async fn require(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    permission: TenantPermission,
) -> Result<TenantAccess> {
    if let Principal::ApiKey(key) = principal {
        // A key acts only in its own tenant; any other tenant does not exist for it.
        if key.tenant_id != tenant_id {
            return Err(Error::NotFound);
        }
        let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
        match tenant.status {
            TenantStatus::Active => {}
            TenantStatus::Suspended => return Err(suspended()),
            TenantStatus::Deleted => return Err(Error::NotFound),
        }
        let access = TenantAccess {
            tenant_id: tenant_id.to_string(),
            roles: Vec::new(),
            permissions: key.permissions.iter().cloned().collect(),
        };
        authz::require_in_tenant(principal, &access, permission)?;
        return Ok(access);
    }
    let user = authz::require_user(principal, Permission::ActInTenant)?;
    let access = access(core, tenant_id, &user.user_id)
        .await?
        .ok_or(Error::NotFound)?;
    authz::require_in_tenant(principal, &access, permission)?;
    Ok(access)
}

/// `GET /tenants/{id}/audit` (`audit:read`): the tenant's audit entries, oldest first.
pub async fn audit_log(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    filter: &audit::Filter,
) -> Result<(Vec<audit::AuditView>, Option<String>)> {
    require(core, principal, tenant_id, TenantPermission::AuditRead).await?;
    audit::list_in(&core.store, filter, Some(tenant_id)).await
}

// ---------------------------------------------------------------- slugs and names

/// A slug: 3 to 63 of `a-z`, `0-9` and `-`, starting with a letter or digit.
pub fn validate_slug(slug: &str) -> Result<()> {
    let ok = (3..=63).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "slug",
            "must be 3 to 63 lower-case letters, digits or '-', not starting or ending with '-'",
        ))
    }
}

/// A slug made from a name: `Acme Rockets!` → `acme-rockets`, plus a random suffix when that
/// is too short.
fn slug_from(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-').to_string();
    if slug.len() >= 3 {
        slug
    } else {
        format!("t-{}", &uuid::Uuid::now_v7().simple().to_string()[20..])
    }
}

/// The slug of a personal tenant: fixed by the user id.
fn personal_slug(user_id: &str) -> String {
    format!("p-{}", user_id.replace('-', ""))
}

fn slug_taken() -> Error {
    Error::Conflict {
        code: Code::SlugTaken,
        message: "another tenant has this slug",
    }
}

// ---------------------------------------------------------------- lifecycle

/// Creates the personal tenant of a new user inside the transaction that creates the user.
pub async fn create_personal_in(
    tx: &mut crate::store::Tx,
    user_id: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<String> {
    let id = uuid::Uuid::now_v7().to_string();
    let slug = personal_slug(user_id);
    store::insert(
        &mut **tx,
        &NewTenant {
            id: &id,
            slug: &slug,
            name: "Personal",
            kind: TenantType::Personal.as_str(),
            personal_of: Some(user_id),
            now,
        },
    )
    .await?;
    store::add_member(tx, &id, user_id, &[TenantRole::Owner.as_str().into()], now).await?;
    let event = TenantCreatedV1 {
        tenant_id: id.clone(),
        slug,
        name: "Personal".into(),
        tenant_type: TenantType::Personal.as_str().into(),
        created_by: Some(user_id.to_string()),
    };
    events::append(tx, ctx, &event, now).await?;
    Ok(id)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub name: String,
    pub slug: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// `POST /tenants`: a user creates a team tenant and becomes its owner; only system
/// administrators create enterprise tenants (for themselves as first owner). Nobody creates a
/// second personal tenant.
pub async fn create(
    core: &Core,
    principal: &Principal,
    input: CreateTenant,
    ctx: &RequestContext,
    now: i64,
) -> Result<TenantView> {
    let user = authz::require_user(principal, Permission::UseTenants)?;
    let kind = match input.kind.as_deref() {
        None => TenantType::Team,
        Some(k) => TenantType::parse(k)
            .ok_or_else(|| Error::invalid("type", "must be team or enterprise"))?,
    };
    match kind {
        TenantType::Personal => {
            return Err(Error::invalid(
                "type",
                "every user has exactly one personal tenant, made at registration",
            ));
        }
        TenantType::Enterprise => authz::require(principal, Permission::ManageTenants)?,
        TenantType::Team => {}
    }
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Error::invalid("name", "must be 1 to 100 characters"));
    }
    crate::accounts::validate_text("name", name, 100)?;
    let slug = match input.slug {
        Some(s) => {
            validate_slug(&s)?;
            s
        }
        None => slug_from(name),
    };
    let id = uuid::Uuid::now_v7().to_string();
    let mut tx = core.store.begin().await?;
    let inserted = store::insert(
        &mut *tx,
        &NewTenant {
            id: &id,
            slug: &slug,
            name,
            kind: kind.as_str(),
            personal_of: None,
            now,
        },
    )
    .await;
    match inserted {
        Err(e) if is_unique_violation(&e) => return Err(slug_taken()),
        other => other?,
    }
    store::add_member(
        &mut tx,
        &id,
        &user.user_id,
        &[TenantRole::Owner.as_str().into()],
        now,
    )
    .await?;
    let entry = Entry::success(principal.actor(), action::CREATE_TENANT)
        .target("tenant", &id)
        .tenant(&id);
    audit::record(&mut *tx, ctx, &entry, now).await?;
    events::append(
        &mut tx,
        ctx,
        &TenantCreatedV1 {
            tenant_id: id.clone(),
            slug: slug.clone(),
            name: name.to_string(),
            tenant_type: kind.as_str().into(),
            created_by: Some(user.user_id.clone()),
        },
        now,
    )
    .await?;
    tx.commit().await?;
    core.tenants.member_changed(&id, &user.user_id).await;
    core.tenants.tenant_changed(&id).await;
    let row = store::find(core.store.pool(), &id)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(TenantView {
        roles: Some(vec![TenantRole::Owner.as_str().into()]),
        ..TenantView::from(&row)
    })
}

/// `GET /tenants`: the caller's tenants, each with the caller's roles there.
pub async fn list_mine(core: &Core, principal: &Principal) -> Result<Vec<TenantView>> {
    let user = authz::require_user(principal, Permission::UseTenants)?;
    let db = core.store.pool();
    let tenants = store::of_user(db, &user.user_id).await?;
    let mut roles: HashMap<String, Vec<String>> = HashMap::new();
    for (tenant, role) in store::roles_of_user(db, &user.user_id).await? {
        roles.entry(tenant).or_default().push(role);
    }
    Ok(tenants
        .iter()
        .map(|t| TenantView {
            roles: Some(roles.remove(&t.id).unwrap_or_default()),
            ..TenantView::from(t)
        })
        .collect())
}

/// `GET /tenants/{id}`.
pub async fn get(core: &Core, principal: &Principal, tenant_id: &str) -> Result<TenantView> {
    let access = require(core, principal, tenant_id, TenantPermission::TenantRead).await?;
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    Ok(TenantView {
        roles: Some(access.roles),
        ..TenantView::from(&tenant.row)
    })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    pub name: Option<String>,
    pub slug: Option<String>,
}

/// `PATCH /tenants/{id}`: name and slug (a personal tenant's slug is fixed).
pub async fn update(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    input: UpdateTenant,
    ctx: &RequestContext,
    now: i64,
) -> Result<TenantView> {
    let access = require(core, principal, tenant_id, TenantPermission::TenantManage).await?;
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    let name = match &input.name {
        Some(n) => {
            let n = n.trim();
            if n.is_empty() {
                return Err(Error::invalid("name", "must be 1 to 100 characters"));
            }
            crate::accounts::validate_text("name", n, 100)?;
            n.to_string()
        }
        None => tenant.row.name.clone(),
    };
    let slug = match &input.slug {
        Some(s) if *s != tenant.row.slug => {
            if tenant.row.personal_of.is_some() {
                return Err(Error::invalid(
                    "slug",
                    "a personal tenant's slug cannot change",
                ));
            }
            validate_slug(s)?;
            s.clone()
        }
        _ => tenant.row.slug.clone(),
    };
    let mut tx = core.store.begin().await?;
    match store::update(&mut *tx, tenant_id, &name, &slug, now).await {
        Err(e) if is_unique_violation(&e) => return Err(slug_taken()),
        other => other?,
    }
    let entry = Entry::success(principal.actor(), action::UPDATE_TENANT)
        .target("tenant", tenant_id)
        .tenant(tenant_id);
    audit::record(&mut *tx, ctx, &entry, now).await?;
    tx.commit().await?;
    core.tenants.tenant_changed(tenant_id).await;
    let row = store::find(core.store.pool(), tenant_id)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(TenantView {
        roles: Some(access.roles),
        ..TenantView::from(&row)
    })
}

/// `DELETE /tenants/{id}`: soft deletion by an owner (`tenant:delete`); tokens for it stop
/// working at once. A personal tenant cannot be deleted.
pub async fn delete(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    require(core, principal, tenant_id, TenantPermission::TenantDelete).await?;
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    if tenant.row.personal_of.is_some() {
        return Err(Error::Forbidden {
            code: Code::Forbidden,
            message: "a personal tenant cannot be deleted",
        });
    }
    let mut tx = core.store.begin().await?;
    store::set_status(&mut *tx, tenant_id, TenantStatus::Deleted.as_str(), now).await?;
    let entry = Entry::success(principal.actor(), action::DELETE_TENANT)
        .target("tenant", tenant_id)
        .tenant(tenant_id);
    audit::record(&mut *tx, ctx, &entry, now).await?;
    events::append(
        &mut tx,
        ctx,
        &TenantDeletedV1 {
            tenant_id: tenant_id.to_string(),
        },
        now,
    )
    .await?;
    tx.commit().await?;
    core.tenants.tenant_changed(tenant_id).await;
    Ok(())
}

/// `POST /tenants/{id}/suspend` and `/reactivate` (system administrators): every token scoped
/// to the tenant fails validation and introspection at once, on every replica.
pub async fn set_suspended(
    core: &Core,
    principal: &Principal,
    tenant_id: &str,
    suspend: bool,
    ctx: &RequestContext,
    now: i64,
) -> Result<TenantView> {
    authz::require(principal, Permission::ManageTenants)?;
    let tenant = info(core, tenant_id).await?.ok_or(Error::NotFound)?;
    if tenant.status == TenantStatus::Deleted {
        return Err(Error::NotFound);
    }
    let (status, act) = if suspend {
        (TenantStatus::Suspended, action::SUSPEND_TENANT)
    } else {
        (TenantStatus::Active, action::REACTIVATE_TENANT)
    };
    let mut tx = core.store.begin().await?;
    store::set_status(&mut *tx, tenant_id, status.as_str(), now).await?;
    let entry = Entry::success(principal.actor(), act)
        .target("tenant", tenant_id)
        .tenant(tenant_id);
    audit::record(&mut *tx, ctx, &entry, now).await?;
    if suspend {
        events::append(
            &mut tx,
            ctx,
            &TenantSuspendedV1 {
                tenant_id: tenant_id.to_string(),
            },
            now,
        )
        .await?;
    }
    tx.commit().await?;
    core.tenants.tenant_changed(tenant_id).await;
    let row = store::find(core.store.pool(), tenant_id)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(TenantView::from(&row))
}

/// `tessera tenants purge`: removes for good the tenants deleted more than `older_than`
/// seconds ago, with their memberships, roles, invitations, API keys and domains (their audit
/// entries stay). Returns how many; one audit entry records the purge.
pub async fn purge(
    store: &crate::store::Store,
    older_than: i64,
    ctx: &RequestContext,
    now: i64,
) -> Result<u64> {
    let mut tx = store.begin().await?;
    let n = store::purge_deleted(&mut *tx, now - older_than.max(0)).await?;
    if n > 0 {
        let reason = format!("{n} deleted tenants");
        let entry =
            Entry::success(crate::audit::Actor::System, action::PURGE_TENANTS).reason(&reason);
        audit::record(&mut *tx, ctx, &entry, now).await?;
    }
    tx.commit().await?;
    Ok(n)
}

// ---------------------------------------------------------------- the active tenant of a login

/// The tenant a login lands in: `wanted` (id or slug) when given, else the one used last,
/// else the personal tenant (both read with `user`, no query of their own). Returns the tenant
/// id and the roles there.
///
/// `amr`: how the user signed in (RFC 8176), for the tenant's MFA policy (`None`: no person).
pub async fn choose(
    core: &Core,
    user: &User,
    wanted: Option<&str>,
    ip: Option<&str>,
    amr: Option<&str>,
) -> Result<(String, Vec<String>)> {
    if let Some(key) = wanted {
        return choose_named(core, &user.id, key, ip, amr).await;
    }
    // The last tenant only if it still takes the user, from this address; else the personal
    // one (a tenant asked for by name says why it refuses).
    let usable = match &user.last_tenant_id {
        Some(t) => {
            matches!(access(core, t, &user.id).await, Ok(Some(_)))
                && policy::check_entry(core, t, ip, amr).await.is_ok()
        }
        None => false,
    };
    let tenant_id = match user.last_tenant_id.as_deref().filter(|_| usable) {
        Some(t) => t,
        None => user
            .personal_tenant_id
            .as_deref()
            .ok_or_else(not_a_member)?,
    };
    enter(core, tenant_id, &user.id, ip, amr).await
}

/// The tenant named by `key` (id or slug), if it takes `user_id` from `ip`.
pub async fn choose_named(
    core: &Core,
    user_id: &str,
    key: &str,
    ip: Option<&str>,
    amr: Option<&str>,
) -> Result<(String, Vec<String>)> {
    let row = store::find_by_id_or_slug(core.store.pool(), key)
        .await?
        .ok_or_else(not_a_member)?;
    enter(core, &row.id, user_id, ip, amr).await
}

/// The user's roles in `tenant_id`, if it takes them from `ip`, signed in that way (`amr`).
async fn enter(
    core: &Core,
    tenant_id: &str,
    user_id: &str,
    ip: Option<&str>,
    amr: Option<&str>,
) -> Result<(String, Vec<String>)> {
    let access = access(core, tenant_id, user_id)
        .await?
        .ok_or_else(not_a_member)?;
    policy::check_entry(core, tenant_id, ip, amr).await?;
    Ok((tenant_id.to_string(), access.roles))
}

pub(crate) fn not_a_member() -> Error {
    Error::Forbidden {
        code: Code::Forbidden,
        message: "you are not a member of this tenant",
    }
}

/// `POST /auth/switch-tenant`: a new session and token pair for another tenant of the caller
/// (the current session stays; its tokens stay for their tenant). Only Tessera's own login
/// switches this way: an OAuth client re-scopes with the `refresh_token` grant.
pub async fn switch(
    core: &Core,
    principal: &Principal,
    wanted: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<crate::sessions::TokenPair> {
    let user = authz::require_user(principal, Permission::UseTenants)?;
    if user.channel != authz::Channel::Tessera {
        return Err(Error::Forbidden {
            code: Code::InsufficientScope,
            message: "an OAuth client switches tenants with the refresh_token grant",
        });
    }
    let ip = ctx.ip.as_deref();
    // The switched-to tenant's MFA policy looks at how the session signed in.
    let signed_in =
        crate::store::sessions::authentication_of(core.store.pool(), &user.session_id).await?;
    let amr = signed_in.and_then(|(_, amr)| amr).unwrap_or_default();
    let (tenant_id, tenant_roles) =
        choose_named(core, &user.user_id, wanted, ip, Some(&amr)).await?;
    remember(core, &user.user_id, &tenant_id).await?;
    let account = crate::store::users::find_by_id(core.store.pool(), &user.user_id)
        .await?
        .filter(crate::store::users::User::is_active)
        .ok_or_else(Error::invalid_token)?;
    let subject = crate::sessions::Subject {
        user_id: &user.user_id,
        roles: crate::store::roles::roles_of(core.store.pool(), &user.user_id).await?,
        email_verified: account.email_verified_at.is_some(),
        tenant_id: Some(tenant_id),
        tenant_roles,
        // `sessions::start` carries over the switched-from session's.
        amr: None,
    };
    crate::sessions::start(
        &core.store,
        &core.keys,
        &core.settings,
        subject,
        crate::sessions::Start::Switch {
            from: &user.session_id,
        },
        ctx,
        now,
    )
    .await
}

/// Remembers the tenant a user signed in to (the default of the next login).
pub async fn remember(core: &Core, user_id: &str, tenant_id: &str) -> Result<()> {
    Ok(store::set_last_tenant(core.store.writer(), user_id, tenant_id).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(validate_slug("acme").is_ok());
        assert!(validate_slug("acme-rockets-2").is_ok());
        for bad in [
            "ab",
            "-acme",
            "acme-",
            "Acme",
            "ac me",
            "acmé",
            &"a".repeat(64),
        ] {
            assert!(validate_slug(bad).is_err(), "{bad}");
        }
        assert_eq!(slug_from("Acme Rockets!"), "acme-rockets");
        assert!(validate_slug(&slug_from("!!")).is_ok());
        assert!(validate_slug(&personal_slug("0193aa00-0000-7000-8000-000000000000")).is_ok());
    }

    #[test]
    fn unknown_status_fails_closed() {
        assert_eq!(TenantStatus::parse("archived"), TenantStatus::Suspended);
        assert_eq!(TenantStatus::parse("active"), TenantStatus::Active);
    }

    #[test]
    fn roles_give_their_permissions_and_owners_every_application_permission() {
        let tenant = TenantInfo {
            row: TenantRow {
                id: "t".into(),
                slug: "t".into(),
                name: "t".into(),
                kind: "team".into(),
                status: "active".into(),
                personal_of: None,
                settings: "{}".into(),
                created_at: 0,
                updated_at: 0,
                deleted_at: None,
            },
            status: TenantStatus::Active,
            kind: TenantType::Team,
            settings: policy::TenantSettings::default(),
            custom_roles: HashMap::from([(
                "approver".to_string(),
                vec!["invoices:approve".to_string()],
            )]),
            app_permissions: vec!["invoices:approve".into(), "invoices:read".into()],
        };
        let viewer = permissions_of(&tenant, &["viewer".into()]);
        assert!(viewer.contains("tenant:read") && !viewer.contains("members:manage"));
        let approver = permissions_of(&tenant, &["approver".into(), "viewer".into()]);
        assert!(approver.contains("invoices:approve") && !approver.contains("invoices:read"));
        let owner = permissions_of(&tenant, &["owner".into()]);
        assert!(owner.contains("invoices:read") && owner.contains("tenant:delete"));
        let admin = permissions_of(&tenant, &["admin".into()]);
        assert!(!admin.contains("tenant:delete") && admin.contains("members:manage"));
        assert!(permissions_of(&tenant, &["wizard".into()]).is_empty());
    }
}
