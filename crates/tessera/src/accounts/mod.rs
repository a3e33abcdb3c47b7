//! Accounts: registration, login, the user's own view of themselves, their profile and password,
//! and operator-side creation for bootstrapping (`tessera user create`).

pub mod admin;
pub mod profile;
pub mod recovery;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::abuse::{Class, Outcome};
use crate::audit::{self, Actor, Entry, action};
use crate::authz::{self, Permission, Principal, Role, role_names};
use crate::clock::rfc3339;
use crate::context::RequestContext;
use crate::core::Core;
use crate::error::{Error, FieldError, Result};
use crate::events::{
    self, AccountLockedV1, LoginFailedV1, PasswordChangedV1, UserDeactivatedV1, UserRegisteredV1,
};
use crate::passwords::Verification;
use crate::sessions::{self, Subject, TokenPair};
use crate::store::users::{self, NewUser, User};
use crate::store::{Store, is_unique_violation};

/// A user as the API shows it (never the hash).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub email_verified: bool,
    pub roles: Vec<String>,
    pub status: String,
    pub created_at: String,
}

impl UserView {
    /// The view of `u`, who holds `roles`.
    pub fn new(u: &User, roles: &[Role]) -> Self {
        Self {
            id: u.id.clone(),
            email: u.email.clone(),
            email_verified: u.email_verified_at.is_some(),
            roles: role_names(roles),
            status: u.status.clone(),
            created_at: rfc3339(u.created_at),
        }
    }
}

/// Checks the shape of an email address: one `@`, a non-empty local part of at most 64
/// characters, a domain without spaces, 254 characters at most overall. Deliverability is
/// proven by verification, not by syntax.
pub fn validate_email(field: &str, email: &str) -> Result<String> {
    let email = email.trim();
    let bad = |m: &str| Err(Error::Validation(vec![FieldError::new(field, m)]));
    if email.is_empty() {
        return bad("is required");
    }
    if email.chars().count() > 254 {
        return bad("must be at most 254 characters long");
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return bad("must be an email address");
    };
    if local.is_empty() || local.chars().count() > 64 || local.contains('@') {
        return bad("must be an email address");
    }
    if domain.is_empty()
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return bad("must be an email address with a valid domain");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain spaces or control characters");
    }
    // Addresses are compared lower-cased. A character outside ASCII whose lower case is ASCII
    // (the Kelvin sign U+212A becomes `k`, U+0130 becomes `i` + a combining dot) would make
    // this address collide with an ASCII one: someone could squat or take over mail for it.
    if email
        .chars()
        .any(|c| !c.is_ascii() && c.to_lowercase().any(|l| l.is_ascii()))
    {
        return bad("must not contain characters that lower-case to ASCII letters");
    }
    Ok(email.to_string())
}

/// Checks an optional short text field: at most `max` characters, no control characters.
pub fn validate_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.chars().count() > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} characters long"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

pub struct Registration {
    pub email: String,
    pub password: String,
    pub display_name: Option<String>,
}

/// Registers a user and asks for a verification email, in one transaction with the
/// `UserRegisteredV1` and `EmailVerificationRequestedV1` events. A taken email is a 409
/// `email_taken`.
#[tracing::instrument(skip_all)]
pub async fn register(
    state: &Core,
    input: Registration,
    ctx: &RequestContext,
    now: i64,
) -> Result<User> {
    let mut errors = Vec::new();
    let email = validate_email("email", &input.email)
        .map_err(|e| collect(&mut errors, e))
        .ok();
    let _ = state
        .passwords
        .check_policy("password", &input.password, Some(&input.email))
        .map_err(|e| collect(&mut errors, e));
    if let Some(name) = &input.display_name {
        let _ = validate_text("display_name", name, 100).map_err(|e| collect(&mut errors, e));
    }
    let Some(email) = email.filter(|_| errors.is_empty()) else {
        return Err(Error::Validation(errors));
    };
    let hash = state.passwords.hash(&input.password).await?;
    let new = NewUser {
        id: &uuid::Uuid::now_v7().to_string(),
        email: &email,
        email_verified_at: None,
        password_hash: Some(&hash),
        display_name: input.display_name.as_deref(),
        now,
    };
    let mut tx = state.store.begin().await?;
    let user = insert_in(&mut tx, &new, "self", ctx).await?;
    let entry = Entry::success(Actor::User(&user.id), action::REGISTER).target("user", &user.id);
    audit::record(&mut *tx, ctx, &entry, now).await?;
    recovery::request_verification_in(&mut tx, state, &user, ctx, now).await?;
    tx.commit().await?;
    Ok(user)
}

/// Inserts the user and its `UserRegisteredV1` event in `tx`.
async fn insert_in(
    tx: &mut crate::store::Tx,
    new: &NewUser<'_>,
    source: &str,
    ctx: &RequestContext,
) -> Result<User> {
    match users::insert(tx, new).await {
        Ok(()) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::Conflict {
                code: crate::error::Code::EmailTaken,
                message: "an account with this email already exists",
            });
        }
        Err(e) => return Err(e.into()),
    }
    let event = UserRegisteredV1 {
        user_id: new.id.to_string(),
        email: new.email.to_string(),
        email_verified: new.email_verified_at.is_some(),
        source: source.to_string(),
    };
    events::append(tx, ctx, &event, new.now).await?;
    let personal = crate::tenants::create_personal_in(tx, new.id, ctx, new.now).await?;
    Ok(User {
        id: new.id.to_string(),
        email: new.email.to_string(),
        email_verified_at: new.email_verified_at,
        password_hash: None,
        status: users::AccountStatus::Active.as_str().into(),
        created_at: new.now,
        updated_at: new.now,
        last_tenant_id: None,
        personal_tenant_id: Some(personal),
        second_factors: 0,
    })
}

/// Creates the account of a first sign-in at an upstream provider (just in time, see
/// [`crate::federation::signin::resolve`]) in `tx`: the address as the upstream verified it,
/// no password (`UserRegisteredV1` with source `federated`).
pub(crate) async fn create_federated_in(
    tx: &mut crate::store::Tx,
    email: &str,
    display_name: Option<&str>,
    ctx: &RequestContext,
    now: i64,
) -> Result<User> {
    let id = uuid::Uuid::now_v7().to_string();
    let new = NewUser {
        id: &id,
        email,
        email_verified_at: Some(now),
        password_hash: None,
        display_name,
        now,
    };
    let user = insert_in(tx, &new, "federated", ctx).await?;
    let entry = Entry::success(Actor::User(&user.id), action::REGISTER).target("user", &user.id);
    audit::record(&mut **tx, ctx, &entry, now).await?;
    Ok(user)
}

fn collect(errors: &mut Vec<FieldError>, e: Error) {
    if let Error::Validation(mut v) = e {
        errors.append(&mut v);
    }
}

/// Inserts a user with its profile (operator-side: no verification email);
/// `email_taken` on a duplicate (case-insensitive).
pub async fn create(
    store: &Store,
    email: &str,
    password_hash: Option<&str>,
    email_verified_at: Option<i64>,
    roles: &[Role],
    display_name: Option<&str>,
    now: i64,
) -> Result<User> {
    let id = uuid::Uuid::now_v7().to_string();
    let mut tx = store.begin().await?;
    let new = NewUser {
        id: &id,
        email,
        email_verified_at,
        password_hash,
        display_name,
        now,
    };
    let ctx = RequestContext::system();
    let user = insert_in(&mut tx, &new, "operator", &ctx).await?;
    for role in roles {
        crate::store::roles::grant(&mut *tx, &user.id, *role, now).await?;
    }
    let entry = Entry::success(Actor::System, action::CREATE_USER).target("user", &user.id);
    audit::record(&mut *tx, &ctx, &entry, now).await?;
    tx.commit().await?;
    Ok(user)
}

/// Checks email and password. Wrong password, unknown email and deactivated account give the
/// same `invalid_credentials`, and each costs one password verification and one small write
/// (the `LoginFailedV1` event). A stored hash that is bcrypt or weaker than the configured
/// parameters is replaced on success. With `require_verified_email`, an unverified account is
/// refused with 403 `email_not_verified`, and only once its password was proven. An account
/// with a confirmed second factor is answered with [`Error::MfaRequired`] (a challenge naming
/// the user, and `tenant` for the JSON login to go on with), never with the user.
#[tracing::instrument(skip_all)]
pub async fn authenticate(
    state: &Core,
    email: &str,
    password: &str,
    tenant: Option<&str>,
    ctx: &RequestContext,
    now: i64,
) -> Result<User> {
    if email.len() > 1024 {
        return Err(Error::invalid(
            "email",
            "must be at most 254 characters long",
        ));
    }
    if password.chars().count() > crate::passwords::MAX_LENGTH {
        return Err(Error::invalid(
            "password",
            format!(
                "must be at most {} characters long",
                crate::passwords::MAX_LENGTH
            ),
        ));
    }
    // Throttling first (before any hashing), keyed by what was submitted, existing or not.
    let account = users::normalize_email(email);
    let ip = ctx.ip.as_deref().unwrap_or("");
    state.limiter.check(Class::LoginIp, ip, now).await?;
    // An account under attack is throttled everywhere except on devices it signed in from.
    let known = state.guard.is_known(&account, ip).await;
    if !known {
        state
            .limiter
            .check(Class::LoginAccount, &account, now)
            .await?;
    }
    let _attempt = state.guard.reserve_known(&account, ip, known, now).await?;
    // Enterprise routing: a domain whose tenant turned passwords off is refused before any
    // hashing, whether an account exists or not (the rule is the domain's, not the account's).
    if let Some(route) = crate::federation::route_of(state, email).await?
        && route.passwords_disabled != 0
    {
        return Err(Error::Forbidden {
            code: crate::error::Code::PasswordSignInDisabled,
            message: "addresses at this domain sign in through their organisation's identity provider",
        });
    }
    let user = users::find_by_email(state.store.pool(), email).await?;
    let stored = user.as_ref().and_then(|u| u.password_hash.as_deref());
    let verification = state.passwords.verify(password, stored).await?;
    let submitted = account.as_str();
    let failed = |user_id: String, reason: &'static str| async move {
        let outcome = state.guard.failed(submitted, ip, now).await?;
        login_failed(state, &user_id, reason, outcome, ctx, now).await
    };
    let (user, rehash) = match (user, verification) {
        (Some(user), Verification::Valid { rehash }) if user.is_active() => (user, rehash),
        (Some(user), Verification::Valid { .. }) => {
            failed(user.id, "account_deactivated").await?;
            return Err(Error::invalid_credentials());
        }
        (Some(user), Verification::Invalid) => {
            failed(user.id, "invalid_password").await?;
            return Err(Error::invalid_credentials());
        }
        (None, _) => {
            failed(String::new(), "unknown_account").await?;
            return Err(Error::invalid_credentials());
        }
    };
    state.guard.succeeded(&account, ip).await;
    if state.config.require_verified_email && user.email_verified_at.is_none() {
        login_failed(
            state,
            &user.id,
            "email_not_verified",
            Outcome::Counted,
            ctx,
            now,
        )
        .await?;
        return Err(Error::Forbidden {
            code: crate::error::Code::EmailNotVerified,
            message: "verify your email address before logging in",
        });
    }
    if rehash {
        let hash = state.passwords.hash(password).await?;
        users::set_password_hash(state.store.writer(), &user.id, &hash, now).await?;
        tracing::info!(user_id = %user.id, "password hash upgraded to the configured Argon2id parameters");
    }
    // A confirmed second factor is required on every password path; only
    // `mfa::complete_sign_in` goes on from here.
    if user.second_factors > 0 {
        let challenge = crate::mfa::challenge(state, &user, tenant, now).await?;
        return Err(Error::MfaRequired(Box::new(challenge)));
    }
    // Enterprise tenants of the address's domain take the user in before a tenant is chosen.
    crate::tenants::domains::join_at_sign_in(state, &user, ctx, now).await?;
    Ok(user)
}

/// Logs in with email and password: [`authenticate`], then a new session and its first tokens.
#[tracing::instrument(skip_all)]
///
/// The tokens are for `tenant` (id or slug) when given, else for the tenant used last, else for
/// the personal tenant (see [`crate::tenants::choose`]).
pub async fn login(
    state: &Core,
    email: &str,
    password: &str,
    tenant: Option<&str>,
    ctx: &RequestContext,
    now: i64,
) -> Result<TokenPair> {
    let user = authenticate(state, email, password, tenant, ctx, now).await?;
    let amr = crate::mfa::AMR_PASSWORD;
    signed_in(state, &user, tenant, amr, None, ctx, now).await
}

/// Completes an application's sign-in at upstream provider `via` (a redeemed login code, see
/// [`crate::federation::signin::redeem_login_code`]): a new session and its first tokens, or,
/// for an account with a second factor, [`Error::MfaRequired`] (finished at `POST /auth/mfa`).
pub async fn login_federated(
    state: &Core,
    user: &User,
    via: &str,
    tenant: Option<&str>,
    ctx: &RequestContext,
    now: i64,
) -> Result<TokenPair> {
    if user.second_factors > 0 {
        let challenge = crate::mfa::challenge_after(state, user, tenant, Some(via), now).await?;
        return Err(Error::MfaRequired(Box::new(challenge)));
    }
    let amr = crate::mfa::AMR_FEDERATED;
    signed_in(state, user, tenant, amr, Some(via), ctx, now).await
}

/// Completes a login that answered `mfa_required`: the challenge's user, once a second factor
/// accepts `code`, gets a new session and its first tokens (for the tenant asked for at the
/// password step).
pub async fn login_second_factor(
    state: &Core,
    mfa_token: &str,
    method: crate::mfa::Method,
    proof: crate::mfa::Proof<'_>,
    ctx: &RequestContext,
    now: i64,
) -> Result<TokenPair> {
    let done = crate::mfa::complete_sign_in(state, mfa_token, method, proof, ctx, now).await?;
    signed_in(
        state,
        &done.user,
        done.tenant.as_deref(),
        done.amr,
        done.via.as_deref(),
        ctx,
        now,
    )
    .await
}

/// Logs in with a passkey (no password): the assertion answering ceremony `ceremony` of
/// `POST /auth/passkey/start`, then a new session and its first tokens.
pub async fn login_passkey(
    state: &Core,
    ceremony: &str,
    assertion: &serde_json::Value,
    tenant: Option<&str>,
    ctx: &RequestContext,
    now: i64,
) -> Result<TokenPair> {
    let (user, amr) =
        crate::mfa::webauthn::passkey_finish(state, ceremony, assertion, ctx, now).await?;
    signed_in(state, &user, tenant, amr, None, ctx, now).await
}

/// A new session and its first tokens for `user`, who has just proved who they are (`amr`:
/// how, RFC 8176; `via`: the upstream provider of a federated sign-in).
async fn signed_in(
    state: &Core,
    user: &User,
    tenant: Option<&str>,
    amr: &str,
    via: Option<&str>,
    ctx: &RequestContext,
    now: i64,
) -> Result<TokenPair> {
    let roles = crate::store::roles::roles_of(state.store.pool(), &user.id).await?;
    let ip = ctx.ip.as_deref();
    let (tenant_id, tenant_roles) =
        crate::tenants::choose(state, user, tenant, ip, Some(amr)).await?;
    if tenant.is_some() {
        crate::tenants::remember(state, &user.id, &tenant_id).await?;
    }
    let subject = Subject {
        user_id: &user.id,
        roles,
        email_verified: user.email_verified_at.is_some(),
        tenant_id: Some(tenant_id),
        tenant_roles,
        amr: Some(amr),
    };
    sessions::start(
        &state.store,
        &state.keys,
        &state.settings,
        subject,
        sessions::Start::Login {
            method: &sessions::login_method(amr, via),
        },
        ctx,
        now,
    )
    .await
}

/// Records a failed login (and the lock it caused, if any) in its own small transaction.
async fn login_failed(
    state: &Core,
    user_id: &str,
    reason: &str,
    outcome: Outcome,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    crate::metrics::login("password", "failure");
    let event = LoginFailedV1 {
        user_id: user_id.to_string(),
        reason: reason.to_string(),
        ip: ctx.ip.clone(),
        user_agent: ctx.user_agent.clone(),
    };
    // An unknown address is not recorded (it may be a password typed into the wrong field).
    let (actor, target) = match user_id {
        "" => (Actor::None, None),
        id => (Actor::User(id), Some(("user", id))),
    };
    let entry = Entry {
        target,
        ..Entry::failure(actor, action::LOGIN, reason)
    };
    let mut tx = state.store.begin().await?;
    audit::record(&mut *tx, ctx, &entry, now).await?;
    events::append(&mut tx, ctx, &event, now).await?;
    if let Outcome::Locked { secs, account_wide } = outcome {
        tracing::warn!(user_id, ip = ?ctx.ip, secs, account_wide, "repeated failed logins: locked");
        let locked = AccountLockedV1 {
            user_id: user_id.to_string(),
            ip: ctx.ip.clone(),
            locked_secs: secs,
            account_wide,
        };
        events::append(&mut tx, ctx, &locked, now).await?;
        let scope = if account_wide {
            "account_wide"
        } else {
            "account_and_ip"
        };
        let entry = Entry {
            target,
            ..Entry::failure(Actor::System, action::LOCK_ACCOUNT, scope)
        };
        audit::record(&mut *tx, ctx, &entry, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// `GET /identity/me`: the caller's own account.
pub async fn me(state: &Core, principal: &Principal) -> Result<UserView> {
    let caller = authz::require_user(principal, Permission::ReadOwnAccount)?;
    let view = find_view(state, &caller.user_id)
        .await?
        .ok_or_else(Error::invalid_token)?;
    Ok((*view).clone())
}

/// Reads a user's view (with roles) through the short-lived in-process cache (see
/// [`UserCache`]).
async fn find_view(state: &Core, id: &str) -> Result<Option<Arc<UserView>>> {
    if let Some(v) = state.users.get(id) {
        return Ok(Some(v));
    }
    let Some(user) = users::find_by_id(state.store.pool(), id).await? else {
        return Ok(None);
    };
    let roles = crate::store::roles::roles_of(state.store.pool(), id).await?;
    let view = Arc::new(UserView::new(&user, &roles));
    state.users.insert(id, Arc::clone(&view));
    Ok(Some(view))
}

/// Changes the password after checking the current one, and ends the user's other sessions.
#[tracing::instrument(skip_all)]
pub async fn change_password(
    state: &Core,
    principal: &Principal,
    current: &str,
    new: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    let caller = authz::require_user(principal, Permission::ManageOwnAccount)?;
    let (user_id, session_id) = (caller.user_id.as_str(), caller.session_id.as_str());
    // RFC 9470: the current password proves who is typing; an account with a second factor
    // also needs a session that used one (a password-only session cannot take the account).
    crate::mfa::step_up::require(state, caller, None, now).await?;
    // Each attempt costs two Argon2 runs and guesses the current password: throttle it like
    // logins to the account.
    state
        .limiter
        .check(
            Class::LoginAccount,
            &format!("password_change:{user_id}"),
            now,
        )
        .await?;
    let user = users::find_by_id(state.store.pool(), user_id)
        .await?
        .ok_or_else(Error::invalid_token)?;
    state
        .passwords
        .check_policy("new_password", new, Some(&user.email))?;
    match state
        .passwords
        .verify(current, user.password_hash.as_deref())
        .await?
    {
        Verification::Valid { .. } => {}
        Verification::Invalid => {
            let entry = Entry::failure(
                Actor::User(user_id),
                action::CHANGE_PASSWORD,
                "invalid_current_password",
            )
            .target("user", user_id);
            audit::record(state.store.writer(), ctx, &entry, now).await?;
            return Err(Error::Forbidden {
                code: crate::error::Code::InvalidCurrentPassword,
                message: "the current password is wrong",
            });
        }
    }
    let hash = state.passwords.hash(new).await?;
    let mut tx = state.store.begin().await?;
    users::set_password_hash(&mut *tx, user_id, &hash, now).await?;
    let entry =
        Entry::success(Actor::User(user_id), action::CHANGE_PASSWORD).target("user", user_id);
    audit::record(&mut *tx, ctx, &entry, now).await?;
    let revoked = sessions::revoke_all_in(
        &mut tx,
        user_id,
        Some(session_id),
        sessions::RevocationReason::PasswordChanged,
        ctx,
        now,
    )
    .await?;
    let event = PasswordChangedV1 {
        user_id: user_id.to_string(),
        method: "change".into(),
    };
    events::append(&mut tx, ctx, &event, now).await?;
    tx.commit().await?;
    state.sessions.mark_all_revoked(&revoked).await;
    state.users.invalidate(user_id).await;
    Ok(())
}

/// Deactivates a user (operator action): status `deactivated`, every session revoked, and
/// `UserDeactivatedV1`, in one transaction, recorded in the audit log as done by `actor` (the
/// administrator, or `System` at the command line). 404 for an unknown or already deactivated
/// user.
#[tracing::instrument(skip_all, fields(user_id))]
pub async fn deactivate(
    store: &Store,
    cache: &crate::sessions::SessionCache,
    user_id: &str,
    principal: &Principal,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    authz::require(principal, Permission::ManageUsers)?;
    let mut tx = store.begin().await?;
    let revoked = deactivate_in(&mut tx, user_id, principal, ctx, now).await?;
    tx.commit().await?;
    cache.mark_all_revoked(&revoked).await;
    Ok(())
}

/// [`deactivate`] inside `tx`, for a caller that checks more in the same transaction; returns
/// the revoked sessions, to mark in the session cache once `tx` has committed.
pub(crate) async fn deactivate_in(
    tx: &mut crate::store::Tx,
    user_id: &str,
    principal: &Principal,
    ctx: &RequestContext,
    now: i64,
) -> Result<Vec<String>> {
    if user_id.len() > 64 {
        return Err(Error::NotFound);
    }
    if !users::deactivate(tx, user_id, now).await? {
        return Err(Error::NotFound);
    }
    let entry = Entry::success(principal.actor(), action::DEACTIVATE_USER).target("user", user_id);
    audit::record(&mut **tx, ctx, &entry, now).await?;
    let revoked = sessions::revoke_all_in(
        tx,
        user_id,
        None,
        sessions::RevocationReason::UserDeactivated,
        ctx,
        now,
    )
    .await?;
    let event = UserDeactivatedV1 {
        user_id: user_id.to_string(),
    };
    events::append(tx, ctx, &event, now).await?;
    Ok(revoked)
}

/// Users read by id, remembered for a few seconds: `GET /identity/me` needs no database read
/// per request. A write invalidates the entry on every replica.
pub type UserCache = crate::shared::Cache<Arc<UserView>>;

pub fn user_cache(shared: &crate::shared::Shared) -> UserCache {
    crate::shared::Cache::new(
        shared,
        100_000,
        Duration::from_secs(5),
        crate::shared::Invalidation::User,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_that_lower_case_into_ascii_are_refused() {
        assert!(validate_email("email", "\u{212A}im@example.com").is_err());
        assert!(validate_email("email", "adm\u{130}n@example.com").is_err());
        assert!(validate_email("email", "kim@exa\u{212A}e.com").is_err());
        assert!(validate_email("email", "Kim@Example.com").is_ok());
        assert!(validate_email("email", "jürgen@example.de").is_ok());
    }

    #[test]
    fn email_shapes() {
        for ok in ["a@b.c", "Alice.Smith+tag@Example.COM", "x@localhost"] {
            assert!(validate_email("email", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "plain",
            "@b.c",
            "a@",
            "a@.b",
            "a@b..c",
            "a b@c.d",
            "a@b\n.c",
            &format!("{}@b.c", "x".repeat(65)),
        ] {
            assert!(validate_email("email", bad).is_err(), "{bad:?}");
        }
    }
}
