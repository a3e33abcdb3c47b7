//! Operator-side account management (`/admin/users`): create, search, read, change,
//! deactivate and reactivate, erase, and end a user's sessions. Every function authorizes
//! through [`crate::authz`] (`Permission::ManageUsers`) and writes its audit entry in the
//! transaction of its change.

use serde::{Deserialize, Serialize};

use super::profile::{ProfilePatch, ProfileView};
use super::{UserView, collect, validate_email, validate_text};
use crate::audit::{self, By, Entry, action};
use crate::authz::{self, Permission, Principal, Role};
use crate::clock::rfc3339;
use crate::core::Core;
use crate::error::{Code, Error, Result};
use crate::events::{self, UserDeletedV1, UserReactivatedV1, UserUpdatedV1};
use crate::sessions::{self, RevocationReason};
use crate::store::is_unique_violation;
use crate::store::roles as store_roles;
use crate::store::sessions::Session;
use crate::store::users::{self, AccountStatus, NewUser, User, UserQuery};

/// Most users one page of `GET /admin/users` returns.
pub const MAX_PAGE: i64 = 200;

/// A user with their profile, as the admin API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserDetail {
    #[serde(flatten)]
    pub user: UserView,
    pub updated_at: String,
    pub profile: ProfileView,
}

/// `POST /admin/users`. Without a password the user sets one through a password reset.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    pub email: String,
    pub password: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub email_verified: bool,
    pub display_name: Option<String>,
}

/// `PATCH /admin/users/{id}`: an absent field stays as it is.
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    /// A new address. It is unverified afterwards unless `email_verified` is `true` too.
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    /// Replaces the user's global roles.
    pub roles: Option<Vec<String>>,
    pub profile: Option<ProfilePatch>,
}

/// `GET /admin/users` filters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Search {
    /// The start of the email address (case-insensitive).
    pub email: Option<String>,
    pub status: Option<String>,
    pub role: Option<String>,
    pub after: Option<String>,
    pub limit: Option<i64>,
}

/// One page of users and the cursor of the next (none on the last page).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page {
    pub users: Vec<UserView>,
    pub next_cursor: Option<String>,
}

fn parse_roles(field: &str, names: &[String]) -> Result<Vec<Role>> {
    if names.len() > Role::ALL.len() * 4 {
        return Err(Error::invalid(field, "too many roles"));
    }
    let mut roles = Vec::new();
    for name in names {
        let role: Role = name.parse().map_err(|_| {
            let known: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
            Error::invalid(
                field,
                format!("unknown role; known roles: {}", known.join(", ")),
            )
        })?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    roles.sort();
    Ok(roles)
}

fn email_taken() -> Error {
    Error::Conflict {
        code: Code::EmailTaken,
        message: "an account with this email already exists",
    }
}

fn last_admin() -> Error {
    Error::Conflict {
        code: Code::LastAdmin,
        message: "this would leave no active administrator",
    }
}

async fn detail(core: &Core, user: &User) -> Result<UserDetail> {
    let roles = store_roles::roles_of(core.store.pool(), &user.id).await?;
    let profile = users::find_profile(core.store.pool(), &user.id)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(UserDetail {
        user: UserView::new(user, &roles),
        updated_at: rfc3339(user.updated_at),
        profile: profile.into(),
    })
}

async fn find(core: &Core, id: &str) -> Result<User> {
    users::find_by_id(core.store.pool(), id)
        .await?
        .ok_or(Error::NotFound)
}

/// Refuses a change that leaves no active administrator other than `user_id`, when `user_id`
/// is one now and would stop being one.
async fn keep_an_admin(
    tx: &mut crate::store::Tx,
    backend: crate::store::Backend,
    user_id: &str,
) -> Result<()> {
    users::lock_admin_changes(tx, backend).await?;
    let is_admin = store_roles::roles_of(&mut **tx, user_id)
        .await?
        .contains(&Role::Admin);
    if is_admin
        && users::count_active_with_role(&mut **tx, Role::Admin.as_str(), user_id).await? == 0
    {
        return Err(last_admin());
    }
    Ok(())
}

/// Creates a user (no verification mail: the operator vouches with `email_verified`, or the
/// user verifies later through `resend-verification`).
pub async fn create(core: &Core, input: NewAccount, by: By<'_>, now: i64) -> Result<UserDetail> {
    authz::require(by.principal, Permission::ManageUsers)?;
    let mut errors = Vec::new();
    let email = validate_email("email", &input.email)
        .map_err(|e| collect(&mut errors, e))
        .ok();
    if let Some(password) = &input.password {
        let _ = core
            .passwords
            .check_policy("password", password, Some(&input.email))
            .map_err(|e| collect(&mut errors, e));
    }
    if let Some(name) = &input.display_name {
        let _ = validate_text("display_name", name, 100).map_err(|e| collect(&mut errors, e));
    }
    let roles = parse_roles("roles", &input.roles)
        .map_err(|e| collect(&mut errors, e))
        .ok();
    let (Some(email), Some(roles)) = (email, roles) else {
        return Err(Error::Validation(errors));
    };
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    let hash = match &input.password {
        Some(p) => Some(core.passwords.hash(p).await?),
        None => None,
    };
    let id = uuid::Uuid::now_v7().to_string();
    let new = NewUser {
        id: &id,
        email: &email,
        email_verified_at: input.email_verified.then_some(now),
        password_hash: hash.as_deref(),
        display_name: input.display_name.as_deref(),
        now,
    };
    let mut tx = core.store.begin().await?;
    let user = super::insert_in(&mut tx, &new, "operator", by.ctx).await?;
    for role in &roles {
        store_roles::grant(&mut *tx, &user.id, *role, now).await?;
    }
    let entry = Entry::success(by.actor(), action::CREATE_USER).target("user", &user.id);
    audit::record(&mut *tx, by.ctx, &entry, now).await?;
    tx.commit().await?;
    detail(core, &user).await
}

/// Users matching the filters, by id (creation order), one page at a time.
pub async fn search(core: &Core, principal: &Principal, q: Search) -> Result<Page> {
    authz::require(principal, Permission::ManageUsers)?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) if s == AccountStatus::Active.as_str() => Some(AccountStatus::Active),
        Some(s) if s == AccountStatus::Deactivated.as_str() => Some(AccountStatus::Deactivated),
        Some(_) => return Err(Error::invalid("status", "must be active or deactivated")),
    };
    let role = match q.role.as_deref() {
        None | Some("") => None,
        Some(r) => Some(parse_roles("role", &[r.to_string()])?[0]),
    };
    if let Some(prefix) = &q.email {
        validate_text("email", prefix, 254)?;
    }
    let after = q.after.as_deref().filter(|a| !a.is_empty());
    if after.is_some_and(|a| !crate::store::storable(a)) {
        return Err(Error::invalid("after", "must be a cursor from next_cursor"));
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::invalid(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    let query = UserQuery {
        email_prefix: q.email.as_deref().map(str::trim).filter(|p| !p.is_empty()),
        status,
        role: role.map(Role::as_str),
        after,
        limit: limit + 1,
    };
    let mut found = users::search(core.store.pool(), &query).await?;
    let next_cursor = if found.len() as i64 > limit {
        found.truncate(limit as usize);
        found.last().map(|u| u.id.clone())
    } else {
        None
    };
    let mut list = Vec::with_capacity(found.len());
    for u in &found {
        let roles = store_roles::roles_of(core.store.pool(), &u.id).await?;
        list.push(UserView::new(u, &roles));
    }
    Ok(Page {
        users: list,
        next_cursor,
    })
}

pub async fn get(core: &Core, principal: &Principal, id: &str) -> Result<UserDetail> {
    authz::require(principal, Permission::ManageUsers)?;
    detail(core, &find(core, id).await?).await
}

/// Changes email, verification, roles and profile in one transaction, with one audit entry and
/// one `UserUpdatedV1` naming what changed. A role taken away ends the user's sessions (their
/// tokens carry it). Taking the last active administrator's `admin` role is refused
/// (`last_admin`).
pub async fn update(
    core: &Core,
    id: &str,
    patch: AccountPatch,
    by: By<'_>,
    now: i64,
) -> Result<UserDetail> {
    authz::require(by.principal, Permission::ManageUsers)?;
    let user = find(core, id).await?;
    let email = patch
        .email
        .as_deref()
        .map(|e| validate_email("email", e))
        .transpose()?;
    let roles = patch
        .roles
        .as_deref()
        .map(|r| parse_roles("roles", r))
        .transpose()?;
    let mut profile = None;
    if let Some(p) = patch.profile {
        let current = users::find_profile(core.store.pool(), id)
            .await?
            .ok_or(Error::NotFound)?;
        profile = Some(super::profile::apply(current, p, now)?);
    }
    let mut changed = Vec::new();
    let mut revoked = Vec::new();
    let mut tx = core.store.begin().await?;
    if let Some(email) = &email
        && users::normalize_email(email) != users::normalize_email(&user.email)
    {
        let verified_at = patch.email_verified.unwrap_or(false).then_some(now);
        match users::set_email(&mut tx, id, email, verified_at, now).await {
            Ok(()) => {}
            Err(e) if is_unique_violation(&e) => return Err(email_taken()),
            Err(e) => return Err(e.into()),
        }
        changed.push("email");
        if verified_at.is_some() != user.email_verified_at.is_some() {
            changed.push("email_verified");
        }
    } else if let Some(verified) = patch.email_verified
        && verified != user.email_verified_at.is_some()
    {
        users::set_verified(&mut tx, id, verified, now).await?;
        changed.push("email_verified");
    }
    if let Some(roles) = &roles {
        let before = store_roles::roles_of(&mut *tx, id).await?;
        if &before != roles {
            if !roles.contains(&Role::Admin) {
                keep_an_admin(&mut tx, core.store.backend(), id).await?;
            }
            store_roles::set(&mut tx, id, roles, now).await?;
            changed.push("roles");
            // Tokens carry roles: a role taken away ends the sessions that carry it, at once
            // and on every replica, instead of living on until the tokens expire.
            if before.iter().any(|r| !roles.contains(r)) {
                revoked = sessions::revoke_all_in(
                    &mut tx,
                    id,
                    None,
                    RevocationReason::RevokedByAdmin,
                    by.ctx,
                    now,
                )
                .await?;
            }
        }
    }
    if let Some(p) = &profile {
        users::update_profile(&mut *tx, id, p).await?;
        changed.push("profile");
    }
    if !changed.is_empty() {
        let reason = changed.join(",");
        let entry = Entry::success(by.actor(), action::UPDATE_USER)
            .target("user", id)
            .reason(&reason);
        audit::record(&mut *tx, by.ctx, &entry, now).await?;
        let event = UserUpdatedV1 {
            user_id: id.to_string(),
            changed: changed.iter().map(|c| c.to_string()).collect(),
        };
        events::append(&mut tx, by.ctx, &event, now).await?;
    }
    tx.commit().await?;
    core.sessions.mark_all_revoked(&revoked).await;
    if !changed.is_empty() {
        core.users.invalidate(id).await;
    }
    detail(core, &find(core, id).await?).await
}

/// Deactivates a user (as [`super::deactivate`] does, after the last-admin check); nothing to do when they are already. The
/// last active administrator cannot be deactivated (`last_admin`).
pub async fn deactivate(core: &Core, id: &str, by: By<'_>, now: i64) -> Result<()> {
    authz::require(by.principal, Permission::ManageUsers)?;
    let user = find(core, id).await?;
    if user.is_active() {
        // The check and the change in one transaction, so two administrators deactivating
        // each other at once cannot both pass it.
        let mut tx = core.store.begin().await?;
        keep_an_admin(&mut tx, core.store.backend(), id).await?;
        let revoked = super::deactivate_in(&mut tx, id, by.principal, by.ctx, now).await?;
        tx.commit().await?;
        core.sessions.mark_all_revoked(&revoked).await;
        core.users.invalidate(id).await;
    }
    Ok(())
}

/// Lets a deactivated user sign in again (their old sessions stay ended).
pub async fn reactivate(core: &Core, id: &str, by: By<'_>, now: i64) -> Result<()> {
    authz::require(by.principal, Permission::ManageUsers)?;
    find(core, id).await?;
    let mut tx = core.store.begin().await?;
    if users::reactivate(&mut tx, id, now).await? {
        let entry = Entry::success(by.actor(), action::REACTIVATE_USER).target("user", id);
        audit::record(&mut *tx, by.ctx, &entry, now).await?;
        let event = UserReactivatedV1 {
            user_id: id.to_string(),
        };
        events::append(&mut tx, by.ctx, &event, now).await?;
    }
    tx.commit().await?;
    core.users.invalidate(id).await;
    Ok(())
}

/// Erases a user (right to erasure): sessions end (`SessionRevokedV1` each), the account and
/// its personal data go ([`users::erase`]), audit entries keep a pseudonym instead of the id,
/// and `UserDeletedV1` tells consumers. Refused while the user is the only owner of a team
/// (`last_owner`: hand the team over or delete it first) or the last active administrator.
pub async fn erase(core: &Core, id: &str, by: By<'_>, now: i64) -> Result<()> {
    authz::require(by.principal, Permission::ManageUsers)?;
    find(core, id).await?;
    let mut tx = core.store.begin().await?;
    if !users::sole_owner_of(&mut *tx, id).await?.is_empty() {
        return Err(Error::Conflict {
            code: Code::LastOwner,
            message: "the user is the only owner of a team: transfer ownership or delete the team first",
        });
    }
    keep_an_admin(&mut tx, core.store.backend(), id).await?;
    let scope = users::erasure_scope(&mut tx, id).await?;
    let revoked = sessions::revoke_all_in(
        &mut tx,
        id,
        None,
        RevocationReason::UserDeleted,
        by.ctx,
        now,
    )
    .await?;
    let pseudonym = format!("erased:{}", uuid::Uuid::new_v4().simple());
    if !users::erase(&mut tx, id, &pseudonym).await? {
        return Err(Error::NotFound);
    }
    let entry = Entry::success(by.actor(), action::DELETE_USER).target("user", &pseudonym);
    audit::record(&mut *tx, by.ctx, &entry, now).await?;
    let event = UserDeletedV1 {
        user_id: id.to_string(),
        personal_tenant_id: scope.personal_tenant.clone(),
    };
    events::append(&mut tx, by.ctx, &event, now).await?;
    tx.commit().await?;
    core.sessions.mark_all_revoked(&revoked).await;
    core.users.invalidate(id).await;
    for tenant in &scope.tenants {
        core.tenants.member_changed(tenant, id).await;
    }
    if let Some(t) = &scope.personal_tenant {
        core.tenants.tenant_changed(t).await;
    }
    for hash in &scope.personal_key_hashes {
        core.tenants.key_changed(hash).await;
    }
    Ok(())
}

/// The user's live sessions, newest first.
pub async fn sessions(
    core: &Core,
    principal: &Principal,
    id: &str,
    now: i64,
) -> Result<Vec<Session>> {
    authz::require(principal, Permission::ManageUsers)?;
    find(core, id).await?;
    Ok(crate::store::sessions::list_active_sessions(core.store.pool(), id, now).await?)
}

/// Ends every session of the user (`revoked_by_admin`); returns how many.
pub async fn end_sessions(core: &Core, id: &str, by: By<'_>, now: i64) -> Result<usize> {
    authz::require(by.principal, Permission::ManageUsers)?;
    find(core, id).await?;
    let mut tx = core.store.begin().await?;
    let revoked = sessions::revoke_all_in(
        &mut tx,
        id,
        None,
        RevocationReason::RevokedByAdmin,
        by.ctx,
        now,
    )
    .await?;
    let entry = Entry::success(by.actor(), action::REVOKE_USER_SESSIONS).target("user", id);
    audit::record(&mut *tx, by.ctx, &entry, now).await?;
    tx.commit().await?;
    core.sessions.mark_all_revoked(&revoked).await;
    Ok(revoked.len())
}
