//! zsxq-cache: a member-number cache in front of the Zsxq (知识星球) API and
//! the refund lists built on it.
//!
//! Map of the crate (a newcomer should find things by folder name):
//! - `upstream/` — the Zsxq client, its budget (rate limit, priority) and the
//!   1059 retry.
//! - `store/` — Redis and embedded stores behind one trait, the circuit
//!   breaker, every Redis key name; `redis_link/` — connections to one
//!   Redis or a cluster, below both `store/` and the upstream's fleet budget.
//! - `cache/` — read-through lookups, singleflight, near cache, write-back,
//!   sync jobs, refresh, batched numbers.
//! - `refund/` — refund lists of check-in camps and their exports.
//! - `http/` — the REST API; `web/` — the operator's page, embedded and
//!   served by the same router; `startup.rs` wires it all; `config/` reads
//!   the environment; `cli.rs`, `demo.rs`, `doctor.rs` (checks a
//!   configuration against the upstream) — the command line.
//! - `metrics.rs` — the Prometheus registry behind `GET /metrics` (each part
//!   owns and registers its instruments in its own `metrics.rs`);
//!   `telemetry.rs` — logs.
//!
//! Dependencies point one way, from the edge down: `http` → `refund` →
//! `cache` → `upstream`, `store` → `config`, `redis_link`, `metrics`,
//! `domain`. `tests/layering.rs` fails on any pair of modules that import
//! each other.
//!
//! Beside it in the workspace: `crates/domain` (ids and records, shared with
//! the simulator), `crates/sim` (the simulated Zsxq API the demo, tests and
//! benchmarks talk to), `crates/test-support` (real redis-server and Redis
//! Cluster fixtures, the app builder of tests and benchmarks) and
//! `crates/bench` (the `zsxq-bench` binary). Only the first two are linked
//! into the shipped binary.

pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod doctor;
/// Ids and member records, shared with the simulator (`crates/domain`).
pub use zsxq_domain as domain;
pub mod http;
pub mod metrics;
pub mod redis_link;
pub mod refund;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod web;
