//! The audit log: an append-only record of security-relevant actions, for operators.
//!
//! [`record`] writes one entry, inside the transaction of the change it describes wherever there
//! is one, so an entry exists if and only if its change committed (failed logins and other
//! refusals write their own small transaction). An entry holds who acted ([`Actor`]), the
//! action (see [`action`]), its target, the result with a reason code, and the request's IP,
//! user agent and correlation id. It never holds a password, a token, a secret or an email
//! address: only ids and reason codes. `GET /admin/audit` and `tessera audit list` read it;
//! [`purge`] (hourly in `tessera serve`, and `tessera audit purge`) drops entries older than
//! `TESSERA_AUDIT__RETENTION_DAYS`.

use serde::{Deserialize, Serialize};
use sqlx::{Any, Executor};

use crate::authz::Principal;
use crate::clock::rfc3339;
use crate::context::RequestContext;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::audit::{self as store_audit, AuditQuery, AuditRow, NewAuditRow};

/// The actions recorded, as stored in the `action` column.
pub mod action {
    /// Self-service registration.
    pub const REGISTER: &str = "user.register";
    /// An operator created a user (`tessera user create`).
    pub const CREATE_USER: &str = "user.create";
    /// A password login (JSON, hosted page, OAuth password grant): success or failure.
    pub const LOGIN: &str = "user.login";
    /// A session ended by its user logging out (one entry per session).
    pub const LOGOUT: &str = "user.logout";
    /// A session ended for another reason (the reason code says which).
    pub const REVOKE_SESSION: &str = "session.revoke";
    /// A rotated refresh token presented again: its session is revoked.
    pub const REFRESH_TOKEN_REUSE: &str = "refresh_token.reuse";
    /// An authorization code presented twice: the tokens issued from it are revoked.
    pub const AUTHORIZATION_CODE_REUSE: &str = "authorization_code.reuse";
    pub const CHANGE_PASSWORD: &str = "user.password_change";
    pub const REQUEST_PASSWORD_RESET: &str = "user.password_reset_request";
    pub const RESET_PASSWORD: &str = "user.password_reset";
    pub const VERIFY_EMAIL: &str = "user.email_verify";
    pub const DEACTIVATE_USER: &str = "user.deactivate";
    pub const REACTIVATE_USER: &str = "user.reactivate";
    /// An operator changed a user's email, verification, roles or profile.
    pub const UPDATE_USER: &str = "user.update";
    /// An operator erased a user; the target is the pseudonym that replaced the id.
    pub const DELETE_USER: &str = "user.delete";
    /// An operator ended all of a user's sessions.
    pub const REVOKE_USER_SESSIONS: &str = "user.sessions_revoke";
    /// Parked events or webhook deliveries were put back in their queue.
    pub const RETRY_PARKED: &str = "events.retry_parked";
    /// A test event was sent to a webhook.
    pub const TEST_WEBHOOK: &str = "webhook.test";
    pub const CREATE_CLIENT: &str = "client.create";
    pub const UPDATE_CLIENT: &str = "client.update";
    pub const ROTATE_CLIENT_SECRET: &str = "client.rotate_secret";
    pub const DEACTIVATE_CLIENT: &str = "client.deactivate";
    /// A new signing key became current (`tessera keys rotate`, first start, algorithm change).
    pub const ROTATE_KEY: &str = "key.rotate";
    /// A key published ahead of use (scheduled rotation).
    pub const SCHEDULE_KEY: &str = "key.schedule";
    /// A published key made current.
    pub const PROMOTE_KEY: &str = "key.promote";
    /// A key withdrawn in an emergency.
    pub const REVOKE_KEY: &str = "key.revoke";
    /// The master key changed: every secret re-sealed.
    pub const ROTATE_MASTER_KEY: &str = "master_key.rotate";
    /// Repeated failed logins locked an account (for one IP, or account-wide).
    pub const LOCK_ACCOUNT: &str = "user.lock";
    /// A second factor presented at sign-in (audited when it fails; success is the login).
    pub const MFA_CHALLENGE: &str = "mfa.challenge";
    pub const ENROL_MFA: &str = "mfa.enrol";
    pub const REMOVE_MFA: &str = "mfa.remove";
    pub const USE_RECOVERY_CODE: &str = "mfa.recovery_code_use";
    pub const REGENERATE_RECOVERY_CODES: &str = "mfa.recovery_codes_regenerate";
    pub const CREATE_WEBHOOK: &str = "webhook.create";
    pub const DELETE_WEBHOOK: &str = "webhook.delete";
    /// Old entries were deleted by the retention purge.
    pub const PURGE: &str = "audit.purge";
    pub const CREATE_TENANT: &str = "tenant.create";
    pub const UPDATE_TENANT: &str = "tenant.update";
    pub const DELETE_TENANT: &str = "tenant.delete";
    pub const SUSPEND_TENANT: &str = "tenant.suspend";
    pub const REACTIVATE_TENANT: &str = "tenant.reactivate";
    /// Deleted tenants removed for good (`tessera tenants purge`).
    pub const PURGE_TENANTS: &str = "tenant.purge";
    /// A token pair was issued for another tenant of the user.
    pub const SWITCH_TENANT: &str = "tenant.switch";
    pub const CHANGE_MEMBER_ROLES: &str = "member.roles_change";
    /// A member was removed, or left (`reason`: `removed` / `left`).
    pub const REMOVE_MEMBER: &str = "member.remove";
    /// A member joined: by invitation (`reason`: `invitation`) or by a verified domain
    /// (`domain`).
    pub const ADD_MEMBER: &str = "member.add";
    pub const INVITE_MEMBER: &str = "invitation.create";
    pub const REVOKE_INVITATION: &str = "invitation.revoke";
    pub const PUT_ROLE: &str = "role.put";
    pub const DELETE_ROLE: &str = "role.delete";
    pub const ADD_PERMISSION: &str = "permission.add";
    pub const CREATE_API_KEY: &str = "api_key.create";
    pub const ROTATE_API_KEY: &str = "api_key.rotate";
    pub const REVOKE_API_KEY: &str = "api_key.revoke";
    /// An enterprise tenant's allow-list, plan overrides, domains or type changed.
    pub const CREATE_IDP: &str = "idp.create";
    pub const UPDATE_IDP: &str = "idp.update";
    pub const DELETE_IDP: &str = "idp.delete";
    /// An upstream identity joined to an account (`reason`: how ownership was shown).
    pub const LINK_IDENTITY: &str = "identity.link";
    pub const UNLINK_IDENTITY: &str = "identity.unlink";
    pub const CHANGE_TENANT_POLICY: &str = "tenant.policy_change";
}

/// Who makes an operator change (authorized through [`crate::authz`], recorded in the audit log
/// as its actor) and the request it came in (IP, user agent, correlation id).
#[derive(Debug, Clone, Copy)]
pub struct By<'a> {
    pub principal: &'a Principal,
    pub ctx: &'a RequestContext,
}

impl<'a> By<'a> {
    pub fn new(principal: &'a Principal, ctx: &'a RequestContext) -> Self {
        Self { principal, ctx }
    }

    /// The operator at the command line: actor `system`, no request.
    pub fn system(ctx: &'a RequestContext) -> Self {
        static SYSTEM: Principal = Principal::System;
        Self {
            principal: &SYSTEM,
            ctx,
        }
    }

    pub fn actor(&self) -> Actor<'a> {
        self.principal.actor()
    }
}

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor<'a> {
    /// A user, by id (also the claimed account of a failed login).
    User(&'a str),
    /// An OAuth client, by client id.
    Client(&'a str),
    /// A tenant's API key, by key id.
    ApiKey(&'a str),
    /// Tessera itself or an operator at the command line.
    System,
    /// Nobody known: a login naming no account, a replayed token.
    None,
}

impl Actor<'_> {
    fn parts(&self) -> (&'static str, Option<&str>) {
        match self {
            Actor::User(id) => ("user", Some(id)),
            Actor::Client(id) => ("client", Some(id)),
            Actor::ApiKey(id) => ("api_key", Some(id)),
            Actor::System => ("system", None),
            Actor::None => ("none", None),
        }
    }
}

/// One entry to record.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub actor: Actor<'a>,
    pub action: &'static str,
    /// `(type, id)`: `("user", id)`, `("session", id)`, `("client", id)`, `("key", kid)`, …
    pub target: Option<(&'static str, &'a str)>,
    pub success: bool,
    /// A reason code, such as `invalid_password` or `logout`. Never text from a request.
    pub reason: Option<&'a str>,
    /// The tenant it happened in.
    pub tenant: Option<&'a str>,
}

impl<'a> Entry<'a> {
    pub fn success(actor: Actor<'a>, action: &'static str) -> Self {
        Self {
            actor,
            action,
            target: None,
            success: true,
            reason: None,
            tenant: None,
        }
    }

    pub fn failure(actor: Actor<'a>, action: &'static str, reason: &'a str) -> Self {
        Self {
            actor,
            action,
            target: None,
            success: false,
            reason: Some(reason),
            tenant: None,
        }
    }

    pub fn target(mut self, kind: &'static str, id: &'a str) -> Self {
        self.target = Some((kind, id));
        self
    }

    pub fn tenant(mut self, tenant_id: &'a str) -> Self {
        self.tenant = Some(tenant_id);
        self
    }

    pub fn reason(mut self, reason: &'a str) -> Self {
        self.reason = Some(reason);
        self
    }
}

/// Appends `entry` with the request's IP, user agent, correlation id and trace id. Pass `&mut **tx` to
/// write inside a transaction (the usual case), or the pool for a refusal that changes nothing.
pub async fn record<'e>(
    db: impl Executor<'e, Database = Any>,
    ctx: &RequestContext,
    entry: &Entry<'_>,
    now: i64,
) -> Result<()> {
    let (actor_type, actor_id) = entry.actor.parts();
    store_audit::insert(
        db,
        &NewAuditRow {
            occurred_at: now,
            actor_type,
            actor_id,
            action: entry.action,
            target_type: entry.target.map(|(kind, _)| kind),
            target_id: entry.target.map(|(_, id)| id),
            result: if entry.success { "success" } else { "failure" },
            reason: entry.reason,
            ip: ctx.ip.as_deref(),
            user_agent: ctx.user_agent.as_deref(),
            correlation_id: &ctx.correlation_id,
            trace_id: ctx.trace.as_ref().map(|t| t.trace_id.as_str()),
            tenant_id: entry.tenant,
        },
    )
    .await?;
    Ok(())
}

/// Who ended a session and under which action, by the revocation's reason code: the user for
/// what they asked for (logging out, ending a session, changing or resetting their password),
/// Tessera for consequences recorded elsewhere (reuse detection, deactivation, …).
pub fn session_revocation(
    user_id: &str,
    reason: crate::sessions::RevocationReason,
) -> (Actor<'_>, &'static str) {
    use crate::sessions::RevocationReason as R;
    match reason {
        R::Logout | R::LogoutAll => (Actor::User(user_id), action::LOGOUT),
        R::RevokedByUser | R::PasswordChanged | R::PasswordReset | R::AccountReclaimed => {
            (Actor::User(user_id), action::REVOKE_SESSION)
        }
        R::UserDeactivated
        | R::RefreshTokenReuse
        | R::AuthorizationCodeReuse
        | R::RevokedByClient
        | R::RevokedByAdmin
        | R::UserDeleted => (Actor::System, action::REVOKE_SESSION),
    }
}

/// An audit entry as operators see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditView {
    /// The cursor: entries are listed in increasing id order.
    pub id: i64,
    pub occurred_at: String,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub result: String,
    pub reason: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub correlation_id: String,
    /// The W3C trace id of the request, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
}

/// One page of audit entries and the cursor of the next (none on the last page).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditView>,
    pub next_cursor: Option<String>,
}

impl From<AuditRow> for AuditView {
    fn from(r: AuditRow) -> Self {
        Self {
            id: r.id,
            occurred_at: rfc3339(r.occurred_at),
            actor_type: r.actor_type,
            actor_id: r.actor_id,
            action: r.action,
            target_type: r.target_type,
            target_id: r.target_id,
            result: r.result,
            reason: r.reason,
            ip: r.ip,
            user_agent: r.user_agent,
            correlation_id: r.correlation_id,
            trace_id: r.trace_id,
            tenant_id: r.tenant_id,
        }
    }
}

/// Filters of a listing, as given by an operator (`GET /admin/audit`, `tessera audit list`)
/// or a tenant administrator (`GET /tenants/{id}/audit`), from the query string.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Filter {
    /// The actor's id (a user id or client id).
    pub actor: Option<String>,
    pub action: Option<String>,
    /// The target's id.
    pub target: Option<String>,
    /// `success` or `failure`.
    pub result: Option<String>,
    /// RFC 3339 or Unix seconds, inclusive.
    pub from: Option<String>,
    /// RFC 3339 or Unix seconds, exclusive.
    pub to: Option<String>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
    pub limit: Option<i64>,
}

/// A time bound: RFC 3339 (`2026-05-01T00:00:00Z`) or Unix seconds.
pub fn parse_time(field: &str, value: &str) -> Result<i64> {
    if let Ok(secs) = value.parse::<i64>() {
        return Ok(secs);
    }
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| Error::invalid(field, "must be an RFC 3339 time or Unix seconds"))
}

/// A page of entries matching `filter`, oldest first, and the cursor of the next page.
pub async fn list(
    store: &Store,
    principal: &Principal,
    filter: &Filter,
) -> Result<(Vec<AuditView>, Option<String>)> {
    crate::authz::require(principal, crate::authz::Permission::ReadAuditLog)?;
    list_in(store, filter, None).await
}

/// [`list`] without the authorization check, limited to `tenant` when given (the caller has
/// checked `audit:read` in that tenant: `GET /tenants/{id}/audit`).
pub async fn list_in(
    store: &Store,
    filter: &Filter,
    tenant: Option<&str>,
) -> Result<(Vec<AuditView>, Option<String>)> {
    fn nonempty(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|s| !s.is_empty())
    }
    let result = nonempty(&filter.result);
    if result.is_some_and(|r| r != "success" && r != "failure") {
        return Err(Error::invalid("result", "must be success or failure"));
    }
    for (field, v) in [
        ("actor", &filter.actor),
        ("action", &filter.action),
        ("target", &filter.target),
    ] {
        if v.as_deref().is_some_and(|s| s.len() > 200) {
            return Err(Error::invalid(field, "must be at most 200 characters long"));
        }
    }
    let after = match nonempty(&filter.after) {
        None => 0,
        Some(c) => c
            .parse::<i64>()
            .map_err(|_| Error::invalid("after", "must be a cursor from next_cursor"))?,
    };
    let from = nonempty(&filter.from)
        .map(|v| parse_time("from", v))
        .transpose()?;
    let to = nonempty(&filter.to)
        .map(|v| parse_time("to", v))
        .transpose()?;
    let limit = filter.limit.unwrap_or(100).clamp(1, 1000);
    let rows = store_audit::list(
        store.pool(),
        &AuditQuery {
            actor_id: nonempty(&filter.actor),
            action: nonempty(&filter.action),
            target_id: nonempty(&filter.target),
            result,
            from,
            to,
            after,
            limit,
            tenant_id: tenant,
        },
    )
    .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    Ok((rows.into_iter().map(Into::into).collect(), next))
}

/// Deletes the entries older than `retention_days` (0 keeps everything) and, when any went,
/// records that it did. Returns how many were deleted.
pub async fn purge(
    store: &Store,
    retention_days: u32,
    ctx: &RequestContext,
    now: i64,
) -> Result<u64> {
    if retention_days == 0 {
        return Ok(0);
    }
    let before = now - i64::from(retention_days) * 24 * 3600;
    let mut tx = store.begin().await?;
    let n = store_audit::purge(&mut *tx, before).await?;
    if n > 0 {
        let entry = Entry::success(Actor::System, action::PURGE).reason("retention");
        record(&mut *tx, ctx, &entry, now).await?;
    }
    tx.commit().await?;
    Ok(n)
}

/// The retention job of `tessera serve`: purges once at start and then every
/// `TESSERA_AUDIT__PURGE_INTERVAL_SECS`.
pub async fn run_purge(state: crate::core::Core) {
    let cfg = state.config.audit.clone();
    if cfg.retention_days == 0 {
        return;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(cfg.purge_interval_secs));
    loop {
        tick.tick().await;
        let ctx = RequestContext::system();
        match purge(&state.store, cfg.retention_days, &ctx, state.clock.now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deleted = n,
                retention_days = cfg.retention_days,
                "audit log purged"
            ),
            Err(e) => tracing::warn!(error = ?e, "purging the audit log failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_unix_seconds() {
        assert_eq!(parse_time("from", "1800000000").unwrap(), 1_800_000_000);
        assert_eq!(
            parse_time("from", "2027-01-15T08:00:00Z").unwrap(),
            1_800_000_000
        );
        assert_eq!(
            parse_time("to", "2027-01-15T09:00:00+01:00").unwrap(),
            1_800_000_000
        );
        assert!(parse_time("from", "yesterday").is_err());
    }

    #[test]
    fn session_revocations_name_the_user_only_for_what_they_asked() {
        use crate::sessions::RevocationReason as R;
        assert_eq!(
            session_revocation("u1", R::Logout),
            (Actor::User("u1"), action::LOGOUT)
        );
        assert_eq!(
            session_revocation("u1", R::LogoutAll),
            (Actor::User("u1"), action::LOGOUT)
        );
        assert_eq!(
            session_revocation("u1", R::PasswordChanged),
            (Actor::User("u1"), action::REVOKE_SESSION)
        );
        assert_eq!(
            session_revocation("u1", R::RefreshTokenReuse),
            (Actor::System, action::REVOKE_SESSION)
        );
        assert_eq!(
            session_revocation("u1", R::UserDeactivated),
            (Actor::System, action::REVOKE_SESSION)
        );
        for reason in R::ALL {
            assert_eq!(reason.as_str().parse(), Ok(reason), "round trip");
        }
        assert_eq!("nonsense".parse::<R>(), Err(()));
    }
}
