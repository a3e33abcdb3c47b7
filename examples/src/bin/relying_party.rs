//! A relying party: a web app that signs its users in with Tessera through OpenID Connect
//! (authorization code flow with PKCE), using the off-the-shelf `openidconnect` crate and
//! nothing Tessera-specific.
//!
//! Register it first (the redirect URI is `http://LISTEN/callback`):
//!
//! ```sh
//! tessera client create --name "Example app" --redirect-uri http://127.0.0.1:3000/callback \
//!     --grant authorization_code --scope openid --scope email --json
//! TESSERA_ISSUER=http://localhost:7005 CLIENT_ID=… CLIENT_SECRET=… \
//!     cargo run -p tessera-examples --bin relying-party
//! ```
//!
//! Then open <http://127.0.0.1:3000/>: it sends you to Tessera's sign-in page and, once you are
//! back, shows who you are (the ID token's claims, checked, and the UserInfo answer).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreUserInfoClaims,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse,
};
use serde::Deserialize;
use serde_json::json;

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// What the app remembers between sending a user to Tessera and their coming back, by `state`.
struct Pending {
    verifier: PkceCodeVerifier,
    nonce: Nonce,
}

struct App {
    client: Client,
    http: openidconnect::reqwest::Client,
    pending: Mutex<HashMap<String, Pending>>,
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("set {name}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let issuer = env("TESSERA_ISSUER")?;
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    // The OIDC library must not follow redirects (OIDC Core §3.1.2.5 responses are for the
    // browser, and following them would leak the code to a redirect target).
    let http = openidconnect::reqwest::Client::builder()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()?;
    // OpenID Connect Discovery 1.0 §4: endpoints and keys from the issuer's metadata.
    let metadata = CoreProviderMetadata::discover_async(IssuerUrl::new(issuer)?, &http)
        .await
        .context("OpenID Connect discovery")?;
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(env("CLIENT_ID")?),
        std::env::var("CLIENT_SECRET").ok().map(ClientSecret::new),
    )
    .set_redirect_uri(RedirectUrl::new(format!("http://{listen}/callback"))?);
    let app = Arc::new(App {
        client,
        http,
        pending: Mutex::new(HashMap::new()),
    });
    let router = axum::Router::new()
        .route("/", get(sign_in))
        .route("/callback", get(callback))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("relying party on http://{listen}/");
    axum::serve(listener, router).await?;
    Ok(())
}

/// Sends the browser to Tessera's authorization endpoint with PKCE (RFC 7636), `state` and
/// `nonce`.
async fn sign_in(State(app): State<Arc<App>>) -> Response {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = app
        .client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();
    if let Ok(mut pending) = app.pending.lock() {
        pending.insert(state.secret().clone(), Pending { verifier, nonce });
    }
    Redirect::to(url.as_str()).into_response()
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// Back from Tessera: checks `state`, redeems the code, validates the ID token (signature
/// through the JWKS, issuer, audience, expiry, nonce) and asks UserInfo who the user is.
async fn callback(State(app): State<Arc<App>>, Query(q): Query<Callback>) -> Response {
    if let Some(error) = q.error {
        return refuse(
            StatusCode::UNAUTHORIZED,
            &format!("sign-in refused: {error}"),
        );
    }
    let pending = q
        .state
        .and_then(|s| app.pending.lock().ok().and_then(|mut p| p.remove(&s)));
    let (Some(code), Some(pending)) = (q.code, pending) else {
        return refuse(StatusCode::BAD_REQUEST, "unknown or missing state");
    };
    match finish(&app, code, pending).await {
        Ok(who) => axum::Json(who).into_response(),
        Err(e) => refuse(StatusCode::BAD_GATEWAY, &format!("{e:#}")),
    }
}

async fn finish(app: &App, code: String, pending: Pending) -> anyhow::Result<serde_json::Value> {
    let tokens = app
        .client
        .exchange_code(AuthorizationCode::new(code))?
        .set_pkce_verifier(pending.verifier)
        .request_async(&app.http)
        .await
        .context("the token request")?;
    let id_token = tokens.id_token().context("no ID token")?;
    let claims = id_token
        .claims(&app.client.id_token_verifier(), &pending.nonce)
        .context("the ID token")?;
    let info: CoreUserInfoClaims = app
        .client
        .user_info(tokens.access_token().clone(), None)?
        .request_async(&app.http)
        .await
        .context("UserInfo")?;
    anyhow::ensure!(
        info.subject() == claims.subject(),
        "UserInfo is about someone else"
    );
    Ok(json!({
        "signed_in": true,
        "sub": claims.subject().as_str(),
        "email": info.email().map(|e| e.as_str()),
        "email_verified": info.email_verified(),
        "issuer": claims.issuer().as_str(),
    }))
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "signed_in": false, "error": message })),
    )
        .into_response()
}
