//! The page and its assets come from the service itself, typed, cacheable
//! and under a strict content security policy; no browser needed.

use crate::spawn_demo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_come_from_the_service_with_strict_headers() {
    let app = spawn_demo().await;
    let page = app.http.get(app.url("/")).send().await.expect("GET /");
    assert_eq!(page.status(), 200);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let csp = header(&page, "content-security-policy");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    let etag = header(&page, "etag");
    let html = page.text().await.expect("html");
    assert!(html.contains("<html lang=\"zh-CN\">"));

    // Every asset the page names is served, typed and cacheable.
    let mut links = Vec::new();
    for part in html.split("\"/assets/").skip(1) {
        let link = format!("/assets/{}", part.split('"').next().unwrap_or(""));
        if !links.contains(&link) {
            links.push(link);
        }
    }
    assert!(
        links.iter().any(|l| l.starts_with("/assets/app.js?v=")),
        "{links:?}"
    );
    assert!(
        links.iter().any(|l| l.starts_with("/assets/app.css?v=")),
        "{links:?}"
    );
    for link in &links {
        let r = app.http.get(app.url(link)).send().await.expect("asset");
        assert_eq!(r.status(), 200, "{link}");
        assert!(header(&r, "cache-control").contains("immutable"), "{link}");
        assert!(!header(&r, "etag").is_empty(), "{link}");
        let want = match link.split('?').next().unwrap_or("") {
            "/assets/app.js" => "text/javascript; charset=utf-8",
            "/assets/app.css" => "text/css; charset=utf-8",
            _ => "image/svg+xml",
        };
        assert_eq!(header(&r, "content-type"), want, "{link}");
    }

    // Revalidation answers 304; HEAD works; an unknown asset is a 404.
    let again = app
        .http
        .get(app.url("/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("GET / again");
    assert_eq!(again.status(), 304);
    let head = app.http.head(app.url("/")).send().await.expect("HEAD /");
    assert_eq!(head.status(), 200);
    let missing = app
        .http
        .get(app.url("/assets/nope.js"))
        .send()
        .await
        .expect("missing asset");
    assert_eq!(missing.status(), 404);
    // The API keeps its JSON 404 for unknown paths.
    app.get("/api/nope").await.assert_error(404);
}
