//! Authorization: the one place that decides who may do what.
//!
//! A request's caller is a [`Principal`]: a user (signed in to Tessera itself, or through an
//! OAuth client) or an OAuth client acting for itself (RFC 6749 §4.4). Domain functions call
//! [`require`] with the [`Permission`] they need before acting; handlers never compare roles or
//! scopes themselves.
//!
//! The rules:
//! - A token of Tessera's own login (`client_id` = `tessera`) may use the account API, and the
//!   admin API when the user holds [`Role::Admin`].
//! - A token issued to an OAuth client registered as **first-party** may do the same only within
//!   its scopes: [`SCOPE_ACCOUNT`] for the account API, [`SCOPE_ADMIN`] (plus the role) for the
//!   admin API.
//! - A token issued to a **third-party** client is good for `/oauth2/userinfo` (with `openid`)
//!   and for the resource servers of its audience, never for the account or admin API, and it
//!   carries no roles.
//! - A client-credentials token is never a user: it may use none of these APIs.
//! - [`Principal::System`] is the operator at the host (the `tessera` CLI, jobs): every
//!   operator permission, no account of its own.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// The scope a first-party client needs for the account API (`/identity/*`, `/auth/logout`).
pub const SCOPE_ACCOUNT: &str = "tessera:account";
/// The scope a first-party client needs for the admin API (`/admin/*`), with the admin role.
pub const SCOPE_ADMIN: &str = "tessera:admin";
/// Scopes only first-party clients may register.
pub const FIRST_PARTY_SCOPES: &[&str] = &[SCOPE_ACCOUNT, SCOPE_ADMIN];

/// A global role (tenant roles are per tenant and live with tenants).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Operates Tessera: clients, users, the audit log and events.
    Admin,
}

impl Role {
    pub const ALL: &[Role] = &[Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or(UnknownRole)
    }
}

/// A role name Tessera does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown role")]
pub struct UnknownRole;

/// What a caller wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Read one's own account, profile and sessions.
    ReadOwnAccount,
    /// Change one's own profile or password, end one's own sessions.
    ManageOwnAccount,
    /// OIDC UserInfo (OIDC Core §5.3): the `openid` scope.
    ReadUserInfo,
    /// Register and change OAuth clients.
    ManageClients,
    /// Deactivate users and other operator changes to accounts.
    ManageUsers,
    /// Read the audit log.
    ReadAuditLog,
    /// Read the outbox and its statistics.
    ReadEvents,
    /// Put parked events and webhook deliveries back in their queues.
    ManageEvents,
    /// List, rotate and revoke signing keys.
    ManageKeys,
    /// Add, list, remove and test webhooks.
    ManageWebhooks,
    /// Scrape `/metrics` with a user token (a configured metrics token needs no user).
    ReadMetrics,
    /// Create, list, join and switch tenants: a user's own business.
    UseTenants,
    /// Act inside the tenant named in the path, as a member (through the token's tenant) or as
    /// one of its API keys; what exactly is decided by the tenant's roles or the key's
    /// permissions, [`require_in_tenant`].
    ActInTenant,
    /// System administration of tenants: enterprise tenants, suspension, reactivation.
    ManageTenants,
    /// Add, change and remove the upstream identity providers users may sign in with.
    ManageIdentityProviders,
    /// Ask the AuthZEN decision point (`/access/v1/*`): users (about themselves, or with
    /// `access:evaluate` in the tenant), API keys, and resource servers (clients with the
    /// introspection permission). Whom one may ask about is decided by [`crate::access`].
    EvaluateAccess,
}

impl Permission {
    /// The scope a first-party client's token needs for this permission.
    pub(crate) fn scope(self) -> &'static str {
        match self {
            Permission::ReadOwnAccount
            | Permission::ManageOwnAccount
            | Permission::UseTenants
            | Permission::ActInTenant
            | Permission::EvaluateAccess => SCOPE_ACCOUNT,
            Permission::ReadUserInfo => "openid",
            Permission::ManageClients
            | Permission::ManageUsers
            | Permission::ReadAuditLog
            | Permission::ReadEvents
            | Permission::ManageEvents
            | Permission::ManageKeys
            | Permission::ManageWebhooks
            | Permission::ReadMetrics
            | Permission::ManageTenants
            | Permission::ManageIdentityProviders => SCOPE_ADMIN,
        }
    }

    /// The role the user must hold, if any.
    pub fn role(self) -> Option<Role> {
        match self {
            Permission::ReadOwnAccount
            | Permission::ManageOwnAccount
            | Permission::ReadUserInfo
            | Permission::UseTenants
            | Permission::ActInTenant
            | Permission::EvaluateAccess => None,
            Permission::ManageClients
            | Permission::ManageUsers
            | Permission::ReadAuditLog
            | Permission::ReadEvents
            | Permission::ManageEvents
            | Permission::ManageKeys
            | Permission::ManageWebhooks
            | Permission::ReadMetrics
            | Permission::ManageTenants
            | Permission::ManageIdentityProviders => Some(Role::Admin),
        }
    }
}

/// How a user's token came to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Tessera's own login (`/auth/login`, `client_id` = `tessera`).
    Tessera,
    /// An OAuth client; `first_party` as registered now (not when the token was issued).
    Client {
        client_id: String,
        first_party: bool,
    },
}

/// A user acting through a session.
#[derive(Clone, Debug)]
pub struct UserPrincipal {
    pub user_id: String,
    /// The session (token family) of the token.
    pub session_id: String,
    pub channel: Channel,
    /// Roles the token carries (first-party tokens only).
    pub roles: Vec<Role>,
    /// Granted scopes (OAuth tokens; empty for Tessera's own login).
    pub scopes: Vec<String>,
    /// The token's active tenant (`tid`).
    pub tenant_id: Option<String>,
}

/// An OAuth client acting for itself (client credentials).
#[derive(Clone, Debug)]
pub struct ClientPrincipal {
    pub client_id: String,
    pub scopes: Vec<String>,
    /// Registered with the introspection permission (`may_introspect`): a resource server
    /// that may also ask the AuthZEN decision point about anyone.
    pub may_evaluate: bool,
}

/// Who is calling.
#[derive(Clone, Debug)]
pub enum Principal {
    User(UserPrincipal),
    Client(ClientPrincipal),
    /// A tenant's API key (`Authorization: Bearer tsk_…`): acts only in its tenant, with its
    /// own permissions there, never on account or admin routes.
    ApiKey(ApiKeyPrincipal),
    /// The operator at the host: the CLI and background jobs, never reachable over HTTP.
    System,
}

/// An API key's identity and what it may do in its tenant.
#[derive(Clone, Debug)]
pub struct ApiKeyPrincipal {
    pub key_id: String,
    pub tenant_id: String,
    pub permissions: Vec<String>,
}

impl Principal {
    /// The user this principal acts for, if any.
    pub fn user(&self) -> Option<&UserPrincipal> {
        match self {
            Principal::User(u) => Some(u),
            Principal::Client(_) | Principal::ApiKey(_) | Principal::System => None,
        }
    }

    /// The audit actor.
    pub fn actor(&self) -> crate::audit::Actor<'_> {
        match self {
            Principal::User(u) => crate::audit::Actor::User(&u.user_id),
            Principal::Client(c) => crate::audit::Actor::Client(&c.client_id),
            Principal::ApiKey(k) => crate::audit::Actor::ApiKey(&k.key_id),
            Principal::System => crate::audit::Actor::System,
        }
    }

    /// The tenant the credential is scoped to: a token's `tid`, an API key's tenant.
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            Principal::User(u) => u.tenant_id.as_deref(),
            Principal::ApiKey(k) => Some(&k.tenant_id),
            Principal::Client(_) | Principal::System => None,
        }
    }
}

impl UserPrincipal {
    fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Checks that `principal` may do `permission`.
///
/// `403 insufficient_scope` when the token was not issued for it (RFC 6750 §3.1), `403
/// forbidden` when the user lacks the role.
pub fn require(principal: &Principal, permission: Permission) -> Result<(), Error> {
    match principal {
        Principal::System if permission.role().is_some() => Ok(()),
        Principal::User(_) => require_user(principal, permission).map(|_| ()),
        // An API key reaches tenant routes only; the tenant decides the rest.
        Principal::ApiKey(_)
            if matches!(
                permission,
                Permission::ActInTenant | Permission::EvaluateAccess
            ) =>
        {
            Ok(())
        }
        Principal::System if permission == Permission::EvaluateAccess => Ok(()),
        Principal::Client(c) if c.may_evaluate && permission == Permission::EvaluateAccess => {
            Ok(())
        }
        Principal::System | Principal::Client(_) | Principal::ApiKey(_) => {
            Err(insufficient_scope())
        }
    }
}

/// Like [`require`], for what only a user can do (their own account): returns that user.
pub fn require_user(
    principal: &Principal,
    permission: Permission,
) -> Result<&UserPrincipal, Error> {
    let Principal::User(user) = principal else {
        return Err(insufficient_scope());
    };
    let scoped = match (&user.channel, permission) {
        (_, Permission::ReadUserInfo) => user.has_scope(permission.scope()),
        (Channel::Tessera, _) => true,
        (
            Channel::Client {
                first_party: true, ..
            },
            _,
        ) => user.has_scope(permission.scope()),
        (
            Channel::Client {
                first_party: false, ..
            },
            _,
        ) => false,
    };
    if !scoped {
        return Err(insufficient_scope());
    }
    if let Some(role) = permission.role()
        && !user.roles.contains(&role)
    {
        return Err(Error::Forbidden {
            code: crate::error::Code::Forbidden,
            message: "this endpoint requires the admin role",
        });
    }
    Ok(user)
}

fn insufficient_scope() -> Error {
    Error::Forbidden {
        code: crate::error::Code::InsufficientScope,
        message: "the access token was not issued for this endpoint",
    }
}

/// The principal an access token stands for, issued through `channel`.
///
/// A token without a session (`sid`) is a client acting for itself (client credentials): never
/// a user, whatever its `sub`. Roles count only on first-party channels.
pub fn principal_from_claims(
    claims: crate::keys::jwt::AccessClaims,
    channel: Channel,
    may_evaluate: bool,
) -> Principal {
    let scopes = claims
        .scope
        .as_deref()
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if claims.api_key
        && let Some(tenant_id) = claims.tid
    {
        // A JWT exchanged for a tenant API key acts as that key (RFC 8693).
        return Principal::ApiKey(ApiKeyPrincipal {
            key_id: claims.sub,
            tenant_id,
            permissions: claims.permissions,
        });
    }
    let Some(session_id) = claims.sid else {
        return Principal::Client(ClientPrincipal {
            client_id: claims.client_id,
            scopes,
            may_evaluate,
        });
    };
    let first_party = matches!(
        channel,
        Channel::Tessera
            | Channel::Client {
                first_party: true,
                ..
            }
    );
    let roles = if first_party {
        parse_roles(claims.roles.iter().map(String::as_str))
    } else {
        Vec::new()
    };
    Principal::User(UserPrincipal {
        user_id: claims.sub,
        session_id,
        channel,
        roles,
        scopes,
        tenant_id: claims.tid,
    })
}

/// Parses stored role names; unknown names (from a newer version) are skipped.
pub fn parse_roles<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<Role> {
    let mut roles: Vec<Role> = names.into_iter().filter_map(|n| n.parse().ok()).collect();
    roles.sort();
    roles.dedup();
    roles
}

/// Role names for the wire (token claims, API views).
pub fn role_names(roles: &[Role]) -> Vec<String> {
    roles.iter().map(|r| r.as_str().to_string()).collect()
}

// ---------------------------------------------------------------- tenants

crate::error::wire_codes! {
/// A built-in permission inside a tenant. Tenants add their own (application permissions such
/// as `invoices:approve`) and custom roles made of both; see `docs/tenants.md`.
pub enum TenantPermission {
    /// See the tenant (name, slug, type, status).
    TenantRead => "tenant:read",
    /// Rename the tenant, change its slug and settings.
    TenantManage => "tenant:manage",
    /// Delete the tenant.
    TenantDelete => "tenant:delete",
    /// List members and their roles.
    MembersRead => "members:read",
    /// Invite people by email.
    MembersInvite => "members:invite",
    /// Change members' roles and remove members.
    MembersManage => "members:manage",
    /// Define custom roles and application permissions.
    RolesManage => "roles:manage",
    /// Create, rotate and revoke the tenant's API keys.
    ApiKeysManage => "api_keys:manage",
    /// Read the tenant's audit log.
    AuditRead => "audit:read",
    /// Ask the AuthZEN decision point about other members (`/access/v1/*`).
    AccessEvaluate => "access:evaluate",
}
}

crate::error::wire_codes! {
/// The roles every tenant has. Custom roles sit beside them.
pub enum TenantRole {
    /// Everything, including deleting the tenant and naming other owners. A tenant always
    /// keeps at least one.
    Owner => "owner",
    /// Everything but deleting the tenant and granting or taking the owner role.
    Admin => "admin",
    /// Sees the tenant and its members.
    Member => "member",
    /// Sees the tenant.
    Viewer => "viewer",
}
}

impl TenantRole {
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.as_str() == s)
    }

    /// The built-in permissions of the role (an owner also holds every application permission
    /// of the tenant).
    pub fn permissions(self) -> &'static [TenantPermission] {
        use TenantPermission as P;
        match self {
            TenantRole::Owner => P::ALL,
            TenantRole::Admin => &[
                P::TenantRead,
                P::TenantManage,
                P::MembersRead,
                P::MembersInvite,
                P::MembersManage,
                P::RolesManage,
                P::ApiKeysManage,
                P::AuditRead,
                P::AccessEvaluate,
            ],
            TenantRole::Member => &[P::TenantRead, P::MembersRead],
            TenantRole::Viewer => &[P::TenantRead],
        }
    }
}

impl TenantPermission {
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|p| p.as_str() == s)
    }
}

/// What a user may do in one tenant, resolved from the live membership (not from the token's
/// claims, so a removed member or a lowered role takes effect at the next request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantAccess {
    pub tenant_id: String,
    /// The member's roles (built-in and custom names).
    pub roles: Vec<String>,
    /// Every permission those roles give (built-in and application permissions).
    pub permissions: std::collections::BTreeSet<String>,
}

impl TenantAccess {
    pub fn has(&self, permission: &str) -> bool {
        self.permissions.contains(permission)
    }
}

/// Checks that `principal` may do `permission` in the tenant of `access`: a user or API key
/// that may act in tenants ([`Permission::ActInTenant`]), whose token is for this tenant (`tid`:
/// a token for tenant A is not a token for tenant B; a key belongs to one tenant), and whose
/// roles (or the key's permissions) there give the permission.
pub fn require_in_tenant(
    principal: &Principal,
    access: &TenantAccess,
    permission: TenantPermission,
) -> Result<(), Error> {
    require(principal, Permission::ActInTenant)?;
    if principal.tenant_id() != Some(access.tenant_id.as_str()) {
        return Err(Error::Forbidden {
            code: crate::error::Code::TenantMismatch,
            message: "the token is for another tenant; switch to this one first",
        });
    }
    if !access.has(permission.as_str()) {
        return Err(Error::Forbidden {
            code: crate::error::Code::Forbidden,
            message: "your roles in this tenant do not allow this",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(channel: Channel, roles: Vec<Role>, scopes: &[&str]) -> Principal {
        Principal::User(UserPrincipal {
            user_id: "u".into(),
            session_id: "s".into(),
            channel,
            roles,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            tenant_id: None,
        })
    }

    fn client(first_party: bool) -> Channel {
        Channel::Client {
            client_id: "tc_x".into(),
            first_party,
        }
    }

    #[test]
    fn tessera_login_may_use_account_api_and_admin_only_with_role() {
        let plain = user(Channel::Tessera, vec![], &[]);
        assert!(require(&plain, Permission::ReadOwnAccount).is_ok());
        assert!(require(&plain, Permission::ManageOwnAccount).is_ok());
        assert!(require(&plain, Permission::ManageClients).is_err());
        let admin = user(Channel::Tessera, vec![Role::Admin], &[]);
        assert!(require(&admin, Permission::ManageClients).is_ok());
        assert!(require(&admin, Permission::ReadAuditLog).is_ok());
    }

    #[test]
    fn third_party_tokens_reach_userinfo_only() {
        let p = user(client(false), vec![Role::Admin], &["openid", SCOPE_ADMIN]);
        assert!(require(&p, Permission::ReadUserInfo).is_ok());
        for perm in [
            Permission::ReadOwnAccount,
            Permission::ManageOwnAccount,
            Permission::ManageClients,
            Permission::ManageUsers,
            Permission::ReadAuditLog,
            Permission::ReadEvents,
        ] {
            assert!(require(&p, perm).is_err(), "{perm:?}");
        }
    }

    #[test]
    fn first_party_clients_need_the_scope_and_the_role() {
        let account = user(client(true), vec![Role::Admin], &["openid", SCOPE_ACCOUNT]);
        assert!(require(&account, Permission::ReadOwnAccount).is_ok());
        assert!(require(&account, Permission::ManageClients).is_err());
        let admin_scope_no_role = user(client(true), vec![], &[SCOPE_ADMIN]);
        assert!(require(&admin_scope_no_role, Permission::ManageClients).is_err());
        let admin = user(client(true), vec![Role::Admin], &[SCOPE_ADMIN]);
        assert!(require(&admin, Permission::ManageClients).is_ok());
        assert!(require(&admin, Permission::ReadUserInfo).is_err());
    }

    #[test]
    fn a_client_acting_for_itself_is_never_a_user() {
        let p = Principal::Client(ClientPrincipal {
            client_id: "tc_x".into(),
            scopes: vec!["openid".into(), SCOPE_ADMIN.into()],
            may_evaluate: false,
        });
        assert!(require(&p, Permission::ReadUserInfo).is_err());
        assert!(require(&p, Permission::ReadOwnAccount).is_err());
        assert!(require(&p, Permission::ManageClients).is_err());
    }

    #[test]
    fn the_host_operator_has_operator_permissions_but_no_account() {
        assert!(require(&Principal::System, Permission::ManageClients).is_ok());
        assert!(require(&Principal::System, Permission::ReadAuditLog).is_ok());
        assert!(require(&Principal::System, Permission::ReadOwnAccount).is_err());
        assert!(require_user(&Principal::System, Permission::ManageClients).is_err());
    }

    #[test]
    fn roles_round_trip_and_unknown_names_are_skipped() {
        assert_eq!(parse_roles(["admin", "wizard", "admin"]), vec![Role::Admin]);
        assert_eq!(role_names(&[Role::Admin]), vec!["admin".to_string()]);
    }
}
