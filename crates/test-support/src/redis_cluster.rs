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

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Port of the machine's shared Redis; no node may start on it.
const SHARED_REDIS_PORT: u16 = 6379;

/// Three masters, each with one replica: the smallest cluster in which a
/// master can fail over and the slot map stays fully covered.
const NODE_COUNT: usize = 6;

/// Number of hash slots in every Redis Cluster.
const SLOT_COUNT: u32 = 16384;

/// `cluster-node-timeout` in milliseconds. Small so that a killed master is
/// declared failed, and its replica elected, within a few seconds; large
/// enough that two loaded cores do not make healthy nodes look dead (1000 ms
/// is borderline while benchmarks share the machine).
const NODE_TIMEOUT_MS: u64 = 2000;

/// How long a fresh node gets to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

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

/// How many sets of free ports `start` tries; another process can grab a port
/// between our probe and redis-server's bind.
const START_ATTEMPTS: usize = 3;

/// Pause between two looks at the cluster's state while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Connect, read and write timeout of one admin command. A node that does not
/// answer in this time is treated as not (yet) healthy.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A running Redis Cluster owned by a test.
#[derive(Debug)]
pub struct RedisCluster {
    /// In creation order; a node keeps its place (and its ports and
    /// directory) for the life of the value, also while it is killed.
    nodes: Vec<Node>,
}

/// One `redis-server` of the cluster.
#[derive(Debug)]
struct Node {
    /// Client port, fixed so that a restarted node comes back on the address
    /// the rest of the cluster (and any client) already knows.
    port: u16,
    /// Cluster bus port (`--cluster-port`), fixed for the same reason.
    bus_port: u16,
    /// Holds `nodes.conf` and the log. Kept across a kill so that
    /// `restart_node` brings back the same node identity; removed on drop.
    dir: TempDir,
    /// `None` while the node is killed.
    child: Option<Child>,
}

/// One line of `CLUSTER NODES`: what a node believes about one node.
#[derive(Debug, Clone)]
struct NodeLine {
    id: String,
    port: u16,
    myself: bool,
    master: bool,
    /// The link is `connected` and no flag says `fail`, `fail?`,
    /// `handshake` or `noaddr`: this view counts the node as a working
    /// member of the cluster.
    healthy: bool,
    /// The master's id for a replica.
    master_id: Option<String>,
    /// Whether the node serves at least one slot range.
    has_slots: bool,
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
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let ports = free_ports(2 * NODE_COUNT)?;
            let mut cluster = RedisCluster { nodes: Vec::new() };
            let mut failed = None;
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
                if let Err(e) = started {
                    failed = Some(e);
                    break;
                }
            }
            match failed {
                None => return Ok(cluster),
                Some(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
                Some(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("redis cluster nodes did not start")))
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

impl Node {
    fn spawn_and_wait(&mut self) -> io::Result<()> {
        if self.port == SHARED_REDIS_PORT || self.bus_port == SHARED_REDIS_PORT {
            return Err(io::Error::other(
                "refusing to start on the shared Redis port 6379",
            ));
        }
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--cluster-port")
            .arg(self.bus_port.to_string())
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .arg("--cluster-node-timeout")
            .arg(NODE_TIMEOUT_MS.to_string())
            // A replica may always stand for election, however long it was
            // cut off: the tests want a failover, not a cluster that stays
            // down because its replicas look too stale on a slow machine.
            .args(["--cluster-replica-validity-factor", "0"])
            // Full syncs start at once instead of waiting 5 s for more
            // replicas to share the transfer.
            .args(["--repl-diskless-sync-delay", "0"])
            // Full syncs never touch the disk on either side. Otherwise a
            // replica keeps the received snapshot as dump.rdb and reloads it
            // when restarted, so a "crashed" node would come back with stale
            // data instead of empty.
            .args(["--repl-diskless-sync", "yes"])
            .args(["--repl-diskless-load", "swapdb"])
            .args(["--bind", "127.0.0.1"])
            .args(["--protected-mode", "no"])
            .args(["--daemonize", "no"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--logfile", "redis.log"])
            .args(["--loglevel", "notice"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = super::spawn_tool(&mut command, "redis-server", "redis-server")?;
        self.child = Some(child);
        match self.wait_until_ready() {
            Ok(()) => Ok(()),
            Err(e) => {
                // Do not leave a half-started process behind.
                let _ = self.kill();
                Err(e)
            }
        }
    }

    fn wait_until_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.ensure_alive()?;
            if admin::<String>(self.port, &["PING"]).is_ok_and(|pong| pong == "PONG") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "cluster node on port {} did not answer PING within {READY_TIMEOUT:?}",
                        self.port
                    ),
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// An error, with the end of the node's log, if a node that should be
    /// running has exited; waiting on a dead node would only time out.
    fn ensure_alive(&mut self) -> io::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if let Some(status) = child.try_wait()? {
            self.child = None;
            return Err(io::Error::other(format!(
                "cluster node on port {} exited ({status}): {}",
                self.port,
                tail(&self.dir.path().join("redis.log"))
            )));
        }
        Ok(())
    }

    /// SIGKILL and reap; the directory stays for `restart_node`.
    fn kill(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Runs before `dir` is removed, so no process writes into a
        // directory being deleted.
        let _ = self.kill();
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

/// Asks the OS for `count` distinct free ports, none of them 6379. The
/// listeners are held until all are chosen so no port is handed out twice.
fn free_ports(count: usize) -> io::Result<Vec<u16>> {
    let mut listeners = Vec::with_capacity(count);
    let mut ports = Vec::with_capacity(count);
    while ports.len() < count {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        if port != SHARED_REDIS_PORT {
            ports.push(port);
        }
        listeners.push(listener);
    }
    Ok(ports)
}

/// Runs one command (`args`, name first) on one node over a fresh synchronous
/// connection with short timeouts. The error names the node and the command.
fn admin<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> io::Result<T> {
    run(&mut connect(port)?, port, args)
}

/// A synchronous connection to one node with short timeouts.
fn connect(port: u16) -> io::Result<redis::Connection> {
    let describe = |e: redis::RedisError| io::Error::other(format!("127.0.0.1:{port}: {e}"));
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).map_err(describe)?;
    let conn = client
        .get_connection_with_timeout(ADMIN_TIMEOUT)
        .map_err(describe)?;
    conn.set_read_timeout(Some(ADMIN_TIMEOUT))
        .map_err(describe)?;
    conn.set_write_timeout(Some(ADMIN_TIMEOUT))
        .map_err(describe)?;
    Ok(conn)
}

/// Runs one command on an open connection to the node on `port`.
fn run<T: redis::FromRedisValue>(
    conn: &mut redis::Connection,
    port: u16,
    args: &[&str],
) -> io::Result<T> {
    let mut cmd = redis::Cmd::new();
    for arg in args {
        cmd.arg(*arg);
    }
    cmd.query(conn)
        .map_err(|e| io::Error::other(format!("127.0.0.1:{port}: {}: {e}", args.join(" "))))
}

/// Every line of `CLUSTER NODES` as seen by the node on `port`.
fn cluster_nodes(port: u16) -> Result<Vec<NodeLine>, String> {
    let text: String = admin(port, &["CLUSTER", "NODES"]).map_err(|e| e.to_string())?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            parse_node_line(line)
                .ok_or_else(|| format!("127.0.0.1:{port}: unreadable CLUSTER NODES line {line:?}"))
        })
        .collect()
}

/// The node on `port`'s own line of `CLUSTER NODES`: its role as it sees it.
fn myself(port: u16) -> Result<NodeLine, String> {
    cluster_nodes(port)?
        .into_iter()
        .find(|line| line.myself)
        .ok_or_else(|| format!("127.0.0.1:{port}: CLUSTER NODES has no myself line"))
}

/// Parses `<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch>
/// <link> <slot> <slot> …`.
fn parse_node_line(line: &str) -> Option<NodeLine> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    if fields.len() < 8 {
        return None;
    }
    let address = fields[1].split(['@', ',']).next()?;
    let port = address.rsplit_once(':')?.1.parse().ok()?;
    let flags: Vec<&str> = fields[2].split(',').collect();
    Some(NodeLine {
        id: fields[0].to_string(),
        port,
        myself: flags.contains(&"myself"),
        master: flags.contains(&"master"),
        healthy: fields[7] == "connected"
            && !flags
                .iter()
                .any(|flag| ["fail", "fail?", "handshake", "noaddr"].contains(flag)),
        master_id: (fields[3] != "-").then(|| fields[3].to_string()),
        has_slots: fields.len() > 8,
    })
}

/// The value of `name:value` in an `INFO`-style reply.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.trim_end()
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
    })
}

/// The value of `name=value` in a comma-separated `INFO` entry such as
/// `slave0:ip=127.0.0.1,port=7001,state=online,offset=42,lag=0`.
fn field_in_list<'a>(entry: &'a str, name: &str) -> Option<&'a str> {
    let list = entry.split_once(':').map_or(entry, |(_, list)| list);
    list.split(',').find_map(|pair| {
        pair.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
    })
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

/// The last few lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_master_line_with_slots() {
        let line = parse_node_line(
            "77d2 127.0.0.1:47101@48101 myself,master - 0 1795656658000 1 connected 0-5460",
        )
        .unwrap();
        assert_eq!(line.port, 47101);
        assert!(line.myself && line.master && line.has_slots && line.healthy);
        assert_eq!(line.master_id, None);
    }

    #[test]
    fn parses_a_failed_replica_line() {
        let line = parse_node_line(
            "f072 127.0.0.1:47106@48106,host slave,fail 0d0e 0 1795656659242 2 disconnected",
        )
        .unwrap();
        assert_eq!(line.port, 47106);
        assert!(!line.master && !line.healthy && !line.has_slots);
        assert_eq!(line.master_id.as_deref(), Some("0d0e"));
    }

    #[test]
    fn reads_info_fields() {
        let info = "# Cluster\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\n";
        assert_eq!(field(info, "cluster_state"), Some("ok"));
        assert_eq!(field(info, "cluster_slots_assigned"), Some("16384"));
        assert_eq!(field(info, "cluster_slots"), None);
    }

    #[test]
    fn reads_a_replica_entry_of_info_replication() {
        let entry = "slave0:ip=127.0.0.1,port=7001,state=online,offset=42,lag=0";
        assert_eq!(field_in_list(entry, "offset"), Some("42"));
        assert_eq!(field_in_list(entry, "port"), Some("7001"));
        assert_eq!(field_in_list(entry, "off"), None);
    }
}
