//! OAuth 2.0 / OpenID Connect endpoints: authorization (with the hosted login and consent
//! pages), token, UserInfo, introspection, revocation, RP-initiated logout and discovery.
//! Protocol errors are RFC 6749 §5.2 bodies; bearer errors follow RFC 6750 §3.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::json;

use super::extract::Context;
use super::pages::{self, with_page_headers};
use crate::abuse::Class;
use crate::app::AppState;
use crate::oauth::authorize::{self, BrowserSession, Interaction, Next, Refusal};
use crate::oauth::clients::{self, Credentials};
use crate::oauth::{ErrorCode, OAuthError, Params, introspect, parse_params, token};
use crate::oidc::{self, SESSION_COOKIE};

const CSRF_COOKIE: &str = "tessera_csrf";

pub fn router() -> super::Routes {
    use super::Access::{Bearer, Client, Public};
    use utoipa_axum::routes;
    super::Routes::default()
        .api(routes!(authorize_get, authorize_post), Public)
        .api(routes!(login), Public)
        .api(routes!(second_factor), Public)
        .api(routes!(passkey_sign_in), Public)
        .api(routes!(passkeys_page, passkeys_add), Public)
        .api(routes!(consent), Public)
        .api(routes!(token_endpoint), Client)
        .api(routes!(userinfo_get, userinfo_post), Bearer)
        .api(routes!(introspect_endpoint), Client)
        .api(routes!(revoke_endpoint), Client)
        .api(routes!(logout_get, logout_post), Public)
        .api(routes!(openid_configuration), Public)
        .api(routes!(authorization_server_metadata), Public)
        .page(
            "/assets/tessera.css",
            get(|State(s): State<AppState>| async move { s.pages.css() }),
        )
        .page(
            "/assets/logo.svg",
            get(|State(s): State<AppState>| async move { s.pages.logo() }),
        )
        .page(
            "/assets/passkey.js",
            get(|State(s): State<AppState>| async move { s.pages.passkey_js() }),
        )
}

// ---------------------------------------------------------------- what the document says of the forms
//
// The endpoints below read their parameters themselves (`parse_params`: RFC 6749 §3.1 refuses
// a repeated parameter, which a typed extractor would not), so these types only describe them.

/// RFC 6749 §4.1.1, RFC 7636 §4.3, RFC 8707 §2 and OIDC Core §3.1.2.1: an authorization request.
#[derive(utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct AuthorizationRequest {
    /// `code` (the only response type).
    response_type: String,
    client_id: String,
    /// Needed when the client has more than one registered.
    #[schema(required = false)]
    #[param(required = false)]
    redirect_uri: String,
    /// Space-separated; `openid` makes it an OpenID Connect request.
    #[schema(required = false)]
    #[param(required = false)]
    scope: String,
    #[schema(required = false)]
    #[param(required = false)]
    state: String,
    #[schema(required = false)]
    #[param(required = false)]
    nonce: String,
    /// RFC 7636: required of public clients.
    #[schema(required = false)]
    #[param(required = false)]
    code_challenge: String,
    /// `S256`.
    #[schema(required = false)]
    #[param(required = false)]
    code_challenge_method: String,
    /// `none`, `login` or `consent`.
    #[schema(required = false)]
    #[param(required = false)]
    prompt: String,
    #[schema(required = false)]
    #[param(required = false)]
    max_age: u64,
    /// Space-separated, in order of preference (`acr_values_supported`): a session weaker than
    /// the weakest known one signs in again.
    #[schema(required = false)]
    #[param(required = false)]
    acr_values: String,
    #[schema(required = false)]
    #[param(required = false)]
    login_hint: String,
    /// RFC 8707: the resource server the token is for.
    #[schema(required = false)]
    #[param(required = false)]
    resource: String,
    /// The tenant to sign in to (one of the user's), skipping the choice.
    #[schema(required = false)]
    #[param(required = false)]
    tenant: String,
}

/// The hosted sign-in form.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct LoginForm {
    /// The double-submit token of the page (it equals the CSRF cookie).
    csrf_token: String,
    /// The authorization request, form-encoded, that the page continues.
    request: String,
    email: String,
    #[schema(format = Password)]
    password: String,
}

/// The hosted second-factor form (after a right password, for an account with a factor).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct SecondFactorForm {
    csrf_token: String,
    request: String,
    /// The sealed challenge the password step answered with.
    mfa_token: String,
    /// Six digits from the authenticator app, or a recovery code.
    code: String,
}

/// The hosted consent form.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ConsentForm {
    csrf_token: String,
    request: String,
    /// `allow` or `deny`.
    decision: String,
}

/// The token request of every grant (RFC 6749 §4.1.3, §4.4.2, §6; RFC 7636 §4.5; RFC 8693
/// §2.1; RFC 8707 §2). Client credentials go in HTTP Basic or, as `client_secret_post`, here.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct TokenRequest {
    /// `authorization_code`, `refresh_token`, `client_credentials` or
    /// `urn:ietf:params:oauth:grant-type:token-exchange`.
    grant_type: String,
    #[schema(required = false)]
    code: String,
    #[schema(required = false)]
    redirect_uri: String,
    #[schema(required = false)]
    code_verifier: String,
    #[schema(required = false)]
    refresh_token: String,
    #[schema(required = false)]
    scope: String,
    #[schema(required = false)]
    resource: String,
    #[schema(required = false)]
    audience: String,
    #[schema(required = false)]
    subject_token: String,
    #[schema(required = false)]
    subject_token_type: String,
    #[schema(required = false)]
    actor_token: String,
    #[schema(required = false)]
    actor_token_type: String,
    #[schema(required = false)]
    requested_token_type: String,
    #[schema(required = false)]
    client_id: String,
    #[schema(required = false, format = Password)]
    client_secret: String,
}

/// RFC 7662 §2.1 and RFC 7009 §2.1: the token to look at or revoke.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct TokenForm {
    token: String,
    /// `access_token` or `refresh_token`; a hint only.
    #[schema(required = false)]
    token_type_hint: String,
    #[schema(required = false)]
    client_id: String,
    #[schema(required = false, format = Password)]
    client_secret: String,
}

/// RFC 6750 §2.2: the access token in the form body instead of the header.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct UserInfoForm {
    #[schema(required = false)]
    access_token: String,
}

/// OIDC RP-Initiated Logout 1.0 §2, or the answer of the confirmation page (`decision`).
#[derive(utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct LogoutRequest {
    #[schema(required = false)]
    #[param(required = false)]
    id_token_hint: String,
    #[schema(required = false)]
    #[param(required = false)]
    client_id: String,
    #[schema(required = false)]
    #[param(required = false)]
    post_logout_redirect_uri: String,
    #[schema(required = false)]
    #[param(required = false)]
    state: String,
    #[schema(required = false)]
    #[param(required = false)]
    logout_hint: String,
}

// ---------------------------------------------------------------- errors and small helpers

/// An RFC 6749 §5.2 error response (no-store; `invalid_client` with `WWW-Authenticate`).
fn oauth_error(e: &OAuthError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut res = (
        status,
        axum::Json(json!({ "error": e.code, "error_description": e.description })),
    )
        .into_response();
    if let Some(secs) = e.retry_after {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if e.code == ErrorCode::InvalidClient {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Basic realm="tessera""#),
        );
    }
    super::no_store(res)
}

/// RFC 6750 §3 error for the UserInfo endpoint.
fn bearer_error(status: StatusCode, code: ErrorCode, description: &str) -> Response {
    let mut res = (
        status,
        axum::Json(json!({ "error": code, "error_description": description })),
    )
        .into_response();
    let value =
        format!(r#"Bearer realm="tessera", error="{code}", error_description="{description}""#);
    if let Ok(v) = HeaderValue::from_str(&value) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

pub(super) fn see_other(location: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    with_page_headers(res)
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        })
}

pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.to_string())
        })
}

/// The name of a hosted-page cookie: with the `__Host-` prefix when the issuer is https, so the
/// browser only accepts it from this host, over TLS, for every path (RFC 6265bis §4.1.3.2).
pub(super) fn cookie_name(state: &AppState, base: &str) -> String {
    if state.config.issuer.starts_with("https://") {
        format!("__Host-{base}")
    } else {
        base.to_string()
    }
}

pub(super) fn set_cookie(
    res: &mut Response,
    state: &AppState,
    base: &str,
    value: &str,
    max_age: i64,
) {
    let name = cookie_name(state, base);
    let secure = if state.config.issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let line = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}");
    if let Ok(v) = HeaderValue::from_str(&line) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The double-submit CSRF token of the hosted forms: the cookie's, or a new one.
fn csrf(state: &AppState, headers: &HeaderMap) -> (String, bool) {
    match cookie(headers, &cookie_name(state, CSRF_COOKIE)).filter(|c| c.len() == 43) {
        Some(c) => (c, false),
        None => (
            crate::crypto::b64url(&crate::crypto::random_bytes::<32>()),
            true,
        ),
    }
}

/// A hosted form post is genuine: it comes from our own pages (`Sec-Fetch-Site`, `Origin`) and
/// carries the double-submit CSRF token of its cookie.
fn csrf_ok(state: &AppState, headers: &HeaderMap, params: &Params) -> bool {
    if !same_origin(state, headers) {
        return false;
    }
    match (
        cookie(headers, &cookie_name(state, CSRF_COOKIE)),
        params.get("csrf_token"),
    ) {
        (Some(c), Some(f)) => c.len() == 43 && crate::crypto::ct_eq(c.as_bytes(), f.as_bytes()),
        _ => false,
    }
}

/// Fetch metadata and `Origin`, when the browser sends them, must name this origin: a
/// cross-site form post is refused even if it somehow carries the CSRF cookie.
pub(super) fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    match header("origin") {
        None => true,
        Some(origin) => url::Url::parse(&state.config.issuer)
            .is_ok_and(|issuer| issuer.origin().ascii_serialization() == origin),
    }
}

async fn browser_session(
    state: &AppState,
    headers: &HeaderMap,
    now: i64,
) -> Option<BrowserSession> {
    let token = cookie(headers, &cookie_name(state, SESSION_COOKIE))?;
    oidc::find_browser_session(state, &token, now)
        .await
        .ok()
        .flatten()
}

/// The page of an unexpected failure: the cause is logged (as `what` failed), never shown.
pub(super) fn went_wrong(state: &AppState, what: &str, e: &dyn std::fmt::Debug) -> Response {
    tracing::error!(error = ?e, "{what} failed");
    state.pages.message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "Please try again later.",
    )
}

/// `page` (showing `message`) as 429 with `Retry-After`: throttled or locked out.
pub(super) fn throttled(retry_after: u64, page: impl FnOnce(&str) -> Response) -> Response {
    let message = too_many(retry_after);
    retry_later(retry_after, page(&message))
}

pub(super) fn too_many(retry_after: u64) -> String {
    format!("Too many attempts. Try again in {retry_after} seconds.")
}

/// `res` (a page saying [`too_many`]) as 429 with `Retry-After`.
pub(super) fn retry_later(retry_after: u64, mut res: Response) -> Response {
    *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    res
}

/// A posted hosted form: its fields, or the page that refuses it
/// (malformed, or a CSRF check that fails; `expired` says what to do then).
fn posted_form(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    expired: &str,
) -> Result<Params, Box<Response>> {
    let form = match parse_params(body) {
        Ok(f) if is_form(headers) => f,
        _ => return Err(Box::new(bad_page(state, "The form was malformed."))),
    };
    if !csrf_ok(state, headers, &form) {
        return Err(Box::new(state.pages.message(
            StatusCode::FORBIDDEN,
            "Please try again",
            expired,
        )));
    }
    Ok(form)
}

pub(super) fn bad_page(state: &AppState, message: &str) -> Response {
    state.pages.message(
        StatusCode::BAD_REQUEST,
        "This request cannot continue",
        message,
    )
}

// ---------------------------------------------------------------- authorization and pages

/// RFC 6749 §4.1.1: the authorization request. Answers the sign-in, consent or tenant page, or
/// redirects to the client with a code or an error (RFC 6749 §4.1.2, RFC 9207 `iss`).
#[utoipa::path(get, path = "/oauth2/authorize", tag = "oauth", params(AuthorizationRequest),
    responses((status = 200, description = "A hosted page: sign in, consent or pick a tenant", content_type = "text/html"),
        (status = 303, description = "To the client's redirect URI with `code` or `error`"),
        (status = "4XX", description = "An HTML page saying what went wrong", content_type = "text/html")))]
async fn authorize_get(
    State(state): State<AppState>,
    Context(ctx): Context,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    authorize(state, headers, &ctx, query.unwrap_or_default().as_bytes()).await
}

/// OIDC Core §3.1.2.1: the authorization endpoint accepts POST too.
#[utoipa::path(post, path = "/oauth2/authorize", tag = "oauth",
    request_body(content = AuthorizationRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "A hosted page: sign in, consent or pick a tenant", content_type = "text/html"),
        (status = 303, description = "To the client's redirect URI with `code` or `error`"),
        (status = "4XX", description = "An HTML page saying what went wrong", content_type = "text/html")))]
async fn authorize_post(
    State(state): State<AppState>,
    Context(ctx): Context,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_form(&headers) {
        return bad_page(&state, "The request must be form-encoded.");
    }
    authorize(state, headers, &ctx, &body).await
}

async fn authorize(
    state: AppState,
    headers: HeaderMap,
    ctx: &crate::context::RequestContext,
    raw: &[u8],
) -> Response {
    let params = match parse_params(raw) {
        Ok(p) => p,
        Err(e) => return bad_page(&state, &e.description),
    };
    let now = state.clock.now();
    let browser = browser_session(&state, &headers, now).await;
    proceed(
        &state,
        &headers,
        params,
        browser,
        Interaction::default(),
        ctx.ip.as_deref(),
        None,
    )
    .await
}

/// Validates the request, decides, and renders the result. `new_session` is a cookie token to
/// set (after a login).
async fn proceed(
    state: &AppState,
    headers: &HeaderMap,
    params: Params,
    browser: Option<BrowserSession>,
    interaction: Interaction,
    ip: Option<&str>,
    new_session: Option<&str>,
) -> Response {
    let request = match authorize::validate(state, params).await {
        Ok(r) => r,
        Err(Refusal::Page(m)) => return bad_page(state, &m),
        Err(Refusal::Redirect(url)) => return see_other(&url),
    };
    let now = state.clock.now();
    let decided = authorize::decide(state, request, browser.as_ref(), interaction, ip, now).await;
    let mut res = match decided {
        Ok(Next::Redirect(url)) => see_other(&url),
        Ok(Next::Login(req)) => match req.params.get("idp") {
            // `idp=NAME`: straight to that provider, skipping the sign-in page.
            Some(idp) => see_other(&super::federation::start_url(idp, &req.params.encode())),
            None => login_page(state, headers, &req, None).await,
        },
        Ok(Next::Consent(req, user)) => {
            let (token, fresh) = csrf(state, headers);
            let scopes: Vec<&str> = req.scope.split(' ').map(describe_scope).collect();
            let ctx = json!({ "client_name": req.client.name, "email": user.email, "scopes": scopes, "csrf_token": token, "request": req.params.encode() });
            let mut res = state.pages.render(StatusCode::OK, "consent.html", ctx);
            if fresh {
                set_cookie(&mut res, state, CSRF_COOKIE, &token, 3600);
            }
            res
        }
        Ok(Next::PickTenant(req, tenants)) => {
            let request = req.params.encode();
            let choices: Vec<_> = tenants
                .iter()
                .map(|t| {
                    let href = format!(
                        "/oauth2/authorize?{request}&tenant={}",
                        form_urlencoded::byte_serialize(t.id.as_bytes()).collect::<String>()
                    );
                    json!({ "name": t.name, "slug": t.slug, "kind": t.kind, "href": href })
                })
                .collect();
            let ctx = json!({ "client_name": req.client.name, "tenants": choices });
            state.pages.render(StatusCode::OK, "tenant.html", ctx)
        }
        Err(e) => went_wrong(state, "authorization", &e),
    };
    if let Some(token) = new_session {
        set_cookie(
            &mut res,
            state,
            SESSION_COOKIE,
            token,
            state.config.browser_session_ttl as i64,
        );
    }
    res
}

fn describe_scope(scope: &str) -> &str {
    match scope {
        "openid" => "Know who you are",
        "profile" => "See your name, locale and time zone",
        "email" => "See your email address",
        "offline_access" => "Stay connected when you are not using it",
        other => other,
    }
}

async fn login_page(
    state: &AppState,
    headers: &HeaderMap,
    req: &authorize::AuthorizationRequest,
    error: Option<&str>,
) -> Response {
    let email = json!(req.login_hint.as_deref().unwrap_or(""));
    let passkeys = state.webauthn.is_some();
    let request = req.params.encode();
    let providers = match crate::federation::offered(state).await {
        Ok(list) => list,
        Err(e) => return went_wrong(state, "listing identity providers", &e),
    };
    let providers: Vec<_> = providers
        .iter()
        .map(|(name, display)| {
            json!({ "name": display, "href": super::federation::start_url(name, &request) })
        })
        .collect();
    let fields = [
        ("email", email),
        ("passkeys", json!(passkeys)),
        ("providers", json!(providers)),
    ];
    let res = form_page(state, headers, req, "login.html", fields, error);
    if passkeys {
        pages::allow_script(res)
    } else {
        res
    }
}

/// A page of the sign-in (`template`) continuing `req`, with its CSRF token, one field of its
/// own and an error (401 with one).
pub(super) fn form_page(
    state: &AppState,
    headers: &HeaderMap,
    req: &authorize::AuthorizationRequest,
    template: &str,
    fields: impl IntoIterator<Item = (&'static str, serde_json::Value)>,
    error: Option<&str>,
) -> Response {
    let (token, fresh) = csrf(state, headers);
    let mut ctx = json!({
        "client_name": req.client.name,
        "csrf_token": token,
        "request": req.params.encode(),
        "error": error,
    });
    for (name, value) in fields {
        ctx[name] = value;
    }
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    let mut res = state.pages.render(status, template, ctx);
    if fresh {
        set_cookie(&mut res, state, CSRF_COOKIE, &token, 3600);
    }
    res
}

/// A posted sign-in form (password or second factor): its fields, the authorization request it
/// carries, and that request validated again; or the page that refuses it (malformed, CSRF,
/// an invalid request).
pub(super) async fn sign_in_form(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Params, Params, authorize::AuthorizationRequest), Response> {
    let expired = "The sign-in form expired. Go back to the application and start again.";
    let form = posted_form(state, headers, body, expired).map_err(|page| *page)?;
    let (params, request) = continued(state, form.get("request").unwrap_or_default()).await?;
    Ok((form, params, request))
}

/// The authorization request a hosted page continues (form-encoded), validated again; or the
/// page that refuses it.
pub(super) async fn continued(
    state: &AppState,
    raw: &str,
) -> Result<(Params, authorize::AuthorizationRequest), Response> {
    let params = parse_params(raw.as_bytes()).map_err(|e| bad_page(state, &e.description))?;
    match authorize::validate(state, params.clone()).await {
        Ok(r) => Ok((params, r)),
        Err(Refusal::Page(m)) => Err(bad_page(state, &m)),
        Err(Refusal::Redirect(url)) => Err(see_other(&url)),
    }
}

/// The login form: checks CSRF and the password, starts the browser session, and continues the
/// authorization request it carries.
#[utoipa::path(post, path = "/oauth2/login", tag = "oauth",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "The next page: consent or pick a tenant", content_type = "text/html"),
        (status = 303, description = "To the client's redirect URI with `code` or `error`"),
        (status = "4XX", description = "An HTML page saying what went wrong", content_type = "text/html")))]
async fn login(
    State(state): State<AppState>,
    Context(ctx): Context,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, params, request) = match sign_in_form(&state, &headers, &body).await {
        Ok(parts) => parts,
        Err(page) => return page,
    };
    let now = state.clock.now();
    let email = form.get("email").unwrap_or_default();
    // Identifier-first (enterprise routing): an address whose domain a tenant bound to an
    // identity provider goes there, with the address as its `login_hint`; no password is read.
    match crate::federation::route_of(&state, email).await {
        Ok(Some(crate::store::federation::Route { idp: Some(idp), .. })) => {
            let mut params = params;
            params.0.retain(|(k, _)| k != "login_hint");
            params.0.push(("login_hint".into(), email.to_string()));
            return see_other(&super::federation::start_url(&idp, &params.encode()));
        }
        Ok(_) => {}
        Err(e) => return went_wrong(&state, "routing a sign-in", &e),
    }
    let user = match crate::accounts::authenticate(
        &state,
        email,
        form.get("password").unwrap_or_default(),
        None,
        &ctx,
        now,
    )
    .await
    {
        Ok(u) => u,
        Err(crate::Error::TooManyRequests { retry_after }) => {
            let mut req = request;
            req.login_hint = Some(email.chars().take(254).collect());
            let page = login_page(&state, &headers, &req, Some(&too_many(retry_after))).await;
            return retry_later(retry_after, page);
        }
        Err(crate::Error::Unauthenticated { .. } | crate::Error::Validation(_)) => {
            let mut req = request;
            req.login_hint = Some(email.chars().take(254).collect());
            return login_page(&state, &headers, &req, Some("Invalid email or password.")).await;
        }
        // The password was right; the account needs its second factor, on a page of its own.
        Err(crate::Error::MfaRequired(challenge)) => {
            let webauthn = challenge.webauthn.as_ref();
            return mfa_page(&state, &headers, &request, &challenge.token, webauthn, None);
        }
        // The password was right but the operator requires a verified address first.
        Err(crate::Error::Forbidden {
            code: crate::error::Code::EmailNotVerified,
            ..
        }) => {
            let mut req = request;
            req.login_hint = Some(email.chars().take(254).collect());
            let message = "Confirm your email address first: follow the link we sent you.";
            let mut res = login_page(&state, &headers, &req, Some(message)).await;
            *res.status_mut() = StatusCode::FORBIDDEN;
            return res;
        }
        Err(e) => {
            return went_wrong(&state, "hosted login", &e);
        }
    };
    let amr = crate::mfa::AMR_PASSWORD;
    signed_in(&state, &headers, params, Proven::here(user, amr), &ctx, now).await
}

/// A user who has just proved who they are, and how: RFC 8176 methods, and the upstream provider
/// of a federated sign-in.
pub(super) struct Proven<'a> {
    pub user: crate::store::users::User,
    pub amr: &'a str,
    pub via: Option<&'a str>,
}

impl<'a> Proven<'a> {
    /// Proven here, not at an upstream provider.
    pub(super) fn here(user: crate::store::users::User, amr: &'a str) -> Self {
        Self {
            user,
            amr,
            via: None,
        }
    }
}

/// A new browser session for a user who has just proved who they are, then the authorization
/// request goes on (consent, tenant, or the redirect with a code).
pub(super) async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
    params: Params,
    proven: Proven<'_>,
    ctx: &crate::context::RequestContext,
    now: i64,
) -> Response {
    let Proven { user, amr, via } = proven;
    let started = oidc::start_browser_session(state, &user.id, amr, via, ctx, now).await;
    let (session, token) = match started {
        Ok(s) => s,
        Err(e) => {
            return went_wrong(state, "starting a browser session", &e);
        }
    };
    let interaction = Interaction {
        signed_in: Some(user),
        consent: None,
    };
    proceed(
        state,
        headers,
        params,
        Some(session),
        interaction,
        ctx.ip.as_deref(),
        Some(&token),
    )
    .await
}

/// The second-factor page; with the WebAuthn options when the account has a key (the page after
/// a wrong code has none: the ceremony may have been used, and the code form stays).
pub(super) fn mfa_page(
    state: &AppState,
    headers: &HeaderMap,
    req: &authorize::AuthorizationRequest,
    mfa_token: &str,
    webauthn: Option<&webauthn_rs::prelude::RequestChallengeResponse>,
    error: Option<&str>,
) -> Response {
    let options = webauthn.and_then(|w| serde_json::to_string(w).ok());
    let fields = [
        ("mfa_token", json!(mfa_token)),
        ("webauthn", json!(options)),
    ];
    let mut res = form_page(state, headers, req, "mfa.html", fields, error);
    if options.is_some() {
        res = pages::allow_script(res);
    }
    // The page carries the challenge, a bearer secret: never kept by a cache.
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The second-factor form: checks CSRF and the code against the challenge's user (throttled and
/// locked out like passwords), starts the browser session, and continues the authorization
/// request it carries. Six digits are a TOTP code; anything else is tried as a recovery code.
#[utoipa::path(post, path = "/oauth2/mfa", tag = "oauth",
    request_body(content = SecondFactorForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "The next page: consent or pick a tenant", content_type = "text/html"),
        (status = 303, description = "To the client's redirect URI with `code` or `error`"),
        (status = "4XX", description = "An HTML page saying what went wrong", content_type = "text/html")))]
async fn second_factor(
    State(state): State<AppState>,
    Context(ctx): Context,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, params, request) = match sign_in_form(&state, &headers, &body).await {
        Ok(parts) => parts,
        Err(page) => return page,
    };
    let now = state.clock.now();
    use crate::mfa::{Method, Proof};
    let mfa_token = form.get("mfa_token").unwrap_or_default();
    let code = form.get("code").unwrap_or_default().trim();
    let assertion = form
        .get("assertion")
        .and_then(|a| serde_json::from_str::<serde_json::Value>(a).ok());
    let (method, proof) = match (form.get("method"), &assertion) {
        (Some("webauthn"), Some(a)) => (Method::Webauthn, Proof::Assertion(a)),
        (Some("webauthn"), None) => (Method::Webauthn, Proof::Code("")),
        _ if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) => {
            (Method::Totp, Proof::Code(code))
        }
        _ => (Method::RecoveryCode, Proof::Code(code)),
    };
    match crate::mfa::complete_sign_in(&state, mfa_token, method, proof, &ctx, now).await {
        Ok(done) => {
            let proven = Proven {
                user: done.user,
                amr: done.amr,
                via: done.via.as_deref(),
            };
            signed_in(&state, &headers, params, proven, &ctx, now).await
        }
        Err(
            crate::Error::Unauthenticated {
                code: crate::error::Code::InvalidMfaCode,
                ..
            }
            | crate::Error::Validation(_),
        ) => {
            let message = if method == Method::Webauthn {
                "That passkey did not work. Give a code from your app, or sign in again."
            } else {
                "That code did not work. Give the current code from your app."
            };
            mfa_page(&state, &headers, &request, mfa_token, None, Some(message))
        }
        Err(crate::Error::TooManyRequests { retry_after }) => throttled(retry_after, |m| {
            mfa_page(&state, &headers, &request, mfa_token, None, Some(m))
        }),
        Err(crate::Error::Unauthenticated { .. }) => {
            let message = "The sign-in took too long. Sign in again.";
            let mut res = login_page(&state, &headers, &request, Some(message)).await;
            *res.status_mut() = StatusCode::UNAUTHORIZED;
            res
        }
        Err(e) => went_wrong(&state, "hosted second factor", &e),
    }
}

/// The hosted passwordless sign-in form (posted by `passkey.js`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct PasskeyForm {
    csrf_token: String,
    request: String,
    /// From `POST /auth/passkey/start`.
    ceremony: String,
    /// `PublicKeyCredential` JSON, from `navigator.credentials.get`.
    assertion: String,
}

/// Signs in with a passkey from the login page: checks CSRF and the assertion, starts the
/// browser session, and continues the authorization request it carries.
#[utoipa::path(post, path = "/oauth2/passkey", tag = "oauth",
    request_body(content = PasskeyForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "The next page: consent or pick a tenant", content_type = "text/html"),
        (status = 303, description = "To the client's redirect URI with `code` or `error`"),
        (status = "4XX", description = "An HTML page saying what went wrong", content_type = "text/html")))]
async fn passkey_sign_in(
    State(state): State<AppState>,
    Context(ctx): Context,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, params, request) = match sign_in_form(&state, &headers, &body).await {
        Ok(parts) => parts,
        Err(page) => return page,
    };
    let now = state.clock.now();
    let ceremony = form.get("ceremony").unwrap_or_default();
    let assertion = serde_json::from_str(form.get("assertion").unwrap_or_default())
        .unwrap_or(serde_json::Value::Null);
    match crate::mfa::webauthn::passkey_finish(&state, ceremony, &assertion, &ctx, now).await {
        Ok((user, amr)) => {
            signed_in(&state, &headers, params, Proven::here(user, amr), &ctx, now).await
        }
        Err(crate::Error::TooManyRequests { retry_after }) => {
            let message = too_many(retry_after);
            let page = login_page(&state, &headers, &request, Some(&message)).await;
            retry_later(retry_after, page)
        }
        Err(
            crate::Error::Unauthenticated { .. }
            | crate::Error::Validation(_)
            | crate::Error::Forbidden { .. }
            | crate::Error::Conflict { .. },
        ) => {
            let message = "That passkey did not work. Try again, or sign in with your password.";
            login_page(&state, &headers, &request, Some(message)).await
        }
        Err(e) => went_wrong(&state, "hosted passkey sign-in", &e),
    }
}

/// The signed-in browser user, when their sign-in is recent enough to add a passkey; else the
/// page that says what to do (403: a cookie session is no HTTP authentication scheme).
async fn recent_browser_user(
    state: &AppState,
    headers: &HeaderMap,
    now: i64,
) -> Result<crate::store::users::User, Response> {
    let sign_in_first = || {
        state.pages.message(
            StatusCode::FORBIDDEN,
            "Sign in first",
            "Sign in to an application that uses Tessera, then come back to add a passkey.",
        )
    };
    let Some(session) = browser_session(state, headers, now).await else {
        return Err(sign_in_first());
    };
    if now - session.auth_time > crate::mfa::RECENT_AUTH_SECS {
        return Err(state.pages.message(
            StatusCode::FORBIDDEN,
            "Sign in again",
            "For your security, adding a passkey needs a sign-in within the last five minutes. \
             Sign out, sign in again, then come back.",
        ));
    }
    match crate::store::users::find_by_id(state.store.pool(), &session.user_id).await {
        Ok(Some(user)) if user.is_active() => Ok(user),
        Ok(_) => Err(sign_in_first()),
        Err(e) => Err(went_wrong(state, "reading the browser session's user", &e)),
    }
}

/// The page of the signed-in browser user's passkeys, with a fresh registration ceremony.
async fn render_passkeys(
    state: &AppState,
    headers: &HeaderMap,
    user: &crate::store::users::User,
    error: Option<&str>,
    now: i64,
) -> Response {
    let started = crate::mfa::webauthn::start_registration_for(state, user, "Passkey", now).await;
    let listed = crate::mfa::webauthn::list_for(state, &user.id).await;
    let (started, listed) = match (started, listed) {
        (Ok(s), Ok(l)) => (s, l),
        (Err(crate::Error::Conflict { message, .. }), _) => {
            return state
                .pages
                .message(StatusCode::CONFLICT, "Passkeys are unavailable", message);
        }
        (Err(crate::Error::TooManyRequests { .. }), _) => {
            return state.pages.message(
                StatusCode::TOO_MANY_REQUESTS,
                "Please wait",
                "Too many attempts. Try again in a minute.",
            );
        }
        (Err(e), _) | (_, Err(e)) => {
            return went_wrong(state, "the passkeys page", &e);
        }
    };
    let (token, fresh) = csrf(state, headers);
    let ctx = json!({
        "email": user.email,
        "passkeys": listed,
        "ceremony": started.ceremony,
        "options": started.options.to_string(),
        "csrf_token": token,
        "error": error,
    });
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let mut res = pages::allow_script(state.pages.render(status, "passkeys.html", ctx));
    if fresh {
        set_cookie(&mut res, state, CSRF_COOKIE, &token, 3600);
    }
    res
}

/// The hosted page where a user signed in on this browser (within the last five minutes) adds
/// a passkey (WebAuthn; the page runs `passkey.js`).
#[utoipa::path(get, path = "/oauth2/passkeys", tag = "oauth",
    responses((status = 200, description = "The page: the user's passkeys and a button to add one", content_type = "text/html"),
        (status = "4XX", description = "An HTML page saying what to do first (sign in)", content_type = "text/html")))]
async fn passkeys_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let now = state.clock.now();
    match recent_browser_user(&state, &headers, now).await {
        Ok(user) => render_passkeys(&state, &headers, &user, None, now).await,
        Err(page) => page,
    }
}

/// The hosted passkey registration form (posted by `passkey.js`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct PasskeyRegistrationForm {
    csrf_token: String,
    ceremony: String,
    /// `PublicKeyCredential` JSON, from `navigator.credentials.create`.
    credential: String,
    name: String,
}

/// Adds the passkey the browser created for the page's ceremony (CSRF-checked), then shows the
/// recovery codes when it is the account's first factor.
#[utoipa::path(post, path = "/oauth2/passkeys", tag = "oauth",
    request_body(content = PasskeyRegistrationForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Added", content_type = "text/html"),
        (status = "4XX", description = "An HTML page saying what went wrong", content_type = "text/html")))]
async fn passkeys_add(
    State(state): State<AppState>,
    Context(ctx): Context,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let expired = "The form expired. Open the passkeys page again.";
    let form = match posted_form(&state, &headers, &body, expired) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    let now = state.clock.now();
    let user = match recent_browser_user(&state, &headers, now).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    let credential = serde_json::from_str(form.get("credential").unwrap_or_default())
        .unwrap_or(serde_json::Value::Null);
    let ceremony = form.get("ceremony").unwrap_or_default();
    let name = form.get("name").filter(|n| !n.trim().is_empty());
    let finished = crate::mfa::webauthn::finish_registration_for(
        &state,
        &user.id,
        ceremony,
        &credential,
        name,
        &ctx,
        now,
    )
    .await;
    match finished {
        Ok(confirmed) => {
            let mut message = format!("“{}” signs you in from now on.", confirmed.factor.name);
            if let Some(codes) = &confirmed.recovery_codes {
                message.push_str(
                    " Keep these recovery codes somewhere safe; each works once if you lose \
                     your passkey: ",
                );
                message.push_str(&codes.join(" · "));
            }
            state
                .pages
                .message(StatusCode::OK, "Passkey added", &message)
        }
        Err(
            crate::Error::Validation(_)
            | crate::Error::Unauthenticated { .. }
            | crate::Error::Conflict { .. },
        ) => {
            let error = "That did not work: the passkey may be registered already, or the page \
                         was open too long. Try again.";
            render_passkeys(&state, &headers, &user, Some(error), now).await
        }
        Err(e) => went_wrong(&state, "adding a passkey", &e),
    }
}

/// The consent form: Allow or Deny, remembered per user, client and scope set.
#[utoipa::path(post, path = "/oauth2/consent", tag = "oauth",
    request_body(content = ConsentForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "The next page: pick a tenant", content_type = "text/html"),
        (status = 303, description = "To the client's redirect URI with `code` or `error`"),
        (status = "4XX", description = "An HTML page saying what went wrong", content_type = "text/html")))]
async fn consent(
    State(state): State<AppState>,
    Context(ctx): Context,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let expired = "The consent form expired. Go back to the application and start again.";
    let form = match posted_form(&state, &headers, &body, expired) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    let params = match parse_params(form.get("request").unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(e) => return bad_page(&state, &e.description),
    };
    let allow = match form.get("decision") {
        Some("allow") => true,
        Some("deny") => false,
        _ => return bad_page(&state, "Choose Allow or Deny."),
    };
    let browser = browser_session(&state, &headers, state.clock.now()).await;
    let interaction = Interaction {
        signed_in: None,
        consent: browser.as_ref().map(|_| allow),
    };
    let ip = ctx.ip.as_deref();
    proceed(&state, &headers, params, browser, interaction, ip, None).await
}

// ---------------------------------------------------------------- token-style endpoints

/// RFC 6749 §2.3.1: HTTP Basic (form-urlencoded id and secret) or body parameters, not both.
fn client_credentials(headers: &HeaderMap, params: &Params) -> Result<Credentials, OAuthError> {
    let basic = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(v) if v.len() > 6 && v[..6].eq_ignore_ascii_case("basic ") => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(v[6..].trim())
                .map_err(|_| OAuthError::invalid_client())?;
            let text = String::from_utf8(decoded).map_err(|_| OAuthError::invalid_client())?;
            let (id, secret) = text
                .split_once(':')
                .ok_or_else(OAuthError::invalid_client)?;
            let decode = |s: &str| {
                form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            Some((decode(id), decode(secret)))
        }
        Some(_) => return Err(OAuthError::invalid_client()),
        None => None,
    };
    match (basic, params.get("client_id"), params.get("client_secret")) {
        (Some(_), _, Some(_)) => Err(OAuthError::invalid_request(
            "use one client authentication method, not two",
        )),
        (Some((id, _)), Some(body_id), None) if id != body_id => Err(OAuthError::invalid_request(
            "client_id differs from the Authorization header",
        )),
        (Some((client_id, secret)), _, None) => Ok(Credentials::Basic { client_id, secret }),
        (None, Some(id), Some(secret)) => Ok(Credentials::Post {
            client_id: id.into(),
            secret: secret.into(),
        }),
        (None, Some(id), None) => Ok(Credentials::None {
            client_id: id.into(),
        }),
        (None, None, _) => Ok(Credentials::Missing),
    }
}

/// Parses a form body and authenticates the client.
async fn authenticated_request(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(std::sync::Arc<clients::Client>, Params), OAuthError> {
    if !is_form(headers) {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let params = parse_params(body)?;
    let credentials = client_credentials(headers, &params)?;
    let client = clients::authenticate(&state.store, &state.clients, &credentials).await?;
    Ok((client, params))
}

/// RFC 6749 §3.2: the token endpoint.
#[utoipa::path(post, path = "/oauth2/token", tag = "oauth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "RFC 6749 §5.1 (`Cache-Control: no-store`)", body = crate::oauth::token::TokenResponse)))]
async fn token_endpoint(
    State(state): State<AppState>,
    Context(ctx): Context,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let now = state.clock.now();
        let ip = ctx.ip.as_deref().unwrap_or("");
        // A client with its own limit (an operator's choice for a busy machine client) is held
        // to that limit alone; other clients share the per-IP bucket too. Requests whose client
        // fails to authenticate always count against their IP.
        let (client, params) = match authenticated_request(&state, &headers, &body).await {
            Ok(ok) => ok,
            Err(e) => {
                state.limiter.check(Class::TokenIp, ip, now).await?;
                return Err(e);
            }
        };
        if client.rate_limit.is_none() {
            state.limiter.check(Class::TokenIp, ip, now).await?;
        }
        state
            .limiter
            .check_with(
                Class::TokenClient,
                &client.client_id,
                client.rate_limit,
                now,
            )
            .await?;
        token::exchange(&state, &client, &params, &ctx, now).await
    }
    .await;
    match result {
        Ok(t) => super::no_store(axum::Json(t).into_response()),
        Err(e) => oauth_error(&e),
    }
}

/// RFC 7662 §2: token introspection, for confidential clients.
#[utoipa::path(post, path = "/oauth2/introspect", tag = "oauth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "RFC 7662 §2.2; an unknown token is `{\"active\": false}`", body = introspect::Introspection)))]
async fn introspect_endpoint(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let (client, params) = authenticated_request(&state, &headers, &body).await?;
        if client.public {
            return Err(OAuthError::invalid_client());
        }
        let now = state.clock.now();
        state
            .limiter
            .check_with(
                Class::IntrospectClient,
                &client.client_id,
                client.rate_limit,
                now,
            )
            .await?;
        let token = params.require("token")?;
        Ok(introspect::introspect(&state, &client, token, now).await?)
    }
    .await;
    match result {
        Ok(i) => super::no_store(axum::Json(i).into_response()),
        Err(e) => oauth_error(&e),
    }
}

/// RFC 7009 §2: token revocation. An unknown or already revoked token is a success too.
#[utoipa::path(post, path = "/oauth2/revoke", tag = "oauth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Revoked (RFC 7009 §2.2: no body)")))]
async fn revoke_endpoint(
    State(state): State<AppState>,
    Context(ctx): Context,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let (client, params) = authenticated_request(&state, &headers, &body).await?;
        let token = params.require("token")?;
        Ok::<_, OAuthError>(
            introspect::revoke(&state, &client, token, &ctx, state.clock.now()).await?,
        )
    }
    .await;
    match result {
        Ok(()) => super::no_store(StatusCode::OK.into_response()),
        Err(e) => oauth_error(&e),
    }
}

/// OIDC Core §5.3: the claims about the user that the token's scopes grant.
#[utoipa::path(get, path = "/oauth2/userinfo", tag = "oauth",
    responses((status = 200, description = "OIDC Core §5.3.2", body = serde_json::Value), (status = "4XX", description = "RFC 6750 §3: the token is missing, invalid or lacks `openid`", body = super::openapi::OAuthError)))]
async fn userinfo_get(state: State<AppState>, headers: HeaderMap) -> Response {
    userinfo(state, headers, None).await
}

/// OIDC Core §5.3.1: UserInfo by POST, the token in the header or the form body.
#[utoipa::path(post, path = "/oauth2/userinfo", tag = "oauth",
    request_body(content = Option<UserInfoForm>, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "OIDC Core §5.3.2", body = serde_json::Value), (status = "4XX", description = "RFC 6750 §3: the token is missing, invalid or lacks `openid`", body = super::openapi::OAuthError)))]
async fn userinfo_post(state: State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    userinfo(state, headers, Some(&body)).await
}

/// Bearer token in the header, or in the form body of a POST (`body`; RFC 6750 §2.2).
async fn userinfo(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Option<&[u8]>,
) -> Response {
    let from_header = match super::extract::bearer_token(&headers) {
        Ok(t) => t.map(str::to_string),
        Err(_) => {
            return bearer_error(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidToken,
                "malformed Authorization header",
            );
        }
    };
    let from_body = match body.filter(|_| is_form(&headers)) {
        Some(body) => match parse_params(body) {
            Ok(p) => p.get("access_token").map(str::to_string),
            Err(e) => {
                return bearer_error(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidRequest,
                    &e.description,
                );
            }
        },
        None => None,
    };
    let token = match (from_header, from_body) {
        (Some(_), Some(_)) => {
            return bearer_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                "send the token once",
            );
        }
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => {
            let mut res = (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": ErrorCode::InvalidRequest, "error_description": "a bearer token is required"}))).into_response();
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="tessera""#),
            );
            return res;
        }
    };
    let principal = match super::extract::principal(&state, &token).await {
        Ok(p) => p,
        Err(_) => {
            return bearer_error(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidToken,
                "the access token is invalid, expired or revoked",
            );
        }
    };
    match oidc::userinfo(&state, &principal).await {
        Ok(info) => super::no_store(axum::Json(info).into_response()),
        Err(crate::Error::Forbidden { .. }) => bearer_error(
            StatusCode::FORBIDDEN,
            ErrorCode::InsufficientScope,
            "the token was not issued for openid",
        ),
        Err(crate::Error::Unauthenticated { .. }) => bearer_error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidToken,
            "the access token is invalid, expired or revoked",
        ),
        Err(e) => e.into_response(),
    }
}

// ---------------------------------------------------------------- logout and discovery

/// OIDC RP-Initiated Logout 1.0 §2: asks the user to confirm signing out.
#[utoipa::path(get, path = "/oauth2/logout", tag = "oauth", params(LogoutRequest),
    responses((status = 200, description = "The confirmation page", content_type = "text/html"), (status = "4XX", description = "An HTML page saying what went wrong", content_type = "text/html")))]
async fn logout_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    logout_request(&state, &headers, query.unwrap_or_default().as_bytes()).await
}

/// A POST is either the RP's logout request (form-encoded parameters) or the user's answer on
/// the confirmation page (it carries `decision`).
#[utoipa::path(post, path = "/oauth2/logout", tag = "oauth",
    request_body(content = LogoutRequest, description = "The logout request, or the confirmation page's answer (`csrf_token`, `request`, `decision`)", content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "The confirmation page, or signed out", content_type = "text/html"),
        (status = 303, description = "Signed out: to the `post_logout_redirect_uri`"), (status = "4XX", description = "An HTML page saying what went wrong", content_type = "text/html")))]
async fn logout_post(
    State(state): State<AppState>,
    Context(ctx): Context,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_form(&headers) {
        return bad_page(&state, "The request must be form-encoded.");
    }
    let form = match parse_params(&body) {
        Ok(f) => f,
        Err(e) => return bad_page(&state, &e.description),
    };
    let Some(decision) = form.get("decision") else {
        return logout_request(&state, &headers, &body).await;
    };
    if !csrf_ok(&state, &headers, &form) {
        return state.pages.message(
            StatusCode::FORBIDDEN,
            "Please try again",
            "The sign-out form expired.",
        );
    }
    let now = state.clock.now();
    let request = match parse_params(form.get("request").unwrap_or_default().as_bytes()) {
        Ok(p) => match oidc::validate_logout(&state, &p, now).await {
            Ok(r) => r,
            Err(m) => return bad_page(&state, &m),
        },
        Err(e) => return bad_page(&state, &e.description),
    };
    if decision != "logout" {
        return state.pages.message(
            StatusCode::OK,
            "You are still signed in",
            "You can close this window.",
        );
    }
    if let Some(session) = browser_session(&state, &headers, now).await
        && let Err(e) = oidc::end_browser_session(&state, &session, &ctx, now).await
    {
        return went_wrong(&state, "ending a browser session", &e);
    }
    let mut res = match &request.post_logout_redirect_uri {
        Some(uri) => {
            let params: Vec<(&str, &str)> = request
                .state
                .as_deref()
                .map(|s| vec![("state", s)])
                .unwrap_or_default();
            see_other(&if params.is_empty() {
                uri.clone()
            } else {
                authorize::redirect_to(uri, &params)
            })
        }
        None => state.pages.message(
            StatusCode::OK,
            "You are signed out",
            "You can close this window.",
        ),
    };
    set_cookie(&mut res, &state, SESSION_COOKIE, "", 0);
    res
}

async fn logout_request(state: &AppState, headers: &HeaderMap, raw: &[u8]) -> Response {
    let params = match parse_params(raw) {
        Ok(p) => p,
        Err(e) => return bad_page(state, &e.description),
    };
    let request = match oidc::validate_logout(state, &params, state.clock.now()).await {
        Ok(r) => r,
        Err(m) => return bad_page(state, &m),
    };
    let (token, fresh) = csrf(state, headers);
    let ctx = json!({
        "client_name": request.client.as_ref().map(|c| c.name.clone()),
        "csrf_token": token,
        "request": params.encode(),
    });
    let mut res = state.pages.render(StatusCode::OK, "logout.html", ctx);
    if fresh {
        set_cookie(&mut res, state, CSRF_COOKIE, &token, 3600);
    }
    res
}

/// OIDC Discovery 1.0 §4: the provider's metadata.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "oauth",
    responses((status = 200, description = "OIDC Discovery §3", body = serde_json::Value)))]
async fn openid_configuration(state: State<AppState>) -> Response {
    discovery(state).await
}

/// RFC 8414 §3: the same metadata as OAuth 2.0 authorization server metadata.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth",
    responses((status = 200, description = "RFC 8414 §2", body = serde_json::Value)))]
async fn authorization_server_metadata(state: State<AppState>) -> Response {
    discovery(state).await
}

async fn discovery(State(state): State<AppState>) -> Response {
    let mut res = (
        [(header::CONTENT_TYPE, "application/json")],
        state.discovery.clone(),
    )
        .into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    res
}
