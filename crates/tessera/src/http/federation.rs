//! Sign-in through other identity providers (docs/federation.md): the hosted flow
//! (`/auth/federated/{idp}/start` and `/callback`, and the page that links an existing account
//! with its password), the user's linked identities (`/identity/identities`), and the
//! operator's providers (`/admin/idps`).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa_axum::routes;

use super::extract::{Caller, Context, Json};
use super::oauth::{
    Proven as Who, bad_page, continued, cookie, cookie_name, form_page, mfa_page, retry_later,
    see_other, set_cookie, sign_in_form, signed_in, too_many, went_wrong,
};
use super::{Access, no_content};
use crate::app::AppState;
use crate::audit::By;
use crate::authz::Permission;
use crate::error::Result;
use crate::federation::email_proof;
use crate::federation::signin::{self, Callback, Outcome, Proven, Refusal};
use crate::federation::{self, IdentityList, ProviderList, ProviderSpec, ProviderView};
use crate::oauth::parse_params;

/// The cookie that binds a started upstream sign-in to the browser that started it.
const FLOW_COOKIE: &str = "tessera_federation";
/// The cookie that binds an emailed link to the browser that asked for it.
pub(super) const LINK_COOKIE: &str = "tessera_link";

pub fn router() -> super::Routes {
    use Permission::{ManageIdentityProviders, ManageOwnAccount, ReadOwnAccount};
    let operator = Access::Permission(ManageIdentityProviders);
    super::Routes::default()
        .api(routes!(start), Access::Public)
        .api(routes!(callback), Access::Public)
        .api(routes!(link), Access::Public)
        .api(routes!(link_email), Access::Public)
        .api(routes!(app_token), Access::Public)
        .api(routes!(list_identities), Access::Permission(ReadOwnAccount))
        .api(routes!(unlink), Access::Permission(ManageOwnAccount))
        .api(routes!(list_providers, add_provider), operator)
        .api(
            routes!(get_provider, update_provider, remove_provider),
            operator,
        )
}

/// The link that starts a sign-in at provider `name`, continuing authorization request
/// `request` (form-encoded).
pub(super) fn start_url(name: &str, request: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "/auth/federated/{}/start?request={}",
        enc(name),
        enc(request)
    )
}

/// Sends the browser to the upstream provider (OIDC Core §3.1.2.1: code flow, PKCE, a nonce),
/// with a cookie that binds the sign-in to this browser. From the hosted pages, `request` is
/// the authorization request the sign-in continues. From an application (a single-page app):
/// `client_id` (first-party), `return_to` (exactly one of its redirect URIs), `code_challenge`
/// (S256) and an optional `state`; the sign-in ends at `return_to` with a login code.
#[utoipa::path(get, path = "/auth/federated/{idp}/start", tag = "federation",
    params(("idp" = String, Path, description = "The provider's name"),
        ("request" = Option<String>, Query, description = "Hosted pages: the authorization request to continue, form-encoded"),
        ("client_id" = Option<String>, Query, description = "An application's sign-in: its first-party client"),
        ("return_to" = Option<String>, Query, description = "An application's sign-in: one of the client's redirect URIs"),
        ("code_challenge" = Option<String>, Query, description = "An application's sign-in: RFC 7636 S256 challenge"),
        ("code_challenge_method" = Option<String>, Query, description = "`S256`"),
        ("state" = Option<String>, Query, description = "An application's sign-in: echoed back to `return_to`")),
    responses((status = 303, description = "To the upstream's authorization endpoint"),
        (status = "4XX", description = "An HTML page saying what went wrong", content_type = "text/html"),
        (status = 503, description = "The provider cannot be reached", content_type = "text/html")))]
async fn start(
    State(state): State<AppState>,
    Path(idp): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match parse_params(query.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(e) => return bad_page(&state, &e.description),
    };
    let request = params.get("request").unwrap_or_default();
    let app = match params.get("client_id") {
        // An application's sign-in: nothing redirects before the client and URI are checked.
        Some(client_id) => {
            let checked = signin::check_app(
                &state,
                client_id,
                params.get("return_to").unwrap_or_default(),
                params.get("code_challenge").unwrap_or_default(),
                params.get("code_challenge_method"),
                params.get("state"),
            )
            .await;
            match checked {
                Ok(app) => Some(app),
                Err(crate::Error::Validation(fields)) => {
                    let message = fields
                        .iter()
                        .map(|f| format!("{}: {}", f.field, f.message))
                        .collect::<Vec<_>>()
                        .join("; ");
                    return bad_page(&state, &message);
                }
                Err(e) => return went_wrong(&state, "checking an application's sign-in", &e),
            }
        }
        // The request must be one the hosted pages would continue (client, redirect URI, PKCE).
        None => match continued(&state, request).await {
            Ok(_) => None,
            Err(page) => return page,
        },
    };
    let now = state.clock.now();
    match signin::begin(&state, &idp, request, app, now).await {
        Ok(begun) => {
            let mut res = see_other(&begun.url);
            let ttl = signin::FLOW_TTL_SECS;
            set_cookie(&mut res, &state, FLOW_COOKIE, &begun.browser_token, ttl);
            res
        }
        Err(crate::Error::NotFound) => state.pages.message(
            StatusCode::NOT_FOUND,
            "Unknown identity provider",
            "This sign-in option does not exist. Go back and choose another.",
        ),
        Err(crate::Error::Unavailable(_)) => unavailable(&state),
        Err(e) => went_wrong(&state, "starting a federated sign-in", &e),
    }
}

fn unavailable(state: &AppState) -> Response {
    state.pages.message(
        StatusCode::SERVICE_UNAVAILABLE,
        "The identity provider cannot be reached",
        "Please try again later, or sign in another way.",
    )
}

/// Where the upstream sends the browser back (RFC 6749 §4.1.2): checks the flow (taken once,
/// this browser's), RFC 9207 `iss`, then the code and the ID token, then signs the user in by
/// the linking rules, or says why not.
#[utoipa::path(get, path = "/auth/federated/{idp}/callback", tag = "federation",
    params(("idp" = String, Path, description = "The provider's name"),
        ("state" = String, Query, description = "The state of the started sign-in"),
        ("code" = Option<String>, Query, description = "The upstream's authorization code"),
        ("iss" = Option<String>, Query, description = "RFC 9207: the upstream's issuer"),
        ("error" = Option<String>, Query, description = "The upstream's error")),
    responses((status = 200, description = "The next page: second factor, linking, consent or pick a tenant", content_type = "text/html"),
        (status = 303, description = "To the client's redirect URI with `code` or `error`"),
        (status = "4XX", description = "An HTML page saying why the sign-in stopped", content_type = "text/html"),
        (status = 503, description = "The provider cannot be reached", content_type = "text/html")))]
async fn callback(
    State(state): State<AppState>,
    Context(ctx): Context,
    Path(idp): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match parse_params(query.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(e) => return bad_page(&state, &e.description),
    };
    let browser = cookie(&headers, &cookie_name(&state, FLOW_COOKIE));
    let cb = Callback {
        provider: &idp,
        state: params.get("state"),
        code: params.get("code"),
        error: params.get("error"),
        iss: params.get("iss"),
        browser_token: browser.as_deref(),
    };
    let now = state.clock.now();
    let mut res = match signin::complete(&state, cb, &ctx, now).await {
        Ok(signin::Completed {
            app: Some(app),
            outcome,
            ..
        }) => back_to_app(&state, &app, outcome, now).await,
        Ok(done) => outcome(&state, &headers, &done.request, done.outcome, &ctx, now).await,
        Err(crate::Error::Unavailable(_)) => unavailable(&state),
        Err(e) => went_wrong(&state, "completing a federated sign-in", &e),
    };
    // The flow is used up, whatever became of it.
    set_cookie(&mut res, &state, FLOW_COOKIE, "", 0);
    res
}

/// The page of a callback's outcome, continuing authorization request `raw`.
async fn outcome(
    state: &AppState,
    headers: &HeaderMap,
    raw: &str,
    outcome: Outcome,
    ctx: &crate::context::RequestContext,
    now: i64,
) -> Response {
    if let Outcome::Refused(why) = outcome {
        return refused(state, why);
    }
    let (params, request) = match continued(state, raw).await {
        Ok(parts) => parts,
        Err(page) => return page,
    };
    match outcome {
        Outcome::SignedIn { user, via } => {
            let amr = crate::mfa::AMR_FEDERATED;
            let who = Who {
                user,
                amr,
                via: Some(&via),
            };
            signed_in(state, headers, params, who, ctx, now).await
        }
        Outcome::MfaRequired { challenge, .. } => {
            let webauthn = challenge.webauthn.as_ref();
            mfa_page(state, headers, &request, &challenge.token, webauthn, None)
        }
        Outcome::ProveOwnership {
            pending,
            email,
            provider,
            password,
        } => {
            let proof = Proof {
                pending: &pending,
                email: &email,
                provider: &provider,
                password,
            };
            link_page(state, headers, &request, &proof, None)
        }
        Outcome::Refused(why) => refused(state, why),
    }
}

/// The end of an application's sign-in: `return_to` with a login code (RFC 9207 `iss` beside
/// it, and the application's `state`), or with `error=access_denied` and why.
async fn back_to_app(
    state: &AppState,
    app: &signin::AppReturn,
    outcome: Outcome,
    now: i64,
) -> Response {
    let (user_id, via) = match outcome {
        Outcome::SignedIn { user, via } => (user.id, via),
        Outcome::MfaRequired { user_id, via, .. } => (user_id, via),
        Outcome::ProveOwnership { .. } => {
            let why = "An account already uses this email address. Sign in with the provider \
                       on the hosted sign-in page to link it to the account.";
            return app_redirect(
                app,
                &[("error", "access_denied"), ("error_description", why)],
            );
        }
        Outcome::Refused(why) => {
            let pairs = [
                ("error", "access_denied"),
                ("error_description", why.message()),
            ];
            return app_redirect(app, &pairs);
        }
    };
    match signin::issue_login_code(state, app, &user_id, &via, now).await {
        Ok(code) => {
            let issuer = state.config.issuer.as_str();
            app_redirect(app, &[("login_code", &code), ("iss", issuer)])
        }
        Err(e) => went_wrong(state, "issuing a login code", &e),
    }
}

/// `return_to` with `pairs` and the application's `state` added to its query.
fn app_redirect(app: &signin::AppReturn, pairs: &[(&str, &str)]) -> Response {
    let Ok(mut url) = url::Url::parse(&app.return_to) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in pairs {
            query.append_pair(k, v);
        }
        if let Some(s) = &app.state {
            query.append_pair("state", s);
        }
    }
    see_other(url.as_str())
}

/// `POST /auth/federated/token`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AppTokenBody {
    /// From `return_to` at the end of the sign-in (single use, 60 seconds).
    login_code: String,
    /// The RFC 7636 verifier of the `code_challenge` the sign-in started with.
    code_verifier: String,
    /// The tenant (id or slug) the tokens are for.
    tenant: Option<String>,
}

/// Redeems an application's login code: a token pair, like `POST /auth/login`. An account with
/// a second factor answers 401 `mfa_required` with an `mfa_token` to complete at
/// `POST /auth/mfa`.
#[utoipa::path(post, path = "/auth/federated/token", tag = "federation", request_body = AppTokenBody,
    responses((status = 200, description = "An access and a refresh token", body = crate::sessions::TokenPair),
        (status = 401, description = "`invalid_grant` (unknown, used or expired code, wrong verifier) or `mfa_required`")))]
async fn app_token(
    State(state): State<AppState>,
    Context(ctx): Context,
    Json(body): Json<AppTokenBody>,
) -> Result<Response> {
    let now = state.clock.now();
    let (user, via) =
        signin::redeem_login_code(&state, &body.login_code, &body.code_verifier, now).await?;
    let tenant = body.tenant.as_deref();
    let pair = crate::accounts::login_federated(&state, &user, &via, tenant, &ctx, now).await?;
    crate::metrics::token_issued("tessera_login");
    Ok(super::no_store(axum::Json(pair).into_response()))
}

fn refused(state: &AppState, why: Refusal) -> Response {
    let status = match why {
        Refusal::Expired | Refusal::WrongIssuer | Refusal::Denied | Refusal::Rejected => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::FORBIDDEN,
    };
    state
        .pages
        .message(status, "Sign-in did not complete", why.message())
}

/// What the linking page shows.
struct Proof<'a> {
    pending: &'a str,
    /// The account's address.
    email: &'a str,
    /// The provider's display name.
    provider: &'a str,
    /// Whether the account has a password (else only the emailed link is offered).
    password: bool,
}

/// The page asking the holder of the account at the upstream's address to show it is theirs:
/// its password, or an emailed link.
fn link_page(
    state: &AppState,
    headers: &HeaderMap,
    request: &crate::oauth::authorize::AuthorizationRequest,
    proof: &Proof<'_>,
    error: Option<&str>,
) -> Response {
    let fields = [
        ("pending", json!(proof.pending)),
        ("email", json!(proof.email)),
        ("provider", json!(proof.provider)),
        ("password", json!(proof.password)),
    ];
    let mut res = form_page(state, headers, request, "link.html", fields, error);
    res.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    res
}

/// The hosted form linking an upstream identity to an existing account.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct LinkForm {
    csrf_token: String,
    request: String,
    /// From the linking page.
    pending: String,
    #[schema(format = Password)]
    password: String,
}

/// Links the upstream identity to the account at its address once the account's password is
/// given (throttled and locked out like any password), then signs in (or asks for the
/// account's second factor).
#[utoipa::path(post, path = "/auth/federated/link", tag = "federation",
    request_body(content = LinkForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "The next page: second factor, consent or pick a tenant", content_type = "text/html"),
        (status = 303, description = "To the client's redirect URI with `code` or `error`"),
        (status = "4XX", description = "An HTML page saying what went wrong", content_type = "text/html")))]
async fn link(
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
    let pending = form.get("pending").unwrap_or_default();
    let password = form.get("password").unwrap_or_default();
    let Some(email) = signin::pending_email(&state, pending, now) else {
        return refused(&state, Refusal::Expired);
    };
    let again = |message: &str| {
        let proof = Proof {
            pending,
            email: &email,
            provider: "the identity provider",
            password: true,
        };
        link_page(&state, &headers, &request, &proof, Some(message))
    };
    match signin::prove_with_password(&state, pending, password, &ctx, now).await {
        Ok(Proven::SignedIn(user)) => {
            let amr = crate::mfa::AMR_PASSWORD;
            let who = Who::here(user, amr);
            signed_in(&state, &headers, params, who, &ctx, now).await
        }
        Ok(Proven::MfaRequired(challenge)) => {
            let webauthn = challenge.webauthn.as_ref();
            mfa_page(&state, &headers, &request, &challenge.token, webauthn, None)
        }
        Err(crate::Error::TooManyRequests { retry_after }) => {
            retry_later(retry_after, again(&too_many(retry_after)))
        }
        Err(crate::Error::Unauthenticated { .. } | crate::Error::Validation(_)) => {
            again("That password is not right.")
        }
        Err(crate::Error::Forbidden { .. }) => {
            let mut res = again("Confirm your email address first: follow the link we sent you.");
            *res.status_mut() = StatusCode::FORBIDDEN;
            res
        }
        Err(e) => went_wrong(&state, "linking an identity", &e),
    }
}

/// The hosted form asking for the emailed link instead.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct LinkEmailForm {
    csrf_token: String,
    request: String,
    /// From the linking page.
    pending: String,
}

/// Sends a link to the address of the account the upstream identity would join (throttled like
/// the other recovery mail), with a cookie binding it to this browser: the link works only
/// here. Opening it, then confirming on its page (`/link-identity`), links the identity.
#[utoipa::path(post, path = "/auth/federated/link/email", tag = "federation",
    request_body(content = LinkEmailForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "A page saying where the link went", content_type = "text/html"),
        (status = "4XX", description = "An HTML page saying what went wrong", content_type = "text/html")))]
async fn link_email(
    State(state): State<AppState>,
    Context(ctx): Context,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, _, request) = match sign_in_form(&state, &headers, &body).await {
        Ok(parts) => parts,
        Err(page) => return page,
    };
    let now = state.clock.now();
    let pending = form.get("pending").unwrap_or_default();
    let raw = request.params.encode();
    match email_proof::send(&state, pending, &raw, &ctx, now).await {
        Ok(sent) => {
            let text = format!(
                "We sent a link to {}. Open it in this browser within {} minutes to link {} to \
                 your account; the sign-in then goes on.",
                sent.email,
                email_proof::LINK_TTL_SECS / 60,
                sent.provider
            );
            let mut res = state
                .pages
                .message(StatusCode::OK, "Check your email", &text);
            let ttl = email_proof::LINK_TTL_SECS;
            set_cookie(&mut res, &state, LINK_COOKIE, &sent.browser_token, ttl);
            res
        }
        Err(crate::Error::Unauthenticated { .. }) => refused(&state, Refusal::Expired),
        Err(crate::Error::TooManyRequests { retry_after }) => {
            let page = state.pages.message(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many emails",
                &too_many(retry_after),
            );
            retry_later(retry_after, page)
        }
        Err(e) => went_wrong(&state, "sending a link email", &e),
    }
}

// ---------------------------------------------------------------- the user's identities

/// The upstream identities linked to the signed-in user's account.
#[utoipa::path(get, path = "/identity/identities", tag = "identity",
    responses((status = 200, description = "The linked identities", body = IdentityList)))]
async fn list_identities(
    State(state): State<AppState>,
    Caller(principal): Caller,
) -> Result<Response> {
    Ok(axum::Json(federation::identities(&state, &principal).await?).into_response())
}

/// Unlinks an upstream identity, while another way to sign in remains (a password, a passkey
/// or another identity); else 409 `last_sign_in_method`.
#[utoipa::path(delete, path = "/identity/identities/{id}", tag = "identity",
    params(("id" = String, Path, description = "The identity's id")),
    responses((status = 204, description = "Unlinked"),
        (status = 409, description = "`last_sign_in_method`: the account's only way to sign in")))]
async fn unlink(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> Result<Response> {
    federation::unlink(&state, &principal, &id, &ctx, state.clock.now()).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------- the operator's providers

/// The name in `/admin/idps/{name}`.
const NAME: &str = "The provider's name";

/// Adds an upstream identity provider (its client secret is sealed and never shown again).
#[utoipa::path(post, path = "/admin/idps", tag = "admin", request_body = ProviderSpec,
    responses((status = 201, description = "The provider", body = ProviderView),
        (status = 409, description = "`provider_exists`")))]
async fn add_provider(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Json(spec): Json<ProviderSpec>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    let view = federation::add((&*state).into(), spec, by, state.clock.now()).await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// The configured providers.
#[utoipa::path(get, path = "/admin/idps", tag = "admin",
    responses((status = 200, description = "The providers", body = ProviderList)))]
async fn list_providers(
    State(state): State<AppState>,
    Caller(principal): Caller,
) -> Result<Response> {
    Ok(axum::Json(federation::list((&*state).into(), &principal).await?).into_response())
}

/// One provider.
#[utoipa::path(get, path = "/admin/idps/{name}", tag = "admin", params(("name" = String, Path, description = NAME)),
    responses((status = 200, description = "The provider", body = ProviderView)))]
async fn get_provider(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(name): Path<String>,
) -> Result<Response> {
    Ok(axum::Json(federation::get((&*state).into(), &principal, &name).await?).into_response())
}

/// Changes a provider; an absent field stays as it is.
#[utoipa::path(patch, path = "/admin/idps/{name}", tag = "admin", params(("name" = String, Path, description = NAME)),
    request_body = ProviderSpec,
    responses((status = 200, description = "The provider as changed", body = ProviderView)))]
async fn update_provider(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(name): Path<String>,
    Json(spec): Json<ProviderSpec>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    let view = federation::update((&*state).into(), &name, spec, by, state.clock.now()).await?;
    Ok(axum::Json(view).into_response())
}

/// Removes a provider and every identity linked through it (their accounts stay).
#[utoipa::path(delete, path = "/admin/idps/{name}", tag = "admin", params(("name" = String, Path, description = NAME)),
    responses((status = 204, description = "Removed")))]
async fn remove_provider(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> Result<Response> {
    let by = By::new(&principal, &ctx);
    federation::remove((&*state).into(), &name, by, state.clock.now()).await?;
    Ok(no_content())
}
