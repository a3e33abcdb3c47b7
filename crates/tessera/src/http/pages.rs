//! Server-rendered pages of the hosted login, consent and logout. They work without JavaScript;
//! one first-party script (`passkey.js`) runs the WebAuthn ceremonies on the pages that offer
//! passkeys, which are served under [`SCRIPT_CSP`]. Templates are
//! built in; a file of the same name in `TESSERA_TEMPLATES_DIR` overrides one (as do
//! `tessera.css` and `logo.svg`). Output is HTML-escaped.

use std::path::Path;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;

const BUILT_IN: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("login.html", include_str!("../../templates/login.html")),
    ("mfa.html", include_str!("../../templates/mfa.html")),
    ("link.html", include_str!("../../templates/link.html")),
    (
        "passkeys.html",
        include_str!("../../templates/passkeys.html"),
    ),
    ("consent.html", include_str!("../../templates/consent.html")),
    ("tenant.html", include_str!("../../templates/tenant.html")),
    ("logout.html", include_str!("../../templates/logout.html")),
    ("message.html", include_str!("../../templates/message.html")),
];
const CSS: &str = include_str!("../../templates/tessera.css");
const LOGO: &str = include_str!("../../templates/logo.svg");
const PASSKEY_JS: &str = include_str!("../../templates/passkey.js");

/// Content-Security-Policy of every page: no script at all, no framing.
pub const CSP: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Content-Security-Policy of the pages that offer passkeys: the same, plus this origin's own
/// script (`/assets/passkey.js`, no inline script) and its fetch of `/auth/passkey/start`.
pub const SCRIPT_CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
     style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'";

pub struct Pages {
    env: Environment<'static>,
    css: String,
    logo: String,
}

impl Pages {
    pub fn new(dir: Option<&Path>) -> anyhow::Result<Self> {
        let read = |name: &str| {
            dir.as_ref()
                .map(|d| d.join(name))
                .filter(|p| p.is_file())
                .map(std::fs::read_to_string)
                .transpose()
        };
        let mut env = Environment::new();
        for (name, source) in BUILT_IN {
            let text = read(name)?.unwrap_or_else(|| (*source).to_string());
            env.add_template_owned(*name, text)
                .map_err(|e| anyhow::anyhow!("template {name}: {e}"))?;
        }
        Ok(Self {
            env,
            css: read("tessera.css")?.unwrap_or_else(|| CSS.into()),
            logo: read("logo.svg")?.unwrap_or_else(|| LOGO.into()),
        })
    }

    /// Renders a page with security headers and `status`.
    pub fn render(&self, status: StatusCode, name: &str, ctx: impl Serialize) -> Response {
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => with_page_headers(
                (
                    status,
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    html,
                )
                    .into_response(),
            ),
            Err(e) => {
                tracing::error!(error = %e, template = name, "rendering a page failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }

    /// A page with a heading and a message (errors, "signed out").
    pub fn message(&self, status: StatusCode, heading: &str, message: &str) -> Response {
        self.render(
            status,
            "message.html",
            serde_json::json!({ "heading": heading, "message": message }),
        )
    }

    pub fn css(&self) -> Response {
        asset("text/css; charset=utf-8", self.css.clone())
    }

    pub fn logo(&self) -> Response {
        asset("image/svg+xml", self.logo.clone())
    }

    pub fn passkey_js(&self) -> Response {
        asset("text/javascript; charset=utf-8", PASSKEY_JS.to_string())
    }
}

fn asset(content_type: &'static str, body: String) -> Response {
    let mut res = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    res
}

/// A page that runs `passkey.js`: [`SCRIPT_CSP`] instead of [`CSP`].
pub fn allow_script(mut res: Response) -> Response {
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SCRIPT_CSP),
    );
    res
}

/// Security headers for HTML (and for redirects out of the hosted flow).
pub fn with_page_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: a page under `no-referrer` makes Chromium send
    // `Origin: null` with its own form posts, which the CSRF check (rightly) refuses. Other
    // sites still get no `Referer` (the hosted pages' URLs carry the authorization request).
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
