//! Support code for tests and benchmarks that need real external systems.
//!
//! It is ordinary, always-compiled library code rather than `#[cfg(test)]`
//! because integration tests (`tests/`) and benchmarks are separate crates
//! that can only reach the library's public items. Nothing in the service
//! itself uses it.

pub mod faulty_store;
pub mod redis_cluster;
pub mod redis_server;

pub use faulty_store::{Fault, FaultSwitch, FaultyStore};
pub use redis_cluster::RedisCluster;
pub use redis_server::{RedisServer, scan_keys};
