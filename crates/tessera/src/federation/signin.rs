//! A federated sign-in from start to finish: [`begin`] sends the browser to the upstream,
//! [`complete`] checks what comes back and decides, by the linking rules of [`resolve`], whom
//! it signs in; [`prove_with_password`] (and the emailed link of [`super::email_proof`]) join an
//! upstream identity to an existing account whose holder has shown that it is theirs.
//!
//! The state between the two requests is sealed under the master key in the shared state, taken
//! exactly once (a replayed callback finds nothing), for at most ten minutes, and bound to the
//! browser that started it by a cookie whose digest it holds (login CSRF, RFC 9700 §4.7).

use serde::{Deserialize, Serialize};

use super::upstream::{self, Failure, UpstreamUser};
use crate::audit::{self, Actor, Entry, action};
use crate::context::RequestContext;
use crate::core::Core;
use crate::crypto::{b64url, ct_eq, random_bytes, token_hash};
use crate::error::{Error, Result};
use crate::events::{self, IdentityLinkedV1};
use crate::mfa::Challenge;
use crate::store::federation::{self as store, IdentityRow, ProviderRow};
use crate::store::users::{self, User};

/// How long a started sign-in may take at the upstream.
pub const FLOW_TTL_SECS: i64 = 600;
/// How long the page asking for the password of the account to link stays usable.
pub const PENDING_TTL_SECS: i64 = 600;
const FLOW_CONTEXT: &str = "federation_flow";
const PENDING_CONTEXT: &str = "federation_link";
const PENDING_PREFIX: &str = "tsr_link_";

/// What the callback needs, sealed.
#[derive(Serialize, Deserialize)]
struct Flow {
    provider: String,
    nonce: String,
    pkce_verifier: String,
    /// The digest of the browser's flow cookie.
    browser: String,
    /// The hosted authorization request the sign-in continues (form-encoded); empty for an
    /// application's sign-in.
    request: String,
    /// Where an application's sign-in returns.
    #[serde(default)]
    app: Option<AppReturn>,
    exp: i64,
}

/// Where a sign-in an application started (`/auth/federated/{idp}/start?client_id=…`) returns,
/// with a single-use login code its PKCE verifier redeems.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppReturn {
    pub client_id: String,
    /// One of the client's redirect URIs, exactly.
    pub return_to: String,
    /// RFC 7636 S256 challenge of the verifier that redeems the login code.
    pub code_challenge: String,
    /// Echoed back to the application.
    pub state: Option<String>,
}

/// An application's sign-in request, checked: an active first-party client, a `return_to` that
/// is exactly one of its redirect URIs (no open redirect), and an S256 PKCE challenge.
pub async fn check_app(
    state: &Core,
    client_id: &str,
    return_to: &str,
    code_challenge: &str,
    method: Option<&str>,
    app_state: Option<&str>,
) -> Result<AppReturn> {
    let client = crate::oauth::clients::find_active(&state.store, &state.clients, client_id)
        .await?
        .filter(|c| c.first_party)
        .ok_or_else(|| Error::invalid("client_id", "must be an active first-party client"))?;
    if !client.has_redirect_uri(return_to) {
        return Err(Error::invalid(
            "return_to",
            "must be exactly one of the client's redirect URIs",
        ));
    }
    if method.unwrap_or("S256") != "S256" {
        return Err(Error::invalid("code_challenge_method", "must be S256"));
    }
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if !(43..=128).contains(&code_challenge.len()) || !code_challenge.bytes().all(unreserved) {
        return Err(Error::invalid(
            "code_challenge",
            "must be an RFC 7636 S256 challenge (43 to 128 unreserved characters)",
        ));
    }
    if app_state.is_some_and(|s| s.len() > 512) {
        return Err(Error::invalid("state", "must be at most 512 characters"));
    }
    Ok(AppReturn {
        client_id: client.client_id.clone(),
        return_to: return_to.to_string(),
        code_challenge: code_challenge.to_string(),
        state: app_state.map(str::to_string),
    })
}

fn flow_key(state_param: &str) -> String {
    format!("federation:{}", token_hash(state_param))
}

/// A started sign-in: where to send the browser, and the cookie that binds the flow to it.
pub struct Begun {
    pub url: String,
    pub browser_token: String,
}

/// Starts a sign-in at provider `name` that continues authorization request `request` (the
/// hosted pages) or returns to application `app`.
pub async fn begin(
    state: &Core,
    name: &str,
    request: &str,
    app: Option<AppReturn>,
    now: i64,
) -> Result<Begun> {
    let provider = store::find_provider(state.store.pool(), name)
        .await?
        .ok_or(Error::NotFound)?;
    let hint = crate::oauth::parse_params(request.as_bytes())
        .ok()
        .and_then(|p| p.get("login_hint").map(str::to_string));
    let started = upstream::start(state, &provider, hint.as_deref())
        .await
        .map_err(|e| unavailable(&provider, &e))?;
    let browser_token = b64url(&random_bytes::<32>());
    let flow = Flow {
        provider: provider.name.clone(),
        nonce: started.nonce,
        pkce_verifier: started.pkce_verifier,
        browser: token_hash(&browser_token),
        request: request.to_string(),
        app,
        exp: now + FLOW_TTL_SECS,
    };
    let key = flow_key(&started.state);
    stash_sealed(state, FLOW_CONTEXT, &key, &flow, FLOW_TTL_SECS).await?;
    Ok(Begun {
        url: started.url.to_string(),
        browser_token,
    })
}

fn unavailable(provider: &ProviderRow, e: &Failure) -> Error {
    tracing::warn!(provider = %provider.name, error = %e, "identity provider unavailable");
    Error::Unavailable("the identity provider cannot be reached")
}

/// The authorization response the upstream sent the browser back with (RFC 6749 §4.1.2,
/// RFC 9207 §2).
pub struct Callback<'a> {
    pub provider: &'a str,
    pub state: Option<&'a str>,
    pub code: Option<&'a str>,
    pub error: Option<&'a str>,
    pub iss: Option<&'a str>,
    /// The browser's flow cookie.
    pub browser_token: Option<&'a str>,
}

/// Why a federated sign-in stopped; each is its own page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No started sign-in matches (expired, replayed, or another browser's).
    Expired,
    /// The answer came from another issuer than the provider's (RFC 9207 mix-up defence).
    WrongIssuer,
    /// The user (or the upstream) ended the sign-in there.
    Denied,
    /// The upstream's answer failed a check (ID token, nonce, code exchange).
    Rejected,
    /// The upstream gave no usable address.
    NoEmail,
    /// Just-in-time creation needs an address the upstream has verified.
    Unverified,
    /// No account uses the address, and this provider creates none.
    NoAccount,
    /// The account at this address is deactivated.
    Deactivated,
    /// The address's domain signs in through another provider (enterprise routing).
    OtherProvider,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Self::Expired => {
                "This sign-in expired or was used already. Go back to the application and sign in again."
            }
            Self::WrongIssuer => {
                "The answer did not come from the identity provider it was sent to. Sign in again."
            }
            Self::Denied => "The sign-in was cancelled at the identity provider.",
            Self::OtherProvider => {
                "Addresses at this domain sign in through their organisation's identity provider. Enter your email address on the sign-in page."
            }
            Self::Rejected => {
                "The identity provider's answer could not be verified. Sign in again."
            }
            Self::NoEmail => "The identity provider did not share a valid email address.",
            Self::Unverified => {
                "The identity provider has not verified your email address, so no account can be created with it."
            }
            Self::NoAccount => {
                "No account uses this email address. Sign up first, then link the provider."
            }
            Self::Deactivated => "This account is deactivated.",
        }
    }
}

/// Where a federated sign-in ended.
pub enum Outcome {
    /// Signed in with the upstream identity (RFC 8176 `fed`) as `user`.
    SignedIn {
        user: User,
        via: String,
    },
    /// The account has a second factor; the challenge carries the federated first factor.
    MfaRequired {
        challenge: Box<Challenge>,
        user_id: String,
        via: String,
    },
    /// An account uses the address, but the link needs the holder to show it is theirs: its
    /// password (when it has one) or an emailed link, on a page that carries `pending`.
    ProveOwnership {
        pending: String,
        email: String,
        provider: String,
        /// Whether the account has a password to give.
        password: bool,
    },
    Refused(Refusal),
}

/// A finished callback: the authorization request it continues (empty when the flow was not
/// found, or for an application's sign-in), where an application's sign-in returns, and its
/// outcome.
pub struct Completed {
    pub request: String,
    pub app: Option<AppReturn>,
    pub outcome: Outcome,
}

/// Checks the callback against the flow it names, then the upstream's answer, then decides.
pub async fn complete(
    state: &Core,
    cb: Callback<'_>,
    ctx: &RequestContext,
    now: i64,
) -> Result<Completed> {
    let Some(mut flow) = take_flow(state, cb.state, now).await? else {
        return Ok(Completed {
            request: String::new(),
            app: None,
            outcome: Outcome::Refused(Refusal::Expired),
        });
    };
    let app = flow.app.take();
    let refused = |request: String, why: Refusal| Completed {
        request,
        app: app.clone(),
        outcome: Outcome::Refused(why),
    };
    let same_browser = cb
        .browser_token
        .is_some_and(|t| ct_eq(token_hash(t).as_bytes(), flow.browser.as_bytes()));
    if flow.provider != cb.provider || !same_browser {
        // Not this browser's: nothing goes back to the application either.
        return Ok(Completed {
            request: String::new(),
            app: None,
            outcome: Outcome::Refused(Refusal::Expired),
        });
    }
    let Some(provider) = store::find_provider(state.store.pool(), &flow.provider).await? else {
        return Ok(refused(flow.request, Refusal::Expired));
    };
    // RFC 9207 §2.4: an `iss` must be the provider's; one that says it sends it must send it.
    let sends_iss = upstream::sends_iss(state, &provider)
        .await
        .map_err(|e| unavailable(&provider, &e))?;
    match cb.iss {
        Some(iss) if iss != provider.issuer => {
            tracing::warn!(provider = %provider.name, "authorization response from another issuer (RFC 9207)");
            return Ok(refused(flow.request, Refusal::WrongIssuer));
        }
        None if sends_iss => return Ok(refused(flow.request, Refusal::WrongIssuer)),
        _ => {}
    }
    let code = match (cb.code, cb.error) {
        (Some(code), None) if !code.is_empty() && code.len() <= 2048 => code,
        _ => return Ok(refused(flow.request, Refusal::Denied)),
    };
    let found = upstream::finish(state, &provider, code, &flow.pkce_verifier, &flow.nonce).await;
    let upstream_user = match found {
        Ok(u) => u,
        Err(Failure::Refused(why)) => {
            tracing::warn!(provider = %provider.name, reason = %why, "upstream sign-in refused");
            return Ok(refused(flow.request, Refusal::Rejected));
        }
        Err(e) => return Err(unavailable(&provider, &e)),
    };
    let outcome = resolve(state, &provider, upstream_user, ctx, now).await?;
    Ok(Completed {
        request: flow.request,
        app,
        outcome,
    })
}

async fn take_flow(state: &Core, state_param: Option<&str>, now: i64) -> Result<Option<Flow>> {
    let Some(param) = state_param.filter(|s| !s.is_empty() && s.len() <= 256) else {
        return Ok(None);
    };
    let flow: Option<Flow> = take_sealed(state, FLOW_CONTEXT, &flow_key(param)).await?;
    Ok(flow.filter(|f| f.exp > now))
}

/// Keeps `value` in the shared state under `key`, sealed under the master key (`context`), for
/// one [`take_sealed`] within `ttl_secs`.
async fn stash_sealed<T: Serialize>(
    state: &Core,
    context: &str,
    key: &str,
    value: &T,
    ttl_secs: i64,
) -> Result<()> {
    let plain = serde_json::to_vec(value).map_err(|e| Error::internal(anyhow::Error::from(e)))?;
    let sealed = state.master.seal(context, &plain);
    let ttl = u64::try_from(ttl_secs).unwrap_or(0);
    state.shared.stash(key, &sealed, ttl).await
}

/// Takes what [`stash_sealed`] kept under `key`: `None` when there is nothing, or it does not
/// open or parse (the caller checks its expiry).
async fn take_sealed<T: serde::de::DeserializeOwned>(
    state: &Core,
    context: &str,
    key: &str,
) -> Result<Option<T>> {
    let Some(sealed) = state.shared.take_stashed(key).await? else {
        return Ok(None);
    };
    Ok(state
        .master
        .open(context, &sealed)
        .ok()
        .and_then(|plain| serde_json::from_slice(&plain).ok()))
}

/// The linking rules (docs/federation.md):
/// 1. An upstream identity linked already signs in its account.
/// 2. Else, with an account at the upstream's address: linked at once only when both the
///    upstream and Tessera hold the address as verified; otherwise its holder must show that
///    the account is theirs (its password, or an emailed link) before the link is made. Merging into an address
///    nobody verified is how accounts are taken over.
/// 3. Else an account is created just in time, only when the provider allows it and the
///    upstream has verified the address.
///
/// A verified domain bound to a provider (enterprise routing) makes that provider's word on its
/// addresses count as verified and creates their accounts; other providers get nothing there.
pub async fn resolve(
    state: &Core,
    provider: &ProviderRow,
    upstream: UpstreamUser,
    ctx: &RequestContext,
    now: i64,
) -> Result<Outcome> {
    // OIDC Core §2: `sub` is at most 255 ASCII characters (nothing longer is stored).
    if upstream.subject.is_empty() || upstream.subject.len() > 255 {
        return Ok(Outcome::Refused(Refusal::Rejected));
    }
    if let Some(linked) =
        store::find_identity(state.store.pool(), &provider.name, &upstream.subject).await?
    {
        let user = users::find_by_id(state.store.pool(), &linked.user_id).await?;
        let Some(user) = user.filter(User::is_active) else {
            return Ok(Outcome::Refused(Refusal::Deactivated));
        };
        store::touch(state.store.writer(), &linked.id, now).await?;
        return sign_in(state, user, provider, ctx, now).await;
    }
    let email = upstream
        .email
        .as_deref()
        .and_then(|e| crate::accounts::validate_email("email", e).ok());
    let Some(email) = email else {
        return Ok(Outcome::Refused(Refusal::NoEmail));
    };
    // Enterprise routing: the provider a tenant bound the address's domain to vouches for its
    // addresses (the operator verified the domain, the tenant chose the provider), and creates
    // their accounts; no other provider may link or create an account there.
    let (verified, jit) = match super::route_of(state, &email).await?.and_then(|r| r.idp) {
        Some(bound) if bound == provider.name => (true, true),
        Some(_) => return Ok(Outcome::Refused(Refusal::OtherProvider)),
        None => (upstream.email_verified, provider.jit != 0),
    };
    let link = NewLink {
        provider: &provider.name,
        subject: &upstream.subject,
        email: &email,
    };
    match users::find_by_email(state.store.pool(), &email).await? {
        Some(user) if !user.is_active() => Ok(Outcome::Refused(Refusal::Deactivated)),
        Some(user) if verified && user.email_verified_at.is_some() => {
            let mut tx = state.store.begin().await?;
            link_in(&mut tx, &user.id, &link, "verified_email", ctx, now).await?;
            tx.commit().await?;
            sign_in(state, user, provider, ctx, now).await
        }
        Some(user) => Ok(Outcome::ProveOwnership {
            pending: seal_pending(state, &user.id, provider, &link, now),
            password: user.password_hash.is_some(),
            email: user.email,
            provider: provider.display_name.clone(),
        }),
        None if !jit => Ok(Outcome::Refused(Refusal::NoAccount)),
        None if !verified => Ok(Outcome::Refused(Refusal::Unverified)),
        None => {
            let name = upstream
                .name
                .map(|n| n.chars().take(100).collect::<String>())
                .filter(|n| crate::accounts::validate_text("display_name", n, 100).is_ok());
            let mut tx = state.store.begin().await?;
            let user =
                crate::accounts::create_federated_in(&mut tx, &email, name.as_deref(), ctx, now)
                    .await?;
            link_in(&mut tx, &user.id, &link, "created", ctx, now).await?;
            tx.commit().await?;
            sign_in(state, user, provider, ctx, now).await
        }
    }
}

/// Signs `user` in with the upstream identity: a local second factor is still required.
async fn sign_in(
    state: &Core,
    user: User,
    provider: &ProviderRow,
    ctx: &RequestContext,
    now: i64,
) -> Result<Outcome> {
    if user.second_factors > 0 {
        let challenge =
            crate::mfa::challenge_after(state, &user, None, Some(&provider.name), now).await?;
        return Ok(Outcome::MfaRequired {
            challenge: Box::new(challenge),
            user_id: user.id,
            via: provider.name.clone(),
        });
    }
    crate::tenants::domains::join_at_sign_in(state, &user, ctx, now).await?;
    Ok(Outcome::SignedIn {
        user,
        via: provider.name.clone(),
    })
}

/// An upstream identity to link.
#[derive(Serialize, Deserialize)]
pub(super) struct NewLink<'a> {
    pub provider: &'a str,
    pub subject: &'a str,
    pub email: &'a str,
}

/// Links the identity to `user_id` in `tx`, with its audit entry and `IdentityLinkedV1` (`via`:
/// how ownership was shown); returns the new identity's id.
pub(super) async fn link_in(
    tx: &mut crate::store::Tx,
    user_id: &str,
    link: &NewLink<'_>,
    via: &'static str,
    ctx: &RequestContext,
    now: i64,
) -> Result<String> {
    let row = IdentityRow {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: user_id.to_string(),
        provider: link.provider.to_string(),
        subject: link.subject.to_string(),
        email: Some(link.email.to_string()),
        created_at: now,
        last_used_at: Some(now),
    };
    store::link(&mut **tx, &row).await?;
    let entry = Entry::success(Actor::User(user_id), action::LINK_IDENTITY)
        .target("user", user_id)
        .reason(via);
    audit::record(&mut **tx, ctx, &entry, now).await?;
    let event = IdentityLinkedV1 {
        user_id: user_id.to_string(),
        identity_id: row.id.clone(),
        provider: row.provider.clone(),
        via: via.to_string(),
    };
    events::append(tx, ctx, &event, now).await?;
    Ok(row.id)
}

/// What the page asking for the account's password carries, sealed.
#[derive(Serialize, Deserialize)]
pub(super) struct Pending {
    pub user_id: String,
    pub provider: String,
    pub subject: String,
    /// The address the upstream gave.
    pub email: String,
    /// The provider's issuer and kind when the subject was read: a `sub` means someone only
    /// under its issuer (OIDC Core §2).
    pub issuer: String,
    pub kind: String,
    pub exp: i64,
}

/// 401 `invalid_mfa_token`: the linking page's `pending` is forged, expired, or stale.
pub(super) fn link_expired() -> Error {
    Error::Unauthenticated {
        code: crate::error::Code::InvalidMfaToken,
        message: "the link request is invalid or expired; sign in again",
        bearer: false,
    }
}

/// The pending link of a linking page and its provider, which must still speak for the
/// upstream the subject was read from (a provider moved to another issuer since: its subjects
/// mean others there); else [`link_expired`].
pub(super) async fn pending_link(
    state: &Core,
    pending: &str,
    now: i64,
) -> Result<(Pending, ProviderRow)> {
    let p = open_pending(state, pending, now).ok_or_else(link_expired)?;
    let provider = store::find_provider(state.store.pool(), &p.provider)
        .await?
        .filter(|provider| provider.issuer == p.issuer && provider.kind == p.kind)
        .ok_or_else(link_expired)?;
    Ok((p, provider))
}

fn seal_pending(
    state: &Core,
    user_id: &str,
    provider: &ProviderRow,
    link: &NewLink<'_>,
    now: i64,
) -> String {
    let pending = Pending {
        user_id: user_id.to_string(),
        provider: link.provider.to_string(),
        subject: link.subject.to_string(),
        email: link.email.to_string(),
        issuer: provider.issuer.clone(),
        kind: provider.kind.clone(),
        exp: now + PENDING_TTL_SECS,
    };
    let plain = serde_json::to_vec(&pending).unwrap_or_default();
    format!(
        "{PENDING_PREFIX}{}",
        b64url(&state.master.seal(PENDING_CONTEXT, &plain))
    )
}

fn open_pending(state: &Core, token: &str, now: i64) -> Option<Pending> {
    use base64::Engine as _;
    let body = token
        .strip_prefix(PENDING_PREFIX)
        .filter(|b| b.len() <= 4096)?;
    let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .ok()?;
    let plain = state.master.open(PENDING_CONTEXT, &sealed).ok()?;
    serde_json::from_slice::<Pending>(&plain)
        .ok()
        .filter(|p| p.exp > now)
}

/// A link made after the password was shown.
pub enum Proven {
    /// Linked and signed in with the password.
    SignedIn(User),
    /// Linked; the account's second factor comes next.
    MfaRequired(Box<Challenge>),
}

/// The account's email of a pending link (for the page), if the token is valid.
pub fn pending_email(state: &Core, token: &str, now: i64) -> Option<String> {
    open_pending(state, token, now).map(|p| p.email)
}

/// Joins the pending upstream identity to its account once the account's password is given
/// (checked by [`crate::accounts::authenticate`], throttled and locked out like any password).
/// A right password that needs a second factor has still shown ownership: the link is made,
/// and the sign-in goes on with the factor. An expired or forged `pending` is
/// `invalid_mfa_token`-like 401 (`Unauthenticated`).
pub async fn prove_with_password(
    state: &Core,
    pending: &str,
    password: &str,
    ctx: &RequestContext,
    now: i64,
) -> Result<Proven> {
    let (p, _) = pending_link(state, pending, now).await?;
    let account = users::find_by_id(state.store.pool(), &p.user_id)
        .await?
        .ok_or_else(Error::invalid_credentials)?;
    let proven = match crate::accounts::authenticate(
        state,
        &account.email,
        password,
        None,
        ctx,
        now,
    )
    .await
    {
        Ok(user) => Proven::SignedIn(user),
        Err(Error::MfaRequired(challenge)) => Proven::MfaRequired(challenge),
        Err(e) => return Err(e),
    };
    let link = NewLink {
        provider: &p.provider,
        subject: &p.subject,
        email: &p.email,
    };
    let mut tx = state.store.begin().await?;
    match link_in(&mut tx, &account.id, &link, "password", ctx, now).await {
        Ok(_) => tx.commit().await?,
        // Linked meanwhile (the page posted twice): the link stands.
        Err(Error::Database(e)) if crate::store::is_unique_violation(&e) => {}
        Err(e) => return Err(e),
    }
    Ok(proven)
}

/// How long an application has to redeem a login code.
pub const LOGIN_CODE_TTL_SECS: i64 = 60;
const LOGIN_CODE_PREFIX: &str = "tsr_flc_";
const LOGIN_CODE_CONTEXT: &str = "federation_login_code";

/// What a login code stands for, sealed in the shared state.
#[derive(Serialize, Deserialize)]
struct LoginCode {
    user_id: String,
    via: String,
    client_id: String,
    code_challenge: String,
    exp: i64,
}

fn login_code_key(code: &str) -> String {
    format!("federation_code:{}", token_hash(code))
}

/// A single-use login code for `user_id`, signed in at provider `via`, for the application's
/// PKCE verifier to redeem within [`LOGIN_CODE_TTL_SECS`].
pub async fn issue_login_code(
    state: &Core,
    app: &AppReturn,
    user_id: &str,
    via: &str,
    now: i64,
) -> Result<String> {
    let code = crate::crypto::new_token(LOGIN_CODE_PREFIX);
    let grant = LoginCode {
        user_id: user_id.to_string(),
        via: via.to_string(),
        client_id: app.client_id.clone(),
        code_challenge: app.code_challenge.clone(),
        exp: now + LOGIN_CODE_TTL_SECS,
    };
    let key = login_code_key(&code);
    stash_sealed(state, LOGIN_CODE_CONTEXT, &key, &grant, LOGIN_CODE_TTL_SECS).await?;
    Ok(code)
}

/// The user and provider of a login code, taken once: `code_verifier` must hash to the
/// challenge the application started with (RFC 7636 §4.6, S256). Anything else is 401
/// `invalid_grant`, and the code is used up.
pub async fn redeem_login_code(
    state: &Core,
    code: &str,
    code_verifier: &str,
    now: i64,
) -> Result<(User, String)> {
    let invalid = || Error::Unauthenticated {
        code: crate::error::Code::InvalidGrant,
        message: "the login code is invalid, expired or used already, or the verifier is wrong",
        bearer: false,
    };
    if !code.starts_with(LOGIN_CODE_PREFIX) || code.len() > 128 || code_verifier.len() > 128 {
        return Err(invalid());
    }
    let grant: LoginCode = take_sealed(state, LOGIN_CODE_CONTEXT, &login_code_key(code))
        .await?
        .filter(|g: &LoginCode| g.exp > now)
        .ok_or_else(invalid)?;
    let challenge = token_hash(code_verifier);
    if !ct_eq(challenge.as_bytes(), grant.code_challenge.as_bytes()) {
        return Err(invalid());
    }
    let user = users::find_by_id(state.store.pool(), &grant.user_id)
        .await?
        .filter(User::is_active)
        .ok_or_else(invalid)?;
    Ok((user, grant.via))
}
