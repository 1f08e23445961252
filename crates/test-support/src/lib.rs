//! What the tests and the benchmarks share: the one way to start the
//! service ([`TestApp::builder`], in process, as a fleet, or as the binary),
//! real external systems (a throwaway `redis-server`, a Redis Cluster, free
//! ports), a store that fails on demand, and the straightforward Redis
//! layout the memory benchmark compares against.
//!
//! A crate of its own so that none of it is compiled into the shipped
//! binary: the service's tests and the bench binary depend on it, the
//! service does not.

pub mod app;
pub mod faulty_store;
pub mod net;
pub mod redis_cluster;
pub mod redis_server;
pub mod seed_layout;

pub use app::{
    ADMIN_TOKEN, Answer, AppBuilder, Fleet, Replicas, Service, StoreKind, TestApp, TestEnv,
    spawn_app,
};
pub use faulty_store::{Fault, FaultSwitch, FaultyStore};
pub use net::{free_port, free_ports};
pub use redis_cluster::RedisCluster;
pub use redis_server::{RedisServer, scan_keys, ttl_of, used_memory};

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

/// Generates one `#[tokio::test]` per store for each scenario function
/// `async fn name(kind: StoreKind)`: the scenario runs on the embedded store
/// and on a private Redis.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_the_embedded_store() {
                super::$name($crate::StoreKind::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_redis() {
                super::$name($crate::StoreKind::Redis).await
            }
        }
    )*};
}
