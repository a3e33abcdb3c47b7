//! OAuth clients: registration and management, and client authentication at the token,
//! introspection and revocation endpoints (RFC 6749 §2.3: `client_secret_basic`,
//! `client_secret_post`, and `none` for public clients).
//!
//! Secrets are 256-bit random strings shown once; only their SHA-256 is stored and compared in
//! constant time, so authenticating a client costs microseconds, not a password hash.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::OAuthError;
use crate::abuse::Limit;
use crate::audit::{self, By, Entry, action};
use crate::authz::{self, Permission, Principal};
use crate::crypto::{ct_eq, new_token, token_hash};
use crate::error::{Error, FieldError, Result};
use crate::shared::{Invalidation, Shared};
use crate::store::Store;
use crate::store::oauth::{self as store, ClientRow};
use crate::store::users::AccountStatus;

/// An OAuth grant a client may be registered for (RFC 6749 §4, §6; RFC 8693 §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
    Password,
    /// RFC 8693 token exchange: a token in hand (the client's own user token, or a tenant API
    /// key) for another token (another tenant, a narrower scope or audience, a short-lived JWT).
    TokenExchange,
}

impl Serialize for GrantType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// In the OpenAPI document: a string, one of the wire names.
impl utoipa::PartialSchema for GrantType {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(GrantType::names()))
            .into()
    }
}

impl utoipa::ToSchema for GrantType {}

/// `{"clients": […]}`: one page of clients.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClientList {
    pub clients: Vec<Client>,
}

impl GrantType {
    pub const ALL: [GrantType; 5] = [
        GrantType::AuthorizationCode,
        GrantType::RefreshToken,
        GrantType::ClientCredentials,
        GrantType::Password,
        GrantType::TokenExchange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::ClientCredentials => "client_credentials",
            GrantType::Password => "password",
            GrantType::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
        }
    }

    /// The `grant` label of `tessera_tokens_issued_total`.
    pub fn metric_label(self) -> &'static str {
        match self {
            GrantType::TokenExchange => "token_exchange",
            other => other.as_str(),
        }
    }

    /// The wire names, for discovery (`grant_types_supported`) and messages.
    pub fn names() -> [&'static str; 5] {
        Self::ALL.map(Self::as_str)
    }
}

impl std::str::FromStr for GrantType {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        Self::ALL.into_iter().find(|g| g.as_str() == s).ok_or(())
    }
}
const SECRET_PREFIX: &str = "tcs_";

/// A registered client.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    #[serde(skip)]
    secret_hash: Option<String>,
    /// `true` for public clients (no secret: browser and native apps, PKCE required).
    pub public: bool,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    pub scopes: Vec<String>,
    pub resources: Vec<String>,
    /// A first-party application of the operator's: may hold the `tessera:*` scopes, and its
    /// tokens carry the user's roles (see [`crate::authz`]).
    pub first_party: bool,
    /// Seconds a rotated-out refresh token is still honoured for this client (0 to 60).
    pub refresh_reuse_grace: i64,
    /// Token-endpoint and introspection limit for this client; `None`: the configured default.
    pub rate_limit: Option<Limit>,
    /// May introspect any token (RFC 7662 §4), not only its own and its audience's.
    pub may_introspect: bool,
    /// Every sign-in this client gets a code from must reach this class (`acr`), whatever the
    /// request asks; a user who cannot is sent back with `unmet_authentication_requirements`.
    #[schema(value_type = Option<String>)]
    pub require_acr: Option<crate::mfa::acr::Acr>,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

impl From<ClientRow> for Client {
    fn from(r: ClientRow) -> Self {
        Self {
            public: r.secret_hash.is_none(),
            client_id: r.id,
            name: r.name,
            secret_hash: r.secret_hash,
            redirect_uris: words(&r.redirect_uris),
            post_logout_redirect_uris: words(&r.post_logout_redirect_uris),
            // Names outside the enum cannot be stored (`apply` validates); skip any from the future.
            grant_types: r
                .grant_types
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect(),
            scopes: words(&r.scopes),
            resources: words(&r.resources),
            first_party: r.first_party == 1,
            refresh_reuse_grace: r.refresh_reuse_grace,
            rate_limit: match (r.rate_limit_burst, r.rate_limit_per_minute) {
                (Some(burst), Some(per_minute)) => Some(Limit::new(
                    u32::try_from(burst).unwrap_or(u32::MAX),
                    u32::try_from(per_minute).unwrap_or(u32::MAX),
                )),
                _ => None,
            },
            may_introspect: r.may_introspect == 1,
            // Only known classes are stored (`apply` validates); anything else counts as the
            // strongest, so a damaged row fails closed.
            require_acr: r
                .require_acr
                .as_deref()
                .map(|a| crate::mfa::acr::Acr::parse(a).unwrap_or(crate::mfa::acr::Acr::Phr)),
            status: r.status,
            created_at: crate::clock::rfc3339(r.created_at),
            updated_at: crate::clock::rfc3339(r.updated_at),
        }
    }
}

impl Client {
    pub fn is_active(&self) -> bool {
        AccountStatus::parse(&self.status) == AccountStatus::Active
    }

    pub fn allows_grant(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }

    /// Whether every scope of `scope` is registered for this client.
    pub fn allows_scope(&self, scope: &str) -> bool {
        super::scope::parse(scope)
            .is_some_and(|tokens| tokens.iter().all(|t| self.scopes.iter().any(|s| s == t)))
    }

    /// RFC 8707: a requested resource must be registered for the client.
    pub fn allows_resource(&self, resource: &str) -> bool {
        self.resources.iter().any(|r| r == resource)
    }

    /// RFC 7662 §4: whether this client may learn that an access token issued to `issued_to`
    /// for `audience` is active: its own tokens, tokens whose audience is this client (a
    /// resource server registered under its audience), or any token with `may_introspect` (a
    /// resource server whose audience is a URI). Registered `resources` do not count: they say
    /// what a client may ask tokens for, not what it serves.
    pub fn may_introspect_token(&self, issued_to: &str, audience: &str) -> bool {
        self.may_introspect || issued_to == self.client_id || audience == self.client_id
    }

    /// Exact, character-for-character match (RFC 9700 §2.1; no wildcards, no prefixes).
    pub fn has_redirect_uri(&self, uri: &str) -> bool {
        self.redirect_uris.iter().any(|r| r == uri)
    }
}

/// Input for registration and the fields an update may change.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    pub name: Option<String>,
    #[serde(default)]
    pub public: bool,
    pub redirect_uris: Option<Vec<String>>,
    pub post_logout_redirect_uris: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub resources: Option<Vec<String>>,
    pub first_party: Option<bool>,
    pub refresh_reuse_grace: Option<i64>,
    pub may_introspect: Option<bool>,
    /// A class of `acr_values_supported` every sign-in must reach, or `null` for none.
    #[serde(default, deserialize_with = "present_text")]
    #[schema(value_type = Option<String>)]
    pub require_acr: Option<Option<String>>,
    /// `{"burst", "per_minute"}`, or `null` for the configured default.
    #[serde(default, deserialize_with = "present")]
    pub rate_limit: Option<Option<Limit>>,
}

/// Tells a field sent as `null` (Some(None)) from an absent one (None).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Limit>>, D::Error> {
    Option::<Limit>::deserialize(d).map(Some)
}

fn present_text<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The most a client's own limit may allow, per minute and at once.
const MAX_CLIENT_RATE: u32 = 1_000_000;

/// A newly registered client with its secret, shown this once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Registered {
    #[serde(flatten)]
    pub client: Client,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

/// Writes a client row (a new one, or changes to one) and its audit entry in one transaction.
async fn save(
    store: &Store,
    row: &ClientRow,
    new: bool,
    action: &'static str,
    by: By<'_>,
    now: i64,
) -> Result<()> {
    let mut tx = store.begin().await?;
    if new {
        store::insert_client(&mut *tx, row).await?;
    } else {
        store::update_client(&mut *tx, row).await?;
    }
    let entry = Entry::success(by.principal.actor(), action).target("client", &row.id);
    audit::record(&mut *tx, by.ctx, &entry, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Registers a client. Confidential clients get a secret.
pub async fn create(store: &Store, spec: ClientSpec, by: By<'_>, now: i64) -> Result<Registered> {
    authz::require(by.principal, Permission::ManageClients)?;
    let secret = (!spec.public).then(|| new_token(SECRET_PREFIX));
    let mut row = ClientRow {
        id: format!(
            "tc_{}",
            crate::crypto::b64url(&crate::crypto::random_bytes::<12>())
        ),
        name: String::new(),
        secret_hash: secret.as_deref().map(token_hash),
        redirect_uris: String::new(),
        post_logout_redirect_uris: String::new(),
        grant_types: "authorization_code".into(),
        scopes: "openid profile email".into(),
        resources: String::new(),
        status: AccountStatus::Active.as_str().into(),
        created_at: now,
        updated_at: now,
        first_party: 0,
        refresh_reuse_grace: 0,
        rate_limit_per_minute: None,
        rate_limit_burst: None,
        may_introspect: 0,
        require_acr: None,
    };
    if spec.name.is_none() {
        return Err(Error::invalid("name", "is required"));
    }
    apply(&mut row, spec)?;
    save(store, &row, true, action::CREATE_CLIENT, by, now).await?;
    Ok(Registered {
        client: row.into(),
        client_secret: secret,
    })
}

/// Applies a spec to a row and validates the result as a whole.
fn apply(row: &mut ClientRow, spec: ClientSpec) -> Result<()> {
    let mut errors = Vec::new();
    if let Some(name) = spec.name {
        if name.trim().is_empty()
            || name.chars().count() > 100
            || name.chars().any(char::is_control)
        {
            errors.push(FieldError::new(
                "name",
                "must be 1 to 100 characters without control characters",
            ));
        }
        row.name = name.trim().to_string();
    }
    let mut list = |field: &str,
                    values: Option<Vec<String>>,
                    check: &dyn Fn(&str) -> Option<String>,
                    target: &mut String| {
        let Some(values) = values else { return };
        if values.len() > 32 {
            errors.push(FieldError::new(field, "at most 32 entries"));
            return;
        }
        for v in &values {
            if let Some(problem) = check(v) {
                errors.push(FieldError::new(field, format!("{v:?}: {problem}")));
            }
        }
        let mut v = values;
        v.sort();
        v.dedup();
        *target = v.join(" ");
    };
    list(
        "redirect_uris",
        spec.redirect_uris,
        &validate_redirect_uri,
        &mut row.redirect_uris,
    );
    list(
        "post_logout_redirect_uris",
        spec.post_logout_redirect_uris,
        &validate_redirect_uri,
        &mut row.post_logout_redirect_uris,
    );
    list(
        "grant_types",
        spec.grant_types,
        &|g| {
            g.parse::<GrantType>()
                .is_err()
                .then(|| format!("must be one of {:?}", GrantType::names()))
        },
        &mut row.grant_types,
    );
    list(
        "scopes",
        spec.scopes,
        &|s| {
            super::scope::parse(s)
                .filter(|t| t.len() == 1)
                .is_none()
                .then(|| "is not a valid scope token".into())
        },
        &mut row.scopes,
    );
    list(
        "resources",
        spec.resources,
        &validate_resource,
        &mut row.resources,
    );
    if let Some(first_party) = spec.first_party {
        row.first_party = i64::from(first_party);
    }
    if let Some(may) = spec.may_introspect {
        row.may_introspect = i64::from(may);
    }
    match spec.require_acr {
        Some(Some(acr)) if crate::mfa::acr::Acr::parse(&acr).is_none() => {
            errors.push(FieldError::new(
                "require_acr",
                "must be one of urn:tessera:acr:pwd, urn:tessera:acr:mfa, phr",
            ));
        }
        Some(acr) => row.require_acr = acr,
        None => {}
    }
    if let Some(grace) = spec.refresh_reuse_grace {
        if !(0..=60).contains(&grace) {
            errors.push(FieldError::new(
                "refresh_reuse_grace",
                "must be 0 to 60 seconds",
            ));
        }
        row.refresh_reuse_grace = grace;
    }
    match spec.rate_limit {
        Some(Some(limit)) => {
            if limit.burst == 0
                || limit.per_minute == 0
                || limit.burst > MAX_CLIENT_RATE
                || limit.per_minute > MAX_CLIENT_RATE
            {
                errors.push(FieldError::new(
                    "rate_limit",
                    format!("burst and per_minute must be 1 to {MAX_CLIENT_RATE}"),
                ));
            }
            row.rate_limit_burst = Some(i64::from(limit.burst));
            row.rate_limit_per_minute = Some(i64::from(limit.per_minute));
        }
        Some(None) => {
            row.rate_limit_burst = None;
            row.rate_limit_per_minute = None;
        }
        None => {}
    }
    if row.first_party == 0
        && words(&row.scopes)
            .iter()
            .any(|s| crate::authz::FIRST_PARTY_SCOPES.contains(&s.as_str()))
    {
        errors.push(FieldError::new(
            "scopes",
            format!(
                "{:?} are only for first-party clients (first_party: true)",
                crate::authz::FIRST_PARTY_SCOPES
            ),
        ));
    }
    let public = row.secret_hash.is_none();
    let grants = words(&row.grant_types);
    if grants.is_empty() {
        errors.push(FieldError::new(
            "grant_types",
            "at least one grant type is required",
        ));
    }
    if public
        && grants
            .iter()
            .any(|g| g == "client_credentials" || g == "password")
    {
        errors.push(FieldError::new(
            "grant_types",
            "a public client cannot use client_credentials or password",
        ));
    }
    if grants.iter().any(|g| g == "authorization_code") && row.redirect_uris.is_empty() {
        errors.push(FieldError::new(
            "redirect_uris",
            "authorization_code needs at least one redirect URI",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(errors))
    }
}

/// Redirect URIs: absolute, no fragment (RFC 6749 §3.1.2); `https`, or `http` only on a loopback
/// host (RFC 8252 §7.3); or a private-use scheme with a dot for native apps (RFC 8252 §7.1).
/// Parsed with the `url` crate and kept in canonical form, so exact matching compares like with
/// like.
pub fn validate_redirect_uri(uri: &str) -> Option<String> {
    if uri.len() > 2000 || uri.contains('#') {
        return Some("must be at most 2000 characters, without fragment".into());
    }
    let url = match crate::urls::canonical(uri) {
        Ok(url) => url,
        Err(problem) => return Some(problem),
    };
    match url.scheme() {
        "https" => url
            .host()
            .is_none()
            .then(|| "must be an absolute URI with a host".into()),
        "http" => (!crate::urls::is_loopback(&url))
            .then(|| "http is allowed only for loopback hosts; use https".into()),
        s if s.contains('.') => None,
        _ => Some(
            "must use https (http only for loopback, or a private-use scheme such as com.example.app)"
                .into(),
        ),
    }
}

/// RFC 8707 §2: an absolute URI without a fragment.
fn validate_resource(uri: &str) -> Option<String> {
    if uri.len() > 2000 || uri.contains('#') {
        return Some("must be an absolute http(s) URI without a fragment".into());
    }
    crate::urls::http_url(uri).err()
}

pub async fn get(store: &Store, principal: &Principal, id: &str) -> Result<Client> {
    authz::require(principal, Permission::ManageClients)?;
    find_row(store, id).await.map(Into::into)
}

async fn find_row(store: &Store, id: &str) -> Result<ClientRow> {
    if id.len() > 64 {
        return Err(Error::NotFound);
    }
    store::find_client(store.pool(), id)
        .await?
        .ok_or(Error::NotFound)
}

pub async fn list(
    store: &Store,
    principal: &Principal,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Client>> {
    authz::require(principal, Permission::ManageClients)?;
    Ok(
        store::list_clients(store.pool(), after, limit.clamp(1, 500))
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    )
}

/// Changes redirect URIs, grants, scopes, resources or the name.
pub async fn update(
    store: &Store,
    cache: &ClientCache,
    id: &str,
    spec: ClientSpec,
    by: By<'_>,
    now: i64,
) -> Result<Client> {
    authz::require(by.principal, Permission::ManageClients)?;
    let mut row = find_row(store, id).await?;
    if spec.public {
        return Err(Error::invalid(
            "public",
            "a client cannot change between public and confidential",
        ));
    }
    apply(&mut row, spec)?;
    row.updated_at = now;
    save(store, &row, false, action::UPDATE_CLIENT, by, now).await?;
    cache.invalidate(id).await;
    Ok(row.into())
}

/// Issues a new secret; the old one stops working at once.
pub async fn rotate_secret(
    store: &Store,
    cache: &ClientCache,
    id: &str,
    by: By<'_>,
    now: i64,
) -> Result<Registered> {
    authz::require(by.principal, Permission::ManageClients)?;
    let mut row = find_row(store, id).await?;
    if row.secret_hash.is_none() {
        return Err(Error::invalid("client_id", "a public client has no secret"));
    }
    let secret = new_token(SECRET_PREFIX);
    row.secret_hash = Some(token_hash(&secret));
    row.updated_at = now;
    save(store, &row, false, action::ROTATE_CLIENT_SECRET, by, now).await?;
    cache.invalidate(id).await;
    Ok(Registered {
        client: row.into(),
        client_secret: Some(secret),
    })
}

/// Deactivates a client: it can no longer authenticate or start authorizations.
pub async fn deactivate(
    store: &Store,
    cache: &ClientCache,
    id: &str,
    by: By<'_>,
    now: i64,
) -> Result<Client> {
    authz::require(by.principal, Permission::ManageClients)?;
    let mut row = find_row(store, id).await?;
    row.status = AccountStatus::Deactivated.as_str().into();
    row.updated_at = now;
    save(store, &row, false, action::DEACTIVATE_CLIENT, by, now).await?;
    cache.invalidate(id).await;
    Ok(row.into())
}

/// Clients by id, remembered for a few seconds (a change invalidates at once, on every replica
/// with Redis).
pub type ClientCache = crate::shared::Cache<Arc<Client>>;

pub fn client_cache(shared: &Shared) -> ClientCache {
    crate::shared::Cache::new(
        shared,
        10_000,
        Duration::from_secs(10),
        Invalidation::Client,
    )
}

/// An active client by id, through the cache.
pub async fn find_active(
    store: &Store,
    cache: &ClientCache,
    id: &str,
) -> Result<Option<Arc<Client>>> {
    if id.is_empty() || id.len() > 64 {
        return Ok(None);
    }
    if let Some(c) = cache.get(id) {
        return Ok(c.is_active().then_some(c));
    }
    let Some(row) = store::find_client(store.pool(), id).await? else {
        return Ok(None);
    };
    let client = Arc::new(Client::from(row));
    cache.insert(id, Arc::clone(&client));
    Ok(client.is_active().then_some(client))
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("client", &self.client)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { client_id, .. } => write!(f, "Basic({client_id}, <redacted>)"),
            Self::Post { client_id, .. } => write!(f, "Post({client_id}, <redacted>)"),
            Self::None { client_id } => write!(f, "None({client_id})"),
            Self::Missing => f.write_str("Missing"),
        }
    }
}

/// How a client presented itself.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// RFC 6749 §2.3.1 HTTP Basic (`client_secret_basic`).
    Basic {
        client_id: String,
        secret: String,
    },
    /// Body parameters (`client_secret_post`).
    Post {
        client_id: String,
        secret: String,
    },
    /// A public client naming itself (`none`).
    None {
        client_id: String,
    },
    Missing,
}

/// Authenticates a client. Any failure is `invalid_client` (401 with `WWW-Authenticate`).
pub async fn authenticate(
    store: &Store,
    cache: &ClientCache,
    credentials: &Credentials,
) -> Result<Arc<Client>, OAuthError> {
    let (client_id, secret) = match credentials {
        Credentials::Basic { client_id, secret } | Credentials::Post { client_id, secret } => {
            (client_id, Some(secret))
        }
        Credentials::None { client_id } => (client_id, None),
        Credentials::Missing => return Err(OAuthError::invalid_client()),
    };
    let client = find_active(store, cache, client_id)
        .await?
        .ok_or_else(OAuthError::invalid_client)?;
    let ok = match (&client.secret_hash, secret) {
        (Some(expected), Some(given)) => ct_eq(expected.as_bytes(), token_hash(given).as_bytes()),
        (None, None) => true,
        _ => false,
    };
    if ok {
        Ok(client)
    } else {
        Err(OAuthError::invalid_client())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        for ok in [
            "https://app.example.com/cb",
            "http://127.0.0.1:8080/cb",
            "http://localhost/cb",
            "http://[::1]:9/x",
            "com.example.app:/oauth2redirect",
        ] {
            assert_eq!(validate_redirect_uri(ok), None, "{ok}");
        }
        for bad in [
            "http://app.example.com/cb",
            "https://app.example.com/cb#frag",
            "/relative",
            "javascript:alert(1)",
            "https:",
            "http://localhost.evil.com/cb",
            "data:text/html,x",
        ] {
            assert!(validate_redirect_uri(bad).is_some(), "{bad}");
        }
    }
}
