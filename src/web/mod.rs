//! The operator's web page, served by the service itself.
//!
//! Hand-written files under `assets/` — `index.html`, `app.css`, an icon and
//! the script as a few ES modules — compiled into the binary with
//! `include_bytes!`, so `zsxq-cache demo` and `serve` open a working page
//! offline, with no front-end server and no build step. The page is a small
//! hash-routed app (`#/camps`, `#/camps/<id>/refund?required_days=7`,
//! `#/members`, `#/cache`) that only talks to the service's own JSON API
//! (`/api/...`).
//!
//! The script is split by concern: `app.js` is the entry module, the one
//! the page loads (the router and start-up), `api.js` the fetch wrapper and
//! the tokens, `ui.js` the DOM helpers, and one module per view
//! (`camps.js`, `refund.js`, `members.js`, `cache.js`); the refund view
//! draws its list with `refund_list.js` and its marks with
//! `refund_marks.js`. Views get the
//! container and the router from `app.js` in their context, so the imports
//! form no cycle.
//!
//! Caching: the HTML is revalidated on every load (`no-cache` + `ETag`); it
//! names the other files as `/assets/<file>?v=<version>`, where the version
//! is a hash of every asset, so those answers can be cached for a year and a
//! new binary is picked up on the next page load. An asset asked for without
//! the current version is still served, but revalidated like the HTML.
//!
//! Decisions:
//! - The modules import each other by relative URL *with* the version
//!   (`import { h } from './ui.js?v=__ASSET_VERSION__'`), and the version
//!   mark is filled in once per process in every asset, as in `index.html`.
//!   Plain `./ui.js` would resolve to the unversioned URL: each module would
//!   be revalidated on every load, and an entry module cached as immutable
//!   could run with modules of a newer binary. An import map would need an
//!   inline script, which the policy below forbids.
//! - Every import of a module names the same URL, so the browser
//!   instantiates each module once and their state (known camps, the token
//!   prompt) is shared.
//! - The version hashes the files as written, mark included; what is served
//!   is a function of those files and the version, so it still changes with
//!   every change to any of them. `ETag`s are of the served bytes.
//!
//! Security: the HTML carries a strict `Content-Security-Policy` (scripts,
//! styles and connections from this origin only, no inline code, no
//! framing); `script-src 'self'` covers the modules. The scripts render
//! every piece of member data with `textContent`, so names such as
//! `<b>加粗</b>小张` stay text; a unit test below keeps HTML-writing DOM
//! calls out of every module altogether.

use std::borrow::Cow;
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

/// In `index.html` and the modules' imports, replaced by the asset version
/// when they are served.
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

/// The content type of every module.
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// One asset: its URL name is its file name under `assets/`, so the two
/// cannot drift apart.
macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("assets/", $name)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("app.js", JAVASCRIPT),
    asset!("api.js", JAVASCRIPT),
    asset!("ui.js", JAVASCRIPT),
    asset!("camps.js", JAVASCRIPT),
    asset!("refund.js", JAVASCRIPT),
    asset!("refund_list.js", JAVASCRIPT),
    asset!("refund_marks.js", JAVASCRIPT),
    asset!("members.js", JAVASCRIPT),
    asset!("cache.js", JAVASCRIPT),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// What is computed once per process from the embedded files.
struct Bundle {
    /// Hash of every asset: the `?v=` of the asset URLs.
    version: String,
    /// `index.html` with the version filled in.
    index: String,
    index_etag: String,
    /// Each entry of [`ASSETS`] as it is served, same order.
    assets: Vec<Served>,
}

/// An asset as it goes out.
struct Served {
    /// The file with the version filled in where it names one (the
    /// modules' imports), else the file as it is.
    body: Cow<'static, [u8]>,
    etag: String,
}

static BUNDLE: LazyLock<Bundle> = LazyLock::new(|| {
    let mut all = sha1_smol::Sha1::new();
    for a in ASSETS {
        all.update(a.name.as_bytes());
        all.update(a.body);
    }
    let version: String = all.digest().to_string().chars().take(12).collect();
    let assets = ASSETS
        .iter()
        .map(|a| {
            let body = render(a.body, &version);
            let etag = etag_of(&body);
            Served { body, etag }
        })
        .collect();
    let index = INDEX_TEMPLATE.replace(VERSION_MARK, &version);
    let index_etag = etag_of(index.as_bytes());
    Bundle {
        version,
        index,
        index_etag,
        assets,
    }
});

/// `body` with every [`VERSION_MARK`] replaced by `version`; borrowed when
/// it names none (the stylesheet, the icon).
fn render(body: &'static [u8], version: &str) -> Cow<'static, [u8]> {
    match std::str::from_utf8(body) {
        Ok(text) if text.contains(VERSION_MARK) => {
            Cow::Owned(text.replace(VERSION_MARK, version).into_bytes())
        }
        _ => Cow::Borrowed(body),
    }
}

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
    let found = ASSETS
        .iter()
        .zip(&bundle.assets)
        .find(|(a, _)| a.name == name);
    let Some((asset, served)) = found else {
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
    answer(
        &headers,
        asset.content_type,
        &served.body,
        &served.etag,
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
        assert!(
            html.contains(&format!(
                "<script type=\"module\" src=\"/assets/app.js?v={v}\">"
            )),
            "{html}"
        );
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

    /// The embedded modules.
    fn modules() -> impl Iterator<Item = &'static Asset> {
        ASSETS.iter().filter(|a| a.content_type == JAVASCRIPT)
    }

    #[test]
    fn no_module_ever_writes_html() {
        for module in modules() {
            let js = std::str::from_utf8(module.body).expect("utf-8");
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
            ] {
                assert!(!js.contains(sink), "{} uses {sink}", module.name);
            }
        }
    }

    #[test]
    fn every_script_in_the_assets_folder_is_embedded() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web/assets");
        let mut on_disk: Vec<String> = std::fs::read_dir(&folder)
            .expect("assets folder")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".js"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = modules().map(|a| a.name.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    /// The specifiers of a module's static imports, which are kept to one
    /// line each so that this reads them all.
    fn imports_of(js: &str) -> Vec<&str> {
        js.lines()
            .map(str::trim_start)
            .filter(|line| {
                line.starts_with("import ")
                    || (line.starts_with("export ") && line.contains(" from "))
            })
            .map(|line| {
                line.split('\'')
                    .nth(1)
                    .unwrap_or_else(|| panic!("an import over several lines: {line}"))
            })
            .collect()
    }

    #[tokio::test]
    async fn every_module_the_page_imports_is_served_with_the_current_version_as_javascript() {
        let v = asset_version();
        let html = body_of(index(HeaderMap::new()).await).await;
        let mut pending: Vec<String> = html
            .split("<script type=\"module\" src=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_string)
            .collect();
        assert_eq!(pending, [format!("/assets/app.js?v={v}")]);

        let mut seen: Vec<String> = Vec::new();
        while let Some(url) = pending.pop() {
            let (name, version) = url
                .strip_prefix("/assets/")
                .and_then(|rest| rest.split_once("?v="))
                .unwrap_or_else(|| panic!("{url} is not a versioned asset URL"));
            assert_eq!(version, v, "{url}");
            if seen.iter().any(|s| s == name) {
                continue;
            }
            seen.push(name.to_string());

            let query = HashMap::from([("v".to_string(), version.to_string())]);
            let r = asset(Path(name.to_string()), Query(query), HeaderMap::new()).await;
            assert_eq!(r.status(), StatusCode::OK, "{url}");
            assert_eq!(header_of(&r, header::CONTENT_TYPE), JAVASCRIPT, "{url}");
            assert_eq!(header_of(&r, header::CACHE_CONTROL), IMMUTABLE, "{url}");
            let etag = header_of(&r, header::ETAG).to_string();
            let js = body_of(r).await;
            assert_eq!(
                etag,
                etag_of(js.as_bytes()),
                "{url}: the tag of what is sent"
            );
            assert!(!js.contains(VERSION_MARK), "{url}");
            // A dynamic import would load a module this walk never sees.
            assert!(!js.contains("import("), "{url}");
            for spec in imports_of(&js) {
                // Relative to /assets/, so one URL per module whichever
                // module imports it.
                let file = spec
                    .strip_prefix("./")
                    .filter(|f| !f.contains('/'))
                    .unwrap_or_else(|| panic!("{name} imports {spec}"));
                pending.push(format!("/assets/{file}"));
            }
        }
        seen.sort();
        let mut all: Vec<&str> = modules().map(|a| a.name).collect();
        all.sort();
        assert_eq!(seen, all, "every module is reached from the page");
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
