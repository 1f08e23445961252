//! `GET /api/openapi.json`: an OpenAPI 3 description of every route, so
//! clients and fuzzers (schemathesis) can be pointed at the service.
//!
//! The document is hand-written JSON (`openapi.json`, next to this file),
//! embedded at compile time: generating it from the handlers would need a
//! macro framework for ten routes. A test keeps it honest: it must parse,
//! and every `.route(…)` in `src/http/` must appear in it with its methods.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /api/openapi.json` (the document itself, not in the envelope).
pub async fn document() -> Response {
    let mut response = DOCUMENT.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `{user_id}` and `{userId}` name the same slot.
    fn normalise(path: &str) -> String {
        let mut out = String::new();
        let mut in_param = false;
        for c in path.chars() {
            match c {
                '{' => {
                    in_param = true;
                    out.push_str("{}");
                }
                '}' => in_param = false,
                c if !in_param => out.push(c),
                _ => {}
            }
        }
        out
    }

    /// (METHOD, path) of every `.route("path", get(..).post(..))` in `source`.
    fn routes_in(source: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut rest = source;
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let Some(open) = rest.find('"') else { break };
            let Some(len) = rest[open + 1..].find('"') else {
                break;
            };
            let path = &rest[open + 1..open + 1 + len];
            // The call's text up to its closing parenthesis.
            let mut depth = 1;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let call = &rest[..end];
            for method in ["get", "post", "put", "patch", "delete"] {
                let needle = format!("{method}(");
                let mut from = 0;
                while let Some(i) = call[from..].find(&needle) {
                    let at = from + i;
                    let before = call[..at].chars().last();
                    if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                        found.push((method.to_uppercase(), normalise(path)));
                    }
                    from = at + needle.len();
                }
            }
        }
        found
    }

    fn documented() -> BTreeSet<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("openapi.json parses");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                out.insert((method.to_uppercase(), normalise(path)));
            }
        }
        out
    }

    #[test]
    fn the_route_scanner_reads_methods_and_paths() {
        let src = r#"Router::new().route("/a/{x}", get(h::a).post(h::b)).route(
            "/c", delete(c))"#;
        assert_eq!(
            routes_in(src),
            [
                ("GET".to_string(), "/a/{}".to_string()),
                ("POST".to_string(), "/a/{}".to_string()),
                ("DELETE".to_string(), "/c".to_string()),
            ]
        );
    }

    #[test]
    fn every_route_of_the_router_is_documented() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http");
        let mut routes = Vec::new();
        for entry in std::fs::read_dir(dir).expect("src/http") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "rs") {
                let source = std::fs::read_to_string(&path).expect("source");
                // This file's own test strings are not routes.
                if !path.ends_with("openapi.rs") {
                    routes.extend(routes_in(&source));
                }
            }
        }
        assert!(routes.len() >= 9, "found {routes:?}");
        let documented = documented();
        for route in &routes {
            assert!(
                documented.contains(route),
                "{route:?} is routed but missing from openapi.json"
            );
        }
        let routed: BTreeSet<_> = routes.into_iter().collect();
        for doc in &documented {
            assert!(routed.contains(doc), "{doc:?} is documented but not routed");
        }
    }
}
