//! Hostile clients against the upstream budget and the cache's bounds: a
//! real service on loopback, the real simulator, a real `redis-server`.
//! Every loop is bounded in count and in time; figures are printed
//! (`cargo test --test hostile_budget -- --nocapture`).
//!
//! - `budget.rs`: abandoned requests leave the budget to the next person,
//!   the interactive queue and each client's share of it are bounded, a
//!   request past its deadline is answered 504 and its fetch given up.
//! - `bounds.rs`: a 100 MB upstream answer, unknown camp ids by the
//!   thousand.
//! - `redis_loss.rs`: Redis killed under readers and restarted empty, or
//!   flushed: nothing refetched, nothing failed.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

mod bounds;
mod budget;
mod redis_loss;

use std::time::Duration;

/// A client whose requests from `local` (a loopback address) give up
/// after `timeout`.
pub fn client_from(local: [u8; 4], timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(local))
        .timeout(timeout)
        .build()
        .expect("client")
}

/// This process's resident memory in KiB (`VmRSS`).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
