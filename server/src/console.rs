//! The web console: a few static files compiled into the binary (no CDN,
//! no build step: plain ES modules), served at `/` and under `/console/`.
//! They hold no data, so they are served without the token; the page asks
//! for it, keeps it in the browser's session storage and sends it as a
//! bearer token to the JSON API, which checks it as for any client.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// `(path, content type, body)` of each file.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../console/index.html"),
    ),
    ("/console/app.js", JS, include_str!("../console/app.js")),
    ("/console/api.js", JS, include_str!("../console/api.js")),
    ("/console/dom.js", JS, include_str!("../console/dom.js")),
    ("/console/graph.js", JS, include_str!("../console/graph.js")),
    ("/console/pages.js", JS, include_str!("../console/pages.js")),
    (
        "/console/style.css",
        "text/css; charset=utf-8",
        include_str!("../console/style.css"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";

/// Only this origin's scripts and styles, no inline script, no framing; the
/// page reaches only this server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether `path` is one of the console's files, served without the token.
pub(crate) fn is_asset(path: &str) -> bool {
    ASSETS.iter().any(|(p, _, _)| *p == path)
}

/// The routes of the console's files.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, kind, body)| {
            router.route(path, get(move || async move { asset(kind, body) }))
        })
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}
