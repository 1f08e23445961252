//! One connection type for a standalone Redis and a Redis Cluster (issue
//! #7), so the store and the fleet budget are written once.
//!
//! - **Which one.** `REDIS_URL` holding several comma-separated `redis://`
//!   nodes, or `REDIS_CLUSTER=true` with one, selects the cluster client;
//!   anything else is one server ([`RedisTarget`]).
//! - **Lazy.** Neither kind dials at construction: the service starts while
//!   Redis is down. A standalone link is a `ConnectionManager` (reconnects in
//!   the background); a cluster link connects on first use and, if that
//!   fails, again on the next use. Once connected, the cluster client follows
//!   MOVED/ASK redirections, refreshes its slot map after a failover and
//!   reconnects to nodes by itself.
//! - **Slots.** A cluster only runs a pipeline or a script whose keys share a
//!   slot. [`Link::slot_of`] tells callers how to group commands: one group
//!   for a standalone server (so a batch stays one `MULTI`), one per slot for
//!   a cluster (`store/redis.rs` sends the groups concurrently).
//! - **Replica reads.** With `REDIS_READ_FROM_REPLICAS=true` a cluster sends
//!   read-only commands to a random replica of the slot. Replicas lag their
//!   master by a replication round trip, so a member written a moment ago may
//!   read as absent: that costs a cache miss, never a wrong answer (a miss is
//!   answered from the upstream).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_read_routing::RandomReplicaStrategy;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::sync::OnceCell;

/// Where Redis is: one server, or the seed nodes of a cluster.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (`redis://host:port/db`).
    Single(String),
    /// A cluster: any of its nodes (the client discovers the rest).
    Cluster {
        nodes: Vec<String>,
        read_from_replicas: bool,
    },
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may carry a password: show only the shape.
        match self {
            RedisTarget::Single(_) => f.write_str("RedisTarget::Single(..)"),
            RedisTarget::Cluster {
                nodes,
                read_from_replicas,
            } => f
                .debug_struct("RedisTarget::Cluster")
                .field("nodes", &nodes.len())
                .field("read_from_replicas", read_from_replicas)
                .finish(),
        }
    }
}

impl RedisTarget {
    /// Reads a `REDIS_URL` value: one URL or several separated by commas
    /// (a cluster). `cluster` forces the cluster client for a single seed
    /// node. Errors name what to fix and never echo the URL (it may hold a
    /// password).
    pub fn parse(
        urls: &str,
        cluster: bool,
        read_from_replicas: bool,
    ) -> Result<RedisTarget, String> {
        let nodes: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if nodes.is_empty() {
            return Err("expected a redis:// or rediss:// URL".into());
        }
        if let Some(i) = nodes
            .iter()
            .position(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
        {
            return Err(format!(
                "URL number {} is not a redis:// or rediss:// URL",
                i + 1
            ));
        }
        if nodes.len() == 1 && !cluster {
            if read_from_replicas {
                return Err(
                    "replica reads need a cluster (several URLs or REDIS_CLUSTER=true)".into(),
                );
            }
            return Ok(RedisTarget::Single(
                nodes.into_iter().next().unwrap_or_default(),
            ));
        }
        Ok(RedisTarget::Cluster {
            nodes,
            read_from_replicas,
        })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster { .. })
    }

    /// A URL for a plain (non-cluster) client of one node: the server
    /// itself, or the first seed of a cluster. Pub/sub uses it (a message
    /// published on any node of a cluster reaches subscribers on all).
    pub fn nodes(&self) -> Vec<String> {
        match self {
            RedisTarget::Single(url) => vec![url.clone()],
            RedisTarget::Cluster { nodes, .. } => nodes.clone(),
        }
    }
}

/// A connection to either kind of Redis. Cloning is cheap (handles to one
/// multiplexed connection) and every clone sees the same connection.
#[derive(Clone)]
pub enum Link {
    Single(ConnectionManager),
    Cluster(Arc<LazyCluster>),
}

/// The cluster connection, made on first use.
pub struct LazyCluster {
    client: ClusterClient,
    conn: OnceCell<ClusterConnection>,
}

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
                    conn: OnceCell::new(),
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
        self.conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
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
    fn one_url_is_a_server_several_are_a_cluster() {
        assert_eq!(
            RedisTarget::parse("redis://a:6379/0", false, false),
            Ok(RedisTarget::Single("redis://a:6379/0".into()))
        );
        assert_eq!(
            RedisTarget::parse("redis://a:1, redis://b:2", false, true),
            Ok(RedisTarget::Cluster {
                nodes: vec!["redis://a:1".into(), "redis://b:2".into()],
                read_from_replicas: true
            })
        );
        assert!(
            RedisTarget::parse("redis://a:1", true, false)
                .unwrap()
                .is_cluster()
        );
    }

    #[test]
    fn bad_lists_are_refused_without_echoing_the_url() {
        let err = RedisTarget::parse("redis://:secret@a:1,http://b", false, false).unwrap_err();
        assert!(err.contains("number 2"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        assert!(RedisTarget::parse(" , ", false, false).is_err());
        assert!(RedisTarget::parse("redis://a:1", false, true).is_err());
    }

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
