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
mod sync;
