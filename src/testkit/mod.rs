//! Support code for tests and benchmarks that need real external systems.
//!
//! It is ordinary, always-compiled library code rather than `#[cfg(test)]`
//! because integration tests (`tests/`) and benchmarks are separate crates
//! that can only reach the library's public items. Nothing in the service
//! itself uses it.

pub mod faulty_store;
pub mod redis_cluster;
pub mod redis_server;
pub mod replicas;
pub mod seed_layout;

pub use faulty_store::{Fault, FaultSwitch, FaultyStore};
pub use redis_cluster::RedisCluster;
pub use redis_server::{RedisServer, scan_keys, used_memory};
pub use replicas::Replicas;

/// Starts `command`, turning "no such program" into an error that says
/// which Debian package provides it.
pub(crate) fn spawn_tool(
    command: &mut std::process::Command,
    program: &str,
    package: &str,
) -> std::io::Result<std::process::Child> {
    command.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{program} not found on PATH; install it with `apt-get install -y {package}`"
                ),
            )
        } else {
            e
        }
    })
}
