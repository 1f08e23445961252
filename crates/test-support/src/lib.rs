//! What the tests and the benchmarks share: real external systems (a
//! throwaway `redis-server`, a Redis Cluster, replicas of the service), a
//! store that fails on demand, and the straightforward Redis layout the
//! memory benchmark compares against.
//!
//! A crate of its own so that none of it is compiled into the shipped
//! binary: the service's tests and the bench binary depend on it, the
//! service does not.

pub mod faulty_store;
pub mod net;
pub mod redis_cluster;
pub mod redis_server;
pub mod replicas;
pub mod seed_layout;

pub use faulty_store::{Fault, FaultSwitch, FaultyStore};
pub use net::{free_port, free_ports};
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
