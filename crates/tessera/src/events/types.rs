//! The event types (version 1). Their JSON Schemas live in `docs/events/` and a test fails when a
//! type changes without its schema being regenerated (`TESSERA_BLESS=1 cargo test -p tessera
//! --lib events::types`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::DomainEvent;

macro_rules! event {
    ($ty:ident, $name:literal) => {
        impl DomainEvent for $ty {
            const TYPE: &'static str = $name;
            fn subject(&self) -> &str {
                &self.user_id
            }
        }
    };
}

macro_rules! tenant_event {
    ($ty:ident, $name:literal) => {
        impl DomainEvent for $ty {
            const TYPE: &'static str = $name;
            fn subject(&self) -> &str {
                &self.tenant_id
            }
            fn tenant(&self) -> Option<&str> {
                Some(&self.tenant_id)
            }
        }
    };
}

/// A tenant was created (a personal one at registration, or a team or enterprise tenant).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TenantCreatedV1 {
    pub tenant_id: String,
    pub slug: String,
    pub name: String,
    /// `personal`, `team` or `enterprise`.
    pub tenant_type: String,
    /// The user who created it and became its first owner.
    pub created_by: Option<String>,
}
tenant_event!(TenantCreatedV1, "identity.tenant.created.v1");

/// A tenant was suspended: its tokens and API keys stopped working.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TenantSuspendedV1 {
    pub tenant_id: String,
}
tenant_event!(TenantSuspendedV1, "identity.tenant.suspended.v1");

/// A tenant was deleted (softly; it is purged later).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TenantDeletedV1 {
    pub tenant_id: String,
}
tenant_event!(TenantDeletedV1, "identity.tenant.deleted.v1");

/// An invitation to a tenant was created (and, unless mail goes out as events, mailed).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct InvitationSentV1 {
    pub tenant_id: String,
    pub invitation_id: String,
    pub email: String,
    pub roles: Vec<String>,
    pub invited_by: Option<String>,
    /// When the invitation expires (RFC 3339).
    pub expires_at: String,
    /// The invitation link with its raw token: present only with event-driven mail
    /// (`TESSERA_MAIL__TRANSPORT=events`). Treat it as a secret.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub link: Option<String>,
}
tenant_event!(InvitationSentV1, "identity.tenant.invitation_sent.v1");

/// An invitation was accepted (the member joined; `member_added` follows unless they were a
/// member already).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct InvitationAcceptedV1 {
    pub tenant_id: String,
    pub invitation_id: String,
    pub user_id: String,
}
tenant_event!(
    InvitationAcceptedV1,
    "identity.tenant.invitation_accepted.v1"
);

/// An API key was created (or made by rotating another).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApiKeyCreatedV1 {
    pub tenant_id: String,
    pub key_id: String,
    pub name: String,
    pub permissions: Vec<String>,
    /// The user who created it (or `api_key:<id>` for a key made with a key).
    pub created_by: Option<String>,
    /// The key it replaces, which keeps working until the end of the overlap.
    pub rotated_from: Option<String>,
}
tenant_event!(ApiKeyCreatedV1, "identity.tenant.api_key_created.v1");

/// An API key was revoked: it stopped working at once.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApiKeyRevokedV1 {
    pub tenant_id: String,
    pub key_id: String,
}
tenant_event!(ApiKeyRevokedV1, "identity.tenant.api_key_revoked.v1");

/// A user joined a tenant (by invitation, or just in time by a claimed email domain).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MemberAddedV1 {
    pub tenant_id: String,
    pub user_id: String,
    pub roles: Vec<String>,
}
tenant_event!(MemberAddedV1, "identity.tenant.member_added.v1");

/// A member left or was removed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MemberRemovedV1 {
    pub tenant_id: String,
    pub user_id: String,
    /// True when the member left on their own.
    pub left: bool,
}
tenant_event!(MemberRemovedV1, "identity.tenant.member_removed.v1");

/// A member's roles changed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MemberRolesChangedV1 {
    pub tenant_id: String,
    pub user_id: String,
    pub roles: Vec<String>,
    pub previous_roles: Vec<String>,
}
tenant_event!(
    MemberRolesChangedV1,
    "identity.tenant.member_roles_changed.v1"
);

/// A user account was created (self-registration or by an operator).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UserRegisteredV1 {
    pub user_id: String,
    pub email: String,
    pub email_verified: bool,
    /// `self` (POST /auth/register) or `operator` (CLI).
    pub source: String,
}
event!(UserRegisteredV1, "identity.user.registered.v1");

/// A verification email was requested; any earlier verification token stopped working.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EmailVerificationRequestedV1 {
    pub user_id: String,
    pub email: String,
    /// When the token expires (RFC 3339).
    pub expires_at: String,
    /// The verification link with its raw token: present only with event-driven mail
    /// (`TESSERA_MAIL__TRANSPORT=events`). Treat it as a secret.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub link: Option<String>,
}
event!(
    EmailVerificationRequestedV1,
    "identity.email.verification_requested.v1"
);

/// The user proved they own the address.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EmailVerifiedV1 {
    pub user_id: String,
    pub email: String,
}
event!(EmailVerifiedV1, "identity.email.verified.v1");

/// A password reset was requested for an existing account (unknown addresses emit nothing).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PasswordResetRequestedV1 {
    pub user_id: String,
    pub email: String,
    pub expires_at: String,
    /// The reset link with its raw token: present only with event-driven mail. A secret.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub link: Option<String>,
}
event!(
    PasswordResetRequestedV1,
    "identity.password.reset_requested.v1"
);

/// The password changed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PasswordChangedV1 {
    pub user_id: String,
    /// `change` (knowing the current one), `reset` (through an emailed token), or `removed`
    /// (the account was reclaimed through an emailed link: docs/federation.md).
    pub method: String,
}
event!(PasswordChangedV1, "identity.password.changed.v1");

/// A login succeeded and started a session.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LoginSucceededV1 {
    pub user_id: String,
    pub session_id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// How: `password`, `passkey`, or `federated:NAME` (an upstream provider). Absent from
    /// events written before it existed, which were all `password` or `passkey`.
    #[serde(default)]
    pub method: String,
}
event!(LoginSucceededV1, "identity.login.succeeded.v1");

/// An upstream identity was linked to an account.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct IdentityLinkedV1 {
    pub user_id: String,
    pub identity_id: String,
    /// The provider's name.
    pub provider: String,
    /// How the account's ownership was shown: `verified_email` (both sides hold the address
    /// as verified), `password`, `email` (an emailed link, confirmed in the browser that asked
    /// for it), or `created` (the account was created just in time).
    pub via: String,
}
event!(IdentityLinkedV1, "identity.federation.linked.v1");

/// Someone signing in with an upstream identity asked to join it to the account at its address
/// (docs/federation.md): a link was sent to the account's address; any earlier one stopped
/// working. Nothing is linked unless the link is confirmed in the browser that asked.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct IdentityLinkRequestedV1 {
    pub user_id: String,
    /// The account's address, where the link went.
    pub email: String,
    /// The provider's name.
    pub provider: String,
    /// The provider's display name (what the email names).
    pub provider_name: String,
    /// When the link expires (RFC 3339).
    pub expires_at: String,
    /// The link with its raw token: present only with event-driven mail
    /// (`TESSERA_MAIL__TRANSPORT=events`). Treat it as a secret.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub link: Option<String>,
}
event!(
    IdentityLinkRequestedV1,
    "identity.federation.link_requested.v1"
);

/// An upstream identity was unlinked from an account.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct IdentityUnlinkedV1 {
    pub user_id: String,
    pub identity_id: String,
    pub provider: String,
}
event!(IdentityUnlinkedV1, "identity.federation.unlinked.v1");

/// A login failed. `user_id` is empty when the email names no account (the address itself is
/// not recorded: people type passwords into the email field).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LoginFailedV1 {
    pub user_id: String,
    /// `invalid_password`, `unknown_account`, `account_deactivated` or `email_not_verified`.
    pub reason: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}
event!(LoginFailedV1, "identity.login.failed.v1");

/// A session ended before its time.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SessionRevokedV1 {
    pub user_id: String,
    pub session_id: String,
    /// `logout`, `logout_all`, `revoked_by_user`, `refresh_token_reuse`, `password_changed`,
    /// `password_reset` or `user_deactivated`.
    pub reason: String,
}
event!(SessionRevokedV1, "identity.session.revoked.v1");

/// An operator deactivated the account; its sessions were revoked.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UserDeactivatedV1 {
    pub user_id: String,
}
event!(UserDeactivatedV1, "identity.user.deactivated.v1");

/// An operator reactivated a deactivated account.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UserReactivatedV1 {
    pub user_id: String,
}
event!(UserReactivatedV1, "identity.user.reactivated.v1");

/// An operator changed an account (`PATCH /admin/users/{id}`): which parts changed, never
/// their values (read the user to see them).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UserUpdatedV1 {
    pub user_id: String,
    /// `email`, `email_verified`, `roles`, `profile`.
    pub changed: Vec<String>,
}
event!(UserUpdatedV1, "identity.user.updated.v1");

/// The account was erased (`DELETE /admin/users/{id}`): its personal data are gone from
/// Tessera, and consumers should erase what they hold about `user_id`. The personal tenant
/// went with it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UserDeletedV1 {
    pub user_id: String,
    pub personal_tenant_id: Option<String>,
}
event!(UserDeletedV1, "identity.user.deleted.v1");

/// Repeated failed logins locked an account, from one IP or (for unknown devices) everywhere.
/// `user_id` is empty when the submitted email names no account: locks do not reveal that.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AccountLockedV1 {
    pub user_id: String,
    pub ip: Option<String>,
    /// How long the lock lasts, seconds.
    pub locked_secs: u64,
    /// Locked for every device that has not signed in to this account before, not only this IP.
    pub account_wide: bool,
}
event!(AccountLockedV1, "identity.account.locked.v1");

/// A second factor was confirmed: from now on every password sign-in of the user needs one.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MfaEnrolledV1 {
    pub user_id: String,
    pub factor_id: String,
    /// `totp` or `webauthn`.
    pub kind: String,
}
event!(MfaEnrolledV1, "identity.mfa.enrolled.v1");

/// A confirmed second factor was removed (with the last one, sign-in needs the password alone).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MfaRemovedV1 {
    pub user_id: String,
    pub factor_id: String,
    /// `totp` or `webauthn`.
    pub kind: String,
}
event!(MfaRemovedV1, "identity.mfa.removed.v1");

/// A wrong, expired or replayed second-factor code was given after a right password, or a
/// passkey's assertion did not verify.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MfaChallengeFailedV1 {
    pub user_id: String,
    /// `totp`, `recovery_code` or `webauthn` (an assertion that did not verify, after a
    /// password or without one).
    pub method: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}
event!(MfaChallengeFailedV1, "identity.mfa.challenge_failed.v1");

/// A recovery code was used to sign in (each works once).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RecoveryCodeUsedV1 {
    pub user_id: String,
    /// Unused codes left.
    pub remaining: u32,
}
event!(RecoveryCodeUsedV1, "identity.mfa.recovery_code_used.v1");

/// Every event type with the JSON Schema of its envelope, for `docs/events/`.
pub fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    fn one<E: DomainEvent>() -> (&'static str, serde_json::Value) {
        let schema = schemars::schema_for!(super::Envelope<E>);
        (E::TYPE, serde_json::to_value(schema).unwrap_or_default())
    }
    vec![
        one::<UserRegisteredV1>(),
        one::<EmailVerificationRequestedV1>(),
        one::<EmailVerifiedV1>(),
        one::<PasswordResetRequestedV1>(),
        one::<PasswordChangedV1>(),
        one::<LoginSucceededV1>(),
        one::<LoginFailedV1>(),
        one::<IdentityLinkedV1>(),
        one::<IdentityLinkRequestedV1>(),
        one::<IdentityUnlinkedV1>(),
        one::<SessionRevokedV1>(),
        one::<UserDeactivatedV1>(),
        one::<UserReactivatedV1>(),
        one::<UserUpdatedV1>(),
        one::<UserDeletedV1>(),
        one::<AccountLockedV1>(),
        one::<MfaEnrolledV1>(),
        one::<MfaRemovedV1>(),
        one::<MfaChallengeFailedV1>(),
        one::<RecoveryCodeUsedV1>(),
        one::<TenantCreatedV1>(),
        one::<TenantSuspendedV1>(),
        one::<TenantDeletedV1>(),
        one::<MemberAddedV1>(),
        one::<MemberRemovedV1>(),
        one::<MemberRolesChangedV1>(),
        one::<InvitationSentV1>(),
        one::<InvitationAcceptedV1>(),
        one::<ApiKeyCreatedV1>(),
        one::<ApiKeyRevokedV1>(),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn docs_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/events")
    }

    /// Fails when an event type changed without its committed schema; `TESSERA_BLESS=1`
    /// rewrites them.
    #[test]
    fn committed_schemas_match_the_event_types() {
        let dir = docs_dir();
        let bless = std::env::var("TESSERA_BLESS").is_ok_and(|v| v == "1");
        let mut stale = Vec::new();
        for (name, schema) in super::schemas() {
            let path = dir.join(format!("{name}.json"));
            let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
            if bless {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        }
        assert!(
            stale.is_empty(),
            "event schemas out of date: {stale:?}\nregenerate them with \
             `TESSERA_BLESS=1 cargo test -p tessera --lib events::types` and commit docs/events/"
        );
    }
}
