//! A resource server: an API that accepts Tessera's access tokens (RFC 9068 JWTs) and checks
//! them itself, through Tessera's JWKS, with no call to Tessera per request.
//!
//! Register the API as a resource of the clients that call it (`--resource`), then:
//!
//! ```sh
//! TESSERA_ISSUER=http://localhost:7005 AUDIENCE=https://api.example.com REQUIRED_SCOPE=reports:read \
//!     cargo run -p tessera-examples --bin resource-server
//! curl -H "Authorization: Bearer $ACCESS_TOKEN" http://127.0.0.1:3001/reports
//! ```
//!
//! A token is accepted when (RFC 9068 §4): its `typ` is `at+jwt`, its key is in the JWKS and its
//! algorithm is the key's own (never the token header's word alone), `iss` is the issuer, `aud`
//! contains `AUDIENCE`, it has not expired, and its `scope` has `REQUIRED_SCOPE`. Failures are
//! RFC 6750 §3 answers: 401 `invalid_token`, 403 `insufficient_scope`.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;

struct Keys {
    set: JwkSet,
    fetched: Instant,
}

struct App {
    issuer: String,
    audience: String,
    required_scope: String,
    jwks_uri: String,
    http: reqwest::Client,
    keys: RwLock<Keys>,
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("set {name}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let issuer = env("TESSERA_ISSUER")?;
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3001".into());
    let http = reqwest::Client::new();
    // RFC 8414 §3: the JWKS address from the authorization server's metadata.
    let metadata: serde_json::Value = http
        .get(format!("{issuer}/.well-known/oauth-authorization-server"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let jwks_uri = metadata["jwks_uri"]
        .as_str()
        .context("no jwks_uri in the metadata")?
        .to_string();
    let set = fetch(&http, &jwks_uri).await?;
    let app = Arc::new(App {
        issuer,
        audience: env("AUDIENCE")?,
        required_scope: env("REQUIRED_SCOPE")?,
        jwks_uri,
        http,
        keys: RwLock::new(Keys {
            set,
            fetched: Instant::now(),
        }),
    });
    let router = axum::Router::new()
        .route("/reports", get(reports))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("resource server on http://{listen}/");
    axum::serve(listener, router).await?;
    Ok(())
}

async fn fetch(http: &reqwest::Client, uri: &str) -> anyhow::Result<JwkSet> {
    Ok(http
        .get(uri)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// The protected resource: says who called.
async fn reports(caller: Caller) -> Response {
    axum::Json(json!({
        "sub": caller.claims.sub,
        "client_id": caller.claims.client_id,
        "scope": caller.claims.scope,
        "reports": [],
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    client_id: String,
    #[serde(default)]
    scope: String,
}

struct Caller {
    claims: Claims,
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        // RFC 6750 §2.1: `Authorization: Bearer <token>`.
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| challenge(StatusCode::UNAUTHORIZED, None))?;
        let claims = validate(app, token)
            .await
            .map_err(|_| challenge(StatusCode::UNAUTHORIZED, Some("invalid_token")))?;
        if !claims.scope.split(' ').any(|s| s == app.required_scope) {
            return Err(challenge(StatusCode::FORBIDDEN, Some("insufficient_scope")));
        }
        Ok(Caller { claims })
    }
}

async fn validate(app: &App, token: &str) -> anyhow::Result<Claims> {
    let header = jsonwebtoken::decode_header(token)?;
    // RFC 9068 §4: the `typ` of an access token is `at+jwt` (an ID token is not one).
    anyhow::ensure!(
        header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt")),
        "not an access token"
    );
    let kid = header.kid.context("no kid")?;
    let jwk = match key(app, &kid) {
        Some(jwk) => jwk,
        None => {
            // A key rotated in since the last fetch: fetch again, at most every 10 s.
            let stale = app
                .keys
                .read()
                .map(|k| k.fetched.elapsed() > Duration::from_secs(10))
                .unwrap_or(true);
            anyhow::ensure!(stale, "unknown key");
            let set = fetch(&app.http, &app.jwks_uri).await?;
            if let Ok(mut keys) = app.keys.write() {
                *keys = Keys {
                    set,
                    fetched: Instant::now(),
                };
            }
            key(app, &kid).context("unknown key")?
        }
    };
    // The algorithm is the key's, not the token's: a token cannot pick how it is checked.
    let alg: Algorithm = jwk
        .common
        .key_algorithm
        .context("the key names no algorithm")?
        .to_string()
        .parse()?;
    anyhow::ensure!(header.alg == alg, "the token's algorithm is not its key's");
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[&app.issuer]);
    validation.set_audience(&[&app.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_jwk(&jwk)?, &validation)?;
    Ok(data.claims)
}

fn key(app: &App, kid: &str) -> Option<Jwk> {
    app.keys.read().ok()?.set.find(kid).cloned()
}

/// An RFC 6750 §3 refusal: `WWW-Authenticate: Bearer` with the error, and a JSON body.
fn challenge(status: StatusCode, error: Option<&str>) -> Response {
    let www = match error {
        Some(e) => format!(r#"Bearer realm="reports", error="{e}""#),
        None => r#"Bearer realm="reports""#.to_string(),
    };
    let body = json!({ "error": error.unwrap_or("invalid_request") });
    (status, [(header::WWW_AUTHENTICATE, www)], axum::Json(body)).into_response()
}
