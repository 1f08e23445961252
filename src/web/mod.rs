//! The operator's web page, served by the service itself.
//!
//! Three hand-written files under `assets/` — `index.html`, `app.js`,
//! `app.css` — plus an icon, compiled into the binary with `include_bytes!`,
//! so `zsxq-cache demo` and `serve` open a working page offline, with no
//! front-end server and no build step. The page is a small hash-routed app
//! (`#/camps`, `#/camps/<id>/refund?required_days=7`, `#/members`, `#/cache`)
//! that only talks to the service's own JSON API (`/api/...`).
//!
//! Caching: the HTML is revalidated on every load (`no-cache` + `ETag`); it
//! names the other files as `/assets/<file>?v=<version>`, where the version
//! is a hash of every asset, so those answers can be cached for a year and a
//! new binary is picked up on the next page load. An asset asked for without
//! the current version is still served, but revalidated like the HTML.
//!
//! Security: the HTML carries a strict `Content-Security-Policy` (scripts,
//! styles and connections from this origin only, no inline code, no
//! framing). The script renders every piece of member data with
//! `textContent`, so names such as `<b>加粗</b>小张` stay text; a unit test
//! below keeps HTML-writing DOM calls out of `app.js` altogether.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The policy sent with the HTML. `img-src data:` is for the inline SVG
/// icon only; member avatars live on Zsxq's CDN and are deliberately not
/// shown, so the page needs nothing from another origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// In `index.html`, replaced by the asset version when the page is served.
const VERSION_MARK: &str = "__ASSET_VERSION__";

/// Cache lifetime of a versioned asset: its URL changes with its content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The HTML and unversioned asset URLs: always ask, usually get a 304.
const REVALIDATE: &str = "no-cache";

const INDEX_TEMPLATE: &str = include_str!("assets/index.html");

/// A file under `/assets/`.
struct Asset {
    /// The file name in the URL.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("assets/favicon.svg"),
    },
];

/// What is computed once per process from the embedded files.
struct Bundle {
    /// Hash of every asset: the `?v=` of the asset URLs.
    version: String,
    /// `index.html` with the version filled in.
    index: String,
    index_etag: String,
    /// `ETag` of each entry of [`ASSETS`], same order.
    asset_etags: Vec<String>,
}

static BUNDLE: LazyLock<Bundle> = LazyLock::new(|| {
    let mut all = sha1_smol::Sha1::new();
    let asset_etags = ASSETS
        .iter()
        .map(|a| {
            all.update(a.name.as_bytes());
            all.update(a.body);
            etag_of(a.body)
        })
        .collect();
    let version: String = all.digest().to_string().chars().take(12).collect();
    let index = INDEX_TEMPLATE.replace(VERSION_MARK, &version);
    let index_etag = etag_of(index.as_bytes());
    Bundle {
        version,
        index,
        index_etag,
        asset_etags,
    }
});

/// A strong entity tag: the first 20 hex digits of the content's SHA-1.
fn etag_of(body: &[u8]) -> String {
    let hex = sha1_smol::Sha1::from(body).digest().to_string();
    format!("\"{}\"", &hex[..20])
}

/// The version the page's asset URLs carry (for tests and logs).
pub fn asset_version() -> &'static str {
    &BUNDLE.version
}

/// Whether `If-None-Match` names `etag` (or is `*`). Weak validators match
/// too: a 304 only promises the same representation, which they assert.
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// An answer with the headers every web response shares.
fn answer(
    headers: &HeaderMap,
    content_type: &'static str,
    body: &'static [u8],
    etag: &str,
    cache_control: &'static str,
) -> Response {
    let mut response = if not_modified(headers, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body,
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    let bundle = &*BUNDLE;
    let mut response = answer(
        &headers,
        "text/html; charset=utf-8",
        bundle.index.as_bytes(),
        &bundle.index_etag,
        REVALIDATE,
    );
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `GET /assets/{file}`: one embedded file; `?v=` as in the page's links.
pub async fn asset(
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let bundle = &*BUNDLE;
    let Some((i, asset)) = ASSETS.iter().enumerate().find(|(_, a)| a.name == name) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "没有这个文件 (no such asset)",
        )
            .into_response();
    };
    let cache_control = if query.get("v").map(String::as_str) == Some(bundle.version.as_str()) {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    let etag = bundle.asset_etags.get(i).map(String::as_str).unwrap_or("");
    answer(
        &headers,
        asset.content_type,
        asset.body,
        etag,
        cache_control,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of(r: &Response, name: header::HeaderName) -> &str {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    async fn body_of(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 22)
            .await
            .expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    fn with_if_none_match(tag: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(tag).expect("header value"),
        );
        h
    }

    #[tokio::test]
    async fn the_page_links_versioned_assets_and_carries_a_strict_policy() {
        let r = index(HeaderMap::new()).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header_of(&r, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(header_of(&r, header::CACHE_CONTROL), "no-cache");
        assert!(header_of(&r, header::ETAG).starts_with('"'));
        let csp = header_of(&r, header::CONTENT_SECURITY_POLICY).to_string();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        let html = body_of(r).await;
        let v = asset_version();
        assert!(html.contains(&format!("/assets/app.js?v={v}")), "{html}");
        assert!(html.contains(&format!("/assets/app.css?v={v}")));
        assert!(!html.contains(VERSION_MARK));
    }

    #[test]
    fn the_page_has_no_inline_code_for_the_policy_to_block() {
        let html = INDEX_TEMPLATE.to_ascii_lowercase();
        // Every <script> has a src; no style blocks, style attributes or
        // inline event handlers.
        for (i, _) in html.match_indices("<script") {
            let tag_end = html[i..].find('>').map_or(html.len(), |e| i + e);
            assert!(html[i..tag_end].contains("src="), "inline script at {i}");
        }
        assert!(!html.contains("<style"));
        assert!(!html.contains(" style="));
        assert!(!html.contains(" onclick=") && !html.contains(" onload="));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }

    #[test]
    fn the_script_never_writes_html() {
        let js = std::str::from_utf8(ASSETS[0].body).expect("utf-8");
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!js.contains(sink), "app.js uses {sink}");
        }
    }

    #[tokio::test]
    async fn a_versioned_asset_is_cached_for_a_year_an_unversioned_one_revalidated() {
        let versioned = HashMap::from([("v".to_string(), asset_version().to_string())]);
        let r = asset(
            Path("app.css".to_string()),
            Query(versioned),
            HeaderMap::new(),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header_of(&r, header::CONTENT_TYPE),
            "text/css; charset=utf-8"
        );
        assert_eq!(header_of(&r, header::CACHE_CONTROL), IMMUTABLE);
        assert_eq!(header_of(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");

        let stale = HashMap::from([("v".to_string(), "old".to_string())]);
        let r = asset(Path("app.js".to_string()), Query(stale), HeaderMap::new()).await;
        assert_eq!(
            header_of(&r, header::CONTENT_TYPE),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(header_of(&r, header::CACHE_CONTROL), REVALIDATE);
    }

    #[tokio::test]
    async fn a_matching_etag_gets_304_without_a_body() {
        let first = index(HeaderMap::new()).await;
        let tag = header_of(&first, header::ETAG).to_string();
        let again = index(with_if_none_match(&format!("\"other\", W/{tag}"))).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header_of(&again, header::ETAG), tag);
        assert!(body_of(again).await.is_empty());

        let r = asset(
            Path("favicon.svg".to_string()),
            Query(HashMap::new()),
            with_if_none_match("\"nope\""),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header_of(&r, header::CONTENT_TYPE), "image/svg+xml");
    }

    #[tokio::test]
    async fn an_unknown_asset_is_a_404() {
        let r = asset(
            Path("../Cargo.toml".to_string()),
            Query(HashMap::new()),
            HeaderMap::new(),
        )
        .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}
