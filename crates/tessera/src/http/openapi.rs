//! The OpenAPI 3.1 document and the documentation UI that reads it.
//!
//! Each handler declares its operation once (`#[utoipa::path]`); [`super::Routes::api`] adds
//! what the route's [`Access`] implies (security requirement, the permission it needs, the
//! error responses), and [`document`] adds the parts that belong to the whole API (info,
//! security schemes, error bodies).

use std::sync::{Arc, LazyLock};

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, ResponseBuilder};

use super::errors::ErrorBody;
use super::{Access, Routes};
use crate::authz::{Permission, SCOPE_ADMIN};
use crate::error::Error;
use crate::oauth::ErrorCode;

/// The JSON error body of every endpoint outside OAuth (`http::errors`): the error code, a
/// message, the invalid fields, and the request's correlation id.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
#[allow(dead_code)]
pub(super) struct ErrorDoc {
    #[serde(flatten)]
    body: ErrorBody,
    /// The request's `X-Correlation-ID`, to quote when reporting a problem.
    correlation_id: String,
}

/// An OAuth error response (RFC 6749 §5.2; RFC 6750 §3 for bearer-protected OAuth endpoints).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct OAuthError {
    error: ErrorCode,
    error_description: Option<String>,
}

/// The security scheme of bearer access tokens and API keys (RFC 6750 §2.1).
const BEARER: &str = "bearer";
/// OAuth client authentication with HTTP Basic (RFC 6749 §2.3.1).
const CLIENT: &str = "client_basic";

/// The document: every route's operations with the API's info, schemes and error bodies.
pub fn document(mut openapi: OpenApi) -> OpenApi {
    openapi.info = utoipa::openapi::InfoBuilder::new()
        .title("Tessera")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "Identity and access management: accounts, sessions, OAuth 2.0 / OpenID Connect, \
             tenants, roles, API keys and the admin API. Errors are JSON: `Error` outside the \
             OAuth endpoints, `OAuthError` (RFC 6749 §5.2) on them.",
        ))
        .license(Some(utoipa::openapi::License::new("Apache-2.0")))
        .build();
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            utoipa::openapi::security::HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An access token (a JWT, RFC 9068) or an API key (`tsk_…`). The list of \
                     an operation's requirement names the scope the token needs.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        CLIENT,
        SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
    );
    let mut schemas = Vec::new();
    <ErrorDoc as ToSchema>::schemas(&mut schemas);
    <OAuthError as ToSchema>::schemas(&mut schemas);
    components.schemas.extend(schemas);
    components.schemas.insert(
        "Error".into(),
        <ErrorDoc as utoipa::PartialSchema>::schema(),
    );
    components.schemas.insert(
        "OAuthError".into(),
        <OAuthError as utoipa::PartialSchema>::schema(),
    );
    openapi
}

/// What the route's access adds to each of its operations: the security requirement, the
/// permission in the description, and an error response for the 4xx statuses it did not list.
pub(super) fn describe(path: &str, item: &mut PathItem, access: Access) {
    for (method, operation) in operations(item) {
        operation.operation_id = Some(operation_id(method, path));
        let (security, note): (Vec<SecurityRequirement>, Option<String>) = match access {
            Access::Public => (Vec::new(), None),
            Access::Bearer => (
                vec![SecurityRequirement::new(BEARER, Vec::<String>::new())],
                None,
            ),
            Access::Permission(p) => (
                vec![SecurityRequirement::new(BEARER, [p.scope()])],
                Some(permission_note(p)),
            ),
            Access::Client => (
                vec![
                    SecurityRequirement::new(CLIENT, Vec::<String>::new()),
                    // `client_secret_post` or a public client: the credentials are in the body.
                    SecurityRequirement::default(),
                ],
                None,
            ),
            Access::Scraper => (
                vec![SecurityRequirement::new(BEARER, [SCOPE_ADMIN])],
                Some(
                    "Needs the `TESSERA_METRICS__TOKEN` credential or an administrator's token."
                        .into(),
                ),
            ),
        };
        if !security.is_empty() {
            operation.security = Some(security);
        }
        if let Some(note) = note {
            operation.description = Some(match operation.description.take() {
                Some(d) => format!("{d}\n\n{note}"),
                None => note,
            });
        }
        let responses = &mut operation.responses.responses;
        // Every operation can answer a client error (bad input, a missing or weak credential,
        // throttling) besides the ones it names: the 4XX range says so, with the error body.
        if !responses.contains_key("4XX") {
            let schema = match access {
                Access::Client => "OAuthError",
                _ => "Error",
            };
            responses.insert("4XX".into(), error_response(schema));
        }
    }
}

fn permission_note(p: Permission) -> String {
    match p.role() {
        Some(role) => format!(
            "Needs the `{p:?}` permission: a token with the scope `{}` of a user with the role `{}`.",
            p.scope(),
            role.as_str()
        ),
        None => format!(
            "Needs the `{p:?}` permission: a token with the scope `{}`.",
            p.scope()
        ),
    }
}

fn error_response(schema: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description("The request was refused; the body says why.")
            .content(
                "application/json",
                Content::new(Some(RefOr::Ref(Ref::from_schema_name(schema)))),
            )
            .build(),
    )
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("options", &mut item.options),
        ("head", &mut item.head),
        ("patch", &mut item.patch),
        ("trace", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, op)| Some((method, op.as_mut()?)))
}

/// A unique `operationId` from the method and path: `GET /admin/users/{id}` is
/// `get_admin_users_id` (handler names repeat across areas).
fn operation_id(method: &str, path: &str) -> String {
    let words = path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty());
    std::iter::once(method)
        .chain(words)
        .collect::<Vec<_>>()
        .join("_")
        .to_ascii_lowercase()
}

/// The document as served and committed: pretty JSON with a final newline.
pub fn rendered() -> &'static str {
    static DOC: LazyLock<String> = LazyLock::new(|| {
        let mut text = serde_json::to_string_pretty(&super::openapi()).unwrap_or_default();
        text.push('\n');
        text
    });
    &DOC
}

pub fn router() -> Routes {
    Routes::default()
        .api(utoipa_axum::routes!(openapi_json), Access::Public)
        .page(
            "/docs",
            axum::routing::get(|| async { Redirect::permanent("/docs/") }),
        )
        .page("/docs/", axum::routing::get(|| async { docs_file("") }))
        .page(
            "/docs/{*file}",
            axum::routing::get(|Path(file): Path<String>| async move { docs_file(&file) }),
        )
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        rendered(),
    )
        .into_response()
}

/// The documentation UI's scripts and styles are Swagger UI's, served from the binary; its one
/// configuration points at `/openapi.json`. Scripts from this origin only, no inline script.
/// The one inline `<style>` (in the top bar's logo SVG, `.logo_small_svg__cls-2{fill:#fff}…`)
/// is allowed by its hash, nothing else inline.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

fn docs_file(file: &str) -> Response {
    static CONFIG: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> = LazyLock::new(|| {
        Arc::new(utoipa_swagger_ui::Config::from("/openapi.json").try_it_out_enabled(true))
    });
    match utoipa_swagger_ui::serve(file, CONFIG.clone()) {
        Ok(Some(asset)) => {
            let mut res = (StatusCode::OK, asset.bytes.into_owned()).into_response();
            let headers = res.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&asset.content_type) {
                headers.insert(header::CONTENT_TYPE, v);
            }
            if asset.gzpipped {
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(DOCS_CSP),
            );
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            res
        }
        Ok(None) => Error::NotFound.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "the documentation UI could not be served");
            Error::Unavailable("the documentation UI is unavailable").into_response()
        }
    }
}
