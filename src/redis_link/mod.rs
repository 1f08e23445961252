//! Redis connectivity: where Redis is and one connection type for a
//! standalone server and a Redis Cluster, so the store and the fleet budget
//! are written once. This module knows Redis, not what is kept in it: it sits
//! below `store/` and `upstream/`, and imports neither.
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
//!   a cluster (the Redis store sends the groups concurrently).
//! - **Replica reads.** With `REDIS_READ_FROM_REPLICAS=true` a cluster sends
//!   read-only commands to a random replica of the slot. Replicas lag their
//!   master by a replication round trip, so a member written a moment ago may
//!   read as absent: that costs a cache miss, never a wrong answer (a miss is
//!   answered from the upstream).
//!
//! Errors are the client library's own [`redis::RedisError`], or a `String`
//! naming what to fix in a URL list; callers map them into their own errors.

mod link;
mod target;

pub use link::{LazyCluster, Link};
pub use target::RedisTarget;
