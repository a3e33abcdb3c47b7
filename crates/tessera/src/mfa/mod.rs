//! Second factors: TOTP authenticator apps (RFC 6238, through `totp-rs`), passkeys and security
//! keys (WebAuthn, [`webauthn`]) and single-use recovery codes; the challenge that sits between a correct password and the second factor at sign-in;
//! and the recent-authentication check that guards changes to the factors.
//!
//! A user with a confirmed factor must present it on every password path: `accounts::authenticate`
//! (the JSON login, the OAuth password grant and the hosted login all go through it) answers a
//! right password with [`Error::MfaRequired`] instead of the user, and only
//! [`complete_sign_in`] turns that challenge into a signed-in user.

pub mod acr;
pub mod step_up;
pub mod webauthn;

use serde::{Deserialize, Serialize};
use totp_rs::{Algorithm, Secret, Totp};
use zeroize::Zeroizing;

use crate::abuse::{Class, Outcome};
use crate::audit::{self, Actor, Entry, action};
use crate::authz::{self, Permission, Principal, UserPrincipal};
use crate::clock::rfc3339;
use crate::context::RequestContext;
use crate::core::Core;
use crate::crypto::{b64url, random_bytes, token_hash};
use crate::error::{Code, Error, Result, wire_codes};
use crate::events::{self, MfaChallengeFailedV1, MfaEnrolledV1, MfaRemovedV1, RecoveryCodeUsedV1};
use crate::passwords::Verification;
use crate::store::mfa::{self as store, FactorRow, NewFactor};
use crate::store::users::{self, User};

/// How recent (seconds) the session's sign-in must be for a change to the factors.
pub const RECENT_AUTH_SECS: i64 = 300;
/// How long a sign-in challenge (`mfa_token`) may be completed.
pub const CHALLENGE_TTL_SECS: i64 = 300;
/// The prefix of a sign-in challenge token.
pub const CHALLENGE_PREFIX: &str = "tsr_mfa_";
const RECOVERY_CODE_COUNT: usize = 10;
/// RFC 6238 §5.2: 30-second steps, one step of skew either side; SHA-1 and 6 digits are what
/// authenticator apps support.
const TOTP_STEP: u64 = 30;
const TOTP_SKEW: u16 = 1;
const CHALLENGE_CONTEXT: &str = "mfa_challenge";

wire_codes! {
/// How a second factor is presented at sign-in.
pub enum Method {
    /// A code from an authenticator app.
    Totp => "totp",
    /// One of the single-use recovery codes.
    RecoveryCode => "recovery_code",
    /// A passkey or security key (WebAuthn), answering the challenge's `webauthn` options.
    Webauthn => "webauthn",
}
}

impl Method {
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|m| m.as_str() == s)
    }
}

/// RFC 8176 methods of a sign-in completed with an app's code or a recovery code: the password,
/// a one-time password (a recovery code is one too: a single-use secret), and so more than one
/// factor. (A WebAuthn key's depend on the key: `webauthn::second_factor_amr`.)
pub const AMR_OTP: &str = "pwd otp mfa";

/// RFC 8176 methods of a sign-in with the password alone.
pub const AMR_PASSWORD: &str = "pwd";

/// A sign-in at an upstream provider (RFC 8176 has no value for it; `fed` is the one Microsoft
/// Entra ID uses): one factor, like a password.
pub const AMR_FEDERATED: &str = "fed";

/// The methods of a two-factor sign-in whose first factor was an upstream provider, not the
/// password (`amr` as [`verify`] returns it).
fn federated(amr: &'static str) -> &'static str {
    match amr {
        AMR_OTP => "fed otp mfa",
        "pwd hwk mfa" => "fed hwk mfa",
        "pwd swk mfa" => "fed swk mfa",
        other => other,
    }
}

wire_codes! {
/// The kinds of second factor.
pub enum FactorKind {
    /// An authenticator app (RFC 6238).
    Totp => "totp",
    /// A passkey or security key (WebAuthn).
    Webauthn => "webauthn",
}
}

/// The associated data a factor's secret is sealed with: it cannot be moved to another row.
pub fn seal_context(factor_id: &str) -> String {
    format!("mfa_factor:{factor_id}")
}

/// The answer to a right password when a second factor is needed.
#[derive(Clone)]
pub struct Challenge {
    /// Sealed, short-lived, names the user: the bearer may complete the sign-in with a factor.
    pub token: String,
    pub methods: Vec<Method>,
    /// With a WebAuthn factor: the options for `navigator.credentials.get`.
    pub webauthn: Option<webauthn_rs::prelude::RequestChallengeResponse>,
}

impl std::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenge")
            .field("methods", &self.methods)
            .finish_non_exhaustive()
    }
}

/// What a challenge token carries (sealed under the master key, so it cannot be forged or read).
#[derive(Serialize, Deserialize)]
struct ChallengeClaims {
    sub: String,
    exp: i64,
    /// The tenant asked for at the password step (JSON login).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    /// The WebAuthn ceremony started for the user's keys, if they have any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ceremony: Option<String>,
    /// The upstream provider the first factor was a sign-in at (else it was the password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    via: Option<String>,
}

/// A challenge for `user`, who gave the right password: the methods their factors allow, and
/// for WebAuthn keys a ceremony started with them.
pub async fn challenge(
    state: &Core,
    user: &User,
    tenant: Option<&str>,
    now: i64,
) -> Result<Challenge> {
    challenge_after(state, user, tenant, None, now).await
}

/// A challenge for `user` after a first factor: the password, or a sign-in at upstream provider
/// `via` (the sign-in's methods then say `fed` instead of `pwd`).
pub async fn challenge_after(
    state: &Core,
    user: &User,
    tenant: Option<&str>,
    via: Option<&str>,
    now: i64,
) -> Result<Challenge> {
    let rows = store::confirmed(state.store.pool(), &user.id).await?;
    let mut methods = Vec::with_capacity(3);
    if rows.iter().any(|r| r.kind == FactorKind::Totp.as_str()) {
        methods.push(Method::Totp);
    }
    let keys = rows
        .iter()
        .filter(|r| r.kind == FactorKind::Webauthn.as_str())
        .map(|r| webauthn::passkey_of(state, r))
        .collect::<Result<Vec<_>>>()?;
    let (mut options, mut ceremony) = (None, None);
    if let (false, Some(rp)) = (keys.is_empty(), state.webauthn.as_deref()) {
        let (request, auth) = webauthn::start_second_factor(rp, &keys)?;
        let started = webauthn::Ceremony::SecondFactor {
            user_id: user.id.clone(),
            state: auth,
        };
        ceremony = Some(webauthn::stash(state, started, now).await?);
        options = Some(request);
        methods.push(Method::Webauthn);
    }
    methods.push(Method::RecoveryCode);
    let claims = ChallengeClaims {
        sub: user.id.clone(),
        exp: now + CHALLENGE_TTL_SECS,
        tenant: tenant.map(str::to_string),
        ceremony,
        via: via.map(str::to_string),
    };
    let plain = serde_json::to_vec(&claims).unwrap_or_default();
    let sealed = state.master.seal(CHALLENGE_CONTEXT, &plain);
    Ok(Challenge {
        token: format!("{CHALLENGE_PREFIX}{}", b64url(&sealed)),
        methods,
        webauthn: options,
    })
}

/// What a second factor is proven with.
#[derive(Clone, Copy)]
pub enum Proof<'a> {
    /// A TOTP or recovery code.
    Code(&'a str),
    /// A WebAuthn assertion (`PublicKeyCredential` JSON).
    Assertion(&'a serde_json::Value),
}

/// A sign-in completed with a second factor.
#[derive(Debug)]
pub struct SignedIn {
    pub user: User,
    /// The tenant asked for at the password step.
    pub tenant: Option<String>,
    /// How (RFC 8176, space-separated).
    pub amr: &'static str,
    /// The upstream provider of the first factor, if it was not the password.
    pub via: Option<String>,
}

fn invalid_challenge() -> Error {
    Error::Unauthenticated {
        code: Code::InvalidMfaToken,
        message: "the sign-in challenge is invalid or expired; sign in again",
        bearer: false,
    }
}

fn open_challenge(state: &Core, token: &str, now: i64) -> Result<ChallengeClaims> {
    use base64::Engine as _;
    let body = token
        .strip_prefix(CHALLENGE_PREFIX)
        .filter(|b| b.len() <= 4096)
        .ok_or_else(invalid_challenge)?;
    let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| invalid_challenge())?;
    let plain = state
        .master
        .open(CHALLENGE_CONTEXT, &sealed)
        .map_err(|_| invalid_challenge())?;
    let claims: ChallengeClaims =
        serde_json::from_slice(&plain).map_err(|_| invalid_challenge())?;
    if claims.exp <= now {
        return Err(invalid_challenge());
    }
    Ok(claims)
}

/// The user a challenge names, once one of their factors accepts `proof`; with the tenant asked
/// for at the password step. The factor is checked under the same throttling and lockout as
/// passwords; every failure is audited and evented.
pub async fn complete_sign_in(
    state: &Core,
    token: &str,
    method: Method,
    proof: Proof<'_>,
    ctx: &RequestContext,
    now: i64,
) -> Result<SignedIn> {
    let claims = open_challenge(state, token, now)?;
    let user = users::find_by_id(state.store.pool(), &claims.sub)
        .await?
        .filter(|u| u.is_active() && u.second_factors > 0)
        .ok_or_else(invalid_challenge)?;
    let ceremony = claims.ceremony.as_deref();
    let amr = verify(state, &user.id, method, proof, ceremony, ctx, now).await?;
    let amr = if claims.via.is_some() {
        federated(amr)
    } else {
        amr
    };
    crate::tenants::domains::join_at_sign_in(state, &user, ctx, now).await?;
    Ok(SignedIn {
        user,
        tenant: claims.tenant,
        amr,
        via: claims.via,
    })
}

fn wrong_code() -> Error {
    Error::Unauthenticated {
        code: Code::InvalidMfaCode,
        message: "the code is wrong, expired or used already",
        bearer: false,
    }
}

/// The lockout key of a user's second factor (never an email address: those have no NUL).
fn guard_key(user_id: &str) -> String {
    format!("\u{0}mfa:{user_id}")
}

/// Checks `proof` against the user's factors of kind `method`, throttled per IP and locked out
/// per account (and account and IP) after repeated failures, like passwords. Returns the
/// sign-in's RFC 8176 methods.
async fn verify(
    state: &Core,
    user_id: &str,
    method: Method,
    proof: Proof<'_>,
    ceremony: Option<&str>,
    ctx: &RequestContext,
    now: i64,
) -> Result<&'static str> {
    let ip = ctx.ip.as_deref().unwrap_or("");
    state.limiter.check(Class::LoginIp, ip, now).await?;
    let key = guard_key(user_id);
    // As with passwords, devices that passed this step before are not locked out account-wide.
    let known = state.guard.is_known(&key, ip).await;
    let _attempt = state.guard.reserve_known(&key, ip, known, now).await?;
    let accepted = match (method, proof) {
        (Method::Totp, Proof::Code(code)) => accept_totp(state, user_id, code, now)
            .await?
            .then_some(AMR_OTP),
        (Method::RecoveryCode, Proof::Code(code)) => {
            accept_recovery_code(state, user_id, code, ctx, now)
                .await?
                .then_some(AMR_OTP)
        }
        (Method::Webauthn, Proof::Assertion(assertion)) => {
            webauthn::accept_second_factor(state, user_id, ceremony, assertion, now).await?
        }
        (Method::Webauthn, Proof::Code(_)) => {
            return Err(Error::invalid(
                "assertion",
                "is required with method webauthn",
            ));
        }
        (_, Proof::Assertion(_)) => {
            return Err(Error::invalid("code", "is required with this method"));
        }
    };
    if let Some(amr) = accepted {
        state.guard.succeeded(&key, ip).await;
        return Ok(amr);
    }
    let outcome = state.guard.failed(&key, ip, now).await?;
    crate::metrics::login(method.as_str(), "failure");
    let entry = Entry::failure(Actor::User(user_id), action::MFA_CHALLENGE, method.as_str())
        .target("user", user_id);
    let event = MfaChallengeFailedV1 {
        user_id: user_id.to_string(),
        method: method.as_str().to_string(),
        ip: ctx.ip.clone(),
        user_agent: ctx.user_agent.clone(),
    };
    let mut tx = state.store.begin().await?;
    audit::record(&mut *tx, ctx, &entry, now).await?;
    events::append(&mut tx, ctx, &event, now).await?;
    if let Outcome::Locked { secs, account_wide } = outcome {
        tracing::warn!(user_id, ip = ?ctx.ip, secs, account_wide, "repeated wrong second-factor codes: locked");
        let entry = Entry::failure(Actor::System, action::LOCK_ACCOUNT, "second_factor")
            .target("user", user_id);
        audit::record(&mut *tx, ctx, &entry, now).await?;
        let locked = crate::events::AccountLockedV1 {
            user_id: user_id.to_string(),
            ip: ctx.ip.clone(),
            locked_secs: secs,
            account_wide,
        };
        events::append(&mut tx, ctx, &locked, now).await?;
    }
    tx.commit().await?;
    Err(wrong_code())
}

/// A factor's secret (a TOTP key, a WebAuthn credential), unsealed.
fn open_secret(state: &Core, row: &FactorRow) -> Result<Zeroizing<Vec<u8>>> {
    state
        .master
        .open(&seal_context(&row.id), &row.secret)
        .map(Zeroizing::new)
        .map_err(|_| {
            Error::internal(anyhow::anyhow!(
                "second factor {} does not open with the master key",
                row.id
            ))
        })
}

fn totp_of(state: &Core, row: &FactorRow, account: &str) -> Result<Totp> {
    let secret = open_secret(state, row)?;
    build_totp(&secret, account, &state.config.issuer)
}

fn build_totp(secret: &[u8], account: &str, issuer: &str) -> Result<Totp> {
    // The label's issuer is the issuer URL's host (`Tessera` when it has none), without colons.
    let issuer = url::Url::parse(issuer)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "Tessera".into())
        .replace(':', "");
    totp_rs::Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(TOTP_SKEW)
        .with_step_duration(TOTP_STEP)
        .with_secret(Secret::new(secret.to_vec().into_boxed_slice()))
        .with_account_name(account.replace(':', ""))
        .with_issuer(Some(issuer))
        .build()
        .map_err(|e| Error::internal(anyhow::anyhow!("building a TOTP: {e:?}")))
}

/// The time step a TOTP code matches at `now` (±1 step), if any. The crate compares codes in
/// constant time.
fn matching_step(totp: &Totp, code: &str, now: i64) -> Option<i64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = u64::try_from(now).ok()?;
    totp.check(&code, now).and_then(|s| i64::try_from(s).ok())
}

/// The time step `code` matches for a factor with `secret` at `now`: the check the server makes
/// for each of a user's factors (public for the benchmark's in-process limit).
pub fn check_totp(secret: &[u8], code: &str, now: i64) -> Option<i64> {
    let totp = build_totp(secret, "", "").ok()?;
    matching_step(&totp, code, now)
}

async fn accept_totp(state: &Core, user_id: &str, code: &str, now: i64) -> Result<bool> {
    let rows = store::confirmed(state.store.pool(), user_id).await?;
    for row in rows.iter().filter(|r| r.kind == FactorKind::Totp.as_str()) {
        let totp = totp_of(state, row, "")?;
        if let Some(step) = matching_step(&totp, code, now) {
            // RFC 6238 §5.2: the step (and every earlier one) is used up, atomically.
            return Ok(store::accept_step(state.store.writer(), &row.id, step, false, now).await?);
        }
    }
    Ok(false)
}

/// A recovery code as typed: case, spaces and dashes do not matter.
fn normalize_recovery_code(code: &str) -> String {
    code.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

async fn accept_recovery_code(
    state: &Core,
    user_id: &str,
    code: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<bool> {
    let code = normalize_recovery_code(code);
    if code.len() != 16 {
        return Ok(false);
    }
    let mut tx = state.store.begin().await?;
    if !store::use_recovery_code(&mut *tx, user_id, &token_hash(&code), now).await? {
        return Ok(false);
    }
    let remaining = store::unused_recovery_codes(&mut *tx, user_id).await?;
    let left = format!("{remaining} left");
    let entry = Entry::success(Actor::User(user_id), action::USE_RECOVERY_CODE)
        .target("user", user_id)
        .reason(&left);
    audit::record(&mut *tx, ctx, &entry, now).await?;
    let event = RecoveryCodeUsedV1 {
        user_id: user_id.to_string(),
        remaining: u32::try_from(remaining).unwrap_or_default(),
    };
    events::append(&mut tx, ctx, &event, now).await?;
    tx.commit().await?;
    Ok(true)
}

/// Fresh recovery codes: shown once, stored as SHA-256 digests (80 random bits each, so a digest
/// cannot be reversed by guessing).
fn new_recovery_codes() -> (Vec<String>, Vec<String>) {
    let shown: Vec<String> = (0..RECOVERY_CODE_COUNT)
        .map(|_| {
            let raw = Secret::new(Box::new(random_bytes::<10>())).to_base32();
            let raw = raw.to_ascii_lowercase();
            format!(
                "{}-{}-{}-{}",
                &raw[..4],
                &raw[4..8],
                &raw[8..12],
                &raw[12..16]
            )
        })
        .collect();
    let hashes = shown
        .iter()
        .map(|c| token_hash(&normalize_recovery_code(c)))
        .collect();
    (shown, hashes)
}

/// Refuses (RFC 9470, [`step_up`]) unless the caller's session is strong enough for the account
/// (more than one factor once it has one) and began within [`RECENT_AUTH_SECS`]; where
/// `password` is allowed, the current password stands in for the recency, never for a factor.
async fn require_recent(
    state: &Core,
    caller: &UserPrincipal,
    password: Option<&str>,
    now: i64,
) -> Result<()> {
    let acr = step_up::strong_enough(state, &caller.user_id).await?;
    let max_age = Some(step_up::ACCOUNT_SECS);
    let (strong, recent) = step_up::check(state, caller, acr, max_age, now).await?;
    let needed = Error::StepUp(step_up::Needed { acr, max_age });
    match (strong, recent, password) {
        (true, true, _) => return Ok(()),
        (true, false, Some(_)) => {}
        _ => return Err(needed),
    }
    let password = password.unwrap_or_default();
    if password.chars().count() > crate::passwords::MAX_LENGTH {
        return Err(Error::invalid(
            "current_password",
            format!(
                "must be at most {} characters long",
                crate::passwords::MAX_LENGTH
            ),
        ));
    }
    // Guesses the password: throttled like a password change.
    let key = format!("password_change:{}", caller.user_id);
    state.limiter.check(Class::LoginAccount, &key, now).await?;
    let user = users::find_by_id(state.store.pool(), &caller.user_id)
        .await?
        .ok_or_else(Error::invalid_token)?;
    match state
        .passwords
        .verify(password, user.password_hash.as_deref())
        .await?
    {
        Verification::Valid { .. } => Ok(()),
        Verification::Invalid => Err(Error::Forbidden {
            code: Code::InvalidCurrentPassword,
            message: "the current password is wrong",
        }),
    }
}

/// A started TOTP enrolment: the secret, shown once, to put into the app.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TotpEnrolment {
    /// The factor's id, to confirm it with.
    pub id: String,
    /// The shared secret, base32 (RFC 4648), for apps that take it typed.
    pub secret: String,
    /// `otpauth://totp/…`, for a QR code.
    pub otpauth_uri: String,
}

impl std::fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpEnrolment")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

const MAX_NAME: usize = 64;

/// A factor's name as given (trimmed), or `default`.
fn factor_name<'a>(name: Option<&'a str>, default: &'a str) -> Result<&'a str> {
    let name = name.map(str::trim).unwrap_or(default);
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "name",
            format!("must be 1 to {MAX_NAME} characters, without control characters"),
        ));
    }
    Ok(name)
}

/// Starts enrolling an authenticator app. Needs a sign-in within the last five minutes or the
/// current password. Nothing is required of the user until a code confirms it.
pub async fn enrol_totp(
    state: &Core,
    principal: &Principal,
    name: Option<&str>,
    password: Option<&str>,
    now: i64,
) -> Result<TotpEnrolment> {
    let caller = authz::require_user(principal, Permission::ManageOwnAccount)?;
    let name = factor_name(name, "Authenticator app")?;
    require_recent(state, caller, password, now).await?;
    let user = users::find_by_id(state.store.pool(), &caller.user_id)
        .await?
        .ok_or_else(Error::invalid_token)?;
    let secret = Zeroizing::new(random_bytes::<20>());
    let id = uuid::Uuid::now_v7().to_string();
    let totp = build_totp(&secret[..], &user.email, &state.config.issuer)?;
    let otpauth_uri = totp
        .to_url()
        .map_err(|e| Error::internal(anyhow::anyhow!("otpauth URI: {e:?}")))?;
    let sealed = state.master.seal(&seal_context(&id), &secret[..]);
    let mut tx = state.store.begin().await?;
    store::insert_pending(
        &mut tx,
        &NewFactor {
            id: &id,
            user_id: &caller.user_id,
            kind: FactorKind::Totp.as_str(),
            name,
            secret: &sealed,
            credential_id: None,
            now,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(TotpEnrolment {
        id,
        secret: totp.secret().to_base32(),
        otpauth_uri,
    })
}

/// A confirmed factor: with recovery codes when it is the user's first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Confirmed {
    pub factor: FactorView,
    /// Shown once: ten single-use codes for when the app is lost. Only with the first factor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_codes: Option<Vec<String>>,
}

/// Activates an enrolment with a first code from the app. From then on every password sign-in
/// of the user needs a second factor.
pub async fn confirm_totp(
    state: &Core,
    principal: &Principal,
    id: &str,
    code: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<Confirmed> {
    let caller = authz::require_user(principal, Permission::ManageOwnAccount)?;
    let user_id = caller.user_id.as_str();
    let key = format!("mfa_confirm:{user_id}");
    state.limiter.check(Class::LoginAccount, &key, now).await?;
    let row = store::find(state.store.pool(), user_id, id)
        .await?
        .ok_or(Error::NotFound)?;
    if row.confirmed_at.is_some() {
        return Err(Error::Conflict {
            code: Code::AlreadyConfirmed,
            message: "this factor is confirmed already",
        });
    }
    let totp = totp_of(state, &row, "")?;
    let mismatch = || {
        Error::invalid(
            "code",
            "does not match: check the device's clock and give the current code",
        )
    };
    let step = matching_step(&totp, code, now).ok_or_else(mismatch)?;
    let mut tx = state.store.begin().await?;
    let first = store::count_confirmed(&mut *tx, user_id).await? == 0;
    if !store::accept_step(&mut *tx, &row.id, step, true, now).await? {
        return Err(mismatch());
    }
    let recovery_codes = enrolled(&mut tx, user_id, &row.id, &row.kind, first, ctx, now).await?;
    tx.commit().await?;
    let factor = FactorView::new(&FactorRow {
        confirmed_at: Some(now),
        last_used_at: Some(now),
        ..row
    });
    Ok(Confirmed {
        factor,
        recovery_codes,
    })
}

/// A factor has just been activated (in `tx`): with the user's first, ten recovery codes, which
/// are returned to be shown once; audited and evented.
async fn enrolled(
    tx: &mut crate::store::Tx,
    user_id: &str,
    factor_id: &str,
    kind: &str,
    first: bool,
    ctx: &RequestContext,
    now: i64,
) -> Result<Option<Vec<String>>> {
    let recovery_codes = if first {
        let (shown, hashes) = new_recovery_codes();
        store::replace_recovery_codes(tx, user_id, &hashes, now).await?;
        Some(shown)
    } else {
        None
    };
    let entry =
        Entry::success(Actor::User(user_id), action::ENROL_MFA).target("mfa_factor", factor_id);
    audit::record(&mut **tx, ctx, &entry, now).await?;
    let event = MfaEnrolledV1 {
        user_id: user_id.to_string(),
        factor_id: factor_id.to_string(),
        kind: kind.to_string(),
    };
    events::append(tx, ctx, &event, now).await?;
    Ok(recovery_codes)
}

/// A factor as the API shows it (never its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FactorView {
    pub id: String,
    /// `totp` or `webauthn`.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

impl FactorView {
    fn new(row: &FactorRow) -> Self {
        Self {
            id: row.id.clone(),
            kind: row.kind.clone(),
            name: row.name.clone(),
            created_at: rfc3339(row.created_at),
            last_used_at: row.last_used_at.map(rfc3339),
        }
    }
}

/// `GET /identity/mfa`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FactorList {
    /// Confirmed factors, oldest first.
    pub factors: Vec<FactorView>,
    /// Unused recovery codes.
    pub recovery_codes_left: i64,
}

pub async fn list(state: &Core, principal: &Principal) -> Result<FactorList> {
    let caller = authz::require_user(principal, Permission::ReadOwnAccount)?;
    let rows = store::confirmed(state.store.pool(), &caller.user_id).await?;
    let left = store::unused_recovery_codes(state.store.pool(), &caller.user_id).await?;
    Ok(FactorList {
        factors: rows.iter().map(FactorView::new).collect(),
        recovery_codes_left: left,
    })
}

/// Removes a factor (confirmed or pending). Needs a sign-in within the last five minutes, one
/// that used a second factor when the account has one; with the last factor, the recovery codes
/// go too and sign-in needs the password alone again.
pub async fn remove(
    state: &Core,
    principal: &Principal,
    id: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    let caller = authz::require_user(principal, Permission::ManageOwnAccount)?;
    // An account with a factor removes one only from a sign-in that used one: a session from
    // before the enrolment (the password alone) cannot take it away.
    require_recent(state, caller, None, now).await?;
    let user_id = caller.user_id.as_str();
    let mut tx = state.store.begin().await?;
    let row = store::delete(&mut tx, user_id, id)
        .await?
        .ok_or(Error::NotFound)?;
    if store::count_confirmed(&mut *tx, user_id).await? == 0 {
        store::delete_recovery_codes(&mut tx, user_id).await?;
    }
    if row.confirmed_at.is_some() {
        record_removed_in(&mut tx, user_id, row, None, ctx, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The audit entry (with `reason`, when the user did not remove it themselves) and
/// `MfaRemovedV1` of a removed confirmed factor.
pub async fn record_removed_in(
    tx: &mut crate::store::Tx,
    user_id: &str,
    factor: store::FactorRow,
    reason: Option<&str>,
    ctx: &RequestContext,
    now: i64,
) -> Result<()> {
    let mut entry =
        Entry::success(Actor::User(user_id), action::REMOVE_MFA).target("mfa_factor", &factor.id);
    if let Some(reason) = reason {
        entry = entry.reason(reason);
    }
    audit::record(&mut **tx, ctx, &entry, now).await?;
    let event = MfaRemovedV1 {
        user_id: user_id.to_string(),
        factor_id: factor.id,
        kind: factor.kind,
    };
    events::append(tx, ctx, &event, now).await
}

/// New recovery codes, `POST /identity/mfa/recovery-codes`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    /// Shown once; the earlier codes no longer work.
    pub recovery_codes: Vec<String>,
}

/// Replaces the recovery codes (the old ones stop working). Needs at least one factor and a
/// sign-in within the last five minutes that used one.
pub async fn regenerate_recovery_codes(
    state: &Core,
    principal: &Principal,
    ctx: &RequestContext,
    now: i64,
) -> Result<RecoveryCodes> {
    let caller = authz::require_user(principal, Permission::ManageOwnAccount)?;
    let user_id = caller.user_id.as_str();
    if store::count_confirmed(state.store.pool(), user_id).await? == 0 {
        return Err(Error::Conflict {
            code: Code::NoSecondFactor,
            message: "enrol a second factor first",
        });
    }
    require_recent(state, caller, None, now).await?;
    let mut tx = state.store.begin().await?;
    let (shown, hashes) = new_recovery_codes();
    store::replace_recovery_codes(&mut tx, user_id, &hashes, now).await?;
    let entry = Entry::success(Actor::User(user_id), action::REGENERATE_RECOVERY_CODES)
        .target("user", user_id);
    audit::record(&mut *tx, ctx, &entry, now).await?;
    tx.commit().await?;
    Ok(RecoveryCodes {
        recovery_codes: shown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_matches_its_step_and_one_either_side_only() {
        let totp = build_totp(&[7u8; 20], "a@example.com", "https://id.example.com").unwrap();
        let at = 1_700_000_000_i64;
        let code = |t: i64| totp.generate(u64::try_from(t).unwrap()).to_string();
        let step = at / 30;
        assert_eq!(matching_step(&totp, &code(at), at), Some(step));
        assert_eq!(matching_step(&totp, &code(at - 30), at), Some(step - 1));
        assert_eq!(matching_step(&totp, &code(at + 30), at), Some(step + 1));
        assert_eq!(matching_step(&totp, &code(at - 60), at), None);
        assert_eq!(matching_step(&totp, &code(at + 60), at), None);
        assert_eq!(matching_step(&totp, "12345", at), None);
        assert_eq!(matching_step(&totp, "abcdef", at), None);
        let spaced = format!("{} {}", &code(at)[..3], &code(at)[3..]);
        assert_eq!(matching_step(&totp, &spaced, at), Some(step));
    }

    #[test]
    fn recovery_codes_are_unique_grouped_and_hashed_as_typed_in_any_case() {
        let (shown, hashes) = new_recovery_codes();
        assert_eq!(shown.len(), RECOVERY_CODE_COUNT);
        let unique: std::collections::BTreeSet<_> = shown.iter().collect();
        assert_eq!(unique.len(), RECOVERY_CODE_COUNT);
        assert!(shown[0].len() == 19 && shown[0].matches('-').count() == 3);
        let typed = shown[0].to_ascii_uppercase().replace('-', " ");
        assert_eq!(token_hash(&normalize_recovery_code(&typed)), hashes[0]);
    }

    #[test]
    fn the_otpauth_label_names_the_issuer_host_and_the_account() {
        let totp = build_totp(&[1u8; 20], "a@example.com", "https://id.example.com:8443").unwrap();
        let url = totp.to_url().unwrap();
        assert!(
            url.starts_with("otpauth://totp/id.example.com:a%40example.com?"),
            "{url}"
        );
        assert!(url.contains("issuer=id.example.com"), "{url}");
    }
}
