//! WebAuthn (W3C Web Authentication Level 3, through `webauthn-rs`): passkeys and security keys,
//! as a second factor after the password and for passwordless sign-in with a discoverable
//! credential.
//!
//! Every ceremony has two requests (options out, the authenticator's answer back) that may reach
//! different replicas: its state is sealed under the master key and kept in the shared state
//! ([`crate::shared::Shared::stash`]) under a random ceremony id, taken (and so used up) by the
//! second request. Nothing of it is sent to the browser but the options.
//!
//! The relying party is the issuer: its host is the RP ID, its origin the one allowed origin.
//! An issuer whose host is an IP address has no WebAuthn (browsers refuse it); the routes then
//! answer 409 `webauthn_unavailable`.

use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    CreationChallengeResponse, DiscoverableAuthentication, DiscoverableKey, Passkey,
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, Url, Uuid, Webauthn, WebauthnBuilder,
};
use webauthn_rs_proto::ResidentKeyRequirement;

use crate::core::Core;
use crate::crypto::{b64url, random_bytes};
use crate::error::{Code, Error, Result};

/// How long a ceremony may take, seconds (the options' `timeout` says the same to the browser).
pub const CEREMONY_TTL_SECS: i64 = 300;
const SEAL_CONTEXT: &str = "webauthn_ceremony";

/// The relying party of the issuer, if the issuer's host is a domain name.
pub fn relying_party(issuer: &str) -> Option<Webauthn> {
    let origin = Url::parse(issuer).ok()?;
    let rp_id = origin.domain()?.to_string();
    let built = WebauthnBuilder::new(&rp_id, &origin)
        .and_then(|b| {
            b.rp_name("Tessera")
                .timeout(std::time::Duration::from_secs(CEREMONY_TTL_SECS as u64))
                .build()
        })
        .ok();
    if built.is_none() {
        tracing::warn!(
            issuer,
            "WebAuthn is unavailable: the issuer's host is not a domain name"
        );
    }
    built
}

fn rp(state: &Core) -> Result<&Webauthn> {
    state.webauthn.as_deref().ok_or(Error::Conflict {
        code: Code::WebauthnUnavailable,
        message: "passkeys need the issuer (TESSERA_ISSUER) to be a domain name, not an IP address",
    })
}

/// A ceremony between its two requests.
#[derive(Serialize, Deserialize)]
pub(super) enum Ceremony {
    /// Adding a credential to `user_id`'s account.
    Register {
        user_id: String,
        name: String,
        state: PasskeyRegistration,
    },
    /// The second factor of `user_id`, after the password.
    SecondFactor {
        user_id: String,
        state: PasskeyAuthentication,
    },
    /// Passwordless sign-in: the credential names the user.
    Passkey { state: DiscoverableAuthentication },
}

#[derive(Serialize, Deserialize)]
struct Stashed {
    exp: i64,
    ceremony: Ceremony,
}

fn stash_key(id: &str) -> String {
    format!("webauthn:{id}")
}

/// Keeps `ceremony` for its second request; returns its id.
pub(super) async fn stash(state: &Core, ceremony: Ceremony, now: i64) -> Result<String> {
    let id = b64url(&random_bytes::<24>());
    let stashed = Stashed {
        exp: now + CEREMONY_TTL_SECS,
        ceremony,
    };
    let plain = serde_json::to_vec(&stashed)
        .map_err(|e| Error::internal(anyhow::anyhow!("serialising a ceremony: {e}")))?;
    let sealed = state.master.seal(SEAL_CONTEXT, &plain);
    state
        .shared
        .stash(&stash_key(&id), &sealed, CEREMONY_TTL_SECS as u64)
        .await?;
    Ok(id)
}

fn ceremony_gone() -> Error {
    Error::Unauthenticated {
        code: Code::InvalidCeremony,
        message: "the passkey ceremony is unknown, used or expired; start again",
        bearer: false,
    }
}

/// Takes (uses up) the ceremony `id`.
async fn take(state: &Core, id: &str, now: i64) -> Result<Ceremony> {
    if id.is_empty() || id.len() > 64 {
        return Err(ceremony_gone());
    }
    let sealed = state
        .shared
        .take_stashed(&stash_key(id))
        .await?
        .ok_or_else(ceremony_gone)?;
    let plain = state
        .master
        .open(SEAL_CONTEXT, &sealed)
        .map_err(|_| ceremony_gone())?;
    let stashed: Stashed = serde_json::from_slice(&plain).map_err(|_| ceremony_gone())?;
    if stashed.exp <= now {
        return Err(ceremony_gone());
    }
    Ok(stashed.ceremony)
}

/// The user handle of an account: its id (a UUID), never anything personal.
fn user_handle(user_id: &str) -> Result<Uuid> {
    Uuid::parse_str(user_id)
        .map_err(|_| Error::internal(anyhow::anyhow!("user id {user_id} is not a UUID")))
}

/// Registration options: every credential is asked to be discoverable where the authenticator
/// can (`residentKey: preferred`), so a passkey also signs in without a password; user
/// verification is required (webauthn-rs' passkey profile).
fn start_registration(
    rp: &Webauthn,
    user_id: &str,
    email: &str,
    display_name: &str,
    exclude: Vec<Vec<u8>>,
) -> Result<(CreationChallengeResponse, PasskeyRegistration)> {
    let exclude = (!exclude.is_empty()).then_some(exclude);
    let (mut options, reg) = rp
        .start_passkey_registration(user_handle(user_id)?, email, display_name, exclude)
        .map_err(|e| Error::internal(anyhow::anyhow!("starting a WebAuthn registration: {e}")))?;
    if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
        selection.resident_key = Some(ResidentKeyRequirement::Preferred);
        selection.require_resident_key = false;
    }
    Ok((options, reg))
}

fn bad_credential(field: &'static str) -> Error {
    Error::invalid(
        field,
        "the authenticator's answer does not verify for this ceremony",
    )
}

/// A credential's public part as stored (sealed): webauthn-rs' own serialisation.
fn encode(passkey: &Passkey) -> Result<Vec<u8>> {
    serde_json::to_vec(passkey)
        .map_err(|e| Error::internal(anyhow::anyhow!("serialising a credential: {e}")))
}

fn decode(plain: &[u8]) -> Result<Passkey> {
    serde_json::from_slice(plain)
        .map_err(|e| Error::internal(anyhow::anyhow!("a stored credential does not parse: {e}")))
}

/// The credential id as stored and looked up: base64url without padding.
fn credential_id(raw: &[u8]) -> String {
    b64url(raw)
}

/// RFC 8176 methods of a WebAuthn proof after the password: a synced passkey (backup eligible)
/// is a software-held key (`swk`), any other a hardware key (`hwk`).
fn second_factor_amr(backup_eligible: bool) -> &'static str {
    if backup_eligible {
        "pwd swk mfa"
    } else {
        "pwd hwk mfa"
    }
}

/// RFC 8176 methods of a passwordless passkey sign-in: the key, with user verification (a PIN
/// or biometric on the authenticator, which webauthn-rs requires), so more than one factor.
fn passkey_amr(backup_eligible: bool) -> &'static str {
    if backup_eligible {
        "swk user mfa"
    } else {
        "hwk user mfa"
    }
}

/// The options for a passwordless sign-in, without conditional mediation (the page or client
/// decides how to ask: a button, or the autofill list where the browser offers it).
fn start_discoverable(
    rp: &Webauthn,
) -> Result<(RequestChallengeResponse, DiscoverableAuthentication)> {
    let (mut options, auth) = rp
        .start_discoverable_authentication()
        .map_err(|e| Error::internal(anyhow::anyhow!("starting a WebAuthn authentication: {e}")))?;
    options.mediation = None;
    Ok((options, auth))
}

/// Verifies a passwordless assertion against the one stored credential it names.
fn finish_discoverable(
    rp: &Webauthn,
    credential: &PublicKeyCredential,
    auth: DiscoverableAuthentication,
    passkey: &Passkey,
) -> Option<webauthn_rs::prelude::AuthenticationResult> {
    let key = DiscoverableKey::from(passkey);
    rp.finish_discoverable_authentication_v2(credential, auth, &key)
        .ok()
}

/// The user and credential a passwordless assertion names (not yet verified).
fn identify(rp: &Webauthn, credential: &PublicKeyCredential) -> Option<(Uuid, String)> {
    rp.identify_discoverable_authentication(credential)
        .ok()
        .map(|(user, raw)| (user, credential_id(raw)))
}

/// Starts an authentication with the user's credentials as the allowed ones.
pub(super) fn start_second_factor(
    rp: &Webauthn,
    passkeys: &[Passkey],
) -> Result<(RequestChallengeResponse, PasskeyAuthentication)> {
    rp.start_passkey_authentication(passkeys)
        .map_err(|e| Error::internal(anyhow::anyhow!("starting a WebAuthn authentication: {e}")))
}

/// Parses a credential (the authenticator's answer) from its JSON, `field` naming it in errors.
fn parse_assertion(value: &serde_json::Value) -> Result<PublicKeyCredential> {
    serde_json::from_value(value.clone()).map_err(|_| {
        Error::invalid(
            "assertion",
            "must be a PublicKeyCredential (navigator.credentials.get), as JSON",
        )
    })
}

fn parse_registration(value: &serde_json::Value) -> Result<RegisterPublicKeyCredential> {
    serde_json::from_value(value.clone()).map_err(|_| {
        Error::invalid(
            "credential",
            "must be a PublicKeyCredential (navigator.credentials.create), as JSON",
        )
    })
}

// ---------------------------------------------------------------- the flows

use crate::abuse::Class;
use crate::audit::{self, Actor, Entry, action};
use crate::authz::{self, Permission, Principal};
use crate::context::RequestContext;
use crate::events::{self, MfaChallengeFailedV1};
use crate::store::mfa::{self as store, FactorRow, NewFactor};
use crate::store::users::{self, User};

/// A started ceremony: its id, to finish it with, and the options for the browser
/// (`navigator.credentials.create` or `.get`, as `{"publicKey": …}`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Started {
    pub ceremony: String,
    /// `CreationChallengeResponse` or `RequestChallengeResponse` (W3C WebAuthn's
    /// `PublicKeyCredentialCreationOptionsJSON` / `…RequestOptionsJSON` under `publicKey`).
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

fn started(ceremony: String, options: &impl Serialize) -> Result<Started> {
    let options = serde_json::to_value(options)
        .map_err(|e| Error::internal(anyhow::anyhow!("serialising WebAuthn options: {e}")))?;
    Ok(Started { ceremony, options })
}

/// The stored credential of a factor row.
pub(super) fn passkey_of(state: &Core, row: &FactorRow) -> Result<Passkey> {
    decode(&super::open_secret(state, row)?)
}

/// Starts adding a passkey or security key to the caller's account: like enrolling an app, it
/// needs a sign-in within the last five minutes or the current password.
pub async fn register_start(
    state: &Core,
    principal: &Principal,
    name: Option<&str>,
    password: Option<&str>,
    now: i64,
) -> Result<Started> {
    let caller = authz::require_user(principal, Permission::ManageOwnAccount)?;
    let name = super::factor_name(name, "Passkey")?;
    rp(state)?;
    super::require_recent(state, caller, password, now).await?;
    let user = users::find_by_id(state.store.pool(), &caller.user_id)
        .await?
        .ok_or_else(Error::invalid_token)?;
    start_registration_for(state, &user, name, now).await
}

/// Starts a registration for `user` (who proved a recent sign-in), named `name`.
pub async fn start_registration_for(
    state: &Core,
    user: &User,
    name: &str,
    now: i64,
) -> Result<Started> {
    let rp = rp(state)?;
    let key = format!("webauthn_register:{}", user.id);
    state.limiter.check(Class::LoginAccount, &key, now).await?;
    let exclude = store::confirmed(state.store.pool(), &user.id)
        .await?
        .iter()
        .filter(|r| r.kind == super::FactorKind::Webauthn.as_str())
        .map(|r| passkey_of(state, r).map(|p| p.cred_id().to_vec()))
        .collect::<Result<Vec<_>>>()?;
    let (options, reg) = start_registration(rp, &user.id, &user.email, &user.email, exclude)?;
    let ceremony = Ceremony::Register {
        user_id: user.id.clone(),
        name: name.to_string(),
        state: reg,
    };
    let id = stash(state, ceremony, now).await?;
    started(id, &options)
}

/// Finishes adding a credential: the authenticator's answer to the ceremony's options. The
/// credential is a confirmed factor at once (with recovery codes when it is the first); it
/// also signs in without a password where it is discoverable.
pub async fn register_finish(
    state: &Core,
    principal: &Principal,
    ceremony: &str,
    credential: &serde_json::Value,
    ctx: &RequestContext,
    now: i64,
) -> Result<super::Confirmed> {
    let caller = authz::require_user(principal, Permission::ManageOwnAccount)?;
    finish_registration_for(state, &caller.user_id, ceremony, credential, None, ctx, now).await
}

/// Finishes `user_id`'s registration ceremony; `name` (when given) replaces the one chosen
/// at the start.
pub async fn finish_registration_for(
    state: &Core,
    user_id: &str,
    ceremony: &str,
    credential: &serde_json::Value,
    name: Option<&str>,
    ctx: &RequestContext,
    now: i64,
) -> Result<super::Confirmed> {
    let rp = rp(state)?;
    let credential = parse_registration(credential)?;
    let name = name.map(|n| super::factor_name(Some(n), "")).transpose()?;
    let Ceremony::Register {
        user_id: owner,
        name: chosen,
        state: reg,
    } = take(state, ceremony, now).await?
    else {
        return Err(ceremony_gone());
    };
    if owner != user_id {
        return Err(ceremony_gone());
    }
    let passkey = rp
        .finish_passkey_registration(&credential, &reg)
        .map_err(|_| bad_credential("credential"))?;
    let credential_id = credential_id(passkey.cred_id());
    let in_use = || Error::Conflict {
        code: Code::CredentialInUse,
        message: "this passkey is registered already",
    };
    if store::find_by_credential(state.store.pool(), &credential_id)
        .await?
        .is_some()
    {
        return Err(in_use());
    }
    let id = uuid::Uuid::now_v7().to_string();
    let sealed = state
        .master
        .seal(&super::seal_context(&id), &encode(&passkey)?);
    let name = name.unwrap_or(&chosen);
    let kind = super::FactorKind::Webauthn.as_str();
    let mut tx = state.store.begin().await?;
    let first = store::count_confirmed(&mut *tx, user_id).await? == 0;
    let row = NewFactor {
        id: &id,
        user_id,
        kind,
        name,
        secret: &sealed,
        credential_id: Some(&credential_id),
        now,
    };
    match store::insert_confirmed(&mut tx, &row).await {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(in_use()),
        other => other?,
    }
    let recovery_codes = super::enrolled(&mut tx, user_id, &id, kind, first, ctx, now).await?;
    tx.commit().await?;
    let factor = super::FactorView::new(&FactorRow {
        id,
        user_id: user_id.to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
        secret: Vec::new(),
        created_at: now,
        confirmed_at: Some(now),
        last_used_at: Some(now),
        last_step: None,
        credential_id: Some(credential_id),
    });
    Ok(super::Confirmed {
        factor,
        recovery_codes,
    })
}

/// Keeps what an assertion changed of the stored credential (its counter, its backup state)
/// and when it was used.
async fn used(
    state: &Core,
    row: &FactorRow,
    mut passkey: Passkey,
    result: &webauthn_rs::prelude::AuthenticationResult,
    now: i64,
) -> Result<()> {
    passkey.update_credential(result);
    let sealed = state
        .master
        .seal(&super::seal_context(&row.id), &encode(&passkey)?);
    store::used(state.store.writer(), &row.id, &sealed, now).await?;
    Ok(())
}

/// The second factor of a password sign-in: the assertion must answer the challenge's own
/// ceremony (single use) with one of the user's keys. `None` when it does not verify.
pub(super) async fn accept_second_factor(
    state: &Core,
    user_id: &str,
    ceremony: Option<&str>,
    assertion: &serde_json::Value,
    now: i64,
) -> Result<Option<&'static str>> {
    let rp = rp(state)?;
    let credential = parse_assertion(assertion)?;
    let Some(ceremony) = ceremony else {
        return Err(Error::invalid(
            "method",
            "this account has no passkey or security key",
        ));
    };
    let Ceremony::SecondFactor {
        user_id: owner,
        state: auth,
    } = take(state, ceremony, now).await?
    else {
        return Err(ceremony_gone());
    };
    if owner != user_id {
        return Err(ceremony_gone());
    }
    let Ok(result) = rp.finish_passkey_authentication(&credential, &auth) else {
        return Ok(None);
    };
    let Some(row) = store::find_by_credential(state.store.pool(), &credential_id(result.cred_id()))
        .await?
        .filter(|r| r.user_id == user_id)
    else {
        return Ok(None);
    };
    used(state, &row, passkey_of(state, &row)?, &result, now).await?;
    Ok(Some(second_factor_amr(result.backup_eligible())))
}

/// Starts a passwordless sign-in: options without allowed credentials, for the browser to
/// offer the discoverable ones it holds for this site. Throttled per IP.
pub async fn passkey_start(state: &Core, ctx: &RequestContext, now: i64) -> Result<Started> {
    let rp = rp(state)?;
    let ip = ctx.ip.as_deref().unwrap_or("");
    state.limiter.check(Class::LoginIp, ip, now).await?;
    let (options, auth) = start_discoverable(rp)?;
    let id = stash(state, Ceremony::Passkey { state: auth }, now).await?;
    started(id, &options)
}

/// Finishes a passwordless sign-in: the user the verified assertion's credential belongs to
/// (its user handle must name the same account), and the sign-in's RFC 8176 methods. A wrong
/// or unknown credential is `invalid_credentials`, audited and evented when it names an account.
pub async fn passkey_finish(
    state: &Core,
    ceremony: &str,
    assertion: &serde_json::Value,
    ctx: &RequestContext,
    now: i64,
) -> Result<(User, &'static str)> {
    let rp = rp(state)?;
    let credential = parse_assertion(assertion)?;
    let ip = ctx.ip.as_deref().unwrap_or("");
    state.limiter.check(Class::LoginIp, ip, now).await?;
    let Ceremony::Passkey { state: auth } = take(state, ceremony, now).await? else {
        return Err(ceremony_gone());
    };
    let (handle, credential_id) =
        identify(rp, &credential).ok_or_else(Error::invalid_credentials)?;
    let Some(row) = store::find_by_credential(state.store.pool(), &credential_id)
        .await?
        .filter(|r| r.user_id == handle.to_string())
    else {
        return Err(Error::invalid_credentials());
    };
    let user = users::find_by_id(state.store.pool(), &row.user_id)
        .await?
        .filter(User::is_active)
        .ok_or_else(Error::invalid_credentials)?;
    let passkey = passkey_of(state, &row)?;
    let Some(result) = finish_discoverable(rp, &credential, auth, &passkey) else {
        passkey_failed(state, &user.id, ctx, now).await?;
        return Err(Error::invalid_credentials());
    };
    used(state, &row, passkey, &result, now).await?;
    if state.config.require_verified_email && user.email_verified_at.is_none() {
        return Err(Error::Forbidden {
            code: Code::EmailNotVerified,
            message: "verify your email address before logging in",
        });
    }
    crate::tenants::domains::join_at_sign_in(state, &user, ctx, now).await?;
    Ok((user, passkey_amr(result.backup_eligible())))
}

async fn passkey_failed(state: &Core, user_id: &str, ctx: &RequestContext, now: i64) -> Result<()> {
    let method = super::Method::Webauthn.as_str();
    crate::metrics::login(method, "failure");
    let entry =
        Entry::failure(Actor::User(user_id), action::MFA_CHALLENGE, method).target("user", user_id);
    let event = MfaChallengeFailedV1 {
        user_id: user_id.to_string(),
        method: method.to_string(),
        ip: ctx.ip.clone(),
        user_agent: ctx.user_agent.clone(),
    };
    let mut tx = state.store.begin().await?;
    audit::record(&mut *tx, ctx, &entry, now).await?;
    events::append(&mut tx, ctx, &event, now).await?;
    tx.commit().await?;
    Ok(())
}

/// The user's confirmed WebAuthn factors, as the API shows them.
pub async fn list_for(state: &Core, user_id: &str) -> Result<Vec<super::FactorView>> {
    Ok(store::confirmed(state.store.pool(), user_id)
        .await?
        .iter()
        .filter(|r| r.kind == super::FactorKind::Webauthn.as_str())
        .map(super::FactorView::new)
        .collect())
}
