//! The relying-party side of a federated sign-in (OIDC Core §3.1, RFC 7636, RFC 9207), through
//! the `openidconnect` crate over Tessera's own HTTP client: no redirects followed, a 10 s
//! timeout, bodies capped at 1 MiB. Discovery (with the JWKS) is cached per provider for an hour
//! and fetched again once when an ID token's key is not in it (the upstream rotated its keys).

use std::sync::Arc;
use std::time::Duration;

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreGrantType, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AccessTokenHash, AdditionalProviderMetadata, AuthorizationCode, ClaimsVerificationError,
    ClientId, ClientSecret, CsrfToken, HttpRequest, HttpResponse, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata, RedirectUrl, Scope,
    SignatureVerificationError, TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::core::Core;
use crate::store::federation::ProviderRow;

/// The largest upstream answer read.
const MAX_BODY: usize = 1 << 20;
/// How long discovery and the JWKS are trusted before they are fetched again (cached by issuer,
/// so a provider given another issuer is discovered anew at once).
const METADATA_TTL: Duration = Duration::from_secs(3600);

const UNKNOWN_KEY: &str = "no key of the upstream's JWKS matches the ID token";

/// RFC 9207 §3: whether the upstream sends `iss` with its authorization responses.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IssParameter {
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}
impl AdditionalProviderMetadata for IssParameter {}

type Metadata = ProviderMetadata<
    IssParameter,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// Why an upstream sign-in failed: what the page says (never the upstream's own words, which
/// could carry anything) and, for the log, the detail.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The upstream could not be reached, or answered with something unusable.
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    /// The upstream's answer failed a check (issuer, audience, nonce, signature, expiry, `at_hash`).
    #[error("the identity provider's answer was refused: {0}")]
    Refused(String),
}

/// The HTTP client and discovery cache of the upstream providers.
#[derive(Clone)]
pub struct Upstreams {
    pub(super) http: reqwest::Client,
    metadata: moka::sync::Cache<String, Arc<Metadata>>,
    /// Issuers whose discovery just failed: anyone can start a sign-in, so an unreachable
    /// upstream is not asked again (a 10 s wait each) before [`FAILURE_TTL`] has passed.
    failed: moka::sync::Cache<String, String>,
    /// What the sign-in page lists (name, display name), read at most every [`OFFERED_TTL`]:
    /// the page is on every hosted sign-in's path.
    offered: moka::sync::Cache<(), Arc<Vec<(String, String)>>>,
}

/// How long a failed discovery is remembered.
const FAILURE_TTL: Duration = Duration::from_secs(15);
/// How long the sign-in page's list of providers is reused.
pub const OFFERED_TTL: Duration = Duration::from_secs(10);

impl Default for Upstreams {
    fn default() -> Self {
        Self::new()
    }
}

impl Upstreams {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // GitHub's API refuses requests without one.
            .user_agent(concat!("Tessera/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            http,
            metadata: moka::sync::Cache::builder()
                .max_capacity(256)
                .time_to_live(METADATA_TTL)
                .build(),
            failed: moka::sync::Cache::builder()
                .max_capacity(256)
                .time_to_live(FAILURE_TTL)
                .build(),
            offered: moka::sync::Cache::builder()
                .max_capacity(1)
                .time_to_live(OFFERED_TTL)
                .build(),
        }
    }

    /// The providers the sign-in page lists, through the short-lived cache.
    pub async fn offered(
        &self,
        store: &crate::store::Store,
    ) -> Result<Arc<Vec<(String, String)>>, sqlx::Error> {
        if let Some(list) = self.offered.get(&()) {
            return Ok(list);
        }
        let rows = crate::store::federation::providers(store.pool()).await?;
        let list = Arc::new(rows.into_iter().map(|r| (r.name, r.display_name)).collect());
        self.offered.insert((), Arc::clone(&list));
        Ok(list)
    }

    /// The provider's discovery document and keys: cached, or fetched (`fresh`: always fetched).
    /// The issuer is pinned: the document must name exactly the configured one (OIDC Discovery
    /// §4.3), which the crate checks.
    async fn metadata(
        &self,
        provider: &ProviderRow,
        fresh: bool,
    ) -> Result<Arc<Metadata>, Failure> {
        if !fresh && let Some(m) = self.metadata.get(&provider.issuer) {
            return Ok(m);
        }
        if let Some(why) = self.failed.get(&provider.issuer) {
            return Err(Failure::Unavailable(format!("{why} (remembered)")));
        }
        let issuer = IssuerUrl::new(provider.issuer.clone())
            .map_err(|e| Failure::Unavailable(format!("issuer: {e}")))?;
        let client = self.http.clone();
        let http = move |req: HttpRequest| fetch(client.clone(), req);
        let meta = match Metadata::discover_async(issuer, &http).await {
            Ok(meta) => meta,
            Err(e) => {
                let why = format!("discovery: {e}");
                self.failed.insert(provider.issuer.clone(), why.clone());
                return Err(Failure::Unavailable(why));
            }
        };
        let meta = Arc::new(meta);
        self.metadata
            .insert(provider.issuer.clone(), Arc::clone(&meta));
        Ok(meta)
    }
}

/// One request to an upstream, over our client, with its answer capped at [`MAX_BODY`].
pub(super) async fn fetch(
    client: reqwest::Client,
    req: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    let req =
        reqwest::Request::try_from(req).map_err(|e| HttpError(e.without_url().to_string()))?;
    let mut res = client
        .execute(req)
        .await
        .map_err(|e| HttpError(e.without_url().to_string()))?;
    let mut answer = http::Response::builder().status(res.status());
    for (name, value) in res.headers() {
        answer = answer.header(name, value);
    }
    let mut body = Vec::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .map_err(|e| HttpError(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(HttpError("the answer is larger than 1 MiB".into()));
        }
        body.extend_from_slice(&chunk);
    }
    answer.body(body).map_err(|e| HttpError(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(pub(super) String);

/// The secret-free part of a started upstream sign-in, to keep until the callback.
pub struct Started {
    /// Where to send the browser.
    pub url: url::Url,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// The client of a provider as discovered: authorization endpoint set, token and UserInfo
/// endpoints as the document says.
type Client = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// The provider's client secret, opened.
pub(super) fn secret_of(state: &Core, provider: &ProviderRow) -> Result<String, Failure> {
    let secret = state
        .master
        .open(
            &super::secret_context(&provider.name),
            &provider.client_secret,
        )
        .map_err(|_| {
            Failure::Unavailable("the client secret does not open with the master key".into())
        })?;
    String::from_utf8(secret)
        .map_err(|_| Failure::Unavailable("the client secret is not text".into()))
}

/// Where the provider sends the browser back.
pub(super) fn redirect_of(state: &Core, provider: &ProviderRow) -> Result<RedirectUrl, Failure> {
    RedirectUrl::new(super::redirect_uri(&state.config.issuer, &provider.name))
        .map_err(|e| Failure::Unavailable(format!("redirect URI: {e}")))
}

fn client_of(state: &Core, provider: &ProviderRow, meta: &Metadata) -> Result<Client, Failure> {
    let secret = secret_of(state, provider)?;
    let redirect = redirect_of(state, provider)?;
    Ok(CoreClient::from_provider_metadata(
        meta.clone(),
        ClientId::new(provider.client_id.clone()),
        Some(ClientSecret::new(secret)),
    )
    .set_redirect_uri(redirect))
}

/// Starts an upstream sign-in: the authorization request (code flow, PKCE S256, a nonce; OIDC
/// Core §3.1.2.1, RFC 7636 §4.3) and what the callback needs to check its answer.
/// `login_hint` (OIDC Core §3.1.2.1) is the address the user gave, when they gave one.
pub async fn start(
    state: &Core,
    provider: &ProviderRow,
    login_hint: Option<&str>,
) -> Result<Started, Failure> {
    if super::Kind::of(provider) == super::Kind::Github {
        return super::github::start(state, provider);
    }
    let meta = state.federation.metadata(provider, false).await?;
    let client = client_of(state, provider, &meta)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for scope in provider
        .scopes
        .split(' ')
        .filter(|s| *s != "openid" && !s.is_empty())
    {
        request = request.add_scope(Scope::new(scope.to_string()));
    }
    if let Some(hint) = login_hint {
        request = request.set_login_hint(openidconnect::LoginHint::new(hint.to_string()));
    }
    let (url, csrf, nonce) = request.url();
    Ok(Started {
        url,
        state: csrf.secret().clone(),
        nonce: nonce.secret().clone(),
        pkce_verifier: verifier.secret().clone(),
    })
}

/// Whether the upstream says it sends RFC 9207 `iss` with its authorization responses.
pub async fn sends_iss(state: &Core, provider: &ProviderRow) -> Result<bool, Failure> {
    if super::Kind::of(provider) == super::Kind::Github {
        return Ok(false);
    }
    let meta = state.federation.metadata(provider, false).await?;
    Ok(meta
        .additional_metadata()
        .authorization_response_iss_parameter_supported)
}

/// What the upstream said of the user, read through the provider's claim mapping.
#[derive(Debug, Clone)]
pub struct UpstreamUser {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
}

/// Redeems the code (with the PKCE verifier) and validates the ID token: signature by a key of
/// the upstream's JWKS with an algorithm it announces, issuer, audience and `azp`, expiry (by
/// Tessera's clock), nonce (OIDC Core §3.1.3.7), and `at_hash` when present (§3.1.3.8). The
/// email comes from UserInfo when the ID token has none (its `sub` must match, §5.3.2). The
/// upstream's tokens are dropped here.
pub async fn finish(
    state: &Core,
    provider: &ProviderRow,
    code: &str,
    pkce_verifier: &str,
    nonce: &str,
) -> Result<UpstreamUser, Failure> {
    if super::Kind::of(provider) == super::Kind::Github {
        return super::github::finish(state, provider, code, pkce_verifier).await;
    }
    let meta = state.federation.metadata(provider, false).await?;
    let client = client_of(state, provider, &meta)?;
    let http_client = state.federation.http.clone();
    let http = move |req: HttpRequest| fetch(http_client.clone(), req);
    let token = client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .map_err(|e| Failure::Unavailable(format!("token endpoint: {e}")))?
        .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
        .request_async(&http)
        .await
        .map_err(|e| Failure::Refused(format!("code exchange: {e}")))?;
    let id_token = token
        .id_token()
        .ok_or_else(|| Failure::Refused("the token response has no ID token".into()))?;
    let verify = |client: &Client| -> Result<String, Failure> {
        let now = state.clock.now();
        let verifier = client
            .id_token_verifier()
            .set_time_fn(move || chrono::DateTime::from_timestamp(now, 0).unwrap_or_default());
        let claims = id_token
            .claims(&verifier, &Nonce::new(nonce.to_string()))
            .map_err(|e| match e {
                ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::NoMatchingKey,
                ) => Failure::Refused(UNKNOWN_KEY.into()),
                other => Failure::Refused(format!("ID token: {other}")),
            })?;
        // §3.1.3.8: at_hash, when present, must be the left half of the access token's hash.
        if let Some(expected) = claims.access_token_hash() {
            let alg = id_token
                .signing_alg()
                .map_err(|e| Failure::Refused(format!("ID token: {e}")))?;
            let key = id_token
                .signing_key(&verifier)
                .map_err(|e| Failure::Refused(format!("ID token: {e}")))?;
            let actual = AccessTokenHash::from_token(token.access_token(), alg, key)
                .map_err(|e| Failure::Refused(format!("at_hash: {e}")))?;
            if !crate::crypto::ct_eq(actual.as_bytes(), expected.as_bytes()) {
                return Err(Failure::Refused(
                    "at_hash does not match the access token".into(),
                ));
            }
        }
        Ok(claims.subject().as_str().to_string())
    };
    let subject = match verify(&client) {
        Ok(subject) => subject,
        // A key the cached JWKS does not have: the upstream may have rotated; look once more.
        Err(Failure::Refused(why)) if why == UNKNOWN_KEY => {
            let meta = state.federation.metadata(provider, true).await?;
            let client = client_of(state, provider, &meta)?;
            verify(&client)?
        }
        Err(e) => return Err(e),
    };
    let mut claims = payload_of(&id_token.to_string())
        .ok_or_else(|| Failure::Refused("the ID token's payload is not JSON".into()))?;
    let map = super::claim_map(provider);
    if !claims.contains_key(&map.email)
        && let Some(endpoint) = meta.userinfo_endpoint()
    {
        let info = userinfo(
            state,
            endpoint.url().as_str(),
            token.access_token().secret(),
        )
        .await?;
        if info.get("sub").and_then(Value::as_str) != Some(subject.as_str()) {
            return Err(Failure::Refused("UserInfo names another subject".into()));
        }
        for (k, v) in info {
            claims.entry(k).or_insert(v);
        }
    }
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
    let email_verified = match claims.get(&map.email_verified) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    Ok(UpstreamUser {
        subject,
        email: text(&map.email),
        email_verified,
        name: text(&map.name),
    })
}

/// The claims of a JWT whose signature was checked already.
fn payload_of(jwt: &str) -> Option<Map<String, Value>> {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// OIDC Core §5.3: the UserInfo claims, with the access token as the bearer.
async fn userinfo(
    state: &Core,
    endpoint: &str,
    access_token: &str,
) -> Result<Map<String, Value>, Failure> {
    let req = http::Request::builder()
        .method(http::Method::GET)
        .uri(endpoint)
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {access_token}"),
        )
        .header(http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|e| Failure::Unavailable(format!("UserInfo: {e}")))?;
    let res = fetch(state.federation.http.clone(), req)
        .await
        .map_err(|e| Failure::Unavailable(format!("UserInfo: {e}")))?;
    if !res.status().is_success() {
        return Err(Failure::Unavailable(format!(
            "UserInfo answered {}",
            res.status()
        )));
    }
    serde_json::from_slice(res.body())
        .map_err(|_| Failure::Unavailable("UserInfo did not answer a JSON object".into()))
}
