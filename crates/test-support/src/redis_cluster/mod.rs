//! A throwaway Redis Cluster for tests: six real `redis-server` processes,
//! three masters and three replicas, built the way an operator would with
//! `redis-cli --cluster create`, not a mock: what a test learns about slots,
//! redirections and failover holds for a real cluster.
//!
//! Like [`RedisServer`](super::RedisServer), every node runs on a free port of
//! 127.0.0.1 with persistence off, in its own temporary directory (which holds
//! its `nodes.conf` and log), and never on the shared Redis port 6379. Each
//! node's cluster bus port is chosen free as well (`--cluster-port`) rather
//! than left at port + 10000, which may be taken or may not exist at all for
//! ports above 55535. Every process is killed and every directory removed when
//! the value is dropped, including when a test panics.
//!
//! Faults are real: [`RedisCluster::failover`] is an operator's
//! `CLUSTER FAILOVER`, [`RedisCluster::kill_master`] is `kill -9` followed by
//! the cluster's own automatic failover, and [`RedisCluster::restart_node`]
//! brings a killed node back with its old `nodes.conf`, so it rejoins as a
//! replica. Each of them returns only once every running node agrees on the
//! new layout, so a test's next command sees a settled cluster.
//!
//! Admin commands go through the `redis` crate's synchronous connection to
//! one node at a time: no async runtime, and errors arrive as values instead
//! of `redis-cli` exit codes to parse. Only cluster creation shells out to
//! `redis-cli`, because that is the tool operators build a cluster with, so a
//! test's cluster is laid out as a production one. Everything blocks the
//! calling thread; the service never uses this module.

mod admin;
mod node;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use self::admin::{
    ADMIN_TIMEOUT, NodeLine, admin, cluster_nodes, connect, field, field_in_list, myself, run,
};
use self::node::Node;
use crate::net::{free_ports, retry_on_new_ports};
use crate::redis_server::tail;

/// Three masters, each with one replica: the smallest cluster in which a
/// master can fail over and the slot map stays fully covered.
const NODE_COUNT: usize = 6;

/// Number of hash slots in every Redis Cluster.
const SLOT_COUNT: u32 = 16384;

/// How long `redis-cli --cluster create` may run before it is killed; it
/// loops forever if the nodes never agree.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the cluster gets to settle (all slots served, all nodes agreeing,
/// all replicas in sync) after creation or a fault.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a `CLUSTER FAILOVER` or an automatic failover gets to promote a
/// replica; well above the node timeout plus the election delays.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);

/// When `failover` repeats its `CLUSTER FAILOVER`: just after Redis gives up
/// on an unfinished manual failover (5 s).
const MANUAL_FAILOVER_RETRY: Duration = Duration::from_secs(6);

/// Pause between two looks at the cluster's state while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A running Redis Cluster owned by a test.
#[derive(Debug)]
pub struct RedisCluster {
    /// In creation order; a node keeps its place (and its ports and
    /// directory) for the life of the value, also while it is killed.
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts six nodes on free local ports, joins them with
    /// `redis-cli --cluster create … --cluster-replicas 1`, and waits until
    /// every node reports `cluster_state:ok` with all 16384 slots assigned,
    /// all nodes agree on who is master and who replicates whom, and every
    /// replica is in sync with its master (`master_link_status:up`). Fails with a message naming the package to install if
    /// `redis-server` or `redis-cli` is missing.
    pub fn start() -> io::Result<Self> {
        let mut cluster = Self::spawn_nodes()?;
        cluster.create()?;
        cluster.wait_until(SETTLE_TIMEOUT, "the new cluster to settle", |c| {
            c.check_settled()
        })?;
        Ok(cluster)
    }

    /// `redis://127.0.0.1:PORT` of every node, killed ones included: the
    /// addresses are fixed for the life of the cluster, and a cluster client
    /// is expected to cope with a seed node being down.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("redis://127.0.0.1:{}", node.port))
            .collect()
    }

    /// [`urls`](Self::urls) joined with commas, the form `REDIS_URL` takes
    /// for a cluster.
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    /// Client ports of all nodes, killed ones included, in creation order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// Ports of the running nodes that are masters now, sorted. Each node is
    /// asked about itself (its `myself` line of `CLUSTER NODES`), so the
    /// answer never comes from a stale view; a node that does not answer is
    /// left out.
    pub fn masters(&self) -> Vec<u16> {
        self.roles()
            .into_iter()
            .filter(|line| line.master)
            .map(|line| line.port)
            .collect()
    }

    /// Ports of the running nodes that are replicas now, sorted; read like
    /// [`masters`](Self::masters).
    pub fn replicas(&self) -> Vec<u16> {
        self.roles()
            .into_iter()
            .filter(|line| !line.master)
            .map(|line| line.port)
            .collect()
    }

    /// Promotes a replica of the master on `master_port` with an operator's
    /// `CLUSTER FAILOVER` (the old master agrees and becomes its replica; no
    /// write is lost). Returns once the replica is master, the old master its
    /// replica, and the whole cluster settled; the result is the new master's
    /// port.
    pub fn failover(&mut self, master_port: u16) -> io::Result<u16> {
        let replica = self.replicas_of(master_port)?[0].clone();
        request_failover(replica.port)?;
        let mut requested = Instant::now();
        let what = format!(
            "127.0.0.1:{} to take over from 127.0.0.1:{master_port}",
            replica.port
        );
        self.wait_until(FAILOVER_TIMEOUT, &what, |c| {
            let new = myself(replica.port)?;
            if !new.master {
                // Redis abandons a manual failover that does not finish in
                // 5 s (a slow machine can make the replica miss that);
                // ask again rather than wait for nothing.
                if requested.elapsed() >= MANUAL_FAILOVER_RETRY {
                    request_failover(replica.port).map_err(|e| e.to_string())?;
                    requested = Instant::now();
                }
                return Err(format!("127.0.0.1:{} is still a replica", replica.port));
            }
            let old = myself(master_port)?;
            if old.master || old.master_id.as_deref() != Some(new.id.as_str()) {
                return Err(format!(
                    "127.0.0.1:{master_port} is not yet a replica of 127.0.0.1:{}",
                    replica.port
                ));
            }
            c.check_settled()
        })?;
        Ok(replica.port)
    }

    /// Kills the master on `master_port` with SIGKILL, like a crashed host,
    /// and waits for the cluster's automatic failover: one of its replicas
    /// is elected master and every surviving node reports `cluster_state:ok`
    /// and agrees on the masters. Returns the promoted replica's port. Data
    /// the dead master had not yet replicated is lost, as in production.
    pub fn kill_master(&mut self, master_port: u16) -> io::Result<u16> {
        let replicas = self.replicas_of(master_port)?;
        self.node_mut(master_port)?.kill()?;
        let what = format!("a replica of the killed 127.0.0.1:{master_port} to be promoted");
        let mut promoted = None;
        self.wait_until(FAILOVER_TIMEOUT, &what, |c| {
            let port = replicas
                .iter()
                .find(|replica| myself(replica.port).is_ok_and(|line| line.master))
                .map(|replica| replica.port)
                .ok_or_else(|| "no replica has been promoted yet".to_string())?;
            c.check_settled()?;
            promoted = Some(port);
            Ok(())
        })?;
        promoted.ok_or_else(|| io::Error::other("promotion finished without a port"))
    }

    /// Starts a killed node again on its old ports with its old `nodes.conf`
    /// but no data (persistence is off), like a crashed cache host coming
    /// back. A master that was failed over rejoins as a replica of the node
    /// that replaced it; returns once it has synced and the cluster settled.
    pub fn restart_node(&mut self, port: u16) -> io::Result<()> {
        let node = self.node_mut(port)?;
        if node.child.is_some() {
            return Err(io::Error::other(format!(
                "node 127.0.0.1:{port} is already running"
            )));
        }
        node.spawn_and_wait()?;
        let what = format!("the restarted 127.0.0.1:{port} to rejoin");
        self.wait_until(SETTLE_TIMEOUT, &what, |c| c.check_settled())
    }

    /// Deletes every key on every master (`FLUSHALL`) and waits until each
    /// master's replicas have applied it (`WAIT`), so a test reusing the
    /// cluster starts empty even when it reads from replicas.
    pub fn flushall(&self) -> io::Result<()> {
        let roles = self.all_roles()?;
        for master in roles.iter().filter(|line| line.master) {
            let replicas = roles
                .iter()
                .filter(|line| line.master_id.as_deref() == Some(master.id.as_str()))
                .count();
            // WAIT counts replicas that have what this connection wrote, so
            // it must follow FLUSHALL on the same connection.
            let mut conn = connect(master.port)?;
            let _: String = run(&mut conn, master.port, &["FLUSHALL"])?;
            let acked: usize = run(
                &mut conn,
                master.port,
                &[
                    "WAIT",
                    &replicas.to_string(),
                    &(ADMIN_TIMEOUT.as_millis() / 2).to_string(),
                ],
            )?;
            if acked < replicas {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "FLUSHALL on 127.0.0.1:{} reached {acked} of {replicas} replicas",
                        master.port
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Waits until every running replica has acknowledged everything its
    /// master had written when this was called, so that a failover right
    /// after cannot lose those writes. Replicas acknowledge about once a
    /// second, so this can take that long.
    pub fn wait_for_replication(&mut self) -> io::Result<()> {
        let roles = self.all_roles()?;
        let mut targets = Vec::new();
        for master in roles.iter().filter(|line| line.master) {
            let info: String = admin(master.port, &["INFO", "replication"])?;
            let offset: u64 = field(&info, "master_repl_offset")
                .and_then(|offset| offset.parse().ok())
                .ok_or_else(|| {
                    io::Error::other(format!(
                        "127.0.0.1:{}: INFO replication has no master_repl_offset",
                        master.port
                    ))
                })?;
            let replicas: Vec<u16> = roles
                .iter()
                .filter(|line| line.master_id.as_deref() == Some(master.id.as_str()))
                .map(|line| line.port)
                .collect();
            targets.push((master.port, offset, replicas));
        }
        self.wait_until(SETTLE_TIMEOUT, "the replicas to catch up", |_| {
            for (master, offset, replicas) in &targets {
                let info: String =
                    admin(*master, &["INFO", "replication"]).map_err(|e| e.to_string())?;
                for replica in replicas {
                    let acked = info
                        .lines()
                        .filter(|line| line.starts_with("slave"))
                        .find(|line| line.contains(&format!("port={replica},")))
                        .and_then(|line| field_in_list(line, "offset"))
                        .and_then(|acked| acked.parse::<u64>().ok())
                        .unwrap_or(0);
                    if acked < *offset {
                        return Err(format!(
                            "replica 127.0.0.1:{replica} acknowledged {acked} of \
                             127.0.0.1:{master}'s {offset}"
                        ));
                    }
                }
            }
            Ok(())
        })
    }

    /// Picks free ports and starts the six nodes, retrying with new ports if
    /// one was taken in the meantime.
    fn spawn_nodes() -> io::Result<Self> {
        retry_on_new_ports("redis cluster nodes", || {
            let ports = free_ports(2 * NODE_COUNT)?;
            let mut cluster = RedisCluster { nodes: Vec::new() };
            for pair in ports.chunks(2) {
                let mut node = Node {
                    port: pair[0],
                    bus_port: pair[1],
                    dir: tempfile::Builder::new()
                        .prefix("redis-cluster-node-")
                        .tempdir()?,
                    child: None,
                };
                let started = node.spawn_and_wait();
                // Pushed even on failure so that Drop cleans it up.
                cluster.nodes.push(node);
                started?;
            }
            Ok(cluster)
        })
    }

    /// Runs `redis-cli --cluster create`, which assigns the slots, pairs each
    /// replica with a master and introduces the nodes to each other.
    fn create(&self) -> io::Result<()> {
        let output = self.nodes[0].dir.path().join("cluster-create.log");
        let log = File::create(&output)?;
        let mut command = Command::new("redis-cli");
        command
            .args(["--cluster", "create"])
            .args(
                self.nodes
                    .iter()
                    .map(|node| format!("127.0.0.1:{}", node.port)),
            )
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = super::spawn_tool(&mut command, "redis-cli", "redis-tools")?;
        let status = match wait_for_exit(&mut child, CREATE_TIMEOUT)? {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "redis-cli --cluster create did not finish within {CREATE_TIMEOUT:?}: {}",
                        tail(&output)
                    ),
                ));
            }
        };
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "redis-cli --cluster create failed ({status}): {}",
                tail(&output)
            )))
        }
    }

    /// Polls `check` until it passes; on timeout the error names what was
    /// awaited and the last reason it was not there yet.
    fn wait_until(
        &mut self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&Self) -> Result<(), String>,
    ) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            for node in &mut self.nodes {
                node.ensure_alive()?;
            }
            let reason = match check(self) {
                Ok(()) => return Ok(()),
                Err(reason) => reason,
            };
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("gave up waiting {timeout:?} for {what}: {reason}"),
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// `Ok` when the running nodes form a settled cluster, otherwise the
    /// first problem found:
    /// - each reports `cluster_state:ok` with every slot assigned;
    /// - each one's `CLUSTER NODES` shows every other running node as a
    ///   healthy member with the role (and master) that node claims for
    ///   itself, and only the self-declared masters serving slots, so no node
    ///   redirects to a demoted or dead master or still counts a rejoined
    ///   node as failed;
    /// - each replica follows a running master, its link is up with no sync
    ///   in progress, and that master lists it as `online` (so `WAIT` counts
    ///   it).
    fn check_settled(&self) -> Result<(), String> {
        let mut selves = BTreeMap::new();
        for port in self.running_ports() {
            let info: String = admin(port, &["CLUSTER", "INFO"]).map_err(|e| e.to_string())?;
            if field(&info, "cluster_state") != Some("ok") {
                return Err(format!("127.0.0.1:{port} reports cluster_state not ok"));
            }
            let assigned = field(&info, "cluster_slots_assigned");
            if assigned != Some(SLOT_COUNT.to_string().as_str()) {
                return Err(format!(
                    "127.0.0.1:{port} reports cluster_slots_assigned:{}",
                    assigned.unwrap_or("?")
                ));
            }
            selves.insert(port, myself(port)?);
        }
        let masters: BTreeSet<u16> = selves
            .values()
            .filter(|line| line.master)
            .map(|line| line.port)
            .collect();

        for &viewer in selves.keys() {
            let view = cluster_nodes(viewer)?;
            for (&port, itself) in &selves {
                let seen = view
                    .iter()
                    .find(|line| line.port == port)
                    .ok_or_else(|| format!("127.0.0.1:{viewer} does not know 127.0.0.1:{port}"))?;
                if !seen.healthy
                    || seen.id != itself.id
                    || seen.master != itself.master
                    || seen.master_id != itself.master_id
                {
                    return Err(format!(
                        "127.0.0.1:{viewer} has an outdated view of 127.0.0.1:{port}"
                    ));
                }
            }
            let serving: BTreeSet<u16> = view
                .iter()
                .filter(|line| line.master && line.has_slots && line.healthy)
                .map(|line| line.port)
                .collect();
            if serving != masters {
                return Err(format!(
                    "127.0.0.1:{viewer} sees {serving:?} serving slots, the masters are {masters:?}"
                ));
            }
        }

        for &port in selves.keys().filter(|port| !masters.contains(port)) {
            let info: String = admin(port, &["INFO", "replication"]).map_err(|e| e.to_string())?;
            let master = field(&info, "master_port")
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| masters.contains(p))
                .ok_or_else(|| format!("replica 127.0.0.1:{port} follows no running master"))?;
            if field(&info, "master_link_status") != Some("up")
                || field(&info, "master_sync_in_progress") != Some("0")
            {
                return Err(format!("replica 127.0.0.1:{port} is not in sync yet"));
            }
            let info: String =
                admin(master, &["INFO", "replication"]).map_err(|e| e.to_string())?;
            let online = format!("port={port},state=online");
            if !info
                .lines()
                .any(|line| line.starts_with("slave") && line.contains(&online))
            {
                return Err(format!(
                    "master 127.0.0.1:{master} does not list replica 127.0.0.1:{port} online yet"
                ));
            }
        }
        Ok(())
    }

    /// The `myself` line of every running node that answers, sorted by port.
    fn roles(&self) -> Vec<NodeLine> {
        let mut lines: Vec<NodeLine> = self
            .running_ports()
            .filter_map(|port| myself(port).ok())
            .collect();
        lines.sort_by_key(|line| line.port);
        lines
    }

    /// Like [`roles`](Self::roles), but an error if any running node does
    /// not answer: for actions that must reach every node.
    fn all_roles(&self) -> io::Result<Vec<NodeLine>> {
        self.running_ports()
            .map(|port| myself(port).map_err(io::Error::other))
            .collect()
    }

    /// The running replicas that say they follow the master on `master_port`;
    /// an error if that node is not a running master or has no replica.
    fn replicas_of(&self, master_port: u16) -> io::Result<Vec<NodeLine>> {
        let master = myself(master_port).map_err(io::Error::other)?;
        if !master.master {
            return Err(io::Error::other(format!(
                "127.0.0.1:{master_port} is not a master"
            )));
        }
        let replicas: Vec<NodeLine> = self
            .all_roles()?
            .into_iter()
            .filter(|line| line.master_id.as_deref() == Some(master.id.as_str()))
            .collect();
        if replicas.is_empty() {
            return Err(io::Error::other(format!(
                "master 127.0.0.1:{master_port} has no running replica"
            )));
        }
        Ok(replicas)
    }

    fn running_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|node| node.child.is_some())
            .map(|node| node.port)
    }

    fn node_mut(&mut self, port: u16) -> io::Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|node| node.port == port)
            .ok_or_else(|| io::Error::other(format!("no cluster node on port {port}")))
    }
}

/// Sends `CLUSTER FAILOVER` to the replica on `port`.
fn request_failover(port: u16) -> io::Result<()> {
    let reply: String = admin(port, &["CLUSTER", "FAILOVER"])?;
    if reply == "OK" {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "CLUSTER FAILOVER on 127.0.0.1:{port} answered {reply:?}"
        )))
    }
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
fn wait_for_exit(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(POLL_INTERVAL);
    }
}
