//! Integration tests: the real service over HTTP, against the real simulator
//! and a real `redis-server` (started on a free port per test) or the
//! embedded store. Scenarios that apply to both stores run on both
//! (`zsxq_test_support::on_both_stores!`); every test starts its own app
//! with `TestApp::builder()` or `spawn_app`.

mod admin;
mod degradation;
mod documented;
mod edge;
mod freshness;
mod input;
mod jobs;
mod lookup;
mod metrics;
mod paging;
mod protection;
mod redis_layout;
mod refund;
mod refund_marks;
mod refund_rules;
mod replicas;
mod schemas;
mod sync;

/// The CLI's own store (a fresh embedded file), on `app`'s simulator: what
/// an operator's `zsxq-cache refund-list` beside the running service sees.
pub async fn cli_environment(app: &zsxq_test_support::TestApp) -> zsxq_test_support::TestEnv {
    zsxq_test_support::TestApp::builder()
        .var("ZSXQ_API_BASE", app.sim.base_url.clone())
        .environment()
        .await
        .expect("the CLI's environment")
}

/// The `data` of every page of the paged refund list at `path` (a query
/// without `index`), each page asked for at the `next_index` of the one
/// before, until one says `has_more: false`. Paging must end: more than 20
/// pages fail.
pub async fn refund_pages(app: &zsxq_test_support::TestApp, path: &str) -> Vec<serde_json::Value> {
    let (mut pages, mut index) = (Vec::new(), 0u64);
    loop {
        let page = app.get_ok(&format!("{path}&index={index}")).await;
        let data = page.data().clone();
        let more = data["has_more"].as_bool().expect("has_more is a boolean");
        let next = data["next_index"].as_u64();
        pages.push(data);
        if !more {
            return pages;
        }
        assert!(pages.len() < 20, "paging does not end");
        index = next.expect("a next_index while there is more");
    }
}
