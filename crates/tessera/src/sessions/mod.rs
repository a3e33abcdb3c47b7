//! Sessions and tokens: a login starts a session (one device) with a refresh-token family;
//! refreshing rotates the token; presenting a rotated token again after the grace window is
//! reuse and ends the whole session. Access tokens carry the session id (`sid`), and
//! [`SessionCache`] lets a revocation take effect on them at once.

use std::time::Duration;

use serde::Serialize;

use crate::audit::{self, Actor, Entry};
use crate::authz::{self, Permission, Principal, Role};
use crate::context::RequestContext;
use crate::crypto::{REFRESH_TOKEN_PREFIX, new_token, token_hash};
use crate::error::{Error, Result};
use crate::events::{self, LoginSucceededV1, SessionRevokedV1};
use crate::keys::Keys;
use crate::keys::jwt::AccessClaims;
use crate::shared::{Invalidation, Shared};
use crate::store::Store;
use crate::store::sessions::{self as store_sessions, NewSession, Session};

/// The pseudo-client of first-party logins (`client_id` claim, RFC 9068 §2.2).
pub const FIRST_PARTY_CLIENT: &str = "tessera";

/// Why a session ended: stored in `sessions.revoked_reason`, carried by `SessionRevokedV1`,
/// and deciding the audit actor (see [`audit::session_revocation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationReason {
    /// The user logged out (this session), or the RP-initiated logout of OIDC ended it.
    Logout,
    /// The user logged out everywhere.
    LogoutAll,
    /// The user ended this session from their session list.
    RevokedByUser,
    /// The user changed their password (their other sessions end).
    PasswordChanged,
    /// The password was reset through an emailed link.
    PasswordReset,
    /// An operator or the CLI deactivated the user.
    UserDeactivated,
    /// A rotated-out refresh token was presented (RFC 9700 §4.14.2).
    RefreshTokenReuse,
    /// An authorization code was redeemed twice (RFC 6749 §4.1.2).
    AuthorizationCodeReuse,
    /// The OAuth client revoked the session's refresh token (RFC 7009 §2.1).
    RevokedByClient,
    /// An administrator ended the user's sessions (`DELETE /admin/users/{id}/sessions`).
    RevokedByAdmin,
    /// The account was erased (`DELETE /admin/users/{id}`).
    UserDeleted,
    /// The holder of the account's never-verified address proved it by an emailed link while
    /// linking an upstream identity: whatever was set up before is removed (docs/federation.md).
    AccountReclaimed,
}

impl RevocationReason {
    pub const ALL: [Self; 12] = [
        Self::Logout,
        Self::LogoutAll,
        Self::RevokedByUser,
        Self::PasswordChanged,
        Self::PasswordReset,
        Self::UserDeactivated,
        Self::RefreshTokenReuse,
        Self::AuthorizationCodeReuse,
        Self::RevokedByClient,
        Self::RevokedByAdmin,
        Self::UserDeleted,
        Self::AccountReclaimed,
    ];

    /// The code at the store and wire boundaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::LogoutAll => "logout_all",
            Self::RevokedByUser => "revoked_by_user",
            Self::PasswordChanged => "password_changed",
            Self::PasswordReset => "password_reset",
            Self::UserDeactivated => "user_deactivated",
            Self::RefreshTokenReuse => "refresh_token_reuse",
            Self::AuthorizationCodeReuse => "authorization_code_reuse",
            Self::RevokedByClient => "revoked_by_client",
            Self::RevokedByAdmin => "revoked_by_admin",
            Self::UserDeleted => "user_deleted",
            Self::AccountReclaimed => "account_reclaimed",
        }
    }
}

impl std::str::FromStr for RevocationReason {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        Self::ALL.into_iter().find(|r| r.as_str() == s).ok_or(())
    }
}

/// Token lifetimes and names, from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: i64,
    pub refresh_ttl: i64,
    pub max_age: i64,
    pub reuse_grace: i64,
}

impl Settings {
    pub fn from_config(cfg: &crate::Config) -> Self {
        Self {
            issuer: cfg.issuer.clone(),
            audience: cfg.audience().to_string(),
            access_ttl: cfg.access_token_ttl as i64,
            refresh_ttl: cfg.refresh_token_ttl as i64,
            max_age: cfg.session_max_age as i64,
            reuse_grace: cfg.refresh_reuse_grace as i64,
        }
    }
}

/// The token response of login and refresh.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub refresh_token: String,
    pub refresh_expires_in: i64,
}

/// Who the user is, for signing.
pub struct Subject<'a> {
    pub user_id: &'a str,
    /// Roles for the token: only first-party tokens carry them.
    pub roles: Vec<Role>,
    pub email_verified: bool,
    /// The active tenant and the user's roles there.
    pub tenant_id: Option<String>,
    pub tenant_roles: Vec<String>,
    /// How the user proved who they are (RFC 8176, space-separated), for the `amr` claim.
    pub amr: Option<&'a str>,
}

/// What a token family was granted: to which client, which scopes, for which audience.
/// `Grant::default()` is a first-party login.
#[derive(Debug, Clone, Copy, Default)]
pub struct Grant<'a> {
    /// The OAuth client; `None` for first-party logins (`client_id` claim `tessera`).
    pub client_id: Option<&'a str>,
    pub scope: Option<&'a str>,
    /// `aud` of the access tokens; `None` for the configured audience.
    pub audience: Option<&'a str>,
}

/// A new session id (UUID v7: sessions sort by creation).
pub fn new_session_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Opens a session row in `tx`, with its first refresh token when `refresh_expires_at` is given
/// (returned raw; only its hash is stored). Every path that starts a session comes here: JSON
/// login ([`start`]), the hosted pages' browser session and OAuth token families.
pub async fn open_in(
    tx: &mut crate::store::Tx,
    new: &NewSession<'_>,
    refresh_expires_at: Option<i64>,
) -> Result<Option<String>> {
    store_sessions::insert_session(tx, new).await?;
    let Some(refresh_expires_at) = refresh_expires_at else {
        return Ok(None);
    };
    let token = new_token(REFRESH_TOKEN_PREFIX);
    store_sessions::insert_refresh_token(
        tx,
        &token_hash(&token),
        new.id,
        new.now,
        refresh_expires_at,
    )
    .await?;
    Ok(Some(token))
}

/// Why a first-party session starts.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    /// A sign-in (`method`: see [`login_method`]): `LoginSucceededV1` and a `user.login` audit
    /// entry.
    Login { method: &'a str },
    /// A switch to another tenant from session `from`: a `tenant.switch` audit entry.
    Switch { from: &'a str },
}

/// Starts a first-party session for an authenticated user and issues its first token pair.
pub async fn start(
    store: &Store,
    keys: &Keys,
    settings: &Settings,
    subject: Subject<'_>,
    how: Start<'_>,
    ctx: &RequestContext,
    now: i64,
) -> Result<TokenPair> {
    let session_id = new_session_id();
    let expires_at = now + settings.max_age;
    let refresh_expires_at = (now + settings.refresh_ttl).min(expires_at);
    let mut tx = store.begin().await?;
    // A switch is the same sign-in in another tenant: it keeps when and how the user proved who
    // they are, so that switching never makes a sign-in look recent (see `mfa::require_recent`).
    let (auth_time, amr) = match how {
        Start::Login { .. } => (now, subject.amr.map(str::to_string)),
        Start::Switch { from } => crate::store::sessions::authentication_of(&mut *tx, from)
            .await?
            .ok_or_else(Error::invalid_token)?,
    };
    let subject = Subject {
        amr: amr.as_deref(),
        ..subject
    };
    let refresh_token = open_in(
        &mut tx,
        &NewSession {
            id: &session_id,
            user_id: subject.user_id,
            now,
            expires_at,
            user_agent: ctx.user_agent.as_deref(),
            ip: ctx.ip.as_deref(),
            client_id: None,
            scope: None,
            audience: None,
            parent_id: None,
            auth_time: Some(auth_time),
            browser_token_hash: None,
            tenant_id: subject.tenant_id.as_deref(),
            amr: subject.amr,
        },
        Some(refresh_expires_at),
    )
    .await?
    .ok_or_else(|| Error::internal(anyhow::anyhow!("no refresh token issued")))?;
    match how {
        Start::Login { method } => {
            record_login(&mut tx, subject.user_id, &session_id, method, ctx, now).await?
        }
        Start::Switch { from } => {
            let entry = Entry::success(Actor::User(subject.user_id), audit::action::SWITCH_TENANT)
                .target("session", from)
                .tenant(subject.tenant_id.as_deref().unwrap_or_default());
            audit::record(&mut *tx, ctx, &entry, now).await?;
        }
    }
    tx.commit().await?;
    let claims = access_claims(settings, &subject, Some(&session_id), Grant::default(), now);
    pair(
        keys,
        settings,
        &claims,
        refresh_token,
        refresh_expires_at,
        now,
    )
}

/// How a sign-in went, as `LoginSucceededV1.method` says it: `federated:NAME` through upstream
/// provider `via`, else `passkey` for a passkey alone, else `password`.
pub fn login_method(amr: &str, via: Option<&str>) -> String {
    let has = |m: &str| amr.split_whitespace().any(|x| x == m);
    match via {
        Some(provider) => format!("federated:{provider}"),
        None if !has("pwd") && (has("hwk") || has("swk")) => "passkey".into(),
        None => "password".into(),
    }
}

/// Records a successful sign-in (JSON, hosted page, OAuth password grant, passkey or upstream
/// provider) in the transaction that starts its session: the audit entry and
/// `LoginSucceededV1`, the same for every path.
pub async fn record_login(
    tx: &mut crate::store::Tx,
    user_id: &str,
    session_id: &str,
    method: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    let kind = match method.split(':').next() {
        Some("federated") => "federated",
        Some("passkey") => "passkey",
        _ => "password",
    };
    crate::metrics::login(kind, "success");
    let entry = Entry::success(Actor::User(user_id), audit::action::LOGIN).target("user", user_id);
    audit::record(&mut **tx, ctx, &entry, now).await?;
    let event = LoginSucceededV1 {
        user_id: user_id.to_string(),
        session_id: session_id.to_string(),
        ip: ctx.ip.clone(),
        user_agent: ctx.user_agent.clone(),
        method: method.to_string(),
    };
    events::append(tx, ctx, &event, now).await
}

/// The claims of an access token for `subject` in session `sid` under `grant`.
pub fn access_claims(
    settings: &Settings,
    subject: &Subject<'_>,
    sid: Option<&str>,
    grant: Grant<'_>,
    now: i64,
) -> AccessClaims {
    AccessClaims {
        iss: settings.issuer.clone(),
        sub: subject.user_id.to_string(),
        aud: grant.audience.unwrap_or(&settings.audience).to_string(),
        exp: now + settings.access_ttl,
        iat: now,
        nbf: now,
        jti: uuid::Uuid::now_v7().to_string(),
        sid: sid.map(str::to_string),
        client_id: grant.client_id.unwrap_or(FIRST_PARTY_CLIENT).to_string(),
        scope: grant.scope.map(str::to_string),
        roles: authz::role_names(&subject.roles),
        email_verified: Some(subject.email_verified),
        tid: subject.tenant_id.clone(),
        tenant_roles: subject.tenant_roles.clone(),
        api_key: false,
        permissions: Vec::new(),
        amr: amr_claim(subject.amr),
        acr: crate::mfa::acr::claim(subject.amr),
    }
}

/// The `amr` claim of a session's stored methods.
pub fn amr_claim(amr: Option<&str>) -> Vec<String> {
    amr.unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn pair(
    keys: &Keys,
    settings: &Settings,
    claims: &AccessClaims,
    refresh_token: String,
    refresh_expires_at: i64,
    now: i64,
) -> Result<TokenPair> {
    let access_token = keys.sign_access_token(claims).map_err(Error::Internal)?;
    Ok(TokenPair {
        access_token,
        token_type: "Bearer",
        expires_in: settings.access_ttl,
        refresh_token,
        refresh_expires_in: refresh_expires_at - now,
    })
}

/// A refresh token in the shape Tessera issues: prefix plus 43 base64url characters.
pub fn well_formed(token: &str) -> bool {
    crate::crypto::is_token_of(REFRESH_TOKEN_PREFIX, token)
}

enum Rotation {
    /// Rotated; the access token is signed after the commit, outside the write lock.
    Rotated {
        claims: Box<AccessClaims>,
        refresh_token: String,
        refresh_expires_at: i64,
    },
    Reused {
        session_id: String,
    },
}

/// Who presents a refresh token, and for what.
#[derive(Debug, Clone, Copy, Default)]
pub struct RefreshRequest<'a> {
    /// The authenticated OAuth client; `None` at the first-party `/auth/refresh`. A token of
    /// another client (or of a first-party session at the OAuth endpoint) is `invalid_grant`.
    pub client_id: Option<&'a str>,
    /// A narrower scope for this access token (RFC 6749 §6); must be within the granted scope.
    pub scope: Option<&'a str>,
    /// Whether the tokens may carry the user's roles: Tessera's own login or a first-party client.
    pub first_party: bool,
    /// Seconds a rotated-out token is still honoured (0: never; see [`refresh`]).
    pub reuse_grace: i64,
    /// Re-scope the session to this tenant (id or slug) of the user: the new tokens, and every
    /// later refresh of the family, are for it.
    pub tenant: Option<&'a str>,
}

/// Rotates a refresh token: the presented one stops working and a new pair is issued.
///
/// Presenting a rotated-out token again is reuse (RFC 9700 §4.14.2): the whole session (the
/// token family) is revoked and the call fails with `invalid_grant`. Only when a grace is
/// configured (`request.reuse_grace` > 0, at most 60 s; opt-in, since honouring a rotated-out
/// token surprises clients that expect strict rotation) is a token rotated less than that long
/// ago rotated again, issuing a sibling, and only while its successor has not been used; the
/// client must be the same either way.
pub async fn refresh(
    core: &crate::core::Core,
    refresh_token: &str,
    request: RefreshRequest<'_>,
    ctx: &RequestContext,
    now: i64,
) -> Result<TokenPair> {
    let (store, keys, cache, settings) = (&core.store, &core.keys, &core.sessions, &*core.settings);
    if !well_formed(refresh_token) {
        return Err(Error::invalid_grant());
    }
    let hash = token_hash(refresh_token);
    let mut tx = store.begin().await?;
    let ip = ctx.ip.as_deref();
    let outcome = rotate_in(core, &mut tx, &hash, request, ip, now).await;
    match outcome {
        Ok(Rotation::Rotated {
            claims,
            refresh_token,
            refresh_expires_at,
        }) => {
            tx.commit().await?;
            pair(
                keys,
                settings,
                &claims,
                refresh_token,
                refresh_expires_at,
                now,
            )
        }
        Ok(Rotation::Reused { session_id }) => {
            crate::metrics::refresh_token_reuse();
            let entry = Entry::failure(
                Actor::None,
                audit::action::REFRESH_TOKEN_REUSE,
                "refresh_token_reuse",
            )
            .target("session", &session_id);
            audit::record(&mut *tx, ctx, &entry, now).await?;
            revoke_in(
                &mut tx,
                &session_id,
                RevocationReason::RefreshTokenReuse,
                ctx,
                now,
            )
            .await?;
            tx.commit().await?;
            cache.mark_revoked(&session_id).await;
            tracing::warn!(session_id, "refresh token reuse detected: session revoked");
            Err(Error::invalid_grant())
        }
        Err(e) => Err(e),
    }
}

async fn rotate_in(
    core: &crate::core::Core,
    tx: &mut crate::store::Tx,
    hash: &str,
    request: RefreshRequest<'_>,
    ip: Option<&str>,
    now: i64,
) -> Result<Rotation> {
    let settings = &*core.settings;
    // Rotated first and decided on after, in this transaction: a refusal below rolls the
    // rotation back (the caller drops the transaction), so it costs one round trip, not three.
    let refresh_token = new_token(REFRESH_TOKEN_PREFIX);
    let refresh_hash = token_hash(&refresh_token);
    let Some((t, rotated)) = store_sessions::rotate_refresh_token(
        tx,
        hash,
        &refresh_hash,
        now,
        now + settings.refresh_ttl,
    )
    .await?
    else {
        return Err(Error::invalid_grant());
    };
    if t.client_id.as_deref() != request.client_id {
        return Err(Error::invalid_grant());
    }
    if t.session_revoked_at.is_some()
        || t.token_expires_at <= now
        || t.session_expires_at <= now
        || crate::store::users::AccountStatus::parse(&t.user_status)
            != crate::store::users::AccountStatus::Active
    {
        return Err(Error::invalid_grant());
    }
    let scope = match (request.scope, t.scope.as_deref()) {
        (Some(asked), Some(granted)) if crate::oauth::scope::is_subset(asked, granted) => {
            Some(asked)
        }
        (Some(_), _) => {
            return Err(Error::bad_request(
                crate::error::Code::InvalidScope,
                "the scope exceeds what was granted",
            ));
        }
        (None, granted) => granted,
    };
    let refresh_expires_at = (now + settings.refresh_ttl).min(t.session_expires_at);
    if !rotated {
        // Rotated before, by this request's twin or long ago. On PostgreSQL a concurrent
        // rotation that committed meanwhile shows up as `rotated == false` with `used_at` unset.
        let used_at = t.used_at.unwrap_or(now);
        let within_grace = request.reuse_grace > 0 && now - used_at <= request.reuse_grace;
        if !within_grace
            || store_sessions::successor_used(&mut **tx, &t.session_id, hash, used_at).await?
        {
            return Ok(Rotation::Reused {
                session_id: t.session_id,
            });
        }
        // Within the grace: a sibling of the successor (opt-in, see `refresh`).
        store_sessions::insert_refresh_token(
            tx,
            &refresh_hash,
            &t.session_id,
            now,
            refresh_expires_at,
        )
        .await?;
        store_sessions::touch_session(tx, &t.session_id, now).await?;
    }
    let roles = if request.first_party {
        t.roles.clone()
    } else {
        Vec::new()
    };
    // Re-scoping names a tenant of the user's: a tenant they are not in (or that does not
    // exist) is refused without touching the family, which stays usable for its tenant.
    let tenant_id = match request.tenant {
        Some(key) => {
            let row = crate::store::tenants::find_by_id_or_slug(&mut **tx, key)
                .await?
                .ok_or_else(crate::tenants::not_a_member)?;
            // Membership and status are checked below, with the family's own tenant; a refusal
            // rolls this back.
            if t.tenant_id.as_deref() != Some(row.id.as_str()) {
                store_sessions::set_tenant(tx, &t.session_id, &row.id).await?;
            }
            Some(row.id)
        }
        None => t.tenant_id.clone(),
    };
    // A session in a tenant refreshes only while the tenant is active, the user a member and
    // the caller's address on the tenant's allow-list; the new access token carries the roles
    // held now.
    // Read through the tenant and membership caches, as every request does: a change
    // invalidates them on every replica before it is answered.
    let tenant_roles = match &tenant_id {
        Some(tid) => {
            let tenant = crate::tenants::info_in(core, tx, tid).await?;
            let active = tenant
                .as_ref()
                .is_some_and(|t| t.status == crate::tenants::TenantStatus::Active);
            if let Some(tenant) = &tenant
                && !tenant.admits(ip)
            {
                return Err(crate::tenants::policy::ip_not_allowed());
            }
            // The tenant's MFA policy, turned on since: no more tokens from a weaker sign-in.
            if let Some(tenant) = &tenant
                && !crate::tenants::policy::admits_sign_in(
                    tenant,
                    Some(t.amr.as_deref().unwrap_or_default()),
                )
            {
                return Err(crate::tenants::policy::mfa_required());
            }
            let roles = crate::tenants::roles_in(core, tx, tid, &t.user_id).await?;
            match (roles, active) {
                (Some(roles), true) => roles.as_ref().clone(),
                // Asked for by name: say why, and keep the refresh token (nothing commits).
                (None, _) if request.tenant.is_some() => {
                    return Err(crate::tenants::not_a_member());
                }
                (Some(_), false) if request.tenant.is_some() => {
                    return Err(crate::tenants::suspended());
                }
                _ => return Err(Error::invalid_grant()),
            }
        }
        None => Vec::new(),
    };
    let subject = Subject {
        user_id: &t.user_id,
        roles,
        email_verified: t.email_verified_at.is_some(),
        tenant_id,
        tenant_roles,
        amr: t.amr.as_deref(),
    };
    let grant = Grant {
        client_id: t.client_id.as_deref(),
        scope,
        audience: t.audience.as_deref(),
    };
    let claims = access_claims(settings, &subject, Some(&t.session_id), grant, now);
    Ok(Rotation::Rotated {
        claims: Box::new(claims),
        refresh_token,
        refresh_expires_at,
    })
}

/// What proves the right to end a session at `/auth/logout`.
#[derive(Clone, Copy)]
pub enum LogoutWith<'a> {
    /// A bearer access token: its session ends; `all` ends every session of the user.
    Bearer(&'a Principal),
    /// A refresh token of Tessera's own login: its session ends.
    RefreshToken(&'a str),
}

/// `POST /auth/logout`. A refresh token counts only when it is live, unused and first-party;
/// presenting a rotated-out one is reuse (its family is revoked, as at refresh). Unknown,
/// expired and other clients' tokens change nothing, and the answer is the same. `all` needs a
/// bearer token.
pub async fn logout(
    store: &Store,
    cache: &SessionCache,
    with: LogoutWith<'_>,
    all: bool,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    match with {
        LogoutWith::Bearer(principal) => {
            let user = authz::require_user(principal, Permission::ManageOwnAccount)?;
            revoke(
                store,
                cache,
                &user.session_id,
                RevocationReason::Logout,
                ctx,
                now,
            )
            .await?;
            if all {
                revoke_all(
                    store,
                    cache,
                    &user.user_id,
                    None,
                    RevocationReason::LogoutAll,
                    ctx,
                    now,
                )
                .await?;
            }
            Ok(())
        }
        LogoutWith::RefreshToken(_) if all => Err(Error::Unauthenticated {
            code: crate::error::Code::Unauthenticated,
            message: "ending every session needs a bearer access token",
            bearer: true,
        }),
        LogoutWith::RefreshToken(token) => {
            if !well_formed(token) {
                return Ok(());
            }
            let Some(t) =
                store_sessions::find_refresh_token(store.pool(), &token_hash(token)).await?
            else {
                return Ok(());
            };
            let live = t.client_id.is_none()
                && t.session_revoked_at.is_none()
                && t.token_expires_at > now
                && t.session_expires_at > now;
            if !live {
                return Ok(());
            }
            if t.used_at.is_some() {
                crate::metrics::refresh_token_reuse();
                let mut tx = store.begin().await?;
                let entry = Entry::failure(
                    Actor::None,
                    audit::action::REFRESH_TOKEN_REUSE,
                    "refresh_token_reuse",
                )
                .target("session", &t.session_id);
                audit::record(&mut *tx, ctx, &entry, now).await?;
                revoke_in(
                    &mut tx,
                    &t.session_id,
                    RevocationReason::RefreshTokenReuse,
                    ctx,
                    now,
                )
                .await?;
                tx.commit().await?;
                cache.mark_revoked(&t.session_id).await;
                tracing::warn!(session_id = %t.session_id, "rotated-out refresh token at logout: session revoked");
                return Ok(());
            }
            revoke(
                store,
                cache,
                &t.session_id,
                RevocationReason::Logout,
                ctx,
                now,
            )
            .await
        }
    }
}

/// Revokes one session (idempotent), with its `SessionRevokedV1` event.
pub async fn revoke(
    store: &Store,
    cache: &SessionCache,
    session_id: &str,
    reason: RevocationReason,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    let mut tx = store.begin().await?;
    revoke_in(&mut tx, session_id, reason, ctx, now).await?;
    tx.commit().await?;
    cache.mark_revoked(session_id).await;
    Ok(())
}

/// Revokes one session in `tx` and records the event and audit entry when it was live.
pub(crate) async fn revoke_in(
    tx: &mut crate::store::Tx,
    session_id: &str,
    reason: RevocationReason,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    if let Some(user_id) =
        store_sessions::revoke_session(&mut **tx, session_id, reason.as_str(), now).await?
    {
        record_revocation(tx, &user_id, session_id, reason, ctx, now).await?;
        let event = SessionRevokedV1 {
            user_id,
            session_id: session_id.to_string(),
            reason: reason.as_str().to_string(),
        };
        events::append(tx, ctx, &event, now).await?;
    }
    Ok(())
}

/// The audit entry of one ended session (see [`audit::session_revocation`]).
async fn record_revocation(
    tx: &mut crate::store::Tx,
    user_id: &str,
    session_id: &str,
    reason: RevocationReason,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    let (actor, action) = audit::session_revocation(user_id, reason);
    let entry = Entry::success(actor, action)
        .target("session", session_id)
        .reason(reason.as_str());
    audit::record(&mut **tx, ctx, &entry, now).await
}

/// Revokes every session of `user_id` except `keep`, in `tx`, with one `SessionRevokedV1` each;
/// returns the revoked ids so the caller can mark them in the cache after commit.
pub async fn revoke_all_in(
    tx: &mut crate::store::Tx,
    user_id: &str,
    keep: Option<&str>,
    reason: RevocationReason,
    ctx: &RequestContext,
    now: i64,
) -> Result<Vec<String>> {
    let ids = store_sessions::revoke_user_sessions(tx, user_id, keep, reason.as_str(), now).await?;
    for id in &ids {
        record_revocation(tx, user_id, id, reason, ctx, now).await?;
        let event = SessionRevokedV1 {
            user_id: user_id.to_string(),
            session_id: id.clone(),
            reason: reason.as_str().to_string(),
        };
        events::append(tx, ctx, &event, now).await?;
    }
    Ok(ids)
}

/// Revokes every session of a user except `keep`.
pub async fn revoke_all(
    store: &Store,
    cache: &SessionCache,
    user_id: &str,
    keep: Option<&str>,
    reason: RevocationReason,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    let mut tx = store.begin().await?;
    let ids = revoke_all_in(&mut tx, user_id, keep, reason, ctx, now).await?;
    tx.commit().await?;
    cache.mark_all_revoked(&ids).await;
    Ok(())
}

/// A session as the API shows it: `GET /identity/sessions` (with `current`) and
/// `GET /admin/users/{id}/sessions`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub id: String,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub created_at: String,
    pub last_used_at: String,
    pub expires_at: String,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// Whether it is the caller's own session (only in the caller's own list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<bool>,
}

/// `{"sessions": […]}`: a user's live sessions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// `{"revoked": n}`: how many sessions a request ended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Revoked {
    pub revoked: usize,
}

impl SessionView {
    /// `s`, marked as current or not when `current` (the caller's session id) is given.
    pub fn new(s: Session, current: Option<&str>) -> Self {
        Self {
            current: current.map(|c| c == s.id),
            id: s.id,
            tenant_id: s.tenant_id,
            client_id: s.client_id,
            created_at: crate::clock::rfc3339(s.created_at),
            last_used_at: crate::clock::rfc3339(s.last_used_at),
            expires_at: crate::clock::rfc3339(s.expires_at),
            user_agent: s.user_agent,
            ip: s.ip,
        }
    }
}

/// The caller's own live sessions.
pub async fn list(store: &Store, principal: &Principal, now: i64) -> Result<Vec<Session>> {
    let caller = authz::require_user(principal, Permission::ReadOwnAccount)?;
    Ok(store_sessions::list_active_sessions(store.pool(), &caller.user_id, now).await?)
}

/// Revokes one of the user's own sessions; another user's session is "not found".
pub async fn revoke_own(
    store: &Store,
    cache: &SessionCache,
    principal: &Principal,
    session_id: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    let user_id = authz::require_user(principal, Permission::ManageOwnAccount)?
        .user_id
        .as_str();
    if session_id.len() > 64 {
        return Err(Error::NotFound);
    }
    match store_sessions::find_session(store.pool(), session_id).await? {
        Some(s) if s.user_id == user_id && s.revoked_at.is_none() => {
            revoke(
                store,
                cache,
                session_id,
                RevocationReason::RevokedByUser,
                ctx,
                now,
            )
            .await
        }
        _ => Err(Error::NotFound),
    }
}

/// Which sessions are live, without a database read per request.
///
/// A revocation takes effect at once here (`mark_revoked`) and, through [`Shared`], on every
/// other replica (Redis pub/sub). A session seen live is remembered for a few seconds; that
/// memory is not consulted while invalidations cannot arrive (see [`Shared::caches_trusted`]).
#[derive(Clone)]
pub struct SessionCache {
    live: crate::shared::Cache<i64>,
    revoked: moka::sync::Cache<String, ()>,
    shared: Shared,
}

impl SessionCache {
    pub fn new(access_ttl: i64, shared: &Shared) -> Self {
        Self {
            live: crate::shared::Cache::new(
                shared,
                100_000,
                Duration::from_secs(5),
                Invalidation::Session,
            ),
            revoked: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(access_ttl.max(1) as u64 + 60))
                .build(),
            shared: shared.clone(),
        }
    }

    /// Whether session `sid` is live at `now`.
    pub async fn is_live(&self, store: &Store, sid: &str, now: i64) -> Result<bool> {
        if self.revoked.contains_key(sid) {
            return Ok(false);
        }
        if let Some(expires_at) = self.live.get(sid) {
            return Ok(expires_at > now);
        }
        let Some(s) = store_sessions::find_session(store.pool(), sid).await? else {
            return Ok(false);
        };
        if s.revoked_at.is_some() {
            self.revoked.insert(sid.to_string(), ());
            return Ok(false);
        }
        self.live.insert(sid, s.expires_at);
        Ok(s.expires_at > now)
    }

    /// Marks `sid` revoked here and tells the other replicas.
    pub async fn mark_revoked(&self, sid: &str) {
        self.heard_revoked(sid);
        self.shared
            .publish(&Invalidation::Session(sid.to_string()))
            .await;
    }

    pub async fn mark_all_revoked(&self, sids: &[String]) {
        for sid in sids {
            self.mark_revoked(sid).await;
        }
    }

    /// A revocation made by another replica.
    pub fn heard_revoked(&self, sid: &str) {
        self.revoked.insert(sid.to_string(), ());
        self.live.forget(sid);
    }

    /// Forgets which sessions were seen live (after a gap in the invalidations).
    pub fn forget_live(&self) {
        self.live.forget_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_token_shape_is_checked_before_any_lookup() {
        let good = new_token(REFRESH_TOKEN_PREFIX);
        assert!(well_formed(&good));
        assert!(!well_formed(&good[..good.len() - 1]));
        assert!(!well_formed(&format!("{good}x")));
        assert!(!well_formed(&good.replace("tsr_", "xyz_")));
        assert!(!well_formed(&format!("tsr_{}", "é".repeat(21))));
        assert!(!well_formed(""));
    }
}
