//! [`Link`]: a cheap, cloneable connection to either kind of Redis, with
//! the slot grouping and per-node routing a cluster needs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_read_routing::RandomReplicaStrategy;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::sync::Mutex;

use super::RedisTarget;

/// A connection to either kind of Redis. Cloning is cheap (handles to one
/// multiplexed connection) and every clone sees the same connection.
#[derive(Clone)]
pub enum Link {
    /// One server, through a manager that reconnects in the background.
    Single(ConnectionManager),
    /// A cluster, shared so that every clone waits on the same first dial.
    Cluster(Arc<LazyCluster>),
}

/// The cluster connection, made on first use and made again when its slot
/// map is found stale ([`Link::redial`]).
pub struct LazyCluster {
    /// Holds the seed nodes, timeouts and read routing; dials on demand.
    client: ClusterClient,
    /// The connection once made, with when it was dialled. A failed dial
    /// leaves it empty, so the next use dials again; the lock makes
    /// concurrent first uses wait on one dial.
    conn: Mutex<Option<(Instant, ClusterConnection)>>,
}

/// A connection younger than this is not dialled again: the requests that
/// failed together on a stale slot map all ask for a redial at once, and one
/// fresh map serves them all.
const REDIAL_MIN_AGE: Duration = Duration::from_millis(250);

impl Link {
    /// A link to `target` with the given connect and response timeouts. No
    /// dialling happens here. Must be called inside a Tokio runtime.
    pub fn new(target: &RedisTarget, timeout: Duration) -> RedisResult<Link> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RedisError::from((
                redis::ErrorKind::Client,
                "a Redis link must be made inside a Tokio runtime",
            )));
        }
        match target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    // No retry loop inside a call: a failed dial fails the
                    // call now, and the next call dials again.
                    .set_number_of_retries(0);
                Ok(Link::Single(ConnectionManager::new_lazy_with_config(
                    client, config,
                )?))
            }
            RedisTarget::Cluster {
                nodes,
                read_from_replicas,
            } => {
                let mut builder = ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // Redirections and a failover's slot refresh need a few
                    // attempts; the caller's own deadline bounds the total.
                    .retries(3)
                    .min_retry_wait(20)
                    .max_retry_wait(200)
                    .overall_response_timeout(Some(timeout * 2));
                if *read_from_replicas {
                    builder = builder.read_routing_strategy(RandomReplicaStrategy);
                }
                Ok(Link::Cluster(Arc::new(LazyCluster {
                    client: builder.build()?,
                    conn: Mutex::new(None),
                })))
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Link::Cluster(_))
    }

    /// The slot group of `key`: `None` on a standalone server (everything
    /// may share one pipeline), the key's hash slot on a cluster.
    pub fn slot_of(&self, key: &str) -> Option<Slot> {
        match self {
            Link::Single(_) => None,
            Link::Cluster(_) => Some(Slot::for_key(key)),
        }
    }

    /// The addresses (`host`, `port`) of every master, for commands that
    /// must visit each one (`SCAN`, `INFO`). On a standalone server: none,
    /// meaning "the one connection".
    pub async fn masters(&self) -> RedisResult<Vec<(String, u16)>> {
        let Link::Cluster(lazy) = self else {
            return Ok(Vec::new());
        };
        let mut conn = lazy.get().await?;
        let raw: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut conn)
            .await?;
        Ok(parse_masters(&raw))
    }

    /// Drops a cluster connection whose slot map proved stale, so that the
    /// next call dials again and reads the map afresh; nothing on a single
    /// server. The client follows a MOVED for a single command and then
    /// refreshes its map, but not one inside a pipeline: after a failover in
    /// which the map was read while the cluster still disagreed about the
    /// new master, every pipeline to the moved slots answered MOVED for as
    /// long as no single command went there, and the store's breaker kept
    /// reopening on it (seen in `tests/cluster.rs` under load). In-flight
    /// requests on the old connection finish on it.
    pub async fn redial(&self) {
        if let Link::Cluster(lazy) = self {
            let mut slot = lazy.conn.lock().await;
            if slot
                .as_ref()
                .is_some_and(|(dialed, _)| dialed.elapsed() >= REDIAL_MIN_AGE)
            {
                tracing::info!("cluster slot map stale: dialling the cluster again");
                *slot = None;
            }
        }
    }

    /// Sends `cmd` to the node at `host:port` (a cluster's master, from
    /// [`Link::masters`]).
    pub async fn on_node(&self, host: &str, port: u16, cmd: Cmd) -> RedisResult<Value> {
        match self {
            Link::Single(manager) => cmd.query_async(&mut manager.clone()).await,
            Link::Cluster(lazy) => {
                let mut conn = lazy.get().await?;
                conn.route_command(
                    cmd,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.to_owned(),
                        port,
                    }),
                )
                .await
            }
        }
    }
}

impl LazyCluster {
    async fn get(&self) -> RedisResult<ClusterConnection> {
        let mut slot = self.conn.lock().await;
        if let Some((_, conn)) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self.client.get_async_connection().await?;
        *slot = Some((Instant::now(), conn.clone()));
        Ok(conn)
    }
}

/// Masters from `CLUSTER NODES`: lines `id host:port@bus flags master …`,
/// skipping failed masters and those without slots.
fn parse_masters(raw: &str) -> Vec<(String, u16)> {
    raw.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            let is_master = flags.split(',').any(|f| f == "master");
            let failed = flags.split(',').any(|f| f == "fail" || f == "fail?");
            if !is_master || failed || fields.len() < 9 {
                return None;
            }
            let addr = fields.get(1)?.split('@').next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(manager) => manager.req_packed_command(cmd),
            Link::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                conn.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(manager) => manager.req_packed_commands(pipeline, offset, count),
            Link::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                conn.req_packed_commands(pipeline, offset, count).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(manager) => manager.get_db(),
            Link::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_are_read_from_cluster_nodes() {
        let raw = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
2925 127.0.0.1:30003@40003 master,fail - 0 1426238318243 3 connected 10923-16383
aaaa 127.0.0.1:30007@40007 master - 0 1426238318243 7 connected
";
        assert_eq!(
            parse_masters(raw),
            vec![("127.0.0.1".into(), 30002), ("127.0.0.1".into(), 30001)]
        );
    }
}
