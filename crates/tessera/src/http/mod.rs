//! HTTP: the only module that knows axum. One router per area; handlers extract, call one domain
//! function and shape the response.

mod access;
mod admin;
mod admin_events;
mod admin_ops;
mod admin_users;
mod auth;
pub mod client_ip;
pub mod errors;
pub mod extract;
mod federation;
mod identity;
mod oauth;
mod openapi;
mod ops;
pub mod pages;
mod recovery_pages;
mod tenants;

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

use crate::app::AppState;
use errors::{ErrorBody, error_response};

pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// The router and its OpenAPI document, built together: each handler declares its path, method,
/// parameters and responses once (`#[utoipa::path]`), and `Routes::api` registers it with the
/// [`Access`] it needs, which both guards the route and writes the operation's security.
#[derive(Default)]
pub struct Routes {
    router: Router<AppState>,
    paths: Vec<String>,
    /// The paths of [`Routes::page`], which the document leaves out.
    pages: Vec<&'static str>,
    openapi: utoipa::openapi::OpenApi,
}

impl Routes {
    /// Registers the handlers of `routes!(…)` (one path, one or more methods).
    fn api(
        mut self,
        (schemas, paths, method_router): utoipa_axum::router::UtoipaMethodRouter<AppState>,
        access: Access,
    ) -> Self {
        let method_router = match access {
            // The [`extract::Caller`] extractor checks the permission before any body is read,
            // so a caller without it gets 403, never a validation error. The domain function
            // checks again (`authz::require`): this only moves the refusal earlier.
            Access::Permission(permission) => {
                method_router.route_layer(axum::Extension(extract::Required(permission)))
            }
            _ => method_router,
        };
        for (path, mut item) in paths.paths {
            openapi::describe(&path, &mut item, access);
            // A path registered again (another method with another guard) merges into one route.
            self.router = self.router.route(&path, method_router.clone());
            if let Some(existing) = self.openapi.paths.paths.get_mut(&path) {
                existing.merge_operations(item);
            } else {
                self.openapi.paths.paths.insert(path.clone(), item);
            }
            if !self.paths.contains(&path) {
                self.paths.push(path);
            }
        }
        self.openapi
            .components
            .get_or_insert_with(Default::default)
            .schemas
            .extend(schemas);
        self
    }

    /// A route that is not part of the API document: the documentation UI's files and the
    /// hosted pages' stylesheet and logo.
    fn page(mut self, path: &'static str, method_router: MethodRouter<AppState>) -> Self {
        self.router = self.router.route(path, method_router);
        self.paths.push(path.to_string());
        self.pages.push(path);
        self
    }

    fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.paths.extend(other.paths);
        self.pages.extend(other.pages);
        self.openapi.merge(other.openapi);
        self
    }
}

/// Who may call a route: what `Routes::api` enforces (for [`Access::Permission`]) and what
/// the OpenAPI document says of it.
#[derive(Clone, Copy, Debug)]
pub enum Access {
    /// Anyone: sign-in, discovery, the hosted pages.
    Public,
    /// A bearer access token of a live session or an API key; the domain function decides what
    /// its principal may do there (`authz::require`).
    Bearer,
    /// A bearer token whose principal holds this permission, checked before the body is read.
    Permission(crate::authz::Permission),
    /// OAuth client authentication (RFC 6749 §2.3): HTTP Basic, `client_secret_post`, or a
    /// public client's `client_id` alone.
    Client,
    /// `/metrics`: the `TESSERA_METRICS__TOKEN` bearer credential or an administrator's token.
    Scraper,
}

/// Every area's routes.
fn routes() -> Routes {
    Routes::default()
        .merge(auth::router())
        .merge(identity::router())
        .merge(ops::router())
        .merge(oauth::router())
        .merge(federation::router())
        .merge(recovery_pages::router())
        .merge(admin_events::router())
        .merge(admin::router())
        .merge(admin_users::router())
        .merge(admin_ops::router())
        .merge(tenants::router())
        .merge(access::router())
        .merge(openapi::router())
}

/// `/metrics` alone, without a credential, for `TESSERA_METRICS__LISTEN`: an address only the
/// scraper can reach.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            axum::routing::get(
                |axum::extract::State(state): axum::extract::State<AppState>| async move {
                    ops::metrics_response(&state).await
                },
            ),
        )
        .with_state(state)
}

/// The path of every route, as registered (`{id}` for path parameters).
pub fn paths() -> Vec<String> {
    routes().paths
}

/// The OpenAPI 3.1 document of every route (served at `/openapi.json`, committed as
/// `docs/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi::document(routes().openapi)
}

/// The document as `/openapi.json` serves it.
pub fn openapi_json() -> &'static str {
    openapi::rendered()
}

/// The routes the document leaves out on purpose (the documentation UI's files, the hosted
/// pages' assets).
pub fn undocumented() -> Vec<&'static str> {
    routes().pages
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    routes()
        .router
        .fallback(|| async { crate::Error::NotFound })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorBody::for_status(StatusCode::INTERNAL_SERVER_ERROR),
            )
        }))
        .layer(middleware::from_fn(correlation))
        .layer(cors(&state.config.cors_origins))
        .with_state(state)
}

/// CORS for the JSON API: off unless origins are configured, then only those origins, with
/// credentials not allowed (tokens travel in `Authorization`, not cookies).
fn cors(
    origins: &str,
) -> tower::util::Either<tower_http::cors::CorsLayer, tower::layer::util::Identity> {
    let list: Vec<HeaderValue> = origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if list.is_empty() {
        return tower::util::Either::Right(tower::layer::util::Identity::new());
    }
    let layer = tower_http::cors::CorsLayer::new()
        .allow_origin(list)
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::PATCH,
            axum::http::Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static(CORRELATION_HEADER),
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
        ])
        .expose_headers([
            HeaderName::from_static(CORRELATION_HEADER),
            header::RETRY_AFTER,
        ])
        .max_age(std::time::Duration::from_secs(600));
    tower::util::Either::Left(layer)
}

/// The request's correlation id (from `X-Correlation-ID` or generated).
#[derive(Clone, Debug)]
pub struct CorrelationId(pub String);

/// The W3C trace context the request runs in, if it has one (see [`crate::telemetry::join`]).
#[derive(Clone, Debug)]
pub struct Trace(pub Option<crate::telemetry::TraceParent>);

/// Accepts or generates the correlation id, runs the request in a span carrying it, echoes it,
/// renders every error body as JSON with it, and logs one line per request (path only: query
/// strings can carry secrets).
async fn correlation(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(CorrelationId(id.clone()));
    let matched = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let route = matched.as_ref().map_or("unmatched", |p| p.as_str());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // W3C Trace Context: the caller's `traceparent` is the parent of this request's span.
    let parent =
        crate::telemetry::remote_parent(&opentelemetry_http::HeaderExtractor(req.headers()));
    let span = if crate::telemetry::exporting() {
        // OpenTelemetry's HTTP server conventions: "METHOD /route" spans of kind server.
        tracing::info_span!(
            "request",
            correlation_id = %id,
            %method,
            %path,
            trace_id = tracing::field::Empty,
            otel.name = format!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = %method,
            http.route = %route,
            url.path = %path,
            http.response.status_code = tracing::field::Empty,
        )
    } else {
        tracing::info_span!("request", correlation_id = %id, %method, %path, trace_id = tracing::field::Empty)
    };
    let trace = crate::telemetry::join(&span, parent);
    if let Some(t) = &trace {
        span.record("trace_id", t.trace_id.as_str());
    }
    req.extensions_mut().insert(Trace(trace));
    let started = Instant::now();
    let mut res = next.run(req).instrument(span.clone()).await;
    let status = res.status();
    if crate::telemetry::exporting() {
        span.record("http.response.status_code", i64::from(status.as_u16()));
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
    }
    if status.is_client_error() || status.is_server_error() {
        let body = res.extensions_mut().remove::<ErrorBody>().or_else(|| {
            // JSON bodies (ours, or RFC 6749 ones) and HTML pages are kept as they are.
            let keep = res.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
                v.as_bytes().starts_with(b"application/json")
                    || v.as_bytes().starts_with(b"text/html")
            });
            (!keep).then(|| ErrorBody::for_status(status))
        });
        if let Some(body) = body {
            let headers = std::mem::take(res.headers_mut());
            res = (status, body.render(&id)).into_response();
            for (name, value) in headers.iter() {
                if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
                    res.headers_mut().append(name.clone(), value.clone());
                }
            }
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
    }
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert(HeaderName::from_static(CORRELATION_HEADER), v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let _enter = span.enter();
    let elapsed = started.elapsed();
    crate::metrics::http_request(method.as_str(), route, status.as_u16(), elapsed);
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), elapsed_ms, "request");
    } else {
        tracing::debug!(status = status.as_u16(), elapsed_ms, "request");
    }
    res
}

/// Token responses must not be cached (RFC 6749 §5.1).
pub fn no_store(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

/// An empty 204.
pub fn no_content() -> Response {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::empty())
        .unwrap_or_default()
}
