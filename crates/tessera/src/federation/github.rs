//! GitHub as an upstream provider: plain OAuth 2.0 (RFC 6749 §4.1, with RFC 7636 PKCE S256),
//! through the `oauth2` crate over Tessera's own HTTP client, then GitHub's REST user API. There
//! is no ID token: the user is who `GET /user` says the access token belongs to (its numeric
//! `id` is the subject, stable across renames), and the address is the primary one of
//! `GET /user/emails`, verified as GitHub says. The access token is dropped here.
//!
//! The provider's "issuer" is the GitHub base URL: `https://github.com` (API at
//! `https://api.github.com`) or a GitHub Enterprise Server's (API under `/api/v3`).

use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpRequest,
    PkceCodeChallenge, PkceCodeVerifier, Scope, TokenResponse, TokenUrl,
};
use serde_json::Value;

use super::upstream::{Failure, Started, UpstreamUser, fetch, redirect_of, secret_of};
use crate::core::Core;
use crate::store::federation::ProviderRow;

/// The base URL of github.com.
pub const GITHUB_COM: &str = "https://github.com";

/// The API version every request names (GitHub's REST API versioning).
const API_VERSION: &str = "2022-11-28";

/// The REST API's base URL for a GitHub base URL.
fn api_base(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base == GITHUB_COM {
        "https://api.github.com".into()
    } else {
        format!("{base}/api/v3")
    }
}

type Client = BasicClient<
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

fn client_of(state: &Core, provider: &ProviderRow) -> Result<Client, Failure> {
    let base = provider.issuer.trim_end_matches('/');
    let bad = |e: url::ParseError| Failure::Unavailable(format!("GitHub endpoint: {e}"));
    let auth = AuthUrl::new(format!("{base}/login/oauth/authorize")).map_err(bad)?;
    let token = TokenUrl::new(format!("{base}/login/oauth/access_token")).map_err(bad)?;
    Ok(BasicClient::new(ClientId::new(provider.client_id.clone()))
        .set_client_secret(ClientSecret::new(secret_of(state, provider)?))
        // GitHub takes the client's credentials in the form body.
        .set_auth_type(AuthType::RequestBody)
        .set_auth_uri(auth)
        .set_token_uri(token)
        .set_redirect_uri(redirect_of(state, provider)?))
}

/// The authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3): no nonce, there is no ID token.
pub fn start(state: &Core, provider: &ProviderRow) -> Result<Started, Failure> {
    let client = client_of(state, provider)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .set_pkce_challenge(challenge);
    for scope in provider.scopes.split(' ').filter(|s| !s.is_empty()) {
        request = request.add_scope(Scope::new(scope.to_string()));
    }
    let (url, csrf) = request.url();
    Ok(Started {
        url,
        state: csrf.secret().clone(),
        nonce: String::new(),
        pkce_verifier: verifier.secret().clone(),
    })
}

/// Redeems the code (RFC 6749 §4.1.3, with the PKCE verifier), then reads the user and their
/// addresses.
pub async fn finish(
    state: &Core,
    provider: &ProviderRow,
    code: &str,
    pkce_verifier: &str,
) -> Result<UpstreamUser, Failure> {
    let client = client_of(state, provider)?;
    let http_client = state.federation.http.clone();
    let http = move |req: HttpRequest| fetch(http_client.clone(), req);
    let token = client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
        .request_async(&http)
        .await
        .map_err(|e| Failure::Refused(format!("code exchange: {}", exchange_error(&e))))?;
    let access_token = token.access_token().secret();
    let api = api_base(&provider.issuer);
    let user = get(state, &format!("{api}/user"), access_token)
        .await?
        .ok_or_else(|| Failure::Refused("GET /user refused the access token".into()))?;
    let subject = user
        .get("id")
        .and_then(Value::as_u64)
        .filter(|id| *id > 0)
        .ok_or_else(|| Failure::Refused("GET /user has no numeric id".into()))?
        .to_string();
    // The primary address and whether GitHub verified it; without the `user:email` scope (a
    // 403 or 404) the profile's public address, counted as unverified.
    let primary = match get(state, &format!("{api}/user/emails"), access_token).await? {
        Some(Value::Array(emails)) => emails
            .into_iter()
            .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true)),
        _ => None,
    };
    let (email, email_verified) = match primary {
        Some(e) => (
            e.get("email").and_then(Value::as_str).map(str::to_string),
            e.get("verified").and_then(Value::as_bool) == Some(true),
        ),
        None => (
            user.get("email")
                .and_then(Value::as_str)
                .map(str::to_string),
            false,
        ),
    };
    let text = |name: &str| user.get(name).and_then(Value::as_str).map(str::to_string);
    Ok(UpstreamUser {
        subject,
        email,
        email_verified,
        name: text("name").or_else(|| text("login")),
    })
}

/// Why a code exchange failed, for the log: GitHub answers its errors with 200 and an `error`
/// member (RFC 6749 §5.2 names), which the crate reports as an unparsable token response.
fn exchange_error<E: std::error::Error>(
    e: &oauth2::RequestTokenError<E, oauth2::basic::BasicErrorResponse>,
) -> String {
    match e {
        oauth2::RequestTokenError::Parse(_, body) => serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .map_or_else(
                || "an unreadable token response".into(),
                |code| format!("error {code}"),
            ),
        oauth2::RequestTokenError::Request(inner) => {
            let mut why = inner.to_string();
            let mut source = std::error::Error::source(inner);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            why
        }
        other => other.to_string(),
    }
}

/// One GET of GitHub's REST API with the user's access token: `None` when GitHub refuses it
/// (401, 403, 404: a token or scope it does not accept), an error when it fails otherwise.
async fn get(state: &Core, url: &str, access_token: &str) -> Result<Option<Value>, Failure> {
    let mut bearer = http::HeaderValue::try_from(format!("Bearer {access_token}"))
        .map_err(|_| Failure::Refused("the access token is not a header value".into()))?;
    bearer.set_sensitive(true);
    let req = http::Request::builder()
        .method(http::Method::GET)
        .uri(url)
        .header(http::header::AUTHORIZATION, bearer)
        .header(http::header::ACCEPT, "application/vnd.github+json")
        .header("X-GitHub-Api-Version", API_VERSION)
        .body(Vec::new())
        .map_err(|e| Failure::Unavailable(format!("GitHub API: {e}")))?;
    let res = fetch(state.federation.http.clone(), req)
        .await
        .map_err(|e| Failure::Unavailable(format!("GitHub API: {e}")))?;
    let refused = [
        http::StatusCode::UNAUTHORIZED,
        http::StatusCode::FORBIDDEN,
        http::StatusCode::NOT_FOUND,
    ];
    if refused.contains(&res.status()) {
        return Ok(None);
    }
    if !res.status().is_success() {
        return Err(Failure::Unavailable(format!(
            "GitHub API answered {}",
            res.status()
        )));
    }
    serde_json::from_slice(res.body())
        .map(Some)
        .map_err(|_| Failure::Unavailable("GitHub API did not answer JSON".into()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_api_is_beside_github_com_and_under_an_enterprise_server() {
        assert_eq!(
            super::api_base("https://github.com"),
            "https://api.github.com"
        );
        assert_eq!(
            super::api_base("https://github.com/"),
            "https://api.github.com"
        );
        assert_eq!(
            super::api_base("https://ghe.example.com"),
            "https://ghe.example.com/api/v3"
        );
    }
}
