//! Sign-in through other identity providers (docs/federation.md): the upstream OpenID Connect
//! providers an operator configures ([`add`], [`update`], [`remove`], [`list`]), the upstream
//! identities linked to local accounts ([`identities`], [`unlink`]), and the sign-in itself
//! ([`signin`], over the relying-party client of [`upstream`]).
//!
//! The linking rules are the point (an upstream identity must never be merged into an account its
//! holder does not own): see [`signin::resolve`].

pub mod email_proof;
pub mod github;
pub mod signin;
pub mod upstream;

use serde::{Deserialize, Serialize};

use crate::audit::{self, By, Entry, action};
use crate::authz::{self, Permission, Principal};
use crate::clock::rfc3339;
use crate::core::Core;
use crate::error::{Code, Error, FieldError, Result};
use crate::events::{self, IdentityUnlinkedV1};
use crate::store::federation::{self as store, IdentityRow, ProviderRow};
use crate::store::is_unique_violation;

/// What managing providers needs: the store, the master key (which seals client secrets) and
/// the issuer (in the redirect URI). The service passes its [`Core`], the CLI builds one.
#[derive(Clone, Copy)]
pub struct Providers<'a> {
    pub store: &'a crate::store::Store,
    pub master: &'a crate::crypto::MasterKey,
    pub issuer: &'a str,
}

impl<'a> From<&'a Core> for Providers<'a> {
    fn from(core: &'a Core) -> Self {
        Self {
            store: &core.store,
            master: &core.master,
            issuer: &core.config.issuer,
        }
    }
}

/// The associated data a provider's client secret is sealed with (bound to the provider's name).
pub fn secret_context(name: &str) -> String {
    format!("identity_provider:{name}")
}

/// Which upstream claim gives each of the four a sign-in reads; the defaults are OIDC Core §5.1's
/// names. An absent `email_verified` always counts as unverified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimMap {
    pub email: String,
    pub email_verified: String,
    pub name: String,
    pub picture: String,
}

impl Default for ClaimMap {
    fn default() -> Self {
        Self {
            email: "email".into(),
            email_verified: "email_verified".into(),
            name: "name".into(),
            picture: "picture".into(),
        }
    }
}

/// How Tessera speaks to a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// OpenID Connect: discovery from the issuer, an ID token ([`upstream`]).
    Oidc,
    /// GitHub: plain OAuth 2.0 and GitHub's REST user API ([`github`]); the "issuer" is the
    /// GitHub base URL (`https://github.com`, or a GitHub Enterprise Server's).
    Github,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oidc => "oidc",
            Self::Github => "github",
        }
    }

    /// The kind stored with a provider (OpenID Connect for anything unknown).
    pub fn of(row: &ProviderRow) -> Self {
        if row.kind == Self::Github.as_str() {
            Self::Github
        } else {
            Self::Oidc
        }
    }

    fn default_scopes(self) -> &'static str {
        match self {
            Self::Oidc => "openid email profile",
            // The profile, and the addresses with their verification (`/user/emails`).
            Self::Github => "read:user user:email",
        }
    }
}

/// Providers whose settings are known: configuration only (the kind, the issuer, a display
/// name, the scopes). Microsoft Entra ID needs the directory's own issuer, so `issuer` must be
/// given too; GitHub Enterprise Server takes its own base URL as `issuer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Google,
    Gitlab,
    Microsoft,
    Github,
}

impl Preset {
    fn issuer(self) -> Option<&'static str> {
        match self {
            Self::Google => Some("https://accounts.google.com"),
            Self::Gitlab => Some("https://gitlab.com"),
            Self::Github => Some(github::GITHUB_COM),
            Self::Microsoft => None,
        }
    }

    fn display_name(self) -> &'static str {
        match self {
            Self::Google => "Google",
            Self::Gitlab => "GitLab",
            Self::Microsoft => "Microsoft",
            Self::Github => "GitHub",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Self::Github => Kind::Github,
            Self::Google | Self::Gitlab | Self::Microsoft => Kind::Oidc,
        }
    }
}

/// A provider to add, or the fields an update changes (an absent field stays as it is).
#[derive(Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// Lower-case letters, digits, `-` and `_`, at most 32 (in the callback URL). Create only.
    pub name: Option<String>,
    /// Fills in what a known provider needs; explicit fields win.
    pub preset: Option<Preset>,
    /// Shown on the sign-in page.
    pub display_name: Option<String>,
    /// The upstream's issuer, pinned: discovery must name exactly this issuer (GitHub: its base
    /// URL). `https`, or `http` on a loopback address (development).
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    /// Sealed at rest; never shown again.
    #[schema(format = Password)]
    pub client_secret: Option<String>,
    /// Asked of the upstream; `openid` is always added for OpenID Connect. Default
    /// `openid email profile` (GitHub: `read:user user:email`).
    pub scopes: Option<Vec<String>>,
    pub claims: Option<ClaimMap>,
    /// Just-in-time creation: a first sign-in with a verified address no account uses creates
    /// the account. Off by default.
    pub jit: Option<bool>,
}

impl std::fmt::Debug for ProviderSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSpec")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// A provider as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProviderView {
    pub name: String,
    pub kind: Kind,
    pub display_name: String,
    pub issuer: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub claims: ClaimMap,
    pub jit: bool,
    /// The redirect URI to register at the upstream.
    pub redirect_uri: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProviderList {
    pub providers: Vec<ProviderView>,
}

impl ProviderView {
    fn new(row: &ProviderRow, issuer: &str) -> Self {
        Self {
            name: row.name.clone(),
            kind: Kind::of(row),
            display_name: row.display_name.clone(),
            issuer: row.issuer.clone(),
            client_id: row.client_id.clone(),
            scopes: row.scopes.split(' ').map(str::to_string).collect(),
            claims: claim_map(row),
            jit: row.jit != 0,
            redirect_uri: redirect_uri(issuer, &row.name),
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
        }
    }
}

/// `<issuer>/auth/federated/NAME/callback`: where the upstream sends the browser back.
pub fn redirect_uri(issuer: &str, name: &str) -> String {
    format!(
        "{}/auth/federated/{name}/callback",
        issuer.trim_end_matches('/')
    )
}

/// The claim mapping stored with a provider (the defaults if it does not parse).
pub fn claim_map(row: &ProviderRow) -> ClaimMap {
    serde_json::from_str(&row.claims).unwrap_or_default()
}

/// Adds a provider. A taken name is 409 `provider_exists`.
pub async fn add(
    state: Providers<'_>,
    spec: ProviderSpec,
    by: By<'_>,
    now: i64,
) -> Result<ProviderView> {
    authz::require(by.principal, Permission::ManageIdentityProviders)?;
    let mut row = ProviderRow {
        name: String::new(),
        kind: Kind::Oidc.as_str().into(),
        display_name: String::new(),
        issuer: String::new(),
        client_id: String::new(),
        client_secret: Vec::new(),
        scopes: Kind::Oidc.default_scopes().into(),
        claims: serde_json::to_string(&ClaimMap::default()).unwrap_or_default(),
        jit: 0,
        created_at: now,
        updated_at: now,
    };
    let mut errors = Vec::new();
    match spec.name.as_deref() {
        Some(name) if valid_name(name) => row.name = name.to_string(),
        _ => errors.push(FieldError::new(
            "name",
            "is required: 1 to 32 lower-case letters, digits, '-' or '_'",
        )),
    }
    for (field, given) in [
        ("client_id", spec.client_id.is_some()),
        ("client_secret", spec.client_secret.is_some()),
    ] {
        if !given {
            errors.push(FieldError::new(field, "is required"));
        }
    }
    if spec.issuer.is_none() && spec.preset.and_then(Preset::issuer).is_none() {
        errors.push(FieldError::new("issuer", "is required"));
    }
    apply(state, &mut row, spec, errors)?;
    let mut tx = state.store.begin().await?;
    match store::insert_provider(&mut *tx, &row).await {
        Ok(()) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::Conflict {
                code: Code::ProviderExists,
                message: "an identity provider of this name exists already",
            });
        }
        Err(e) => return Err(e.into()),
    }
    let entry = Entry::success(by.actor(), action::CREATE_IDP).target("idp", &row.name);
    audit::record(&mut *tx, by.ctx, &entry, now).await?;
    tx.commit().await?;
    Ok(ProviderView::new(&row, state.issuer))
}

/// Changes a provider; an absent field stays as it is.
pub async fn update(
    state: Providers<'_>,
    name: &str,
    spec: ProviderSpec,
    by: By<'_>,
    now: i64,
) -> Result<ProviderView> {
    authz::require(by.principal, Permission::ManageIdentityProviders)?;
    let mut row = store::find_provider(state.store.pool(), name)
        .await?
        .ok_or(Error::NotFound)?;
    let mut errors = Vec::new();
    if spec.name.as_deref().is_some_and(|n| n != name) {
        errors.push(FieldError::new("name", "cannot be changed"));
    }
    let (issuer, kind) = (row.issuer.clone(), row.kind.clone());
    row.updated_at = now;
    apply(state, &mut row, spec, errors)?;
    let mut tx = state.store.begin().await?;
    // OIDC Core §2: `sub` is unique only within its issuer. Under another issuer (or kind) a
    // linked subject would name somebody else, so the links would sign the wrong people in.
    if row.issuer != issuer || row.kind != kind {
        if store::has_identities(&mut *tx, name).await? {
            return Err(Error::Conflict {
                code: Code::ProviderInUse,
                message: "identities are linked through this provider: its issuer and kind cannot change; remove it and add it again",
            });
        }
        // Links on their way (emailed, or on a linking page) name the old upstream's subjects:
        // they stop working (the pages check the issuer they were read under).
        store::delete_link_tokens(&mut tx, name).await?;
    }
    if !store::update_provider(&mut *tx, &row).await? {
        return Err(Error::NotFound);
    }
    let entry = Entry::success(by.actor(), action::UPDATE_IDP).target("idp", name);
    audit::record(&mut *tx, by.ctx, &entry, now).await?;
    tx.commit().await?;
    Ok(ProviderView::new(&row, state.issuer))
}

/// Removes a provider with its links; domains bound to it sign in with passwords again.
pub async fn remove(state: Providers<'_>, name: &str, by: By<'_>, now: i64) -> Result<()> {
    authz::require(by.principal, Permission::ManageIdentityProviders)?;
    let mut tx = state.store.begin().await?;
    if !store::delete_provider(&mut tx, name).await? {
        return Err(Error::NotFound);
    }
    let entry = Entry::success(by.actor(), action::DELETE_IDP).target("idp", name);
    audit::record(&mut *tx, by.ctx, &entry, now).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn list(state: Providers<'_>, principal: &Principal) -> Result<ProviderList> {
    authz::require(principal, Permission::ManageIdentityProviders)?;
    let rows = store::providers(state.store.pool()).await?;
    Ok(ProviderList {
        providers: rows
            .iter()
            .map(|r| ProviderView::new(r, state.issuer))
            .collect(),
    })
}

pub async fn get(state: Providers<'_>, principal: &Principal, name: &str) -> Result<ProviderView> {
    authz::require(principal, Permission::ManageIdentityProviders)?;
    let row = store::find_provider(state.store.pool(), name)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(ProviderView::new(&row, state.issuer))
}

/// What the sign-in page lists: name and display name of every provider (a change shows within
/// [`upstream::OFFERED_TTL`]).
pub async fn offered(state: &Core) -> Result<std::sync::Arc<Vec<(String, String)>>> {
    Ok(state.federation.offered(&state.store).await?)
}

/// The sign-in rule of an address's domain, when a verified domain of a tenant has one.
pub async fn route_of(state: &Core, email: &str) -> Result<Option<store::Route>> {
    // No address is longer (`validate_email`); a longer input is routed nowhere.
    if email.len() > 254 {
        return Ok(None);
    }
    let email = crate::store::users::normalize_email(email);
    let Some(domain) = email
        .rsplit_once('@')
        .and_then(|(_, d)| crate::tenants::domains::canonical_domain("email", d).ok())
    else {
        return Ok(None);
    };
    Ok(store::route(state.store.pool(), &domain)
        .await?
        .filter(|r| r.idp.is_some()))
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// An issuer Tessera may pin: an absolute `https` URL without query or fragment, or `http` on a
/// loopback address (a provider on this machine, for development and tests).
fn valid_issuer(issuer: &str) -> bool {
    let Ok(url) = url::Url::parse(issuer) else {
        return false;
    };
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    scheme_ok && url.query().is_none() && url.fragment().is_none() && url.username().is_empty()
}

/// Applies `spec` to `row`, validating the result as a whole (`errors`: found already).
fn apply(
    state: Providers<'_>,
    row: &mut ProviderRow,
    spec: ProviderSpec,
    mut errors: Vec<FieldError>,
) -> Result<()> {
    if let Some(preset) = spec.preset {
        let kind = preset.kind();
        if row.kind != kind.as_str() {
            row.kind = kind.as_str().into();
            row.scopes = kind.default_scopes().into();
        }
        row.display_name = preset.display_name().into();
        if let Some(issuer) = preset.issuer() {
            row.issuer = issuer.into();
        }
    }
    if let Some(name) = spec.display_name {
        match crate::accounts::validate_text("display_name", &name, 100) {
            Ok(()) if !name.trim().is_empty() => row.display_name = name.trim().to_string(),
            _ => errors.push(FieldError::new(
                "display_name",
                "must be 1 to 100 characters without control characters",
            )),
        }
    }
    if row.display_name.is_empty() {
        row.display_name = row.name.clone();
    }
    if let Some(issuer) = spec.issuer {
        row.issuer = issuer;
    }
    if !row.issuer.is_empty() && (row.issuer.len() > 512 || !valid_issuer(&row.issuer)) {
        errors.push(FieldError::new(
            "issuer",
            "must be an https URL of at most 512 characters (http only on a loopback address), without query or fragment",
        ));
    }
    let printable =
        |s: &str| !s.is_empty() && s.len() <= 512 && s.bytes().all(|b| b.is_ascii_graphic());
    if let Some(id) = spec.client_id {
        if printable(&id) {
            row.client_id = id;
        } else {
            errors.push(FieldError::new(
                "client_id",
                "must be 1 to 512 printable characters",
            ));
        }
    }
    if let Some(secret) = &spec.client_secret
        && (secret.is_empty() || secret.len() > 1024)
    {
        errors.push(FieldError::new("client_secret", "must be 1 to 1024 bytes"));
    }
    if let Some(scopes) = spec.scopes {
        if scopes.len() > 32 {
            errors.push(FieldError::new("scopes", "at most 32 entries"));
        }
        // OIDC Core §3.1.2.1: `openid` makes the request an OpenID Connect one.
        let mut list = match Kind::of(row) {
            Kind::Oidc => vec!["openid".to_string()],
            Kind::Github => Vec::new(),
        };
        for s in scopes {
            if !printable(&s) || s.contains('"') || s.contains('\\') {
                errors.push(FieldError::new(
                    "scopes",
                    "must be scope tokens (RFC 6749 §3.3)",
                ));
                break;
            }
            if !list.contains(&s) {
                list.push(s);
            }
        }
        row.scopes = list.join(" ");
    }
    if let Some(claims) = spec.claims {
        let names = [
            &claims.email,
            &claims.email_verified,
            &claims.name,
            &claims.picture,
        ];
        if names
            .iter()
            .any(|c| c.is_empty() || c.len() > 64 || c.chars().any(char::is_control))
        {
            errors.push(FieldError::new(
                "claims",
                "each claim name must be 1 to 64 characters",
            ));
        }
        row.claims = serde_json::to_string(&claims).unwrap_or_default();
    }
    if let Some(jit) = spec.jit {
        row.jit = i64::from(jit);
    }
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    if let Some(secret) = spec.client_secret {
        row.client_secret = state
            .master
            .seal(&secret_context(&row.name), secret.as_bytes());
    }
    Ok(())
}

/// An upstream identity as its holder sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IdentityView {
    pub id: String,
    /// The provider's name.
    pub provider: String,
    /// The address the upstream gave when the identity was linked.
    pub email: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

impl From<&IdentityRow> for IdentityView {
    fn from(r: &IdentityRow) -> Self {
        Self {
            id: r.id.clone(),
            provider: r.provider.clone(),
            email: r.email.clone(),
            created_at: rfc3339(r.created_at),
            last_used_at: r.last_used_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IdentityList {
    pub identities: Vec<IdentityView>,
}

/// `GET /identity/identities`: the caller's linked upstream identities.
pub async fn identities(state: &Core, principal: &Principal) -> Result<IdentityList> {
    let caller = authz::require_user(principal, Permission::ReadOwnAccount)?;
    let rows = store::identities_of(state.store.pool(), &caller.user_id).await?;
    Ok(IdentityList {
        identities: rows.iter().map(IdentityView::from).collect(),
    })
}

/// `DELETE /identity/identities/{id}`: unlinks one, while another way to sign in remains (a
/// password, a passkey, or another identity); else 409 `last_sign_in_method`.
pub async fn unlink(
    state: &Core,
    principal: &Principal,
    id: &str,
    ctx: &crate::context::RequestContext,
    now: i64,
) -> Result<()> {
    let caller = authz::require_user(principal, Permission::ManageOwnAccount)?;
    let user_id = caller.user_id.as_str();
    let mut tx = state.store.begin().await?;
    let user = crate::store::users::find_by_id(&mut *tx, user_id)
        .await?
        .ok_or(Error::NotFound)?;
    let others = store::identities_of(&mut *tx, user_id)
        .await?
        .iter()
        .filter(|r| r.id != id)
        .count();
    let passkeys = crate::store::mfa::confirmed(&mut *tx, user_id)
        .await?
        .iter()
        .filter(|f| f.kind == crate::mfa::FactorKind::Webauthn.as_str())
        .count();
    let Some(row) = store::unlink(&mut *tx, user_id, id).await? else {
        return Err(Error::NotFound);
    };
    if user.password_hash.is_none() && passkeys == 0 && others == 0 {
        return Err(Error::Conflict {
            code: Code::LastSignInMethod,
            message: "this is the account's only way to sign in; set a password first",
        });
    }
    let entry = Entry::success(principal.actor(), action::UNLINK_IDENTITY)
        .target("user", user_id)
        .reason(&row.provider);
    audit::record(&mut *tx, ctx, &entry, now).await?;
    let event = IdentityUnlinkedV1 {
        user_id: user_id.to_string(),
        identity_id: row.id.clone(),
        provider: row.provider.clone(),
    };
    events::append(&mut tx, ctx, &event, now).await?;
    tx.commit().await?;
    Ok(())
}
