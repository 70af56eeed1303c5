//! The live rocket dashboard: one HTML page and its scripts and styles, compiled
//! into the binary (`assets/dashboard/`), served on the HTTP port.
//!
//! - `GET /dashboard` and `GET /dashboard/rockets/{channel}`: the page (the
//!   scripts route between the rocket table and one rocket's page on the client);
//!   `GET /dashboard/` redirects to `/dashboard`.
//! - `GET /dashboard/assets/{file}`: the page's scripts, styles and icon.
//!
//! The page reads the rocket routes (`GET /rockets`, `GET /rockets/{channel}`, its
//! `/messages`) and follows `GET /rockets/events`; it has no route of its own
//! beyond these files, so these routes are not in the OpenAPI document (they serve
//! HTML, not the API).
//!
//! Every answer carries a strict Content-Security-Policy (scripts, styles and
//! connections from this origin only, no inline script or style, Trusted Types
//! enforced so no script can assign HTML) and `nosniff`; every file has an ETag
//! (a hash of its bytes, computed at build time) and is revalidated on each use
//! (`Cache-Control: no-cache`, answered 304 when unchanged), so a new binary's
//! files are picked up at once without versioned file names.

use axum::{
    extract::Path,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Redirect, Response},
};

use super::gateway;
use crate::api::ApiState;

/// The dashboard's routes: (method, path). They serve HTML and files, not the
/// API, so they are not in [`crate::api::http_routes`] nor the OpenAPI document.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/dashboard"),
    ("get", "/dashboard/"),
    ("get", "/dashboard/rockets/{channel}"),
    ("get", "/dashboard/assets/{file}"),
];

/// The policy of every dashboard answer. `'self'` only; no `'unsafe-inline'`;
/// `require-trusted-types-for` makes the browser refuse any HTML string assigned
/// to the DOM (`innerHTML` and the like), so rocket data can only ever be text.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
     require-trusted-types-for 'script'; trusted-types 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// FNV-1a of the body, computed at build time.
    hash: u64,
}

/// FNV-1a, 64 bits: a stable hash of a file's bytes for its ETag (not a security
/// boundary: it only tells a browser whether its copy is current).
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! assets {
    ($( $name:literal => $content_type:literal ),* $(,)?) => {
        /// The files under `/dashboard/assets/`.
        static ASSETS: &[Asset] = &[$(Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../../../assets/dashboard/", $name)),
            hash: fnv1a(include_bytes!(concat!("../../../assets/dashboard/", $name))),
        }),*];
    };
}

assets! {
    "app.js" => "text/javascript; charset=utf-8",
    "store.js" => "text/javascript; charset=utf-8",
    "table.js" => "text/javascript; charset=utf-8",
    "rocket.js" => "text/javascript; charset=utf-8",
    "chart.js" => "text/javascript; charset=utf-8",
    "dom.js" => "text/javascript; charset=utf-8",
    "dashboard.css" => "text/css; charset=utf-8",
    "icon.svg" => "image/svg+xml",
}

/// The page, for every client-side route.
static PAGE: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../../../assets/dashboard/index.html"),
    hash: fnv1a(include_bytes!("../../../assets/dashboard/index.html")),
};

/// The dashboard routes, each answer with the security headers.
pub fn router() -> axum::Router<ApiState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/dashboard", get(page))
        .route(
            "/dashboard/",
            get(|| async { Redirect::permanent("/dashboard") }),
        )
        .route("/dashboard/rockets/{channel}", get(rocket_page))
        .route("/dashboard/assets/{file}", get(asset))
        .layer(axum::middleware::map_response(security_headers))
}

async fn page(headers: HeaderMap) -> Response {
    serve(&PAGE, &headers)
}

/// The same page: the client reads the channel from the address. An unknown or
/// malformed channel is the page's to report (it asks `GET /rockets/{channel}`).
async fn rocket_page(Path(_channel): Path<String>, headers: HeaderMap) -> Response {
    serve(&PAGE, &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(asset) => serve(asset, &headers),
        None => gateway::not_found().await,
    }
}

/// 200 with the file, or 304 when the client's copy (`If-None-Match`) is current.
fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    debug_assert!(!asset.name.is_empty());
    // Weak: the compression layer may gzip the body, and a strong ETag names the bytes sent.
    let etag = format!("W/\"{:016x}\"", asset.hash);
    let cache = [
        (
            header::ETAG,
            HeaderValue::from_str(&etag).expect("hex is a valid header"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    if if_none_match(headers, &etag) {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        cache,
        asset.body,
    )
        .into_response()
}

/// True when `If-None-Match` lists `etag` (weak comparison) or is `*`.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let ours = opaque(etag);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == "*" || opaque(tag) == ours)
}

/// The headers of every dashboard answer, errors included.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_match_weakly_in_lists_and_star() {
        let etag = "W/\"00000000000000ff\"";
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
            if_none_match(&headers, etag)
        };
        assert!(with("W/\"00000000000000ff\""));
        assert!(with("\"00000000000000ff\""));
        assert!(with("\"other\", W/\"00000000000000ff\""));
        assert!(with("*"));
        assert!(!with("\"00000000000000fe\""));
        assert!(!if_none_match(&HeaderMap::new(), etag));
    }

    #[test]
    fn every_asset_the_page_names_is_embedded() {
        let page = std::str::from_utf8(PAGE.body).unwrap();
        let mut named = 0;
        for part in page.split("/dashboard/assets/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(
                ASSETS.iter().any(|a| a.name == name),
                "index.html names {name}, which is not embedded"
            );
            named += 1;
        }
        assert!(named >= 3, "the page loads its script, style and icon");
        // And every module a script imports.
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let name = line
                    .rsplit("'./")
                    .next()
                    .and_then(|rest| rest.split('\'').next())
                    .unwrap_or_else(|| panic!("{}: unexpected import {line}", asset.name));
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{} imports {name}, which is not embedded",
                    asset.name
                );
            }
        }
    }
}
