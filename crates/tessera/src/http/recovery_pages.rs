//! Minimal HTML pages for the links in emails, so both flows work without a front end and
//! without JavaScript: `/verify-email` (a button that confirms), `/reset-password` (a form) and
//! `/link-identity` (a button that joins an upstream identity to the account, in the browser
//! that asked for the link).
//! A GET never uses a token (mail scanners follow links); the form posts back here. Pages are
//! served with a strict CSP (no script at all), `same-origin` referrers (the token is in the URL;
//! no other site sees it) and `no-store`.

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::routes;

use super::Access;
use super::extract::Context;
use crate::accounts::recovery::{self, Purpose};
use crate::app::AppState;
use crate::error::Error;
use crate::federation::email_proof::{self, Confirmed};

pub fn router() -> super::Routes {
    super::Routes::default()
        .api(routes!(verify_page, verify_submit), Access::Public)
        .api(routes!(reset_page, reset_submit), Access::Public)
        .api(routes!(link_page, link_submit), Access::Public)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct TokenQuery {
    #[serde(default)]
    token: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct VerifyForm {
    #[serde(default)]
    token: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct ResetForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    new_password: String,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head>\n<body>\n<main>\n<h1>{title}</h1>\n{body}\n</main>\n\
         </body></html>\n",
        title = escape(title)
    );
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    // `same-origin`: the token in the URL never reaches another site, and the page's own form
    // post still carries a real `Origin` (under `no-referrer` Chromium sends `Origin: null`,
    // which the same-origin check refuses).
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

/// The fields of a page's own form: posted from this site (else a page saying so) and
/// readable (else the invalid-link page).
fn posted<T>(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    form: Result<Form<T>, FormRejection>,
) -> Result<T, Box<Response>> {
    if !super::oauth::same_origin(state, headers) {
        return Err(Box::new(page(
            StatusCode::FORBIDDEN,
            "This form was sent from another site",
            "<p>Open the link from your email again.</p>",
        )));
    }
    form.map(|Form(f)| f).map_err(|_| Box::new(invalid_link()))
}

fn invalid_link() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "This link does not work",
        "<p>The link is invalid, has expired or was already used. Ask for a new one.</p>",
    )
}

fn server_error(e: &Error) -> Response {
    tracing::error!(error = ?e, "page failed with an internal error");
    page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "<p>Please try again later.</p>",
    )
}

/// The page of a verification link: a button that confirms (a GET never uses the token).
#[utoipa::path(get, path = "/verify-email", tag = "pages", params(TokenQuery),
    responses((status = 200, description = "The confirmation page", content_type = "text/html"), (status = "4XX", description = "An HTML page saying what went wrong", content_type = "text/html")))]
async fn verify_page(Query(q): Query<TokenQuery>) -> Response {
    if !recovery::well_formed(Purpose::VerifyEmail, &q.token) {
        return invalid_link();
    }
    page(
        StatusCode::OK,
        "Confirm your email address",
        &format!(
            "<form method=\"post\" action=\"verify-email\">\
             <input type=\"hidden\" name=\"token\" value=\"{}\">\
             <button type=\"submit\">Confirm my email address</button></form>",
            escape(&q.token)
        ),
    )
}

/// Confirms the address (the page's form).
#[utoipa::path(post, path = "/verify-email", tag = "pages",
    request_body(content = VerifyForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "The address is confirmed", content_type = "text/html"), (status = "4XX", description = "An HTML page saying what went wrong", content_type = "text/html")))]
async fn verify_submit(
    State(state): State<AppState>,
    Context(ctx): Context,
    headers: axum::http::HeaderMap,
    form: Result<Form<VerifyForm>, FormRejection>,
) -> Response {
    let form = match posted(&state, &headers, form) {
        Ok(form) => form,
        Err(page) => return *page,
    };
    match recovery::verify_email(&state, &form.token, &ctx, state.clock.now()).await {
        Ok(()) => page(
            StatusCode::OK,
            "Email address confirmed",
            "<p>Thank you: your email address is confirmed. You can close this page.</p>",
        ),
        Err(Error::BadRequest { .. }) => invalid_link(),
        Err(e) => server_error(&e),
    }
}

fn reset_form(token: &str, min_length: usize, problem: Option<&str>) -> String {
    let problem = problem
        .map(|p| format!("<p role=\"alert\"><strong>{}</strong></p>", escape(p)))
        .unwrap_or_default();
    format!(
        "{problem}<form method=\"post\" action=\"reset-password\">\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">\
         <p><label for=\"new_password\">New password (at least {min_length} characters)</label><br>\
         <input id=\"new_password\" name=\"new_password\" type=\"password\" \
         autocomplete=\"new-password\" required minlength=\"{min_length}\" maxlength=\"256\"></p>\
         <p><button type=\"submit\">Set the new password</button></p></form>\
         <p>Setting a new password signs you out on every device.</p>",
        token = escape(token)
    )
}

/// The page of a password reset link: a new-password form.
#[utoipa::path(get, path = "/reset-password", tag = "pages", params(TokenQuery),
    responses((status = 200, description = "The form", content_type = "text/html"), (status = "4XX", description = "An HTML page saying what went wrong", content_type = "text/html")))]
async fn reset_page(State(state): State<AppState>, Query(q): Query<TokenQuery>) -> Response {
    if !recovery::well_formed(Purpose::ResetPassword, &q.token) {
        return invalid_link();
    }
    page(
        StatusCode::OK,
        "Choose a new password",
        &reset_form(&q.token, state.config.password.min_length, None),
    )
}

/// Sets the new password (the page's form).
#[utoipa::path(post, path = "/reset-password", tag = "pages",
    request_body(content = ResetForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "The password is set", content_type = "text/html"), (status = "4XX", description = "An HTML page saying what went wrong", content_type = "text/html")))]
async fn reset_submit(
    State(state): State<AppState>,
    Context(ctx): Context,
    headers: axum::http::HeaderMap,
    form: Result<Form<ResetForm>, FormRejection>,
) -> Response {
    let form = match posted(&state, &headers, form) {
        Ok(form) => form,
        Err(page) => return *page,
    };
    let now = state.clock.now();
    match recovery::reset_password(&state, &form.token, &form.new_password, &ctx, now).await {
        Ok(()) => page(
            StatusCode::OK,
            "Password changed",
            "<p>Your password was changed and every session was signed out. You can now sign \
             in with the new password.</p>",
        ),
        Err(Error::Validation(fields)) => {
            let problem = fields
                .iter()
                .map(|f| format!("The password {}.", f.message))
                .collect::<Vec<_>>()
                .join(" ");
            page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Choose a new password",
                &reset_form(
                    &form.token,
                    state.config.password.min_length,
                    Some(&problem),
                ),
            )
        }
        Err(Error::BadRequest { .. }) => invalid_link(),
        Err(e) => server_error(&e),
    }
}

/// The browser's link cookie (see [`super::federation::LINK_COOKIE`]).
fn link_cookie(state: &AppState, headers: &axum::http::HeaderMap) -> Option<String> {
    let name = super::oauth::cookie_name(state, super::federation::LINK_COOKIE);
    super::oauth::cookie(headers, &name)
}

fn other_browser() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Open this link in the other browser",
        "<p>This link works only in the browser where you asked for it, while signing in. \
         Open it there (copy the address from the email), or sign in again to get a new one.</p>\
         <p>If you did not ask for this, ignore the email: nothing is linked without it.</p>",
    )
}

/// The page of an emailed link: what confirming links, and a button that confirms (a GET
/// never uses the link).
#[utoipa::path(get, path = "/link-identity", tag = "pages", params(TokenQuery),
    responses((status = 200, description = "The confirmation page", content_type = "text/html"), (status = "4XX", description = "An HTML page saying what went wrong", content_type = "text/html")))]
async fn link_page(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Response {
    let browser = link_cookie(&state, &headers);
    let now = state.clock.now();
    let request = match email_proof::describe(&state, &q.token, browser.as_deref(), now).await {
        Ok(Some(r)) => r,
        Ok(None) => return invalid_link(),
        Err(e) => return server_error(&e),
    };
    if !request.same_browser {
        return other_browser();
    }
    let reclaim = if request.reclaims {
        "<p><strong>This account's address was never confirmed</strong>, so someone else may \
         have set it up. Confirming proves the address is yours, and removes what was set up \
         without that proof: the account's password, second factors, other linked sign-in \
         providers, the API keys it created, the applications it allowed, and every session. \
         From then on you sign in with the provider. Check the teams it belongs to.</p>"
    } else {
        ""
    };
    page(
        StatusCode::OK,
        &format!("Link {}", request.provider),
        &format!(
            "<p>Sign in to <strong>{email}</strong> with {provider} from now on?</p>{reclaim}<form method=\"post\" action=\"link-identity\">\
             <input type=\"hidden\" name=\"token\" value=\"{token}\">\
             <button type=\"submit\">Link {provider}</button></form>\
             <p>If you did not ask for this, close this page: nothing is linked without it.</p>",
            email = escape(&request.email),
            provider = escape(&request.provider),
            token = escape(&q.token),
        ),
    )
}

/// Confirms an emailed link (the page's form), then continues the sign-in at the provider.
#[utoipa::path(post, path = "/link-identity", tag = "pages",
    request_body(content = VerifyForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Linked: a link that continues the sign-in", content_type = "text/html"), (status = "4XX", description = "An HTML page saying what went wrong", content_type = "text/html")))]
async fn link_submit(
    State(state): State<AppState>,
    Context(ctx): Context,
    headers: axum::http::HeaderMap,
    form: Result<Form<VerifyForm>, FormRejection>,
) -> Response {
    let form = match posted(&state, &headers, form) {
        Ok(form) => form,
        Err(page) => return *page,
    };
    let browser = link_cookie(&state, &headers);
    let now = state.clock.now();
    let (heading, provider, request) =
        match email_proof::confirm(&state, &form.token, browser.as_deref(), &ctx, now).await {
            Ok(Confirmed::Linked {
                provider,
                request,
                before,
            }) => {
                let heading = if before { "Linked already" } else { "Linked" };
                (heading, provider, request)
            }
            Ok(Confirmed::LinkedElsewhere) => {
                return page(
                    StatusCode::CONFLICT,
                    "Linked to another account",
                    "<p>This sign-in is linked to another account already, so it cannot be \
                     linked to this one. Nothing was changed.</p>",
                );
            }
            Ok(Confirmed::OtherBrowser) => return other_browser(),
            Err(Error::BadRequest { .. }) => return invalid_link(),
            Err(e) => return server_error(&e),
        };
    let next = super::federation::start_url(&provider, &request);
    let mut res = page(
        StatusCode::OK,
        heading,
        &format!(
            "<p>The sign-in provider is linked to your account.</p>\
             <p><a href=\"{}\">Continue signing in</a></p>",
            escape(&next)
        ),
    );
    super::oauth::set_cookie(&mut res, &state, super::federation::LINK_COOKIE, "", 0);
    res
}
